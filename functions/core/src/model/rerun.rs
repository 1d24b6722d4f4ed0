//! Reruns: a release (or schedule day) whose execution ended FAILED, TIMED_OUT or ABORTED is run again under the
//! next attempt's name, and adopts the tested image (and the copies) an earlier attempt kept.
//!
//! Execution names cannot be reused for 90 days, and StartExecution on a closed execution's name answers
//! `ExecutionAlreadyExists` whatever the input (StartExecution API reference), so each attempt has its own name:
//! `<name>`, `<name>-a2`, `<name>-a3` ... The trigger finds the latest attempt by DescribeExecution along this chain
//! (never by listing: ListExecutions is paged and eventually consistent).
//!
//! What an attempt keeps: an image that passed its test is tagged `ami-pipeline:state=tested` and
//! `ami-pipeline:recipe-hash` by test-launch; on a later failure cleanup keeps it and the copies that became
//! available (tagging those too) instead of deleting them. The next attempt's trigger adopts them only when the
//! image was made by an earlier attempt of the same chain (same pipeline and release, or schedule day), with the
//! same frozen recipe (its hash) and the same release, and is younger than [`ADOPT_WITHIN_DAYS`]. Retire removes a
//! kept image nobody adopted after [`KEPT_GRACE_DAYS`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::json::sorted;
use crate::model::naming::{MAX_EXECUTION_NAME, short_hash};
use crate::model::recipe::Recipe;
use crate::model::steps::ImageState;

/// The most attempts of one release or schedule day; the trigger walks at most this many names.
pub const MAX_ATTEMPTS: u32 = 20;

/// A kept image is adopted only while younger than this.
pub const ADOPT_WITHIN_DAYS: i64 = 7;

/// Retire removes a kept (`tested`) image older than this. The gap to [`ADOPT_WITHIN_DAYS`] is longer than any
/// execution can run (the long steps' limits add up to about 5.2 days), so retire never removes an image a running
/// rerun adopted.
pub const KEPT_GRACE_DAYS: i64 = 14;

/// The name of attempt `attempt` (1-based) of the execution named `base`: `base` itself, then `base-a2` ...
/// Always a valid execution name (at most 80 characters): when the suffix does not fit, the base is cut and a
/// hash of the whole base keeps distinct bases distinct.
pub fn attempt_name(base: &str, attempt: u32) -> String {
    if attempt <= 1 {
        return base.to_string();
    }
    let suffix = format!("-a{attempt}");
    if base.len() + suffix.len() <= MAX_EXECUTION_NAME {
        return format!("{base}{suffix}");
    }
    let hash = short_hash(&[base], 8);
    // `base` is an execution name (ASCII) here, so cutting by bytes is cutting by characters.
    let keep = MAX_EXECUTION_NAME - suffix.len() - hash.len() - 1;
    let head: String = base.chars().take(keep).collect();
    format!("{head}-{hash}{suffix}")
}

/// SHA-256 (lowercase hex) of the frozen recipe's canonical JSON: every object's keys sorted, no whitespace,
/// defaults filled in (it is the parsed recipe re-serialized, so two spellings of one recipe hash alike). A kept
/// image carries it as `ami-pipeline:recipe-hash`; a rerun adopts the image only when its recipe hashes the same.
pub fn recipe_hash(recipe: &Recipe) -> String {
    let value = serde_json::to_value(recipe).unwrap_or_default();
    let text = serde_json::to_string(&sorted(value)).unwrap_or_default();
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a rerun adopts from an earlier attempt, written by the trigger into the execution input (`run.adopted`).
/// The state machine then skips build, snapshot, register and test (the `Adopt` state puts `image` where copy reads
/// the tested image); copy finds the copies kept in other regions (by the image's name and tags) and makes only
/// the missing ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adopted {
    /// The attempt that built and tested the image.
    pub execution: String,
    /// The tested image in the run's region (status ready).
    pub image: ImageState,
    /// The base image it was built from (its `ami-pipeline:source-image` tag).
    #[serde(default)]
    pub source_image_id: String,
    /// From its test (its `ami-pipeline:boot-to-ready-seconds` tag).
    #[serde(default)]
    pub boot_to_ready_seconds: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::naming::{execution_name, release_execution_name};

    #[test]
    fn attempts_are_distinct_valid_names_within_80_characters() {
        for base in [
            release_execution_name("web", "1.4.0"),
            release_execution_name(&"p".repeat(40), &"9".repeat(64)),
            "x".repeat(80),
            "x".repeat(77),
        ] {
            assert_eq!(attempt_name(&base, 1), base);
            let names: Vec<String> = (1..=MAX_ATTEMPTS).map(|n| attempt_name(&base, n)).collect();
            for (i, n) in names.iter().enumerate() {
                assert!(n.len() <= MAX_EXECUTION_NAME, "{n}");
                assert_eq!(&execution_name(n), n, "not a valid execution name: {n}");
                assert!(i == 0 || n.ends_with(&format!("-a{}", i + 1)), "{n}");
            }
            let unique: std::collections::BTreeSet<&String> = names.iter().collect();
            assert_eq!(unique.len(), names.len());
        }
        assert_eq!(attempt_name("web-r-1.4.0", 2), "web-r-1.4.0-a2");
        // Two long bases that share their first 70 characters still differ.
        let (a, b) = ("y".repeat(80), format!("{}z", "y".repeat(79)));
        assert_ne!(attempt_name(&a, 2), attempt_name(&b, 2));
    }

    #[test]
    fn recipe_hash_follows_the_recipe_not_its_spelling() {
        // Parsed as the steps carry it; validation is `validate`'s (and cannot change the hash).
        let parse = |text: &str| crate::model::input::parse_str::<Recipe>("recipe", text).unwrap();
        let text = crate::model::recipe::EXAMPLE;
        let recipe = parse(text);
        let h = recipe_hash(&recipe);
        assert_eq!(h.len(), 64);
        // The same recipe with its keys in another order and other whitespace.
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let respelled = serde_json::to_string_pretty(&sorted(v)).unwrap();
        assert_eq!(recipe_hash(&parse(&respelled)), h);
        let mut changed = recipe.clone();
        changed.retention.keep += 1;
        assert_ne!(recipe_hash(&changed), h);
    }
}
