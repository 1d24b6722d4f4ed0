use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_launch_templates::{DescribeLaunchTemplatesInput, DescribeLaunchTemplatesOutput};
use aws_sdk_ec2::types::{Image, Tag};
use aws_sdk_kms::Client as Kms;
use aws_sdk_kms::types::{KeyManagerType, KeyState};
use aws_sdk_sfn::Client as Sfn;
use aws_sdk_sfn::operation::describe_execution::{DescribeExecutionInput, DescribeExecutionOutput};
use aws_sdk_sfn::operation::start_execution::{StartExecutionInput, StartExecutionOutput};
use aws_sdk_ssm::Client as Ssm;
use aws_sdk_ssm::operation::get_parameter::GetParameterOutput;
use aws_sdk_ssm::types::Parameter;
use aws_smithy_mocks::{Rule, mock};

use ami_testkit::ssm_parameter;
use ami_testkit::trigger::{kms_client, kms_key, start_execution};
use ami_testkit::{self as testing, BASE_IMAGE, Captured};

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
const KEY: &str = "alias/ami-pipeline-images";

/// `kms`: the rules answering KMS in each region; a call to a region not listed, or that no rule matches, panics.
fn deps_with_keys(ec2: &[&Rule], ssm: &[&Rule], sfn: &[&Rule], kms: &[(&str, &[&Rule])]) -> Deps {
    deps_in_regions(ec2, ssm, sfn, kms, &[])
}

/// EC2 and SSM rules of a region other than the home region: (region, EC2 rules, SSM rules).
type Remote<'a> = (&'a str, &'a [&'a Rule], &'a [&'a Rule]);

/// [`deps_with_keys`], with EC2 and SSM rules for other regions (`remote`): each region's SSM also finds no publish
/// parameter; an EC2 call no rule matches panics.
fn deps_in_regions(ec2: &[&Rule], ssm: &[&Rule], sfn: &[&Rule], kms: &[(&str, &[&Rule])], remote: &[Remote]) -> Deps {
    let per_region: std::collections::HashMap<String, Vec<Rule>> = kms
        .iter()
        .map(|(region, rules)| (region.to_string(), rules.iter().map(|r| (*r).clone()).collect()))
        .collect();
    // after the test's own rules: the preflight's look-ups (base image, network, types, DryRun, publish's targets)
    // find all in order
    let (pre_ec2, pre_ssm) = (preflight_ok_ec2(), [base_param(), no_publish_parameter()]);
    let ec2: Vec<&Rule> = ec2.iter().copied().chain(pre_ec2.iter()).collect();
    let ssm: Vec<&Rule> = ssm.iter().copied().chain(pre_ssm.iter()).collect();
    Deps {
        ec2: testing::ec2(&ec2),
        ssm: testing::ssm(&ssm),
        sfn: testing::sfn(sfn),
        kms: RegionalClients::from_fn(move |region| kms_client(region, per_region.get(region).into_iter().flatten())),
        regional: regional(remote),
        region: "us-east-1".into(),
        config: Config {
            state_machine_arn: SM.into(),
            recipe_prefix: DEFAULT_RECIPE_PREFIX.into(),
            publish_parameter_prefix: DEFAULT_PUBLISH_PARAMETER_PREFIX.into(),
        },
        nightly: Default::default(),
    }
}

/// The clients of the regions besides the home region, answered by `remote`'s rules.
fn regional(remote: &[Remote]) -> ami_core::step::Clients {
    let owned = |rules: &[&Rule]| rules.iter().map(|r| (*r).clone()).collect::<Vec<Rule>>();
    let rules: std::collections::HashMap<String, (Vec<Rule>, Vec<Rule>)> = (remote.iter())
        .map(|(region, ec2, ssm)| (region.to_string(), (owned(ec2), owned(ssm))))
        .collect();
    let ssm_rules = rules.clone();
    ami_core::step::Clients {
        ec2: ami_core::aws::clients::Ec2Clients::from_fn(move |region| {
            let own = rules.get(region).map(|(ec2, _)| ec2.clone()).unwrap_or_default();
            testing::ec2(&own.iter().collect::<Vec<_>>())
        }),
        ssm: ami_core::aws::clients::SsmClients::from_fn(move |region| {
            let own = ssm_rules.get(region).map(|(_, ssm)| ssm.clone()).unwrap_or_default();
            let none = no_publish_parameter();
            testing::ssm(&own.iter().chain(std::iter::once(&none)).collect::<Vec<_>>())
        }),
    }
}

/// GetParameter of a publish parameter (under `/images/`) answered `ParameterNotFound`: publish will create it.
fn no_publish_parameter() -> Rule {
    let under_prefix = |r: &aws_sdk_ssm::operation::get_parameter::GetParameterInput| {
        r.name().is_some_and(|n| n.starts_with("/images/"))
    };
    ami_testkit::json_error!(Ssm::get_parameter, "ParameterNotFound", match under_prefix)
}

/// A launch template as DescribeLaunchTemplates lists it, with the opt-in tag `ami-pipeline:publish` = `opt_in`.
fn launch_template(id: &str, name: &str, opt_in: &str) -> aws_sdk_ec2::types::LaunchTemplate {
    aws_sdk_ec2::types::LaunchTemplate::builder()
        .launch_template_id(id)
        .launch_template_name(name)
        .tags(Tag::builder().key(tags::PUBLISH_OPT_IN).value(opt_in).build())
        .build()
}

/// DescribeKey of the recipes' key answered with this manager and state.
fn key(manager: KeyManagerType, state: KeyState) -> Rule {
    kms_key(Some(KEY), manager, state)
}

fn recipe_param(text: String) -> Rule {
    ssm_parameter(Some("/ami-pipeline/pipelines/web"), text)
}

/// The stored recipe `recipe`, and StartExecution starting (each request kept in `captured`).
fn stored_and_started(recipe: impl Into<String>, captured: Captured<StartExecutionInput>) -> (Rule, Rule) {
    (recipe_param(recipe.into()), start_execution(captured))
}

fn key_not_found() -> Rule {
    ami_testkit::json_error!(once Kms::describe_key, "NotFoundException", match |r| r.key_id() == Some(KEY))
}

/// The preflight finding everything the example recipe names: the base image, its subnet and security group (one
/// VPC), its instance type, and a builder launch EC2 would allow (DryRun answers `DryRunOperation`).
fn preflight_ok_ec2() -> Vec<Rule> {
    use aws_sdk_ec2::operation::describe_instance_types::DescribeInstanceTypesOutput;
    use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
    use aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput;
    use aws_sdk_ec2::types::{ArchitectureType, InstanceTypeInfo, ProcessorInfo, SecurityGroup, Subnet};
    vec![
        mock!(Ec2::describe_images)
            .match_requests(|r| r.image_ids().contains(&BASE_IMAGE.to_string()))
            .sequence()
            .output(|| DescribeImagesOutput::builder().images(testing::base_image()).build())
            .repeatedly()
            .build(),
        mock!(Ec2::describe_subnets)
            .sequence()
            .output(|| {
                DescribeSubnetsOutput::builder()
                    .subnets(
                        Subnet::builder()
                            .subnet_id("subnet-0123456789abcdef0")
                            .vpc_id("vpc-1")
                            .build(),
                    )
                    .build()
            })
            .repeatedly()
            .build(),
        mock!(Ec2::describe_security_groups)
            .sequence()
            .output(|| {
                DescribeSecurityGroupsOutput::builder()
                    .security_groups(
                        SecurityGroup::builder()
                            .group_id("sg-0123456789abcdef0")
                            .vpc_id("vpc-1")
                            .build(),
                    )
                    .build()
            })
            .repeatedly()
            .build(),
        mock!(Ec2::describe_instance_types)
            .sequence()
            .output(|| {
                DescribeInstanceTypesOutput::builder()
                    .instance_types(
                        InstanceTypeInfo::builder()
                            .instance_type("t3.small".into())
                            .processor_info(
                                ProcessorInfo::builder()
                                    .supported_architectures(ArchitectureType::X8664)
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            })
            .repeatedly()
            .build(),
        mock!(Ec2::run_instances)
            .match_requests(|r| r.dry_run() == Some(true))
            .sequence()
            .http_status(412, Some(testing::ec2_error_body("DryRunOperation")))
            .repeatedly()
            .build(),
        // the launch template publish changes, opted in
        mock!(Ec2::describe_launch_templates)
            .sequence()
            .output(|| {
                DescribeLaunchTemplatesOutput::builder()
                    .launch_templates(launch_template("lt-0aaaaaaaaaaaaaaa1", "web-servers", "true"))
                    .build()
            })
            .repeatedly()
            .build(),
    ]
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

/// Now, as Step Functions would give a start date: the trigger tells its own start from a running execution's
/// repeated response by it.
fn aws_smithy_types_now() -> aws_sdk_sfn::primitives::DateTime {
    aws_sdk_sfn::primitives::DateTime::from_secs(ami_core::model::steps::now())
}

fn event(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn release_event_starts_one_named_execution_with_the_frozen_recipe() {
    let captured = Captured::default();
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, captured.clone());
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
    let described: Captured<DescribeExecutionInput> = Captured::default();
    let describe = describe_status(&described, base(), ExecutionStatus::Running);
    let deps = deps(&[], &[&param], &[&sfn, &describe]);
    let first = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    let second = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    assert_eq!(first.status, TriggerStatus::Started);
    assert_eq!(second.status, TriggerStatus::Duplicate);
    assert_eq!(first.execution_name, second.execution_name);
    let sent = captured.all();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], sent[1], "byte-identical name and input");
    // The taken name is described (not listed) to tell a running execution from a failed one.
    assert_eq!(
        described.only().execution_arn(),
        Some(
            format!(
                "arn:aws:states:us-east-1:123456789012:execution:ami-pipeline:{}",
                base()
            )
            .as_str()
        )
    );
}

#[tokio::test]
async fn the_same_event_while_its_execution_runs_is_a_duplicate_though_start_execution_succeeds() {
    // Same name and input as a running execution: StartExecution succeeds with the original response, whose start
    // date is older than this call.
    let sfn = mock!(Sfn::start_execution).then_output(|| {
        StartExecutionOutput::builder()
            .execution_arn(format!(
                "arn:aws:states:us-east-1:123456789012:execution:ami-pipeline:{}",
                base()
            ))
            .start_date(aws_sdk_sfn::primitives::DateTime::from_secs(
                ami_core::model::steps::now() - 30,
            ))
            .build()
            .unwrap()
    });
    let param = recipe_param(testing::EXAMPLE_RECIPE.into());
    let deps = deps(&[], &[&param], &[&sfn]);
    let out = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    assert_eq!(out.status, TriggerStatus::Duplicate, "{out:?}");
    assert_eq!(out.execution_name, base());
    assert!(out.reason.unwrap().contains("RUNNING"));
}

// -- reruns -----------------------------------------------------------------------------------------------------

/// The release's execution name (`web-r-1.4.0` cleaned and hashed), and its attempt `n`.
fn base() -> String {
    naming::release_execution_name("web", "1.4.0")
}
fn a(n: u32) -> String {
    rerun::attempt_name(&base(), n)
}

/// DescribeExecution of the execution `name`, answered `status`; every request is captured.
fn describe_status(captured: &Captured<DescribeExecutionInput>, name: String, status: ExecutionStatus) -> Rule {
    let n = name.clone();
    mock!(Sfn::describe_execution)
        .match_requests(testing::capture_if(captured, execution_named(name)))
        .then_output(move || described(&n, status.clone()))
}

/// Accepts DescribeExecution of the execution `name`.
fn execution_named(name: String) -> impl Fn(&DescribeExecutionInput) -> bool + Send + Sync + 'static {
    move |r| r.execution_arn().is_some_and(|arn| arn.ends_with(&format!(":{name}")))
}

fn described(name: &str, status: ExecutionStatus) -> DescribeExecutionOutput {
    DescribeExecutionOutput::builder()
        .execution_arn(format!(
            "arn:aws:states:us-east-1:123456789012:execution:ami-pipeline:{name}"
        ))
        .state_machine_arn(SM)
        .status(status)
        .start_date(aws_smithy_types_now())
        .build()
        .unwrap()
}

/// DescribeExecution of `name` answered `ExecutionDoesNotExist`.
fn describe_missing(captured: &Captured<DescribeExecutionInput>, name: String) -> Rule {
    let missing = testing::capture_if(captured, execution_named(name));
    ami_testkit::json_error!(Sfn::describe_execution, "ExecutionDoesNotExist", match missing)
}

/// StartExecution: `ExecutionAlreadyExists` for the names in `taken`, started otherwise; every request captured.
fn start_unless_taken(captured: &Captured<StartExecutionInput>, taken: Vec<String>) -> [Rule; 2] {
    let taken = testing::capture_if(captured, move |r| {
        r.name().is_some_and(|n| taken.iter().any(|t| t == n))
    });
    let refused = ami_testkit::json_error!(Sfn::start_execution, "ExecutionAlreadyExists", match taken);
    [refused, start_execution(captured.clone())]
}

/// A kept image in the home region as DescribeImages lists it.
fn kept_image(id: &str, execution: &str, recipe_hash: &str, created: i64) -> Image {
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    Image::builder()
        .image_id(id)
        .name(format!("web-1.4.0-20261126-{id}"))
        .state(aws_sdk_ec2::types::ImageState::Available)
        .creation_date(testing::rfc3339(created))
        .tags(tag(tags::PIPELINE, "web"))
        .tags(tag(tags::EXECUTION, execution))
        .tags(tag(tags::RELEASE, "1.4.0"))
        .tags(tag(tags::COMMIT, "9f2c1e7a"))
        .tags(tag(tags::STATE, tags::STATE_TESTED))
        .tags(tag(tags::RECIPE_HASH, recipe_hash))
        .tags(tag(tags::SOURCE_IMAGE, BASE_IMAGE))
        .tags(tag(tags::BOOT_TO_READY, "41"))
        .build()
}

/// The trigger's look-up of kept images (the preflight's of the base image has its own rule).
fn kept_lookup(r: &aws_sdk_ec2::operation::describe_images::DescribeImagesInput) -> bool {
    r.filters().iter().any(|f| f.name() == Some("tag:ami-pipeline:state"))
}

fn example_hash() -> String {
    rerun::recipe_hash(&Recipe::from_json(testing::EXAMPLE_RECIPE).unwrap())
}

/// The Step Functions rules of a rerun: the execution `name` exists and ended `status`, its attempt 2 does not;
/// StartExecution refuses `name` and starts any other. Every start and describe is kept.
fn rerun_of(
    name: String,
    status: ExecutionStatus,
    starts: &Captured<StartExecutionInput>,
    describes: &Captured<DescribeExecutionInput>,
) -> [Rule; 4] {
    let [taken, start] = start_unless_taken(starts, vec![name.clone()]);
    let ended = describe_status(describes, name.clone(), status);
    let next = describe_missing(describes, rerun::attempt_name(&name, 2));
    [taken, start, ended, next]
}

fn started_run(req: &StartExecutionInput) -> Run {
    let input: Value = serde_json::from_str(req.input().unwrap()).unwrap();
    serde_json::from_value(input["run"].clone()).unwrap()
}

#[tokio::test]
async fn a_failed_release_sent_again_is_rerun_as_attempt_2_adopting_its_tested_image() {
    let (starts, describes) = (Captured::default(), Captured::default());
    let sfn = rerun_of(base(), ExecutionStatus::Failed, &starts, &describes);
    let hash = example_hash();
    let now = ami_core::model::steps::now();
    let images: Captured<aws_sdk_ec2::operation::describe_images::DescribeImagesInput> = Captured::default();
    let cap = images.clone();
    let listed = vec![
        kept_image("ami-0kept0000000001", &base(), &hash, now - 3600),
        // Not adoptable, though listed (the API's filter is not trusted to be applied): another recipe, another
        // release's execution, too old.
        kept_image("ami-0otherrecipe001", &base(), "0000", now - 60),
        kept_image("ami-0otherexec00001", "web-r-1.3.0", &hash, now - 60),
        kept_image("ami-0tooold00000001", &base(), &hash, now - 8 * 86_400),
    ];
    let describe_images = mock!(Ec2::describe_images)
        .match_requests(kept_lookup)
        .then_compute_output(move |r| {
            cap.push(r);
            DescribeImagesOutput::builder().set_images(Some(listed.clone())).build()
        });
    let param = recipe_param(testing::EXAMPLE_RECIPE.into());
    let deps = deps(&[&describe_images], &[&param], &sfn.each_ref());

    let out = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    assert_eq!(out.status, TriggerStatus::Rerun, "{out:?}");
    assert_eq!(out.execution_name, a(2));
    assert!(
        out.reason.as_deref().unwrap().contains("ami-0kept0000000001"),
        "{out:?}"
    );
    // duplicate, then describe the chain, then start the next attempt
    let names: Vec<String> = starts.all().iter().map(|r| r.name().unwrap().to_string()).collect();
    assert_eq!(names, [base(), a(2)]);
    let arns: Vec<String> = describes
        .all()
        .iter()
        .map(|r| r.execution_arn().unwrap().to_string())
        .collect();
    assert!(
        arns[0].ends_with(&format!(":{}", base())) && arns[1].ends_with(&format!(":{}", a(2))),
        "{arns:?}"
    );
    assert_eq!(arns.len(), 2);

    let req = images.only();
    assert_eq!(req.owners(), ["self"]);
    let filter = |name: &str| {
        req.filters()
            .iter()
            .find(|f| f.name() == Some(name))
            .map(|f| f.values().to_vec())
    };
    assert_eq!(filter("tag:ami-pipeline:state"), Some(vec!["tested".to_string()]));
    assert_eq!(filter("tag:ami-pipeline:recipe-hash"), Some(vec![hash.clone()]));
    assert_eq!(filter("tag:ami-pipeline:pipeline"), Some(vec!["web".to_string()]));

    let run = started_run(&starts.all()[1]);
    let adopted = run.adopted.expect("the rerun adopts the kept image");
    assert_eq!(adopted.image.image_id, "ami-0kept0000000001");
    assert_eq!(adopted.image.region, "us-east-1");
    assert_eq!(adopted.image.progress.status, Status::Ready);
    assert_eq!(adopted.execution, base());
    assert_eq!(adopted.source_image_id, BASE_IMAGE);
    assert_eq!(adopted.boot_to_ready_seconds, Some(41));
    // The first attempt's input adopted nothing.
    assert!(started_run(&starts.all()[0]).adopted.is_none());
}

#[tokio::test]
async fn a_rerun_with_nothing_kept_is_a_full_run_and_its_input_is_byte_identical_each_time() {
    let (starts, describes) = (Captured::default(), Captured::default());
    let sfn = rerun_of(base(), ExecutionStatus::TimedOut, &starts, &describes);
    let none = testing::finds_no_images(mock!(Ec2::describe_images).match_requests(kept_lookup));
    let param = recipe_param(testing::EXAMPLE_RECIPE.into());
    let deps = deps(&[&none], &[&param], &sfn.each_ref());
    let first = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    let second = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    assert_eq!(
        (first.status, second.status),
        (TriggerStatus::Rerun, TriggerStatus::Rerun)
    );
    let sent = starts.all();
    assert_eq!(sent.len(), 4);
    // Concurrent duplicates of a rerun send the same name and input: Step Functions gives them one execution.
    assert_eq!(sent[1], sent[3]);
    assert_eq!(sent[1].name(), Some(a(2).as_str()));
    assert!(started_run(&sent[1]).adopted.is_none());
}

#[tokio::test]
async fn a_running_or_succeeded_attempt_keeps_the_release_a_duplicate() {
    for status in [ExecutionStatus::Running, ExecutionStatus::Succeeded] {
        let (starts, describes) = (Captured::default(), Captured::default());
        let [taken, start] = start_unless_taken(&starts, vec![base()]);
        let aborted = describe_status(&describes, base(), ExecutionStatus::Aborted);
        let a2 = describe_status(&describes, a(2), status.clone());
        let param = recipe_param(testing::EXAMPLE_RECIPE.into());
        let deps = deps(&[], &[&param], &[&taken, &start, &aborted, &a2]);
        let out = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
        assert_eq!(out.status, TriggerStatus::Duplicate, "{status:?}");
        assert_eq!(out.execution_name, a(2));
        assert_eq!(starts.all().len(), 1, "nothing started after the duplicate");
        assert_eq!(describes.all().len(), 2);
    }
}

#[tokio::test]
async fn losing_the_race_to_start_a_rerun_is_a_duplicate() {
    let (starts, describes) = (Captured::default(), Captured::default());
    let [taken, start] = start_unless_taken(&starts, vec![base(), a(2)]);
    let failed = describe_status(&describes, base(), ExecutionStatus::Failed);
    // Not there when first described; another delivery started it (with other input) before this one could.
    let cap = describes.clone();
    let a2 = mock!(Sfn::describe_execution)
        .match_requests(move |r| {
            let hit = r
                .execution_arn()
                .is_some_and(|arn| arn.ends_with(&format!(":{}", a(2))));
            if hit {
                cap.push(r);
            }
            hit
        })
        .sequence()
        .http_status(400, Some(testing::json_error_body("ExecutionDoesNotExist")))
        .output(|| described(&a(2), ExecutionStatus::Running))
        .build();
    let none = testing::finds_no_images(mock!(Ec2::describe_images).match_requests(kept_lookup));
    let param = recipe_param(testing::EXAMPLE_RECIPE.into());
    let deps = deps(&[&none], &[&param], &[&taken, &start, &failed, &a2]);
    let out = handle(&deps, event(RELEASE_EVENT)).await.unwrap();
    assert_eq!(out.status, TriggerStatus::Duplicate, "{out:?}");
    assert_eq!(out.execution_name, a(2));
    let names: Vec<String> = starts.all().iter().map(|r| r.name().unwrap().to_string()).collect();
    assert_eq!(names, [base(), a(2)]);
}

#[tokio::test]
async fn malformed_event_is_rejected_before_any_call() {
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, Captured::default());
    let deps = deps(&[], &[&param], &[&sfn]);
    let err = handle(&deps, event(MALFORMED_EVENT)).await.unwrap_err();
    testing::assert_invalid_input(&err, "event.detail.version", &[]);
    assert_eq!((param.num_calls(), sfn.num_calls()), (0, 0));
}

#[tokio::test]
async fn invalid_stored_recipe_names_the_field_and_starts_nothing() {
    let bad = testing::EXAMPLE_RECIPE.replace("\"keep\": 3", "\"keep\": 0");
    let (param, sfn) = (recipe_param(bad), start_execution(Captured::default()));
    let deps = deps(&[], &[&param], &[&sfn]);
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    testing::assert_invalid_input(&err, "recipe.retention.keep", &[]);
    assert_eq!(sfn.num_calls(), 0);
}

/// A shared image without a customer-managed key in a copy region would fail at share, after the build, test and
/// copies: the trigger refuses it before anything is looked up or started.
#[tokio::test]
async fn shared_recipe_without_a_key_for_a_copy_region_starts_nothing() {
    let bad = testing::EXAMPLE_RECIPE.replace(", \"ap-southeast-2\": \"alias/ami-pipeline-images\"", "");
    assert_ne!(bad, testing::EXAMPLE_RECIPE);
    let (param, sfn) = (recipe_param(bad), start_execution(Captured::default()));
    let deps = deps(&[], &[&param], &[&sfn]);
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    testing::assert_invalid_input(&err, "recipe.distribution.kms_key_ids", &["ap-southeast-2"]);
    assert_eq!(sfn.num_calls(), 0);
}

#[tokio::test]
async fn missing_recipe_is_recipe_not_found() {
    let param = ami_testkit::json_error!(once Ssm::get_parameter, "ParameterNotFound");
    let deps = deps(&[], &[&param], &[]);
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    testing::assert_error(&err, "AmiPipeline.RecipeNotFound", &["/ami-pipeline/pipelines/web"]);
}

/// Item 4: a schedule naming a pipeline whose recipe is gone is a logged skip, not an error (which would end in the
/// dead-letter queue and raise the alarm every night); a release event for it still fails `RecipeNotFound`
/// (`missing_recipe_is_recipe_not_found`).
#[tokio::test]
async fn a_scheduled_run_without_a_stored_recipe_is_skipped_not_failed() {
    let gone = ami_testkit::json_error!(Ssm::get_parameter, "ParameterNotFound");
    let sfn = start_execution(Captured::default());
    let deps = deps(&[], &[&gone], &[&sfn]);
    let out = handle(&deps, event(SCHEDULED_EVENT)).await.unwrap();
    assert_eq!(out.status, TriggerStatus::Skipped);
    assert_eq!(out.execution_name, "web-s-20261126");
    let reason = out.reason.unwrap();
    assert!(
        reason.contains("no recipe for pipeline `web`") && reason.contains("/ami-pipeline/pipelines/web"),
        "{reason}"
    );
    assert_eq!((gone.num_calls(), sfn.num_calls()), (1, 0));
}

/// A schedule naming a pipeline that opted out starts nothing and makes no EC2 call.
#[tokio::test]
async fn a_scheduled_run_of_a_pipeline_that_opted_out_is_skipped() {
    let recipe = testing::EXAMPLE_RECIPE.replace("\"refresh\": \"when-source-changes\"", "\"refresh\": \"never\"");
    assert_ne!(recipe, testing::EXAMPLE_RECIPE);
    let (param, sfn) = stored_and_started(recipe, Captured::default());
    let calls = ami_testkit::Calls::default();
    let mut deps = deps(&[], &[&param], &[&sfn]);
    deps.ec2 = calls.ec2(&[]);
    let out = handle(&deps, event(SCHEDULED_EVENT)).await.unwrap();
    assert_eq!(out.status, TriggerStatus::Skipped);
    assert!(out.reason.unwrap().contains("refresh: never"));
    assert_eq!((calls.count(), sfn.num_calls()), (0, 0));
}

#[tokio::test]
async fn throttled_start_is_retried_then_succeeds() {
    let sfn = ami_testkit::throttled_once!(json Sfn::start_execution, || {
        StartExecutionOutput::builder()
            .execution_arn("arn:x")
            .start_date(aws_smithy_types_now())
            .build()
            .unwrap()
    });
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
    testing::image_described(testing::base_image())
}

#[tokio::test]
async fn scheduled_run_with_unchanged_base_image_is_skipped() {
    let (newest, base, bp) = (newest_image(BASE_IMAGE), base_images(), base_param());
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, Captured::default());
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
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, captured.clone());
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
    // no image of the pipeline yet (the preflight's look-up of the base image by id is answered by its own rule)
    let none = testing::finds_no_images(mock!(Ec2::describe_images).match_requests(|r| r.image_ids().is_empty()));
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, captured.clone());
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
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, Captured::default());
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
    let (param, sfn) = (recipe_param(recipe), start_execution(Captured::default()));
    let deps = deps_with_keys(&[], &[&param], &[&sfn], kms);
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    assert_eq!(err.error_type(), "AmiPipeline.InvalidInput");
    (err, sfn.num_calls())
}

/// Every region's key is enabled but `region`'s, which `bad` answers: refused naming `field` (the message mentions
/// each of `mentions`) and nothing started. Every key is checked (the preflight lists every problem): each is
/// described once, and the one problem keeps its field.
async fn one_bad_key(region: &str, bad: Rule, field: &str, mentions: &[&str]) {
    let rules: Vec<(&str, Rule)> = ["us-east-1", EU, SYDNEY]
        .into_iter()
        .map(|r| {
            let rule = if r == region {
                bad.clone()
            } else {
                key(KeyManagerType::Customer, KeyState::Enabled)
            };
            (r, rule)
        })
        .collect();
    let refs: Vec<[&Rule; 1]> = rules.iter().map(|(_, rule)| [rule]).collect();
    let keys: Vec<(&str, &[&Rule])> = rules.iter().zip(&refs).map(|((r, _), k)| (*r, &k[..])).collect();
    let (err, started) = refused(&keys, testing::EXAMPLE_RECIPE.into()).await;
    testing::assert_invalid_input(&err, field, mentions);
    let described: Vec<usize> = rules.iter().map(|(_, rule)| rule.num_calls()).collect();
    assert_eq!((described, started), (vec![1, 1, 1], 0));
}

#[tokio::test]
async fn shared_recipe_with_an_aws_managed_key_in_a_copy_region_starts_nothing() {
    let aws = key(KeyManagerType::Aws, KeyState::Enabled);
    let field = "recipe.distribution.kms_key_ids.eu-west-1";
    one_bad_key(EU, aws, field, &["AWS managed", "customer-managed"]).await;
}

#[tokio::test]
async fn disabled_key_starts_nothing() {
    let disabled = key(KeyManagerType::Customer, KeyState::Disabled);
    let field = "recipe.distribution.kms_key_ids.ap-southeast-2";
    one_bad_key(SYDNEY, disabled, field, &["Disabled", "enable it"]).await;
}

#[tokio::test]
async fn missing_home_key_starts_nothing() {
    let field = "recipe.image.kms_key_id";
    one_bad_key("us-east-1", key_not_found(), field, &["does not exist in `us-east-1`"]).await;
}

/// Problems in several regions come back in one error, each with its region and field, and nothing starts.
#[tokio::test]
async fn every_missing_key_of_every_region_is_listed_in_one_error() {
    let (home, eu) = (key_not_found(), key_not_found());
    let sydney = key(KeyManagerType::Customer, KeyState::Enabled);
    let keys: &[(&str, &[&Rule])] = &[("us-east-1", &[&home]), (EU, &[&eu]), (SYDNEY, &[&sydney])];
    let (err, started) = refused(keys, testing::EXAMPLE_RECIPE.into()).await;
    testing::assert_invalid_input(
        &err,
        "recipe",
        &[
            "2 problems",
            "[us-east-1] recipe.image.kms_key_id",
            "[eu-west-1] recipe.distribution.kms_key_ids.eu-west-1",
        ],
    );
    assert_eq!(started, 0);
}

#[tokio::test]
async fn key_arn_of_another_region_is_refused_without_a_call() {
    let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let recipe = testing::EXAMPLE_RECIPE.replace(
        "\"eu-west-1\": \"alias/ami-pipeline-images\"",
        &format!("\"eu-west-1\": \"{arn}\""),
    );
    assert_ne!(recipe, testing::EXAMPLE_RECIPE);
    let (ok, sydney) = (
        key(KeyManagerType::Customer, KeyState::Enabled),
        key(KeyManagerType::Customer, KeyState::Enabled),
    );
    let (err, started) = refused(&[("us-east-1", &[&ok]), (SYDNEY, &[&sydney])], recipe).await;
    testing::assert_invalid_input(
        &err,
        "recipe.distribution.kms_key_ids.eu-west-1",
        &["a key in `us-east-1`"],
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
    let (param, sfn) = (recipe_param(private.clone()), start_execution(Captured::default()));
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
    testing::assert_invalid_input(&err, "recipe.image.kms_key_id", &["PendingDeletion"]);
    assert_eq!(started, 0);
}

/// The default key needs no check on a private image (it always exists and cannot be disabled), and the trigger's
/// role may not describe it: no KMS call at all.
#[tokio::test]
async fn private_recipe_on_the_default_key_makes_no_kms_call() {
    let private = testing::EXAMPLE_RECIPE
        .replace("\"accounts\": [\"111122223333\", \"444455556666\"]", "\"accounts\": []")
        .replace(KEY, "alias/aws/ebs");
    let (param, sfn) = (recipe_param(private), start_execution(Captured::default()));
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
    recipe["image"].as_object_mut().unwrap().remove("boot_mode"); // an instance-store image boots legacy BIOS
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
    let (param, sfn) = (recipe_param(recipe.to_string()), start_execution(Captured::default()));
    let deps = deps(&[&types], &[&param], &[&sfn]);
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    testing::assert_invalid_input(&err, "recipe.test.instance_type", &[]);
    assert_eq!((types.num_calls(), sfn.num_calls()), (1, 0));
}

/// The preflight reports a missing key, an unknown subnet and a launch the role may not make in ONE error, each with
/// its region and field, and starts nothing.
#[tokio::test]
async fn preflight_lists_a_missing_key_an_unknown_subnet_and_a_refused_launch_in_one_error() {
    use aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput;
    let no_subnet = mock!(Ec2::describe_subnets).then_output(|| DescribeSubnetsOutput::builder().build());
    let denied = mock!(Ec2::run_instances)
        .match_requests(|r| r.dry_run() == Some(true))
        .sequence()
        .http_status(403, Some(testing::ec2_error_body("UnauthorizedOperation")))
        .build();
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, Captured::default());
    let (missing, ok) = (key_not_found(), key(KeyManagerType::Customer, KeyState::Enabled));
    let sydney = key(KeyManagerType::Customer, KeyState::Enabled);
    let deps = deps_with_keys(
        &[&no_subnet, &denied],
        &[&param],
        &[&sfn],
        &[("us-east-1", &[&ok]), (EU, &[&missing]), (SYDNEY, &[&sydney])],
    );
    let err = handle(&deps, event(RELEASE_EVENT)).await.unwrap_err();
    testing::assert_invalid_input(
        &err,
        "recipe",
        &[
            "3 problems",
            "[eu-west-1] recipe.distribution.kms_key_ids.eu-west-1",
            "[us-east-1] recipe.build.subnet_id: subnet `subnet-0123456789abcdef0` does not exist",
            "[us-east-1] recipe.build: the pipeline may not launch the builder",
        ],
    );
    assert_eq!((denied.num_calls(), sfn.num_calls()), (1, 0));
}

/// `{"preflight": true, "pipeline": ...}` runs the checks on the stored recipe and starts nothing.
#[tokio::test]
async fn preflight_mode_reports_what_it_checked_and_starts_nothing() {
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, Captured::default());
    let deps = deps(&[], &[&param], &[&sfn]);
    let ev = json!({"preflight": true, "pipeline": "web"});
    let pipeline = preflight::requested(&ev).unwrap().unwrap();
    let report = preflight::run(&deps, &pipeline).await.unwrap();
    assert_eq!(report["status"], "preflight-passed");
    assert_eq!(report["regions"], json!(["us-east-1", "eu-west-1", "ap-southeast-2"]));
    let checked = report["checked"].as_array().unwrap();
    assert!(
        checked.iter().any(|c| c == "us-east-1 RunInstances DryRun (builder)"),
        "{checked:?}"
    );
    assert_eq!(sfn.num_calls(), 0);
    assert!(preflight::requested(&event(RELEASE_EVENT)).is_none());
    assert!(
        preflight::requested(&json!({"preflight": true, "pipeline": "../x"}))
            .unwrap()
            .is_err()
    );
}

/// A scheduled day whose run failed is rerun the same way when the schedule fires again: `<pipeline>-s-<day>-a2`.
#[tokio::test]
async fn a_failed_scheduled_day_is_rerun_as_its_next_attempt() {
    let (starts, describes) = (Captured::default(), Captured::default());
    let day: Value = event(SCHEDULED_EVENT);
    let parsed = ami_core::model::event::parse(day.clone()).unwrap();
    let ami_core::model::event::TriggerEvent::Schedule { day: yyyymmdd, .. } = parsed else {
        panic!("a schedule event")
    };
    let name = naming::scheduled_execution_name("web", &yyyymmdd);
    let sfn = rerun_of(name.clone(), ExecutionStatus::Aborted, &starts, &describes);
    // no image of the pipeline yet, nothing kept (the preflight's look-up of the base image has its own rule)
    let none = testing::finds_no_images(mock!(Ec2::describe_images).match_requests(|r| r.image_ids().is_empty()));
    let param = recipe_param(testing::EXAMPLE_RECIPE.into());
    let deps = deps(&[&none], &[&param], &sfn.each_ref());
    let out = handle(&deps, day).await.unwrap();
    assert_eq!(out.status, TriggerStatus::Rerun, "{out:?}");
    assert_eq!(out.execution_name, format!("{name}-a2"));
    assert!(out.reason.unwrap().contains("ABORTED"));
    let names: Vec<String> = starts.all().iter().map(|r| r.name().unwrap().to_string()).collect();
    assert_eq!(names, [name.clone(), format!("{name}-a2")]);
}

/// Issue 13: a scheduled run rebuilds the newest image's release with the artifact recorded on it, and refuses a
/// script that needs `{{artifact}}` when none is known.
mod artifact {
    use super::*;

    fn newest_with(artifact: Option<&'static str>) -> Rule {
        let mut image = Image::builder()
            .image_id("ami-0ddddddddddddddd1")
            .creation_date("2026-11-25T00:00:00.000Z")
            .tags(Tag::builder().key(tags::RELEASE).value("1.3.9").build())
            .tags(
                Tag::builder()
                    .key(tags::SOURCE_IMAGE)
                    .value("ami-0aaaaaaaaaaaaaa00")
                    .build(),
            );
        if let Some(a) = artifact {
            image = image.tags(Tag::builder().key(tags::ARTIFACT).value(a).build());
        }
        let image = image.build();
        mock!(Ec2::describe_images)
            .match_requests(|r| r.owners() == ["self"])
            .then_output(move || DescribeImagesOutput::builder().images(image.clone()).build())
    }

    fn recipe_using_the_artifact() -> String {
        let mut r: Value = serde_json::from_str(testing::EXAMPLE_RECIPE).unwrap();
        r["build"]["script"] = json!("curl -fsS -o /tmp/app.tgz '{{artifact}}'\ntar -xzf /tmp/app.tgz -C /opt\n");
        r.to_string()
    }

    #[tokio::test]
    async fn a_scheduled_run_reuses_the_artifact_recorded_on_the_newest_image() {
        let captured = Captured::default();
        let (newest, base, bp) = (
            newest_with(Some("s3://releases/web-1.3.9.tar.gz")),
            base_images(),
            base_param(),
        );
        let (param, sfn) = stored_and_started(recipe_using_the_artifact(), captured.clone());
        let deps = deps(&[&newest, &base], &[&param, &bp], &[&sfn]);
        let out = handle(&deps, event(SCHEDULED_EVENT)).await.unwrap();
        assert_eq!(out.status, TriggerStatus::Started);
        let input: Value = serde_json::from_str(captured.only().input().unwrap()).unwrap();
        assert_eq!(input["run"]["release"]["artifact"], "s3://releases/web-1.3.9.tar.gz");
    }

    #[tokio::test]
    async fn a_script_that_needs_an_unknown_artifact_is_refused_and_nothing_starts() {
        let (newest, base, bp) = (newest_with(None), base_images(), base_param());
        let (param, sfn) = stored_and_started(recipe_using_the_artifact(), Captured::default());
        let deps = deps(&[&newest, &base], &[&param, &bp], &[&sfn]);
        let err = handle(&deps, event(SCHEDULED_EVENT)).await.unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.InvalidInput");
        let text = err.to_string();
        assert!(
            text.contains("recipe.build.script") && text.contains("{{artifact}}"),
            "{text}"
        );
        assert!(text.contains("1.3.9"), "{text}");
        assert_eq!(sfn.num_calls(), 0);
    }

    #[test]
    fn releases_record_their_artifact_on_what_they_make_when_it_fits_a_tag() {
        let mut run = testing::run();
        run.release.artifact = Some("s3://releases/web-1.4.0.tar.gz".into());
        let t = tags::standard(&testing::execution(), &run, tags::Role::Image);
        assert_eq!(tags::get(&t, tags::ARTIFACT), Some("s3://releases/web-1.4.0.tar.gz"));
        run.release.artifact = Some(format!("s3://releases/{}", "a".repeat(300)));
        let t = tags::standard(&testing::execution(), &run, tags::Role::Image);
        assert_eq!(tags::get(&t, tags::ARTIFACT), None, "never a cut URL");
    }
}

mod nightly_refresh;
mod publish_targets;
