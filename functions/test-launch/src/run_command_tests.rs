//! The smoke test through SSM Run Command: status checks first, then the script; its exit code and output in the
//! error, its log streams in the result.

use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::describe_instance_status::DescribeInstanceStatusOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::types::{InstanceState, InstanceStatus, InstanceStatusSummary, Reservation};
use aws_sdk_ssm::Client as Ssm;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
use aws_sdk_ssm::operation::send_command::SendCommandInput;
use aws_sdk_ssm::types::{Command, CommandInvocationStatus, InstanceInformation, PingStatus};
use aws_smithy_mocks::{Rule, mock};
use serde_json::json;

use ami_core::model::steps::{ImageState, Progress, Status, StepRequest, TestState};
use ami_testkit::{self as testing, Captured, NOW};

use super::*;

const TESTER: &str = "i-0ddddddddddddddd1";
const CANDIDATE: &str = "ami-0ccccccccccccccc1";

fn deps(ec2: &[&Rule], ssm: &[&Rule]) -> Deps {
    Deps(testing::instance_clients(ec2, ssm))
}

fn request() -> StepRequest {
    let state = TestState {
        instance_id: TESTER.into(),
        image_id: CANDIDATE.into(),
        launched_at: NOW - 200,
        boot_to_ready_seconds: None,
        terminated: false,
        logs: None,
        progress: Progress::start(NOW - 200, 20),
    };
    let image = ImageState {
        region: testing::REGION.into(),
        image_id: CANDIDATE.into(),
        name: "web".into(),
        progress: Progress::start(NOW - 900, 60).with_status(Status::Ready),
    };
    ami_core::model::input::parse_value(
        "input",
        testing::request(
            "status",
            &testing::run(),
            json!({ "register": image, "test_launch": state }),
        ),
    )
    .unwrap()
}

fn running_with_checks(ok: bool) -> (Rule, Rule) {
    let described = mock!(Ec2::describe_instances).then_output(|| {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(
                        aws_sdk_ec2::types::Instance::builder()
                            .instance_id(TESTER)
                            .state(InstanceState::builder().name(InstanceStateName::Running).build())
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let status = if ok {
        SummaryStatus::Ok
    } else {
        SummaryStatus::Initializing
    };
    let checks = mock!(Ec2::describe_instance_status).then_output(move || {
        let summary = InstanceStatusSummary::builder().status(status.clone()).build();
        DescribeInstanceStatusOutput::builder()
            .instance_statuses(
                InstanceStatus::builder()
                    .instance_id(TESTER)
                    .instance_status(summary.clone())
                    .system_status(summary)
                    .build(),
            )
            .build()
    });
    (described, checks)
}

fn listed(ids: &'static [&'static str]) -> Rule {
    mock!(Ssm::list_commands).then_output(move || {
        ListCommandsOutput::builder()
            .set_commands(Some(
                ids.iter()
                    .map(|id| {
                        Command::builder()
                            .command_id(*id)
                            .comment(format!("ami-pipeline smoke {}", testing::EXECUTION))
                            .build()
                    })
                    .collect(),
            ))
            .build()
    })
}

fn invocation(status: CommandInvocationStatus, code: i32, out: &'static str) -> Rule {
    mock!(Ssm::get_command_invocation).then_output(move || testing::invocation_output(status.clone(), code, out))
}

#[tokio::test]
async fn the_smoke_test_is_sent_after_the_status_checks_and_its_success_passes_with_its_logs() {
    // checks still initializing: nothing is sent
    let (inst, initializing) = running_with_checks(false);
    let s = Step::status(&deps(&[&inst, &initializing], &[]), &request(), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);

    // checks ok: the agent is online, the smoke test is sent
    let sent = Captured::<SendCommandInput>::default();
    let (inst, ok) = running_with_checks(true);
    let none = listed(&[]);
    let online = mock!(Ssm::describe_instance_information).then_output(|| {
        DescribeInstanceInformationOutput::builder()
            .instance_information_list(
                InstanceInformation::builder()
                    .instance_id(TESTER)
                    .ping_status(PingStatus::Online)
                    .build(),
            )
            .build()
    });
    let send = testing::send_command(sent.clone(), "cmd-9");
    let s = Step::status(&deps(&[&inst, &ok], &[&none, &online, &send]), &request(), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    let req = sent.only();
    assert_eq!(
        req.comment(),
        Some(format!("ami-pipeline smoke {}", testing::EXECUTION).as_str())
    );
    assert!(req.parameters().unwrap()["commands"][0].contains("curl -fsS http://127.0.0.1/"));

    // it succeeded: passed, boot-to-ready tagged, logs in the result
    let (one, success) = (
        listed(&["cmd-9"]),
        invocation(CommandInvocationStatus::Success, 0, "ok"),
    );
    let tag = mock!(Ec2::create_tags).then_output(|| CreateTagsOutput::builder().build());
    let s = Step::status(&deps(&[&inst, &ok, &tag], &[&one, &success]), &request(), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Ready);
    assert_eq!(
        s.logs.unwrap().streams[0],
        format!("cmd-9/{TESTER}/aws-runShellScript/stdout")
    );
    assert_eq!(tag.num_calls(), 1);
}

#[tokio::test]
async fn a_failed_smoke_test_fails_with_its_exit_code_and_output() {
    let (inst, ok) = running_with_checks(true);
    let (one, failed) = (
        listed(&["cmd-9"]),
        invocation(
            CommandInvocationStatus::Failed,
            7,
            "curl: (7) Failed to connect to 127.0.0.1 port 80",
        ),
    );
    let err = Step::status(&deps(&[&inst, &ok], &[&one, &failed]), &request(), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.TestFailed");
    let text = err.to_string();
    assert!(
        text.contains("exit code 7") && text.contains("Failed to connect"),
        "{text}"
    );
    assert!(
        text.contains(&format!("cmd-9/{TESTER}/aws-runShellScript/stdout")),
        "{text}"
    );
}

/// A sysprepped Windows image's first boot (specialize, OOBE, then EC2Launch and the agent) gets 15 more minutes
/// ("wait up to 15 minutes after launching an instance", GetPasswordData API reference): 20 minutes after launch its
/// agent is still waited for.
#[tokio::test]
async fn a_windows_test_instance_gets_15_more_minutes_for_its_agent() {
    let mut run = testing::run();
    run.recipe.build.as_mut().unwrap().platform = ami_core::model::recipe::Platform::Windows;
    let state = TestState {
        instance_id: TESTER.into(),
        image_id: CANDIDATE.into(),
        launched_at: NOW - 20 * 60,
        boot_to_ready_seconds: None,
        terminated: false,
        logs: None,
        progress: Progress::start(NOW - 20 * 60, 60),
    };
    let image = ImageState {
        region: testing::REGION.into(),
        image_id: CANDIDATE.into(),
        name: "web".into(),
        progress: Progress::start(NOW - 2000, 60).with_status(Status::Ready),
    };
    let req: StepRequest = ami_core::model::input::parse_value(
        "input",
        testing::request("status", &run, json!({ "register": image, "test_launch": state })),
    )
    .unwrap();
    let (inst, ok) = running_with_checks(true);
    let none = listed(&[]);
    let offline =
        mock!(Ssm::describe_instance_information).then_output(|| DescribeInstanceInformationOutput::builder().build());
    let s = Step::status(&deps(&[&inst, &ok], &[&none, &offline]), &req, NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
}
