//! Profiles and companies as read back: current values, derived `name`, effective
//! `created_at` (SPEC 3.4).

use crate::entries::{CompanyRecord, ProfileRecord};
use crate::index::Index;
use crate::profile::merge::effective_created_at;
use crate::types::Profile;
use crate::types::value::Value;

/// The public view of a stored profile.
pub(crate) fn profile(index: &Index, key: u64, rec: ProfileRecord) -> Profile {
    let created_at = effective_created_at(&rec, index.name_id("created_at"));
    let mut properties: Vec<(String, Value)> = rec
        .props
        .iter()
        .filter_map(|(id, state)| {
            let name = index.name(*id)?;
            state.value().map(|v| (name.to_string(), v))
        })
        .collect();
    properties.sort_by(|a, b| a.0.cmp(&b.0));
    let get = |props: &[(String, Value)], name: &str| {
        props
            .binary_search_by(|p| p.0.as_str().cmp(name))
            .ok()
            .map(|i| props[i].1.clone())
    };
    if get(&properties, "name").is_none() {
        let first = get(&properties, "first_name");
        let last = get(&properties, "last_name");
        let parts: Vec<&str> = [first.as_ref(), last.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !parts.is_empty() {
            let name = parts.join(" ");
            let at = properties
                .binary_search_by(|p| p.0.as_str().cmp("name"))
                .unwrap_or_else(|i| i);
            properties.insert(at, ("name".to_string(), Value::Str(name.into())));
        }
    }
    Profile {
        key,
        user_id: rec.ids.user_id,
        email: rec.ids.email,
        anonymous_ids: rec.ids.anonymous_ids,
        company_id: rec.ids.company_id,
        created_at,
        updated_at: rec.updated_at,
        properties,
    }
}

/// A company's current property values, sorted by name.
pub(crate) fn props_of_company(rec: CompanyRecord) -> Vec<(String, Value)> {
    rec.props
        .into_iter()
        .filter_map(|(name, state)| state.value().map(|v| (name, v)))
        .collect()
}
