//! The `build` section: how the builder is launched and provisioned.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

fn default_volume_type() -> String {
    "gp3".into()
}
fn default_build_timeout() -> u32 {
    60
}
