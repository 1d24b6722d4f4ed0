//! EC2 calls several handlers share, with AWS's idempotency and eventual-consistency rules applied once.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, Image, ImageState, Instance};

use crate::error::{Result, SdkResultExt, aws_code};

/// Just after a create, `DescribeImages` may not know the image yet (`InvalidAMIID.NotFound`): that is pending.
pub async fn describe_image(ec2: &Client, image_id: &str) -> Result<Option<Image>> {
    match ec2.describe_images().image_ids(image_id).send().await {
        Ok(out) => Ok(out.images().first().cloned()),
        Err(e) if matches!(aws_code(&e), Some("InvalidAMIID.NotFound" | "InvalidAMIID.Unavailable")) => Ok(None),
        Err(e) => Err(crate::error::from_sdk("DescribeImages", e)),
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
        Err(e) => Err(crate::error::from_sdk("DescribeInstances", e)),
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
        Err(e) => Err(crate::error::from_sdk("TerminateInstances", e)),
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
        Err(e) => Err(crate::error::from_sdk("DeregisterImage", e)),
    }
}

/// Deletes snapshots; ones already gone count as done. A snapshot still used by another image is kept.
pub async fn delete_snapshots(ec2: &Client, snapshot_ids: &[String]) -> Result<()> {
    for id in snapshot_ids {
        match ec2.delete_snapshot().snapshot_id(id).send().await {
            Ok(_) => {}
            Err(e) if aws_code(&e) == Some("InvalidSnapshot.NotFound") => {}
            Err(e) if aws_code(&e) == Some("InvalidSnapshot.InUse") => {
                tracing::warn!(snapshot = %id, "snapshot still used by another image; kept");
            }
            Err(e) => return Err(crate::error::from_sdk("DeleteSnapshot", e)),
        }
    }
    Ok(())
}

/// The pipeline's newest released image in a region, if any.
pub async fn newest_released(ec2: &Client, pipeline: &str) -> Result<Option<Image>> {
    let images = own_images(
        ec2,
        vec![
            crate::tags::filter(crate::tags::PIPELINE, pipeline),
            crate::tags::filter(crate::tags::STATE, crate::tags::STATE_RELEASED),
        ],
    )
    .await?;
    Ok(images
        .into_iter()
        .max_by(|a, b| a.creation_date().cmp(&b.creation_date())))
}

/// The instance's console output, decoded (EC2 returns it base64-encoded).
pub async fn console_text(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<String> {
    let out = ec2
        .get_console_output()
        .instance_id(id)
        .latest(true)
        .send()
        .await
        .aws("GetConsoleOutput")?;
    let raw = out.output().unwrap_or_default();
    let bytes = aws_smithy_types::base64::decode(raw).unwrap_or_else(|_| raw.as_bytes().to_vec());
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The launch settings every instance of the pipeline gets, in one place: IMDSv2 required (hop limit 1), one
/// network interface without a public IP, in the given subnet and security groups.
pub fn locked_down(
    call: aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder,
    subnet_id: Option<String>,
    security_group_ids: Vec<String>,
) -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder {
    use aws_sdk_ec2::types::{
        HttpTokensState, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
        InstanceNetworkInterfaceSpecification,
    };
    call.metadata_options(
        InstanceMetadataOptionsRequest::builder()
            .http_tokens(HttpTokensState::Required)
            .http_endpoint(InstanceMetadataEndpointState::Enabled)
            .http_put_response_hop_limit(1)
            .build(),
    )
    .network_interfaces(
        InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .associate_public_ip_address(false)
            .delete_on_termination(true)
            .set_subnet_id(subnet_id)
            .set_groups(Some(security_group_ids).filter(|g| !g.is_empty()))
            .build(),
    )
}
