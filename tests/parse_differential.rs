//! The direct parser (`Message::parse`) against the reference it replaced: JSON text parsed
//! into a `serde_json::Value`, then the `Value`-based rules of the former `Message::from_json`,
//! frozen in tests/support/reference_parse.rs (the crate's `from_json` now reads the value
//! with the direct parser's visitors, so it cannot be its own reference). On generated messages (members in any
//! order, repeated members, escapes, every number form, every shape rule broken) and on
//! damaged ones (cut short, a byte changed or inserted), both must accept the same inputs with
//! the same message, and refuse the same inputs with the same error text. Where the text is
//! JSON, `Message::from_json` of its value (the path of the server's single endpoints and
//! vendor dialects) must agree with the reference too.

use profiledb::Message;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;
#[path = "support/reference_parse.rs"]
mod reference_parse;
use reference_parse::reference;

#[track_caller]
fn same(json: &[u8]) {
    let direct = Message::parse(json);
    let refer = reference(json);
    let text = String::from_utf8_lossy(json);
    match (&direct, &refer) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "different messages for {text}"),
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "different errors for {text}");
            assert_eq!(a.kind(), b.kind(), "different error kinds for {text}");
        }
        _ => panic!("one accepts, one refuses {text}:\n direct {direct:?}\n reference {refer:?}"),
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) {
        let from_value = Message::from_json(&value);
        match (&from_value, &refer) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "different messages from the value of {text}"),
            (Err(a), Err(b)) => {
                assert_eq!(
                    a.to_string(),
                    b.to_string(),
                    "different errors, value of {text}"
                );
                assert_eq!(a.kind(), b.kind(), "different error kinds, value of {text}");
            }
            _ => panic!(
                "one accepts, one refuses the value of {text}:\n from_json {from_value:?}\n \
                 reference {refer:?}"
            ),
        }
    }
}

/// A JSON text as written: members keep their order and may repeat.
#[derive(Debug, Clone)]
enum J {
    Lit(&'static str),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn render(j: &J, out: &mut String, spaced: bool) {
    match j {
        J::Lit(t) => out.push_str(t),
        J::Str(s) => {
            out.push('"');
            out.push_str(s);
            out.push('"');
        }
        J::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if spaced { ", " } else { "," });
                }
                render(item, out, spaced);
            }
            out.push(']');
        }
        J::Obj(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(if spaced { ",\n " } else { "," });
                }
                out.push('"');
                out.push_str(k);
                out.push_str(if spaced { "\": " } else { "\":" });
                render(v, out, spaced);
            }
            out.push('}');
        }
    }
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "42",
    "1.5",
    "-2.25e3",
    "1e3",
    "1E-7",
    "0.1",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "1e308",
    "1e400",
    "-1e400",
    "01",
    "1.",
    "-",
    "2.0",
];

/// String bodies as written between the quotes (escapes included, some invalid).
const STRINGS: &[&str] = &[
    "",
    " ",
    "x",
    "u-1",
    "pro",
    "One@Example.COM",
    "sarah@example.com",
    "  identify ",
    "IDENTIFY",
    "Group",
    "alias",
    "track",
    "page",
    "screen",
    "other",
    "2026-11-22T10:00:00Z",
    "2026-11-22T10:00:00.123+02:00",
    " 2026-11-22T10:00:00Z ",
    "2026-13-45T99:99:99Z",
    "2026-11-22",
    "null",
    "caf\\u00e9",
    "\\ud83d\\ude00",
    "\\ud800",
    "tab\\there",
    "quote\\\"d",
    "back\\\\slash",
    "\\x",
    "é😀",
    "firstName",
];

const TOP_KEYS: &[&str] = &[
    "type",
    "userId",
    "anonymousId",
    "messageId",
    "groupId",
    "previousId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "traits",
    "$set",
    "$set_once",
    "$unset",
    "$add",
    "$append",
    "$union",
    "$remove",
    "context",
    "properties",
    "integrations",
    "writeKey",
];

const TRAIT_KEYS: &[&str] = &[
    "email",
    "id",
    "company",
    "custom",
    "firstName",
    "first_name",
    "lastName",
    "last_name",
    "createdAt",
    "created_at",
    "companySize",
    "company_size",
    "name",
    "plan",
    "logins",
    "Plan",
    "",
    "caf\\u00e9",
    "a.b",
];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(pool)
}

fn scalar() -> impl Strategy<Value = J> {
    prop_oneof![
        2 => Just(J::Lit("null")),
        1 => Just(J::Lit("true")),
        1 => Just(J::Lit("false")),
        3 => pick(NUMBERS).prop_map(J::Lit),
        5 => pick(STRINGS).prop_map(|s| J::Str(s.to_string())),
        1 => "[a-z]{0,6}".prop_map(J::Str),
    ]
}

/// Any value: scalars, arrays and objects, with trait-like member names.
fn value() -> impl Strategy<Value = J> {
    scalar().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::vec((pick(TRAIT_KEYS).prop_map(String::from), inner), 0..5)
                .prop_map(J::Obj),
        ]
    })
}

/// A message: top-level members (some repeated, any order), each with a value shaped like
/// what profiledb expects there or like anything else.
fn message() -> impl Strategy<Value = J> {
    let member = pick(TOP_KEYS).prop_flat_map(|key| {
        let v = match key {
            "traits" | "$set" | "$set_once" | "$add" | "$append" | "$union" | "$remove" => prop_oneof![
                4 => prop::collection::vec((pick(TRAIT_KEYS).prop_map(String::from), value()), 0..7)
                    .prop_map(J::Obj),
                1 => value(),
            ]
            .boxed(),
            "$unset" => prop_oneof![
                3 => prop::collection::vec(
                    prop_oneof![3 => pick(TRAIT_KEYS).prop_map(|s| J::Str(s.into())), 1 => scalar()],
                    0..4
                )
                .prop_map(J::Arr),
                1 => value(),
            ]
            .boxed(),
            // RudderStack's `context.traits` among other context members.
            "context" => prop_oneof![
                3 => prop::collection::vec(
                    (
                        pick(&["traits", "traits", "library", "ip"]).prop_map(String::from),
                        prop_oneof![
                            3 => prop::collection::vec(
                                (pick(TRAIT_KEYS).prop_map(String::from), value()),
                                0..6
                            )
                            .prop_map(J::Obj),
                            1 => value(),
                        ],
                    ),
                    0..4
                )
                .prop_map(J::Obj),
                1 => value(),
            ]
            .boxed(),
            _ => value().boxed(),
        };
        (Just(key.to_string()), v)
    });
    prop::collection::vec(member, 0..9).prop_map(J::Obj)
}

/// How a generated text is damaged.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Cut(prop::sample::Index),
    Change(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => Just(Damage::None),
        1 => any::<prop::sample::Index>().prop_map(Damage::Cut),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Change(i, b)),
        1 => (any::<prop::sample::Index>(), prop::sample::select(&b"{}[]\",:\\ 0\x80"[..]))
            .prop_map(|(i, b)| Damage::Insert(i, b)),
    ]
}

fn apply(damage: &Damage, text: String) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    if bytes.is_empty() {
        return bytes;
    }
    match damage {
        Damage::None => {}
        Damage::Cut(i) => bytes.truncate(i.index(bytes.len())),
        Damage::Change(i, b) => {
            let at = i.index(bytes.len());
            bytes[at] = *b;
        }
        Damage::Insert(i, b) => {
            let at = i.index(bytes.len() + 1);
            bytes.insert(at, *b);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(props::config(2000, "tests/parse_differential.proptest-regressions"))]

    #[test]
    fn the_direct_parser_agrees_with_the_reference(
        msg in message(),
        spaced in any::<bool>(),
        damage in damage(),
    ) {
        let mut text = String::new();
        render(&msg, &mut text, spaced);
        same(&apply(&damage, text));
    }

    #[test]
    fn arbitrary_bytes_agree(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        same(&bytes);
    }
}

#[test]
fn hand_picked_inputs_agree() {
    let cases: &[&str] = &[
        "",
        " ",
        "null",
        "[]",
        "[{\"userId\": \"u-1\"}]",
        "\"identify\"",
        "{}",
        "{} x",
        "{\"userId\": \"u-1\"}",
        "{\"userId\": \"u-1\", \"userId\": null}",
        "{\"userId\": null, \"userId\": \"u-2\"}",
        "{\"type\": \"alias\", \"previousId\": 5, \"userId\": 18446744073709551615}",
        "{\"type\": \"group\", \"groupId\": 1.5, \"traits\": {\"email\": 5, \"company\": {\"id\": []}}}",
        "{\"traits\": {\"email\": 5}, \"userId\": []}",
        "{\"traits\": {\"company\": {\"id\": [], \"name\": \"x\"}, \"email\": 5}}",
        "{\"traits\": {\"company\": {\"id\": null, \"name\": \"x\", \"name\": null}}}",
        "{\"traits\": {\"id\": {\"a\": 1}, \"custom\": {\"plan\": 1, \"plan\": 2}, \"plan\": 3}}",
        "{\"traits\": {\"id\": 12345678901234567890, \"firstName\": \"A\", \"first_name\": \"B\"}}",
        "{\"$set\": {\"id\": \"u-9\"}, \"traits\": {\"id\": \"u-8\"}}",
        "{\"$add\": {\"n\": 1e308, \"m\": 18446744073709551615, \"k\": -0}}",
        "{\"$add\": {\"n\": \"1\"}}",
        "{\"$unset\": [\"a\", 1]}",
        "{\"$unset\": {\"a\": 1}}",
        "{\"timestamp\": null, \"originalTimestamp\": \"2026-01-01T00:00:00Z\"}",
        "{\"timestamp\": \"bad\", \"originalTimestamp\": 5}",
        "{\"type\": \"TRACK \", \"userId\": \"u\", \"anonymousId\": \"a\"}",
        "{\"type\": \"nope\"}",
        "{\"type\": 5, \"userId\": []}",
        "{\"context\": {\"bad\": \"\\ud800\"}}",
        "{\"context\": {\"traits\": {\"email\": 5}}, \"traits\": {\"email\": \"a@b.co\"}}",
        "{\"context\": {\"traits\": {\"plan\": 1}, \"traits\": null}, \"userId\": \"u-1\"}",
        "{\"context\": {\"traits\": [1]}, \"traits\": {\"plan\": 2}}",
        "{\"context\": [{\"traits\": {}}], \"userId\": \"u-1\"}",
        "{\"userId\": \"u-1\", \"$append\": {\"l\": [1]}, \"$union\": {\"l\": 2, \"m\": [3, 4], \"n\": null}, \"$remove\": {\"l\": \"x\"}}",
        "{\"userId\": \"u-1\", \"$union\": [1]}",
        "{\"context\": \"\\u00e9\", \"userId\": \"\\u0075-1\"}",
        "{\"userId\": \"u-1\", \"traits\": {\"a\": [1, {\"b\": null, \"a\": 2}]}}",
    ];
    for case in cases {
        same(case.as_bytes());
    }
    // Invalid UTF-8 in a member profiledb does not read.
    same(b"{\"context\": \"\xff\", \"userId\": \"u-1\"}");
    same(b"{\"userId\": \"u-1\", \"x\": 1e400}");
    // Nesting deeper than serde_json's recursion limit.
    let deep = format!("{{\"context\": {}1{}}}", "[".repeat(200), "]".repeat(200));
    same(deep.as_bytes());
    let deep = format!(
        "{{\"traits\": {{\"a\": {}1{}}}}}",
        "[".repeat(130),
        "]".repeat(130)
    );
    same(deep.as_bytes());
}
