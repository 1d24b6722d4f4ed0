"""Billing, boot modes and CreateImage in the emulator (moto_ext/platform.py), against a real server process."""

import base64
import zlib

import pytest
from botocore.exceptions import ClientError

from test_moto_ext import base_image, client, euw1, launch, request_log, reset_sim, server, sim, unique, use1  # noqa: F401

K = 2


def newest(ec2, pattern):
    images = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [pattern]}])["Images"]
    assert images, pattern
    return max(images, key=lambda i: i["CreationDate"])


def describe(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def wait_running(ec2, iid):
    for _ in range(3 * K + 2):
        if describe(ec2, iid)["State"]["Name"] == "running":
            return
    raise AssertionError("never running")


def wait_image(ec2, image_id):
    for _ in range(K + 2):
        img = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        if img["State"] != "pending":
            return img
    raise AssertionError("image stays pending")


def test_seeded_images_report_billing_and_realistic_boot_modes(use1, base_image):
    al2023 = newest(use1, "al2023-ami-2023*x86_64")
    assert (al2023["PlatformDetails"], al2023["UsageOperation"], al2023.get("BootMode")) == (
        "Linux/UNIX", "RunInstances", "uefi-preferred")
    legacy = newest(use1, "Windows_Server-2022-English-Full-Base-*")
    assert (legacy["PlatformDetails"], legacy["UsageOperation"], legacy.get("BootMode")) == (
        "Windows", "RunInstances:0002", None)
    assert legacy.get("Platform") == "windows"
    tpm = newest(use1, "TPM-Windows_Server-2022-English-Full-Base-*")
    assert (tpm.get("BootMode"), tpm.get("TpmSupport")) == ("uefi", "v2.0")


def test_an_instance_reports_its_amis_billing_and_boot_mode(use1):
    tpm = newest(use1, "TPM-Windows_Server-2022-English-Full-Base-*")
    iid = launch(use1, tpm["ImageId"], user_data="<powershell>echo hi</powershell>")
    inst = describe(use1, iid)
    assert (inst["PlatformDetails"], inst["UsageOperation"], inst["BootMode"], inst["CurrentInstanceBootMode"],
            inst["TpmSupport"]) == ("Windows", "RunInstances:0002", "uefi", "uefi", "v2.0")
    data = use1.get_instance_uefi_data(InstanceId=iid)["UefiData"]
    assert zlib.decompress(base64.b64decode(data)).startswith(b"sim-uefi-vars:")
    legacy = newest(use1, "Windows_Server-2022-English-Full-Base-*")
    iid = launch(use1, legacy["ImageId"])
    assert describe(use1, iid)["CurrentInstanceBootMode"] == "legacy-bios"
    assert use1.get_instance_uefi_data(InstanceId=iid)["UefiData"] == ""


def test_a_stopped_bare_metal_instance_keeps_no_uefi_variables(use1):
    """"Bare metal instances don't preserve UEFI non-volatile variables across instance stop/start" (EC2 User Guide,
    "UEFI variables for Amazon EC2 instances"): a Graviton metal instance (UEFI) has its store while running, an
    empty one once stopped (what "not preserved" reads as is the emulator's choice); DescribeInstanceTypes says
    which types are bare metal."""
    arm = use1.describe_images(Owners=["amazon"], Filters=[{"Name": "architecture", "Values": ["arm64"]}])["Images"][0]
    iid = use1.run_instances(ImageId=arm["ImageId"], MinCount=1, MaxCount=1,
                             InstanceType="c6g.metal")["Instances"][0]["InstanceId"]
    wait_running(use1, iid)
    assert describe(use1, iid)["CurrentInstanceBootMode"] == "uefi"
    assert use1.get_instance_uefi_data(InstanceId=iid)["UefiData"] != ""
    use1.stop_instances(InstanceIds=[iid])
    assert describe(use1, iid)["State"]["Name"] == "stopped"
    assert use1.get_instance_uefi_data(InstanceId=iid)["UefiData"] == ""
    types = use1.describe_instance_types(InstanceTypes=["c6g.metal", "t3.small"])["InstanceTypes"]
    assert {t["InstanceType"]: t["BareMetal"] for t in types} == {"c6g.metal": True, "t3.small": False}


def snapshot_root(ec2, iid):
    vol = describe(ec2, iid)["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    return snap


def test_register_from_snapshots_loses_licensed_billing_and_create_image_keeps_it(use1):
    windows = newest(use1, "TPM-Windows_Server-2022-English-Full-Base-*")
    iid = launch(use1, windows["ImageId"], BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {
        "VolumeSize": 50, "VolumeType": "gp3", "Encrypted": True}}])
    wait_running(use1, iid)
    use1.stop_instances(InstanceIds=[iid])
    # From snapshots: the snapshot metadata carries no licence (RegisterImage API reference).
    snap = snapshot_root(use1, iid)
    registered = use1.register_image(Name=unique("reg"), RootDeviceName="/dev/sda1", Architecture="x86_64",
                                     VirtualizationType="hvm", BootMode="uefi",
                                     BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap}}])
    img = wait_image(use1, registered["ImageId"])
    assert (img["PlatformDetails"], img["UsageOperation"]) == ("Linux/UNIX", "RunInstances")
    # From the instance: billing, boot mode, NitroTPM and every volume kept; image and snapshots tagged on create.
    name = unique("create")
    made = use1.create_image(InstanceId=iid, Name=name, NoReboot=True, TagSpecifications=[
        {"ResourceType": "image", "Tags": [{"Key": "role", "Value": "image"}]},
        {"ResourceType": "snapshot", "Tags": [{"Key": "role", "Value": "snapshot"}]}])["ImageId"]
    assert use1.describe_images(ImageIds=[made])["Images"][0]["State"] == "pending"
    img = wait_image(use1, made)
    assert (img["PlatformDetails"], img["UsageOperation"], img["BootMode"], img["TpmSupport"]) == (
        "Windows", "RunInstances:0002", "uefi", "v2.0")
    assert img["Tags"] == [{"Key": "role", "Value": "image"}]
    [root] = img["BlockDeviceMappings"]
    assert (root["DeviceName"], root["Ebs"]["VolumeSize"], root["Ebs"]["Encrypted"]) == ("/dev/sda1", 50, True)
    snap = use1.describe_snapshots(SnapshotIds=[root["Ebs"]["SnapshotId"]])["Snapshots"][0]
    assert snap["Tags"] == [{"Key": "role", "Value": "snapshot"}]
    with pytest.raises(ClientError) as err:
        use1.create_image(InstanceId=iid, Name=name)
    assert err.value.response["Error"]["Code"] == "InvalidAMIName.Duplicate"


def test_boot_mode_override_only_narrows_a_uefi_booted_instance(use1):
    legacy = newest(use1, "Windows_Server-2022-English-Full-Base-*")
    iid = launch(use1, legacy["ImageId"])
    with pytest.raises(ClientError) as err:
        use1.create_image(InstanceId=iid, Name=unique("override"), BootModeOverride="uefi")
    assert err.value.response["Error"]["Code"] == "InvalidParameterCombination"


def test_an_image_registered_with_a_boot_mode_its_os_cannot_boot_fails_status_checks(use1):
    legacy = newest(use1, "Windows_Server-2022-English-Full-Base-*")
    iid = launch(use1, legacy["ImageId"])
    snap = snapshot_root(use1, iid)
    for boot_mode, fails in (("uefi", True), ("legacy-bios", False)):
        image = use1.register_image(Name=unique("boot"), RootDeviceName="/dev/sda1", Architecture="x86_64",
                                    VirtualizationType="hvm", BootMode=boot_mode,
                                    BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap}}])
        wait_image(use1, image["ImageId"])
        test = launch(use1, image["ImageId"])
        wait_running(use1, test)
        statuses = []
        for _ in range(K + 2):
            s = use1.describe_instance_status(InstanceIds=[test])["InstanceStatuses"][0]
            statuses.append(s["InstanceStatus"]["Status"])
        assert (statuses[-1] == "impaired") == fails, (boot_mode, statuses)


def test_billing_lost_fault_and_imds_support_by_modify(server, use1):
    windows = newest(use1, "TPM-Windows_Server-2022-English-Full-Base-*")
    iid = launch(use1, windows["ImageId"])
    with pytest.raises(ClientError) as err:
        use1.create_image(InstanceId=iid, Name=unique("pending"))
    assert err.value.response["Error"]["Code"] == "IncorrectInstanceState"
    wait_running(use1, iid)
    sim(server, "/_sim/faults", {"billing_lost": True})
    made = use1.create_image(InstanceId=iid, Name=unique("lost"))["ImageId"]
    img = wait_image(use1, made)
    assert img.get("PlatformDetails", "") == ""
    use1.modify_image_attribute(ImageId=made, ImdsSupport={"Value": "v2.0"})
    assert use1.describe_images(ImageIds=[made])["Images"][0]["ImdsSupport"] == "v2.0"
