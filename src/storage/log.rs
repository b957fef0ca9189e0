pub(crate) struct Log;
