//! The `image` section: what the new image is.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    #[default]
    X86_64,
    Arm64,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BootMode {
    LegacyBios,
    Uefi,
    UefiPreferred,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::LegacyBios => "legacy-bios",
            BootMode::Uefi => "uefi",
            BootMode::UefiPreferred => "uefi-preferred",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RootDeviceType {
    #[default]
    Ebs,
    InstanceStore,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// AMI name template. Placeholders: `{{pipeline}}`, `{{version}}`, `{{date}}` (UTC, YYYYMMDD), `{{id}}`
    /// (8 characters unique to the execution). Keep `{{id}}` so names stay unique per account and region.
    #[serde(default = "default_image_name")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub architecture: Architecture,
    /// Omit to keep the base image's. A mode the base cannot boot is refused before the builder is launched; an
    /// image of a licensed platform (made with CreateImage) can only narrow `uefi-preferred` to `uefi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<BootMode>,
    #[serde(default = "super::yes")]
    pub ena_support: bool,
    /// NitroTPM 2.0; needs `boot_mode: uefi` (and, for a licensed platform, a base with NitroTPM, e.g.
    /// `TPM-Windows_Server-2022-*`).
    #[serde(default)]
    pub tpm_support: bool,
    /// Instances launched from the image must use IMDSv2. Default on; cannot be undone on an image.
    #[serde(default = "super::yes")]
    pub imds_v2: bool,
    /// KMS key for the builder's volumes and so the image's snapshots (default: the account's EBS key). Required
    /// (a customer-managed key) when the image is shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub root_device_type: RootDeviceType,
    /// `s3://bucket/path/image.manifest.xml`, for `root_device_type: instance-store`: the provisioning script
    /// bundles and uploads the image there, and register registers it from the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_manifest: Option<String>,
    /// Deadline for the snapshot step and again for the register step, 15 to 1440 minutes.
    #[serde(default = "default_image_timeout")]
    pub timeout_minutes: u32,
}

fn default_image_timeout() -> u32 {
    240
}
fn default_image_name() -> String {
    "{{pipeline}}-{{version}}-{{date}}-{{id}}".into()
}
