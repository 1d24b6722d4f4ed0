//! build: `start` vets the base image, then launches the builder; `status` runs the recipe's provisioning script
//! through SSM Run Command (`build.channel: run-command`, `ami_core::aws::runcommand`) and stops the builder once it
//! succeeded, or (`console`) waits until the builder's user data has printed its result marker and stopped; ready
//! once the builder is stopped after success. `finish` terminates the builder once the image is available (on
//! failure, cleanup does it by tag).

use aws_sdk_ec2::types::{BlockDeviceMapping, Image, Instance, InstanceStateName, ShutdownBehavior};

use ami_core::aws::error::{Error, Result, SdkResultExt};
use ami_core::aws::runcommand::{self, CommandLogs, Job, Purpose, State as RcState};
use ami_core::definition::{self, StepDef};
use ami_core::model::recipe::{Build, Channel, Platform, Source};
use ami_core::model::steps::{BuildState, Progress, Status, StepRequest};
use ami_core::model::userdata::{self, Outcome};
use ami_core::step::{InstanceClients, Step};
use ami_core::{aws::source, aws::tags};

/// Clients, built once per process.
pub struct Deps(pub InstanceClients);

/// How long a stopped builder may go without a result marker before the build fails. Console output is buffered
/// and "posted shortly after an instance transition state" (GetConsoleOutput API reference), so the marker can
/// lag the stop. Measured from AWS's state (the stop time EC2 gives, or a tag), never a poll count: status calls
/// are stateless.
const CONSOLE_GRACE_SECONDS: i64 = 15 * 60;

impl Step for Deps {
    type Output = BuildState;
    const DEF: &'static StepDef = &definition::BUILD;

    async fn start(&self, req: &StepRequest, now: i64) -> Result<BuildState> {
        let (build, base) = build_section(req)?;
        let recipe = &req.run.recipe;

        // Where the builder may run: the recipe's type and subnet first, then its fallbacks (capacity).
        let placements = ami_core::aws::launch::placements_with_fallbacks(
            &build.instance_type,
            &build.fallback_instance_types,
            build.subnet_id.as_deref(),
            &build.fallback_subnet_ids,
        );

        // A retried start adopts the builder it already launched, whichever placement it got (the ClientToken covers a
        // lost response of the same placement). With fallbacks, an earlier attempt may have launched under another
        // placement's token, so a look-up that finds nothing is made once more before launching.
        let mine = vec![
            tags::filter(tags::EXECUTION, &req.execution.name),
            tags::filter(tags::ROLE, tags::Role::Builder.as_str()),
        ];
        let found = ami_core::aws::ec2::find_instances_settled(&self.0.ec2, mine, placements.len() > 1).await?;
        if let Some(existing) = found.into_iter().next() {
            let instance_id = existing.instance_id().unwrap_or_default().to_string();
            let source_image_id = existing.image_id().unwrap_or_default().to_string();
            tracing_log(&instance_id, "adopted the builder this execution already launched");
            return Ok(BuildState {
                instance_id,
                source_image_id,
                terminated: false,
                logs: None,
                progress: Progress::start(now, build.timeout_minutes),
            });
        }

        // Vet the base image before anything is created.
        let image = source::resolve(&self.0.ec2, &self.0.channel.ssm, base, recipe.image.architecture, now).await?;
        let image_id = image.image_id().unwrap_or_default().to_string();
        // A boot mode or NitroTPM the base cannot give is refused now, not after the build (snapshot plans again from
        // the builder, which reports the same properties).
        ami_core::aws::platform::plan(&ami_core::aws::platform::Origin::of_image(&image), &recipe.image)?;
        let devices = block_devices(build, &image, recipe.image.kms_key_id.as_deref())?;

        let user_data = userdata::builder(&req.run, &req.execution.name, build.platform, &build.script);
        let mut instance_tags = tags::standard(&req.execution, &req.run, tags::Role::Builder);
        instance_tags.push(tags::tag(tags::SOURCE_IMAGE, &image_id));
        let builder = ami_core::aws::launch::Instance {
            ec2: &self.0.ec2,
            image_id: &image_id,
            security_group_ids: build.security_group_ids.clone(),
            block_devices: Some(devices),
            instance_profile: build
                .instance_profile
                .as_deref()
                .map(ami_core::aws::launch::instance_profile),
            user_data: Some(aws_smithy_types::base64::encode(user_data.as_bytes())),
            tags: instance_tags,
        };
        let (out, placed) = ami_core::aws::launch::launch(&placements, "builder", |attempt, p| {
            let token = ami_core::aws::launch::launch_token(&req.execution.name, "build", &req.run.region, attempt, p);
            builder
                .run(p, token)
                .instance_initiated_shutdown_behavior(ShutdownBehavior::Stop)
        })
        .await?;
        let instance_id = out
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .ok_or_else(|| Error::Internal("RunInstances returned no instance".into()))?
            .to_string();
        lambda_runtime::tracing::info!(
            instance_id,
            instance_type = %placed.instance_type,
            subnet = placed.subnet_id.as_deref().unwrap_or("default"),
            "launched the builder"
        );
        Ok(BuildState {
            instance_id,
            source_image_id: image_id,
            terminated: false,
            logs: None,
            progress: Progress::start(now, build.timeout_minutes),
        })
    }

    async fn status(&self, req: &StepRequest, now: i64) -> Result<BuildState> {
        let state = req.steps.build()?.clone();
        state.progress.check_deadline(now, "provisioning")?;
        let id = &state.instance_id;
        let Some(instance) = ami_core::aws::ec2::describe_instance(&self.0.ec2, id).await? else {
            // Just launched, EC2 may not know the id yet (eventual consistency): pending, not gone.
            if ami_core::aws::ec2::within_grace(state.progress.started_at, now) {
                return Ok(BuildState {
                    progress: state.progress.with_status(Status::Pending),
                    ..state
                });
            }
            return Err(Error::ResourceGone(format!("builder {id} no longer exists")));
        };
        if matches!(
            instance.state().and_then(|s| s.name()),
            Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
        ) {
            return Err(Error::ResourceGone(format!(
                "builder {id} was terminated before provisioning finished"
            )));
        }
        let (ready, logs) = match req.run.recipe.build_channel() {
            Channel::Console => (console_result(self, &instance, now).await?, None),
            Channel::RunCommand => run_command_result(self, req, &state, &instance, now).await?,
        };
        let status = if ready { Status::Ready } else { Status::Pending };
        Ok(BuildState {
            progress: state.progress.with_status(status),
            logs: logs.or(state.logs.clone()),
            ..state
        })
    }

    /// Terminates the builder; one already gone counts as done.
    async fn finish(&self, req: &StepRequest, _now: i64) -> Result<BuildState> {
        let state = req.steps.build()?;
        ami_core::aws::ec2::terminate(&self.0.ec2, std::slice::from_ref(&state.instance_id)).await?;
        Ok(BuildState {
            terminated: true,
            ..state.clone()
        })
    }

    fn progress(out: &BuildState) -> Option<&Progress> {
        Some(&out.progress)
    }
}

fn build_section(req: &StepRequest) -> Result<(&Build, &ami_core::model::recipe::BaseImage)> {
    match (&req.run.recipe.source, &req.run.recipe.build) {
        (Source::Image(base), Some(build)) => Ok((build, base)),
        (Source::Image(_), None) => Err(Error::invalid("run.recipe.build", "required for an image source")),
        (Source::Instance(_), _) => Err(Error::invalid(
            "run.recipe.source",
            "an instance source has no build step; start at snapshot",
        )),
    }
}

fn tracing_log(instance_id: &str, what: &str) {
    lambda_runtime::tracing::info!(instance_id, "{what}");
}

/// Root and data volumes: always encrypted, deleted with the instance, sized at least as the base image.
fn block_devices(build: &Build, image: &Image, kms_key: Option<&str>) -> Result<Vec<BlockDeviceMapping>> {
    let root_name = image
        .root_device_name()
        .ok_or_else(|| Error::SourceNotTrusted("base image has no root device name".into()))?;
    let base_size = ami_core::aws::image::volume_size(image, root_name).unwrap_or(0);
    let root = &build.root_volume;
    let size = i32::try_from(root.size_gib).unwrap_or(i32::MAX);
    if size != 0 && size < base_size {
        return Err(Error::invalid(
            "recipe.build.root_volume.size_gib",
            format!("the base image's root volume is {base_size} GiB; use at least that, or 0 to keep it"),
        ));
    }
    // A size of 0 keeps the base image's.
    let volume = |device: &str, size: i32, vtype: &str, iops: Option<u32>, throughput: Option<u32>| {
        ami_core::aws::launch::encrypted_volume(
            device,
            kms_key,
            vtype,
            Some(size).filter(|s| *s > 0),
            iops.and_then(|i| i32::try_from(i).ok()),
            throughput.and_then(|t| i32::try_from(t).ok()),
        )
    };
    let mut out = vec![volume(root_name, size, &root.volume_type, root.iops, root.throughput)];
    for v in &build.data_volumes {
        let size = i32::try_from(v.size_gib).unwrap_or(i32::MAX);
        out.push(volume(&v.device_name, size, &v.volume_type, v.iops, v.throughput));
    }
    Ok(out)
}

/// Console channel: ready once the builder stopped with the success marker on its console.
async fn console_result(deps: &Deps, instance: &Instance, now: i64) -> Result<bool> {
    let id = instance.instance_id().unwrap_or_default();
    if instance.state().and_then(|s| s.name()) != Some(&InstanceStateName::Stopped) {
        return Ok(false);
    }
    // `Latest` is "supported on instance types that use the Nitro hypervisor" (GetConsoleOutput API reference);
    // elsewhere the buffered output is read, which the grace below allows for.
    let latest = match instance.instance_type() {
        Some(t) => ami_core::aws::ec2::is_nitro(&deps.0.ec2, t.as_str()).await?,
        None => false,
    };
    let console = ami_core::aws::ec2::console_text(&deps.0.ec2, id, latest).await?;
    match userdata::build_result(&console) {
        Some(Outcome::Passed) => Ok(true),
        Some(Outcome::Failed(why)) => Err(Error::ProvisionFailed(format!(
            "builder {id}: provisioning script reported {why}"
        ))),
        None => match stopped_since(instance) {
            Some(t) if now - t > CONSOLE_GRACE_SECONDS => Err(Error::ProvisionFailed(format!(
                "builder {id} stopped more than {} minutes ago without printing a result: the script was cut \
                 short or the instance was stopped from outside",
                CONSOLE_GRACE_SECONDS / 60
            ))),
            Some(_) => Ok(false),
            None => {
                // No stop time from EC2 (a stop from inside the OS): start the grace period now, on the instance,
                // since the next poll does not see this call's output.
                deps.0
                    .ec2
                    .create_tags()
                    .resources(id)
                    .tags(tags::tag(tags::STOPPED_SEEN, &now.to_string()))
                    .send()
                    .await
                    .aws("CreateTags")?;
                Ok(false)
            }
        },
    }
}

/// Run Command channel (`ami_core::aws::runcommand`): once the agent is online the script is sent, and once it
/// succeeded (Windows: then sysprep, a second command) the step stops the builder; ready when it is stopped and its
/// command(s) succeeded. A builder stopped before that was stopped from outside.
async fn run_command_result(
    deps: &Deps,
    req: &StepRequest,
    state: &BuildState,
    instance: &Instance,
    now: i64,
) -> Result<(bool, Option<CommandLogs>)> {
    let (build, _) = build_section(req)?;
    let id = instance.instance_id().unwrap_or_default();
    let launched_at = instance
        .launch_time()
        .map(|t| t.secs())
        .unwrap_or(state.progress.started_at);
    let instance_type = instance
        .instance_type()
        .map(|t| t.as_str())
        .unwrap_or(&build.instance_type);
    let job = |purpose: Purpose, script: String, agent_needed_since: i64| Job {
        instance_id: id.to_string(),
        execution: req.execution.name.clone(),
        purpose,
        platform: build.platform,
        script,
        timeout_seconds: build.timeout_minutes * 60,
        instance_type: instance_type.to_string(),
        agent_needed_since,
    };
    let script = userdata::run_command_script(
        &req.run,
        &req.execution.name,
        build.platform,
        Purpose::Build,
        &build.script,
    );
    // The agent is needed from launch for the build, and again once the build ended for sysprep.
    let provision = job(Purpose::Build, script, launched_at);
    let sysprep = |build_ended: Option<i64>| {
        (build.platform == Platform::Windows).then(|| {
            job(
                Purpose::Sysprep,
                userdata::sysprep_script(&req.execution.name),
                build_ended.unwrap_or(launched_at),
            )
        })
    };
    let what = format!("provisioning script on builder {id}");
    match instance.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Running) => {
            let (logs, ended_at) = match deps.0.channel.reconcile(&provision, now).await? {
                RcState::Success { logs, ended_at } => (logs, ended_at),
                s if s.is_pending() => return Ok((false, None)),
                s => return Err(command_failed(&what, &s, true)),
            };
            if let Some(sysprep) = &sysprep(ended_at) {
                match deps.0.channel.reconcile(sysprep, now).await? {
                    RcState::Success { .. } => {}
                    s if s.is_pending() => return Ok((false, Some(logs))),
                    // sysprep's failure (a timeout included) is a provisioning failure with its output
                    s => return Err(command_failed(&format!("sysprep on builder {id}"), &s, false)),
                }
            }
            // Snapshots are taken of a stopped builder. StopInstances shuts the OS down cleanly, which also runs the
            // scrub the build script registered (`userdata::run_command_script`).
            deps.0
                .ec2
                .stop_instances()
                .instance_ids(id)
                .send()
                .await
                .aws("StopInstances")?;
            tracing_log(id, "provisioning succeeded; stopping the builder");
            Ok((false, Some(logs)))
        }
        Some(InstanceStateName::Stopped) => {
            // Stopped by this step after success, or from outside before the command(s) finished.
            let mut logs = None;
            // when the agent was needed does not matter here: nothing is sent to a stopped builder
            let sysprep = sysprep(None);
            for job in std::iter::once(&provision).chain(sysprep.as_ref()) {
                let Some(command_id) = deps.0.channel.find(job).await? else {
                    return Err(stopped_early(id, job));
                };
                match deps.0.channel.state_of(job, &command_id).await? {
                    RcState::Success { logs: l, .. } => {
                        logs.get_or_insert(l);
                    }
                    s if s.is_pending() => return Err(stopped_early(id, job)),
                    s => return Err(command_failed(&what, &s, job.purpose == Purpose::Build)),
                }
            }
            Ok((true, logs))
        }
        // pending, stopping
        _ => Ok((false, None)),
    }
}

fn stopped_early(id: &str, job: &Job) -> Error {
    Error::ProvisionFailed(format!(
        "builder {id} stopped before its {} command finished: it was stopped from outside the pipeline",
        job.purpose.as_str()
    ))
}

/// A command that ended without success: its exit code, where its output is, and the output's end. The build
/// script's execution timeout is the recipe's limit (`Timeout`); anything else is `ProvisionFailed`.
fn command_failed(what: &str, state: &RcState, timeout_is_timeout: bool) -> Error {
    let text = runcommand::describe_outcome(what, state).unwrap_or_else(|| format!("{what}: {state:?}"));
    match state {
        RcState::TimedOut { .. } if timeout_is_timeout => Error::Timeout(text),
        _ => Error::ProvisionFailed(text),
    }
}

/// Since when the builder is known to be stopped: the time in its `StateTransitionReason` when EC2 gives one,
/// else the `STOPPED_SEEN` tag an earlier status call put on it.
fn stopped_since(instance: &aws_sdk_ec2::types::Instance) -> Option<i64> {
    stopped_at(instance).or_else(|| tags::get(instance.tags(), tags::STOPPED_SEEN)?.parse().ok())
}

/// The stop time in `StateTransitionReason`, when it has one. The EC2 API reference only says "the reason for the
/// most recent state transition. This might be an empty string"; reported: "User initiated (2021-10-04 14:13:33
/// GMT)" for a stop through the API, "User initiated" without a time for one AWS made (cloud-custodian issue 6924,
/// Cloud9); what a stop from inside the OS (StateReason `Client.InstanceInitiatedShutdown`) reads is not
/// documented, so no time is assumed. moto writes "UTC".
fn stopped_at(instance: &aws_sdk_ec2::types::Instance) -> Option<i64> {
    let reason = instance.state_transition_reason()?;
    let inside = reason.rsplit_once('(')?.1.strip_suffix(')')?;
    let stamp = inside.strip_suffix(" GMT").or_else(|| inside.strip_suffix(" UTC"))?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S").ok()?;
    Some(t.and_utc().timestamp())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod run_command_tests;
