use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::get_instance_uefi_data::GetInstanceUefiDataOutput;
use aws_sdk_ec2::operation::modify_image_attribute::{ModifyImageAttributeInput, ModifyImageAttributeOutput};
use aws_sdk_ec2::operation::register_image::{RegisterImageInput, RegisterImageOutput};
use aws_sdk_ec2::types::{Image, ImageState as Ec2ImageState, StateReason, Tag};
use aws_smithy_mocks::{Rule, mock};
use serde_json::json;

use ami_core::model::steps::{SnapshotInfo, SnapshotState};
use ami_testkit::{self as testing, BASE_IMAGE, Captured, NOW};

use ami_core::step::{Step, handle};
use ami_core::{model::input, model::naming};

use super::*;

const NEW_IMAGE: &str = "ami-0ccccccccccccccc1";

fn snapshot_steps() -> serde_json::Value {
    snapshot_steps_with(testing::linux_plan())
}

fn snapshot_steps_with(plan: ami_core::aws::platform::ImagePlan) -> serde_json::Value {
    let info = |id: &str, dev: &str, size: i32, vt: &str| SnapshotInfo {
        snapshot_id: id.into(),
        device_name: dev.into(),
        volume_id: "vol-00000000000000001".into(),
        size_gib: size,
        volume_type: vt.into(),
        iops: None,
        throughput: None,
    };
    let s = SnapshotState {
        instance_id: "i-0bbbbbbbbbbbbbbb1".into(),
        source_image_id: BASE_IMAGE.into(),
        root_device_name: "/dev/xvda".into(),
        snapshots: vec![
            info("snap-01", "/dev/sdf", 20, "gp2"),
            info("snap-02", "/dev/xvda", 16, "gp3"),
        ],
        plan,
        image_id: None,
        percent: 100,
        consistency: None,
        warnings: Vec::new(),
        progress: Progress::start(NOW - 600, 60).with_status(Status::Ready),
    };
    json!({ "snapshot": s })
}

fn request(action: &str, steps: serde_json::Value) -> StepRequest {
    input::parse_value("input", testing::request(action, &testing::run(), steps)).unwrap()
}

fn lookup(found: Vec<Image>) -> Rule {
    mock!(Ec2::describe_images)
        .match_requests(|r| r.owners() == ["self"])
        .then_output(move || DescribeImagesOutput::builder().set_images(Some(found.clone())).build())
}

fn ours(execution: &str) -> Image {
    Image::builder()
        .image_id(NEW_IMAGE)
        .tags(Tag::builder().key(tags::EXECUTION).value(execution).build())
        .build()
}

fn register(captured: Captured<RegisterImageInput>) -> Rule {
    ami_testkit::capturing!(
        Ec2::register_image,
        captured,
        RegisterImageOutput::builder().image_id(NEW_IMAGE).build()
    )
}

/// A client answering `rules`, then the builder's DescribeInstances and DescribeInstanceTypes as a UEFI-booted
/// t3.small (a Nitro type, which keeps its UEFI variables).
fn ec2(rules: &[&Rule]) -> Ec2 {
    let (booted, typed) = (builder("uefi", "t3.small"), instance_type("t3.small", false));
    testing::ec2(&[rules, &[&booted, &typed]].concat())
}

const UEFI_DATA: &str = "QU1aVUVGSQ==";

/// GetInstanceUefiData for the instance that was snapshotted.
fn uefi(asked: Captured<String>) -> Rule {
    mock!(Ec2::get_instance_uefi_data).then_compute_output(move |r| {
        asked.push(&r.instance_id().unwrap_or_default().to_string());
        GetInstanceUefiDataOutput::builder().uefi_data(UEFI_DATA).build()
    })
}

#[tokio::test]
async fn registers_with_the_full_mapping_and_secure_defaults() {
    let captured = Captured::default();
    let asked = Captured::default();
    let (none, reg, uefi) = (lookup(vec![]), register(captured.clone()), uefi(asked.clone()));
    let deps = Deps(ec2(&[&none, &reg, &uefi]));
    let out = deps.start(&request("start", snapshot_steps()), NOW).await.unwrap();
    assert_eq!(out.image_id, NEW_IMAGE);
    assert_eq!(out.region, "us-east-1");
    assert_eq!(out.progress.deadline, NOW + 240 * 60);

    let r = captured.only();
    let id = naming::execution_short_id(testing::EXECUTION);
    assert_eq!(r.name(), Some(format!("web-1.4.0-20261126-{id}").as_str()));
    assert_eq!(r.description(), Some("web server, release 1.4.0"));
    assert_eq!(r.architecture(), Some(&ArchitectureValues::X8664));
    assert_eq!(r.root_device_name(), Some("/dev/xvda"));
    assert_eq!(r.virtualization_type(), Some("hvm"));
    assert_eq!(r.ena_support(), Some(true));
    assert_eq!(r.imds_support(), Some(&ImdsSupportValues::V20));
    // The boot mode planned from the builder (which reports its AMI's), and its UEFI variable store.
    assert_eq!(r.boot_mode(), Some(&BootModeValues::UefiPreferred));
    assert_eq!(r.uefi_data(), Some(UEFI_DATA));
    assert_eq!(asked.only(), "i-0bbbbbbbbbbbbbbb1");
    assert_eq!(r.tpm_support(), None);
    let maps: Vec<_> = r
        .block_device_mappings()
        .iter()
        .map(|m| {
            let e = m.ebs().unwrap();
            (
                m.device_name().unwrap(),
                e.snapshot_id().unwrap(),
                e.volume_size().unwrap(),
                e.delete_on_termination(),
            )
        })
        .collect();
    assert_eq!(
        maps,
        [
            ("/dev/sdf", "snap-01", 20, Some(true)),
            ("/dev/xvda", "snap-02", 16, Some(true))
        ]
    );
    let spec = &r.tag_specifications()[0];
    assert_eq!(spec.resource_type(), Some(&ResourceType::Image));
    for (k, v) in [
        (tags::PIPELINE, "web"),
        (tags::EXECUTION, testing::EXECUTION),
        (tags::ROLE, "image"),
        (tags::RELEASE, "1.4.0"),
        (tags::SOURCE_IMAGE, BASE_IMAGE),
        (tags::STATE, "candidate"),
        ("team", "platform"),
    ] {
        assert_eq!(tags::get(spec.tags(), k), Some(v), "{k}");
    }
}

#[tokio::test]
async fn tpm_and_imds_follow_the_plan_and_the_recipe() {
    let _imds = ami_core::audit::allow_imds_optional(); // the recipe turns ImdsSupport v2.0 off below
    let mut recipe = testing::recipe();
    recipe.image.imds_v2 = false;
    let plan = ami_core::aws::platform::ImagePlan {
        boot_mode: Some("uefi".into()),
        tpm_support: true,
        ..testing::linux_plan()
    };
    let captured = Captured::default();
    let (none, reg, uefi) = (lookup(vec![]), register(captured.clone()), uefi(Captured::default()));
    let deps = Deps(ec2(&[&none, &reg, &uefi]));
    let req = input::parse_value(
        "input",
        testing::request("start", &testing::run_with(recipe), snapshot_steps_with(plan)),
    )
    .unwrap();
    deps.start(&req, NOW).await.unwrap();
    let r = captured.only();
    assert_eq!(r.tpm_support(), Some(&TpmSupportValues::V20));
    assert_eq!(r.boot_mode(), Some(&BootModeValues::Uefi));
    assert_eq!(r.imds_support(), None);
}

#[tokio::test]
async fn a_legacy_bios_image_carries_no_uefi_data() {
    let plan = ami_core::aws::platform::ImagePlan {
        boot_mode: None,
        ..testing::linux_plan()
    };
    let captured = Captured::default();
    let (none, reg, uefi) = (lookup(vec![]), register(captured.clone()), uefi(Captured::default()));
    let deps = Deps(ec2(&[&none, &reg, &uefi]));
    deps.start(&request("start", snapshot_steps_with(plan)), NOW)
        .await
        .unwrap();
    let r = captured.only();
    assert_eq!((r.boot_mode(), r.uefi_data()), (None, None));
    assert_eq!(uefi.num_calls(), 0);
}

#[tokio::test]
async fn an_image_made_with_create_image_is_adopted_and_gets_imds_v2() {
    let mut steps = snapshot_steps_with(testing::windows_plan());
    steps["snapshot"]["image_id"] = json!(NEW_IMAGE);
    let modified: Captured<ModifyImageAttributeInput> = Captured::default();
    let modify = ami_testkit::capturing!(
        Ec2::modify_image_attribute,
        modified.clone(),
        ModifyImageAttributeOutput::builder().build()
    );
    let reg = register(Captured::default());
    let deps = Deps(ec2(&[&modify, &reg]));
    let out = deps.start(&request("start", steps), NOW).await.unwrap();
    assert_eq!(out.image_id, NEW_IMAGE);
    assert_eq!(reg.num_calls(), 0, "CreateImage made the image: nothing is registered");
    let m = modified.only();
    assert_eq!(m.image_id(), Some(NEW_IMAGE));
    assert_eq!(m.imds_support().and_then(|v| v.value()), Some("v2.0"));
}

#[tokio::test]
async fn create_image_without_an_image_is_invalid_input() {
    let deps = Deps(ec2(&[]));
    let err = deps
        .start(&request("start", snapshot_steps_with(testing::windows_plan())), NOW)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("input.steps.snapshot.image_id"), "{err}");
}

#[tokio::test]
async fn retried_start_adopts_the_image_found_by_tag() {
    let (found, reg) = (lookup(vec![ours(testing::EXECUTION)]), register(Captured::default()));
    let deps = Deps(ec2(&[&found, &reg]));
    let out = handle(&deps, testing::request("start", &testing::run(), snapshot_steps()))
        .await
        .unwrap();
    assert_eq!(out.image_id, NEW_IMAGE);
    assert_eq!(reg.num_calls(), 0);
}

fn duplicate_then_lookup(owner_execution: &'static str) -> (Rule, Rule, Rule) {
    let by_tag = testing::finds_no_images(testing::images_by_execution_tag());
    let by_name = testing::images_by_name()
        .then_output(move || DescribeImagesOutput::builder().images(ours(owner_execution)).build());
    let reg = ami_testkit::ec2_error!(once Ec2::register_image, "InvalidAMIName.Duplicate");
    (by_tag, by_name, reg)
}

#[tokio::test]
async fn duplicate_name_of_ours_is_adopted() {
    let (a, b, reg) = duplicate_then_lookup(testing::EXECUTION);
    let uefi = uefi(Captured::default());
    let deps = Deps(ec2(&[&a, &b, &reg, &uefi]));
    let out = deps.start(&request("start", snapshot_steps()), NOW).await.unwrap();
    assert_eq!(out.image_id, NEW_IMAGE);
    assert_eq!(reg.num_calls(), 1);
}

#[tokio::test]
async fn duplicate_name_of_another_execution_is_a_conflict() {
    let (a, b, reg) = duplicate_then_lookup("web-r-0-9-0");
    let uefi = uefi(Captured::default());
    let deps = Deps(ec2(&[&a, &b, &reg, &uefi]));
    let err = deps.start(&request("start", snapshot_steps()), NOW).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.Conflict", &["{{id}}"]);
}

#[tokio::test]
async fn throttled_register_is_retried_then_succeeds() {
    let none = lookup(vec![]);
    let reg = ami_testkit::throttled_once!(Ec2::register_image, || RegisterImageOutput::builder()
        .image_id(NEW_IMAGE)
        .build());
    let uefi = uefi(Captured::default());
    let deps = Deps(ec2(&[&none, &reg, &uefi]));
    assert_eq!(
        deps.start(&request("start", snapshot_steps()), NOW)
            .await
            .unwrap()
            .image_id,
        NEW_IMAGE
    );
    assert_eq!(reg.num_calls(), 2);
}

fn image_states(states: Vec<Option<Ec2ImageState>>) -> Rule {
    let mut seq = mock!(Ec2::describe_images)
        .match_requests(|r| r.image_ids() == [NEW_IMAGE])
        .sequence();
    for st in states {
        seq = match st {
            // Right after a create, EC2 may not know the image yet.
            None => seq.http_status(400, Some(testing::ec2_error_body("InvalidAMIID.NotFound"))),
            Some(st) => seq.output(move || {
                DescribeImagesOutput::builder()
                    .images(
                        Image::builder()
                            .image_id(NEW_IMAGE)
                            .state(st.clone())
                            .platform_details("Linux/UNIX")
                            .usage_operation("RunInstances")
                            .boot_mode(BootModeValues::UefiPreferred)
                            .state_reason(StateReason::builder().message("snapshot unusable").build())
                            .build(),
                    )
                    .build()
            }),
        };
    }
    seq.build()
}

fn image_steps() -> serde_json::Value {
    let mut steps = snapshot_steps();
    steps["register"] = json!(ImageState {
        region: "us-east-1".into(),
        image_id: NEW_IMAGE.into(),
        name: "web".into(),
        progress: Progress::start(NOW, 240),
    });
    steps
}

#[tokio::test]
async fn status_is_pending_until_available() {
    let states = image_states(vec![None, Some(Ec2ImageState::Pending), Some(Ec2ImageState::Available)]);
    let deps = Deps(ec2(&[&states]));
    let mut seen = vec![];
    for _ in 0..3 {
        seen.push(
            deps.status(&request("status", image_steps()), NOW + 30)
                .await
                .unwrap()
                .progress
                .status,
        );
    }
    assert_eq!(seen, [Status::Pending, Status::Pending, Status::Ready]);
}

#[tokio::test]
async fn failed_image_fails_the_step_with_its_reason() {
    let states = image_states(vec![Some(Ec2ImageState::Failed)]);
    let deps = Deps(ec2(&[&states]));
    let err = deps.status(&request("status", image_steps()), NOW).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.ImageFailed", &["snapshot unusable"]);
}

fn available(details: &str, operation: &str) -> Rule {
    let (details, operation) = (details.to_string(), operation.to_string());
    mock!(Ec2::describe_images).then_output(move || {
        DescribeImagesOutput::builder()
            .images(
                Image::builder()
                    .image_id(NEW_IMAGE)
                    .state(Ec2ImageState::Available)
                    .platform_details(&details)
                    .usage_operation(&operation)
                    .boot_mode(BootModeValues::Uefi)
                    .tpm_support(TpmSupportValues::V20)
                    .build(),
            )
            .build()
    })
}

#[tokio::test]
async fn an_image_that_lost_its_billing_fails_with_platform_mismatch() {
    let mut steps = image_steps();
    steps["snapshot"]["plan"] = json!(testing::windows_plan());
    // RegisterImage from snapshots whose metadata lacks the licence: Linux/UNIX (RegisterImage API reference).
    let lost = available("Linux/UNIX", "RunInstances");
    let deps = Deps(ec2(&[&lost]));
    let err = deps.status(&request("status", steps.clone()), NOW).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.PlatformMismatch", &["Windows"]);

    let kept = available("Windows", "RunInstances:0002");
    let deps = Deps(ec2(&[&kept]));
    let out = deps.status(&request("status", steps), NOW).await.unwrap();
    assert_eq!(out.progress.status, Status::Ready);
}

/// An instance-store image is registered from its manifest: ImageLocation is `bucket/key`, the recipe's `s3://`
/// URL without the scheme (RegisterImage API reference), and no block device mapping is sent.
#[tokio::test]
async fn an_instance_store_image_is_registered_from_bucket_slash_key() {
    let mut run = testing::run();
    run.recipe.image.root_device_type = RootDeviceType::InstanceStore;
    run.recipe.image.s3_manifest = Some("s3://web-bundles/web/1.4.0/image.manifest.xml".into());
    let mut steps = snapshot_steps();
    steps["snapshot"]["snapshots"] = json!([]); // the snapshot step makes none for instance store
    let req: StepRequest = input::parse_value("input", testing::request("start", &run, steps)).unwrap();

    let captured = Captured::default();
    let (none, reg, uefi) = (lookup(vec![]), register(captured.clone()), uefi(Captured::default()));
    let deps = Deps(ec2(&[&none, &reg, &uefi]));
    let out = deps.start(&req, NOW).await.unwrap();
    assert_eq!(out.image_id, NEW_IMAGE);
    let r = captured.only();
    assert_eq!(r.image_location(), Some("web-bundles/web/1.4.0/image.manifest.xml"));
    assert!(r.block_device_mappings().is_empty(), "{:?}", r.block_device_mappings());
}

/// The builder of an instance-store image boots UEFI from its `uefi-preferred` base on a Nitro type, but the image
/// will boot only on the Xen types with an instance-store root, which boot legacy BIOS: it is registered
/// `legacy-bios`, without the builder's UEFI variable store and without NitroTPM.
#[tokio::test]
async fn an_instance_store_image_is_registered_legacy_bios_without_uefi_data() {
    let mut run = testing::run();
    run.recipe.image.root_device_type = RootDeviceType::InstanceStore;
    run.recipe.image.s3_manifest = Some("s3://web-bundles/web/1.4.0/image.manifest.xml".into());
    run.recipe.image.boot_mode = None;
    let builder_origin = ami_core::aws::platform::Origin {
        what: "instance i-0bbbbbbbbbbbbbbb1".into(),
        platform_details: ami_core::aws::platform::LINUX_UNIX.into(),
        usage_operation: ami_core::aws::platform::RUN_INSTANCES.into(),
        boot_mode: Some("uefi-preferred".into()),
        current_boot_mode: Some("uefi".into()),
        tpm_support: false,
    };
    let plan = ami_core::aws::platform::plan(&builder_origin, &run.recipe.image).unwrap();
    let mut steps = snapshot_steps_with(plan);
    steps["snapshot"]["snapshots"] = json!([]);
    let req: StepRequest = input::parse_value("input", testing::request("start", &run, steps)).unwrap();

    let captured = Captured::default();
    let (none, reg, uefi) = (lookup(vec![]), register(captured.clone()), uefi(Captured::default()));
    let deps = Deps(ec2(&[&none, &reg, &uefi]));
    deps.start(&req, NOW).await.unwrap();
    let r = captured.only();
    assert_eq!(r.boot_mode(), Some(&BootModeValues::LegacyBios));
    assert_eq!((r.uefi_data(), r.tpm_support()), (None, None));
    assert_eq!(uefi.num_calls(), 0);
}

#[tokio::test]
async fn duplicate_then_invisible_is_transient_and_the_retry_adopts_by_tag() {
    // A lost RegisterImage made the image; the retry's tag look-up misses it and RegisterImage finds the name
    // taken, but the name look-up does not list it yet (eventual consistency): transient, not Conflict.
    let by_tag = testing::images_by_execution_tag()
        .sequence()
        .output(|| DescribeImagesOutput::builder().build())
        .output(|| DescribeImagesOutput::builder().images(ours(testing::EXECUTION)).build())
        .build();
    let by_name = testing::finds_no_images(testing::images_by_name());
    let reg = ami_testkit::ec2_error!(once Ec2::register_image, "InvalidAMIName.Duplicate");
    let uefi = uefi(Captured::default());
    let deps = Deps(ec2(&[&by_tag, &by_name, &reg, &uefi]));
    let req = testing::request("start", &testing::run(), snapshot_steps());
    let err = handle(&deps, req.clone()).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Transient", "{err}");
    // Step Functions retries the start: the tag look-up now finds the image.
    let out = handle(&deps, req).await.unwrap();
    assert_eq!(out.image_id, NEW_IMAGE);
    assert_eq!(reg.num_calls(), 1, "registered once");
}

ami_testkit::step_contract_tests! {
    deps: |calls: &ami_testkit::Calls| Deps(calls.ec2(&[])),
    request: || testing::request("start", &testing::run(), snapshot_steps()),
    malformed: [
        (|r| r["steps"] = json!({}), "input.steps.snapshot"),
    ],
    rejects: ["finish"],
}

/// The builder as DescribeInstances reports it: booted `boot` (`CurrentInstanceBootMode`), of type `instance_type`.
fn builder(boot: &'static str, instance_type: &'static str) -> Rule {
    mock!(Ec2::describe_instances)
        .match_requests(|r| r.instance_ids() == ["i-0bbbbbbbbbbbbbbb1"])
        .then_output(move || {
            testing::described_instance(
                aws_sdk_ec2::types::Instance::builder()
                    .instance_id("i-0bbbbbbbbbbbbbbb1")
                    .instance_type(aws_sdk_ec2::types::InstanceType::from(instance_type))
                    .current_instance_boot_mode(aws_sdk_ec2::types::InstanceBootModeValues::from(boot))
                    .build(),
            )
        })
}

/// DescribeInstanceTypes of `instance_type`, bare metal or not.
fn instance_type(instance_type: &'static str, bare_metal: bool) -> Rule {
    mock!(Ec2::describe_instance_types)
        .match_requests(move |r| r.instance_types() == [aws_sdk_ec2::types::InstanceType::from(instance_type)])
        .then_output(move || {
            aws_sdk_ec2::operation::describe_instance_types::DescribeInstanceTypesOutput::builder()
                .instance_types(
                    aws_sdk_ec2::types::InstanceTypeInfo::builder()
                        .instance_type(aws_sdk_ec2::types::InstanceType::from(instance_type))
                        .bare_metal(bare_metal)
                        .build(),
                )
                .build()
        })
}

/// The variable store is carried only from a builder that booted UEFI (`CurrentInstanceBootMode`: a
/// `uefi-preferred` image boots legacy BIOS on a type without UEFI) on a type that keeps it: "Bare metal instances
/// don't preserve UEFI non-volatile variables across instance stop/start" (EC2 User Guide, "UEFI variables for
/// Amazon EC2 instances"), and the builder is stopped before its snapshots.
#[tokio::test]
async fn uefi_data_is_read_only_from_a_builder_that_booted_uefi_on_a_type_that_keeps_it() {
    for (boot, itype, metal, read) in [
        ("legacy-bios", "t3.small", false, false),
        ("uefi", "c6g.metal", true, false),
        ("uefi", "t3.small", false, true),
    ] {
        let captured = Captured::default();
        let asked = Captured::default();
        let (none, reg, data) = (lookup(vec![]), register(captured.clone()), uefi(asked.clone()));
        let (described, typed) = (builder(boot, itype), instance_type(itype, metal));
        let deps = Deps(ec2(&[&none, &reg, &data, &described, &typed]));
        deps.start(&request("start", snapshot_steps()), NOW).await.unwrap();
        let r = captured.only();
        assert_eq!(r.boot_mode(), Some(&BootModeValues::UefiPreferred), "{boot} {itype}");
        assert_eq!(r.uefi_data(), read.then_some(UEFI_DATA), "{boot} {itype}");
        assert_eq!(data.num_calls(), usize::from(read), "{boot} {itype}");
        // the type is looked up only for a builder that booted UEFI
        assert_eq!(typed.num_calls(), usize::from(boot == "uefi"), "{boot} {itype}");
    }
}
