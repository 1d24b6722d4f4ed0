//! Run Command jobs as data: what a command is for, its deterministic comment and run-once key, where its output
//! is, and where it stands. `aws::runcommand` sends and follows them through SSM.

use serde::{Deserialize, Serialize};

use crate::model::recipe::Platform;

/// How much of the end of a failed command's output goes into the error.
pub const TAIL_BYTES: usize = 2048;
/// How long an instance's agent may take to come online, or to come back (our choice: a Linux instance on a
/// virtualized type registers within a few minutes of boot; the stack may override it, `AGENT_ONLINE_DEADLINE_SECONDS`).
pub const BASE_AGENT_DEADLINE_SECONDS: i64 = 15 * 60;
/// Added for a bare metal type: "Launching a bare metal instance boots the underlying server, which includes
/// verifying all hardware and firmware components. This means that it can take 20 minutes from the time the instance
/// enters the running state until it becomes available over the network" (EC2 User Guide, instance type release
/// notes).
pub const BARE_METAL_BOOT_SECONDS: i64 = 20 * 60;
/// Added for Windows: the first boot of a sysprepped image (AWS's Windows AMIs, and ours after sysprep) runs specialize
/// and OOBE before EC2Launch and the agent start; "We recommend that you wait up to 15 minutes after launching an
/// instance before trying to retrieve the generated password" (EC2 API reference, GetPasswordData), the password that
/// EC2Launch generates at that first boot.
pub const WINDOWS_FIRST_BOOT_SECONDS: i64 = 15 * 60;
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
    /// The instance's type: a bare metal instance boots slower ([`agent_deadline_seconds`]).
    pub instance_type: String,
    /// Since when this job needs the agent (unix seconds): the instance's launch for its first command, the end of
    /// the previous command for a later one. The agent's deadline runs from here, or from its last ping when later.
    pub agent_needed_since: i64,
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

/// Whether `instance_type` is a bare metal type: its size is `metal` or `metal-<n>xl` (EC2 User Guide, "Amazon EC2
/// instance type naming conventions"; e.g. `m5.metal`, `m7i.metal-24xl`).
pub fn is_bare_metal(instance_type: &str) -> bool {
    instance_type
        .split_once('.')
        .is_some_and(|(_, size)| size == "metal" || size.starts_with("metal-"))
}

/// How long the agent of an instance of this platform and type may take to come online once it is needed, or to come
/// back after its last ping: the base plus what AWS documents for slow boots ([`BARE_METAL_BOOT_SECONDS`],
/// [`WINDOWS_FIRST_BOOT_SECONDS`]). Derived, not a recipe setting: AWS states these durations per type and platform.
pub fn agent_deadline_seconds(platform: Platform, instance_type: &str) -> i64 {
    let metal = if is_bare_metal(instance_type) {
        BARE_METAL_BOOT_SECONDS
    } else {
        0
    };
    let windows = match platform {
        Platform::Windows => WINDOWS_FIRST_BOOT_SECONDS,
        Platform::Linux => 0,
    };
    BASE_AGENT_DEADLINE_SECONDS + metal + windows
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
    /// The agent cannot take the command yet, within its deadline: not registered, not `Online`, or SSM refused the
    /// command with `InvalidInstanceId`.
    AgentNotOnline,
    /// Sent by this call: the next poll looks at it.
    Sent(String),
    /// Pending, InProgress, Delayed, or not yet known to GetCommandInvocation.
    Running(String),
    /// The script exited 0. `ended_at`: the invocation's `ExecutionEndDateTime` (unix seconds), from which a next
    /// command's agent deadline runs.
    Success { logs: CommandLogs, ended_at: Option<i64> },
    Failed {
        logs: CommandLogs,
        exit_code: i32,
        tail: String,
    },
    /// StatusDetails `Execution Timed Out`: the script ran past the document's `executionTimeout`.
    TimedOut { logs: CommandLogs, tail: String },
    /// Ended without a result of the script's own ([`Ending`]); `tail`: its last output when it had started.
    Ended {
        logs: CommandLogs,
        ending: Ending,
        /// GetCommandInvocation's `Status` and `StatusDetails` as SSM gave them.
        status: String,
        tail: String,
    },
}

/// How SSM ended an invocation whose script gave no result, by GetCommandInvocation's `StatusDetails` (SSM API
/// reference, GetCommandInvocation `StatusDetails`; `Undeliverable` and `Terminated` exist only there, not in
/// `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `Cancelled`, or `Cancelling` (a cancellation under way, which AWS's `CommandExecuted` waiter already counts as
    /// a failure).
    Cancelled,
    /// `Delivery Timed Out`: not delivered before the delivery timeout, or expired at the command's `ExpiresAfter`:
    /// "If a command expires, it changes status to DeliveryTimedOut for all invocations that have the status
    /// InProgress, Pending, or Delayed" (SSM API reference, `Command.ExpiresAfter`). `started`: the script had
    /// started (`ExecutionStartDateTime` set), so it ran in part.
    DeliveryTimedOut { started: bool },
    /// `Undeliverable`: "The node might not exist or might not be responding".
    Undeliverable,
    /// `Terminated`: "The parent command exceeded its MaxErrors limit and subsequent command invocations were
    /// canceled by the system".
    Terminated,
}

/// What an invocation's `Status` and `StatusDetails` mean for the job ([`classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Running,
    Success,
    Failed,
    ExecutionTimedOut,
    Ended(Ending),
}

/// `Status` and `StatusDetails` as AWS defines them (SSM API reference: `CommandInvocationStatus`, GetCommandInvocation
/// `StatusDetails`). StatusDetails decides where it is more precise than Status. AWS's text spells the details with
/// spaces (`Delivery Timed Out`) and `Command.ExpiresAfter` without (`DeliveryTimedOut`): compared without spaces or
/// case. `started`: the plugin has an `ExecutionStartDateTime`. Anything not documented is still running: the step's
/// own deadline bounds it.
pub fn classify(status: &str, details: &str, started: bool) -> Kind {
    let details: String = details
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    match details.as_str() {
        "undeliverable" => return Kind::Ended(Ending::Undeliverable),
        "terminated" => return Kind::Ended(Ending::Terminated),
        "deliverytimedout" => return Kind::Ended(Ending::DeliveryTimedOut { started }),
        "executiontimedout" => return Kind::ExecutionTimedOut,
        _ => {}
    }
    match status {
        "Success" => Kind::Success,
        "Failed" => Kind::Failed,
        // TimedOut without a detail: an execution timeout needs a started script
        "TimedOut" if started => Kind::ExecutionTimedOut,
        "TimedOut" => Kind::Ended(Ending::DeliveryTimedOut { started }),
        "Cancelled" | "Cancelling" => Kind::Ended(Ending::Cancelled),
        // Pending, InProgress, Delayed ("The system will try to send the command again")
        _ => Kind::Running,
    }
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
        State::Ended {
            logs,
            ending,
            status,
            tail,
        } => {
            let why = match ending {
                Ending::Cancelled => "was cancelled from outside the pipeline",
                Ending::DeliveryTimedOut { started: false } => {
                    "was not delivered before its delivery timeout: the instance's agent never took it"
                }
                Ending::DeliveryTimedOut { started: true } => {
                    "expired while it was running: SSM ends an invocation still in progress at the command's \
                     ExpiresAfter, as when its agent stopped reporting (the instance stopped or lost its route to SSM)"
                }
                Ending::Undeliverable => {
                    "could not be delivered: the instance might not exist or might not be responding"
                }
                Ending::Terminated => "was terminated by SSM: its parent command exceeded MaxErrors",
            };
            let tail = if tail.is_empty() {
                String::new()
            } else {
                format!("; last output:\n{tail}")
            };
            Some(format!("{what} {why} (SSM: {status}; {}){tail}", logs.describe()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_and_status_detail_maps_as_aws_defines_it() {
        use Ending::*;
        let cases = [
            ("Pending", "Pending", false, Kind::Running),
            ("InProgress", "InProgress", true, Kind::Running),
            ("InProgress", "In Progress", true, Kind::Running),
            ("Delayed", "Delayed", false, Kind::Running),
            ("Success", "Success", true, Kind::Success),
            ("Failed", "Failed", true, Kind::Failed),
            ("TimedOut", "ExecutionTimedOut", true, Kind::ExecutionTimedOut),
            ("TimedOut", "Execution Timed Out", true, Kind::ExecutionTimedOut),
            // expired at ExpiresAfter: also from InProgress, after the script started
            (
                "TimedOut",
                "DeliveryTimedOut",
                false,
                Kind::Ended(DeliveryTimedOut { started: false }),
            ),
            (
                "TimedOut",
                "Delivery Timed Out",
                true,
                Kind::Ended(DeliveryTimedOut { started: true }),
            ),
            // StatusDetails only: whatever the Status says
            ("Failed", "Undeliverable", false, Kind::Ended(Undeliverable)),
            ("Cancelled", "Terminated", false, Kind::Ended(Terminated)),
            ("Failed", "Terminated", false, Kind::Ended(Terminated)),
            ("Cancelled", "Cancelled", false, Kind::Ended(Cancelled)),
            ("Cancelling", "Cancelling", true, Kind::Ended(Cancelled)),
            ("SomethingNew", "", false, Kind::Running),
        ];
        for (status, details, started, want) in cases {
            assert_eq!(classify(status, details, started), want, "{status} / {details}");
        }
    }

    #[test]
    fn the_agent_deadline_allows_for_bare_metal_and_windows_first_boots() {
        assert_eq!(agent_deadline_seconds(Platform::Linux, "t3.micro"), 15 * 60);
        assert_eq!(agent_deadline_seconds(Platform::Linux, "m5.metal"), 35 * 60);
        assert_eq!(agent_deadline_seconds(Platform::Linux, "m7i.metal-24xl"), 35 * 60);
        assert_eq!(agent_deadline_seconds(Platform::Windows, "m6i.large"), 30 * 60);
        assert_eq!(agent_deadline_seconds(Platform::Windows, "c5.metal"), 50 * 60);
        assert!(!is_bare_metal("metal") && !is_bare_metal("m5.large") && !is_bare_metal("u-6tb1.metalx"));
    }
}
