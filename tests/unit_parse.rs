//! SPEC 2: Segment-shaped JSON parses into normalised, typed messages.

use profiledb::Timestamp;
use profiledb::{Error, Identify, Message, Number, Value};
use serde_json::json;

fn identify(v: serde_json::Value) -> Identify {
    match Message::from_json(&v) {
        Ok(Message::Identify(m)) => m,
        other => panic!("expected an identify, got {other:?}"),
    }
}

fn malformed(v: serde_json::Value) -> String {
    match Message::from_json(&v) {
        Err(Error::Malformed(text)) => text,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

fn trait_of<'a>(m: &'a Identify, name: &str) -> Option<&'a Option<Value>> {
    m.traits.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn s(text: &str) -> Option<Value> {
    Some(Value::Str(text.into()))
}

#[test]
fn spec_example_identify_parses_every_part() {
    let m = identify(json!({
        "type": "identify", "userId": "u-123", "anonymousId": "a-9", "messageId": "m-1",
        "timestamp": "2026-11-22T10:00:00Z",
        "traits": {"email": "sarah@example.com", "first_name": "Sarah", "last_name": "Smith",
                   "plan": "pro", "company": {"id": "c-1", "name": "Acme", "size": 12}},
        "$set_once": {"first_seen_campaign": "spring"}, "$unset": ["trial"], "$add": {"logins": 1}
    }));
    assert_eq!(m.user_id.as_deref(), Some("u-123"));
    assert_eq!(m.anonymous_id.as_deref(), Some("a-9"));
    assert_eq!(m.message_id.as_deref(), Some("m-1"));
    assert_eq!(m.timestamp, Timestamp::parse("2026-11-22T10:00:00Z"));
    assert_eq!(m.email.as_deref(), Some("sarah@example.com"));
    assert_eq!(
        trait_of(&m, "email"),
        None,
        "email is lifted out of the traits"
    );
    assert_eq!(trait_of(&m, "first_name"), Some(&s("Sarah")));
    assert_eq!(trait_of(&m, "plan"), Some(&s("pro")));
    assert_eq!(
        trait_of(&m, "company"),
        None,
        "company with id is lifted out"
    );
    let company = m.company.expect("company");
    assert_eq!(company.id, "c-1");
    assert!(company.traits.contains(&("name".into(), s("Acme"))));
    assert!(
        company
            .traits
            .contains(&("size".into(), Some(Value::Int(12))))
    );
    assert_eq!(
        m.set_once,
        vec![("first_seen_campaign".into(), Value::Str("spring".into()))]
    );
    assert_eq!(m.unset, vec!["trial".to_string()]);
    assert_eq!(m.add, vec![("logins".into(), Number::Int(1))]);
}

#[test]
fn type_defaults_to_identify() {
    let m = identify(json!({"userId": "u-1"}));
    assert_eq!(m.user_id.as_deref(), Some("u-1"));
}

#[test]
fn segment_null_user_id_is_absent() {
    let m = identify(
        json!({"userId": null, "anonymousId": "a-1", "messageId": null,
                            "timestamp": null, "traits": null, "type": null}),
    );
    assert_eq!(m.user_id, None);
    assert_eq!(m.message_id, None);
    assert_eq!(m.timestamp, None);
    assert_eq!(m.anonymous_id.as_deref(), Some("a-1"));
}

#[test]
fn numeric_user_id_becomes_its_decimal_string() {
    let m = identify(json!({"userId": 253552, "anonymousId": 7, "messageId": 99}));
    assert_eq!(m.user_id.as_deref(), Some("253552"));
    assert_eq!(m.anonymous_id.as_deref(), Some("7"));
    assert_eq!(m.message_id.as_deref(), Some("99"));
}

#[test]
fn non_string_ids_are_malformed_naming_the_field() {
    assert!(malformed(json!({"userId": true})).contains("userId"));
    assert!(malformed(json!({"userId": "u1", "anonymousId": ["a"]})).contains("anonymousId"));
    assert!(malformed(json!({"type": "group", "groupId": {"x": 1}})).contains("groupId"));
    assert!(
        malformed(json!({"type": "alias", "userId": "u1", "previousId": false}))
            .contains("previousId")
    );
}

#[test]
fn message_must_be_an_object_with_a_known_type() {
    assert!(malformed(json!([1, 2])).contains("message"));
    assert!(malformed(json!("identify")).contains("message"));
    assert!(malformed(json!({"type": "purchase", "userId": "u1"})).contains("type"));
    assert!(malformed(json!({"type": 3, "userId": "u1"})).contains("type"));
    assert!(matches!(
        Message::parse(b"{not json"),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn bad_timestamp_is_an_error_naming_the_field() {
    assert!(malformed(json!({"userId": "u1", "timestamp": "yesterday"})).contains("timestamp"));
    assert!(malformed(json!({"userId": "u1", "timestamp": 1700000000})).contains("timestamp"));
    assert!(
        malformed(json!({"userId": "u1", "originalTimestamp": "2026-13-01T00:00:00Z"}))
            .contains("originalTimestamp")
    );
}

#[test]
fn original_timestamp_is_the_fallback_event_time() {
    let m = identify(
        json!({"userId": "u1", "originalTimestamp": "2026-01-02T03:04:05.123+01:00",
                            "sentAt": "2030-01-01T00:00:00Z"}),
    );
    assert_eq!(m.timestamp, Timestamp::parse("2026-01-02T02:04:05.123Z"));
    let m = identify(json!({"userId": "u1", "timestamp": "2026-01-01T00:00:00Z",
                            "originalTimestamp": "2025-01-01T00:00:00Z"}));
    assert_eq!(m.timestamp, Timestamp::parse("2026-01-01T00:00:00Z"));
}

#[test]
fn trait_null_is_a_removal() {
    let m = identify(json!({"userId": "u1", "traits": {"plan": null, "trial": true}}));
    assert_eq!(trait_of(&m, "plan"), Some(&None));
    assert_eq!(trait_of(&m, "trial"), Some(&Some(Value::Bool(true))));
}

#[test]
fn rfc3339_trait_strings_become_date_times() {
    let m = identify(
        json!({"userId": "u1", "traits": {"created_at": "2016-06-07T15:44:20Z",
                                                        "note": "2016-06-07"}}),
    );
    assert!(matches!(
        trait_of(&m, "created_at"),
        Some(Some(Value::DateTime(_)))
    ));
    assert_eq!(trait_of(&m, "note"), Some(&s("2016-06-07")));
}

#[test]
fn camel_case_reserved_traits_are_snake_cased() {
    let m = identify(json!({"userId": "u1", "traits": {
        "firstName": "Sarah", "lastName": "Smith", "createdAt": "2026-01-01T00:00:00Z",
        "companyName": "Acme", "companySize": 12, "companyIndustry": "Analytics",
        "companyPosition": "Developer", "avatar": "https://example.com/a.png",
        "phone": "+447901229693", "address": {"city": "London"}}}));
    for name in [
        "first_name",
        "last_name",
        "created_at",
        "company_name",
        "company_size",
        "company_industry",
        "company_position",
        "avatar",
        "phone",
        "address",
    ] {
        assert!(
            trait_of(&m, name).is_some(),
            "{name} missing: {:?}",
            m.traits
        );
    }
    for camel in [
        "firstName",
        "lastName",
        "createdAt",
        "companyName",
        "companySize",
    ] {
        assert!(trait_of(&m, camel).is_none(), "{camel} kept");
    }
    assert_eq!(m.field_as_written("traits.first_name"), "traits.firstName");
    assert_eq!(m.field_as_written("traits.phone"), "traits.phone");
}

#[test]
fn snake_case_name_wins_over_camel_case() {
    let m = identify(json!({"userId": "u1",
        "traits": {"firstName": "Camel", "first_name": "Snake"}}));
    assert_eq!(trait_of(&m, "first_name"), Some(&s("Snake")));
    assert_eq!(
        m.traits.iter().filter(|(n, _)| n == "first_name").count(),
        1
    );
    assert_eq!(m.field_as_written("traits.first_name"), "traits.first_name");
}

#[test]
fn custom_object_is_flattened() {
    // GoSquared: custom: { plan: "pro" } is stored as the ordinary property `plan`.
    let m = identify(json!({"userId": "u1", "traits": {
        "name": "User Name", "custom": {"any": "custom", "properties": "here", "name": "Lower"}}}));
    assert_eq!(trait_of(&m, "any"), Some(&s("custom")));
    assert_eq!(trait_of(&m, "properties"), Some(&s("here")));
    assert_eq!(trait_of(&m, "custom"), None);
    assert_eq!(
        trait_of(&m, "name"),
        Some(&s("User Name")),
        "top-level trait wins"
    );
    assert_eq!(m.field_as_written("traits.any"), "traits.custom.any");
}

#[test]
fn custom_that_is_not_an_object_is_an_ordinary_trait() {
    let m = identify(json!({"userId": "u1", "traits": {"custom": "yes"}}));
    assert_eq!(trait_of(&m, "custom"), Some(&s("yes")));
}

#[test]
fn gosquared_traits_id_is_the_user_id() {
    let m = identify(json!({"traits": {"id": 123456, "email": "simon@example.com"}}));
    assert_eq!(m.user_id.as_deref(), Some("123456"));
    assert_eq!(trait_of(&m, "id"), None);
    assert_eq!(m.field_as_written("userId"), "traits.id");
    // With a userId, an equal traits.id is dropped, a different one is a property.
    let m = identify(json!({"userId": "u1", "traits": {"id": "u1"}}));
    assert_eq!(trait_of(&m, "id"), None);
    let m = identify(json!({"userId": "u1", "traits": {"id": "legacy-7"}}));
    assert_eq!(m.user_id.as_deref(), Some("u1"));
    assert_eq!(trait_of(&m, "id"), Some(&s("legacy-7")));
}

#[test]
fn email_is_lifted_and_must_be_a_string() {
    let m = identify(json!({"traits": {"email": "Sarah@Example.com"}}));
    assert_eq!(m.email.as_deref(), Some("Sarah@Example.com"));
    let m = identify(json!({"userId": "u1", "traits": {"email": null}}));
    assert_eq!(m.email, None);
    assert!(malformed(json!({"traits": {"email": 42}})).contains("traits.email"));
}

#[test]
fn company_without_id_is_an_ordinary_property() {
    let m = identify(json!({"userId": "u1", "traits": {"company": {"name": "GoSquared"}}}));
    assert_eq!(m.company, None);
    assert_eq!(
        trait_of(&m, "company"),
        Some(&Some(Value::Object(vec![(
            "name".into(),
            Value::Str("GoSquared".into())
        )])))
    );
    let m = identify(json!({"userId": "u1", "traits": {"company": {"id": 77, "plan": null}}}));
    let company = m.company.expect("numeric company id");
    assert_eq!(company.id, "77");
    assert_eq!(company.traits, vec![("plan".into(), None)]);
    assert!(
        malformed(json!({"userId": "u1", "traits": {"company": {"id": [1]}}}))
            .contains("traits.company.id")
    );
}

#[test]
fn posthog_set_is_an_alias_of_traits() {
    let m = identify(
        json!({"userId": "u1", "$set": {"plan": "pro", "email": "a@b.co"},
                            "traits": {"plan": "free", "seats": 3}}),
    );
    assert_eq!(
        trait_of(&m, "plan"),
        Some(&s("pro")),
        "$set is read after traits"
    );
    assert_eq!(trait_of(&m, "seats"), Some(&Some(Value::Int(3))));
    assert_eq!(m.email.as_deref(), Some("a@b.co"));
}

#[test]
fn set_once_unset_and_add_shapes_are_checked() {
    assert!(malformed(json!({"userId": "u1", "$set_once": [1]})).contains("$set_once"));
    assert!(malformed(json!({"userId": "u1", "$unset": "trial"})).contains("$unset"));
    assert!(malformed(json!({"userId": "u1", "$unset": ["a", 3]})).contains("$unset[1]"));
    assert!(malformed(json!({"userId": "u1", "$add": {"logins": "1"}})).contains("$add.logins"));
    assert!(malformed(json!({"userId": "u1", "traits": [1]})).contains("traits"));
    let m = identify(
        json!({"userId": "u1", "$add": {"score": 2.5, "n": -3, "skip": null},
                            "$set_once": {"a": null, "b": 1}}),
    );
    assert_eq!(
        m.add,
        vec![
            ("n".into(), Number::Int(-3)),
            ("score".into(), Number::Float(2.5))
        ]
    );
    assert_eq!(m.set_once, vec![("b".into(), Value::Int(1))]);
}

#[test]
fn context_integrations_and_properties_are_ignored() {
    let m = identify(json!({"userId": "u1", "context": {"ip": "1.2.3.4"},
                            "integrations": {"All": true}, "properties": {"x": 1}}));
    assert!(m.traits.is_empty());
}

#[test]
fn rudderstack_context_traits_are_identify_traits_and_traits_win() {
    // rudder-sdk-python 2.x sends identify traits only under context.traits.
    let m = identify(json!({"userId": "u1", "context": {"library": {"name": "x"},
        "traits": {"email": "r@example.com", "firstName": "Ru", "plan": "free", "seats": 2,
                   "company": {"id": "c-9"}}}}));
    assert_eq!(m.email.as_deref(), Some("r@example.com"));
    assert_eq!(trait_of(&m, "first_name"), Some(&s("Ru")));
    assert_eq!(trait_of(&m, "plan"), Some(&s("free")));
    assert_eq!(m.company.as_ref().map(|c| c.id.as_str()), Some("c-9"));
    assert_eq!(m.field_as_written("traits.email"), "context.traits.email");
    // Both levels: `traits` wins name by name; the rest of context.traits is kept.
    let m = identify(json!({"userId": "u1",
        "context": {"traits": {"plan": "free", "email": "old@example.com", "seats": 2}},
        "traits": {"plan": "pro", "email": "new@example.com"}}));
    assert_eq!(trait_of(&m, "plan"), Some(&s("pro")));
    assert_eq!(trait_of(&m, "seats"), Some(&Some(Value::Int(2))));
    assert_eq!(m.email.as_deref(), Some("new@example.com"));
    // A context (or context.traits) that is not an object is ignored, as before.
    let m = identify(json!({"userId": "u1", "context": {"traits": "x"}}));
    assert!(m.traits.is_empty());
    let m = identify(json!({"userId": "u1", "context": 5}));
    assert!(m.traits.is_empty());
    // Only identify reads them: a group's traits are its own.
    match Message::from_json(&json!({"type": "group", "groupId": "g", "userId": "u1",
                                     "context": {"traits": {"plan": "x"}}}))
    {
        Ok(Message::Group(g)) => assert!(g.traits.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn group_alias_and_link_messages_parse() {
    let v = json!({"type": "group", "groupId": 9, "userId": "u1",
                   "traits": {"name": "Acme", "plan": null}});
    match Message::from_json(&v) {
        Ok(Message::Group(g)) => {
            assert_eq!(g.group_id, "9");
            assert_eq!(g.user_id.as_deref(), Some("u1"));
            assert_eq!(g.traits.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    let v = json!({"type": "alias", "previousId": "a-1", "userId": "u1", "messageId": "m"});
    match Message::from_json(&v) {
        Ok(Message::Alias(a)) => {
            assert_eq!((a.previous_id.as_str(), a.user_id.as_str()), ("a-1", "u1"));
        }
        other => panic!("{other:?}"),
    }
    for kind in ["track", "page", "screen"] {
        let v = json!({"type": kind, "userId": "u1", "anonymousId": "a1", "event": "x",
                       "properties": {"revenue": 3}});
        match Message::from_json(&v) {
            Ok(Message::Link(l)) => {
                assert_eq!(l.user_id.as_deref(), Some("u1"));
                assert_eq!(l.anonymous_id.as_deref(), Some("a1"));
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
}

// ---- filters (SPEC 3.7) ----

mod filters {
    use profiledb::Timestamp;
    use profiledb::{Error, Filter, Op, Value};

    fn props() -> Vec<(String, Value)> {
        vec![
            ("plan".into(), Value::Str("pro".into())),
            ("logins".into(), Value::Int(3)),
            ("score".into(), Value::Float(2.5)),
            ("vip".into(), Value::Bool(true)),
            (
                "created_at".into(),
                Value::DateTime(Timestamp::parse("2025-06-01T00:00:00Z").expect("ts")),
            ),
            ("company_size".into(), Value::Int(12)),
        ]
    }

    fn matches(text: &str) -> bool {
        Filter::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .matches(&props())
    }

    fn parse_error(text: &str) -> String {
        match Filter::parse(text) {
            Err(Error::Malformed(m)) => m,
            other => panic!("{text}: expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn user_com_segment_by_equality_comparison_and_existence() {
        assert!(matches(r#"plan = "pro" and logins >= 3"#));
        assert!(!matches(r#"plan = "pro" and logins > 3"#));
        assert!(matches("exists company_size"));
        assert!(!matches("exists trial"));
        assert!(matches("plan = pro"), "bare word is a string");
        assert!(matches("vip = true"));
        assert!(matches("score < 3 AND score > 2"));
        assert!(matches("logins = 3.0"), "numbers compare by value");
        assert!(matches("score <= 2.5 and logins != 4"));
    }

    #[test]
    fn date_times_compare_as_time() {
        assert!(matches("created_at < 2026-01-01T00:00:00Z"));
        assert!(matches(r#"created_at > "2025-06-01T01:00:00+02:00""#));
        assert!(!matches("created_at >= 2025-06-01T00:00:01Z"));
    }

    #[test]
    fn missing_property_never_matches_a_comparison() {
        for text in ["trial = 1", "trial != 1", "trial < 1", "trial >= 0"] {
            assert!(!matches(text), "{text}");
        }
        assert!(matches("plan != free"));
        assert!(!matches("plan != pro"));
    }

    #[test]
    fn comparisons_across_types_never_match() {
        assert!(!matches("plan > 3"));
        assert!(!matches("logins < pro"));
        assert!(!matches(r#"logins = "3""#), "a quoted literal is a string");
    }

    #[test]
    fn parse_builds_the_expected_tree() {
        assert_eq!(Filter::parse("  ").expect("empty"), Filter::All);
        assert_eq!(
            Filter::parse("exists a and b<=1").expect("parse"),
            Filter::And(
                Box::new(Filter::Exists("a".into())),
                Box::new(Filter::Compare("b".into(), Op::Le, Value::Int(1)))
            )
        );
        assert_eq!(
            Filter::parse(r#""first name" = "Zoë \"Z\"""#).expect("quoted"),
            Filter::Compare("first name".into(), Op::Eq, Value::Str("Zoë \"Z\"".into()))
        );
        assert_eq!(
            Filter::parse("exists = 1").expect("property named exists"),
            Filter::Compare("exists".into(), Op::Eq, Value::Int(1))
        );
    }

    #[test]
    fn parse_errors_name_the_position() {
        assert!(parse_error("plan").contains("column 5"));
        assert!(parse_error("plan =").contains("column 7"));
        assert!(parse_error("plan => 1").contains("column 6"));
        assert!(parse_error("a = 1 or b = 2").contains("column 7"));
        assert!(parse_error("a = 1 and").contains("column 10"));
        assert!(parse_error(r#"a = "open"#).contains("column 5"));
        assert!(parse_error("= 1").contains("column 1"));
        assert!(parse_error("a = null").contains("column 5"));
        assert!(parse_error("exists").contains("column"));
    }
}
