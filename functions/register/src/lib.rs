//! register: `start` registers the image from the snapshots with the full block device mapping and the
//! recipe's settings, tagged on create; `status` reports pending until it is available.

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ImdsSupportValues, ResourceType,
    TpmSupportValues, VolumeType,
};
use serde_json::Value;

use ami_core::ec2::{ImageProgress, image_progress};
use ami_core::error::{Error, Result, aws_code};
use ami_core::naming::{self, NameValues};
use ami_core::recipe::RootDeviceType;
use ami_core::step::Step;
use ami_core::steps::{ImageState, Progress, Status, StepRequest, now};
use ami_core::{tags, userdata};

pub struct Deps {
    pub ec2: aws_sdk_ec2::Client,
}

impl Deps {
    pub fn from_config(config: &ami_core::clients::SdkConfig) -> Self {
        Deps {
            ec2: aws_sdk_ec2::Client::new(config),
        }
    }
}

impl Step for Deps {
    type Output = ImageState;
    const NAME: &'static str = "register";
    const ACTIONS: &'static str = "`start` or `status`";

    async fn start(&self, req: &StepRequest) -> Result<ImageState> {
        start(self, req, now()).await
    }

    async fn status(&self, req: &StepRequest) -> Result<ImageState> {
        status(self, req, now()).await
    }

    fn progress(out: &ImageState) -> Option<&Progress> {
        Some(&out.progress)
    }
}

/// The state machine's input, answered as the deployed function answers it.
pub async fn handle(deps: &Deps, event: Value) -> Result<ImageState> {
    ami_core::step::handle(deps, event).await
}

/// The AMI name for this execution: the recipe's template, rendered and sanitized.
pub fn image_name(req: &StepRequest) -> String {
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

async fn start(deps: &Deps, req: &StepRequest, now: i64) -> Result<ImageState> {
    let snap = req.steps.snapshot()?;
    let recipe = &req.run.recipe;
    let name = image_name(req);
    let progress = Progress::start(now, recipe.image.timeout_minutes);
    let state = |image_id: String| ImageState {
        region: req.run.region.clone(),
        image_id,
        name: name.clone(),
        progress,
    };

    // A retried start adopts the image it already registered (RegisterImage takes no ClientToken).
    if let Some(id) = own_image(deps, req, None).await? {
        return Ok(state(id));
    }

    let mut image_tags = tags::standard(&req.execution, &req.run, tags::Role::Image);
    image_tags.push(tags::tag(tags::SOURCE_IMAGE, &snap.source_image_id));
    image_tags.push(tags::tag(tags::STATE, tags::STATE_CANDIDATE));
    image_tags.extend(recipe.image.tags.iter().map(|(k, v)| tags::tag(k, v)));

    let description = recipe
        .image
        .description
        .as_deref()
        .map(|d| userdata::render_script(d, &req.run.pipeline, &req.run.release))
        .unwrap_or_else(|| format!("{} {} built by ami-pipeline", req.run.pipeline, req.run.release.version));

    let mut call = deps
        .ec2
        .register_image()
        .name(&name)
        .description(tags::value(&description).chars().take(255).collect::<String>())
        .architecture(match recipe.image.architecture {
            ami_core::recipe::Architecture::X86_64 => ArchitectureValues::X8664,
            ami_core::recipe::Architecture::Arm64 => ArchitectureValues::Arm64,
        })
        .virtualization_type("hvm")
        .ena_support(recipe.image.ena_support)
        .sriov_net_support("simple")
        .set_boot_mode(recipe.image.boot_mode.map(|b| BootModeValues::from(b.as_str())))
        .set_tpm_support(recipe.image.tpm_support.then_some(TpmSupportValues::V20))
        .set_imds_support(recipe.image.imds_v2.then_some(ImdsSupportValues::V20))
        .tag_specifications(tags::spec(ResourceType::Image, image_tags));
    call = match (recipe.image.root_device_type, &recipe.image.s3_manifest) {
        (RootDeviceType::InstanceStore, Some(manifest)) => call.image_location(manifest),
        _ => {
            if snap.snapshots.is_empty() {
                return Err(Error::invalid(
                    "input.steps.snapshot.snapshots",
                    "no snapshots to register from",
                ));
            }
            call.root_device_name(&snap.root_device_name)
                .set_block_device_mappings(Some(
                    snap.snapshots
                        .iter()
                        .map(|s| {
                            // A mapping by snapshot id takes the snapshot's encryption, so no Encrypted flag here.
                            let ebs = EbsBlockDevice::builder()
                                .snapshot_id(&s.snapshot_id)
                                .volume_size(s.size_gib)
                                .volume_type(VolumeType::from(s.volume_type.as_str()))
                                .set_iops(s.iops)
                                .set_throughput(s.throughput)
                                .delete_on_termination(true)
                                .build();
                            BlockDeviceMapping::builder()
                                .device_name(&s.device_name)
                                .ebs(ebs)
                                .build()
                        })
                        .collect(),
                ))
        }
    };

    match call.send().await {
        Ok(out) => {
            let id = out
                .image_id()
                .ok_or_else(|| Error::Internal("RegisterImage returned no image id".into()))?;
            Ok(state(id.to_string()))
        }
        Err(e) if aws_code(&e) == Some("InvalidAMIName.Duplicate") => {
            // Registered by a lost earlier attempt of ours (adopt), or the name belongs to someone else.
            match own_image(deps, req, Some(&name)).await? {
                Some(id) => Ok(state(id)),
                None => Err(Error::Conflict(format!(
                    "an image named `{name}` already exists and is not this execution's; put {{{{id}}}} in \
                     recipe.image.name to keep names unique"
                ))),
            }
        }
        Err(e) => Err(ami_core::error::from_sdk("RegisterImage", e)),
    }
}

/// This execution's image in the home region, by tag, or by name and then checked by tag.
async fn own_image(deps: &Deps, req: &StepRequest, name: Option<&str>) -> Result<Option<String>> {
    let filters = match name {
        Some(n) => vec![aws_sdk_ec2::types::Filter::builder().name("name").values(n).build()],
        None => vec![
            tags::filter(tags::EXECUTION, &req.execution.name),
            tags::filter(tags::ROLE, tags::Role::Image.as_str()),
        ],
    };
    let images = ami_core::ec2::own_images(&deps.ec2, filters).await?;
    Ok(images
        .into_iter()
        .find(|i| tags::get(i.tags(), tags::EXECUTION) == Some(req.execution.name.as_str()))
        .and_then(|i| i.image_id().map(String::from)))
}

async fn status(deps: &Deps, req: &StepRequest, now: i64) -> Result<ImageState> {
    let state = req.steps.register()?.clone();
    state.progress.check_deadline(now, "image registration")?;
    let image = ami_core::ec2::describe_image(&deps.ec2, &state.image_id).await?;
    let status = match image_progress(image.as_ref()) {
        ImageProgress::Available => Status::Ready,
        ImageProgress::Pending => Status::Pending,
        ImageProgress::Failed(why) => return Err(Error::ImageFailed(why)),
    };
    Ok(ImageState {
        progress: state.progress.with_status(status),
        ..state
    })
}

#[cfg(test)]
mod tests;
