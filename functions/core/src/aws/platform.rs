//! The SDK side of `model::platform` (which it re-exports): the origin read from a described image or instance,
//! and the made image checked against its plan.

use aws_sdk_ec2::types::{Image, Instance};

use crate::model::error::{Error, Result};
pub use crate::model::platform::*;

impl Origin {
    pub fn of_image(image: &Image) -> Origin {
        Origin {
            what: format!("base image {}", image.image_id().unwrap_or("?")),
            platform_details: image.platform_details().unwrap_or_default().to_string(),
            usage_operation: image.usage_operation().unwrap_or_default().to_string(),
            boot_mode: image.boot_mode().map(|b| b.as_str().to_string()),
            current_boot_mode: None,
            tpm_support: image.tpm_support().is_some_and(|t| t.as_str() == "v2.0"),
        }
    }

    /// An instance reports the billing information and boot mode of the AMI it was launched from (DescribeInstances
    /// `PlatformDetails`, `UsageOperation`, `BootMode`: "the boot mode that was specified by the AMI").
    pub fn of_instance(instance: &Instance) -> Origin {
        Origin {
            what: format!("instance {}", instance.instance_id().unwrap_or("?")),
            platform_details: instance.platform_details().unwrap_or_default().to_string(),
            usage_operation: instance.usage_operation().unwrap_or_default().to_string(),
            boot_mode: instance.boot_mode().map(|b| b.as_str().to_string()),
            current_boot_mode: instance.current_instance_boot_mode().map(|b| b.as_str().to_string()),
            tpm_support: instance.tpm_support() == Some("v2.0"),
        }
    }
}

/// Checks an available image against its plan (that CreateImage keeps the instance's NitroTPM support is not
/// documented, so it is checked here, not assumed); a mismatch is `PlatformMismatch` (the image is removed by
/// cleanup, never tested or shared).
pub fn check_made(image: &Image, plan: &ImagePlan) -> Result<()> {
    let id = image.image_id().unwrap_or("?");
    let details = image.platform_details().unwrap_or_default();
    let operation = image.usage_operation().unwrap_or_default();
    if details != plan.platform_details || operation != plan.usage_operation {
        return Err(Error::PlatformMismatch(format!(
            "image {id} is billed as `{details}` ({operation}), but it was built from `{}` ({}): its licensing \
             information was lost; the image is discarded (RegisterImage derives billing from snapshot metadata \
             that may be missing: make it with CreateImage)",
            plan.platform_details, plan.usage_operation
        )));
    }
    let mode = image.boot_mode().map(|b| b.as_str());
    if plan.boot_mode.is_some() && mode != plan.boot_mode.as_deref() {
        return Err(Error::PlatformMismatch(format!(
            "image {id} boots `{}`, not `{}` as planned",
            mode.unwrap_or("(EC2's default)"),
            plan.boot_mode.as_deref().unwrap_or_default()
        )));
    }
    let tpm = image.tpm_support().is_some_and(|t| t.as_str() == "v2.0");
    if plan.tpm_support && !tpm {
        return Err(Error::PlatformMismatch(format!(
            "image {id} has no NitroTPM support, which recipe.image.tpm_support asks for"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{BootModeValues, TpmSupportValues};

    use super::*;
    use crate::model::platform::tests::{X86, origin, spec};
    use crate::model::recipe::BootMode;

    fn made(details: &str, operation: &str, mode: Option<&str>, tpm: bool) -> Image {
        Image::builder()
            .image_id("ami-new")
            .platform_details(details)
            .usage_operation(operation)
            .set_boot_mode(mode.map(BootModeValues::from))
            .set_tpm_support(tpm.then_some(TpmSupportValues::V20))
            .build()
    }

    #[test]
    fn a_made_image_must_keep_billing_boot_mode_and_tpm() {
        let windows = plan(
            &origin("Windows", "RunInstances:0002", Some("uefi"), true),
            &spec(Some(BootMode::Uefi), true, X86),
        )
        .unwrap();
        assert!(check_made(&made("Windows", "RunInstances:0002", Some("uefi"), true), &windows).is_ok());
        for wrong in [
            made(LINUX_UNIX, RUN_INSTANCES, Some("uefi"), true),
            made("", "", Some("uefi"), true),
            made("Windows", "RunInstances:0002", Some("legacy-bios"), true),
            made("Windows", "RunInstances:0002", Some("uefi"), false),
        ] {
            let err = check_made(&wrong, &windows).unwrap_err();
            assert_eq!(err.error_type(), "AmiPipeline.PlatformMismatch", "{err}");
        }
        let linux = plan(&origin(LINUX_UNIX, RUN_INSTANCES, None, false), &spec(None, false, X86)).unwrap();
        assert!(check_made(&made(LINUX_UNIX, RUN_INSTANCES, None, false), &linux).is_ok());
        // NitroTPM not asked for: an image without it is fine.
        let no_tpm = plan(
            &origin("Windows", "RunInstances:0002", Some("uefi"), true),
            &spec(None, false, X86),
        )
        .unwrap();
        assert!(check_made(&made("Windows", "RunInstances:0002", Some("uefi"), false), &no_tpm).is_ok());
    }
}
