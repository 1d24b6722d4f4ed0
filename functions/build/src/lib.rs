//! build: `start` vets the base image, then launches the builder with the recipe's provisioning script;
//! `status` reports pending until the builder has printed its result marker and stopped; `finish` terminates
//! the builder once the image is available (on failure, cleanup does it by tag).

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, IamInstanceProfileSpecification, Image, InstanceStateName, ResourceType,
    ShutdownBehavior, VolumeType,
};
use serde_json::Value;

use ami_core::error::{Error, Result, SdkResultExt};
use ami_core::recipe::{Build, Source};
use ami_core::step::Step;
use ami_core::steps::{BuildState, Progress, Status, StepRequest, now};
use ami_core::userdata::{self, Outcome};
use ami_core::{naming, source, tags};

/// Clients, built once per process.
pub struct Deps {
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
}

impl Deps {
    pub fn from_config(config: &ami_core::clients::SdkConfig) -> Self {
        Deps {
            ec2: aws_sdk_ec2::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
        }
    }
}

/// How long a stopped builder may go without a result marker before the build fails. Console output is buffered
/// and "posted shortly after an instance transition state" (GetConsoleOutput API reference), so the marker can
/// lag the stop. Measured from AWS's state (the stop time EC2 gives, or a tag), never a poll count: status calls
/// are stateless.
const CONSOLE_GRACE_SECONDS: i64 = 15 * 60;

impl Step for Deps {
    type Output = BuildState;
    const NAME: &'static str = "build";
    const ACTIONS: &'static str = "`start`, `status` or `finish`";

    async fn start(&self, req: &StepRequest) -> Result<BuildState> {
        start(self, req, now()).await
    }

    async fn status(&self, req: &StepRequest) -> Result<BuildState> {
        status(self, req, now()).await
    }

    async fn finish(&self, req: &StepRequest) -> Result<BuildState> {
        finish(self, req).await
    }

    fn progress(out: &BuildState) -> Option<&Progress> {
        Some(&out.progress)
    }
}

/// The state machine's input, answered as the deployed function answers it.
pub async fn handle(deps: &Deps, event: Value) -> Result<BuildState> {
    ami_core::step::handle(deps, event).await
}

/// Terminates the builder; one already gone counts as done.
async fn finish(deps: &Deps, req: &StepRequest) -> Result<BuildState> {
    let state = req.steps.build()?;
    ami_core::ec2::terminate(&deps.ec2, std::slice::from_ref(&state.instance_id)).await?;
    Ok(BuildState {
        terminated: true,
        ..state.clone()
    })
}

fn build_section(req: &StepRequest) -> Result<(&Build, &ami_core::recipe::BaseImage)> {
    match (&req.run.recipe.source, &req.run.recipe.build) {
        (Source::Image(base), Some(build)) => Ok((build, base)),
        (Source::Image(_), None) => Err(Error::invalid("run.recipe.build", "required for an image source")),
        (Source::Instance(_), _) => Err(Error::invalid(
            "run.recipe.source",
            "an instance source has no build step; start at snapshot",
        )),
    }
}

async fn start(deps: &Deps, req: &StepRequest, now: i64) -> Result<BuildState> {
    let (build, base) = build_section(req)?;
    let recipe = &req.run.recipe;

    // A retried start adopts the builder it already launched (the ClientToken below covers a lost response).
    let mine = vec![
        tags::filter(tags::EXECUTION, &req.execution.name),
        tags::filter(tags::ROLE, tags::Role::Builder.as_str()),
    ];
    if let Some(existing) = ami_core::ec2::find_instances(&deps.ec2, mine).await?.into_iter().next() {
        let instance_id = existing.instance_id().unwrap_or_default().to_string();
        let source_image_id = existing.image_id().unwrap_or_default().to_string();
        tracing_log(&instance_id, "adopted the builder this execution already launched");
        return Ok(BuildState {
            instance_id,
            source_image_id,
            terminated: false,
            progress: Progress::start(now, build.timeout_minutes),
        });
    }

    // Vet the base image before anything is created.
    let image = source::resolve(&deps.ec2, &deps.ssm, base, recipe.image.architecture, now).await?;
    let image_id = image.image_id().unwrap_or_default().to_string();
    // A boot mode or NitroTPM the base cannot give is refused now, not after the build (snapshot plans again from
    // the builder, which reports the same properties).
    ami_core::platform::plan(&ami_core::platform::Origin::of_image(&image), &recipe.image)?;
    let devices = block_devices(build, &image, recipe.image.kms_key_id.as_deref())?;

    let user_data = userdata::builder(&req.run, &req.execution.name, build.platform, &build.script);
    let mut instance_tags = tags::standard(&req.execution, &req.run, tags::Role::Builder);
    instance_tags.push(tags::tag(tags::SOURCE_IMAGE, &image_id));

    let profile = build.instance_profile.as_ref().map(|p| {
        if p.starts_with("arn:") {
            IamInstanceProfileSpecification::builder().arn(p).build()
        } else {
            IamInstanceProfileSpecification::builder().name(p).build()
        }
    });

    let out = ami_core::ec2::locked_down(
        deps.ec2.run_instances(),
        build.subnet_id.clone(),
        build.security_group_ids.clone(),
    )
    .image_id(&image_id)
    .instance_type(build.instance_type.as_str().into())
    .min_count(1)
    .max_count(1)
    .client_token(naming::client_token(&req.execution.name, "build", &req.run.region))
    .set_block_device_mappings(Some(devices))
    .set_iam_instance_profile(profile)
    .instance_initiated_shutdown_behavior(ShutdownBehavior::Stop)
    .user_data(aws_smithy_types::base64::encode(user_data.as_bytes()))
    .tag_specifications(tags::spec(ResourceType::Instance, instance_tags.clone()))
    .tag_specifications(tags::spec(ResourceType::Volume, instance_tags))
    .send()
    .await
    .aws("RunInstances")?;
    let instance_id = out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .ok_or_else(|| Error::Internal("RunInstances returned no instance".into()))?
        .to_string();
    tracing_log(&instance_id, "launched the builder");
    Ok(BuildState {
        instance_id,
        source_image_id: image_id,
        terminated: false,
        progress: Progress::start(now, build.timeout_minutes),
    })
}

fn tracing_log(instance_id: &str, what: &str) {
    lambda_runtime::tracing::info!(instance_id, "{what}");
}

/// Root and data volumes: always encrypted, deleted with the instance, sized at least as the base image.
fn block_devices(build: &Build, image: &Image, kms_key: Option<&str>) -> Result<Vec<BlockDeviceMapping>> {
    let root_name = image
        .root_device_name()
        .ok_or_else(|| Error::SourceNotTrusted("base image has no root device name".into()))?;
    let base_size = image
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(root_name))
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_size())
        .unwrap_or(0);
    let root = &build.root_volume;
    let size = i32::try_from(root.size_gib).unwrap_or(i32::MAX);
    if size != 0 && size < base_size {
        return Err(Error::invalid(
            "recipe.build.root_volume.size_gib",
            format!("the base image's root volume is {base_size} GiB; use at least that, or 0 to keep it"),
        ));
    }
    let ebs = |size: i32, vtype: &str, iops: Option<u32>, throughput: Option<u32>| {
        EbsBlockDevice::builder()
            .encrypted(true)
            .set_kms_key_id(kms_key.map(String::from))
            .delete_on_termination(true)
            .set_volume_size(Some(size).filter(|s| *s > 0))
            .volume_type(VolumeType::from(vtype))
            .set_iops(iops.and_then(|i| i32::try_from(i).ok()))
            .set_throughput(throughput.and_then(|t| i32::try_from(t).ok()))
            .build()
    };
    let mut out = vec![
        BlockDeviceMapping::builder()
            .device_name(root_name)
            .ebs(ebs(size, &root.volume_type, root.iops, root.throughput))
            .build(),
    ];
    for v in &build.data_volumes {
        out.push(
            BlockDeviceMapping::builder()
                .device_name(&v.device_name)
                .ebs(ebs(
                    i32::try_from(v.size_gib).unwrap_or(i32::MAX),
                    &v.volume_type,
                    v.iops,
                    v.throughput,
                ))
                .build(),
        );
    }
    Ok(out)
}

async fn status(deps: &Deps, req: &StepRequest, now: i64) -> Result<BuildState> {
    let state = req.steps.build()?.clone();
    state.progress.check_deadline(now, "provisioning")?;
    let id = &state.instance_id;
    let instance = ami_core::ec2::describe_instance(&deps.ec2, id)
        .await?
        .ok_or_else(|| Error::ResourceGone(format!("builder {id} no longer exists")))?;
    let ready = match instance.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Stopped) => {
            let console = ami_core::ec2::console_text(&deps.ec2, id).await?;
            match userdata::build_result(&console) {
                Some(Outcome::Passed) => true,
                Some(Outcome::Failed(why)) => {
                    return Err(Error::ProvisionFailed(format!(
                        "builder {id}: provisioning script reported {why}"
                    )));
                }
                None => match stopped_since(&instance) {
                    Some(t) if now - t > CONSOLE_GRACE_SECONDS => {
                        return Err(Error::ProvisionFailed(format!(
                            "builder {id} stopped more than {} minutes ago without printing a result: the script \
                             was cut short or the instance was stopped from outside",
                            CONSOLE_GRACE_SECONDS / 60
                        )));
                    }
                    Some(_) => false,
                    None => {
                        // No stop time from EC2 (a stop from inside the OS): start the grace period now, on the
                        // instance, since the next poll does not see this call's output.
                        deps.ec2
                            .create_tags()
                            .resources(id)
                            .tags(tags::tag(tags::STOPPED_SEEN, &now.to_string()))
                            .send()
                            .await
                            .aws("CreateTags")?;
                        false
                    }
                },
            }
        }
        Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown) => {
            return Err(Error::ResourceGone(format!(
                "builder {id} was terminated before provisioning finished"
            )));
        }
        _ => false,
    };
    let status = if ready { Status::Ready } else { Status::Pending };
    Ok(BuildState {
        progress: state.progress.with_status(status),
        ..state
    })
}

/// Since when the builder is known to be stopped: the time in its `StateTransitionReason` when EC2 gives one,
/// else the `STOPPED_SEEN` tag an earlier status call put on it.
fn stopped_since(instance: &aws_sdk_ec2::types::Instance) -> Option<i64> {
    stopped_at(instance).or_else(|| tags::get(instance.tags(), tags::STOPPED_SEEN)?.parse().ok())
}

/// The stop time in `StateTransitionReason`. The EC2 API reference only says "the reason for the most recent
/// state transition. This might be an empty string"; observed: "User initiated (2026-11-27 10:00:00 GMT)" for an
/// API stop, "User initiated" without a time for one from inside the OS (cloud-custodian issue 6924). moto
/// writes "UTC".
fn stopped_at(instance: &aws_sdk_ec2::types::Instance) -> Option<i64> {
    let reason = instance.state_transition_reason()?;
    let inside = reason.rsplit_once('(')?.1.strip_suffix(')')?;
    let stamp = inside.strip_suffix(" GMT").or_else(|| inside.strip_suffix(" UTC"))?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S").ok()?;
    Some(t.and_utc().timestamp())
}

#[cfg(test)]
mod tests;
