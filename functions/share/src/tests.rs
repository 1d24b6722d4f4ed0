use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::describe_image_attribute::DescribeImageAttributeOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_snapshot_attribute::DescribeSnapshotAttributeOutput;
use aws_sdk_ec2::operation::modify_image_attribute::{ModifyImageAttributeInput, ModifyImageAttributeOutput};
use aws_sdk_ec2::operation::modify_snapshot_attribute::{ModifySnapshotAttributeInput, ModifySnapshotAttributeOutput};
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, Image, ImageState as AwsImageState};
use aws_smithy_mocks::{Rule, mock};
use serde_json::{Value, json};

use ami_core::model::recipe::Recipe;
use ami_core::model::steps::{CopyState, ImageState, Progress, Run, Status};
use ami_testkit::{self as testing, Captured, NOW};

use ami_core::model::input;
use ami_core::step::handle;

use super::*;

const CANDIDATE: &str = "ami-0ccccccccccccccc1";
const COPY: &str = "ami-0eeeeeeeeeeeeeee1";
const HOME: &str = testing::REGION;
const DEST: &str = "eu-west-1";
const SNAPSHOTS: [&str; 2] = ["snap-0ccccccccccccccc1", "snap-0ccccccccccccccc2"];
const COPY_SNAPSHOTS: [&str; 2] = ["snap-0eeeeeeeeeeeeeee1", "snap-0eeeeeeeeeeeeeee2"];
const A: &str = "111122223333";
const B: &str = "444455556666";
const ORG: &str = "arn:aws:organizations::111122223333:organization/o-exampleorg1";
const OU: &str = "arn:aws:organizations::111122223333:ou/o-exampleorg1/ou-ab12-cdefgh34";

/// One client per region, each with its own rules (and the request audit): a call in a region without rules
/// fails the test.
fn deps_in(home: &[&Rule], dest: &[&Rule]) -> Deps {
    Deps(testing::clients_in(&[(HOME, home), (DEST, dest)]))
}

/// For the single-region tests (a run without copy regions): one client for the pipeline's region, where the
/// candidate is shared.
fn deps(rules: &[&Rule]) -> Deps {
    Deps(testing::clients_in(&[(HOME, rules)]))
}

fn image_state(region: &str, image_id: &str) -> ImageState {
    ImageState {
        region: region.into(),
        image_id: image_id.into(),
        name: "web-1.4.0-20261126-0f00ba11".into(),
        progress: Progress::start(NOW - 900, 240).with_status(Status::Ready),
    }
}

fn copy_output(images: Vec<ImageState>) -> CopyState {
    CopyState {
        images,
        source_image_id: String::new(),
        boot_to_ready_seconds: None,
        progress: Progress::start(NOW - 900, 240).with_status(Status::Ready),
    }
}

/// `run` over `regions` (the first is home), with the recipe's distribution regions to match.
fn with_regions(mut run: Run, regions: &[&str]) -> Run {
    run.recipe.distribution.regions = regions[1..].iter().map(|r| r.to_string()).collect();
    run.recipe.distribution.kms_key_ids.clear();
    run.regions = regions.iter().map(|r| r.to_string()).collect();
    run
}

/// For the single-region tests: `run` without copy regions, so the candidate is shared in the pipeline's region
/// alone.
fn request_with(run: &Run) -> Value {
    let run = with_regions(run.clone(), &[HOME]);
    testing::request(
        "start",
        &run,
        json!({
            "register": image_state(HOME, CANDIDATE),
            "copy": copy_output(vec![image_state(HOME, CANDIDATE)]),
        }),
    )
}

fn run_with(edit: impl FnOnce(&mut Distribution)) -> Run {
    let mut recipe: Recipe = testing::recipe();
    edit(&mut recipe.distribution);
    recipe.validate().unwrap();
    testing::run_with(recipe)
}

fn image_with(id: &'static str, snapshots: [&'static str; 2], state: AwsImageState) -> Rule {
    mock!(Ec2::describe_images)
        .match_requests(move |r| r.image_ids() == [id])
        .then_output(move || {
            let mut b = Image::builder().image_id(id).state(state.clone());
            for (i, snap) in snapshots.iter().enumerate() {
                b = b.block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name(["/dev/xvda", "/dev/sdf"][i])
                        .ebs(EbsBlockDevice::builder().snapshot_id(*snap).encrypted(true).build())
                        .build(),
                );
            }
            DescribeImagesOutput::builder().images(b.build()).build()
        })
}

fn image(state: AwsImageState) -> Rule {
    image_with(CANDIDATE, SNAPSHOTS, state)
}

fn launch_permission_of(id: &'static str, current: &'static [&'static str]) -> Rule {
    mock!(Ec2::describe_image_attribute)
        .match_requests(move |r| {
            r.image_id() == Some(id) && r.attribute() == Some(&ImageAttributeName::LaunchPermission)
        })
        .then_output(move || {
            DescribeImageAttributeOutput::builder()
                .image_id(id)
                .set_launch_permissions(Some(
                    current
                        .iter()
                        .map(|a| LaunchPermission::builder().user_id(*a).build())
                        .collect(),
                ))
                .build()
        })
}

fn launch_permission_now(current: &'static [&'static str]) -> Rule {
    launch_permission_of(CANDIDATE, current)
}

fn modify_image(captured: Captured<ModifyImageAttributeInput>) -> Rule {
    ami_testkit::capturing!(
        Ec2::modify_image_attribute,
        captured,
        ModifyImageAttributeOutput::builder().build()
    )
}

fn volume_permission_now(current: &'static [&'static str]) -> Rule {
    mock!(Ec2::describe_snapshot_attribute)
        .match_requests(|r| r.attribute() == Some(&SnapshotAttributeName::CreateVolumePermission))
        .then_compute_output(move |r| {
            DescribeSnapshotAttributeOutput::builder()
                .set_snapshot_id(r.snapshot_id().map(String::from))
                .set_create_volume_permissions(Some(
                    current
                        .iter()
                        .map(|a| CreateVolumePermission::builder().user_id(*a).build())
                        .collect(),
                ))
                .build()
        })
}

fn modify_snapshot(captured: Captured<ModifySnapshotAttributeInput>) -> Rule {
    ami_testkit::capturing!(
        Ec2::modify_snapshot_attribute,
        captured,
        ModifySnapshotAttributeOutput::builder().build()
    )
}

/// The one region's share of a single-region call.
fn only(state: ShareState) -> ShareOutput {
    assert_eq!(state.regions.len(), 1, "{state:?}");
    state.regions.into_iter().next().unwrap()
}

fn added(req: &ModifyImageAttributeInput) -> Vec<LaunchPermission> {
    assert!(
        req.launch_permission().unwrap().remove().is_empty(),
        "share never removes"
    );
    req.launch_permission().unwrap().add().to_vec()
}

fn user(a: &str) -> LaunchPermission {
    LaunchPermission::builder().user_id(a).build()
}

#[test]
fn launch_permissions_follow_the_recipe_and_refuse_public_unless_allowed() {
    let d = |edit: fn(&mut Distribution)| {
        let mut d = Distribution::default();
        edit(&mut d);
        d
    };
    assert_eq!(launch_permissions(&d(|_| {})).unwrap(), []);
    assert_eq!(
        launch_permissions(&d(|d| {
            d.accounts = vec![B.into(), A.into()];
            d.organization_arns = vec![ORG.into()];
            d.organizational_unit_arns = vec![OU.into()];
        }))
        .unwrap(),
        [
            Grantee::Account(A.into()),
            Grantee::Account(B.into()),
            Grantee::Organization(ORG.into()),
            Grantee::OrganizationalUnit(OU.into()),
        ]
    );

    // `all` as an account would make the image public: refused without the flag, whatever the case.
    for all in ["all", "ALL", " all"] {
        let mut sneaky = d(|d| d.accounts = vec![A.into()]);
        sneaky.accounts.push(all.into());
        let err = launch_permissions(&sneaky).unwrap_err();
        assert_eq!(
            err.error_type(),
            "AmiPipeline.PublicSharingNotAllowed",
            "{all:?}: {err}"
        );
        assert!(err.to_string().contains("accounts[1]"), "{err}");
    }
    // With the flag, public means `Group=all`, once, and never a user id `all`.
    let public = launch_permissions(&d(|d| {
        d.public = true;
        d.accounts = vec!["all".into(), A.into()];
    }))
    .unwrap();
    assert_eq!(public, [Grantee::Account(A.into()), Grantee::Public]);
    assert_eq!(launch_permissions(&d(|d| d.public = true)).unwrap(), [Grantee::Public]);

    let err = launch_permissions(&d(|d| d.accounts = vec!["12345".into()])).unwrap_err();
    testing::assert_invalid_input(&err, "recipe.distribution.accounts[0]", &[]);
}

#[tokio::test]
async fn share_grants_launch_and_volume_permissions_to_the_accounts() {
    let (mods, snap_mods) = (Captured::default(), Captured::default());
    let rules = [
        image(AwsImageState::Available),
        launch_permission_now(&[]),
        modify_image(mods.clone()),
        volume_permission_now(&[]),
        modify_snapshot(snap_mods.clone()),
    ];
    let deps = deps(&rules.iter().collect::<Vec<_>>());
    let out = handle(&deps, request_with(&testing::run())).await.map(only).unwrap();

    let req = mods.only();
    assert_eq!(req.image_id(), Some(CANDIDATE));
    assert_eq!(
        added(&req),
        [user(A), user(B)],
        "the recipe's accounts, and no Group=all"
    );
    let snaps = snap_mods.all();
    assert_eq!(snaps.len(), 2);
    for (req, id) in snaps.iter().zip(SNAPSHOTS) {
        assert_eq!(req.snapshot_id(), Some(id));
        assert_eq!(req.attribute(), Some(&SnapshotAttributeName::CreateVolumePermission));
        let users: Vec<_> = req
            .create_volume_permission()
            .unwrap()
            .add()
            .iter()
            .map(|p| (p.user_id(), p.group()))
            .collect();
        assert_eq!(users, [(Some(A), None), (Some(B), None)]);
    }
    assert_eq!(out.region, HOME);
    assert_eq!(out.image_id, CANDIDATE);
    let counts = |granted, already_granted| Grants {
        granted,
        already_granted,
    };
    assert_eq!(out.launch_permissions, counts(2, 0));
    assert_eq!(out.snapshots, 2);
    assert_eq!(
        out.create_volume_permissions,
        counts(4, 0),
        "two accounts on each of two snapshots"
    );
}

#[tokio::test]
async fn already_granted_is_success_without_modify_calls() {
    let (modify, modify_snap) = (modify_image(Captured::default()), modify_snapshot(Captured::default()));
    let rules = [
        image(AwsImageState::Available),
        launch_permission_now(&[A, B, "999988887777"]),
        volume_permission_now(&[A, B]),
    ];
    let deps = deps(&[&rules[0], &rules[1], &rules[2], &modify, &modify_snap]);
    let out = handle(&deps, request_with(&testing::run())).await.map(only).unwrap();
    assert_eq!(modify.num_calls(), 0);
    assert_eq!(modify_snap.num_calls(), 0);
    assert_eq!(
        out.launch_permissions,
        Grants {
            granted: 0,
            already_granted: 2
        },
        "only what the recipe asks for is counted"
    );
    assert_eq!(
        out.create_volume_permissions,
        Grants {
            granted: 0,
            already_granted: 4
        }
    );
}

#[tokio::test]
async fn only_what_is_missing_is_added() {
    let (mods, snap_mods) = (Captured::default(), Captured::default());
    let rules = [
        image(AwsImageState::Available),
        launch_permission_now(&[A]),
        modify_image(mods.clone()),
        volume_permission_now(&[B]),
        modify_snapshot(snap_mods.clone()),
    ];
    let deps = deps(&rules.iter().collect::<Vec<_>>());
    let out = handle(&deps, request_with(&testing::run())).await.map(only).unwrap();
    assert_eq!(added(&mods.only()), [user(B)]);
    for req in snap_mods.all() {
        let users: Vec<_> = req
            .create_volume_permission()
            .unwrap()
            .add()
            .iter()
            .map(|p| p.user_id())
            .collect();
        assert_eq!(users, [Some(A)]);
    }
    assert_eq!(
        out.launch_permissions,
        Grants {
            granted: 1,
            already_granted: 1
        }
    );
}

#[tokio::test]
async fn organizations_and_ous_get_launch_permission_only() {
    let run = run_with(|d| {
        d.accounts.clear();
        d.organization_arns = vec![ORG.into()];
        d.organizational_unit_arns = vec![OU.into()];
    });
    let mods = Captured::default();
    let (img, attr, modify) = (
        image(AwsImageState::Available),
        launch_permission_now(&[]),
        modify_image(mods.clone()),
    );
    let deps = deps(&[&img, &attr, &modify]); // no snapshot rules: a snapshot call would fail the test
    let out = handle(&deps, request_with(&run)).await.map(only).unwrap();
    assert_eq!(
        added(&mods.only()),
        [
            LaunchPermission::builder().organization_arn(ORG).build(),
            LaunchPermission::builder().organizational_unit_arn(OU).build(),
        ]
    );
    assert_eq!(out.snapshots, 0);
}

#[tokio::test]
async fn group_all_is_sent_only_when_the_recipe_says_public() {
    let _public = ami_core::audit::allow_public(); // the recipe says public: the request audit lets it through
    // Validation now refuses `public` (encrypted snapshots cannot be made public); a run frozen before that still
    // gets exactly what it asked for, so build the recipe around validation.
    let mut recipe = testing::recipe();
    recipe.distribution.public = true;
    let run = testing::run_with(recipe);
    let mods = Captured::default();
    let rules = [
        image(AwsImageState::Available),
        launch_permission_now(&[]),
        modify_image(mods.clone()),
        volume_permission_now(&[A, B]),
    ];
    let deps = deps(&rules.iter().collect::<Vec<_>>());
    let out = handle(&deps, request_with(&run)).await.map(only).unwrap();
    assert_eq!(
        added(&mods.only()),
        [
            user(A),
            user(B),
            LaunchPermission::builder().group(PermissionGroup::All).build()
        ]
    );
    assert_eq!(out.launch_permissions.granted, 3, "two accounts and everyone");
}

#[tokio::test]
async fn a_public_request_without_the_flag_is_refused_before_any_call() {
    // Recipe validation (by the trigger) rejects `all` as an account, so go around it: the handler's own check
    // must hold.
    let mut recipe = testing::recipe();
    recipe.distribution.accounts.push("all".into());
    let run = testing::run_with(recipe);
    let req: StepRequest = input::parse_value("input", request_with(&run)).unwrap();
    let deps = deps(&[]);
    let err = deps.start(&req, NOW).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.PublicSharingNotAllowed", "{err}");

    // The recipe is carried frozen and not validated again: through the handler the same check stops it.
    let err = handle(&deps, request_with(&run)).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.PublicSharingNotAllowed", &["accounts[2]"]);
}

#[tokio::test]
async fn nothing_to_share_is_success_without_calls() {
    let run = run_with(|d| d.accounts.clear());
    let deps = deps(&[]);
    let out = handle(&deps, request_with(&run)).await.map(only).unwrap();
    assert_eq!(
        out,
        ShareOutput {
            region: HOME.into(),
            image_id: CANDIDATE.into(),
            ..ShareOutput::default()
        }
    );
}

#[tokio::test]
async fn an_image_still_pending_is_transient() {
    let modify = modify_image(Captured::default());
    let img = image(AwsImageState::Pending);
    let deps = deps(&[&img, &modify]);
    let err = handle(&deps, request_with(&testing::run())).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Transient", "{err}");
    assert_eq!(modify.num_calls(), 0);

    let (img, attr) = (image(AwsImageState::Available), launch_permission_now(&[]));
    let unavailable = ami_testkit::ec2_error!(once Ec2::modify_image_attribute, "InvalidAMIID.Unavailable");
    let deps = self::deps(&[&img, &attr, &unavailable]);
    let err = handle(&deps, request_with(&testing::run())).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Transient", "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn throttled_modify_is_retried_then_succeeds() {
    let modify = ami_testkit::throttled_once!(Ec2::modify_image_attribute, || ModifyImageAttributeOutput::builder()
        .build());
    let rules = [
        image(AwsImageState::Available),
        launch_permission_now(&[]),
        volume_permission_now(&[A, B]),
    ];
    let deps = deps(&[&rules[0], &rules[1], &rules[2], &modify]);
    let out = handle(&deps, request_with(&testing::run())).await.map(only).unwrap();
    assert_eq!(modify.num_calls(), 2);
    assert_eq!(out.launch_permissions.granted, 2);
}

#[tokio::test]
async fn every_region_of_the_run_is_shared_with_its_own_image_in_run_order() {
    let (home_mods, dest_mods) = (Captured::default(), Captured::default());
    let (home_snaps, dest_snaps) = (Captured::default(), Captured::default());
    let home = [
        image_with(CANDIDATE, SNAPSHOTS, AwsImageState::Available),
        launch_permission_of(CANDIDATE, &[]),
        modify_image(home_mods.clone()),
        volume_permission_now(&[]),
        modify_snapshot(home_snaps.clone()),
    ];
    let dest = [
        image_with(COPY, COPY_SNAPSHOTS, AwsImageState::Available),
        launch_permission_of(COPY, &[A]),
        modify_image(dest_mods.clone()),
        volume_permission_now(&[]),
        modify_snapshot(dest_snaps.clone()),
    ];
    let deps = deps_in(&home.iter().collect::<Vec<_>>(), &dest.iter().collect::<Vec<_>>());
    let run = with_regions(testing::run(), &[HOME, DEST]);
    // The copy step's images in another order than the run's: the output follows `run.regions`.
    let req = testing::request(
        "start",
        &run,
        json!({
            "register": image_state(HOME, CANDIDATE),
            "copy": copy_output(vec![image_state(DEST, COPY), image_state(HOME, CANDIDATE)]),
        }),
    );
    let out = handle(&deps, req).await.unwrap();

    let regions: Vec<(&str, &str)> = out
        .regions
        .iter()
        .map(|r| (r.region.as_str(), r.image_id.as_str()))
        .collect();
    assert_eq!(regions, [(HOME, CANDIDATE), (DEST, COPY)]);
    assert_eq!(home_mods.only().image_id(), Some(CANDIDATE));
    assert_eq!(added(&home_mods.only()), [user(A), user(B)]);
    assert_eq!(dest_mods.only().image_id(), Some(COPY));
    assert_eq!(added(&dest_mods.only()), [user(B)], "A already had it in this region");
    assert_eq!(out.regions[1].launch_permissions.already_granted, 1);
    let ids = |c: &Captured<ModifySnapshotAttributeInput>| {
        c.all()
            .iter()
            .map(|r| r.snapshot_id().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&home_snaps), SNAPSHOTS);
    assert_eq!(ids(&dest_snaps), COPY_SNAPSHOTS);
    assert_eq!(out.regions[1].snapshots, COPY_SNAPSHOTS.len());
}

#[tokio::test]
async fn a_region_still_pending_fails_the_call_for_a_retry_of_all() {
    // Home shares; the copy is not available yet: Transient, and the retried call finds home already done.
    let home_mods = Captured::default();
    let home = [
        image_with(CANDIDATE, SNAPSHOTS, AwsImageState::Available),
        launch_permission_of(CANDIDATE, &[]),
        modify_image(home_mods.clone()),
        volume_permission_now(&[A, B]),
    ];
    let dest_modify = modify_image(Captured::default());
    let dest = [image_with(COPY, COPY_SNAPSHOTS, AwsImageState::Pending)];
    let deps = deps_in(&home.iter().collect::<Vec<_>>(), &[&dest[0], &dest_modify]);
    let run = with_regions(testing::run(), &[HOME, DEST]);
    let req = testing::request(
        "start",
        &run,
        json!({
            "copy": copy_output(vec![image_state(HOME, CANDIDATE), image_state(DEST, COPY)]),
        }),
    );
    let err = handle(&deps, req).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.Transient", &[DEST]);
    assert_eq!(dest_modify.num_calls(), 0);
}

ami_testkit::step_contract_tests! {
    deps: |calls: &ami_testkit::Calls| Deps(calls.clients(&[], &[])),
    request: || request_with(&testing::run()),
    malformed: [
        (
            |r| {
                r["steps"].as_object_mut().unwrap().remove("copy");
            },
            "input.steps.copy",
        ),
        // The copy step's output has no image for one of the run's regions.
        (|r| r["run"]["regions"] = json!([HOME, DEST]), "input.steps.copy.images"),
        (
            |r| r["steps"]["copy"]["images"][0]["image_id"] = json!("ami-$(reboot)"),
            "input.steps.copy.images[0].image_id",
        ),
        (
            |r| r["run"]["recipe"]["distribution"]["public"] = json!("yes"),
            "input.run.recipe.distribution.public",
        ),
        // The per-call region of the old Map is gone: an input still carrying it is refused.
        (|r| r["region"] = json!(HOME), "input.region"),
        (|r| r["action"] = json!("status"), "input.action"),
    ],
    rejects: ["status", "finish"],
}
