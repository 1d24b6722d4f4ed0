//! publish: after a passed test, hands the new image over in every region (tag `ami-pipeline:state=released`),
//! then points the recipe's SSM parameters and launch template default versions at it.
//!
//! Safe to repeat: an image already released is not tagged again, a parameter already holding the image id is
//! not written, and a launch template whose default version already launches the image gets no new version.
//!
//! Never backwards: a parameter or default version that points at a newer release (see [`order`]) is left there
//! and reported as `skipped`, unless the release event said `force`. SSM and EC2 offer no compare-and-swap for
//! these writes, so each is check, write, re-read, and repair once: a value that appeared between the write and the
//! re-read is kept when it is newer, and written over (once) when it is older.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{LaunchTemplateVersion, RequestLaunchTemplateData};
use aws_sdk_ssm::types::ParameterType;

use ami_core::aws::clients::{Ec2Clients, SsmClients};
use ami_core::aws::ec2::{ImageProgress, image_progress};
use ami_core::aws::error::{Error, Result, SdkResultExt};
use ami_core::aws::lifecycle::{
    self, IMAGE_DATA_TYPE, KeptNewer, Outcome, PublishOutput, PublishedLaunchTemplate, PublishedParameter,
    PublishedRegion,
};
use ami_core::definition::{self, StepDef};
use ami_core::model::steps::{Status, StepRequest};
use ami_core::step::Step;
use ami_core::{aws::tags, model::naming};
use ami_core::{model::recipe::LaunchTemplateRef, validate::check_id, validate::check_region};

pub mod order;
use order::Rank;

/// Clients, built once per process; publish works in every region of the run.
pub struct Deps {
    pub ec2: Ec2Clients,
    pub ssm: SsmClients,
    /// Waits between read-backs of a parameter just written (SSM validates `aws:ec2:image` asynchronously).
    pub confirm_waits: Vec<std::time::Duration>,
}

impl Deps {
    pub fn from_config(config: &ami_core::aws::clients::SdkConfig) -> Self {
        Deps {
            ec2: Ec2Clients::from_config(config),
            ssm: SsmClients::from_config(config),
            confirm_waits: [1, 2, 4, 8].map(std::time::Duration::from_secs).to_vec(),
        }
    }
}

impl Step for Deps {
    type Output = PublishOutput;
    const DEF: &'static StepDef = &definition::PUBLISH;

    async fn start(&self, req: &StepRequest, _now: i64) -> Result<PublishOutput> {
        let targets = plan(req)?;
        publish(self, req, &targets).await
    }
}

/// One region's image and the launch templates that live in that region.
#[derive(Debug)]
struct Target<'a> {
    region: &'a str,
    image_id: &'a str,
    /// With their index in `recipe.publish.launch_templates`, for errors.
    launch_templates: Vec<(usize, &'a LaunchTemplateRef)>,
}

/// Checks everything publish relies on before any call, so a bad input changes nothing.
fn plan(req: &StepRequest) -> Result<Vec<Target<'_>>> {
    let run = &req.run;
    let images = &req.steps.copy()?.images;
    if images.is_empty() {
        return Err(Error::invalid(
            "input.steps.copy.images",
            "required here: pass the image of every region (the copy step's output)",
        ));
    }
    let expected = &run.regions;
    let mut seen = BTreeSet::new();
    for (i, image) in images.iter().enumerate() {
        let field = format!("input.steps.copy.images[{i}]");
        check_region(&format!("{field}.region"), &image.region)?;
        check_id(&format!("{field}.image_id"), "ami-", &image.image_id)?;
        if !expected.contains(&image.region) {
            return Err(Error::invalid(
                format!("{field}.region"),
                format!("`{}` is not one of the run's regions", image.region),
            ));
        }
        if !seen.insert(image.region.as_str()) {
            return Err(Error::invalid(
                format!("{field}.region"),
                format!("region `{}` is listed twice", image.region),
            ));
        }
    }
    // Publishing in some regions only would leave the regions pointing at different releases.
    if let Some(missing) = expected.iter().find(|r| !seen.contains(r.as_str())) {
        return Err(Error::invalid(
            "input.steps.copy.images",
            format!("no image for region `{missing}`"),
        ));
    }

    let home = images
        .iter()
        .find(|i| i.region == run.region)
        .ok_or_else(|| Error::invalid("input.steps.copy.images", "no image for the run's region"))?;
    // A rerun's image passed its test in the attempt it was adopted from (the trigger adopts only a `tested` image);
    // a recipe that turns the test off has no test step; otherwise only the image that passed is published.
    if let Some(adopted) = &run.adopted {
        if adopted.image.image_id != home.image_id {
            return Err(Error::invalid(
                "input.run.adopted.image.image_id",
                format!(
                    "the rerun adopted {} but the home region's image is {}",
                    naming::preview(&adopted.image.image_id),
                    home.image_id
                ),
            ));
        }
    } else if run.recipe.test.enabled {
        let test = req.steps.test_launch()?;
        if test.progress.status != Status::Ready {
            return Err(Error::invalid(
                "input.steps.test_launch.status",
                "the test has not passed: publish runs only after a passed test",
            ));
        }
        if test.image_id != home.image_id {
            return Err(Error::invalid(
                "input.steps.test_launch.image_id",
                format!(
                    "the test ran {} but the home region's image is {}",
                    naming::preview(&test.image_id),
                    home.image_id
                ),
            ));
        }
    }

    // `run.regions` order (the copy step's is the same), whatever order the images came in.
    let mut targets: Vec<Target> = expected
        .iter()
        .filter_map(|r| images.iter().find(|i| &i.region == r))
        .map(|i| Target {
            region: &i.region,
            image_id: &i.image_id,
            launch_templates: Vec::new(),
        })
        .collect();
    for (i, lt) in run.recipe.publish.launch_templates.iter().enumerate() {
        let region = lt.region.as_deref().unwrap_or(&run.region);
        let target = targets.iter_mut().find(|t| t.region == region).ok_or_else(|| {
            Error::invalid(
                format!("recipe.publish.launch_templates[{i}].region"),
                format!("no image in `{region}`: add it to distribution.regions"),
            )
        })?;
        target.launch_templates.push((i, lt));
    }
    Ok(targets)
}

async fn publish(deps: &Deps, req: &StepRequest, targets: &[Target<'_>]) -> Result<PublishOutput> {
    // Read every launch template's default version first: a template that does not exist fails the step
    // before anything has changed.
    let mut defaults = Vec::new();
    for t in targets {
        let ec2 = deps.ec2.get(t.region);
        let mut here = Vec::new();
        for (i, lt) in &t.launch_templates {
            here.push(current_default(&ec2, *i, lt, t.region).await?);
        }
        defaults.push(here);
        check_parameter_types(&deps.ssm.get(t.region), req, t.region).await?;
    }
    // Hand over every image before anything points at it: cleanup removes only candidates, so a failure after
    // this point can never leave a parameter or launch template pointing at a deregistered image.
    for t in targets {
        release(&deps.ec2.get(t.region), req, t.image_id).await?;
    }
    let description = format!(
        "ami-pipeline {} {} ({})",
        req.run.pipeline, req.run.release.version, req.execution.name
    );
    let mut regions = Vec::new();
    for (t, defaults) in targets.iter().zip(defaults) {
        let ssm = deps.ssm.get(t.region);
        let ec2 = deps.ec2.get(t.region);
        let ours = Ours::new(req, &ec2);
        let mut parameters = Vec::new();
        for name in &req.run.recipe.publish.ssm_parameters {
            let write = ParameterWrite {
                name,
                image_id: t.image_id,
                description: &description,
                confirm_waits: &deps.confirm_waits,
            };
            parameters.push(put_parameter(&ssm, &ours, &write).await?);
        }
        let mut launch_templates = Vec::new();
        for ((_, lt), current) in t.launch_templates.iter().zip(defaults) {
            let token = naming::client_token(
                &req.execution.name,
                "publish-lt",
                &format!("{}/{}", t.region, lt.id_or_name),
            );
            let version = NewVersion {
                id_or_name: &lt.id_or_name,
                image_id: t.image_id,
                description: &description,
                client_token: &token,
            };
            launch_templates.push(new_default_version(&ec2, &ours, &current, &version).await?);
        }
        regions.push(PublishedRegion {
            region: t.region.to_string(),
            image_id: t.image_id.to_string(),
            parameters,
            launch_templates,
        });
    }
    Ok(PublishOutput {
        release: req.run.release.version.clone(),
        regions,
    })
}

async fn current_default(
    ec2: &aws_sdk_ec2::Client,
    index: usize,
    lt: &LaunchTemplateRef,
    region: &str,
) -> Result<LaunchTemplateVersion> {
    lifecycle::launch_template_default(ec2, &lt.id_or_name)
        .await?
        .ok_or_else(|| {
            Error::invalid(
                format!("recipe.publish.launch_templates[{index}].id_or_name"),
                format!(
                    "launch template `{}` does not exist in {region}",
                    naming::preview(&lt.id_or_name)
                ),
            )
        })
}

/// Tags the image `released` unless it already is. Refuses an image that is not this run's: publishing someone
/// else's image would hand it to every consumer of the parameters.
async fn release(ec2: &aws_sdk_ec2::Client, req: &StepRequest, image_id: &str) -> Result<()> {
    let image = ami_core::aws::ec2::describe_image(ec2, image_id)
        .await?
        .ok_or_else(|| Error::ResourceGone(format!("image {image_id} no longer exists")))?;
    match image_progress(Some(&image)) {
        ImageProgress::Available => {}
        ImageProgress::Failed(why) => return Err(Error::ImageFailed(why)),
        ImageProgress::Pending => {
            return Err(Error::invalid(
                "input.steps.copy.images",
                format!("image {image_id} is not available yet"),
            ));
        }
    }
    let tags = image.tags();
    for (key, want) in [
        (tags::PIPELINE, req.run.pipeline.as_str()),
        (tags::EXECUTION, req.execution.name.as_str()),
    ] {
        if let Some(found) = tags::get(tags, key)
            && found != want
            && !(key == tags::EXECUTION && adopted_by_rerun(req, tags))
        {
            return Err(Error::Conflict(format!(
                "image {image_id} has {key}={found}, not {want}: it is not this run's image"
            )));
        }
    }
    if tags::get(tags, tags::STATE) == Some(tags::STATE_RELEASED) {
        return Ok(());
    }
    ec2.create_tags()
        .resources(image_id)
        .tags(tags::tag(tags::STATE, tags::STATE_RELEASED))
        .send()
        .await
        .aws("CreateTags")?;
    Ok(())
}

/// An image an earlier attempt kept and this rerun adopted (`ami_core::aws::rerun`): made by another execution, but
/// `tested` for this pipeline, release and recipe hash. Only a rerun (`run.adopted`) accepts one.
fn adopted_by_rerun(req: &StepRequest, image_tags: &[aws_sdk_ec2::types::Tag]) -> bool {
    req.run.adopted.is_some()
        && tags::get(image_tags, tags::STATE) == Some(tags::STATE_TESTED)
        && tags::get(image_tags, tags::RELEASE) == Some(req.run.release.version.as_str())
        && tags::get(image_tags, tags::RECIPE_HASH) == Some(ami_core::aws::rerun::recipe_hash(&req.run.recipe).as_str())
}

/// An existing parameter of another data type can never take the image ([`IMAGE_DATA_TYPE`]) and would make every
/// write fail after the images are released, so it is refused before anything changes, with the fix. The trigger's
/// preflight refuses it before the build; this catches one made since.
async fn check_parameter_types(ssm: &aws_sdk_ssm::Client, req: &StepRequest, region: &str) -> Result<()> {
    for (i, name) in req.run.recipe.publish.ssm_parameters.iter().enumerate() {
        if let Some((_, data_type)) = lifecycle::parameter(ssm, name).await?
            && data_type != IMAGE_DATA_TYPE
        {
            return Err(Error::invalid(
                format!("recipe.publish.ssm_parameters[{i}]"),
                format!(
                    "`{name}` exists in {region} with data type `{data_type}`, and a parameter's data type cannot \
                     change to {IMAGE_DATA_TYPE}: delete it (or name a new parameter) and run again; nothing was \
                     published"
                ),
            ));
        }
    }
    Ok(())
}

/// This run's side of the comparison: its release, and whether the event forces publishing over a newer one.
struct Ours<'a> {
    rank: Rank,
    force: bool,
    pipeline: &'a str,
    /// The region's EC2, to read the image a pointer holds.
    ec2: &'a aws_sdk_ec2::Client,
}

impl<'a> Ours<'a> {
    fn new(req: &'a StepRequest, ec2: &'a aws_sdk_ec2::Client) -> Self {
        let release = &req.run.release;
        Ours {
            rank: Rank {
                release: Some(release.version.clone()),
                time: release.time.as_deref().and_then(lifecycle::unix_seconds),
            },
            force: release.force,
            pipeline: &req.run.pipeline,
            ec2,
        }
    }

    /// `Some` when `image_id` is a newer release than ours and the event did not force: leave it. An image that is
    /// gone or unreadable as ours is not newer.
    async fn kept_newer(&self, image_id: &str) -> Result<Option<KeptNewer>> {
        if self.force || !image_id.starts_with("ami-") {
            return Ok(None);
        }
        let Some(image) = ami_core::aws::ec2::describe_image(self.ec2, image_id).await? else {
            return Ok(None);
        };
        Ok(self.rank.newer(&Rank::of_image(&image, self.pipeline), image_id))
    }
}

struct ParameterWrite<'a> {
    name: &'a str,
    image_id: &'a str,
    description: &'a str,
    confirm_waits: &'a [std::time::Duration],
}

/// Check, write, re-read, repair once (PutParameter has no compare-and-swap; see the module comment).
async fn put_parameter(
    ssm: &aws_sdk_ssm::Client,
    ours: &Ours<'_>,
    w: &ParameterWrite<'_>,
) -> Result<PublishedParameter> {
    let mut out = PublishedParameter {
        name: w.name.to_string(),
        outcome: Outcome::default(),
    };
    let before = lifecycle::parameter_value(ssm, w.name).await?;
    if before.as_deref() == Some(w.image_id) {
        return Ok(out);
    }
    if let Some(current) = &before {
        out.outcome.skipped = ours.kept_newer(current).await?;
        if out.outcome.skipped.is_some() {
            return Ok(out);
        }
    }
    write_parameter(ssm, w).await?;
    let Some(other) = confirm_parameter(ssm, w, before.as_deref()).await? else {
        out.outcome.changed = true;
        return Ok(out);
    };
    // Another publish wrote between our write and our re-read. A newer one stands; an older one is undone, once.
    out.outcome.skipped = ours.kept_newer(&other).await?;
    if out.outcome.skipped.is_some() {
        return Ok(out);
    }
    write_parameter(ssm, w).await?;
    if let Some(again) = confirm_parameter(ssm, w, Some(&other)).await? {
        return Err(Error::Transient(format!(
            "SSM parameter `{}` changed to {again} again right after publish repaired it: publishing again",
            w.name
        )));
    }
    out.outcome.changed = true;
    out.outcome.repaired = true;
    Ok(out)
}

async fn write_parameter(ssm: &aws_sdk_ssm::Client, w: &ParameterWrite<'_>) -> Result<()> {
    ssm.put_parameter()
        .name(w.name)
        .value(w.image_id)
        .r#type(ParameterType::String)
        .data_type(IMAGE_DATA_TYPE)
        .overwrite(true)
        .description(w.description)
        .send()
        .await
        .aws("PutParameter")?;
    Ok(())
}

/// Re-reads a parameter just written until it holds our image (`None`), or a value that is neither ours nor the
/// one we replaced (`Some`, another publish's).
async fn confirm_parameter(
    ssm: &aws_sdk_ssm::Client,
    w: &ParameterWrite<'_>,
    replaced: Option<&str>,
) -> Result<Option<String>> {
    // "A successful HTTP 200 response does not guarantee that your parameter was successfully created or
    // updated": aws:ec2:image values are validated asynchronously (PutParameter API reference). Read it back.
    let mut waits = w.confirm_waits.iter();
    loop {
        let now = lifecycle::parameter_value(ssm, w.name).await?;
        match now.as_deref() {
            Some(v) if v == w.image_id => return Ok(None),
            Some(v) if Some(v) != replaced => return Ok(Some(v.to_string())),
            _ => {}
        }
        let Some(wait) = waits.next() else {
            // Not applied yet, or refused by SSM's validation: the step's retry writes and checks again
            // (publish is idempotent); if SSM keeps refusing, the run fails with this message.
            return Err(Error::Transient(format!(
                "SSM parameter `{}` does not hold {} after PutParameter: SSM validates {IMAGE_DATA_TYPE} values \
                 asynchronously, and refuses an image the account cannot use",
                w.name, w.image_id
            )));
        };
        tokio::time::sleep(*wait).await;
    }
}

struct NewVersion<'a> {
    id_or_name: &'a str,
    image_id: &'a str,
    description: &'a str,
    client_token: &'a str,
}

/// Creates a launch template version that launches the image and makes it the default, unless the current
/// default already launches it or launches a newer release. Then re-reads the default and repairs it once, as for
/// parameters (ModifyLaunchTemplate has no compare-and-swap either).
async fn new_default_version(
    ec2: &aws_sdk_ec2::Client,
    ours: &Ours<'_>,
    current: &LaunchTemplateVersion,
    new: &NewVersion<'_>,
) -> Result<PublishedLaunchTemplate> {
    let id_or_name = new.id_or_name;
    let current_version = current
        .version_number()
        .ok_or_else(|| Error::Internal(format!("launch template {id_or_name}: default version has no number")))?;
    let mut out = PublishedLaunchTemplate {
        id_or_name: id_or_name.to_string(),
        version: current_version,
        outcome: Outcome::default(),
    };
    let current_image = current.launch_template_data().and_then(|d| d.image_id());
    if current_image == Some(new.image_id) {
        return Ok(out);
    }
    if let Some(image) = current_image {
        out.outcome.skipped = ours.kept_newer(image).await?;
        if out.outcome.skipped.is_some() {
            return Ok(out);
        }
    }
    let by_id = lifecycle::is_launch_template_id(id_or_name);
    let id = by_id.then(|| id_or_name.to_string());
    let name = (!by_id).then(|| id_or_name.to_string());
    // The source is the default just read, by number: everything else in it (instance type, network, user data)
    // carries over, and a default someone changed meanwhile is not silently replaced by an older base.
    let created = ec2
        .create_launch_template_version()
        .set_launch_template_id(id.clone())
        .set_launch_template_name(name.clone())
        .source_version(current_version.to_string())
        .version_description(new.description)
        .launch_template_data(RequestLaunchTemplateData::builder().image_id(new.image_id).build())
        // A retry after a lost response gets the same version back instead of a second one.
        .client_token(new.client_token)
        .send()
        .await
        .aws("CreateLaunchTemplateVersion")?;
    let version = created
        .launch_template_version()
        .and_then(|v| v.version_number())
        .ok_or_else(|| Error::Internal("CreateLaunchTemplateVersion returned no version number".into()))?;
    let set_default = || {
        ec2.modify_launch_template()
            .set_launch_template_id(id.clone())
            .set_launch_template_name(name.clone())
            .default_version(version.to_string())
            .send()
    };
    set_default().await.aws("ModifyLaunchTemplate")?;
    out.version = version;
    let Some((other_version, other_image)) = other_default(ec2, id_or_name, version, new.image_id).await? else {
        out.outcome.changed = true;
        return Ok(out);
    };
    // Another publish set the default between our write and our re-read: a newer release stands, an older one is
    // undone, once.
    if let Some(image) = &other_image {
        out.outcome.skipped = ours.kept_newer(image).await?;
        if out.outcome.skipped.is_some() {
            out.version = other_version;
            return Ok(out);
        }
    }
    set_default().await.aws("ModifyLaunchTemplate")?;
    if let Some((again, _)) = other_default(ec2, id_or_name, version, new.image_id).await? {
        return Err(Error::Transient(format!(
            "launch template {id_or_name}: default version changed to {again} again right after publish repaired \
             it: publishing again"
        )));
    }
    out.outcome.changed = true;
    out.outcome.repaired = true;
    Ok(out)
}

/// The default version now, when it is not ours (neither our version nor one launching our image).
async fn other_default(
    ec2: &aws_sdk_ec2::Client,
    id_or_name: &str,
    ours: i64,
    image_id: &str,
) -> Result<Option<(i64, Option<String>)>> {
    let now = lifecycle::launch_template_default(ec2, id_or_name)
        .await?
        .ok_or_else(|| Error::ResourceGone(format!("launch template {id_or_name} was deleted during publish")))?;
    let image = now.launch_template_data().and_then(|d| d.image_id());
    if now.version_number() == Some(ours) || image == Some(image_id) {
        return Ok(None);
    }
    Ok(Some((
        now.version_number().unwrap_or_default(),
        image.map(String::from),
    )))
}

#[cfg(test)]
mod tests;
