//! One error family for the whole crate. Every variant carries the evidence a user needs to act:
//! the file and offset of damaged data, the field and rule of a refused call, the operation that
//! failed on I/O.

use std::fmt;
use std::path::PathBuf;

/// Result alias used throughout profiledb.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One broken rule of a refused call: which field, which rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field as the caller named it, e.g. `userId`, `traits.email`, `traits.first_name`.
    pub field: String,
    /// The rule it broke, in words, e.g. `must be 2 to 50 characters (got 1)`.
    pub rule: String,
}

impl FieldError {
    /// Build a field error.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// Everything that can go wrong in profiledb.
///
/// Two families: a *refusal* ([`Error::is_refusal`]) rejects one input and leaves the store as
/// healthy as before; every other variant is a failure of the store or the machine. New
/// variants may be added, so match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// The operation, e.g. `fdatasync`, `write`, `rename`.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Damaged data that is not a torn tail. Open fails with this unless repair was requested.
    #[error(
        "corruption in {} at offset {offset}: {reason} (open with repair to quarantine the segment)",
        file.display()
    )]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first bad record.
        offset: u64,
        /// What was wrong, e.g. `checksum mismatch: expected 0x1234abcd, got 0x0`.
        reason: String,
    },

    /// Another process (or another `Db` in this process) holds the data directory.
    #[error("data directory {} is locked by another process (or another open Db)", dir.display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },

    /// An earlier write or fsync failed: the store refuses all work until it is reopened.
    #[error("store is poisoned by an earlier I/O failure ({cause}); reopen it to recover")]
    Poisoned {
        /// The failure that poisoned it.
        cause: String,
    },

    /// The call was not applied: an earlier call of its batch failed with an error that is not
    /// a refusal (`Db::apply_batch` stops at the first such failure).
    #[error("not applied: an earlier call of its batch failed ({cause})")]
    NotApplied {
        /// The earlier call's failure.
        cause: String,
    },

    /// The call broke one or more rules and was refused whole; nothing of it was stored.
    #[error("call refused: {}", list(.0))]
    Invalid(Vec<FieldError>),

    /// The call names an identifier that was deleted with suppression.
    #[error("call refused: {field} names a suppressed identifier")]
    Suppressed {
        /// Which field carried it.
        field: String,
    },

    /// The message is not valid JSON or not a Segment-shaped message.
    #[error("malformed message: {0}")]
    Malformed(String),

    /// A file is not a profiledb file, or of an unsupported format version.
    #[error("{}: {reason}", file.display())]
    Format {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A record's payload could not be decoded although its checksum matched.
    #[error("undecodable {what} at {} offset {offset}: {reason}", file.display())]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The file.
        file: PathBuf,
        /// The offset of the record.
        offset: u64,
        /// The decoder's complaint.
        reason: String,
    },

    /// An option or argument is out of range.
    #[error("invalid option {name}: {reason}")]
    Options {
        /// The option.
        name: &'static str,
        /// Why.
        reason: String,
    },

    /// An unmerge (`Db::unmerge`, docs/journal.md "Unmerge") was refused.
    #[error("unmerge refused: {0}")]
    Unmerge(UnmergeError),
}

/// Why an unmerge was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnmergeError {
    /// The survivor selector matches no live profile.
    #[error("no profile matches the survivor")]
    NoSurvivor,
    /// No profile was ever merged away under this key (never used, or deleted).
    #[error("key {key} is not a merged-away profile")]
    Unknown {
        /// The key asked for.
        key: u64,
    },
    /// The key is live, or was merged into another profile than the survivor.
    #[error("key {key} was not merged into profile {survivor}")]
    NotMergedInto {
        /// The key asked for.
        key: u64,
        /// The survivor's key.
        survivor: u64,
    },
    /// The merge is older than the history window: its step (the merged-away record) is gone.
    #[error("the merge of key {key} is outside the history window{}", .merged_at.map(|t| format!(" (merged at {t})")).unwrap_or_default())]
    OutsideWindow {
        /// The key asked for.
        key: u64,
        /// When the merge was applied, if its step is still on disk.
        merged_at: Option<crate::types::value::Timestamp>,
    },
    /// History is off (`history_retention` 0): no merge can be undone.
    #[error("history is off for this store (history_retention 0)")]
    HistoryOff,
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// Build an [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Build an [`Error::Invalid`] with one field error.
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Error::Invalid(vec![FieldError::new(field, rule)])
    }

    /// Whether this error refuses one input (a call, a message, an option or argument) rather
    /// than reports a failure: nothing of that input was stored and the store is as healthy as
    /// before, so the next call may succeed. True for [`Error::Invalid`], [`Error::Suppressed`],
    /// [`Error::Malformed`] and [`Error::Options`] (an option out of range, or a call whose
    /// batch exceeds the largest frame).
    ///
    /// The CLI exits with 1 on a refusal and 2 otherwise; the server answers a refused message
    /// in its per-message result and any other error with 503 for the whole request.
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Invalid(_)
            | Error::Suppressed { .. }
            | Error::Malformed(_)
            | Error::Options { .. }
            | Error::Unmerge(_) => true,
            Error::Io { .. }
            | Error::Corruption { .. }
            | Error::Locked { .. }
            | Error::Poisoned { .. }
            | Error::NotApplied { .. }
            | Error::Format { .. }
            | Error::Decode { .. } => false,
        }
    }

    /// A short, stable name for the kind of error (used in metrics and CLI summaries).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Corruption { .. } => "corruption",
            Error::Locked { .. } => "locked",
            Error::Poisoned { .. } => "poisoned",
            Error::NotApplied { .. } => "not_applied",
            Error::Invalid(_) => "invalid",
            Error::Suppressed { .. } => "suppressed",
            Error::Malformed(_) => "malformed",
            Error::Format { .. } => "format",
            Error::Decode { .. } => "decode",
            Error::Options { .. } => "options",
            Error::Unmerge(_) => "unmerge",
        }
    }
}
