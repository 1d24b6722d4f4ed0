//! Checks of single recipe fields: ranges, AWS ids and names, regions, scripts. Each error names the field.

use std::collections::BTreeSet;

use crate::model::error::{Error, Result};
use crate::model::naming;
use crate::model::userdata::HEREDOC_END;

/// Commercial and GovCloud regions EC2 serves. A region outside this list is a typo or not yet known here.
pub const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-east-1",
    "us-gov-west-1",
];

pub(super) const VOLUME_TYPES: &[&str] = &["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];
/// Recipes live in SSM (8 KB for an advanced parameter), so scripts stay small; fetch larger ones from S3.
const MAX_SCRIPT_BYTES: usize = 6 * 1024;

/// The AWS managed EBS key by alias (an ARN of it cannot be told from a customer key without `DescribeKey`).
pub(super) fn is_default_ebs_key(key: &str) -> bool {
    key.trim().eq_ignore_ascii_case("alias/aws/ebs")
}

pub(super) fn check_range(field: &str, v: u32, min: u32, max: u32) -> Result<()> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("must be {min} to {max}")))
    }
}

pub(super) fn check_range_or_zero(field: &str, v: u32, min: u32, max: u32) -> Result<()> {
    if v == 0 {
        Ok(())
    } else {
        check_range(field, v, min, max)
    }
}

pub(super) fn check_volume_type(field: &str, t: &str) -> Result<()> {
    if VOLUME_TYPES.contains(&t) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must be one of {}", VOLUME_TYPES.join(", ")),
        ))
    }
}

fn check_instance_type(field: &str, t: &str) -> Result<()> {
    let ok = t.len() <= 32
        && t.split_once('.').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, "must be an instance type such as t3.micro"))
    }
}

/// The most fallback subnets or instance types a recipe may list: with the primary, at most 25 launch attempts.
pub const MAX_FALLBACKS: usize = 4;

/// Where the builder or test instance (`section`) is launched: its instance type (given for a build, optional for a
/// test), subnet, fallbacks, security groups and instance profile (name or ARN), checked in that order.
pub(super) fn check_placement(
    section: &str,
    instance_type: Option<&str>,
    subnet_id: Option<&str>,
    fallback_types: &[String],
    fallback_subnets: &[String],
    security_group_ids: &[String],
    instance_profile: Option<&str>,
) -> Result<()> {
    if let Some(t) = instance_type {
        check_instance_type(&format!("{section}.instance_type"), t)?;
    }
    if let Some(s) = subnet_id {
        check_id(&format!("{section}.subnet_id"), "subnet-", s)?;
    }
    check_fallbacks(section, instance_type, subnet_id, fallback_types, fallback_subnets)?;
    for (i, sg) in security_group_ids.iter().enumerate() {
        check_id(&format!("{section}.security_group_ids[{i}]"), "sg-", sg)?;
    }
    if let Some(p) = instance_profile {
        check_text(&format!("{section}.instance_profile"), p, 2048)?;
    }
    Ok(())
}

/// `fallback_instance_types` and `fallback_subnet_ids` of `section`: valid ids and types, at most
/// `MAX_FALLBACKS` each, none repeated or equal to the primary.
fn check_fallbacks(
    section: &str,
    instance_type: Option<&str>,
    subnet_id: Option<&str>,
    types: &[String],
    subnets: &[String],
) -> Result<()> {
    for (name, primary, list, check) in [
        (
            "fallback_instance_types",
            instance_type,
            types,
            check_instance_type as fn(&str, &str) -> Result<()>,
        ),
        ("fallback_subnet_ids", subnet_id, subnets, |f: &str, s: &str| {
            check_id(f, "subnet-", s)
        }),
    ] {
        let field = format!("{section}.{name}");
        if list.len() > MAX_FALLBACKS {
            return Err(Error::invalid(field, format!("at most {MAX_FALLBACKS} entries")));
        }
        let mut seen = BTreeSet::new();
        for (i, v) in list.iter().enumerate() {
            let item = format!("{field}[{i}]");
            check(&item, v)?;
            if primary == Some(v.as_str()) || !seen.insert(v) {
                return Err(Error::invalid(item, format!("`{v}` is already listed")));
            }
        }
    }
    Ok(())
}

pub(super) fn check_script(field: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if s.len() > MAX_SCRIPT_BYTES {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_SCRIPT_BYTES} bytes (the recipe is an SSM parameter); fetch larger scripts from S3"),
        ));
    }
    if s.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    if s.contains(HEREDOC_END) {
        return Err(Error::invalid(
            field,
            "must not contain the line AMI_PIPELINE_SCRIPT_END",
        ));
    }
    if s.lines().any(|l| l.starts_with("'@")) {
        return Err(Error::invalid(
            field,
            "must not have a line starting with '@ (it would end the PowerShell wrapper)",
        ));
    }
    Ok(())
}

/// Resource ids such as `ami-0abc`, `i-0abc`, `subnet-0abc`: prefix then 8 or 17 hex digits.
pub fn check_id(field: &str, prefix: &str, id: &str) -> Result<()> {
    let ok = id
        .strip_prefix(prefix)
        .is_some_and(|hex| (8..=17).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must be an id like {prefix}0123456789abcdef0"),
        ))
    }
}

pub fn check_region(field: &str, r: &str) -> Result<()> {
    if KNOWN_REGIONS.contains(&r) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{}` is not an AWS region, e.g. us-east-1", naming::preview(r)),
        ))
    }
}

pub(super) fn check_ssm_name(field: &str, p: &str) -> Result<()> {
    let ok = p.starts_with('/')
        && p.len() <= 1011
        && p.chars().all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c))
        && !p.contains("//");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be an SSM parameter path like /team/images/web (letters, digits, / _ . -)",
        ))
    }
}

pub(super) fn check_text(field: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        Err(Error::invalid(
            field,
            format!("must be 1-{max} characters without control characters"),
        ))
    } else {
        Ok(())
    }
}

pub fn is_account(s: &str) -> bool {
    s.len() == 12 && s.chars().all(|c| c.is_ascii_digit())
}
