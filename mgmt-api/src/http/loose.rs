//! Lenient decoding of the loosely typed JSON that existing clients send: sizes as
//! byte strings, numbers or "1 gib"; counts as numbers or numeric strings;
//! booleans as `true` or "True"/"false". Nulls mean "absent". Responses stay
//! strict: sizes are always strings of bytes.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};
use serde_json::Value;

use crate::domain::rules;

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes an optional size in bytes: `"1073741824"`, `1073741824`, `"1 gib"`.
pub fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => rules::parse_size(&s).map(Some).map_err(D::Error::custom),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) | None => Err(D::Error::custom(format!(
                "size {n} is not a positive integer number of bytes"
            ))),
            Some(v) => Ok(Some(v)),
        },
        Some(other) => Err(D::Error::custom(format!(
            "size must be a string of bytes, not {}",
            describe(&other)
        ))),
    }
}

/// Encodes an optional size as a string of bytes.
pub fn ser_opt_size<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(bytes) => s.serialize_str(&bytes.to_string()),
        None => s.serialize_none(),
    }
}

/// Decodes an optional unsigned 32-bit count: `2` or `"2"`.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    opt_u64(d)?
        .map(|v| u32::try_from(v).map_err(|_| D::Error::custom(format!("{v} is too large"))))
        .transpose()
}

/// Decodes an optional unsigned 64-bit count (a rate): `2` or `"2"`.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let bad =
        |what: String| D::Error::custom(format!("expected a non-negative integer, got {what}"));
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad(n.to_string())),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(format!("{s:?}"))),
        Some(other) => Err(bad(describe(&other).to_owned())),
    }
}

/// Decodes an optional boolean: `true`, `"true"`, `"True"`, `"FALSE"`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(D::Error::custom(format!(
            "expected true/false or \"True\"/\"False\", got {other}"
        ))),
    }
}

/// Decodes an optional string list where `null` means empty.
pub fn null_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Probe {
        #[serde(default, deserialize_with = "super::opt_size")]
        size: Option<u64>,
        #[serde(default, deserialize_with = "super::opt_u32")]
        count: Option<u32>,
        #[serde(default, deserialize_with = "super::opt_bool")]
        flag: Option<bool>,
    }

    fn probe(json: &str) -> Result<Probe, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn accepts_the_loose_shapes_clients_send() {
        let p = probe(r#"{"size":"1 gib","count":"3","flag":"True"}"#).unwrap();
        assert_eq!(
            (p.size, p.count, p.flag),
            (Some(1 << 30), Some(3), Some(true))
        );
        let p = probe(r#"{"size":4096,"count":1,"flag":false}"#).unwrap();
        assert_eq!(
            (p.size, p.count, p.flag),
            (Some(4096), Some(1), Some(false))
        );
        let p = probe(r#"{"size":null,"count":null,"flag":null}"#).unwrap();
        assert_eq!((p.size, p.count, p.flag), (None, None, None));
    }

    #[test]
    fn rejects_wrong_types_with_a_message() {
        for bad in [
            r#"{"size":[1]}"#,
            r#"{"size":-1}"#,
            r#"{"count":"x"}"#,
            r#"{"count":1.5}"#,
            r#"{"flag":"yes"}"#,
            r#"{"flag":1}"#,
        ] {
            let err = probe(bad).unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
