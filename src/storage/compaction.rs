pub(crate) struct Prepared;
