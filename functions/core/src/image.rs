//! The new image's name, description and tags: the same whichever way it is made (RegisterImage in register,
//! CreateImage in snapshot).

use aws_sdk_ec2::types::Tag;

use crate::naming::{self, NameValues};
use crate::steps::StepRequest;
use crate::{tags, userdata};

/// The AMI name for this execution: the recipe's template, rendered and sanitized.
pub fn name(req: &StepRequest) -> String {
    naming::render_image_name(
        &req.run.recipe.image.name,
        &NameValues {
            pipeline: &req.run.pipeline,
            version: &req.run.release.version,
            date: &req.run.date,
            execution: &req.execution.name,
        },
    )
}

/// The recipe's description template rendered, or a default; at most 255 characters (EC2's limit).
pub fn description(req: &StepRequest) -> String {
    let text = req
        .run
        .recipe
        .image
        .description
        .as_deref()
        .map(|d| userdata::render_script(d, &req.run.pipeline, &req.run.release))
        .unwrap_or_else(|| format!("{} {} built by ami-pipeline", req.run.pipeline, req.run.release.version));
    tags::value(&text).chars().take(255).collect()
}

/// The candidate image's tags: the standard ones, its source image, `state=candidate` and the recipe's own.
pub fn candidate_tags(req: &StepRequest, source_image_id: &str) -> Vec<Tag> {
    let mut image_tags = tags::standard(&req.execution, &req.run, tags::Role::Image);
    image_tags.push(tags::tag(tags::SOURCE_IMAGE, source_image_id));
    image_tags.push(tags::tag(tags::STATE, tags::STATE_CANDIDATE));
    image_tags.extend(req.run.recipe.image.tags.iter().map(|(k, v)| tags::tag(k, v)));
    image_tags
}

/// This execution's candidate image in the home region: by tag, or (after `InvalidAMIName.Duplicate`) by name and
/// then checked by tag. RegisterImage and CreateImage take no ClientToken, so a retry finds its image this way.
pub async fn own(ec2: &aws_sdk_ec2::Client, req: &StepRequest, name: Option<&str>) -> crate::Result<Option<String>> {
    let filters = match name {
        Some(n) => vec![aws_sdk_ec2::types::Filter::builder().name("name").values(n).build()],
        None => vec![
            tags::filter(tags::EXECUTION, &req.execution.name),
            tags::filter(tags::ROLE, tags::Role::Image.as_str()),
        ],
    };
    let images = crate::ec2::own_images(ec2, filters).await?;
    Ok(images
        .into_iter()
        .find(|i| tags::get(i.tags(), tags::EXECUTION) == Some(req.execution.name.as_str()))
        .and_then(|i| i.image_id().map(String::from)))
}

/// After `InvalidAMIName.Duplicate`: this execution's image of that name (a lost earlier attempt made it), or
/// `Conflict` when the image listed under the name is another's. When none is listed yet, EC2 knows the name but
/// not the image (eventual consistency: an attempt just made it): `Transient`, so the step's retry finds it by tag,
/// the way copy handles the same answer.
pub async fn adopt_by_name(ec2: &aws_sdk_ec2::Client, req: &StepRequest, name: &str) -> crate::Result<String> {
    let by_name = vec![aws_sdk_ec2::types::Filter::builder().name("name").values(name).build()];
    let images = crate::ec2::own_images(ec2, by_name).await?;
    if images.is_empty() {
        return Err(crate::Error::Transient(format!(
            "an image named `{name}` exists but is not listed yet; looking again"
        )));
    }
    images
        .into_iter()
        .find(|i| tags::get(i.tags(), tags::EXECUTION) == Some(req.execution.name.as_str()))
        .and_then(|i| i.image_id().map(String::from))
        .ok_or_else(|| name_taken(name))
}

/// The error for a name taken by an image that is not this execution's.
pub fn name_taken(name: &str) -> crate::Error {
    crate::Error::Conflict(format!(
        "an image named `{name}` already exists and is not this execution's; put {{{{id}}}} in recipe.image.name to \
         keep names unique"
    ))
}
