//! Step inputs and outputs: the JSON the state machine passes between handlers.
//!
//! The trigger freezes a [`Run`] (recipe included) into the execution input, so a run is reproducible. Every Task
//! then gets `{action, execution, run, state?, region?}`, where `execution` comes from the context object and
//! `state` is the step's previous output.

use serde::{Deserialize, Serialize};

use crate::recipe::Recipe;

/// The execution, from the Step Functions context object (`$$.Execution.Name`, `$$.Execution.Id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionRef {
    pub name: String,
    #[serde(default)]
    pub id: String,
}

/// What is being built: the release the image carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
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
    /// Every region the image ends up in, `region` first: the state machine's Map runs copy (a no-op for the
    /// home region) and share once per entry.
    pub regions: Vec<String>,
    /// Regions to copy to: `regions` without the home region.
    pub copy_regions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Start,
    Status,
    Finish,
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
    /// For per-region steps (copy, share, publish of one copy): the region this call works on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// The outputs of the steps so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestState>,
    /// Inside the Map over regions: this region's copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<ImageState>,
    /// After the Map: one entry per region, the home region's image first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<ImageState>>,
}

fn missing(step: &str) -> crate::Error {
    crate::Error::invalid(
        format!("input.steps.{step}"),
        format!("required here: pass the `{step}` step's output"),
    )
}

impl Steps {
    pub fn build(&self) -> crate::Result<&BuildState> {
        self.build.as_ref().ok_or_else(|| missing("build"))
    }
    pub fn snapshot(&self) -> crate::Result<&SnapshotState> {
        self.snapshot.as_ref().ok_or_else(|| missing("snapshot"))
    }
    pub fn image(&self) -> crate::Result<&ImageState> {
        self.image.as_ref().ok_or_else(|| missing("image"))
    }
    pub fn test(&self) -> crate::Result<&TestState> {
        self.test.as_ref().ok_or_else(|| missing("test"))
    }
    pub fn copy(&self) -> crate::Result<&ImageState> {
        self.copy.as_ref().ok_or_else(|| missing("copy"))
    }
}

impl StepRequest {
    /// Parses a step input and re-checks the frozen recipe, so nothing malformed reaches an AWS call.
    pub fn parse(event: serde_json::Value) -> crate::Result<StepRequest> {
        let req: StepRequest = crate::input::parse_value("input", event)?;
        req.run.recipe.validate()?;
        Ok(req)
    }

    /// The region a per-region step works on, checked.
    pub fn target_region(&self) -> crate::Result<&str> {
        let r = self
            .region
            .as_deref()
            .ok_or_else(|| crate::Error::invalid("input.region", "required for this step"))?;
        crate::recipe::check_region("input.region", r)?;
        Ok(r)
    }
}

/// The builder instance (build step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildState {
    pub instance_id: String,
    pub source_image_id: String,
    /// Set by `finish` once the builder is terminated (after its snapshots completed).
    #[serde(default)]
    pub terminated: bool,
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
    /// Lowest progress over the snapshots, 0-100.
    pub percent: u32,
    #[serde(flatten)]
    pub progress: Progress,
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
    #[serde(flatten)]
    pub progress: Progress,
}

/// Whether a long-running step is done. The state machine's Choice states match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Ready,
}

/// Poll bookkeeping shared by every long step: when it started, its deadline, and how long to wait next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub status: Status,
    /// Unix seconds when the step started.
    pub started_at: i64,
    /// Unix seconds after which the step fails with `AmiPipeline.Timeout`.
    pub deadline: i64,
    pub polls: u32,
    /// Seconds the state machine waits before the next status call.
    pub wait_seconds: u32,
}

pub const MIN_WAIT: i64 = 15;
pub const MAX_WAIT: i64 = 600;

impl Progress {
    pub fn start(now: i64, timeout_minutes: u32) -> Progress {
        Progress {
            status: Status::Pending,
            started_at: now,
            deadline: now + i64::from(timeout_minutes) * 60,
            polls: 0,
            wait_seconds: MIN_WAIT as u32,
        }
    }

    /// The progress after one more status call. The wait grows with the time already spent (an eighth of it,
    /// 15 s to 10 min), so a result is seen at most ~12% late and a 24-hour copy takes ~170 polls, not 5,760.
    pub fn polled(self, now: i64, status: Status) -> Progress {
        let elapsed = (now - self.started_at).max(0);
        Progress {
            status,
            polls: self.polls.saturating_add(1),
            wait_seconds: (elapsed / 8).clamp(MIN_WAIT, MAX_WAIT) as u32,
            ..self
        }
    }

    /// Fails with `Timeout` once the deadline has passed.
    pub fn check_deadline(&self, now: i64, what: &str) -> crate::Result<()> {
        if now > self.deadline {
            Err(crate::Error::Timeout(format!(
                "{what} not done after {} minutes (the recipe's limit)",
                (self.deadline - self.started_at) / 60
            )))
        } else {
            Ok(())
        }
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_back_off_and_stay_bounded() {
        let p = Progress::start(1_000, 60);
        assert_eq!(p.wait_seconds, 15);
        assert_eq!(p.polled(1_030, Status::Pending).wait_seconds, 15);
        assert_eq!(p.polled(1_000 + 800, Status::Pending).wait_seconds, 100);
        assert_eq!(p.polled(1_000 + 86_400, Status::Pending).wait_seconds, 600);
        // a 24-hour step: count polls when every wait follows the rule
        let (mut t, mut q, mut polls) = (1_000, p, 0);
        while t < 1_000 + 86_400 {
            t += i64::from(q.wait_seconds);
            q = q.polled(t, Status::Pending);
            polls += 1;
        }
        assert!(polls < 250, "{polls} polls");
    }

    #[test]
    fn deadline_is_enforced() {
        let p = Progress::start(0, 5);
        assert!(p.check_deadline(300, "x").is_ok());
        let err = p.check_deadline(301, "build").unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.Timeout");
    }
}

/// What the trigger did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerStatus {
    /// A new execution started.
    Started,
    /// The execution for this release or schedule day already exists: nothing was started.
    Duplicate,
    /// A scheduled run found nothing to do (for example, the base image did not change).
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
