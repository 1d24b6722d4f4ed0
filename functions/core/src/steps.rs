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
    /// Regions to copy to (the recipe's distribution regions without `region`), for the Map state.
    pub copy_regions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Start,
    Status,
    Finish,
}

/// The envelope every step handler receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRequest<S> {
    pub action: Action,
    pub execution: ExecutionRef,
    pub run: Run,
    /// The step's own previous output, for `status` and `finish`.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub state: Option<S>,
    /// For per-region steps (copy, share): the region this call works on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

fn none<S>() -> Option<S> {
    None
}

impl<S> StepRequest<S> {
    /// The previous output, required for `status` and `finish`.
    pub fn state(&self) -> crate::Result<&S> {
        self.state.as_ref().ok_or_else(|| {
            crate::Error::invalid("input.state", "required for `status` and `finish`: pass the `start` output")
        })
    }
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
