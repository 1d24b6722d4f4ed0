//! What `share` reports. (The copy step's output is [`CopyState`](crate::model::steps::CopyState).)

use serde::{Deserialize, Serialize};

/// Who may launch an image: one entry of its `launchPermission` attribute.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grantee {
    /// A 12-digit account id.
    Account(String),
    /// An AWS Organizations organization ARN.
    Organization(String),
    /// An organizational unit ARN.
    OrganizationalUnit(String),
    /// Everyone (`Group=all`). Only with `distribution.public: true`.
    Public,
}

/// What `share` did in one region, as counts: a recipe may name up to 1,000 grantees, and every step output is
/// carried in the execution's state, which Step Functions caps at 256 KiB (`definition::payload`); who they are is
/// in the recipe. A retried share reports its earlier work under `already_granted`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareOutput {
    pub region: String,
    pub image_id: String,
    /// Launch permissions (accounts, organizations, OUs).
    pub launch_permissions: Grants,
    /// How many of the image's snapshots the accounts may create volumes from (and so copy the image).
    pub snapshots: usize,
    /// Their `createVolumePermission` entries, one per account and snapshot.
    pub create_volume_permissions: Grants,
}

/// Permissions this call added, and those there before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub granted: usize,
    pub already_granted: usize,
}

impl Grants {
    pub fn add(&mut self, other: Grants) {
        self.granted += other.granted;
        self.already_granted += other.already_granted;
    }
}

/// The share step: one entry per region of the run, `run.regions` order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareState {
    pub regions: Vec<ShareOutput>,
}
