//! preflight: what can be checked before an image exists, in every region the run touches, before anything is
//! built. Every problem of every region is collected and reported in ONE `AmiPipeline.InvalidInput` error (one
//! problem keeps its own field), so a new user learns in seconds, not 30 minutes into a build, that a region lacks
//! the key, a subnet is wrong or the role may not launch the builder.
//!
//! - Every KMS key the run uses, in its region: exists, enabled, symmetric, customer managed when the image is shared
//!   (`check_key`, DescribeKey).
//! - Home region, when the run builds: the base image resolves and is trusted (`source::resolve`); the subnets and
//!   security groups of build and test exist, and each group is in the VPC of the subnets (DescribeSubnets,
//!   DescribeSecurityGroups); the instance types exist and run the recipe's architecture (DescribeInstanceTypes);
//!   and RunInstances with the builder's settings by DryRun ("Checks whether you have the required permissions for
//!   the action, without actually making the request ... If you have the required permissions, the error response
//!   is DryRunOperation. Otherwise, it is UnauthorizedOperation", RunInstances API reference), which also checks
//!   the instance profile.
//! - Publish's targets, where publish will change them: each launch template of `publish.launch_templates` exists
//!   in its region, which gets the image, and carries the opt-in tag `ami-pipeline:publish=true`
//!   (DescribeLaunchTemplates: the publish role may change only opted-in templates); each parameter of
//!   `publish.ssm_parameters` is under the stack's `PublishParameterPrefix` and, where it exists in a region of the
//!   run, has the data type `aws:ec2:image`, the only one that can take the image (GetParameter, which the trigger
//!   may call on that prefix alone; DescribeParameters also reports the data type but is authorized on `*` only).
//! - Not checked: service quotas (Service Quotas would add a client, a permission and per-quota codes for numbers
//!   that change while the run waits; a limit met at run time is `AmiPipeline.LimitExceeded`, retried), and the test
//!   launch, which needs the image.
//!
//! Also a mode of its own: the event `{"preflight": true, "pipeline": "<name>"}` runs the checks on the stored
//! recipe and starts nothing (`make preflight PIPELINE=<name>`).

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::Filter;
use serde_json::{Value, json};

use ami_core::aws::error::{Error, Result, aws_code};
use ami_core::aws::lifecycle::{self, IMAGE_DATA_TYPE};
use ami_core::model::recipe::{Build, Recipe, Source};
use ami_core::{aws::source, aws::tags, model::naming::preview};

use super::{Deps, check_key, is_aws_ebs_alias, key_uses, load_recipe};

/// One thing that would fail the run: where, which recipe field, and what to do.
#[derive(Debug)]
pub struct Problem {
    pub region: String,
    pub field: String,
    pub message: String,
    /// The check's own error when it has a name of its own (the base image's `SourceNotFound` /
    /// `SourceNotTrusted`): a run with that one problem fails with it, as the build would have.
    pub error: Option<Error>,
}

/// The pipeline a `{"preflight": true, "pipeline": ...}` event names; None for any other event.
pub fn requested(event: &Value) -> Option<Result<String>> {
    if event.get("preflight").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    Some(
        event
            .get("pipeline")
            .and_then(Value::as_str)
            .filter(|p| {
                !p.is_empty()
                    && p.len() <= 40
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
            .map(String::from)
            .ok_or_else(|| {
                Error::invalid(
                    "event.pipeline",
                    "a preflight event names its pipeline: 1-40 of a-z, 0-9, -",
                )
            }),
    )
}

/// The preflight mode: the stored recipe's checks, nothing started. Success is a report; problems are the error.
pub async fn run(deps: &Deps, pipeline: &str) -> Result<Value> {
    let recipe = load_recipe(deps, pipeline).await?;
    recipe.check_sharing_keys(&deps.region)?;
    let checked = check(deps, &recipe).await?;
    Ok(json!({
        "status": "preflight-passed",
        "pipeline": pipeline,
        "regions": recipe.all_regions(&deps.region),
        "checked": checked,
    }))
}

/// Every check; Err listing every problem. Ok: what was checked (for the report).
pub async fn check(deps: &Deps, recipe: &Recipe) -> Result<Vec<String>> {
    let (checked, problems) = find_problems(deps, recipe).await?;
    match problems.as_slice() {
        [] => Ok(checked),
        [_] => {
            let one = problems.into_iter().next().expect("one problem");
            Err(one
                .error
                .unwrap_or_else(|| Error::invalid(&one.field, format!("{} (in {})", one.message, one.region))))
        }
        many => Err(Error::invalid(
            "recipe",
            format!(
                "preflight found {} problems before building: {}",
                many.len(),
                many.iter()
                    .map(|p| format!("[{}] {}: {}", p.region, p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )),
    }
}

/// (what was checked, the problems found). Errors a retry may fix (throttling, 5xx) end the preflight instead.
pub async fn find_problems(deps: &Deps, recipe: &Recipe) -> Result<(Vec<String>, Vec<Problem>)> {
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    let shared = recipe.is_shared();
    for u in key_uses(recipe, &deps.region) {
        // aws/ebs always exists and cannot be disabled; the trigger's role may describe only the stack's keys.
        if !shared && is_aws_ebs_alias(u.key) {
            continue;
        }
        checked.push(format!("{} {}", u.region, u.field));
        if let Err(e) = check_key(&deps.kms.get(u.region), &u, shared).await {
            problems.push(problem(u.region, e)?);
        }
    }
    if let (Source::Image(base), Some(build)) = (&recipe.source, &recipe.build) {
        let home = deps.region.as_str();
        let mut found = Vec::new();
        checked.push(format!("{home} recipe.source.image"));
        let image = match source::resolve(&deps.ec2, &deps.ssm, base, recipe.image.architecture, super::now()).await {
            Ok(image) => Some(image),
            Err(e @ (Error::SourceNotFound(_) | Error::SourceNotTrusted(_))) => {
                found.push(Problem {
                    error: Some(e.clone()),
                    ..at(home, "recipe.source.image", e.to_string())
                });
                None
            }
            Err(e) => return Err(e),
        };
        checked.push(format!("{home} subnets, security groups, instance types"));
        found.extend(network(deps, recipe, build).await?);
        found.extend(instance_types(deps, recipe, build).await?);
        if let Some(image) = image {
            checked.push(format!("{home} RunInstances DryRun (builder)"));
            found.extend(dry_run(deps, recipe, build, &image).await?);
        }
        problems.extend(found);
    }
    launch_templates(deps, recipe, &mut checked, &mut problems).await?;
    parameters(deps, recipe, &mut checked, &mut problems).await?;
    Ok((checked, problems))
}

/// Each launch template publish points at the image: in a region the image is copied to, existing there, and opted
/// in by tag.
async fn launch_templates(
    deps: &Deps,
    recipe: &Recipe,
    checked: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let home = deps.region.as_str();
    let regions = recipe.all_regions(home);
    for (i, lt) in recipe.publish.launch_templates.iter().enumerate() {
        let field = format!("recipe.publish.launch_templates[{i}]");
        let name = preview(&lt.id_or_name);
        let region = lt.region.as_deref().unwrap_or(home);
        if !regions.iter().any(|r| r == region) {
            problems.push(at(
                region,
                &format!("{field}.region"),
                format!(
                    "the image is not copied to `{region}`, so publish has no image there for launch template \
                     `{name}`: add `{region}` to distribution.regions, or name a template in {}",
                    regions.join(", ")
                ),
            ));
            continue;
        }
        checked.push(format!("{region} {field}"));
        let field = format!("{field}.id_or_name");
        match lifecycle::launch_template(&deps.ec2_in(region), &lt.id_or_name).await? {
            None => problems.push(at(
                region,
                &field,
                format!(
                    "launch template `{name}` does not exist in {region}: create it there with the tag {}={} (or \
                     correct the id or name)",
                    tags::PUBLISH_OPT_IN,
                    tags::PUBLISH_OPT_IN_VALUE
                ),
            )),
            Some(t) if tags::get(t.tags(), tags::PUBLISH_OPT_IN) != Some(tags::PUBLISH_OPT_IN_VALUE) => {
                let id = t.launch_template_id().unwrap_or(&lt.id_or_name);
                problems.push(at(
                    region,
                    &field,
                    format!(
                        "launch template `{name}` ({id}) in {region} is not tagged {key}={value}, and publish may change \
                         only templates that opt in: tag it (aws ec2 create-tags --region {region} --resources {id} \
                         --tags Key={key},Value={value}) or remove it from publish.launch_templates",
                        key = tags::PUBLISH_OPT_IN,
                        value = tags::PUBLISH_OPT_IN_VALUE
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Each parameter publish writes: under the stack's `PublishParameterPrefix` (the publish role may write nothing
/// else), and in every region of the run either absent (publish creates it) or of the data type `aws:ec2:image`.
async fn parameters(
    deps: &Deps,
    recipe: &Recipe,
    checked: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let home = deps.region.as_str();
    let prefix = deps.config.publish_parameter_prefix.as_str();
    for (i, name) in recipe.publish.ssm_parameters.iter().enumerate() {
        let field = format!("recipe.publish.ssm_parameters[{i}]");
        if !name.starts_with(&format!("{prefix}/")) {
            problems.push(at(
                home,
                &field,
                format!(
                    "`{name}` is not under the stack's PublishParameterPrefix `{prefix}`, and publish may write only \
                     parameters named `{prefix}/...`: rename it (e.g. `{prefix}{name}`), or deploy the stack with a \
                     PublishParameterPrefix it is under"
                ),
            ));
            continue;
        }
        for region in recipe.all_regions(home) {
            checked.push(format!("{region} {field}"));
            if let Some((_, data_type)) = lifecycle::parameter(&deps.ssm_in(&region), name).await?
                && data_type != IMAGE_DATA_TYPE
            {
                problems.push(at(
                    &region,
                    &field,
                    format!(
                        "`{name}` exists in {region} with data type `{data_type}`, and a parameter cannot be changed \
                         to {IMAGE_DATA_TYPE}, the data type publish writes: delete it there (aws ssm delete-parameter \
                         --region {region} --name {name}) so publish creates it, or name another parameter"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn at(region: &str, field: &str, message: impl Into<String>) -> Problem {
    Problem {
        region: region.into(),
        field: field.into(),
        message: message.into(),
        error: None,
    }
}

/// A check's refusal as a problem; anything else (throttling, 5xx, a bug) ends the preflight.
fn problem(region: &str, e: Error) -> Result<Problem> {
    match e {
        Error::InvalidInput { field, message } => Ok(at(region, &field, message)),
        other => Err(other),
    }
}

/// (field, subnet id) of build and test, in the recipe's order.
fn subnets(recipe: &Recipe, build: &Build) -> Vec<(String, String)> {
    let mut out = with_fallbacks(
        "recipe.build.subnet_id",
        build.subnet_id.as_ref(),
        "recipe.build.fallback_subnet_ids",
        &build.fallback_subnet_ids,
    );
    if recipe.test.enabled {
        let test = &recipe.test;
        out.extend(with_fallbacks(
            "recipe.test.subnet_id",
            test.subnet_id.as_ref(),
            "recipe.test.fallback_subnet_ids",
            &test.fallback_subnet_ids,
        ));
    }
    out
}

/// (field, value) of a setting, when given, then of each of its fallbacks (`<fallbacks_field>[i]`).
fn with_fallbacks(
    field: &str,
    value: Option<&String>,
    fallbacks_field: &str,
    fallbacks: &[String],
) -> Vec<(String, String)> {
    let first = value.map(|v| (field.to_string(), v.clone()));
    let rest = (fallbacks.iter().enumerate()).map(|(i, v)| (format!("{fallbacks_field}[{i}]"), v.clone()));
    first.into_iter().chain(rest).collect()
}

/// Subnets and security groups exist, and each group is in the VPC of the subnets it is used with. Filters, not ids:
/// an unknown id in `SubnetIds` fails the whole call, a filter just leaves it out.
async fn network(deps: &Deps, recipe: &Recipe, build: &Build) -> Result<Vec<Problem>> {
    let home = deps.region.as_str();
    let mut out = Vec::new();
    let wanted = subnets(recipe, build);
    let mut vpcs = std::collections::BTreeMap::new();
    if !wanted.is_empty() {
        let ids: Vec<String> = wanted.iter().map(|(_, s)| s.clone()).collect();
        let found = deps
            .ec2
            .describe_subnets()
            .filters(Filter::builder().name("subnet-id").set_values(Some(ids)).build())
            .send()
            .await
            .map_err(|e| ami_core::aws::error::from_sdk("DescribeSubnets", e))?;
        for s in found.subnets() {
            vpcs.insert(
                s.subnet_id().unwrap_or_default().to_string(),
                s.vpc_id().unwrap_or_default().to_string(),
            );
        }
        for (field, id) in &wanted {
            if !vpcs.contains_key(id) {
                out.push(at(home, field, format!("subnet `{id}` does not exist in {home}")));
            }
        }
    }
    let mut groups: Vec<(String, String, Option<&String>)> = Vec::new();
    for (i, g) in build.security_group_ids.iter().enumerate() {
        groups.push((
            format!("recipe.build.security_group_ids[{i}]"),
            g.clone(),
            build.subnet_id.as_ref(),
        ));
    }
    if recipe.test.enabled {
        let test_subnet = recipe.test.subnet_id.as_ref().or(build.subnet_id.as_ref());
        for (i, g) in recipe.test.security_group_ids.iter().enumerate() {
            groups.push((format!("recipe.test.security_group_ids[{i}]"), g.clone(), test_subnet));
        }
    }
    if !groups.is_empty() {
        let ids: Vec<String> = groups.iter().map(|(_, g, _)| g.clone()).collect();
        let found = deps
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("group-id").set_values(Some(ids)).build())
            .send()
            .await
            .map_err(|e| ami_core::aws::error::from_sdk("DescribeSecurityGroups", e))?;
        let group_vpc: std::collections::BTreeMap<&str, &str> = found
            .security_groups()
            .iter()
            .map(|g| (g.group_id().unwrap_or_default(), g.vpc_id().unwrap_or_default()))
            .collect();
        for (field, id, subnet) in &groups {
            match (group_vpc.get(id.as_str()), subnet.and_then(|s| vpcs.get(s))) {
                (None, _) => out.push(at(
                    home,
                    field,
                    format!("security group `{id}` does not exist in {home}"),
                )),
                (Some(g), Some(s)) if g != s => out.push(at(
                    home,
                    field,
                    format!(
                        "security group `{id}` is in VPC `{g}`, but its subnet is in VPC `{s}`: use a group of `{s}`"
                    ),
                )),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The build and test instance types exist in the home region and run the recipe's architecture.
async fn instance_types(deps: &Deps, recipe: &Recipe, build: &Build) -> Result<Vec<Problem>> {
    let home = deps.region.as_str();
    let mut wanted = with_fallbacks(
        "recipe.build.instance_type",
        Some(&build.instance_type),
        "recipe.build.fallback_instance_types",
        &build.fallback_instance_types,
    );
    if recipe.test.enabled {
        wanted.extend(with_fallbacks(
            "recipe.test.instance_type",
            recipe.test.instance_type.as_ref(),
            "",
            &[],
        ));
    }
    let ids: Vec<String> = wanted.iter().map(|(_, t)| t.clone()).collect();
    let found = deps
        .ec2
        .describe_instance_types()
        .filters(Filter::builder().name("instance-type").set_values(Some(ids)).build())
        .send()
        .await
        .map_err(|e| ami_core::aws::error::from_sdk("DescribeInstanceTypes", e))?;
    let arch = recipe.image.architecture.as_str();
    let mut out = Vec::new();
    for (field, t) in &wanted {
        let info = found
            .instance_types()
            .iter()
            .find(|i| i.instance_type().map(|x| x.as_str()) == Some(t.as_str()));
        match info {
            None => out.push(at(home, field, format!("instance type `{t}` is not offered in {home}"))),
            Some(info) => {
                let archs = info
                    .processor_info()
                    .map(|p| p.supported_architectures())
                    .unwrap_or_default();
                if !archs.is_empty() && !archs.iter().any(|a| a.as_str() == arch) {
                    out.push(at(
                        home,
                        field,
                        format!("instance type `{t}` cannot run {arch} (image.architecture)"),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// RunInstances with the builder's settings (image, type, subnet, groups, profile, IMDSv2, encrypted root volume,
/// tags on create) by DryRun: `DryRunOperation` means it would launch.
async fn dry_run(
    deps: &Deps,
    recipe: &Recipe,
    build: &Build,
    image: &aws_sdk_ec2::types::Image,
) -> Result<Vec<Problem>> {
    let home = deps.region.as_str();
    let root = image.root_device_name().unwrap_or("/dev/xvda");
    let base_size = ami_core::aws::image::volume_size(image, root).unwrap_or(0).max(0) as u32;
    let root_volume = ami_core::aws::launch::encrypted_volume(
        root,
        recipe.image.kms_key_id.as_deref(),
        &build.root_volume.volume_type,
        Some(build.root_volume.size_gib.max(base_size).max(1) as i32),
        None,
        None,
    );
    // The tags the build's role requires on create (the execution does not exist yet).
    let preflight_tags = vec![
        tags::tag(tags::PIPELINE, &recipe.name),
        tags::tag(tags::EXECUTION, "preflight"),
        tags::tag(tags::ROLE, tags::Role::Builder.as_str()),
    ];
    let builder = ami_core::aws::launch::Instance {
        ec2: &deps.ec2,
        image_id: image.image_id().unwrap_or_default(),
        security_group_ids: build.security_group_ids.clone(),
        block_devices: Some(vec![root_volume]),
        instance_profile: build
            .instance_profile
            .as_deref()
            .map(ami_core::aws::launch::instance_profile),
        user_data: None,
        tags: preflight_tags,
    };
    let placement = ami_core::aws::launch::Placement {
        subnet_id: build.subnet_id.clone(),
        instance_type: build.instance_type.clone(),
    };
    let token = ami_core::model::naming::client_token("preflight", &recipe.name, home);
    let call = builder.run(&placement, token).dry_run(true);
    match call.send().await {
        // A dry run never succeeds: EC2 answers with an error either way.
        Ok(_) => Ok(vec![]),
        Err(e) => {
            let code = aws_code(&e).unwrap_or_default().to_string();
            let message = e
                .as_service_error()
                .and_then(|s| s.message())
                .unwrap_or_default()
                .to_string();
            match code.as_str() {
                "DryRunOperation" => Ok(vec![]),
                "UnauthorizedOperation" => Ok(vec![at(
                    home,
                    "recipe.build",
                    format!(
                        "the pipeline may not launch the builder (RunInstances DryRun: UnauthorizedOperation {message}): \
                         check the stack's roles and parameters (BuilderInstanceProfileRoleArn, KmsKeyArns) and any \
                         SCP or permission boundary"
                    ),
                )]),
                "" => Err(ami_core::aws::error::from_sdk("RunInstances (DryRun)", e)),
                _ if code.starts_with("RequestLimitExceeded")
                    || code.contains("Unavailable")
                    || code.starts_with("Internal") =>
                {
                    Err(ami_core::aws::error::from_sdk("RunInstances (DryRun)", e))
                }
                _ => Ok(vec![at(
                    home,
                    "recipe.build",
                    format!("the builder's launch would fail (RunInstances DryRun): {code}: {message}"),
                )]),
            }
        }
    }
}
