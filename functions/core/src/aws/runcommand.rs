//! SSM Run Command as the channel to the builder and test instances: a stateless reconciler.
//!
//! Status calls are stateless (a retried poll gets the same input), so each call looks at the world and takes the
//! next action: is the instance's agent online (DescribeInstanceInformation)? was our command sent (ListCommands
//! for the instance, matched by a deterministic comment)? else send it (SendCommand); what is its state
//! (GetCommandInvocation)? SendCommand takes no client token and commands cannot be tagged, and ListCommands "may
//! not show a command sent a moment ago" (the Run Command API follows an eventual consistency model, SSM API
//! reference, GetCommandInvocation): a poll can send a second copy. The rendered script therefore carries a
//! run-once guard keyed by the execution (`model::userdata::run_command_script`): the second copy finds the guard
//! and exits 0 without running the body, and the reconciler follows the earliest command with our comment, the
//! one that ran the body. The jobs themselves are `model::runcommand`'s data.
//!
//! Output goes to CloudWatch Logs (`CloudWatchOutputConfig`), streams named by SSM
//! `<command-id>/<instance-id>/<plugin>/stdout|stderr` (Systems Manager User Guide, "Configuring Amazon CloudWatch
//! Logs for Run Command"). GetCommandInvocation holds only "the first 24,000 characters written by the plugin to
//! stdout" (SSM API reference), so a failure's tail is read from the log streams, falling back to the
//! invocation's StandardOutputContent / StandardErrorContent when the logs are not there.

use aws_sdk_ssm::types::{CloudWatchOutputConfig, CommandInvocationStatus, InstanceInformationStringFilter};

use crate::aws::clients::SdkConfig;
use crate::aws::error::{Error, Result, SdkResultExt, aws_code, from_sdk};
pub use crate::model::runcommand::*;

/// The log group for command output (the stack's; set on the build and test-launch functions).
pub const LOG_GROUP_ENV: &str = "RUN_COMMAND_LOG_GROUP";
/// How long after launch an instance's agent may take to come online, in seconds (default 15 minutes).
pub const AGENT_DEADLINE_ENV: &str = "AGENT_ONLINE_DEADLINE_SECONDS";
pub const DEFAULT_AGENT_DEADLINE_SECONDS: i64 = 15 * 60;
/// Log events read from the end of each stream for the tail: enough for [`TAIL_BYTES`] of lines of 4 characters.
const TAIL_EVENTS: i32 = 500;
/// SendCommand `TimeoutSeconds` is the delivery timeout: "If this time is reached and the command hasn't already
/// started running, it won't run" (SSM API reference). The agent is online when we send, so 10 minutes is ample.
const DELIVERY_TIMEOUT_SECONDS: i32 = 600;

/// The clients and settings of the channel, built once per process.
#[derive(Clone)]
pub struct Channel {
    pub ssm: aws_sdk_ssm::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub log_group: Option<String>,
    pub agent_deadline_seconds: i64,
}

impl Channel {
    /// From the shared SDK configuration and the function's environment.
    pub fn from_config(config: &SdkConfig) -> Self {
        let log_group = std::env::var(LOG_GROUP_ENV).ok().filter(|g| !g.is_empty());
        let agent_deadline_seconds = std::env::var(AGENT_DEADLINE_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_AGENT_DEADLINE_SECONDS);
        Channel {
            ssm: aws_sdk_ssm::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            log_group,
            agent_deadline_seconds,
        }
    }

    /// One step of the reconciler: finds our command (else checks the agent and sends it) and reports its state.
    /// `launched_at`: the instance's launch time, from which the agent's deadline runs.
    pub async fn reconcile(&self, job: &Job, launched_at: i64, now: i64) -> Result<State> {
        match self.advance(job).await {
            Ok(Some(state)) => Ok(state),
            // Not registered yet. SSM lists `InvalidInstanceId` among the errors of ListCommands,
            // DescribeInstanceInformation and SendCommand, for an agent "not registered with the SSM endpoint"
            // (SSM API reference): an unregistered agent waits for its deadline whichever way SSM says it.
            Ok(None) => self.not_online(job, launched_at, now),
            Err(Error::Aws { code, .. }) if code == "InvalidInstanceId" => self.not_online(job, launched_at, now),
            Err(e) => Err(e),
        }
    }

    /// Finds our command and reports its state, or sends it once the agent is online (`None`: it is not).
    async fn advance(&self, job: &Job) -> Result<Option<State>> {
        if let Some(command_id) = self.find(job).await? {
            return self.state_of(job, &command_id).await.map(Some);
        }
        if !self.agent_online(&job.instance_id).await? {
            return Ok(None);
        }
        Ok(Some(State::Sent(self.send(job).await?)))
    }

    fn not_online(&self, job: &Job, launched_at: i64, now: i64) -> Result<State> {
        if now - launched_at > self.agent_deadline_seconds {
            return Err(Error::AgentNotOnline(format!(
                "the SSM agent of {} did not come online within {} s of launch: the instance needs the agent, \
                 an instance profile with AmazonSSMManagedInstanceCore, and a route to the ssm, ssmmessages and \
                 ec2messages endpoints (DEPLOY.md); for a base image without the agent set the channel to \
                 `console`",
                job.instance_id, self.agent_deadline_seconds
            )));
        }
        Ok(State::AgentNotOnline)
    }

    /// Our command for this instance, if SSM lists it: the earliest with our comment (a duplicate sent after a
    /// lost answer found the guard and did not run the body).
    pub async fn find(&self, job: &Job) -> Result<Option<String>> {
        let comment = job.comment();
        let mut found: Vec<(f64, String)> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .ssm
                .list_commands()
                .instance_id(&job.instance_id)
                .set_next_token(token.take())
                .send()
                .await
                .aws("ListCommands")?;
            for c in out.commands() {
                if c.comment() == Some(comment.as_str())
                    && let Some(id) = c.command_id()
                {
                    let at = c.requested_date_time().map(|t| t.as_secs_f64()).unwrap_or(f64::MAX);
                    found.push((at, id.to_string()));
                }
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(found.into_iter().next().map(|(_, id)| id))
    }

    /// Whether the instance's agent is registered and `Online`.
    pub async fn agent_online(&self, instance_id: &str) -> Result<bool> {
        let out = self
            .ssm
            .describe_instance_information()
            .filters(
                InstanceInformationStringFilter::builder()
                    .key("InstanceIds")
                    .values(instance_id)
                    .build()
                    .map_err(|e| Error::Internal(format!("DescribeInstanceInformation filter: {e}")))?,
            )
            .send()
            .await
            .aws("DescribeInstanceInformation")?;
        Ok(out
            .instance_information_list()
            .iter()
            .any(|i| i.instance_id() == Some(instance_id) && i.ping_status().map(|p| p.as_str()) == Some("Online")))
    }

    async fn send(&self, job: &Job) -> Result<String> {
        let mut call = self
            .ssm
            .send_command()
            .document_name(job.document())
            .instance_ids(&job.instance_id)
            .comment(job.comment())
            .timeout_seconds(DELIVERY_TIMEOUT_SECONDS)
            .parameters("commands", vec![job.script.clone()])
            // The document's own execution timeout (default 3600 s) bounds the script, from the recipe.
            .parameters("executionTimeout", vec![job.timeout_seconds.to_string()]);
        if let Some(group) = &self.log_group {
            call = call.cloud_watch_output_config(
                CloudWatchOutputConfig::builder()
                    .cloud_watch_log_group_name(group)
                    .cloud_watch_output_enabled(true)
                    .build(),
            );
        }
        let out = call.send().await.aws("SendCommand")?;
        let id = out
            .command()
            .and_then(|c| c.command_id())
            .ok_or_else(|| Error::Internal("SendCommand returned no command id".into()))?;
        lambda_runtime::tracing::info!(instance_id = job.instance_id, command_id = id, "sent {}", job.comment());
        Ok(id.to_string())
    }

    fn logs_of(&self, job: &Job, command_id: &str) -> CommandLogs {
        let prefix = format!("{command_id}/{}/{}", job.instance_id, job.plugin());
        CommandLogs {
            command_id: command_id.to_string(),
            log_group: self.log_group.clone(),
            streams: if self.log_group.is_some() {
                vec![format!("{prefix}/stdout"), format!("{prefix}/stderr")]
            } else {
                Vec::new()
            },
        }
    }

    /// The command's state on the instance.
    pub async fn state_of(&self, job: &Job, command_id: &str) -> Result<State> {
        let out = match self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(&job.instance_id)
            .send()
            .await
        {
            Ok(out) => out,
            // Just after a send the invocation may not be known yet (eventual consistency).
            Err(e) if aws_code(&e) == Some("InvocationDoesNotExist") => return Ok(State::Running(command_id.into())),
            Err(e) => return Err(from_sdk("GetCommandInvocation", e)),
        };
        let logs = self.logs_of(job, command_id);
        let detail = out.status_details().unwrap_or_default().to_string();
        let inline = || {
            let mut text = out.standard_output_content().unwrap_or_default().to_string();
            let err = out.standard_error_content().unwrap_or_default();
            if !err.is_empty() {
                text.push_str("\n--- stderr ---\n");
                text.push_str(err);
            }
            text
        };
        Ok(match out.status() {
            Some(CommandInvocationStatus::Success) => State::Success(logs),
            Some(CommandInvocationStatus::Failed) => {
                let tail = self
                    .tail(&logs)
                    .await
                    .unwrap_or_else(|| last_bytes(&inline(), TAIL_BYTES));
                State::Failed {
                    exit_code: out.response_code(),
                    logs,
                    tail,
                }
            }
            // A delivery timeout never ran the script: for us it is like a cancellation.
            Some(CommandInvocationStatus::TimedOut) if detail == "Delivery Timed Out" => {
                State::Cancelled { logs, detail }
            }
            Some(CommandInvocationStatus::TimedOut) => {
                let tail = self
                    .tail(&logs)
                    .await
                    .unwrap_or_else(|| last_bytes(&inline(), TAIL_BYTES));
                State::TimedOut { logs, tail }
            }
            Some(CommandInvocationStatus::Cancelled | CommandInvocationStatus::Cancelling) => {
                State::Cancelled { logs, detail }
            }
            // Pending, InProgress, Delayed ("the system will try to send the command again").
            _ => State::Running(command_id.into()),
        })
    }

    /// The last [`TAIL_BYTES`] of the command's output from CloudWatch Logs (stdout, then stderr), or None when the
    /// streams cannot be read (no log group, not written yet, no permission): the caller falls back to the
    /// invocation's inline output.
    async fn tail(&self, logs: &CommandLogs) -> Option<String> {
        let group = logs.log_group.as_ref()?;
        let mut parts = Vec::new();
        for stream in &logs.streams {
            let out = match self
                .logs
                .get_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .start_from_head(false)
                .limit(TAIL_EVENTS)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if aws_code(&e) == Some("ResourceNotFoundException") => continue, // nothing on that stream
                Err(e) => {
                    lambda_runtime::tracing::warn!(stream, "GetLogEvents: {}", from_sdk("GetLogEvents", e));
                    return None;
                }
            };
            let text: Vec<&str> = out.events().iter().filter_map(|e| e.message()).collect();
            if !text.is_empty() {
                let label = if stream.ends_with("/stderr") {
                    "--- stderr ---\n"
                } else {
                    ""
                };
                // a full page: the stream has more before it
                let cut = if text.len() == TAIL_EVENTS as usize {
                    "...\n"
                } else {
                    ""
                };
                parts.push(format!("{label}{cut}{}", text.join("\n")));
            }
        }
        if parts.is_empty() {
            return None;
        }
        Some(last_bytes(&parts.join("\n"), TAIL_BYTES))
    }
}

/// Against mocked SSM and CloudWatch Logs: needs the `testing` feature (on in `cargo test --workspace`; alone:
/// `cargo test -p ami-core --features testing`).
#[cfg(all(test, feature = "testing"))]
mod tests;
