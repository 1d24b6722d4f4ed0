//! Cleanup against the testkit's fake EC2 ([`ami_testkit::World`]): the Describe calls apply the request's filters
//! to one shared world of instances, images and snapshots in three regions, and the mutating calls change it. Each
//! scenario adds this execution's resources as far as a failed run got, next to resources of another execution and
//! released images, then checks that exactly this execution's unreleased resources are gone.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput;
use aws_sdk_ec2::operation::terminate_instances::TerminateInstancesOutput;
use aws_sdk_ec2::types::{ImageState, InstanceStateName};
use aws_smithy_mocks::{Rule, mock};
use serde_json::json;

use ami_core::model::sharing::ShareState;
use ami_core::model::steps::{CopyState, ImageState as StepImage, Progress, Status, Steps};
use ami_testkit::world::{FakeImage, FakeInstance, FakeSnapshot, Resource, Tags, tag_map};
use ami_testkit::{self as testing, EXECUTION, World, WorldState};

use super::*;

const HOME: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-southeast-2";
const OTHER: &str = "web-r-1-3-0-0ddba11";

fn our_tags(execution: &str, role: &str, state: Option<&str>) -> Tags {
    let mut t = tag_map([
        (tags::PIPELINE, "web"),
        (tags::EXECUTION, execution),
        (tags::ROLE, role),
    ]);
    if let Some(s) = state {
        t.insert(tags::STATE.into(), s.into());
    }
    t
}

fn instance(w: &mut WorldState, id: &str, region: &str, execution: &str, role: &str, state: InstanceStateName) {
    let tags = our_tags(execution, role, None);
    w.instances.insert(
        id.into(),
        FakeInstance {
            region: region.into(),
            state,
            tags,
        },
    );
}

fn snapshot(w: &mut WorldState, id: &str, region: &str, execution: &str) {
    let tags = our_tags(execution, "snapshot", None);
    w.snapshots
        .insert(id.into(), FakeSnapshot::new(region, testing::NOW, tags));
}

/// An image and its snapshots, `<id>-root` and `<id>-data`.
fn image(w: &mut WorldState, id: &str, region: &str, execution: &str, state: &str) {
    let snaps = vec![format!("snap-{id}-root"), format!("snap-{id}-data")];
    for s in &snaps {
        snapshot(w, s, region, execution);
    }
    let tags = our_tags(execution, "image", Some(state));
    w.images
        .insert(id.into(), FakeImage::new(region, testing::NOW, tags, snaps));
}

fn deps_with(world: &World, first: Vec<Rule>) -> Deps {
    Deps(world.clients(first, vec![]))
}

fn deps(world: &World) -> Deps {
    deps_with(world, vec![])
}

/// How far the failed run got.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Stage {
    Build,
    Snapshot,
    Register,
    Test,
    Copy,
}

/// Resources of another execution and released images, in every region: none of them may be touched.
fn bystanders(w: &mut WorldState) {
    for region in [HOME, EU, AP] {
        let r = &region[..2];
        instance(
            w,
            &format!("i-other-builder-{r}"),
            region,
            OTHER,
            "builder",
            InstanceStateName::Running,
        );
        instance(
            w,
            &format!("i-other-test-{r}"),
            region,
            OTHER,
            "test-instance",
            InstanceStateName::Running,
        );
        image(w, &format!("ami-other-candidate-{r}"), region, OTHER, "candidate");
        image(w, &format!("ami-other-released-{r}"), region, OTHER, "released");
        snapshot(w, &format!("snap-other-loose-{r}"), region, OTHER);
    }
}

/// This execution's resources when it failed during `stage`.
fn ours(w: &mut WorldState, stage: Stage) {
    let builder_state = if stage == Stage::Build {
        InstanceStateName::Running
    } else {
        InstanceStateName::Stopped
    };
    instance(w, "i-our-builder", HOME, EXECUTION, "builder", builder_state);
    if stage >= Stage::Snapshot {
        snapshot(w, "snap-our-loose-root", HOME, EXECUTION);
        snapshot(w, "snap-our-loose-data", HOME, EXECUTION);
    }
    if stage >= Stage::Register {
        image(w, "ami-our-home", HOME, EXECUTION, "candidate");
        // Registered from the snapshots above.
        w.snapshots.remove("snap-our-loose-root");
        w.snapshots.remove("snap-our-loose-data");
    }
    if stage >= Stage::Test {
        instance(
            w,
            "i-our-test",
            HOME,
            EXECUTION,
            "test-instance",
            InstanceStateName::Running,
        );
    }
    if stage >= Stage::Copy {
        image(w, "ami-our-eu", EU, EXECUTION, "candidate");
        // A copy still in progress: its snapshot exists, the image is untagged so far.
        snapshot(w, "snap-our-ap-pending", AP, EXECUTION);
    }
}

fn scenario(stage: Stage) -> World {
    let mut w = WorldState::default();
    bystanders(&mut w);
    ours(&mut w, stage);
    World::new(w)
}

fn request() -> serde_json::Value {
    let mut r = testing::request("status", &testing::run(), json!({}));
    r["error"] = json!({"Error": "AmiPipeline.TestFailed", "Cause": "smoke test failed"});
    r
}

fn snapshot_of_world(world: &World) -> BTreeMap<String, Resource> {
    world.state().resources()
}

/// Whether `r` is something cleanup must have removed: this execution's and not released.
fn must_go(r: &Resource) -> bool {
    r.tags().get(tags::EXECUTION).map(String::as_str) == Some(EXECUTION)
        && r.tags().get(tags::STATE).map(String::as_str) != Some("released")
        && !matches!(r, Resource::Instance(i) if i.state == InstanceStateName::Terminated)
}

#[tokio::test]
async fn after_a_failure_at_each_step_everything_of_the_execution_goes_and_nothing_else() {
    for stage in [Stage::Build, Stage::Snapshot, Stage::Register, Stage::Test, Stage::Copy] {
        let world = scenario(stage);
        let before = snapshot_of_world(&world);
        let out = handle(&deps(&world), request()).await.unwrap();

        let after = snapshot_of_world(&world);
        let left: Vec<&String> = after.iter().filter(|(_, r)| must_go(r)).map(|(id, _)| id).collect();
        assert!(left.is_empty(), "{stage:?}: left behind {left:?}");
        for (id, r) in &before {
            if !must_go(r) {
                assert_eq!(after.get(id), Some(r), "{stage:?}: {id} was touched");
            }
        }

        assert_eq!(out.execution, EXECUTION);
        let regions: Vec<&str> = out.regions.iter().map(|r| r.region.as_str()).collect();
        assert_eq!(regions, [HOME, EU, AP], "{stage:?}");
        let home = &out.regions[0];
        let mut want_instances = vec!["i-our-builder"];
        if stage >= Stage::Test {
            want_instances.push("i-our-test");
        }
        assert_eq!(home.instances_terminated, want_instances, "{stage:?}");
        let removed: BTreeSet<String> = out
            .regions
            .iter()
            .flat_map(|r| r.images_deregistered.iter().chain(&r.snapshots_deleted).cloned())
            .collect();
        let expected: BTreeSet<String> = before
            .iter()
            .filter(|(_, r)| must_go(r) && !matches!(r, Resource::Instance(_)))
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(removed, expected, "{stage:?}: reported exactly what went");
    }
}

#[tokio::test]
async fn running_cleanup_twice_is_success_and_changes_nothing_the_second_time() {
    let world = scenario(Stage::Copy);
    let deps = deps(&world);
    handle(&deps, request()).await.unwrap();
    let mutations = world.lock().unwrap().log.len();
    assert_eq!(
        mutations,
        2 + 2 + 1,
        "2 instances, 2 images (their snapshots go with them), 1 loose snapshot"
    );
    let out = handle(&deps, request()).await.unwrap();
    let w = world.lock().unwrap();
    assert_eq!(w.log.len(), mutations, "{:?}", &w.log[mutations..]);
    assert!(out.regions.iter().all(|r| r.instances_terminated.is_empty()
        && r.images_deregistered.is_empty()
        && r.snapshots_deleted.is_empty()));
}

#[tokio::test]
async fn released_images_and_their_snapshots_are_left_alone() {
    // Publish failed after handing over the home image: that one stays; the copy that was not yet released goes.
    let world = scenario(Stage::Copy);
    world
        .lock()
        .unwrap()
        .tags_mut("ami-our-home")
        .insert(tags::STATE.into(), "released".into());
    let out = handle(&deps(&world), request()).await.unwrap();
    let w = world.lock().unwrap();
    for kept in ["ami-our-home", "snap-ami-our-home-root", "snap-ami-our-home-data"] {
        assert!(w.contains(kept), "{kept} kept");
    }
    assert!(!w.contains("ami-our-eu"));
    assert_eq!(out.regions[0].released_kept, ["ami-our-home"]);
    assert!(out.regions[0].images_deregistered.is_empty());
}

#[tokio::test]
async fn tags_are_checked_even_when_the_filter_is_not_applied() {
    let world = scenario(Stage::Copy);
    world.lock().unwrap().ignore_tag_filters = true;
    let before = snapshot_of_world(&world);
    handle(&deps(&world), request()).await.unwrap();
    let after = snapshot_of_world(&world);
    for (id, r) in &before {
        if !must_go(r) {
            assert_eq!(after.get(id), Some(r), "{id} was touched");
        }
    }
    assert!(after.values().all(|r| !must_go(r)));
}

#[tokio::test]
async fn only_builder_and_test_instances_are_terminated() {
    let world = scenario(Stage::Build);
    {
        let mut w = world.lock().unwrap();
        // Someone tagged a hand-kept instance with the execution (or a future step did): not ours to stop.
        instance(
            &mut w,
            "i-hand-kept",
            HOME,
            EXECUTION,
            "source",
            InstanceStateName::Running,
        );
        // A builder already shutting down is still terminated (terminating twice is fine).
        instance(
            &mut w,
            "i-our-second",
            HOME,
            EXECUTION,
            "builder",
            InstanceStateName::ShuttingDown,
        );
    }
    let out = handle(&deps(&world), request()).await.unwrap();
    assert_eq!(out.regions[0].instances_terminated, ["i-our-builder", "i-our-second"]);
    let w = world.lock().unwrap();
    assert_eq!(w.instances["i-hand-kept"].state, InstanceStateName::Running);
}

#[tokio::test]
async fn the_recipes_source_instance_is_never_terminated() {
    let world = scenario(Stage::Build);
    let mut run = testing::run();
    run.recipe.source = Source::Instance(ami_core::model::recipe::SourceInstance {
        id: "i-our-builder".into(),
        stop_first: false,
    });
    let req = testing::request("start", &run, json!({}));
    let out = handle(&deps(&world), req).await.unwrap();
    assert!(out.regions[0].instances_terminated.is_empty());
    assert!(world.lock().unwrap().log.is_empty());
}

#[tokio::test]
async fn minimal_input_cleans_the_regions_given() {
    let world = scenario(Stage::Copy);
    let req = json!({"execution": {"name": EXECUTION}, "regions": [EU]});
    let out = handle(&deps(&world), req).await.unwrap();
    assert_eq!(out.regions.len(), 1);
    assert_eq!(out.regions[0].images_deregistered, ["ami-our-eu"]);
    let w = world.lock().unwrap();
    assert!(w.log.iter().all(|l| l.contains(EU)), "{:?}", w.log);
    assert!(w.contains("i-our-builder"), "home region not asked for");
}

#[tokio::test]
async fn a_half_written_state_does_not_stop_cleanup() {
    let world = scenario(Stage::Register);
    let mut req = request();
    req["steps"] = json!({"build": "half written", "register": {"region": 5}});
    req["region"] = json!(EU);
    let out = handle(&deps(&world), req).await.unwrap();
    assert_eq!(out.regions[0].images_deregistered, ["ami-our-home"]);
}

#[tokio::test]
async fn the_run_regions_are_cleaned_whatever_the_steps_so_far() {
    // The state after a failed share: every step's output under `steps`, in the current shapes.
    let world = scenario(Stage::Copy);
    let mut run = testing::run();
    // The run's region list, not the recipe's, says where to clean: Sydney is left out here.
    run.regions = vec![HOME.into(), EU.into()];
    let image = |region: &str, id: &str| StepImage {
        region: region.into(),
        image_id: id.into(),
        name: "web-1.4.0-20261126-0f00ba11".into(),
        progress: Progress::start(testing::NOW, 240).with_status(Status::Ready),
    };
    let steps = Steps {
        register: Some(image(HOME, "ami-our-home")),
        copy: Some(CopyState {
            images: vec![image(HOME, "ami-our-home"), image(EU, "ami-our-eu")],
            source_image_id: String::new(),
            boot_to_ready_seconds: None,
            progress: Progress::start(testing::NOW, 240),
        }),
        share: Some(ShareState::default()),
        ..Steps::default()
    };
    let mut req = testing::request("start", &run, serde_json::to_value(&steps).unwrap());
    req["error"] = json!({"Error": "AmiPipeline.Transient", "Cause": "image not available yet"});
    let out = handle(&deps(&world), req).await.unwrap();
    let regions: Vec<&str> = out.regions.iter().map(|r| r.region.as_str()).collect();
    assert_eq!(regions, [HOME, EU]);
    assert_eq!(out.regions[1].images_deregistered, ["ami-our-eu"]);
    let w = world.lock().unwrap();
    assert!(w.log.iter().all(|l| !l.contains(AP)), "{:?}", w.log);
}

#[tokio::test]
async fn instances_already_gone_count_as_terminated() {
    let world = scenario(Stage::Build);
    let gone = ami_testkit::ec2_error!(Ec2::terminate_instances, "InvalidInstanceID.NotFound");
    let out = handle(&deps_with(&world, vec![gone.clone()]), request()).await.unwrap();
    assert_eq!(gone.num_calls(), 1);
    assert_eq!(out.regions[0].instances_terminated, ["i-our-builder"]);
}

#[tokio::test]
async fn throttled_calls_are_retried_then_succeed() {
    let world = scenario(Stage::Copy);
    // The mock answers retries from the rule that matched the first attempt, so these rules give the success.
    let throttled_terminate =
        ami_testkit::throttled_once!(Ec2::terminate_instances, || TerminateInstancesOutput::builder().build());
    let throttled_delete = mock!(Ec2::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some("snap-our-ap-pending"))
        .sequence()
        .http_status(503, Some(testing::ec2_error_body("RequestLimitExceeded")))
        .output(|| DeleteSnapshotOutput::builder().build())
        .build();
    let deps = deps_with(&world, vec![throttled_terminate.clone(), throttled_delete.clone()]);
    let out = handle(&deps, request()).await.unwrap();
    assert_eq!(throttled_terminate.num_calls(), 2);
    assert_eq!(throttled_delete.num_calls(), 2);
    assert_eq!(out.regions[0].instances_terminated, ["i-our-builder", "i-our-test"]);
    assert_eq!(out.regions[2].snapshots_deleted, ["snap-our-ap-pending"]);
}

ami_testkit::step_contract_tests! {
    handle: handle,
    setup: || {
        let world = scenario(Stage::Copy);
        (deps(&world), world)
    },
    request: request,
    malformed: [
        (|r| *r = json!({"regions": [HOME]}), "input"),
        (|r| *r = json!({"execution": {"name": ""}, "regions": [HOME]}), "input.execution.name"),
        (|r| *r = json!({"execution": {"name": "web r 1"}, "regions": [HOME]}), "input.execution.name"),
        (|r| *r = json!({"execution": {"name": "*"}, "regions": [HOME]}), "input.execution.name"),
        (|r| *r = json!({"execution": {"name": EXECUTION}}), "input.regions"),
        (|r| *r = json!({"execution": {"name": EXECUTION}, "regions": ["mars-1"]}), "input.regions[0]"),
        (|r| *r = json!({"execution": {"name": EXECUTION}, "regions": [HOME], "extra": 1}), "input.extra"),
        (|r| *r = json!({"execution": {"name": EXECUTION}, "region": 5}), "input.region"),
        (|r| r["run"]["regions"] = json!([HOME, "atlantis-1"]), "input.run.regions[1]"),
    ],
    persistent_throttling: {
        rule: ami_testkit::throttled_always!(Ec2::describe_instances),
        deps: |rule| deps_with(&scenario(Stage::Build), vec![rule]),
    },
}

/// A failure after the test (a copy failed in one region): the tested image of the run's recipe and the copy that
/// became available are kept for a rerun (`ami_core::aws::rerun`), the copy tagged `tested` with the recipe hash; the
/// failed copy, the instances and anything of another recipe go.
#[tokio::test]
async fn a_failure_after_the_test_keeps_the_tested_image_and_the_available_copies_for_a_rerun() {
    let hash = ami_core::aws::rerun::recipe_hash(&testing::run().recipe);
    for (home_hash, kept) in [(hash.as_str(), true), ("another-recipe", false)] {
        let world = scenario(Stage::Copy);
        {
            let mut w = world.lock().unwrap();
            let home = w.tags_mut("ami-our-home");
            home.insert(tags::STATE.into(), "tested".into());
            home.insert(tags::RECIPE_HASH.into(), home_hash.into());
            image(&mut w, "ami-our-ap", AP, EXECUTION, "candidate");
            w.images.get_mut("ami-our-ap").unwrap().state = ImageState::Failed;
        }
        let out = handle(&deps(&world), request()).await.unwrap();
        let w = world.lock().unwrap();
        let region = |r: &str| out.regions.iter().find(|x| x.region == r).unwrap();
        assert_eq!(
            region(AP).images_deregistered,
            ["ami-our-ap"],
            "a failed copy always goes"
        );
        assert!(!w.contains("ami-our-ap"));
        assert_eq!(region(HOME).instances_terminated, ["i-our-builder", "i-our-test"]);
        if kept {
            assert_eq!(region(HOME).tested_kept, ["ami-our-home"]);
            assert_eq!(region(EU).tested_kept, ["ami-our-eu"]);
            assert!(region(HOME).images_deregistered.is_empty() && region(EU).images_deregistered.is_empty());
            let eu = &w.images["ami-our-eu"].tags;
            assert_eq!(eu.get(tags::STATE).map(String::as_str), Some("tested"));
            assert_eq!(eu.get(tags::RECIPE_HASH), Some(&hash));
            // only the copy is tagged here (test-launch tagged the home image when it passed)
            let tagged: Vec<&String> = w.log.iter().filter(|l| l.starts_with("CreateTags")).collect();
            assert_eq!(tagged, ["CreateTags eu-west-1 ami-our-eu"]);
            // the kept images' snapshots stay
            for snap in [
                "snap-ami-our-home-root",
                "snap-ami-our-home-data",
                "snap-ami-our-eu-root",
            ] {
                assert!(w.contains(snap), "{snap}");
            }
        } else {
            assert!(region(HOME).tested_kept.is_empty() && region(EU).tested_kept.is_empty());
            assert_eq!(region(HOME).images_deregistered, ["ami-our-home"]);
            assert_eq!(region(EU).images_deregistered, ["ami-our-eu"]);
            assert!(!w.log.iter().any(|l| l.starts_with("CreateTags")), "{:?}", w.log);
        }
    }
}

/// A candidate's snapshot DeregisterImage reported as not deleted (`internal-error`) is deleted again, so the failed
/// run leaves nothing; one EC2 still refuses is reported, and one retire's orphan sweep would not find fails the
/// cleanup, naming it.
#[tokio::test]
async fn a_snapshot_deregister_image_did_not_delete_is_deleted_again_or_reported() {
    let mut w = WorldState::default();
    image(&mut w, "ami-candidate", HOME, EXECUTION, "candidate");
    w.deregister_snapshot_errors
        .insert("snap-ami-candidate-data".into(), "internal-error".into());
    let world = World::new(w);
    let input = json!({"execution": {"name": EXECUTION}, "regions": [HOME]});
    let out = handle(&deps(&world), input.clone()).await.unwrap();
    assert_eq!(
        out.regions[0].snapshots_deleted,
        ["snap-ami-candidate-root", "snap-ami-candidate-data"]
    );
    assert!(out.regions[0].snapshots_left.is_empty());
    assert_eq!(
        world.lock().unwrap().requests.delete_snapshot,
        ["snap-ami-candidate-data"],
        "deleted once more, not again by the leftover sweep"
    );

    let mut w = WorldState::default();
    image(&mut w, "ami-candidate", HOME, EXECUTION, "candidate");
    w.deregister_snapshot_errors
        .insert("snap-ami-candidate-data".into(), "internal-error".into());
    let world = World::new(w);
    // three attempts (the SDK's), each answered InternalError
    let refused = || {
        mock!(Ec2::delete_snapshot)
            .sequence()
            .http_status(500, Some(ami_core::testing::ec2_error_body("InternalError")))
            .times(3)
            .build()
    };
    let out = handle(&deps_with(&world, vec![refused()]), input.clone())
        .await
        .unwrap();
    assert_eq!(out.regions[0].snapshots_deleted, ["snap-ami-candidate-root"]);
    assert_eq!(
        out.regions[0].snapshots_left[0].reason,
        "DeregisterImage: internal-error; DeleteSnapshot: InternalError"
    );

    // without the tags retire's orphan sweep looks for, nothing would ever remove it: the cleanup fails
    world
        .lock()
        .unwrap()
        .tags_mut("snap-ami-candidate-data")
        .remove(tags::ROLE);
    let err = handle(&deps_with(&world, vec![refused()]), input).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.AwsError", &["snap-ami-candidate-data"]);
}
