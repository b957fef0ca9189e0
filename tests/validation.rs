//! SPEC 3.1 through the Db: a refused call stores nothing, and the error lists every field.

#[path = "support/common.rs"]
mod common;

use common::*;
use profiledb::{Db, Error, Options};
use serde_json::json;

#[test]
fn a_refused_call_stores_nothing_and_names_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let err = try_call(
        &db,
        identify(
            Some("u-1"),
            Some("not-an-email"),
            None,
            json!({"first_name": "S", "plan": "pro"}),
        ),
    )
    .unwrap_err();
    let Error::Invalid(fields) = err else {
        panic!("{err:?}")
    };
    let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    assert!(names.contains(&"traits.email"), "{names:?}");
    assert!(names.contains(&"traits.first_name"), "{names:?}");
    assert!(by_user(&db, "u-1").is_none());
    assert_eq!(db.stats().profiles, 0);
    assert_eq!(db.stats().property_names, 0);
}

#[test]
fn segment_placeholder_ids_cannot_merge_thousands_of_people() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for (i, bad) in [
        "undefined",
        "null",
        "anonymous",
        "0",
        "  ",
        "[object Object]",
        "guest",
    ]
    .iter()
    .enumerate()
    {
        let err = try_call(
            &db,
            identify(Some(&format!("u-{i}")), None, Some(bad), json!({})),
        );
        assert!(matches!(err, Err(Error::Invalid(_))), "{bad:?}: {err:?}");
    }
    assert_eq!(db.stats().profiles, 0);
}

#[test]
fn the_call_size_limit_is_enforced_on_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        Options {
            max_call_bytes: 200,
            ..options()
        },
    )
    .unwrap();
    let big = json!({"userId": "u-1", "traits": {"bio": "x".repeat(300)}}).to_string();
    assert!(matches!(
        db.apply_json(big.as_bytes()),
        Err(Error::Invalid(_))
    ));
    let small = json!({"userId": "u-1"}).to_string();
    db.apply_json(small.as_bytes()).unwrap();
}
