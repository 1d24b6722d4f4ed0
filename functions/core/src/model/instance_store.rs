//! Instance-store (S3-backed) images: where RegisterImage finds the manifest (which instance types can boot one is
//! `aws::instance_store`'s question to EC2).

use crate::model::error::{Error, Result};

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
}
