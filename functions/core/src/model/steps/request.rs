//! What a step is asked: the run the trigger froze, the execution, the action, and the earlier steps' outputs.

use serde::{Deserialize, Serialize};

use super::{BuildState, CopyState, ImageState, SnapshotState, TestState};
use crate::model::error::{Error, Result};
use crate::model::lifecycle::{PublishOutput, RetireOutput};
use crate::model::recipe::Recipe;
use crate::model::rerun::Adopted;
use crate::model::sharing::ShareState;

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
