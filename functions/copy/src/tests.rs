use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::copy_image::{CopyImageInput, CopyImageOutput};
use aws_sdk_ec2::operation::describe_images::{DescribeImagesInput, DescribeImagesOutput};
use aws_sdk_ec2::types::{Image, ImageState as AwsImageState, StateReason};
use aws_smithy_mocks::{Rule, mock};
use serde_json::{Value, json};

use ami_testkit::{self as testing, BASE_IMAGE, Captured, NOW};

use ami_core::model::input;
use ami_core::model::steps::Run;
use ami_core::step::{Step, handle};

use super::*;

/// A status call as `handle` makes it (pending or throttled: `NotReady`), at a fixed time.
async fn poll(deps: &Deps, req: &StepRequest, now: i64) -> Result<CopyState> {
    ami_core::model::steps::settle(deps.status(req, now).await, Deps::progress, "copy status")
}

const CANDIDATE: &str = "ami-0ccccccccccccccc1";
const COPY: &str = "ami-0eeeeeeeeeeeeeee1";
const NAME: &str = "web-1.4.0-20261126-0f00ba11";
const COPY_AP: &str = "ami-0eeeeeeeeeeeeeee2";
const HOME: &str = testing::REGION;
const DEST: &str = "eu-west-1";
const SYDNEY: &str = "ap-southeast-2";

/// EC2 clients for the pipeline's region and the destinations, each with its own rules, so a call made in the
/// wrong region finds no rule and fails the test. Every one carries the request audit (`testing::ec2`).
fn deps_in(home: &[&Rule], dest: &[&Rule], sydney: &[&Rule]) -> Deps {
    Deps(ami_testkit::clients_in(&[(HOME, home), (DEST, dest), (SYDNEY, sydney)]))
}

fn deps(home: &[&Rule], dest: &[&Rule]) -> Deps {
    deps_in(home, dest, &[])
}

fn candidate() -> ImageState {
    ImageState {
        region: HOME.into(),
        image_id: CANDIDATE.into(),
        name: NAME.into(),
        progress: Progress::start(NOW - 900, 30).with_status(Status::Ready),
    }
}

/// A run whose regions are the home region then `copies`, in that order.
fn run_to(copies: &[&str]) -> Run {
    let mut recipe = testing::recipe();
    recipe.distribution.regions = copies.iter().map(|r| r.to_string()).collect();
    let mut run = testing::run_with(recipe);
    run.regions = std::iter::once(HOME)
        .chain(copies.iter().copied())
        .map(String::from)
        .collect();
    run
}

fn request_in(action: &str, run: &Run, steps: Value) -> Value {
    testing::request(action, run, steps)
}

/// The start for a run that copies to `DEST` only.
fn start_request() -> Value {
    start_request_for(&run_to(&[DEST]))
}

/// The start of the copy step for `run`, after register made the candidate.
fn start_request_for(run: &Run) -> Value {
    request_in("start", run, json!({ "register": candidate() }))
}

fn parse(v: Value) -> StepRequest {
    input::parse_value("input", v).unwrap()
}

/// The tested candidate in the pipeline's region, as register tagged it.
fn source_image() -> Rule {
    testing::image_described(
        candidate_image()
            .description("web server, release 1.4.0")
            .tags(tags::tag(tags::SOURCE_IMAGE, BASE_IMAGE))
            .build(),
    )
}

/// The candidate as DescribeImages gives any: available, named, tagged with its execution.
fn candidate_image() -> aws_sdk_ec2::types::builders::ImageBuilder {
    Image::builder()
        .image_id(CANDIDATE)
        .name(NAME)
        .state(AwsImageState::Available)
        .tags(tags::tag(tags::EXECUTION, testing::EXECUTION))
}

fn copy_image(captured: Captured<CopyImageInput>) -> Rule {
    ami_testkit::capturing!(
        Ec2::copy_image,
        captured,
        CopyImageOutput::builder().image_id(COPY).build()
    )
}

#[tokio::test]
async fn start_copies_encrypted_in_the_destination_region_with_token_key_and_tags() {
    let captured = Captured::default();
    let (src, copy) = (source_image(), copy_image(captured.clone()));
    let deps = deps(&[&src], &[&copy]);

    let out = deps.start(&parse(start_request()), NOW).await.unwrap();
    assert_eq!(out.progress.status, Status::Pending);
    assert_eq!(
        out.progress.deadline,
        NOW + 240 * 60,
        "distribution.copy_timeout_minutes"
    );
    assert_eq!(
        out.progress.wait_seconds,
        ami_core::model::steps::polling::FIRST_POLL_SECONDS
    );
    assert_eq!(out.images.len(), 2);
    assert_eq!(
        out.images[0],
        candidate(),
        "the home region's image is the tested candidate"
    );
    let copy = &out.images[1];
    assert_eq!(copy.region, DEST);
    assert_eq!(copy.image_id, COPY);
    assert_eq!(copy.name, NAME);
    assert_eq!(copy.progress.status, Status::Pending);

    let req = captured.only();
    assert_eq!(req.source_region(), Some(HOME));
    assert_eq!(req.source_image_id(), Some(CANDIDATE));
    assert_eq!(req.name(), Some(NAME));
    assert_eq!(req.description(), Some("web server, release 1.4.0"));
    assert_eq!(
        req.client_token(),
        Some(naming::client_token(testing::EXECUTION, "copy", DEST).as_str())
    );
    assert_eq!(req.encrypted(), Some(true));
    assert_eq!(
        req.kms_key_id(),
        Some("alias/ami-pipeline-images"),
        "the recipe's key for eu-west-1"
    );
    assert_eq!(req.copy_image_tags(), Some(true));
    let spec = |rt: ResourceType| {
        req.tag_specifications()
            .iter()
            .find(|s| s.resource_type() == Some(&rt))
            .map(|s| s.tags().to_vec())
            .expect("tagged on create")
    };
    let image_tags = spec(ResourceType::Image);
    assert_eq!(tags::get(&image_tags, tags::PIPELINE), Some("web"));
    assert_eq!(tags::get(&image_tags, tags::EXECUTION), Some(testing::EXECUTION));
    assert_eq!(tags::get(&image_tags, tags::ROLE), Some("image"));
    assert_eq!(tags::get(&image_tags, tags::STATE), Some(tags::STATE_CANDIDATE));
    assert_eq!(tags::get(&image_tags, tags::SOURCE_IMAGE), Some(BASE_IMAGE));
    let snapshot_tags = spec(ResourceType::Snapshot);
    assert_eq!(tags::get(&snapshot_tags, tags::EXECUTION), Some(testing::EXECUTION));
    assert_eq!(tags::get(&snapshot_tags, tags::ROLE), Some("snapshot"));
}

#[tokio::test]
async fn start_issues_one_copy_per_region_with_distinct_tokens_in_run_order() {
    let (eu, ap) = (Captured::default(), Captured::default());
    let (src, copy_eu) = (source_image(), copy_image(eu.clone()));
    let copy_ap = mock!(Ec2::copy_image).then_compute_output({
        let ap = ap.clone();
        move |req| {
            ap.push(req);
            CopyImageOutput::builder().image_id(COPY_AP).build()
        }
    });
    let deps = deps_in(&[&src], &[&copy_eu], &[&copy_ap]);
    // Sydney before Ireland: the output follows `run.regions`, not the recipe's order.
    let mut run = run_to(&[SYDNEY, DEST]);
    run.recipe
        .distribution
        .kms_key_ids
        .insert(SYDNEY.into(), "alias/ami-pipeline-sydney".into());
    let out = handle(&deps, start_request_for(&run)).await.unwrap();

    let regions: Vec<&str> = out.images.iter().map(|i| i.region.as_str()).collect();
    assert_eq!(regions, [HOME, SYDNEY, DEST]);
    let ids: Vec<&str> = out.images.iter().map(|i| i.image_id.as_str()).collect();
    assert_eq!(ids, [CANDIDATE, COPY_AP, COPY]);
    assert_eq!(src.num_calls(), 1, "the source is described once for all copies");
    let (eu, ap) = (eu.only(), ap.only());
    assert_eq!(
        eu.client_token(),
        Some(naming::client_token(testing::EXECUTION, "copy", DEST).as_str())
    );
    assert_eq!(
        ap.client_token(),
        Some(naming::client_token(testing::EXECUTION, "copy", SYDNEY).as_str())
    );
    assert_ne!(eu.client_token(), ap.client_token());
    // Each copy takes its own region's key from the recipe.
    assert_eq!(eu.kms_key_id(), Some("alias/ami-pipeline-images"));
    assert_eq!(ap.kms_key_id(), Some("alias/ami-pipeline-sydney"));
    assert!(eu.encrypted() == Some(true) && ap.encrypted() == Some(true));
    assert_eq!(out.progress.status, Status::Pending);
}

#[tokio::test]
async fn a_region_without_a_key_uses_its_default_ebs_key_still_encrypted() {
    let captured = Captured::default();
    let (src, copy) = (source_image(), copy_image(captured.clone()));
    let deps = deps_in(&[&src], &[], &[&copy]);
    // A private image (not shared) may use the default EBS key in a copy region.
    let mut run = run_to(&[SYDNEY]);
    run.recipe.distribution.accounts.clear();
    run.recipe.distribution.kms_key_ids.remove(SYDNEY);
    deps.start(&parse(start_request_for(&run)), NOW).await.unwrap();
    let req = captured.only();
    assert_eq!(req.encrypted(), Some(true));
    assert_eq!(req.kms_key_id(), None);
}

#[tokio::test]
async fn a_retried_start_sends_the_same_client_tokens() {
    let (eu, ap) = (Captured::default(), Captured::default());
    let (src, copy_eu, copy_ap) = (source_image(), copy_image(eu.clone()), copy_image(ap.clone()));
    let deps = deps_in(&[&src], &[&copy_eu], &[&copy_ap]);
    let run = run_to(&[DEST, SYDNEY]);
    let req = parse(start_request_for(&run));
    let first = deps.start(&req, NOW).await.unwrap();
    let again = deps.start(&req, NOW).await.unwrap();
    assert_eq!(first, again);
    for captured in [eu, ap] {
        testing::assert_one_client_token(captured.all().iter().map(|r| r.client_token()));
    }
}

#[tokio::test]
async fn without_copy_regions_start_is_ready_at_once_without_calls() {
    let deps = deps(&[], &[]);
    let run = run_to(&[]);
    let out = handle(&deps, start_request_for(&run)).await.unwrap();
    assert_eq!(out.images, [candidate()]);
    assert_eq!(out.progress.status, Status::Ready);
    assert_eq!(out.progress.wait_seconds, 0, "no poll needed");
}

fn duplicate() -> Rule {
    ami_testkit::ec2_error!(once Ec2::copy_image, "InvalidAMIName.Duplicate")
}

fn named(captured: Captured<DescribeImagesInput>, execution: &'static str) -> Rule {
    ami_testkit::capturing!(
        Ec2::describe_images,
        captured,
        DescribeImagesOutput::builder()
            .images(
                Image::builder()
                    .image_id(COPY)
                    .name(NAME)
                    .state(AwsImageState::Pending)
                    .tags(tags::tag(tags::EXECUTION, execution))
                    .build(),
            )
            .build()
    )
}

#[tokio::test]
async fn duplicate_name_of_our_own_copy_is_adopted() {
    let lookups = Captured::default();
    let (src, dup, mine) = (source_image(), duplicate(), named(lookups.clone(), testing::EXECUTION));
    let deps = deps(&[&src], &[&dup, &mine]);
    let out = handle(&deps, start_request()).await.unwrap();
    assert_eq!(out.images[1].image_id, COPY);
    assert_eq!(dup.num_calls(), 1, "no second copy");
    let q = lookups.only();
    assert_eq!(q.owners(), ["self"]);
    let f = &q.filters()[0];
    assert_eq!((f.name(), f.values()), (Some("name"), &[NAME.to_string()][..]));
}

#[tokio::test]
async fn duplicate_name_of_another_execution_is_a_conflict() {
    let (src, dup, theirs) = (
        source_image(),
        duplicate(),
        named(Captured::default(), "web-r-1-3-9-00000000"),
    );
    let deps = deps(&[&src], &[&dup, &theirs]);
    let err = handle(&deps, start_request()).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.Conflict", &[COPY]);
}

#[tokio::test]
async fn throttled_copy_is_retried_then_succeeds() {
    let src = source_image();
    let copy = ami_testkit::throttled_once!(Ec2::copy_image, || CopyImageOutput::builder().image_id(COPY).build());
    let deps = deps(&[&src], &[&copy]);
    let out = handle(&deps, start_request()).await.unwrap();
    assert_eq!(out.images[1].image_id, COPY);
    assert_eq!(copy.num_calls(), 2);
}

#[tokio::test]
async fn a_vanished_source_is_reported_and_nothing_copied() {
    let gone = ami_testkit::ec2_error!(once Ec2::describe_images, "InvalidAMIID.NotFound");
    let copy = copy_image(Captured::default());
    let deps = deps(&[&gone], &[&copy]);
    let err = handle(&deps, start_request()).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ResourceGone", "{err}");
    assert_eq!(copy.num_calls(), 0);
}

fn copy_of(region: &str, image_id: &str) -> ImageState {
    ImageState {
        region: region.into(),
        image_id: image_id.into(),
        name: NAME.into(),
        progress: copy_progress(),
    }
}

fn copy_progress() -> Progress {
    Progress::start(NOW - 600, 240)
}

/// `start`'s output for a run copying to `DEST` and `SYDNEY`.
fn copy_state() -> CopyState {
    CopyState {
        images: vec![candidate(), copy_of(DEST, COPY), copy_of(SYDNEY, COPY_AP)],
        source_image_id: String::new(),
        boot_to_ready_seconds: None,
        progress: copy_progress(),
    }
}

fn status_request() -> StepRequest {
    let run = run_to(&[DEST, SYDNEY]);
    parse(request_in(
        "status",
        &run,
        json!({ "register": candidate(), "copy": copy_state() }),
    ))
}

fn described(id: &'static str, state: AwsImageState) -> DescribeImagesOutput {
    DescribeImagesOutput::builder()
        .images(
            Image::builder()
                .image_id(id)
                .state(state)
                .state_reason(
                    StateReason::builder()
                        .message("Client.InternalError: snapshot copy failed")
                        .build(),
                )
                .build(),
        )
        .build()
}

fn always(id: &'static str, state: AwsImageState) -> Rule {
    mock!(Ec2::describe_images)
        .match_requests(move |r| r.image_ids() == [id])
        .then_output(move || described(id, state.clone()))
}

#[tokio::test]
async fn status_is_not_ready_while_unknown_or_pending_then_ready() {
    let states = mock!(Ec2::describe_images)
        .match_requests(|r| r.image_ids() == [COPY])
        .sequence()
        // Right after CopyImage, the destination may not know the image yet.
        .http_status(400, Some(testing::ec2_error_body("InvalidAMIID.NotFound")))
        .output(|| described(COPY, AwsImageState::Pending))
        .output(|| described(COPY, AwsImageState::Available))
        .build();
    let sydney = always(COPY_AP, AwsImageState::Available);
    let deps = deps_in(&[], &[&states], &[&sydney]);
    // Stateless: every poll gets the same input, `start`'s output.
    let req = status_request();
    for _ in 0..2 {
        let err = poll(&deps, &req, NOW).await.unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.NotReady", "{err}");
    }
    let out = poll(&deps, &req, NOW).await.unwrap();
    assert_eq!(out.progress.status, Status::Ready);
    assert_eq!(out.progress.wait_seconds, 0);
    assert_eq!(
        (out.progress.started_at, out.progress.deadline),
        (copy_progress().started_at, copy_progress().deadline)
    );
    assert!(out.images.iter().all(|i| i.progress.status == Status::Ready));
    let regions: Vec<&str> = out.images.iter().map(|i| i.region.as_str()).collect();
    assert_eq!(regions, [HOME, DEST, SYDNEY]);
    assert_eq!(out.images[0], candidate());
    assert_eq!(states.num_calls(), 3);
    assert_eq!(sydney.num_calls(), 3, "every copy is looked at on every poll");
}

#[tokio::test]
async fn a_throttled_describe_is_not_ready() {
    let throttled = ami_testkit::throttled_always!(Ec2::describe_images);
    let sydney = always(COPY_AP, AwsImageState::Available);
    let deps = deps_in(&[], &[&throttled], &[&sydney]);
    let err = poll(&deps, &status_request(), NOW).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.NotReady", "{err}");
    assert_eq!(throttled.num_calls(), 3, "the SDK's own retries first");
}

#[tokio::test]
async fn a_failed_copy_is_image_failed_naming_its_region() {
    // Ireland is still pending; Sydney's copy failed: that is reported, not another poll.
    let (eu, failed) = (
        always(COPY, AwsImageState::Pending),
        always(COPY_AP, AwsImageState::Failed),
    );
    let deps = deps_in(&[], &[&eu], &[&failed]);
    let err = poll(&deps, &status_request(), NOW).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.ImageFailed", &[SYDNEY, "snapshot copy failed"]);
}

#[tokio::test]
async fn past_the_deadline_is_a_timeout_without_calls() {
    let deps = deps(&[], &[]);
    let err = poll(&deps, &status_request(), copy_progress().deadline + 1)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Timeout");
}

ami_testkit::step_contract_tests! {
    deps: |calls: &ami_testkit::Calls| Deps(calls.clients(&[], &[])),
    request: start_request,
    malformed: [
        (|r| r["steps"] = json!({}), "input.steps.register"),
        (|r| r["steps"]["register"]["region"] = json!(DEST), "input.steps.register.region"),
        (
            |r| r["run"]["recipe"]["distribution"]["copy_timeout_minutes"] = json!(-1),
            "input.run.recipe.distribution.copy_timeout_minutes",
        ),
        (|r| r["run"]["regions"] = json!("eu-west-1"), "input.run.regions"),
        // The per-call region of the old Map is gone: an input still carrying it is refused.
        (|r| r["region"] = json!(DEST), "input.region"),
        (|r| r["action"] = json!("status"), "input.steps.copy"),
        (
            |r| {
                r["action"] = json!("status");
                r["steps"]["copy"] = serde_json::to_value(copy_state()).unwrap();
                r["steps"]["copy"]["images"][1]["image_id"] = json!(7);
            },
            "input.steps.copy.images[1].image_id",
        ),
        (
            |r| {
                r["action"] = json!("finish");
                r["steps"] = json!({});
            },
            "input.action",
        ),
    ],
    rejects: ["finish"],
}

/// An instance-store candidate has no snapshots: its copies are not asked to be encrypted, nor given the region's
/// key (CopyImage Encrypted "specifies whether to encrypt the snapshots of the copied image").
#[tokio::test]
async fn an_instance_store_image_is_copied_without_encryption() {
    let _allowed = ami_core::audit::allow_instance_store();
    let src = testing::image_described(
        candidate_image()
            .root_device_type(aws_sdk_ec2::types::DeviceType::InstanceStore)
            .build(),
    );
    let captured = Captured::default();
    let copy = copy_image(captured.clone());
    let deps = deps(&[&src], &[&copy]);
    let mut run = run_to(&[DEST]);
    assert!(
        run.recipe.distribution.kms_key_ids.contains_key(DEST),
        "a key the copy must not use"
    );
    run.recipe.distribution.accounts.clear();
    deps.start(&parse(start_request_for(&run)), NOW).await.unwrap();
    let req = captured.only();
    assert_eq!(req.encrypted(), None);
    assert_eq!(req.kms_key_id(), None);
    assert_eq!(req.source_image_id(), Some(CANDIDATE));
}

/// A rerun (`run.adopted`): the tested image an earlier attempt kept stands in `steps.register`; the copy it kept in
/// `DEST` is found by name and tags and reused, and only `SYDNEY`, whose copy failed, is copied again.
#[tokio::test]
async fn a_rerun_reuses_the_kept_copy_and_copies_only_the_missing_region() {
    let mut run = run_to(&[DEST, SYDNEY]);
    let hash = ami_core::aws::rerun::recipe_hash(&run.recipe);
    run.adopted = Some(ami_core::aws::rerun::Adopted {
        execution: "web-r-1-4-0-0f00ba11".into(),
        image: candidate(),
        source_image_id: BASE_IMAGE.into(),
        boot_to_ready_seconds: Some(41),
    });
    let kept_lookups: Captured<DescribeImagesInput> = Captured::default();
    let kept = |captured: Captured<DescribeImagesInput>, found: bool, hash: String| {
        mock!(Ec2::describe_images)
            .match_requests(testing::capture_if(&captured, |r| {
                r.filters().iter().any(|f| f.name() == Some("name"))
            }))
            .then_output(move || {
                let image = Image::builder()
                    .image_id(COPY)
                    .name(NAME)
                    .state(AwsImageState::Available)
                    .tags(tags::tag(tags::PIPELINE, "web"))
                    .tags(tags::tag(tags::RELEASE, "1.4.0"))
                    .tags(tags::tag(tags::STATE, tags::STATE_TESTED))
                    .tags(tags::tag(tags::RECIPE_HASH, &hash))
                    .tags(tags::tag(tags::EXECUTION, "web-r-1-4-0-0f00ba11"))
                    .build();
                DescribeImagesOutput::builder()
                    .set_images(found.then(|| vec![image]))
                    .build()
            })
    };
    let copies = Captured::default();
    let (src, in_dest, in_sydney) = (
        source_image(),
        kept(kept_lookups.clone(), true, hash.clone()),
        kept(kept_lookups.clone(), false, hash.clone()),
    );
    let sydney_copy = mock!(Ec2::copy_image).then_compute_output({
        let copies: Captured<CopyImageInput> = copies.clone();
        move |req| {
            copies.push(req);
            CopyImageOutput::builder().image_id(COPY_AP).build()
        }
    });
    // No CopyImage rule in DEST: a copy there would find no rule and fail the test.
    let deps = deps_in(&[&src], &[&in_dest], &[&in_sydney, &sydney_copy]);
    let req = parse(start_request_for(&run));
    let out = deps.start(&req, NOW).await.unwrap();

    let regions: Vec<(&str, &str)> = out
        .images
        .iter()
        .map(|i| (i.region.as_str(), i.image_id.as_str()))
        .collect();
    assert_eq!(regions, [(HOME, CANDIDATE), (DEST, COPY), (SYDNEY, COPY_AP)]);
    let sent = copies.only();
    assert_eq!(sent.source_image_id(), Some(CANDIDATE));
    assert_eq!(sent.name(), Some(NAME));
    // the kept copy is looked up by its name, `tested` and this recipe's hash, in each copy region
    let lookups = kept_lookups.all();
    assert_eq!(lookups.len(), 2);
    for l in &lookups {
        let values = |name: &str| {
            l.filters()
                .iter()
                .find(|f| f.name() == Some(name))
                .map(|f| f.values().to_vec())
        };
        assert_eq!(values("name"), Some(vec![NAME.to_string()]));
        assert_eq!(values("tag:ami-pipeline:state"), Some(vec!["tested".to_string()]));
        assert_eq!(values("tag:ami-pipeline:recipe-hash"), Some(vec![hash.clone()]));
    }
    // the Summary's provenance comes from the adopted attempt
    assert_eq!(out.source_image_id, BASE_IMAGE);
    assert_eq!(out.boot_to_ready_seconds, Some(41));
}
