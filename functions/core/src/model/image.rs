//! The new image's name and description: the same whichever way it is made (RegisterImage in register,
//! CreateImage in snapshot). Its tags and look-ups are `aws::image`'s.

use crate::model::error::Error;
use crate::model::naming::{self, NameValues};
use crate::model::steps::StepRequest;
use crate::model::{tags, userdata};

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

/// The error for a name taken by an image that is not this execution's.
pub fn name_taken(name: &str) -> Error {
    Error::Conflict(format!(
        "an image named `{name}` already exists and is not this execution's; put {{{{id}}}} in recipe.image.name to \
         keep names unique"
    ))
}
