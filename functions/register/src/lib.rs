//! register: `start` registers the image from the snapshots with the full block device mapping, the recipe's
//! settings, the planned boot mode and the instance's UEFI variable store, tagged on create (or, when the snapshot
//! step made the image with CreateImage, adopts it and sets ImdsSupport); `status` reports pending until it is
//! available, then checks its billing, boot mode and NitroTPM against the plan (`AmiPipeline.PlatformMismatch`).

use aws_sdk_ec2::types::{
    ArchitectureValues, AttributeValue, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ImdsSupportValues,
    InstanceBootModeValues, ResourceType, TpmSupportValues, VolumeType,
};
use lambda_runtime::tracing;

use ami_core::aws::ec2::{ImageProgress, image_progress};
use ami_core::aws::error::{Error, Result, SdkResultExt, aws_code};
use ami_core::aws::platform::{self, Method};
use ami_core::definition::{self, StepDef};
use ami_core::model::recipe::RootDeviceType;
use ami_core::model::steps::{ImageState, Progress, SnapshotState, Status, StepRequest};
use ami_core::step::Step;
use ami_core::{aws::image, aws::tags};

/// The EC2 client of the run's region, where this runs; built once per process.
pub struct Deps(pub aws_sdk_ec2::Client);

impl Step for Deps {
    type Output = ImageState;
    const DEF: &'static StepDef = &definition::REGISTER;

    async fn start(&self, req: &StepRequest, now: i64) -> Result<ImageState> {
        let snap = req.steps.snapshot()?;
        let recipe = &req.run.recipe;
        let name = image::name(req);
        let progress = Progress::start(now, recipe.image.timeout_minutes);
        let state = |image_id: String| ImageState {
            region: req.run.region.clone(),
            image_id,
            name: name.clone(),
            progress,
        };

        if snap.plan.method == Method::CreateImage {
            // The snapshot step made the image with CreateImage (licensed platforms keep their billing that way).
            let id = snap.image_id.clone().ok_or_else(|| {
                Error::invalid(
                    "input.steps.snapshot.image_id",
                    "the snapshot step made no image with CreateImage",
                )
            })?;
            if recipe.image.imds_v2 {
                // CreateImage takes no ImdsSupport; ModifyImageAttribute sets it (and it cannot be undone, so a
                // retried call finds it already set).
                self.0
                    .modify_image_attribute()
                    .image_id(&id)
                    .imds_support(AttributeValue::builder().value("v2.0").build())
                    .send()
                    .await
                    .aws("ModifyImageAttribute")?;
            }
            return Ok(state(id));
        }

        // A retried start adopts the image it already registered (RegisterImage takes no ClientToken).
        if let Some(id) = image::own(&self.0, req, None).await? {
            return Ok(state(id));
        }
        let uefi_data = uefi_data(self, snap).await?;

        let mut call = self
            .0
            .register_image()
            .name(&name)
            .description(image::description(req))
            .architecture(match recipe.image.architecture {
                ami_core::model::recipe::Architecture::X86_64 => ArchitectureValues::X8664,
                ami_core::model::recipe::Architecture::Arm64 => ArchitectureValues::Arm64,
            })
            .virtualization_type("hvm")
            .ena_support(recipe.image.ena_support)
            .sriov_net_support("simple")
            .set_boot_mode(snap.plan.boot_mode.as_deref().map(BootModeValues::from))
            .set_tpm_support(snap.plan.tpm_support.then_some(TpmSupportValues::V20))
            .set_uefi_data(uefi_data)
            .set_imds_support(recipe.image.imds_v2.then_some(ImdsSupportValues::V20))
            .tag_specifications(tags::spec(
                ResourceType::Image,
                image::candidate_tags(req, &snap.source_image_id),
            ));
        call = match (recipe.image.root_device_type, &recipe.image.s3_manifest) {
            // ImageLocation is `bucket/path/image.manifest.xml`, not the recipe's `s3://` URL (RegisterImage API
            // reference); an `s3://` location fails `InvalidManifest`.
            (RootDeviceType::InstanceStore, Some(manifest)) => {
                call.image_location(ami_core::aws::instance_store::image_location(manifest)?)
            }
            _ => {
                if snap.snapshots.is_empty() {
                    return Err(Error::invalid(
                        "input.steps.snapshot.snapshots",
                        "no snapshots to register from",
                    ));
                }
                call.root_device_name(&snap.root_device_name)
                    .set_block_device_mappings(Some(
                        snap.snapshots
                            .iter()
                            .map(|s| {
                                // A mapping by snapshot id takes the snapshot's encryption, so no Encrypted flag here.
                                let ebs = EbsBlockDevice::builder()
                                    .snapshot_id(&s.snapshot_id)
                                    .volume_size(s.size_gib)
                                    .volume_type(VolumeType::from(s.volume_type.as_str()))
                                    .set_iops(s.iops)
                                    .set_throughput(s.throughput)
                                    .delete_on_termination(true)
                                    .build();
                                BlockDeviceMapping::builder()
                                    .device_name(&s.device_name)
                                    .ebs(ebs)
                                    .build()
                            })
                            .collect(),
                    ))
            }
        };

        match call.send().await {
            Ok(out) => {
                let id = out
                    .image_id()
                    .ok_or_else(|| Error::Internal("RegisterImage returned no image id".into()))?;
                Ok(state(id.to_string()))
            }
            Err(e) if aws_code(&e) == Some("InvalidAMIName.Duplicate") => {
                // Registered by a lost earlier attempt of ours (adopt; not listed yet is transient), or the name
                // belongs to someone else (Conflict).
                image::adopt_by_name(&self.0, req, &name).await.map(state)
            }
            Err(e) => Err(ami_core::aws::error::from_sdk("RegisterImage", e)),
        }
    }

    async fn status(&self, req: &StepRequest, now: i64) -> Result<ImageState> {
        let state = req.steps.register()?.clone();
        state.progress.check_deadline(now, "image registration")?;
        let image = ami_core::aws::ec2::describe_image(&self.0, &state.image_id).await?;
        let status = match image_progress(image.as_ref()) {
            ImageProgress::Available => {
                // Billing, boot mode and NitroTPM as planned, or the image is discarded (cleanup removes it).
                if let Some(image) = &image {
                    platform::check_made(image, &req.steps.snapshot()?.plan)?;
                }
                Status::Ready
            }
            ImageProgress::Pending => Status::Pending,
            ImageProgress::Failed(why) => return Err(Error::ImageFailed(why)),
        };
        Ok(ImageState {
            progress: state.progress.with_status(status),
            ..state
        })
    }

    fn progress(out: &ImageState) -> Option<&Progress> {
        Some(&out.progress)
    }
}

/// The instance's UEFI variable store, so Secure Boot keys and other non-volatile variables survive into the image
/// (GetInstanceUefiData -> RegisterImage UefiData, EC2 API reference), read only when there is one to carry:
/// - the image may boot UEFI (its planned boot mode);
/// - the instance booted UEFI (DescribeInstances `CurrentInstanceBootMode`: a `uefi-preferred` image boots legacy
///   BIOS on a type without UEFI, and then has no variable store of its own);
/// - its type keeps the store across a stop: "Bare metal instances don't preserve UEFI non-volatile variables across
///   instance stop/start" (EC2 User Guide, "UEFI variables for Amazon EC2 instances"; DescribeInstanceTypes
///   `BareMetal`), and the builder is stopped before its snapshots, so what a bare-metal builder holds then is not
///   what the build left. The image then starts from EC2's default store.
///
/// The instance still exists (the builder is terminated after register). EC2 answers an empty store as no data.
async fn uefi_data(deps: &Deps, snap: &SnapshotState) -> Result<Option<String>> {
    if !matches!(snap.plan.boot_mode.as_deref(), Some("uefi" | "uefi-preferred")) {
        return Ok(None);
    }
    let id = &snap.instance_id;
    let instance = ami_core::aws::ec2::describe_instance(&deps.0, id)
        .await?
        .ok_or_else(|| {
            Error::ResourceGone(format!(
                "instance {id}, whose UEFI variable store the image takes, is gone"
            ))
        })?;
    if instance.current_instance_boot_mode() != Some(&InstanceBootModeValues::Uefi) {
        return Ok(None);
    }
    if let Some(t) = instance.instance_type() {
        let types = deps
            .0
            .describe_instance_types()
            .instance_types(t.clone())
            .send()
            .await
            .aws("DescribeInstanceTypes")?;
        if types.instance_types().iter().any(|i| i.bare_metal() == Some(true)) {
            tracing::warn!(instance = %id, r#type = t.as_str(), "bare metal: UEFI variables not kept across its stop");
            return Ok(None);
        }
    }
    let out = deps
        .0
        .get_instance_uefi_data()
        .instance_id(id)
        .send()
        .await
        .aws("GetInstanceUefiData")?;
    Ok(out.uefi_data().filter(|d| !d.is_empty()).map(String::from))
}

#[cfg(test)]
mod tests;
