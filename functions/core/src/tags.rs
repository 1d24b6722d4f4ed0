//! The tags every resource of the pipeline carries, and look-ups by them.
//!
//! Tags are how a retried step finds what it already made and how cleanup finds everything an execution left.

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use crate::steps::{ExecutionRef, Run};

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
/// same release and recipe to adopt (`crate::rerun`); publish makes it `released`; retire removes it when abandoned.
pub const STATE_TESTED: &str = "tested";
/// On a `tested` image: `crate::rerun::recipe_hash` of the recipe it was built from.
pub const RECIPE_HASH: &str = "ami-pipeline:recipe-hash";

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

pub fn tag(key: &str, val: &str) -> Tag {
    Tag::builder().key(key).value(value(val)).build()
}

/// Pipeline, execution, role, release and source tags for a resource of `run`.
pub fn standard(execution: &ExecutionRef, run: &Run, role: Role) -> Vec<Tag> {
    let mut tags = vec![
        tag(PIPELINE, &run.pipeline),
        tag(EXECUTION, &execution.name),
        tag(ROLE, role.as_str()),
        tag(RELEASE, &run.release.version),
        tag(
            "Name",
            &format!(
                "ami-pipeline {} {} {}",
                run.pipeline,
                role.as_str(),
                run.release.version
            ),
        ),
    ];
    if let Some(c) = &run.release.commit {
        tags.push(tag(COMMIT, c));
    }
    // A longer artifact would be cut, and a cut URL must never be reused: no tag then (a scheduled run of a script
    // that needs it is refused).
    if let Some(a) = run.release.artifact.as_ref().filter(|a| a.len() <= 256) {
        tags.push(tag(ARTIFACT, a));
    }
    if let Some(t) = &run.release.time {
        tags.push(tag(RELEASE_TIME, t));
    }
    tags
}

pub fn spec(resource: ResourceType, tags: Vec<Tag>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags))
        .build()
}

pub fn filter(key: &str, val: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(val).build()
}

pub fn get<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
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
