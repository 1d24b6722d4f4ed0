//! cleanup: removes everything one execution created and did not hand over, in every region of the run, found
//! by the `ami-pipeline:execution` tag, so it works whatever step failed:
//!
//! 1. its builder and test instances (any state but terminated) are terminated;
//! 2. its images not tagged `state=released` are deregistered with their snapshots, except what a rerun can adopt
//!    (`ami_core::aws::rerun`): the run's image that passed its test (`state=tested`, this recipe's hash) and, once that
//!    is kept (or the run itself adopted one), the copies that became available, tagged `state=tested` here;
//! 3. its remaining snapshots not used by a released image are deleted.
//!
//! A snapshot EC2 will not delete (DeregisterImage's per-snapshot error code, then a DeleteSnapshot) is reported in
//! `snapshots_left`: every snapshot the pipeline makes carries the tags retire's orphan sweep looks for, so a later
//! run of the pipeline removes it; one without them fails the cleanup, naming it (`ami_core::aws::ec2::settle`).
//!
//! Released images (and their snapshots) were handed over by publish and are left to retire. Running cleanup
//! twice is success: what is already gone counts as removed.
//!
//! Input: either the state the state machine carries (the step envelope `{action, execution, run, steps}` with
//! any action, plus the Catch's `error`), or a minimal `{"execution": {...}, "regions": [...]}`. The regions
//! cleaned are the run's (`run.regions`, home region first), `region` and `regions`, together. Only `execution`,
//! the regions and the recipe's source are used; `steps` and `error` are accepted unread (any shape, including
//! none), so a half-written state from a failed step cannot stop the cleanup.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{Filter, Image, Instance, Snapshot};
use serde::Deserialize;
use serde_json::Value;

use ami_core::aws::ec2::Deletion;
use ami_core::aws::error::{Error, Result, SdkResultExt};
use ami_core::aws::lifecycle::{CleanedRegion, CleanupOutput};
use ami_core::model::steps::{ExecutionRef, Run};
use ami_core::step::Clients;
use ami_core::{aws::tags, model::input, model::naming};
use ami_core::{model::recipe::Source, validate::check_region};

/// Clients, built once per process; cleanup works in every region of the run.
pub struct Deps(pub Clients);

/// What cleanup accepts; see the module docs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupInput {
    pub execution: ExecutionRef,
    #[serde(default)]
    pub run: Option<Run>,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub action: Option<Value>,
    #[serde(default)]
    pub steps: Option<Value>,
    #[serde(default)]
    pub error: Option<Value>,
}

pub async fn handle(deps: &Deps, event: Value) -> Result<CleanupOutput> {
    let req: CleanupInput = input::parse_value("input", event)?;
    let execution = req.execution.name.as_str();
    // Every look-up is scoped by this name: one that is not a valid execution name could match what is not ours.
    if execution.is_empty() || naming::execution_name(execution) != execution {
        return Err(Error::invalid(
            "input.execution.name",
            "must be a Step Functions execution name: 1-80 letters, digits, `-` or `_`",
        ));
    }
    let regions = regions(&req)?;
    // A recipe that snapshots a hand-kept instance: never terminate that one, whatever its tags say.
    let source_instance = req.run.as_ref().and_then(|r| match &r.recipe.source {
        Source::Instance(i) => Some(i.id.clone()),
        Source::Image(_) => None,
    });
    // Regions come home first, so whether the tested image was kept is known before the copies are looked at.
    let hash = req.run.as_ref().map(|r| ami_core::aws::rerun::recipe_hash(&r.recipe));
    let home = req.run.as_ref().map(|r| r.region.as_str());
    let mut home_kept = req.run.as_ref().is_some_and(|r| r.adopted.is_some());
    let mut out = Vec::new();
    for region in regions {
        ami_core::aws::runtime::ensure_time_left(ami_core::aws::runtime::CALL_BUDGET, &format!("cleanup in {region}"))?;
        let ec2 = deps.0.ec2.get(&region);
        let keep = match &hash {
            Some(hash) if home == Some(region.as_str()) => Keep::Tested(hash),
            Some(hash) if home_kept => Keep::AvailableCopies(hash),
            _ => Keep::Nothing,
        };
        let cleaned = clean_region(&ec2, execution, source_instance.as_deref(), keep, region).await?;
        home_kept |= home == Some(cleaned.region.as_str()) && !cleaned.tested_kept.is_empty();
        out.push(cleaned);
    }
    Ok(CleanupOutput {
        execution: execution.to_string(),
        regions: out,
    })
}

/// The regions to clean, checked, each once, the run's home region first. Only the regions are checked, not the
/// whole recipe: a recipe a newer release would reject must still be cleaned up after.
fn regions(req: &CleanupInput) -> Result<Vec<String>> {
    let mut named: Vec<(String, &str)> = Vec::new();
    if let Some(run) = &req.run {
        named.push(("input.run.region".into(), &run.region));
        for (i, r) in run.regions.iter().enumerate() {
            named.push((format!("input.run.regions[{i}]"), r));
        }
    }
    if let Some(r) = &req.region {
        named.push(("input.region".into(), r));
    }
    for (i, r) in req.regions.iter().enumerate() {
        named.push((format!("input.regions[{i}]"), r));
    }
    if named.is_empty() {
        return Err(Error::invalid(
            "input.regions",
            "give `run` (its regions are cleaned) or `regions`",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (field, r) in named {
        check_region(&field, r)?;
        if seen.insert(r) {
            out.push(r.to_string());
        }
    }
    Ok(out)
}

fn is_ours(tag_list: &[aws_sdk_ec2::types::Tag], execution: &str) -> bool {
    tags::get(tag_list, tags::EXECUTION) == Some(execution)
}

/// What a region's cleanup keeps for a rerun (`ami_core::aws::rerun`), with the run's recipe hash.
enum Keep<'a> {
    Nothing,
    /// The run's region: the image that passed its test (test-launch tagged it `tested` with the hash).
    Tested(&'a str),
    /// A copy region, once the tested image is kept: the copies that are available, tagged `tested` here.
    AvailableCopies(&'a str),
}

impl Keep<'_> {
    fn keeps(&self, image: &Image) -> bool {
        let t = image.tags();
        let available = ami_core::aws::ec2::image_progress(Some(image)) == ami_core::aws::ec2::ImageProgress::Available;
        match self {
            Keep::Nothing => false,
            Keep::Tested(hash) => {
                available
                    && tags::get(t, tags::STATE) == Some(tags::STATE_TESTED)
                    && tags::get(t, tags::RECIPE_HASH) == Some(*hash)
            }
            Keep::AvailableCopies(_) => available,
        }
    }
}

async fn clean_region(
    ec2: &aws_sdk_ec2::Client,
    execution: &str,
    source_instance: Option<&str>,
    keep: Keep<'_>,
    region: String,
) -> Result<CleanedRegion> {
    let mine = || vec![tags::filter(tags::EXECUTION, execution)];

    // 1. Instances first: a running builder or test instance keeps volumes, and costs money, until it is gone.
    let instances = ami_core::aws::ec2::find_instances(ec2, mine()).await?;
    let instances_terminated = instances_to_terminate(&instances, execution, source_instance);
    ami_core::aws::ec2::terminate(ec2, &instances_terminated).await?;

    // 2. Images not handed over, with their snapshots.
    let images: Vec<Image> = ami_core::aws::ec2::own_images(ec2, mine())
        .await?
        .into_iter()
        .filter(|i| is_ours(i.tags(), execution) && i.image_id().is_some())
        .collect();
    let (released, candidates): (Vec<Image>, Vec<Image>) = images
        .into_iter()
        .partition(|i| tags::get(i.tags(), tags::STATE) == Some(tags::STATE_RELEASED));
    // Someone protected a candidate on purpose (EnableImageDeregistrationProtection): keep it and its snapshots.
    let (kept, candidates): (Vec<Image>, Vec<Image>) = candidates
        .into_iter()
        .partition(ami_core::aws::ec2::has_deregistration_protection);
    for image in &kept {
        lambda_runtime::tracing::warn!(image = ?image.image_id(), "deregistration protection on: candidate kept");
    }
    let (tested, candidates): (Vec<Image>, Vec<Image>) = candidates.into_iter().partition(|i| keep.keeps(i));
    if let Keep::AvailableCopies(hash) = keep {
        let ids: Vec<String> = tested.iter().filter_map(|i| i.image_id()).map(String::from).collect();
        if !ids.is_empty() {
            ec2.create_tags()
                .set_resources(Some(ids))
                .tags(tags::tag(tags::STATE, tags::STATE_TESTED))
                .tags(tags::tag(tags::RECIPE_HASH, hash))
                .send()
                .await
                .aws("CreateTags")?;
        }
    }
    for image in &tested {
        lambda_runtime::tracing::info!(image = ?image.image_id(), "tested image kept for a rerun");
    }
    let mut deletion = Deletion::default();
    for image in &candidates {
        // One call per image: stop before the Lambda timeout, the retry resumes (what is gone stays gone).
        ami_core::aws::runtime::ensure_time_left(ami_core::aws::runtime::CALL_BUDGET, "deregistering candidates")?;
        deletion.extend(ami_core::aws::ec2::deregister_with_snapshots(ec2, image).await?);
    }

    // 3. Snapshots left over (a failure before register, or one register did not use), except a kept image's or
    // one another AMI uses; those DeregisterImage and a DeleteSnapshot could not delete are already reported.
    let in_use: BTreeSet<String> = released
        .iter()
        .chain(&kept)
        .chain(&tested)
        .flat_map(snapshots_of)
        .chain(deletion.in_use.iter().cloned())
        .chain(deletion.deleted.iter().cloned())
        .chain(deletion.left.iter().map(|l| l.snapshot_id.clone()))
        .collect();
    let leftover: Vec<String> = own_snapshots(ec2, mine())
        .await?
        .iter()
        .filter(|s| is_ours(s.tags(), execution))
        .filter_map(|s| s.snapshot_id())
        .filter(|id| !in_use.contains(*id))
        .map(String::from)
        .collect();
    let swept = ami_core::aws::ec2::delete_snapshots(ec2, &leftover).await?;
    deletion.extend(ami_core::aws::ec2::settle(ec2, swept).await?);

    Ok(CleanedRegion {
        region,
        instances_terminated,
        images_deregistered: candidates
            .iter()
            .filter_map(|i| i.image_id())
            .map(String::from)
            .collect(),
        snapshots_deleted: deletion.deleted,
        snapshots_left: deletion.left,
        released_kept: released.iter().filter_map(|i| i.image_id()).map(String::from).collect(),
        tested_kept: tested.iter().filter_map(|i| i.image_id()).map(String::from).collect(),
    })
}

/// The execution's builder and test instances. The role is checked too, so an instance the pipeline did not
/// launch is never terminated, even if it carries the execution tag.
fn instances_to_terminate(instances: &[Instance], execution: &str, source_instance: Option<&str>) -> Vec<String> {
    let roles = [tags::Role::Builder.as_str(), tags::Role::TestInstance.as_str()];
    instances
        .iter()
        .filter(|i| is_ours(i.tags(), execution))
        .filter(|i| tags::get(i.tags(), tags::ROLE).is_some_and(|r| roles.contains(&r)))
        .filter_map(|i| i.instance_id())
        .filter(|id| Some(*id) != source_instance)
        .map(String::from)
        .collect()
}

fn snapshots_of(image: &Image) -> Vec<String> {
    image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
        .map(String::from)
        .collect()
}

/// Our own snapshots (owner `self`) matching `filters`, all pages.
async fn own_snapshots(ec2: &aws_sdk_ec2::Client, filters: Vec<Filter>) -> Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = ec2
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(filters.clone()))
            .set_next_token(token)
            .send()
            .await
            .aws("DescribeSnapshots")?;
        out.extend(page.snapshots().iter().cloned());
        token = page.next_token().filter(|t| !t.is_empty()).map(String::from);
        if token.is_none() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests;
