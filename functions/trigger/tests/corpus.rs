//! Every bad event and recipe in tests/corpus gets `AmiPipeline.InvalidInput` naming the expected field, and
//! makes no mutating call (StartExecution is counted; any EC2 call would find no mock and fail the test).

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_kms::types::{KeyManagerType, KeyState};
use aws_smithy_mocks::Rule;

use ami_core::Error;
use ami_core::aws::clients::RegionalClients;
use ami_testkit::ssm_parameter;
use ami_testkit::trigger::{kms_client, kms_key, start_execution};
use ami_testkit::{self as testing, Captured};
use ami_trigger::{Config, DEFAULT_PUBLISH_PARAMETER_PREFIX, DEFAULT_RECIPE_PREFIX, Deps, handle};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

fn expected(kind: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(corpus().join(format!("{kind}.expected.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// KMS in any region, where every key is a customer-managed, enabled key: the corpus is about validation.
fn kms() -> RegionalClients<aws_sdk_kms::Client> {
    let key = kms_key(None, KeyManagerType::Customer, KeyState::Enabled);
    RegionalClients::from_fn(move |region| kms_client(region, [&key]))
}

fn start() -> Rule {
    start_execution(Captured::default())
}

fn deps(ssm: &Rule, sfn: &Rule) -> Deps {
    Deps {
        kms: kms(),
        ec2: testing::ec2(&[]),
        ssm: testing::ssm(&[ssm]),
        sfn: testing::sfn(&[sfn]),
        regional: testing::clients(&[], &[]),
        region: "us-east-1".into(),
        config: Config {
            state_machine_arn: "arn:sm".into(),
            recipe_prefix: DEFAULT_RECIPE_PREFIX.into(),
            publish_parameter_prefix: DEFAULT_PUBLISH_PARAMETER_PREFIX.into(),
        },
        nightly: Default::default(),
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
        let (ssm, sfn) = (ssm_parameter(None, testing::EXAMPLE_RECIPE), start());
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
        let (ssm, sfn) = (ssm_parameter(None, text), start());
        let result = handle(&deps(&ssm, &sfn), release.clone()).await;
        (result, sfn.num_calls())
    })
    .await;
}
