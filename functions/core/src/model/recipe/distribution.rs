//! The `distribution` and `publish` sections: where the image is copied, who may launch it, and what is pointed
//! at it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

fn default_copy_timeout() -> u32 {
    240
}
