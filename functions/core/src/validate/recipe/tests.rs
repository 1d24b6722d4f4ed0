use super::*;
use crate::model::instance_store::MANIFEST_FIELD;
use crate::model::recipe::{EXAMPLE as WEB, Platform};

const WINDOWS: &str = include_str!("../../../../../infra/recipes/windows-2022-base.json");

#[test]
fn example_recipes_are_valid() {
    let web = Recipe::from_json(WEB).unwrap();
    assert_eq!(web.name, "web");
    assert_eq!(
        web.all_regions("us-east-1"),
        ["us-east-1", "eu-west-1", "ap-southeast-2"]
    );
    let win = Recipe::from_json(WINDOWS).unwrap();
    assert_eq!(win.build.unwrap().platform, Platform::Windows);
    assert!(!win.distribution.public, "public sharing is off unless asked for");
}

fn field_of(text: &str) -> String {
    match Recipe::from_json(text) {
        Err(Error::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

fn edit(f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(WEB).unwrap();
    f(&mut v);
    v.to_string()
}

#[test]
fn bad_recipes_name_the_field() {
    use serde_json::json;
    let cases: Vec<(String, &str)> = vec![
        (edit(|v| v["schema_version"] = json!(2)), "recipe.schema_version"),
        (edit(|v| v["name"] = json!("Web Server")), "recipe.name"),
        (
            edit(|v| v["source"]["image"]["owners"] = json!(["amazon", "12345"])),
            "recipe.source.image.owners[1]",
        ),
        (
            edit(|v| v["source"]["image"]["id"] = json!("ami-0123456789abcdef0")),
            "recipe.source.image",
        ),
        (
            edit(|v| v["build"]["instance_type"] = json!("huge")),
            "recipe.build.instance_type",
        ),
        (
            edit(|v| v["build"]["timeout_minutes"] = json!(2)),
            "recipe.build.timeout_minutes",
        ),
        (
            edit(|v| v["build"]["fallback_instance_types"] = json!(["m5.large", "huge"])),
            "recipe.build.fallback_instance_types[1]",
        ),
        (
            edit(|v| v["build"]["fallback_instance_types"] = json!(["m5.large", "m5.large"])),
            "recipe.build.fallback_instance_types[1]",
        ),
        (
            edit(|v| v["build"]["fallback_instance_types"] = json!([v["build"]["instance_type"].clone()])),
            "recipe.build.fallback_instance_types[0]",
        ),
        (
            edit(|v| v["build"]["fallback_subnet_ids"] = json!(["subnet-0123"])),
            "recipe.build.fallback_subnet_ids[0]",
        ),
        (
            edit(|v| {
                v["build"]["fallback_subnet_ids"] = json!([
                    "subnet-0000000000000000a",
                    "subnet-0000000000000000b",
                    "subnet-0000000000000000c",
                    "subnet-0000000000000000d",
                    "subnet-0000000000000000e"
                ])
            }),
            "recipe.build.fallback_subnet_ids",
        ),
        (
            edit(|v| v["test"]["fallback_subnet_ids"] = json!(["sg-0123456789abcdef0"])),
            "recipe.test.fallback_subnet_ids[0]",
        ),
        (
            edit(|v| v["build"]["script"] = json!("echo\nAMI_PIPELINE_SCRIPT_END\nrm -rf /")),
            "recipe.build.script",
        ),
        (
            edit(|v| v["build"]["data_volumes"][0]["device_name"] = json!("/dev/sda;x")),
            "recipe.build.data_volumes[0].device_name",
        ),
        (
            edit(|v| v["image"]["name"] = json!("{{pipeline}}-{{secret}}")),
            "recipe.image.name",
        ),
        (
            edit(|v| v["image"]["tpm_support"] = json!(true)),
            "recipe.image.tpm_support",
        ),
        (
            edit(|v| v["image"]["tags"] = json!({"aws:x": "y"})),
            "recipe.image.tags.aws:x",
        ),
        (
            edit(|v| v["distribution"]["regions"] = json!(["eu-west-1", "eu-west-1"])),
            "recipe.distribution.regions[1]",
        ),
        (
            edit(|v| v["distribution"]["regions"] = json!(["mars-north-1"])),
            "recipe.distribution.regions[0]",
        ),
        (
            edit(|v| v["distribution"]["accounts"] = json!(["1234"])),
            "recipe.distribution.accounts[0]",
        ),
        (
            edit(|v| v["distribution"]["public"] = json!("yes")),
            "recipe.distribution.public",
        ),
        (
            edit(|v| v["distribution"]["public"] = json!(true)),
            "recipe.distribution.public",
        ),
        (
            edit(|v| {
                v["image"]
                    .as_object_mut()
                    .unwrap()
                    .remove("kms_key_id")
                    .map(|_| ())
                    .unwrap_or(())
            }),
            "recipe.image.kms_key_id",
        ),
        (
            edit(|v| v["image"]["kms_key_id"] = json!("alias/aws/ebs")),
            "recipe.image.kms_key_id",
        ),
        (
            edit(|v| v["distribution"]["kms_key_ids"]["eu-west-1"] = json!("alias/aws/ebs")),
            "recipe.distribution.kms_key_ids.eu-west-1",
        ),
        (
            edit(|v| v["publish"]["ssm_parameters"] = json!(["no-slash"])),
            "recipe.publish.ssm_parameters[0]",
        ),
        (edit(|v| v["retention"]["keep"] = json!(0)), "recipe.retention.keep"),
        (edit(|v| v["refresh"] = json!("sometimes")), "recipe.refresh"),
        (edit(|v| v["colour"] = json!("blue")), "recipe.colour"),
        (
            edit(|v| v.as_object_mut().unwrap().remove("build").map(|_| ()).unwrap_or(())),
            "recipe.build",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(field_of(&text), want, "{text}");
    }
}

/// "Snapshots encrypted with your default KMS key cannot be shared with other accounts" (ModifySnapshotAttribute
/// API reference): a shared image needs a customer-managed key in every region it lands in.
#[test]
fn a_shared_image_needs_a_key_in_every_copy_region() {
    let web = Recipe::from_json(WEB).unwrap();
    assert!(web.is_shared());
    assert_eq!(web.check_sharing_keys("us-east-1"), Ok(()));
    let mut missing = web.clone();
    missing.distribution.kms_key_ids.remove("ap-southeast-2");
    let err = missing.check_sharing_keys("us-east-1").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, message } if field == "recipe.distribution.kms_key_ids"
            && message.contains("`ap-southeast-2`")),
        "{err}"
    );
    // Built in ap-southeast-2, the image there takes image.kms_key_id: no copy needs that entry.
    assert_eq!(missing.check_sharing_keys("ap-southeast-2"), Ok(()));
    // Not shared: the default key is fine everywhere.
    let mut private = missing;
    private.distribution.accounts.clear();
    assert!(!private.is_shared());
    assert_eq!(private.check_sharing_keys("us-east-1"), Ok(()));
    private.image.kms_key_id = None;
    assert_eq!(private.validate(), Ok(()));
}

#[test]
fn unknown_fields_are_named() {
    let err = Recipe::from_json(&edit(|v| v["build"]["scrpit"] = serde_json::json!("x"))).unwrap_err();
    assert!(err.to_string().contains("unknown field `scrpit`"), "{err}");
}

/// The recipe keeps its `s3://` form and validation takes exactly that form (it once took anything containing
/// `.s3`). (Moved from `instance_store`.)
#[test]
fn recipe_validation_takes_the_s3_url_of_a_manifest_only() {
    let with = |manifest: &str| {
        let mut v: serde_json::Value = serde_json::from_str(WEB).unwrap();
        v["image"]["root_device_type"] = "instance-store".into();
        v["image"].as_object_mut().unwrap().remove("boot_mode");
        v["image"]["s3_manifest"] = manifest.into();
        Recipe::from_json(&v.to_string())
    };
    let ok = with("s3://my-bundles/web/image.manifest.xml").unwrap();
    assert_eq!(
        ok.image.s3_manifest.as_deref(),
        Some("s3://my-bundles/web/image.manifest.xml")
    );
    for bad in [
        "https://my-bundles.s3.amazonaws.com/image.manifest.xml",
        "s3://my-bundles/image.img",
    ] {
        let err = with(bad).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == MANIFEST_FIELD),
            "{bad}: {err}"
        );
    }
}

/// An instance-store root boots only on previous-generation Xen types ("Nitro-based instances support only EBS root
/// volumes", EC2 User Guide, "Root volumes for your Amazon EC2 instances"), and only Nitro types boot UEFI (EC2 User
/// Guide, "Requirements to launch an EC2 instance in UEFI boot mode"), which NitroTPM needs: a recipe asking for
/// either is refused, naming the field and why.
#[test]
fn an_instance_store_image_cannot_ask_for_uefi_or_nitro_tpm() {
    let store = |f: fn(&mut serde_json::Value)| {
        let text = edit(|v| {
            v["image"]["root_device_type"] = "instance-store".into();
            v["image"]["s3_manifest"] = "s3://my-bundles/web/image.manifest.xml".into();
            f(v);
        });
        Recipe::from_json(&text)
    };
    for mode in ["uefi", "uefi-preferred"] {
        let err = match mode {
            "uefi" => store(|v| v["image"]["boot_mode"] = "uefi".into()),
            _ => store(|v| v["image"]["boot_mode"] = "uefi-preferred".into()),
        }
        .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, message } if field == "recipe.image.boot_mode"
                && message.contains("Xen") && message.contains("legacy-bios")),
            "{mode}: {err}"
        );
    }
    let err = store(|v| {
        v["image"]["boot_mode"] = "uefi".into();
        v["image"]["tpm_support"] = true.into();
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "recipe.image.boot_mode"
            || field == "recipe.image.tpm_support"),
        "{err}"
    );
    for ok in [
        store(|v| {
            v["image"].as_object_mut().unwrap().remove("boot_mode");
        }),
        store(|v| v["image"]["boot_mode"] = "legacy-bios".into()),
    ] {
        ok.unwrap();
    }
}

/// What a run carries in every state of its execution is capped at 256 KiB (`definition::payload`): the recipe's
/// size, and what publish and retire report per region, are limited, each refusal naming its field.
#[test]
fn limits_that_bound_the_executions_state_name_their_field() {
    use crate::model::recipe::limits;
    let field = |f: fn(&mut serde_json::Value)| match Recipe::from_json(&edit(f)) {
        Err(Error::InvalidInput { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(|v| v["publish"]["ssm_parameters"] = (0..5).map(|i| format!("/p/{i}")).collect()),
        "recipe.publish.ssm_parameters"
    );
    assert_eq!(
        field(|v| v["publish"]["ssm_parameters"] = serde_json::json!([format!("/{}", "p".repeat(128))])),
        "recipe.publish.ssm_parameters[0]"
    );
    assert_eq!(
        field(|v| {
            v["publish"]["launch_templates"] = (0..6)
                .map(|i| serde_json::json!({"id_or_name": format!("t{i}")}))
                .collect()
        }),
        "recipe.publish.launch_templates"
    );
    assert_eq!(field(|v| v["retention"]["keep"] = 26.into()), "recipe.retention.keep");
    // 1,000 accounts (AWS's most entities per image) do not fit: an organization or OU does it in one.
    assert_eq!(
        field(
            |v| v["distribution"]["accounts"] = (0..1000).map(|i| format!("{:012}", 100_000_000_000_u64 + i)).collect()
        ),
        "recipe"
    );
    let at_the_limits = Recipe::from_json(&edit(|v| {
        v["publish"]["ssm_parameters"] = (0..4).map(|i| format!("/{}{i}", "p".repeat(126))).collect();
        v["retention"]["keep"] = 25.into();
    }))
    .unwrap();
    assert!(serde_json::to_vec(&at_the_limits).unwrap().len() <= limits::RECIPE_BYTES);
}
