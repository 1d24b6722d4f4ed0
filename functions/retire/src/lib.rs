//! retire: per region, keeps the pipeline's newest `retention.keep` released images, gives kept images a
//! deprecation time `deprecate_after_days` after their creation, and deregisters the older ones with their
//! snapshots.
//!
//! An image that a recipe SSM parameter or launch template default version points at is protected: it is never
//! deprecated or deregistered, and it does not take one of the `keep` places. Only images tagged with this
//! pipeline and `state=released` are considered; candidates belong to their execution (and to cleanup).
//!
//! It then sweeps the pipeline's orphaned snapshots: ones no image uses any more and older than any execution
//! can run (`ORPHAN_GRACE_SECONDS`), and the images failed runs kept for a rerun (`state=tested`) that no rerun
//! adopted within `ami_core::aws::rerun::KEPT_GRACE_DAYS`.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{Image, Snapshot, SnapshotState};
use lambda_runtime::tracing;

use ami_core::aws::ec2::Deletion;
use ami_core::aws::error::{Error, Result, SdkResultExt, aws_code};
use ami_core::aws::lifecycle::{self, Deprecation, RetireOutput, RetiredRegion, SkippedSnapshot};
use ami_core::aws::tags;
use ami_core::definition::{self, StepDef};
use ami_core::model::recipe::{Retention, limits};
use ami_core::model::steps::{Run, StepRequest};
use ami_core::step::{Clients, Step};

/// Clients, built once per process; retire works in every region of the pipeline.
pub struct Deps(pub Clients);

impl Step for Deps {
    type Output = RetireOutput;
    const DEF: &'static StepDef = &definition::RETIRE;

    async fn start(&self, req: &StepRequest, now: i64) -> Result<RetireOutput> {
        // The recipe was validated by the trigger and is not validated again, but deregistering cannot be
        // undone: with `keep: 0` every unprotected image would go, so that one rule is checked here too.
        if req.run.recipe.retention.keep == 0 {
            return Err(Error::invalid(
                "recipe.retention.keep",
                "must be at least 1 (the image just built)",
            ));
        }
        retire(self, &req.run, now).await
    }
}

/// Retires in every region of the pipeline, home region first.
pub async fn retire(deps: &Deps, run: &Run, now: i64) -> Result<RetireOutput> {
    let mut regions = Vec::new();
    for region in &run.regions {
        ami_core::aws::runtime::ensure_time_left(ami_core::aws::runtime::CALL_BUDGET, &format!("retire in {region}"))?;
        regions.push(retire_region(deps, run, region, now).await?);
    }
    Ok(RetireOutput { regions })
}

async fn retire_region(deps: &Deps, run: &Run, region: &str, now: i64) -> Result<RetiredRegion> {
    let ec2 = deps.0.ec2.get(region);
    // Released images, and in the same listing the kept (`tested`) ones, for the abandoned sweep.
    let state = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{}", tags::STATE))
        .values(tags::STATE_RELEASED)
        .values(tags::STATE_TESTED)
        .build();
    let (kept_tested, found): (Vec<Image>, Vec<Image>) =
        ami_core::aws::ec2::own_images(&ec2, vec![tags::filter(tags::PIPELINE, &run.pipeline), state])
            .await?
            .into_iter()
            .partition(|i| tags::get(i.tags(), tags::STATE) == Some(tags::STATE_TESTED));
    // The filter already selects these; checked again because deregistering is not undoable.
    let images: Vec<Image> = found
        .into_iter()
        .filter(|i| {
            tags::get(i.tags(), tags::PIPELINE) == Some(run.pipeline.as_str())
                && tags::get(i.tags(), tags::STATE) == Some(tags::STATE_RELEASED)
                && i.image_id().is_some()
        })
        .collect();
    let referenced = if images.is_empty() {
        BTreeSet::new()
    } else {
        referenced_images(deps, run, region).await?
    };
    let plan = plan(images, &referenced, &run.recipe.retention, now);

    let mut deprecated = Vec::new();
    for (image_id, at) in plan.deprecate.iter().take(CHANGES_PER_REGION) {
        // One call per image: stop before the Lambda timeout, the retry resumes (deprecating again is harmless).
        ami_core::aws::runtime::ensure_time_left(
            ami_core::aws::runtime::CALL_BUDGET,
            &format!("deprecating in {region}"),
        )?;
        match ec2
            .enable_image_deprecation()
            .image_id(image_id)
            .deprecate_at(aws_smithy_types::DateTime::from_secs(*at))
            .send()
            .await
        {
            Ok(_) => deprecated.push(Deprecation {
                image_id: image_id.clone(),
                deprecate_at: rfc3339(*at),
            }),
            // Gone since the listing: nothing left to deprecate.
            Err(e) if aws_code(&e) == Some("InvalidAMIID.NotFound") => {}
            Err(e) => return Err(ami_core::aws::error::from_sdk("EnableImageDeprecation", e)),
        }
    }
    // Deregistration protection is the owner saying "keep this one": skip and report it, never fail a run that
    // has already published.
    let (locked, mut deregister): (Vec<Image>, Vec<Image>) = plan
        .deregister
        .iter()
        .cloned()
        .partition(ami_core::aws::ec2::has_deregistration_protection);
    // The oldest few per run (the list is newest first): the rest go on the next runs (`CHANGES_PER_REGION`).
    deregister.drain(..deregister.len().saturating_sub(CHANGES_PER_REGION));
    if locked.len() > CHANGES_PER_REGION {
        tracing::warn!(images = ?ids(&locked), "more images under deregistration protection than listed");
    }
    let mut deletion = Deletion::default();
    for image in &deregister {
        ami_core::aws::runtime::ensure_time_left(
            ami_core::aws::runtime::CALL_BUDGET,
            &format!("deregistering in {region}"),
        )?;
        deletion.extend(ami_core::aws::ec2::deregister_with_snapshots(&ec2, image).await?);
    }
    let budget = CHANGES_PER_REGION - deregister.len();
    let abandoned_deregistered = sweep_abandoned(&ec2, run, kept_tested, now, budget, &mut deletion).await?;
    let (orphan_snapshots_deleted, orphan_snapshots_skipped) = sweep_orphan_snapshots(&ec2, run, now).await?;
    Ok(RetiredRegion {
        region: region.to_string(),
        kept: ids(&plan.keep),
        deprecated,
        deregistered: ids(&deregister),
        protected: ids(&plan.protected),
        deregistration_protected: ids(&locked).into_iter().take(CHANGES_PER_REGION).collect(),
        orphan_snapshots_deleted,
        orphan_snapshots_skipped,
        abandoned_deregistered,
        snapshots_left: reported(deletion.left),
    })
}

/// How many images retire deprecates, and deregisters (released beyond `keep`, or kept for a rerun and abandoned),
/// per region and run; the rest are done by the next runs. Retire's output (which lists them) must stay within the
/// 256 KiB a Task may return (`definition::payload`).
pub const CHANGES_PER_REGION: usize = 5;

/// The snapshots EC2 would not delete, as many as are listed per region (all are logged).
fn reported(left: Vec<SkippedSnapshot>) -> Vec<SkippedSnapshot> {
    const LISTED: usize = 2 * CHANGES_PER_REGION;
    if left.len() > LISTED {
        tracing::warn!(snapshots = ?left, "more snapshots not deleted than listed");
    }
    left.into_iter().take(LISTED).collect()
}

/// Deregisters (with their snapshots, `DeleteAssociatedSnapshots`) the pipeline's kept images (`state=tested`)
/// created more than `KEPT_GRACE_DAYS` ago: their release was never rerun, or was rebuilt from scratch. A rerun
/// adopts only images younger than `ADOPT_WITHIN_DAYS`, a week less, so none in use by a running rerun is removed.
/// Under deregistration protection: left, like any image its owner protected.
async fn sweep_abandoned(
    ec2: &aws_sdk_ec2::Client,
    run: &Run,
    found: Vec<Image>,
    now: i64,
    budget: usize,
    deletion: &mut Deletion,
) -> Result<Vec<String>> {
    let cutoff = now - ami_core::aws::rerun::KEPT_GRACE_DAYS * 86_400;
    let mut out = Vec::new();
    for image in found {
        // Checked again in code: deregistering cannot be undone.
        let abandoned = tags::get(image.tags(), tags::PIPELINE) == Some(run.pipeline.as_str())
            && tags::get(image.tags(), tags::STATE) == Some(tags::STATE_TESTED)
            && ami_core::aws::rerun::created_at(&image).is_some_and(|t| t < cutoff)
            && !ami_core::aws::ec2::has_deregistration_protection(&image);
        if out.len() >= budget {
            break;
        }
        if let (true, Some(id)) = (abandoned, image.image_id()) {
            deletion.extend(ami_core::aws::ec2::deregister_with_snapshots(ec2, &image).await?);
            tracing::info!(image_id = id, "abandoned kept image deregistered");
            out.push(id.to_string());
        }
    }
    Ok(out)
}

/// How old a snapshot of this pipeline must be before retire may treat it as orphaned: longer than any execution
/// can run. A snapshot is made by the snapshot step (after the build) or by CopyImage, and belongs to its execution
/// until that execution's image is registered or copied; before then no image uses it, so "unused" alone would let
/// a retire of another execution delete a running execution's snapshots. The state machine has no overall
/// timeout, but every long step ends at a deadline its handler enforces (`AmiPipeline.Timeout`), each at most the
/// limit validation accepts (`recipe::limits`, checked against the poll loops in `definition/tests.rs`); the short
/// steps and all retries add minutes. So the sum of the long steps' limits (build, snapshot, register, test,
/// copy: 7,440 minutes, about 5.2 days) plus a day's margin bounds the life of any execution, and a snapshot that
/// started before that is not a running execution's. The `ami-pipeline:execution` tag is required too: a snapshot
/// without it was not made by an execution, and is left to whoever made it.
pub const ORPHAN_GRACE_SECONDS: i64 = (limits::BUILD_MINUTES as i64
    + 2 * limits::IMAGE_MINUTES as i64
    + limits::TEST_MINUTES as i64
    + limits::COPY_MINUTES as i64
    + 24 * 60)
    * 60;

/// At most this many orphans are deleted (or skipped) per region and run (each a DeleteSnapshot call, each listed in
/// the output); the rest go next time.
const MAX_ORPHAN_DELETES: usize = 2 * CHANGES_PER_REGION;

/// Deletes this pipeline's snapshots (tagged `ami-pipeline:pipeline` and role `snapshot`, with an execution tag)
/// that are completed or failed, older than `ORPHAN_GRACE_SECONDS`, and used by no image of the account (disabled
/// ones included). Images are checked here because EC2 refuses to delete only the *root* snapshot of a registered
/// AMI ("You cannot delete a snapshot of the root device of an EBS volume used by a registered AMI", DeleteSnapshot
/// API reference): a data volume's snapshot would go, and the image would no longer launch. A snapshot EC2 still
/// refuses (`InvalidSnapshot.InUse`) or that is already gone is skipped and reported; the sweep is housekeeping
/// after publish, so no DeleteSnapshot error fails the run.
async fn sweep_orphan_snapshots(
    ec2: &aws_sdk_ec2::Client,
    run: &Run,
    now: i64,
) -> Result<(Vec<String>, Vec<SkippedSnapshot>)> {
    let mut pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(tags::filter(tags::PIPELINE, &run.pipeline))
        .filters(tags::filter(tags::ROLE, tags::Role::Snapshot.as_str()))
        .into_paginator()
        .send();
    let mut candidates = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.aws("DescribeSnapshots")?;
        candidates.extend(
            page.snapshots()
                .iter()
                .filter(|s| is_orphan_candidate(s, &run.pipeline, now))
                .filter_map(|s| s.snapshot_id().map(String::from)),
        );
    }
    if candidates.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // Every image of the account in the region, disabled ones too: an image of another pipeline (or a person's)
    // made from one of our snapshots counts as a user.
    let in_use: BTreeSet<String> = ami_core::aws::ec2::own_images(ec2, Vec::new())
        .await?
        .iter()
        .flat_map(|i| i.block_device_mappings())
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(String::from))
        .collect();
    let mut deleted = Vec::new();
    let mut skipped = Vec::new();
    for id in candidates
        .into_iter()
        .filter(|id| !in_use.contains(id))
        .take(MAX_ORPHAN_DELETES)
    {
        // Out of time: the rest go on the next run, not a reason to fail this one.
        if ami_core::aws::runtime::ensure_time_left(ami_core::aws::runtime::CALL_BUDGET, "orphan snapshots").is_err() {
            break;
        }
        match ec2.delete_snapshot().snapshot_id(&id).send().await {
            Ok(_) => deleted.push(id),
            Err(e) => {
                let reason = aws_code(&e)
                    .map(String::from)
                    .unwrap_or_else(|| ami_core::aws::error::from_sdk("DeleteSnapshot", e).to_string());
                let reason = ami_core::model::naming::preview_n(&reason, ami_core::aws::ec2::MAX_REASON_CHARS);
                tracing::warn!(snapshot = %id, %reason, "orphan snapshot not deleted");
                skipped.push(SkippedSnapshot {
                    snapshot_id: id,
                    reason,
                });
            }
        }
    }
    Ok((deleted, skipped))
}

/// Tags, state and age of an orphan: see `sweep_orphan_snapshots`. A snapshot still `pending` (being made or
/// copied) or without a readable start time is never one.
fn is_orphan_candidate(s: &Snapshot, pipeline: &str, now: i64) -> bool {
    tags::get(s.tags(), tags::PIPELINE) == Some(pipeline)
        && tags::get(s.tags(), tags::ROLE) == Some(tags::Role::Snapshot.as_str())
        && tags::get(s.tags(), tags::EXECUTION).is_some_and(|e| !e.is_empty())
        && matches!(s.state(), Some(SnapshotState::Completed | SnapshotState::Error))
        && s.start_time().is_some_and(|t| t.secs() < now - ORPHAN_GRACE_SECONDS)
}

fn ids(images: &[Image]) -> Vec<String> {
    images.iter().filter_map(|i| i.image_id()).map(String::from).collect()
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Images the recipe's SSM parameters and launch template default versions point at in `region`. A parameter
/// or template that does not exist points at nothing; any other failure stops retire, since not knowing what is
/// in use must not lead to deleting it.
async fn referenced_images(deps: &Deps, run: &Run, region: &str) -> Result<BTreeSet<String>> {
    let publish = &run.recipe.publish;
    let mut out = BTreeSet::new();
    if !publish.ssm_parameters.is_empty() {
        let ssm = deps.0.ssm.get(region);
        for name in &publish.ssm_parameters {
            out.extend(lifecycle::parameter_value(&ssm, name).await?);
        }
    }
    let ec2 = deps.0.ec2.get(region);
    for lt in &publish.launch_templates {
        if lt.region.as_deref().unwrap_or(&run.region) != region {
            continue;
        }
        if let Some(version) = lifecycle::launch_template_default(&ec2, &lt.id_or_name).await? {
            out.extend(
                version
                    .launch_template_data()
                    .and_then(|d| d.image_id())
                    .map(String::from),
            );
        }
    }
    Ok(out)
}

/// What to do with one region's released images.
#[derive(Debug, Default)]
struct Plan {
    /// Newest first.
    keep: Vec<Image>,
    /// (image id, unix seconds): kept images to give a deprecation time.
    deprecate: Vec<(String, i64)>,
    deregister: Vec<Image>,
    protected: Vec<Image>,
}

/// Unix seconds of an EC2 timestamp (`2026-11-26T10:00:00.000Z`).
fn parse_time(s: Option<&str>) -> Option<i64> {
    s.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp())
}

fn plan(mut images: Vec<Image>, referenced: &BTreeSet<String>, retention: &Retention, now: i64) -> Plan {
    // Newest first. An image without a readable creation date sorts as newest: what cannot be dated is kept.
    images.sort_by_key(|i| {
        (
            std::cmp::Reverse(parse_time(i.creation_date()).unwrap_or(i64::MAX)),
            i.image_id().unwrap_or_default().to_string(),
        )
    });
    let keep = usize::try_from(retention.keep).unwrap_or(usize::MAX);
    let mut plan = Plan::default();
    for image in images {
        if image.image_id().is_some_and(|id| referenced.contains(id)) {
            plan.protected.push(image);
        } else if plan.keep.len() < keep {
            if let Some(at) = retention
                .deprecate_after_days
                .and_then(|days| deprecate_at(&image, days, now))
            {
                plan.deprecate
                    .push((image.image_id().unwrap_or_default().to_string(), at));
            }
            plan.keep.push(image);
        } else {
            plan.deregister.push(image);
        }
    }
    plan
}

/// When a kept image should be deprecated: `days` after its creation, but not in the past (EC2 refuses that):
/// at least a minute from now. Whole minutes, as EC2 rounds anyway. `None` when the image is already deprecated
/// by then, or has no readable creation date.
fn deprecate_at(image: &Image, days: u32, now: i64) -> Option<i64> {
    let created = parse_time(image.creation_date())?;
    let wanted = (created + i64::from(days) * 86_400).max(now + 60);
    let at = wanted.div_euclid(60) * 60 + if wanted.rem_euclid(60) == 0 { 0 } else { 60 };
    match parse_time(image.deprecation_time()) {
        Some(existing) if existing <= at => None,
        _ => Some(at),
    }
}

#[cfg(test)]
mod tests;
