//! What the steps that make and test the image answer: build, snapshot, register, test-launch and copy.

use serde::{Deserialize, Serialize};

use super::Progress;
use crate::model::platform::ImagePlan;
use crate::model::runcommand::CommandLogs;

/// The builder instance (build step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildState {
    pub instance_id: String,
    pub source_image_id: String,
    /// Set by `finish` once the builder is terminated (after the image is available).
    #[serde(default)]
    pub terminated: bool,
    /// Where the provisioning command's output is (run-command channel), once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<CommandLogs>,
    #[serde(flatten)]
    pub progress: Progress,
}

/// One snapshot of the image-to-be, with the device it will be mapped to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    pub device_name: String,
    pub volume_id: String,
    pub size_gib: i32,
    pub volume_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<i32>,
}

/// The snapshots of the builder's (or source instance's) volumes (snapshot step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotState {
    pub instance_id: String,
    /// The image the instance was launched from, recorded on the new image.
    pub source_image_id: String,
    pub root_device_name: String,
    pub snapshots: Vec<SnapshotInfo>,
    /// How the image is made (snapshots + RegisterImage, or CreateImage) and what it must report.
    pub plan: ImagePlan,
    /// The image CreateImage made (plan method `create-image`); register adopts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Lowest progress over the snapshots, 0-100.
    pub percent: u32,
    #[serde(flatten)]
    pub progress: Progress,
}

/// An image in one region: the registered candidate (register step) or a copy (copy step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageState {
    pub region: String,
    pub image_id: String,
    pub name: String,
    #[serde(flatten)]
    pub progress: Progress,
}

/// The copy step: the image in every region of the run, `run.regions` order (the home region's tested image
/// first, then one copy per other region). Ready when every copy is available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyState {
    pub images: Vec<ImageState>,
    /// Where the tested image came from (the base image and its test's boot-to-ready seconds), carried here for
    /// the Summary whether this run built and tested it or adopted it from an earlier attempt (`run.adopted`).
    #[serde(default)]
    pub source_image_id: String,
    #[serde(default)]
    pub boot_to_ready_seconds: Option<i64>,
    #[serde(flatten)]
    pub progress: Progress,
}

/// The test instance (test-launch step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestState {
    pub instance_id: String,
    pub image_id: String,
    pub launched_at: i64,
    /// Seconds from launch to passing, once passed (always present, `null` before, so ASL paths resolve).
    #[serde(default)]
    pub boot_to_ready_seconds: Option<i64>,
    /// Set by `finish` once the instance is terminated (or was already gone).
    #[serde(default)]
    pub terminated: bool,
    /// Where the smoke test's output is (run-command channel), once it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<CommandLogs>,
    #[serde(flatten)]
    pub progress: Progress,
}
