//! Publish against the testkit's fake EC2 and SSM ([`ami_testkit::World`]): the mocks answer from, and write to,
//! one shared world, so a second publish sees what the first one did.

use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ssm::Client as Ssm;
use aws_sdk_ssm::operation::put_parameter::PutParameterOutput;
use aws_smithy_mocks::{Rule, mock};
use serde_json::json;

use ami_core::model::recipe::LaunchTemplateRef;
use ami_core::model::steps::{CopyState, ImageState, Progress, Run, TestState};
use ami_core::step::handle;
use ami_testkit::world::{FakeImage, Tags, tag_map};
use ami_testkit::{self as testing, EXECUTION, NOW, World, WorldState};

use super::*;

/// An edit of a valid request that makes it invalid.
type Change = fn(&mut serde_json::Value);

const HOME: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-southeast-2";
const HOME_IMAGE: &str = "ami-0a000000000000001";
const EU_IMAGE: &str = "ami-0a000000000000002";
const AP_IMAGE: &str = "ami-0a000000000000003";
const OLD_IMAGE: &str = "ami-0b000000000000001";
const PARAM: &str = "/images/web/latest";
const TEMPLATE: &str = "web-servers";
const TEMPLATE_ID: &str = "lt-0123456789abcdef0";

/// When every fake image was created (DescribeImages' CreationDate).
const CREATED: &str = "2026-11-26T10:00:00Z";

fn image_with(region: &str, tags: Tags) -> FakeImage {
    FakeImage::new(region, testing::secs(CREATED), tags, vec![])
}

fn candidate(region: &str, pipeline: &str) -> FakeImage {
    image_with(
        region,
        tag_map([
            (tags::PIPELINE, pipeline),
            (tags::EXECUTION, EXECUTION),
            (tags::STATE, tags::STATE_CANDIDATE),
        ]),
    )
}

/// Three candidate images, no parameters yet, the home region's template at version 3 with an old image.
fn world() -> World {
    let mut w = WorldState::default();
    for (region, id) in [(HOME, HOME_IMAGE), (EU, EU_IMAGE), (AP, AP_IMAGE)] {
        w.images.insert(id.into(), candidate(region, "web"));
    }
    add_template(&mut w, HOME, TEMPLATE, TEMPLATE_ID);
    World::new(w)
}

fn add_template(w: &mut WorldState, region: &str, name: &str, id: &str) {
    w.template(region, name, id, vec![OLD_IMAGE.into(); 3]);
}

/// Deps whose clients answer from `world`; `first_ec2` / `first_ssm` rules (throttling) are tried first.
fn deps_with(world: &World, first_ec2: Vec<Rule>, first_ssm: Vec<Rule>) -> Deps {
    Deps {
        ec2: world.ec2_clients(first_ec2),
        ssm: world.ssm_clients(first_ssm),
        confirm_waits: vec![std::time::Duration::ZERO; 2],
    }
}

fn deps(world: &World) -> Deps {
    deps_with(world, vec![], vec![])
}

fn ready() -> Progress {
    Progress {
        status: Status::Ready,
        ..Progress::start(NOW - 600, 240)
    }
}

fn image_state(region: &str, id: &str) -> ImageState {
    ImageState {
        region: region.into(),
        image_id: id.into(),
        name: format!("web-1.4.0-20261126-{region}"),
        progress: ready(),
    }
}

fn passed_test() -> TestState {
    TestState {
        instance_id: "i-0ccccccccccccccc1".into(),
        image_id: HOME_IMAGE.into(),
        launched_at: NOW - 300,
        boot_to_ready_seconds: Some(95),
        terminated: true,
        logs: None,
        progress: ready(),
    }
}

fn request_for(run: &Run) -> serde_json::Value {
    testing::request(
        "start",
        run,
        json!({
            "test_launch": passed_test(),
            "copy": CopyState {
                images: vec![image_state(HOME, HOME_IMAGE), image_state(EU, EU_IMAGE), image_state(AP, AP_IMAGE)],
                source_image_id: String::new(),
                boot_to_ready_seconds: None,
                progress: ready(),
            },
        }),
    )
}

fn request() -> serde_json::Value {
    request_for(&testing::run())
}

fn state_of(world: &World, id: &str) -> Option<String> {
    let w = world.lock().unwrap();
    w.images.get(id).and_then(|i| i.tags.get(tags::STATE).cloned())
}

#[tokio::test]
async fn publishes_every_region_with_the_fields_that_matter() {
    let world = world();
    let out = handle(&deps(&world), request()).await.unwrap();

    let w = world.lock().unwrap();
    // Hand-over first: every image is released before any parameter or template points at it.
    let first_pointer = w.log.iter().position(|l| !l.starts_with("CreateTags")).unwrap();
    assert_eq!(first_pointer, 3, "{:?}", w.log);
    for (region, input) in &w.requests.create_tags {
        let id = input.resources().first().unwrap();
        assert_eq!(w.images[id].region, *region, "tagged in the image's region");
        assert_eq!(input.tags().len(), 1);
        assert_eq!(input.tags()[0].key(), Some(tags::STATE));
        assert_eq!(input.tags()[0].value(), Some(tags::STATE_RELEASED));
    }
    drop(w);
    for id in [HOME_IMAGE, EU_IMAGE, AP_IMAGE] {
        assert_eq!(state_of(&world, id).as_deref(), Some("released"));
    }

    let w = world.lock().unwrap();
    let puts: Vec<(&str, &str)> = w
        .requests
        .put_parameter
        .iter()
        .map(|(r, p)| (r.as_str(), p.value().unwrap()))
        .collect();
    assert_eq!(puts, [(HOME, HOME_IMAGE), (EU, EU_IMAGE), (AP, AP_IMAGE)]);
    for (_, p) in &w.requests.put_parameter {
        assert_eq!(p.name(), Some(PARAM));
        assert_eq!(p.r#type(), Some(&ParameterType::String));
        assert_eq!(p.data_type(), Some("aws:ec2:image"));
        assert_eq!(p.overwrite(), Some(true));
    }

    assert_eq!(w.requests.create_launch_template_version.len(), 1);
    let (region, create) = &w.requests.create_launch_template_version[0];
    assert_eq!(region, HOME);
    assert_eq!(create.launch_template_name(), Some(TEMPLATE));
    assert_eq!(create.launch_template_id(), None);
    assert_eq!(create.source_version(), Some("3"), "based on the current default");
    assert_eq!(create.launch_template_data().unwrap().image_id(), Some(HOME_IMAGE));
    assert!(create.version_description().unwrap().contains("web 1.4.0"));
    assert_eq!(
        create.client_token(),
        Some(naming::client_token(EXECUTION, "publish-lt", "us-east-1/web-servers").as_str())
    );
    let (region, modify) = &w.requests.modify_launch_template[0];
    assert_eq!(region, HOME);
    assert_eq!(modify.launch_template_name(), Some(TEMPLATE));
    assert_eq!(modify.default_version(), Some("4"));
    assert_eq!(w.templates[&(HOME.into(), TEMPLATE.into())].default, 4);

    assert_eq!(out.release, "1.4.0");
    assert_eq!(out.regions.len(), 3);
    assert_eq!(out.regions[0].region, HOME);
    assert_eq!(out.regions[0].image_id, HOME_IMAGE);
    assert_eq!(
        out.regions[0].parameters,
        [PublishedParameter {
            name: PARAM.into(),
            outcome: Outcome {
                changed: true,
                skipped: None,
                repaired: false,
            },
        }]
    );
    assert_eq!(
        out.regions[0].launch_templates,
        [template_at_version_4(Outcome {
            changed: true,
            ..Outcome::default()
        })]
    );
    assert!(out.regions[1].launch_templates.is_empty());
}

/// The example's launch template after publish: its default is the version publish made (4).
fn template_at_version_4(outcome: Outcome) -> PublishedLaunchTemplate {
    PublishedLaunchTemplate {
        id_or_name: TEMPLATE.into(),
        version: 4,
        outcome,
    }
}

#[tokio::test]
async fn publishing_again_changes_nothing() {
    let world = world();
    let deps = deps(&world);
    handle(&deps, request()).await.unwrap();
    let mutations = world.lock().unwrap().log.len();
    assert_eq!(mutations, 3 + 3 + 2);

    let out = handle(&deps, request()).await.unwrap();
    let w = world.lock().unwrap();
    assert_eq!(
        w.log.len(),
        mutations,
        "no mutating call the second time: {:?}",
        &w.log[mutations..]
    );
    assert!(
        out.regions
            .iter()
            .all(|r| r.parameters.iter().all(|p| !p.outcome.changed))
    );
    assert_eq!(
        out.regions[0].launch_templates,
        [template_at_version_4(Outcome {
            changed: false,
            ..Outcome::default()
        })]
    );
}

#[tokio::test]
async fn a_retry_after_a_lost_create_response_makes_no_second_version() {
    let world = world();
    // The first ModifyLaunchTemplate fails for good (after the SDK's attempts): the step fails after creating
    // version 4.
    let failing = mock!(Ec2::modify_launch_template)
        .sequence()
        .http_status(500, Some(testing::ec2_error_body("InternalError")))
        .times(3)
        .build();
    let err = handle(&deps_with(&world, vec![failing], vec![]), request())
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Transient");
    assert_eq!(
        world.lock().unwrap().templates[&(HOME.into(), TEMPLATE.into())]
            .versions
            .len(),
        4
    );

    let out = handle(&deps(&world), request()).await.unwrap();
    let w = world.lock().unwrap();
    let t = &w.templates[&(HOME.into(), TEMPLATE.into())];
    assert_eq!(t.versions.len(), 4, "same ClientToken: the same version comes back");
    assert_eq!(t.default, 4);
    assert_eq!(out.regions[0].launch_templates[0].version, 4);
}

#[tokio::test]
async fn throttled_calls_are_retried_then_succeed() {
    let world = world();
    // The mock answers an operation's retries from the rule that matched its first attempt, so these rules
    // give the success themselves (and the world does not see those two calls).
    let throttled_tags = mock!(Ec2::create_tags)
        .match_requests(|r| r.resources() == [HOME_IMAGE])
        .sequence()
        .http_status(503, Some(testing::ec2_error_body("RequestLimitExceeded")))
        .output(|| CreateTagsOutput::builder().build())
        .build();
    let w = world.clone();
    let throttled_put = mock!(Ssm::put_parameter)
        .match_requests(|r| r.value() == Some(EU_IMAGE) && r.data_type() == Some("aws:ec2:image"))
        .sequence()
        .http_status(400, Some(testing::json_error_body("ThrottlingException")))
        .output(move || {
            w.lock()
                .unwrap()
                .params
                .insert((EU.into(), PARAM.into()), EU_IMAGE.into());
            PutParameterOutput::builder().version(2).build()
        })
        .build();
    let deps = deps_with(&world, vec![throttled_tags.clone()], vec![throttled_put.clone()]);
    let out = handle(&deps, request()).await.unwrap();
    assert_eq!(throttled_tags.num_calls(), 2, "throttled, then retried");
    assert_eq!(throttled_put.num_calls(), 2, "throttled, then retried");
    assert_eq!(out.regions.len(), 3);
    assert!(out.regions.iter().all(|r| r.parameters[0].outcome.changed));
    let w = world.lock().unwrap();
    assert_eq!(w.requests.create_tags.len(), 2, "the other two regions");
    assert_eq!(w.requests.put_parameter.len(), 2, "the other two regions");
}

/// "You can't change a parameter to or from [aws:ec2:image]" (Parameter Store data types): an existing `text`
/// parameter is refused before any image is released or anything written, naming the field and the fix.
#[tokio::test]
async fn a_parameter_of_another_data_type_is_refused_before_anything_changes() {
    let world = world();
    {
        let mut w = world.lock().unwrap();
        w.params
            .insert((AP.into(), PARAM.into()), "ami-0123456789abcdef0".into());
        w.param_types.insert((AP.into(), PARAM.into()), "text".into());
    }
    let err = handle(&deps(&world), request()).await.unwrap_err();
    testing::assert_invalid_input(
        &err,
        "recipe.publish.ssm_parameters[0]",
        &["ap-southeast-2", "delete it"],
    );
    let w = world.lock().unwrap();
    assert!(w.log.is_empty(), "nothing tagged or written: {:?}", w.log);
}

/// PutParameter's 200 does not mean the value is there (aws:ec2:image is validated asynchronously): the value is
/// read back until it shows; one SSM never applies fails the step with Transient (retried whole, idempotent).
#[tokio::test]
async fn a_written_parameter_is_read_back_until_it_holds_the_image() {
    let late = world();
    late.lock().unwrap().apply_after_reads = 1;
    let out = handle(&deps(&late), request()).await.unwrap();
    assert!(out.regions.iter().all(|r| r.parameters[0].outcome.changed));

    let refused = world();
    refused.lock().unwrap().apply_after_reads = usize::MAX;
    let err = handle(&deps(&refused), request()).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.Transient", &["asynchronously"]);
}

#[tokio::test]
async fn a_template_named_by_id_in_a_copy_region_gets_that_regions_image() {
    let world = world();
    add_template(&mut world.lock().unwrap(), EU, "eu-web", TEMPLATE_ID);
    let mut run = testing::run();
    run.recipe.publish.launch_templates = vec![LaunchTemplateRef {
        id_or_name: TEMPLATE_ID.into(),
        region: Some(EU.into()),
    }];
    let out = handle(&deps(&world), request_for(&run)).await.unwrap();
    let w = world.lock().unwrap();
    let (region, create) = &w.requests.create_launch_template_version[0];
    assert_eq!(region, EU);
    assert_eq!(create.launch_template_id(), Some(TEMPLATE_ID));
    assert_eq!(create.launch_template_name(), None);
    assert_eq!(create.launch_template_data().unwrap().image_id(), Some(EU_IMAGE));
    assert_eq!(
        w.requests.modify_launch_template[0].1.launch_template_id(),
        Some(TEMPLATE_ID)
    );
    assert!(out.regions[0].launch_templates.is_empty());
    assert_eq!(out.regions[1].launch_templates[0].id_or_name, TEMPLATE_ID);
}

#[tokio::test]
async fn regions_are_published_in_run_order_whatever_the_images_order() {
    let world = world();
    let mut req = request();
    req["steps"]["copy"]["images"].as_array_mut().unwrap().reverse();
    let out = handle(&deps(&world), req).await.unwrap();
    let regions: Vec<(&str, &str)> = out
        .regions
        .iter()
        .map(|r| (r.region.as_str(), r.image_id.as_str()))
        .collect();
    assert_eq!(regions, [(HOME, HOME_IMAGE), (EU, EU_IMAGE), (AP, AP_IMAGE)]);
}

#[tokio::test]
async fn nothing_is_published_without_a_passed_test() {
    let cases: &[(Change, &str)] = &[
        (
            |r| {
                r["steps"].as_object_mut().unwrap().remove("test_launch");
            },
            "input.steps.test_launch",
        ),
        (
            |r| r["steps"]["test_launch"]["status"] = json!("pending"),
            "input.steps.test_launch.status",
        ),
        (
            |r| r["steps"]["test_launch"]["image_id"] = json!(OLD_IMAGE),
            "input.steps.test_launch.image_id",
        ),
    ];
    for (change, want) in cases {
        let want = *want;
        let world = world();
        let mut req = request();
        change(&mut req);
        let err = handle(&deps(&world), req).await.unwrap_err();
        testing::assert_invalid_input(&err, want, &[]);
        assert!(world.lock().unwrap().log.is_empty());
        assert_eq!(state_of(&world, HOME_IMAGE).as_deref(), Some("candidate"));
    }
}

#[tokio::test]
async fn a_recipe_without_a_test_step_publishes_without_one() {
    let world = world();
    let mut run = testing::run();
    run.recipe.test.enabled = false;
    let mut req = request_for(&run);
    req["steps"].as_object_mut().unwrap().remove("test_launch");
    handle(&deps(&world), req).await.unwrap();
    assert_eq!(world.lock().unwrap().requests.put_parameter.len(), 3);
}

ami_testkit::step_contract_tests! {
    setup: || {
        let world = world();
        (deps(&world), world)
    },
    request: request,
    malformed: [
        (|r| r["action"] = json!("status"), "input.action"),
        (|r| r["action"] = json!("explode"), "input.action"),
        (
            |r| {
                r["steps"].as_object_mut().unwrap().remove("copy");
            },
            "input.steps.copy",
        ),
        (|r| r["steps"]["copy"]["images"] = json!([]), "input.steps.copy.images"),
        (
            |r| {
                r["steps"]["copy"]["images"].as_array_mut().unwrap().pop();
            },
            "input.steps.copy.images",
        ),
        (
            |r| r["steps"]["copy"]["images"][1]["image_id"] = json!("ami-$(reboot)"),
            "input.steps.copy.images[1].image_id",
        ),
        (
            |r| r["steps"]["copy"]["images"][2]["region"] = json!("eu-west-1"),
            "input.steps.copy.images[2].region",
        ),
        (
            |r| r["steps"]["copy"]["images"][2]["region"] = json!("us-west-2"),
            "input.steps.copy.images[2].region",
        ),
        // The run's region list, not the recipe, says where the images must be.
        (
            |r| r["run"]["regions"].as_array_mut().unwrap().push(json!("us-west-2")),
            "input.steps.copy.images",
        ),
        (
            |r| r["run"]["recipe"]["publish"]["ssm_parameters"] = json!("/images/web/latest"),
            "input.run.recipe.publish.ssm_parameters",
        ),
        // A launch template in a region without an image.
        (
            |r| r["run"]["recipe"]["publish"]["launch_templates"][0]["region"] = json!("us-west-2"),
            "recipe.publish.launch_templates[0].region",
        ),
    ],
    rejects: ["status", "finish"],
    persistent_throttling: {
        rule: ami_testkit::throttled_always!(json Ssm::put_parameter),
        deps: |rule| deps_with(&world(), vec![], vec![rule]),
    },
}

#[tokio::test]
async fn a_missing_launch_template_fails_before_anything_changes() {
    let world = world();
    // EC2 errors are not modeled in the SDK: only the code in the body says what went wrong.
    let missing = mock!(Ec2::describe_launch_template_versions)
        .sequence()
        .http_status(
            400,
            Some(testing::ec2_error_body("InvalidLaunchTemplateName.NotFoundException")),
        )
        .repeatedly()
        .build();
    let err = handle(&deps_with(&world, vec![missing], vec![]), request())
        .await
        .unwrap_err();
    testing::assert_invalid_input(&err, "recipe.publish.launch_templates[0].id_or_name", &[]);
    assert!(world.lock().unwrap().log.is_empty());
}

#[tokio::test]
async fn another_pipelines_image_is_refused() {
    let world = world();
    world
        .lock()
        .unwrap()
        .images
        .insert(EU_IMAGE.into(), candidate(EU, "billing"));
    let err = handle(&deps(&world), request()).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.Conflict", &["billing"]);
    assert!(
        world.lock().unwrap().requests.put_parameter.is_empty(),
        "nothing points at it"
    );
}

/// A rerun publishes the images an earlier attempt kept (`tested`, same release and recipe hash, another
/// execution) with no test step of its own; without `run.adopted` the same images are another run's: refused.
#[tokio::test]
async fn a_rerun_publishes_the_kept_images_of_an_earlier_attempt_and_only_a_rerun_does() {
    let hash = ami_core::aws::rerun::recipe_hash(&testing::run().recipe);
    let kept = |region: &str| {
        image_with(
            region,
            tag_map([
                (tags::PIPELINE, "web"),
                (tags::EXECUTION, "web-r-1-4-0-earlier"),
                (tags::RELEASE, "1.4.0"),
                (tags::STATE, tags::STATE_TESTED),
                (tags::RECIPE_HASH, hash.as_str()),
            ]),
        )
    };
    let world = world();
    {
        let mut w = world.lock().unwrap();
        w.images.insert(HOME_IMAGE.into(), kept(HOME));
        w.images.insert(EU_IMAGE.into(), kept(EU));
    }
    // Not a rerun: an image of another execution is not this run's.
    let err = handle(&deps(&world), request()).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Conflict", "{err}");

    let mut run = testing::run();
    run.adopted = Some(ami_core::aws::rerun::Adopted {
        execution: "web-r-1-4-0-earlier".into(),
        image: image_state(HOME, HOME_IMAGE),
        source_image_id: String::new(),
        boot_to_ready_seconds: Some(95),
    });
    let mut req = request_for(&run);
    // A rerun has no test step: the image passed in the attempt it was adopted from.
    req["steps"].as_object_mut().unwrap().remove("test_launch");
    handle(&deps(&world), req.clone()).await.unwrap();
    for id in [HOME_IMAGE, EU_IMAGE, AP_IMAGE] {
        assert_eq!(state_of(&world, id).as_deref(), Some("released"), "{id}");
    }
    // The adopted image must be the home region's.
    run.adopted.as_mut().unwrap().image.image_id = "ami-0ffffffffffffffff".into();
    let mut req = request_for(&run);
    req["steps"].as_object_mut().unwrap().remove("test_launch");
    let err = handle(&deps(&world), req).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.InvalidInput", "{err}");
}

// -- never backwards -----------------------------------------------------------------------------------------

const NEWER_IMAGE: &str = "ami-0c000000000000001";
const OLDER_IMAGE: &str = "ami-0c000000000000002";

/// This run publishes `release` while `other` (image, release, time made) is published, its write landing
/// between this run's write and re-read.
async fn publish_raced_by(release: &str, other: (&'static str, &str, &str)) -> (PublishOutput, World) {
    let (image, other_release, time) = other;
    let world = world();
    released(&mut world.lock().unwrap(), image, other_release, time);
    raced_by(&mut world.lock().unwrap(), image);
    let out = handle(&deps(&world), request_for(&run_of(release, false)))
        .await
        .unwrap();
    (out, world)
}

/// Another release's write of `image` lands between this run's write and its re-read: in the parameter, and as
/// the launch template's new default version.
fn raced_by(w: &mut WorldState, image: &'static str) {
    w.after_put = Some(Box::new(move |w: &mut WorldState| {
        w.params.insert((HOME.into(), PARAM.into()), image.into());
    }));
    w.after_modify = Some(Box::new(move |w: &mut WorldState| {
        let t = w.templates.get_mut(&(HOME.into(), TEMPLATE.into())).unwrap();
        t.versions.push(image.into());
        t.default = t.versions.len() as i64;
    }));
}

/// A released image of the pipeline in the home region, of `release` at `time`.
fn released(w: &mut WorldState, id: &str, release: &str, time: &str) {
    let mut image = candidate(HOME, "web");
    image.tags.insert(tags::STATE.into(), tags::STATE_RELEASED.into());
    image.tags.insert(tags::RELEASE.into(), release.into());
    image.tags.insert(tags::RELEASE_TIME.into(), time.into());
    image.tags.insert(tags::EXECUTION.into(), format!("web-r-{release}"));
    w.images.insert(id.into(), image);
}

/// The run publishes 1.4.0, released at 10:00 (`force` as given).
fn run_of(version: &str, force: bool) -> Run {
    let mut run = testing::run();
    run.release.version = version.into();
    run.release.time = Some("2026-11-26T10:00:00Z".into());
    run.release.force = force;
    run
}

/// The home region's parameter and template point at `image`.
fn pointing_at(world: &World, image: &str) {
    let mut w = world.lock().unwrap();
    w.params.insert((HOME.into(), PARAM.into()), image.into());
    let t = w.templates.get_mut(&(HOME.into(), TEMPLATE.into())).unwrap();
    t.versions[2] = image.into();
}

fn home_pointers(world: &World) -> (String, String) {
    let w = world.lock().unwrap();
    let t = &w.templates[&(HOME.into(), TEMPLATE.into())];
    (
        w.params[&(HOME.into(), PARAM.into())].clone(),
        t.versions[(t.default - 1) as usize].clone(),
    )
}

#[tokio::test]
async fn a_newer_release_is_never_replaced_unless_forced() {
    let world = world();
    released(&mut world.lock().unwrap(), NEWER_IMAGE, "1.5.0", "2026-11-26T09:00:00Z");
    pointing_at(&world, NEWER_IMAGE);

    // 1.4.0 finishing after 1.5.0 (its event even came later): the home pointers stay at 1.5.0.
    let out = handle(&deps(&world), request_for(&run_of("1.4.0", false)))
        .await
        .unwrap();
    assert_eq!(home_pointers(&world), (NEWER_IMAGE.into(), NEWER_IMAGE.into()));
    let param = &out.regions[0].parameters[0];
    assert!(!param.outcome.changed);
    let kept = param.outcome.skipped.as_ref().expect("reported as skipped");
    assert_eq!(
        (kept.image_id.as_str(), kept.release.as_deref()),
        (NEWER_IMAGE, Some("1.5.0"))
    );
    let lt = &out.regions[0].launch_templates[0];
    assert!(
        !lt.outcome.changed && lt.outcome.skipped.is_some() && lt.version == 3,
        "{lt:?}"
    );
    {
        let w = world.lock().unwrap();
        assert!(
            w.requests.create_launch_template_version.is_empty() && w.requests.modify_launch_template.is_empty(),
            "{:?}",
            w.log
        );
        assert!(w.requests.put_parameter.iter().all(|(r, _)| r != HOME), "{:?}", w.log);
        // The other regions held nothing: published there; and every image is still handed over.
        assert_eq!(w.requests.put_parameter.len(), 2);
    }
    for id in [HOME_IMAGE, EU_IMAGE, AP_IMAGE] {
        assert_eq!(state_of(&world, id).as_deref(), Some("released"));
    }

    // The same release with "force": true is a rollback: both pointers move back to it.
    let out = handle(&deps(&world), request_for(&run_of("1.4.0", true)))
        .await
        .unwrap();
    assert_eq!(home_pointers(&world), (HOME_IMAGE.into(), HOME_IMAGE.into()));
    assert!(out.regions[0].parameters[0].outcome.changed && out.regions[0].parameters[0].outcome.skipped.is_none());
    assert!(out.regions[0].launch_templates[0].outcome.changed);
}

#[tokio::test]
async fn an_image_that_is_not_the_pipelines_release_is_replaced() {
    // Another pipeline's image of a "higher" version and a later time, and a base image: neither is ordered.
    let world = world();
    {
        let mut w = world.lock().unwrap();
        released(&mut w, NEWER_IMAGE, "9.0.0", "2026-11-27T10:00:00Z");
        let other = w.images.get_mut(NEWER_IMAGE).unwrap();
        other.tags.insert(tags::PIPELINE.into(), "api".into());
    }
    pointing_at(&world, NEWER_IMAGE);
    handle(&deps(&world), request_for(&run_of("1.4.0", false)))
        .await
        .unwrap();
    assert_eq!(home_pointers(&world), (HOME_IMAGE.into(), HOME_IMAGE.into()));
}

#[tokio::test]
async fn an_older_release_is_replaced_and_versions_that_do_not_parse_go_by_event_time() {
    let world = world();
    released(&mut world.lock().unwrap(), OLDER_IMAGE, "1.3.0", "2026-11-26T11:00:00Z");
    pointing_at(&world, OLDER_IMAGE);
    handle(&deps(&world), request_for(&run_of("1.4.0", false)))
        .await
        .unwrap();
    assert_eq!(home_pointers(&world), (HOME_IMAGE.into(), HOME_IMAGE.into()));

    // "blue" vs "green": not semantic versions, so the later release event wins.
    for (theirs_at, replaced) in [("2026-11-26T09:59:59Z", true), ("2026-11-26T10:00:01Z", false)] {
        let world = self::world();
        released(&mut world.lock().unwrap(), OLDER_IMAGE, "green", theirs_at);
        pointing_at(&world, OLDER_IMAGE);
        let out = handle(&deps(&world), request_for(&run_of("blue", false)))
            .await
            .unwrap();
        let want = if replaced { HOME_IMAGE } else { OLDER_IMAGE };
        assert_eq!(
            home_pointers(&world),
            (want.into(), want.into()),
            "theirs at {theirs_at}"
        );
        assert_eq!(out.regions[0].parameters[0].outcome.skipped.is_none(), replaced);
    }
}

/// Two publishes race: 1.5.0 (this run) and 1.4.0. The older one checked before the newer wrote, and its write
/// lands between the newer's write and re-read (for the parameter and the launch template).
#[tokio::test]
async fn racing_publishes_leave_the_pointers_at_the_newer_release() {
    let (out, world) = publish_raced_by("1.5.0", (OLDER_IMAGE, "1.4.0", "2026-11-26T09:00:00Z")).await;
    // Re-read, found the older release's write, repaired once.
    assert_eq!(home_pointers(&world), (HOME_IMAGE.into(), HOME_IMAGE.into()));
    let (param, lt) = (&out.regions[0].parameters[0], &out.regions[0].launch_templates[0]);
    assert!(param.outcome.changed && param.outcome.repaired, "{param:?}");
    assert!(lt.outcome.changed && lt.outcome.repaired && lt.version == 4, "{lt:?}");
    {
        let w = world.lock().unwrap();
        assert_eq!(
            w.requests.put_parameter.iter().filter(|(r, _)| r == HOME).count(),
            2,
            "one write, one repair"
        );
        assert_eq!(w.requests.modify_launch_template.len(), 2);
    }

    // The other way round: this run is the older (1.4.0), and the newer release's write lands between this
    // run's write and re-read.
    let (out, world_b) = publish_raced_by("1.4.0", (NEWER_IMAGE, "1.5.0", "2026-11-26T10:30:00Z")).await;
    assert_eq!(home_pointers(&world_b), (NEWER_IMAGE.into(), NEWER_IMAGE.into()));
    let (param, lt) = (&out.regions[0].parameters[0], &out.regions[0].launch_templates[0]);
    assert!(
        !param.outcome.changed && !param.outcome.repaired && param.outcome.skipped.is_some(),
        "{param:?}"
    );
    assert!(
        !lt.outcome.changed && lt.outcome.skipped.is_some() && lt.version == 5,
        "{lt:?}"
    );
    assert_eq!(
        world_b.lock().unwrap().requests.modify_launch_template.len(),
        1,
        "no repair over a newer release"
    );
}
