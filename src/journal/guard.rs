//! The dynamic guard on the write path (issue 16, docs/journal.md "Guard"; the state is
//! `index::guard`): which of a call's identifiers are quarantined, and whether a move by the
//! protection rule links an identifier to too many user ids.

use crate::entries::EntryKind;
use crate::entries::guard::{ident_hash, link_entry, quarantine_entry};
use crate::index::Index;
use crate::profile::validate::normalize_email;
use crate::types::value::Timestamp;

/// The hash of a guarded identifier: `("email", value)` or `("anonymous_id", value)`.
pub(crate) fn hash(kind: &str, value: &str) -> u128 {
    if kind == "email" {
        ident_hash(kind, &normalize_email(value))
    } else {
        ident_hash(kind, value)
    }
}

fn user_hash(user_id: &str) -> u64 {
    // `entries::hash128("guard:user", user_id)`.
    crate::entries::hash_prefixed(b"guard:user\0", user_id.as_bytes()) as u64
}

/// Whether calls carrying this identifier skip it (guard on and the identifier quarantined).
/// Nothing quarantined (the usual case): no hash.
pub(crate) fn skips(index: &Index, kind: &str, value: &str) -> bool {
    let g = &index.journal.guard;
    g.enabled() && g.any_quarantined() && g.is_quarantined(hash(kind, value))
}

/// One guard entry to write: kind, id, data, and its index change.
pub(crate) type GuardWrite = (EntryKind, u64, Vec<u8>, crate::index::GuardChange);

/// What to write for a move of identifier `(kind, value)` from a profile with user id `from`
/// to one with user id `to`: the link entries, or (when the move would link more than the
/// limit) the quarantine entry. The bool says whether it is a quarantine (the move must not
/// happen).
pub(crate) fn on_move(
    index: &Index,
    kind: &str,
    value: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> (bool, Vec<GuardWrite>) {
    let g = &index.journal.guard;
    let ident = hash(kind, value);
    let now = Timestamp::now().0;
    let users: Vec<u64> = [from, to].into_iter().flatten().map(user_hash).collect();
    if g.distinct(ident, now.saturating_sub(g.window_us), &users) > g.max_user_ids {
        let text = format!("{kind}:{value}");
        let (id, data) = quarantine_entry(ident, &text);
        return (
            true,
            vec![(
                EntryKind::Quarantine,
                id,
                data,
                crate::index::GuardChange::Quarantine { ident, text },
            )],
        );
    }
    let out = users
        .into_iter()
        .map(|user| {
            let (id, data) = link_entry(ident, user, now);
            (
                EntryKind::GuardLink,
                id,
                data,
                crate::index::GuardChange::Link {
                    ident,
                    user,
                    time: now,
                },
            )
        })
        .collect();
    (false, out)
}
