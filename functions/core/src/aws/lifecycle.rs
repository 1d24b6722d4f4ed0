//! The reads publish and retire make of what publish points at: SSM parameters and launch templates' default
//! versions. The SDK side of `model::lifecycle` (the steps' outputs), which it re-exports.

use crate::aws::error::{Result, aws_code, from_sdk};
pub use crate::model::lifecycle::*;

/// The data type of the parameters publish writes: SSM checks that the value is an image id the account can use.
/// "You can't change a parameter to or from [this] data type" (Parameter Store, parameter data types), so an
/// existing parameter of another type can never take the image.
pub const IMAGE_DATA_TYPE: &str = "aws:ec2:image";

/// What EC2 answers for a launch template id or name that does not exist (or cannot, being malformed).
const LAUNCH_TEMPLATE_NOT_FOUND: &[&str] = &[
    "InvalidLaunchTemplateName.NotFoundException",
    "InvalidLaunchTemplateId.NotFound",
    "InvalidLaunchTemplateName.MalformedException",
    "InvalidLaunchTemplateId.Malformed",
];

/// The value of an SSM parameter, `None` when it does not exist.
pub async fn parameter_value(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<Option<String>> {
    Ok(parameter(ssm, name).await?.map(|(value, _)| value))
}

/// A parameter's value and data type (`text` when SSM reports none), `None` when it does not exist.
pub async fn parameter(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<Option<(String, String)>> {
    match ssm.get_parameter().name(name).send().await {
        Ok(out) => Ok(out.parameter().map(|p| {
            let data_type = p.data_type().filter(|d| !d.is_empty()).unwrap_or("text");
            (p.value().unwrap_or_default().to_string(), data_type.to_string())
        })),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => Ok(None),
        Err(e) => Err(from_sdk("GetParameter", e)),
    }
}

/// The default version of a launch template, `None` when the template does not exist.
pub async fn launch_template_default(
    ec2: &aws_sdk_ec2::Client,
    id_or_name: &str,
) -> Result<Option<aws_sdk_ec2::types::LaunchTemplateVersion>> {
    let call = ec2.describe_launch_template_versions().versions("$Default");
    let call = if is_launch_template_id(id_or_name) {
        call.launch_template_id(id_or_name)
    } else {
        call.launch_template_name(id_or_name)
    };
    match call.send().await {
        Ok(out) => Ok(out.launch_template_versions().first().cloned()),
        Err(e) if aws_code(&e).is_some_and(|c| LAUNCH_TEMPLATE_NOT_FOUND.contains(&c)) => Ok(None),
        Err(e) => Err(from_sdk("DescribeLaunchTemplateVersions", e)),
    }
}

/// A launch template with its tags (DescribeLaunchTemplates), `None` when it does not exist.
pub async fn launch_template(
    ec2: &aws_sdk_ec2::Client,
    id_or_name: &str,
) -> Result<Option<aws_sdk_ec2::types::LaunchTemplate>> {
    let call = ec2.describe_launch_templates();
    let call = if is_launch_template_id(id_or_name) {
        call.launch_template_ids(id_or_name)
    } else {
        call.launch_template_names(id_or_name)
    };
    match call.send().await {
        Ok(out) => Ok(out.launch_templates().first().cloned()),
        Err(e) if aws_code(&e).is_some_and(|c| LAUNCH_TEMPLATE_NOT_FOUND.contains(&c)) => Ok(None),
        Err(e) => Err(from_sdk("DescribeLaunchTemplates", e)),
    }
}
