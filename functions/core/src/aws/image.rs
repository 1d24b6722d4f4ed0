//! The new image's tags, and finding it again: RegisterImage and CreateImage take no ClientToken. The SDK side of
//! `model::image` (its name and description), which it re-exports.

use aws_sdk_ec2::types::{Filter, Image, Tag};

use crate::aws::ec2::own_images;
use crate::aws::error::{Error, Result};
use crate::aws::tags;
pub use crate::model::image::*;
use crate::model::steps::StepRequest;

/// The candidate image's tags: the standard ones, its source image, `state=candidate` and the recipe's own.
pub fn candidate_tags(req: &StepRequest, source_image_id: &str) -> Vec<Tag> {
    let mut image_tags = tags::standard(&req.execution, &req.run, tags::Role::Image);
    image_tags.push(tags::tag(tags::SOURCE_IMAGE, source_image_id));
    image_tags.push(tags::tag(tags::STATE, tags::STATE_CANDIDATE));
    image_tags.extend(req.run.recipe.image.tags.iter().map(|(k, v)| tags::tag(k, v)));
    image_tags
}

/// The size (GiB) of an image's EBS volume at `device` (its root device, say), when the image lists one.
pub fn volume_size(image: &Image, device: &str) -> Option<i32> {
    image
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(device))
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_size())
}

/// This execution's candidate image in the home region: by tag, or (after `InvalidAMIName.Duplicate`) by name and
/// then checked by tag. RegisterImage and CreateImage take no ClientToken, so a retry finds its image this way.
pub async fn own(ec2: &aws_sdk_ec2::Client, req: &StepRequest, name: Option<&str>) -> Result<Option<String>> {
    let filters = match name {
        Some(n) => vec![Filter::builder().name("name").values(n).build()],
        None => vec![
            tags::filter(tags::EXECUTION, &req.execution.name),
            tags::filter(tags::ROLE, tags::Role::Image.as_str()),
        ],
    };
    let images = own_images(ec2, filters).await?;
    Ok(images
        .into_iter()
        .find(|i| tags::get(i.tags(), tags::EXECUTION) == Some(req.execution.name.as_str()))
        .and_then(|i| i.image_id().map(String::from)))
}

/// After `InvalidAMIName.Duplicate`: this execution's image of that name (a lost earlier attempt made it), or
/// `Conflict` when the image listed under the name is another's. When none is listed yet, EC2 knows the name but
/// not the image (eventual consistency: an attempt just made it): `Transient`, so the step's retry finds it by tag,
/// the way copy handles the same answer.
pub async fn adopt_by_name(ec2: &aws_sdk_ec2::Client, req: &StepRequest, name: &str) -> Result<String> {
    let by_name = vec![Filter::builder().name("name").values(name).build()];
    let images = own_images(ec2, by_name).await?;
    if images.is_empty() {
        return Err(Error::Transient(format!(
            "an image named `{name}` exists but is not listed yet; looking again"
        )));
    }
    images
        .into_iter()
        .find(|i| tags::get(i.tags(), tags::EXECUTION) == Some(req.execution.name.as_str()))
        .and_then(|i| i.image_id().map(String::from))
        .ok_or_else(|| name_taken(name))
}
