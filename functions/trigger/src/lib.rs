//! trigger: validates a release or schedule event, loads the pipeline's recipe from SSM, freezes it into the
//! execution input, and starts the state machine under a deterministic name, so a duplicate event starts
//! nothing.

use aws_sdk_kms::types::{KeyManagerType, KeySpec, KeyState};
use serde_json::{Value, json};

use ami_core::clients::RegionalClients;
use ami_core::error::{Error, Result, aws_code};
use ami_core::event::{self, TriggerEvent};
use ami_core::recipe::{Recipe, Refresh, Source};
use ami_core::steps::{Release, Run, TriggerKind, TriggerOutput, TriggerStatus, now};
use ami_core::{naming, source, tags};

/// Configuration, read once from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_machine_arn: String,
    /// Where recipes live in SSM Parameter Store: `<prefix>/<pipeline>`.
    pub recipe_prefix: String,
}

pub const DEFAULT_RECIPE_PREFIX: &str = "/ami-pipeline/pipelines";

impl Config {
    pub fn from_env() -> std::result::Result<Config, String> {
        let state_machine_arn =
            std::env::var("STATE_MACHINE_ARN").map_err(|_| "STATE_MACHINE_ARN must be set".to_string())?;
        let recipe_prefix = std::env::var("RECIPE_PREFIX").unwrap_or_else(|_| DEFAULT_RECIPE_PREFIX.to_string());
        Ok(Config {
            state_machine_arn,
            recipe_prefix: recipe_prefix.trim_end_matches('/').to_string(),
        })
    }
}

pub struct Deps {
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub sfn: aws_sdk_sfn::Client,
    /// KMS in each region whose key the recipe names (a key is regional: it is looked up where it is used).
    pub kms: RegionalClients<aws_sdk_kms::Client>,
    pub region: String,
    pub config: Config,
}

impl Deps {
    pub fn new(sdk: &ami_core::clients::SdkConfig, config: Config) -> Self {
        Deps {
            ec2: aws_sdk_ec2::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
            sfn: aws_sdk_sfn::Client::new(sdk),
            kms: kms_clients(sdk),
            region: ami_core::clients::home_region(sdk),
            config,
        }
    }
}

fn kms_clients(sdk: &ami_core::clients::SdkConfig) -> RegionalClients<aws_sdk_kms::Client> {
    let sdk = sdk.clone();
    RegionalClients::from_fn(move |region| {
        let conf = aws_sdk_kms::config::Builder::from(&sdk)
            .region(aws_sdk_kms::config::Region::new(region.to_string()))
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    })
}

pub async fn handle(deps: &Deps, event: Value) -> Result<TriggerOutput> {
    let ev = event::parse(event)?;
    let recipe = load_recipe(deps, ev.pipeline()).await?;
    // Before anything is looked up or created: a shared image needs a customer-managed key in every region.
    recipe.check_sharing_keys(&deps.region)?;
    check_keys(deps, &recipe).await?;
    // An instance-store image can be tested only on the few types with an instance-store root: found now, not after
    // the build.
    ami_core::instance_store::check_test_instance_type(&deps.ec2, &recipe).await?;
    let (release, day, name, trigger) = match ev {
        TriggerEvent::Release { detail, day } => {
            let name = naming::release_execution_name(&detail.pipeline, &detail.version);
            let release = Release {
                version: detail.version,
                commit: detail.commit,
                artifact: detail.artifact,
            };
            (release, day, name, TriggerKind::Release)
        }
        TriggerEvent::Schedule { pipeline, day } => {
            let name = naming::scheduled_execution_name(&pipeline, &day);
            match scheduled_release(deps, &recipe, &name).await? {
                Ok(release) => (release, day, name, TriggerKind::Schedule),
                Err(skipped) => return Ok(skipped),
            }
        }
    };
    let run = Run {
        pipeline: recipe.name.clone(),
        release,
        trigger,
        region: deps.region.clone(),
        date: day,
        build: matches!(recipe.source, Source::Image(_)),
        regions: recipe.all_regions(&deps.region),
        recipe,
    };
    start_execution(deps, run, name).await
}

async fn load_recipe(deps: &Deps, pipeline: &str) -> Result<Recipe> {
    let param = format!("{}/{pipeline}", deps.config.recipe_prefix);
    let text = match deps.ssm.get_parameter().name(&param).send().await {
        Ok(out) => out.parameter().and_then(|p| p.value()).unwrap_or_default().to_string(),
        Err(e) if aws_code(&e) == Some("ParameterNotFound") => {
            return Err(Error::RecipeNotFound(format!(
                "no recipe for pipeline `{pipeline}`: store it as SSM parameter {param}"
            )));
        }
        Err(e) => return Err(ami_core::error::from_sdk("GetParameter", e)),
    };
    let recipe = Recipe::from_json(&text)?;
    if recipe.name != pipeline {
        return Err(Error::invalid(
            "recipe.name",
            format!(
                "is `{}` but the recipe is stored for pipeline `{pipeline}`; make them equal",
                recipe.name
            ),
        ));
    }
    Ok(recipe)
}

/// One KMS key the recipe names: the field naming it and the region whose volumes and snapshots it encrypts.
struct KeyUse<'a> {
    field: String,
    region: &'a str,
    key: &'a str,
}

/// The keys a run will use: `image.kms_key_id` for the builder's volumes in the home region (an instance source
/// keeps its own volumes' keys), `distribution.kms_key_ids` for each copy region.
fn key_uses<'a>(recipe: &'a Recipe, home: &'a str) -> Vec<KeyUse<'a>> {
    let mut out = Vec::new();
    if let (Source::Image(_), Some(key)) = (&recipe.source, &recipe.image.kms_key_id) {
        out.push(KeyUse {
            field: "recipe.image.kms_key_id".into(),
            region: home,
            key,
        });
    }
    let d = &recipe.distribution;
    for region in d.regions.iter().filter(|r| *r != home) {
        if let Some(key) = d.kms_key_ids.get(region) {
            out.push(KeyUse {
                field: format!("recipe.distribution.kms_key_ids.{region}"),
                region,
                key,
            });
        }
    }
    out
}

/// Before anything is built: each key the run will use exists in its region, is enabled and symmetric, and, for a
/// shared image, is customer managed. Otherwise the build or a copy fails 30 minutes in (EBS checks the key
/// asynchronously: "if you specify an identifier that is not valid, the action can appear to complete, but
/// eventually fails", CopyImage API reference), or the share fails after build, test and copies ("Snapshots
/// encrypted with your default KMS key cannot be shared with other accounts", ModifySnapshotAttribute API
/// reference). Read-only: KMS DescribeKey, in the key's region.
async fn check_keys(deps: &Deps, recipe: &Recipe) -> Result<()> {
    let shared = recipe.is_shared();
    for u in key_uses(recipe, &deps.region) {
        // The AWS managed aws/ebs key always exists and cannot be disabled; a shared recipe never gets here with it
        // (validation refuses it), and the trigger's role may describe only the stack's KmsKeyArns.
        if !shared && is_aws_ebs_alias(u.key) {
            continue;
        }
        check_key(&deps.kms.get(u.region), &u, shared).await?;
    }
    Ok(())
}

fn is_aws_ebs_alias(key: &str) -> bool {
    let key = key.trim();
    key.eq_ignore_ascii_case("alias/aws/ebs") || (key.starts_with("arn:") && key.ends_with(":alias/aws/ebs"))
}

async fn check_key(kms: &aws_sdk_kms::Client, u: &KeyUse<'_>, shared: bool) -> Result<()> {
    let (key, region) = (u.key, u.region);
    // A key ARN or alias ARN names its region; EBS needs the key in the region of the volumes ("The specified KMS
    // key must exist in the destination Region", CopyImage API reference).
    if let Some(arn_region) = key.strip_prefix("arn:").and_then(|rest| rest.split(':').nth(2))
        && arn_region != region
    {
        return Err(Error::invalid(
            &u.field,
            format!(
                "`{key}` is a key in `{arn_region}`, but it encrypts the image in `{region}`: name a key of \
                 `{region}` (a multi-Region replica there, or that region's own key)"
            ),
        ));
    }
    let out = match kms.describe_key().key_id(key).send().await {
        Ok(out) => out,
        Err(e) if matches!(aws_code(&e), Some("NotFoundException" | "InvalidArnException")) => {
            return Err(Error::invalid(
                &u.field,
                format!(
                    "KMS key `{key}` does not exist in `{region}`: create it there with a key policy that lets the \
                     target accounts use it (infra/DEPLOY.md), or correct the id"
                ),
            ));
        }
        Err(e) if aws_code(&e) == Some("AccessDeniedException") => {
            return Err(Error::invalid(
                &u.field,
                format!(
                    "the pipeline may not use KMS key `{key}` in `{region}`: add its key ARN to the stack parameter \
                     KmsKeyArns (the trigger, build, test-launch and copy roles are limited to those keys)"
                ),
            ));
        }
        Err(e) => return Err(ami_core::error::from_sdk("DescribeKey", e)),
    };
    let meta = out
        .key_metadata()
        .ok_or_else(|| Error::Internal(format!("DescribeKey {key} in {region}: no KeyMetadata")))?;
    let arn = meta.arn().unwrap_or(key);
    if shared && meta.key_manager() != Some(&KeyManagerType::Customer) {
        return Err(Error::invalid(
            &u.field,
            format!(
                "KMS key `{key}` ({arn}) in `{region}` is AWS managed: snapshots encrypted with it cannot be shared \
                 with other accounts; name a customer-managed key whose key policy lets the target accounts use it \
                 (infra/DEPLOY.md)"
            ),
        ));
    }
    if meta.key_state() != Some(&KeyState::Enabled) {
        let state = meta.key_state().map(|s| s.as_str()).unwrap_or("unknown");
        return Err(Error::invalid(
            &u.field,
            format!(
                "KMS key `{key}` ({arn}) in `{region}` is {state}, not Enabled: EBS cannot encrypt with it; enable it \
                 (or cancel its deletion), or name another key"
            ),
        ));
    }
    // "Amazon EBS does not support asymmetric KMS keys" (CopyImage API reference, KmsKeyId).
    if meta.key_spec().is_some_and(|s| *s != KeySpec::SymmetricDefault) {
        return Err(Error::invalid(
            &u.field,
            format!("KMS key `{key}` ({arn}) in `{region}` is asymmetric: EBS needs a symmetric encryption key"),
        ));
    }
    Ok(())
}

/// A scheduled run rebuilds the current release (the newest image's, else the recipe's default) on the newest
/// base image, or is skipped when `when-source-changes` finds the base image unchanged.
async fn scheduled_release(
    deps: &Deps,
    recipe: &Recipe,
    name: &str,
) -> Result<std::result::Result<Release, TriggerOutput>> {
    let newest = ami_core::ec2::newest_released(&deps.ec2, &recipe.name).await?;
    let newest_tags = newest.as_ref().map(|i| i.tags()).unwrap_or_default();
    let release = match (tags::get(newest_tags, tags::RELEASE), &recipe.default_version) {
        (Some(v), _) if naming::check_version("tag", v).is_ok() => Release {
            version: v.to_string(),
            commit: tags::get(newest_tags, tags::COMMIT).map(String::from),
            artifact: None,
        },
        (_, Some(v)) => Release {
            version: v.clone(),
            commit: None,
            artifact: None,
        },
        _ => {
            return Err(Error::invalid(
                "recipe.default_version",
                "required for scheduled runs until the pipeline has built an image",
            ));
        }
    };
    if let (Refresh::WhenSourceChanges, Source::Image(base), Some(image)) = (recipe.refresh, &recipe.source, &newest) {
        let current = source::resolve(&deps.ec2, &deps.ssm, base, recipe.image.architecture, now()).await?;
        let built_from = tags::get(image.tags(), tags::SOURCE_IMAGE);
        if built_from.is_some() && built_from == current.image_id() {
            return Ok(Err(TriggerOutput {
                status: TriggerStatus::Skipped,
                pipeline: recipe.name.clone(),
                execution_name: name.to_string(),
                execution_arn: None,
                version: Some(release.version),
                reason: Some(format!(
                    "base image {} is unchanged since image {} was built (refresh: when-source-changes)",
                    current.image_id().unwrap_or("?"),
                    image.image_id().unwrap_or("?")
                )),
            }));
        }
    }
    Ok(Ok(release))
}

async fn start_execution(deps: &Deps, run: Run, name: String) -> Result<TriggerOutput> {
    // Canonical input: the same event always gives byte-identical input, which StartExecution needs to treat a
    // repeat as the same execution.
    let input =
        serde_json::to_string(&json!({ "run": run })).map_err(|e| Error::Internal(format!("execution input: {e}")))?;
    let output = |status, arn: Option<String>, reason: Option<String>| TriggerOutput {
        status,
        pipeline: run.pipeline.clone(),
        execution_name: name.clone(),
        execution_arn: arn,
        version: Some(run.release.version.clone()),
        reason,
    };
    match deps
        .sfn
        .start_execution()
        .state_machine_arn(&deps.config.state_machine_arn)
        .name(&name)
        .input(input)
        .send()
        .await
    {
        Ok(out) => Ok(output(
            TriggerStatus::Started,
            Some(out.execution_arn().to_string()),
            None,
        )),
        Err(e) if aws_code(&e) == Some("ExecutionAlreadyExists") => Ok(output(
            TriggerStatus::Duplicate,
            None,
            Some(format!(
                "execution {name} already exists: this release or schedule day was already handled"
            )),
        )),
        Err(e) => Err(ami_core::error::from_sdk("StartExecution", e)),
    }
}

#[cfg(test)]
mod tests;
