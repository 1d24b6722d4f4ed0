//! EC2 calls several handlers share, with AWS's idempotency and eventual-consistency rules applied once.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, Image, ImageState, Instance};

use crate::aws::error::{Result, SdkResultExt, aws_code, from_sdk};
use crate::aws::runtime::{CALL_BUDGET, ensure_time_left};
use crate::aws::tags;

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

/// Deregisters an image with its snapshots in the same call (`DeleteAssociatedSnapshots`: no window in which
/// they are left behind; one another AMI uses is kept, "regardless of this setting"). An image already gone
/// counts as done; its listed snapshots are then deleted one by one, in case it went without them.
pub async fn deregister_with_snapshots(ec2: &Client, image: &Image) -> Result<()> {
    let image_id = image.image_id().unwrap_or_default();
    match ec2
        .deregister_image()
        .image_id(image_id)
        .delete_associated_snapshots(true)
        .send()
        .await
    {
        Ok(out) => {
            for r in out.delete_snapshot_results() {
                tracing::info!(image = %image_id, snapshot = ?r.snapshot_id(), result = ?r.return_code(), "snapshot");
            }
            Ok(())
        }
        Err(e) if matches!(aws_code(&e), Some("InvalidAMIID.NotFound" | "InvalidAMIID.Unavailable")) => {
            let snapshots: Vec<String> = image
                .block_device_mappings()
                .iter()
                .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(String::from))
                .collect();
            delete_snapshots(ec2, &snapshots).await
        }
        Err(e) => Err(from_sdk("DeregisterImage", e)),
    }
}

/// Deletes snapshots; ones already gone count as done. A snapshot still used by another image is kept.
pub async fn delete_snapshots(ec2: &Client, snapshot_ids: &[String]) -> Result<()> {
    for (i, id) in snapshot_ids.iter().enumerate() {
        if i > 0 {
            // One call per snapshot: stop before the Lambda timeout; a retry finds what is left.
            ensure_time_left(CALL_BUDGET, "deleting snapshots")?;
        }
        match ec2.delete_snapshot().snapshot_id(id).send().await {
            Ok(_) => {}
            Err(e) if aws_code(&e) == Some("InvalidSnapshot.NotFound") => {}
            Err(e) if aws_code(&e) == Some("InvalidSnapshot.InUse") => {
                tracing::warn!(snapshot = %id, "snapshot still used by another image; kept");
            }
            Err(e) => return Err(from_sdk("DeleteSnapshot", e)),
        }
    }
    Ok(())
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
