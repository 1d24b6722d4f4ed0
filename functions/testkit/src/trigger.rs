//! What the trigger's unit tests and its corpus test both answer: KMS per region and StartExecution.

use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::types::{KeyManagerType, KeyMetadata, KeyState};
use aws_sdk_sfn::operation::start_execution::{StartExecutionInput, StartExecutionOutput};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, mock};

use ami_core::testing::{Captured, retry};

/// The id and ARN every answered key has.
pub const KEY_ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";
pub const KEY_ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// A KMS client of `region` answered by `rules`, configured as `ami_core::testing` configures the others.
pub fn kms_client<'a>(region: &str, rules: impl IntoIterator<Item = &'a Rule>) -> aws_sdk_kms::Client {
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
        .retry_config(retry())
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// DescribeKey of `key_id` (any key if `None`) answered, every time, with a key of this manager and state.
pub fn kms_key(key_id: Option<&'static str>, manager: KeyManagerType, state: KeyState) -> Rule {
    mock!(aws_sdk_kms::Client::describe_key)
        .match_requests(move |r| key_id.is_none_or(|id| r.key_id() == Some(id)))
        .then_output(move || {
            DescribeKeyOutput::builder()
                .key_metadata(
                    KeyMetadata::builder()
                        .key_id(KEY_ID)
                        .arn(KEY_ARN)
                        .key_manager(manager.clone())
                        .key_state(state.clone())
                        .enabled(state == KeyState::Enabled)
                        .build()
                        .expect("key id set"),
                )
                .build()
        })
}

/// StartExecution started, every time (each request kept in `captured`): the execution's ARN is the state
/// machine's with the request's name; the start date is now, as Step Functions gives it (the trigger tells its own
/// start from a running execution's repeated response by it).
pub fn start_execution(captured: Captured<StartExecutionInput>) -> Rule {
    mock!(aws_sdk_sfn::Client::start_execution).then_compute_output(move |r| {
        captured.push(r);
        let machine = r.state_machine_arn().unwrap_or_default();
        StartExecutionOutput::builder()
            .execution_arn(format!("{machine}:{}", r.name().unwrap_or_default()).replace("stateMachine", "execution"))
            .start_date(aws_sdk_sfn::primitives::DateTime::from_secs(
                ami_core::model::steps::now(),
            ))
            .build()
            .expect("ARN and date set")
    })
}
