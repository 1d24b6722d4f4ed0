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
//! The agent may be unreachable for a while at any point: at first boot, during a reboot the script asked for
//! (`exit 194` / `exit 3010`, "Handling reboots when running commands", Systems Manager User Guide), on a lost
//! connection. So its deadline runs from when the job needed it (`Job::agent_needed_since`) or from its last ping
//! (`LastPingDateTime`), whichever is later, never from the launch alone; SSM's `InvalidInstanceId` covers an agent
//! not registered or not running, a node in an invalid state and a missing permission alike, and the error past the
//! deadline says what was seen and lists them all.
//!
//! Output goes to CloudWatch Logs (`CloudWatchOutputConfig`), streams named by SSM
//! `<command-id>/<instance-id>/<plugin>/stdout|stderr` (Systems Manager User Guide, "Configuring Amazon CloudWatch
//! Logs for Run Command"). GetCommandInvocation holds only "the first 24,000 characters written by the plugin to
//! stdout" (SSM API reference), so a failure's tail is read from the log streams, falling back to the
//! invocation's StandardOutputContent / StandardErrorContent when the logs are not there.

use aws_sdk_ssm::types::{CloudWatchOutputConfig, InstanceInformationStringFilter, PingStatus};

use crate::aws::clients::SdkConfig;
use crate::aws::error::{Error, Result, SdkResultExt, aws_code, from_sdk};
pub use crate::model::runcommand::*;

/// The log group for command output (the stack's; set on the build and test-launch functions).
pub const LOG_GROUP_ENV: &str = "RUN_COMMAND_LOG_GROUP";
/// One agent deadline for every instance, in seconds, instead of the one derived from its platform and type
/// ([`agent_deadline_seconds`]): the local stack's setting (its agents come online in seconds).
pub const AGENT_DEADLINE_ENV: &str = "AGENT_ONLINE_DEADLINE_SECONDS";
/// Log events read from the end of each stream for the tail: enough for [`TAIL_BYTES`] of lines of 4 characters.
const TAIL_EVENTS: i32 = 500;
/// SendCommand `TimeoutSeconds` is the delivery timeout: "If this time is reached and the command hasn't already
/// started running, it won't run" (SSM API reference). The agent is online when we send, so 10 minutes is ample.
const DELIVERY_TIMEOUT_SECONDS: i32 = 600;
/// Why SSM answers `InvalidInstanceId`, in its own words (SSM API reference, SendCommand errors): the error names
/// them all, since SSM does not say which.
const INVALID_INSTANCE_ID_CAUSES: &str = "SSM's documented causes: no permission to the managed node, SSM Agent \
     not running, SSM Agent not registered with the SSM endpoint, or the node not in a valid state (Running, Pending, \
     Stopped, Stopping)";

/// The clients and settings of the channel, built once per process.
#[derive(Clone)]
pub struct Channel {
    pub ssm: aws_sdk_ssm::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub log_group: Option<String>,
    /// [`AGENT_DEADLINE_ENV`], when set.
    pub agent_deadline: Option<i64>,
}

/// What DescribeInstanceInformation says of an instance's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    Online,
    /// Registered, but `ConnectionLost` (or the deprecated `Inactive`): `last_ping` is its `LastPingDateTime`.
    NotOnline {
        ping_status: String,
        last_ping: Option<i64>,
    },
    /// Not listed, or answered `InvalidInstanceId`.
    Unregistered,
}

impl Channel {
    /// From the shared SDK configuration and the function's environment.
    pub fn from_config(config: &SdkConfig) -> Self {
        let log_group = std::env::var(LOG_GROUP_ENV).ok().filter(|g| !g.is_empty());
        let agent_deadline = std::env::var(AGENT_DEADLINE_ENV).ok().and_then(|s| s.parse().ok());
        Channel {
            ssm: aws_sdk_ssm::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            log_group,
            agent_deadline,
        }
    }

    /// How long `job`'s instance may go without an agent that takes commands.
    pub fn agent_deadline(&self, job: &Job) -> i64 {
        self.agent_deadline
            .unwrap_or_else(|| agent_deadline_seconds(job.platform, &job.instance_type))
    }

    /// One step of the reconciler: finds our command (else checks the agent and sends it) and reports its state.
    pub async fn reconcile(&self, job: &Job, now: i64) -> Result<State> {
        if let Some(command_id) = self.find(job).await? {
            return self.state_of(job, &command_id).await;
        }
        let agent = self.agent(&job.instance_id).await?;
        let refused = match agent {
            Agent::Online => match self.send(job).await {
                Ok(id) => return Ok(State::Sent(id)),
                // The agent is Online, so of SSM's causes the likely ones are a missing permission or a node state.
                Err(Error::Aws { code, .. }) if code == "InvalidInstanceId" => true,
                Err(e) => return Err(e),
            },
            _ => false,
        };
        self.not_online(job, &agent, refused, now)
    }

    /// Pending within the agent's deadline, else `AgentNotOnline` naming what was seen and SSM's causes. The deadline
    /// runs from when the job needed the agent, or from the agent's last ping when later (it was alive then: a reboot
    /// or a lost connection restarts the count). A refusal while the agent is Online is counted from when the job
    /// needed it: its pings say nothing about the refusal.
    fn not_online(&self, job: &Job, agent: &Agent, refused: bool, now: i64) -> Result<State> {
        let deadline = self.agent_deadline(job);
        let since = match agent {
            Agent::NotOnline {
                last_ping: Some(ping), ..
            } if !refused => job.agent_needed_since.max(*ping),
            _ => job.agent_needed_since,
        };
        if now - since <= deadline {
            return Ok(State::AgentNotOnline);
        }
        let id = &job.instance_id;
        let seen = match agent {
            _ if refused => format!(
                "SSM refused SendCommand to {id} with InvalidInstanceId for more than {deadline} s although its agent \
                 is Online: most likely the function's role may not send commands to it (ssm:SendCommand on \
                 instances tagged ami-pipeline:role, infra/template.yaml), or the instance is not in a valid state"
            ),
            Agent::NotOnline { ping_status, last_ping } => format!(
                "the SSM agent of {id} is {ping_status} (last ping {}) and did not come back online within {deadline} s",
                last_ping
                    .map(crate::model::time::rfc3339)
                    .unwrap_or_else(|| "unknown".into())
            ),
            _ => format!(
                "the SSM agent of {id} did not come online within {deadline} s of {}",
                crate::model::time::rfc3339(job.agent_needed_since)
            ),
        };
        Err(Error::AgentNotOnline(format!(
            "{seen} ({INVALID_INSTANCE_ID_CAUSES}). The instance needs the agent, an instance profile with \
             AmazonSSMManagedInstanceCore, and a route to the ssm, ssmmessages and ec2messages endpoints (DEPLOY.md); \
             for a base image without the agent set the channel to `console`"
        )))
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
                .await;
            let out = match out {
                Ok(out) => out,
                // Listed among ListCommands' errors for an instance SSM does not know (yet): nothing sent to it.
                Err(e) if aws_code(&e) == Some("InvalidInstanceId") => return Ok(None),
                Err(e) => return Err(from_sdk("ListCommands", e)),
            };
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

    /// The instance's agent as DescribeInstanceInformation sees it.
    pub async fn agent(&self, instance_id: &str) -> Result<Agent> {
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
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) if aws_code(&e) == Some("InvalidInstanceId") => return Ok(Agent::Unregistered),
            Err(e) => return Err(from_sdk("DescribeInstanceInformation", e)),
        };
        let Some(info) = out
            .instance_information_list()
            .iter()
            .find(|i| i.instance_id() == Some(instance_id))
        else {
            return Ok(Agent::Unregistered);
        };
        Ok(match info.ping_status() {
            Some(PingStatus::Online) => Agent::Online,
            other => Agent::NotOnline {
                ping_status: other
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "unknown".into()),
                last_ping: info.last_ping_date_time().map(|t| t.secs()),
            },
        })
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
        let status = out.status().map(|s| s.as_str()).unwrap_or_default();
        let details = out.status_details().unwrap_or_default();
        let started = out.execution_start_date_time().is_some_and(|t| !t.is_empty());
        let inline = || {
            let mut text = out.standard_output_content().unwrap_or_default().to_string();
            let err = out.standard_error_content().unwrap_or_default();
            if !err.is_empty() {
                text.push_str("\n--- stderr ---\n");
                text.push_str(err);
            }
            text
        };
        let kind = classify(status, details, started);
        let tail = match kind {
            Kind::Failed | Kind::ExecutionTimedOut | Kind::Ended(Ending::DeliveryTimedOut { started: true }) => self
                .tail(&logs)
                .await
                .unwrap_or_else(|| last_bytes(&inline(), TAIL_BYTES)),
            _ => String::new(),
        };
        Ok(match kind {
            Kind::Running => State::Running(command_id.into()),
            Kind::Success => State::Success {
                logs,
                ended_at: out.execution_end_date_time().and_then(crate::model::time::unix_seconds),
            },
            Kind::Failed => State::Failed {
                exit_code: out.response_code(),
                logs,
                tail,
            },
            Kind::ExecutionTimedOut => State::TimedOut { logs, tail },
            Kind::Ended(ending) => State::Ended {
                logs,
                ending,
                status: format!("{status}, {details}"),
                tail,
            },
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
