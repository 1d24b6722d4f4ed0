//! How the image is made, and what it must turn out to be: decided from the billing and boot properties of what
//! it is built from (the base image before the builder is launched; the builder or source instance after).
//!
//! Billing: "AMIs for Windows, RedHat, SUSE, and SQL Server require correct licensing information ... When
//! creating an AMI from a snapshot, the RegisterImage operation derives the correct billing information from the
//! snapshot's metadata, but this requires the appropriate metadata to be present ... discard the AMI and instead
//! create the AMI from an instance" (RegisterImage, EC2 API reference). So only plain Linux/UNIX is registered
//! from snapshots; everything else is made with CreateImage, as Packer and Image Builder do.
//!
//! Boot mode: "The operating system contained in the AMI must be configured to support the specified boot mode"
//! (RegisterImage BootMode); with none given, EC2 boots Intel/AMD in legacy BIOS and Graviton in UEFI (EC2 User
//! Guide, "Instance launch behavior with Amazon EC2 boot modes"). CreateImage keeps the instance's boot mode and
//! can only narrow it to `uefi` (CreateImage `BootModeOverride`, "only if the current-instance-boot-mode of the
//! source instance is uefi"); it takes no TpmSupport.

use serde::{Deserialize, Serialize};

use crate::model::error::{Error, Result};
use crate::model::recipe::{Architecture, BootMode, ImageSpec, RootDeviceType};

/// `PlatformDetails` and `UsageOperation` of plain Linux/UNIX (EC2 User Guide, "AMI billing information fields").
pub const LINUX_UNIX: &str = "Linux/UNIX";
pub const RUN_INSTANCES: &str = "RunInstances";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// CreateSnapshots of the stopped instance, then RegisterImage (plain Linux/UNIX only).
    Snapshots,
    /// CreateImage from the stopped instance: keeps the instance's billing information.
    CreateImage,
}

/// What the new image is made with and must report once available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePlan {
    pub method: Method,
    /// The origin's billing information; the new image must report the same (empty when the origin had none).
    pub platform_details: String,
    pub usage_operation: String,
    /// The boot mode to give the image (RegisterImage `BootMode`, CreateImage `BootModeOverride`); `None`: the
    /// origin's, which has none either (EC2's default for the architecture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<String>,
    /// Set only when CreateImage must narrow `uefi-preferred` to `uefi`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub boot_mode_override: bool,
    /// NitroTPM 2.0 on the image.
    #[serde(default)]
    pub tpm_support: bool,
}

/// The properties of what the image is built from that decide the plan (read from EC2 by `aws::platform`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// `image ami-...` or `instance i-...`, for messages.
    pub what: String,
    pub platform_details: String,
    pub usage_operation: String,
    pub boot_mode: Option<String>,
    /// The mode an instance really booted in (DescribeInstances `CurrentInstanceBootMode`); none for an image.
    pub current_boot_mode: Option<String>,
    pub tpm_support: bool,
}

impl Origin {
    fn is_plain_linux(&self) -> bool {
        self.platform_details == LINUX_UNIX && self.usage_operation == RUN_INSTANCES
    }

    /// The boot mode the origin's OS boots in: its declared one, else EC2's default for the architecture.
    fn effective_boot_mode(&self, arch: Architecture) -> &str {
        self.boot_mode.as_deref().unwrap_or(match arch {
            Architecture::X86_64 => BootMode::LegacyBios.as_str(),
            Architecture::Arm64 => BootMode::Uefi.as_str(),
        })
    }
}

/// Decides the method and checks that the recipe's boot mode and NitroTPM can be had from this origin. Refusals
/// are `InvalidInput` naming the recipe field: they are found before the builder is launched.
pub fn plan(origin: &Origin, image: &ImageSpec) -> Result<ImagePlan> {
    let method = if origin.is_plain_linux() {
        Method::Snapshots
    } else {
        Method::CreateImage
    };
    let base = origin.effective_boot_mode(image.architecture);
    if image.root_device_type == RootDeviceType::InstanceStore {
        return instance_store_plan(origin, image, method, base);
    }
    let billing = if origin.platform_details.is_empty() {
        "no billing information".to_string()
    } else {
        format!("{} ({})", origin.platform_details, origin.usage_operation)
    };
    let mut boot_mode_override = false;
    let boot_mode = match image.boot_mode.map(BootMode::as_str) {
        None => origin.boot_mode.clone(),
        Some(asked) if asked == base => Some(asked.to_string()),
        // An OS that boots both ways may be registered as either, or narrowed to one.
        Some(asked) if base == BootMode::UefiPreferred.as_str() => {
            if method == Method::CreateImage {
                if asked != BootMode::Uefi.as_str() {
                    return Err(Error::invalid(
                        "recipe.image.boot_mode",
                        format!(
                            "{} is made with CreateImage ({billing}), which keeps the base's boot mode `{base}` and \
                             can only narrow it to `uefi`: use `uefi` or remove boot_mode",
                            origin.what
                        ),
                    ));
                }
                // "You can specify this parameter only if the current-instance-boot-mode of the source instance
                // is uefi" (CreateImage BootModeOverride): a uefi-preferred AMI on a type without UEFI boots BIOS.
                if let Some(current) = origin.current_boot_mode.as_deref().filter(|m| *m != "uefi") {
                    return Err(Error::invalid(
                        "recipe.image.boot_mode",
                        format!(
                            "{} booted `{current}`, and CreateImage can narrow to `uefi` only an instance booted \
                             in UEFI: use an instance type that supports UEFI, or remove boot_mode",
                            origin.what
                        ),
                    ));
                }
                boot_mode_override = true;
            }
            Some(asked.to_string())
        }
        Some(asked) => {
            return Err(Error::invalid(
                "recipe.image.boot_mode",
                format!(
                    "{} boots `{base}`, so an image of it cannot boot `{asked}` (the boot mode of an AMI does not \
                     change its OS): remove boot_mode to keep the base's, or pick a base image that supports \
                     `{asked}`",
                    origin.what
                ),
            ));
        }
    };
    if image.tpm_support {
        let uefi = matches!(boot_mode.as_deref(), Some("uefi" | "uefi-preferred"));
        if !uefi {
            return Err(Error::invalid(
                "recipe.image.tpm_support",
                format!("NitroTPM needs a UEFI boot mode, and {} boots `{base}`", origin.what),
            ));
        }
        if method == Method::CreateImage && !origin.tpm_support {
            return Err(Error::invalid(
                "recipe.image.tpm_support",
                format!(
                    "{} is made with CreateImage ({billing}), which takes no TpmSupport, and it has no NitroTPM \
                     support: pick a TPM-enabled base (for Windows Server 2022, the `TPM-Windows_Server-2022-*` \
                     images) or set tpm_support to false",
                    origin.what
                ),
            ));
        }
    }
    Ok(ImagePlan {
        method,
        platform_details: origin.platform_details.clone(),
        usage_operation: origin.usage_operation.clone(),
        boot_mode,
        boot_mode_override,
        tpm_support: image.tpm_support,
    })
}

/// An instance-store image boots only where an instance-store root does: previous-generation Xen types ("Nitro-based
/// instances support only EBS root volumes", EC2 User Guide, "Root volumes for your Amazon EC2 instances"), none of
/// which boots UEFI (only Nitro types do: "Requirements to launch an EC2 instance in UEFI boot mode"), and NitroTPM
/// needs both. So it is registered `legacy-bios` without NitroTPM (and without the builder's UEFI variable store),
/// whatever its base declares; a base whose OS boots only UEFI cannot make one. Validation refuses a recipe asking
/// otherwise; this refuses it again for a recipe frozen before that rule.
fn instance_store_plan(origin: &Origin, image: &ImageSpec, method: Method, base: &str) -> Result<ImagePlan> {
    let why = "an instance-store root boots only on previous-generation Xen types, which boot legacy BIOS only";
    if let Some(asked) = image.boot_mode.filter(|m| *m != BootMode::LegacyBios) {
        return Err(Error::invalid(
            "recipe.image.boot_mode",
            format!("`{}`: {why}; remove boot_mode or use `legacy-bios`", asked.as_str()),
        ));
    }
    if image.tpm_support {
        return Err(Error::invalid(
            "recipe.image.tpm_support",
            format!("NitroTPM needs a Nitro type booting UEFI, and {why}; set tpm_support to false"),
        ));
    }
    if base == BootMode::Uefi.as_str() {
        return Err(Error::invalid(
            "recipe.image.root_device_type",
            format!(
                "{} boots only UEFI, and {why}: build an EBS-backed image of it, or pick a base that boots legacy \
                 BIOS",
                origin.what
            ),
        ));
    }
    Ok(ImagePlan {
        method,
        platform_details: origin.platform_details.clone(),
        usage_operation: origin.usage_operation.clone(),
        boot_mode: Some(BootMode::LegacyBios.as_str().to_string()),
        boot_mode_override: false,
        tpm_support: false,
    })
}

#[cfg(test)]
pub(crate) mod tests;
