//! The build's status through SSM Run Command, and the console fallback's `Latest` and late console.

use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::describe_instance_types::DescribeInstanceTypesOutput;
use aws_sdk_ec2::operation::get_console_output::GetConsoleOutputOutput;
use aws_sdk_ec2::operation::stop_instances::{StopInstancesInput, StopInstancesOutput};
use aws_sdk_ec2::types::{InstanceState, InstanceTypeHypervisor, InstanceTypeInfo};
use aws_sdk_ssm::Client as Ssm;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
use aws_sdk_ssm::types::{Command, CommandInvocationStatus, InstanceInformation, PingStatus};
use aws_smithy_mocks::{Rule, mock};
use serde_json::json;

use ami_core::model::recipe::Platform;
use ami_core::model::steps::{BuildState, Progress, Run, Status, StepRequest};
use ami_testkit::{self as testing, BASE_IMAGE, Captured, NOW};

use super::*;

const BUILDER: &str = "i-0bbbbbbbbbbbbbbb1";

fn deps(ec2: &[&Rule], ssm: &[&Rule]) -> Deps {
    Deps(testing::instance_clients(ec2, ssm))
}

fn state() -> BuildState {
    BuildState {
        instance_id: BUILDER.into(),
        source_image_id: BASE_IMAGE.into(),
        terminated: false,
        logs: None,
        progress: Progress::start(NOW - 300, 45),
    }
}

fn run_of(platform: Platform, channel: Channel) -> Run {
    let mut run = testing::run();
    let b = run.recipe.build.as_mut().unwrap();
    b.platform = platform;
    b.channel = channel;
    run
}

fn request(run: &Run) -> StepRequest {
    ami_core::model::input::parse_value("input", testing::request("status", run, json!({ "build": state() }))).unwrap()
}

/// The builder in `name` state, of `instance_type`, launched 5 minutes ago; stopped ones carry their stop time.
fn builder(name: InstanceStateName, instance_type: &'static str, stopped: i64) -> Rule {
    mock!(Ec2::describe_instances)
        .match_requests(|r| r.instance_ids() == [BUILDER.to_string()])
        .then_output(move || {
            testing::described_instance(
                Instance::builder()
                    .instance_id(BUILDER)
                    .instance_type(instance_type.into())
                    .launch_time(aws_smithy_types::DateTime::from_secs(NOW - 300))
                    .state(InstanceState::builder().name(name.clone()).build())
                    .state_transition_reason(testing::transition_reason(&name, stopped))
                    .build(),
            )
        })
}

fn online() -> Rule {
    mock!(Ssm::describe_instance_information).then_output(|| {
        DescribeInstanceInformationOutput::builder()
            .instance_information_list(
                InstanceInformation::builder()
                    .instance_id(BUILDER)
                    .ping_status(PingStatus::Online)
                    .build(),
            )
            .build()
    })
}

/// ListCommands lists the given (command id, purpose) of this execution.
fn listed(commands: &'static [(&'static str, &'static str)]) -> Rule {
    mock!(Ssm::list_commands)
        .match_requests(|r| r.instance_id() == Some(BUILDER))
        .then_output(move || {
            ListCommandsOutput::builder()
                .set_commands(Some(
                    commands
                        .iter()
                        .map(|(id, purpose)| {
                            Command::builder()
                                .command_id(*id)
                                .comment(format!("ami-pipeline {purpose} {}", testing::EXECUTION))
                                .requested_date_time(aws_smithy_types::DateTime::from_secs(NOW - 60))
                                .build()
                        })
                        .collect(),
                ))
                .build()
        })
}

fn invocation(command_id: &'static str, status: CommandInvocationStatus, code: i32, out: &'static str) -> Rule {
    mock!(Ssm::get_command_invocation)
        .match_requests(move |r| r.command_id() == Some(command_id) && r.instance_id() == Some(BUILDER))
        .then_output(move || testing::invocation_output(status.clone(), code, out))
}

fn stop(captured: Captured<StopInstancesInput>) -> Rule {
    mock!(Ec2::stop_instances)
        .match_requests(|_| true)
        .then_compute_output(move |r| {
            captured.push(r);
            StopInstancesOutput::builder().build()
        })
}

#[tokio::test]
async fn the_script_is_sent_once_the_agent_is_online_and_the_builder_is_stopped_after_success() {
    let run = run_of(Platform::Linux, Channel::RunCommand);
    let (sent, stopped) = (Captured::default(), Captured::default());

    // running, agent online, nothing sent yet: the script is sent with the recipe's timeout
    let (running, none, agent, sender) = (
        builder(InstanceStateName::Running, "t3.micro", 0),
        listed(&[]),
        online(),
        testing::send_command(sent.clone(), "cmd-1"),
    );
    let s = Step::status(&deps(&[&running], &[&none, &agent, &sender]), &request(&run), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    let req = sent.only();
    assert_eq!(req.document_name(), Some("AWS-RunShellScript"));
    let timeout = run.recipe.build.as_ref().unwrap().timeout_minutes * 60;
    assert_eq!(req.parameters().unwrap()["executionTimeout"], [timeout.to_string()]);
    assert!(req.parameters().unwrap()["commands"][0].contains("AMI-PIPELINE-ONCE: "));

    // it succeeded: the step stops the builder, still pending
    let (listed1, ok, stopper) = (
        listed(&[("cmd-1", "build")]),
        invocation("cmd-1", CommandInvocationStatus::Success, 0, "provisioned"),
        stop(stopped.clone()),
    );
    let s = Step::status(&deps(&[&running, &stopper], &[&listed1, &ok]), &request(&run), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    assert_eq!(stopped.only().instance_ids(), [BUILDER.to_string()]);

    // stopped, the command succeeded: ready, with where its output is
    let stopped_builder = builder(InstanceStateName::Stopped, "t3.micro", NOW - 30);
    let s = Step::status(&deps(&[&stopped_builder], &[&listed1, &ok]), &request(&run), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Ready);
    let logs = s.logs.expect("logs recorded in the output");
    assert_eq!(logs.log_group.as_deref(), Some(testing::LOG_GROUP));
    assert_eq!(logs.streams[0], format!("cmd-1/{BUILDER}/aws-runShellScript/stdout"));
    assert_eq!(sent.all().len(), 1, "sent once");
    assert_eq!(stopped.all().len(), 1, "stopped once");
}

/// The status of a Linux Run Command build whose one command `cmd-1` is listed, the builder answered by `builder`
/// and the command's invocation by `invocation`: the error it fails with.
async fn first_command_error(builder: Rule, invocation: Rule) -> ami_core::Error {
    let run = run_of(Platform::Linux, Channel::RunCommand);
    let listed1 = listed(&[("cmd-1", "build")]);
    Step::status(&deps(&[&builder], &[&listed1, &invocation]), &request(&run), NOW)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_failed_script_fails_the_build_with_exit_code_output_and_stream() {
    let err = first_command_error(
        builder(InstanceStateName::Running, "t3.micro", 0),
        invocation(
            "cmd-1",
            CommandInvocationStatus::Failed,
            3,
            "installing nginx\nerror: package nginx not found",
        ),
    )
    .await;
    let stream = format!("cmd-1/{BUILDER}/aws-runShellScript/stdout");
    let mentions = ["exit code 3", "error: package nginx not found", &stream];
    testing::assert_error(&err, "AmiPipeline.ProvisionFailed", &mentions);
}

#[tokio::test]
async fn a_script_past_its_execution_timeout_is_a_timeout() {
    let err = first_command_error(
        builder(InstanceStateName::Running, "t3.micro", 0),
        invocation("cmd-1", CommandInvocationStatus::TimedOut, -1, "still working"),
    )
    .await;
    testing::assert_error(&err, "AmiPipeline.Timeout", &["still working"]);
}

#[tokio::test]
async fn a_builder_stopped_from_outside_during_the_command_fails() {
    let err = first_command_error(
        builder(InstanceStateName::Stopped, "t3.micro", NOW - 30),
        invocation("cmd-1", CommandInvocationStatus::InProgress, -1, ""),
    )
    .await;
    testing::assert_error(&err, "AmiPipeline.ProvisionFailed", &["stopped from outside"]);
}

#[tokio::test]
async fn windows_runs_sysprep_as_a_second_command_and_its_failure_is_a_failure() {
    let run = run_of(Platform::Windows, Channel::RunCommand);
    let sent = Captured::default();
    let (running, build_done, ok, agent, sender) = (
        builder(InstanceStateName::Running, "m5.large", 0),
        listed(&[("cmd-1", "build")]),
        invocation("cmd-1", CommandInvocationStatus::Success, 0, ""),
        online(),
        testing::send_command(sent.clone(), "cmd-2"),
    );
    let s = Step::status(
        &deps(&[&running], &[&build_done, &ok, &agent, &sender]),
        &request(&run),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    let req = sent.only();
    assert_eq!(req.document_name(), Some("AWS-RunPowerShellScript"));
    assert_eq!(
        req.comment(),
        Some(format!("ami-pipeline sysprep {}", testing::EXECUTION).as_str())
    );
    assert!(req.parameters().unwrap()["commands"][0].contains("EC2Launch.exe\" sysprep"));

    let (both, sysprep_failed) = (
        listed(&[("cmd-1", "build"), ("cmd-2", "sysprep")]),
        invocation("cmd-2", CommandInvocationStatus::TimedOut, -1, "sysprep hung"),
    );
    let err = Step::status(&deps(&[&running], &[&both, &ok, &sysprep_failed]), &request(&run), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ProvisionFailed", "not a Timeout: {err}");
    assert!(err.to_string().contains("sysprep"));
}

fn nitro(instance_type: &'static str, hypervisor: InstanceTypeHypervisor) -> Rule {
    mock!(Ec2::describe_instance_types)
        .match_requests(move |r| r.instance_types().iter().any(|t| t.as_str() == instance_type))
        .then_output(move || {
            DescribeInstanceTypesOutput::builder()
                .instance_types(
                    InstanceTypeInfo::builder()
                        .instance_type(instance_type.into())
                        .hypervisor(hypervisor.clone())
                        .build(),
                )
                .build()
        })
}

/// The console fallback: a builder whose console catches up only minutes after it stopped is waited for (from
/// the stop time EC2 gives, not from a poll count), and `Latest` is asked only on a Nitro type.
#[tokio::test]
async fn a_console_that_catches_up_minutes_after_the_stop_is_waited_for_and_latest_only_on_nitro() {
    let run = run_of(Platform::Linux, Channel::Console);
    let console = |text: &'static str, latest: Option<bool>| {
        mock!(Ec2::get_console_output)
            .match_requests(move |r| r.instance_id() == Some(BUILDER) && r.latest() == latest)
            .then_output(move || {
                GetConsoleOutputOutput::builder()
                    .output(aws_smithy_types::base64::encode(text.as_bytes()))
                    .build()
            })
    };
    let (stopped_nitro, is_nitro) = (
        builder(InstanceStateName::Stopped, "t3.micro", NOW - 8 * 60),
        nitro("t3.micro", InstanceTypeHypervisor::Nitro),
    );
    // 8 minutes after the stop the console is still empty: pending, not failed
    let empty = console("boot log\n", Some(true));
    let s = Step::status(&deps(&[&stopped_nitro, &is_nitro, &empty], &[]), &request(&run), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    // 12 minutes after the stop it caught up
    let later = builder(InstanceStateName::Stopped, "t3.micro", NOW - 12 * 60);
    let caught_up = console("boot log\nAMI-PIPELINE-RESULT: SUCCESS\n", Some(true));
    let s = Step::status(&deps(&[&later, &is_nitro, &caught_up], &[]), &request(&run), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Ready);

    // a Xen type: the buffered output, without `Latest`
    let (stopped_xen, is_xen) = (
        builder(InstanceStateName::Stopped, "m4.large", NOW - 60),
        nitro("m4.large", InstanceTypeHypervisor::Xen),
    );
    let buffered = console("AMI-PIPELINE-RESULT: SUCCESS\n", None);
    let s = Step::status(&deps(&[&stopped_xen, &is_xen, &buffered], &[]), &request(&run), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Ready);
    assert_eq!(buffered.num_calls(), 1);
}

/// A builder in `name` state, of `instance_type`, launched `ago` seconds before NOW.
fn launched(name: InstanceStateName, instance_type: &'static str, ago: i64) -> Rule {
    mock!(Ec2::describe_instances)
        .match_requests(|r| r.instance_ids() == [BUILDER.to_string()])
        .then_output(move || {
            testing::described_instance(
                Instance::builder()
                    .instance_id(BUILDER)
                    .instance_type(instance_type.into())
                    .launch_time(aws_smithy_types::DateTime::from_secs(NOW - ago))
                    .state(InstanceState::builder().name(name.clone()).build())
                    .build(),
            )
        })
}

fn not_registered() -> Rule {
    mock!(Ssm::describe_instance_information)
        .match_requests(|r| r.filters().iter().any(|f| f.values() == [BUILDER.to_string()]))
        .then_output(|| DescribeInstanceInformationOutput::builder().build())
}

/// "Launching a bare metal instance boots the underlying server ... it can take 20 minutes from the time the instance
/// enters the running state until it becomes available over the network" (EC2 User Guide): 20 minutes after launch
/// a bare metal builder's agent is still waited for, a virtualized one's is not (15 minutes).
#[tokio::test]
async fn a_bare_metal_builder_gets_20_more_minutes_for_its_agent() {
    let run = run_of(Platform::Linux, Channel::RunCommand);
    let (metal, virtualized, none, offline) = (
        launched(InstanceStateName::Running, "m5.metal", 20 * 60),
        launched(InstanceStateName::Running, "m5.large", 20 * 60),
        listed(&[]),
        not_registered(),
    );
    let s = Step::status(&deps(&[&metal], &[&none, &offline]), &request(&run), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    let err = Step::status(&deps(&[&virtualized], &[&none, &offline]), &request(&run), NOW)
        .await
        .unwrap_err();
    testing::assert_error(
        &err,
        "AmiPipeline.AgentNotOnline",
        &["did not come online within 900 s"],
    );
    let late = launched(InstanceStateName::Running, "m5.metal", 35 * 60 + 1);
    let err = Step::status(&deps(&[&late], &[&none, &offline]), &request(&run), NOW)
        .await
        .unwrap_err();
    testing::assert_error(&err, "AmiPipeline.AgentNotOnline", &["within 2100 s"]);
}

/// Sysprep needs the agent once the build command ended, an hour after launch: its deadline runs from the build's
/// `ExecutionEndDateTime`, so an agent not registered at that moment (a reboot after the build) is waited for.
#[tokio::test]
async fn sysprep_waits_for_the_agent_from_the_end_of_the_build_not_from_launch() {
    let run = run_of(Platform::Windows, Channel::RunCommand);
    let ended = chrono::DateTime::from_timestamp(NOW - 60, 0).unwrap().to_rfc3339();
    let (old, build_done, none_yet) = (
        launched(InstanceStateName::Running, "m5.large", 3600),
        listed(&[("cmd-1", "build")]),
        not_registered(),
    );
    let ok = mock!(Ssm::get_command_invocation)
        .match_requests(|r| r.command_id() == Some("cmd-1"))
        .then_output(move || {
            aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput::builder()
                .status(CommandInvocationStatus::Success)
                .status_details("Success")
                .response_code(0)
                .execution_end_date_time(ended.clone())
                .build()
        });
    let state = BuildState {
        progress: Progress::start(NOW - 3600, 120),
        ..state()
    };
    let req: StepRequest =
        ami_core::model::input::parse_value("input", testing::request("status", &run, json!({ "build": state })))
            .unwrap();
    let s = Step::status(&deps(&[&old], &[&build_done, &ok, &none_yet]), &req, NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    assert_eq!(none_yet.num_calls(), 1, "sysprep looked for the agent");
}
