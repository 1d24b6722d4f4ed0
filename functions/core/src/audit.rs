//! The request audit of the unit tests (feature `testing`): every EC2 request any handler test sends through a
//! [`crate::testing::ec2`] mock client is checked against the security rules before it is "sent", and a violation
//! fails that test. The same rules run over every request of the end-to-end runs (tests/e2e/test_audit.py).
//!
//! Rules: RunInstances with IMDSv2 required, no public IP, every EBS volume encrypted, a ClientToken, and our tags
//! on the instance and its volumes; RegisterImage with ImdsSupport v2.0 and tags; CopyImage encrypted, with a
//! ClientToken and tags on the image and its snapshots; CreateSnapshots tagged; CreateLaunchTemplateVersion with a
//! ClientToken; never `Group=all` on an image or snapshot unless the test declares [`allow_public`] (and
//! ImdsSupport only optional under [`allow_imds_optional`]: both are recipe options, off by default; an
//! instance-store image launched without EBS volumes and copied unencrypted only under [`allow_instance_store`]).

use std::cell::Cell;

use aws_sdk_ec2::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept};
use aws_sdk_ec2::operation::copy_image::CopyImageInput;
use aws_sdk_ec2::operation::create_launch_template_version::CreateLaunchTemplateVersionInput;
use aws_sdk_ec2::operation::create_snapshots::CreateSnapshotsInput;
use aws_sdk_ec2::operation::modify_image_attribute::ModifyImageAttributeInput;
use aws_sdk_ec2::operation::modify_snapshot_attribute::ModifySnapshotAttributeInput;
use aws_sdk_ec2::operation::register_image::RegisterImageInput;
use aws_sdk_ec2::operation::run_instances::RunInstancesInput;
use aws_sdk_ec2::types::{HttpTokensState, PermissionGroup, ResourceType, TagSpecification};
use aws_smithy_runtime_api::client::interceptors::context::Input;

use crate::aws::tags;

thread_local! {
    static PUBLIC_ALLOWED: Cell<bool> = const { Cell::new(false) };
    static IMDS_OPTIONAL_ALLOWED: Cell<bool> = const { Cell::new(false) };
    static INSTANCE_STORE_ALLOWED: Cell<bool> = const { Cell::new(false) };
}

/// Lets this test's requests make an image public (a recipe with `distribution.public`), until dropped.
/// Tests run on their own thread (`#[tokio::test]` is single-threaded), so the permission stays in the test.
pub fn allow_public() -> Allowed {
    PUBLIC_ALLOWED.with(|p| p.set(true));
    Allowed(&PUBLIC_ALLOWED)
}

/// Lets this test register an image without `ImdsSupport v2.0` (a recipe with `image.imds_v2: false`), until
/// dropped. The builder and test instances still require IMDSv2.
pub fn allow_imds_optional() -> Allowed {
    IMDS_OPTIONAL_ALLOWED.with(|p| p.set(true));
    Allowed(&IMDS_OPTIONAL_ALLOWED)
}

/// Lets this test's requests launch and copy an instance-store image (a recipe with `image.root_device_type:
/// instance-store`), until dropped: RunInstances may then map no EBS volume (the root is an instance store; any EBS
/// volume mapped must still be encrypted), and CopyImage is not `Encrypted` (the image has no snapshot to encrypt).
pub fn allow_instance_store() -> Allowed {
    INSTANCE_STORE_ALLOWED.with(|p| p.set(true));
    Allowed(&INSTANCE_STORE_ALLOWED)
}

/// An exception to the audit rules, for the test that holds it.
pub struct Allowed(&'static std::thread::LocalKey<Cell<bool>>);

impl Drop for Allowed {
    fn drop(&mut self) {
        self.0.with(|p| p.set(false));
    }
}

const OUR_TAGS: [&str; 3] = [tags::PIPELINE, tags::EXECUTION, tags::ROLE];

fn tagged(specs: &[TagSpecification], types: &[ResourceType], out: &mut Vec<String>) {
    for t in types {
        let keys: Vec<&str> = specs
            .iter()
            .filter(|s| s.resource_type() == Some(t))
            .flat_map(|s| s.tags())
            .filter(|tag| tag.value().is_some_and(|v| !v.is_empty()))
            .filter_map(|tag| tag.key())
            .collect();
        for k in OUR_TAGS {
            if !keys.contains(&k) {
                out.push(format!("no {k} tag on create for {}", t.as_str()));
            }
        }
    }
}

/// The rules one request breaks (empty: compliant). Requests of other operations pass.
pub fn violations(input: &Input) -> Vec<String> {
    let mut bad = Vec::new();
    if let Some(r) = input.downcast_ref::<RunInstancesInput>() {
        if r.metadata_options().and_then(|m| m.http_tokens()) != Some(&HttpTokensState::Required) {
            bad.push("RunInstances: MetadataOptions.HttpTokens is not required (IMDSv2)".into());
        }
        let nics = r.network_interfaces();
        if nics.is_empty() || nics.iter().any(|n| n.associate_public_ip_address() != Some(false)) {
            bad.push("RunInstances: AssociatePublicIpAddress is not false on every interface".into());
        }
        let ebs: Vec<_> = r.block_device_mappings().iter().filter_map(|m| m.ebs()).collect();
        let no_ebs_allowed = ebs.is_empty() && INSTANCE_STORE_ALLOWED.with(Cell::get);
        if (ebs.is_empty() && !no_ebs_allowed) || ebs.iter().any(|e| e.encrypted() != Some(true)) {
            bad.push("RunInstances: not every EBS volume is encrypted".into());
        }
        if r.client_token().is_none_or(str::is_empty) {
            bad.push("RunInstances: no ClientToken".into());
        }
        tagged(
            r.tag_specifications(),
            &[ResourceType::Instance, ResourceType::Volume],
            &mut bad,
        );
    } else if let Some(r) = input.downcast_ref::<RegisterImageInput>() {
        if r.imds_support().map(|s| s.as_str()) != Some("v2.0") && !IMDS_OPTIONAL_ALLOWED.with(Cell::get) {
            bad.push("RegisterImage: ImdsSupport is not v2.0".into());
        }
        tagged(r.tag_specifications(), &[ResourceType::Image], &mut bad);
    } else if let Some(r) = input.downcast_ref::<CopyImageInput>() {
        if r.encrypted() != Some(true) && !INSTANCE_STORE_ALLOWED.with(Cell::get) {
            bad.push("CopyImage: not Encrypted".into());
        }
        if r.client_token().is_none_or(str::is_empty) {
            bad.push("CopyImage: no ClientToken".into());
        }
        tagged(
            r.tag_specifications(),
            &[ResourceType::Image, ResourceType::Snapshot],
            &mut bad,
        );
    } else if let Some(r) = input.downcast_ref::<CreateSnapshotsInput>() {
        tagged(r.tag_specifications(), &[ResourceType::Snapshot], &mut bad);
    } else if let Some(r) = input.downcast_ref::<CreateLaunchTemplateVersionInput>() {
        if r.client_token().is_none_or(str::is_empty) {
            bad.push("CreateLaunchTemplateVersion: no ClientToken".into());
        }
    } else if let Some(r) = input.downcast_ref::<ModifyImageAttributeInput>() {
        let public = r
            .launch_permission()
            .map(|p| p.add())
            .unwrap_or_default()
            .iter()
            .any(|p| p.group() == Some(&PermissionGroup::All));
        if public && !PUBLIC_ALLOWED.with(Cell::get) {
            bad.push("ModifyImageAttribute: Group=all (public) without distribution.public".into());
        }
    } else if let Some(r) = input.downcast_ref::<ModifySnapshotAttributeInput>() {
        let public = r
            .create_volume_permission()
            .map(|p| p.add())
            .unwrap_or_default()
            .iter()
            .any(|p| p.group() == Some(&PermissionGroup::All));
        if public {
            bad.push("ModifySnapshotAttribute: Group=all (public snapshot)".into());
        }
    }
    bad
}

/// The interceptor [`crate::testing::ec2`] installs on every mock EC2 client.
#[derive(Debug)]
pub struct Audit;

impl Intercept for Audit {
    fn name(&self) -> &'static str {
        "ami-pipeline request audit"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let bad = violations(context.input());
        // A panic, not an error: a handler test that expects an error must not pass on an audit failure.
        assert!(bad.is_empty(), "request audit: {}", bad.join("; "));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{
        EbsBlockDevice, InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, LaunchPermission,
        LaunchPermissionModifications,
    };

    fn spec(t: ResourceType) -> TagSpecification {
        let mut b = TagSpecification::builder().resource_type(t);
        for k in OUR_TAGS {
            b = b.tags(aws_sdk_ec2::types::Tag::builder().key(k).value("x").build());
        }
        b.build()
    }

    fn good_run() -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesInputBuilder {
        RunInstancesInput::builder()
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .build(),
            )
            .network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .associate_public_ip_address(false)
                    .build(),
            )
            .block_device_mappings(
                aws_sdk_ec2::types::BlockDeviceMapping::builder()
                    .ebs(EbsBlockDevice::builder().encrypted(true).build())
                    .build(),
            )
            .client_token("t")
            .tag_specifications(spec(ResourceType::Instance))
            .tag_specifications(spec(ResourceType::Volume))
    }

    fn check(input: impl std::fmt::Debug + Send + Sync + 'static) -> Vec<String> {
        violations(&Input::erase(input))
    }

    #[test]
    fn a_compliant_run_instances_passes_and_each_broken_variant_is_caught() {
        assert_eq!(check(good_run().build().unwrap()), Vec::<String>::new());
        let public_ip = good_run()
            .set_network_interfaces(Some(vec![
                InstanceNetworkInterfaceSpecification::builder()
                    .associate_public_ip_address(true)
                    .build(),
            ]))
            .build()
            .unwrap();
        let imds_v1 = good_run()
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Optional)
                    .build(),
            )
            .build()
            .unwrap();
        let unencrypted = good_run()
            .set_block_device_mappings(Some(vec![
                aws_sdk_ec2::types::BlockDeviceMapping::builder()
                    .ebs(EbsBlockDevice::builder().volume_size(8).build())
                    .build(),
            ]))
            .build()
            .unwrap();
        let no_token = good_run().set_client_token(None).build().unwrap();
        let untagged_volume = good_run()
            .set_tag_specifications(Some(vec![spec(ResourceType::Instance)]))
            .build()
            .unwrap();
        for (what, input, found) in [
            ("public IP", public_ip, 1),
            ("IMDSv1", imds_v1, 1),
            ("unencrypted", unencrypted, 1),
            ("no token", no_token, 1),
            ("untagged volume", untagged_volume, 3), // pipeline, execution, role
        ] {
            assert_eq!(check(input).len(), found, "{what}");
        }
    }

    #[test]
    fn public_launch_permission_needs_the_declared_permission() {
        let public = || {
            ModifyImageAttributeInput::builder()
                .launch_permission(
                    LaunchPermissionModifications::builder()
                        .add(LaunchPermission::builder().group(PermissionGroup::All).build())
                        .build(),
                )
                .build()
                .unwrap()
        };
        assert_eq!(check(public()).len(), 1);
        let _allowed = allow_public();
        assert!(check(public()).is_empty());
    }

    #[test]
    fn register_and_copy_rules() {
        assert_eq!(check(RegisterImageInput::builder().build().unwrap()).len(), 4); // v2.0 + 3 tags
        assert_eq!(check(CopyImageInput::builder().build().unwrap()).len(), 8); // encrypted, token, 6 tags
    }

    #[test]
    fn instance_store_exception_lifts_only_the_encryption_of_copies_and_the_missing_root_volume() {
        let no_volumes = RunInstancesInput::builder().build().unwrap();
        let unencrypted_copy = CopyImageInput::builder().build().unwrap();
        let (before_run, before_copy) = (check(no_volumes.clone()).len(), check(unencrypted_copy.clone()).len());
        {
            let _allowed = allow_instance_store();
            assert_eq!(check(no_volumes.clone()).len(), before_run - 1);
            assert_eq!(check(unencrypted_copy.clone()).len(), before_copy - 1);
            let unencrypted_volume = RunInstancesInput::builder()
                .block_device_mappings(
                    aws_sdk_ec2::types::BlockDeviceMapping::builder()
                        .ebs(EbsBlockDevice::builder().encrypted(false).build())
                        .build(),
                )
                .build()
                .unwrap();
            assert!(
                check(unencrypted_volume)
                    .iter()
                    .any(|v| v.contains("not every EBS volume is encrypted")),
                "an EBS volume still must be encrypted"
            );
        }
        assert_eq!(check(no_volumes).len(), before_run, "dropped: the rule is back");
    }
}
