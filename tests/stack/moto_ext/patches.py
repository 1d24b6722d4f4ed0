"""Monkeypatches on moto 5.2.5's EC2 responses and models.

Each patch reproduces one EC2 behaviour that moto 5.2.5 lacks; its docstring names the
behaviour and the EC2 API reference fact (see also /work/shared/reference/aws-facts.md).
All EC2 requests run under state.LOCK (middleware.py), so no further locking here.
"""

import base64
import copy
import gzip
import json
import re
from datetime import datetime, timedelta, timezone

import moto
from moto.core.responses import ActionResult, EmptyResult
from moto.core.types import Base64EncodedString
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot
from moto.ec2.models.instances import Instance, InstanceState, StateReason
from moto.ec2.responses import EC2Response
from moto.ec2.utils import convert_tag_spec

from . import state

# Patches target moto's internals; refuse to run on a version they were not written for.
assert moto.__version__ == "5.2.5", f"moto_ext is written for moto 5.2.5, found {moto.__version__}"

K = state.POLLS
ORIG: dict = {}
PATCHES: dict = {}  # EC2Response method name -> replacement


def ec2_action(fn):
    """Register fn as the EC2Response handler of the action of the same (snake_case) name."""
    PATCHES[fn.__name__] = fn
    return fn


def apply() -> None:
    """Install all patches once (moto dispatches by method name on EC2Response)."""
    if not state.patch(EC2Response, PATCHES, ORIG):
        return
    ORIG["add_block_device"] = Instance.add_block_device
    Instance.add_block_device = _add_block_device
    ORIG["bdm"] = Ami.block_device_mappings
    Ami.block_device_mappings = property(
        lambda ami: ami.sim_bdm if getattr(ami, "sim_bdm", None) is not None else ORIG["bdm"].fget(ami))
    ORIG["progress"] = Snapshot.progress
    Snapshot.progress = property(lambda s: getattr(s, "sim_progress", None) or ORIG["progress"].fget(s))
    # CreateSnapshots answers SnapshotInfo, whose State is read as `state` (moto has only `status`).
    Snapshot.state = property(lambda s: s.status)
    for prop in ("instance_status", "system_status"):
        ORIG[prop] = getattr(Instance, prop)
        setattr(Instance, prop, property(lambda inst, p=prop: _status_check(inst, p)))
    ORIG["create_snapshot"] = EBSBackend.create_snapshot
    EBSBackend.create_snapshot = _create_snapshot
    from moto.kms.models import KmsBackend
    ORIG["kms_create_alias"] = KmsBackend.create_alias
    KmsBackend.create_alias = _kms_create_alias
    from moto.ssm.models import SimpleSystemManagerBackend
    ORIG["ssm_put_parameter"] = SimpleSystemManagerBackend.put_parameter
    SimpleSystemManagerBackend.put_parameter = _ssm_put_parameter


# ---------------------------------------------------------------- helpers

def _err(code: str, message: str) -> EC2ClientError:
    return EC2ClientError(code, message)  # serialised by moto as an EC2 XML error, HTTP 400


def _fingerprint(resp) -> str:
    params = {k: v for k, v in resp.querystring.items() if k not in ("ClientToken", "Version")}
    return json.dumps(params, sort_keys=True, default=str)


def _token_lookup(resp, action: str, exists) -> tuple[tuple | None, str | None]:
    """Return (token key, id of the resource an earlier call with this token made)."""
    token = resp._get_param("ClientToken")
    if not token:
        return None, None
    key = (resp.current_account, resp.region, action, token)
    hit = state.TOKENS.get(key)
    if hit and exists(hit[1]):
        if hit[0] != _fingerprint(resp):
            raise _err("IdempotentParameterMismatch",
                       f"Arguments on this idempotent request are inconsistent with arguments "
                       f"used in previous request(s) (client token {token}).")
        return key, hit[1]
    return key, None


AMI_NAME = re.compile(r"[A-Za-z0-9()\[\]./\-'@_ ]{3,128}")


def _check_ami_name(backend, name: str) -> None:
    """AMI names: 3-128 characters of a fixed set, unique per account and region among
    images that are not deregistered (EC2 RegisterImage/CopyImage: InvalidAMIName.Duplicate)."""
    if not name or not AMI_NAME.fullmatch(name):
        raise _err("InvalidAMIName.Malformed", f"AMI name {name!r} is malformed.")
    for ami in backend.amis.values():
        if ami.name == name and ami.owner_id == backend.account_id:
            raise _err("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {ami.id}")


def _tracked(backend_items: dict, ids: list[str]):
    """Tracked resources of this region that a describe call with these ids includes
    (a call without ids lists the region, so it counts for every tracked resource)."""
    for rid in (dict.fromkeys(ids) or [r for r in state.RESOURCES if r in backend_items]):
        if rid in state.RESOURCES and rid in backend_items:
            yield backend_items[rid], state.RESOURCES[rid]


def _user_data_text(user_data) -> str:
    if user_data is None:
        return ""
    raw = base64.b64decode(user_data.as_bytes() if hasattr(user_data, "as_bytes") else user_data)
    if raw[:2] == b"\x1f\x8b":  # cloud-init accepts gzip-compressed user data
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", "replace")


# ---------------------------------------------------------------- images

def _track_image(ami, final: str = "available", reason: dict | None = None) -> None:
    ami.state = "pending"
    state.RESOURCES[ami.id] = {"polls": 0, "final": final, "reason": reason}


@ec2_action
def describe_images(self):
    """New AMIs are `pending` before `available` (or `failed`, with a StateReason)
    (EC2 DescribeImages: ImageState pending | available | failed ...): each image stays
    pending for the first K DescribeImages calls that include it."""
    for ami, rec in _tracked(self.ec2_backend.amis, self._get_param("ImageIds", [])):
        rec["polls"] += 1
        if ami.state == "pending" and rec["polls"] > K:
            ami.state = rec["final"]
            if rec["reason"]:
                ami.state_reason = rec["reason"]
    # Disabled AMIs are left out of listings unless IncludeDisabled (DescribeImages: "Default: No disabled AMIs
    # are included in the response"); moto lists them. Hidden for this call only (EC2 calls are serialised by the
    # middleware). Asked for by id, they are still answered: AWS does not document that case.
    amis = self.ec2_backend.amis
    listing = not self._get_param("ImageIds")
    hidden = {} if self._get_bool_param("IncludeDisabled", False) or not listing else {
        i: a for i, a in amis.items() if a.state == "disabled"}
    for i in hidden:
        amis.pop(i)
    try:
        return ORIG["describe_images"](self)
    finally:
        amis.update(hidden)


def _image_bdm(backend, mappings: list[dict], ami_id: str) -> list[dict]:
    """Block device mappings as RegisterImage gives them, completed from the snapshots."""
    result = []
    for m in mappings:
        entry = {"DeviceName": m.get("DeviceName")}
        ebs = m.get("Ebs")
        if ebs:
            snap = backend.get_snapshot(ebs["SnapshotId"]) if ebs.get("SnapshotId") else None
            if snap:
                snap.from_ami = ami_id  # DeleteSnapshot now fails InvalidSnapshot.InUse
            entry["Ebs"] = {
                "SnapshotId": snap.id if snap else None,
                "VolumeSize": int(ebs.get("VolumeSize") or (snap.volume_size if snap else 8)),
                "VolumeType": ebs.get("VolumeType") or "gp2",
                "DeleteOnTermination": bool(ebs.get("DeleteOnTermination", True)),
                # A mapping given by snapshot id takes the snapshot's encryption.
                "Encrypted": snap.encrypted if snap else bool(ebs.get("Encrypted", False)),
            }
            for key in ("Iops", "Throughput"):
                if ebs.get(key):
                    entry["Ebs"][key] = int(ebs[key])
            if snap and snap.kms_key_id:
                entry["Ebs"]["KmsKeyId"] = snap.kms_key_id
        elif m.get("VirtualName"):
            entry["VirtualName"] = m["VirtualName"]
        elif "NoDevice" in m:
            entry["NoDevice"] = ""
        result.append(entry)
    return result


MANIFEST_ERROR = ("The specified AMI has an unparsable manifest, or you may not have access to the location of the "
                  "manifest file in Amazon S3.")


def _check_manifest(account: str, location: str) -> None:
    """RegisterImage ImageLocation is "the full path to your AMI manifest in Amazon S3 storage" written
    `bucket/path/image.manifest.xml` (RegisterImage API reference and its CLI example; no `s3://`), and EC2 reads the
    manifest from S3 when registering. A location that is not `bucket/key`, or names no object in this account's
    S3, fails InvalidManifest with AWS's message (EC2 API reference, "Error codes"). Not checked: the manifest's
    content, and the bucket's `aws-exec-read` ACL."""
    from moto.s3.models import s3_backends

    bucket, _, key = location.partition("/")
    found = None
    if bucket and key and "://" not in location and not location.startswith("/"):
        try:
            found = s3_backends[account]["aws"].get_object(bucket, key)
        except Exception:  # noqa: BLE001 - moto raises MissingBucket for an unknown bucket
            found = None
    if found is None:
        raise _err("InvalidManifest", MANIFEST_ERROR)


@ec2_action
def register_image(self):
    """RegisterImage keeps what the caller declares (EC2 RegisterImage: Architecture,
    RootDeviceName, BlockDeviceMappings, VirtualizationType, EnaSupport, SriovNetSupport,
    BootMode, TpmSupport, ImdsSupport, TagSpecifications with ResourceType image), names are
    unique per region (InvalidAMIName.Duplicate), and the new image starts `pending`."""
    backend = self.ec2_backend
    name = self._get_param("Name")
    _check_ami_name(backend, name)
    tags = convert_tag_spec(self._get_param("TagSpecifications", []))
    if set(tags) - {"image"}:
        raise _err("InvalidParameterValue", "RegisterImage can only tag resource type 'image'.")
    _check_ebs_settings(self._get_param("BlockDeviceMappings", []))
    boot_mode, tpm = self._get_param("BootMode"), self._get_param("TpmSupport")
    if tpm and boot_mode not in ("uefi", "uefi-preferred"):  # NitroTPM needs UEFI
        raise _err("InvalidParameterCombination", "TpmSupport v2.0 requires BootMode uefi.")
    location = self._get_param("ImageLocation")
    if location:
        _check_manifest(self.current_account, location)
    self.error_on_dryrun()

    ami = backend.register_image(name, self._get_param("Description", ""))
    mappings = self._get_param("BlockDeviceMappings", [])
    if mappings:
        # moto made an auto snapshot for the image: real RegisterImage from snapshots makes none.
        backend.snapshots.pop(ami.ebs_snapshot.id, None)
        ami.sim_bdm = _image_bdm(backend, mappings, ami.id)
    elif location:
        # An instance-store image lives in S3: no snapshot, no EBS mapping.
        backend.snapshots.pop(ami.ebs_snapshot.id, None)
        ami.sim_bdm = []
    ami.root_device_type = "ebs" if mappings else "instance-store"
    # AWS defaults when omitted: i386 and paravirtual (a pipeline must pass both).
    ami.architecture = self._get_param("Architecture") or "i386"
    ami.virtualization_type = self._get_param("VirtualizationType") or "paravirtual"
    ami.root_device_name = self._get_param("RootDeviceName") or ami.root_device_name
    ami.image_location = self._get_param("ImageLocation") or f"{backend.account_id}/{name}"
    ami.sriov_net_support = self._get_param("SriovNetSupport")
    ami.boot_mode = boot_mode
    ami.tpm_support = tpm
    ami.imds_support = self._get_param("ImdsSupport")
    ami.ena_support = self._get_param("EnaSupport")
    ami.add_tags(tags.get("image", {}))
    if state.FLAGS["image_failed"] > 0:  # fault: the image ends `failed` (EC2 ImageState failed, StateReason)
        state.FLAGS["image_failed"] -= 1
        _track_image(ami, "failed", {"Code": "Client.InvalidSnapshot.NotFound",
                                     "Message": "Client.InvalidSnapshot.NotFound: Simulated image failure"})
    else:
        _track_image(ami)
    return ActionResult({"ImageId": ami.id})


@ec2_action
def copy_image(self):
    """CopyImage (called in the destination region) is idempotent by ClientToken, copies the
    source's tags when CopyImageTags=true, applies TagSpecifications (image, snapshot), keeps
    names unique per region, copies the block device mappings to new snapshots, and the copy
    starts `pending` (EC2 CopyImage; ImageState failed with StateReason on a failed copy)."""
    backend = self.ec2_backend
    key, earlier = _token_lookup(self, "CopyImage", lambda rid: rid in backend.amis)
    if earlier:
        return ActionResult({"ImageId": earlier})
    source_region = self._get_param("SourceRegion")
    source_id = self._get_param("SourceImageId")
    source_backend = ec2_backends[self.current_account][source_region]
    source = source_backend.describe_images(ami_ids=[source_id])[0]
    name = self._get_param("Name") or source.name
    _check_ami_name(backend, name)
    instance_store = getattr(source, "root_device_type", None) == "instance-store"
    if instance_store and (self._get_bool_param("Encrypted", False) or self._get_param("KmsKeyId")):
        # CopyImage Encrypted "specifies whether to encrypt the snapshots of the copied image" ("Use encryption
        # with EBS-backed AMIs"); an instance-store image has none (its bundle is in S3). AWS documents no error for
        # asking anyway: this code is the emulator's, so that a handler that asks is caught.
        raise _err("InvalidParameterCombination",
                   f"{source_id} is an instance store-backed AMI: its copy cannot be encrypted.")
    tags = convert_tag_spec(self._get_param("TagSpecifications", []))
    self.error_on_dryrun()

    ami = backend.copy_image(source_id, source_region, name, self._get_param("Description"))
    for attr in ("root_device_name", "root_device_type", "sriov_net_support", "boot_mode",
                 "tpm_support", "imds_support", "ena_support"):
        if hasattr(source, attr):
            setattr(ami, attr, getattr(source, attr))
    ami.source_image_id, ami.source_image_region = source_id, source_region
    if instance_store:
        # The copy is instance-store too: its bundle is copied to S3 in this region, no snapshot is made.
        backend.snapshots.pop(ami.ebs_snapshot.id, None)
        ami.sim_bdm = []
        ami.image_location = getattr(source, "image_location", None)
    elif getattr(source, "sim_bdm", None):
        backend.snapshots.pop(ami.ebs_snapshot.id, None)
        ami.sim_bdm = copy.deepcopy(source.sim_bdm)
        for m in ami.sim_bdm:
            if m.get("Ebs", {}).get("SnapshotId"):
                snap = backend.copy_snapshot(
                    m["Ebs"]["SnapshotId"], source_region,
                    f"Copied for DestinationAmi {ami.id} from SourceAmi {source_id}",
                    self._get_param("KmsKeyId"))
                # Encrypted=true encrypts the copy; an encrypted source stays encrypted.
                snap.encrypted = snap.encrypted or bool(self._get_param("Encrypted"))
                # The copy's key: KmsKeyId, else the region's default EBS key (CopyImage KmsKeyId: "If this
                # parameter is not specified, your Amazon Web Services managed KMS key for Amazon EBS is used").
                snap.kms_key_id = _key_arn(backend, self._get_param("KmsKeyId")) if snap.encrypted else None
                snap.from_ami = ami.id
                snap.add_tags(tags.get("snapshot", {}))
                _track_snapshot(snap)
                m["Ebs"].update(SnapshotId=snap.id, Encrypted=snap.encrypted)
    if self._get_param("CopyImageTags"):
        ami.add_tags(dict(source_backend.tags.get(source_id, {})))
    ami.add_tags(tags.get("image", {}))

    given_key = self._get_param("KmsKeyId")
    usable = _kms_key(backend.account_id, self.region, given_key) if given_key else None
    if given_key and (usable is None or usable.key_state != "Enabled"):
        # "The specified KMS key must exist in the destination Region" and "Amazon Web Services authenticates the KMS
        # key asynchronously. Therefore, if you specify an identifier that is not valid, the action can appear to
        # complete, but eventually fails" (CopyImage API reference, KmsKeyId): accepted, then the image ends
        # `failed`. AWS documents no StateReason for it; the message is the one reported for an invalid key
        # (hashicorp/packer#6599: "Copy image failed with an internal error").
        _track_image(ami, "failed", {"Code": "Client.InternalError",
                                     "Message": f"Copy image failed with an internal error (KMS key {given_key} "
                                                f"is not usable in {self.region})"})
    elif self.region in state.FLAGS["fail_copy_regions"]:
        _track_image(ami, "failed", {"Code": "Client.InternalError",
                                     "Message": "Client.InternalError: Simulated copy failure"})
    else:
        _track_image(ami)
    if key:
        state.TOKENS[key] = (_fingerprint(self), ami.id)
    return ActionResult({"ImageId": ami.id})


@ec2_action
def enable_image_deprecation(self):
    """EnableImageDeprecation sets the image's DeprecationTime (EC2 EnableImageDeprecation:
    DeprecateAt not in the past, at most 10 years ahead, seconds rounded to the minute)."""
    ami = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
    at = self._get_param("DeprecateAt")
    if isinstance(at, str):
        at = datetime.fromisoformat(at.replace("Z", "+00:00"))
    at = (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    at = (at + timedelta(seconds=30)).replace(second=0, microsecond=0)
    now = datetime.now(timezone.utc)
    if at < now.replace(second=0, microsecond=0):
        raise _err("InvalidParameterValue", "The deprecation time cannot be in the past.")
    if at > now + timedelta(days=3653):
        raise _err("InvalidParameterValue", "The deprecation time cannot be more than 10 years ahead.")
    self.error_on_dryrun()
    ami.deprecation_time = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return ActionResult({"Return": True})


@ec2_action
def disable_image_deprecation(self):
    """DisableImageDeprecation clears DeprecationTime (EC2 DisableImageDeprecation)."""
    ami = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
    self.error_on_dryrun()
    ami.deprecation_time = None
    return ActionResult({"Return": True})


@ec2_action
def get_image_block_public_access_state(self):
    """Image block public access is off here (EC2 GetImageBlockPublicAccessState:
    ImageBlockPublicAccessState unblocked | block-new-sharing)."""
    return ActionResult({"ImageBlockPublicAccessState": "unblocked", "ManagedBy": "account"})


@ec2_action
def enable_image_deregistration_protection(self):
    """EnableImageDeregistrationProtection: "the AMI can't be deregistered" until protection is disabled (and, with
    WithCooldown, for 24 hours after). DescribeImages then reports DeregistrationProtection, whose values the API
    reference does not list: `enabled-without-cooldown` and `disabled` are AWS's own CLI examples' answers
    (aws-cli, ec2 enable-/disable-image-deregistration-protection), `enabled-with-cooldown` the Terraform AWS
    provider's documentation's; `disabled-until <time>` during the cooldown is the emulator's choice (the pipeline
    treats anything but `disabled` as protected)."""
    ami = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
    self.error_on_dryrun()
    cooldown = self._get_bool_param("WithCooldown", False)
    ami.deregistration_protection = "enabled-with-cooldown" if cooldown else "enabled-without-cooldown"
    return ActionResult({"Return": ami.deregistration_protection})


@ec2_action
def disable_image_deregistration_protection(self):
    """DisableImageDeregistrationProtection; with a cooldown the AMI stays protected for 24 hours."""
    ami = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
    self.error_on_dryrun()
    if getattr(ami, "deregistration_protection", None) == "enabled-with-cooldown":
        until = (datetime.now(timezone.utc) + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        ami.deregistration_protection = f"disabled-until {until}"
    else:
        ami.deregistration_protection = "disabled"
    return ActionResult({"Return": ami.deregistration_protection})


@ec2_action
def deregister_image(self):
    """DeregisterImage with DeleteAssociatedSnapshots=true also deletes the image's snapshots, except one still used
    by another AMI (EC2 DeregisterImage), and answers DeleteSnapshotResults, one ReturnCode per snapshot: `success`,
    `skipped` ("associated with other AMIs"), or an error code (`missing-permissions`, `internal-error`,
    `client-error`); the call succeeds either way. Fault `{"deregister_snapshot_error": CODE}`: the next such call
    keeps its first snapshot and reports CODE for it. A protected AMI is refused (EnableImageDeregistrationProtection:
    "the AMI can't be deregistered"; AWS documents no error code for it: the code below is the emulator's, and the
    pipeline never relies on it: it reads DeregistrationProtection)."""
    backend = self.ec2_backend
    ami = backend.amis.get(self._get_param("ImageId"))
    protection = getattr(ami, "deregistration_protection", None) if ami is not None else None
    if protection and protection != "disabled":
        raise _err("OperationNotPermitted", f"The image {ami.id} has deregistration protection ({protection}).")
    result = ORIG["deregister_image"](self)
    if ami is None or not self._get_bool_param("DeleteAssociatedSnapshots", False):
        return result
    in_use = {m["Ebs"]["SnapshotId"] for other in backend.amis.values()
              for m in other.block_device_mappings if m.get("Ebs")}
    results = []
    for m in getattr(ami, "sim_bdm", None) or []:
        snap_id = m.get("Ebs", {}).get("SnapshotId")
        if not snap_id:
            continue
        failure = state.take_flag("deregister_snapshot_error")
        if snap_id in in_use:
            code = "skipped"
        elif failure:
            code = failure
        else:
            backend.snapshots.pop(snap_id, None)
            code = "success"
        results.append({"SnapshotId": snap_id, "ReturnCode": code})
    return ActionResult({"Return": True, "DeleteSnapshotResults": results})


# ---------------------------------------------------------------- KMS keys of snapshots, and sharing them

def _kms_create_alias(self, target_key_id, alias_name):
    """The keys behind `alias/aws/<service>` are AWS managed keys: DescribeKey says KeyManager AWS (KMS API
    reference, KeyMetadata.KeyManager; KMS Developer Guide, "AWS managed keys": their aliases are `aws/<service>`).
    moto makes them (on first use of alias/aws/ebs, or for the first encrypted volume) as CUSTOMER keys; users
    cannot create aliases under alias/aws/, so the alias marks them."""
    alias = ORIG["kms_create_alias"](self, target_key_id, alias_name)
    if alias_name.startswith("alias/aws/"):
        self.keys[self.get_key_id(target_key_id)].key_manager = "AWS"
    return alias


KEY_REF = re.compile(r"arn:aws[a-z-]*:kms:([^:]*):(\d{12}):(key|alias)/(.+)")


def _kms_key(account: str, region: str, key_id: str | None):
    """The KMS key (moto's Key) that `key_id` names in this account and region: key id, key ARN, alias name or alias
    ARN (CopyImage KmsKeyId); None when none. A key is regional: an ARN of another region names no key here."""
    from moto.kms.models import kms_backends

    if not key_id:
        return None
    m = KEY_REF.fullmatch(key_id)
    if m:
        if (m.group(1), m.group(2)) != (region, account):
            return None
        key_id = m.group(4) if m.group(3) == "key" else f"alias/{m.group(4)}"
    kms = kms_backends[account][region]
    if key_id.startswith("alias/"):
        key_id = kms.get_key_id_from_alias(key_id)  # makes alias/aws/ebs on first use, as AWS does
    return kms.keys.get(key_id) if key_id else None


def _key_arn(backend, key_id: str | None) -> str | None:
    """The ARN of the key an encrypted volume or snapshot of this region gets for `key_id`: that key, or the
    region's default EBS key when none is given (aws/ebs unless ModifyEbsDefaultKmsKeyId changed it). An
    identifier naming no key is kept as given."""
    key_id = key_id or backend.default_kms_key_id or backend._create_default_encryption_key()
    key = _kms_key(backend.account_id, backend.region_name, key_id)
    return key.arn if key else key_id


def _create_snapshot(self, volume_id, description, owner_id=None, from_ami=None):
    """A snapshot of an encrypted volume is encrypted with the volume's key (EBS User Guide, "Amazon EBS
    encryption": snapshots of encrypted volumes are encrypted with the same key); DescribeSnapshots shows it as
    KmsKeyId, a key ARN. moto records no key for snapshots it takes (CreateSnapshot, CreateSnapshots)."""
    snap = ORIG["create_snapshot"](self, volume_id, description, owner_id=owner_id, from_ami=from_ami)
    if snap.encrypted:
        snap.kms_key_id = _key_arn(self, snap.volume.kms_key_id)
    return snap


def _aws_managed(backend, snap) -> bool:
    """Whether the snapshot is encrypted with an AWS managed key (the default aws/ebs key), by the key it records."""
    if not snap.encrypted:
        return False
    key = _kms_key(backend.account_id, backend.region_name, snap.kms_key_id or _key_arn(backend, None))
    return key is not None and key.key_manager == "AWS"


def _permissions(resp, structure: str, legacy: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(added, removed) permissions of a Modify*Attribute request: the structure (`CreateVolumePermission` or
    `LaunchPermission` with Add/Remove lists, as the SDKs send it) and the older OperationType with UserIds etc."""
    mods = resp._get_param(structure) or {}
    add, remove = list(mods.get("Add") or []), list(mods.get("Remove") or [])
    legacy_items = [{field: v} for param, field in legacy.items() for v in resp._get_param(param, []) or []]
    op = resp._get_param("OperationType")
    (add if op == "add" else remove if op == "remove" else []).extend(legacy_items)
    return add, remove


@ec2_action
def modify_snapshot_attribute(self):
    """createVolumePermission as AWS allows it (ModifySnapshotAttribute API reference: "Encrypted snapshots and
    snapshots with Amazon Web Services Marketplace product codes cannot be made public. Snapshots encrypted with
    your default KMS key cannot be shared with other accounts"):
    - adding an account to a snapshot encrypted with an AWS managed key fails `OperationNotPermitted: Encrypted
      snapshots with EBS default key cannot be shared` (as reported from AWS: hashicorp/packer#7499, #8271);
    - Group=all on an encrypted snapshot fails. AWS documents no code for it: this is the code and message AWS gives
      ModifyImageAttribute for the same rule (opendevstack/ods-core#1062).
    Both read the snapshot's recorded key. moto ignores the CreateVolumePermission structure the SDKs send (it
    reads only OperationType/UserIds/GroupNames): both forms are applied here."""
    backend = self.ec2_backend
    snap = backend.get_snapshot(self._get_param("SnapshotId"))
    add, remove = _permissions(self, "CreateVolumePermission", {"UserIds": "UserId", "GroupNames": "Group"})
    if any(p.get("Group") == "all" for p in add) and snap.encrypted:
        raise _err("UnsupportedOperation", "Encrypted snapshots can't be shared publicly. Specify another snapshot.")
    if any(p.get("UserId") for p in add) and _aws_managed(backend, snap):
        raise _err("OperationNotPermitted", "Encrypted snapshots with EBS default key cannot be shared")
    self.error_on_dryrun()
    for perms, change in ((add, backend.add_create_volume_permission),
                          (remove, backend.remove_create_volume_permission)):
        users = [p["UserId"] for p in perms if p.get("UserId")]
        groups = [p["Group"] for p in perms if p.get("Group")]
        if users or groups:
            change(snap.id, user_ids=users, groups=groups)
    return EmptyResult()


@ec2_action
def modify_image_attribute(self):
    """Sharing an image shares its snapshots' use (EC2 User Guide, "Share an AMI with specific AWS accounts": "You
    can't share AMIs that are backed by snapshots that are encrypted with the default AWS managed key"; the same for
    organizations and OUs): adding a UserId, OrganizationArn or OrganizationalUnitArn launch permission to an image
    with a snapshot encrypted with an AWS managed key fails `InvalidParameter: Snapshots encrypted with the AWS
    Managed CMK can't be shared. Specify another snapshot.`, and Group=all on an image with encrypted snapshots
    fails `UnsupportedOperation: Encrypted snapshots can't be shared publicly. Specify another snapshot.` (as
    reported from AWS: hashicorp/packer#7410, DataDog/stratus-red-team#109; opendevstack/ods-core#1062). Both read
    the recorded keys of the image's snapshots."""
    backend = self.ec2_backend
    ami = backend.amis.get(self._get_param("ImageId"))
    add, _ = _permissions(self, "LaunchPermission", {"UserIds": "UserId", "UserGroups": "Group",
                                                     "OrganizationArns": "OrganizationArn",
                                                     "OrganizationalUnitArns": "OrganizationalUnitArn"})
    if ami is not None and add:
        snaps = [backend.snapshots.get(m["Ebs"]["SnapshotId"]) for m in ami.block_device_mappings
                 if (m.get("Ebs") or {}).get("SnapshotId")]
        snaps = [s for s in snaps if s is not None]
        if any(p.get("Group") == "all" for p in add) and any(s.encrypted for s in snaps):
            raise _err("UnsupportedOperation",
                       "Encrypted snapshots can't be shared publicly. Specify another snapshot.")
        accounts = ("UserId", "OrganizationArn", "OrganizationalUnitArn")
        if any(p.get(k) for p in add for k in accounts) and any(_aws_managed(backend, s) for s in snaps):
            raise _err("InvalidParameter",
                       "Snapshots encrypted with the AWS Managed CMK can't be shared. Specify another snapshot.")
    return ORIG["modify_image_attribute"](self)


# ---------------------------------------------------------------- snapshots

def _track_snapshot(snap, final: str = "completed") -> None:
    snap.status, snap.sim_progress = "pending", "0%"
    state.RESOURCES[snap.id] = {"polls": 0, "final": final}


@ec2_action
def create_snapshots(self):
    """CreateSnapshots' snapshots start `pending` at 0% (EC2 DescribeSnapshots: State
    pending | completed | error, Progress "NN%"); CopyTagsFromSource=volume copies each
    volume's tags (EC2 CreateSnapshots)."""
    result = ORIG["create_snapshots"](self)
    final = "completed"
    if state.FLAGS["snapshot_error"] > 0:
        state.FLAGS["snapshot_error"] -= 1
        final = "error"
    for snap in result.result["Snapshots"]:
        if self._get_param("CopyTagsFromSource") == "volume":
            snap.add_tags(dict(self.ec2_backend.tags.get(snap.volume.id, {})))
        _track_snapshot(snap, final)
    return result


@ec2_action
def describe_snapshots(self):
    """Snapshots stay `pending` with rising Progress for the first K DescribeSnapshots that
    include them, then `completed` at 100% (or `error`) (EC2 DescribeSnapshots)."""
    for snap, rec in _tracked(self.ec2_backend.snapshots, self._get_param("SnapshotIds", [])):
        rec["polls"] += 1
        if snap.status != "pending":
            continue
        if rec["polls"] <= K:
            snap.sim_progress = f"{100 * (rec['polls'] - 1) // max(K, 1)}%"
        else:
            snap.status = rec["final"]
            snap.sim_progress = "100%" if rec["final"] == "completed" else snap.sim_progress
            if rec["final"] == "error":
                snap.status_message = "Simulated snapshot failure"
    return ORIG["describe_snapshots"](self)


def set_snapshot_start_time(region: str, snapshot_id: str, start_time: str, account: str | None = None) -> None:
    """/_sim/snapshot_start_time: the snapshot's StartTime (ISO 8601), as if started then. KeyError when the
    snapshot does not exist in that region."""
    from moto.core import DEFAULT_ACCOUNT_ID

    backend = ec2_backends[account or DEFAULT_ACCOUNT_ID][region]
    when = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    snap = backend.snapshots[snapshot_id]
    # moto keeps a naive UTC datetime (moto.core.utils.utcnow)
    snap.start_time = when.astimezone(timezone.utc).replace(tzinfo=None)


@ec2_action
def delete_snapshot(self):
    """DeleteSnapshot refuses only the snapshot of an AMI's *root* device ("You cannot delete a snapshot of the root
    device of an EBS volume used by a registered AMI", DeleteSnapshot API reference): InvalidSnapshot.InUse. A data
    volume's snapshot is deleted even though an AMI maps it (and that AMI no longer launches), where moto refused
    every snapshot an AMI was made with."""
    from moto.ec2.exceptions import InvalidSnapshotInUse

    backend = self.ec2_backend
    snap_id = self._get_param("SnapshotId")
    snap = backend.snapshots.get(snap_id)
    if snap is not None:
        for ami in backend.amis.values():
            if any(m.get("DeviceName") == ami.root_device_name and (m.get("Ebs") or {}).get("SnapshotId") == snap_id
                   for m in ami.block_device_mappings):
                raise InvalidSnapshotInUse(snap_id, ami.id)
        snap.from_ami = None  # moto's own check: cleared for a data snapshot
    return ORIG["delete_snapshot"](self)


# ---------------------------------------------------------------- instances and the guest

BOOT_LOG = ("[    0.000000] Linux version 6.1.0 (sim) #1 SMP\n"
            "[    1.000000] cloud-init: running user data\n")


def _check_root_device_support(backend, image_id: str, instance_type: str) -> None:
    """An instance-store image launches only on a type whose SupportedRootDeviceTypes (DescribeInstanceTypes) has
    `instance-store`: "Nitro-based instances support only EBS root volumes", only some previous-generation types
    (C1, C3, D2, I2, M1, M2, M3, R3, X1) support an instance store root volume (EC2 User Guide, "Root volumes for
    your Amazon EC2 instances"). moto's instance type data has the field; the error is AWS's as reported
    (UnsupportedOperation, "AMI '...' with an instance-store root device is not supported for the instance type
    '...'")."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    ami = backend.amis.get(image_id)
    if ami is None or getattr(ami, "root_device_type", None) != "instance-store":
        return
    supported = INSTANCE_TYPES.get(instance_type, {}).get("SupportedRootDeviceTypes", ["ebs"])
    if "instance-store" not in supported:
        raise _err("UnsupportedOperation", f"AMI '{image_id}' with an instance-store root device is not supported "
                                           f"for the instance type '{instance_type}'.")


# Device name -> the Ebs settings of the RunInstances being served (EC2 requests are served one at a time).
REQUESTED_EBS: dict[str, dict] = {}


def _add_block_device(self, size, device_path, snapshot_id, encrypted, delete_on_termination, kms_key_id,
                      volume_type) -> None:
    """moto's Instance.add_block_device, passing the requested Iops and Throughput to the volume."""
    ebs = REQUESTED_EBS.get(device_path, {})
    volume = self.ec2_backend.create_volume(size=size, zone_name=self._placement.zone, snapshot_id=snapshot_id,
                                            encrypted=encrypted, kms_key_id=kms_key_id, volume_type=volume_type,
                                            iops=ebs.get("Iops"), throughput=ebs.get("Throughput"))
    self.ec2_backend.attach_volume(volume.id, self.id, device_path, delete_on_termination)


def _check_ebs_settings(mappings: list[dict]) -> None:
    """EbsBlockDevice (EC2 API reference): `Iops` "is required for io1 and io2 volumes" and "not supported for gp2,
    st1, sc1, or standard volumes"; `Throughput` is for gp3 only. Codes and messages as EC2 answers them
    (kubermatic/machine-controller#538, velero-plugin-for-aws#119, boto/boto3#2474, runs-on/runs-on#426)."""
    for m in mappings or []:
        ebs = m.get("Ebs") or {}
        kind = ebs.get("VolumeType")
        if kind in ("io1", "io2") and not ebs.get("Iops"):
            raise _err("InvalidParameterCombination", f"The parameter iops must be specified for {kind} volumes.")
        if kind in ("gp2", "st1", "sc1", "standard") and ebs.get("Iops"):
            raise _err("InvalidParameterCombination", f"The parameter iops is not supported for {kind} volumes.")
        if ebs.get("Throughput") and kind != "gp3":
            raise _err("InvalidParameterCombination", "throughput can only be specified for volumeType gp3.")


@ec2_action
def run_instances(self):
    """RunInstances is idempotent by ClientToken: the same token in the same region returns
    the first call's reservation and starts nothing (EC2 RunInstances ClientToken; other
    parameters with that token: IdempotentParameterMismatch). New instances start `pending`."""
    backend = self.ec2_backend
    key, earlier = _token_lookup(self, "RunInstances", lambda rid: rid in backend.reservations)
    if earlier:
        return ActionResult(backend.reservations[earlier])
    _check_root_device_support(backend, self._get_param("ImageId"), self._get_param("InstanceType") or "m1.small")
    mappings = self._get_param("BlockDeviceMappings", []) or []
    _check_ebs_settings(mappings)
    # moto creates the volumes without the requested Iops/Throughput (and so refuses io1/io2): handed over here.
    REQUESTED_EBS.update({m.get("DeviceName"): m.get("Ebs") or {} for m in mappings})
    try:
        result = ORIG["run_instances"](self)
    finally:
        REQUESTED_EBS.clear()
    reservation = result.result
    if key:
        state.TOKENS[key] = (_fingerprint(self), reservation.id)
    for inst in reservation.instances:
        text = _user_data_text(inst.user_data)
        role = ("builder" if "AMI-PIPELINE-BUILDER" in text
                else "smoke" if "AMI-PIPELINE-SMOKE" in text else None)
        inst._state = InstanceState("pending", 0)
        # fault: someone else terminates this instance once it runs
        killed = state.FLAGS["terminate_role"].get(role, 0) > 0
        if killed:
            state.FLAGS["terminate_role"][role] -= 1
        state.RESOURCES[inst.id] = {"polls": 0, "running_polls": 0, "status_polls": 0, "killed": killed,
                                    "role": role, "text": text, "console": [], "done": False}
    return result


def _tick_instance(inst, rec) -> None:
    """One observing call (DescribeInstances, DescribeInstanceStatus, GetConsoleOutput):
    pending for K of them, then running; K more and the guest's script is done."""
    rec["polls"] += 1
    if inst.state == "pending":
        if rec["polls"] > K:
            inst._state = InstanceState("running", 16)
        return
    if inst.state != "running" or rec["done"]:
        return  # stopped or terminated by the caller: the guest does nothing more
    if rec.get("killed"):
        # terminated by someone else (a person, an auto-scaling policy, a spot reclaim)
        rec["done"] = True
        inst.terminate()
        inst.state_reason = StateReason("Client.UserInitiatedShutdown: User initiated shutdown",
                                        "Client.UserInitiatedShutdown")
        return
    rec["running_polls"] += 1
    if rec["running_polls"] >= K:
        _guest_finishes(inst, rec)


def _guest_finishes(inst, rec) -> None:
    """The user data script ends: the builder prints its result and runs `shutdown -h`
    (InstanceInitiatedShutdownBehavior stop -> stopped, terminate -> terminated);
    the smoke test prints PASS/FAIL and keeps running."""
    text, role = rec["text"], rec["role"]
    if role is None or "sim:never-ready" in text:
        return
    if "channel=run-command" in text:
        # the script comes by SSM Run Command (runcommand.py) and the step stops the builder: nothing runs here
        return
    rec["done"] = True
    if role == "smoke":
        rec["console"].append("AMI-PIPELINE-SMOKE: " + ("FAIL" if "sim:fail-smoke" in text else "PASS"))
        return
    rec["console"].append("AMI-PIPELINE-RESULT: " + (
        "FAILURE exit=3" if "sim:fail-provision" in text else "SUCCESS"))
    if inst.instance_initiated_shutdown_behavior == "terminate":
        inst.terminate()
    else:
        inst.stop()
        # The EC2 API reference documents only "the reason for the most recent state transition. This might be an
        # empty string", and the StateReason code of a stop from inside the OS (below). No time in the text is the
        # emulator's choice, after "User initiated" without one reported for stops not made through the API
        # (cloud-custodian issue 6924); moto's API stop writes "User initiated (<time>)".
        inst._reason = "User initiated"
    inst.state_reason = StateReason("Client.InstanceInitiatedShutdown: Instance initiated shutdown",
                                    "Client.InstanceInitiatedShutdown")


def _instances(backend) -> dict:
    return {inst.id: inst for inst in backend.all_instances()}


@ec2_action
def describe_instances(self):
    """Instances are `pending` for the first K DescribeInstances that include them, then
    `running` (EC2 DescribeInstances InstanceState); the simulated guest advances too."""
    for inst, rec in _tracked(_instances(self.ec2_backend), self._get_param("InstanceIds", [])):
        _tick_instance(inst, rec)
    return ORIG["describe_instances"](self)


@ec2_action
def describe_instance_status(self):
    """After `running`, InstanceStatus and SystemStatus are `initializing` for K
    DescribeInstanceStatus calls, then `ok` (EC2 DescribeInstanceStatus status checks)."""
    for inst, rec in _tracked(_instances(self.ec2_backend), self._get_param("InstanceIds", [])):
        _tick_instance(inst, rec)
        if inst.state == "running":
            rec["status_polls"] += 1
    return ORIG["describe_instance_status"](self)


def _status_check(inst, prop: str) -> dict:
    rec = state.RESOURCES.get(inst.id)
    if rec and inst.state_code == 16 and rec["status_polls"] <= K:
        return {"Status": "initializing",
                "Details": [{"Name": "reachability", "Status": "initializing"}]}
    return ORIG[prop].fget(inst)


@ec2_action
def get_console_output(self):
    """The console shows what the guest printed (EC2 GetConsoleOutput: base64 Output, absent
    while the instance has printed nothing; Latest=true on Nitro gives the same text here)."""
    inst = self.ec2_backend.get_instance(self._get_param("InstanceId"))
    rec = state.RESOURCES.get(inst.id)
    if rec is None:
        return ORIG["get_console_output"](self)
    _tick_instance(inst, rec)
    result = {"InstanceId": inst.id, "Timestamp": utcnow()}
    if inst.state != "pending":
        text = BOOT_LOG + "".join(line + "\n" for line in rec["console"])
        result["Output"] = Base64EncodedString.from_raw_string(text)
    return ActionResult(result)


@ec2_action
def create_launch_template_version(self):
    """CreateLaunchTemplateVersion is idempotent by ClientToken (EC2 CreateLaunchTemplateVersion ClientToken):
    the same token answers the version the first call made and makes no other."""
    backend = self.ec2_backend
    key, earlier = _token_lookup(self, "CreateLaunchTemplateVersion", lambda rid: rid in VERSIONS)
    if earlier:
        return ActionResult(copy.deepcopy(VERSIONS[earlier]))
    result = ORIG["create_launch_template_version"](self)
    if key:
        made = result.result["LaunchTemplateVersion"]
        rid = f"{made['LaunchTemplateId']}:{made['VersionNumber']}"
        VERSIONS[rid] = copy.deepcopy(result.result)
        state.TOKENS[key] = (_fingerprint(self), rid)
    return result


# "lt-id:version" -> the CreateLaunchTemplateVersion answer that made it
VERSIONS: dict[str, dict] = {}


# ---------------------------------------------------------------- SSM Parameter Store

IMAGE_DATA_TYPE = "aws:ec2:image"


def _ssm_put_parameter(self, name, description, value, parameter_type, allowed_pattern, keyid, overwrite, tags,
                       data_type, tier, policies):
    """PutParameter with the aws:ec2:image rules moto lacks (Parameter Store, "Parameter data types" and "Native
    parameter support for Amazon Machine Image IDs"; PutParameter API reference):
    - "You can't change a parameter to or from" aws:ec2:image: refused (AWS documents no error code; this is
      moto's ValidationException, and the pipeline checks the data type before writing instead of relying on it);
    - the value is validated asynchronously: "If you submit an invalid AMI value, the PutParameter operation will
      return success, but the asynchronous validation will fail and the parameter will not be created or updated".
      Here an image this account and region do not have (or not available) is answered 200 and not stored."""
    from moto.ec2.models import ec2_backends
    from moto.ssm.exceptions import ValidationException

    versions = self._parameters.get(name) or []
    previous = versions[-1] if versions else None
    new_type = data_type or "text"
    if previous is not None:
        old_type = getattr(previous, "data_type", None) or "text"
        if old_type != new_type and IMAGE_DATA_TYPE in (old_type, new_type):
            raise ValidationException(
                f"The data type of parameter {name} is {old_type}: it cannot be changed to or from {IMAGE_DATA_TYPE}.")
    created = ORIG["ssm_put_parameter"](self, name, description, value, parameter_type, allowed_pattern, keyid,
                                        overwrite, tags, data_type, tier, policies)
    if new_type == IMAGE_DATA_TYPE:
        ami = ec2_backends[self.account_id][self.region_name].amis.get(value)
        if ami is None or ami.state != "available":
            # the asynchronous validation fails: the write never happened
            self._parameters[name].pop()
            if not self._parameters[name]:
                del self._parameters[name]
    return created

