//! The tags every resource of the pipeline carries: their keys, values and roles (built for EC2 by `aws::tags`).
//!
//! Tags are how a retried step finds what it already made and how cleanup finds everything an execution left.

pub const PREFIX: &str = "ami-pipeline:";
pub const PIPELINE: &str = "ami-pipeline:pipeline";
pub const EXECUTION: &str = "ami-pipeline:execution";
pub const ROLE: &str = "ami-pipeline:role";
pub const RELEASE: &str = "ami-pipeline:release";
pub const COMMIT: &str = "ami-pipeline:commit";
/// The release's artifact (`{{artifact}}`), when it fits a tag value (256 characters): a scheduled run rebuilds the
/// newest image's release with it.
pub const ARTIFACT: &str = "ami-pipeline:artifact";
/// RFC 3339 time of the release event: publish orders releases by it when versions are not semantic versions.
pub const RELEASE_TIME: &str = "ami-pipeline:release-time";
pub const SOURCE_IMAGE: &str = "ami-pipeline:source-image";
/// `candidate` until publish hands the image over, then `released`. Cleanup removes only candidates.
pub const STATE: &str = "ami-pipeline:state";
pub const BOOT_TO_READY: &str = "ami-pipeline:boot-to-ready-seconds";
/// On a builder: Unix seconds when a status call first saw it stopped without a result, where EC2 gives no stop
/// time (an OS-initiated stop). Status calls are stateless, so this wait is kept on the instance.
pub const STOPPED_SEEN: &str = "ami-pipeline:stopped-seen-at";

pub const STATE_CANDIDATE: &str = "candidate";
pub const STATE_RELEASED: &str = "released";
/// An image that passed its test (and its copies, once a failed run kept them): cleanup keeps it for a rerun of the
/// same release and recipe to adopt (`model::rerun`); publish makes it `released`; retire removes it when abandoned.
pub const STATE_TESTED: &str = "tested";
/// On a `tested` image: `model::rerun::recipe_hash` of the recipe it was built from.
pub const RECIPE_HASH: &str = "ami-pipeline:recipe-hash";
/// On a launch template: publish may change it only when this tag is `PUBLISH_OPT_IN_VALUE` (the publish role's
/// condition, infra/template.yaml), so the trigger's preflight refuses a recipe naming a template without it.
pub const PUBLISH_OPT_IN: &str = "ami-pipeline:publish";
pub const PUBLISH_OPT_IN_VALUE: &str = "true";

/// What a resource is for; cleanup and the IAM conditions key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Builder,
    TestInstance,
    Snapshot,
    Image,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Builder => "builder",
            Role::TestInstance => "test-instance",
            Role::Snapshot => "snapshot",
            Role::Image => "image",
        }
    }
}

/// EC2 tag values: at most 256 characters, no control characters.
pub fn value(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cut_and_cleaned() {
        assert_eq!(value(&"x".repeat(300)).chars().count(), 256);
        assert_eq!(value("a\nb\u{7}"), "ab");
        assert_eq!(value("ünïcode"), "ünïcode");
    }
}
