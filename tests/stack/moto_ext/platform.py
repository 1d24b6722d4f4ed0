"""Billing, boot modes and CreateImage: EC2 behaviours moto 5.2.5 lacks (see ../README.md, the rule book).

moto's images have no PlatformDetails/UsageOperation and all report BootMode `uefi`; its instances report none of
them; CreateImage cannot tag snapshots and makes no snapshots of the instance's volumes; GetInstanceUefiData is
empty. Here:
- seeded Amazon images report their billing and a realistic boot mode, and the Windows Server 2022 bases AWS
  publishes exist (`Windows_Server-2022-English-Full-Base-*`: legacy BIOS; `TPM-Windows_Server-2022-*`: UEFI and
  NitroTPM, EC2 User Guide "Prerequisites for enabling NitroTPM");
- an instance reports its AMI's PlatformDetails, UsageOperation, BootMode and TpmSupport (DescribeInstances);
- RegisterImage from snapshots derives billing from snapshot metadata "but this requires the appropriate metadata
  to be present" (RegisterImage API reference): our snapshots carry none, so such an image is Linux/UNIX
  whatever it was built from; CreateImage keeps the instance's billing;
- every image, volume and snapshot remembers the boot mode its operating system supports (from the base image
  down), and an instance that boots a mode its OS does not support fails its instance status check ("The
  operating system contained in the AMI must be configured to support the specified boot mode", RegisterImage
  BootMode).
The rules read this emulator's state; none copies the pipeline's logic.
"""

import base64
import zlib
from datetime import datetime, timezone

from moto.core.responses import ActionResult
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.instances import Instance
from moto.ec2.responses import EC2Response
from moto.ec2.utils import convert_tag_spec, random_ami_id

from . import patches, state
from .patches import _check_ami_name, _err, _track_image, _track_snapshot

LINUX = ("Linux/UNIX", "RunInstances")
WINDOWS = ("Windows", "RunInstances:0002")
# Owner of Amazon's Windows AMIs.
WINDOWS_OWNER = "801119661308"
# (name, boot mode, NitroTPM) of the Windows Server 2022 bases added to every region.
WINDOWS_BASES = (
    ("Windows_Server-2022-English-Full-Base-2026.11.12", None, False),
    ("TPM-Windows_Server-2022-English-Full-Base-2026.11.12", "uefi", True),
)

# Resource id (image, instance, volume, snapshot) -> the boot mode its operating system supports.
OS_BOOT: dict[str, str] = {}
ORIG: dict = {}


def default_boot_mode(architecture: str | None) -> str:
    """No BootMode on an image: Graviton boots UEFI, Intel/AMD legacy BIOS (EC2 User Guide, boot modes)."""
    return "uefi" if architecture == "arm64" else "legacy-bios"


def os_boot(ami) -> str:
    """What the image's OS boots: recorded from its lineage, else (a base image) what it declares."""
    return OS_BOOT.get(ami.id) or ami.boot_mode or default_boot_mode(ami.architecture)


def _boots(used: str, supported: str) -> bool:
    return supported == "uefi-preferred" or supported == used


def _realistic(ami) -> None:
    """A seeded Amazon image as DescribeImages reports such images on AWS."""
    if ami.platform == "windows":
        ami.platform_details, ami.usage_operation = WINDOWS
        ami.boot_mode = "uefi" if (ami.name or "").startswith("TPM-") else None
    else:
        ami.platform_details, ami.usage_operation = LINUX
        name = ami.name or ""
        ami.boot_mode = ("uefi" if ami.architecture == "arm64"
                         else "uefi-preferred" if "al2023" in name else None)


def _load_amis(self) -> None:
    ORIG["load_amis"](self)
    if not self.amis:
        return  # default images not loaded (MOTO_AMIS_PATH / settings): add none either
    for ami in self.amis.values():
        _realistic(ami)
    for name, boot_mode, tpm in WINDOWS_BASES:
        ami = Ami(self, random_ami_id(), name=name, description=name, owner_id=WINDOWS_OWNER,
                  owner_alias="amazon", public=True, virtualization_type="hvm", architecture="x86_64",
                  platform="windows", root_device_type="ebs", root_device_name="/dev/sda1",
                  region_name=f"{self.region_name}a", boot_mode=boot_mode,
                  creation_date=datetime(2026, 11, 12, tzinfo=timezone.utc))
        ami.platform_details, ami.usage_operation = WINDOWS
        ami.tpm_support = "v2.0" if tpm else None
        ami.ena_support = True
        self.amis[ami.id] = ami


def run_instances(self):
    """An instance reports its AMI's billing, boot mode and NitroTPM (DescribeInstances PlatformDetails,
    UsageOperation, BootMode "specified by the AMI", CurrentInstanceBootMode, TpmSupport); its volumes carry the
    AMI's OS; booting a mode that OS does not support fails the instance status check."""
    result = ORIG["run_instances"](self)
    backend = self.ec2_backend
    for inst in result.result.instances:
        ami = backend.amis.get(inst.image_id)
        if ami is None or inst.id in OS_BOOT:
            continue  # unknown image, or the same reservation answered again (ClientToken)
        inst.platform_details = getattr(ami, "platform_details", None)
        inst.usage_operation = getattr(ami, "usage_operation", None)
        inst.boot_mode = ami.boot_mode
        inst.tpm_support = getattr(ami, "tpm_support", None)
        declared = ami.boot_mode or default_boot_mode(ami.architecture)
        # uefi-preferred boots UEFI on the Nitro types the pipeline launches.
        inst.current_instance_boot_mode = "legacy-bios" if declared == "legacy-bios" else "uefi"
        supported = OS_BOOT[inst.id] = os_boot(ami)
        for mapping in inst.block_device_mapping.values():
            OS_BOOT[mapping.volume_id] = supported
        rec = state.RESOURCES.get(inst.id)
        if rec is not None and not _boots(inst.current_instance_boot_mode, supported):
            rec["boot_fails"] = True
            rec["done"] = True  # the OS never starts: no user data runs
    return result


def _instance_status(inst):
    rec = state.RESOURCES.get(inst.id)
    if rec and rec.get("boot_fails") and inst.state == "running":
        return {"Status": "impaired", "Details": [{"Name": "reachability", "Status": "failed"}]}
    return ORIG["instance_status"].fget(inst)


def create_snapshots(self):
    """A snapshot holds the OS of its volume."""
    result = ORIG["create_snapshots"](self)
    for snap in result.result["Snapshots"]:
        if snap.volume.id in OS_BOOT:
            OS_BOOT[snap.id] = OS_BOOT[snap.volume.id]
    return result


def create_snapshot(self):
    result = ORIG["create_snapshot"](self)
    snap = result.result
    volume_id = getattr(getattr(snap, "volume", None), "id", None)
    if volume_id in OS_BOOT:
        OS_BOOT[snap.id] = OS_BOOT[volume_id]
    return result


def _lose_billing(ami) -> bool:
    """Fault `{"billing_lost": true}`: the next image made reports no billing information (RegisterImage API
    reference: "If the field is empty or doesn't match the expected operating system code ...")."""
    if state.FLAGS.get("billing_lost", 0) > 0:
        state.FLAGS["billing_lost"] -= 1
        ami.platform_details, ami.usage_operation = "", ""
        return True
    return False


def register_image(self):
    """From snapshots, billing comes from snapshot metadata, which ours lack: Linux/UNIX (RegisterImage API
    reference). UefiData is kept on the image (DescribeImageAttribute uefiData). The image's OS is its root
    snapshot's."""
    result = ORIG["register_image"](self)
    backend = self.ec2_backend
    ami = backend.amis[result.result["ImageId"]]
    ami.platform = None
    ami.platform_details, ami.usage_operation = LINUX
    _lose_billing(ami)
    ami.uefi_data = self._get_param("UefiData")
    root = ami.root_device_name
    for m in getattr(ami, "sim_bdm", None) or []:
        snap_id = (m.get("Ebs") or {}).get("SnapshotId")
        if m.get("DeviceName") == root and snap_id in OS_BOOT:
            OS_BOOT[ami.id] = OS_BOOT[snap_id]
    return result


def copy_image(self):
    """A copy keeps its source's billing, UEFI data and OS (CopyImage copies the AMI)."""
    result = ORIG["copy_image"](self)
    ami = self.ec2_backend.amis.get(result.result["ImageId"])
    source_id = self._get_param("SourceImageId")
    from moto.ec2.models import ec2_backends
    source = ec2_backends[self.current_account][self._get_param("SourceRegion")].amis.get(source_id)
    if ami is not None and source is not None:
        for attr in ("platform", "platform_details", "usage_operation", "uefi_data"):
            setattr(ami, attr, getattr(source, attr, None))
        if source_id in OS_BOOT:
            OS_BOOT[ami.id] = OS_BOOT[source_id]
    return result


def create_image(self):
    """CreateImage (EC2 API reference): an EBS-backed AMI of a running or stopped instance; each EBS volume is
    snapshotted (encryption and key kept), TagSpecifications tag the image and the snapshots, the image keeps the
    instance's billing information and boot mode (`BootModeOverride` only `uefi`, only for an instance booted in
    UEFI), and starts `pending`. moto's CreateImage raises NotImplementedError on snapshot tags and snapshots
    nothing of the instance. That the image keeps the instance's NitroTPM support is not documented: assumed here,
    and the pipeline checks it on the image instead of trusting it."""
    backend = self.ec2_backend
    instance_id = self._get_param("InstanceId")
    inst = backend.get_instance(instance_id)
    name = self._get_param("Name")
    _check_ami_name(backend, name)
    tags = convert_tag_spec(self._get_param("TagSpecifications", []))
    if set(tags) - {"image", "snapshot"}:
        raise _err("InvalidParameterValue", "CreateImage can only tag resource types 'image' and 'snapshot'.")
    override = self._get_param("BootModeOverride")
    if override and (override != "uefi" or getattr(inst, "current_instance_boot_mode", None) != "uefi"):
        raise _err("InvalidParameterCombination",
                   "BootModeOverride uefi is only supported for an instance booted in UEFI boot mode.")
    if inst.state not in ("running", "stopped"):
        raise _err("IncorrectInstanceState", f"The instance '{instance_id}' is not in a state from which it can "
                                             f"be imaged (it is {inst.state}).")
    self.error_on_dryrun()

    ami = backend.register_image(name, self._get_param("Description", ""))
    backend.snapshots.pop(ami.ebs_snapshot.id, None)  # moto's placeholder snapshot
    mappings = []
    for device, bd in inst.block_device_mapping.items():
        vol = backend.get_volume(bd.volume_id)
        snap = backend.create_snapshot(vol.id, f"Created by CreateImage({instance_id}) for {ami.id}",
                                       from_ami=ami.id)
        snap.encrypted = vol.encrypted
        snap.kms_key_id = getattr(snap, "kms_key_id", None) or vol.kms_key_id
        snap.add_tags(tags.get("snapshot", {}))
        _track_snapshot(snap)
        if vol.id in OS_BOOT:
            OS_BOOT[snap.id] = OS_BOOT[vol.id]
        ebs = {"SnapshotId": snap.id, "VolumeSize": int(vol.size), "VolumeType": vol.volume_type or "gp2",
               "DeleteOnTermination": bool(getattr(bd, "delete_on_termination", True)),
               "Encrypted": bool(snap.encrypted)}
        for key, value in (("Iops", vol.iops), ("Throughput", vol.throughput), ("KmsKeyId", snap.kms_key_id)):
            if value:
                ebs[key] = value
        mappings.append({"DeviceName": device, "Ebs": ebs})
    ami.sim_bdm = sorted(mappings, key=lambda m: m["DeviceName"])
    ami.root_device_type = "ebs"
    ami.root_device_name = inst.root_device_name
    ami.architecture = inst.architecture
    ami.virtualization_type = "hvm"
    ami.platform = inst.platform
    ami.platform_details = getattr(inst, "platform_details", None)
    ami.usage_operation = getattr(inst, "usage_operation", None)
    _lose_billing(ami)
    ami.boot_mode = override or getattr(inst, "boot_mode", None)
    ami.tpm_support = getattr(inst, "tpm_support", None)
    ami.ena_support = True
    ami.sriov_net_support = "simple"
    ami.imds_support = None
    ami.image_location = f"{backend.account_id}/{name}"
    ami.add_tags(tags.get("image", {}))
    if inst.id in OS_BOOT:
        OS_BOOT[ami.id] = OS_BOOT[inst.id]
    _track_image(ami)
    return ActionResult({"ImageId": ami.id})


def get_instance_uefi_data(self):
    """GetInstanceUefiData: the non-volatile UEFI variable store, base64 of zlib data (EC2 API reference). "Bare
    metal instances don't preserve UEFI non-volatile variables across instance stop/start" (EC2 User Guide, "UEFI
    variables for Amazon EC2 instances"): a stopped bare-metal instance's store is empty here. AWS documents neither
    what a legacy-BIOS instance answers nor what "not preserved" reads as: empty for both is the emulator's choice."""
    inst = self.ec2_backend.get_instance(self._get_param("InstanceId"))
    data = ""
    kept = not (_bare_metal(inst.instance_type) and inst.state == "stopped")
    if getattr(inst, "current_instance_boot_mode", None) == "uefi" and kept:
        data = base64.b64encode(zlib.compress(f"sim-uefi-vars:{inst.id}".encode())).decode()
    return ActionResult({"InstanceId": inst.id, "UefiData": data})


def _bare_metal(instance_type: str) -> bool:
    """DescribeInstanceTypes `BareMetal`, from moto's instance-type data."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    return bool(INSTANCE_TYPES.get(instance_type, {}).get("BareMetal"))


def modify_image_attribute(self):
    """ModifyImageAttribute ImdsSupport=v2.0 sets the image's ImdsSupport; it cannot be undone (EC2 API reference:
    ImdsSupport)."""
    imds = self._get_param("ImdsSupport")
    if isinstance(imds, dict):
        imds = imds.get("Value")
    if imds:
        if imds != "v2.0":
            raise _err("InvalidParameterValue", f"ImdsSupport must be v2.0, not {imds!r}.")
        ami = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
        self.error_on_dryrun()
        ami.imds_support = "v2.0"
        return ActionResult({"Return": True})
    return ORIG["modify_image_attribute"](self)


HANDLERS = {
    "run_instances": run_instances,
    "create_snapshots": create_snapshots,
    "create_snapshot": create_snapshot,
    "register_image": register_image,
    "copy_image": copy_image,
    "create_image": create_image,
    "get_instance_uefi_data": get_instance_uefi_data,
    "modify_image_attribute": modify_image_attribute,
}


def install() -> None:
    """After patches.apply(): wraps its handlers (or moto's) with the rules above, once."""
    if ORIG:
        return
    for name, fn in HANDLERS.items():
        ORIG[name] = getattr(EC2Response, name)
        setattr(EC2Response, name, fn)
    ORIG["load_amis"] = AmiBackend._load_amis
    AmiBackend._load_amis = _load_amis
    ORIG["instance_status"] = Instance.instance_status
    Instance.instance_status = property(_instance_status)
    state.FLAGS.setdefault("billing_lost", 0)
    assert patches.ORIG, "patches.apply() must run first"
