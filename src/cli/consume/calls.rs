//! What a Kafka message holds: one Segment-shaped JSON call (an object) or a JSON array of
//! them. Each call is handed on as its raw bytes, parsed later by `Db::prepare` (the one
//! parser every surface uses), so a message costs one scan of its bytes to split it.

use serde_json::value::RawValue;

/// The calls of one message's payload, in order, or why it is not a message at all.
pub fn split(payload: Option<&[u8]>) -> Result<Vec<&[u8]>, String> {
    let Some(payload) = payload else {
        return Err("the message has no payload".into());
    };
    match payload.trim_ascii_start().first() {
        Some(b'{') => Ok(vec![payload]),
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(payload)
            .map(|calls| calls.into_iter().map(|c| c.get().as_bytes()).collect())
            .map_err(|e| format!("the payload is not a JSON array of calls: {e}")),
        _ => Err("the payload is not a JSON object or array".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn objects_arrays_and_garbage() {
        assert_eq!(split(Some(br#" {"userId":"a"}"#)).unwrap().len(), 1);
        let two = split(Some(
            br#"[{"userId":"a"}, {"userId":"b","traits":{"x":[1]}}]"#,
        ))
        .unwrap();
        assert_eq!(
            two,
            vec![
                &br#"{"userId":"a"}"#[..],
                br#"{"userId":"b","traits":{"x":[1]}}"#
            ]
        );
        assert!(split(Some(b"[]")).unwrap().is_empty());
        assert!(split(None).is_err());
        assert!(split(Some(b"\xff\x00")).is_err());
        assert!(split(Some(b"[{\"userId\": ")).is_err());
        assert!(split(Some(b"")).is_err());
    }
}
