//! Instance-store (S3-backed) images: where RegisterImage finds the manifest, and which instance types can boot
//! one.

use crate::error::{Error, Result, aws_code};

/// The recipe field that names the manifest.
pub const MANIFEST_FIELD: &str = "recipe.image.s3_manifest";

const MANIFEST_SUFFIX: &str = ".manifest.xml";

/// RegisterImage's `ImageLocation` for the recipe's `image.s3_manifest`. The recipe says `s3://bucket/key`, as
/// `ec2-upload-bundle` and the S3 tools do; RegisterImage wants "the full path to your AMI manifest in Amazon S3
/// storage" written `bucket/path/image.manifest.xml`, without the scheme (RegisterImage API reference and its CLI
/// example, `amzn-s3-demo-bucket/myimage/image.manifest.xml`): an `s3://` URL is not a path EC2 can read, and the
/// call fails (`InvalidManifest`).
///
/// Accepts exactly `s3://<bucket>/<key>.manifest.xml`: a bucket name as S3 allows it (3-63 lowercase letters,
/// digits, `.` and `-`, starting and ending with a letter or digit) and a key ending in `.manifest.xml` (the name
/// `ec2-bundle-vol` gives the manifest). The error names the field and the form.
pub fn image_location(s3_manifest: &str) -> Result<String> {
    let invalid = |why: &str| {
        Error::invalid(
            MANIFEST_FIELD,
            format!(
                "{why}: write it as `s3://bucket/path/image.manifest.xml` (the manifest ec2-upload-bundle uploaded)"
            ),
        )
    };
    let rest = s3_manifest
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("must be an `s3://` URL"))?;
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| invalid("names no object in the bucket"))?;
    if !is_bucket_name(bucket) {
        return Err(invalid(&format!("`{bucket}` is not an S3 bucket name")));
    }
    if key.starts_with('/') || key.len() <= MANIFEST_SUFFIX.len() || !key.ends_with(MANIFEST_SUFFIX) {
        return Err(invalid("the key must name the bundle's `.manifest.xml`"));
    }
    if key.chars().any(|c| c.is_control() || c.is_whitespace()) || key.len() > 1024 {
        return Err(invalid(
            "the key has spaces or control characters, or is longer than 1024 bytes",
        ));
    }
    Ok(format!("{bucket}/{key}"))
}

/// S3 bucket naming rules (general purpose buckets): 3-63 characters of lowercase letters, digits, `.` and `-`,
/// beginning and ending with a letter or digit, no `..`.
fn is_bucket_name(b: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(b.chars().next())
        && edge(b.chars().last())
        && !b.contains("..")
}

/// For an instance-store recipe whose image is tested: checks the test instance type (the build's when the test
/// names none) with [`check_instance_type`], naming the field it came from. Nothing to check otherwise.
pub async fn check_test_instance_type(ec2: &aws_sdk_ec2::Client, recipe: &crate::recipe::Recipe) -> Result<()> {
    if recipe.image.root_device_type != crate::recipe::RootDeviceType::InstanceStore || !recipe.test.enabled {
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
        Err(e) => return Err(crate::error::from_sdk("DescribeInstanceTypes", e)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_url_becomes_bucket_slash_key() {
        assert_eq!(
            image_location("s3://my-bundles/web/1.4.0/image.manifest.xml").unwrap(),
            "my-bundles/web/1.4.0/image.manifest.xml"
        );
        assert_eq!(
            image_location("s3://a.b-c/x.manifest.xml").unwrap(),
            "a.b-c/x.manifest.xml"
        );
    }

    #[test]
    fn anything_but_an_s3_url_of_a_manifest_is_refused_naming_the_field() {
        for bad in [
            "my-bundles/image.manifest.xml",
            "https://my-bundles.s3.amazonaws.com/image.manifest.xml",
            "s3://my-bundles",
            "s3://my-bundles/",
            "s3://my-bundles/image.tar.gz",
            "s3://my-bundles/.manifest.xml",
            "s3://my-bundles//image.manifest.xml",
            "s3://My_Bundles/image.manifest.xml",
            "s3://ab/image.manifest.xml",
            "s3://-bundles/image.manifest.xml",
            "s3://bundles./image.manifest.xml",
            "s3://bun..dles/image.manifest.xml",
            "s3://bundles/my image.manifest.xml",
            "S3://bundles/image.manifest.xml",
        ] {
            let err = image_location(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { field, .. } if field == MANIFEST_FIELD),
                "{bad}: {err}"
            );
            assert!(
                err.to_string().contains("s3://bucket/path/image.manifest.xml"),
                "{bad}: {err}"
            );
        }
    }

    /// The recipe keeps its `s3://` form and validation takes exactly that form (it once took anything containing
    /// `.s3`).
    #[test]
    fn recipe_validation_takes_the_s3_url_of_a_manifest_only() {
        let with = |manifest: &str| {
            let mut v: serde_json::Value =
                serde_json::from_str(include_str!("../../../infra/recipes/al2023-web.json")).unwrap();
            v["image"]["root_device_type"] = "instance-store".into();
            v["image"]["s3_manifest"] = manifest.into();
            crate::recipe::Recipe::from_json(&v.to_string())
        };
        let ok = with("s3://my-bundles/web/image.manifest.xml").unwrap();
        assert_eq!(
            ok.image.s3_manifest.as_deref(),
            Some("s3://my-bundles/web/image.manifest.xml")
        );
        for bad in [
            "https://my-bundles.s3.amazonaws.com/image.manifest.xml",
            "s3://my-bundles/image.img",
        ] {
            let err = with(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { field, .. } if field == MANIFEST_FIELD),
                "{bad}: {err}"
            );
        }
    }
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
        let err = check_instance_type(&client(&ebs_only), "t3.small", "recipe.test.instance_type")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "recipe.test.instance_type"),
            "{err}"
        );
        assert!(err.to_string().contains("supported root device types: ebs"), "{err}");

        let unknown = mock!(aws_sdk_ec2::Client::describe_instance_types)
            .sequence()
            .http_status(400, Some(crate::testing::ec2_error_body("InvalidInstanceType")))
            .build();
        let err = check_instance_type(&client(&unknown), "t9.huge", "recipe.build.instance_type")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "recipe.build.instance_type"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn other_failures_are_aws_errors_not_a_verdict() {
        let denied = mock!(aws_sdk_ec2::Client::describe_instance_types)
            .sequence()
            .http_status(403, Some(crate::testing::ec2_error_body("UnauthorizedOperation")))
            .build();
        let err = check_instance_type(&client(&denied), "m3.medium", "recipe.test.instance_type")
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.AwsError", "{err}");
    }
}
