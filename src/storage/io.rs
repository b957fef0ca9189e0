//! The I/O seam: every file operation of the storage engine goes through [`Io`], so tests can
//! fail the n-th write or fsync and simulate power loss.

/// File-system operations used by the storage engine (to be defined by the implementation).
pub trait Io: Send + Sync {}
