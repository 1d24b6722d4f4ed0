//! trigger: validates a release or schedule event, loads the pipeline's recipe from SSM, freezes it into the
//! execution input, and starts the state machine under a deterministic name, so a duplicate event starts
//! nothing.

use serde_json::{Value, json};

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
    pub region: String,
    pub config: Config,
}

impl Deps {
    pub fn new(sdk: &ami_core::clients::SdkConfig, config: Config) -> Self {
        Deps {
            ec2: aws_sdk_ec2::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
            sfn: aws_sdk_sfn::Client::new(sdk),
            region: ami_core::clients::home_region(sdk),
            config,
        }
    }
}

pub async fn handle(deps: &Deps, event: Value) -> Result<TriggerOutput> {
    let ev = event::parse(event)?;
    let recipe = load_recipe(deps, ev.pipeline()).await?;
    // Before anything is looked up or created: a shared image needs a customer-managed key in every region.
    recipe.check_sharing_keys(&deps.region)?;
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
