//! Typed parsing of untrusted JSON with errors that name the field.
//!
//! Handlers take `serde_json::Value` from the runtime and parse here, because the runtime's own deserializer
//! reports failures under a Rust type name, which Step Functions would then match on.

use serde::de::DeserializeOwned;

use crate::model::error::{Error, Result};

fn field_of(root: &str, path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    if p == "." || p.is_empty() {
        root.to_string()
    } else {
        format!("{root}.{p}")
    }
}

fn message_of(err: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the field path already says where.
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Parses `value` as `T`; `root` names the document in errors (`event`, `recipe`, `input`).
pub fn parse_value<T: DeserializeOwned>(root: &str, value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| Error::invalid(field_of(root, e.path()), message_of(e.inner())))
}

/// Parses a JSON text as `T`.
pub fn parse_str<T: DeserializeOwned>(root: &str, text: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(de)
        .map_err(|e| Error::invalid(field_of(root, e.path()), message_of(e.inner())))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse_value::<Outer>("event", serde_json::json!({"inner": {"count": "x"}})).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "event.inner.count"),
            "{err}"
        );
        let err = parse_str::<Outer>("recipe", r#"{"inner": {"count": 1, "extra": 2}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
        let err = parse_str::<Outer>("recipe", "{").unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }));
    }
}
