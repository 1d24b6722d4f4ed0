//! Step outputs for publish, retire and cleanup (the SSM and EC2 reads they need are `aws::lifecycle`).
//!
//! Each lists per region what the step found and what it changed, so an execution's history shows exactly which
//! parameters, launch templates and images a run touched.

use serde::{Deserialize, Serialize};

pub use crate::model::time::unix_seconds;

/// One SSM parameter publish pointed at the new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedParameter {
    pub name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What publish did to one pointer (a parameter or a launch template's default version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// False when the pointer already held the image (a retried publish), or when it was skipped.
    pub changed: bool,
    /// Left at a newer release's image: publish never goes backwards unless the release event says `force`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<KeptNewer>,
    /// An older release's publish wrote between this one's write and its re-read, and this one wrote again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repaired: bool,
}

/// Why publish left a parameter or launch template where it was: it points at a newer release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptNewer {
    /// The image it points at, kept.
    pub image_id: String,
    /// That image's release (`ami-pipeline:release`), when it is one of the pipeline's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub reason: String,
}

impl KeptNewer {
    /// Kept at `image_id`, of `release`, newer `by` what comparison ("its semantic version is higher"). The reason
    /// does not repeat the image and release: it is written for every pointer in every region (`definition::payload`).
    pub fn new(image_id: &str, release: Option<String>, by: &str) -> KeptNewer {
        KeptNewer {
            image_id: image_id.to_string(),
            release,
            reason: format!("a newer release ({by}); a release event with \"force\": true moves it back"),
        }
    }
}

/// One launch template whose default version now launches the new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedLaunchTemplate {
    pub id_or_name: String,
    /// The default version after publish (the one left in place when skipped).
    pub version: i64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What publish did in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRegion {
    pub region: String,
    pub image_id: String,
    #[serde(default)]
    pub parameters: Vec<PublishedParameter>,
    #[serde(default)]
    pub launch_templates: Vec<PublishedLaunchTemplate>,
}

/// Output of the publish step: the home region first, then one entry per copy region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOutput {
    pub release: String,
    pub regions: Vec<PublishedRegion>,
}

/// An image retire set to be deprecated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deprecation {
    pub image_id: String,
    /// RFC 3339, whole minutes.
    pub deprecate_at: String,
}

/// What retire did in one region. Every released image of the pipeline there is in exactly one of `kept`,
/// `deregistered` and `protected`; `deprecated` is a subset of `kept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredRegion {
    pub region: String,
    /// The newest `retention.keep` images that nothing references, newest first.
    pub kept: Vec<String>,
    /// Kept images given a deprecation time by this call (ones already deprecated by then are not listed).
    pub deprecated: Vec<Deprecation>,
    /// Deregistered with their snapshots.
    pub deregistered: Vec<String>,
    /// Referenced by a recipe SSM parameter or launch template default version: left untouched.
    pub protected: Vec<String>,
    /// Due for deregistration but under deregistration protection (or its cooldown): skipped, left to you.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deregistration_protected: Vec<String>,
    /// Snapshots of the pipeline that no image of the account uses and that are older than any execution can run
    /// (left by a cleanup that could not finish, or by an image deregistered by hand): deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphan_snapshots_deleted: Vec<String>,
    /// Such snapshots EC2 would not delete (e.g. `InvalidSnapshot.InUse`, already gone): left, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphan_snapshots_skipped: Vec<SkippedSnapshot>,
    /// Images a failed run kept for a rerun (`state=tested`, `model::rerun`) that no rerun adopted within
    /// `model::rerun::KEPT_GRACE_DAYS`: deregistered with their snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abandoned_deregistered: Vec<String>,
    /// Snapshots of the images deregistered here that EC2 would not delete (DeregisterImage's error code, then
    /// DeleteSnapshot's answer): left for the orphan sweep of a later run, which finds them by their tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots_left: Vec<SkippedSnapshot>,
}

/// A snapshot retire or cleanup meant to delete and did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedSnapshot {
    pub snapshot_id: String,
    /// The EC2 error code (or the error) DeleteSnapshot answered.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireOutput {
    pub regions: Vec<RetiredRegion>,
}

/// What cleanup removed in one region (ids already gone count as removed: running cleanup twice is success).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanedRegion {
    pub region: String,
    pub instances_terminated: Vec<String>,
    pub images_deregistered: Vec<String>,
    pub snapshots_deleted: Vec<String>,
    /// Snapshots EC2 would not delete, with its answers: retire's orphan sweep removes them on a later run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots_left: Vec<SkippedSnapshot>,
    /// Images of the execution that publish handed over (`state=released`): left alone, with their snapshots.
    pub released_kept: Vec<String>,
    /// Images kept for a rerun to adopt (`state=tested`, `model::rerun`): the tested image of the run's region, and
    /// the copies that became available, once it passed its test.
    #[serde(default)]
    pub tested_kept: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupOutput {
    pub execution: String,
    pub regions: Vec<CleanedRegion>,
}

/// Launch templates are named by id (`lt-...`) or by name in the recipe.
pub fn is_launch_template_id(id_or_name: &str) -> bool {
    id_or_name.starts_with("lt-")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The outcome is flattened: the execution history and the e2e read `changed`, `skipped` and `repaired` beside
    /// the parameter's name and the template's version, as before the fields were shared.
    #[test]
    fn outcomes_serialize_beside_the_pointer() {
        let skipped = Some(KeptNewer {
            image_id: "ami-1".into(),
            release: None,
            reason: "newer".into(),
        });
        let param = PublishedParameter {
            name: "/p".into(),
            outcome: Outcome {
                changed: true,
                skipped: None,
                repaired: true,
            },
        };
        let lt = PublishedLaunchTemplate {
            id_or_name: "lt-1".into(),
            version: 3,
            outcome: Outcome {
                changed: false,
                skipped,
                repaired: false,
            },
        };
        let (p, l) = (
            serde_json::to_value(&param).unwrap(),
            serde_json::to_value(&lt).unwrap(),
        );
        assert_eq!(p, json!({"name": "/p", "changed": true, "repaired": true}));
        assert_eq!(
            l,
            json!({"id_or_name": "lt-1", "version": 3, "changed": false,
                   "skipped": {"image_id": "ami-1", "reason": "newer"}})
        );
        assert_eq!(serde_json::from_value::<PublishedParameter>(p).unwrap(), param);
        assert_eq!(serde_json::from_value::<PublishedLaunchTemplate>(l).unwrap(), lt);
    }
}
