//! SPEC 3.1: a call that breaks any rule is refused whole, with every broken field listed.

use profiledb::profile::validate::{email_problems, is_absolute_url, normalize_email, validate};
use profiledb::{Error, FieldError, Message, Options};
use serde_json::json;

/// Parse and validate with default options.
fn check(v: serde_json::Value) -> Result<(), Vec<FieldError>> {
    check_with(v, &Options::default())
}

fn check_with(v: serde_json::Value, options: &Options) -> Result<(), Vec<FieldError>> {
    let message = Message::from_json(&v).unwrap_or_else(|e| panic!("parse {v}: {e}"));
    match validate(&message, options) {
        Ok(()) => Ok(()),
        Err(Error::Invalid(errors)) => {
            assert!(!errors.is_empty(), "Invalid with no field errors");
            Err(errors)
        }
        Err(other) => panic!("expected Invalid, got {other:?}"),
    }
}

/// The fields of the errors, in order.
fn fields(v: serde_json::Value) -> Vec<String> {
    match check(v) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| e.field).collect(),
    }
}

fn refused_field(v: serde_json::Value, field: &str) -> FieldError {
    let errors = check(v.clone()).expect_err(&format!("{v} should be refused"));
    errors
        .iter()
        .find(|e| e.field == field)
        .cloned()
        .unwrap_or_else(|| panic!("{v}: no error on {field}: {errors:?}"))
}

#[test]
fn spec_example_is_valid() {
    check(json!({
        "type": "identify", "userId": "u-123", "anonymousId": "a-9", "messageId": "m-1",
        "timestamp": "2026-11-22T10:00:00Z",
        "traits": {"email": "sarah@example.com", "first_name": "Sarah", "last_name": "Smith",
                   "plan": "pro", "company": {"id": "c-1", "name": "Acme", "size": 12}},
        "$set_once": {"first_seen_campaign": "spring"}, "$unset": ["trial"], "$add": {"logins": 1}
    }))
    .expect("valid");
}

#[test]
fn one_of_user_id_email_anonymous_id_is_required() {
    let e = refused_field(json!({"traits": {"plan": "pro"}}), "userId");
    assert_eq!(
        e.rule,
        "one of userId, traits.email, anonymousId is required"
    );
    // null counts as absent.
    refused_field(json!({"userId": null, "anonymousId": null}), "userId");
    check(json!({"traits": {"email": "simon@example.com"}})).expect("email alone is enough");
    check(json!({"anonymousId": "a-1"})).expect("anonymous id alone is enough");
}

#[test]
fn neocom_user_id_must_be_2_to_255_chars() {
    let e = refused_field(json!({"userId": "u"}), "userId");
    assert!(e.rule.contains("2 to 255"), "{e}");
    check(json!({"userId": "u1"})).expect("2 chars");
    check(json!({"userId": "é".repeat(255)})).expect("255 chars (510 bytes)");
    let e = refused_field(json!({"userId": "é".repeat(256)}), "userId");
    assert!(e.rule.contains("256"), "{e}");
}

#[test]
fn gosquared_id_must_not_be_an_email() {
    let e = refused_field(json!({"userId": "simon@example.com"}), "userId");
    assert!(e.rule.contains("traits.email"), "{e}");
    // GoSquared's `id` in traits: the error names it as written.
    let e = refused_field(json!({"traits": {"id": "simon@example.com"}}), "traits.id");
    assert!(e.rule.contains("email"), "{e}");
    // An '@' that is not an email address is fine.
    check(json!({"userId": "@simon"})).expect("handle with @");
}

#[test]
fn placeholder_ids_are_refused() {
    for bad in [
        "null",
        "undefined",
        "Anonymous",
        " guest ",
        "0",
        "NaN",
        "[object Object]",
    ] {
        refused_field(json!({"userId": bad}), "userId");
        refused_field(json!({"anonymousId": bad, "userId": "u-1"}), "anonymousId");
    }
    for blank in ["", "   "] {
        let e = refused_field(json!({"userId": blank}), "userId");
        assert!(e.rule.contains("blank"), "{e}");
        refused_field(json!({"anonymousId": blank}), "anonymousId");
    }
    // The list is configurable.
    let options = Options {
        placeholder_ids: vec!["Tester".into()],
        ..Options::default()
    };
    check_with(json!({"userId": "guest"}), &options).expect("guest allowed");
    assert!(check_with(json!({"userId": " tester"}), &options).is_err());
}

#[test]
fn anonymous_id_longer_than_255_chars_is_refused() {
    refused_field(json!({"anonymousId": "a".repeat(256)}), "anonymousId");
    check(json!({"anonymousId": "a".repeat(255)})).expect("255");
}

#[test]
fn neocom_first_name_must_be_2_to_50_chars() {
    // Neocom: first_name and last_name between 2 and 50 characters.
    let e = refused_field(
        json!({"userId": "u1", "traits": {"first_name": "S"}}),
        "traits.first_name",
    );
    assert!(e.rule.contains("2 to 50"), "{e}");
    refused_field(
        json!({"userId": "u1", "traits": {"last_name": "x".repeat(51)}}),
        "traits.last_name",
    );
    check(json!({"userId": "u1", "traits": {"first_name": "Zoë", "last_name": "ß".repeat(50)}}))
        .expect("characters, not bytes");
    let e = refused_field(
        json!({"userId": "u1", "traits": {"first_name": 7}}),
        "traits.first_name",
    );
    assert!(e.rule.contains("string"), "{e}");
    // null is a removal, always allowed.
    check(json!({"userId": "u1", "traits": {"first_name": null}})).expect("removal");
}

#[test]
fn camel_case_trait_errors_name_the_field_as_written() {
    refused_field(
        json!({"userId": "u1", "traits": {"firstName": "S"}}),
        "traits.firstName",
    );
    refused_field(
        json!({"userId": "u1", "traits": {"custom": {"avatar": "nope"}}}),
        "traits.custom.avatar",
    );
    refused_field(
        json!({"userId": "u1", "$set": {"last_name": "S"}}),
        "$set.last_name",
    );
}

#[test]
fn neocom_email_must_be_valid() {
    for bad in [
        "sarah",
        "sarah@",
        "@example.com",
        "sarah@example",
        "sarah@@example.com",
        "sa rah@example.com",
        "sarah@example..com",
        "sarah@.example.com",
        "a@b@example.com",
        "",
    ] {
        refused_field(
            json!({"userId": "u1", "traits": {"email": bad}}),
            "traits.email",
        );
    }
    let long = format!("{}@example.com", "a".repeat(243));
    assert_eq!(long.len(), 255);
    refused_field(
        json!({"userId": "u1", "traits": {"email": long}}),
        "traits.email",
    );
    let ok = format!("{}@example.com", "a".repeat(242));
    check(json!({"traits": {"email": ok}})).expect("254 bytes");
    check(json!({"traits": {"email": " Sarah.Smith+tag@mail.example.co.uk "}})).expect("valid");
}

#[test]
fn email_problems_lists_each_rule() {
    assert!(email_problems("e", "sarah@example.com").is_empty());
    let problems = email_problems("e", "sa rah@example");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p.field == "e"));
    assert_eq!(normalize_email("  Sarah@Example.COM "), "sarah@example.com");
}

#[test]
fn gosquared_created_at_must_be_iso8601() {
    check(json!({"userId": "u1", "traits": {"created_at": "2016-06-07T15:44:20Z"}})).expect("ok");
    refused_field(
        json!({"userId": "u1", "traits": {"created_at": "2016-06-07"}}),
        "traits.created_at",
    );
    refused_field(
        json!({"userId": "u1", "traits": {"createdAt": 1465314260}}),
        "traits.createdAt",
    );
    refused_field(
        json!({"userId": "u1", "$set_once": {"created_at": "last week"}}),
        "$set_once.created_at",
    );
}

#[test]
fn gosquared_avatar_must_be_an_absolute_url() {
    check(json!({"userId": "u1", "traits": {"avatar": "https://example.com/a.png"}})).expect("ok");
    for bad in [
        json!("/a.png"),
        json!("example.com/a.png"),
        json!("ftp://x/a"),
        json!("https://"),
        json!(3),
    ] {
        refused_field(
            json!({"userId": "u1", "traits": {"avatar": bad}}),
            "traits.avatar",
        );
    }
    assert!(is_absolute_url("HTTP://user:pw@[::1]:8080/x?y#z"));
    assert!(!is_absolute_url("http:///path"));
}

#[test]
fn gosquared_company_size_must_be_a_number() {
    check(json!({"userId": "u1", "traits": {"company_size": 12, "company": {"size": 3.5}}}))
        .expect("numbers");
    refused_field(
        json!({"userId": "u1", "traits": {"company_size": "12"}}),
        "traits.company_size",
    );
    refused_field(
        json!({"userId": "u1", "traits": {"companySize": "big"}}),
        "traits.companySize",
    );
    refused_field(
        json!({"userId": "u1", "traits": {"company": {"id": "c1", "size": "big"}}}),
        "traits.company.size",
    );
    refused_field(
        json!({"userId": "u1", "traits": {"company": {"name": "Acme", "size": "big"}}}),
        "traits.company.size",
    );
    refused_field(
        json!({"type": "group", "groupId": "c1", "traits": {"size": "big"}}),
        "traits.size",
    );
}

#[test]
fn property_names_are_limited() {
    let e = refused_field(
        json!({"userId": "u1", "traits": {"$plan": 1}}),
        "traits.$plan",
    );
    assert!(e.rule.contains('$'), "{e}");
    refused_field(json!({"userId": "u1", "traits": {"": 1}}), "traits.");
    let options = Options {
        max_name_chars: 5,
        ..Options::default()
    };
    assert!(check_with(json!({"userId": "u1", "traits": {"ääääää": 1}}), &options).is_err());
    check_with(json!({"userId": "u1", "traits": {"äääää": 1}}), &options).expect("5 chars");
    refused_field(json!({"userId": "u1", "$add": {"$n": 1}}), "$add.$n");
    refused_field(json!({"userId": "u1", "$unset": [""]}), "$unset[0]");
}

#[test]
fn property_values_are_limited() {
    let options = Options {
        max_value_bytes: 10,
        ..Options::default()
    };
    let errors = check_with(
        json!({"userId": "u1", "traits": {"bio": "x".repeat(20)}}),
        &options,
    )
    .expect_err("too big");
    assert_eq!(errors[0].field, "traits.bio");
    check_with(
        json!({"userId": "u1", "traits": {"bio": "x".repeat(8)}}),
        &options,
    )
    .expect("fits");
    assert!(
        check_with(
            json!({"userId": "u1", "$set_once": {"bio": "x".repeat(20)}}),
            &options
        )
        .is_err()
    );
}

#[test]
fn group_needs_group_id() {
    refused_field(json!({"type": "group", "userId": "u1"}), "groupId");
    refused_field(json!({"type": "group", "groupId": "  "}), "groupId");
    refused_field(
        json!({"type": "group", "groupId": "c1", "userId": "guest"}),
        "userId",
    );
    check(json!({"type": "group", "groupId": "c1", "traits": {"name": "Acme"}})).expect("ok");
}

#[test]
fn alias_needs_previous_id_and_user_id() {
    assert_eq!(
        fields(json!({"type": "alias"})),
        vec!["previousId", "userId"]
    );
    refused_field(
        json!({"type": "alias", "previousId": "undefined", "userId": "u1"}),
        "previousId",
    );
    refused_field(
        json!({"type": "alias", "previousId": "a1", "userId": "x@example.com"}),
        "userId",
    );
    check(json!({"type": "alias", "previousId": "a1", "userId": "u1"})).expect("ok");
}

#[test]
fn track_ids_follow_the_id_rules() {
    refused_field(
        json!({"type": "track", "userId": "undefined", "event": "x"}),
        "userId",
    );
    check(json!({"type": "track", "userId": "u1", "anonymousId": "a1", "event": "x"})).expect("ok");
}

#[test]
fn every_broken_field_is_listed() {
    let got = fields(json!({
        "userId": "x", "anonymousId": "guest",
        "traits": {"email": "not-an-email", "first_name": "S", "lastName": "L",
                   "created_at": "soon", "avatar": "me.png", "company_size": "ten",
                   "company": {"id": "c1", "size": "big"}, "$bad": 1}
    }));
    for field in [
        "userId",
        "anonymousId",
        "traits.email",
        "traits.first_name",
        "traits.lastName",
        "traits.created_at",
        "traits.avatar",
        "traits.company_size",
        "traits.company.size",
        "traits.$bad",
    ] {
        assert!(
            got.iter().any(|f| f == field),
            "{field} not listed in {got:?}"
        );
    }
    // A placeholder that is also too short: both rules are reported.
    let errors = check(json!({"userId": "0"})).expect_err("refused");
    assert_eq!(errors.len(), 2, "{errors:?}");
}

/// `$add` on a reserved trait that is not a number (`email`, `first_name`, `last_name`,
/// `name`, `created_at`, `avatar`, `company`, ..., also in Segment's camelCase) is refused,
/// naming each field as written, in the same single error as every other broken field.
/// `company_size` is a number and may be added to.
#[test]
fn add_on_a_reserved_trait_is_refused_naming_the_field() {
    let errors = check(json!({
        "userId": "u-1",
        "traits": {"first_name": "S"},
        "$add": {"first_name": 1, "created_at": 1, "email": 1, "name": 1, "avatar": 1,
                 "company": 1, "lastName": 1, "createdAt": 2, "logins": 1, "company_size": 1}
    }))
    .expect_err("refused");
    let mut got: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "$add.avatar",
            "$add.company",
            "$add.createdAt",
            "$add.created_at",
            "$add.email",
            "$add.first_name",
            "$add.lastName",
            "$add.name",
            "traits.first_name",
        ]
    );
    let e = errors
        .iter()
        .find(|e| e.field == "$add.created_at")
        .unwrap();
    assert!(e.rule.contains("reserved"), "{e:?}");
    // Numbers may still be added to, company_size included.
    check(json!({"userId": "u-1", "$add": {"logins": 1, "company_size": 2, "score": 0.5}}))
        .expect("valid");
}
