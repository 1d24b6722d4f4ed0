//! The `test` section: how the new image is tested before it is distributed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Channel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Launch the new image once and wait for its status checks (and smoke test) before distributing it.
    #[serde(default = "super::yes")]
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

fn default_test_timeout() -> u32 {
    20
}
