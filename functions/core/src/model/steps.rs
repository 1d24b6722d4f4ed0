//! Step inputs and outputs: the JSON the state machine passes between handlers.
//!
//! The trigger freezes a [`Run`] (recipe included) into the execution input, so a run is reproducible. Every Task
//! then gets `{action, execution, run, steps}`, where `execution` comes from the context object and `steps` holds
//! every earlier step's output under the step's name.

use serde::{Deserialize, Serialize};

use crate::model::error::{Error, Result};
use crate::model::lifecycle::{PublishOutput, RetireOutput};
use crate::model::platform::ImagePlan;
use crate::model::recipe::Recipe;
use crate::model::rerun::Adopted;
use crate::model::runcommand::CommandLogs;
use crate::model::sharing::ShareState;
pub use crate::model::time::now;

/// The execution, from the Step Functions context object (`$$.Execution.Name`, `$$.Execution.Id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionRef {
    pub name: String,
    #[serde(default)]
    pub id: String,
}

/// What is being built: the release the image carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// RFC 3339 time of the release event (of the schedule, for a scheduled run): how publish orders releases
    /// whose versions are not both semantic versions (tag `ami-pipeline:release-time` on what the run makes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The event's `force`: publish may point parameters and launch templates back at an older release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Release,
    Schedule,
}

/// The execution input the trigger writes: everything a run needs, frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub pipeline: String,
    pub release: Release,
    pub trigger: TriggerKind,
    /// The region the pipeline runs in; images are built here and copied from here.
    pub region: String,
    /// UTC day of the request, `YYYYMMDD`, for `{{date}}` in image names.
    pub date: String,
    pub recipe: Recipe,
    /// Whether the state machine runs a build (image source) or snapshots an instance as it is.
    pub build: bool,
    /// Every region the image ends up in, `region` first: the run's one region list, which copy, share,
    /// publish, retire and cleanup all read.
    pub regions: Vec<String>,
    /// A rerun's tested image (and kept copies) from an earlier attempt: the state machine goes straight to copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<Adopted>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Start,
    Status,
    Finish,
}

impl Action {
    /// Its name in the step input (`"action": "start"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Status => "status",
            Action::Finish => "finish",
        }
    }
}

/// The envelope every step handler receives. The state machine keeps each step's output under `$.steps` and
/// passes all of it, so a step reads what it needs from earlier ones and `status` reads its own `start` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    pub action: Action,
    pub execution: ExecutionRef,
    pub run: Run,
    #[serde(default)]
    pub steps: Steps,
}

/// The outputs of the steps so far: each step's output under `$.steps.<step>`, named like the step's crate
/// (`test_launch` for test-launch: JSONPath's dot notation takes no `-`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<ImageState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_launch: Option<TestState>,
    /// The image in every region of the run, one call for all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<ShareState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire: Option<RetireOutput>,
}

fn missing(step: &str) -> Error {
    Error::invalid(
        format!("input.steps.{step}"),
        format!("required here: pass the `{step}` step's output"),
    )
}

impl Steps {
    /// Every key `Steps` accepts (it denies unknown ones), as written to the contract file.
    pub const KEYS: &'static [&'static str] = &[
        "build",
        "snapshot",
        "register",
        "test_launch",
        "copy",
        "share",
        "publish",
        "retire",
    ];

    pub fn build(&self) -> Result<&BuildState> {
        self.build.as_ref().ok_or_else(|| missing("build"))
    }
    pub fn snapshot(&self) -> Result<&SnapshotState> {
        self.snapshot.as_ref().ok_or_else(|| missing("snapshot"))
    }
    pub fn register(&self) -> Result<&ImageState> {
        self.register.as_ref().ok_or_else(|| missing("register"))
    }
    pub fn test_launch(&self) -> Result<&TestState> {
        self.test_launch.as_ref().ok_or_else(|| missing("test_launch"))
    }
    pub fn copy(&self) -> Result<&CopyState> {
        self.copy.as_ref().ok_or_else(|| missing("copy"))
    }
}

impl StepRequest {
    /// Parses a step input. The recipe in it was validated once, by the trigger, and is carried frozen: a
    /// stricter validator in a later release must not break executions already running.
    pub fn parse(event: serde_json::Value) -> Result<StepRequest> {
        crate::model::input::parse_value("input", event)
    }

    /// The regions other than the home one, in `run.regions` order.
    pub fn copy_regions(&self) -> impl Iterator<Item = &str> {
        self.run
            .regions
            .iter()
            .map(String::as_str)
            .filter(|r| *r != self.run.region)
    }
}

/// The builder instance (build step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildState {
    pub instance_id: String,
    pub source_image_id: String,
    /// Set by `finish` once the builder is terminated (after the image is available).
    #[serde(default)]
    pub terminated: bool,
    /// Where the provisioning command's output is (run-command channel), once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<CommandLogs>,
    #[serde(flatten)]
    pub progress: Progress,
}

/// One snapshot of the image-to-be, with the device it will be mapped to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    pub device_name: String,
    pub volume_id: String,
    pub size_gib: i32,
    pub volume_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<i32>,
}

/// The snapshots of the builder's (or source instance's) volumes (snapshot step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotState {
    pub instance_id: String,
    /// The image the instance was launched from, recorded on the new image.
    pub source_image_id: String,
    pub root_device_name: String,
    pub snapshots: Vec<SnapshotInfo>,
    /// How the image is made (snapshots + RegisterImage, or CreateImage) and what it must report.
    pub plan: ImagePlan,
    /// The image CreateImage made (plan method `create-image`); register adopts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Lowest progress over the snapshots, 0-100.
    pub percent: u32,
    /// What the image's volumes hold, set once the snapshots (or CreateImage) are started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// What a reader of this run should know about the image (a crash-consistent one says so here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(flatten)]
    pub progress: Progress,
}

/// What an image's volumes hold, by the state of the instance when its snapshots were started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// The instance was stopped: everything its OS wrote is on the volumes.
    Stopped,
    /// The instance was running (`source.instance.stop_first: false`): "only the data that has been written to the
    /// volumes at the time the snapshots are created. Buffered data and data in memory that has not yet been
    /// written to the volumes is not included" (CreateImage `NoReboot`, EC2 API reference; CreateSnapshots makes
    /// "crash-consistent" multi-volume snapshots, EBS User Guide).
    CrashConsistent,
}

impl Consistency {
    /// Of an instance that is (`stopped`) or is not stopped when its snapshots start.
    pub fn of(stopped: bool) -> Consistency {
        if stopped {
            Consistency::Stopped
        } else {
            Consistency::CrashConsistent
        }
    }

    /// The warning a crash-consistent image carries in the step output.
    pub fn warning(self, instance_id: &str) -> Option<String> {
        (self == Consistency::CrashConsistent).then(|| {
            format!(
                "instance {instance_id} was running when its volumes were snapshotted (source.instance.stop_first \
                 is false): the image is crash-consistent, holding only what was written to its volumes then, not \
                 buffered or in-memory data; set stop_first to true for an image of the stopped instance"
            )
        })
    }
}

/// An image in one region: the registered candidate (register step) or a copy (copy step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageState {
    pub region: String,
    pub image_id: String,
    pub name: String,
    #[serde(flatten)]
    pub progress: Progress,
}

/// The copy step: the image in every region of the run, `run.regions` order (the home region's tested image
/// first, then one copy per other region). Ready when every copy is available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyState {
    pub images: Vec<ImageState>,
    /// Where the tested image came from (the base image and its test's boot-to-ready seconds), carried here for
    /// the Summary whether this run built and tested it or adopted it from an earlier attempt (`run.adopted`).
    #[serde(default)]
    pub source_image_id: String,
    #[serde(default)]
    pub boot_to_ready_seconds: Option<i64>,
    #[serde(flatten)]
    pub progress: Progress,
}

/// The test instance (test-launch step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestState {
    pub instance_id: String,
    pub image_id: String,
    pub launched_at: i64,
    /// Seconds from launch to passing, once passed (always present, `null` before, so ASL paths resolve).
    #[serde(default)]
    pub boot_to_ready_seconds: Option<i64>,
    /// Set by `finish` once the instance is terminated (or was already gone).
    #[serde(default)]
    pub terminated: bool,
    /// Where the smoke test's output is (run-command channel), once it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<CommandLogs>,
    #[serde(flatten)]
    pub progress: Progress,
}

/// Whether a long-running step is done. A status call answers only `ready`; while pending it fails with
/// `AmiPipeline.NotReady` (see [`settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Ready,
}

/// How the state machine polls a long step, written once here and read by the definition's generator
/// (`definition`): a Wait of `FIRST_POLL_SECONDS` after `start`, then the status Task, retried on
/// `AmiPipeline.NotReady` every `INTERVAL * BACKOFF^n` seconds, capped at `MAX_DELAY`.
///
/// With the first wait equal to `INTERVAL / (BACKOFF - 1)`, the n-th status call comes at
/// `FIRST_POLL_SECONDS * BACKOFF^n` after start, so a result is noticed at most `BACKOFF - 1` (14%) of the step's
/// time late (until the cap, after which it is noticed earlier still), whatever the step's length. Each poll is
/// one state transition and three history events (Step Functions pricing and quotas).
pub mod polling {
    pub const INTERVAL_SECONDS: u32 = 14;
    pub const BACKOFF_RATE: f64 = 1.14;
    pub const MAX_DELAY_SECONDS: u32 = 600;
    pub const FIRST_POLL_SECONDS: u32 = 100;

    /// Seconds from `start` to the status call numbered `attempt` (0 is the first), as the retrier schedules it.
    pub fn call_time(attempt: u32) -> f64 {
        let mut t = f64::from(FIRST_POLL_SECONDS);
        for k in 0..attempt {
            t += (f64::from(INTERVAL_SECONDS) * BACKOFF_RATE.powi(k as i32)).min(f64::from(MAX_DELAY_SECONDS));
        }
        t
    }

    /// Retries the status Task needs so that its last call comes after a deadline of `minutes` (plus one
    /// maximum delay of slack): the handler's `Timeout`, not the retrier running out, ends a step that hangs.
    pub fn attempts_to_cover(minutes: u32) -> u32 {
        let until = f64::from(minutes) * 60.0 + f64::from(MAX_DELAY_SECONDS);
        (0..).find(|&n| call_time(n) >= until).unwrap_or(u32::MAX)
    }
}

/// Deadline bookkeeping shared by every long step. Status calls are stateless: a retried status call gets the
/// same input as the first, so nothing here may change between polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub status: Status,
    /// Unix seconds when the step started.
    pub started_at: i64,
    /// Unix seconds after which the step fails with `AmiPipeline.Timeout`.
    pub deadline: i64,
    /// Seconds the state machine waits before the first status call: 0 when `start` is already done.
    pub wait_seconds: u32,
}

impl Progress {
    pub fn start(now: i64, timeout_minutes: u32) -> Progress {
        Progress {
            status: Status::Pending,
            started_at: now,
            deadline: now + i64::from(timeout_minutes) * 60,
            wait_seconds: polling::FIRST_POLL_SECONDS,
        }
    }

    /// The same progress with `status`; ready needs no wait.
    pub fn with_status(self, status: Status) -> Progress {
        Progress {
            status,
            wait_seconds: if status == Status::Ready { 0 } else { self.wait_seconds },
            ..self
        }
    }

    /// Fails with `Timeout` once the deadline has passed.
    pub fn check_deadline(&self, now: i64, what: &str) -> Result<()> {
        if now > self.deadline {
            Err(Error::Timeout(format!(
                "{what} not done after {} minutes (the recipe's limit)",
                (self.deadline - self.started_at) / 60
            )))
        } else {
            Ok(())
        }
    }
}

/// A status call's answer as the state machine's Retry sees it: a pending state fails with `NotReady` (the
/// poll), and so do throttling and transient failures, so that they cost one poll each instead of drawing on a
/// retrier whose budget, counted per state entry, would otherwise have to last the whole step. The deadline
/// (`Timeout`) still ends a step that stays throttled.
/// A state without progress (`None`) is a one-shot answer, ready as it is.
pub fn settle<T>(result: Result<T>, progress: impl Fn(&T) -> Option<&Progress>, what: &str) -> Result<T> {
    match result {
        Ok(state) if progress(&state).is_none_or(|p| p.status == Status::Ready) => Ok(state),
        Ok(_) => Err(Error::NotReady(format!("{what} still in progress"))),
        Err(e) if e.is_retryable() => Err(Error::NotReady(format!("{what}: {e}; polling again"))),
        Err(e) => Err(e),
    }
}

/// What the trigger did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerStatus {
    /// A new execution started.
    Started,
    /// The execution for this release or schedule day (its latest attempt) is running or succeeded: nothing was
    /// started.
    Duplicate,
    /// The latest attempt ended FAILED, TIMED_OUT or ABORTED: the next attempt started (`<name>-a2`, `-a3` ...),
    /// adopting what the earlier one kept (`model::rerun`).
    Rerun,
    /// A scheduled run found nothing to do: the base image did not change, the recipe says `refresh: never`, or no
    /// recipe is stored for the pipeline (a schedule left behind: logged, not an error).
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerOutput {
    pub status: TriggerStatus,
    pub pipeline: String,
    pub execution_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the nightly refresh of every stored recipe did, pipelines in name order within each list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshOutput {
    /// The schedule's UTC day, `YYYYMMDD`: each run is named `<pipeline>-s-<day>` as a one-pipeline schedule's.
    pub day: String,
    /// A run was started for the day (status `started`, or `rerun` after a failed attempt).
    pub started: Vec<TriggerOutput>,
    /// Nothing to build: the base image is unchanged since the newest image (`refresh: when-source-changes`).
    pub unchanged: Vec<TriggerOutput>,
    /// The day's run was already started by an earlier delivery of this schedule, and is running or succeeded.
    pub duplicate: Vec<TriggerOutput>,
    /// Recipes with `refresh: never`.
    pub opted_out: Vec<String>,
    /// Pipelines not refreshed, each with the error a run of it would have failed with (and its fix).
    pub refused: Vec<Refused>,
}

/// One pipeline the nightly refresh did not refresh, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refused {
    pub pipeline: String,
    /// The stable `AmiPipeline.*` name of the error.
    pub error: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_late_by_at_most_the_backoff_share() {
        // Between the first call and the cap, each wait is (BACKOFF - 1) of the time since start.
        for n in 0..20 {
            let (t, next) = (polling::call_time(n), polling::call_time(n + 1));
            if next - t < f64::from(polling::MAX_DELAY_SECONDS) {
                assert!(
                    (next - t) / t <= polling::BACKOFF_RATE - 1.0 + 1e-9,
                    "call {n}: {t} -> {next}"
                );
            }
        }
        // A 24-hour step is covered by a few hundred calls, not 5,760.
        let n = polling::attempts_to_cover(1440);
        assert!(polling::call_time(n) >= 86_400.0 && n < 200, "{n}");
    }

    #[test]
    fn deadline_is_enforced() {
        let p = Progress::start(0, 5);
        assert!(p.check_deadline(300, "x").is_ok());
        let err = p.check_deadline(301, "build").unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.Timeout");
    }

    #[test]
    fn pending_and_throttled_status_calls_become_not_ready() {
        let pending = Progress::start(0, 5);
        let ready = pending.with_status(Status::Ready);
        assert_eq!(ready.wait_seconds, 0);
        fn p(s: &Progress) -> Option<&Progress> {
            Some(s)
        }
        assert_eq!(settle(Ok(ready), p, "x"), Ok(ready));
        let not_ready = |r: Result<Progress>| settle(r, p, "x").unwrap_err().error_type();
        assert_eq!(not_ready(Ok(pending)), "AmiPipeline.NotReady");
        assert_eq!(not_ready(Err(Error::Throttled("t".into()))), "AmiPipeline.NotReady");
        assert_eq!(not_ready(Err(Error::Transient("t".into()))), "AmiPipeline.NotReady");
        assert_eq!(not_ready(Err(Error::Timeout("t".into()))), "AmiPipeline.Timeout");
        assert_eq!(
            not_ready(Err(Error::ImageFailed("t".into()))),
            "AmiPipeline.ImageFailed"
        );
    }
}
