//! trigger: validates a release or schedule event, loads the pipeline's recipe from SSM, freezes it into the
//! execution input, and starts the state machine under a deterministic name, so a duplicate event starts
//! nothing. The stack's nightly schedule (`{"refresh": "all"}`) does the same for every stored recipe ([`nightly`]).

use aws_sdk_kms::types::{KeyManagerType, KeySpec, KeyState};
use serde_json::{Value, json};

use ami_core::aws::clients::RegionalClients;
use ami_core::aws::error::{Error, Result, aws_code};
use ami_core::aws::rerun::{self, Adopted};
use ami_core::model::event::{self, TriggerEvent};
use ami_core::model::recipe::{Recipe, Refresh, Source};
use ami_core::model::steps::{
    ImageState, Progress, Release, Run, Status, TriggerKind, TriggerOutput, TriggerStatus, now,
};
use ami_core::{aws::source, aws::tags, model::naming};
use aws_sdk_sfn::types::ExecutionStatus;
use lambda_runtime::tracing;

/// Configuration, read once from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_machine_arn: String,
    /// Where recipes live in SSM Parameter Store: `<prefix>/<pipeline>`.
    pub recipe_prefix: String,
    /// The stack's `PublishParameterPrefix`: publish may write only parameters under `<prefix>/`.
    pub publish_parameter_prefix: String,
}

pub const DEFAULT_RECIPE_PREFIX: &str = "/ami-pipeline/pipelines";
/// The template's default `PublishParameterPrefix`.
pub const DEFAULT_PUBLISH_PARAMETER_PREFIX: &str = "/images";

impl Config {
    pub fn from_env() -> std::result::Result<Config, String> {
        let state_machine_arn =
            std::env::var("STATE_MACHINE_ARN").map_err(|_| "STATE_MACHINE_ARN must be set".to_string())?;
        let prefix = |var: &str, default: &str| {
            let value = std::env::var(var).unwrap_or_else(|_| default.to_string());
            value.trim_end_matches('/').to_string()
        };
        Ok(Config {
            state_machine_arn,
            recipe_prefix: prefix("RECIPE_PREFIX", DEFAULT_RECIPE_PREFIX),
            publish_parameter_prefix: prefix("PUBLISH_PARAMETER_PREFIX", DEFAULT_PUBLISH_PARAMETER_PREFIX),
        })
    }
}

pub struct Deps {
    /// EC2 and SSM of the home region, where the run builds.
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub sfn: aws_sdk_sfn::Client,
    /// KMS in each region whose key the recipe names (a key is regional: it is looked up where it is used).
    pub kms: RegionalClients<aws_sdk_kms::Client>,
    /// EC2 and SSM of the other regions the image is published in: the preflight checks launch templates and
    /// parameters where publish will change them.
    pub regional: ami_core::step::Clients,
    pub region: String,
    pub config: Config,
    pub nightly: nightly::Pacing,
}

impl Deps {
    pub fn new(sdk: &ami_core::aws::clients::SdkConfig, config: Config) -> Self {
        Deps {
            ec2: aws_sdk_ec2::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
            sfn: aws_sdk_sfn::Client::new(sdk),
            kms: kms_clients(sdk),
            regional: ami_core::step::Clients::from_config(sdk),
            region: ami_core::aws::clients::home_region(sdk),
            config,
            nightly: nightly::Pacing::default(),
        }
    }

    /// EC2 in `region` (the home region's client there).
    pub fn ec2_in(&self, region: &str) -> aws_sdk_ec2::Client {
        if region == self.region {
            self.ec2.clone()
        } else {
            self.regional.ec2.get(region)
        }
    }

    /// SSM in `region` (the home region's client there).
    pub fn ssm_in(&self, region: &str) -> aws_sdk_ssm::Client {
        if region == self.region {
            self.ssm.clone()
        } else {
            self.regional.ssm.get(region)
        }
    }
}

fn kms_clients(sdk: &ami_core::aws::clients::SdkConfig) -> RegionalClients<aws_sdk_kms::Client> {
    let sdk = sdk.clone();
    RegionalClients::from_fn(move |region| {
        let conf = aws_sdk_kms::config::Builder::from(&sdk)
            .region(aws_sdk_kms::config::Region::new(region.to_string()))
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    })
}

/// Any event the trigger takes: a release, a one-pipeline schedule ([`handle`]), the refresh of every pipeline
/// ([`nightly::run`]), or a preflight ([`preflight::run`]).
pub async fn respond(deps: &Deps, event: Value) -> Result<Value> {
    if let Some(pipeline) = preflight::requested(&event) {
        return preflight::run(deps, &pipeline?).await;
    }
    let out = match event::refresh_all(&event) {
        Some(all) => serde_json::to_value(nightly::run(deps, &all?).await?),
        None => serde_json::to_value(handle(deps, event).await?),
    };
    out.map_err(|e| Error::Internal(format!("the trigger's output as JSON: {e}")))
}

/// A release event or a one-pipeline schedule.
pub async fn handle(deps: &Deps, event: Value) -> Result<TriggerOutput> {
    match event::parse(event)? {
        TriggerEvent::Release { detail, day, time } => {
            let recipe = load_recipe(deps, &detail.pipeline).await?;
            check(deps, &recipe).await?;
            let name = naming::release_execution_name(&detail.pipeline, &detail.version);
            let release = Release {
                version: detail.version,
                commit: detail.commit,
                artifact: detail.artifact,
                time: Some(time),
                force: detail.force,
            };
            start_execution(deps, new_run(deps, recipe, release, TriggerKind::Release, day), name).await
        }
        // A schedule outliving its pipeline's recipe has nothing to refresh: failing would only fill the dead-letter
        // queue and raise the alarm every night.
        TriggerEvent::Schedule { pipeline, day, time } => match load_recipe(deps, &pipeline).await {
            Err(Error::RecipeNotFound(why)) => {
                tracing::warn!(pipeline = %pipeline, "scheduled run skipped: {why}");
                Ok(skipped(
                    &pipeline,
                    &naming::scheduled_execution_name(&pipeline, &day),
                    None,
                    format!("{why}; until then the schedule starts nothing (or delete the schedule)"),
                ))
            }
            recipe => scheduled(deps, recipe?, &day, &time).await,
        },
    }
}

/// Everything checked before a run starts, so nothing is created for a run that would fail: a shared image needs a
/// customer-managed key in every region (before anything is looked up); then every key, the base image, network,
/// instance types, a DryRun of the builder's launch and publish's targets, all problems in one error; and an
/// instance-store image's test type, which only a few types can be.
async fn check(deps: &Deps, recipe: &Recipe) -> Result<()> {
    recipe.check_sharing_keys(&deps.region)?;
    preflight::check(deps, recipe).await?;
    ami_core::aws::instance_store::check_test_instance_type(&deps.ec2, recipe).await
}

/// A scheduled run of `recipe` for `day` (UTC `YYYYMMDD`; `time` the schedule's): rebuilds the current release on the
/// newest base image under the day's execution name, or is skipped (see [`scheduled_release`]).
pub(crate) async fn scheduled(deps: &Deps, recipe: Recipe, day: &str, time: &str) -> Result<TriggerOutput> {
    let name = naming::scheduled_execution_name(&recipe.name, day);
    if recipe.refresh == Refresh::Never {
        let why = "the recipe says `refresh: never`: only release events build it".to_string();
        return Ok(skipped(&recipe.name, &name, None, why));
    }
    check(deps, &recipe).await?;
    match scheduled_release(deps, &recipe, &name).await? {
        Ok(release) => {
            let release = Release {
                time: Some(time.to_string()),
                ..release
            };
            let run = new_run(deps, recipe, release, TriggerKind::Schedule, day.to_string());
            start_execution(deps, run, name).await
        }
        Err(skipped) => Ok(skipped),
    }
}

fn new_run(deps: &Deps, recipe: Recipe, release: Release, trigger: TriggerKind, day: String) -> Run {
    Run {
        pipeline: recipe.name.clone(),
        release,
        trigger,
        region: deps.region.clone(),
        date: day,
        build: matches!(recipe.source, Source::Image(_)),
        regions: recipe.all_regions(&deps.region),
        recipe,
        adopted: None,
    }
}

fn skipped(pipeline: &str, execution_name: &str, version: Option<String>, reason: String) -> TriggerOutput {
    TriggerOutput {
        status: TriggerStatus::Skipped,
        pipeline: pipeline.to_string(),
        execution_name: execution_name.to_string(),
        execution_arn: None,
        version,
        reason: Some(reason),
    }
}

/// The recipe stored for `pipeline`; `RecipeNotFound` when there is none.
async fn load_recipe(deps: &Deps, pipeline: &str) -> Result<Recipe> {
    let param = format!("{}/{pipeline}", deps.config.recipe_prefix);
    let text = match deps.ssm.get_parameter().name(&param).send().await {
        Ok(out) => out.parameter().and_then(|p| p.value()).unwrap_or_default().to_string(),
        Err(e) if aws_code(&e) == Some("ParameterNotFound") => {
            return Err(Error::RecipeNotFound(format!(
                "no recipe for pipeline `{pipeline}`: store it as SSM parameter {param}"
            )));
        }
        Err(e) => return Err(ami_core::aws::error::from_sdk("GetParameter", e)),
    };
    parse_stored(pipeline, &text)
}

/// A stored recipe's text, checked, and stored under its own name (the trigger finds it by the name).
fn parse_stored(pipeline: &str, text: &str) -> Result<Recipe> {
    let recipe = Recipe::from_json(text)?;
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

/// Whether a key names the AWS managed aws/ebs key. Each key the run uses is checked (exists, enabled, symmetric,
/// customer managed when shared) by `check_key`, from the preflight: otherwise the build or a copy fails 30 minutes in
/// (EBS checks the key asynchronously: "if you specify an identifier that is not valid, the action can appear to
/// complete, but eventually fails", CopyImage API reference), or the share fails after build, test and copies
/// ("Snapshots encrypted with your default KMS key cannot be shared with other accounts", ModifySnapshotAttribute
/// API reference). Read-only: KMS DescribeKey, in the key's region.
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
        Err(e) => return Err(ami_core::aws::error::from_sdk("DescribeKey", e)),
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

/// A script that uses `{{artifact}}` cannot be rebuilt without it: refused before anything starts, rather than run
/// with an empty value. The artifact comes from the newest image's `ami-pipeline:artifact` tag (releases record it).
fn needs_known_artifact(recipe: &Recipe, release: &Release) -> Result<()> {
    if release.artifact.is_some() {
        return Ok(());
    }
    let scripts = [
        ("recipe.build.script", recipe.build.as_ref().map(|b| b.script.as_str())),
        ("recipe.test.script", recipe.test.script.as_deref()),
    ];
    match scripts
        .into_iter()
        .find(|(_, s)| s.is_some_and(|s| s.contains("{{artifact}}")))
    {
        Some((field, _)) => Err(Error::invalid(
            field,
            format!(
                "uses {{{{artifact}}}}, but no artifact is known for release {} (its image has no \
                 `ami-pipeline:artifact` tag: built before artifacts were recorded, from `default_version`, or with an \
                 artifact longer than 256 characters): send a release event with `artifact` instead",
                release.version
            ),
        )),
        None => Ok(()),
    }
}

/// A scheduled run rebuilds the current release (the newest image's, else the recipe's default) on the newest
/// base image, or is skipped when `when-source-changes` finds the base image unchanged.
async fn scheduled_release(
    deps: &Deps,
    recipe: &Recipe,
    name: &str,
) -> Result<std::result::Result<Release, TriggerOutput>> {
    let newest = ami_core::aws::ec2::newest_released(&deps.ec2, &recipe.name).await?;
    let newest_tags = newest.as_ref().map(|i| i.tags()).unwrap_or_default();
    let release = match (tags::get(newest_tags, tags::RELEASE), &recipe.default_version) {
        (Some(v), _) if naming::check_version("tag", v).is_ok() => Release {
            version: v.to_string(),
            commit: tags::get(newest_tags, tags::COMMIT).map(String::from),
            // the artifact the release was built with, checked again as it goes into the script
            artifact: tags::get(newest_tags, tags::ARTIFACT)
                .filter(|a| naming::check_artifact("tag", a).is_ok())
                .map(String::from),
            ..Release::default()
        },
        (_, Some(v)) => Release {
            version: v.clone(),
            ..Release::default()
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
            let reason = format!(
                "base image {} is unchanged since image {} was built (refresh: when-source-changes)",
                current.image_id().unwrap_or("?"),
                image.image_id().unwrap_or("?")
            );
            return Ok(Err(skipped(&recipe.name, name, Some(release.version), reason)));
        }
    }
    needs_known_artifact(recipe, &release)?;
    Ok(Ok(release))
}

/// Starts the run under the release's (or schedule day's) execution name, or under the next attempt's when every
/// earlier attempt ended FAILED, TIMED_OUT or ABORTED (`ami_core::aws::rerun`).
///
/// The first event of a release costs one StartExecution. When the name is taken, the chain `<name>`, `<name>-a2`
/// ... is walked with DescribeExecution (a name is never listed: ListExecutions is paged and may lag): the first
/// attempt that is open or succeeded makes this event a duplicate; after the last closed-and-failed attempt comes
/// the next one, started with input that adopts what the earlier attempts kept. Concurrent duplicates of a rerun
/// send the same name and byte-identical input, so Step Functions gives them one execution ("If StartExecution is
/// called with the same name and input as a running execution, the call succeeds and return the same response as
/// the original request", StartExecution API reference); one that sees the attempt already running answers
/// duplicate.
async fn start_execution(deps: &Deps, run: Run, base: String) -> Result<TriggerOutput> {
    let output = |status, name: &str, arn: Option<String>, reason: String| TriggerOutput {
        status,
        pipeline: run.pipeline.clone(),
        execution_name: name.to_string(),
        execution_arn: arn,
        version: Some(run.release.version.clone()),
        reason: (!reason.is_empty()).then_some(reason),
    };
    match start(deps, &run, &base).await? {
        Started::New(arn) => return Ok(output(TriggerStatus::Started, &base, Some(arn), String::new())),
        Started::Running(arn) => return Ok(output(TriggerStatus::Duplicate, &base, Some(arn), running(&base))),
        Started::Taken => {}
    }
    let mut attempt = 1;
    let mut rerun: Option<Run> = None;
    let mut failed_before: Option<(String, String)> = None; // (attempt's name, its status)
    // Each name is described at most twice (a lost race to start it is described again), so this bounds the walk.
    for _ in 0..2 * rerun::MAX_ATTEMPTS + 2 {
        let name = rerun::attempt_name(&base, attempt);
        match describe(deps, &name).await? {
            Some((ExecutionStatus::Failed | ExecutionStatus::TimedOut | ExecutionStatus::Aborted, status)) => {
                failed_before = Some((name, status));
                attempt += 1;
                if attempt > rerun::MAX_ATTEMPTS {
                    return Err(Error::Conflict(format!(
                        "{base}: all {} attempts of this release or schedule day ended without success; send a new \
                         version",
                        rerun::MAX_ATTEMPTS
                    )));
                }
            }
            // Running, succeeded, or being redriven: this event was already handled.
            Some((_, status)) => {
                let reason = format!("execution {name} is {status}: this release or schedule day is already handled");
                return Ok(output(
                    TriggerStatus::Duplicate,
                    &name,
                    Some(execution_arn(deps, &name)),
                    reason,
                ));
            }
            // The first name is taken (StartExecution said so) but not described: a name freed after 90 days, or a
            // read that lags the write. The event's retry settles it.
            None if attempt == 1 => {
                return Err(Error::Transient(format!(
                    "execution {name} exists but DescribeExecution does not find it yet"
                )));
            }
            None => {
                if rerun.is_none() {
                    let mut next = run.clone();
                    next.adopted = find_kept(deps, &next, &base).await?;
                    rerun = Some(next);
                }
                let next = rerun.as_ref().unwrap_or(&run);
                let arn = match start(deps, next, &name).await? {
                    Started::New(arn) => arn,
                    Started::Running(arn) => {
                        return Ok(output(TriggerStatus::Duplicate, &name, Some(arn), running(&name)));
                    }
                    // Another delivery started it first, with other input: described again, it is running.
                    Started::Taken => continue,
                };
                let (previous, status) = failed_before.clone().unwrap_or_default();
                let adopted = match &next.adopted {
                    Some(a) => format!(
                        "; adopted image {} (tested by {}): build and test skipped",
                        a.image.image_id, a.execution
                    ),
                    None => "; nothing kept to adopt: full run".to_string(),
                };
                let reason = format!("attempt {attempt}: {previous} ended {status}{adopted}");
                return Ok(output(TriggerStatus::Rerun, &name, Some(arn), reason));
            }
        }
    }
    Err(Error::Transient(format!(
        "{base}: the attempts kept changing while they were looked up"
    )))
}

/// What StartExecution did with a name.
enum Started {
    /// This call started the execution.
    New(String),
    /// The same name and input were already running: "the call succeeds and return the same response as the
    /// original request" (StartExecution API reference), whose start date is then older than this call.
    Running(String),
    /// `ExecutionAlreadyExists`: closed, or running with other input.
    Taken,
}

/// How much earlier than this call an execution's start date must be to count as another call's start (clock skew
/// between the function and Step Functions; a duplicate closer than this to the original is reported started).
const SAME_START_SECONDS: f64 = 1.0;

fn running(name: &str) -> String {
    format!("execution {name} is RUNNING: this release or schedule day is already being handled")
}

/// StartExecution with the run's canonical input.
async fn start(deps: &Deps, run: &Run, name: &str) -> Result<Started> {
    // Canonical input: the same event always gives byte-identical input, which StartExecution needs to treat a
    // repeat as the same execution.
    let input =
        serde_json::to_string(&json!({ "run": run })).map_err(|e| Error::Internal(format!("execution input: {e}")))?;
    let before = chrono_now_secs();
    match deps
        .sfn
        .start_execution()
        .state_machine_arn(&deps.config.state_machine_arn)
        .name(name)
        .input(input)
        .send()
        .await
    {
        Ok(out) if out.start_date().as_secs_f64() < before - SAME_START_SECONDS => {
            Ok(Started::Running(out.execution_arn().to_string()))
        }
        Ok(out) => Ok(Started::New(out.execution_arn().to_string())),
        Err(e) if aws_code(&e) == Some("ExecutionAlreadyExists") => Ok(Started::Taken),
        Err(e) => Err(ami_core::aws::error::from_sdk("StartExecution", e)),
    }
}

/// Unix seconds now, with the fraction.
fn chrono_now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// An execution's ARN from the state machine's: `arn:aws:states:<region>:<account>:execution:<machine>:<name>`.
fn execution_arn(deps: &Deps, name: &str) -> String {
    let machine = &deps.config.state_machine_arn;
    format!("{}:{name}", machine.replacen(":stateMachine:", ":execution:", 1))
}

/// The execution's status (and its name as AWS spells it), or `None` when there is no execution of that name.
async fn describe(deps: &Deps, name: &str) -> Result<Option<(ExecutionStatus, String)>> {
    match deps
        .sfn
        .describe_execution()
        .execution_arn(execution_arn(deps, name))
        .send()
        .await
    {
        Ok(out) => Ok(Some((out.status().clone(), out.status().as_str().to_string()))),
        Err(e) if aws_code(&e) == Some("ExecutionDoesNotExist") => Ok(None),
        Err(e) => Err(ami_core::aws::error::from_sdk("DescribeExecution", e)),
    }
}

/// The tested image an earlier attempt of this chain kept, if a rerun may adopt it: in the run's region, tagged
/// `state=tested` by an attempt of this chain, for the same pipeline and release, with the same recipe hash,
/// available, and younger than `rerun::ADOPT_WITHIN_DAYS`. The newest such image wins. Copies are found by copy.
async fn find_kept(deps: &Deps, run: &Run, base: &str) -> Result<Option<Adopted>> {
    let hash = rerun::recipe_hash(&run.recipe);
    let filters = vec![
        tags::filter(tags::PIPELINE, &run.pipeline),
        tags::filter(tags::STATE, tags::STATE_TESTED),
        tags::filter(tags::RECIPE_HASH, &hash),
    ];
    let chain: Vec<String> = (1..=rerun::MAX_ATTEMPTS)
        .map(|n| rerun::attempt_name(base, n))
        .collect();
    let oldest = now() - rerun::ADOPT_WITHIN_DAYS * 86_400;
    let mut kept: Vec<(i64, aws_sdk_ec2::types::Image)> = ami_core::aws::ec2::own_images(&deps.ec2, filters)
        .await?
        .into_iter()
        .filter(|i| {
            let t = i.tags();
            // Tags checked in code too: a filter the API ignored must not widen what is adopted.
            tags::get(t, tags::PIPELINE) == Some(run.pipeline.as_str())
                && tags::get(t, tags::STATE) == Some(tags::STATE_TESTED)
                && tags::get(t, tags::RECIPE_HASH) == Some(hash.as_str())
                && tags::get(t, tags::RELEASE) == Some(run.release.version.as_str())
                && tags::get(t, tags::COMMIT) == run.release.commit.as_deref()
                && tags::get(t, tags::EXECUTION).is_some_and(|e| chain.iter().any(|c| c == e))
                && i.state() == Some(&aws_sdk_ec2::types::ImageState::Available)
                && i.image_id().is_some()
        })
        .filter_map(|i| Some((rerun::created_at(&i)?, i)))
        .filter(|(created, _)| *created >= oldest)
        .collect();
    kept.sort_by_key(|(created, _)| *created);
    let Some((created, image)) = kept.pop() else {
        return Ok(None);
    };
    let t = image.tags();
    // Deterministic (no clock): concurrent duplicates must send byte-identical input.
    let progress = Progress {
        status: Status::Ready,
        started_at: created,
        deadline: created,
        wait_seconds: 0,
    };
    Ok(Some(Adopted {
        execution: tags::get(t, tags::EXECUTION).unwrap_or_default().to_string(),
        image: ImageState {
            region: run.region.clone(),
            image_id: image.image_id().unwrap_or_default().to_string(),
            name: image.name().unwrap_or_default().to_string(),
            progress,
        },
        source_image_id: tags::get(t, tags::SOURCE_IMAGE).unwrap_or_default().to_string(),
        boot_to_ready_seconds: tags::get(t, tags::BOOT_TO_READY).and_then(|s| s.parse().ok()),
    }))
}

pub mod nightly;
pub mod preflight;
#[cfg(test)]
mod tests;
