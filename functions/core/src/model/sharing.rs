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

/// What `share` did in one region. `granted` lists what this call added, `already_granted` what the image (or
/// snapshot) had before, so a retried share reports its earlier work under `already_granted`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareOutput {
    pub region: String,
    pub image_id: String,
    pub granted: Vec<Grantee>,
    pub already_granted: Vec<Grantee>,
    /// `createVolumePermission` per snapshot of the image, so the accounts can copy it.
    pub snapshots: Vec<SnapshotShare>,
}

/// The share step: one entry per region of the run, `run.regions` order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareState {
    pub regions: Vec<ShareOutput>,
}

/// The accounts that may create volumes from (and so copy) one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotShare {
    pub snapshot_id: String,
    pub granted: Vec<String>,
    pub already_granted: Vec<String>,
}
