use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::types::{Image, Tag};
use aws_sdk_kms::Client as Kms;
use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::types::{KeyManagerType, KeyMetadata, KeyState};
use aws_sdk_sfn::Client as Sfn;
use aws_sdk_sfn::operation::start_execution::{StartExecutionInput, StartExecutionOutput};
use aws_sdk_ssm::Client as Ssm;
use aws_sdk_ssm::operation::get_parameter::GetParameterOutput;
use aws_sdk_ssm::types::Parameter;
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, mock};

use ami_core::testing::{self, BASE_IMAGE, Captured};

use super::*;

const RELEASE_EVENT: &str = include_str!("../../../infra/events/release.json");
const SCHEDULED_EVENT: &str = include_str!("../../../infra/events/scheduled.json");
const MALFORMED_EVENT: &str = include_str!("../../../infra/events/release-malformed.json");
const SM: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:ami-pipeline";

fn deps(ec2: &[&Rule], ssm: &[&Rule], sfn: &[&Rule]) -> Deps {
    let ok = key(KeyManagerType::Customer, KeyState::Enabled);
    deps_with_keys(ec2, ssm, sfn, &[("us-east-1", &[&ok]), (EU, &[&ok]), (SYDNEY, &[&ok])])
}

const EU: &str = "eu-west-1";
const SYDNEY: &str = "ap-southeast-2";
const KEY: &str = "alias/ami-pipeline";

/// `kms`: the rules answering KMS in each region; a call to a region not listed, or that no rule matches, panics.
fn deps_with_keys(ec2: &[&Rule], ssm: &[&Rule], sfn: &[&Rule], kms: &[(&str, &[&Rule])]) -> Deps {
    let per_region: std::collections::HashMap<String, Vec<Rule>> = kms
        .iter()
        .map(|(region, rules)| (region.to_string(), rules.iter().map(|r| (*r).clone()).collect()))
        .collect();
    Deps {
        ec2: testing::ec2(ec2),
        ssm: testing::ssm(ssm),
        sfn: testing::sfn(sfn),
        kms: RegionalClients::from_fn(move |region| kms_client(region, per_region.get(region).into_iter().flatten())),
        region: "us-east-1".into(),
        config: Config {
            state_machine_arn: SM.into(),
            recipe_prefix: DEFAULT_RECIPE_PREFIX.into(),
        },
    }
}

/// A KMS client of `region` answered by `rules`, configured as `ami_core::testing` configures the others.
fn kms_client<'a>(region: &str, rules: impl IntoIterator<Item = &'a Rule>) -> Kms {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "AKIDTEST", "test", None, None, "test",
        ))
        .http_client(aws_smithy_mocks::create_mock_http_client())
        .interceptor(interceptor)
        .retry_config(testing::retry())
        .build();
    Kms::from_conf(conf)
}

/// DescribeKey of the recipes' key answered with this manager and state.
fn key(manager: KeyManagerType, state: KeyState) -> Rule {
    mock!(Kms::describe_key)
        .match_requests(|r| r.key_id() == Some(KEY))
        .then_output(move || {
            DescribeKeyOutput::builder()
                .key_metadata(
                    KeyMetadata::builder()
                        .key_id("1234abcd-12ab-34cd-56ef-1234567890ab")
                        .arn("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
                        .key_manager(manager.clone())
                        .key_state(state.clone())
                        .enabled(state == KeyState::Enabled)
                        .build()
                        .unwrap(),
                )
                .build()
        })
}

fn key_not_found() -> Rule {
    mock!(Kms::describe_key)
        .match_requests(|r| r.key_id() == Some(KEY))
        .sequence()
        .http_status(400, Some(testing::json_error_body("NotFoundException")))
        .build()
}

fn recipe_param(text: String) -> Rule {
    mock!(Ssm::get_parameter)
        .match_requests(|r| r.name() == Some("/ami-pipeline/pipelines/web"))
        .sequence()
        .output(move || {
            GetParameterOutput::builder()
                .parameter(Parameter::builder().value(text.clone()).build())
                .build()
        })
        .repeatedly()
        .build()
}

fn base_param() -> Rule {
    mock!(Ssm::get_parameter)
        .match_requests(|r| r.name().is_some_and(|n| n.starts_with("/aws/service/")))
        .then_output(|| {
            GetParameterOutput::builder()
                .parameter(Parameter::builder().value(BASE_IMAGE).build())
                .build()
        })
}

fn start_ok(captured: Captured<StartExecutionInput>) -> Rule {
    mock!(Sfn::start_execution).then_compute_output(move |r| {
        captured.push(r);
        StartExecutionOutput::builder()
            .execution_arn(format!("{SM}:{}", r.name().unwrap_or_default()).replace("stateMachine", "execution"))
            .start_date(aws_smithy_types_now())
            .build()
            .unwrap()
    })
}

fn aws_smithy_types_now() -> aws_sdk_sfn::primitives::DateTime {
    aws_sdk_sfn::primitives::DateTime::from_secs(testing::NOW)
}

fn event(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn release_event_starts_one_named_execution_with_the_frozen_recipe() {
    let captured = Captured::default();
    let (param, sfn) = (recipe_param(testing::EXAMPLE_RECIPE.into()), start_ok(captured.clone()));
    let deps = deps(&[], &[&param], &[&sfn]);
    let out = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    assert_eq!(out.status, TriggerStatus::Started);
    assert_eq!(out.execution_name, naming::release_execution_name("web", "1.4.0"));

    let req = captured.only();
    assert_eq!(req.state_machine_arn(), Some(SM));
    assert_eq!(req.name(), Some(out.execution_name.as_str()));
    let input: Value = serde_json::from_str(req.input().unwrap()).unwrap();
    let run: Run = serde_json::from_value(input["run"].clone()).unwrap();
    assert_eq!(run.release.version, "1.4.0");
    assert_eq!(run.release.commit.as_deref(), Some("9f2c1e7a"));
    assert_eq!(
        run.date, "20261126",
        "from the event's time, so a redelivery gives the same input"
    );
    assert_eq!(run.recipe, testing::recipe());

    assert!(run.build);
}

#[tokio::test]
async fn duplicate_release_event_is_reported_and_sends_identical_input() {
    let captured: Captured<StartExecutionInput> = Captured::default();
    let cap = captured.clone();
    let sfn = mock!(Sfn::start_execution)
        .match_requests(move |r| {
            cap.push(r);
            true
        })
        .sequence()
        .output(|| {
            StartExecutionOutput::builder()
                .execution_arn("arn:x")
                .start_date(aws_smithy_types_now())
                .build()
                .unwrap()
        })
        .http_status(400, Some(testing::json_error_body("ExecutionAlreadyExists")))
        .build();
    let param = recipe_param(testing::EXAMPLE_RECIPE.into());
    let deps = deps(&[], &[&param], &[&sfn]);
    let first = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    let second = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    assert_eq!(first.status, TriggerStatus::Started);
    assert_eq!(second.status, TriggerStatus::Duplicate);
    assert_eq!(first.execution_name, second.execution_name);
    let sent = captured.all();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], sent[1], "byte-identical name and input");
}

#[tokio::test]
async fn malformed_event_is_rejected_before_any_call() {
    let (param, sfn) = (
        recipe_param(testing::EXAMPLE_RECIPE.into()),
        start_ok(Captured::default()),
    );
    let deps = deps(&[], &[&param], &[&sfn]);
    let err = handle(&deps, event(MALFORMED_EVENT)).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "event.detail.version"),
        "{err}"
    );
    assert_eq!((param.num_calls(), sfn.num_calls()), (0, 0));
}

#[tokio::test]
async fn invalid_stored_recipe_names_the_field_and_starts_nothing() {
    let bad = testing::EXAMPLE_RECIPE.replace("\"keep\": 3", "\"keep\": 0");
    let (param, sfn) = (recipe_param(bad), start_ok(Captured::default()));
    let deps = deps(&[], &[&param], &[&sfn]);
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "recipe.retention.keep"),
        "{err}"
    );
    assert_eq!(sfn.num_calls(), 0);
}

/// A shared image without a customer-managed key in a copy region would fail at share, after the build, test and
/// copies: the trigger refuses it before anything is looked up or started.
#[tokio::test]
async fn shared_recipe_without_a_key_for_a_copy_region_starts_nothing() {
    let bad = testing::EXAMPLE_RECIPE.replace(", \"ap-southeast-2\": \"alias/ami-pipeline\"", "");
    assert_ne!(bad, testing::EXAMPLE_RECIPE);
    let (param, sfn) = (recipe_param(bad), start_ok(Captured::default()));
    let deps = deps(&[], &[&param], &[&sfn]);
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, message } if field == "recipe.distribution.kms_key_ids"
            && message.contains("ap-southeast-2")),
        "{err}"
    );
    assert_eq!(sfn.num_calls(), 0);
}

#[tokio::test]
async fn missing_recipe_is_recipe_not_found() {
    let param = mock!(Ssm::get_parameter)
        .sequence()
        .http_status(400, Some(testing::json_error_body("ParameterNotFound")))
        .build();
    let deps = deps(&[], &[&param], &[]);
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.RecipeNotFound");
    assert!(err.to_string().contains("/ami-pipeline/pipelines/web"));
}

#[tokio::test]
async fn throttled_start_is_retried_then_succeeds() {
    let sfn = mock!(Sfn::start_execution)
        .sequence()
        .http_status(400, Some(testing::json_error_body("ThrottlingException")))
        .output(|| {
            StartExecutionOutput::builder()
                .execution_arn("arn:x")
                .start_date(aws_smithy_types_now())
                .build()
                .unwrap()
        })
        .build();
    let param = recipe_param(testing::EXAMPLE_RECIPE.into());
    let deps = deps(&[], &[&param], &[&sfn]);
    assert_eq!(
        handle(&deps, event(RELEASE_EVENT)).await.unwrap().status,
        TriggerStatus::Started
    );
    assert_eq!(sfn.num_calls(), 2);
}

fn newest_image(built_from: &str) -> Rule {
    let image = Image::builder()
        .image_id("ami-0ddddddddddddddd1")
        .creation_date("2026-11-25T00:00:00.000Z")
        .tags(Tag::builder().key(tags::RELEASE).value("1.3.9").build())
        .tags(Tag::builder().key(tags::SOURCE_IMAGE).value(built_from).build())
        .build();
    mock!(Ec2::describe_images)
        .match_requests(|r| r.owners() == ["self"])
        .then_output(move || DescribeImagesOutput::builder().images(image.clone()).build())
}

fn base_images() -> Rule {
    mock!(Ec2::describe_images)
        .match_requests(|r| r.image_ids() == [BASE_IMAGE])
        .then_output(|| DescribeImagesOutput::builder().images(testing::base_image()).build())
}

#[tokio::test]
async fn scheduled_run_with_unchanged_base_image_is_skipped() {
    let (newest, base, bp) = (newest_image(BASE_IMAGE), base_images(), base_param());
    let (param, sfn) = (
        recipe_param(testing::EXAMPLE_RECIPE.into()),
        start_ok(Captured::default()),
    );
    let deps = deps(&[&newest, &base], &[&param, &bp], &[&sfn]);
    let out = handle(&deps, event(SCHEDULED_EVENT)).await.unwrap();
    assert_eq!(out.status, TriggerStatus::Skipped);
    assert!(out.reason.unwrap().contains(BASE_IMAGE));
    assert_eq!(sfn.num_calls(), 0);
}

#[tokio::test]
async fn scheduled_run_rebuilds_the_current_release_on_a_new_base_image() {
    let captured = Captured::default();
    let (newest, base, bp) = (newest_image("ami-0aaaaaaaaaaaaaa00"), base_images(), base_param());
    let (param, sfn) = (recipe_param(testing::EXAMPLE_RECIPE.into()), start_ok(captured.clone()));
    let deps = deps(&[&newest, &base], &[&param, &bp], &[&sfn]);
    let out = handle(&deps, event(SCHEDULED_EVENT)).await.unwrap();
    assert_eq!(out.status, TriggerStatus::Started);
    assert_eq!(out.execution_name, "web-s-20261126");
    let input: Value = serde_json::from_str(captured.only().input().unwrap()).unwrap();
    assert_eq!(input["run"]["release"]["version"], "1.3.9");
    assert_eq!(input["run"]["trigger"], "schedule");
}

#[tokio::test]
async fn first_scheduled_run_uses_the_default_version() {
    let captured = Captured::default();
    let none = mock!(Ec2::describe_images).then_output(|| DescribeImagesOutput::builder().build());
    let (param, sfn) = (recipe_param(testing::EXAMPLE_RECIPE.into()), start_ok(captured.clone()));
    let deps = deps(&[&none], &[&param], &[&sfn]);
    handle(&deps, event(SCHEDULED_EVENT)).await.unwrap();
    let input: Value = serde_json::from_str(captured.only().input().unwrap()).unwrap();
    assert_eq!(input["run"]["release"]["version"], "1.0.0");
}

/// Each key is described once, by the id the recipe gives, in the region it encrypts; then the run starts.
#[tokio::test]
async fn shared_recipe_checks_each_key_in_its_own_region_before_starting() {
    let ok = || key(KeyManagerType::Customer, KeyState::Enabled);
    let (home, eu, sydney) = (ok(), ok(), ok());
    let (param, sfn) = (
        recipe_param(testing::EXAMPLE_RECIPE.into()),
        start_ok(Captured::default()),
    );
    let deps = deps_with_keys(
        &[],
        &[&param],
        &[&sfn],
        &[("us-east-1", &[&home]), (EU, &[&eu]), (SYDNEY, &[&sydney])],
    );
    let out = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    assert_eq!(out.status, TriggerStatus::Started);
    let calls = (home.num_calls(), eu.num_calls(), sydney.num_calls(), sfn.num_calls());
    assert_eq!(calls, (1, 1, 1, 1));
}

/// Refused before anything is looked up or started: the error names the field, the region and the fix.
async fn refused(kms: &[(&str, &[&Rule])], recipe: String) -> (Error, usize) {
    let (param, sfn) = (recipe_param(recipe), start_ok(Captured::default()));
    let deps = deps_with_keys(&[], &[&param], &[&sfn], kms);
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.InvalidInput");
    (err, sfn.num_calls())
}

#[tokio::test]
async fn shared_recipe_with_an_aws_managed_key_in_a_copy_region_starts_nothing() {
    let ok = key(KeyManagerType::Customer, KeyState::Enabled);
    let aws = key(KeyManagerType::Aws, KeyState::Enabled);
    let (err, started) = refused(
        &[("us-east-1", &[&ok]), (EU, &[&aws]), (SYDNEY, &[&ok])],
        testing::EXAMPLE_RECIPE.into(),
    )
    .await;
    assert!(
        matches!(&err, Error::InvalidInput { field, message } if field == "recipe.distribution.kms_key_ids.eu-west-1"
            && message.contains("AWS managed") && message.contains("customer-managed")),
        "{err}"
    );
    assert_eq!((aws.num_calls(), started), (1, 0));
}

#[tokio::test]
async fn disabled_key_starts_nothing() {
    let ok = key(KeyManagerType::Customer, KeyState::Enabled);
    let disabled = key(KeyManagerType::Customer, KeyState::Disabled);
    let (err, started) = refused(
        &[("us-east-1", &[&ok]), (EU, &[&ok]), (SYDNEY, &[&disabled])],
        testing::EXAMPLE_RECIPE.into(),
    )
    .await;
    assert!(
        matches!(&err, Error::InvalidInput { field, message } if field == "recipe.distribution.kms_key_ids.ap-southeast-2"
            && message.contains("Disabled") && message.contains("enable it")),
        "{err}"
    );
    assert_eq!((disabled.num_calls(), started), (1, 0));
}

#[tokio::test]
async fn missing_home_key_starts_nothing() {
    let missing = key_not_found();
    // Copy regions are never asked: the home key is checked first and the first refusal ends the check.
    let (err, started) = refused(&[("us-east-1", &[&missing])], testing::EXAMPLE_RECIPE.into()).await;
    assert!(
        matches!(&err, Error::InvalidInput { field, message } if field == "recipe.image.kms_key_id"
            && message.contains("does not exist in `us-east-1`")),
        "{err}"
    );
    assert_eq!((missing.num_calls(), started), (1, 0));
}

#[tokio::test]
async fn key_arn_of_another_region_is_refused_without_a_call() {
    let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let recipe = testing::EXAMPLE_RECIPE.replace(
        "\"eu-west-1\": \"alias/ami-pipeline\"",
        &format!("\"eu-west-1\": \"{arn}\""),
    );
    assert_ne!(recipe, testing::EXAMPLE_RECIPE);
    let ok = key(KeyManagerType::Customer, KeyState::Enabled);
    let (err, started) = refused(&[("us-east-1", &[&ok])], recipe).await;
    assert!(
        matches!(&err, Error::InvalidInput { field, message } if field == "recipe.distribution.kms_key_ids.eu-west-1"
            && message.contains("a key in `us-east-1`")),
        "{err}"
    );
    assert_eq!(started, 0);
}

/// A private image may use AWS managed keys, but a disabled key would still fail its build 30 minutes in.
#[tokio::test]
async fn private_recipe_needs_enabled_keys_of_any_manager() {
    let private =
        testing::EXAMPLE_RECIPE.replace("\"accounts\": [\"111122223333\", \"444455556666\"]", "\"accounts\": []");
    assert_ne!(private, testing::EXAMPLE_RECIPE);
    let aws = key(KeyManagerType::Aws, KeyState::Enabled);
    let (param, sfn) = (recipe_param(private.clone()), start_ok(Captured::default()));
    let deps = deps_with_keys(
        &[],
        &[&param],
        &[&sfn],
        &[("us-east-1", &[&aws]), (EU, &[&aws]), (SYDNEY, &[&aws])],
    );
    assert_eq!(
        handle(&deps, event(RELEASE_EVENT)).await.unwrap().status,
        TriggerStatus::Started
    );
    assert_eq!((aws.num_calls(), sfn.num_calls()), (3, 1));

    let ok = key(KeyManagerType::Customer, KeyState::Enabled);
    let pending = key(KeyManagerType::Customer, KeyState::PendingDeletion);
    let (err, started) = refused(&[("us-east-1", &[&pending]), (EU, &[&ok]), (SYDNEY, &[&ok])], private).await;
    assert!(
        matches!(&err, Error::InvalidInput { field, message } if field == "recipe.image.kms_key_id"
            && message.contains("PendingDeletion")),
        "{err}"
    );
    assert_eq!(started, 0);
}

/// The default key needs no check on a private image (it always exists and cannot be disabled), and the trigger's
/// role may not describe it: no KMS call at all.
#[tokio::test]
async fn private_recipe_on_the_default_key_makes_no_kms_call() {
    let private = testing::EXAMPLE_RECIPE
        .replace("\"accounts\": [\"111122223333\", \"444455556666\"]", "\"accounts\": []")
        .replace(KEY, "alias/aws/ebs");
    let (param, sfn) = (recipe_param(private), start_ok(Captured::default()));
    let deps = deps_with_keys(&[], &[&param], &[&sfn], &[]);
    assert_eq!(
        handle(&deps, event(RELEASE_EVENT)).await.unwrap().status,
        TriggerStatus::Started
    );
}

/// An instance-store image can be tested only on a type with an instance-store root: refused before anything starts.
#[tokio::test]
async fn instance_store_recipe_with_an_ebs_only_test_type_starts_nothing() {
    let mut recipe: Value = serde_json::from_str(testing::EXAMPLE_RECIPE).unwrap();
    recipe["image"]["root_device_type"] = json!("instance-store");
    recipe["image"]["s3_manifest"] = json!("s3://web-bundles/web/image.manifest.xml");
    recipe["image"].as_object_mut().unwrap().remove("kms_key_id");
    recipe["distribution"] = json!({ "regions": [] });
    recipe["build"]["data_volumes"] = json!([]);
    let types = mock!(Ec2::describe_instance_types)
        .match_requests(|r| r.instance_types().iter().map(|t| t.as_str()).collect::<Vec<_>>() == ["t3.small"])
        .then_output(|| {
            aws_sdk_ec2::operation::describe_instance_types::DescribeInstanceTypesOutput::builder()
                .instance_types(
                    aws_sdk_ec2::types::InstanceTypeInfo::builder()
                        .instance_type("t3.small".into())
                        .supported_root_device_types(aws_sdk_ec2::types::RootDeviceType::Ebs)
                        .build(),
                )
                .build()
        });
    let (param, sfn) = (recipe_param(recipe.to_string()), start_ok(Captured::default()));
    let deps = deps(&[&types], &[&param], &[&sfn]);
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "recipe.test.instance_type"),
        "{err}"
    );
    assert_eq!((types.num_calls(), sfn.num_calls()), (1, 0));
}
