//! The recipe: what one pipeline builds, tests, distributes, publishes and retires.
//!
//! Parsed with `deny_unknown_fields` so a typo is an error, then checked by `Recipe::validate` (in `validate`),
//! which names the offending field and the fix. `infra/recipe.schema.json` is generated from these types (see the
//! `committed_schema_is_current` test).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

/// The longest time, in minutes, validation lets each long step take. The state machine's poll retriers are
/// generated to outlast these, and its history bound is proved for them (`definition`).
pub mod limits {
    pub const BUILD_MINUTES: u32 = 1440;
    /// Snapshot and register each.
    pub const IMAGE_MINUTES: u32 = 1440;
    pub const TEST_MINUTES: u32 = 240;
    /// All copy regions together: they are copied in parallel and polled in one call.
    pub const COPY_MINUTES: u32 = 2880;
    /// `build.data_volumes`.
    pub const DATA_VOLUMES: usize = 20;

    // What the execution's state carries is capped at 256 KiB per state (Step Functions quotas): the frozen recipe
    // is in every state, and publish reports each parameter and launch template per region. The worst case these
    // limits allow is computed in `definition/payload.rs`.

    /// The recipe as frozen into the execution input (its JSON with defaults filled in). A stored recipe is an SSM
    /// parameter of at most 8 KB (advanced tier), so only a recipe written some other way comes near it.
    pub const RECIPE_BYTES: usize = 16 * 1024;
    /// `publish.ssm_parameters`.
    pub const PUBLISH_PARAMETERS: usize = 4;
    /// Characters of one `publish.ssm_parameters` name.
    pub const PARAMETER_NAME_CHARS: usize = 128;
    /// `publish.launch_templates`.
    pub const LAUNCH_TEMPLATES: usize = 5;
    /// `retention.keep`: retire lists the kept images per region in its output.
    pub const KEEP: u32 = 25;
}

/// One pipeline's recipe, stored as JSON in SSM Parameter Store under `<prefix>/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Recipe format version. Must be 1.
    pub schema_version: u32,
    /// Pipeline name: 1-40 lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The release a scheduled run builds when no image of this pipeline records one yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_version: Option<String>,
    pub source: Source,
    /// How to provision the builder. Required for an image source; ignored for an instance source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    pub image: ImageSpec,
    #[serde(default)]
    pub test: TestSpec,
    #[serde(default)]
    pub distribution: Distribution,
    #[serde(default)]
    pub publish: Publish,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub refresh: Refresh,
}

/// Where the image starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Source {
    /// Build on a base image, launched and provisioned by the `build` section.
    Image(BaseImage),
    /// Snapshot an existing, hand-kept instance as it is.
    Instance(SourceInstance),
}

/// A base image: give exactly one of `id`, `ssm_parameter`, `name_filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BaseImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// An SSM parameter that holds an image id, e.g. `/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_parameter: Option<String>,
    /// An image name pattern (`*` wildcards); the newest match owned by `owners` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_filter: Option<String>,
    /// Trusted owners: 12-digit account ids or the aliases `amazon`, `self`, `aws-marketplace`. Required.
    pub owners: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceInstance {
    pub id: String,
    /// Stop the instance before snapshotting, for file-system consistency. It is not restarted. Without it a
    /// running instance is imaged as it runs: crash-consistent (what its volumes held then, not buffered or in-memory
    /// data), which the snapshot step's output states and warns about.
    #[serde(default)]
    pub stop_first: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    #[default]
    Linux,
    Windows,
}

/// How the step runs the recipe's script on the instance and learns its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    /// SSM Run Command (needs the SSM agent, an instance profile with AmazonSSMManagedInstanceCore and a route to
    /// the SSM endpoints): exit code and output in the result, output in CloudWatch Logs.
    #[default]
    RunCommand,
    /// User data that prints a result marker to the serial console (for base images without the SSM agent).
    Console,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub instance_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Subnets (ideally in other Availability Zones) tried in order when EC2 has no capacity for the builder in
    /// `subnet_id` (InsufficientInstanceCapacity, or the type not offered there), at most 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_subnet_ids: Vec<String>,
    /// Instance types tried in order, in every subnet, when no subnet has capacity for `instance_type`, at most 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_instance_types: Vec<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// Instance profile name or ARN for the builder (it needs SSM or S3 access only if the script does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    #[serde(default)]
    pub platform: Platform,
    /// How the provisioning script is run: `run-command` (SSM Run Command) or `console` (user data and a console
    /// marker, for base images without the SSM agent).
    #[serde(default)]
    pub channel: Channel,
    #[serde(default)]
    pub root_volume: Volume,
    /// Extra EBS volumes, registered into the image with the root volume.
    #[serde(default)]
    pub data_volumes: Vec<DataVolume>,
    /// How long provisioning may take, 5 to 1440 minutes.
    #[serde(default = "default_build_timeout")]
    pub timeout_minutes: u32,
    /// The provisioning script (bash, or PowerShell on Windows). May use `{{version}}`, `{{commit}}`,
    /// `{{artifact}}` and `{{pipeline}}`; the values are checked so they cannot break out of the script.
    pub script: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Size in GiB; 0 keeps the base image's size.
    #[serde(default)]
    pub size_gib: u32,
    #[serde(default = "default_volume_type")]
    pub volume_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<u32>,
}

impl Default for Volume {
    fn default() -> Self {
        Volume {
            size_gib: 0,
            volume_type: default_volume_type(),
            iops: None,
            throughput: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataVolume {
    /// Device name such as `/dev/sdf` (Linux) or `xvdf` (Windows).
    pub device_name: String,
    pub size_gib: u32,
    #[serde(default = "default_volume_type")]
    pub volume_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<u32>,
}

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
    #[serde(default = "yes")]
    pub ena_support: bool,
    /// NitroTPM 2.0; needs `boot_mode: uefi` (and, for a licensed platform, a base with NitroTPM, e.g.
    /// `TPM-Windows_Server-2022-*`).
    #[serde(default)]
    pub tpm_support: bool,
    /// Instances launched from the image must use IMDSv2. Default on; cannot be undone on an image.
    #[serde(default = "yes")]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Launch the new image once and wait for its status checks (and smoke test) before distributing it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Defaults to the build's instance type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Subnets tried in order when EC2 has no capacity for the test instance, at most 4. Default: the build's,
    /// unless `subnet_id` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_subnet_ids: Vec<String>,
    /// Instance types tried in order when no subnet has capacity, at most 4. Default: the build's, unless
    /// `instance_type` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_instance_types: Vec<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// Instance profile name or ARN for the test instance (default: the builder's). A Run Command smoke test needs
    /// one whose role has AmazonSSMManagedInstanceCore: the stack's `TestInstanceProfileName` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// A smoke test run once the status checks pass (channel `run-command`) or at boot (`console`); exit 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// How the smoke test is run; default: the build's channel (`run-command` without a build section).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(default = "default_test_timeout")]
    pub timeout_minutes: u32,
}

impl Default for TestSpec {
    fn default() -> Self {
        TestSpec {
            enabled: true,
            instance_type: None,
            subnet_id: None,
            fallback_subnet_ids: Vec::new(),
            fallback_instance_types: Vec::new(),
            security_group_ids: Vec::new(),
            instance_profile: None,
            script: None,
            channel: None,
            timeout_minutes: default_test_timeout(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    /// Regions to copy the tested image to, besides the region the pipeline runs in.
    #[serde(default)]
    pub regions: Vec<String>,
    /// KMS key per destination region; a region without one uses its default EBS key. Copies are always
    /// encrypted. Required (a customer-managed key) for every copy region when the image is shared.
    #[serde(default)]
    pub kms_key_ids: BTreeMap<String, String>,
    /// 12-digit account ids that may launch (and copy) the image.
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub organization_arns: Vec<String>,
    #[serde(default)]
    pub organizational_unit_arns: Vec<String>,
    /// Make the image public. Always refused: ami-pipeline encrypts every image, and encrypted snapshots cannot
    /// be made public.
    #[serde(default)]
    pub public: bool,
    #[serde(default = "default_copy_timeout")]
    pub copy_timeout_minutes: u32,
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution {
            regions: Vec::new(),
            kms_key_ids: BTreeMap::new(),
            accounts: Vec::new(),
            organization_arns: Vec::new(),
            organizational_unit_arns: Vec::new(),
            public: false,
            copy_timeout_minutes: default_copy_timeout(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// SSM parameter names written in every region with the new image id (data type `aws:ec2:image`).
    #[serde(default)]
    pub ssm_parameters: Vec<String>,
    /// Launch templates that get a new default version with the new image.
    #[serde(default)]
    pub launch_templates: Vec<LaunchTemplateRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchTemplateRef {
    /// Launch template id (`lt-...`) or name.
    pub id_or_name: String,
    /// Region of the launch template; default: the pipeline's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Newest images of this pipeline to keep per region (at least 1).
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Deprecate kept images this many days after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecate_after_days: Option<u32>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: default_keep(),
            deprecate_after_days: None,
        }
    }
}

/// What a scheduled run does: the stack's nightly refresh of every pipeline, or a schedule naming this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Refresh {
    Always,
    /// Skip when the base image is the one the newest image was built from.
    #[default]
    WhenSourceChanges,
    /// No scheduled runs: only release events build this pipeline.
    Never,
}

fn yes() -> bool {
    true
}
fn default_volume_type() -> String {
    "gp3".into()
}
fn default_build_timeout() -> u32 {
    60
}
fn default_image_timeout() -> u32 {
    240
}
fn default_test_timeout() -> u32 {
    20
}
fn default_copy_timeout() -> u32 {
    240
}
fn default_keep() -> u32 {
    3
}
fn default_image_name() -> String {
    "{{pipeline}}-{{version}}-{{date}}-{{id}}".into()
}

impl Recipe {
    /// The build's channel (`run-command` without a build section).
    pub fn build_channel(&self) -> Channel {
        self.build.as_ref().map(|b| b.channel).unwrap_or_default()
    }

    /// The smoke test's channel: its own, else the build's (the image was provisioned through it, so it has
    /// what that channel needs).
    pub fn test_channel(&self) -> Channel {
        self.test.channel.unwrap_or_else(|| self.build_channel())
    }

    /// Whether the image is shared with other accounts, organizations or OUs.
    pub fn is_shared(&self) -> bool {
        let d = &self.distribution;
        !(d.accounts.is_empty() && d.organization_arns.is_empty() && d.organizational_unit_arns.is_empty())
    }

    /// All regions the image ends up in: `home` first, then the distribution regions (without `home`).
    pub fn all_regions(&self, home: &str) -> Vec<String> {
        let mut out = vec![home.to_string()];
        out.extend(self.distribution.regions.iter().filter(|r| *r != home).cloned());
        out
    }
}

/// The recipe's JSON Schema, generated from these types, with keys sorted: the committed file must not depend on
/// whether serde_json keeps insertion order.
pub fn json_schema() -> String {
    crate::model::json::pretty(serde_json::to_value(schemars::schema_for!(Recipe)).unwrap_or_default())
}

/// The example recipe the tests share (`infra/recipes/al2023-web.json`).
#[cfg(test)]
pub(crate) const EXAMPLE: &str = include_str!("../../../../infra/recipes/al2023-web.json");
