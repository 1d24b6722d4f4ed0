//! share: in every region of the run, grants launch permission on that region's image to the recipe's accounts,
//! organizations and OUs, and `createVolumePermission` on its snapshots to the accounts so they can copy it.
//! Public only with `distribution.public: true`. It adds only what is missing, so a repeated share is success
//! without calls beyond the reads.
//!
//! One call for all regions, `run.regions` order; each region's image comes from the copy step's output
//! (`steps.copy.images`: the tested candidate in the pipeline's region, a copy elsewhere). One action, `start`: the
//! grants take effect at once. A call that fails part-way is retried whole, and the regions already done then
//! report their grants under `already_granted`. The output counts the grants (`ShareOutput`); the grantees are the
//! recipe's.

use std::collections::BTreeSet;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    CreateVolumePermission, CreateVolumePermissionModifications, ImageAttributeName, LaunchPermission,
    LaunchPermissionModifications, PermissionGroup, SnapshotAttributeName,
};

use ami_core::aws::ec2::{self, ImageProgress};
use ami_core::aws::error::{Error, Result, SdkResultExt, aws_code, from_sdk};
use ami_core::definition::{self, StepDef};
use ami_core::model::sharing::{Grantee, Grants, ShareOutput, ShareState};
use ami_core::model::steps::ImageState;
use ami_core::model::steps::StepRequest;
use ami_core::step::{Clients, Step};
use ami_core::{model::recipe::Distribution, validate::check_id, validate::is_account};

/// Clients, built once per process: one EC2 client per region, made on first use.
pub struct Deps(pub Clients);

impl Step for Deps {
    type Output = ShareState;
    const DEF: &'static StepDef = &definition::SHARE;

    async fn start(&self, req: &StepRequest, _now: i64) -> Result<ShareState> {
        let targets = plan(req)?;
        let wanted = launch_permissions(&req.run.recipe.distribution)?;
        let mut regions = Vec::with_capacity(targets.len());
        for image in targets {
            let what = format!("share in {}", image.region);
            ami_core::aws::runtime::ensure_time_left(ami_core::aws::runtime::CALL_BUDGET, &what)?;
            regions.push(share_in(self, image, &wanted).await?);
        }
        Ok(ShareState { regions })
    }
}

/// The launch permissions the recipe asks for, sorted and without duplicates. Making an image public is
/// refused unless `public` is set, whatever path asks for it: recipe validation already rejects an account
/// that is not 12 digits, and this check stays in case that ever changes.
pub fn launch_permissions(d: &Distribution) -> Result<Vec<Grantee>> {
    let mut out = BTreeSet::new();
    for (i, account) in d.accounts.iter().enumerate() {
        let field = format!("recipe.distribution.accounts[{i}]");
        if account.trim().eq_ignore_ascii_case("all") {
            if !d.public {
                return Err(Error::PublicSharingNotAllowed(format!(
                    "{field} is `all`, which shares the image with everyone; set `distribution.public: true` to \
                     make it public on purpose"
                )));
            }
            continue; // `Group=all` below
        }
        if !is_account(account) {
            return Err(Error::invalid(field, "must be a 12-digit AWS account id"));
        }
        out.insert(Grantee::Account(account.clone()));
    }
    out.extend(d.organization_arns.iter().cloned().map(Grantee::Organization));
    out.extend(
        d.organizational_unit_arns
            .iter()
            .cloned()
            .map(Grantee::OrganizationalUnit),
    );
    if d.public {
        out.insert(Grantee::Public);
    }
    Ok(out.into_iter().collect())
}

fn to_sdk(g: &Grantee) -> LaunchPermission {
    let p = LaunchPermission::builder();
    match g {
        Grantee::Account(a) => p.user_id(a),
        Grantee::Organization(arn) => p.organization_arn(arn),
        Grantee::OrganizationalUnit(arn) => p.organizational_unit_arn(arn),
        Grantee::Public => p.group(PermissionGroup::All),
    }
    .build()
}

fn from_sdk_permission(p: &LaunchPermission) -> Option<Grantee> {
    if let Some(a) = p.user_id() {
        Some(Grantee::Account(a.to_string()))
    } else if let Some(arn) = p.organization_arn() {
        Some(Grantee::Organization(arn.to_string()))
    } else if let Some(arn) = p.organizational_unit_arn() {
        Some(Grantee::OrganizationalUnit(arn.to_string()))
    } else if p.group() == Some(&PermissionGroup::All) {
        Some(Grantee::Public)
    } else {
        None
    }
}

/// A copy that just turned available may still answer `InvalidAMIID.Unavailable` (or not be known yet) to
/// attribute calls: retrying shortly helps, so it is `Transient`, not a failure.
fn image_call_failed<E, R>(operation: &str, image_id: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match aws_code(&err) {
        Some(code @ ("InvalidAMIID.Unavailable" | "InvalidAMIID.NotFound")) => {
            Error::Transient(format!("{operation}: image {image_id} is not available yet ({code})"))
        }
        _ => from_sdk(operation, err),
    }
}

/// The image to share in each region of the run, `run.regions` order, checked before any call.
fn plan(req: &StepRequest) -> Result<Vec<&ImageState>> {
    let images = &req.steps.copy()?.images;
    for (i, image) in images.iter().enumerate() {
        check_id(
            &format!("input.steps.copy.images[{i}].image_id"),
            "ami-",
            &image.image_id,
        )?;
    }
    req.run
        .regions
        .iter()
        .map(|region| {
            images.iter().find(|i| &i.region == region).ok_or_else(|| {
                Error::invalid(
                    "input.steps.copy.images",
                    format!("no image for region `{region}`: pass the copy step's output"),
                )
            })
        })
        .collect()
}

/// Shares one region's image.
async fn share_in(deps: &Deps, image: &ImageState, wanted: &[Grantee]) -> Result<ShareOutput> {
    let region = image.region.as_str();
    let image_id = image.image_id.as_str();
    let mut out = ShareOutput {
        region: region.to_string(),
        image_id: image_id.to_string(),
        ..ShareOutput::default()
    };
    if wanted.is_empty() {
        return Ok(out);
    }
    let ec2 = deps.0.ec2.get(region);

    // The image's snapshots, and a clear answer if it is not (yet) shareable.
    let described = ec2::describe_image(&ec2, image_id).await?;
    match ec2::image_progress(described.as_ref()) {
        ImageProgress::Available => {}
        ImageProgress::Pending => {
            return Err(Error::Transient(format!(
                "image {image_id} in {region} is not available yet"
            )));
        }
        ImageProgress::Failed(why) => return Err(Error::ImageFailed(why)),
    }
    let snapshot_ids: Vec<String> = described
        .iter()
        .flat_map(|i| i.block_device_mappings())
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(String::from))
        .collect();

    let current: BTreeSet<Grantee> = ec2
        .describe_image_attribute()
        .image_id(image_id)
        .attribute(ImageAttributeName::LaunchPermission)
        .send()
        .await
        .map_err(|e| image_call_failed("DescribeImageAttribute", image_id, e))?
        .launch_permissions()
        .iter()
        .filter_map(from_sdk_permission)
        .collect();
    let (already, missing): (Vec<Grantee>, Vec<Grantee>) = wanted.iter().cloned().partition(|g| current.contains(g));
    if !missing.is_empty() {
        ec2.modify_image_attribute()
            .image_id(image_id)
            .launch_permission(
                LaunchPermissionModifications::builder()
                    .set_add(Some(missing.iter().map(to_sdk).collect()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| image_call_failed("ModifyImageAttribute", image_id, e))?;
    }
    out.launch_permissions = Grants {
        granted: missing.len(),
        already_granted: already.len(),
    };

    // Launching needs only the image permission; copying also needs the snapshots (organizations cannot be
    // named on a snapshot, so only the accounts get them).
    let accounts: Vec<&String> = wanted
        .iter()
        .filter_map(|g| match g {
            Grantee::Account(a) => Some(a),
            _ => None,
        })
        .collect();
    if !accounts.is_empty() {
        for snapshot_id in &snapshot_ids {
            out.create_volume_permissions
                .add(share_snapshot(&ec2, snapshot_id, &accounts).await?);
        }
        out.snapshots = snapshot_ids.len();
    }
    lambda_runtime::tracing::info!(
        image_id,
        region,
        granted = ?missing,
        snapshots = out.snapshots,
        "shared"
    );
    Ok(out)
}

async fn share_snapshot(ec2: &aws_sdk_ec2::Client, snapshot_id: &str, accounts: &[&String]) -> Result<Grants> {
    let current: BTreeSet<String> = ec2
        .describe_snapshot_attribute()
        .snapshot_id(snapshot_id)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .aws("DescribeSnapshotAttribute")?
        .create_volume_permissions()
        .iter()
        .filter_map(|p| p.user_id().map(String::from))
        .collect();
    let (already, missing): (Vec<String>, Vec<String>) = accounts
        .iter()
        .map(|a| a.to_string())
        .partition(|a| current.contains(a));
    if !missing.is_empty() {
        ec2.modify_snapshot_attribute()
            .snapshot_id(snapshot_id)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .create_volume_permission(
                CreateVolumePermissionModifications::builder()
                    .set_add(Some(
                        missing
                            .iter()
                            .map(|a| CreateVolumePermission::builder().user_id(a).build())
                            .collect(),
                    ))
                    .build(),
            )
            .send()
            .await
            .aws("ModifySnapshotAttribute")?;
    }
    Ok(Grants {
        granted: missing.len(),
        already_granted: already.len(),
    })
}

#[cfg(test)]
mod tests;
