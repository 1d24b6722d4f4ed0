//! EC2 calls several handlers share, with AWS's idempotency and eventual-consistency rules applied once.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, Image, ImageState, Instance, Snapshot, SnapshotReturnCodes};

use crate::aws::error::{Error, Result, SdkResultExt, aws_code, from_sdk};
use crate::aws::runtime::{CALL_BUDGET, ensure_time_left};
use crate::aws::tags;
use crate::model::lifecycle::SkippedSnapshot;
use crate::model::naming;

/// How long an id this execution created may stay unknown to describe calls before it counts as gone. EC2 is
/// eventually consistent: "if you run a command to modify or describe the resource that you just created, its ID
/// might not have propagated throughout the system, and you will get an error responding that the resource does
/// not exist" ("Eventual consistency in the Amazon EC2 API", EC2 developer guide).
pub const NOT_FOUND_GRACE_SECONDS: i64 = 120;

/// Pause before a tag look-up that found nothing is made once more, where creating again could make a second
/// resource (the look-up is eventually consistent too; the same guide: retry describes "starting with a couple of
/// seconds").
pub const LOOKUP_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a NotFound for an id created at `created_at` is still the consistency window, not a disappearance.
pub fn within_grace(created_at: i64, now: i64) -> bool {
    now - created_at < NOT_FOUND_GRACE_SECONDS
}

/// Just after a create, `DescribeImages` may not know the image yet (`InvalidAMIID.NotFound`): that is pending.
pub async fn describe_image(ec2: &Client, image_id: &str) -> Result<Option<Image>> {
    match ec2.describe_images().image_ids(image_id).send().await {
        Ok(out) => Ok(out.images().first().cloned()),
        Err(e) if matches!(aws_code(&e), Some("InvalidAMIID.NotFound" | "InvalidAMIID.Unavailable")) => Ok(None),
        Err(e) => Err(from_sdk("DescribeImages", e)),
    }
}

/// Our own images (owner `self`) matching `filters`, all pages.
pub async fn own_images(ec2: &Client, filters: Vec<Filter>) -> Result<Vec<Image>> {
    // Disabled images are hidden from DescribeImages unless asked for (DescribeImages IncludeDisabled): retire
    // and cleanup must see them too.
    let mut pages = ec2
        .describe_images()
        .owners("self")
        .include_disabled(true)
        .set_filters(Some(filters))
        .into_paginator()
        .send();
    let mut images = Vec::new();
    while let Some(page) = pages.next().await {
        images.extend(page.aws("DescribeImages")?.images().iter().cloned());
    }
    Ok(images)
}

/// Where an image is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageProgress {
    Pending,
    Available,
    Failed(String),
}

pub fn image_progress(image: Option<&Image>) -> ImageProgress {
    let Some(image) = image else {
        return ImageProgress::Pending;
    };
    match image.state() {
        Some(ImageState::Available) => ImageProgress::Available,
        Some(ImageState::Pending) | None => ImageProgress::Pending,
        Some(other) => {
            let reason = image
                .state_reason()
                .and_then(|r| r.message())
                .unwrap_or("no reason given");
            ImageProgress::Failed(format!(
                "image {} is {}: {reason}",
                image.image_id().unwrap_or("?"),
                other.as_str()
            ))
        }
    }
}

pub async fn describe_instance(ec2: &Client, instance_id: &str) -> Result<Option<Instance>> {
    match ec2.describe_instances().instance_ids(instance_id).send().await {
        Ok(out) => Ok(out.reservations().iter().flat_map(|r| r.instances()).next().cloned()),
        Err(e) if aws_code(&e) == Some("InvalidInstanceID.NotFound") => Ok(None),
        Err(e) => Err(from_sdk("DescribeInstances", e)),
    }
}

/// Instances (any state but terminated) matching `filters`.
pub async fn find_instances(ec2: &Client, filters: Vec<Filter>) -> Result<Vec<Instance>> {
    let live = Filter::builder()
        .name("instance-state-name")
        .set_values(Some(
            ["pending", "running", "stopping", "stopped", "shutting-down"]
                .map(String::from)
                .to_vec(),
        ))
        .build();
    let out = ec2
        .describe_instances()
        .set_filters(Some(filters.into_iter().chain([live]).collect()))
        .send()
        .await
        .aws("DescribeInstances")?;
    Ok(out.reservations().iter().flat_map(|r| r.instances()).cloned().collect())
}

/// `find_instances`, made once more after `LOOKUP_PAUSE` when it finds nothing and `again` is set: for a retried
/// start that would otherwise launch with another ClientToken than the attempt that already made an instance.
pub async fn find_instances_settled(ec2: &Client, filters: Vec<Filter>, again: bool) -> Result<Vec<Instance>> {
    let found = find_instances(ec2, filters.clone()).await?;
    if !found.is_empty() || !again {
        return Ok(found);
    }
    tokio::time::sleep(LOOKUP_PAUSE).await;
    find_instances(ec2, filters).await
}

/// Terminates instances; ones already gone count as done.
pub async fn terminate(ec2: &Client, instance_ids: &[String]) -> Result<()> {
    if instance_ids.is_empty() {
        return Ok(());
    }
    match ec2
        .terminate_instances()
        .set_instance_ids(Some(instance_ids.to_vec()))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if aws_code(&e) == Some("InvalidInstanceID.NotFound") => {
            // One unknown id fails the whole call: retry one by one so the others still go.
            if instance_ids.len() > 1 {
                for id in instance_ids {
                    Box::pin(terminate(ec2, std::slice::from_ref(id))).await?;
                }
            }
            Ok(())
        }
        Err(e) => Err(from_sdk("TerminateInstances", e)),
    }
}

/// Whether deregistration protection keeps the image (EnableImageDeregistrationProtection: "the AMI can't be
/// deregistered"). DescribeImages' `DeregistrationProtection` is a string whose values the API reference does not
/// list; anything but `disabled` (an enabled one, or one disabled but still in its 24-hour cooldown) counts as
/// protected, so a protected image is skipped rather than failing the run.
pub fn has_deregistration_protection(image: &Image) -> bool {
    image
        .deregistration_protection()
        .map(str::trim)
        .is_some_and(|p| !p.is_empty() && p != "disabled")
}

/// What became of the snapshots a call asked EC2 to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletion {
    /// Gone: deleted, or already gone.
    pub deleted: Vec<String>,
    /// Kept because another AMI uses it (DeregisterImage's `skipped`).
    pub in_use: Vec<String>,
    /// Still there after every attempt, with EC2's answers: each carries the tags of retire's orphan sweep, which
    /// removes it later (see [`settle`]).
    pub left: Vec<SkippedSnapshot>,
}

impl Deletion {
    pub fn extend(&mut self, other: Deletion) {
        self.deleted.extend(other.deleted);
        self.in_use.extend(other.in_use);
        self.left.extend(other.left);
    }
}

/// Deregisters an image with its snapshots in the same call (`DeleteAssociatedSnapshots`: no window in which they
/// are left behind; one another AMI uses is kept, "regardless of this setting"). DeregisterImage succeeds whatever
/// happens to each snapshot and reports it in `DeleteSnapshotResults` (`success`, `skipped` for one another AMI
/// uses, or `missing-permissions` / `internal-error` / `client-error`: EC2 API reference, DeleteSnapshotReturnCode):
/// a snapshot EC2 could not delete is deleted again with DeleteSnapshot (never a `skipped` one: a data snapshot of
/// another AMI would be deleted), and what is still there is settled by [`settle`]. An image already gone counts as
/// done; its listed snapshots are then deleted one by one, in case it went without them.
pub async fn deregister_with_snapshots(ec2: &Client, image: &Image) -> Result<Deletion> {
    let image_id = image.image_id().unwrap_or_default();
    let out = match ec2
        .deregister_image()
        .image_id(image_id)
        .delete_associated_snapshots(true)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if matches!(aws_code(&e), Some("InvalidAMIID.NotFound" | "InvalidAMIID.Unavailable")) => {
            let snapshots: Vec<String> = image
                .block_device_mappings()
                .iter()
                .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(String::from))
                .collect();
            return settle(ec2, delete_snapshots(ec2, &snapshots).await?).await;
        }
        Err(e) => return Err(from_sdk("DeregisterImage", e)),
    };
    let mut done = Deletion::default();
    let mut again = Vec::new();
    for r in out.delete_snapshot_results() {
        let (Some(id), code) = (r.snapshot_id(), r.return_code()) else {
            continue;
        };
        tracing::info!(image = %image_id, snapshot = %id, result = ?code, "snapshot");
        match code {
            Some(SnapshotReturnCodes::Success) => done.deleted.push(id.to_string()),
            Some(SnapshotReturnCodes::WarnSkipped) => done.in_use.push(id.to_string()),
            other => again.push((id.to_string(), other.map_or("no code", |c| c.as_str()).to_string())),
        }
    }
    for (id, code) in again {
        let mut retried = delete_snapshots(ec2, std::slice::from_ref(&id)).await?;
        for left in &mut retried.left {
            left.reason = format!("DeregisterImage: {code}; DeleteSnapshot: {}", left.reason);
        }
        done.extend(retried);
    }
    settle(ec2, done).await
}

/// Deletes snapshots one call each; one already gone counts as deleted. One EC2 still refuses after the SDK's
/// retries is `left` with its code: the image that used it may be gone already, so the caller reports it rather
/// than failing, and [`settle`] decides whether a later run removes it.
pub async fn delete_snapshots(ec2: &Client, snapshot_ids: &[String]) -> Result<Deletion> {
    let mut out = Deletion::default();
    for (i, id) in snapshot_ids.iter().enumerate() {
        if i > 0 {
            // One call per snapshot: stop before the Lambda timeout; a retry finds what is left.
            ensure_time_left(CALL_BUDGET, "deleting snapshots")?;
        }
        match ec2.delete_snapshot().snapshot_id(id).send().await {
            Ok(_) => out.deleted.push(id.clone()),
            Err(e) if aws_code(&e) == Some("InvalidSnapshot.NotFound") => out.deleted.push(id.clone()),
            Err(e) => {
                let code = aws_code(&e)
                    .map(String::from)
                    .unwrap_or_else(|| from_sdk("DeleteSnapshot", e).to_string());
                tracing::warn!(snapshot = %id, %code, "snapshot not deleted");
                out.left.push(SkippedSnapshot {
                    snapshot_id: id.clone(),
                    reason: naming::preview_n(&code, MAX_REASON_CHARS),
                });
            }
        }
    }
    Ok(out)
}

/// The most characters of EC2's answer a left snapshot's reason keeps (the step outputs stay small: see
/// `definition::payload`).
pub const MAX_REASON_CHARS: usize = 100;

/// Whether retire's orphan sweep will find a snapshot: the pipeline's, made by an execution, as every snapshot the
/// pipeline makes is tagged (`ami-pipeline:pipeline`, role `snapshot`, `ami-pipeline:execution`).
pub fn sweepable(snapshot: &Snapshot) -> bool {
    let t = snapshot.tags();
    tags::get(t, tags::PIPELINE).is_some_and(|p| !p.is_empty())
        && tags::get(t, tags::ROLE) == Some(tags::Role::Snapshot.as_str())
        && tags::get(t, tags::EXECUTION).is_some_and(|e| !e.is_empty())
}

/// Checks the snapshots a deletion left: one that is gone now counts as deleted, one retire's orphan sweep will
/// find (its tags, [`sweepable`]) stays `left` and is reported (a later run of its pipeline deletes it once it is
/// older than any execution); one nothing would ever remove fails with `AmiPipeline.AwsError` naming it and the fix.
pub async fn settle(ec2: &Client, mut deletion: Deletion) -> Result<Deletion> {
    if deletion.left.is_empty() {
        return Ok(deletion);
    }
    let ids: Vec<String> = deletion.left.iter().map(|l| l.snapshot_id.clone()).collect();
    // By filter, not by id: an id that is gone would fail the whole call.
    let found = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(Filter::builder().name("snapshot-id").set_values(Some(ids)).build())
        .send()
        .await
        .aws("DescribeSnapshots")?;
    let (mut left, mut stranded) = (Vec::new(), Vec::new());
    for l in std::mem::take(&mut deletion.left) {
        match found
            .snapshots()
            .iter()
            .find(|s| s.snapshot_id() == Some(&l.snapshot_id))
        {
            None => deletion.deleted.push(l.snapshot_id),
            Some(s) if sweepable(s) => left.push(l),
            Some(_) => stranded.push(format!("{} ({})", l.snapshot_id, l.reason)),
        }
    }
    if !stranded.is_empty() {
        return Err(Error::Aws {
            code: "SnapshotNotDeleted".into(),
            message: format!(
                "EC2 did not delete {}, and no later run removes it (it lacks the ami-pipeline tags retire's orphan                  sweep looks for): delete it with `aws ec2 delete-snapshot --snapshot-id <id>` once nothing uses it",
                stranded.join(", ")
            ),
        });
    }
    deletion.left = left;
    Ok(deletion)
}

/// The pipeline's newest released image in a region, if any.
pub async fn newest_released(ec2: &Client, pipeline: &str) -> Result<Option<Image>> {
    let images = own_images(
        ec2,
        vec![
            tags::filter(tags::PIPELINE, pipeline),
            tags::filter(tags::STATE, tags::STATE_RELEASED),
        ],
    )
    .await?;
    Ok(images
        .into_iter()
        .max_by(|a, b| a.creation_date().cmp(&b.creation_date())))
}

/// The instance's console output, decoded (EC2 returns it base64-encoded).
pub async fn console_text(ec2: &aws_sdk_ec2::Client, id: &str, latest: bool) -> Result<String> {
    let out = ec2
        .get_console_output()
        .instance_id(id)
        .set_latest(latest.then_some(true))
        .send()
        .await
        .aws("GetConsoleOutput")?;
    let raw = out.output().unwrap_or_default();
    let bytes = aws_smithy_types::base64::decode(raw).unwrap_or_else(|_| raw.as_bytes().to_vec());
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether an instance type runs on the Nitro hypervisor (DescribeInstanceTypes `Hypervisor`): GetConsoleOutput's
/// `Latest` "is supported on instance types that use the Nitro hypervisor" (EC2 API reference), so it is asked only
/// there.
pub async fn is_nitro(ec2: &aws_sdk_ec2::Client, instance_type: &str) -> Result<bool> {
    let out = ec2
        .describe_instance_types()
        .instance_types(instance_type.into())
        .send()
        .await
        .aws("DescribeInstanceTypes")?;
    Ok(out
        .instance_types()
        .iter()
        .any(|t| t.hypervisor() == Some(&aws_sdk_ec2::types::InstanceTypeHypervisor::Nitro)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_not_found_grace_period_counts_from_the_create() {
        assert!(within_grace(1_000, 1_000 + NOT_FOUND_GRACE_SECONDS - 1));
        assert!(!within_grace(1_000, 1_000 + NOT_FOUND_GRACE_SECONDS));
    }
}

#[cfg(all(test, feature = "testing"))]
mod deletion_tests {
    use aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput;
    use aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput;
    use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
    use aws_sdk_ec2::types::{BlockDeviceMapping, DeleteSnapshotReturnCode, EbsBlockDevice, Tag};
    use aws_smithy_mocks::{Rule, mock};

    use super::*;

    fn image(snapshots: &[&str]) -> Image {
        let mut b = Image::builder().image_id("ami-0123456789abcdef0");
        for s in snapshots {
            b = b.block_device_mappings(
                BlockDeviceMapping::builder()
                    .ebs(EbsBlockDevice::builder().snapshot_id(*s).build())
                    .build(),
            );
        }
        b.build()
    }

    /// DeregisterImage of the test image with DeleteAssociatedSnapshots, answering `results`.
    fn deregistered(results: &[(&str, SnapshotReturnCodes)]) -> Rule {
        let results: Vec<DeleteSnapshotReturnCode> = results
            .iter()
            .map(|(id, code)| {
                DeleteSnapshotReturnCode::builder()
                    .snapshot_id(*id)
                    .return_code(code.clone())
                    .build()
            })
            .collect();
        mock!(Client::deregister_image)
            .match_requests(|r| {
                r.image_id() == Some("ami-0123456789abcdef0") && r.delete_associated_snapshots() == Some(true)
            })
            .then_output(move || {
                DeregisterImageOutput::builder()
                    .set_delete_snapshot_results(Some(results.clone()))
                    .build()
            })
    }

    fn deleted(id: &'static str) -> Rule {
        mock!(Client::delete_snapshot)
            .match_requests(move |r| r.snapshot_id() == Some(id))
            .then_output(|| DeleteSnapshotOutput::builder().build())
    }

    /// DeleteSnapshot of `id` answering the EC2 error `code` on every attempt.
    fn refused(id: &'static str, status: u16, code: &str) -> Rule {
        mock!(Client::delete_snapshot)
            .match_requests(move |r| r.snapshot_id() == Some(id))
            .sequence()
            .http_status(status, Some(crate::testing::ec2_error_body(code)))
            .times(3)
            .build()
    }

    /// DescribeSnapshots by `snapshot-id` filter answering `id` with `tags`.
    fn described(id: &'static str, tags: &'static [(&'static str, &'static str)]) -> Rule {
        mock!(Client::describe_snapshots)
            .match_requests(move |r| {
                r.owner_ids() == ["self"]
                    && r.filters()
                        .iter()
                        .any(|f| f.name() == Some("snapshot-id") && f.values() == [id])
            })
            .then_output(move || {
                let tags = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build());
                DescribeSnapshotsOutput::builder()
                    .snapshots(
                        Snapshot::builder()
                            .snapshot_id(id)
                            .set_tags(Some(tags.collect()))
                            .build(),
                    )
                    .build()
            })
    }

    const SWEPT: &[(&str, &str)] = &[
        ("ami-pipeline:pipeline", "web"),
        ("ami-pipeline:role", "snapshot"),
        ("ami-pipeline:execution", "web-r-1-4-0-0f00ba11"),
    ];

    #[tokio::test]
    async fn a_snapshot_deregister_image_did_not_delete_is_deleted_again_and_a_skipped_one_is_left_alone() {
        let dereg = deregistered(&[
            ("snap-root", SnapshotReturnCodes::Success),
            ("snap-data", SnapshotReturnCodes::ErrorCodeInternalError),
            ("snap-shared", SnapshotReturnCodes::WarnSkipped),
        ]);
        let again = deleted("snap-data");
        let ec2 = crate::testing::ec2(&[&dereg, &again]);
        let out = deregister_with_snapshots(&ec2, &image(&["snap-root", "snap-data", "snap-shared"]))
            .await
            .unwrap();
        assert_eq!(out.deleted, ["snap-root", "snap-data"]);
        assert_eq!(out.in_use, ["snap-shared"], "another AMI's snapshot is never deleted");
        assert!(out.left.is_empty());
        assert_eq!((dereg.num_calls(), again.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn one_still_refused_is_left_for_the_orphan_sweep_when_tagged_for_it() {
        let dereg = deregistered(&[("snap-data", SnapshotReturnCodes::ErrorCodeInternalError)]);
        let again = refused("snap-data", 500, "InternalError");
        let look = described("snap-data", SWEPT);
        let ec2 = crate::testing::ec2(&[&dereg, &again, &look]);
        let out = deregister_with_snapshots(&ec2, &image(&["snap-data"])).await.unwrap();
        assert!(out.deleted.is_empty());
        assert_eq!(
            out.left,
            [SkippedSnapshot {
                snapshot_id: "snap-data".into(),
                reason: "DeregisterImage: internal-error; DeleteSnapshot: InternalError".into(),
            }]
        );
        assert_eq!(
            (again.num_calls(), look.num_calls()),
            (3, 1),
            "the SDK's three attempts, one look-up"
        );
    }

    #[tokio::test]
    async fn one_no_later_run_would_remove_fails_naming_it_and_the_fix() {
        let dereg = deregistered(&[("snap-data", SnapshotReturnCodes::ErrorMissingPermissions)]);
        let again = refused("snap-data", 400, "UnauthorizedOperation");
        let look = described("snap-data", &[("team", "platform")]);
        let ec2 = crate::testing::ec2(&[&dereg, &again, &look]);
        let err = deregister_with_snapshots(&ec2, &image(&["snap-data"]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.AwsError");
        let text = err.to_string();
        for part in [
            "snap-data",
            "missing-permissions",
            "UnauthorizedOperation",
            "aws ec2 delete-snapshot",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }

    #[tokio::test]
    async fn one_gone_by_the_look_up_counts_as_deleted() {
        let dereg = deregistered(&[("snap-data", SnapshotReturnCodes::ErrorCodeClientError)]);
        let again = refused("snap-data", 400, "InvalidSnapshot.InUse");
        let look = mock!(Client::describe_snapshots).then_output(|| DescribeSnapshotsOutput::builder().build());
        let ec2 = crate::testing::ec2(&[&dereg, &again, &look]);
        let out = deregister_with_snapshots(&ec2, &image(&["snap-data"])).await.unwrap();
        assert_eq!(out.deleted, ["snap-data"]);
        assert!(out.left.is_empty());
    }
}
