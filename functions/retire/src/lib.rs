//! retire: per region, keeps the pipeline's newest `retention.keep` released images, gives kept images a
//! deprecation time `deprecate_after_days` after their creation, and deregisters the older ones with their
//! snapshots.
//!
//! An image that a recipe SSM parameter or launch template default version points at is protected: it is never
//! deprecated or deregistered, and it does not take one of the `keep` places. Only images tagged with this
//! pipeline and `state=released` are considered; candidates belong to their execution (and to cleanup).

use std::collections::BTreeSet;

use aws_sdk_ec2::types::Image;
use serde_json::Value;

use ami_core::clients::{Ec2Clients, SsmClients};
use ami_core::error::{Error, Result, aws_code};
use ami_core::lifecycle::{self, Deprecation, RetireOutput, RetiredRegion};
use ami_core::recipe::Retention;
use ami_core::step::Step;
use ami_core::steps::{Run, StepRequest, now};
use ami_core::tags;

/// Clients, built once per process; retire works in every region of the pipeline.
pub struct Deps {
    pub ec2: Ec2Clients,
    pub ssm: SsmClients,
}

impl Deps {
    pub fn from_config(config: &ami_core::clients::SdkConfig) -> Self {
        Deps {
            ec2: Ec2Clients::from_config(config),
            ssm: SsmClients::from_config(config),
        }
    }
}

impl Step for Deps {
    type Output = RetireOutput;
    const NAME: &'static str = "retire";
    const ACTIONS: &'static str = "`start`";

    async fn start(&self, req: &StepRequest) -> Result<RetireOutput> {
        // The recipe was validated by the trigger and is not validated again, but deregistering cannot be
        // undone: with `keep: 0` every unprotected image would go, so that one rule is checked here too.
        if req.run.recipe.retention.keep == 0 {
            return Err(Error::invalid(
                "recipe.retention.keep",
                "must be at least 1 (the image just built)",
            ));
        }
        retire(self, &req.run, now()).await
    }
}

/// The state machine's input, answered as the deployed function answers it.
pub async fn handle(deps: &Deps, event: Value) -> Result<RetireOutput> {
    ami_core::step::handle(deps, event).await
}

/// Retires in every region of the pipeline, home region first.
pub async fn retire(deps: &Deps, run: &Run, now: i64) -> Result<RetireOutput> {
    let mut regions = Vec::new();
    for region in &run.regions {
        ami_core::runtime::ensure_time_left(ami_core::runtime::CALL_BUDGET, &format!("retire in {region}"))?;
        regions.push(retire_region(deps, run, region, now).await?);
    }
    Ok(RetireOutput { regions })
}

async fn retire_region(deps: &Deps, run: &Run, region: &str, now: i64) -> Result<RetiredRegion> {
    let ec2 = deps.ec2.get(region);
    let found = ami_core::ec2::own_images(
        &ec2,
        vec![
            tags::filter(tags::PIPELINE, &run.pipeline),
            tags::filter(tags::STATE, tags::STATE_RELEASED),
        ],
    )
    .await?;
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
    for (image_id, at) in &plan.deprecate {
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
            Err(e) => return Err(ami_core::error::from_sdk("EnableImageDeprecation", e)),
        }
    }
    // Deregistration protection is the owner saying "keep this one": skip and report it, never fail a run that
    // has already published.
    let (locked, deregister): (Vec<Image>, Vec<Image>) = plan
        .deregister
        .iter()
        .cloned()
        .partition(ami_core::ec2::has_deregistration_protection);
    for image in &deregister {
        ami_core::ec2::deregister_with_snapshots(&ec2, image).await?;
    }
    Ok(RetiredRegion {
        region: region.to_string(),
        kept: ids(&plan.keep),
        deprecated,
        deregistered: ids(&deregister),
        protected: ids(&plan.protected),
        deregistration_protected: ids(&locked),
    })
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
        let ssm = deps.ssm.get(region);
        for name in &publish.ssm_parameters {
            out.extend(lifecycle::parameter_value(&ssm, name).await?);
        }
    }
    let ec2 = deps.ec2.get(region);
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
