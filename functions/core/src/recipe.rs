//! The recipe: what one pipeline builds, tests, distributes, publishes and retires.
//!
//! Parsed with `deny_unknown_fields` so a typo is an error, then checked by [`Recipe::validate`], which names the
//! offending field and the fix. `infra/recipe.schema.json` is generated from these types (see the `schema` test).

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::naming;

pub const SCHEMA_VERSION: u32 = 1;

/// The longest time, in minutes, validation lets each long step take. The state machine's poll retriers are
/// generated to outlast these, and its history bound is proved for them (`crate::definition`).
pub mod limits {
    pub const BUILD_MINUTES: u32 = 1440;
    /// Snapshot and register each.
    pub const IMAGE_MINUTES: u32 = 1440;
    pub const TEST_MINUTES: u32 = 240;
    /// All copy regions together: they are copied in parallel and polled in one call.
    pub const COPY_MINUTES: u32 = 2880;
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
    /// Stop the instance before snapshotting, for file-system consistency. It is not restarted.
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

/// What a scheduled run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Refresh {
    Always,
    /// Skip when the base image is the one the newest image was built from.
    #[default]
    WhenSourceChanges,
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

/// Commercial and GovCloud regions EC2 serves. A region outside this list is a typo or not yet known here.
pub const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-east-1",
    "us-gov-west-1",
];

const VOLUME_TYPES: &[&str] = &["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];
/// Recipes live in SSM (8 KB for an advanced parameter), so scripts stay small; fetch larger ones from S3.
const MAX_SCRIPT_BYTES: usize = 6 * 1024;

impl Recipe {
    /// Parses a recipe document, naming the field on error.
    pub fn from_json(text: &str) -> Result<Recipe> {
        let recipe: Recipe = crate::input::parse_str("recipe", text)?;
        recipe.validate()?;
        Ok(recipe)
    }

    /// Checks what serde cannot: value ranges, formats, and consistency between sections.
    pub fn validate(&self) -> Result<()> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(Error::invalid(
                "recipe.schema_version",
                format!("must be {SCHEMA_VERSION}"),
            ));
        }
        naming::check_pipeline_name("recipe.name", &self.name)?;
        if let Some(v) = &self.default_version {
            naming::check_version("recipe.default_version", v)?;
        }
        self.validate_source()?;
        self.validate_image()?;
        self.validate_test()?;
        self.validate_distribution()?;
        self.validate_sharing()?;
        self.validate_publish()?;
        if self.retention.keep == 0 {
            return Err(Error::invalid(
                "recipe.retention.keep",
                "must be at least 1 (the image just built)",
            ));
        }
        if let Some(days) = self.retention.deprecate_after_days
            && !(1..=3650).contains(&days)
        {
            return Err(Error::invalid(
                "recipe.retention.deprecate_after_days",
                "must be 1 to 3650 (10 years)",
            ));
        }
        Ok(())
    }

    fn validate_source(&self) -> Result<()> {
        match &self.source {
            Source::Image(base) => {
                let given = [
                    base.id.is_some(),
                    base.ssm_parameter.is_some(),
                    base.name_filter.is_some(),
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    return Err(Error::invalid(
                        "recipe.source.image",
                        "give exactly one of `id`, `ssm_parameter`, `name_filter`",
                    ));
                }
                if let Some(id) = &base.id {
                    check_id("recipe.source.image.id", "ami-", id)?;
                }
                if let Some(p) = &base.ssm_parameter {
                    check_ssm_name("recipe.source.image.ssm_parameter", p)?;
                }
                if let Some(f) = &base.name_filter {
                    check_text("recipe.source.image.name_filter", f, 128)?;
                }
                if base.owners.is_empty() {
                    return Err(Error::invalid(
                        "recipe.source.image.owners",
                        "list the trusted owners, e.g. [\"amazon\"] or account ids; it must not be empty",
                    ));
                }
                for (i, owner) in base.owners.iter().enumerate() {
                    let ok = matches!(owner.as_str(), "amazon" | "self" | "aws-marketplace") || is_account(owner);
                    if !ok {
                        return Err(Error::invalid(
                            format!("recipe.source.image.owners[{i}]"),
                            "must be a 12-digit account id or one of `amazon`, `self`, `aws-marketplace`",
                        ));
                    }
                }
                let build = self.build.as_ref().ok_or_else(|| {
                    Error::invalid(
                        "recipe.build",
                        "required when the source is an image: say how to provision it",
                    )
                })?;
                validate_build(build)
            }
            Source::Instance(inst) => check_id("recipe.source.instance.id", "i-", &inst.id),
        }
    }

    fn validate_image(&self) -> Result<()> {
        let img = &self.image;
        naming::check_name_template("recipe.image.name", &img.name)?;
        if let Some(d) = &img.description {
            check_text("recipe.image.description", d, 255)?;
        }
        check_range(
            "recipe.image.timeout_minutes",
            img.timeout_minutes,
            15,
            limits::IMAGE_MINUTES,
        )?;
        if img.tpm_support && img.boot_mode != Some(BootMode::Uefi) {
            return Err(Error::invalid(
                "recipe.image.tpm_support",
                "needs `boot_mode: \"uefi\"`",
            ));
        }
        if let Some(k) = &img.kms_key_id {
            check_text("recipe.image.kms_key_id", k, 2048)?;
        }
        for (k, v) in &img.tags {
            if k.is_empty() || k.len() > 128 || k.starts_with("aws:") || k.starts_with(crate::tags::PREFIX) {
                return Err(Error::invalid(
                    format!("recipe.image.tags.{k}"),
                    "tag keys are 1-128 characters and may not start with `aws:` or `ami-pipeline:`",
                ));
            }
            if v.len() > 256 {
                return Err(Error::invalid(
                    format!("recipe.image.tags.{k}"),
                    "tag values are at most 256 characters",
                ));
            }
        }
        match (img.root_device_type, &img.s3_manifest) {
            (RootDeviceType::InstanceStore, None) => Err(Error::invalid(
                "recipe.image.s3_manifest",
                "required for `root_device_type: instance-store`",
            )),
            // Exactly `s3://bucket/key.manifest.xml`, which register turns into RegisterImage's ImageLocation.
            (RootDeviceType::InstanceStore, Some(m)) => crate::instance_store::image_location(m).map(|_| ()),
            (RootDeviceType::Ebs, Some(_)) => Err(Error::invalid(
                "recipe.image.s3_manifest",
                "only for `root_device_type: instance-store`; remove it",
            )),
            _ => Ok(()),
        }
    }

    fn validate_test(&self) -> Result<()> {
        let t = &self.test;
        if let Some(p) = &t.instance_profile {
            check_text("recipe.test.instance_profile", p, 2048)?;
        }
        if let Some(it) = &t.instance_type {
            check_instance_type("recipe.test.instance_type", it)?;
        }
        if let Some(s) = &t.subnet_id {
            check_id("recipe.test.subnet_id", "subnet-", s)?;
        }
        check_fallbacks(
            "recipe.test",
            t.instance_type.as_deref(),
            t.subnet_id.as_deref(),
            &t.fallback_instance_types,
            &t.fallback_subnet_ids,
        )?;
        for (i, sg) in t.security_group_ids.iter().enumerate() {
            check_id(&format!("recipe.test.security_group_ids[{i}]"), "sg-", sg)?;
        }
        if let Some(s) = &t.script {
            check_script("recipe.test.script", s)?;
        }
        check_range(
            "recipe.test.timeout_minutes",
            t.timeout_minutes,
            5,
            limits::TEST_MINUTES,
        )?;
        if t.enabled && t.instance_type.is_none() && self.build.is_none() {
            return Err(Error::invalid(
                "recipe.test.instance_type",
                "required when there is no `build` section",
            ));
        }
        Ok(())
    }

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

    /// The keys a shared image needs, once the home region is known (the trigger): a customer-managed key in
    /// every copy region, since "snapshots encrypted with your default KMS key cannot be shared with other
    /// accounts" (ModifySnapshotAttribute API reference). The home region's key is `image.kms_key_id`, checked by
    /// `validate`.
    pub fn check_sharing_keys(&self, home: &str) -> Result<()> {
        if !self.is_shared() {
            return Ok(());
        }
        let d = &self.distribution;
        for region in d.regions.iter().filter(|r| *r != home) {
            if !d.kms_key_ids.contains_key(region) {
                return Err(Error::invalid(
                    "recipe.distribution.kms_key_ids",
                    format!(
                        "needs a customer-managed KMS key for `{region}`: the image is shared, and snapshots \
                         encrypted with the default aws/ebs key cannot be shared with other accounts; add \
                         `\"{region}\": \"<key id, ARN or alias>\"` (its key policy must let the target accounts use \
                         it, infra/DEPLOY.md)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_sharing(&self) -> Result<()> {
        let d = &self.distribution;
        if d.public {
            return Err(Error::invalid(
                "recipe.distribution.public",
                "cannot be true: ami-pipeline encrypts every image, and encrypted snapshots cannot be made public \
                 (ModifySnapshotAttribute API reference); share with accounts, organizations or OUs instead",
            ));
        }
        if !self.is_shared() {
            return Ok(());
        }
        for (r, key) in &d.kms_key_ids {
            if is_default_ebs_key(key) {
                return Err(Error::invalid(
                    format!("recipe.distribution.kms_key_ids.{r}"),
                    "is the default aws/ebs key, whose snapshots cannot be shared with other accounts: name a \
                     customer-managed key",
                ));
            }
        }
        // An instance source keeps its volumes' own keys; a built image takes `image.kms_key_id`.
        if matches!(self.source, Source::Image(_)) && self.image.kms_key_id.as_deref().is_none_or(is_default_ebs_key) {
            return Err(Error::invalid(
                "recipe.image.kms_key_id",
                "needs a customer-managed KMS key: the image is shared, and snapshots encrypted with the default \
                 aws/ebs key cannot be shared with other accounts (ModifySnapshotAttribute API reference); its key \
                 policy must let the target accounts use it (infra/DEPLOY.md)",
            ));
        }
        Ok(())
    }

    fn validate_distribution(&self) -> Result<()> {
        let d = &self.distribution;
        let mut seen = BTreeSet::new();
        for (i, r) in d.regions.iter().enumerate() {
            let field = format!("recipe.distribution.regions[{i}]");
            check_region(&field, r)?;
            if !seen.insert(r) {
                return Err(Error::invalid(field, format!("region `{r}` is listed twice")));
            }
        }
        for (r, key) in &d.kms_key_ids {
            let field = format!("recipe.distribution.kms_key_ids.{r}");
            check_region(&field, r)?;
            check_text(&field, key, 2048)?;
        }
        let mut accounts = BTreeSet::new();
        for (i, a) in d.accounts.iter().enumerate() {
            let field = format!("recipe.distribution.accounts[{i}]");
            if !is_account(a) {
                return Err(Error::invalid(field, "must be a 12-digit AWS account id"));
            }
            if !accounts.insert(a) {
                return Err(Error::invalid(field, format!("account {a} is listed twice")));
            }
        }
        if d.accounts.len() + d.organization_arns.len() + d.organizational_unit_arns.len() > 1000 {
            return Err(Error::invalid(
                "recipe.distribution",
                "an image can be shared with at most 1,000 entities",
            ));
        }
        for (i, arn) in d.organization_arns.iter().enumerate() {
            if !arn.starts_with("arn:aws") || !arn.contains(":organization/o-") {
                return Err(Error::invalid(
                    format!("recipe.distribution.organization_arns[{i}]"),
                    "must be an organization ARN, arn:aws:organizations::ACCOUNT:organization/o-xxxx",
                ));
            }
        }
        for (i, arn) in d.organizational_unit_arns.iter().enumerate() {
            if !arn.starts_with("arn:aws") || !arn.contains(":ou/o-") {
                return Err(Error::invalid(
                    format!("recipe.distribution.organizational_unit_arns[{i}]"),
                    "must be an OU ARN, arn:aws:organizations::ACCOUNT:ou/o-xxxx/ou-xxxx",
                ));
            }
        }
        check_range(
            "recipe.distribution.copy_timeout_minutes",
            d.copy_timeout_minutes,
            15,
            limits::COPY_MINUTES,
        )
    }

    fn validate_publish(&self) -> Result<()> {
        for (i, p) in self.publish.ssm_parameters.iter().enumerate() {
            check_ssm_name(&format!("recipe.publish.ssm_parameters[{i}]"), p)?;
        }
        for (i, lt) in self.publish.launch_templates.iter().enumerate() {
            let field = format!("recipe.publish.launch_templates[{i}]");
            check_text(&format!("{field}.id_or_name"), &lt.id_or_name, 128)?;
            if let Some(r) = &lt.region {
                check_region(&format!("{field}.region"), r)?;
            }
        }
        Ok(())
    }

    /// All regions the image ends up in: `home` first, then the distribution regions (without `home`).
    pub fn all_regions(&self, home: &str) -> Vec<String> {
        let mut out = vec![home.to_string()];
        out.extend(self.distribution.regions.iter().filter(|r| *r != home).cloned());
        out
    }
}

fn validate_build(b: &Build) -> Result<()> {
    check_instance_type("recipe.build.instance_type", &b.instance_type)?;
    if let Some(s) = &b.subnet_id {
        check_id("recipe.build.subnet_id", "subnet-", s)?;
    }
    check_fallbacks(
        "recipe.build",
        Some(&b.instance_type),
        b.subnet_id.as_deref(),
        &b.fallback_instance_types,
        &b.fallback_subnet_ids,
    )?;
    for (i, sg) in b.security_group_ids.iter().enumerate() {
        check_id(&format!("recipe.build.security_group_ids[{i}]"), "sg-", sg)?;
    }
    if let Some(p) = &b.instance_profile {
        check_text("recipe.build.instance_profile", p, 2048)?;
    }
    check_volume_type("recipe.build.root_volume.volume_type", &b.root_volume.volume_type)?;
    check_range_or_zero("recipe.build.root_volume.size_gib", b.root_volume.size_gib, 1, 16384)?;
    let mut devices = BTreeSet::new();
    for (i, v) in b.data_volumes.iter().enumerate() {
        let field = format!("recipe.build.data_volumes[{i}]");
        let dev_ok = v.device_name.len() <= 32
            && v.device_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '/')
            && (v.device_name.starts_with("/dev/sd")
                || v.device_name.starts_with("/dev/xvd")
                || v.device_name.starts_with("xvd"));
        if !dev_ok {
            return Err(Error::invalid(
                format!("{field}.device_name"),
                "must look like /dev/sdf or xvdf",
            ));
        }
        if !devices.insert(&v.device_name) {
            return Err(Error::invalid(
                format!("{field}.device_name"),
                "device names must be unique",
            ));
        }
        check_volume_type(&format!("{field}.volume_type"), &v.volume_type)?;
        check_range(&format!("{field}.size_gib"), v.size_gib, 1, 16384)?;
    }
    if b.data_volumes.len() > 20 {
        return Err(Error::invalid("recipe.build.data_volumes", "at most 20 data volumes"));
    }
    check_range(
        "recipe.build.timeout_minutes",
        b.timeout_minutes,
        5,
        limits::BUILD_MINUTES,
    )?;
    check_script("recipe.build.script", &b.script)
}

/// The AWS managed EBS key by alias (an ARN of it cannot be told from a customer key without `DescribeKey`).
fn is_default_ebs_key(key: &str) -> bool {
    key.trim().eq_ignore_ascii_case("alias/aws/ebs")
}

fn check_range(field: &str, v: u32, min: u32, max: u32) -> Result<()> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("must be {min} to {max}")))
    }
}

fn check_range_or_zero(field: &str, v: u32, min: u32, max: u32) -> Result<()> {
    if v == 0 {
        Ok(())
    } else {
        check_range(field, v, min, max)
    }
}

fn check_volume_type(field: &str, t: &str) -> Result<()> {
    if VOLUME_TYPES.contains(&t) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must be one of {}", VOLUME_TYPES.join(", ")),
        ))
    }
}

fn check_instance_type(field: &str, t: &str) -> Result<()> {
    let ok = t.len() <= 32
        && t.split_once('.').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, "must be an instance type such as t3.micro"))
    }
}

/// The most fallback subnets or instance types a recipe may list: with the primary, at most 25 launch attempts.
pub const MAX_FALLBACKS: usize = 4;

/// `fallback_instance_types` and `fallback_subnet_ids` of `section`: valid ids and types, at most
/// `MAX_FALLBACKS` each, none repeated or equal to the primary.
fn check_fallbacks(
    section: &str,
    instance_type: Option<&str>,
    subnet_id: Option<&str>,
    types: &[String],
    subnets: &[String],
) -> Result<()> {
    for (name, primary, list, check) in [
        (
            "fallback_instance_types",
            instance_type,
            types,
            check_instance_type as fn(&str, &str) -> Result<()>,
        ),
        ("fallback_subnet_ids", subnet_id, subnets, |f: &str, s: &str| {
            check_id(f, "subnet-", s)
        }),
    ] {
        let field = format!("{section}.{name}");
        if list.len() > MAX_FALLBACKS {
            return Err(Error::invalid(field, format!("at most {MAX_FALLBACKS} entries")));
        }
        let mut seen = BTreeSet::new();
        for (i, v) in list.iter().enumerate() {
            let item = format!("{field}[{i}]");
            check(&item, v)?;
            if primary == Some(v.as_str()) || !seen.insert(v) {
                return Err(Error::invalid(item, format!("`{v}` is already listed")));
            }
        }
    }
    Ok(())
}

fn check_script(field: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if s.len() > MAX_SCRIPT_BYTES {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_SCRIPT_BYTES} bytes (the recipe is an SSM parameter); fetch larger scripts from S3"),
        ));
    }
    if s.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    if s.contains(crate::userdata::HEREDOC_END) {
        return Err(Error::invalid(
            field,
            "must not contain the line AMI_PIPELINE_SCRIPT_END",
        ));
    }
    if s.lines().any(|l| l.starts_with("'@")) {
        return Err(Error::invalid(
            field,
            "must not have a line starting with '@ (it would end the PowerShell wrapper)",
        ));
    }
    Ok(())
}

/// Resource ids such as `ami-0abc`, `i-0abc`, `subnet-0abc`: prefix then 8 or 17 hex digits.
pub fn check_id(field: &str, prefix: &str, id: &str) -> Result<()> {
    let ok = id
        .strip_prefix(prefix)
        .is_some_and(|hex| (8..=17).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must be an id like {prefix}0123456789abcdef0"),
        ))
    }
}

pub fn check_region(field: &str, r: &str) -> Result<()> {
    if KNOWN_REGIONS.contains(&r) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{}` is not an AWS region, e.g. us-east-1", naming::preview(r)),
        ))
    }
}

fn check_ssm_name(field: &str, p: &str) -> Result<()> {
    let ok = p.starts_with('/')
        && p.len() <= 1011
        && p.chars().all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c))
        && !p.contains("//");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be an SSM parameter path like /team/images/web (letters, digits, / _ . -)",
        ))
    }
}

fn check_text(field: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        Err(Error::invalid(
            field,
            format!("must be 1-{max} characters without control characters"),
        ))
    } else {
        Ok(())
    }
}

pub fn is_account(s: &str) -> bool {
    s.len() == 12 && s.chars().all(|c| c.is_ascii_digit())
}

/// The recipe's JSON Schema, generated from these types, with keys sorted: whether serde_json keeps insertion
/// order depends on which crates share the build, and the committed file must not.
pub fn json_schema() -> String {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    let schema = serde_json::to_value(schemars::schema_for!(Recipe)).unwrap_or_default();
    serde_json::to_string_pretty(&sorted(schema)).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = include_str!("../../../infra/recipes/al2023-web.json");
    const WINDOWS: &str = include_str!("../../../infra/recipes/windows-2022-base.json");

    /// `UPDATE_SCHEMA=1 cargo test -p ami-core schema` rewrites the committed schema.
    #[test]
    fn committed_schema_is_current() {
        crate::definition::assert_committed("infra/recipe.schema.json", &json_schema(), "UPDATE_SCHEMA", "schema");
    }

    #[test]
    fn example_recipes_are_valid() {
        let web = Recipe::from_json(WEB).unwrap();
        assert_eq!(web.name, "web");
        assert_eq!(
            web.all_regions("us-east-1"),
            ["us-east-1", "eu-west-1", "ap-southeast-2"]
        );
        let win = Recipe::from_json(WINDOWS).unwrap();
        assert_eq!(win.build.unwrap().platform, Platform::Windows);
        assert!(!win.distribution.public, "public sharing is off unless asked for");
    }

    fn field_of(text: &str) -> String {
        match Recipe::from_json(text) {
            Err(Error::InvalidInput { field, .. }) => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    fn edit(f: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(WEB).unwrap();
        f(&mut v);
        v.to_string()
    }

    #[test]
    fn bad_recipes_name_the_field() {
        use serde_json::json;
        let cases: Vec<(String, &str)> = vec![
            (edit(|v| v["schema_version"] = json!(2)), "recipe.schema_version"),
            (edit(|v| v["name"] = json!("Web Server")), "recipe.name"),
            (
                edit(|v| v["source"]["image"]["owners"] = json!(["amazon", "12345"])),
                "recipe.source.image.owners[1]",
            ),
            (
                edit(|v| v["source"]["image"]["id"] = json!("ami-0123456789abcdef0")),
                "recipe.source.image",
            ),
            (
                edit(|v| v["build"]["instance_type"] = json!("huge")),
                "recipe.build.instance_type",
            ),
            (
                edit(|v| v["build"]["timeout_minutes"] = json!(2)),
                "recipe.build.timeout_minutes",
            ),
            (
                edit(|v| v["build"]["fallback_instance_types"] = json!(["m5.large", "huge"])),
                "recipe.build.fallback_instance_types[1]",
            ),
            (
                edit(|v| v["build"]["fallback_instance_types"] = json!(["m5.large", "m5.large"])),
                "recipe.build.fallback_instance_types[1]",
            ),
            (
                edit(|v| v["build"]["fallback_instance_types"] = json!([v["build"]["instance_type"].clone()])),
                "recipe.build.fallback_instance_types[0]",
            ),
            (
                edit(|v| v["build"]["fallback_subnet_ids"] = json!(["subnet-0123"])),
                "recipe.build.fallback_subnet_ids[0]",
            ),
            (
                edit(|v| {
                    v["build"]["fallback_subnet_ids"] = json!([
                        "subnet-0000000000000000a",
                        "subnet-0000000000000000b",
                        "subnet-0000000000000000c",
                        "subnet-0000000000000000d",
                        "subnet-0000000000000000e"
                    ])
                }),
                "recipe.build.fallback_subnet_ids",
            ),
            (
                edit(|v| v["test"]["fallback_subnet_ids"] = json!(["sg-0123456789abcdef0"])),
                "recipe.test.fallback_subnet_ids[0]",
            ),
            (
                edit(|v| v["build"]["script"] = json!("echo\nAMI_PIPELINE_SCRIPT_END\nrm -rf /")),
                "recipe.build.script",
            ),
            (
                edit(|v| v["build"]["data_volumes"][0]["device_name"] = json!("/dev/sda;x")),
                "recipe.build.data_volumes[0].device_name",
            ),
            (
                edit(|v| v["image"]["name"] = json!("{{pipeline}}-{{secret}}")),
                "recipe.image.name",
            ),
            (
                edit(|v| v["image"]["tpm_support"] = json!(true)),
                "recipe.image.tpm_support",
            ),
            (
                edit(|v| v["image"]["tags"] = json!({"aws:x": "y"})),
                "recipe.image.tags.aws:x",
            ),
            (
                edit(|v| v["distribution"]["regions"] = json!(["eu-west-1", "eu-west-1"])),
                "recipe.distribution.regions[1]",
            ),
            (
                edit(|v| v["distribution"]["regions"] = json!(["mars-north-1"])),
                "recipe.distribution.regions[0]",
            ),
            (
                edit(|v| v["distribution"]["accounts"] = json!(["1234"])),
                "recipe.distribution.accounts[0]",
            ),
            (
                edit(|v| v["distribution"]["public"] = json!("yes")),
                "recipe.distribution.public",
            ),
            (
                edit(|v| v["distribution"]["public"] = json!(true)),
                "recipe.distribution.public",
            ),
            (
                edit(|v| {
                    v["image"]
                        .as_object_mut()
                        .unwrap()
                        .remove("kms_key_id")
                        .map(|_| ())
                        .unwrap_or(())
                }),
                "recipe.image.kms_key_id",
            ),
            (
                edit(|v| v["image"]["kms_key_id"] = json!("alias/aws/ebs")),
                "recipe.image.kms_key_id",
            ),
            (
                edit(|v| v["distribution"]["kms_key_ids"]["eu-west-1"] = json!("alias/aws/ebs")),
                "recipe.distribution.kms_key_ids.eu-west-1",
            ),
            (
                edit(|v| v["publish"]["ssm_parameters"] = json!(["no-slash"])),
                "recipe.publish.ssm_parameters[0]",
            ),
            (edit(|v| v["retention"]["keep"] = json!(0)), "recipe.retention.keep"),
            (edit(|v| v["refresh"] = json!("sometimes")), "recipe.refresh"),
            (edit(|v| v["colour"] = json!("blue")), "recipe.colour"),
            (
                edit(|v| v.as_object_mut().unwrap().remove("build").map(|_| ()).unwrap_or(())),
                "recipe.build",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(field_of(&text), want, "{text}");
        }
    }

    /// "Snapshots encrypted with your default KMS key cannot be shared with other accounts" (ModifySnapshotAttribute
    /// API reference): a shared image needs a customer-managed key in every region it lands in.
    #[test]
    fn a_shared_image_needs_a_key_in_every_copy_region() {
        let web = Recipe::from_json(WEB).unwrap();
        assert!(web.is_shared());
        assert_eq!(web.check_sharing_keys("us-east-1"), Ok(()));
        let mut missing = web.clone();
        missing.distribution.kms_key_ids.remove("ap-southeast-2");
        let err = missing.check_sharing_keys("us-east-1").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, message } if field == "recipe.distribution.kms_key_ids"
                && message.contains("`ap-southeast-2`")),
            "{err}"
        );
        // Built in ap-southeast-2, the image there takes image.kms_key_id: no copy needs that entry.
        assert_eq!(missing.check_sharing_keys("ap-southeast-2"), Ok(()));
        // Not shared: the default key is fine everywhere.
        let mut private = missing;
        private.distribution.accounts.clear();
        assert!(!private.is_shared());
        assert_eq!(private.check_sharing_keys("us-east-1"), Ok(()));
        private.image.kms_key_id = None;
        assert_eq!(private.validate(), Ok(()));
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Recipe::from_json(&edit(|v| v["build"]["scrpit"] = serde_json::json!("x"))).unwrap_err();
        assert!(err.to_string().contains("unknown field `scrpit`"), "{err}");
    }
}
