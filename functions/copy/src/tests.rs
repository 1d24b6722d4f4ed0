use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::copy_image::{CopyImageInput, CopyImageOutput};
use aws_sdk_ec2::operation::describe_images::{DescribeImagesInput, DescribeImagesOutput};
use aws_sdk_ec2::types::{Image, ImageState as AwsImageState, StateReason};
use aws_smithy_mocks::{Rule, mock};
use serde_json::json;

use ami_core::testing::{self, BASE_IMAGE, Captured, NOW};

use ami_core::input;

use super::*;

const CANDIDATE: &str = "ami-0ccccccccccccccc1";
const COPY: &str = "ami-0eeeeeeeeeeeeeee1";
const NAME: &str = "web-1.4.0-20261126-0f00ba11";
const HOME: &str = testing::REGION;
const DEST: &str = "eu-west-1";

/// EC2 clients for the pipeline's region and one destination, each with its own rules, so a call made in the
/// wrong region finds no rule and fails the test.
fn deps(home: &[&Rule], dest: &[&Rule]) -> Deps {
    let (home, dest) = (testing::ec2(home), testing::ec2(dest));
    Deps {
        ec2: Ec2Clients::from_fn(move |region| match region {
            HOME => home.clone(),
            DEST => dest.clone(),
            other => panic!("no client expected for {other}"),
        }),
    }
}

fn candidate() -> ImageState {
    ImageState {
        region: HOME.into(),
        image_id: CANDIDATE.into(),
        name: NAME.into(),
        progress: Progress {
            status: Status::Ready,
            ..Progress::start(NOW - 900, 30)
        },
    }
}

fn request(action: &str, region: &str, steps: Value) -> Value {
    let mut r = testing::request(action, &testing::run(), steps);
    r["region"] = json!(region);
    r
}

fn start_request(region: &str) -> Value {
    request("start", region, json!({ "image": candidate() }))
}

fn parse(v: Value) -> StepRequest {
    input::parse_value("input", v).unwrap()
}

/// The tested candidate in the pipeline's region, as register tagged it.
fn source_image() -> Rule {
    mock!(Ec2::describe_images)
        .match_requests(|r| r.image_ids() == [CANDIDATE])
        .then_output(|| {
            DescribeImagesOutput::builder()
                .images(
                    Image::builder()
                        .image_id(CANDIDATE)
                        .name(NAME)
                        .description("web server, release 1.4.0")
                        .state(AwsImageState::Available)
                        .tags(tags::tag(tags::SOURCE_IMAGE, BASE_IMAGE))
                        .tags(tags::tag(tags::EXECUTION, testing::EXECUTION))
                        .build(),
                )
                .build()
        })
}

fn copy_image(captured: Captured<CopyImageInput>) -> Rule {
    mock!(Ec2::copy_image).then_compute_output(move |req| {
        captured.push(req);
        CopyImageOutput::builder().image_id(COPY).build()
    })
}

#[tokio::test]
async fn start_copies_encrypted_in_the_destination_region_with_token_key_and_tags() {
    let captured = Captured::default();
    let (src, copy) = (source_image(), copy_image(captured.clone()));
    let deps = deps(&[&src], &[&copy]);

    let out = start(&deps, &parse(start_request(DEST)), NOW).await.unwrap();
    assert_eq!(out.region, DEST);
    assert_eq!(out.image_id, COPY);
    assert_eq!(out.name, NAME);
    assert_eq!(out.progress.status, Status::Pending);
    assert_eq!(
        out.progress.deadline,
        NOW + 240 * 60,
        "distribution.copy_timeout_minutes"
    );

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
        Some("alias/ami-pipeline"),
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
async fn a_region_without_a_key_uses_its_default_ebs_key_still_encrypted() {
    const SYDNEY: &str = "ap-southeast-2";
    let captured = Captured::default();
    let (src, copy) = (
        testing::ec2(&[&source_image()]),
        testing::ec2(&[&copy_image(captured.clone())]),
    );
    let deps = Deps {
        ec2: Ec2Clients::from_fn(move |region| if region == SYDNEY { copy.clone() } else { src.clone() }),
    };
    start(&deps, &parse(start_request(SYDNEY)), NOW).await.unwrap();
    let req = captured.only();
    assert_eq!(req.encrypted(), Some(true));
    assert_eq!(req.kms_key_id(), None);
}

#[tokio::test]
async fn a_retried_start_sends_the_same_client_token() {
    let captured = Captured::default();
    let (src, copy) = (source_image(), copy_image(captured.clone()));
    let deps = deps(&[&src], &[&copy]);
    for _ in 0..2 {
        start(&deps, &parse(start_request(DEST)), NOW).await.unwrap();
    }
    let tokens: Vec<_> = captured
        .all()
        .iter()
        .map(|r| r.client_token().map(String::from))
        .collect();
    assert_eq!(tokens.len(), 2);
    assert!(tokens[0].is_some());
    assert_eq!(
        tokens[0], tokens[1],
        "EC2 returns the first copy instead of making a second"
    );
}

fn duplicate() -> Rule {
    mock!(Ec2::copy_image)
        .sequence()
        .http_status(400, Some(testing::ec2_error_body("InvalidAMIName.Duplicate")))
        .build()
}

fn named(captured: Captured<DescribeImagesInput>, execution: &'static str) -> Rule {
    mock!(Ec2::describe_images).then_compute_output(move |req| {
        captured.push(req);
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
    })
}

#[tokio::test]
async fn duplicate_name_of_our_own_copy_is_adopted() {
    let lookups = Captured::default();
    let (src, dup, mine) = (source_image(), duplicate(), named(lookups.clone(), testing::EXECUTION));
    let deps = deps(&[&src], &[&dup, &mine]);
    let out = handle(&deps, start_request(DEST)).await.unwrap();
    assert_eq!(out.image_id, COPY);
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
    let err = handle(&deps, start_request(DEST)).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Conflict", "{err}");
    assert!(err.to_string().contains(COPY), "{err}");
}

#[tokio::test]
async fn throttled_copy_is_retried_then_succeeds() {
    let src = source_image();
    let copy = mock!(Ec2::copy_image)
        .sequence()
        .http_status(503, Some(testing::ec2_error_body("RequestLimitExceeded")))
        .output(|| CopyImageOutput::builder().image_id(COPY).build())
        .build();
    let deps = deps(&[&src], &[&copy]);
    let out = handle(&deps, start_request(DEST)).await.unwrap();
    assert_eq!(out.image_id, COPY);
    assert_eq!(copy.num_calls(), 2);
}

#[tokio::test]
async fn a_vanished_source_is_reported_and_nothing_copied() {
    let gone = mock!(Ec2::describe_images)
        .sequence()
        .http_status(400, Some(testing::ec2_error_body("InvalidAMIID.NotFound")))
        .build();
    let copy = copy_image(Captured::default());
    let deps = deps(&[&gone], &[&copy]);
    let err = handle(&deps, start_request(DEST)).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ResourceGone", "{err}");
    assert_eq!(copy.num_calls(), 0);
}

fn copy_state() -> ImageState {
    ImageState {
        region: DEST.into(),
        image_id: COPY.into(),
        name: NAME.into(),
        progress: Progress::start(NOW - 600, 240),
    }
}

fn status_request() -> StepRequest {
    parse(request(
        "status",
        DEST,
        json!({ "image": candidate(), "copy": copy_state() }),
    ))
}

fn copy_described(state: AwsImageState) -> DescribeImagesOutput {
    DescribeImagesOutput::builder()
        .images(
            Image::builder()
                .image_id(COPY)
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

#[tokio::test]
async fn status_is_pending_while_unknown_or_pending_then_ready() {
    let states = mock!(Ec2::describe_images)
        .match_requests(|r| r.image_ids() == [COPY])
        .sequence()
        // Right after CopyImage, the destination may not know the image yet.
        .http_status(400, Some(testing::ec2_error_body("InvalidAMIID.NotFound")))
        .output(|| copy_described(AwsImageState::Pending))
        .output(|| copy_described(AwsImageState::Available))
        .build();
    let deps = deps(&[], &[&states]);
    let mut req = status_request();
    let mut seen = vec![];
    for _ in 0..3 {
        let s = status(&deps, &req, NOW).await.unwrap();
        seen.push(s.progress.status);
        req.steps.copy = Some(s);
    }
    assert_eq!(seen, [Status::Pending, Status::Pending, Status::Ready]);
    assert_eq!(req.steps.copy.unwrap().progress.polls, 3);
}

#[tokio::test]
async fn a_failed_copy_is_image_failed_with_the_reason() {
    let failed = mock!(Ec2::describe_images).then_output(|| copy_described(AwsImageState::Failed));
    let deps = deps(&[], &[&failed]);
    let err = status(&deps, &status_request(), NOW).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.ImageFailed");
    assert!(err.to_string().contains("snapshot copy failed"), "{err}");
}

#[tokio::test]
async fn past_the_deadline_is_a_timeout_without_calls() {
    let deps = deps(&[], &[]);
    let err = status(&deps, &status_request(), copy_state().progress.deadline + 1)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.Timeout");
}

#[tokio::test]
async fn malformed_input_names_the_field_and_calls_nothing() {
    let deps = deps(&[], &[]);
    let field_of = |err: Error| match err {
        Error::InvalidInput { field, .. } => field,
        other => panic!("expected InvalidInput, got {other}"),
    };

    let mut no_region = start_request(DEST);
    no_region.as_object_mut().unwrap().remove("region");
    assert_eq!(field_of(handle(&deps, no_region).await.unwrap_err()), "input.region");
    assert_eq!(
        field_of(handle(&deps, start_request("eu-nowhere-9")).await.unwrap_err()),
        "input.region"
    );
    assert_eq!(
        field_of(handle(&deps, request("start", DEST, json!({}))).await.unwrap_err()),
        "input.steps.image"
    );
    let mut bad = start_request(DEST);
    bad["run"]["recipe"]["distribution"]["copy_timeout_minutes"] = json!(-1);
    assert_eq!(
        field_of(handle(&deps, bad).await.unwrap_err()),
        "input.run.recipe.distribution.copy_timeout_minutes"
    );
    let mut other = copy_state();
    other.region = "ap-southeast-2".into();
    let req = request("status", DEST, json!({ "image": candidate(), "copy": other }));
    assert_eq!(
        field_of(handle(&deps, req).await.unwrap_err()),
        "input.steps.copy.region"
    );
    assert_eq!(
        field_of(handle(&deps, request("finish", DEST, json!({}))).await.unwrap_err()),
        "input.action"
    );
}

#[tokio::test]
async fn home_region_is_the_tested_image_itself_without_calls() {
    let deps = deps(&[], &[]);
    let out = handle(&deps, start_request(HOME)).await.unwrap();
    assert_eq!(out.image_id, candidate().image_id);
    assert_eq!(out.region, HOME);
    assert_eq!(out.progress.status, Status::Ready);
}
