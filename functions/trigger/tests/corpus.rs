//! Every bad event and recipe in tests/corpus gets `AmiPipeline.InvalidInput` naming the expected field, and
//! makes no mutating call (StartExecution is counted; any EC2 call would find no mock and fail the test).

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_kms::Client as Kms;
use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::types::{KeyManagerType, KeyMetadata, KeyState};
use aws_sdk_sfn::Client as Sfn;
use aws_sdk_sfn::operation::start_execution::StartExecutionOutput;
use aws_sdk_ssm::Client as Ssm;
use aws_sdk_ssm::operation::get_parameter::GetParameterOutput;
use aws_sdk_ssm::types::Parameter;
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, mock};

use ami_core::Error;
use ami_core::aws::clients::RegionalClients;
use ami_core::testing;
use ami_trigger::{Config, DEFAULT_RECIPE_PREFIX, Deps, handle};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

fn expected(kind: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(corpus().join(format!("{kind}.expected.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn recipe_param(text: String) -> Rule {
    mock!(Ssm::get_parameter)
        .sequence()
        .output(move || {
            GetParameterOutput::builder()
                .parameter(Parameter::builder().value(text.clone()).build())
                .build()
        })
        .repeatedly()
        .build()
}

fn start() -> Rule {
    mock!(Sfn::start_execution)
        .sequence()
        .output(|| {
            StartExecutionOutput::builder()
                .execution_arn("arn:x")
                .start_date(aws_sdk_sfn::primitives::DateTime::from_secs(0))
                .build()
                .unwrap()
        })
        .repeatedly()
        .build()
}

/// KMS in any region, where every key is a customer-managed, enabled key: the corpus is about validation.
fn kms() -> RegionalClients<Kms> {
    RegionalClients::from_fn(|region| {
        let key = mock!(Kms::describe_key).then_output(|| {
            let meta = KeyMetadata::builder()
                .key_id("1234abcd-12ab-34cd-56ef-1234567890ab")
                .key_manager(KeyManagerType::Customer)
                .key_state(KeyState::Enabled)
                .build()
                .unwrap();
            DescribeKeyOutput::builder().key_metadata(meta).build()
        });
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new(region.to_string()))
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "AKIDTEST", "test", None, None, "test",
            ))
            .http_client(aws_smithy_mocks::create_mock_http_client())
            .interceptor(
                MockResponseInterceptor::new()
                    .rule_mode(RuleMode::MatchAny)
                    .with_rule(&key),
            )
            .build();
        Kms::from_conf(conf)
    })
}

fn deps(ssm: &Rule, sfn: &Rule) -> Deps {
    Deps {
        kms: kms(),
        ec2: testing::ec2(&[]),
        ssm: testing::ssm(&[ssm]),
        sfn: testing::sfn(&[sfn]),
        region: "us-east-1".into(),
        config: Config {
            state_machine_arn: "arn:sm".into(),
            recipe_prefix: DEFAULT_RECIPE_PREFIX.into(),
        },
    }
}

async fn check(kind: &str, run: impl AsyncFn(&str) -> (Result<ami_core::model::steps::TriggerOutput, Error>, usize)) {
    let cases = expected(kind);
    assert!(cases.len() >= 50, "corpus of {kind} is too small");
    let mut wrong = Vec::new();
    for (file, want) in &cases {
        let (result, starts) = run(file).await;
        match result {
            Err(Error::InvalidInput { field, message }) if &field == want && starts == 0 => {
                assert!(!message.is_empty());
            }
            other => wrong.push(format!(
                "{file}: want InvalidInput at `{want}`, 0 starts; got {other:?}, {starts} starts"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} {kind} handled wrongly:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn bad_events_are_rejected_by_field_without_mutating_calls() {
    check("events", async |file| {
        let text = std::fs::read_to_string(corpus().join("events").join(file)).unwrap();
        let (ssm, sfn) = (recipe_param(testing::EXAMPLE_RECIPE.into()), start());
        let result = handle(&deps(&ssm, &sfn), serde_json::from_str(&text).unwrap()).await;
        (result, sfn.num_calls())
    })
    .await;
}

#[tokio::test]
async fn bad_recipes_are_rejected_by_field_without_mutating_calls() {
    let release: serde_json::Value = serde_json::from_str(include_str!("../../../infra/events/release.json")).unwrap();
    check("recipes", async |file| {
        let text = std::fs::read_to_string(corpus().join("recipes").join(file)).unwrap();
        let (ssm, sfn) = (recipe_param(text), start());
        let result = handle(&deps(&ssm, &sfn), release.clone()).await;
        (result, sfn.num_calls())
    })
    .await;
}
