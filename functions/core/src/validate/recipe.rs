//! Recipe validation: what serde cannot check, named by field. The types are `model::recipe`'s.

use std::collections::BTreeSet;

use super::fields::{
    check_id, check_placement, check_range, check_range_or_zero, check_region, check_script, check_ssm_name,
    check_text, check_volume_type, is_account, is_default_ebs_key,
};
use crate::model::error::{Error, Result};
use crate::model::naming;
use crate::model::recipe::{BootMode, Build, Recipe, RootDeviceType, SCHEMA_VERSION, Source, limits};

impl Recipe {
    /// Parses a recipe document, naming the field on error.
    pub fn from_json(text: &str) -> Result<Recipe> {
        let recipe: Recipe = crate::model::input::parse_str("recipe", text)?;
        recipe.validate()?;
        Ok(recipe)
    }

    /// Checks what serde cannot: value ranges, formats, and consistency between sections.
    pub fn validate(&self) -> Result<()> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(Error::invalid(
                "recipe.schema_version",
                format!("must be {SCHEMA_VERSION}"),
            ));
        }
        naming::check_pipeline_name("recipe.name", &self.name)?;
        if let Some(v) = &self.default_version {
            naming::check_version("recipe.default_version", v)?;
        }
        self.validate_source()?;
        self.validate_image()?;
        self.validate_test()?;
        self.validate_distribution()?;
        self.validate_sharing()?;
        self.validate_publish()?;
        if self.retention.keep == 0 {
            return Err(Error::invalid(
                "recipe.retention.keep",
                "must be at least 1 (the image just built)",
            ));
        }
        if self.retention.keep > limits::KEEP {
            return Err(Error::invalid(
                "recipe.retention.keep",
                format!("at most {}", limits::KEEP),
            ));
        }
        if let Some(days) = self.retention.deprecate_after_days
            && !(1..=3650).contains(&days)
        {
            return Err(Error::invalid(
                "recipe.retention.deprecate_after_days",
                "must be 1 to 3650 (10 years)",
            ));
        }
        // Last, so a field's own error comes first: the frozen recipe is in every state of the execution (`limits`).
        let bytes = serde_json::to_vec(self).map_or(0, |v| v.len());
        if bytes > limits::RECIPE_BYTES {
            return Err(Error::invalid(
                "recipe",
                format!(
                    "{bytes} bytes as JSON with its defaults, at most {}: list fewer accounts, or share with an \
                     organization or OU instead",
                    limits::RECIPE_BYTES
                ),
            ));
        }
        Ok(())
    }

    fn validate_source(&self) -> Result<()> {
        match &self.source {
            Source::Image(base) => {
                let given = [
                    base.id.is_some(),
                    base.ssm_parameter.is_some(),
                    base.name_filter.is_some(),
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    return Err(Error::invalid(
                        "recipe.source.image",
                        "give exactly one of `id`, `ssm_parameter`, `name_filter`",
                    ));
                }
                if let Some(id) = &base.id {
                    check_id("recipe.source.image.id", "ami-", id)?;
                }
                if let Some(p) = &base.ssm_parameter {
                    check_ssm_name("recipe.source.image.ssm_parameter", p)?;
                }
                if let Some(f) = &base.name_filter {
                    check_text("recipe.source.image.name_filter", f, 128)?;
                }
                if base.owners.is_empty() {
                    return Err(Error::invalid(
                        "recipe.source.image.owners",
                        "list the trusted owners, e.g. [\"amazon\"] or account ids; it must not be empty",
                    ));
                }
                for (i, owner) in base.owners.iter().enumerate() {
                    let ok = matches!(owner.as_str(), "amazon" | "self" | "aws-marketplace") || is_account(owner);
                    if !ok {
                        return Err(Error::invalid(
                            format!("recipe.source.image.owners[{i}]"),
                            "must be a 12-digit account id or one of `amazon`, `self`, `aws-marketplace`",
                        ));
                    }
                }
                let build = self.build.as_ref().ok_or_else(|| {
                    Error::invalid(
                        "recipe.build",
                        "required when the source is an image: say how to provision it",
                    )
                })?;
                validate_build(build)
            }
            Source::Instance(inst) => check_id("recipe.source.instance.id", "i-", &inst.id),
        }
    }

    fn validate_image(&self) -> Result<()> {
        let img = &self.image;
        naming::check_name_template("recipe.image.name", &img.name)?;
        if let Some(d) = &img.description {
            check_text("recipe.image.description", d, 255)?;
        }
        check_range(
            "recipe.image.timeout_minutes",
            img.timeout_minutes,
            15,
            limits::IMAGE_MINUTES,
        )?;
        if img.tpm_support && img.boot_mode != Some(BootMode::Uefi) {
            return Err(Error::invalid(
                "recipe.image.tpm_support",
                "needs `boot_mode: \"uefi\"`",
            ));
        }
        if let Some(k) = &img.kms_key_id {
            check_text("recipe.image.kms_key_id", k, 2048)?;
        }
        for (k, v) in &img.tags {
            if k.is_empty() || k.len() > 128 || k.starts_with("aws:") || k.starts_with(crate::model::tags::PREFIX) {
                return Err(Error::invalid(
                    format!("recipe.image.tags.{k}"),
                    "tag keys are 1-128 characters and may not start with `aws:` or `ami-pipeline:`",
                ));
            }
            if v.len() > 256 {
                return Err(Error::invalid(
                    format!("recipe.image.tags.{k}"),
                    "tag values are at most 256 characters",
                ));
            }
        }
        match (img.root_device_type, &img.s3_manifest) {
            (RootDeviceType::InstanceStore, None) => Err(Error::invalid(
                "recipe.image.s3_manifest",
                "required for `root_device_type: instance-store`",
            )),
            // Exactly `s3://bucket/key.manifest.xml`, which register turns into RegisterImage's ImageLocation.
            (RootDeviceType::InstanceStore, Some(m)) => crate::model::instance_store::image_location(m).map(|_| ()),
            (RootDeviceType::Ebs, Some(_)) => Err(Error::invalid(
                "recipe.image.s3_manifest",
                "only for `root_device_type: instance-store`; remove it",
            )),
            _ => Ok(()),
        }?;
        if img.root_device_type == RootDeviceType::InstanceStore {
            // Only previous-generation Xen types boot an instance-store root, and they boot legacy BIOS only: the
            // image is registered `legacy-bios` without NitroTPM (`model::platform`, where the sources are).
            let why = "an instance-store root boots only on previous-generation Xen types, which boot legacy BIOS \
                       only (no UEFI, no NitroTPM)";
            if img.boot_mode.is_some_and(|m| m != BootMode::LegacyBios) {
                return Err(Error::invalid(
                    "recipe.image.boot_mode",
                    format!("{why}: remove boot_mode or use `legacy-bios`"),
                ));
            }
            if img.tpm_support {
                return Err(Error::invalid(
                    "recipe.image.tpm_support",
                    format!("{why}: set it to false"),
                ));
            }
        }
        Ok(())
    }

    fn validate_test(&self) -> Result<()> {
        let t = &self.test;
        check_placement(
            "recipe.test",
            t.instance_type.as_deref(),
            t.subnet_id.as_deref(),
            &t.fallback_instance_types,
            &t.fallback_subnet_ids,
            &t.security_group_ids,
            t.instance_profile.as_deref(),
        )?;
        if let Some(s) = &t.script {
            check_script("recipe.test.script", s)?;
        }
        check_range(
            "recipe.test.timeout_minutes",
            t.timeout_minutes,
            5,
            limits::TEST_MINUTES,
        )?;
        if t.enabled && t.instance_type.is_none() && self.build.is_none() {
            return Err(Error::invalid(
                "recipe.test.instance_type",
                "required when there is no `build` section",
            ));
        }
        Ok(())
    }

    /// The keys a shared image needs, once the home region is known (the trigger): a customer-managed key in
    /// every copy region, since "snapshots encrypted with your default KMS key cannot be shared with other
    /// accounts" (ModifySnapshotAttribute API reference). The home region's key is `image.kms_key_id`, checked by
    /// `validate`.
    pub fn check_sharing_keys(&self, home: &str) -> Result<()> {
        if !self.is_shared() {
            return Ok(());
        }
        let d = &self.distribution;
        for region in d.regions.iter().filter(|r| *r != home) {
            if !d.kms_key_ids.contains_key(region) {
                return Err(Error::invalid(
                    "recipe.distribution.kms_key_ids",
                    format!(
                        "needs a customer-managed KMS key for `{region}`: the image is shared, and snapshots \
                         encrypted with the default aws/ebs key cannot be shared with other accounts; add \
                         `\"{region}\": \"<key id, ARN or alias>\"` (its key policy must let the target accounts use \
                         it, infra/DEPLOY.md)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_sharing(&self) -> Result<()> {
        let d = &self.distribution;
        if d.public {
            return Err(Error::invalid(
                "recipe.distribution.public",
                "cannot be true: ami-pipeline encrypts every image, and encrypted snapshots cannot be made public \
                 (ModifySnapshotAttribute API reference); share with accounts, organizations or OUs instead",
            ));
        }
        if !self.is_shared() {
            return Ok(());
        }
        for (r, key) in &d.kms_key_ids {
            if is_default_ebs_key(key) {
                return Err(Error::invalid(
                    format!("recipe.distribution.kms_key_ids.{r}"),
                    "is the default aws/ebs key, whose snapshots cannot be shared with other accounts: name a \
                     customer-managed key",
                ));
            }
        }
        // An instance source keeps its volumes' own keys; a built image takes `image.kms_key_id`.
        if matches!(self.source, Source::Image(_)) && self.image.kms_key_id.as_deref().is_none_or(is_default_ebs_key) {
            return Err(Error::invalid(
                "recipe.image.kms_key_id",
                "needs a customer-managed KMS key: the image is shared, and snapshots encrypted with the default \
                 aws/ebs key cannot be shared with other accounts (ModifySnapshotAttribute API reference); its key \
                 policy must let the target accounts use it (infra/DEPLOY.md)",
            ));
        }
        Ok(())
    }

    fn validate_distribution(&self) -> Result<()> {
        let d = &self.distribution;
        let mut seen = BTreeSet::new();
        for (i, r) in d.regions.iter().enumerate() {
            let field = format!("recipe.distribution.regions[{i}]");
            check_region(&field, r)?;
            if !seen.insert(r) {
                return Err(Error::invalid(field, format!("region `{r}` is listed twice")));
            }
        }
        for (r, key) in &d.kms_key_ids {
            let field = format!("recipe.distribution.kms_key_ids.{r}");
            check_region(&field, r)?;
            check_text(&field, key, 2048)?;
        }
        let mut accounts = BTreeSet::new();
        for (i, a) in d.accounts.iter().enumerate() {
            let field = format!("recipe.distribution.accounts[{i}]");
            if !is_account(a) {
                return Err(Error::invalid(field, "must be a 12-digit AWS account id"));
            }
            if !accounts.insert(a) {
                return Err(Error::invalid(field, format!("account {a} is listed twice")));
            }
        }
        if d.accounts.len() + d.organization_arns.len() + d.organizational_unit_arns.len() > 1000 {
            return Err(Error::invalid(
                "recipe.distribution",
                "an image can be shared with at most 1,000 entities",
            ));
        }
        for (i, arn) in d.organization_arns.iter().enumerate() {
            if !arn.starts_with("arn:aws") || !arn.contains(":organization/o-") {
                return Err(Error::invalid(
                    format!("recipe.distribution.organization_arns[{i}]"),
                    "must be an organization ARN, arn:aws:organizations::ACCOUNT:organization/o-xxxx",
                ));
            }
        }
        for (i, arn) in d.organizational_unit_arns.iter().enumerate() {
            if !arn.starts_with("arn:aws") || !arn.contains(":ou/o-") {
                return Err(Error::invalid(
                    format!("recipe.distribution.organizational_unit_arns[{i}]"),
                    "must be an OU ARN, arn:aws:organizations::ACCOUNT:ou/o-xxxx/ou-xxxx",
                ));
            }
        }
        check_range(
            "recipe.distribution.copy_timeout_minutes",
            d.copy_timeout_minutes,
            15,
            limits::COPY_MINUTES,
        )
    }

    fn validate_publish(&self) -> Result<()> {
        // Publish reports each parameter and launch template in the execution's state, per region (`limits`).
        let p = &self.publish;
        if p.ssm_parameters.len() > limits::PUBLISH_PARAMETERS {
            return Err(Error::invalid(
                "recipe.publish.ssm_parameters",
                format!("at most {} parameters", limits::PUBLISH_PARAMETERS),
            ));
        }
        if p.launch_templates.len() > limits::LAUNCH_TEMPLATES {
            return Err(Error::invalid(
                "recipe.publish.launch_templates",
                format!("at most {} launch templates", limits::LAUNCH_TEMPLATES),
            ));
        }
        for (i, name) in p.ssm_parameters.iter().enumerate() {
            let field = format!("recipe.publish.ssm_parameters[{i}]");
            check_ssm_name(&field, name)?;
            if name.len() > limits::PARAMETER_NAME_CHARS {
                return Err(Error::invalid(
                    field,
                    format!("at most {} characters", limits::PARAMETER_NAME_CHARS),
                ));
            }
        }
        for (i, lt) in self.publish.launch_templates.iter().enumerate() {
            let field = format!("recipe.publish.launch_templates[{i}]");
            check_text(&format!("{field}.id_or_name"), &lt.id_or_name, 128)?;
            if let Some(r) = &lt.region {
                check_region(&format!("{field}.region"), r)?;
            }
        }
        Ok(())
    }
}

fn validate_build(b: &Build) -> Result<()> {
    check_placement(
        "recipe.build",
        Some(&b.instance_type),
        b.subnet_id.as_deref(),
        &b.fallback_instance_types,
        &b.fallback_subnet_ids,
        &b.security_group_ids,
        b.instance_profile.as_deref(),
    )?;
    check_volume_type("recipe.build.root_volume.volume_type", &b.root_volume.volume_type)?;
    check_range_or_zero("recipe.build.root_volume.size_gib", b.root_volume.size_gib, 1, 16384)?;
    let mut devices = BTreeSet::new();
    for (i, v) in b.data_volumes.iter().enumerate() {
        let field = format!("recipe.build.data_volumes[{i}]");
        let dev_ok = v.device_name.len() <= 32
            && v.device_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '/')
            && (v.device_name.starts_with("/dev/sd")
                || v.device_name.starts_with("/dev/xvd")
                || v.device_name.starts_with("xvd"));
        if !dev_ok {
            return Err(Error::invalid(
                format!("{field}.device_name"),
                "must look like /dev/sdf or xvdf",
            ));
        }
        if !devices.insert(&v.device_name) {
            return Err(Error::invalid(
                format!("{field}.device_name"),
                "device names must be unique",
            ));
        }
        check_volume_type(&format!("{field}.volume_type"), &v.volume_type)?;
        check_range(&format!("{field}.size_gib"), v.size_gib, 1, 16384)?;
    }
    if b.data_volumes.len() > limits::DATA_VOLUMES {
        return Err(Error::invalid(
            "recipe.build.data_volumes",
            format!("at most {} data volumes", limits::DATA_VOLUMES),
        ));
    }
    check_range(
        "recipe.build.timeout_minutes",
        b.timeout_minutes,
        5,
        limits::BUILD_MINUTES,
    )?;
    check_script("recipe.build.script", &b.script)
}

#[cfg(test)]
mod tests;
