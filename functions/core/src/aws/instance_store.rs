//! Which instance types can boot an instance-store image, asked of EC2: the SDK side of `model::instance_store`,
//! which it re-exports.

use crate::aws::error::{Error, Result, aws_code, from_sdk};
pub use crate::model::instance_store::*;
use crate::model::recipe::{Recipe, RootDeviceType};

/// For an instance-store recipe whose image is tested: checks the test instance type (the build's when the test
/// names none) with [`check_instance_type`], naming the field it came from. Nothing to check otherwise.
pub async fn check_test_instance_type(ec2: &aws_sdk_ec2::Client, recipe: &Recipe) -> Result<()> {
    if recipe.image.root_device_type != RootDeviceType::InstanceStore || !recipe.test.enabled {
        return Ok(());
    }
    let (instance_type, field) = match (&recipe.test.instance_type, &recipe.build) {
        (Some(t), _) => (t.as_str(), "recipe.test.instance_type"),
        (None, Some(b)) => (b.instance_type.as_str(), "recipe.build.instance_type"),
        (None, None) => {
            return Err(Error::invalid(
                "recipe.test.instance_type",
                "required when there is no `build` section",
            ));
        }
    };
    check_instance_type(ec2, instance_type, field).await
}

/// Checks that `instance_type` can boot an instance-store image: its `SupportedRootDeviceTypes`
/// (DescribeInstanceTypes) includes `instance-store`. "Nitro-based instances support only EBS root volumes"; only
/// some previous-generation types (C1, C3, D2, I2, M1, M2, M3, R3, X1) support an instance store root volume (EC2
/// User Guide, "Root volumes for your Amazon EC2 instances"), and RunInstances refuses the others
/// (`UnsupportedOperation`). `field` names the recipe field the type came from. An unknown type is invalid too.
///
/// Read-only (one DescribeInstanceTypes), so it can run before anything is made.
pub async fn check_instance_type(ec2: &aws_sdk_ec2::Client, instance_type: &str, field: &str) -> Result<()> {
    let out = match ec2
        .describe_instance_types()
        .instance_types(instance_type.into())
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if aws_code(&e) == Some("InvalidInstanceType") => {
            return Err(Error::invalid(
                field,
                format!("`{instance_type}` is not an instance type of this region"),
            ));
        }
        Err(e) => return Err(from_sdk("DescribeInstanceTypes", e)),
    };
    let supported: Vec<&str> = out
        .instance_types()
        .iter()
        .filter(|t| t.instance_type().map(|t| t.as_str()) == Some(instance_type))
        .flat_map(|t| t.supported_root_device_types())
        .map(|d| d.as_str())
        .collect();
    if supported.contains(&"instance-store") {
        return Ok(());
    }
    let has = if supported.is_empty() {
        "none listed".to_string()
    } else {
        supported.join(", ")
    };
    Err(Error::invalid(
        field,
        format!(
            "`{instance_type}` cannot boot an instance-store image (its supported root device types: {has}); use a \
             type whose SupportedRootDeviceTypes include `instance-store`, e.g. m3.medium or c3.large (Nitro types \
             boot only from EBS)"
        ),
    ))
}

/// Against mocked EC2: needs the `testing` feature (on in `cargo test --workspace`; alone:
/// `cargo test -p ami-core --features testing`).
#[cfg(all(test, feature = "testing"))]
mod instance_type_tests {
    use aws_sdk_ec2::operation::describe_instance_types::DescribeInstanceTypesOutput;
    use aws_sdk_ec2::types::{InstanceType, InstanceTypeInfo, RootDeviceType};
    use aws_smithy_mocks::mock;

    use super::*;

    fn info(t: &str, roots: &[RootDeviceType]) -> InstanceTypeInfo {
        InstanceTypeInfo::builder()
            .instance_type(InstanceType::from(t))
            .set_supported_root_device_types(Some(roots.to_vec()))
            .build()
    }

    fn client(rule: &aws_smithy_mocks::Rule) -> aws_sdk_ec2::Client {
        crate::testing::ec2(&[rule])
    }

    /// DescribeInstanceTypes failing with HTTP `status` and the EC2 error `code`.
    fn failing(status: u16, code: &str) -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_ec2::Client::describe_instance_types)
            .sequence()
            .http_status(status, Some(crate::testing::ec2_error_body(code)))
            .build()
    }

    /// The check's error for `instance_type`, named by `field`, with EC2 answering by `rule`.
    async fn refused(rule: &aws_smithy_mocks::Rule, instance_type: &str, field: &str) -> Error {
        check_instance_type(&client(rule), instance_type, field)
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_type_with_an_instance_store_root_passes() {
        let rule = mock!(aws_sdk_ec2::Client::describe_instance_types)
            .match_requests(|r| r.instance_types() == [InstanceType::from("m3.medium")])
            .then_output(|| {
                DescribeInstanceTypesOutput::builder()
                    .instance_types(info("m3.medium", &[RootDeviceType::Ebs, RootDeviceType::InstanceStore]))
                    .build()
            });
        check_instance_type(&client(&rule), "m3.medium", "recipe.test.instance_type")
            .await
            .unwrap();
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn an_ebs_only_or_unknown_type_is_invalid_input_naming_the_field() {
        let ebs_only = mock!(aws_sdk_ec2::Client::describe_instance_types).then_output(|| {
            DescribeInstanceTypesOutput::builder()
                .instance_types(info("t3.small", &[RootDeviceType::Ebs]))
                .build()
        });
        let err = refused(&ebs_only, "t3.small", "recipe.test.instance_type").await;
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "recipe.test.instance_type"),
            "{err}"
        );
        assert!(err.to_string().contains("supported root device types: ebs"), "{err}");

        let unknown = failing(400, "InvalidInstanceType");
        let err = refused(&unknown, "t9.huge", "recipe.build.instance_type").await;
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "recipe.build.instance_type"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn other_failures_are_aws_errors_not_a_verdict() {
        let err = refused(
            &failing(403, "UnauthorizedOperation"),
            "m3.medium",
            "recipe.test.instance_type",
        )
        .await;
        assert_eq!(err.error_type(), "AmiPipeline.AwsError", "{err}");
    }
}
