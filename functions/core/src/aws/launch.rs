//! Launching the builder and test instances: every placement the recipe allows tried in order, one ClientToken per
//! placement, and the locked-down settings every instance gets.

use crate::aws::error::{CAPACITY_CODES, Error, Result, aws_code, from_sdk};
use crate::aws::runtime::{CALL_BUDGET, ensure_time_left};
use crate::model::naming::client_token;

/// Where an instance may be launched: one subnet (`None`: the default subnet) and instance type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub subnet_id: Option<String>,
    pub instance_type: String,
}

/// Every placement the recipe allows, in its order of preference: the first instance type in each subnet (the
/// primary first), then the next type in each subnet. Duplicates are dropped.
fn placements(types: &[&str], subnets: &[Option<&str>]) -> Vec<Placement> {
    let subnets: Vec<Option<&str>> = if subnets.is_empty() {
        vec![None]
    } else {
        subnets.to_vec()
    };
    let mut out: Vec<Placement> = Vec::new();
    for t in types {
        for s in &subnets {
            let p = Placement {
                subnet_id: s.map(String::from),
                instance_type: t.to_string(),
            };
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// [`placements`] of a recipe section: its instance type and subnet (`None`: the default subnet) first, then its
/// fallbacks.
pub fn placements_with_fallbacks(
    instance_type: &str,
    fallback_types: &[String],
    subnet_id: Option<&str>,
    fallback_subnet_ids: &[String],
) -> Vec<Placement> {
    let types: Vec<&str> = std::iter::once(instance_type)
        .chain(fallback_types.iter().map(String::as_str))
        .collect();
    let subnets: Vec<Option<&str>> = std::iter::once(subnet_id)
        .chain(fallback_subnet_ids.iter().map(|s| Some(s.as_str())))
        .collect();
    placements(&types, &subnets)
}

/// The ClientToken of one launch attempt. The first placement keeps the step's token; every other placement gets
/// its own, since one token stands for one set of parameters (another subnet or type under the same token is
/// `IdempotentParameterMismatch`), and each is still stable across retries of the step.
pub fn launch_token(execution: &str, step: &str, region: &str, attempt: usize, p: &Placement) -> String {
    if attempt == 0 {
        return client_token(execution, step, region);
    }
    let key = format!("{region}/{}/{}", p.subnet_id.as_deref().unwrap_or("-"), p.instance_type);
    client_token(execution, step, &key)
}

/// Launches in the first placement with capacity: `InsufficientInstanceCapacity` or `Unsupported` moves on to
/// the next one; any other error ends the launch as `from_sdk` maps it (limits are `LimitExceeded`, retried by the
/// state machine). Stops between attempts when the Lambda's time runs short. When no placement has capacity:
/// `NoCapacity`, naming every placement tried and EC2's answer.
pub async fn launch(
    placements: &[Placement],
    what: &str,
    call: impl Fn(usize, &Placement) -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder,
) -> Result<(aws_sdk_ec2::operation::run_instances::RunInstancesOutput, Placement)> {
    let mut tried = Vec::new();
    for (i, p) in placements.iter().enumerate() {
        if i > 0 {
            ensure_time_left(CALL_BUDGET, &format!("launching the {what}"))?;
        }
        match call(i, p).send().await {
            Ok(out) => return Ok((out, p.clone())),
            Err(e) if aws_code(&e).is_some_and(|c| CAPACITY_CODES.contains(&c)) => {
                let code = aws_code(&e).unwrap_or_default().to_string();
                let subnet = p.subnet_id.as_deref().unwrap_or("the default subnet");
                tracing::warn!(subnet, instance_type = %p.instance_type, code, "no capacity; trying the next placement");
                tried.push(format!("{} in {subnet}: {code}", p.instance_type));
            }
            Err(e) => return Err(from_sdk("RunInstances", e)),
        }
    }
    Err(Error::NoCapacity(format!(
        "no capacity for the {what}; tried {}. Add subnets in other Availability Zones or other instance types \
         (fallback_subnet_ids, fallback_instance_types)",
        tried.join(", ")
    )))
}

/// One instance to launch, whatever its placement: what the builder, the test instance and preflight's dry run of
/// the builder all set.
pub struct Instance<'a> {
    pub ec2: &'a aws_sdk_ec2::Client,
    pub image_id: &'a str,
    pub security_group_ids: Vec<String>,
    pub block_devices: Option<Vec<aws_sdk_ec2::types::BlockDeviceMapping>>,
    pub instance_profile: Option<aws_sdk_ec2::types::IamInstanceProfileSpecification>,
    /// Base64, as RunInstances takes it.
    pub user_data: Option<String>,
    /// Put on the instance and its volumes when they are created.
    pub tags: Vec<aws_sdk_ec2::types::Tag>,
}

impl Instance<'_> {
    /// RunInstances of one such instance in `p` ([`locked_down`]) under `client_token`.
    pub fn run(
        &self,
        p: &Placement,
        client_token: String,
    ) -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder {
        use aws_sdk_ec2::types::ResourceType;
        locked_down(
            self.ec2.run_instances(),
            p.subnet_id.clone(),
            self.security_group_ids.clone(),
        )
        .image_id(self.image_id)
        .instance_type(p.instance_type.as_str().into())
        .min_count(1)
        .max_count(1)
        .client_token(client_token)
        .set_block_device_mappings(self.block_devices.clone())
        .set_iam_instance_profile(self.instance_profile.clone())
        .set_user_data(self.user_data.clone())
        .tag_specifications(crate::aws::tags::spec(ResourceType::Instance, self.tags.clone()))
        .tag_specifications(crate::aws::tags::spec(ResourceType::Volume, self.tags.clone()))
    }
}

/// One volume of a launched instance, always encrypted (under `kms_key_id`, or the region's default EBS key) and
/// deleted with the instance. A size of `None` keeps the image's.
pub fn encrypted_volume(
    device_name: &str,
    kms_key_id: Option<&str>,
    volume_type: &str,
    size_gib: Option<i32>,
    iops: Option<i32>,
    throughput: Option<i32>,
) -> aws_sdk_ec2::types::BlockDeviceMapping {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, VolumeType};
    BlockDeviceMapping::builder()
        .device_name(device_name)
        .ebs(
            EbsBlockDevice::builder()
                .encrypted(true)
                .set_kms_key_id(kms_key_id.map(String::from))
                .delete_on_termination(true)
                .set_volume_size(size_gib)
                .volume_type(VolumeType::from(volume_type))
                .set_iops(iops)
                .set_throughput(throughput)
                .build(),
        )
        .build()
}

/// An instance profile given by name or ARN, as RunInstances takes it.
pub fn instance_profile(name_or_arn: &str) -> aws_sdk_ec2::types::IamInstanceProfileSpecification {
    let spec = aws_sdk_ec2::types::IamInstanceProfileSpecification::builder();
    if name_or_arn.starts_with("arn:") {
        spec.arn(name_or_arn).build()
    } else {
        spec.name(name_or_arn).build()
    }
}

/// The launch settings every instance of the pipeline gets, in one place: IMDSv2 required (hop limit 1), one
/// network interface without a public IP, in the given subnet and security groups.
fn locked_down(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_keep_the_type_across_subnets_first_and_tokens_differ_per_placement() {
        let p = placements(&["t3.small", "m5.large"], &[Some("subnet-a"), Some("subnet-b")]);
        let pairs: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.instance_type.as_str(), p.subnet_id.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            pairs,
            [
                ("t3.small", "subnet-a"),
                ("t3.small", "subnet-b"),
                ("m5.large", "subnet-a"),
                ("m5.large", "subnet-b")
            ]
        );
        // no subnet: the default subnet, once per type
        assert_eq!(placements(&["t3.small", "t3.small"], &[]).len(), 1);
        let tokens: std::collections::BTreeSet<String> = p
            .iter()
            .enumerate()
            .map(|(i, p)| launch_token("web-r-1", "build", "us-east-1", i, p))
            .collect();
        assert_eq!(tokens.len(), p.len(), "one ClientToken per placement");
        assert!(tokens.iter().all(|t| t.len() <= 64));
        // the first placement keeps the token a start without fallbacks always used
        assert!(tokens.contains(&client_token("web-r-1", "build", "us-east-1")));
        assert_eq!(
            launch_token("web-r-1", "build", "us-east-1", 1, &p[1]),
            launch_token("web-r-1", "build", "us-east-1", 1, &p[1]),
            "stable across retries"
        );
    }
}
