use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::get_console_output::GetConsoleOutputOutput;
use aws_sdk_ec2::operation::run_instances::{RunInstancesInput, RunInstancesOutput};
use aws_sdk_ec2::types::{Instance, InstanceState, InstanceStateName, Reservation, ShutdownBehavior};
use aws_sdk_ec2::{Client as Ec2, types::ImageState};
use aws_smithy_mocks::{Rule, mock};
use serde_json::json;

use ami_core::model::steps::{BuildState, Progress, Status};
use ami_testkit::{self as testing, BASE_IMAGE, Captured, NOW};

use ami_core::model::input;
use ami_core::step::{Step, handle};

use super::*;

const BUILDER: &str = "i-0bbbbbbbbbbbbbbb1";

fn deps(ec2: &[&Rule], ssm: &[&Rule]) -> Deps {
    Deps(testing::instance_clients(ec2, ssm))
}

/// The example run with the console channel (the status tests below are of the console fallback; the Run Command
/// channel's are in `run_command_tests.rs`).
fn console_run() -> ami_core::model::steps::Run {
    let mut run = testing::run();
    if let Some(b) = run.recipe.build.as_mut() {
        b.channel = ami_core::model::recipe::Channel::Console;
    }
    run
}

fn ssm_param() -> Rule {
    testing::ssm_parameter(
        Some("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"),
        BASE_IMAGE,
    )
}

/// What a launch reads first: the base image's parameter, the look-up by tag (no builder yet), the base image.
fn before_launch(base: aws_sdk_ec2::types::Image) -> (Rule, Rule, Rule) {
    (ssm_param(), testing::no_instance_tagged(), images(base))
}

fn images(image: aws_sdk_ec2::types::Image) -> Rule {
    mock!(Ec2::describe_images)
        .sequence()
        .output(move || DescribeImagesOutput::builder().images(image.clone()).build())
        .repeatedly()
        .build()
}

fn run_instances(captured: Captured<RunInstancesInput>) -> Rule {
    testing::run_instances(captured, Instance::builder().instance_id(BUILDER).build())
}

fn start_request() -> serde_json::Value {
    testing::request("start", &testing::run(), json!({}))
}

#[tokio::test]
async fn start_launches_a_locked_down_builder() {
    let captured = Captured::default();
    let ((param, lookup, imgs), run) = (before_launch(testing::base_image()), run_instances(captured.clone()));
    let deps = deps(&[&lookup, &imgs, &run], &[&param]);

    let out = deps
        .start(&input::parse_value("input", start_request()).unwrap(), NOW)
        .await
        .unwrap();
    assert_eq!(out.instance_id, BUILDER);
    assert_eq!(out.source_image_id, BASE_IMAGE);
    assert_eq!(out.progress.status, Status::Pending);
    assert_eq!(out.progress.deadline, NOW + 45 * 60);

    let req = captured.only();
    assert_eq!(req.image_id(), Some(BASE_IMAGE));
    assert_eq!(
        req.client_token(),
        Some(ami_core::model::naming::client_token(testing::EXECUTION, "build", "us-east-1").as_str())
    );
    testing::assert_locked_down(&req, ShutdownBehavior::Stop);
    let devices = req.block_device_mappings();
    assert_eq!(devices.len(), 2, "root plus one data volume");
    for d in devices {
        assert_eq!(d.ebs().unwrap().encrypted(), Some(true), "{d:?}");
        assert_eq!(d.ebs().unwrap().delete_on_termination(), Some(true));
    }
    assert_eq!(devices[0].device_name(), Some("/dev/xvda"));
    assert_eq!(devices[0].ebs().unwrap().volume_size(), Some(16));
    for tags in testing::tagged_on_create(&req, "builder") {
        assert_eq!(tags::get(tags, tags::SOURCE_IMAGE), Some(BASE_IMAGE));
    }
    // Run Command (the default channel) sends the script later, and the step stops the builder
    testing::assert_run_command_user_data(&req, userdata::BUILDER_TAG, "/etc/web-release");
}

#[tokio::test]
async fn retried_start_adopts_the_builder_instead_of_launching_again() {
    let captured = Captured::default();
    let existing = mock!(Ec2::describe_instances).then_output(|| {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(Instance::builder().instance_id(BUILDER).image_id(BASE_IMAGE).build())
                    .build(),
            )
            .build()
    });
    let run = run_instances(captured.clone());
    let deps = deps(&[&existing, &run], &[]);
    let out = handle(&deps, start_request()).await.unwrap();
    assert_eq!(out.instance_id, BUILDER);
    assert_eq!(run.num_calls(), 0, "no second launch");
}

#[tokio::test]
async fn throttled_launch_is_retried_then_succeeds() {
    let run = ami_testkit::throttled_once!(Ec2::run_instances, || {
        RunInstancesOutput::builder()
            .instances(Instance::builder().instance_id(BUILDER).build())
            .build()
    });
    let (deps, _) = launch_deps(&[&run]);
    let out = handle(&deps, start_request()).await.unwrap();
    assert_eq!(out.instance_id, BUILDER);
    assert_eq!(run.num_calls(), 2);
}

#[tokio::test]
async fn untrusted_owner_is_rejected_before_any_launch() {
    let run = run_instances(Captured::default());
    let (param, lookup) = (ssm_param(), testing::no_instance_tagged());
    // Restricted to the trusted owners, EC2 finds nothing; unrestricted, it finds someone else's image.
    let trusted = testing::finds_no_images(mock!(Ec2::describe_images).match_requests(|r| !r.owners().is_empty()));
    let foreign = testing::base_image_builder()
        .owner_id("999999999999")
        .set_image_owner_alias(None)
        .build();
    let any = mock!(Ec2::describe_images)
        .then_output(move || DescribeImagesOutput::builder().images(foreign.clone()).build());
    let deps = deps(&[&lookup, &trusted, &any, &run], &[&param]);
    let err = handle(&deps, start_request()).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.SourceNotTrusted", &["999999999999"]);
    assert_eq!(run.num_calls(), 0);
}

#[tokio::test]
async fn deprecated_or_wrong_architecture_base_image_is_rejected() {
    for (image, why) in [
        (
            testing::base_image_builder()
                .deprecation_time(testing::rfc3339(NOW - 60))
                .build(),
            "deprecated",
        ),
        (
            testing::base_image_builder()
                .architecture(aws_sdk_ec2::types::ArchitectureValues::Arm64)
                .build(),
            "arm64",
        ),
        (
            testing::base_image_builder().state(ImageState::Failed).build(),
            "failed",
        ),
    ] {
        let run = run_instances(Captured::default());
        let (param, lookup, imgs) = before_launch(image);
        let deps = deps(&[&lookup, &imgs, &run], &[&param]);
        let err = deps
            .start(&input::parse_value("input", start_request()).unwrap(), NOW)
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.SourceNotTrusted", "{why}: {err}");
        assert!(err.to_string().contains(why), "{err}");
        assert_eq!(run.num_calls(), 0);
    }
}

#[tokio::test]
async fn a_boot_mode_or_tpm_the_base_cannot_give_is_rejected_before_any_launch() {
    // The old Windows example: a legacy-BIOS `Windows_Server-2022-*` base registered as uefi with NitroTPM.
    let legacy_windows = testing::base_image_builder()
        .set_boot_mode(None)
        .platform_details("Windows")
        .usage_operation("RunInstances:0002")
        .build();
    for tpm in [false, true] {
        let run = run_instances(Captured::default());
        let (param, lookup, base) = before_launch(legacy_windows.clone());
        let deps = deps(&[&lookup, &base, &run], &[&param]);
        let mut req = start_request();
        req["run"]["recipe"]["image"]["boot_mode"] = json!("uefi");
        req["run"]["recipe"]["image"]["tpm_support"] = json!(tpm);
        let err = handle(&deps, req).await.unwrap_err();
        testing::assert_error(&err, "AmiPipeline.InvalidInput", &["recipe.image.boot_mode"]);
        assert_eq!(run.num_calls(), 0);
    }
}

// The recipe's rules (an empty owner allow-list, say) are checked once, by the trigger; the frozen recipe is not
// re-validated here, so a stricter validator in a later release cannot break a running execution.
ami_testkit::step_contract_tests! {
    deps: |calls: &ami_testkit::Calls| Deps(calls.instance_clients(&[], &[])),
    request: start_request,
    malformed: [
        (
            |r| r["run"]["recipe"]["build"]["timeout_minutes"] = json!("soon"),
            "input.run.recipe.build.timeout_minutes",
        ),
    ],
    rejects: [],
    persistent_throttling: {
        rule: ami_testkit::throttled_always!(Ec2::run_instances),
        deps: |run: Rule| {
            let (param, lookup, imgs) = before_launch(testing::base_image());
            deps(&[&lookup, &imgs, &run], &[&param])
        },
    },
}

fn state() -> BuildState {
    state_at(NOW)
}

/// A builder started 100 s before `now`, with a 45-minute deadline.
fn state_at(now: i64) -> BuildState {
    let progress = Progress::start(now - 100, 45);
    BuildState {
        instance_id: BUILDER.into(),
        source_image_id: BASE_IMAGE.into(),
        terminated: false,
        logs: None,
        progress,
    }
}

fn status_request(s: &BuildState) -> StepRequest {
    input::parse_value(
        "input",
        testing::request("status", &console_run(), json!({ "build": s })),
    )
    .unwrap()
}

fn instance_in(states: &'static [InstanceStateName]) -> Rule {
    stopped_at(states, NOW - 60)
}

/// The builder in `states`, one per call; a stopped one records `stopped` as EC2 does ("User initiated (... GMT)").
fn stopped_at(states: &'static [InstanceStateName], stopped: i64) -> Rule {
    let mut seq = mock!(Ec2::describe_instances).sequence();
    for s in states {
        let reason = testing::transition_reason(s, stopped);
        seq = seq.output(move || {
            testing::described_instance(
                Instance::builder()
                    .instance_id(BUILDER)
                    .state(InstanceState::builder().name(s.clone()).build())
                    .state_transition_reason(reason.clone())
                    .build(),
            )
        });
    }
    seq.build()
}

fn console(text: &'static str) -> Rule {
    mock!(Ec2::get_console_output)
        // the mocked builders have no instance type: not known to be Nitro, so no `Latest`
        .match_requests(|r| r.instance_id() == Some(BUILDER) && r.latest().is_none())
        .sequence()
        .output(move || {
            GetConsoleOutputOutput::builder()
                .output(aws_smithy_types::base64::encode(text.as_bytes()))
                .build()
        })
        .repeatedly()
        .build()
}

/// Through `handle`, as the state machine calls it: a pending builder fails the call with `NotReady` (the Retry
/// polls again with the same input), a throttled read too, and a stopped builder with its success marker is ready.
#[tokio::test]
async fn status_is_not_ready_while_running_or_throttled_then_ready_once_stopped_with_success() {
    let throttled = mock!(Ec2::describe_instances)
        .sequence()
        .http_status(503, Some(testing::ec2_error_body("RequestLimitExceeded")))
        .times(3)
        .build();
    let states = instance_in(&[
        InstanceStateName::Pending,
        InstanceStateName::Running,
        InstanceStateName::Stopped,
    ]);
    let con = console("cloud-init ...\nAMI-PIPELINE-RESULT: SUCCESS\n");
    let now = ami_core::model::steps::now();
    let req = testing::request("status", &console_run(), json!({ "build": state_at(now) }));
    let mut seen = vec![];
    for rules in [
        vec![&throttled],
        vec![&states, &con],
        vec![&states, &con],
        vec![&states, &con],
    ] {
        let deps = deps(&rules, &[]);
        seen.push(match handle(&deps, req.clone()).await {
            Ok(s) => format!("{:?}", s.progress.status),
            Err(e) => e.error_type().to_string(),
        });
    }
    assert_eq!(
        seen,
        [
            "AmiPipeline.NotReady",
            "AmiPipeline.NotReady",
            "AmiPipeline.NotReady",
            "Ready"
        ]
    );
    assert_eq!(throttled.num_calls(), 3, "the SDK's own attempts, then NotReady");
    assert_eq!(con.num_calls(), 1, "console read only once stopped");
}

#[tokio::test]
async fn failure_marker_fails_the_build_with_the_reason() {
    let states = instance_in(&[InstanceStateName::Stopped]);
    let con = console("AMI-PIPELINE-RESULT: FAILURE exit=3\n");
    let deps = deps(&[&states, &con], &[]);
    let err = deps.status(&status_request(&state()), NOW).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.ProvisionFailed", &["exit=3"]);
}

/// Console output lags the stop, so a stopped builder without a marker is pending until the grace period after
/// the stop time EC2 records has passed, whatever the number of polls.
#[tokio::test]
async fn stopped_without_marker_waits_for_the_console_then_fails() {
    let con = console("booting\n");
    let recently = stopped_at(&[InstanceStateName::Stopped], NOW - CONSOLE_GRACE_SECONDS + 30);
    let deps_recent = deps(&[&recently, &con], &[]);
    let s = Step::status(&deps_recent, &status_request(&state()), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    let long_ago = stopped_at(&[InstanceStateName::Stopped], NOW - CONSOLE_GRACE_SECONDS - 30);
    let deps_old = deps(&[&long_ago, &con], &[]);
    let err = Step::status(&deps_old, &status_request(&state()), NOW)
        .await
        .unwrap_err();
    testing::assert_error(
        &err,
        "AmiPipeline.ProvisionFailed",
        &["stopped more than 15 minutes ago"],
    );
}

/// A stop from inside the OS carries no time in `StateTransitionReason` ("User initiated"): the first status call
/// that sees it stopped without a result tags the builder with the time, and later ones (same input) count the
/// grace period from that tag.
#[tokio::test]
async fn stopped_from_inside_without_marker_is_timed_by_a_tag_on_the_builder() {
    use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
    fn stopped(tag: Option<i64>) -> Rule {
        mock!(Ec2::describe_instances)
            .sequence()
            .output(move || {
                let mut i = Instance::builder()
                    .instance_id(BUILDER)
                    .state(InstanceState::builder().name(InstanceStateName::Stopped).build())
                    .state_transition_reason("User initiated");
                if let Some(t) = tag {
                    i = i.tags(tags::tag(tags::STOPPED_SEEN, &t.to_string()));
                }
                DescribeInstancesOutput::builder()
                    .reservations(Reservation::builder().instances(i.build()).build())
                    .build()
            })
            .build()
    }
    let con = console("booting\n");
    let tagged = mock!(Ec2::create_tags)
        .match_requests(|r| {
            r.resources() == [BUILDER]
                && r.tags()
                    .iter()
                    .any(|t| t.key() == Some(tags::STOPPED_SEEN) && t.value() == Some(&NOW.to_string()))
        })
        .then_output(|| CreateTagsOutput::builder().build());
    let first = stopped(None);
    let s = Step::status(&deps(&[&first, &con, &tagged], &[]), &status_request(&state()), NOW)
        .await
        .unwrap();
    assert_eq!((s.progress.status, tagged.num_calls()), (Status::Pending, 1));
    let recent = stopped(Some(NOW - 60));
    let s = Step::status(&deps(&[&recent, &con], &[]), &status_request(&state()), NOW)
        .await
        .unwrap();
    assert_eq!(
        s.progress.status,
        Status::Pending,
        "within the grace period: no second tag, still waiting"
    );
    let old = stopped(Some(NOW - CONSOLE_GRACE_SECONDS - 1));
    let err = Step::status(&deps(&[&old, &con], &[]), &status_request(&state()), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ProvisionFailed");
}

#[tokio::test]
async fn builder_terminated_by_someone_else_is_resource_gone() {
    let states = instance_in(&[InstanceStateName::Terminated]);
    let deps = deps(&[&states], &[]);
    let err = deps.status(&status_request(&state()), NOW).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ResourceGone");
}

#[tokio::test]
async fn past_the_deadline_is_a_timeout_without_calls() {
    let deps = deps(&[], &[]);
    let s = state();
    let err = deps
        .status(&status_request(&s), s.progress.deadline + 1)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Timeout");
}

#[tokio::test]
async fn finish_terminates_the_builder_and_a_gone_one_is_success() {
    use aws_sdk_ec2::operation::terminate_instances::TerminateInstancesOutput;
    let term = mock!(Ec2::terminate_instances)
        .match_requests(|r| r.instance_ids() == [BUILDER])
        .sequence()
        .output(|| TerminateInstancesOutput::builder().build())
        .http_status(400, Some(testing::ec2_error_body("InvalidInstanceID.NotFound")))
        .build();
    let deps = deps(&[&term], &[]);
    let req = testing::request("finish", &testing::run(), json!({ "build": state() }));
    for _ in 0..2 {
        let out = handle(&deps, req.clone()).await.unwrap();
        assert!(out.terminated);
        assert_eq!(out.instance_id, BUILDER);
    }
    assert_eq!(term.num_calls(), 2);
}

// -- capacity and eventual consistency ----------------------------------------------------------------------------

const FALLBACK_SUBNET: &str = "subnet-0fa11bac0000000b1";

/// The example recipe with a fallback subnet and a fallback instance type for the builder.
fn fallback_request(subnets: &[&str], types: &[&str]) -> serde_json::Value {
    let mut recipe = testing::recipe();
    let build = recipe.build.as_mut().unwrap();
    build.fallback_subnet_ids = subnets.iter().map(|s| s.to_string()).collect();
    build.fallback_instance_types = types.iter().map(|t| t.to_string()).collect();
    recipe.validate().unwrap();
    testing::request("start", &testing::run_with(recipe), json!({}))
}

/// RunInstances answering `code` for the recipe's subnet and t3.small, and launching anywhere else.
/// Deps for a launch from the base image, RunInstances answered by `launch`; and the look-up by tag, to count.
fn launch_deps(launch: &[&Rule]) -> (Deps, Rule) {
    let (param, lookup, imgs) = before_launch(testing::base_image());
    let ec2: Vec<&Rule> = [&lookup, &imgs].into_iter().chain(launch.iter().copied()).collect();
    (deps(&ec2, &[&param]), lookup)
}

/// Deps where the first placement is refused with `code` and any other launches: the RunInstances requests kept,
/// the deps, the look-up by tag and the launch that succeeds.
fn primary_refused(code: &'static str) -> (Captured<RunInstancesInput>, Deps, Rule, Rule) {
    let captured = Captured::default();
    let (refused, ok) = (no_capacity_in_primary(code, captured.clone()), launches_anywhere());
    let (deps, lookup) = launch_deps(&[&refused, &ok]);
    (captured, deps, lookup, ok)
}

fn no_capacity_in_primary(code: &'static str, captured: Captured<RunInstancesInput>) -> Rule {
    mock!(Ec2::run_instances)
        .match_requests(move |r| {
            captured.push(r);
            r.network_interfaces()[0].subnet_id() == Some("subnet-0123456789abcdef0")
                && r.instance_type().map(|t| t.as_str()) == Some("t3.small")
        })
        .sequence()
        .http_status(
            if code == "InsufficientInstanceCapacity" {
                500
            } else {
                400
            },
            Some(testing::ec2_error_body(code)),
        )
        .repeatedly()
        .build()
}

fn launches_anywhere() -> Rule {
    mock!(Ec2::run_instances)
        .sequence()
        .output(|| {
            RunInstancesOutput::builder()
                .instances(Instance::builder().instance_id(BUILDER).build())
                .build()
        })
        .repeatedly()
        .build()
}

#[tokio::test]
async fn no_capacity_in_the_first_subnet_launches_in_the_fallback_subnet_under_its_own_token() {
    let (captured, deps, lookup, ok) = primary_refused("InsufficientInstanceCapacity");
    let out = handle(&deps, fallback_request(&[FALLBACK_SUBNET], &[])).await.unwrap();
    assert_eq!(out.instance_id, BUILDER);
    assert_eq!(ok.num_calls(), 1, "one launch, in the fallback subnet");
    let sent = captured.all();
    let subnets: Vec<_> = sent
        .iter()
        .map(|r| r.network_interfaces()[0].subnet_id().unwrap().to_string())
        .collect();
    // the SDK retries a 500 three times (same token), then the fallback subnet
    assert_eq!(subnets.last().unwrap(), FALLBACK_SUBNET, "{subnets:?}");
    let first = sent.first().unwrap().client_token().unwrap().to_string();
    let last = sent.last().unwrap().client_token().unwrap().to_string();
    assert_eq!(
        first,
        ami_core::model::naming::client_token(testing::EXECUTION, "build", "us-east-1")
    );
    assert_ne!(first, last, "each placement has its own ClientToken");
    assert!(
        lookup.num_calls() >= 2,
        "with fallbacks, the tag look-up is made again before launching"
    );
}

#[tokio::test]
async fn an_unsupported_type_moves_to_the_fallback_type() {
    let (captured, deps, _, _) = primary_refused("Unsupported");
    handle(&deps, fallback_request(&[], &["m5.large"])).await.unwrap();
    let sent = captured.all();
    assert_eq!(
        sent.len(),
        2,
        "a 400 is not retried by the SDK: primary, then the fallback type"
    );
    assert_eq!(sent[1].instance_type().map(|t| t.as_str()), Some("m5.large"));
    assert_eq!(
        sent[1].network_interfaces()[0].subnet_id(),
        Some("subnet-0123456789abcdef0")
    );
}

#[tokio::test]
async fn without_fallbacks_no_capacity_fails_naming_what_was_tried() {
    let captured = Captured::default();
    let refused = no_capacity_in_primary("InsufficientInstanceCapacity", captured.clone());
    let (deps, lookup) = launch_deps(&[&refused]);
    let err = handle(&deps, start_request()).await.unwrap_err();
    let tried = "t3.small in subnet-0123456789abcdef0: InsufficientInstanceCapacity";
    testing::assert_error(&err, "AmiPipeline.NoCapacity", &[tried]);
    assert_eq!(lookup.num_calls(), 1, "no second look-up without fallbacks");
}

#[tokio::test]
async fn every_placement_without_capacity_is_no_capacity_listing_all() {
    let refused = ami_testkit::ec2_error!(Ec2::run_instances, "Unsupported");
    let (deps, _) = launch_deps(&[&refused]);
    let err = handle(&deps, fallback_request(&[FALLBACK_SUBNET], &["m5.large"]))
        .await
        .unwrap_err();
    assert_eq!(refused.num_calls(), 4, "2 types x 2 subnets");
    let tried = [
        "t3.small in subnet-0123456789abcdef0",
        "t3.small in subnet-0fa11bac0000000b1",
        "m5.large in subnet-0123456789abcdef0",
        "m5.large in subnet-0fa11bac0000000b1",
    ];
    testing::assert_error(&err, "AmiPipeline.NoCapacity", &tried);
}

#[tokio::test]
async fn an_account_limit_is_retried_by_the_state_machine_not_moved_elsewhere() {
    let refused = ami_testkit::ec2_error!(Ec2::run_instances, "VcpuLimitExceeded");
    let (deps, _) = launch_deps(&[&refused]);
    let err = handle(&deps, fallback_request(&[FALLBACK_SUBNET], &[]))
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.LimitExceeded");
    assert_eq!(
        refused.num_calls(),
        1,
        "a limit of the account is the same in every subnet"
    );
}

#[tokio::test]
async fn a_just_launched_builder_unknown_to_ec2_is_pending_then_gone_after_the_grace_period() {
    fn not_found() -> Rule {
        ami_testkit::ec2_error!(
            Ec2::describe_instances,
            "InvalidInstanceID.NotFound",
            match |r| r.instance_ids() == [BUILDER]
        )
    }
    // 100 s after launch: EC2 may not know the id yet
    let (unknown, running) = (not_found(), instance_in(&[InstanceStateName::Running]));
    let s = Step::status(&deps(&[&unknown], &[]), &status_request(&state()), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    // then it shows up
    let s = Step::status(&deps(&[&running], &[]), &status_request(&state()), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    // unknown 10 minutes after launch: gone
    let (unknown, late) = (not_found(), state_at(NOW - 500));
    let err = Step::status(&deps(&[&unknown], &[]), &status_request(&late), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ResourceGone");
}
