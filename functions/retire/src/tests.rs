//! Retire against the testkit's fake EC2 and SSM ([`ami_testkit::World`]): DescribeImages applies the request's
//! tag filters to one shared world, and the mutating calls change it, so a second run sees what the first did.

use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput;
use aws_sdk_ec2::types::SnapshotState;
use aws_sdk_ssm::Client as Ssm;
use aws_smithy_mocks::Rule;
use serde_json::json;

use ami_testkit::world::{FakeImage, FakeSnapshot, tag_map};
use ami_testkit::{self as testing, NOW, World, WorldState};

use super::*;

const HOME: &str = "us-east-1";
const EU: &str = "eu-west-1";
const DAY: i64 = 86_400;
const PARAM: &str = "/images/web/latest";
const TEMPLATE: &str = "web-servers";

/// `ami-0<pipeline initial><age in days, 15 digits>`: readable in assertion messages.
fn image_id(prefix: char, n: i64) -> String {
    format!("ami-0{prefix}{n:015}")
}

fn add_image(w: &mut WorldState, region: &str, id: &str, pipeline: &str, state: &str, age_days: i64) {
    let snap = format!("snap-{}", &id[4..]);
    let tags = tag_map([
        (tags::PIPELINE, pipeline),
        (tags::STATE, state),
        (tags::EXECUTION, "some-execution"),
    ]);
    let image = FakeImage::new(
        region,
        NOW - age_days * DAY,
        tags,
        vec![snap.clone(), format!("{snap}-data")],
    );
    w.images.insert(id.into(), image);
}

/// Released web images in the home region aged `ages` days.
fn world_with(ages: &[i64]) -> World {
    let mut w = WorldState::default();
    for age in ages {
        add_image(&mut w, HOME, &image_id('a', *age), "web", "released", *age);
    }
    World::new(w)
}

/// A snapshot of `pipeline` in the home region, started `age` seconds ago, tagged as the snapshot step and
/// CopyImage tag theirs (pipeline, execution, role), minus the tags in `without`.
fn add_snapshot(w: &mut WorldState, id: &str, pipeline: &str, age: i64, state: SnapshotState, without: &[&str]) {
    let tags = [
        (tags::PIPELINE, pipeline),
        (tags::EXECUTION, "an-old-execution"),
        (tags::ROLE, "snapshot"),
    ]
    .into_iter()
    .filter(|(k, _)| !without.contains(k));
    let snapshot = FakeSnapshot {
        state,
        ..FakeSnapshot::new(HOME, NOW - age, tag_map(tags))
    };
    w.snapshots.insert(id.into(), snapshot);
}

fn deps_with(world: &World, first_ec2: Vec<Rule>, first_ssm: Vec<Rule>) -> Deps {
    Deps(world.clients(first_ec2, first_ssm))
}

fn deps(world: &World) -> Deps {
    deps_with(world, vec![], vec![])
}

/// The example recipe with `keep` and `deprecate_after_days`, publishing to nothing unless a test adds it.
fn run_with(keep: u32, deprecate_after_days: Option<u32>) -> Run {
    let mut run = testing::run();
    run.recipe.retention = Retention {
        keep,
        deprecate_after_days,
    };
    run.recipe.publish = Default::default();
    run
}

fn region<'a>(out: &'a RetireOutput, name: &str) -> &'a RetiredRegion {
    out.regions.iter().find(|r| r.region == name).expect("region in output")
}

fn ids_of(ages: &[i64]) -> Vec<String> {
    ages.iter().map(|a| image_id('a', *a)).collect()
}

#[tokio::test]
async fn the_regions_retired_are_the_runs_in_its_order() {
    let world = world_with(&[10]);
    let mut run = run_with(3, None);
    // `run.regions`, not the recipe's distribution regions, says where the pipeline's images are.
    run.regions = vec![HOME.into(), EU.into()];
    let out = retire(&deps(&world), &run, NOW).await.unwrap();
    let regions: Vec<&str> = out.regions.iter().map(|r| r.region.as_str()).collect();
    assert_eq!(regions, [HOME, EU]);
}

#[tokio::test]
async fn keeps_exactly_keep_images_and_deregisters_the_rest_with_their_snapshots() {
    let world = world_with(&[40, 10, 70, 20, 50, 30]);
    let out = retire(&deps(&world), &run_with(3, None), NOW).await.unwrap();
    let home = region(&out, HOME);
    assert_eq!(home.kept, ids_of(&[10, 20, 30]), "newest first");
    assert_eq!(home.deregistered, ids_of(&[40, 50, 70]));
    assert!(home.protected.is_empty() && home.deprecated.is_empty());
    assert_eq!(out.regions.len(), 3, "every region of the pipeline");

    let w = world.lock().unwrap();
    let deregistered = w.deregistered();
    assert_eq!(deregistered, ids_of(&[40, 50, 70]));
    let mut want: Vec<String> = ids_of(&[40, 50, 70])
        .iter()
        .flat_map(|id| [format!("snap-{}", &id[4..]), format!("snap-{}-data", &id[4..])])
        .collect();
    want.sort();
    let mut deleted = w.deleted_snapshots.clone();
    deleted.sort();
    assert_eq!(deleted, want, "both snapshots of each deregistered image, nothing else");
    assert_eq!(w.images.len(), 3);

    let filters: Vec<(String, Vec<String>)> = w.requests.describe_images[0]
        .filters()
        .iter()
        .map(|f| (f.name().unwrap().to_string(), f.values().to_vec()))
        .collect();
    assert!(filters.contains(&("tag:ami-pipeline:pipeline".into(), vec!["web".into()])));
    // One listing: the released images, and the kept (`tested`) ones for the abandoned sweep.
    assert!(filters.contains(&(
        "tag:ami-pipeline:state".into(),
        vec!["released".into(), "tested".into()]
    )));
}

#[tokio::test]
async fn kept_images_no_rerun_adopted_within_the_grace_period_are_deregistered_with_their_snapshots() {
    let world = world_with(&[1]);
    let grace = ami_core::aws::rerun::KEPT_GRACE_DAYS;
    {
        let mut w = world.lock().unwrap();
        add_image(&mut w, HOME, &image_id('t', grace + 1), "web", "tested", grace + 1);
        add_image(&mut w, HOME, &image_id('t', grace - 1), "web", "tested", grace - 1);
        add_image(&mut w, HOME, &image_id('o', grace + 5), "other", "tested", grace + 5);
        add_image(&mut w, HOME, &image_id('c', grace + 5), "web", "candidate", grace + 5);
        add_image(&mut w, EU, &image_id('e', grace + 3), "web", "tested", grace + 3);
    }
    let out = retire(&deps(&world), &run_with(3, None), NOW).await.unwrap();
    assert_eq!(region(&out, HOME).abandoned_deregistered, [image_id('t', grace + 1)]);
    assert_eq!(region(&out, EU).abandoned_deregistered, [image_id('e', grace + 3)]);
    // the released image keeps its place; a young kept image, another pipeline's and a candidate are left
    assert_eq!(region(&out, HOME).kept, [image_id('a', 1)]);
    let w = world.lock().unwrap();
    let deregistered = w.deregistered();
    assert_eq!(
        deregistered,
        [image_id('t', grace + 1).as_str(), image_id('e', grace + 3).as_str()]
    );
    for id in [
        image_id('t', grace - 1),
        image_id('o', grace + 5),
        image_id('c', grace + 5),
    ] {
        assert!(w.images.contains_key(&id), "{id} must stay");
    }
    // DeleteAssociatedSnapshots took the snapshots with the image (the mock asserts the flag)
    assert!(
        w.deleted_snapshots
            .contains(&format!("snap-{}", &image_id('t', grace + 1)[4..]))
    );
}

#[tokio::test]
async fn images_still_referenced_are_never_touched_and_take_no_keep_place() {
    let world = world_with(&[1, 10, 20, 30, 40, 50]);
    {
        let mut w = world.lock().unwrap();
        // The parameter points at the newest image, the template's default still at an old one.
        w.params.insert((HOME.into(), PARAM.into()), image_id('a', 1));
        w.template(HOME, TEMPLATE, "lt-0123456789abcdef0", vec![image_id('a', 50)]);
    }
    let mut run = run_with(2, Some(30));
    run.recipe.publish.ssm_parameters = vec![PARAM.into()];
    run.recipe.publish.launch_templates = vec![ami_core::model::recipe::LaunchTemplateRef {
        id_or_name: TEMPLATE.into(),
        region: None,
    }];
    let out = retire(&deps(&world), &run, NOW).await.unwrap();
    let home = region(&out, HOME);
    assert_eq!(home.protected, ids_of(&[1, 50]));
    assert_eq!(home.kept, ids_of(&[10, 20]));
    assert_eq!(home.deregistered, ids_of(&[30, 40]));

    let w = world.lock().unwrap();
    for protected in ids_of(&[1, 50]) {
        assert!(w.images.contains_key(&protected), "{protected} still there");
        assert!(
            !w.requests
                .enable_image_deprecation
                .iter()
                .any(|d| d.image_id() == Some(&protected)),
            "{protected} not deprecated either"
        );
    }
}

#[tokio::test]
async fn another_pipelines_images_and_candidates_are_never_touched() {
    for ignore_filters in [false, true] {
        let world = world_with(&[10, 20]);
        {
            let mut w = world.lock().unwrap();
            w.ignore_tag_filters = ignore_filters;
            for age in [100, 200, 300] {
                add_image(&mut w, HOME, &image_id('b', age), "billing", "released", age);
            }
            add_image(&mut w, HOME, &image_id('c', 400), "web", "candidate", 400);
            add_image(&mut w, HOME, &image_id('d', 500), "web-old", "released", 500);
        }
        let out = retire(&deps(&world), &run_with(1, Some(1)), NOW).await.unwrap();
        let home = region(&out, HOME);
        assert_eq!(home.kept, ids_of(&[10]), "ignore_filters={ignore_filters}");
        assert_eq!(home.deregistered, ids_of(&[20]), "ignore_filters={ignore_filters}");
        let w = world.lock().unwrap();
        assert_eq!(w.requests.deregister_image.len(), 1);
        assert_eq!(w.requests.enable_image_deprecation.len(), 1);
        assert_eq!(w.images.len(), 6, "ignore_filters={ignore_filters}");
    }
}

#[tokio::test]
async fn kept_images_get_a_deprecation_time_never_in_the_past() {
    let world = world_with(&[10, 200, 300, 400]);
    // Already deprecated earlier than it would be now: left alone.
    world
        .lock()
        .unwrap()
        .images
        .get_mut(&image_id('a', 300))
        .unwrap()
        .deprecation = Some(NOW - 5 * DAY);
    let out = retire(&deps(&world), &run_with(3, Some(90)), NOW).await.unwrap();
    let home = region(&out, HOME);
    assert_eq!(home.kept, ids_of(&[10, 200, 300]));

    let w = world.lock().unwrap();
    let sent: Vec<(&str, i64)> = w
        .requests
        .enable_image_deprecation
        .iter()
        .map(|d| (d.image_id().unwrap(), d.deprecate_at().unwrap().secs()))
        .collect();
    let minute_up = |t: i64| (t + 59) / 60 * 60;
    let ten_days_old = image_id('a', 10);
    let two_hundred = image_id('a', 200);
    assert_eq!(
        sent,
        [
            // 90 days after creation: 80 days from now, to the minute.
            (ten_days_old.as_str(), minute_up(NOW - 10 * DAY + 90 * DAY)),
            // Creation + 90 days is long past: a minute from now instead.
            (two_hundred.as_str(), minute_up(NOW + 60)),
        ]
    );
    for (_, at) in &sent {
        assert_eq!(at % 60, 0, "whole minutes");
        assert!(*at > NOW);
    }
    assert_eq!(home.deprecated.len(), 2);
    assert_eq!(home.deprecated[0].deprecate_at, "2027-02-06T11:07:00Z");
}

/// "When deregistration protection is enabled, the AMI can't be deregistered" (EnableImageDeregistrationProtection):
/// an image due to go but protected, or still in the cooldown after protection was turned off, is skipped and
/// reported, and the run does not fail.
#[tokio::test]
async fn images_under_deregistration_protection_are_skipped_and_reported() {
    let world = world_with(&[10, 20, 30, 40, 50]);
    {
        let mut w = world.lock().unwrap();
        w.images.get_mut(&image_id('a', 40)).unwrap().protection = Some("enabled-without-cooldown".into());
        w.images.get_mut(&image_id('a', 50)).unwrap().protection = Some("disabled".into());
    }
    let deps = deps(&world);
    let out = retire(&deps, &run_with(3, None), NOW).await.unwrap();
    let home = region(&out, HOME);
    assert_eq!(
        home.deregistered,
        ids_of(&[50]),
        "`disabled` protection does not keep an image"
    );
    assert_eq!(home.deregistration_protected, ids_of(&[40]));
    let w = world.lock().unwrap();
    assert_eq!(
        w.requests.deregister_image.len(),
        1,
        "no DeregisterImage for the protected one"
    );
    assert!(w.images.contains_key(&image_id('a', 40)));
}

#[tokio::test]
async fn a_second_run_changes_nothing() {
    let world = world_with(&[10, 200, 300, 400, 500]);
    let deps = deps(&world);
    let run = run_with(3, Some(90));
    retire(&deps, &run, NOW).await.unwrap();
    let (deprecations, deregistered, deleted) = {
        let w = world.lock().unwrap();
        (
            w.requests.enable_image_deprecation.len(),
            w.requests.deregister_image.len(),
            w.deleted_snapshots.len(),
        )
    };
    assert_eq!((deprecations, deregistered, deleted), (3, 2, 4));

    let out = retire(&deps, &run, NOW + 30).await.unwrap();
    let w = world.lock().unwrap();
    assert_eq!(
        w.requests.enable_image_deprecation.len(),
        deprecations,
        "already deprecated by then"
    );
    assert_eq!(w.requests.deregister_image.len(), deregistered);
    assert_eq!(w.deleted_snapshots.len(), deleted);
    assert_eq!(region(&out, HOME).kept.len(), 3);
    assert!(region(&out, HOME).deprecated.is_empty());
}

#[tokio::test]
async fn deregistering_an_image_that_is_already_gone_is_success() {
    let world = world_with(&[10, 20]);
    let gone = image_id('a', 20);
    let missing_image = ami_testkit::ec2_error!(
        Ec2::deregister_image,
        "InvalidAMIID.NotFound",
        match move |r| r.image_id() == Some(gone.as_str())
    );
    let missing_snapshots = ami_testkit::ec2_error!(Ec2::delete_snapshot, "InvalidSnapshot.NotFound");
    let deps = deps_with(&world, vec![missing_image.clone(), missing_snapshots.clone()], vec![]);
    let out = retire(&deps, &run_with(1, None), NOW).await.unwrap();
    assert_eq!(region(&out, HOME).deregistered, ids_of(&[20]));
    assert_eq!(missing_image.num_calls(), 1);
    assert_eq!(missing_snapshots.num_calls(), 2);
}

#[tokio::test]
async fn throttled_calls_are_retried_then_succeed() {
    let world = world_with(&[10, 20]);
    // The mock answers retries from the rule that matched the first attempt, so the rule gives the success.
    let throttled = ami_testkit::throttled_once!(Ec2::deregister_image, || DeregisterImageOutput::builder().build());
    let deps = deps_with(&world, vec![throttled.clone()], vec![]);
    let out = retire(&deps, &run_with(1, None), NOW).await.unwrap();
    assert_eq!(throttled.num_calls(), 2);
    assert_eq!(region(&out, HOME).deregistered, ids_of(&[20]));
    // The snapshots went with the image (DeleteAssociatedSnapshots): no separate DeleteSnapshot.
    assert_eq!(world.lock().unwrap().deleted_snapshots.len(), 0);
}

#[tokio::test]
async fn each_region_is_retired_against_its_own_references() {
    let world = world_with(&[10, 20, 30]);
    {
        let mut w = world.lock().unwrap();
        for age in [11, 21, 31] {
            add_image(&mut w, EU, &image_id('e', age), "web", "released", age);
        }
        // In eu-west-1 the parameter still points at the oldest image; at home it points at nothing.
        w.params.insert((EU.into(), PARAM.into()), image_id('e', 31));
    }
    let mut run = run_with(1, None);
    run.recipe.publish.ssm_parameters = vec![PARAM.into()];
    let out = retire(&deps(&world), &run, NOW).await.unwrap();
    assert_eq!(region(&out, HOME).deregistered, ids_of(&[20, 30]));
    let eu = region(&out, EU);
    assert_eq!(eu.kept, [image_id('e', 11)]);
    assert_eq!(eu.protected, [image_id('e', 31)]);
    assert_eq!(eu.deregistered, [image_id('e', 21)]);
}

#[tokio::test]
async fn when_references_cannot_be_read_nothing_is_removed() {
    let world = world_with(&[10, 20, 30]);
    let denied = ami_testkit::json_error!(Ssm::get_parameter, "AccessDeniedException");
    let mut run = run_with(1, None);
    run.recipe.publish.ssm_parameters = vec![PARAM.into()];
    let err = retire(&deps_with(&world, vec![], vec![denied]), &run, NOW)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.AwsError", "{err}");
    assert!(world.lock().unwrap().requests.deregister_image.is_empty());
}

ami_testkit::step_contract_tests! {
    setup: || {
        let world = world_with(&[10, 20, 30, 40, 50]);
        (deps(&world), world)
    },
    request: || testing::request("start", &testing::run(), json!({})),
    malformed: [
        (|r| r["action"] = json!("status"), "input.action"),
        (|r| r["run"]["recipe"]["retention"]["keep"] = json!(0), "recipe.retention.keep"),
        (|r| r["run"]["recipe"]["retention"]["keep"] = json!(-1), "input.run.recipe.retention.keep"),
        (
            |r| r["run"]["recipe"]["retention"]["deprecate_after_days"] = json!("soon"),
            "input.run.recipe.retention.deprecate_after_days",
        ),
        (|r| r["run"]["regions"] = json!("us-east-1"), "input.run.regions"),
        (|r| *r = json!({"execution": {"name": "x"}}), "input"),
    ],
    rejects: ["status", "finish"],
}

#[test]
fn deprecation_time_reads_ec2_timestamps_and_rounds_up_to_the_minute() {
    let image = Image::builder()
        .image_id("ami-0123456789abcdef0")
        .creation_date("2026-11-26T10:00:30.000Z")
        .build();
    let created = chrono::DateTime::parse_from_rfc3339("2026-11-26T10:00:30Z")
        .unwrap()
        .timestamp();
    assert_eq!(deprecate_at(&image, 1, created), Some(created + DAY + 30));
    let undated = Image::builder().image_id("ami-0123456789abcdef0").build();
    assert_eq!(deprecate_at(&undated, 1, NOW), None);
}

const HOUR: i64 = 3_600;

/// The sweep deletes exactly the pipeline's completed or failed snapshots that no image uses and that are older
/// than any execution can run; a running execution's snapshots (younger, or still pending), another pipeline's,
/// ones not made by an execution and ones an image still uses are never asked for.
#[tokio::test]
async fn orphaned_snapshots_older_than_any_execution_are_deleted_and_reported() {
    for ignore_filters in [false, true] {
        let world = world_with(&[10]);
        let used = format!("snap-{}", &image_id('a', 10)[4..]);
        {
            let mut w = world.lock().unwrap();
            w.ignore_tag_filters = ignore_filters;
            let old = ORPHAN_GRACE_SECONDS + HOUR;
            add_snapshot(&mut w, "snap-orphan", "web", old, SnapshotState::Completed, &[]);
            add_snapshot(&mut w, "snap-failed", "web", old, SnapshotState::Error, &[]);
            add_snapshot(
                &mut w,
                "snap-just-over",
                "web",
                ORPHAN_GRACE_SECONDS + 1,
                SnapshotState::Completed,
                &[],
            );
            // A running execution's: not registered yet, so no image uses it.
            add_snapshot(&mut w, "snap-young", "web", 2 * DAY, SnapshotState::Completed, &[]);
            add_snapshot(
                &mut w,
                "snap-just-under",
                "web",
                ORPHAN_GRACE_SECONDS - 60,
                SnapshotState::Completed,
                &[],
            );
            add_snapshot(&mut w, "snap-pending", "web", old, SnapshotState::Pending, &[]);
            add_snapshot(&mut w, &used, "web", old, SnapshotState::Completed, &[]);
            add_snapshot(&mut w, "snap-billing", "billing", old, SnapshotState::Completed, &[]);
            add_snapshot(
                &mut w,
                "snap-by-hand",
                "web",
                old,
                SnapshotState::Completed,
                &[tags::EXECUTION],
            );
            add_snapshot(
                &mut w,
                "snap-no-role",
                "web",
                old,
                SnapshotState::Completed,
                &[tags::ROLE],
            );
        }
        let out = retire(&deps(&world), &run_with(3, None), NOW).await.unwrap();
        let home = region(&out, HOME);
        let mut deleted = home.orphan_snapshots_deleted.clone();
        deleted.sort();
        assert_eq!(
            deleted,
            ["snap-failed", "snap-just-over", "snap-orphan"],
            "ignore_filters={ignore_filters}"
        );
        assert!(home.orphan_snapshots_skipped.is_empty());
        assert!(home.deregistered.is_empty());

        let w = world.lock().unwrap();
        let mut asked = w.requests.delete_snapshot.clone();
        asked.sort();
        assert_eq!(asked, deleted, "DeleteSnapshot for the orphans only");
        for kept in [
            "snap-young",
            "snap-just-under",
            "snap-pending",
            "snap-billing",
            "snap-by-hand",
            "snap-no-role",
        ] {
            assert!(w.snapshots.contains_key(kept), "{kept} kept");
        }
        assert!(w.snapshots.contains_key(&used), "used by an image: kept");
        // The look-ups: our own snapshots of this pipeline's role `snapshot`, and every image of the account,
        // disabled ones included.
        let req = &w.requests.describe_snapshots[0];
        let filters: Vec<(String, Vec<String>)> = req
            .filters()
            .iter()
            .map(|f| (f.name().unwrap().to_string(), f.values().to_vec()))
            .collect();
        assert!(filters.contains(&("tag:ami-pipeline:pipeline".into(), vec!["web".into()])));
        assert!(filters.contains(&("tag:ami-pipeline:role".into(), vec!["snapshot".into()])));
        // Every image, not only the pipeline's (the listing without filters), disabled ones included.
        let images: Vec<_> = w
            .requests
            .describe_images
            .iter()
            .filter(|d| d.filters().is_empty())
            .collect();
        assert_eq!(images.len(), 1, "one listing, in the region with candidates");
        assert_eq!(images[0].include_disabled(), Some(true));
    }
}

#[tokio::test]
async fn no_orphan_candidates_means_no_image_listing_and_no_delete() {
    let world = world_with(&[10, 20]);
    add_snapshot(
        &mut world.lock().unwrap(),
        "snap-young",
        "web",
        HOUR,
        SnapshotState::Completed,
        &[],
    );
    let out = retire(&deps(&world), &run_with(3, None), NOW).await.unwrap();
    assert!(region(&out, HOME).orphan_snapshots_deleted.is_empty());
    let w = world.lock().unwrap();
    assert!(w.requests.delete_snapshot.is_empty());
    assert_eq!(
        w.requests.describe_images.len(),
        3,
        "one DescribeImages per region, none for the sweep"
    );
    // Nothing to report: the fields are left out of the output.
    let json = serde_json::to_value(&out).unwrap();
    assert!(json["regions"][0].get("orphan_snapshots_deleted").is_none(), "{json}");
}

/// `InvalidSnapshot.InUse` (an image EC2 knows of still uses it) and `InvalidSnapshot.NotFound` (gone meanwhile)
/// are skipped and reported, and the run succeeds; the other orphans still go.
#[tokio::test]
async fn an_orphan_in_use_or_gone_is_skipped_and_reported_and_the_run_succeeds() {
    let world = world_with(&[10]);
    {
        let mut w = world.lock().unwrap();
        let old = ORPHAN_GRACE_SECONDS + DAY;
        for id in ["snap-a-in-use", "snap-b-gone", "snap-c-orphan"] {
            add_snapshot(&mut w, id, "web", old, SnapshotState::Completed, &[]);
        }
    }
    let in_use = ami_testkit::ec2_error!(once Ec2::delete_snapshot, "InvalidSnapshot.InUse", match |r| r.snapshot_id() == Some("snap-a-in-use"));
    let gone = ami_testkit::ec2_error!(once Ec2::delete_snapshot, "InvalidSnapshot.NotFound", match |r| r.snapshot_id() == Some("snap-b-gone"));
    let deps = deps_with(&world, vec![in_use.clone(), gone.clone()], vec![]);
    let out = retire(&deps, &run_with(3, None), NOW).await.unwrap();
    let home = region(&out, HOME);
    assert_eq!(home.orphan_snapshots_deleted, ["snap-c-orphan"]);
    let skipped: Vec<(&str, &str)> = home
        .orphan_snapshots_skipped
        .iter()
        .map(|s| (s.snapshot_id.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("snap-a-in-use", "InvalidSnapshot.InUse"),
            ("snap-b-gone", "InvalidSnapshot.NotFound")
        ]
    );
    assert_eq!(
        (in_use.num_calls(), gone.num_calls()),
        (1, 1),
        "asked once each, not retried"
    );
    assert!(world.lock().unwrap().snapshots.contains_key("snap-a-in-use"));
}

#[test]
fn the_grace_period_outlasts_the_longest_execution() {
    let longest_minutes =
        i64::from(limits::BUILD_MINUTES + 2 * limits::IMAGE_MINUTES + limits::TEST_MINUTES + limits::COPY_MINUTES);
    assert!(
        ORPHAN_GRACE_SECONDS >= longest_minutes * 60 + DAY,
        "{ORPHAN_GRACE_SECONDS}"
    );
}

/// DeregisterImage succeeds while telling, per snapshot, that one was not deleted (`internal-error`): retire deletes
/// it again; one EC2 still refuses is reported, for the orphan sweep of a later run.
#[tokio::test]
async fn snapshots_deregister_image_did_not_delete_are_deleted_again_or_reported() {
    let world = world_with(&[10, 20, 30]);
    let (first, second) = (image_id('a', 20), image_id('a', 30));
    let (first_data, second_data) = (
        format!("snap-{}-data", &first[4..]),
        format!("snap-{}-data", &second[4..]),
    );
    {
        let mut w = world.lock().unwrap();
        for s in [&first_data, &second_data] {
            add_snapshot(&mut w, s, "web", DAY, SnapshotState::Completed, &[]);
            w.deregister_snapshot_errors.insert(s.clone(), "internal-error".into());
        }
    }
    let id = second_data.clone();
    let still = aws_smithy_mocks::mock!(Ec2::delete_snapshot)
        .match_requests(move |r| r.snapshot_id() == Some(id.as_str()))
        .sequence()
        .http_status(500, Some(ami_core::testing::ec2_error_body("InternalError")))
        .times(3)
        .build();
    let out = retire(&deps_with(&world, vec![still], vec![]), &run_with(1, None), NOW)
        .await
        .unwrap();
    let home = region(&out, HOME);
    assert_eq!(home.deregistered, [first.clone(), second.clone()]);
    assert_eq!(
        home.snapshots_left,
        [SkippedSnapshot {
            snapshot_id: second_data.clone(),
            reason: "DeregisterImage: internal-error; DeleteSnapshot: InternalError".into(),
        }]
    );
    let w = world.lock().unwrap();
    assert_eq!(
        w.requests.delete_snapshot,
        std::slice::from_ref(&first_data),
        "deleted again"
    );
    assert!(!w.snapshots.contains_key(&first_data) && w.snapshots.contains_key(&second_data));
}

/// Retire's output is a Task result Step Functions caps at 256 KiB (`definition::payload`): per region and run it
/// deregisters and deprecates at most `CHANGES_PER_REGION` images, the oldest first; the next runs do the rest.
#[tokio::test]
async fn a_few_images_are_deregistered_and_deprecated_per_region_and_run() {
    let ages: Vec<i64> = (1..=12).map(|n| n * 10).collect();
    let world = world_with(&ages);
    let out = retire(&deps(&world), &run_with(4, Some(1)), NOW).await.unwrap();
    let home = region(&out, HOME);
    assert_eq!(home.deregistered, ids_of(&[80, 90, 100, 110, 120]), "the oldest five");
    assert_eq!(home.kept.len(), 4);
    assert!(home.deprecated.len() <= CHANGES_PER_REGION);
    let out = retire(&deps(&world), &run_with(4, Some(1)), NOW).await.unwrap();
    assert_eq!(
        region(&out, HOME).deregistered,
        ids_of(&[50, 60, 70]),
        "the rest on the next run"
    );
}
