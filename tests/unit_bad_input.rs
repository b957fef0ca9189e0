//! Bad input: thousands of random and malformed messages go through `Message::parse` and
//! `validate` without a panic, and every failure is a typed error (`Malformed` from parsing,
//! `Invalid` with at least one field error from validation).

use profiledb::profile::validate::validate;
use profiledb::{Error, Filter, Message, Options};
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;
use serde_json::{Value as Json, json};

/// Parse and validate; panics (failing the test) on an untyped or empty error.
fn run(bytes: &[u8], options: &Options) -> Result<Message, Error> {
    let message = match Message::parse(bytes) {
        Ok(m) => m,
        Err(e @ Error::Malformed(_)) => return Err(e),
        Err(other) => panic!("parse gave a non-Malformed error: {other:?}"),
    };
    match validate(&message, options) {
        Ok(()) => Ok(message),
        Err(Error::Invalid(errors)) => {
            assert!(!errors.is_empty(), "Invalid without field errors");
            for e in &errors {
                assert!(!e.field.is_empty() && !e.rule.is_empty(), "{e:?}");
            }
            Err(Error::Invalid(errors))
        }
        Err(other) => panic!("validate gave a non-Invalid error: {other:?}"),
    }
}

fn json_strategy() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
        ".{0,12}".prop_map(Json::String),
        prop::sample::select(vec![
            "",
            " ",
            "null",
            "guest",
            "a@b.co",
            "x@",
            "2026-11-22T10:00:00Z",
            "2026-99-99T99:99:99Z",
            "https://example.com/a.png",
            "identify",
            "group",
            "alias",
            "track",
            "page",
            "screen",
            "é",
            "\u{0}",
            "$set_once",
        ])
        .prop_map(|s| Json::String(s.to_string())),
    ];
    let key = prop::sample::select(vec![
        "type",
        "userId",
        "anonymousId",
        "messageId",
        "timestamp",
        "originalTimestamp",
        "traits",
        "$set",
        "$set_once",
        "$unset",
        "$add",
        "groupId",
        "previousId",
        "email",
        "first_name",
        "firstName",
        "last_name",
        "created_at",
        "createdAt",
        "avatar",
        "company",
        "company_size",
        "companySize",
        "custom",
        "id",
        "size",
        "name",
        "",
        "$x",
    ])
    .prop_map(str::to_string);
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|members| Json::Object(members.into_iter().collect())),
        ]
    })
}

/// A valid message of each type, to mutate.
fn valid_messages() -> Vec<Json> {
    vec![
        json!({"type": "identify", "userId": "u-123", "anonymousId": "a-9", "messageId": "m-1",
               "timestamp": "2026-11-22T10:00:00Z",
               "traits": {"email": "sarah@example.com", "first_name": "Sarah", "last_name": "Smith",
                          "plan": "pro", "company": {"id": "c-1", "name": "Acme", "size": 12},
                          "custom": {"tier": 2}, "createdAt": "2026-01-01T00:00:00Z"},
               "$set_once": {"first_seen_campaign": "spring"}, "$unset": ["trial"],
               "$add": {"logins": 1}}),
        json!({"type": "group", "groupId": "c-1", "userId": "u-1", "traits": {"name": "Acme"}}),
        json!({"type": "alias", "previousId": "a-1", "userId": "u-1"}),
        json!({"type": "track", "userId": "u-1", "anonymousId": "a-1", "event": "x"}),
    ]
}

/// Replace the value at a random path of `node` with `replacement`.
fn mutate(node: &mut Json, path: &[usize], replacement: Json) {
    let Some((step, rest)) = path.split_first() else {
        *node = replacement;
        return;
    };
    let child = match node {
        Json::Object(map) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(step % map.len())
                .cloned()
                .unwrap_or_default();
            map.get_mut(&key)
        }
        Json::Array(items) if !items.is_empty() => {
            let i = step % items.len();
            items.get_mut(i)
        }
        _ => None,
    };
    match child {
        Some(child) => mutate(child, rest, replacement),
        None => *node = replacement,
    }
}

proptest! {
    #![proptest_config(props::config(3000, "tests/unit_bad_input.proptest-regressions"))]

    #[test]
    fn random_bytes_give_typed_errors(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = run(&bytes, &Options::default());
    }

    #[test]
    fn random_json_values_give_typed_errors(value in json_strategy()) {
        let bytes = serde_json::to_vec(&value).expect("serialise");
        let _ = run(&bytes, &Options::default());
        // Also as the members of an identify.
        let wrapped = json!({"userId": "u-1", "traits": value.clone(), "$add": value.clone(),
                             "$set_once": value.clone(), "$unset": value});
        let _ = run(&serde_json::to_vec(&wrapped).expect("serialise"), &Options::default());
    }

    #[test]
    fn mutated_valid_messages_give_typed_errors(
        which in 0usize..4,
        path in prop::collection::vec(any::<usize>(), 1..4),
        replacement in json_strategy(),
        cut in any::<usize>(),
    ) {
        let mut message = valid_messages().swap_remove(which);
        mutate(&mut message, &path, replacement);
        let bytes = serde_json::to_vec(&message).expect("serialise");
        let _ = run(&bytes, &Options::default());
        // Truncated JSON is Malformed.
        let cut = cut % bytes.len().max(1);
        if cut < bytes.len() {
            prop_assert!(matches!(Message::parse(&bytes[..cut]), Err(Error::Malformed(_))));
        }
    }

    #[test]
    fn random_filter_text_never_panics(text in ".{0,40}") {
        if let Ok(filter) = Filter::parse(&text) {
            let _ = filter.matches(&[]);
        }
    }
}

#[test]
fn corpus_of_malformed_messages_is_refused_with_typed_errors() {
    let options = Options::default();
    let corpus: &[&[u8]] = &[
        b"",
        b"null",
        b"[]",
        b"\"identify\"",
        b"{\"userId\": {}}",
        b"{\"userId\": [\"u\"]}",
        b"{\"userId\": true}",
        b"{\"type\": \"identify\"}",
        b"{\"type\": null}",
        b"{\"type\": \"delete\", \"userId\": \"u1\"}",
        b"{\"userId\": \"u1\", \"traits\": 5}",
        b"{\"userId\": \"u1\", \"traits\": {\"email\": false}}",
        b"{\"userId\": \"u1\", \"timestamp\": \"2026-02-30T00:00:00Z\"}",
        b"{\"userId\": \"u1\", \"$add\": {\"n\": \"1\"}}",
        b"{\"userId\": \"u1\", \"$add\": [1]}",
        b"{\"userId\": \"u1\", \"$unset\": {\"a\": 1}}",
        b"{\"userId\": \"u1\", \"$set_once\": \"x\"}",
        b"{\"type\": \"group\"}",
        b"{\"type\": \"alias\", \"userId\": \"u1\"}",
        b"{\"userId\": \"\xff\xfe\"}",
        b"{\"userId\": \"u1\", \"traits\": {\"company\": {\"id\": {}}}}",
        b"{\"userId\": 1e400}",
        b"{\"userId\": \"u1\"",
    ];
    for bytes in corpus {
        let result = run(bytes, &options);
        assert!(
            result.is_err(),
            "{} was accepted",
            String::from_utf8_lossy(bytes)
        );
    }
}
