#[derive(Debug, Clone)]
pub(crate) struct Position;
