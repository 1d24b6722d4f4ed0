//! What the trigger answers.

use serde::{Deserialize, Serialize};

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
