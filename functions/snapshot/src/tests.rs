use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::create_image::{CreateImageInput, CreateImageOutput};
use aws_sdk_ec2::operation::create_snapshots::{CreateSnapshotsInput, CreateSnapshotsOutput};
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::operation::describe_volumes::DescribeVolumesOutput;
use aws_sdk_ec2::operation::stop_instances::StopInstancesOutput;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, BootModeValues, EbsBlockDevice, EbsInstanceBlockDevice, ImageState as Ec2ImageState, Instance,
    InstanceBlockDeviceMapping, InstanceState, Reservation, Snapshot, SnapshotInfo as Ec2SnapshotInfo, Volume,
    VolumeType,
};
use aws_smithy_mocks::{Rule, mock};
use serde_json::json;

use ami_core::model::recipe::{Source, SourceInstance};
use ami_core::model::steps::BuildState;
use ami_testkit::{self as testing, BASE_IMAGE, Captured, NOW};

use ami_core::model::input;
use ami_core::step::{Step, handle};

use super::*;

const BUILDER: &str = "i-0bbbbbbbbbbbbbbb1";
const ROOT_VOL: &str = "vol-0000000000000000a";
const DATA_VOL: &str = "vol-0000000000000000b";

fn builder(state: InstanceStateName) -> Instance {
    // As DescribeInstances reports an instance of AL2023 x86_64: its AMI's billing and boot mode.
    builder_of(state, "Linux/UNIX", "RunInstances", BootModeValues::UefiPreferred).build()
}

fn builder_of(
    state: InstanceStateName,
    details: &str,
    operation: &str,
    boot_mode: BootModeValues,
) -> aws_sdk_ec2::types::builders::InstanceBuilder {
    let bdm = |dev: &str, vol: &str| {
        InstanceBlockDeviceMapping::builder()
            .device_name(dev)
            .ebs(EbsInstanceBlockDevice::builder().volume_id(vol).build())
            .build()
    };
    Instance::builder()
        .instance_id(BUILDER)
        .image_id(BASE_IMAGE)
        .root_device_name("/dev/xvda")
        .state(InstanceState::builder().name(state).build())
        .block_device_mappings(bdm("/dev/xvda", ROOT_VOL))
        .block_device_mappings(bdm("/dev/sdf", DATA_VOL))
        .platform_details(details)
        .usage_operation(operation)
        .boot_mode(boot_mode)
}

fn describe_instances(states: &'static [InstanceStateName]) -> Rule {
    let mut seq = mock!(Ec2::describe_instances).sequence();
    for s in states {
        seq = seq.output(move || {
            DescribeInstancesOutput::builder()
                .reservations(Reservation::builder().instances(builder(s.clone())).build())
                .build()
        });
    }
    seq.build()
}

/// The tag look-up, answering `found` every time (an empty look-up is made twice before creating).
fn own_snapshots(found: Vec<Snapshot>) -> Rule {
    mock!(Ec2::describe_snapshots)
        .match_requests(|r| !r.filters().is_empty())
        .sequence()
        .output(move || {
            DescribeSnapshotsOutput::builder()
                .set_snapshots(Some(found.clone()))
                .build()
        })
        .repeatedly()
        .build()
}

fn volumes() -> Rule {
    mock!(Ec2::describe_volumes)
        .sequence()
        .output(|| {
            DescribeVolumesOutput::builder()
                .volumes(
                    Volume::builder()
                        .volume_id(ROOT_VOL)
                        .volume_type(VolumeType::Gp3)
                        .iops(3000)
                        .throughput(125)
                        .build(),
                )
                .volumes(
                    Volume::builder()
                        .volume_id(DATA_VOL)
                        .volume_type(VolumeType::Gp2)
                        .iops(100)
                        .build(),
                )
                .build()
        })
        .repeatedly()
        .build()
}

fn created() -> CreateSnapshotsOutput {
    CreateSnapshotsOutput::builder()
        .snapshots(
            Ec2SnapshotInfo::builder()
                .snapshot_id("snap-0000000000000001")
                .volume_id(ROOT_VOL)
                .volume_size(16)
                .build(),
        )
        .snapshots(
            Ec2SnapshotInfo::builder()
                .snapshot_id("snap-0000000000000002")
                .volume_id(DATA_VOL)
                .volume_size(20)
                .build(),
        )
        .build()
}

fn build_steps() -> serde_json::Value {
    let b = BuildState {
        instance_id: BUILDER.into(),
        source_image_id: BASE_IMAGE.into(),
        terminated: false,
        logs: None,
        progress: Progress::start(NOW - 600, 45).with_status(Status::Ready),
    };
    json!({ "build": b })
}

/// Deps for a start on the builder (as each DescribeInstances finds it, in turn) and its volumes: `mine` answers
/// the look-up of this execution's snapshots, `create` CreateSnapshots.
fn start_deps(builder: &'static [InstanceStateName], mine: &Rule, create: &Rule) -> Deps {
    let (inst, vols) = (describe_instances(builder), volumes());
    Deps(testing::ec2(&[&inst, mine, &vols, create]))
}

/// A start on the stopped builder, `mine` answering the look-up of this execution's snapshots and `create`
/// CreateSnapshots.
async fn start_stopped(mine: &Rule, create: &Rule) -> SnapshotState {
    let deps = start_deps(&[InstanceStateName::Stopped], mine, create);
    deps.start(&request("start", &testing::run(), build_steps()), NOW)
        .await
        .unwrap()
}

fn request(action: &str, run: &ami_core::model::steps::Run, steps: serde_json::Value) -> StepRequest {
    input::parse_value("input", testing::request(action, run, steps)).unwrap()
}

#[tokio::test]
async fn start_snapshots_every_volume_tagged_on_create() {
    let captured: Captured<CreateSnapshotsInput> = Captured::default();
    let create = ami_testkit::capturing!(Ec2::create_snapshots, captured.clone(), created());
    let out = start_stopped(&own_snapshots(vec![]), &create).await;
    assert_eq!(out.source_image_id, BASE_IMAGE);
    assert_eq!(out.root_device_name, "/dev/xvda");
    let devs: Vec<_> = out
        .snapshots
        .iter()
        .map(|s| (s.device_name.as_str(), s.snapshot_id.as_str(), s.size_gib))
        .collect();
    assert_eq!(
        devs,
        [
            ("/dev/sdf", "snap-0000000000000002", 20),
            ("/dev/xvda", "snap-0000000000000001", 16)
        ]
    );
    let data = &out.snapshots[0];
    assert_eq!(
        (data.volume_type.as_str(), data.iops),
        ("gp2", None),
        "gp2 IOPS are not settable"
    );
    let root = &out.snapshots[1];
    assert_eq!(
        (root.volume_type.as_str(), root.iops, root.throughput),
        ("gp3", Some(3000), Some(125))
    );

    let req = captured.only();
    let spec = req.instance_specification().unwrap();
    assert_eq!(spec.instance_id(), Some(BUILDER));
    assert_eq!(spec.exclude_boot_volume(), Some(false));
    let tag_spec = &req.tag_specifications()[0];
    assert_eq!(tag_spec.resource_type(), Some(&ResourceType::Snapshot));
    assert_eq!(tags::get(tag_spec.tags(), tags::EXECUTION), Some(testing::EXECUTION));
    assert_eq!(tags::get(tag_spec.tags(), tags::ROLE), Some("snapshot"));
    assert_eq!(tags::get(tag_spec.tags(), tags::SOURCE_IMAGE), Some(BASE_IMAGE));
}

#[tokio::test]
async fn retried_start_finds_its_snapshots_by_tag() {
    let create = mock!(Ec2::create_snapshots).then_output(created);
    let mine = own_snapshots(vec![
        Snapshot::builder()
            .snapshot_id("snap-0000000000000001")
            .volume_id(ROOT_VOL)
            .volume_size(16)
            .build(),
        Snapshot::builder()
            .snapshot_id("snap-0000000000000002")
            .volume_id(DATA_VOL)
            .volume_size(20)
            .build(),
    ]);
    let out = start_stopped(&mine, &create).await;
    assert_eq!(out.snapshots.len(), 2);
    assert_eq!(create.num_calls(), 0, "nothing created twice");
}

/// The snapshots the fake CreateSnapshots made, as the tag look-up finds them afterwards.
fn made_snapshots() -> Vec<Snapshot> {
    created()
        .snapshots()
        .iter()
        .map(|s| {
            Snapshot::builder()
                .snapshot_id(s.snapshot_id().unwrap())
                .volume_id(s.volume_id().unwrap())
                .volume_size(s.volume_size().unwrap())
                .build()
        })
        .collect()
}

/// The tag look-up: nothing before the create (looked up twice), the created set after it.
fn found_by_tag_after_create() -> Rule {
    mock!(Ec2::describe_snapshots)
        .match_requests(|r| !r.filters().is_empty())
        .sequence()
        .output(|| DescribeSnapshotsOutput::builder().build())
        .output(|| DescribeSnapshotsOutput::builder().build())
        .output(|| {
            DescribeSnapshotsOutput::builder()
                .set_snapshots(Some(made_snapshots()))
                .build()
        })
        .build()
}

#[tokio::test]
async fn create_is_never_retried_blindly_and_the_step_retry_adopts_a_lost_answer() {
    // The first CreateSnapshots is made but its answer is lost (500); the SDK must not send it again (no
    // ClientToken: a second call would make a second set). The step fails Transient; Step Functions runs it
    // again, and the tag look-up finds the snapshots the lost call made.
    let create = mock!(Ec2::create_snapshots)
        .sequence()
        .http_status(500, Some(testing::ec2_error_body("InternalError")))
        .output(created)
        .build();
    let mine = found_by_tag_after_create();
    let deps = start_deps(
        &[InstanceStateName::Stopped, InstanceStateName::Stopped],
        &mine,
        &create,
    );
    let req = testing::request("start", &testing::run(), build_steps());
    let err = handle(&deps, req.clone()).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Transient", "{err}");
    assert_eq!(create.num_calls(), 1, "the SDK did not repeat CreateSnapshots");

    let out = handle(&deps, req).await.unwrap();
    let ids: Vec<&str> = out.snapshots.iter().map(|s| s.snapshot_id.as_str()).collect();
    assert_eq!(
        ids,
        ["snap-0000000000000002", "snap-0000000000000001"],
        "by device: /dev/sdf, /dev/xvda"
    );
    assert_eq!(create.num_calls(), 1, "adopted, not made again");
}

#[tokio::test]
async fn throttled_create_fails_throttled_and_the_step_retry_creates() {
    let create = ami_testkit::throttled_once!(Ec2::create_snapshots, created);
    let deps = start_deps(
        &[InstanceStateName::Stopped, InstanceStateName::Stopped],
        &own_snapshots(vec![]),
        &create,
    );
    let req = testing::request("start", &testing::run(), build_steps());
    let err = handle(&deps, req.clone()).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Throttled", "{err}");
    let out = handle(&deps, req).await.unwrap();
    assert_eq!(out.snapshots.len(), 2);
    assert_eq!(create.num_calls(), 2);
}

fn snapshot_states(polls: Vec<Vec<(&'static str, Ec2SnapshotState, &'static str)>>) -> Rule {
    let mut seq = mock!(Ec2::describe_snapshots)
        .match_requests(|r| r.filters().is_empty())
        .sequence();
    for poll in polls {
        seq = seq.output(move || {
            let snaps = poll.iter().map(|(id, st, p)| {
                Snapshot::builder()
                    .snapshot_id(*id)
                    .state(st.clone())
                    .progress(*p)
                    .state_message("disk gone")
                    .build()
            });
            DescribeSnapshotsOutput::builder()
                .set_snapshots(Some(snaps.collect()))
                .build()
        });
    }
    seq.build()
}

async fn started_state() -> SnapshotState {
    let create = mock!(Ec2::create_snapshots).then_output(created);
    start_stopped(&own_snapshots(vec![]), &create).await
}

#[tokio::test]
async fn status_reports_progress_then_completion() {
    use Ec2SnapshotState::{Completed, Pending};
    let s1 = "snap-0000000000000001";
    let s2 = "snap-0000000000000002";
    let polls = snapshot_states(vec![
        vec![(s1, Pending, "40%"), (s2, Pending, "10%")],
        vec![(s1, Completed, "100%"), (s2, Pending, "75%")],
        vec![(s1, Completed, "100%"), (s2, Completed, "100%")],
    ]);
    let deps = Deps(testing::ec2(&[&polls]));
    let mut state = started_state().await;
    let mut seen = vec![];
    for i in 0..3 {
        let mut steps = build_steps();
        steps["snapshot"] = serde_json::to_value(&state).unwrap();
        state = deps
            .status(&request("status", &testing::run(), steps), NOW + 60 * i)
            .await
            .unwrap();
        seen.push((state.percent, state.progress.status));
    }
    assert_eq!(
        seen,
        [(10, Status::Pending), (75, Status::Pending), (100, Status::Ready)]
    );
}

#[tokio::test]
async fn a_snapshot_in_error_fails_the_step() {
    let s1 = "snap-0000000000000001";
    let polls = snapshot_states(vec![vec![(s1, Ec2SnapshotState::Error, "0%")]]);
    let deps = Deps(testing::ec2(&[&polls]));
    let mut steps = build_steps();
    steps["snapshot"] = serde_json::to_value(started_state().await).unwrap();
    let err = deps
        .status(&request("status", &testing::run(), steps), NOW)
        .await
        .unwrap_err();
    testing::assert_error(&err, "AmiPipeline.SnapshotFailed", &["disk gone"]);
}

#[tokio::test]
async fn instance_source_is_stopped_first_then_snapshotted() {
    let mut recipe = testing::recipe();
    recipe.source = Source::Instance(SourceInstance {
        id: BUILDER.into(),
        stop_first: true,
    });
    let run = testing::run_with(recipe);
    let stop = mock!(Ec2::stop_instances)
        .match_requests(|r| r.instance_ids() == [BUILDER])
        .then_output(|| StopInstancesOutput::builder().build());
    let create = mock!(Ec2::create_snapshots).then_output(created);
    let inst = describe_instances(&[
        InstanceStateName::Running,
        InstanceStateName::Stopping,
        InstanceStateName::Stopped,
        InstanceStateName::Stopped,
    ]);
    let mine = found_by_tag_after_create();
    use Ec2SnapshotState::Pending;
    let (s1, s2) = ("snap-0000000000000001", "snap-0000000000000002");
    let progress = snapshot_states(vec![
        vec![(s1, Pending, "0%"), (s2, Pending, "0%")],
        vec![(s1, Pending, "30%"), (s2, Pending, "20%")],
    ]);
    let vols = volumes();
    let deps = Deps(testing::ec2(&[&inst, &stop, &mine, &vols, &create, &progress]));

    let s = deps.start(&request("start", &run, json!({})), NOW).await.unwrap();
    assert_eq!((stop.num_calls(), create.num_calls()), (1, 0));
    assert_eq!(s.source_image_id, BASE_IMAGE, "recorded from the instance");
    // Every poll gets the start output, as the state machine's Retry sends it.
    let poll = || request("status", &run, json!({ "snapshot": s.clone() }));
    let out = deps.status(&poll(), NOW + 15).await.unwrap();
    assert_eq!(
        (create.num_calls(), out.progress.status),
        (0, Status::Pending),
        "still stopping"
    );
    let out = deps.status(&poll(), NOW + 30).await.unwrap();
    assert_eq!(create.num_calls(), 1, "stopped: snapshots started");
    assert_eq!((out.snapshots.len(), out.progress.status), (2, Status::Pending));
    // The next poll does not see that output: it finds its snapshots by tag instead of making a second set.
    let out = deps.status(&poll(), NOW + 45).await.unwrap();
    assert_eq!(create.num_calls(), 1, "adopted, not created twice");
    assert_eq!((out.snapshots.len(), out.percent), (2, 20));
}

#[tokio::test]
async fn missing_build_output_is_invalid_input_without_calls() {
    let deps = Deps(testing::ec2(&[]));
    let err = handle(&deps, testing::request("start", &testing::run(), json!({})))
        .await
        .unwrap_err();
    testing::assert_invalid_input(&err, "input.steps.build", &[]);
}

const IMAGE: &str = "ami-0ccccccccccccccc1";

/// A stopped Windows builder from a `TPM-Windows_Server-2022-*` base: billed as Windows, UEFI, NitroTPM.
fn windows_builder() -> Rule {
    mock!(Ec2::describe_instances).then_output(|| {
        let instance = builder_of(
            InstanceStateName::Stopped,
            "Windows",
            "RunInstances:0002",
            BootModeValues::Uefi,
        )
        .tpm_support("v2.0")
        .build();
        DescribeInstancesOutput::builder()
            .reservations(Reservation::builder().instances(instance).build())
            .build()
    })
}

fn windows_run() -> ami_core::model::steps::Run {
    let mut recipe = testing::recipe();
    recipe.image.boot_mode = Some(ami_core::model::recipe::BootMode::Uefi);
    recipe.image.tpm_support = true;
    testing::run_with(recipe)
}

fn own_image(found: bool) -> Rule {
    mock!(Ec2::describe_images)
        .match_requests(|r| r.owners() == ["self"])
        .then_output(move || {
            let images = found.then(|| {
                vec![
                    aws_sdk_ec2::types::Image::builder()
                        .image_id(IMAGE)
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key(tags::EXECUTION)
                                .value(testing::EXECUTION)
                                .build(),
                        )
                        .build(),
                ]
            });
            DescribeImagesOutput::builder().set_images(images).build()
        })
}

#[tokio::test]
async fn a_licensed_platform_is_imaged_with_create_image_tagged_on_create() {
    let captured: Captured<CreateImageInput> = Captured::default();
    let create_image = ami_testkit::capturing!(
        Ec2::create_image,
        captured.clone(),
        CreateImageOutput::builder().image_id(IMAGE).build()
    );
    let snapshots = mock!(Ec2::create_snapshots).then_output(created);
    let (inst, none) = (windows_builder(), own_image(false));
    let deps = Deps(testing::ec2(&[&inst, &none, &create_image, &snapshots]));
    let out = deps
        .start(&request("start", &windows_run(), build_steps()), NOW)
        .await
        .unwrap();
    assert_eq!(
        snapshots.num_calls(),
        0,
        "RegisterImage from snapshots would lose the Windows licence"
    );
    assert_eq!(out.image_id.as_deref(), Some(IMAGE));
    assert_eq!(out.plan.method, Method::CreateImage);
    assert_eq!(
        (out.plan.platform_details.as_str(), out.plan.usage_operation.as_str()),
        ("Windows", "RunInstances:0002")
    );
    let r = captured.only();
    assert_eq!(r.instance_id(), Some(BUILDER));
    assert_eq!(r.no_reboot(), Some(true));
    assert_eq!(r.boot_mode_override(), None, "the base is uefi already");
    let name = r.name().unwrap();
    assert!(name.starts_with("web-1.4.0-20261126-"), "{name}");
    let specs = r.tag_specifications();
    let by_type = |t: ResourceType| specs.iter().find(|s| s.resource_type() == Some(&t)).unwrap().tags();
    assert_eq!(tags::get(by_type(ResourceType::Image), tags::ROLE), Some("image"));
    assert_eq!(tags::get(by_type(ResourceType::Image), tags::STATE), Some("candidate"));
    assert_eq!(tags::get(by_type(ResourceType::Snapshot), tags::ROLE), Some("snapshot"));
    assert_eq!(
        tags::get(by_type(ResourceType::Snapshot), tags::SOURCE_IMAGE),
        Some(BASE_IMAGE)
    );
}

#[tokio::test]
async fn a_retried_create_image_adopts_its_image_by_tag_or_by_name() {
    let create_image = mock!(Ec2::create_image).then_output(|| CreateImageOutput::builder().image_id(IMAGE).build());
    let (inst, found) = (windows_builder(), own_image(true));
    let deps = Deps(testing::ec2(&[&inst, &found, &create_image]));
    let out = deps
        .start(&request("start", &windows_run(), build_steps()), NOW)
        .await
        .unwrap();
    assert_eq!((out.image_id.as_deref(), create_image.num_calls()), (Some(IMAGE), 0));

    // A lost answer: the tag look-up misses, CreateImage finds the name taken, the name look-up finds ours.
    let by_tag = testing::finds_no_images(testing::images_by_execution_tag());
    let by_name = own_image(true);
    let (deps, duplicate) = name_taken(&by_tag, &by_name);
    let out = deps
        .start(&request("start", &windows_run(), build_steps()), NOW)
        .await
        .unwrap();
    assert_eq!((out.image_id.as_deref(), duplicate.num_calls()), (Some(IMAGE), 1));
}

/// Deps for a CreateImage start on the Windows builder that finds the name taken, `by_tag` and `by_name`
/// answering the look-ups; and the refused CreateImage, to count.
fn name_taken(by_tag: &Rule, by_name: &Rule) -> (Deps, Rule) {
    let duplicate = ami_testkit::ec2_error!(once Ec2::create_image, "InvalidAMIName.Duplicate");
    let inst = windows_builder();
    (Deps(testing::ec2(&[&inst, by_tag, by_name, &duplicate])), duplicate)
}

#[tokio::test]
async fn create_image_status_is_pending_then_lists_the_image_snapshots() {
    let started = SnapshotState {
        instance_id: BUILDER.into(),
        source_image_id: BASE_IMAGE.into(),
        root_device_name: "/dev/sda1".into(),
        snapshots: vec![],
        plan: testing::windows_plan(),
        image_id: Some(IMAGE.into()),
        percent: 0,
        consistency: None,
        warnings: Vec::new(),
        progress: Progress::start(NOW, 60),
    };
    let image = |state: Ec2ImageState| {
        let ebs = EbsBlockDevice::builder()
            .snapshot_id("snap-0000000000000009")
            .volume_size(50)
            .volume_type(VolumeType::Gp3)
            .iops(3000)
            .throughput(125)
            .build();
        aws_sdk_ec2::types::Image::builder()
            .image_id(IMAGE)
            .state(state)
            .root_device_name("/dev/sda1")
            .block_device_mappings(BlockDeviceMapping::builder().device_name("/dev/sda1").ebs(ebs).build())
            .build()
    };
    let states = mock!(Ec2::describe_images)
        .match_requests(|r| r.image_ids() == [IMAGE])
        .sequence()
        .output(move || {
            DescribeImagesOutput::builder()
                .images(image(Ec2ImageState::Pending))
                .build()
        })
        .output(move || {
            DescribeImagesOutput::builder()
                .images(image(Ec2ImageState::Available))
                .build()
        })
        .build();
    let deps = Deps(testing::ec2(&[&states]));
    let mut steps = build_steps();
    steps["snapshot"] = serde_json::to_value(&started).unwrap();
    let poll = || request("status", &windows_run(), steps.clone());
    let out = deps.status(&poll(), NOW + 60).await.unwrap();
    assert_eq!(out.progress.status, Status::Pending);
    let out = deps.status(&poll(), NOW + 120).await.unwrap();
    assert_eq!((out.progress.status, out.percent), (Status::Ready, 100));
    let s = &out.snapshots[0];
    assert_eq!(
        (
            s.snapshot_id.as_str(),
            s.device_name.as_str(),
            s.size_gib,
            s.iops,
            s.throughput
        ),
        ("snap-0000000000000009", "/dev/sda1", 50, Some(3000), Some(125))
    );
}

#[tokio::test]
async fn a_boot_mode_the_source_instance_cannot_boot_is_refused_before_it_is_stopped() {
    let mut recipe = testing::recipe();
    recipe.source = Source::Instance(SourceInstance {
        id: BUILDER.into(),
        stop_first: true,
    });
    recipe.image.boot_mode = Some(ami_core::model::recipe::BootMode::Uefi);
    let legacy = mock!(Ec2::describe_instances).then_output(|| {
        let instance = builder_of(
            InstanceStateName::Running,
            "Windows",
            "RunInstances:0002",
            BootModeValues::LegacyBios,
        )
        .build();
        DescribeInstancesOutput::builder()
            .reservations(Reservation::builder().instances(instance).build())
            .build()
    });
    let stop = mock!(Ec2::stop_instances).then_output(|| StopInstancesOutput::builder().build());
    let deps = Deps(testing::ec2(&[&legacy, &stop]));
    let err = deps
        .start(&request("start", &testing::run_with(recipe), json!({})), NOW)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("recipe.image.boot_mode"), "{err}");
    assert_eq!(stop.num_calls(), 0);
}

// -- eventual consistency and limits ------------------------------------------------------------------------------

#[tokio::test]
async fn a_tag_look_up_that_misses_is_made_again_before_creating_a_second_set() {
    // The set a lost answer made is not visible to the first look-up (eventual consistency), but is to the second.
    let create = mock!(Ec2::create_snapshots).then_output(created);
    let late = mock!(Ec2::describe_snapshots)
        .match_requests(|r| !r.filters().is_empty())
        .sequence()
        .output(|| DescribeSnapshotsOutput::builder().build())
        .output(|| {
            DescribeSnapshotsOutput::builder()
                .set_snapshots(Some(made_snapshots()))
                .build()
        })
        .build();
    let out = start_stopped(&late, &create).await;
    assert_eq!(out.snapshots.len(), 2);
    assert_eq!(
        (late.num_calls(), create.num_calls()),
        (2, 0),
        "adopted on the second look-up"
    );
}

#[tokio::test]
async fn snapshots_unknown_right_after_create_are_pending_then_found() {
    let not_found = ami_testkit::ec2_error!(once Ec2::describe_snapshots, "InvalidSnapshot.NotFound", match |r| r.filters().is_empty());
    let found = snapshot_states(vec![vec![
        ("snap-0000000000000001", Ec2SnapshotState::Completed, "100%"),
        ("snap-0000000000000002", Ec2SnapshotState::Completed, "100%"),
    ]]);
    let state = started_state().await;
    let mut steps = build_steps();
    steps["snapshot"] = serde_json::to_value(&state).unwrap();
    let req = request("status", &testing::run(), steps);
    let deps = Deps(testing::ec2(&[&not_found]));
    let s = deps.status(&req, NOW + 30).await.unwrap();
    assert_eq!((s.percent, s.progress.status), (0, Status::Pending), "not an AwsError");
    let deps = Deps(testing::ec2(&[&found]));
    let s = deps.status(&req, NOW + 60).await.unwrap();
    assert_eq!(s.progress.status, Status::Ready);
    // Still unknown long after they were made: deleted from outside.
    let gone = ami_testkit::ec2_error!(once Ec2::describe_snapshots, "InvalidSnapshot.NotFound", match |r| r.filters().is_empty());
    let deps = Deps(testing::ec2(&[&gone]));
    let err = deps.status(&req, NOW + 600).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ResourceGone", "{err}");
}

#[tokio::test]
async fn a_snapshot_limit_is_limit_exceeded_for_the_state_machine_to_retry() {
    let create = ami_testkit::ec2_error!(once Ec2::create_snapshots, "ConcurrentSnapshotLimitExceeded");
    let deps = start_deps(&[InstanceStateName::Stopped], &own_snapshots(vec![]), &create);
    let req = testing::request("start", &testing::run(), build_steps());
    let err = handle(&deps, req).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.LimitExceeded", "{err}");
    assert_eq!(create.num_calls(), 1);
}

#[tokio::test]
async fn create_image_name_taken_but_not_listed_yet_is_transient_not_conflict() {
    let by_tag = testing::finds_no_images(testing::images_by_execution_tag());
    let by_name = testing::finds_no_images(testing::images_by_name());
    let (deps, _) = name_taken(&by_tag, &by_name);
    let err = deps
        .start(&request("start", &windows_run(), build_steps()), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Transient", "{err}");
}

ami_testkit::step_contract_tests! {
    deps: |calls: &ami_testkit::Calls| Deps(calls.ec2(&[])),
    request: || testing::request("start", &testing::run(), build_steps()),
    malformed: [
        (|r| r["steps"] = json!({}), "input.steps.build"),
        (
            |r| r["run"]["recipe"]["image"]["timeout_minutes"] = json!("soon"),
            "input.run.recipe.image.timeout_minutes",
        ),
    ],
    rejects: ["finish"],
}

fn source_run(stop_first: bool) -> ami_core::model::steps::Run {
    let mut recipe = testing::recipe();
    recipe.source = Source::Instance(SourceInstance {
        id: BUILDER.into(),
        stop_first,
    });
    let mut run = testing::run_with(recipe);
    run.build = false;
    run
}

/// `source.instance` with `stop_first: false` on a running instance: its volumes are snapshotted as they are,
/// crash-consistent ("only the data that has been written to the volumes at the time the snapshots are created",
/// CreateImage `NoReboot`), so the output says what was taken and warns; a stopped instance's image is not.
#[tokio::test]
async fn a_running_source_instance_not_stopped_first_is_taken_crash_consistent_with_a_warning() {
    for (state, taken) in [
        (InstanceStateName::Running, "crash-consistent"),
        (InstanceStateName::Stopped, "stopped"),
    ] {
        let create = mock!(Ec2::create_snapshots).then_output(created);
        let (inst, mine, vols) = (
            describe_instances(if state == InstanceStateName::Running {
                &[InstanceStateName::Running]
            } else {
                &[InstanceStateName::Stopped]
            }),
            own_snapshots(vec![]),
            volumes(),
        );
        let stop = mock!(Ec2::stop_instances).then_output(|| StopInstancesOutput::builder().build());
        let deps = Deps(testing::ec2(&[&inst, &mine, &vols, &create, &stop]));
        let out = handle(&deps, testing::request("start", &source_run(false), json!({})))
            .await
            .unwrap();
        let out = serde_json::to_value(out).unwrap();
        assert_eq!(stop.num_calls(), 0, "{state:?}: never stopped");
        assert_eq!(out["consistency"], taken, "{state:?}: {out}");
        let warnings = out["warnings"].as_array().cloned().unwrap_or_default();
        if state == InstanceStateName::Running {
            let text = warnings.first().and_then(|w| w.as_str()).unwrap_or_default();
            for part in [BUILDER, "crash-consistent", "stop_first"] {
                assert!(text.contains(part), "{part}: {out}");
            }
        } else {
            assert!(warnings.is_empty(), "{out}");
        }
    }
}
