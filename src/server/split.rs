//! The messages of a `/v1/batch` body: its `batch` array cut into each element's JSON text.
//!
//! The body is read once by serde_json, which checks that all of it is JSON and hands the
//! `batch` member over as raw text ([`serde_json::value::RawValue`]); cutting that text into
//! its elements here costs a byte loop instead of a second full JSON pass (which was ~4,500
//! instructions per W1 message, docs/performance.md). Each element is then parsed on its own
//! (`profile::parse::parse_ingested`), so a refusal still names the message.

/// The elements of `array`, the text of a JSON array that serde_json already read as valid
/// JSON (a `RawValue`), each without the whitespace around it: the same slices as
/// `serde_json::from_str::<Vec<&RawValue>>(array)`. `None` when `array` is not an array.
pub(crate) fn elements(array: &str) -> Option<Vec<&str>> {
    let bytes = array.as_bytes();
    if bytes.first() != Some(&b'[') {
        return None;
    }
    let mut out = Vec::new();
    let mut depth = 0usize;
    // Start of the current element (after the `[` or `,` before it).
    let mut start = 1;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                // To the closing quote: memchr jumps over the string's ordinary bytes (most
                // of a message's text), an escape's next byte is skipped.
                i += 1;
                while let Some(at) =
                    memchr::memchr2(b'"', b'\\', bytes.get(i..).unwrap_or_default())
                {
                    i += at;
                    if bytes[i] == b'"' {
                        break;
                    }
                    i += 2;
                }
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    push_trimmed(&mut out, array, start, i);
                    break;
                }
            }
            b',' if depth == 1 => {
                push_trimmed(&mut out, array, start, i);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    Some(out)
}

/// Push `array[start..end]` without its JSON whitespace, unless nothing is left (the inside
/// of `[]`; valid JSON has no empty element otherwise).
fn push_trimmed<'a>(out: &mut Vec<&'a str>, array: &'a str, start: usize, end: usize) {
    let element = array[start..end].trim_matches([' ', '\t', '\n', '\r']);
    if !element.is_empty() {
        out.push(element);
    }
}

#[cfg(test)]
mod tests {
    use super::elements;
    use serde_json::value::RawValue;

    fn by_serde(array: &str) -> Option<Vec<&str>> {
        serde_json::from_str::<Vec<&RawValue>>(array)
            .ok()
            .map(|v| v.into_iter().map(RawValue::get).collect())
    }

    #[test]
    fn cuts_like_serde_json() {
        let arrays = [
            "[]",
            "[ ]",
            "[\n\t ]",
            "[1]",
            "[ 1 , 2,3 ]",
            r#"[{"a":[1,{"b":"]"}]}, {"c":"}\"],{"}, "x"]"#,
            r#"["\\", "\\\"", "a\\\\"]"#,
            r#"[[], {}, [[[]]], null, true, -1.5e3]"#,
            "[\r\n{\"type\":\"identify\",\"userId\":\"u1\"}\r\n,\r\n{}\r\n]",
            r#"["[", "{", ",", "\u005d"]"#,
            "[\"\u{e9}\u{1F600}\", \"\u{2028}\"]",
        ];
        for array in arrays {
            assert_eq!(elements(array), by_serde(array), "{array}");
        }
    }

    #[test]
    fn not_an_array() {
        for text in ["{}", "1", "\"[1]\"", "null", ""] {
            assert_eq!(elements(text), None, "{text}");
        }
    }

    /// Generated arrays (nested values, strings with every escape and the structural
    /// characters, random whitespace) cut as serde_json cuts them.
    #[test]
    fn generated_arrays_cut_like_serde_json() {
        let mut rng = crate::rng::SplitMix64(7);
        for _ in 0..2000 {
            let mut text = String::from("[");
            let n = rng.next_u64() % 6;
            for i in 0..n {
                if i > 0 {
                    text.push(',');
                }
                space(&mut rng, &mut text);
                value(&mut rng, &mut text, 0);
                space(&mut rng, &mut text);
            }
            space(&mut rng, &mut text);
            text.push(']');
            assert_eq!(elements(&text), by_serde(&text), "{text}");
        }
    }

    fn space(rng: &mut crate::rng::SplitMix64, out: &mut String) {
        for _ in 0..rng.next_u64() % 3 {
            out.push([' ', '\t', '\n', '\r'][(rng.next_u64() % 4) as usize]);
        }
    }

    fn value(rng: &mut crate::rng::SplitMix64, out: &mut String, depth: u32) {
        let pick = if depth > 3 {
            rng.next_u64() % 4
        } else {
            rng.next_u64() % 6
        };
        match pick {
            0 => out.push_str("null"),
            1 => out.push_str(["0", "-12.5e-3", "7", "1E400"][(rng.next_u64() % 4) as usize]),
            2 | 3 => {
                out.push('"');
                for _ in 0..rng.next_u64() % 6 {
                    let parts = [
                        "a", "\\\"", "\\\\", "]", "[", "{", "}", ",", "\\n", "\\u005b", "\u{e9}",
                        "\\/",
                    ];
                    out.push_str(parts[(rng.next_u64() % parts.len() as u64) as usize]);
                }
                out.push('"');
            }
            4 => {
                out.push('[');
                for i in 0..rng.next_u64() % 4 {
                    if i > 0 {
                        out.push(',');
                    }
                    space(rng, out);
                    value(rng, out, depth + 1);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.next_u64() % 4 {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("\"k{i}\""));
                    space(rng, out);
                    out.push(':');
                    value(rng, out, depth + 1);
                    space(rng, out);
                }
                out.push('}');
            }
        }
    }
}
