//! The request audit of the unit tests (feature `testing`): every EC2 request any handler test sends through a
//! [`crate::testing::ec2`] mock client is checked, as serialized for the wire, against the security rules before it
//! is "sent", and a violation fails that test. The rules are data, written once in
//! [`crate::contract::audit_rules`] and exported in `infra/contract.json`: `tests/e2e/test_audit.py` evaluates the
//! same rules over every request the emulator logged in the end-to-end run, from the same EC2 query parameters.
//!
//! Rules: RunInstances with IMDSv2 required, no public IP, every EBS volume encrypted, a ClientToken, and our tags
//! on the instance and its volumes; RegisterImage with ImdsSupport v2.0 and tags; CopyImage encrypted, with a
//! ClientToken and tags on the image and its snapshots; CreateSnapshots tagged; CreateLaunchTemplateVersion with a
//! ClientToken; never `Group=all` on an image or snapshot unless the test declares [`allow_public`] (and
//! ImdsSupport only optional under [`allow_imds_optional`]: both are recipe options, off by default; an
//! instance-store image launched without EBS volumes and copied unencrypted only under [`allow_instance_store`]).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};

use crate::contract::audit_rules::{Check, Exception, RULES};

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

/// Whether this test holds `exception`.
fn held(exception: Exception) -> bool {
    match exception {
        Exception::Public => PUBLIC_ALLOWED.with(Cell::get),
        Exception::ImdsOptional => IMDS_OPTIONAL_ALLOWED.with(Cell::get),
        Exception::InstanceStore => INSTANCE_STORE_ALLOWED.with(Cell::get),
    }
}

/// The parameters of an EC2 query request body (`Action=RunInstances&MetadataOptions.HttpTokens=required&...`).
pub fn query_params(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The members of a list named like `BlockDeviceMapping.N.Ebs` (`N`: the index) that the request sends, as their
/// parameter prefixes (`BlockDeviceMapping.1.Ebs`).
fn members(params: &BTreeMap<String, String>, member: &str) -> BTreeSet<String> {
    let pattern: Vec<&str> = member.split('.').collect();
    params
        .keys()
        .filter_map(|key| {
            let parts: Vec<&str> = key.split('.').collect();
            let fits = parts.len() > pattern.len()
                && pattern.iter().zip(&parts).all(|(want, got)| {
                    want == got || (*want == "N" && !got.is_empty() && got.bytes().all(|b| b.is_ascii_digit()))
                });
            fits.then(|| parts[..pattern.len()].join("."))
        })
        .collect()
}

fn value<'a>(params: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    params.get(key).map(String::as_str)
}

/// The problems `check` finds in a request (empty: it passes).
fn failures(check: &Check, params: &BTreeMap<String, String>) -> Vec<String> {
    let fails = match *check {
        Check::Is { param, value: v } => value(params, param) != Some(v),
        Check::StartsWith { param, prefix } => !value(params, param).is_some_and(|t| t.starts_with(prefix)),
        Check::Unset { param } => params.contains_key(param),
        Check::AnyMember { member } => members(params, member).is_empty(),
        Check::EveryMember {
            member,
            param,
            value: v,
        } => members(params, member)
            .iter()
            .any(|m| value(params, &format!("{m}.{param}")) != Some(v)),
        Check::NoMember {
            member,
            param,
            value: v,
        } => members(params, member)
            .iter()
            .any(|m| value(params, &format!("{m}.{param}")) == Some(v)),
        Check::Tagged { resource, keys } => {
            let specs = members(params, "TagSpecification.N");
            let present: BTreeSet<&str> = specs
                .iter()
                .filter(|s| value(params, &format!("{s}.ResourceType")) == Some(resource))
                .flat_map(|s| members(params, &format!("{s}.Tag.N")))
                .filter(|t| value(params, &format!("{t}.Value")).is_some_and(|v| !v.is_empty()))
                .filter_map(|t| value(params, &format!("{t}.Key")))
                .collect();
            return keys
                .iter()
                .filter(|k| !present.contains(*k))
                .map(|k| format!("no {k} tag on create for {resource}"))
                .collect();
        }
    };
    if fails { vec![String::new()] } else { Vec::new() }
}

/// The rules one request breaks (empty: compliant), given which exceptions hold; requests of actions no rule names
/// pass. Each violation reads `<Action>: <what it did>`.
pub fn violations(params: &BTreeMap<String, String>, holds: impl Fn(Exception) -> bool) -> Vec<String> {
    let action = value(params, "Action").unwrap_or_default();
    RULES
        .iter()
        .filter(|r| r.action == action)
        .filter(|r| !r.unless.is_some_and(&holds) && r.when.is_none_or(&holds))
        .flat_map(|r| {
            failures(&r.check, params).into_iter().map(move |detail| {
                let what = if detail.is_empty() {
                    r.violation.to_string()
                } else {
                    detail
                };
                format!("{action}: {what}")
            })
        })
        .collect()
}

/// The interceptor [`crate::testing::ec2`] installs on every mock EC2 client.
#[derive(Debug)]
pub struct Audit;

impl Intercept for Audit {
    fn name(&self) -> &'static str {
        "ami-pipeline request audit"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // The body as EC2 receives it: the handler's parameters and what the SDK filled in (e.g. a random
        // ClientToken where the call set none).
        let body = context
            .request()
            .body()
            .bytes()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let bad = violations(&query_params(&body), held);
        // A panic, not an error: a handler test that expects an error must not pass on an audit failure.
        assert!(bad.is_empty(), "request audit: {}", bad.join("; "));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::config::retry::RetryConfig;
    use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder;
    use aws_sdk_ec2::types::{
        BlockDeviceMapping, EbsBlockDevice, HttpTokensState, InstanceMetadataOptionsRequest,
        InstanceNetworkInterfaceSpecification, LaunchPermission, LaunchPermissionModifications, PermissionGroup,
        ResourceType, Tag, TagSpecification,
    };

    use super::*;
    use crate::model::tags;

    const OUR_TAGS: [&str; 3] = [tags::PIPELINE, tags::EXECUTION, tags::ROLE];
    const TOKEN: &str = "amip-test-0123456789";

    /// An EC2 client with the audit whose requests are all serialized and sent (no mock rule, so none is
    /// answered before transmit; the answer is an error), without retries.
    fn client() -> aws_sdk_ec2::Client {
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "test", None, None, "test"))
            .http_client(aws_smithy_mocks::create_mock_http_client())
            .interceptor(Audit)
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_ec2::Client::from_conf(conf)
    }

    /// The violations the audit interceptor finds in the request `call` sends: its panic message, split (on this
    /// thread, so the test's exceptions hold: `#[tokio::test]` runs one thread).
    async fn check<T, E>(call: impl Future<Output = Result<T, E>> + Send + 'static) -> Vec<String>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let Err(failed) = tokio::spawn(call).await else {
            return Vec::new();
        };
        let panic = failed.into_panic();
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        let listed = message.strip_prefix("request audit: ").expect("an audit failure");
        listed.split("; ").map(String::from).collect()
    }

    fn spec(t: ResourceType) -> TagSpecification {
        let mut b = TagSpecification::builder().resource_type(t);
        for k in OUR_TAGS {
            b = b.tags(Tag::builder().key(k).value("x").build());
        }
        b.build()
    }

    fn ebs(encrypted: Option<bool>) -> BlockDeviceMapping {
        let volume = EbsBlockDevice::builder()
            .volume_size(8)
            .set_encrypted(encrypted)
            .build();
        BlockDeviceMapping::builder()
            .device_name("/dev/xvda")
            .ebs(volume)
            .build()
    }

    fn nic(public: bool) -> InstanceNetworkInterfaceSpecification {
        InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .associate_public_ip_address(public)
            .build()
    }

    fn imds(tokens: HttpTokensState) -> InstanceMetadataOptionsRequest {
        InstanceMetadataOptionsRequest::builder().http_tokens(tokens).build()
    }

    fn good_run(ec2: &aws_sdk_ec2::Client) -> RunInstancesFluentBuilder {
        ec2.run_instances()
            .image_id("ami-0aaaaaaaaaaaaaaa1")
            .min_count(1)
            .max_count(1)
            .metadata_options(imds(HttpTokensState::Required))
            .network_interfaces(nic(false))
            .block_device_mappings(ebs(Some(true)))
            .client_token(TOKEN)
            .tag_specifications(spec(ResourceType::Instance))
            .tag_specifications(spec(ResourceType::Volume))
    }

    #[test]
    fn query_params_are_decoded_as_the_emulator_logs_them() {
        let p = query_params("Action=RunInstances&TagSpecification.1.Tag.1.Key=ami-pipeline%3Apipeline&A=b+c&E=");
        assert_eq!(p["Action"], "RunInstances");
        assert_eq!(p["TagSpecification.1.Tag.1.Key"], "ami-pipeline:pipeline");
        assert_eq!(p["A"], "b c");
        assert_eq!(p["E"], "");
        let listed = members(&p, "TagSpecification.N.Tag.N");
        assert_eq!(listed.into_iter().collect::<Vec<_>>(), ["TagSpecification.1.Tag.1"]);
    }

    #[tokio::test]
    async fn a_compliant_run_instances_passes_and_each_broken_variant_is_caught() {
        let ec2 = client();
        assert_eq!(check(good_run(&ec2).send()).await, Vec::<String>::new());
        for (what, broken, found) in [
            (
                "public IP",
                good_run(&ec2).set_network_interfaces(Some(vec![nic(true)])),
                1,
            ),
            ("no interface", good_run(&ec2).set_network_interfaces(None), 1),
            (
                "IMDSv1",
                good_run(&ec2).metadata_options(imds(HttpTokensState::Optional)),
                1,
            ),
            ("no IMDS options", good_run(&ec2).set_metadata_options(None), 1),
            (
                "unencrypted",
                good_run(&ec2).set_block_device_mappings(Some(vec![ebs(None)])),
                1,
            ),
            (
                "one of two unencrypted",
                good_run(&ec2).block_device_mappings(ebs(Some(false))),
                1,
            ),
            ("no volume", good_run(&ec2).set_block_device_mappings(None), 1),
            (
                "no token: the SDK's random one",
                good_run(&ec2).set_client_token(None),
                1,
            ),
            ("token not ours", good_run(&ec2).client_token("mine"), 1),
            (
                "untagged volume",
                good_run(&ec2).set_tag_specifications(Some(vec![spec(ResourceType::Instance)])),
                3, // pipeline, execution, role
            ),
        ] {
            assert_eq!(check(broken.send()).await.len(), found, "{what}");
        }
    }

    #[tokio::test]
    async fn public_launch_permission_needs_the_declared_permission() {
        let ec2 = client();
        let public = || {
            let everyone = LaunchPermission::builder().group(PermissionGroup::All).build();
            ec2.modify_image_attribute()
                .image_id("ami-0aaaaaaaaaaaaaaa1")
                .launch_permission(LaunchPermissionModifications::builder().add(everyone).build())
                .send()
        };
        assert_eq!(check(public()).await.len(), 1);
        let _allowed = allow_public();
        assert!(check(public()).await.is_empty());
        let snapshot = ec2
            .modify_snapshot_attribute()
            .snapshot_id("snap-0aaaaaaaaaaaaaaa1")
            .create_volume_permission(
                aws_sdk_ec2::types::CreateVolumePermissionModifications::builder()
                    .add(
                        aws_sdk_ec2::types::CreateVolumePermission::builder()
                            .group(PermissionGroup::All)
                            .build(),
                    )
                    .build(),
            )
            .send();
        assert_eq!(check(snapshot).await.len(), 1, "a public snapshot: no exception");
    }

    #[tokio::test]
    async fn register_and_copy_rules() {
        let ec2 = client();
        assert_eq!(check(ec2.register_image().name("n").send()).await.len(), 4); // v2.0 + 3 tags
        // encrypted, token (the SDK's random one), 6 tags
        let copy = ec2
            .copy_image()
            .name("n")
            .source_image_id("ami-1")
            .source_region("us-east-1");
        assert_eq!(check(copy.clone().send()).await.len(), 8);
        let good_copy = copy
            .encrypted(true)
            .client_token(TOKEN)
            .tag_specifications(spec(ResourceType::Image))
            .tag_specifications(spec(ResourceType::Snapshot));
        assert_eq!(check(good_copy.send()).await, Vec::<String>::new());
        let _imds = allow_imds_optional();
        assert_eq!(check(ec2.register_image().name("n").send()).await.len(), 3, "tags only");
    }

    #[tokio::test]
    async fn instance_store_exception_lifts_only_the_encryption_of_copies_and_the_missing_root_volume() {
        let ec2 = client();
        let no_volumes = || ec2.run_instances().image_id("ami-1").min_count(1).max_count(1).send();
        let unencrypted_copy = || {
            ec2.copy_image()
                .name("n")
                .source_image_id("ami-1")
                .source_region("r")
                .send()
        };
        let before_run = check(no_volumes()).await.len();
        let before_copy = check(unencrypted_copy()).await.len();
        {
            let _allowed = allow_instance_store();
            assert_eq!(check(no_volumes()).await.len(), before_run - 1);
            assert_eq!(check(unencrypted_copy()).await.len(), before_copy - 1);
            let unencrypted_volume = ec2
                .run_instances()
                .min_count(1)
                .max_count(1)
                .block_device_mappings(ebs(Some(false)))
                .send();
            assert!(
                check(unencrypted_volume)
                    .await
                    .iter()
                    .any(|v| v.contains("not every EBS volume is encrypted")),
                "an EBS volume still must be encrypted"
            );
            let encrypted_copy = ec2.copy_image().name("n").source_image_id("ami-1").source_region("r");
            let with_key = encrypted_copy.clone().kms_key_id("alias/k");
            assert_eq!(
                check(encrypted_copy.encrypted(true).send()).await.len(),
                before_copy,
                "nothing to encrypt: asking to is caught"
            );
            assert_eq!(check(with_key.send()).await.len(), before_copy, "a key: caught");
        }
        assert_eq!(check(no_volumes()).await.len(), before_run, "dropped: the rule is back");
    }

    /// The interceptor the handler tests' EC2 clients carry fails the test on a broken request.
    #[tokio::test]
    #[should_panic(expected = "request audit: RunInstances: MetadataOptions.HttpTokens is not required")]
    async fn the_interceptor_fails_a_test_that_sends_a_broken_request() {
        let answered = aws_smithy_mocks::mock!(aws_sdk_ec2::Client::run_instances)
            .then_output(|| aws_sdk_ec2::operation::run_instances::RunInstancesOutput::builder().build());
        let ec2 = crate::testing::ec2(&[&answered]);
        let _ = ec2.run_instances().min_count(1).max_count(1).send().await;
    }
}
