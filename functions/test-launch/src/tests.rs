use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::create_tags::{CreateTagsInput, CreateTagsOutput};
use aws_sdk_ec2::operation::describe_instance_status::{DescribeInstanceStatusInput, DescribeInstanceStatusOutput};
use aws_sdk_ec2::operation::get_console_output::GetConsoleOutputOutput;
use aws_sdk_ec2::operation::run_instances::{RunInstancesInput, RunInstancesOutput};
use aws_sdk_ec2::operation::terminate_instances::{TerminateInstancesInput, TerminateInstancesOutput};
use aws_sdk_ec2::types::{InstanceState, InstanceStatus, InstanceStatusDetails, StateReason, StatusName, StatusType};
use aws_smithy_mocks::{Rule, mock};
use aws_smithy_types::DateTime;
use serde_json::{Value, json};

use ami_core::model::recipe::Recipe;
use ami_core::model::steps::{ImageState, Run, SnapshotInfo, SnapshotState};
use ami_testkit::{self as testing, Captured, NOW};

use ami_core::model::input;

use ami_core::step::{Step, handle};

use super::*;

const CANDIDATE: &str = "ami-0ccccccccccccccc1";
const TESTER: &str = "i-0ddddddddddddddd1";
/// The test instance's launch time: 200 s before `NOW`.
const LAUNCHED: i64 = NOW - 200;

fn deps(rules: &[&Rule]) -> Deps {
    deps_with(rules, &[])
}

/// With the SSM rules the Run Command channel answers with.
fn deps_with(rules: &[&Rule], ssm: &[&Rule]) -> Deps {
    Deps(testing::instance_clients(rules, ssm))
}

/// The example run with the smoke test on the console channel (the fallback).
fn console_run() -> ami_core::model::steps::Run {
    recipe_with(|r| r.test.channel = Some(ami_core::model::recipe::Channel::Console))
}

fn candidate() -> ImageState {
    ImageState {
        region: testing::REGION.into(),
        image_id: CANDIDATE.into(),
        name: "web-1.4.0-20261126-0f00ba11".into(),
        progress: ami_core::model::steps::Progress {
            status: Status::Ready,
            ..Progress::start(NOW - 900, 30)
        },
    }
}

/// The builder's snapshots the candidate was registered from: a 16 GiB gp3 root and a 20 GiB data volume.
fn snapshots() -> SnapshotState {
    let snap =
        |id: &str, device: &str, size: i32, kind: &str, iops: Option<i32>, throughput: Option<i32>| SnapshotInfo {
            snapshot_id: id.into(),
            device_name: device.into(),
            volume_id: format!("vol-{id}"),
            size_gib: size,
            volume_type: kind.into(),
            iops,
            throughput,
        };
    SnapshotState {
        instance_id: "i-0bbbbbbbbbbbbbbb1".into(),
        source_image_id: testing::BASE_IMAGE.into(),
        root_device_name: "/dev/xvda".into(),
        snapshots: vec![
            snap("snap-01", "/dev/sdf", 20, "io2", Some(5000), None),
            snap("snap-02", "/dev/xvda", 16, "gp3", Some(4000), Some(250)),
        ],
        plan: testing::linux_plan(),
        image_id: None,
        percent: 100,
        consistency: None,
        warnings: Vec::new(),
        progress: Progress::start(NOW - 1200, 30).with_status(Status::Ready),
    }
}

fn start_request(run: &Run) -> Value {
    testing::request(
        "start",
        run,
        json!({ "register": candidate(), "snapshot": snapshots() }),
    )
}

fn parse(v: Value) -> StepRequest {
    input::parse_value("input", v).unwrap()
}

fn recipe_with(edit: impl FnOnce(&mut Recipe)) -> Run {
    let mut r = testing::recipe();
    edit(&mut r);
    r.validate().unwrap();
    testing::run_with(r)
}

fn instance(state: InstanceStateName) -> aws_sdk_ec2::types::Instance {
    aws_sdk_ec2::types::Instance::builder()
        .instance_id(TESTER)
        .image_id(CANDIDATE)
        .launch_time(DateTime::from_secs(LAUNCHED))
        .state(InstanceState::builder().name(state).build())
        .build()
}

fn run_instances(captured: Captured<RunInstancesInput>) -> Rule {
    testing::run_instances(captured, instance(InstanceStateName::Pending))
}

#[tokio::test]
async fn start_launches_the_candidate_locked_down_with_the_smoke_test() {
    let captured = Captured::default();
    let (lookup, run) = (testing::no_instance_tagged(), run_instances(captured.clone()));
    let deps = deps(&[&lookup, &run]);

    let out = deps.start(&parse(start_request(&testing::run())), NOW).await.unwrap();
    assert_eq!(out.instance_id, TESTER);
    assert_eq!(out.image_id, CANDIDATE);
    assert_eq!(out.launched_at, LAUNCHED, "boot time counts from the instance's launch");
    assert_eq!(out.progress.status, Status::Pending);
    assert_eq!(out.progress.deadline, NOW + 15 * 60, "recipe.test.timeout_minutes");
    assert!(!out.terminated);

    let req = captured.only();
    assert_eq!(req.image_id(), Some(CANDIDATE));
    assert_eq!(req.instance_type().map(|t| t.as_str()), Some("t3.small"));
    assert_eq!((req.min_count(), req.max_count()), (Some(1), Some(1)));
    assert_eq!(
        req.client_token(),
        Some(ami_core::model::naming::client_token(testing::EXECUTION, "test", testing::REGION).as_str())
    );
    // No test.instance_profile: the builder's, so the SSM agent can register for a Run Command smoke test.
    assert_eq!(
        req.iam_instance_profile().and_then(|p| p.name()),
        Some("ami-pipeline-builder")
    );
    // The example recipe's test section names no network: the build's is used.
    testing::assert_locked_down(&req, ShutdownBehavior::Terminate);
    // every volume of the image, asked encrypted and deleted with the instance, at the snapshot's size, type,
    // IOPS (io1/io2 require them) and throughput
    let volumes: Vec<_> = req
        .block_device_mappings()
        .iter()
        .map(|m| {
            let ebs = m.ebs().unwrap();
            (
                m.device_name().unwrap(),
                ebs.encrypted(),
                ebs.delete_on_termination(),
                ebs.volume_size(),
                ebs.volume_type().map(|t| t.as_str()),
                ebs.iops(),
                ebs.throughput(),
            )
        })
        .collect();
    assert_eq!(
        volumes,
        [
            (
                "/dev/sdf",
                Some(true),
                Some(true),
                Some(20),
                Some("io2"),
                Some(5000),
                None
            ),
            (
                "/dev/xvda",
                Some(true),
                Some(true),
                Some(16),
                Some("gp3"),
                Some(4000),
                Some(250)
            )
        ]
    );
    testing::tagged_on_create(&req, "test-instance");
    // Run Command (the default channel) sends the smoke test once the status checks pass; the instance stays up
    testing::assert_run_command_user_data(&req, userdata::SMOKE_TAG, "curl -fsS http://127.0.0.1/");
}

#[tokio::test]
async fn test_settings_override_the_build_and_no_script_means_no_user_data() {
    let run = recipe_with(|r| {
        r.test.instance_type = Some("m7i.large".into());
        r.test.subnet_id = Some("subnet-0fedcba9876543210".into());
        r.test.security_group_ids = vec!["sg-0fedcba9876543210".into()];
        r.test.script = None;
    });
    let captured = Captured::default();
    let (lookup, launch) = (testing::no_instance_tagged(), run_instances(captured.clone()));
    let deps = deps(&[&lookup, &launch]);
    deps.start(&parse(start_request(&run)), NOW).await.unwrap();
    let req = captured.only();
    assert_eq!(req.instance_type().map(|t| t.as_str()), Some("m7i.large"));
    let nic = &req.network_interfaces()[0];
    assert_eq!(nic.subnet_id(), Some("subnet-0fedcba9876543210"));
    assert_eq!(nic.groups(), ["sg-0fedcba9876543210"]);
    assert_eq!(req.user_data(), None);

    let run = recipe_with(|r| r.test.instance_type = None);
    let captured = Captured::default();
    let launch = run_instances(captured.clone());
    let deps = self::deps(&[&lookup, &launch]);
    deps.start(&parse(start_request(&run)), NOW).await.unwrap();
    assert_eq!(
        captured.only().instance_type().map(|t| t.as_str()),
        Some("t3.small"),
        "recipe.build.instance_type"
    );
}

#[tokio::test]
async fn retried_start_adopts_the_tagged_instance_instead_of_launching_again() {
    let tagged = mock!(Ec2::describe_instances)
        .match_requests(|r| {
            let f = |name: &str| {
                r.filters()
                    .iter()
                    .find(|f| f.name() == Some(name))
                    .map(|f| f.values().to_vec())
            };
            f("tag:ami-pipeline:execution") == Some(vec![testing::EXECUTION.to_string()])
                && f("tag:ami-pipeline:role") == Some(vec!["test-instance".to_string()])
        })
        .then_output(|| testing::described_instance(instance(InstanceStateName::Running)));
    let launch = run_instances(Captured::default());
    let deps = deps(&[&tagged, &launch]);
    let out = handle(&deps, start_request(&testing::run())).await.unwrap();
    assert_eq!(out.instance_id, TESTER);
    assert_eq!(out.launched_at, LAUNCHED);
    assert_eq!(tagged.num_calls(), 1);
    assert_eq!(launch.num_calls(), 0, "no second instance");
}

#[tokio::test]
async fn a_lost_launch_response_is_retried_with_the_same_client_token() {
    // The tag look-up cannot see an instance whose launch response was lost a moment ago; the ClientToken makes
    // EC2 return that instance instead of launching another.
    let captured = Captured::default();
    let (lookup, launch) = (testing::no_instance_tagged(), run_instances(captured.clone()));
    let deps = deps(&[&lookup, &launch]);
    for _ in 0..2 {
        deps.start(&parse(start_request(&testing::run())), NOW).await.unwrap();
    }
    testing::assert_one_client_token(captured.all().iter().map(|r| r.client_token()));
}

#[tokio::test]
async fn throttled_launch_is_retried_then_succeeds() {
    let lookup = testing::no_instance_tagged();
    let launch = ami_testkit::throttled_once!(Ec2::run_instances, || {
        RunInstancesOutput::builder()
            .instances(instance(InstanceStateName::Pending))
            .build()
    });
    let deps = deps(&[&lookup, &launch]);
    let out = handle(&deps, start_request(&testing::run())).await.unwrap();
    assert_eq!(out.instance_id, TESTER);
    assert_eq!(launch.num_calls(), 2);
}

#[tokio::test]
async fn disabled_test_is_ready_at_once_and_status_and_finish_call_nothing() {
    let run = recipe_with(|r| r.test.enabled = false);
    let deps = deps(&[]);
    let out = deps.start(&parse(start_request(&run)), NOW).await.unwrap();
    assert_eq!(out.instance_id, "");
    assert_eq!(out.image_id, CANDIDATE);
    assert_eq!(out.progress.status, Status::Ready);
    assert_eq!(out.boot_to_ready_seconds, None);

    let next = parse(testing::request(
        "status",
        &run,
        json!({ "register": candidate(), "test_launch": out }),
    ));
    let after = deps.status(&next, NOW + 5).await.unwrap();
    assert_eq!(after, out);
    let done = deps.finish(&next, NOW).await.unwrap();
    assert!(done.terminated);
}

fn state() -> TestState {
    TestState {
        instance_id: TESTER.into(),
        image_id: CANDIDATE.into(),
        launched_at: LAUNCHED,
        boot_to_ready_seconds: None,
        terminated: false,
        logs: None,
        progress: Progress::start(NOW - 100, 15),
    }
}

fn request_for(action: &str, run: &Run, s: &TestState) -> StepRequest {
    parse(testing::request(
        action,
        run,
        json!({ "register": candidate(), "test_launch": s }),
    ))
}

fn instance_in(states: &'static [InstanceStateName]) -> Rule {
    let mut seq = mock!(Ec2::describe_instances)
        .match_requests(|r| r.instance_ids() == [TESTER])
        .sequence();
    for s in states {
        seq = seq.output(move || testing::described_instance(instance(s.clone())));
    }
    seq.build()
}

fn checks(instance: SummaryStatus, system: SummaryStatus) -> InstanceStatus {
    let summary = |s: SummaryStatus| {
        let detail_status = if s == SummaryStatus::Impaired {
            StatusType::Failed
        } else {
            StatusType::Passed
        };
        InstanceStatusSummary::builder()
            .status(s)
            .details(
                InstanceStatusDetails::builder()
                    .name(StatusName::Reachability)
                    .status(detail_status)
                    .build(),
            )
            .build()
    };
    InstanceStatus::builder()
        .instance_id(TESTER)
        .instance_status(summary(instance))
        .system_status(summary(system))
        .build()
}

fn status_checks(
    captured: Captured<DescribeInstanceStatusInput>,
    seq: &'static [(SummaryStatus, SummaryStatus)],
) -> Rule {
    let mut rule = mock!(Ec2::describe_instance_status)
        .match_requests(move |r| {
            captured.push(r);
            true
        })
        .sequence();
    for (i, s) in seq {
        rule = rule.output(move || {
            DescribeInstanceStatusOutput::builder()
                .instance_statuses(checks(i.clone(), s.clone()))
                .build()
        });
    }
    rule.build()
}

fn console(texts: &'static [&'static str]) -> Rule {
    let mut seq = mock!(Ec2::get_console_output)
        // the mocked instances have no type: not known to be Nitro, so no `Latest`
        .match_requests(|r| r.instance_id() == Some(TESTER) && r.latest().is_none())
        .sequence();
    for text in texts {
        seq = seq.output(move || {
            GetConsoleOutputOutput::builder()
                .output(aws_smithy_types::base64::encode(text.as_bytes()))
                .build()
        });
    }
    seq.build()
}

fn create_tags(captured: Captured<CreateTagsInput>) -> Rule {
    ami_testkit::capturing!(Ec2::create_tags, captured, CreateTagsOutput::builder().build())
}

#[tokio::test]
async fn status_is_pending_until_checks_ok_and_smoke_passed_then_tags_boot_to_ready() {
    use SummaryStatus::{Initializing, Ok};
    let states = instance_in(&[
        InstanceStateName::Pending,
        InstanceStateName::Running,
        InstanceStateName::Running,
        InstanceStateName::Running,
    ]);
    let status_reqs = Captured::default();
    let st = status_checks(status_reqs.clone(), &[(Initializing, Initializing), (Ok, Ok), (Ok, Ok)]);
    let con = console(&[
        "booting\n",
        "cloud-init ... nginx started\n",
        "cloud-init ...\n[   31.2] AMI-PIPELINE-SMOKE: PASS\n",
    ]);
    let tagged = Captured::default();
    let tag = create_tags(tagged.clone());
    let deps = deps(&[&states, &st, &con, &tag]);

    let run = console_run();
    // Every poll sends the same input, as the state machine's Retry does.
    let input = state();
    let mut seen = vec![];
    let mut s = input.clone();
    for _ in 0..4 {
        s = deps.status(&request_for("status", &run, &input), NOW).await.unwrap();
        seen.push(s.progress.status);
    }
    assert_eq!(
        seen,
        [Status::Pending, Status::Pending, Status::Pending, Status::Ready],
        "pending instance; initializing checks; checks ok but no marker yet; passed"
    );
    assert_eq!(s.boot_to_ready_seconds, Some(NOW - LAUNCHED));
    assert_eq!(con.num_calls(), 3, "console read only while running");

    for r in status_reqs.all() {
        assert_eq!(r.instance_ids(), [TESTER], "always filtered to the instance");
        assert_eq!(r.include_all_instances(), Some(true));
    }
    let t = tagged.only();
    assert_eq!(t.resources(), [CANDIDATE]);
    assert_eq!(t.tags().len(), 3);
    assert_eq!(tags::get(t.tags(), tags::BOOT_TO_READY), Some("200"));
    // passed: kept for a rerun of the same recipe if a later step fails (ami_core::aws::rerun)
    assert_eq!(tags::get(t.tags(), tags::STATE), Some(tags::STATE_TESTED));
    let hash = ami_core::aws::rerun::recipe_hash(&run.recipe);
    assert_eq!(tags::get(t.tags(), tags::RECIPE_HASH), Some(hash.as_str()));
}

#[tokio::test]
async fn without_a_smoke_script_status_checks_alone_pass() {
    let run = recipe_with(|r| r.test.script = None);
    let states = instance_in(&[InstanceStateName::Running]);
    let st = status_checks(Captured::default(), &[(SummaryStatus::Ok, SummaryStatus::Ok)]);
    let tag = create_tags(Captured::default());
    let deps = deps(&[&states, &st, &tag]); // no console rule: reading it would fail the test
    let s = deps.status(&request_for("status", &run, &state()), NOW).await.unwrap();
    assert_eq!(s.progress.status, Status::Ready);
    assert_eq!(tag.num_calls(), 1);
}

#[tokio::test]
async fn smoke_test_failure_fails_with_its_reason_and_tags_nothing() {
    let states = instance_in(&[InstanceStateName::Running]);
    let st = status_checks(Captured::default(), &[(SummaryStatus::Ok, SummaryStatus::Ok)]);
    let con = console(&["AMI-PIPELINE-SMOKE: FAIL exit=7\n"]);
    let tag = create_tags(Captured::default());
    let deps = deps(&[&states, &st, &con, &tag]);
    let err = deps
        .status(&request_for("status", &console_run(), &state()), NOW)
        .await
        .unwrap_err();
    testing::assert_error(&err, "AmiPipeline.TestFailed", &["exit=7"]);
    assert_eq!(tag.num_calls(), 0);
}

#[tokio::test]
async fn impaired_status_check_fails_the_test() {
    let states = instance_in(&[InstanceStateName::Running]);
    let st = status_checks(Captured::default(), &[(SummaryStatus::Impaired, SummaryStatus::Ok)]);
    let deps = deps(&[&states, &st]);
    let err = deps
        .status(&request_for("status", &testing::run(), &state()), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.TestFailed");
    assert!(
        err.to_string()
            .contains("instance status check impaired (reachability: failed)"),
        "{err}"
    );
}

#[tokio::test]
async fn an_instance_that_ended_fails_the_test_unless_someone_else_ended_it() {
    for (code, expected) in [
        ("Client.InstanceInitiatedShutdown", "AmiPipeline.TestFailed"),
        ("Client.UserInitiatedShutdown", "AmiPipeline.ResourceGone"),
    ] {
        let gone = mock!(Ec2::describe_instances).then_output(move || {
            testing::described_instance(
                aws_sdk_ec2::types::Instance::builder()
                    .instance_id(TESTER)
                    .state(InstanceState::builder().name(InstanceStateName::Terminated).build())
                    .state_reason(StateReason::builder().code(code).message(code).build())
                    .build(),
            )
        });
        let deps = deps(&[&gone]);
        let err = deps
            .status(&request_for("status", &testing::run(), &state()), NOW)
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), expected, "{code}: {err}");
    }

    let unknown = ami_testkit::ec2_error!(once Ec2::describe_instances, "InvalidInstanceID.NotFound");
    let deps = deps(&[&unknown]);
    let err = deps
        .status(&request_for("status", &testing::run(), &state()), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ResourceGone");
}

#[tokio::test]
async fn past_the_deadline_is_a_timeout_without_calls() {
    let deps = deps(&[]);
    let s = state();
    let err = deps
        .status(&request_for("status", &testing::run(), &s), s.progress.deadline + 1)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Timeout");
}

fn terminate(captured: Captured<TerminateInstancesInput>) -> Rule {
    ami_testkit::capturing!(
        Ec2::terminate_instances,
        captured,
        TerminateInstancesOutput::builder().build()
    )
}

#[tokio::test]
async fn finish_terminates_the_instance() {
    let captured = Captured::default();
    let term = terminate(captured.clone());
    let deps = deps(&[&term]);
    let out = handle(
        &deps,
        testing::request(
            "finish",
            &testing::run(),
            json!({ "register": candidate(), "test_launch": state() }),
        ),
    )
    .await
    .unwrap();
    assert!(out.terminated);
    assert_eq!(out.instance_id, TESTER);
    assert_eq!(captured.only().instance_ids(), [TESTER]);
}

/// Finish, TerminateInstances answered by `terminate`.
async fn finish_with(terminate: &Rule) -> TestState {
    let req = request_for("finish", &testing::run(), &state());
    deps(&[terminate]).finish(&req, NOW).await.unwrap()
}

#[tokio::test]
async fn finish_on_an_instance_already_gone_is_success() {
    let gone = ami_testkit::ec2_error!(once Ec2::terminate_instances, "InvalidInstanceID.NotFound");
    let out = finish_with(&gone).await;
    assert!(out.terminated);
    assert_eq!(gone.num_calls(), 1);
}

#[tokio::test]
async fn throttled_terminate_is_retried_then_succeeds() {
    let term = ami_testkit::throttled_once!(Ec2::terminate_instances, || TerminateInstancesOutput::builder().build());
    let out = finish_with(&term).await;
    assert!(out.terminated);
    assert_eq!(term.num_calls(), 2);
}

ami_testkit::step_contract_tests! {
    deps: |calls: &ami_testkit::Calls| Deps(calls.instance_clients(&[], &[])),
    request: || start_request(&testing::run()),
    malformed: [
        (
            |r| r["run"]["recipe"]["test"]["timeout_minutes"] = json!("soon"),
            "input.run.recipe.test.timeout_minutes",
        ),
        (|r| r["steps"] = json!({}), "input.steps.register"),
        (|r| r["steps"]["register"]["region"] = json!("eu-west-1"), "input.steps.register.region"),
        (
            |r| {
                r["action"] = json!("status");
                r["steps"] = json!({ "register": candidate() });
            },
            "input.steps.test_launch",
        ),
    ],
    rejects: [],
}

/// An instance-store recipe (no snapshots; the image is in S3) on the given test instance type.
fn instance_store_run(test_type: Option<&str>) -> Run {
    recipe_with(|r| {
        r.image.root_device_type = ami_core::model::recipe::RootDeviceType::InstanceStore;
        r.image.s3_manifest = Some("s3://web-bundles/web/image.manifest.xml".into());
        r.image.boot_mode = None; // an instance-store image boots legacy BIOS (model::platform)
        r.test.instance_type = test_type.map(String::from);
    })
}

fn instance_store_request(run: &Run) -> StepRequest {
    let mut snapshot = snapshots();
    snapshot.snapshots.clear();
    parse(testing::request(
        "start",
        run,
        json!({ "register": candidate(), "snapshot": snapshot }),
    ))
}

/// DescribeInstanceTypes answering `roots` for whatever type is asked.
fn instance_types(roots: &'static [aws_sdk_ec2::types::RootDeviceType]) -> Rule {
    use aws_sdk_ec2::operation::describe_instance_types::DescribeInstanceTypesOutput;
    use aws_sdk_ec2::types::InstanceTypeInfo;
    mock!(Ec2::describe_instance_types).then_compute_output(move |r| {
        DescribeInstanceTypesOutput::builder()
            .instance_types(
                InstanceTypeInfo::builder()
                    .instance_type(r.instance_types()[0].clone())
                    .set_supported_root_device_types(Some(roots.to_vec()))
                    .build(),
            )
            .build()
    })
}

/// The type must support an instance-store root (DescribeInstanceTypes SupportedRootDeviceTypes): checked before
/// RunInstances, and a type that cannot boot the image fails naming the recipe field, launching nothing.
#[tokio::test]
async fn an_instance_store_image_is_launched_only_on_a_type_that_can_boot_it() {
    use aws_sdk_ec2::types::RootDeviceType as Root;
    let _allowed = ami_core::audit::allow_instance_store();

    // The build's t3.small (Nitro, EBS only): refused, naming where the type came from.
    let captured = Captured::default();
    let (lookup, types, run) = (
        testing::no_instance_tagged(),
        instance_types(&[Root::Ebs]),
        run_instances(captured.clone()),
    );
    let err = Step::start(
        &deps(&[&lookup, &types, &run]),
        &instance_store_request(&instance_store_run(None)),
        NOW,
    )
    .await
    .unwrap_err();
    testing::assert_invalid_input(&err, "recipe.build.instance_type", &[]);
    assert_eq!(run.num_calls(), 0, "nothing launched");

    // m3.medium supports an instance store root: launched, without EBS mappings (none to encrypt or override).
    let captured = Captured::default();
    let (lookup, types, run) = (
        testing::no_instance_tagged(),
        instance_types(&[Root::Ebs, Root::InstanceStore]),
        run_instances(captured.clone()),
    );
    let out = Step::start(
        &deps(&[&lookup, &types, &run]),
        &instance_store_request(&instance_store_run(Some("m3.medium"))),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(out.instance_id, TESTER);
    let req = captured.only();
    assert_eq!(req.instance_type().map(|t| t.as_str()), Some("m3.medium"));
    assert!(req.block_device_mappings().is_empty());
    assert_eq!(types.num_calls(), 1);
}

// -- capacity and eventual consistency ----------------------------------------------------------------------------

#[tokio::test]
async fn no_capacity_for_the_test_type_tries_the_build_subnets_then_the_test_fallback_types() {
    let captured = Captured::default();
    let run = recipe_with(|r| {
        // the test gives its own type (and fallback types), and takes the build's subnets
        r.test.fallback_instance_types = vec!["m5.large".into()];
        r.build.as_mut().unwrap().fallback_subnet_ids = vec!["subnet-0fa11bac0000000b1".into()];
    });
    let lookup = testing::no_instance_tagged();
    let refused = ami_testkit::ec2_error!(Ec2::run_instances, "Unsupported", match {
        let captured = captured.clone();
        move |r| {
            captured.push(r);
            r.instance_type().map(|t| t.as_str()) == Some("t3.small")
        }
    });
    let ok = run_instances(Captured::default());
    let deps = deps(&[&lookup, &refused, &ok]);
    let out = deps.start(&parse(start_request(&run)), NOW).await.unwrap();
    assert_eq!(out.instance_id, TESTER);
    let tried: Vec<(String, String)> = captured
        .all()
        .iter()
        .map(|r| {
            (
                r.instance_type().unwrap().as_str().to_string(),
                r.network_interfaces()[0].subnet_id().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tried,
        [
            ("t3.small".to_string(), "subnet-0123456789abcdef0".to_string()),
            ("t3.small".to_string(), "subnet-0fa11bac0000000b1".to_string()),
            ("m5.large".to_string(), "subnet-0123456789abcdef0".to_string()),
        ]
    );
    let tokens: std::collections::BTreeSet<_> = captured
        .all()
        .iter()
        .map(|r| r.client_token().unwrap().to_string())
        .collect();
    assert_eq!(tokens.len(), 3, "one ClientToken per placement");
}

#[tokio::test]
async fn no_capacity_anywhere_is_no_capacity() {
    let run = recipe_with(|_| {});
    let (lookup, refused) = (
        testing::no_instance_tagged(),
        mock!(Ec2::run_instances)
            .sequence()
            .http_status(500, Some(testing::ec2_error_body("InsufficientInstanceCapacity")))
            .repeatedly()
            .build(),
    );
    let deps = deps(&[&lookup, &refused]);
    let err = deps.start(&parse(start_request(&run)), NOW).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.NoCapacity", &["test instance"]);
}

#[tokio::test]
async fn a_just_launched_test_instance_unknown_to_ec2_is_pending_within_the_grace_period() {
    fn not_found() -> Rule {
        ami_testkit::ec2_error!(
            Ec2::describe_instances,
            "InvalidInstanceID.NotFound",
            match |r| r.instance_ids() == [TESTER]
        )
    }
    let run = testing::run();
    // launched a minute ago, not known yet: still the grace period
    let fresh = TestState {
        launched_at: NOW - 60,
        ..state()
    };
    let unknown = not_found();
    let s = Step::status(&deps(&[&unknown]), &request_for("status", &run, &fresh), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    // then found pending
    let found = instance_in(&[InstanceStateName::Pending]);
    let s = Step::status(&deps(&[&found]), &request_for("status", &run, &fresh), NOW)
        .await
        .unwrap();
    assert_eq!(s.progress.status, Status::Pending);
    // unknown long after launch: gone
    let unknown = not_found();
    let err = Step::status(&deps(&[&unknown]), &request_for("status", &run, &state()), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ResourceGone");
}
