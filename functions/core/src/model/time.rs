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

/// RFC 3339 (UTC, seconds) of unix seconds, for messages; the number itself when out of range.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}
