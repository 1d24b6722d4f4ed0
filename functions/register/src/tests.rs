use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::register_image::{RegisterImageInput, RegisterImageOutput};
use aws_sdk_ec2::types::{Image, ImageState as Ec2ImageState, StateReason, Tag};
use aws_smithy_mocks::{Rule, mock};
use serde_json::json;

use ami_core::steps::{SnapshotInfo, SnapshotState};
use ami_core::testing::{self, BASE_IMAGE, Captured, NOW};

use ami_core::input;

use super::*;

const NEW_IMAGE: &str = "ami-0ccccccccccccccc1";

fn snapshot_steps() -> serde_json::Value {
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
        percent: 100,
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
    mock!(Ec2::register_image).then_compute_output(move |r| {
        captured.push(r);
        RegisterImageOutput::builder().image_id(NEW_IMAGE).build()
    })
}

#[tokio::test]
async fn registers_with_the_full_mapping_and_secure_defaults() {
    let captured = Captured::default();
    let (none, reg) = (lookup(vec![]), register(captured.clone()));
    let deps = Deps {
        ec2: testing::ec2(&[&none, &reg]),
    };
    let out = start(&deps, &request("start", snapshot_steps()), NOW).await.unwrap();
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
    assert_eq!(r.boot_mode(), Some(&BootModeValues::UefiPreferred));
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
async fn tpm_and_imds_follow_the_recipe() {
    let _imds = ami_core::audit::allow_imds_optional(); // the recipe turns ImdsSupport v2.0 off below
    let mut recipe = testing::recipe();
    recipe.image.boot_mode = Some(ami_core::recipe::BootMode::Uefi);
    recipe.image.tpm_support = true;
    recipe.image.imds_v2 = false;
    let captured = Captured::default();
    let (none, reg) = (lookup(vec![]), register(captured.clone()));
    let deps = Deps {
        ec2: testing::ec2(&[&none, &reg]),
    };
    let req = input::parse_value(
        "input",
        testing::request("start", &testing::run_with(recipe), snapshot_steps()),
    )
    .unwrap();
    start(&deps, &req, NOW).await.unwrap();
    let r = captured.only();
    assert_eq!(r.tpm_support(), Some(&TpmSupportValues::V20));
    assert_eq!(r.boot_mode(), Some(&BootModeValues::Uefi));
    assert_eq!(r.imds_support(), None);
}

#[tokio::test]
async fn retried_start_adopts_the_image_found_by_tag() {
    let (found, reg) = (lookup(vec![ours(testing::EXECUTION)]), register(Captured::default()));
    let deps = Deps {
        ec2: testing::ec2(&[&found, &reg]),
    };
    let out = handle(&deps, testing::request("start", &testing::run(), snapshot_steps()))
        .await
        .unwrap();
    assert_eq!(out.image_id, NEW_IMAGE);
    assert_eq!(reg.num_calls(), 0);
}

fn duplicate_then_lookup(owner_execution: &'static str) -> (Rule, Rule, Rule) {
    let by_tag = mock!(Ec2::describe_images)
        .match_requests(|r| {
            r.filters()
                .iter()
                .any(|f| f.name() == Some("tag:ami-pipeline:execution"))
        })
        .then_output(|| DescribeImagesOutput::builder().build());
    let by_name = mock!(Ec2::describe_images)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("name")))
        .then_output(move || DescribeImagesOutput::builder().images(ours(owner_execution)).build());
    let reg = mock!(Ec2::register_image)
        .sequence()
        .http_status(400, Some(testing::ec2_error_body("InvalidAMIName.Duplicate")))
        .build();
    (by_tag, by_name, reg)
}

#[tokio::test]
async fn duplicate_name_of_ours_is_adopted() {
    let (a, b, reg) = duplicate_then_lookup(testing::EXECUTION);
    let deps = Deps {
        ec2: testing::ec2(&[&a, &b, &reg]),
    };
    let out = start(&deps, &request("start", snapshot_steps()), NOW).await.unwrap();
    assert_eq!(out.image_id, NEW_IMAGE);
    assert_eq!(reg.num_calls(), 1);
}

#[tokio::test]
async fn duplicate_name_of_another_execution_is_a_conflict() {
    let (a, b, reg) = duplicate_then_lookup("web-r-0-9-0");
    let deps = Deps {
        ec2: testing::ec2(&[&a, &b, &reg]),
    };
    let err = start(&deps, &request("start", snapshot_steps()), NOW)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Conflict");
    assert!(err.to_string().contains("{{id}}"), "{err}");
}

#[tokio::test]
async fn throttled_register_is_retried_then_succeeds() {
    let none = lookup(vec![]);
    let reg = mock!(Ec2::register_image)
        .sequence()
        .http_status(503, Some(testing::ec2_error_body("RequestLimitExceeded")))
        .output(|| RegisterImageOutput::builder().image_id(NEW_IMAGE).build())
        .build();
    let deps = Deps {
        ec2: testing::ec2(&[&none, &reg]),
    };
    assert_eq!(
        start(&deps, &request("start", snapshot_steps()), NOW)
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
    let deps = Deps {
        ec2: testing::ec2(&[&states]),
    };
    let mut seen = vec![];
    for _ in 0..3 {
        seen.push(
            status(&deps, &request("status", image_steps()), NOW + 30)
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
    let deps = Deps {
        ec2: testing::ec2(&[&states]),
    };
    let err = status(&deps, &request("status", image_steps()), NOW).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ImageFailed");
    assert!(err.to_string().contains("snapshot unusable"));
}
