//! The recipe: what one pipeline builds, tests, distributes, publishes and retires.
//!
//! Parsed with `deny_unknown_fields` so a typo is an error, then checked by `Recipe::validate` (in `validate`),
//! which names the offending field and the fix. `infra/recipe.schema.json` is generated from these types (see the
//! `committed_schema_is_current` test).

mod build;
mod distribution;
mod image;
mod test_spec;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use build::*;
pub use distribution::*;
pub use image::*;
pub use test_spec::*;

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
fn default_keep() -> u32 {
    3
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
pub(crate) const EXAMPLE: &str = include_str!("../../../../../infra/recipes/al2023-web.json");
