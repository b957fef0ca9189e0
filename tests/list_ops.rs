//! List operations (`$append`, `$union`, `$remove`): their rules, their arrival-order meaning,
//! limits, the typed API, the CLI, and a model test over random sequences with redelivery,
//! reopen and crash-like reopen (docs/semantics.md, "List operations").

#[path = "support/common.rs"]
mod common;
#[path = "support/props.rs"]
mod props;

use std::collections::{HashMap, HashSet};

use common::*;
use profiledb::{Db, Error, Identify, ListOp, Options, Status, Value};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

fn tags(db: &Db, name: &str) -> Option<Json> {
    prop(&by_user(db, "u1").expect("profile u"), name)
}

fn at(n: u32, body: Json) -> Json {
    let mut m = body;
    m["userId"] = json!("u1");
    m["timestamp"] = json!(ts(n));
    m
}

#[test]
fn append_union_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(&db, at(1, json!({"$append": {"log": "a"}})));
    call(&db, at(2, json!({"$append": {"log": ["b", 1]}})));
    // An array is appended as one item; duplicates are kept by $append.
    call(&db, at(3, json!({"$append": {"log": "a"}})));
    assert_eq!(tags(&db, "log"), Some(json!(["a", ["b", 1], "a"])));
    // $union adds only what is missing, also against duplicates in its own list.
    call(&db, at(4, json!({"$union": {"tags": ["x", "y", "x"]}})));
    call(&db, at(5, json!({"$union": {"tags": ["y", "z"]}})));
    // A single item counts as a one-item list.
    call(&db, at(6, json!({"$union": {"tags": "w"}})));
    assert_eq!(tags(&db, "tags"), Some(json!(["x", "y", "z", "w"])));
    // $remove takes out every occurrence.
    call(&db, at(7, json!({"$remove": {"log": "a", "tags": "nope"}})));
    assert_eq!(tags(&db, "log"), Some(json!([["b", 1]])));
    assert_eq!(tags(&db, "tags"), Some(json!(["x", "y", "z", "w"])));
    // $remove on an absent property creates nothing; a null item is skipped.
    call(
        &db,
        at(
            8,
            json!({"$remove": {"absent": "a"}, "$append": {"log": null}}),
        ),
    );
    assert_eq!(tags(&db, "absent"), None);
    assert_eq!(tags(&db, "log"), Some(json!([["b", 1]])));
    // Removing the last item leaves an empty list (not an absent property).
    call(&db, at(9, json!({"$remove": {"log": ["b", 1]}})));
    assert_eq!(tags(&db, "log"), Some(json!([])));
}

#[test]
fn a_list_operation_on_a_value_that_is_not_a_list_is_ignored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(&db, at(1, json!({"traits": {"plan": "pro", "n": 3}})));
    let out = call(
        &db,
        at(
            2,
            json!({"$append": {"plan": "x"}, "$union": {"n": [1]}, "$remove": {"plan": "pro"}}),
        ),
    );
    assert_eq!(out.ignored, ["n", "plan"]);
    assert_eq!(tags(&db, "plan"), Some(json!("pro")));
    assert_eq!(tags(&db, "n"), Some(json!(3)));
}

#[test]
fn reserved_traits_and_bad_shapes_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for (body, field) in [
        (json!({"$append": {"email": "a@b.co"}}), "$append.email"),
        (json!({"$union": {"firstName": ["x"]}}), "$union.firstName"),
        (json!({"$remove": {"$tags": "x"}}), "$remove.$tags"),
    ] {
        match try_call(&db, at(1, body.clone())) {
            Err(Error::Invalid(errors)) => {
                assert!(
                    errors.iter().any(|e| e.field == field),
                    "{body}: {errors:?}"
                )
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    match try_call(&db, at(1, json!({"$union": ["tags"]}))) {
        Err(Error::Malformed(text)) => assert!(text.contains("$union"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert!(by_user(&db, "u1").is_none());
}

#[test]
fn within_one_call_lists_come_after_set_set_once_and_add_and_unset_wins() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(
        &db,
        at(
            1,
            json!({"traits": {"tags": ["a"]}, "$union": {"tags": ["b"]},
                           "$set_once": {"log": []}, "$append": {"log": 1}}),
        ),
    );
    assert_eq!(tags(&db, "tags"), Some(json!(["a", "b"])));
    assert_eq!(tags(&db, "log"), Some(json!([1])));
    call(
        &db,
        at(2, json!({"$append": {"tags": "c"}, "$unset": ["tags"]})),
    );
    assert_eq!(tags(&db, "tags"), None);
}

/// docs/semantics.md, "List operations": they apply in arrival order, on the value present
/// when they arrive, whatever their timestamps.
#[test]
fn list_operations_apply_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    // Two appends whose timestamps are reversed: arrival order.
    call(&db, at(5, json!({"$append": {"log": "first-arrived"}})));
    call(&db, at(1, json!({"$append": {"log": "second-arrived"}})));
    assert_eq!(
        tags(&db, "log"),
        Some(json!(["first-arrived", "second-arrived"]))
    );
    // A late list operation older than a set is still applied, on top of the set's list.
    call(&db, at(20, json!({"traits": {"tags": ["set"]}})));
    call(&db, at(10, json!({"$union": {"tags": ["late"]}})));
    assert_eq!(tags(&db, "tags"), Some(json!(["set", "late"])));
    // A set older than the list's newest operation, arriving after it, loses.
    call(&db, at(15, json!({"traits": {"tags": ["old-set"]}})));
    assert_eq!(tags(&db, "tags"), Some(json!(["set", "late"])));
    // A newer set or removal replaces the list.
    call(&db, at(30, json!({"traits": {"tags": ["new-set"]}})));
    assert_eq!(tags(&db, "tags"), Some(json!(["new-set"])));
    call(&db, at(40, json!({"$unset": ["tags"]})));
    assert_eq!(tags(&db, "tags"), None);
    // ... and a list operation after a removal starts from an empty list.
    call(&db, at(35, json!({"$append": {"tags": "after-unset"}})));
    assert_eq!(tags(&db, "tags"), Some(json!(["after-unset"])));
}

#[test]
fn a_merge_keeps_the_list_with_the_newest_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(
        &db,
        json!({"userId": "u1", "timestamp": ts(1), "$union": {"tags": ["u1"]}}),
    );
    call(
        &db,
        json!({"anonymousId": "a", "timestamp": ts(2), "$union": {"tags": ["a1"]}}),
    );
    let out = call(
        &db,
        json!({"userId": "u1", "anonymousId": "a", "timestamp": ts(3)}),
    );
    assert_eq!(out.status, Status::Merged);
    assert_eq!(tags(&db, "tags"), Some(json!(["a1"])));
}

#[test]
fn property_limits_bound_list_length_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        Options {
            max_list_items: 3,
            max_value_bytes: 64,
            ..options()
        },
    )
    .unwrap();
    call(&db, at(1, json!({"$union": {"tags": ["a", "b", "c"]}})));
    let out = call(&db, at(2, json!({"$append": {"tags": "d"}})));
    assert_eq!(out.ignored, ["tags"]);
    assert_eq!(tags(&db, "tags"), Some(json!(["a", "b", "c"])));
    // Bytes: each item passes the value limit, the list would not.
    let long = "x".repeat(40);
    call(&db, at(3, json!({"$append": {"big": long}})));
    let out = call(&db, at(4, json!({"$append": {"big": long}})));
    assert_eq!(out.ignored, ["big"]);
    assert_eq!(tags(&db, "big"), Some(json!([long])));
    // An item over the value limit on its own is refused with the call.
    let huge = "y".repeat(100);
    assert!(matches!(
        try_call(&db, at(5, json!({"$append": {"big2": huge}}))),
        Err(Error::Invalid(_))
    ));
    // Removing keeps working at the limit.
    call(&db, at(6, json!({"$remove": {"tags": "a"}})));
    call(&db, at(7, json!({"$append": {"tags": "d"}})));
    assert_eq!(tags(&db, "tags"), Some(json!(["b", "c", "d"])));
    db.close().unwrap();
}

#[test]
fn the_typed_api_takes_list_operations() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let out = db
        .identify(Identify {
            user_id: Some("u1".into()),
            lists: vec![
                (
                    "tags".into(),
                    ListOp::Union(vec![Value::Str("a".into()), Value::Str("b".into())]),
                ),
                ("tags".into(), ListOp::Remove(Value::Str("a".into()))),
                ("log".into(), ListOp::Append(Value::Int(7))),
            ],
            ..Identify::default()
        })
        .unwrap();
    assert_eq!(out.status, Status::Created);
    assert_eq!(tags(&db, "tags"), Some(json!(["b"])));
    assert_eq!(tags(&db, "log"), Some(json!([7])));
}

#[test]
fn the_cli_takes_list_operations() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiledb"))
            .arg("--data")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&[
        "identify",
        r#"{"userId": "u1", "$union": {"tags": ["a", "b"]}}"#,
    ]);
    run(&[
        "identify",
        r#"{"userId": "u1", "$remove": {"tags": "a"}, "$append": {"tags": "c"}}"#,
    ]);
    let p: Json = serde_json::from_str(&run(&["get", "--user-id", "u1"])).unwrap();
    assert_eq!(p["properties"]["tags"], json!(["b", "c"]), "{p}");
}

// ---- model test ----

#[derive(Debug, Clone)]
enum Step {
    /// A list operation on property `name` (0..2) with item `item` (0..4), at `time`, with
    /// messageId `mid` (a small pool, so that redeliveries happen).
    Op {
        kind: u8,
        name: u8,
        item: u8,
        time: u32,
        mid: u8,
    },
    /// A set of the property to `[item]` at `time`.
    Set {
        name: u8,
        item: u8,
        time: u32,
        mid: u8,
    },
    /// Close and reopen.
    Reopen,
    /// Sync and drop without closing (crash-like; the log is replayed).
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..3, 0u8..2, 0u8..4, 0u32..50, 0u8..12)
            .prop_map(|(kind, name, item, time, mid)| Step::Op { kind, name, item, time, mid }),
        1 => (0u8..2, 0u8..4, 0u32..50, 0u8..12)
            .prop_map(|(name, item, time, mid)| Step::Set { name, item, time, mid }),
        1 => Just(Step::Reopen),
        1 => Just(Step::Crash),
    ]
}

const MAX_ITEMS: usize = 3;

/// The reference: messages in arrival order, each messageId applied once; a list operation
/// reads the current list; a set applies when it is not older than the newest stamp the
/// property holds (its own or a list operation's).
#[derive(Default)]
struct Model {
    seen: HashSet<u8>,
    props: HashMap<u8, (u32, u64, Option<Vec<Json>>)>,
}

impl Model {
    fn apply(&mut self, s: &Step, order: u64) {
        match *s {
            Step::Op {
                kind,
                name,
                item,
                time,
                mid,
            } => {
                if !self.seen.insert(mid) {
                    return;
                }
                let item = json!(format!("i{item}"));
                let (t, o, value) = self.props.get(&name).cloned().unwrap_or((0, 0, None));
                let mut list = value.clone().unwrap_or_default();
                match kind {
                    0 => list.push(item),
                    1 => {
                        if !list.contains(&item) {
                            list.push(item)
                        }
                    }
                    _ => {
                        if value.is_none() {
                            return;
                        }
                        list.retain(|x| *x != item)
                    }
                }
                if list.len() > MAX_ITEMS {
                    return;
                }
                let stamp = (t, o).max((time, order));
                self.props.insert(name, (stamp.0, stamp.1, Some(list)));
            }
            Step::Set {
                name,
                item,
                time,
                mid,
            } => {
                if !self.seen.insert(mid) {
                    return;
                }
                let current = self.props.get(&name).map(|(t, o, _)| (*t, *o));
                if current.is_none_or(|c| c <= (time, order)) {
                    self.props
                        .insert(name, (time, order, Some(vec![json!(format!("i{item}"))])));
                }
            }
            Step::Reopen | Step::Crash => {}
        }
    }
}

fn message(s: &Step) -> Option<Json> {
    let op = |kind: u8| ["$append", "$union", "$remove"][kind as usize];
    match *s {
        Step::Op {
            kind,
            name,
            item,
            time,
            mid,
        } => Some(json!({
            "userId": "u1", "messageId": format!("m{mid}"), "timestamp": ts(time),
            op(kind): {format!("p{name}"): format!("i{item}")}
        })),
        Step::Set {
            name,
            item,
            time,
            mid,
        } => Some(json!({
            "userId": "u1", "messageId": format!("m{mid}"), "timestamp": ts(time),
            "traits": {format!("p{name}"): [format!("i{item}")]}
        })),
        _ => None,
    }
}

proptest! {
    #![proptest_config(props::config(48, "tests/list_ops.proptest-regressions"))]

    #[test]
    fn list_operations_match_the_arrival_order_model(steps in prop::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let opts = || Options { max_list_items: MAX_ITEMS, ..options() };
        let mut db = Db::open(dir.path(), opts()).unwrap();
        let mut model = Model::default();
        let mut order = 0u64;
        for s in &steps {
            match s {
                Step::Reopen => {
                    db.close().unwrap();
                    db = Db::open(dir.path(), opts()).unwrap();
                }
                Step::Crash => {
                    db.sync().unwrap();
                    db.abandon();
                    db = Db::open(dir.path(), opts()).unwrap();
                }
                _ => {
                    order += 1;
                    model.apply(s, order);
                    call(&db, message(s).unwrap());
                }
            }
            for name in 0u8..2 {
                let want = model.props.get(&name).and_then(|(_, _, v)| v.clone()).map(Json::from);
                let got = by_user(&db, "u1").and_then(|p| prop(&p, &format!("p{name}")));
                prop_assert_eq!(got, want, "p{} after {:?}", name, s);
            }
        }
        db.close().unwrap();
    }
}
