//! Which of two images is the newer release, so publish never points a parameter or launch template backwards.
//!
//! Only the pipeline's own releases are ordered (tag `ami-pipeline:pipeline`): semantic versions (semver.org 2.0.0
//! precedence) when both releases parse as one and differ; otherwise the release event's time (tag
//! `ami-pipeline:release-time`). An image that cannot be ordered (another pipeline's, one set by hand, a base
//! image, or one of ours made before the time tag existed whose version does not parse) is not newer: publish
//! replaces it, as it always did.

use std::cmp::Ordering;

use aws_sdk_ec2::types::Image;

use ami_core::aws::lifecycle::{KeptNewer, unix_seconds};
use ami_core::aws::tags;

/// What publish knows about one image's release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rank {
    /// The pipeline's release tag; `None` for an image that is not the pipeline's.
    pub release: Option<String>,
    /// Unix seconds of the release event.
    pub time: Option<i64>,
}

impl Rank {
    /// The rank of an image the pointer holds now.
    pub fn of_image(image: &Image, pipeline: &str) -> Rank {
        let t = image.tags();
        if tags::get(t, tags::PIPELINE) != Some(pipeline) {
            // Not a release of this pipeline: nothing to order it by (its creation date is not a release time).
            return Rank {
                release: None,
                time: None,
            };
        }
        Rank {
            release: tags::get(t, tags::RELEASE).map(String::from),
            time: tags::get(t, tags::RELEASE_TIME).and_then(unix_seconds),
        }
    }

    /// `Some(why)` when `theirs` is a newer release than `self`.
    pub fn newer(&self, theirs: &Rank, image_id: &str) -> Option<KeptNewer> {
        let versions = match (&self.release, &theirs.release) {
            (Some(a), Some(b)) => semver_cmp(a, b),
            _ => None,
        };
        let (newer, by) = match versions {
            Some(Ordering::Equal) | None => match (self.time, theirs.time) {
                (Some(a), Some(b)) => (b > a, "its release time is later"),
                _ => (false, ""),
            },
            Some(o) => (o == Ordering::Less, "its semantic version is higher"),
        };
        newer.then(|| KeptNewer::new(image_id, theirs.release.clone(), by))
    }
}

/// Semantic version precedence (semver.org 2.0.0, item 11), `None` unless both parse. Build metadata is ignored;
/// a leading `v` is allowed (`v1.4.0`).
pub fn semver_cmp(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse(a)?, parse(b)?);
    Some(a.0.cmp(&b.0).then_with(|| prerelease_cmp(&a.1, &b.1)))
}

type Version<'a> = ([u64; 3], Vec<&'a str>);

fn parse(v: &str) -> Option<Version<'_>> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let v = v.split_once('+').map_or(v, |(core, _)| core);
    let (core, pre) = match v.split_once('-') {
        Some((core, pre)) => (core, pre.split('.').collect::<Vec<_>>()),
        None => (v, Vec::new()),
    };
    let numbers: Vec<u64> = core.split('.').map(number).collect::<Option<_>>()?;
    let [major, minor, patch] = numbers[..] else {
        return None;
    };
    if pre
        .iter()
        .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        return None;
    }
    Some(([major, minor, patch], pre))
}

/// A numeric identifier: digits, no leading zero.
fn number(s: &str) -> Option<u64> {
    let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

/// A version without pre-release is higher than one with; identifiers compare numerically when both are numbers,
/// numbers below words, and a longer list wins when all before are equal.
fn prerelease_cmp(a: &[&str], b: &[&str]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    for (x, y) in a.iter().zip(b) {
        let o = match (number(x), number(y)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semantic_versions_order_by_precedence() {
        // The example chain of semver.org item 11, each lower than the next.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.10.0",
            "2.0.0",
        ];
        for w in chain.windows(2) {
            assert_eq!(semver_cmp(w[0], w[1]), Some(Ordering::Less), "{} < {}", w[0], w[1]);
            assert_eq!(semver_cmp(w[1], w[0]), Some(Ordering::Greater), "{} > {}", w[1], w[0]);
        }
        assert_eq!(semver_cmp("v1.4.0", "1.4.0+build.7"), Some(Ordering::Equal));
        for bad in [
            "1.4",
            "1.4.0.1",
            "01.4.0",
            "1.4.x",
            "nightly",
            "1.4.0-",
            "1.4.0-a..b",
            "",
        ] {
            assert_eq!(semver_cmp(bad, "1.4.0"), None, "{bad}");
        }
    }

    fn rank(release: Option<&str>, time: Option<i64>) -> Rank {
        Rank {
            release: release.map(String::from),
            time,
        }
    }

    #[test]
    fn versions_first_then_release_time() {
        let ours = rank(Some("1.4.0"), Some(1_000));
        // A higher version wins even with an earlier time (a nightly rebuild of 1.4.0 finishing after 1.5.0).
        let kept = ours
            .newer(&rank(Some("1.5.0"), Some(500)), "ami-1")
            .expect("1.5.0 is newer");
        assert_eq!(kept.release.as_deref(), Some("1.5.0"));
        assert!(kept.reason.contains("semantic version"), "{}", kept.reason);
        assert!(ours.newer(&rank(Some("1.3.9"), Some(2_000)), "ami-1").is_none());
        // Same version (a rebuild on a newer base image): the later event is newer.
        assert!(ours.newer(&rank(Some("1.4.0"), Some(2_000)), "ami-1").is_some());
        assert!(ours.newer(&rank(Some("1.4.0"), Some(900)), "ami-1").is_none());
        // Not both semantic versions: by time.
        let named = rank(Some("blue"), Some(1_000));
        assert!(named.newer(&rank(Some("1.0.0"), Some(1_001)), "ami-1").is_some());
        assert!(named.newer(&rank(Some("green"), Some(999)), "ami-1").is_none());
        // Nothing to order by: not newer, so it is replaced.
        assert!(
            rank(Some("x"), None)
                .newer(&rank(Some("y"), Some(5)), "ami-1")
                .is_none()
        );
    }
}
