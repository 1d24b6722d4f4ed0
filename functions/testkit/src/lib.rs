//! The handlers' test kit (a dev-dependency of every handler crate): core's fixtures and mock clients (each EC2
//! client runs the request audit), a call counter, one fake AWS world ([`world`]) and the contract tests every
//! step must pass ([`step_contract_tests!`]).
//!
//! Core's own unit tests cannot use this crate (a dev-dependency cycle would build two copies of `ami-core`), so
//! the fixtures they need stay in `ami_core::testing` and are re-exported here.

pub mod calls;
pub mod contract;
pub mod trigger;
pub mod world;

pub use ami_core::testing::*;
pub use calls::Calls;
pub use world::{World, WorldState};

/// A rule answering `$op` with `$output` (evaluated per call), every time, keeping each request in `$captured`.
#[macro_export]
macro_rules! capturing {
    ($op:path, $captured:expr, $output:expr) => {{
        let captured = $captured;
        aws_smithy_mocks::mock!($op).then_compute_output(move |r| {
            captured.push(r);
            $output
        })
    }};
}

/// A rule answering `$op` throttled once, then with `$output` (the SDK retries on the rule that matched first).
/// EC2 (query protocol) operations throttle with 503 `RequestLimitExceeded`; `json` ones (SSM, Step Functions) with
/// 400 `ThrottlingException`.
#[macro_export]
macro_rules! throttled_once {
    (json $op:path, $output:expr) => {
        aws_smithy_mocks::mock!($op)
            .sequence()
            .http_status(400, Some($crate::json_error_body("ThrottlingException")))
            .output($output)
            .build()
    };
    ($op:path, $output:expr) => {
        aws_smithy_mocks::mock!($op)
            .sequence()
            .http_status(503, Some($crate::ec2_error_body("RequestLimitExceeded")))
            .output($output)
            .build()
    };
}

/// A rule answering `$op` throttled on every attempt.
#[macro_export]
macro_rules! throttled_always {
    (json $op:path) => {
        aws_smithy_mocks::mock!($op)
            .sequence()
            .http_status(400, Some($crate::json_error_body("ThrottlingException")))
            .repeatedly()
            .build()
    };
    ($op:path) => {
        aws_smithy_mocks::mock!($op)
            .sequence()
            .http_status(503, Some($crate::ec2_error_body("RequestLimitExceeded")))
            .repeatedly()
            .build()
    };
}

/// A rule answering `$op` (those requests `match` accepts, if given) with the EC2 error `$code` (400), every time;
/// with `once`, a single time (a second call finds no rule and fails the test).
#[macro_export]
macro_rules! ec2_error {
    ($($rule:tt)*) => { $crate::error_rule!(ec2_error_body; $($rule)*) };
}

/// [`ec2_error!`] for a `json` protocol `$op` (SSM, Step Functions, KMS).
#[macro_export]
macro_rules! json_error {
    ($($rule:tt)*) => { $crate::error_rule!(json_error_body; $($rule)*) };
}

/// The rule behind [`ec2_error!`] and [`json_error!`]: `$op` answers 400 with `$body($code)`, once or always.
#[doc(hidden)]
#[macro_export]
macro_rules! error_rule {
    ($body:ident; once $op:path, $code:expr $(, match $filter:expr)?) => {
        aws_smithy_mocks::mock!($op)
            $(.match_requests($filter))?
            .sequence()
            .http_status(400, Some($crate::$body($code)))
            .build()
    };
    ($body:ident; $op:path, $code:expr $(, match $filter:expr)?) => {
        aws_smithy_mocks::mock!($op)
            $(.match_requests($filter))?
            .sequence()
            .http_status(400, Some($crate::$body($code)))
            .repeatedly()
            .build()
    };
}

/// Asserts `err` has the error type `error_type`, and a message that mentions each of `mentions`.
#[track_caller]
pub fn assert_error(err: &ami_core::Error, error_type: &str, mentions: &[&str]) {
    assert_eq!(err.error_type(), error_type, "{err}");
    let text = err.to_string();
    for m in mentions {
        assert!(text.contains(m), "want {m:?} in: {text}");
    }
}

/// Asserts `err` is `InvalidInput` naming `field`, with a message that mentions each of `mentions`.
#[track_caller]
pub fn assert_invalid_input(err: &ami_core::Error, field: &str, mentions: &[&str]) {
    let ami_core::Error::InvalidInput { field: got, message } = err else {
        panic!("want InvalidInput at {field}, got {err}");
    };
    assert_eq!(got, field, "{err}");
    for m in mentions {
        assert!(message.contains(m), "want {m:?} in: {err}");
    }
}

/// GetParameter of `name` (any name if `None`) answered with `value`, every time.
pub fn ssm_parameter(name: Option<&'static str>, value: impl Into<String>) -> aws_smithy_mocks::Rule {
    use aws_sdk_ssm::{operation::get_parameter::GetParameterOutput, types::Parameter};
    let value = value.into();
    aws_smithy_mocks::mock!(aws_sdk_ssm::Client::get_parameter)
        .match_requests(move |r| name.is_none_or(|n| r.name() == Some(n)))
        .sequence()
        .output(move || {
            GetParameterOutput::builder()
                .parameter(Parameter::builder().value(value.clone()).build())
                .build()
        })
        .repeatedly()
        .build()
}

/// DescribeInstances by tag finds nothing, every time: no instance of this execution yet.
pub fn no_instance_tagged() -> aws_smithy_mocks::Rule {
    aws_smithy_mocks::mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(|r| !r.filters().is_empty())
        .sequence()
        .output(|| aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder().build())
        .repeatedly()
        .build()
}

/// A request matcher that accepts what `hit` accepts and keeps each such request in `captured`.
pub fn capture_if<T: Clone + Send + Sync + 'static>(
    captured: &Captured<T>,
    hit: impl Fn(&T) -> bool + Send + Sync + 'static,
) -> impl Fn(&T) -> bool + Send + Sync + 'static {
    let captured = captured.clone();
    move |r| {
        let hit = hit(r);
        if hit {
            captured.push(r);
        }
        hit
    }
}

/// SendCommand answered with command `id`, every time; each request kept in `captured`.
pub fn send_command(
    captured: Captured<aws_sdk_ssm::operation::send_command::SendCommandInput>,
    id: &'static str,
) -> aws_smithy_mocks::Rule {
    use aws_sdk_ssm::{operation::send_command::SendCommandOutput, types::Command};
    aws_smithy_mocks::mock!(aws_sdk_ssm::Client::send_command).then_compute_output(move |r| {
        captured.push(r);
        SendCommandOutput::builder()
            .command(Command::builder().command_id(id).build())
            .build()
    })
}

/// Unix seconds of an RFC 3339 time (the inverse of [`rfc3339`]); 0 if it does not parse.
pub fn secs(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp())
        .unwrap_or_default()
}

/// Step clients whose EC2 (audited) and SSM calls, in any region, are answered by `ec2` and `ssm`.
pub fn clients(ec2: &[&aws_smithy_mocks::Rule], ssm: &[&aws_smithy_mocks::Rule]) -> ami_core::step::Clients {
    let (ec2, ssm) = (ami_core::testing::ec2(ec2), ami_core::testing::ssm(ssm));
    ami_core::step::Clients {
        ec2: ami_core::aws::clients::Ec2Clients::from_fn(move |_| ec2.clone()),
        ssm: ami_core::aws::clients::SsmClients::from_fn(move |_| ssm.clone()),
    }
}

/// Step clients with EC2 rules per region: a call in a region not listed panics, one made in the wrong region
/// finds no rule and fails the test. SSM answers nothing.
pub fn clients_in(regions: &[(&str, &[&aws_smithy_mocks::Rule])]) -> ami_core::step::Clients {
    let ec2: std::collections::BTreeMap<String, aws_sdk_ec2::Client> = regions
        .iter()
        .map(|(region, rules)| (region.to_string(), ami_core::testing::ec2(rules)))
        .collect();
    let ssm = ami_core::testing::ssm(&[]);
    ami_core::step::Clients {
        ec2: ami_core::aws::clients::Ec2Clients::from_fn(move |region| match ec2.get(region) {
            Some(c) => c.clone(),
            None => panic!("no client expected for {region}"),
        }),
        ssm: ami_core::aws::clients::SsmClients::from_fn(move |_| ssm.clone()),
    }
}

/// The Run Command log group the mocked channel reads.
pub const LOG_GROUP: &str = "/ami-pipeline/run-command";

/// A Run Command channel whose SSM calls are answered by `ssm`; the command's log streams are not there, so a
/// failure's tail comes from the invocation's inline output.
pub fn channel(ssm: &[&aws_smithy_mocks::Rule]) -> ami_core::aws::runcommand::Channel {
    ami_core::aws::runcommand::Channel {
        ssm: ami_core::testing::ssm(ssm),
        logs: ami_core::testing::logs_without_streams(),
        log_group: Some(LOG_GROUP.into()),
        agent_deadline: None,
    }
}

/// Instance step clients (build, test-launch): EC2 (audited) answered by `ec2`, the Run Command channel's SSM by
/// `ssm` ([`channel`]).
pub fn instance_clients(
    ec2: &[&aws_smithy_mocks::Rule],
    ssm: &[&aws_smithy_mocks::Rule],
) -> ami_core::step::InstanceClients {
    ami_core::step::InstanceClients {
        ec2: ami_core::testing::ec2(ec2),
        channel: channel(ssm),
    }
}

/// A DescribeImages rule to be answered.
pub type DescribeImagesRule = aws_smithy_mocks::RuleBuilder<
    aws_sdk_ec2::operation::describe_images::DescribeImagesInput,
    aws_sdk_ec2::operation::describe_images::DescribeImagesOutput,
    aws_sdk_ec2::operation::describe_images::DescribeImagesError,
>;

/// DescribeImages of `image`'s id answered with `image`, every time.
pub fn image_described(image: aws_sdk_ec2::types::Image) -> aws_smithy_mocks::Rule {
    let id = image.image_id().map(str::to_string);
    aws_smithy_mocks::mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(move |r| r.image_ids().first() == id.as_ref() && r.image_ids().len() == 1)
        .sequence()
        .output(move || {
            aws_sdk_ec2::operation::describe_images::DescribeImagesOutput::builder()
                .images(image.clone())
                .build()
        })
        .repeatedly()
        .build()
}

/// `lookup` (a DescribeImages rule) finding nothing, every time.
pub fn finds_no_images(lookup: DescribeImagesRule) -> aws_smithy_mocks::Rule {
    lookup
        .sequence()
        .output(|| aws_sdk_ec2::operation::describe_images::DescribeImagesOutput::builder().build())
        .repeatedly()
        .build()
}

/// DescribeImages filtered by the execution tag: the look-up that adopts what a lost create made.
pub fn images_by_execution_tag() -> DescribeImagesRule {
    aws_smithy_mocks::mock!(aws_sdk_ec2::Client::describe_images).match_requests(|r| {
        r.filters()
            .iter()
            .any(|f| f.name() == Some(&format!("tag:{}", ami_core::aws::tags::EXECUTION)))
    })
}

/// DescribeImages filtered by name: the look-up after a create finds the name taken.
pub fn images_by_name() -> DescribeImagesRule {
    aws_smithy_mocks::mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("name")))
}

/// The plan for a licensed Windows image: CreateImage keeps its billing, UEFI with NitroTPM.
pub fn windows_plan() -> ami_core::aws::platform::ImagePlan {
    ami_core::aws::platform::ImagePlan {
        method: ami_core::aws::platform::Method::CreateImage,
        platform_details: "Windows".into(),
        usage_operation: "RunInstances:0002".into(),
        boot_mode: Some("uefi".into()),
        boot_mode_override: false,
        tpm_support: true,
    }
}

/// The tags a RunInstances request puts on its instance and volumes, after checking each carries the pipeline's,
/// this execution's and `role`.
pub fn tagged_on_create<'a>(
    req: &'a aws_sdk_ec2::operation::run_instances::RunInstancesInput,
    role: &str,
) -> Vec<&'a [aws_sdk_ec2::types::Tag]> {
    use ami_core::aws::tags;
    use aws_sdk_ec2::types::ResourceType;
    [ResourceType::Instance, ResourceType::Volume]
        .iter()
        .map(|rt| {
            let spec = req
                .tag_specifications()
                .iter()
                .find(|s| s.resource_type() == Some(rt))
                .unwrap_or_else(|| panic!("{rt:?} tagged on create"));
            assert_eq!(tags::get(spec.tags(), tags::PIPELINE), Some("web"));
            assert_eq!(tags::get(spec.tags(), tags::EXECUTION), Some(EXECUTION));
            assert_eq!(tags::get(spec.tags(), tags::ROLE), Some(role));
            spec.tags()
        })
        .collect()
}

/// Asserts a RunInstances request launches locked down: IMDSv2 only, no public IP, in the example recipe's build
/// subnet and security group, with this shutdown behaviour.
#[track_caller]
pub fn assert_locked_down(
    req: &aws_sdk_ec2::operation::run_instances::RunInstancesInput,
    shutdown: aws_sdk_ec2::types::ShutdownBehavior,
) {
    let md = req.metadata_options().expect("metadata options");
    assert_eq!(md.http_tokens(), Some(&aws_sdk_ec2::types::HttpTokensState::Required));
    let nic = &req.network_interfaces()[0];
    assert_eq!(nic.associate_public_ip_address(), Some(false));
    assert_eq!(nic.subnet_id(), Some("subnet-0123456789abcdef0"));
    assert_eq!(nic.groups(), ["sg-0123456789abcdef0"]);
    assert_eq!(req.instance_initiated_shutdown_behavior(), Some(&shutdown));
}

/// RunInstances answered with `instance`, every time; each request kept in `captured`.
pub fn run_instances(
    captured: Captured<aws_sdk_ec2::operation::run_instances::RunInstancesInput>,
    instance: aws_sdk_ec2::types::Instance,
) -> aws_smithy_mocks::Rule {
    use aws_sdk_ec2::operation::run_instances::RunInstancesOutput;
    capturing!(
        aws_sdk_ec2::Client::run_instances,
        captured,
        RunInstancesOutput::builder().instances(instance.clone()).build()
    )
}

/// Asserts a launch on the Run Command channel (the default) carries `tag` and the channel's mark in its user data,
/// and neither the script (`script_line`, sent later) nor a shutdown (the step stops or keeps the instance).
#[track_caller]
pub fn assert_run_command_user_data(
    req: &aws_sdk_ec2::operation::run_instances::RunInstancesInput,
    tag: &str,
    script_line: &str,
) {
    let user_data = user_data(req);
    assert!(user_data.contains(tag), "{user_data}");
    assert!(
        user_data.contains(ami_core::model::userdata::RUN_COMMAND_MARK),
        "{user_data}"
    );
    assert!(!user_data.contains(script_line), "the script is not in the user data");
    assert!(
        !user_data.contains("shutdown"),
        "the step stops or keeps the instance, not its user data"
    );
}

/// What DescribeInstances answers for `instance`.
pub fn described_instance(
    instance: aws_sdk_ec2::types::Instance,
) -> aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput {
    aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder()
        .reservations(aws_sdk_ec2::types::Reservation::builder().instances(instance).build())
        .build()
}

/// The `StateTransitionReason` EC2 gives an instance in `state`: a stop made at `stopped` (Unix seconds) from the
/// API carries its time; other states carry none.
pub fn transition_reason(state: &aws_sdk_ec2::types::InstanceStateName, stopped: i64) -> String {
    match state {
        aws_sdk_ec2::types::InstanceStateName::Stopped => chrono::DateTime::from_timestamp(stopped, 0)
            .expect("a time in range")
            .format("User initiated (%Y-%m-%d %H:%M:%S GMT)")
            .to_string(),
        _ => String::new(),
    }
}

/// A RunInstances request's user data, decoded.
pub fn user_data(req: &aws_sdk_ec2::operation::run_instances::RunInstancesInput) -> String {
    let raw = aws_smithy_types::base64::decode(req.user_data().expect("user data")).expect("base64 user data");
    String::from_utf8(raw).expect("UTF-8 user data")
}

/// What GetCommandInvocation answers for a command in `status` with exit `code` and inline output `out`: a
/// `TimedOut` one is an execution timeout (StatusDetails `ExecutionTimedOut`), and every one but `Pending` and
/// `Delayed` has started (`ExecutionStartDateTime`).
pub fn invocation_output(
    status: aws_sdk_ssm::types::CommandInvocationStatus,
    code: i32,
    out: &str,
) -> aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput {
    use aws_sdk_ssm::types::CommandInvocationStatus as S;
    let details = match &status {
        S::TimedOut => "ExecutionTimedOut",
        other => other.as_str(),
    };
    let started = !matches!(status, S::Pending | S::Delayed);
    aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput::builder()
        .status_details(details)
        .status(status)
        .set_execution_start_date_time(started.then(|| "2026-11-27T10:00:00.000Z".to_string()))
        .response_code(code)
        .standard_output_content(out)
        .build()
}

/// Asserts a create was sent twice with one client token, so EC2 answered the retry with what the first made.
pub fn assert_one_client_token<'a>(tokens: impl IntoIterator<Item = Option<&'a str>>) {
    let tokens: Vec<Option<&str>> = tokens.into_iter().collect();
    assert_eq!(tokens.len(), 2, "sent twice");
    assert!(tokens[0].is_some(), "with a client token");
    assert_eq!(
        tokens[0], tokens[1],
        "EC2 returns the first create instead of making a second"
    );
}
