//! test-launch: `start` launches one instance from the candidate image with the recipe's test settings;
//! `status` waits for its status checks, then runs the smoke test through SSM Run Command (`test.channel`,
//! `ami_core::aws::runcommand`) or waits for its console marker, and records boot-to-ready seconds on the image;
//! `finish` terminates the instance, whatever the outcome.
//!
//! With `recipe.test.enabled: false`, `start` returns a state that is already `ready` with an empty
//! `instance_id`; `status` and `finish` then make no calls, so the state machine needs no extra branch.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, Instance, InstanceStateName, InstanceStatusSummary, ShutdownBehavior, SummaryStatus,
};

use ami_core::aws::error::{Error, Result, SdkResultExt};
use ami_core::aws::runcommand::{self, Job, Purpose, State as RcState};
use ami_core::aws::tags;
use ami_core::definition::{self, StepDef};
use ami_core::model::recipe::Channel;
use ami_core::model::steps::{Progress, Status, StepRequest, TestState};
use ami_core::model::userdata::{self, Outcome};
use ami_core::step::{InstanceClients, Step};

/// Clients, built once per process.
pub struct Deps(pub InstanceClients);

impl Step for Deps {
    type Output = TestState;
    const DEF: &'static StepDef = &definition::TEST;

    async fn start(&self, req: &StepRequest, now: i64) -> Result<TestState> {
        let recipe = &req.run.recipe;
        let test = &recipe.test;
        let image = req.steps.register()?;
        if image.region != req.run.region {
            return Err(Error::invalid(
                "input.steps.register.region",
                format!("the candidate is tested in the pipeline's region `{}`", req.run.region),
            ));
        }
        let progress = Progress::start(now, test.timeout_minutes);
        let state = |instance_id: String, launched_at: i64| TestState {
            instance_id,
            image_id: image.image_id.clone(),
            launched_at,
            boot_to_ready_seconds: None,
            terminated: false,
            logs: None,
            progress,
        };
        if !test.enabled {
            return Ok(TestState {
                progress: progress.with_status(Status::Ready),
                ..state(String::new(), now)
            });
        }

        // Test settings fall back to the build's, so the image is tested where it was built; so do the fallbacks of a
        // setting the test does not give itself.
        let build = recipe.build.as_ref();
        let instance_type = test
            .instance_type
            .as_deref()
            .or(build.map(|b| b.instance_type.as_str()))
            .ok_or_else(|| {
                Error::invalid(
                    "run.recipe.test.instance_type",
                    "required when there is no `build` section",
                )
            })?;
        let fallback_types = match (&test.instance_type, build) {
            (None, Some(b)) if test.fallback_instance_types.is_empty() => &b.fallback_instance_types,
            _ => &test.fallback_instance_types,
        };
        let subnet = test
            .subnet_id
            .as_deref()
            .or_else(|| build.and_then(|b| b.subnet_id.as_deref()));
        let fallback_subnets = match (&test.subnet_id, build) {
            (None, Some(b)) if test.fallback_subnet_ids.is_empty() => &b.fallback_subnet_ids,
            _ => &test.fallback_subnet_ids,
        };
        let placements =
            ami_core::aws::launch::placements_with_fallbacks(instance_type, fallback_types, subnet, fallback_subnets);

        // A retried start adopts the instance it already launched, whichever placement it got (the ClientToken covers
        // a lost response of the same placement; with fallbacks the look-up is made once more before launching).
        let mine = vec![
            tags::filter(tags::EXECUTION, &req.execution.name),
            tags::filter(tags::ROLE, tags::Role::TestInstance.as_str()),
        ];
        let found = ami_core::aws::ec2::find_instances_settled(&self.0.ec2, mine, placements.len() > 1).await?;
        if let Some(existing) = found.first() {
            let id = existing
                .instance_id()
                .ok_or_else(|| Error::Internal("DescribeInstances returned an instance without an id".into()))?;
            log(id, "adopted the test instance this execution already launched");
            return Ok(state(id.to_string(), launched_at(existing, now)));
        }
        let groups = match (&test.security_group_ids, build) {
            (groups, _) if !groups.is_empty() => groups.clone(),
            (_, Some(b)) => b.security_group_ids.clone(),
            _ => Vec::new(),
        };
        // Most current instance types boot only from EBS, and RunInstances would refuse an instance-store image
        // (UnsupportedOperation). The trigger checked it before building; checked again before launching (read-only),
        // for a run started before the type's offering changed.
        ami_core::aws::instance_store::check_test_instance_type(&self.0.ec2, recipe).await?;
        let platform = build.map(|b| b.platform).unwrap_or_default();
        let user_data = userdata::smoke_test(&req.run, &req.execution.name, platform, test.script.as_deref());
        let instance = ami_core::aws::launch::Instance {
            ec2: &self.0.ec2,
            image_id: &image.image_id,
            security_group_ids: groups,
            block_devices: encrypted_volumes(req),
            // The builder's profile by default: a Run Command smoke test needs the SSM agent registered, as the
            // build did.
            instance_profile: test
                .instance_profile
                .as_deref()
                .or(build.and_then(|b| b.instance_profile.as_deref()))
                .map(ami_core::aws::launch::instance_profile),
            user_data: user_data.map(|u| aws_smithy_types::base64::encode(u.as_bytes())),
            tags: tags::standard(&req.execution, &req.run, tags::Role::TestInstance),
        };
        let (out, _) = ami_core::aws::launch::launch(&placements, "test instance", |attempt, p| {
            let token = ami_core::aws::launch::launch_token(&req.execution.name, "test", &req.run.region, attempt, p);
            instance
                .run(p, token)
                // If the image powers itself off, nothing is left running (and `status` reports it as a failure).
                .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
        })
        .await?;
        let instance = out
            .instances()
            .first()
            .ok_or_else(|| Error::Internal("RunInstances returned no instance".into()))?;
        let id = instance
            .instance_id()
            .ok_or_else(|| Error::Internal("RunInstances returned an instance without an id".into()))?;
        log(id, "launched the test instance");
        Ok(state(id.to_string(), launched_at(instance, now)))
    }

    async fn status(&self, req: &StepRequest, now: i64) -> Result<TestState> {
        let state = req.steps.test_launch()?.clone();
        if state.instance_id.is_empty() {
            // Only `start` with the test disabled returns no instance, and that state is already ready.
            if req.run.recipe.test.enabled {
                return Err(Error::invalid(
                    "input.steps.test_launch.instance_id",
                    "must name the test instance `start` launched",
                ));
            }
            return Ok(state);
        }
        state.progress.check_deadline(now, "test launch")?;
        let id = &state.instance_id;
        let pending = |state: TestState| TestState {
            progress: state.progress.with_status(Status::Pending),
            ..state
        };

        let Some(instance) = ami_core::aws::ec2::describe_instance(&self.0.ec2, id).await? else {
            // Just launched, EC2 may not know the id yet (eventual consistency): pending, not gone.
            if ami_core::aws::ec2::within_grace(state.launched_at, now) {
                return Ok(pending(state));
            }
            return Err(Error::ResourceGone(format!("test instance {id} no longer exists")));
        };
        match instance.state().and_then(|s| s.name()) {
            Some(InstanceStateName::Running) => {}
            Some(
                s @ (InstanceStateName::Stopping
                | InstanceStateName::Stopped
                | InstanceStateName::ShuttingDown
                | InstanceStateName::Terminated),
            ) => return Err(ended(id, &instance, s)),
            _ => return Ok(pending(state)),
        }

        // Always filtered to the instance: unfiltered calls draw on a smaller throttle bucket.
        let out = self
            .0
            .ec2
            .describe_instance_status()
            .instance_ids(id)
            .include_all_instances(true)
            .send()
            .await
            .aws("DescribeInstanceStatus")?;
        let checks = out.instance_statuses().first();
        let summaries = [
            ("instance", checks.and_then(|c| c.instance_status())),
            ("system", checks.and_then(|c| c.system_status())),
        ];
        for (which, summary) in summaries {
            if let Some(s) = summary.filter(|s| s.status() == Some(&SummaryStatus::Impaired)) {
                return Err(Error::TestFailed(format!(
                    "test instance {id}: {which} status check {}",
                    describe_check(s)
                )));
            }
        }
        let checks_ok = summaries
            .iter()
            .all(|(_, s)| s.and_then(|s| s.status()) == Some(&SummaryStatus::Ok));

        let mut logs = None;
        let smoke_passed = match (&req.run.recipe.test.script, req.run.recipe.test_channel()) {
            (None, _) => true,
            (Some(_), Channel::Console) => {
                // `Latest` only on Nitro types (GetConsoleOutput API reference); elsewhere the buffered output.
                let latest = match instance.instance_type() {
                    Some(t) => ami_core::aws::ec2::is_nitro(&self.0.ec2, t.as_str()).await?,
                    None => false,
                };
                let console = ami_core::aws::ec2::console_text(&self.0.ec2, id, latest).await?;
                match userdata::smoke_result(&console) {
                    Some(Outcome::Passed) => true,
                    Some(Outcome::Failed(why)) => {
                        return Err(Error::TestFailed(format!(
                            "test instance {id}: smoke test reported {why}"
                        )));
                    }
                    None => false,
                }
            }
            // Status checks first, then the smoke test by Run Command (`ami_core::aws::runcommand`).
            (Some(_), Channel::RunCommand) if !checks_ok => false,
            (Some(script), Channel::RunCommand) => {
                let platform = req.run.recipe.build.as_ref().map(|b| b.platform).unwrap_or_default();
                let job = Job {
                    instance_id: id.clone(),
                    execution: req.execution.name.clone(),
                    purpose: Purpose::Smoke,
                    platform,
                    script: userdata::run_command_script(
                        &req.run,
                        &req.execution.name,
                        platform,
                        Purpose::Smoke,
                        script,
                    ),
                    // the smoke test may use what is left of the step's time
                    timeout_seconds: u32::try_from((state.progress.deadline - now).max(60)).unwrap_or(u32::MAX),
                    instance_type: instance
                        .instance_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                    // the image's first boot: the agent is needed from launch
                    agent_needed_since: state.launched_at,
                };
                match self.0.channel.reconcile(&job, now).await? {
                    RcState::Success { logs: l, .. } => {
                        logs = Some(l);
                        true
                    }
                    s if s.is_pending() => false,
                    s => {
                        let what = format!("smoke test on test instance {id}");
                        return Err(Error::TestFailed(
                            runcommand::describe_outcome(&what, &s).unwrap_or_else(|| format!("{what}: {s:?}")),
                        ));
                    }
                }
            }
        };
        if !(checks_ok && smoke_passed) {
            return Ok(pending(state));
        }

        let seconds = (now - state.launched_at).max(0);
        self.0
            .ec2
            .create_tags()
            .resources(&state.image_id)
            .tags(tags::tag(tags::BOOT_TO_READY, &seconds.to_string()))
            // The image passed: if a later step fails, cleanup keeps it for a rerun of the same release and recipe to
            // adopt (ami_core::aws::rerun). Publish makes it `released`.
            .tags(tags::tag(tags::STATE, tags::STATE_TESTED))
            .tags(tags::tag(
                tags::RECIPE_HASH,
                &ami_core::aws::rerun::recipe_hash(&req.run.recipe),
            ))
            .send()
            .await
            .aws("CreateTags")?;
        log(id, "test instance passed");
        Ok(TestState {
            boot_to_ready_seconds: Some(seconds),
            logs,
            progress: state.progress.with_status(Status::Ready),
            ..state
        })
    }

    /// Terminates the test instance; one already gone counts as done. Runs after a pass and on the failure path.
    async fn finish(&self, req: &StepRequest, _now: i64) -> Result<TestState> {
        let state = req.steps.test_launch()?.clone();
        if !state.instance_id.is_empty() {
            ami_core::aws::ec2::terminate(&self.0.ec2, std::slice::from_ref(&state.instance_id)).await?;
            log(&state.instance_id, "terminated the test instance");
        }
        Ok(TestState {
            terminated: true,
            ..state
        })
    }

    fn progress(out: &TestState) -> Option<&Progress> {
        Some(&out.progress)
    }
}

fn log(instance_id: &str, what: &str) {
    lambda_runtime::tracing::info!(instance_id, "{what}");
}

/// When the instance was launched, so boot-to-ready counts from the launch, not from our first look.
fn launched_at(instance: &Instance, now: i64) -> i64 {
    instance.launch_time().map(|t| t.secs()).unwrap_or(now)
}

/// The image's volumes (its snapshots' devices), each asked encrypted and deleted with the instance: the test
/// instance is encrypted whatever the image's snapshots are (EC2 encrypts a volume restored from an unencrypted
/// snapshot when `Encrypted` is true). Overriding a mapping replaces the image's settings for it, so each keeps the
/// builder volume's type, IOPS and throughput: io1/io2 require `Iops`, and gp3 would otherwise fall back to its
/// baseline (EbsBlockDevice, EC2 API reference). None for an image without snapshots (instance store).
fn encrypted_volumes(req: &StepRequest) -> Option<Vec<BlockDeviceMapping>> {
    let snapshots = &req.steps.snapshot.as_ref()?.snapshots;
    let mappings: Vec<BlockDeviceMapping> = snapshots
        .iter()
        .map(|s| {
            ami_core::aws::launch::encrypted_volume(
                &s.device_name,
                None,
                &s.volume_type,
                Some(s.size_gib),
                s.iops,
                s.throughput,
            )
        })
        .collect();
    Some(mappings).filter(|m| !m.is_empty())
}

/// A status check summary as text, for failure messages: `impaired (reachability: failed)`.
fn describe_check(summary: &InstanceStatusSummary) -> String {
    let details: Vec<String> = summary
        .details()
        .iter()
        .map(|d| {
            format!(
                "{}: {}",
                d.name().map(|n| n.as_str()).unwrap_or("?"),
                d.status().map(|s| s.as_str()).unwrap_or("?")
            )
        })
        .collect();
    format!(
        "{} ({})",
        summary.status().map(|s| s.as_str()).unwrap_or("unknown"),
        details.join(", ")
    )
}

/// The instance left `running` before passing. Stopped or terminated through the API means someone else did it;
/// anything else (the guest powered off, a boot failure) is the image's fault.
fn ended(id: &str, instance: &Instance, state: &InstanceStateName) -> Error {
    let reason = instance.state_reason();
    let message = reason.and_then(|r| r.message()).unwrap_or("no reason given");
    if reason.and_then(|r| r.code()) == Some("Client.UserInitiatedShutdown") {
        Error::ResourceGone(format!(
            "test instance {id} is {} from outside the pipeline: {message}",
            state.as_str()
        ))
    } else {
        Error::TestFailed(format!(
            "test instance {id} is {} before passing: {message}",
            state.as_str()
        ))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod run_command_tests;
