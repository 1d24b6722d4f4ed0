//! Fixtures and `aws-smithy-mocks` helpers for the handlers' unit tests (feature `testing`).

use std::time::Duration;

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_smithy_mocks::{Rule, RuleMode};
use serde_json::{Value, json};

use crate::model::recipe::Recipe;
use crate::model::steps::{ExecutionRef, Release, Run, TriggerKind};

pub const EXAMPLE_RECIPE: &str = include_str!("../../../infra/recipes/al2023-web.json");
pub const EXECUTION: &str = "web-r-1-4-0-0f00ba11";
pub const REGION: &str = "us-east-1";

pub fn recipe() -> Recipe {
    Recipe::from_json(EXAMPLE_RECIPE).expect("example recipe is valid")
}

pub fn execution() -> ExecutionRef {
    ExecutionRef {
        name: EXECUTION.into(),
        id: format!("arn:aws:states:{REGION}:123456789012:execution:ami-pipeline:{EXECUTION}"),
    }
}

pub fn run_with(recipe: Recipe) -> Run {
    Run {
        pipeline: recipe.name.clone(),
        release: Release {
            version: "1.4.0".into(),
            commit: Some("9f2c1e7a".into()),
            artifact: Some("s3://example-artifacts/web/web-1.4.0.tar.gz".into()),
            ..Release::default()
        },
        trigger: TriggerKind::Release,
        region: REGION.into(),
        date: "20261126".into(),
        build: true,
        regions: recipe.all_regions(REGION),
        recipe,
        adopted: None,
    }
}

pub fn run() -> Run {
    run_with(recipe())
}

/// A step request as the state machine sends it.
pub fn request(action: &str, run: &Run, steps: Value) -> Value {
    json!({"action": action, "execution": execution(), "run": run, "steps": steps})
}

/// The SDK's standard retry (3 attempts) with a 1 ms backoff, as in production but fast.
pub fn retry() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
}

/// A client whose calls are answered by `rules` (any order). Built by hand rather than with the SDK's `test-util`
/// feature, so tests and the Lambda binaries share one build of the SDK crates.
macro_rules! mocked {
    ($krate:ident, $rules:expr $(, $extra:expr)*) => {{
        let mut interceptor = aws_smithy_mocks::MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for rule in $rules {
            interceptor = interceptor.with_rule(rule);
        }
        let conf = $krate::config::Config::builder()
            .behavior_version($krate::config::BehaviorVersion::latest())
            .region($krate::config::Region::new(REGION))
            .credentials_provider($krate::config::Credentials::new("AKIDTEST", "test", None, None, "test"))
            .http_client(aws_smithy_mocks::create_mock_http_client())
            .interceptor(interceptor)
            $(.interceptor($extra))*
            .retry_config(retry())
            .build();
        $krate::Client::from_conf(conf)
    }};
}

/// Every request is also checked by the request audit ([`crate::audit`]): a violation fails the test.
pub fn ec2(rules: &[&Rule]) -> aws_sdk_ec2::Client {
    mocked!(aws_sdk_ec2, rules, crate::audit::Audit)
}

pub fn ssm(rules: &[&Rule]) -> aws_sdk_ssm::Client {
    mocked!(aws_sdk_ssm, rules)
}

/// [`ec2`] with one more interceptor (the testkit's call counter), the audit still installed.
pub fn ec2_with(rules: &[&Rule], extra: impl aws_sdk_ec2::config::Intercept + 'static) -> aws_sdk_ec2::Client {
    mocked!(aws_sdk_ec2, rules, crate::audit::Audit, extra)
}

/// [`ssm`] with one more interceptor.
pub fn ssm_with(rules: &[&Rule], extra: impl aws_sdk_ssm::config::Intercept + 'static) -> aws_sdk_ssm::Client {
    mocked!(aws_sdk_ssm, rules, extra)
}

pub fn sfn(rules: &[&Rule]) -> aws_sdk_sfn::Client {
    mocked!(aws_sdk_sfn, rules)
}

pub fn logs(rules: &[&Rule]) -> aws_sdk_cloudwatchlogs::Client {
    mocked!(aws_sdk_cloudwatchlogs, rules)
}

/// CloudWatch Logs without the command's streams (`ResourceNotFoundException`): a failure's tail then comes from
/// the invocation's inline output.
pub fn logs_without_streams() -> aws_sdk_cloudwatchlogs::Client {
    let missing = aws_smithy_mocks::mock!(aws_sdk_cloudwatchlogs::Client::get_log_events)
        .sequence()
        .http_status(400, Some(json_error_body("ResourceNotFoundException")))
        .repeatedly()
        .build();
    logs(&[&missing])
}

/// An EC2 (query protocol) error body.
pub fn ec2_error_body(code: &str) -> String {
    format!(
        "<Response><Errors><Error><Code>{code}</Code><Message>{code} (mock)</Message></Error></Errors>\
         <RequestID>mock</RequestID></Response>"
    )
}

/// An awsJson error body (SSM, Step Functions).
pub fn json_error_body(code: &str) -> String {
    json!({"__type": code, "message": format!("{code} (mock)")}).to_string()
}

/// `Unix seconds` for tests that need a fixed "now".
pub const NOW: i64 = 1_795_000_000;

/// RFC 3339 time for `secs`.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

pub const BASE_IMAGE: &str = "ami-0aaaaaaaaaaaaaaa1";

/// An Amazon-owned, available x86_64 base image with an 8 GiB root volume.
pub fn base_image() -> aws_sdk_ec2::types::Image {
    base_image_builder().build()
}

/// [`base_image`] before `build()`, to vary one field.
pub fn base_image_builder() -> aws_sdk_ec2::types::builders::ImageBuilder {
    use aws_sdk_ec2::types::{ArchitectureValues, BlockDeviceMapping, EbsBlockDevice, Image, ImageState};
    Image::builder()
        .image_id(BASE_IMAGE)
        .name("al2023-ami-2023.9.20261120.0-kernel-6.12-x86_64")
        .owner_id("137112412989")
        .image_owner_alias("amazon")
        .state(ImageState::Available)
        .architecture(ArchitectureValues::X8664)
        .root_device_name("/dev/xvda")
        .creation_date("2026-11-20T00:00:00.000Z")
        // As AWS reports AL2023 x86_64 images (DescribeImages).
        .platform_details(crate::aws::platform::LINUX_UNIX)
        .usage_operation(crate::aws::platform::RUN_INSTANCES)
        .boot_mode(aws_sdk_ec2::types::BootModeValues::UefiPreferred)
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(8)
                        .snapshot_id("snap-0aaaaaaaaaaaaaaa1")
                        .build(),
                )
                .build(),
        )
}

/// The plan for [`base_image`] and the example recipe: snapshots, then RegisterImage as `uefi-preferred`.
pub fn linux_plan() -> crate::aws::platform::ImagePlan {
    crate::aws::platform::ImagePlan {
        method: crate::aws::platform::Method::Snapshots,
        platform_details: crate::aws::platform::LINUX_UNIX.into(),
        usage_operation: crate::aws::platform::RUN_INSTANCES.into(),
        boot_mode: Some("uefi-preferred".into()),
        boot_mode_override: false,
        tpm_support: false,
    }
}

/// Captures every request a mock rule sees, for assertions after the call.
#[derive(Clone)]
pub struct Captured<T>(std::sync::Arc<std::sync::Mutex<Vec<T>>>);

impl<T> Default for Captured<T> {
    fn default() -> Self {
        Captured(Default::default())
    }
}

impl<T: Clone> Captured<T> {
    pub fn push(&self, v: &T) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(v.clone());
    }
    pub fn all(&self) -> Vec<T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn only(&self) -> T {
        let all = self.all();
        assert_eq!(all.len(), 1, "expected exactly one request");
        all.into_iter().next().expect("one request")
    }
}
