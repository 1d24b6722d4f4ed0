//! The bound on the execution's state. Step Functions caps every state's input (after Parameters) and output at
//! 256 KiB, and a state over it fails the execution with `States.DataLimitExceeded`, "a terminal error that can't be
//! caught by the States.ALL error type" (Step Functions developer guide, "Handling errors"): no Cleanup would run.
//!
//! The state is the frozen run, `$.steps` (each Task's output under its step's key: a Task's input is a part of
//! it) and the error slots. It is largest where it has gathered the most: entering Summary after a retire that
//! failed (every step's output but retire's and cleanup's, which the definition keeps out of the state,
//! `ResultPath: null`, and retire's error in `$.warnings`), or entering Failed (the steps up to share, `$.error` and
//! `$.cleanup_error`). Each part is built below at the largest size the recipe limits (`recipe::limits`, validation)
//! and AWS's own (ids, names, 128 EBS volumes per instance, 32,768-character causes) allow, and the whole must stay
//! within four fifths of the quota. (The history bound keeps half, `worst_case_history_is_half_the_quota_for_the_
//! largest_recipe`; here two causes at AWS's maximum alone take half, and every other part is at its maximum too.)

use serde::Serialize;
use serde_json::{Value, json};

use crate::aws::runtime::MAX_ERROR_MESSAGE_BYTES;
use crate::model::lifecycle::{
    CleanedRegion, CleanupOutput, Deprecation, KeptNewer, Outcome, PublishOutput, PublishedLaunchTemplate,
    PublishedParameter, PublishedRegion, RetireOutput, RetiredRegion, SkippedSnapshot,
};
use crate::model::platform::{ImagePlan, Method};
use crate::model::recipe::limits;
use crate::model::runcommand::CommandLogs;
use crate::model::sharing::{Grants, ShareOutput, ShareState};
use crate::model::steps::{
    BuildState, Consistency, CopyState, ImageState, Progress, SnapshotInfo, SnapshotState, Status, TestState,
};
use crate::validate::KNOWN_REGIONS;

/// Step Functions' quota on a state's input or output ("Step Functions service quotas").
pub const PAYLOAD_QUOTA_BYTES: usize = 262_144;

/// The most EBS volumes any instance type takes (DescribeInstanceTypes `EbsInfo.MaximumEbsAttachments`, 128 for the
/// largest types): a source instance's snapshots. A built image has at most the root and `limits::DATA_VOLUMES`.
const MAX_EBS_VOLUMES: usize = 128;

/// The longest error cause Step Functions keeps ("cause ... Maximum length of 32768", e.g.
/// LambdaFunctionFailedEventDetails), counted twice: a cause is a JSON string inside the state, and escaping at most
/// doubles printable text. A handler's own message is cut shorter (`runtime::MAX_ERROR_MESSAGE_BYTES`).
const MAX_CAUSE_BYTES: usize = 2 * 32_768;

/// A string of `n` characters, as long as the field can be.
fn long(n: usize) -> String {
    "x".repeat(n)
}

fn id(prefix: &str) -> String {
    format!("{prefix}{}", "f".repeat(17))
}

fn longest_region() -> String {
    KNOWN_REGIONS
        .iter()
        .max_by_key(|r| r.len())
        .map(|r| r.to_string())
        .unwrap_or_default()
}

fn progress() -> Progress {
    Progress {
        status: Status::Pending,
        started_at: i64::MIN,
        deadline: i64::MIN,
        wait_seconds: u32::MAX,
    }
}

fn logs() -> CommandLogs {
    // CloudWatch Logs group names are at most 512 characters; stream names are `<command-id>/<instance-id>/<plugin>/`
    // stdout or stderr.
    let stream = |out: &str| format!("{}/{}/aws-runPowerShellScript/{out}", long(36), id("i-"));
    CommandLogs {
        command_id: long(36),
        log_group: Some(long(512)),
        streams: vec![stream("stdout"), stream("stderr")],
    }
}

fn image_state() -> ImageState {
    ImageState {
        region: longest_region(),
        image_id: id("ami-"),
        name: long(crate::model::naming::MAX_AMI_NAME),
        progress: progress(),
    }
}

/// The run as the trigger freezes it: every field at its longest, the recipe at its limit, every known region.
fn run() -> Value {
    let recipe = crate::model::recipe::Recipe::from_json(crate::model::recipe::EXAMPLE).expect("the example recipe");
    let mut run = crate::model::steps::Run {
        pipeline: long(40),
        release: Default::default(),
        trigger: crate::model::steps::TriggerKind::Schedule,
        region: String::new(),
        date: long(8),
        build: true,
        regions: Vec::new(),
        recipe,
        adopted: None,
    };
    run.release.version = long(64);
    run.release.commit = Some(long(40));
    run.release.artifact = Some(long(1024));
    run.release.time = Some("+262143-12-31T23:59:59.999999999+00:00".into());
    run.release.force = true;
    run.region = longest_region();
    run.regions = KNOWN_REGIONS.iter().map(|r| r.to_string()).collect();
    run.adopted = Some(crate::model::rerun::Adopted {
        execution: long(crate::model::naming::MAX_EXECUTION_NAME),
        image: image_state(),
        source_image_id: id("ami-"),
        boot_to_ready_seconds: Some(i64::MIN),
    });
    let mut v = serde_json::to_value(run).expect("a run serializes");
    // The recipe's own JSON, at the size validation allows (`"` + `x`... + `"` is as many bytes).
    v["recipe"] = json!(long(limits::RECIPE_BYTES - 2));
    v
}

fn build() -> BuildState {
    BuildState {
        instance_id: id("i-"),
        source_image_id: id("ami-"),
        terminated: true,
        logs: Some(logs()),
        progress: progress(),
    }
}

fn snapshot() -> SnapshotState {
    let info = SnapshotInfo {
        snapshot_id: id("snap-"),
        device_name: long(32),
        volume_id: id("vol-"),
        size_gib: i32::MIN,
        volume_type: "standard".into(),
        iops: Some(i32::MIN),
        throughput: Some(i32::MIN),
    };
    let instance_id = id("i-");
    SnapshotState {
        warnings: Consistency::CrashConsistent.warning(&instance_id).into_iter().collect(),
        instance_id,
        source_image_id: id("ami-"),
        root_device_name: long(32),
        snapshots: vec![info; MAX_EBS_VOLUMES],
        plan: ImagePlan {
            method: Method::CreateImage,
            // EC2's billing names, e.g. "Red Hat Enterprise Linux with SQL Server Enterprise"; 256 is ample.
            platform_details: long(256),
            usage_operation: long(256),
            boot_mode: Some("uefi-preferred".into()),
            boot_mode_override: true,
            tpm_support: true,
        },
        image_id: Some(id("ami-")),
        percent: u32::MAX,
        consistency: Some(Consistency::CrashConsistent),
        progress: progress(),
    }
}

fn test_launch() -> TestState {
    TestState {
        instance_id: id("i-"),
        image_id: id("ami-"),
        launched_at: i64::MIN,
        boot_to_ready_seconds: Some(i64::MIN),
        terminated: true,
        logs: Some(logs()),
        progress: progress(),
    }
}

fn copy() -> CopyState {
    CopyState {
        images: vec![image_state(); KNOWN_REGIONS.len()],
        source_image_id: id("ami-"),
        boot_to_ready_seconds: Some(i64::MIN),
        progress: progress(),
    }
}

fn share() -> ShareState {
    let grants = Grants {
        granted: usize::MAX,
        already_granted: usize::MAX,
    };
    let region = ShareOutput {
        region: longest_region(),
        image_id: id("ami-"),
        launch_permissions: grants,
        snapshots: usize::MAX,
        create_volume_permissions: grants,
    };
    ShareState {
        regions: vec![region; KNOWN_REGIONS.len()],
    }
}

/// Every parameter and launch template left at a newer release (the longest outcome), the templates all in one
/// region (where they are does not change the total).
fn publish() -> PublishOutput {
    let skipped = || Outcome {
        changed: true,
        skipped: Some(KeptNewer::new(
            &id("ami-"),
            Some(long(64)),
            "its semantic version is higher",
        )),
        repaired: true,
    };
    let parameter = PublishedParameter {
        name: long(limits::PARAMETER_NAME_CHARS),
        outcome: skipped(),
    };
    let template = PublishedLaunchTemplate {
        id_or_name: long(128),
        version: i64::MIN,
        outcome: skipped(),
    };
    let region = |templates: usize| PublishedRegion {
        region: longest_region(),
        image_id: id("ami-"),
        parameters: vec![parameter.clone(); limits::PUBLISH_PARAMETERS],
        launch_templates: vec![template.clone(); templates],
    };
    let mut regions = vec![region(limits::LAUNCH_TEMPLATES)];
    regions.extend((1..KNOWN_REGIONS.len()).map(|_| region(0)));
    PublishOutput {
        release: long(64),
        regions,
    }
}

/// Retire's output, a Task result (256 KiB at most, though the definition keeps it out of the state): per region the
/// kept images (`limits::KEEP`), the images pointers protect, and what it changed, at most a few per run
/// (`retire::CHANGES_PER_REGION`: 5 deprecated, 5 deregistered, 10 orphan snapshots, 10 snapshots left listed).
fn retire() -> RetireOutput {
    let images = |n: usize| vec![id("ami-"); n];
    let skipped = |reason: String| SkippedSnapshot {
        snapshot_id: id("snap-"),
        reason,
    };
    let cut = long(crate::aws::ec2::MAX_REASON_CHARS + 3);
    let region = RetiredRegion {
        region: longest_region(),
        kept: images(limits::KEEP as usize),
        deprecated: vec![
            Deprecation {
                image_id: id("ami-"),
                deprecate_at: "+262143-12-31T23:59:00Z".into(),
            };
            5
        ],
        deregistered: images(5),
        protected: images(limits::PUBLISH_PARAMETERS + limits::LAUNCH_TEMPLATES),
        deregistration_protected: images(5),
        orphan_snapshots_deleted: Vec::new(),
        orphan_snapshots_skipped: vec![skipped(cut.clone()); 10],
        abandoned_deregistered: images(5),
        snapshots_left: vec![skipped(format!("DeregisterImage: missing-permissions; DeleteSnapshot: {cut}")); 10],
    };
    RetireOutput {
        regions: vec![region; KNOWN_REGIONS.len()],
    }
}

/// Cleanup's output, a Task result too: what one execution made, generously: the builder and the test instance in
/// every placement a recipe allows (25 each), in the run's region a candidate and a second snapshot set (a lost
/// CreateSnapshots answer), elsewhere a copy, each image of `MAX_EBS_VOLUMES` snapshots.
fn cleanup() -> CleanupOutput {
    let region = |instances: usize, sets: usize| CleanedRegion {
        region: longest_region(),
        instances_terminated: vec![id("i-"); instances],
        images_deregistered: vec![id("ami-"); 1],
        snapshots_deleted: vec![id("snap-"); sets * MAX_EBS_VOLUMES],
        snapshots_left: Vec::new(),
        released_kept: Vec::new(),
        tested_kept: Vec::new(),
    };
    let mut regions = vec![region(50, 2)];
    regions.extend((1..KNOWN_REGIONS.len()).map(|_| region(0, 1)));
    CleanupOutput {
        execution: long(crate::model::naming::MAX_EXECUTION_NAME),
        regions,
    }
}

/// A caught error as the Catch writes it (`{Error, Cause}`): an error name (at most 256 characters) and the longest
/// cause, AWS's own; a handler's is shorter.
fn caught() -> Value {
    json!({"Error": long(256), "Cause": long(MAX_CAUSE_BYTES)})
}

fn size(v: &impl Serialize) -> usize {
    serde_json::to_vec(v).expect("serializes").len()
}

#[test]
fn worst_case_state_is_four_fifths_of_the_payload_quota() {
    let steps = json!({
        "build": build(), "snapshot": snapshot(), "register": image_state(), "test_launch": test_launch(),
        "copy": copy(), "share": share(),
    });
    let mut summary_input = json!({"run": run(), "steps": steps.clone(),
                                   "warnings": {"retire": caught(), "notice": crate::definition::WARNING_NOTICE}});
    summary_input["steps"]["publish"] = serde_json::to_value(publish()).expect("serializes");
    let failed_input = json!({"run": run(), "steps": steps, "warnings": {}, "error": caught(),
                              "cleanup_error": caught()});

    let parts = [
        ("run", size(&run())),
        ("build", size(&build())),
        ("snapshot", size(&snapshot())),
        ("register", size(&image_state())),
        ("test_launch", size(&test_launch())),
        ("copy", size(&copy())),
        ("share", size(&share())),
        ("publish", size(&publish())),
        ("an error", size(&caught())),
    ];
    let (summary, failed) = (size(&summary_input), size(&failed_input));
    let worst = summary.max(failed);
    println!(
        "worst-case state {worst} bytes ({}% of {PAYLOAD_QUOTA_BYTES}): entering Summary {summary}, entering Failed \
         {failed}; parts {parts:?}",
        worst * 100 / PAYLOAD_QUOTA_BYTES
    );
    assert!(
        worst <= PAYLOAD_QUOTA_BYTES * 4 / 5,
        "worst case {worst} bytes: above four fifths of the 256 KiB quota; {parts:?}"
    );
    // The reports kept out of the state are Task results, each within the quota on its own.
    for (what, bytes) in [("retire", size(&retire())), ("cleanup", size(&cleanup()))] {
        println!("worst-case {what} output {bytes} bytes");
        assert!(
            bytes <= PAYLOAD_QUOTA_BYTES * 4 / 5,
            "{what}'s output can be {bytes} bytes"
        );
    }
    // A handler's error message is cut, so its cause (the message inside `{errorType, errorMessage}`, escaped once
    // more in the state) stays far under AWS's.
    const { assert!(2 * MAX_ERROR_MESSAGE_BYTES + 512 < MAX_CAUSE_BYTES) };
}
