//! copy: one call for every region of the run. `start` copies the tested candidate (`steps.register`) from the
//! pipeline's region into each other region of `run.regions` with `CopyImage`, always encrypted (an EBS-backed
//! image's snapshots; an instance-store image has none to encrypt); `status` answers
//! ready once every copy is available (while any is pending the status Task fails with `AmiPipeline.NotReady`,
//! which the state machine's Retry turns into the poll loop).
//!
//! The output lists the image in every region, `run.regions` order: the home region's tested image first, then
//! one copy per other region. A `start` that fails part-way is retried whole: each `CopyImage` carries a client
//! token per execution and region, so a repeated call returns the copy already started instead of a second one.

use aws_sdk_ec2::types::{DeviceType, Filter, ResourceType};

use ami_core::aws::ec2::{self, ImageProgress};
use ami_core::aws::error::{Error, Result, aws_code, from_sdk};
use ami_core::definition::{self, StepDef};
use ami_core::model::steps::{CopyState, ImageState, Progress, Status, StepRequest};
use ami_core::step::{Clients, Step};
use ami_core::{aws::tags, model::naming};

/// Clients, built once per process: one EC2 client per region, made on first use.
pub struct Deps(pub Clients);

impl Step for Deps {
    type Output = CopyState;
    const DEF: &'static StepDef = &definition::COPY;

    async fn start(&self, req: &StepRequest, now: i64) -> Result<CopyState> {
        let source = req.steps.register()?;
        if source.region != req.run.region {
            return Err(Error::invalid(
                "input.steps.register.region",
                format!(
                    "is `{}` but the run's images are built in `{}`",
                    source.region, req.run.region
                ),
            ));
        }
        let distribution = &req.run.recipe.distribution;
        let progress = Progress::start(now, distribution.copy_timeout_minutes);
        // The home region's image is the tested candidate itself.
        let mut images = vec![ImageState {
            progress: source.progress.with_status(Status::Ready),
            ..source.clone()
        }];
        // Where the tested image came from, for the Summary: this run's snapshot and test, or the attempt it adopted.
        let (source_image_id, boot_to_ready_seconds) = match &req.run.adopted {
            Some(a) => (a.source_image_id.clone(), a.boot_to_ready_seconds),
            None => (
                req.steps
                    .snapshot
                    .as_ref()
                    .map(|s| s.source_image_id.clone())
                    .unwrap_or_default(),
                req.steps.test_launch.as_ref().and_then(|t| t.boot_to_ready_seconds),
            ),
        };
        let targets: Vec<&str> = req.copy_regions().collect();
        if targets.is_empty() {
            return Ok(CopyState {
                images,
                source_image_id,
                boot_to_ready_seconds,
                progress: progress.with_status(Status::Ready),
            });
        }

        // The tested image itself: its description goes with the copies, and a vanished or broken source is reported
        // as such rather than as an opaque CopyImage error.
        let home = self.0.ec2.get(&source.region);
        let image = ec2::describe_image(&home, &source.image_id).await?.ok_or_else(|| {
            Error::ResourceGone(format!(
                "source image {} no longer exists in {}",
                source.image_id, source.region
            ))
        })?;
        match ec2::image_progress(Some(&image)) {
            ImageProgress::Available => {}
            ImageProgress::Pending => {
                return Err(Error::Transient(format!(
                    "source image {} is not available yet",
                    source.image_id
                )));
            }
            ImageProgress::Failed(why) => return Err(Error::ImageFailed(why)),
        }

        // CopyImageTags brings the recipe's and the pipeline's tags; these make sure the pipeline's own are there
        // (and the copy counts as this execution's candidate for cleanup) even where tag copying is not honoured.
        let mut image_tags = tags::standard(&req.execution, &req.run, tags::Role::Image);
        image_tags.push(tags::tag(tags::STATE, tags::STATE_CANDIDATE));
        // The base image the candidate was built from, as on the candidate, so copies answer "built from what".
        if let Some(base) = tags::get(image.tags(), tags::SOURCE_IMAGE) {
            image_tags.push(tags::tag(tags::SOURCE_IMAGE, base));
        }
        let snapshot_tags = tags::standard(&req.execution, &req.run, tags::Role::Snapshot);
        // CopyImage's Encrypted "specifies whether to encrypt the snapshots of the copied image" (CopyImage API
        // reference; "Use encryption with EBS-backed AMIs"): an instance-store image has none, its bundle is in S3, so
        // its copies are not asked to be encrypted (nor given a key). Read from the image itself.
        let encrypt = image.root_device_type() != Some(&DeviceType::InstanceStore);

        for region in targets {
            // Stop before the Lambda timeout rather than mid-call; the Task's retry resumes (client tokens).
            ami_core::aws::runtime::ensure_time_left(
                ami_core::aws::runtime::CALL_BUDGET,
                &format!("copy to {region}"),
            )?;
            let dest = self.0.ec2.get(region);
            // A rerun keeps the copies an earlier attempt made: only the missing regions are copied again.
            if req.run.adopted.is_some()
                && let Some(kept) = kept_copy(&dest, req, &source.name).await?
            {
                lambda_runtime::tracing::info!(image_id = kept, region, "kept copy adopted");
                images.push(ImageState {
                    region: region.to_string(),
                    image_id: kept,
                    name: source.name.clone(),
                    progress,
                });
                continue;
            }
            let result = dest
                .copy_image()
                .source_region(&source.region)
                .source_image_id(&source.image_id)
                .name(&source.name)
                .set_description(image.description().map(String::from))
                .client_token(naming::client_token(&req.execution.name, "copy", region))
                .set_encrypted(encrypt.then_some(true))
                .set_kms_key_id(distribution.kms_key_ids.get(region).filter(|_| encrypt).cloned())
                .copy_image_tags(true)
                .tag_specifications(tags::spec(ResourceType::Image, image_tags.clone()))
                .tag_specifications(tags::spec(ResourceType::Snapshot, snapshot_tags.clone()))
                .send()
                .await;
            let image_id = match result {
                Ok(out) => out
                    .image_id()
                    .ok_or_else(|| Error::Internal("CopyImage returned no image id".into()))?
                    .to_string(),
                // The ClientToken covers a retried start; this covers a copy started under another token (e.g. by
                // hand) or where the token was not honoured: adopt our own image of that name, never someone else's.
                Err(e) if aws_code(&e) == Some("InvalidAMIName.Duplicate") => {
                    adopt_by_name(&dest, &req.execution.name, &source.name, region).await?
                }
                Err(e) => return Err(from_sdk("CopyImage", e)),
            };
            lambda_runtime::tracing::info!(image_id, region, "copy started");
            images.push(ImageState {
                region: region.to_string(),
                image_id,
                name: source.name.clone(),
                progress,
            });
        }
        Ok(CopyState {
            images,
            source_image_id,
            boot_to_ready_seconds,
            progress,
        })
    }

    /// Where the copies are. Stateless: it reads only `start`'s output, so a retried call asks the same questions.
    /// Every copy is looked at even when an earlier one is still pending, so a failed copy is reported at once.
    async fn status(&self, req: &StepRequest, now: i64) -> Result<CopyState> {
        let state = req.steps.copy()?;
        state.progress.check_deadline(now, "image copies")?;
        let mut images = Vec::with_capacity(state.images.len());
        let mut all_ready = true;
        for image in &state.images {
            if image.region == req.run.region {
                // The tested candidate itself: available since register.
                images.push(image.clone());
                continue;
            }
            let described = ec2::describe_image(&self.0.ec2.get(&image.region), &image.image_id).await?;
            let status = match ec2::image_progress(described.as_ref()) {
                ImageProgress::Pending => Status::Pending,
                ImageProgress::Available => Status::Ready,
                ImageProgress::Failed(why) => {
                    return Err(Error::ImageFailed(format!("copy in {}: {why}", image.region)));
                }
            };
            all_ready &= status == Status::Ready;
            images.push(ImageState {
                progress: image.progress.with_status(status),
                ..image.clone()
            });
        }
        let status = if all_ready { Status::Ready } else { Status::Pending };
        Ok(CopyState {
            images,
            source_image_id: state.source_image_id.clone(),
            boot_to_ready_seconds: state.boot_to_ready_seconds,
            progress: state.progress.with_status(status),
        })
    }

    fn progress(out: &CopyState) -> Option<&Progress> {
        Some(&out.progress)
    }
}

/// A copy of the adopted image that an earlier attempt kept in this region: same name (unique per region), tagged
/// `state=tested` for this pipeline, release and recipe hash (cleanup tags a copy so only once it is available),
/// and still available. A kept copy that has gone or failed since is copied again.
async fn kept_copy(ec2: &aws_sdk_ec2::Client, req: &StepRequest, name: &str) -> Result<Option<String>> {
    let hash = ami_core::aws::rerun::recipe_hash(&req.run.recipe);
    let filters = vec![
        Filter::builder().name("name").values(name).build(),
        tags::filter(tags::STATE, tags::STATE_TESTED),
        tags::filter(tags::RECIPE_HASH, &hash),
    ];
    let found = ec2::own_images(ec2, filters).await?.into_iter().find(|i| {
        let t = i.tags();
        i.name() == Some(name)
            && tags::get(t, tags::PIPELINE) == Some(req.run.pipeline.as_str())
            && tags::get(t, tags::RELEASE) == Some(req.run.release.version.as_str())
            && tags::get(t, tags::STATE) == Some(tags::STATE_TESTED)
            && tags::get(t, tags::RECIPE_HASH) == Some(hash.as_str())
            && ec2::image_progress(Some(i)) == ImageProgress::Available
    });
    Ok(found.and_then(|i| i.image_id().map(String::from)))
}

async fn adopt_by_name(ec2: &aws_sdk_ec2::Client, execution: &str, name: &str, region: &str) -> Result<String> {
    let by_name = Filter::builder().name("name").values(name).build();
    let found = ec2::own_images(ec2, vec![by_name]).await?;
    if found.is_empty() {
        // EC2 says the name is taken but does not list it yet: a copy just started. Looking again will find it.
        return Err(Error::Transient(format!(
            "an image named `{name}` exists in {region} but is not listed yet"
        )));
    }
    match found
        .iter()
        .find(|i| tags::get(i.tags(), tags::EXECUTION) == Some(execution))
    {
        Some(mine) => Ok(mine
            .image_id()
            .ok_or_else(|| Error::Internal("DescribeImages returned an image without an id".into()))?
            .to_string()),
        None => Err(Error::Conflict(format!(
            "an image named `{name}` already exists in {region} and belongs to another execution ({}); keep \
             `{{{{id}}}}` in recipe.image.name so names stay unique",
            found.iter().filter_map(|i| i.image_id()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests;
