//! Run Command jobs as data: what a command is for, its deterministic comment and run-once key, where its output
//! is, and where it stands. `aws::runcommand` sends and follows them through SSM.

use serde::{Deserialize, Serialize};

use crate::model::recipe::Platform;

/// How much of the end of a failed command's output goes into the error.
pub const TAIL_BYTES: usize = 2048;
/// SendCommand `Comment`: at most 100 characters (SSM API reference).
const COMMENT_MAX: usize = 100;

/// What a command is for; part of its comment and its run-once key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The recipe's provisioning script on the builder.
    Build,
    /// Windows: sysprep through EC2Launch v2, after the build script succeeded.
    Sysprep,
    /// The recipe's smoke test on the test instance.
    Smoke,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Build => "build",
            Purpose::Sysprep => "sysprep",
            Purpose::Smoke => "smoke",
        }
    }
}

/// One script to run once on one instance for one execution.
#[derive(Debug, Clone)]
pub struct Job {
    pub instance_id: String,
    pub execution: String,
    pub purpose: Purpose,
    pub platform: Platform,
    /// The rendered script, guard included (`model::userdata::run_command_script`).
    pub script: String,
    /// The execution timeout (the document's `executionTimeout`), from the recipe.
    pub timeout_seconds: u32,
}

impl Job {
    /// Deterministic, so a later poll finds the command with ListCommands: purpose and execution name (execution
    /// names are at most 80 characters; a longer comment is cut and made unique with a hash).
    pub fn comment(&self) -> String {
        let full = format!("ami-pipeline {} {}", self.purpose.as_str(), self.execution);
        if full.len() <= COMMENT_MAX {
            return full;
        }
        let hash = crate::model::naming::short_hash(&[&full], 10);
        format!("{}~{hash}", &full[..COMMENT_MAX - hash.len() - 1])
    }

    /// The run-once key the rendered script guards with.
    pub fn once_key(&self) -> String {
        once_key(&self.execution, self.purpose)
    }

    pub(crate) fn document(&self) -> &'static str {
        match self.platform {
            Platform::Linux => "AWS-RunShellScript",
            Platform::Windows => "AWS-RunPowerShellScript",
        }
    }

    /// The plugin's name as it appears in the stream names (`aws:runShellScript` with `:` as `-`).
    pub(crate) fn plugin(&self) -> &'static str {
        match self.platform {
            Platform::Linux => "aws-runShellScript",
            Platform::Windows => "aws-runPowerShellScript",
        }
    }
}

/// The run-once key for an execution's command: letters, digits, `-`, `_` and `.` only (execution names are
/// letters, digits, `-`, `_`), so it is safe in a path and in the script.
pub fn once_key(execution: &str, purpose: Purpose) -> String {
    format!("{execution}.{}", purpose.as_str())
}

/// Where a command's output is: recorded in the step output and in the error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandLogs {
    pub command_id: String,
    /// The CloudWatch Logs group (absent when the stack configured none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
    /// `<command-id>/<instance-id>/<plugin>/stdout` and `.../stderr`.
    #[serde(default)]
    pub streams: Vec<String>,
}

impl CommandLogs {
    pub fn describe(&self) -> String {
        match &self.log_group {
            Some(group) => format!(
                "command {}, output in CloudWatch Logs group {group}, streams {}",
                self.command_id,
                self.streams.join(", ")
            ),
            None => format!("command {}", self.command_id),
        }
    }
}

/// Where the job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The agent is not online yet (within its deadline).
    AgentNotOnline,
    /// Sent by this call: the next poll looks at it.
    Sent(String),
    /// Pending, InProgress, Delayed, or not yet known to GetCommandInvocation.
    Running(String),
    Success(CommandLogs),
    Failed {
        logs: CommandLogs,
        exit_code: i32,
        tail: String,
    },
    TimedOut {
        logs: CommandLogs,
        tail: String,
    },
    /// Cancelled, or ended by SSM without running (Undeliverable, Terminated, delivery timed out).
    Cancelled {
        logs: CommandLogs,
        detail: String,
    },
}

impl State {
    pub fn is_pending(&self) -> bool {
        matches!(self, State::AgentNotOnline | State::Sent(_) | State::Running(_))
    }
}

/// The end of `text`, at most `max` bytes, cut at a character boundary.
pub fn last_bytes(text: &str, max: usize) -> String {
    let text = text.trim_end();
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// The error text for a command that did not succeed: what, the exit code, where the whole output is, and the tail.
pub fn describe_outcome(what: &str, state: &State) -> Option<String> {
    match state {
        State::Failed { logs, exit_code, tail } => Some(format!(
            "{what} failed with exit code {exit_code} ({}); last output:\n{tail}",
            logs.describe()
        )),
        State::TimedOut { logs, tail } => Some(format!(
            "{what} did not finish within its execution timeout ({}); last output:\n{tail}",
            logs.describe()
        )),
        State::Cancelled { logs, detail } => Some(format!(
            "{what} was cancelled or not delivered ({detail}; {})",
            logs.describe()
        )),
        _ => None,
    }
}
