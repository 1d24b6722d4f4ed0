use super::*;
use crate::model::recipe::{EXAMPLE, Recipe};

pub(crate) fn spec(boot_mode: Option<BootMode>, tpm: bool, arch: Architecture) -> ImageSpec {
    let mut image = crate::model::input::parse_str::<Recipe>("recipe", EXAMPLE)
        .unwrap()
        .image;
    image.boot_mode = boot_mode;
    image.tpm_support = tpm;
    image.architecture = arch;
    image
}

pub(crate) fn origin(details: &str, operation: &str, boot_mode: Option<&str>, tpm: bool) -> Origin {
    Origin {
        what: "base image ami-1".into(),
        platform_details: details.into(),
        usage_operation: operation.into(),
        boot_mode: boot_mode.map(String::from),
        current_boot_mode: None,
        tpm_support: tpm,
    }
}

pub(crate) const X86: Architecture = Architecture::X86_64;

#[test]
fn only_plain_linux_is_registered_from_snapshots() {
    let image = spec(None, false, X86);
    let linux = plan(&origin(LINUX_UNIX, RUN_INSTANCES, None, false), &image).unwrap();
    assert_eq!(linux.method, Method::Snapshots);
    for (details, operation) in [
        ("Windows", "RunInstances:0002"),
        ("Red Hat Enterprise Linux", "RunInstances:0010"),
        ("SUSE Linux", "RunInstances:000g"),
        ("Windows with SQL Server Standard", "RunInstances:0006"),
        // Linux/UNIX with a Marketplace or other billing code keeps it only through CreateImage.
        (LINUX_UNIX, "RunInstances:0010"),
        // No billing information at all: CreateImage carries whatever the instance has.
        ("", ""),
    ] {
        let p = plan(&origin(details, operation, None, false), &image).unwrap();
        assert_eq!(p.method, Method::CreateImage, "{details} {operation}");
        assert_eq!(
            (p.platform_details.as_str(), p.usage_operation.as_str()),
            (details, operation)
        );
    }
}

#[test]
fn boot_mode_comes_from_the_base_unless_the_recipe_narrows_a_dual_one() {
    let linux = |mode| origin(LINUX_UNIX, RUN_INSTANCES, mode, false);
    assert_eq!(
        plan(&linux(Some("uefi-preferred")), &spec(None, false, X86))
            .unwrap()
            .boot_mode
            .as_deref(),
        Some("uefi-preferred")
    );
    assert_eq!(plan(&linux(None), &spec(None, false, X86)).unwrap().boot_mode, None);
    for asked in [BootMode::Uefi, BootMode::LegacyBios, BootMode::UefiPreferred] {
        let p = plan(&linux(Some("uefi-preferred")), &spec(Some(asked), false, X86)).unwrap();
        assert_eq!(p.boot_mode.as_deref(), Some(asked.as_str()));
        assert!(!p.boot_mode_override);
    }
    // x86 without a boot mode boots legacy BIOS; Graviton boots UEFI.
    assert!(plan(&linux(None), &spec(Some(BootMode::LegacyBios), false, X86)).is_ok());
    assert!(plan(&linux(None), &spec(Some(BootMode::Uefi), false, Architecture::Arm64)).is_ok());
}

#[test]
fn a_boot_mode_the_base_cannot_boot_is_refused_naming_the_field() {
    let cases = [
        (None, BootMode::Uefi, X86),
        (Some("legacy-bios"), BootMode::UefiPreferred, X86),
        (Some("uefi"), BootMode::LegacyBios, X86),
        (None, BootMode::LegacyBios, Architecture::Arm64),
    ];
    for (base, asked, arch) in cases {
        let err = plan(
            &origin(LINUX_UNIX, RUN_INSTANCES, base, false),
            &spec(Some(asked), false, arch),
        )
        .unwrap_err();
        assert_eq!(err.error_type(), "AmiPipeline.InvalidInput");
        let text = err.to_string();
        assert!(
            text.contains("recipe.image.boot_mode") && text.contains(asked.as_str()),
            "{text}"
        );
    }
}

#[test]
fn create_image_keeps_the_boot_mode_and_can_only_narrow_to_uefi() {
    let win = |mode| origin("Windows", "RunInstances:0002", mode, false);
    let p = plan(&win(Some("uefi-preferred")), &spec(Some(BootMode::Uefi), false, X86)).unwrap();
    assert!(p.boot_mode_override);
    let err = plan(
        &win(Some("uefi-preferred")),
        &spec(Some(BootMode::LegacyBios), false, X86),
    )
    .unwrap_err();
    assert!(err.to_string().contains("CreateImage"), "{err}");
    let p = plan(&win(Some("uefi")), &spec(Some(BootMode::Uefi), false, X86)).unwrap();
    assert!(!p.boot_mode_override);
    // Only an instance that booted UEFI can be narrowed (a uefi-preferred AMI on a BIOS-only type boots BIOS).
    let bios_booted = Origin {
        current_boot_mode: Some("legacy-bios".into()),
        ..win(Some("uefi-preferred"))
    };
    let err = plan(&bios_booted, &spec(Some(BootMode::Uefi), false, X86)).unwrap_err();
    assert!(err.to_string().contains("booted `legacy-bios`"), "{err}");
    let uefi_booted = Origin {
        current_boot_mode: Some("uefi".into()),
        ..win(Some("uefi-preferred"))
    };
    assert!(
        plan(&uefi_booted, &spec(Some(BootMode::Uefi), false, X86))
            .unwrap()
            .boot_mode_override
    );
}

#[test]
fn nitro_tpm_needs_uefi_and_for_create_image_a_tpm_base() {
    // The old Windows example: a legacy-BIOS base registered as uefi with TPM.
    let legacy = origin("Windows", "RunInstances:0002", None, false);
    let err = plan(&legacy, &spec(Some(BootMode::Uefi), true, X86)).unwrap_err();
    assert!(err.to_string().contains("recipe.image.boot_mode"), "{err}");
    let err = plan(&legacy, &spec(None, true, X86)).unwrap_err();
    assert!(err.to_string().contains("recipe.image.tpm_support"), "{err}");
    // A UEFI Windows base without NitroTPM: CreateImage cannot add it.
    let uefi = origin("Windows", "RunInstances:0002", Some("uefi"), false);
    let err = plan(&uefi, &spec(Some(BootMode::Uefi), true, X86)).unwrap_err();
    assert!(err.to_string().contains("TPM-Windows_Server-2022"), "{err}");
    // The fixed example: TPM-Windows_Server-2022-*.
    let tpm = origin("Windows", "RunInstances:0002", Some("uefi"), true);
    let p = plan(&tpm, &spec(Some(BootMode::Uefi), true, X86)).unwrap();
    assert_eq!((p.method, p.tpm_support), (Method::CreateImage, true));
    // Linux from snapshots: RegisterImage sets TpmSupport itself.
    let linux = origin(LINUX_UNIX, RUN_INSTANCES, Some("uefi-preferred"), false);
    assert!(
        plan(&linux, &spec(Some(BootMode::Uefi), true, X86))
            .unwrap()
            .tpm_support
    );
}

/// An instance-store root boots only on the previous-generation Xen types that support one ("Root volumes for your
/// Amazon EC2 instances": "Nitro-based instances support only EBS root volumes"), and only Nitro types boot UEFI
/// ("Requirements to launch an EC2 instance in UEFI boot mode"): such an image is legacy BIOS, without NitroTPM,
/// whatever its base declares; a base that boots only UEFI cannot make one.
#[test]
fn an_instance_store_image_boots_legacy_bios_without_nitro_tpm() {
    let mut image = spec(None, false, X86);
    image.root_device_type = crate::model::recipe::RootDeviceType::InstanceStore;
    for declared in [None, Some("uefi-preferred"), Some("legacy-bios")] {
        let p = plan(&origin(LINUX_UNIX, RUN_INSTANCES, declared, false), &image).unwrap();
        assert_eq!(p.boot_mode.as_deref(), Some("legacy-bios"), "{declared:?}");
        assert!(!p.tpm_support && !p.boot_mode_override, "{declared:?}");
    }
    let err = plan(&origin(LINUX_UNIX, RUN_INSTANCES, Some("uefi"), true), &image).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, message } if field == "recipe.image.root_device_type"
            && message.contains("UEFI")),
        "{err}"
    );
}
