//! Options of a store, and the durability modes.

use std::time::Duration;

/// When an acknowledged call is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written to the OS (or an in-process buffer) only; a later sync or group commit makes it
    /// durable. Fastest; a crash may lose the newest calls, never leave a half of one.
    Buffered,
    /// Writers share one `fdatasync`: one happens at least every `max_delay` or every
    /// `max_batch` calls. A caller asking for this durability returns once its call is synced.
    GroupCommit {
        /// Longest time an acknowledged call waits for its sync.
        max_delay: Duration,
        /// Sync as soon as this many calls are waiting.
        max_batch: usize,
    },
    /// Every call is synced before it returns (concurrent callers still share a sync).
    SyncEach,
}

impl Durability {
    /// Group commit with a 10 ms / 1,000-call window: the default.
    pub const fn group_commit() -> Self {
        Durability::GroupCommit {
            max_delay: Duration::from_millis(10),
            max_batch: 1000,
        }
    }

    /// Whether a caller must wait for an fsync before returning.
    pub fn waits(&self) -> bool {
        !matches!(self, Durability::Buffered)
    }
}

impl Default for Durability {
    fn default() -> Self {
        Durability::group_commit()
    }
}

/// Options of a store. `Options::default()` is what the CLI and server use.
#[derive(Debug, Clone)]
pub struct Options {
    /// Default durability of calls (each call may override it).
    pub durability: Durability,
    /// Size past which the active segment is sealed and a new one begins.
    pub segment_size: u64,
    /// Bytes of zeros kept written ahead of the active segment's data (0, the default: none).
    /// An `fdatasync` of data written over them commits no file size or block allocation, so
    /// each durable acknowledgement costs less (about 100 us against 175 us for an append on
    /// this project's machine; docs/performance.md, "Engine round 36"), for up to this many
    /// bytes more on disk while the store is open. A crash leaves the zeros at the log's
    /// end, which the next open cuts off as it cuts a torn tail (docs/recovery.md).
    pub preallocate_bytes: u64,
    /// Background compaction starts when dead bytes exceed this share of all sealed bytes
    /// (and at least `compaction_min_bytes` are dead), not counting the segments of history
    /// steps, which it rewrites only once they have doubled (docs/journal.md). `None`
    /// disables background compaction.
    pub compaction_ratio: Option<f64>,
    /// Least dead bytes worth a background compaction.
    pub compaction_min_bytes: u64,
    /// On open, quarantine damaged segments instead of failing with `Corruption`.
    pub repair: bool,
    /// Create the directory if it does not exist.
    pub create: bool,
    /// Refuse `userId` / `anonymousId` values in this list (compared case-insensitively, after
    /// trimming). Blank ids are always refused.
    pub placeholder_ids: Vec<String>,
    /// Distinct property names a store tracks; new names beyond it are ignored (SPEC 3.5).
    pub max_property_names: usize,
    /// Most anonymous ids kept per profile; the oldest is dropped beyond it.
    pub max_anonymous_ids: usize,
    /// Longest property name, in characters.
    pub max_name_chars: usize,
    /// Largest single property value, in bytes of its JSON form.
    pub max_value_bytes: usize,
    /// Largest call, in bytes of its JSON form (Segment: 32 KiB).
    pub max_call_bytes: usize,
    /// Most items a list operation (`$append`, `$union`) may leave in a property; the list's
    /// JSON form is bounded by `max_value_bytes` too.
    pub max_list_items: usize,
    /// How many recent `messageId`s are remembered for de-duplication.
    pub dedupe_window: usize,
    /// Most bytes of recently written profiles kept in memory, so that calls on hot profiles
    /// read nothing from the log (0 disables the cache). A profile is kept as the encoded
    /// records of its chain (a W1 profile of 40 properties: 0.5-1.3 KB), folded on use;
    /// counted as its buffer's allocation plus ~56 bytes; evicted by CLOCK (second chance).
    /// Besides the budget, the cache finds its profiles by key in an array of 4 bytes a key
    /// up to the highest key it has kept (~0.8 MB for W1's 200,000 profiles), a cost of the
    /// key space like the index's 12 bytes a key (a cache of 0 bytes keeps none).
    pub profile_cache_bytes: usize,
    /// Most records a read of one profile's chain walks: a full record and up to
    /// `chain_limit - 1` delta records (each holding what one call changed), so a read of a
    /// profile decodes at most this many records (a chain a compaction forwarded walks only
    /// the deltas above the forwarded record; the depth a delta carries is capped at 63
    /// apart from this). A call that would make the chain longer writes a full record
    /// instead (as does a merge, and compaction for every chain it copies). 1 writes a full
    /// record on every call. At most 64. The default, 7, trades bytes for reads on a writer
    /// cache miss: on W1 8 appends ~6 bytes per call less and runs ~4 % slower, 6 appends ~8
    /// bytes more at the same speed (docs/performance.md, stop 14).
    pub chain_limit: u32,
    /// How long each change to a profile is kept in its history (docs/journal.md): `get --at`,
    /// `history` and unmerge reach back this far; compaction keeps the history steps younger
    /// than this and drops the rest. Zero turns history off (no step is written: today's
    /// bytes). Default 30 days.
    pub history_retention: std::time::Duration,
    /// The dynamic guard (docs/journal.md "Guard"): an email or anonymous id that would be
    /// linked (moved by the protection rule between identified profiles) to more than this
    /// many distinct user ids within `guard_window` is quarantined. 0 turns the guard off.
    /// Default 10.
    pub guard_max_user_ids: usize,
    /// See `guard_max_user_ids`. Default 24 hours.
    pub guard_window: std::time::Duration,
}

/// The placeholder ids buggy clients send, refused by default (SPEC 3.1).
pub const DEFAULT_PLACEHOLDER_IDS: &[&str] = &[
    "null",
    "undefined",
    "anonymous",
    "guest",
    "0",
    "-1",
    "nan",
    "none",
    "nil",
    "[object object]",
    "unknown",
    "n/a",
    "na",
    "false",
    "true",
    "00000000-0000-0000-0000-000000000000",
];

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::default(),
            segment_size: 64 << 20,
            preallocate_bytes: 0,
            compaction_ratio: Some(0.5),
            compaction_min_bytes: 16 << 20,
            repair: false,
            create: true,
            placeholder_ids: DEFAULT_PLACEHOLDER_IDS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_property_names: 1000,
            max_anonymous_ids: 100,
            max_name_chars: 255,
            max_value_bytes: 8 << 10,
            max_call_bytes: 32 << 10,
            max_list_items: 1000,
            dedupe_window: 1_000_000,
            profile_cache_bytes: 32 << 20,
            chain_limit: 7,
            history_retention: std::time::Duration::from_secs(30 * 24 * 3600),
            guard_max_user_ids: 10,
            guard_window: std::time::Duration::from_secs(24 * 3600),
        }
    }
}
