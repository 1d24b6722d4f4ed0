//! The preflight's checks of publish's targets (issue 21 item 5): one test per problem, each asserting the request
//! that found it, then all of them in one error.

use aws_sdk_ssm::operation::get_parameter::GetParameterInput;

use super::*;

/// The example recipe (`web`) with its `publish` section replaced.
fn publishing(publish: Value) -> String {
    let mut r: Value = serde_json::from_str(testing::EXAMPLE_RECIPE).unwrap();
    r["publish"] = publish;
    r.to_string()
}

/// The release of `recipe` refused by the preflight: the error, and the StartExecution calls (0).
async fn refused_release(deps: &Deps, sfn: &Rule) -> Error {
    let err = handle(deps, event(RELEASE_EVENT)).await.unwrap_err();
    assert_eq!(sfn.num_calls(), 0, "nothing started");
    err
}

/// DescribeLaunchTemplates answered with `template`, every request kept in `captured`.
fn described_template(
    captured: &Captured<DescribeLaunchTemplatesInput>,
    template: aws_sdk_ec2::types::LaunchTemplate,
) -> Rule {
    ami_testkit::capturing!(
        Ec2::describe_launch_templates,
        captured.clone(),
        DescribeLaunchTemplatesOutput::builder()
            .launch_templates(template.clone())
            .build()
    )
}

/// GetParameter of `name` answered with a parameter of `data_type`, every request kept in `captured`.
fn parameter_of_type(captured: &Captured<GetParameterInput>, name: &'static str, data_type: &'static str) -> Rule {
    mock!(Ssm::get_parameter)
        .match_requests(testing::capture_if(captured, move |r| r.name() == Some(name)))
        .then_output(move || {
            GetParameterOutput::builder()
                .parameter(
                    Parameter::builder()
                        .name(name)
                        .value("ami-0bbbbbbbbbbbbbbb1")
                        .data_type(data_type)
                        .build(),
                )
                .build()
        })
}

#[tokio::test]
async fn a_launch_template_that_does_not_exist_in_its_region_is_refused_before_anything_starts() {
    let captured: Captured<DescribeLaunchTemplatesInput> = Captured::default();
    let missing = ami_testkit::ec2_error!(
        Ec2::describe_launch_templates,
        "InvalidLaunchTemplateName.NotFoundException",
        match testing::capture_if(&captured, |_| true)
    );
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, Captured::default());
    let deps = deps(&[&missing], &[&param], &[&sfn]);
    let err = refused_release(&deps, &sfn).await;
    testing::assert_invalid_input(
        &err,
        "recipe.publish.launch_templates[0].id_or_name",
        &[
            "launch template `web-servers` does not exist in us-east-1",
            "ami-pipeline:publish=true",
        ],
    );
    let req = captured.only();
    assert_eq!(req.launch_template_names(), ["web-servers"], "looked up by name");
    assert!(req.launch_template_ids().is_empty());
}

#[tokio::test]
async fn a_launch_template_without_the_opt_in_tag_is_refused_in_its_own_region() {
    let publish = json!({"launch_templates": [{"id_or_name": "lt-0123456789abcdef0", "region": EU}]});
    let captured: Captured<DescribeLaunchTemplatesInput> = Captured::default();
    let not_opted_in = described_template(&captured, launch_template("lt-0123456789abcdef0", "web", "false"));
    let (param, sfn) = stored_and_started(publishing(publish), Captured::default());
    let ok = key(KeyManagerType::Customer, KeyState::Enabled);
    let keys: &[(&str, &[&Rule])] = &[("us-east-1", &[&ok]), (EU, &[&ok]), (SYDNEY, &[&ok])];
    let deps = deps_in_regions(&[], &[&param], &[&sfn], keys, &[(EU, &[&not_opted_in], &[])]);
    let err = refused_release(&deps, &sfn).await;
    testing::assert_invalid_input(
        &err,
        "recipe.publish.launch_templates[0].id_or_name",
        &[
            "(lt-0123456789abcdef0) in eu-west-1 is not tagged ami-pipeline:publish=true",
            "aws ec2 create-tags --region eu-west-1 --resources lt-0123456789abcdef0",
        ],
    );
    let req = captured.only();
    assert_eq!(
        req.launch_template_ids(),
        ["lt-0123456789abcdef0"],
        "looked up by id, in eu-west-1"
    );
    assert!(req.launch_template_names().is_empty());
}

/// Publish points launch templates only where the image is: a template in another region cannot be published to,
/// and is refused without a call (no EC2 rule answers us-west-2: a call would panic).
#[tokio::test]
async fn a_launch_template_in_a_region_the_image_is_not_copied_to_is_refused_without_a_call() {
    let publish = json!({"launch_templates": [{"id_or_name": "web-servers", "region": "us-west-2"}]});
    let (param, sfn) = stored_and_started(publishing(publish), Captured::default());
    let deps = deps(&[], &[&param], &[&sfn]);
    let err = refused_release(&deps, &sfn).await;
    testing::assert_invalid_input(
        &err,
        "recipe.publish.launch_templates[0].region",
        &[
            "not copied to `us-west-2`",
            "add `us-west-2` to distribution.regions",
            "(in us-west-2)",
        ],
    );
}

/// A name outside the stack's PublishParameterPrefix is refused by its name alone: no GetParameter of it (no SSM
/// rule answers it: a call would panic).
#[tokio::test]
async fn a_parameter_outside_the_publish_prefix_is_refused_without_a_call() {
    let (param, sfn) = stored_and_started(
        publishing(json!({"ssm_parameters": ["/team/web/latest"]})),
        Captured::default(),
    );
    let deps = deps(&[], &[&param], &[&sfn]);
    let err = refused_release(&deps, &sfn).await;
    testing::assert_invalid_input(
        &err,
        "recipe.publish.ssm_parameters[0]",
        &[
            "`/team/web/latest` is not under the stack's PublishParameterPrefix `/images`",
            "e.g. `/images/team/web/latest`",
        ],
    );
}

/// A parameter that exists as another data type can never take the image; one of `aws:ec2:image` can, and an
/// absent one is created: each region of the run is asked, by the parameter's name.
#[tokio::test]
async fn a_parameter_of_another_data_type_in_one_region_is_refused_there() {
    let (home, eu): (Captured<GetParameterInput>, Captured<GetParameterInput>) = Default::default();
    let image_type = parameter_of_type(&home, "/images/web/latest", "aws:ec2:image");
    let text = parameter_of_type(&eu, "/images/web/latest", "text");
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, Captured::default());
    let ok = key(KeyManagerType::Customer, KeyState::Enabled);
    let keys: &[(&str, &[&Rule])] = &[("us-east-1", &[&ok]), (EU, &[&ok]), (SYDNEY, &[&ok])];
    let deps = deps_in_regions(&[], &[&param, &image_type], &[&sfn], keys, &[(EU, &[], &[&text])]);
    let err = refused_release(&deps, &sfn).await;
    testing::assert_invalid_input(
        &err,
        "recipe.publish.ssm_parameters[0]",
        &[
            "`/images/web/latest` exists in eu-west-1 with data type `text`",
            "cannot be changed to aws:ec2:image",
            "aws ssm delete-parameter --region eu-west-1 --name /images/web/latest",
        ],
    );
    assert_eq!(home.only().name(), Some("/images/web/latest"));
    assert_eq!(eu.only().name(), Some("/images/web/latest"));
    assert_eq!(
        eu.only().with_decryption(),
        None,
        "the data type is read, never a decrypted value"
    );
}

/// Every publish problem of every region in ONE error, with the key check's, each with its region and field.
#[tokio::test]
async fn every_publish_problem_is_listed_in_the_one_preflight_error() {
    let publish = json!({
        "ssm_parameters": ["/images/web/latest", "/team/web/latest"],
        "launch_templates": [{"id_or_name": "web-servers"}, {"id_or_name": "web-servers", "region": "us-west-2"}]
    });
    let missing = ami_testkit::ec2_error!(
        Ec2::describe_launch_templates,
        "InvalidLaunchTemplateName.NotFoundException"
    );
    let text = parameter_of_type(&Captured::default(), "/images/web/latest", "text");
    let (param, sfn) = stored_and_started(publishing(publish), Captured::default());
    let (ok, gone) = (key(KeyManagerType::Customer, KeyState::Enabled), key_not_found());
    let keys: &[(&str, &[&Rule])] = &[("us-east-1", &[&ok]), (EU, &[&ok]), (SYDNEY, &[&gone])];
    let deps = deps_in_regions(&[&missing], &[&param], &[&sfn], keys, &[(SYDNEY, &[], &[&text])]);
    let err = refused_release(&deps, &sfn).await;
    testing::assert_invalid_input(
        &err,
        "recipe",
        &[
            "5 problems",
            "[ap-southeast-2] recipe.distribution.kms_key_ids.ap-southeast-2",
            "[us-east-1] recipe.publish.launch_templates[0].id_or_name: launch template `web-servers` does not exist",
            "[us-west-2] recipe.publish.launch_templates[1].region",
            "[ap-southeast-2] recipe.publish.ssm_parameters[0]: `/images/web/latest` exists in ap-southeast-2",
            "[us-east-1] recipe.publish.ssm_parameters[1]: `/team/web/latest` is not under",
        ],
    );
}

/// The preflight report names each publish target it checked, where it checked it.
#[tokio::test]
async fn the_preflight_report_lists_the_publish_targets_it_checked_in_each_region() {
    let (param, sfn) = stored_and_started(testing::EXAMPLE_RECIPE, Captured::default());
    let deps = deps(&[], &[&param], &[&sfn]);
    let report = preflight::run(&deps, "web").await.unwrap();
    let checked: Vec<&str> = report["checked"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "us-east-1 recipe.publish.launch_templates[0]",
        "us-east-1 recipe.publish.ssm_parameters[0]",
        "eu-west-1 recipe.publish.ssm_parameters[0]",
        "ap-southeast-2 recipe.publish.ssm_parameters[0]",
    ] {
        assert!(checked.contains(&want), "{want} not in {checked:?}");
    }
}
