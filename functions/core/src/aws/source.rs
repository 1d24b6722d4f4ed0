//! Finding and vetting the base image, before anything is launched.

use aws_sdk_ec2::types::{Filter, Image, ImageState};

use crate::aws::ec2::describe_image;
use crate::aws::error::{Error, Result, SdkResultExt, aws_code, from_sdk};
use crate::model::recipe::{Architecture, BaseImage};
use crate::model::time::unix_seconds;
use crate::validate::check_id;

/// Resolves the recipe's base image and checks it: owner in the allow-list, available, not deprecated, and of
/// the recipe's architecture. Only reads; an untrusted image fails here, before any mutating call.
pub async fn resolve(
    ec2: &aws_sdk_ec2::Client,
    ssm: &aws_sdk_ssm::Client,
    base: &BaseImage,
    arch: Architecture,
    now: i64,
) -> Result<Image> {
    let image = if let Some(id) = &base.id {
        by_id(ec2, id, &base.owners).await?
    } else if let Some(param) = &base.ssm_parameter {
        let id = image_id_from_parameter(ssm, param).await?;
        by_id(ec2, &id, &base.owners).await?
    } else if let Some(pattern) = &base.name_filter {
        newest_by_name(ec2, pattern, &base.owners, arch, now).await?
    } else {
        return Err(Error::invalid(
            "recipe.source.image",
            "give exactly one of `id`, `ssm_parameter`, `name_filter`",
        ));
    };
    vet(&image, &base.owners, arch, now)?;
    Ok(image)
}

async fn image_id_from_parameter(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<String> {
    match ssm.get_parameter().name(name).send().await {
        Ok(out) => {
            let value = out
                .parameter()
                .and_then(|p| p.value())
                .unwrap_or_default()
                .trim()
                .to_string();
            if check_id("ssm", "ami-", &value).is_err() {
                return Err(Error::SourceNotFound(format!(
                    "SSM parameter {name} does not hold an image id"
                )));
            }
            Ok(value)
        }
        Err(e) if aws_code(&e) == Some("ParameterNotFound") => {
            Err(Error::SourceNotFound(format!("SSM parameter {name} does not exist")))
        }
        Err(e) => Err(from_sdk("GetParameter", e)),
    }
}

/// Looks the image up restricted to the trusted owners, so EC2 itself filters; an image that exists but is not
/// returned is untrusted.
async fn by_id(ec2: &aws_sdk_ec2::Client, id: &str, owners: &[String]) -> Result<Image> {
    let trusted = match ec2
        .describe_images()
        .image_ids(id)
        .set_owners(Some(owners.to_vec()))
        .send()
        .await
    {
        Ok(out) => out.images().first().cloned(),
        Err(e) if aws_code(&e) == Some("InvalidAMIID.NotFound") => None,
        Err(e) => return Err(from_sdk("DescribeImages", e)),
    };
    if let Some(image) = trusted {
        return Ok(image);
    }
    match describe_image(ec2, id).await? {
        Some(image) => Err(Error::SourceNotTrusted(format!(
            "image {id} is owned by {} ({}), which is not in recipe.source.image.owners {:?}",
            image.owner_id().unwrap_or("?"),
            image.image_owner_alias().unwrap_or("no alias"),
            owners
        ))),
        None => Err(Error::SourceNotFound(format!(
            "image {id} does not exist or is not visible to this account"
        ))),
    }
}

async fn newest_by_name(
    ec2: &aws_sdk_ec2::Client,
    pattern: &str,
    owners: &[String],
    arch: Architecture,
    now: i64,
) -> Result<Image> {
    let out = ec2
        .describe_images()
        .set_owners(Some(owners.to_vec()))
        .filters(Filter::builder().name("name").values(pattern).build())
        .filters(Filter::builder().name("state").values("available").build())
        .filters(Filter::builder().name("architecture").values(arch.as_str()).build())
        .send()
        .await
        .aws("DescribeImages")?;
    out.images()
        .iter()
        .filter(|i| !is_deprecated(i, now))
        .max_by(|a, b| a.creation_date().cmp(&b.creation_date()))
        .cloned()
        .ok_or_else(|| {
            Error::SourceNotFound(format!(
                "no available {} image named `{pattern}` owned by {owners:?}",
                arch.as_str()
            ))
        })
}

pub fn is_deprecated(image: &Image, now: i64) -> bool {
    image
        .deprecation_time()
        .and_then(unix_seconds)
        .is_some_and(|t| t <= now)
}

/// The checks an image must pass to be built on. `self` can only be checked by EC2 (it filters by owner).
pub fn vet(image: &Image, owners: &[String], arch: Architecture, now: i64) -> Result<()> {
    let id = image.image_id().unwrap_or("?");
    let owner_ok = owners.iter().any(|o| match o.as_str() {
        "self" => true,
        "amazon" | "aws-marketplace" => image.image_owner_alias() == Some(o.as_str()),
        account => image.owner_id() == Some(account),
    });
    if !owner_ok {
        return Err(Error::SourceNotTrusted(format!(
            "image {id} is owned by {}, not by one of {owners:?}",
            image.owner_id().unwrap_or("?")
        )));
    }
    if image.state() != Some(&ImageState::Available) {
        return Err(Error::SourceNotTrusted(format!(
            "image {id} is {}, not available",
            image.state().map(|s| s.as_str()).unwrap_or("in an unknown state")
        )));
    }
    if is_deprecated(image, now) {
        return Err(Error::SourceNotTrusted(format!(
            "image {id} is deprecated since {}",
            image.deprecation_time().unwrap_or("?")
        )));
    }
    let image_arch = image.architecture().map(|a| a.as_str()).unwrap_or("?");
    if image_arch != arch.as_str() {
        return Err(Error::SourceNotTrusted(format!(
            "image {id} is {image_arch}, the recipe builds {}",
            arch.as_str()
        )));
    }
    Ok(())
}
