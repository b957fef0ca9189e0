//! SPEC 3.2: given the profiles a call's identifiers point to, who survives, who merges into
//! it, and which identifiers move instead of merging (protection).

/// A profile found by one of the call's identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    /// Its key.
    pub key: u64,
    /// Its user id, if it has one.
    pub user_id: Option<&'a str>,
}

/// The decision for one call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The profile that receives the call; `None`: create a new one.
    pub survivor: Option<u64>,
    /// Profiles merged into the survivor (their keys then resolve to it).
    pub merge: Vec<u64>,
    /// The call's email belongs to this identified profile, which is protected: the email is
    /// moved from it to the survivor.
    pub take_email_from: Option<u64>,
    /// Same for the call's anonymous id.
    pub take_anonymous_id_from: Option<u64>,
}

/// Decide (SPEC 3.2). `user_id` is the call's `userId`; the three `Found`s are what the call's
/// user id, email and anonymous id point to.
///
/// Survivor: the profile of `userId` if it exists; otherwise, when the call has a `userId`, the
/// first profile (email, then anonymous id) that has no user id of its own (it takes the
/// call's); otherwise the first (email, then anonymous id) that carries a user id; otherwise
/// the one found by email. A profile that carries a user id different from the survivor's is
/// never merged: the identifier that found it is moved to the survivor instead.
pub fn resolve(
    user_id: Option<&str>,
    by_user: Option<Found<'_>>,
    by_email: Option<Found<'_>>,
    by_anonymous_id: Option<Found<'_>>,
) -> Plan {
    let others = [by_email.as_ref(), by_anonymous_id.as_ref()];
    let survivor: Option<&Found<'_>> = match (&by_user, user_id) {
        (Some(found), _) => Some(found),
        (None, Some(_)) => others
            .iter()
            .flatten()
            .find(|f| f.user_id.is_none())
            .copied(),
        (None, None) => others
            .iter()
            .flatten()
            .find(|f| f.user_id.is_some())
            .or_else(|| others.iter().flatten().next())
            .copied(),
    };
    let survivor_uid: Option<&str> = user_id.or(survivor.and_then(|s| s.user_id));
    let mut plan = Plan {
        survivor: survivor.map(|s| s.key),
        ..Plan::default()
    };
    for (i, found) in others.iter().enumerate() {
        let Some(found) = found else { continue };
        if Some(found.key) == plan.survivor || plan.merge.contains(&found.key) {
            continue;
        }
        let protected = match (found.user_id, survivor_uid) {
            (Some(theirs), Some(ours)) => theirs != ours,
            _ => false,
        };
        if protected {
            if i == 0 {
                plan.take_email_from = Some(found.key);
            } else {
                plan.take_anonymous_id_from = Some(found.key);
            }
        } else {
            plan.merge.push(found.key);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(key: u64, uid: Option<&str>) -> Option<Found<'_>> {
        Some(Found { key, user_id: uid })
    }

    #[test]
    fn nothing_found_creates() {
        assert_eq!(resolve(Some("u1"), None, None, None), Plan::default());
    }

    #[test]
    fn gosquared_id_and_email_profiles_merge_into_the_user_ids() {
        let p = resolve(Some("u1"), f(1, Some("u1")), f(2, None), None);
        assert_eq!(p.survivor, Some(1));
        assert_eq!(p.merge, vec![2]);
    }

    #[test]
    fn different_user_ids_never_merge_the_email_moves() {
        let p = resolve(Some("u1"), f(1, Some("u1")), f(2, Some("u2")), None);
        assert_eq!(p.survivor, Some(1));
        assert!(p.merge.is_empty());
        assert_eq!(p.take_email_from, Some(2));
    }

    #[test]
    fn new_user_id_takes_device_of_other_identified_person() {
        let p = resolve(Some("u1"), None, None, f(3, Some("u2")));
        assert_eq!(p.survivor, None);
        assert_eq!(p.take_anonymous_id_from, Some(3));
    }

    #[test]
    fn anonymous_profile_takes_the_user_id() {
        let p = resolve(Some("u1"), None, None, f(3, None));
        assert_eq!(p.survivor, Some(3));
        assert!(p.merge.is_empty());
    }

    #[test]
    fn without_user_id_the_identified_profile_survives() {
        let p = resolve(None, None, f(2, None), f(3, Some("u9")));
        assert_eq!(p.survivor, Some(3));
        assert_eq!(p.merge, vec![2]);
        let p = resolve(None, None, f(2, None), f(3, None));
        assert_eq!(p.survivor, Some(2));
        assert_eq!(p.merge, vec![3]);
    }
}
