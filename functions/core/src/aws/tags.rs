//! The pipeline's tags as EC2 takes them, and look-ups by them: the SDK side of `model::tags`, which it
//! re-exports so handlers take both from here.
//!
//! Tags are how a retried step finds what it already made and how cleanup finds everything an execution left.

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use crate::model::steps::{ExecutionRef, Run};
pub use crate::model::tags::*;

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
