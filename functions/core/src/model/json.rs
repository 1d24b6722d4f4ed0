//! JSON whose text does not depend on the order keys were inserted in: whether serde_json keeps insertion order
//! is its `preserve_order` feature, which another crate of the build may turn on. For hashes and committed files.

use serde_json::Value;

/// `v` with every object's keys sorted.
pub fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// A generated file's text: `v` with sorted keys, two-space indented, with a final newline.
pub fn pretty(v: Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(v)).unwrap_or_default();
    text.push('\n');
    text
}
