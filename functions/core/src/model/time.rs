//! Unix seconds: now, and of the RFC 3339 times AWS and the release events give.

/// Unix seconds now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Unix seconds of an RFC 3339 time (a release time tag, an image's `CreationDate`), `None` when it does not parse.
pub fn unix_seconds(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp())
}
