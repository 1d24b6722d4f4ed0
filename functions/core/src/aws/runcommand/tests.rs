use aws_sdk_cloudwatchlogs::Client as Logs;
use aws_sdk_cloudwatchlogs::operation::get_log_events::GetLogEventsOutput;
use aws_sdk_cloudwatchlogs::types::OutputLogEvent;
use aws_sdk_ssm::Client as Ssm;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
use aws_sdk_ssm::operation::send_command::{SendCommandInput, SendCommandOutput};
use aws_sdk_ssm::types::{Command, CommandInvocationStatus, InstanceInformation, PingStatus};
use aws_smithy_mocks::{Rule, mock};
use aws_smithy_types::DateTime;

use super::*;
use crate::model::recipe::Platform;
use crate::testing::{self, Captured, NOW};

const INSTANCE: &str = "i-0bbbbbbbbbbbbbbb1";
const GROUP: &str = "/ami-pipeline/run-command";

fn job() -> Job {
    Job {
        instance_id: INSTANCE.into(),
        execution: testing::EXECUTION.into(),
        purpose: Purpose::Build,
        platform: Platform::Linux,
        script: crate::model::userdata::run_command_script(
            &testing::run(),
            testing::EXECUTION,
            Platform::Linux,
            Purpose::Build,
            "dnf -y install nginx",
        ),
        timeout_seconds: 3600,
        instance_type: "t3.micro".into(),
        agent_needed_since: NOW - 60,
    }
}

/// `job()`, needing the agent since `since`.
fn job_since(since: i64) -> Job {
    Job {
        agent_needed_since: since,
        ..job()
    }
}

fn channel(ssm: &[&Rule], logs: &[&Rule]) -> Channel {
    Channel {
        ssm: testing::ssm(ssm),
        logs: testing::logs(logs),
        log_group: Some(GROUP.into()),
        agent_deadline: None,
    }
}

type Listed = &'static [(&'static str, &'static str, i64)];

/// ListCommands answers: one list per call (the last one repeats), each command as (id, comment, requested at).
fn listed(answers: &'static [Listed]) -> Rule {
    let mut seq = mock!(Ssm::list_commands)
        .match_requests(|r| r.instance_id() == Some(INSTANCE))
        .sequence();
    for (i, answer) in answers.iter().enumerate() {
        let times = if i + 1 == answers.len() { 100 } else { 1 };
        seq = seq
            .output(move || {
                let comment = job().comment();
                ListCommandsOutput::builder()
                    .set_commands(Some(
                        answer
                            .iter()
                            .map(|(id, which, at)| {
                                Command::builder()
                                    .command_id(*id)
                                    .comment(if *which == "ours" {
                                        comment.clone()
                                    } else {
                                        which.to_string()
                                    })
                                    .requested_date_time(DateTime::from_secs(*at))
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            })
            .times(times);
    }
    seq.build()
}

fn nothing_listed() -> Rule {
    mock!(Ssm::list_commands)
        .sequence()
        .output(|| ListCommandsOutput::builder().build())
        .repeatedly()
        .build()
}

/// DescribeInstanceInformation: the agent online from the `online_from`-th call (1-based; 0 = never).
fn agent(online_from: usize) -> Rule {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    mock!(Ssm::describe_instance_information)
        .match_requests(|r| {
            r.filters()
                .iter()
                .any(|f| f.key() == "InstanceIds" && f.values() == [INSTANCE.to_string()])
        })
        .then_compute_output(move |_| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let mut out = DescribeInstanceInformationOutput::builder();
            if online_from > 0 && n >= online_from {
                out = out.instance_information_list(
                    InstanceInformation::builder()
                        .instance_id(INSTANCE)
                        .ping_status(PingStatus::Online)
                        .build(),
                );
            }
            out.build()
        })
}

fn send(captured: Captured<SendCommandInput>, id: &'static str) -> Rule {
    mock!(Ssm::send_command)
        .match_requests(|_| true)
        .then_compute_output(move |req| {
            captured.push(req);
            SendCommandOutput::builder()
                .command(Command::builder().command_id(id).build())
                .build()
        })
}

fn invocation(status: CommandInvocationStatus, code: i32, details: &'static str, stdout: &'static str) -> Rule {
    mock!(Ssm::get_command_invocation)
        .match_requests(|r| r.instance_id() == Some(INSTANCE) && r.command_id() == Some("cmd-1"))
        .sequence()
        .output(move || {
            GetCommandInvocationOutput::builder()
                .command_id("cmd-1")
                .instance_id(INSTANCE)
                .status(status.clone())
                .status_details(details)
                .response_code(code)
                .standard_output_content(stdout)
                .build()
        })
        .repeatedly()
        .build()
}

#[tokio::test]
async fn waits_for_the_agent_then_sends_once_it_is_online() {
    let captured = Captured::default();
    let (list, online, sent) = (nothing_listed(), agent(2), send(captured.clone(), "cmd-1"));
    let ch = channel(&[&list, &online, &sent], &[]);
    let first = ch.reconcile(&job(), NOW).await.unwrap();
    assert_eq!(first, State::AgentNotOnline);
    assert!(captured.all().is_empty(), "nothing is sent before the agent is online");

    let second = ch.reconcile(&job(), NOW).await.unwrap();
    assert_eq!(second, State::Sent("cmd-1".into()));
    let req = captured.only();
    assert_eq!(req.document_name(), Some("AWS-RunShellScript"));
    assert_eq!(req.instance_ids(), [INSTANCE.to_string()]);
    assert_eq!(
        req.comment(),
        Some(format!("ami-pipeline build {}", testing::EXECUTION).as_str())
    );
    let params = req.parameters().unwrap();
    assert_eq!(params["executionTimeout"], ["3600".to_string()]);
    let script = &params["commands"][0];
    assert!(script.contains("dnf -y install nginx"));
    assert!(script.contains(&format!("AMI-PIPELINE-ONCE: {}", job().once_key())));
    let cw = req.cloud_watch_output_config().unwrap();
    assert_eq!(cw.cloud_watch_log_group_name(), Some(GROUP));
    assert!(cw.cloud_watch_output_enabled());
}

#[tokio::test]
async fn an_agent_never_online_past_its_deadline_is_its_own_error_and_nothing_is_sent() {
    let captured = Captured::default();
    let (list, offline, sent) = (nothing_listed(), agent(0), send(captured.clone(), "cmd-1"));
    let ch = channel(&[&list, &offline, &sent], &[]);
    let err = waits_for_the_agent_deadline(&ch, &captured).await;
    // AgentNotOnline says what the instance needs.
    assert!(err.to_string().contains(INSTANCE) && err.to_string().contains("AmazonSSMManagedInstanceCore"));
}

/// Within the agent's deadline from when the job needed it the job is pending; past it, it fails `AgentNotOnline`
/// (returned); nothing is sent either way.
async fn waits_for_the_agent_deadline(ch: &Channel, captured: &Captured<SendCommandInput>) -> Error {
    let since = NOW - BASE_AGENT_DEADLINE_SECONDS;
    assert_eq!(
        ch.reconcile(&job_since(since), NOW).await.unwrap(),
        State::AgentNotOnline
    );
    let err = ch.reconcile(&job_since(since - 1), NOW).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.AgentNotOnline");
    assert!(captured.all().is_empty());
    err
}

/// An agent not yet registered may be answered `InvalidInstanceId` (an error ListCommands, DescribeInstanceInformation
/// and SendCommand list for an agent "not registered with the SSM endpoint") instead of an empty list: pending until
/// the deadline, then AgentNotOnline, and nothing sent.
#[tokio::test]
async fn invalid_instance_id_from_an_unregistered_agent_waits_for_the_deadline() {
    let captured = Captured::default();
    let unknown = mock!(Ssm::list_commands)
        .sequence()
        .http_status(400, Some(testing::json_error_body("InvalidInstanceId")))
        .repeatedly()
        .build();
    let unregistered = mock!(Ssm::describe_instance_information)
        .sequence()
        .http_status(400, Some(testing::json_error_body("InvalidInstanceId")))
        .repeatedly()
        .build();
    let sent = send(captured.clone(), "cmd-1");
    let ch = channel(&[&unknown, &unregistered, &sent], &[]);
    waits_for_the_agent_deadline(&ch, &captured).await;
}

/// The first SendCommand is performed but its answer is lost (HTTP 500 on each of the SDK's attempts), and
/// ListCommands does not list it yet at the next poll: the poll sends again. Both copies carry the same comment
/// and the same run-once guard, so the body runs once on the instance (the guard itself is exercised by
/// `userdata::tests::the_run_once_guard_runs_the_body_once`); the reconciler then follows the earliest command.
#[tokio::test]
async fn a_lost_send_answer_resends_the_same_guarded_script_and_follows_the_first_command() {
    let captured = Captured::default();
    let expected = job();
    // The lost copies match only with the very script and comment the later send carries (else `send` below would
    // see them).
    let lost = mock!(Ssm::send_command)
        .match_requests(move |r| {
            r.comment() == Some(expected.comment().as_str())
                && r.parameters().and_then(|p| p.get("commands")) == Some(&vec![expected.script.clone()])
        })
        .sequence()
        .http_status(500, Some(testing::json_error_body("InternalServerError")))
        .times(3)
        .build();
    let resent = send(captured.clone(), "cmd-2");
    let list = listed(&[
        &[],
        &[],
        &[
            ("cmd-2", "ours", NOW - 5),
            ("cmd-1", "ours", NOW - 30),
            ("x", "other", NOW - 90),
        ],
    ]);
    let (online, inv) = (
        agent(1),
        invocation(CommandInvocationStatus::InProgress, -1, "InProgress", ""),
    );
    let ch = channel(&[&list, &online, &lost, &resent, &inv], &[]);

    let err = ch.reconcile(&job(), NOW).await.unwrap_err();
    assert_eq!(
        err.error_type(),
        "AmiPipeline.Transient",
        "a lost answer is retried by the next poll"
    );
    assert_eq!(ch.reconcile(&job(), NOW).await.unwrap(), State::Sent("cmd-2".into()));
    assert_eq!(
        lost.num_calls(),
        3,
        "the SDK's three attempts of the first send, all lost"
    );
    let again = captured.only();
    assert_eq!(again.comment(), Some(job().comment().as_str()));
    assert_eq!(again.parameters().unwrap()["commands"], [job().script]);
    assert!(
        job()
            .script
            .contains(&format!("AMI-PIPELINE-ONCE: {}", job().once_key()))
    );

    // Once listed, the earliest command with our comment is the one followed (cmd-1, which ran the body).
    assert_eq!(ch.reconcile(&job(), NOW).await.unwrap(), State::Running("cmd-1".into()));
    assert_eq!(captured.all().len(), 1, "no further send");
}

#[tokio::test]
async fn a_command_goes_from_unknown_and_pending_to_success_with_its_log_streams() {
    let list = listed(&[&[("cmd-1", "ours", NOW - 30)]]);
    let inv = mock!(Ssm::get_command_invocation)
        .sequence()
        .http_status(400, Some(testing::json_error_body("InvocationDoesNotExist")))
        .output(|| {
            GetCommandInvocationOutput::builder()
                .status(CommandInvocationStatus::Pending)
                .response_code(-1)
                .build()
        })
        .output(|| {
            GetCommandInvocationOutput::builder()
                .status(CommandInvocationStatus::Success)
                .response_code(0)
                .build()
        })
        .build();
    let ch = channel(&[&list, &inv], &[]);
    for _ in 0..2 {
        assert_eq!(ch.reconcile(&job(), NOW).await.unwrap(), State::Running("cmd-1".into()));
    }
    let State::Success { logs, .. } = ch.reconcile(&job(), NOW).await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(logs.log_group.as_deref(), Some(GROUP));
    assert_eq!(
        logs.streams,
        [
            format!("cmd-1/{INSTANCE}/aws-runShellScript/stdout"),
            format!("cmd-1/{INSTANCE}/aws-runShellScript/stderr")
        ]
    );
}

#[tokio::test]
async fn a_failure_carries_the_exit_code_and_the_last_2_kb_of_output_from_cloudwatch_logs() {
    let list = listed(&[&[("cmd-1", "ours", NOW - 30)]]);
    let inv = invocation(
        CommandInvocationStatus::Failed,
        3,
        "Failed",
        "only the first 24,000 characters",
    );
    let stdout = mock!(Logs::get_log_events)
        .match_requests(|r| {
            r.log_group_name() == Some(GROUP)
                && r.log_stream_name() == Some(format!("cmd-1/{INSTANCE}/aws-runShellScript/stdout").as_str())
                && r.start_from_head() == Some(false)
        })
        .then_output(|| {
            let mut out = GetLogEventsOutput::builder();
            for n in 1..200 {
                out = out.events(OutputLogEvent::builder().message(format!("step {n}: ok")).build());
            }
            out.events(
                OutputLogEvent::builder()
                    .message("error: package nginx not found")
                    .build(),
            )
            .build()
        });
    let stderr = mock!(Logs::get_log_events)
        .match_requests(|r| r.log_stream_name().is_some_and(|s| s.ends_with("/stderr")))
        .then_output(|| {
            GetLogEventsOutput::builder()
                .events(OutputLogEvent::builder().message("exit status 3").build())
                .build()
        });
    let ch = channel(&[&list, &inv], &[&stdout, &stderr]);
    let state = ch.reconcile(&job(), NOW).await.unwrap();
    let State::Failed { exit_code, tail, .. } = &state else {
        panic!("expected a failure, got {state:?}");
    };
    assert_eq!(*exit_code, 3);
    assert!(tail.len() <= TAIL_BYTES + 3, "tail is {} bytes", tail.len());
    assert!(tail.contains("error: package nginx not found") && tail.ends_with("exit status 3"));
    assert!(!tail.contains("step 1: ok"), "only the end of the output");
    let text = describe_outcome("provisioning script", &state).unwrap();
    assert!(text.contains("exit code 3"));
    assert!(text.contains(GROUP) && text.contains(&format!("cmd-1/{INSTANCE}/aws-runShellScript/stdout")));
}

#[tokio::test]
async fn without_the_log_streams_the_tail_comes_from_the_invocation() {
    let list = listed(&[&[("cmd-1", "ours", NOW - 30)]]);
    let inv = invocation(CommandInvocationStatus::Failed, 2, "Failed", "installing\nboom");
    let missing = mock!(Logs::get_log_events).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
            aws_smithy_types::body::SdkBody::from(testing::json_error_body("ResourceNotFoundException")),
        )
    });
    let ch = channel(&[&list, &inv], &[&missing]);
    let state = ch.reconcile(&job(), NOW).await.unwrap();
    assert!(
        matches!(&state, State::Failed { exit_code: 2, tail, .. } if tail == "installing\nboom"),
        "{state:?}"
    );
}

#[tokio::test]
async fn an_execution_timeout_and_a_cancellation_are_reported_as_such() {
    let list = listed(&[&[("cmd-1", "ours", NOW - 30)]]);
    let timed_out = invocation(
        CommandInvocationStatus::TimedOut,
        -1,
        "Execution Timed Out",
        "still working",
    );
    let none = mock!(Logs::get_log_events).then_output(|| GetLogEventsOutput::builder().build());
    let ch = channel(&[&list, &timed_out], &[&none]);
    let state = ch.reconcile(&job(), NOW).await.unwrap();
    assert!(
        matches!(&state, State::TimedOut { tail, .. } if tail == "still working"),
        "{state:?}"
    );
    assert!(
        describe_outcome("provisioning script", &state)
            .unwrap()
            .contains("execution timeout")
    );

    let list = listed(&[&[("cmd-1", "ours", NOW - 30)]]);
    let cancelled = invocation(CommandInvocationStatus::Cancelled, -1, "Cancelled", "");
    let ch = channel(&[&list, &cancelled], &[]);
    let state = ch.reconcile(&job(), NOW).await.unwrap();
    assert!(
        matches!(&state, State::Ended { ending: Ending::Cancelled, status, .. } if status == "Cancelled, Cancelled"),
        "{state:?}"
    );
}

#[test]
fn comments_are_deterministic_and_fit_ssm() {
    let long = Job {
        execution: "x".repeat(80),
        purpose: Purpose::Sysprep,
        ..job()
    };
    assert_eq!(long.comment(), long.clone().comment());
    assert!(long.comment().len() <= 100);
    let other = Job {
        execution: format!("{}y", "x".repeat(79)),
        ..long.clone()
    };
    assert_ne!(long.comment(), other.comment());
    assert_eq!(last_bytes("abc", 2), "...bc");
    assert_eq!(last_bytes("é", 1), "...");
}

fn assert_error(err: &Error, error_type: &str, mentions: &[&str]) {
    assert_eq!(err.error_type(), error_type, "{err}");
    let text = err.to_string();
    for m in mentions {
        assert!(text.contains(m), "`{m}` not in: {text}");
    }
}

fn agent_lost(last_ping: i64) -> Rule {
    mock!(Ssm::describe_instance_information).then_output(move || {
        DescribeInstanceInformationOutput::builder()
            .instance_information_list(
                InstanceInformation::builder()
                    .instance_id(INSTANCE)
                    .ping_status(PingStatus::ConnectionLost)
                    .last_ping_date_time(DateTime::from_secs(last_ping))
                    .build(),
            )
            .build()
    })
}

/// The agent was needed long ago (a resend, sysprep after a long build) and is `ConnectionLost` for a moment (a
/// reboot): its deadline runs from its last ping, so it is waited for; a ping older than the deadline fails, saying
/// what was seen and SSM's causes.
#[tokio::test]
async fn a_connection_lost_agent_is_waited_for_from_its_last_ping_not_from_launch() {
    let captured = Captured::default();
    let long_ago = NOW - 2 * BASE_AGENT_DEADLINE_SECONDS;
    let (list, lost, sent) = (nothing_listed(), agent_lost(NOW - 60), send(captured.clone(), "cmd-1"));
    let ch = channel(&[&list, &lost, &sent], &[]);
    assert_eq!(
        ch.reconcile(&job_since(long_ago), NOW).await.unwrap(),
        State::AgentNotOnline
    );

    let (list, lost) = (nothing_listed(), agent_lost(NOW - BASE_AGENT_DEADLINE_SECONDS - 1));
    let ch = channel(&[&list, &lost, &sent], &[]);
    let err = ch.reconcile(&job_since(long_ago), NOW).await.unwrap_err();
    assert_error(
        &err,
        "AmiPipeline.AgentNotOnline",
        &["ConnectionLost", "last ping", "Running, Pending, Stopped, Stopping"],
    );
    assert!(
        captured.all().is_empty(),
        "nothing is sent to an agent that is not Online"
    );
}

/// The agent is Online but SendCommand answers `InvalidInstanceId`: of SSM's causes, a missing permission (or a node
/// state). Pending within the deadline from when the job needed the agent (the agent's pings do not restart it), then
/// an error that says so and names every documented cause; each poll sends once.
#[tokio::test]
async fn invalid_instance_id_while_the_agent_is_online_names_the_documented_causes() {
    let refused = mock!(Ssm::send_command)
        .match_requests(|r| {
            r.instance_ids() == [INSTANCE.to_string()] && r.document_name() == Some("AWS-RunShellScript")
        })
        .sequence()
        .http_status(400, Some(testing::json_error_body("InvalidInstanceId")))
        .repeatedly()
        .build();
    let (list, online) = (nothing_listed(), agent(1));
    let ch = channel(&[&list, &online, &refused], &[]);
    let within = NOW - BASE_AGENT_DEADLINE_SECONDS;
    assert_eq!(
        ch.reconcile(&job_since(within), NOW).await.unwrap(),
        State::AgentNotOnline
    );
    let err = ch.reconcile(&job_since(within - 1), NOW).await.unwrap_err();
    assert_error(
        &err,
        "AmiPipeline.AgentNotOnline",
        &[
            "refused SendCommand",
            "although its agent is Online",
            "no permission to the managed node",
            "Running, Pending, Stopped, Stopping",
            "ssm:SendCommand",
        ],
    );
    assert_eq!(
        refused.num_calls(),
        2,
        "one send per poll, in the order list, agent, send"
    );
}

/// `AGENT_ONLINE_DEADLINE_SECONDS` replaces the derived deadline for every instance (the local stack's 10 s).
#[tokio::test]
async fn the_stacks_deadline_replaces_the_derived_one() {
    let (list, offline, sent) = (nothing_listed(), agent(0), send(Captured::default(), "cmd-1"));
    let ch = Channel {
        agent_deadline: Some(10),
        ..channel(&[&list, &offline, &sent], &[])
    };
    let metal = Job {
        instance_type: "m5.metal".into(),
        ..job_since(NOW - 11)
    };
    assert_eq!(ch.agent_deadline(&metal), 10);
    assert!(ch.reconcile(&metal, NOW).await.is_err());
    assert_eq!(channel(&[], &[]).agent_deadline(&metal), 35 * 60);
}

/// `Undeliverable` is a StatusDetails value (its Status may say Failed, with ResponseCode -1): not a script's exit
/// code, and no output to read.
#[tokio::test]
async fn undeliverable_is_a_status_detail_not_an_exit_code() {
    let list = listed(&[&[("cmd-1", "ours", NOW - 30)]]);
    let inv = invocation(CommandInvocationStatus::Failed, -1, "Undeliverable", "");
    let ch = channel(&[&list, &inv], &[]);
    let state = ch.reconcile(&job(), NOW).await.unwrap();
    assert!(
        matches!(
            &state,
            State::Ended {
                ending: Ending::Undeliverable,
                ..
            }
        ),
        "{state:?}"
    );
    let text = describe_outcome("provisioning script", &state).unwrap();
    assert!(
        text.contains("Undeliverable") && !text.contains("exit code -1"),
        "{text}"
    );
}

/// "If a command expires, it changes status to DeliveryTimedOut for all invocations that have the status InProgress,
/// Pending, or Delayed" (`Command.ExpiresAfter`): a script that had started is not an execution timeout, and its
/// last output is read.
#[tokio::test]
async fn a_command_that_expired_while_running_is_delivery_timed_out_with_its_output() {
    let list = listed(&[&[("cmd-1", "ours", NOW - 30)]]);
    let inv = mock!(Ssm::get_command_invocation).then_output(|| {
        GetCommandInvocationOutput::builder()
            .status(CommandInvocationStatus::TimedOut)
            .status_details("DeliveryTimedOut")
            .execution_start_date_time("2026-11-27T10:00:00.000Z")
            .response_code(-1)
            .standard_output_content("half way")
            .build()
    });
    let none = mock!(Logs::get_log_events).then_output(|| GetLogEventsOutput::builder().build());
    let ch = channel(&[&list, &inv], &[&none]);
    let state = ch.reconcile(&job(), NOW).await.unwrap();
    assert!(
        matches!(&state, State::Ended { ending: Ending::DeliveryTimedOut { started: true }, tail, .. } if tail == "half way"),
        "{state:?}"
    );
    let text = describe_outcome("provisioning script", &state).unwrap();
    assert!(
        text.contains("expired while it was running") && text.contains("DeliveryTimedOut"),
        "{text}"
    );
    assert_eq!(none.num_calls(), 2, "stdout and stderr streams read for the tail");
}

/// A successful command reports when it ended: a next command's agent deadline runs from there.
#[tokio::test]
async fn a_success_reports_when_it_ended() {
    let list = listed(&[&[("cmd-1", "ours", NOW - 30)]]);
    let inv = mock!(Ssm::get_command_invocation).then_output(|| {
        GetCommandInvocationOutput::builder()
            .status(CommandInvocationStatus::Success)
            .status_details("Success")
            .execution_end_date_time("2026-11-27T10:00:00.123456Z")
            .response_code(0)
            .build()
    });
    let ch = channel(&[&list, &inv], &[]);
    let State::Success { ended_at, .. } = ch.reconcile(&job(), NOW).await.unwrap() else {
        panic!("expected success");
    };
    assert_eq!(ended_at, crate::model::time::unix_seconds("2026-11-27T10:00:00Z"));
}
