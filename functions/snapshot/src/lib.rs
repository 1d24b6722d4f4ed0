//! snapshot: `start` plans how the image is made (`ami_core::aws::platform`), then snapshots all volumes of the stopped
//! builder (or of the recipe's source instance, stopped first when asked) with one `CreateSnapshots`, tagged on
//! create, or, for a licensed platform, makes the image from the instance with `CreateImage`; `status` reports
//! progress until every snapshot is completed (or the image is available). A source instance not stopped first is
//! taken running: its image is crash-consistent, and the output says so (`consistency`, `warnings`).

use std::collections::HashMap;

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::types::{
    BootModeOverrideValues, Image, Instance, InstanceSpecification, InstanceStateName, ResourceType,
    SnapshotState as Ec2SnapshotState,
};

use ami_core::aws::ec2::{ImageProgress, image_progress};
use ami_core::aws::error::{Error, Result, SdkResultExt, aws_code};
use ami_core::aws::platform::{self, Method, Origin};
use ami_core::definition::{self, StepDef};
use ami_core::model::recipe::{RootDeviceType, Source};
use ami_core::model::steps::{Consistency, Progress, SnapshotInfo, SnapshotState, Status, StepRequest};
use ami_core::step::Step;
use ami_core::{aws::image, aws::tags};

/// The EC2 client of the run's region, where this runs; built once per process.
pub struct Deps(pub aws_sdk_ec2::Client);

impl Step for Deps {
    type Output = SnapshotState;
    const DEF: &'static StepDef = &definition::SNAPSHOT;

    async fn start(&self, req: &StepRequest, now: i64) -> Result<SnapshotState> {
        let (instance_id, stop_first) = target(req)?;
        let progress = Progress::start(now, req.run.recipe.image.timeout_minutes);
        let instance = describe(self, &instance_id).await?;
        let source_image_id = match &req.run.recipe.source {
            Source::Image(_) => req.steps.build()?.source_image_id.clone(),
            Source::Instance(_) => instance.image_id().unwrap_or_default().to_string(),
        };
        // Decided from the instance (it reports its AMI's billing and boot mode), before the source instance is
        // stopped: a recipe it cannot satisfy changes nothing.
        let plan = platform::plan(&Origin::of_instance(&instance), &req.run.recipe.image)?;
        let mut state = SnapshotState {
            instance_id,
            source_image_id,
            root_device_name: instance.root_device_name().unwrap_or("/dev/xvda").to_string(),
            snapshots: Vec::new(),
            plan,
            image_id: None,
            percent: 0,
            consistency: None,
            warnings: Vec::new(),
            progress,
        };
        if req.run.recipe.image.root_device_type == RootDeviceType::InstanceStore {
            // Instance-store images are bundled to S3 by the provisioning script; there is nothing to snapshot.
            state.percent = 100;
            state.progress = state.progress.with_status(Status::Ready);
            return Ok(state);
        }
        if stop_first && !is_stopped(&instance) {
            self.0
                .stop_instances()
                .instance_ids(&state.instance_id)
                .send()
                .await
                .aws("StopInstances")?;
            return Ok(state); // status snapshots (or images) it once it has stopped
        }
        // Taken as the instance is: a running source instance (`stop_first: false`) gives a crash-consistent image.
        taken(&mut state, is_stopped(&instance));
        match state.plan.method {
            Method::Snapshots => state.snapshots = ensure_snapshots(self, req, &instance).await?,
            Method::CreateImage => state.image_id = Some(ensure_image(self, req, &state).await?),
        }
        Ok(state)
    }

    async fn status(&self, req: &StepRequest, now: i64) -> Result<SnapshotState> {
        let mut state = req.steps.snapshot()?.clone();
        if state.progress.status == Status::Ready {
            return Ok(state);
        }
        state.progress.check_deadline(now, "snapshots")?;
        if state.plan.method == Method::CreateImage {
            return image_status(self, req, state).await;
        }
        let mut just_made = false;
        if state.snapshots.is_empty() {
            // Waiting for the source instance to stop. Once stopped, the snapshots are started (or, on a later poll,
            // found by tag: a status call's output is not kept while pending) and checked in the same call.
            let instance = describe(self, &state.instance_id).await?;
            if !is_stopped(&instance) {
                return Ok(state);
            }
            taken(&mut state, true);
            state.snapshots = ensure_snapshots(self, req, &instance).await?;
            just_made = true;
        }
        let ids: Vec<String> = state.snapshots.iter().map(|s| s.snapshot_id.clone()).collect();
        let out = match self.0.describe_snapshots().set_snapshot_ids(Some(ids)).send().await {
            Ok(out) => out,
            // Ids just created may be unknown to DescribeSnapshots for a while (eventual consistency): pending. Past
            // the grace period, a snapshot of ours that is gone was deleted from outside.
            Err(e) if aws_code(&e) == Some("InvalidSnapshot.NotFound") => {
                if just_made || ami_core::aws::ec2::within_grace(state.progress.started_at, now) {
                    state.percent = 0;
                    state.progress = state.progress.with_status(Status::Pending);
                    return Ok(state);
                }
                return Err(Error::ResourceGone(format!(
                    "a snapshot of this run no longer exists: {}",
                    ami_core::aws::error::from_sdk("DescribeSnapshots", e)
                )));
            }
            Err(e) => return Err(ami_core::aws::error::from_sdk("DescribeSnapshots", e)),
        };
        let mut lowest = 100u32;
        for s in out.snapshots() {
            let id = s.snapshot_id().unwrap_or("?");
            match s.state() {
                Some(Ec2SnapshotState::Error) => {
                    let why = s.state_message().unwrap_or("no message");
                    return Err(Error::SnapshotFailed(format!("snapshot {id} failed: {why}")));
                }
                Some(Ec2SnapshotState::Completed) => {}
                _ => lowest = lowest.min(percent(s.progress()).min(99)),
            }
        }
        if out.snapshots().len() < state.snapshots.len() {
            lowest = 0; // not all visible yet (eventual consistency)
        }
        state.percent = lowest;
        let status = if lowest == 100 { Status::Ready } else { Status::Pending };
        state.progress = state.progress.with_status(status);
        Ok(state)
    }

    fn progress(out: &SnapshotState) -> Option<&Progress> {
        Some(&out.progress)
    }
}

/// Records what the image's volumes hold, from whether the instance is stopped as its snapshots start.
fn taken(state: &mut SnapshotState, stopped: bool) {
    let consistency = Consistency::of(stopped);
    state.consistency = Some(consistency);
    state.warnings = consistency.warning(&state.instance_id).into_iter().collect();
}

/// The instance to snapshot and whether it must be stopped first.
fn target(req: &StepRequest) -> Result<(String, bool)> {
    match &req.run.recipe.source {
        Source::Instance(inst) => Ok((inst.id.clone(), inst.stop_first)),
        Source::Image(_) => Ok((req.steps.build()?.instance_id.clone(), false)),
    }
}

/// Finds this execution's image by tag (CreateImage takes no ClientToken), or makes it from the instance, stopped
/// (the builder, or a source instance stopped first) or running (a source instance with `stop_first: false`, whose
/// image is then crash-consistent: `Consistency`): CreateImage snapshots every EBS volume and keeps the instance's
/// billing information (RegisterImage API reference, on licensed platforms), its boot mode and its block device
/// mapping.
async fn ensure_image(deps: &Deps, req: &StepRequest, state: &SnapshotState) -> Result<String> {
    if let Some(id) = image::own(&deps.0, req, None).await? {
        return Ok(id);
    }
    let name = image::name(req);
    let out = deps
        .0
        .create_image()
        .instance_id(&state.instance_id)
        .name(&name)
        .description(image::description(req))
        // Never rebooted: a stopped instance must not be started again, and a running source instance is not the
        // pipeline's to reboot (its image is crash-consistent, as the step output says).
        .no_reboot(true)
        .set_boot_mode_override(state.plan.boot_mode_override.then_some(BootModeOverrideValues::Uefi))
        .tag_specifications(tags::spec(
            ResourceType::Image,
            image::candidate_tags(req, &state.source_image_id),
        ))
        .tag_specifications(tags::spec(
            ResourceType::Snapshot,
            snapshot_tags(req, &state.source_image_id),
        ))
        .customize()
        // No blind SDK retry: a retry after a lost answer would fail on the name; the step's retry adopts by tag.
        .config_override(aws_sdk_ec2::config::Config::builder().retry_config(RetryConfig::disabled()))
        .send()
        .await;
    match out {
        Ok(out) => out
            .image_id()
            .map(String::from)
            .ok_or_else(|| Error::Internal("CreateImage returned no image id".into())),
        Err(e) if aws_code(&e) == Some("InvalidAMIName.Duplicate") => image::adopt_by_name(&deps.0, req, &name).await,
        Err(e) => Err(ami_core::aws::error::from_sdk("CreateImage", e)),
    }
}

fn snapshot_tags(req: &StepRequest, source_image_id: &str) -> Vec<aws_sdk_ec2::types::Tag> {
    let mut snapshot_tags = tags::standard(&req.execution, &req.run, tags::Role::Snapshot);
    if !source_image_id.is_empty() {
        snapshot_tags.push(tags::tag(tags::SOURCE_IMAGE, source_image_id));
    }
    snapshot_tags
}

/// The CreateImage path's status: the image is found (or made, once a source instance has stopped) and is ready
/// when available; its snapshots are then listed as the snapshots path lists them.
async fn image_status(deps: &Deps, req: &StepRequest, mut state: SnapshotState) -> Result<SnapshotState> {
    if state.image_id.is_none() {
        let instance = describe(deps, &state.instance_id).await?;
        if !is_stopped(&instance) {
            return Ok(state);
        }
        taken(&mut state, true);
        state.image_id = Some(ensure_image(deps, req, &state).await?);
    }
    let id = state.image_id.clone().unwrap_or_default();
    let image = ami_core::aws::ec2::describe_image(&deps.0, &id).await?;
    match image_progress(image.as_ref()) {
        ImageProgress::Pending => Ok(state),
        ImageProgress::Failed(why) => Err(Error::ImageFailed(format!("CreateImage {id}: {why}"))),
        ImageProgress::Available => {
            let image = image.ok_or_else(|| Error::Internal(format!("image {id} is available but not described")))?;
            state.root_device_name = image.root_device_name().unwrap_or(&state.root_device_name).to_string();
            state.snapshots = image_snapshots(&image);
            state.percent = 100;
            state.progress = state.progress.with_status(Status::Ready);
            Ok(state)
        }
    }
}

/// The image's EBS mappings as the snapshots path records them (the volume is not named by an image mapping).
fn image_snapshots(image: &Image) -> Vec<SnapshotInfo> {
    let mut infos: Vec<SnapshotInfo> = image
        .block_device_mappings()
        .iter()
        .filter_map(|m| {
            let ebs = m.ebs()?;
            Some(SnapshotInfo {
                snapshot_id: ebs.snapshot_id()?.to_string(),
                device_name: m.device_name()?.to_string(),
                volume_id: String::new(),
                size_gib: ebs.volume_size().unwrap_or_default(),
                volume_type: ebs
                    .volume_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or("gp3".into()),
                iops: ebs
                    .iops()
                    .filter(|_| matches!(ebs.volume_type().map(|t| t.as_str()), Some("gp3" | "io1" | "io2"))),
                throughput: ebs.throughput(),
            })
        })
        .collect();
    infos.sort_by(|a, b| a.device_name.cmp(&b.device_name));
    infos
}

fn is_stopped(instance: &Instance) -> bool {
    instance.state().and_then(|s| s.name()) == Some(&InstanceStateName::Stopped)
}

async fn describe(deps: &Deps, id: &str) -> Result<Instance> {
    ami_core::aws::ec2::describe_instance(&deps.0, id)
        .await?
        .ok_or_else(|| Error::ResourceGone(format!("instance {id} no longer exists")))
}

/// This execution's snapshots, by tag, not in `error`: (snapshot, volume, size).
async fn own_snapshots(deps: &Deps, req: &StepRequest) -> Result<Vec<(String, String, i32)>> {
    let existing = deps
        .0
        .describe_snapshots()
        .owner_ids("self")
        .filters(tags::filter(tags::EXECUTION, &req.execution.name))
        .filters(tags::filter(tags::ROLE, tags::Role::Snapshot.as_str()))
        .send()
        .await
        .aws("DescribeSnapshots")?;
    Ok(existing
        .snapshots()
        .iter()
        .filter(|s| s.state() != Some(&Ec2SnapshotState::Error))
        .filter_map(|s| {
            Some((
                s.snapshot_id()?.to_string(),
                s.volume_id()?.to_string(),
                s.volume_size()?,
            ))
        })
        .collect())
}

/// Finds this execution's snapshots by tag (CreateSnapshots takes no ClientToken), or creates them.
async fn ensure_snapshots(deps: &Deps, req: &StepRequest, instance: &Instance) -> Result<Vec<SnapshotInfo>> {
    let instance_id = instance.instance_id().unwrap_or_default();
    let devices: HashMap<&str, &str> = instance
        .block_device_mappings()
        .iter()
        .filter_map(|m| Some((m.ebs()?.volume_id()?, m.device_name()?)))
        .collect();
    if devices.is_empty() {
        return Err(Error::ResourceGone(format!(
            "instance {instance_id} has no EBS volumes to snapshot"
        )));
    }

    // CreateSnapshots takes no ClientToken and the tag look-up is eventually consistent: one that finds nothing is
    // made once more after a pause before a second set is created.
    let mut found = own_snapshots(deps, req).await?;
    if found.is_empty() {
        tokio::time::sleep(ami_core::aws::ec2::LOOKUP_PAUSE).await;
        found = own_snapshots(deps, req).await?;
    }

    if found.is_empty() {
        let source = req.steps.build.as_ref().map(|b| b.source_image_id.as_str());
        let snapshot_tags = snapshot_tags(req, source.or(instance.image_id()).unwrap_or_default());
        let out = deps
            .0
            .create_snapshots()
            .instance_specification(
                InstanceSpecification::builder()
                    .instance_id(instance_id)
                    .exclude_boot_volume(false)
                    .build(),
            )
            .description(format!(
                "ami-pipeline {} {} ({})",
                req.run.pipeline, req.run.release.version, req.execution.name
            ))
            .tag_specifications(tags::spec(ResourceType::Snapshot, snapshot_tags))
            .customize()
            // No blind SDK retry: CreateSnapshots takes no ClientToken, so a retry after a lost answer would make a
            // second set. The step's own retry (Step Functions) comes back through the tag look-up above.
            .config_override(aws_sdk_ec2::config::Config::builder().retry_config(RetryConfig::disabled()))
            .send()
            .await
            .aws("CreateSnapshots")?;
        found = out
            .snapshots()
            .iter()
            .filter_map(|s| {
                Some((
                    s.snapshot_id()?.to_string(),
                    s.volume_id()?.to_string(),
                    s.volume_size()?,
                ))
            })
            .collect();
    }

    let volume_ids: Vec<String> = found.iter().map(|(_, v, _)| v.clone()).collect();
    let volumes = deps
        .0
        .describe_volumes()
        .set_volume_ids(Some(volume_ids))
        .send()
        .await
        .aws("DescribeVolumes")?;
    let by_id: HashMap<&str, &aws_sdk_ec2::types::Volume> = volumes
        .volumes()
        .iter()
        .filter_map(|v| Some((v.volume_id()?, v)))
        .collect();

    let mut infos = Vec::new();
    for (snapshot_id, volume_id, size) in found {
        let device_name = devices.get(volume_id.as_str()).ok_or_else(|| {
            Error::Conflict(format!(
                "snapshot {snapshot_id} is of volume {volume_id}, not attached to {instance_id}"
            ))
        })?;
        let volume = by_id.get(volume_id.as_str());
        infos.push(SnapshotInfo {
            snapshot_id,
            device_name: device_name.to_string(),
            volume_id,
            size_gib: size,
            volume_type: volume
                .and_then(|v| v.volume_type())
                .map(|t| t.as_str().to_string())
                .unwrap_or("gp3".into()),
            iops: volume
                .and_then(|v| v.iops())
                .filter(|_| volume.is_some_and(|v| has_settable_iops(v))),
            throughput: volume.and_then(|v| v.throughput()),
        });
    }
    infos.sort_by(|a, b| a.device_name.cmp(&b.device_name));
    Ok(infos)
}

/// gp2 reports IOPS but does not accept them in a block device mapping.
fn has_settable_iops(v: &aws_sdk_ec2::types::Volume) -> bool {
    matches!(v.volume_type().map(|t| t.as_str()), Some("gp3" | "io1" | "io2"))
}

/// EC2 reports progress as "NN%".
fn percent(p: Option<&str>) -> u32 {
    p.and_then(|p| p.trim_end_matches('%').trim().parse().ok())
        .unwrap_or(0)
        .min(100)
}

#[cfg(test)]
mod tests;
