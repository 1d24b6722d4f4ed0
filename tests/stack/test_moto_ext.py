"""Proves each moto_ext behaviour against a real moto_server.py process, with boto3.

Run: .tools/venv/bin/python -m pytest tests/stack -q
"""

import base64
import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.handlers import decode_console_output

from local import stop_process

HERE = os.path.dirname(os.path.abspath(__file__))
K = 2  # AMI_SIM_POLLS given to the server below


@pytest.fixture(scope="session")
def request_log(tmp_path_factory):
    return tmp_path_factory.mktemp("sim") / "requests.jsonl"


@pytest.fixture(scope="session")
def server(request_log):
    env = dict(os.environ, AMI_SIM_POLLS=str(K), AMI_SIM_REQUEST_LOG=str(request_log))
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "moto_server.py"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        assert "listening on http://" in line, f"server did not start: {line!r}"
        yield line.split("listening on ")[1].split()[0]
    finally:
        stop_process(proc, 10)


def sim(server, path, body=None):
    req = urllib.request.Request(server + path, method="POST" if body is not None else "GET",
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


@pytest.fixture(autouse=True)
def reset_sim(server):
    sim(server, "/_sim/reset", {})


@pytest.fixture(scope="session")
def client(server):
    def make(region, service="ec2"):
        # One attempt only: the retries of the SDK would hide the injected faults.
        return boto3.client(service, region_name=region, endpoint_url=server,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    def ec2_raw_console(region, service="ec2"):
        made = make(region, service)
        if service == "ec2":  # keep GetConsoleOutput's Output as sent (base64), like other SDKs
            made.meta.events.unregister("after-call.ec2.GetConsoleOutput", decode_console_output)
        return made
    return ec2_raw_console


@pytest.fixture(scope="session")
def use1(client):
    return client("us-east-1")


@pytest.fixture(scope="session")
def euw1(client):
    return client("eu-west-1")


@pytest.fixture(scope="session")
def base_image(use1):
    """A moto-shipped Amazon image to launch from (moto ships ~1,300 per region)."""
    images = use1.describe_images(Owners=["amazon"], Filters=[
        {"Name": "architecture", "Values": ["x86_64"]},
        {"Name": "root-device-type", "Values": ["ebs"]}])["Images"]
    assert images
    return max(images, key=lambda i: i["CreationDate"])["ImageId"]


def unique(prefix="test"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error_of(excinfo):
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def launch(ec2, image, user_data="#!/bin/bash\necho hello\n", **kw):
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             UserData=user_data, **kw)["Instances"][0]["InstanceId"]


def instance_state(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]


def console(ec2, iid, **kw):
    out = ec2.get_console_output(InstanceId=iid, **kw).get("Output")
    return base64.b64decode(out).decode() if out else ""


def image(ec2, image_id):
    return ec2.describe_images(ImageIds=[image_id])["Images"][0]


def snapshots_of(ec2, base_image):
    """Snapshots of a fresh instance's encrypted 20 GiB root volume, tag copied from the volume."""
    iid = launch(ec2, base_image, BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {
        "VolumeSize": 20, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}}],
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "vol", "Value": "root"}]}])
    snaps = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid},
                                 CopyTagsFromSource="volume")["Snapshots"]
    return [s["SnapshotId"] for s in snaps]


def register(ec2, name, snap_id, **kw):
    return ec2.register_image(
        Name=name, Architecture="x86_64", RootDeviceName="/dev/xvda", VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                              "Ebs": {"SnapshotId": snap_id, "VolumeType": "gp3",
                                      "DeleteOnTermination": True}}], **kw)["ImageId"]


# ---------------------------------------------------------------- 1. RunInstances ClientToken

def test_run_instances_client_token_returns_the_same_instance(use1, euw1, base_image):
    token = unique("tok")
    first = use1.run_instances(ImageId=base_image, MinCount=1, MaxCount=1,
                               InstanceType="t3.micro", ClientToken=token)
    before = {i["InstanceId"] for r in use1.describe_instances()["Reservations"] for i in r["Instances"]}
    again = use1.run_instances(ImageId=base_image, MinCount=1, MaxCount=1,
                               InstanceType="t3.micro", ClientToken=token)
    after = {i["InstanceId"] for r in use1.describe_instances()["Reservations"] for i in r["Instances"]}
    assert again["ReservationId"] == first["ReservationId"]
    assert again["Instances"][0]["InstanceId"] == first["Instances"][0]["InstanceId"]
    assert after == before  # no new instance

    with pytest.raises(ClientError) as exc:  # same token, other parameters
        use1.run_instances(ImageId=base_image, MinCount=1, MaxCount=1,
                           InstanceType="t3.large", ClientToken=token)
    assert error_of(exc) == ("IdempotentParameterMismatch", 400)

    other_region = euw1.run_instances(ImageId=base_image, MinCount=1, MaxCount=1,
                                      InstanceType="t3.micro", ClientToken=token)
    assert other_region["Instances"][0]["InstanceId"] != first["Instances"][0]["InstanceId"]


# ---------------------------------------------------------------- 2. CopyImage, AMI names

def test_copy_image_token_tags_and_snapshots(use1, euw1, base_image):
    name = unique("copy")
    snap = snapshots_of(use1, base_image)[0]
    src = register(use1, name, snap, TagSpecifications=[
        {"ResourceType": "image", "Tags": [{"Key": "team", "Value": "a"}]}])
    token = unique("tok")
    args = dict(SourceRegion="us-east-1", SourceImageId=src, Name=name, ClientToken=token,
                CopyImageTags=True, TagSpecifications=[
                    {"ResourceType": "image", "Tags": [{"Key": "copy", "Value": "yes"}]}])
    dst = euw1.copy_image(**args)["ImageId"]
    assert euw1.copy_image(**args)["ImageId"] == dst  # retry with the token: same image
    found = euw1.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
    assert [i["ImageId"] for i in found["Images"]] == [dst]

    copied = image(euw1, dst)
    assert {t["Key"]: t["Value"] for t in copied["Tags"]} == {"team": "a", "copy": "yes"}
    assert copied["SourceImageId"] == src and copied["SourceImageRegion"] == "us-east-1"
    ebs = copied["BlockDeviceMappings"][0]["Ebs"]
    assert ebs["SnapshotId"] != snap and ebs["Encrypted"] is True and ebs["VolumeSize"] == 20
    assert euw1.describe_snapshots(SnapshotIds=[ebs["SnapshotId"]])["Snapshots"]

    with pytest.raises(ClientError) as exc:  # same token, other parameters
        euw1.copy_image(**dict(args, Description="changed"))
    assert error_of(exc) == ("IdempotentParameterMismatch", 400)
    with pytest.raises(ClientError) as exc:  # new token, name taken in the destination region
        euw1.copy_image(**dict(args, ClientToken=unique("tok")))
    assert error_of(exc) == ("InvalidAMIName.Duplicate", 400)

    plain = euw1.copy_image(SourceRegion="us-east-1", SourceImageId=src, Name=unique("nocopytags"))
    assert image(euw1, plain["ImageId"]).get("Tags", []) == []  # CopyImageTags defaults to false


def test_ami_names_are_unique_per_region(use1, euw1, base_image):
    name = unique("dup")
    snap = snapshots_of(use1, base_image)[0]
    first = register(use1, name, snap)
    with pytest.raises(ClientError) as exc:
        register(use1, name, snap)
    assert error_of(exc) == ("InvalidAMIName.Duplicate", 400)
    with pytest.raises(ClientError) as exc:
        use1.copy_image(SourceRegion="us-east-1", SourceImageId=first, Name=name)
    assert error_of(exc) == ("InvalidAMIName.Duplicate", 400)
    with pytest.raises(ClientError) as exc:
        register(use1, "bad#name", snap)
    assert error_of(exc)[0] == "InvalidAMIName.Malformed"

    euw1.copy_image(SourceRegion="us-east-1", SourceImageId=first, Name=name)  # other region: fine
    use1.deregister_image(ImageId=first)
    register(use1, name, snap)  # a deregistered image frees its name


# ---------------------------------------------------------------- 3. RegisterImage keeps its input

def test_register_image_keeps_attributes_and_tags(use1, base_image):
    snap = snapshots_of(use1, base_image)[0]
    described = use1.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert described["Encrypted"] is True
    assert {t["Key"]: t["Value"] for t in described["Tags"]} == {"vol": "root"}  # CopyTagsFromSource

    name = unique("reg")
    image_id = use1.register_image(
        Name=name, Description="d", Architecture="arm64", RootDeviceName="/dev/xvda",
        VirtualizationType="hvm", EnaSupport=True, SriovNetSupport="simple", BootMode="uefi",
        TpmSupport="v2.0", ImdsSupport="v2.0",
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap, "VolumeType": "gp3",
                                                "DeleteOnTermination": True}},
            {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 50, "VolumeType": "gp3",
                                                "DeleteOnTermination": False}}],
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "pipeline", "Value": "p1"}]}],
    )["ImageId"]
    got = image(use1, image_id)
    assert {k: got.get(k) for k in ("Name", "Description", "Architecture", "RootDeviceName",
                                    "RootDeviceType", "VirtualizationType", "EnaSupport",
                                    "SriovNetSupport", "BootMode", "TpmSupport", "ImdsSupport")} == {
        "Name": name, "Description": "d", "Architecture": "arm64", "RootDeviceName": "/dev/xvda",
        "RootDeviceType": "ebs", "VirtualizationType": "hvm", "EnaSupport": True,
        "SriovNetSupport": "simple", "BootMode": "uefi", "TpmSupport": "v2.0", "ImdsSupport": "v2.0"}
    assert got["BlockDeviceMappings"] == [
        {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap, "VolumeSize": 20, "VolumeType": "gp3",
                                            "DeleteOnTermination": True, "Encrypted": True,
                                            "KmsKeyId": described["KmsKeyId"]}},  # the snapshot's key
        {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 50, "VolumeType": "gp3",
                                            "DeleteOnTermination": False, "Encrypted": False}}]
    assert got["Tags"] == [{"Key": "pipeline", "Value": "p1"}]

    with pytest.raises(ClientError) as exc:  # the snapshot backs a registered image
        use1.delete_snapshot(SnapshotId=snap)
    assert error_of(exc)[0] == "InvalidSnapshot.InUse"
    use1.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)
    with pytest.raises(ClientError) as exc:
        use1.describe_snapshots(SnapshotIds=[snap])
    assert error_of(exc)[0] == "InvalidSnapshot.NotFound"

    with pytest.raises(ClientError) as exc:
        register(use1, unique("tpm"), snapshots_of(use1, base_image)[0],
                 BootMode="legacy-bios", TpmSupport="v2.0")
    assert error_of(exc)[0] == "InvalidParameterCombination"


def test_register_image_defaults_are_awss(use1, base_image):
    """Without Architecture/VirtualizationType AWS registers i386 paravirtual: the caller must pass them."""
    snap = snapshots_of(use1, base_image)[0]
    image_id = use1.register_image(Name=unique("defaults"), RootDeviceName="/dev/xvda",
                                   BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                                         "Ebs": {"SnapshotId": snap}}])["ImageId"]
    got = image(use1, image_id)
    assert (got["Architecture"], got["VirtualizationType"]) == ("i386", "paravirtual")
    assert "BootMode" not in got and "ImdsSupport" not in got


# ---------------------------------------------------------------- 4. deprecation

def test_image_deprecation_and_block_public_access(use1, base_image):
    image_id = register(use1, unique("dep"), snapshots_of(use1, base_image)[0])
    at = (datetime.now(timezone.utc) + timedelta(days=30)).replace(second=40, microsecond=0)
    assert use1.enable_image_deprecation(ImageId=image_id, DeprecateAt=at)["Return"] is True
    expected = (at + timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:00.000Z")  # rounded to the minute
    assert image(use1, image_id)["DeprecationTime"] == expected

    with pytest.raises(ClientError) as exc:
        use1.enable_image_deprecation(ImageId=image_id, DeprecateAt=at - timedelta(days=60))
    assert error_of(exc) == ("InvalidParameterValue", 400)
    assert use1.disable_image_deprecation(ImageId=image_id)["Return"] is True
    assert "DeprecationTime" not in image(use1, image_id)

    assert use1.get_image_block_public_access_state()["ImageBlockPublicAccessState"] == "unblocked"


# ---------------------------------------------------------------- 5. pending states

def test_images_are_pending_for_k_polls(use1, euw1, base_image):
    image_id = register(use1, unique("pend"), snapshots_of(use1, base_image)[0])
    assert [image(use1, image_id)["State"] for _ in range(K + 2)] == ["pending"] * K + ["available"] * 2
    copy_id = euw1.copy_image(SourceRegion="us-east-1", SourceImageId=image_id, Name=unique("pc"))["ImageId"]
    assert [image(euw1, copy_id)["State"] for _ in range(K + 1)] == ["pending"] * K + ["available"]


def test_snapshots_progress_then_complete(use1, base_image):
    snap = snapshots_of(use1, base_image)[0]
    seen = [(s["State"], s["Progress"]) for s in
            (use1.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0] for _ in range(K + 2))]
    assert seen == [("pending", "0%"), ("pending", "50%"), ("completed", "100%"), ("completed", "100%")]


def test_instances_pending_then_running_then_status_ok(use1, base_image):
    iid = launch(use1, base_image)
    assert [instance_state(use1, iid) for _ in range(K + 1)] == ["pending"] * K + ["running"]
    statuses = [use1.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"][0]
                for _ in range(K + 1)]
    assert [(s["InstanceStatus"]["Status"], s["SystemStatus"]["Status"]) for s in statuses] == \
        [("initializing", "initializing")] * K + [("ok", "ok")]


# ---------------------------------------------------------------- 6. the guest

BUILDER = "#!/bin/bash\n# AMI-PIPELINE-BUILDER\nset -e\n{extra}\nshutdown -h now\n"


@pytest.mark.parametrize("extra, behaviour, final, line", [
    ("", "stop", "stopped", "AMI-PIPELINE-RESULT: SUCCESS"),
    ("# sim:fail-provision", "stop", "stopped", "AMI-PIPELINE-RESULT: FAILURE exit=3"),
    ("", "terminate", "terminated", "AMI-PIPELINE-RESULT: SUCCESS"),
])
def test_builder_prints_result_and_shuts_down(use1, base_image, extra, behaviour, final, line):
    iid = launch(use1, base_image, BUILDER.format(extra=extra),
                 InstanceInitiatedShutdownBehavior=behaviour)
    states = [instance_state(use1, iid) for _ in range(2 * K + 2)]
    assert states == ["pending"] * K + ["running"] * K + [final] * 2
    assert line in console(use1, iid, Latest=True).splitlines()
    assert line in console(use1, iid).splitlines()
    reason = use1.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["StateReason"]
    assert reason["Code"] == "Client.InstanceInitiatedShutdown"


def test_a_stop_from_inside_the_os_carries_no_time(use1, base_image):
    """An OS-initiated stop reads "User initiated" without a time; an API stop carries one."""
    iid = launch(use1, base_image, BUILDER.format(extra=""), InstanceInitiatedShutdownBehavior="stop")
    for _ in range(2 * K + 2):
        instance_state(use1, iid)
    inst = use1.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "stopped" and inst["StateTransitionReason"] == "User initiated"
    other = launch(use1, base_image)
    use1.stop_instances(InstanceIds=[other])
    reason = use1.describe_instances(InstanceIds=[other])["Reservations"][0]["Instances"][0]["StateTransitionReason"]
    assert reason.startswith("User initiated (") and reason.endswith(")"), reason


def test_deregistration_protection_and_disabled_images(use1, base_image):
    """A protected AMI can't be deregistered, and says so in DescribeImages; a disabled AMI is hidden from
    DescribeImages unless IncludeDisabled."""
    snap = snapshots_of(use1, base_image)[0]
    image_id = register(use1, unique("prot"), snap)
    use1.enable_image_deregistration_protection(ImageId=image_id)
    assert image(use1, image_id)["DeregistrationProtection"] == "enabled-without-cooldown"
    with pytest.raises(ClientError) as e:
        use1.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)
    assert error_of(e)[0] == "OperationNotPermitted"
    use1.disable_image_deregistration_protection(ImageId=image_id)
    assert image(use1, image_id)["DeregistrationProtection"] == "disabled"

    use1.disable_image(ImageId=image_id)
    listing = {"Owners": ["self"], "Filters": [{"Name": "image-id", "Values": [image_id]}]}
    assert use1.describe_images(**listing)["Images"] == []
    shown = use1.describe_images(**listing, IncludeDisabled=True)["Images"]
    assert [i["State"] for i in shown] == ["disabled"]
    use1.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)
    assert snap not in {s["SnapshotId"] for s in use1.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def test_deregister_reports_each_snapshots_deletion_and_a_fault_keeps_one(server, use1, base_image):
    """DeregisterImage DeleteAssociatedSnapshots answers DeleteSnapshotResults, one ReturnCode per snapshot: success,
    skipped when another AMI uses it; the `deregister_snapshot_error` fault keeps one snapshot with an error code,
    and the call still succeeds (EC2 API reference, DeregisterImage and DeleteSnapshotReturnCode)."""
    root, data = snapshots_of(use1, base_image)[0], snapshots_of(use1, base_image)[0]
    mappings = [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root, "VolumeType": "gp3"}},
                {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": data, "VolumeType": "gp3"}}]
    first = use1.register_image(Name=unique("dsr"), Architecture="x86_64", RootDeviceName="/dev/xvda",
                                VirtualizationType="hvm", BlockDeviceMappings=mappings)["ImageId"]
    other = register(use1, unique("dsr-other"), data)  # also uses the data snapshot
    out = use1.deregister_image(ImageId=first, DeleteAssociatedSnapshots=True)
    codes = {r["SnapshotId"]: r["ReturnCode"] for r in out["DeleteSnapshotResults"]}
    assert codes == {root: "success", data: "skipped"}, out
    mine = {s["SnapshotId"] for s in use1.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert root not in mine and data in mine

    sim(server, "/_sim/faults", {"deregister_snapshot_error": "internal-error"})
    out = use1.deregister_image(ImageId=other, DeleteAssociatedSnapshots=True)
    assert [(r["SnapshotId"], r["ReturnCode"]) for r in out["DeleteSnapshotResults"]] == [(data, "internal-error")]
    assert data in {s["SnapshotId"] for s in use1.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    use1.delete_snapshot(SnapshotId=data)  # nothing uses it now: a DeleteSnapshot removes it
    with pytest.raises(urllib.error.HTTPError):  # only the documented error codes
        sim(server, "/_sim/faults", {"deregister_snapshot_error": "bad-code"})


def test_builder_result_visible_by_console_polling_alone(use1, base_image):
    iid = launch(use1, base_image, BUILDER.format(extra=""))
    outputs = [console(use1, iid, Latest=True) for _ in range(2 * K + 1)]
    assert outputs[:K] == [""] * K  # pending: no output yet
    assert all("AMI-PIPELINE-RESULT" not in o for o in outputs[:2 * K])
    assert "AMI-PIPELINE-RESULT: SUCCESS" in outputs[2 * K]
    assert instance_state(use1, iid) == "stopped"


def test_builder_never_ready(use1, base_image):
    iid = launch(use1, base_image, BUILDER.format(extra="# sim:never-ready"))
    for _ in range(4 * K):
        assert "AMI-PIPELINE-RESULT" not in console(use1, iid)
    assert instance_state(use1, iid) == "running"


@pytest.mark.parametrize("extra, line", [("", "AMI-PIPELINE-SMOKE: PASS"),
                                         ("# sim:fail-smoke", "AMI-PIPELINE-SMOKE: FAIL")])
def test_smoke_instance(use1, base_image, extra, line):
    iid = launch(use1, base_image, f"#!/bin/bash\n# AMI-PIPELINE-SMOKE\n{extra}\n")
    states = [instance_state(use1, iid) for _ in range(K + 1)]
    assert states == ["pending"] * K + ["running"]
    outputs = [console(use1, iid) for _ in range(K)]  # K polls after running: the test ran
    assert "AMI-PIPELINE-SMOKE" not in outputs[0] and line in outputs[-1].splitlines()
    assert instance_state(use1, iid) == "running"


def test_plain_instance_prints_no_marker(use1, base_image):
    iid = launch(use1, base_image)
    for _ in range(4 * K):
        assert "AMI-PIPELINE" not in console(use1, iid)
    assert instance_state(use1, iid) == "running"


# ---------------------------------------------------------------- 7. faults and the call log

def test_throttle_fault(server, use1, base_image):
    sim(server, "/_sim/faults", {"action": "RunInstances", "throttle": 3})
    for _ in range(3):
        with pytest.raises(ClientError) as exc:
            launch(use1, base_image)
        assert error_of(exc) == ("RequestLimitExceeded", 503)
        use1.describe_instances(MaxResults=5)  # other actions are not throttled
    launch(use1, base_image)
    counts = sim(server, "/_sim/calls")["counts"]["us-east-1"]
    assert counts["RunInstances"] == 4 and counts["DescribeInstances"] == 3


def test_error_fault(server, use1, euw1, base_image):
    src = register(use1, unique("err"), snapshots_of(use1, base_image)[0])
    sim(server, "/_sim/faults", {"action": "CopyImage", "error": "InternalError", "count": 1})
    with pytest.raises(ClientError) as exc:
        euw1.copy_image(SourceRegion="us-east-1", SourceImageId=src, Name=unique("e"))
    assert error_of(exc) == ("InternalError", 500)
    euw1.copy_image(SourceRegion="us-east-1", SourceImageId=src, Name=unique("e"))


def test_fail_copy_region(server, use1, euw1, base_image):
    src = register(use1, unique("fcr"), snapshots_of(use1, base_image)[0])
    sim(server, "/_sim/faults", {"fail_copy_region": "eu-west-1"})
    bad = euw1.copy_image(SourceRegion="us-east-1", SourceImageId=src, Name=unique("f"))["ImageId"]
    good = use1.copy_image(SourceRegion="us-east-1", SourceImageId=src, Name=unique("f"))["ImageId"]
    assert [image(euw1, bad)["State"] for _ in range(K + 1)] == ["pending"] * K + ["failed"]
    assert image(euw1, bad)["StateReason"]["Code"] == "Client.InternalError"
    assert [image(use1, good)["State"] for _ in range(K + 1)] == ["pending"] * K + ["available"]


def test_snapshot_error_fault(server, use1, base_image):
    sim(server, "/_sim/faults", {"snapshot_error": True})
    bad = snapshots_of(use1, base_image)[0]
    good = snapshots_of(use1, base_image)[0]  # one-shot: the next CreateSnapshots is fine
    states = [use1.describe_snapshots(SnapshotIds=[bad, good])["Snapshots"] for _ in range(K + 1)]
    final = {s["SnapshotId"]: s["State"] for s in states[-1]}
    assert [s["State"] for s in states[0]] == ["pending", "pending"]
    assert final == {bad: "error", good: "completed"}


def test_lost_response_fault(server, use1, base_image):
    name = unique("lost")
    snap = snapshots_of(use1, base_image)[0]
    sim(server, "/_sim/faults", {"lost_response": "RegisterImage", "count": 1})
    with pytest.raises(ClientError) as exc:
        register(use1, name, snap)
    assert error_of(exc) == ("InternalError", 500)
    found = use1.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
    assert len(found["Images"]) == 1  # the call did happen
    with pytest.raises(ClientError) as exc:  # a blind retry now hits the name
        register(use1, name, snap)
    assert error_of(exc)[0] == "InvalidAMIName.Duplicate"


def test_call_log_per_region_and_action(server, client, use1, euw1):
    t0 = time.time()
    use1.describe_images(ImageIds=[], Owners=["self"])
    use1.describe_images(Owners=["self"])
    euw1.describe_instances()
    client("ap-southeast-2").describe_instances()
    client("us-east-1", "sts").get_caller_identity()  # other services pass through, unlogged
    log = sim(server, "/_sim/calls")
    assert log["counts"] == {"us-east-1": {"DescribeImages": 2},
                             "eu-west-1": {"DescribeInstances": 1},
                             "ap-southeast-2": {"DescribeInstances": 1}}
    assert [c["action"] for c in log["calls"]] == ["DescribeImages"] * 2 + ["DescribeInstances"] * 2
    assert all(t0 <= c["t"] <= time.time() and c["status"] == 200 for c in log["calls"])
    sim(server, "/_sim/reset", {})
    assert sim(server, "/_sim/calls")["counts"] == {}


def test_bad_fault_spec_is_rejected(server):
    with pytest.raises(urllib.error.HTTPError) as exc:
        sim(server, "/_sim/faults", {"nonsense": 1})
    assert exc.value.code == 400


def test_skip_lets_calls_through_before_the_fault(server, use1, base_image):
    sim(server, "/_sim/faults", {"action": "RunInstances", "throttle": 1, "skip": 1})
    launch(use1, base_image)  # skipped
    with pytest.raises(ClientError) as exc:
        launch(use1, base_image)
    assert error_of(exc) == ("RequestLimitExceeded", 503)
    launch(use1, base_image)


def test_image_failed_fault(server, use1, base_image):
    sim(server, "/_sim/faults", {"image_failed": True})
    bad = register(use1, unique("imf"), snapshots_of(use1, base_image)[0])
    good = register(use1, unique("imf"), snapshots_of(use1, base_image)[0])  # one-shot
    assert [image(use1, bad)["State"] for _ in range(K + 1)] == ["pending"] * K + ["failed"]
    assert image(use1, bad)["StateReason"]["Code"].startswith("Client.")
    assert [image(use1, good)["State"] for _ in range(K + 1)] == ["pending"] * K + ["available"]


@pytest.mark.parametrize("role, user_data", [("builder", BUILDER.format(extra="")),
                                             ("smoke", "#!/bin/bash\n# AMI-PIPELINE-SMOKE\n")])
def test_terminate_instance_fault(server, use1, base_image, role, user_data):
    sim(server, "/_sim/faults", {"terminate_instance": role})
    other = launch(use1, base_image)  # not that role: untouched
    iid = launch(use1, base_image, user_data)
    states = [instance_state(use1, iid) for _ in range(K + 3)]
    assert states == ["pending"] * K + ["running"] + ["terminated"] * 2  # it ran, then someone ended it
    reason = use1.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["StateReason"]
    assert reason["Code"] == "Client.UserInitiatedShutdown"
    assert "AMI-PIPELINE" not in console(use1, iid)  # it never got to print a result
    assert instance_state(use1, other) in ("pending", "running")
    again = launch(use1, base_image, user_data)  # one-shot
    assert [instance_state(use1, again) for _ in range(K + 1)][-1] in ("running", "stopped")


def test_launch_template_version_client_token(server, use1, base_image):
    name = unique("lt")
    use1.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"ImageId": base_image})
    make = dict(LaunchTemplateName=name, SourceVersion="1", LaunchTemplateData={"ImageId": base_image},
                ClientToken=name)
    first = use1.create_launch_template_version(**make)["LaunchTemplateVersion"]["VersionNumber"]
    again = use1.create_launch_template_version(**make)["LaunchTemplateVersion"]["VersionNumber"]
    assert first == again == 2
    versions = use1.describe_launch_template_versions(LaunchTemplateName=name)["LaunchTemplateVersions"]
    assert sorted(v["VersionNumber"] for v in versions) == [1, 2]
    with pytest.raises(ClientError) as exc:
        use1.create_launch_template_version(**dict(make, VersionDescription="other"))
    assert error_of(exc)[0] == "IdempotentParameterMismatch"
    other = use1.create_launch_template_version(**dict(make, ClientToken=name + "-2"))
    assert other["LaunchTemplateVersion"]["VersionNumber"] == 3


def test_created_ids_and_request_log(server, use1, base_image, request_log):
    start = request_log.stat().st_size if request_log.exists() else 0
    token = unique("tok")
    iid = launch(use1, base_image, ClientToken=token,
                 MetadataOptions={"HttpTokens": "required"})
    assert launch(use1, base_image, ClientToken=token, MetadataOptions={"HttpTokens": "required"}) == iid
    sim(server, "/_sim/faults", {"lost_response": "CreateSnapshots"})
    with pytest.raises(ClientError):
        use1.create_snapshots(InstanceSpecification={"InstanceId": iid})
    use1.describe_instances(InstanceIds=[iid])
    calls = sim(server, "/_sim/calls")["calls"]
    created = [(c["action"], c["status"], c["created"]) for c in calls]
    assert created[0] == ("RunInstances", 200, [iid]) and created[1] == ("RunInstances", 200, [iid])
    assert created[2][:2] == ("CreateSnapshots", 500) and created[2][2][0].startswith("snap-")  # made, unseen
    assert created[3] == ("DescribeInstances", 200, [])
    with open(request_log) as f:
        f.seek(start)
        logged = [json.loads(line) for line in f]
    # mutating calls only, with their parameters as sent
    assert [r["action"] for r in logged] == ["RunInstances", "RunInstances", "CreateSnapshots"]
    assert logged[0]["params"]["MetadataOptions.HttpTokens"] == "required"
    assert logged[0]["params"]["ClientToken"] == token and logged[0]["region"] == "us-east-1"
    assert "Boto3" in logged[0]["agent"]  # who sent it: tests use boto3, the handlers aws-sdk-rust


# ---------------------------------------------------------------- SSM aws:ec2:image parameters

def test_image_parameters_are_validated_and_keep_their_data_type(client, use1, base_image):
    """aws:ec2:image values are validated asynchronously: an unknown image is answered 200 but never stored; a
    parameter cannot change to or from that data type."""
    ssm = client("us-east-1", "ssm")
    name = f"/sim/{unique('param')}"
    ssm.put_parameter(Name=name, Value="ami-0123456789abcdef0", Type="String", DataType="aws:ec2:image")
    with pytest.raises(ClientError) as e:
        ssm.get_parameter(Name=name)
    assert error_of(e)[0] == "ParameterNotFound"

    ssm.put_parameter(Name=name, Value=base_image, Type="String", DataType="aws:ec2:image")
    got = ssm.get_parameter(Name=name)["Parameter"]
    assert (got["Value"], got["DataType"]) == (base_image, "aws:ec2:image")

    text = f"/sim/{unique('text')}"
    ssm.put_parameter(Name=text, Value="hello", Type="String")
    with pytest.raises(ClientError):
        ssm.put_parameter(Name=text, Value=base_image, Type="String", DataType="aws:ec2:image", Overwrite=True)
    assert ssm.get_parameter(Name=text)["Parameter"]["Value"] == "hello"



# ---------------------------------------------------------------- instance-store images, snapshots of images

def manifest_in_s3(client, key="bundle/image.manifest.xml"):
    """A bucket with a bundle's manifest object in it, as ec2-upload-bundle leaves it: (bucket, key)."""
    s3 = client("us-east-1", "s3")
    bucket = unique("bundles")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=b"<manifest/>")
    return bucket, key


def test_register_image_from_a_manifest_needs_bucket_slash_key_of_an_object(client, use1):
    bucket, key = manifest_in_s3(client)
    image_id = use1.register_image(Name=unique("is"), ImageLocation=f"{bucket}/{key}", Architecture="x86_64",
                                   VirtualizationType="hvm")["ImageId"]
    got = image(use1, image_id)
    assert got["RootDeviceType"] == "instance-store"
    assert got.get("BlockDeviceMappings", []) == []  # no snapshot: the image is in S3
    assert got["ImageLocation"] == f"{bucket}/{key}"
    for location in (f"s3://{bucket}/{key}", f"{bucket}/other.manifest.xml", f"{unique('nobucket')}/{key}",
                     bucket):
        with pytest.raises(ClientError) as exc:
            use1.register_image(Name=unique("is"), ImageLocation=location, Architecture="x86_64",
                                VirtualizationType="hvm")
        assert error_of(exc) == ("InvalidManifest", 400), location


def test_instance_store_images_launch_only_on_types_with_an_instance_store_root(client, use1):
    bucket, key = manifest_in_s3(client)
    image_id = use1.register_image(Name=unique("is"), ImageLocation=f"{bucket}/{key}", Architecture="x86_64",
                                   VirtualizationType="hvm")["ImageId"]
    types = {t["InstanceType"]: t["SupportedRootDeviceTypes"]
             for t in use1.describe_instance_types(InstanceTypes=["t3.micro", "m3.medium"])["InstanceTypes"]}
    assert types == {"t3.micro": ["ebs"], "m3.medium": ["ebs", "instance-store"]}
    with pytest.raises(ClientError) as exc:
        launch(use1, image_id)  # t3.micro
    assert error_of(exc) == ("UnsupportedOperation", 400)
    assert "instance-store root device is not supported" in exc.value.response["Error"]["Message"]
    iid = use1.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="m3.medium")[
        "Instances"][0]["InstanceId"]
    assert iid.startswith("i-")


def test_copy_of_an_instance_store_image_is_not_encrypted(client, use1, euw1):
    bucket, key = manifest_in_s3(client)
    source = use1.register_image(Name=unique("is"), ImageLocation=f"{bucket}/{key}", Architecture="x86_64",
                                 VirtualizationType="hvm")["ImageId"]
    with pytest.raises(ClientError) as exc:
        euw1.copy_image(SourceRegion="us-east-1", SourceImageId=source, Name=unique("copy"), Encrypted=True)
    assert error_of(exc) == ("InvalidParameterCombination", 400)
    before = {s["SnapshotId"] for s in euw1.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    copied = euw1.copy_image(SourceRegion="us-east-1", SourceImageId=source, Name=unique("copy"))["ImageId"]
    got = image(euw1, copied)
    assert got["RootDeviceType"] == "instance-store"
    assert got.get("BlockDeviceMappings", []) == []
    assert {s["SnapshotId"] for s in euw1.describe_snapshots(OwnerIds=["self"])["Snapshots"]} == before


def test_delete_snapshot_refuses_only_an_images_root_snapshot(use1, base_image):
    root, data = snapshots_of(use1, base_image)[0], snapshots_of(use1, base_image)[0]
    image_id = use1.register_image(
        Name=unique("two"), Architecture="x86_64", RootDeviceName="/dev/xvda", VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root}},
                             {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": data}}])["ImageId"]
    with pytest.raises(ClientError) as exc:
        use1.delete_snapshot(SnapshotId=root)
    assert error_of(exc) == ("InvalidSnapshot.InUse", 400)
    use1.delete_snapshot(SnapshotId=data)  # a data volume's snapshot goes, though the image maps it
    with pytest.raises(ClientError) as exc:
        use1.describe_snapshots(SnapshotIds=[data])
    assert error_of(exc)[0] == "InvalidSnapshot.NotFound"
    assert image(use1, image_id)["State"] in ("pending", "available")


def test_snapshot_start_time_can_be_backdated(server, use1, base_image):
    snap = snapshots_of(use1, base_image)[0]
    sim(server, "/_sim/snapshot_start_time",
        {"region": "us-east-1", "snapshot_id": snap, "start_time": "2026-01-02T03:04:05Z"})
    got = use1.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["StartTime"]
    assert got == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with pytest.raises(urllib.error.HTTPError) as exc:
        sim(server, "/_sim/snapshot_start_time", {"region": "us-east-1", "snapshot_id": "snap-0nothere",
                                                  "start_time": "2026-01-02T03:04:05Z"})
    assert exc.value.code == 400


# ---------------------------------------------------------------- KMS keys of snapshots, sharing them

def customer_key(client, region, alias=None, enabled=True):
    """A customer-managed key of `region` behind a new alias; (alias, key ARN)."""
    kms = client(region, "kms")
    key = kms.create_key(Description="test")["KeyMetadata"]
    alias = alias or f"alias/{unique('key')}"
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    if not enabled:
        kms.disable_key(KeyId=key["KeyId"])
    return alias, key["Arn"]


def snapshot_with_key(ec2, base_image, key=None):
    """The root snapshot of an instance whose encrypted root volume uses `key` (None: the default key)."""
    ebs = {"VolumeSize": 8, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}
    if key:
        ebs["KmsKeyId"] = key
    iid = launch(ec2, base_image, BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": ebs}])
    return ec2.create_snapshots(InstanceSpecification={"InstanceId": iid})["Snapshots"][0]["SnapshotId"]


def snapshot_key(ec2, snap_id):
    return ec2.describe_snapshots(SnapshotIds=[snap_id])["Snapshots"][0].get("KmsKeyId")


def test_aws_ebs_key_is_aws_managed(client):
    kms = client("us-east-1", "kms")
    by_alias = kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]
    assert by_alias["KeyManager"] == "AWS"
    assert kms.describe_key(KeyId=by_alias["KeyId"])["KeyMetadata"]["KeyManager"] == "AWS"
    _, arn = customer_key(client, "us-east-1")
    assert kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyManager"] == "CUSTOMER"


def test_snapshots_record_the_key_they_really_have(client, use1, euw1, base_image):
    default_use1 = client("us-east-1", "kms").describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"]
    default_euw1 = client("eu-west-1", "kms").describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"]
    alias = f"alias/{unique('key')}"
    _, mine_use1 = customer_key(client, "us-east-1", alias)
    _, mine_euw1 = customer_key(client, "eu-west-1", alias)

    plain = snapshot_with_key(use1, base_image)
    mine = snapshot_with_key(use1, base_image, alias)
    assert snapshot_key(use1, plain) == default_use1  # the volume's default key, as an ARN
    assert snapshot_key(use1, mine) == mine_use1  # the alias the volume was given, resolved in its region

    src = register(use1, unique("keys"), mine)
    to_key = euw1.copy_image(SourceRegion="us-east-1", SourceImageId=src, Name=unique("k"), Encrypted=True,
                             KmsKeyId=alias)["ImageId"]
    to_default = euw1.copy_image(SourceRegion="us-east-1", SourceImageId=src, Name=unique("k"),
                                 Encrypted=True)["ImageId"]
    copied = [image(euw1, i)["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] for i in (to_key, to_default)]
    assert [snapshot_key(euw1, s) for s in copied] == [mine_euw1, default_euw1]


def test_default_key_snapshots_and_images_cannot_be_shared(client, use1, base_image):
    """Fails on the emulator before issue 12: it shared them (and dropped CreateVolumePermission.Add)."""
    plain = snapshot_with_key(use1, base_image)
    with pytest.raises(ClientError) as exc:
        use1.modify_snapshot_attribute(SnapshotId=plain, Attribute="createVolumePermission",
                                       CreateVolumePermission={"Add": [{"UserId": "111122223333"}]})
    assert error_of(exc) == ("OperationNotPermitted", 400)
    assert "default key" in exc.value.response["Error"]["Message"]
    plain_image = register(use1, unique("plain"), plain)
    for grantee in ({"UserId": "111122223333"},
                    {"OrganizationArn": "arn:aws:organizations::123456789012:organization/o-abcdefghij"},
                    {"OrganizationalUnitArn": "arn:aws:organizations::123456789012:ou/o-abcdefghij/ou-ab12-cdef3456"}):
        with pytest.raises(ClientError) as exc:
            use1.modify_image_attribute(ImageId=plain_image, LaunchPermission={"Add": [grantee]})
        assert error_of(exc) == ("InvalidParameter", 400), grantee
    assert use1.describe_image_attribute(ImageId=plain_image, Attribute="launchPermission")["LaunchPermissions"] == []

    alias, _ = customer_key(client, "us-east-1")
    mine = snapshot_with_key(use1, base_image, alias)
    use1.modify_snapshot_attribute(SnapshotId=mine, Attribute="createVolumePermission",
                                   CreateVolumePermission={"Add": [{"UserId": "111122223333"}]})
    perms = use1.describe_snapshot_attribute(SnapshotId=mine, Attribute="createVolumePermission")
    assert perms["CreateVolumePermissions"] == [{"UserId": "111122223333"}]
    mine_image = register(use1, unique("mine"), mine)
    use1.modify_image_attribute(ImageId=mine_image, LaunchPermission={"Add": [{"UserId": "111122223333"}]})
    perms = use1.describe_image_attribute(ImageId=mine_image, Attribute="launchPermission")["LaunchPermissions"]
    assert perms == [{"UserId": "111122223333"}]
    use1.modify_snapshot_attribute(SnapshotId=mine, Attribute="createVolumePermission",
                                   CreateVolumePermission={"Remove": [{"UserId": "111122223333"}]})
    perms = use1.describe_snapshot_attribute(SnapshotId=mine, Attribute="createVolumePermission")
    assert perms["CreateVolumePermissions"] == []


def test_encrypted_snapshots_and_images_cannot_be_public(client, use1, base_image):
    alias, _ = customer_key(client, "us-east-1")
    mine = snapshot_with_key(use1, base_image, alias)
    with pytest.raises(ClientError) as exc:
        use1.modify_snapshot_attribute(SnapshotId=mine, Attribute="createVolumePermission",
                                       CreateVolumePermission={"Add": [{"Group": "all"}]})
    assert error_of(exc) == ("UnsupportedOperation", 400)
    with pytest.raises(ClientError) as exc:
        use1.modify_image_attribute(ImageId=register(use1, unique("pub"), mine),
                                    LaunchPermission={"Add": [{"Group": "all"}]})
    assert error_of(exc) == ("UnsupportedOperation", 400)


def test_copy_image_with_a_key_unusable_in_the_destination_fails_the_copy(client, use1, euw1, base_image):
    src = register(use1, unique("badkey"), snapshot_with_key(use1, base_image))
    us_only, _ = customer_key(client, "us-east-1")  # no such alias in eu-west-1
    disabled, _ = customer_key(client, "eu-west-1", enabled=False)
    good, _ = customer_key(client, "eu-west-1")
    # Accepted, then failed: AWS checks the key asynchronously (CopyImage API reference, KmsKeyId).
    copies = {key: euw1.copy_image(SourceRegion="us-east-1", SourceImageId=src, Name=unique("c"), Encrypted=True,
                                   KmsKeyId=key)["ImageId"] for key in (us_only, disabled, good)}
    final = {key: [image(euw1, i)["State"] for _ in range(K + 1)][-1] for key, i in copies.items()}
    assert final == {us_only: "failed", disabled: "failed", good: "available"}
    assert "KMS key" in image(euw1, copies[us_only])["StateReason"]["Message"]


@pytest.mark.parametrize("ebs, message", [
    ({"VolumeType": "io2", "VolumeSize": 20}, "The parameter iops must be specified for io2 volumes."),
    ({"VolumeType": "gp2", "VolumeSize": 20, "Iops": 300}, "The parameter iops is not supported for gp2 volumes."),
    ({"VolumeType": "io1", "VolumeSize": 20, "Iops": 500, "Throughput": 250},
     "throughput can only be specified for volumeType gp3."),
])
def test_ebs_mappings_need_iops_for_io1_io2_and_refuse_it_elsewhere(use1, base_image, ebs, message):
    with pytest.raises(ClientError) as excinfo:
        launch(use1, base_image, BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": ebs}])
    assert error_of(excinfo) == ("InvalidParameterCombination", 400)
    assert excinfo.value.response["Error"]["Message"] == message
    ok = dict(ebs, Iops=500) if ebs["VolumeType"] == "io2" else {k: v for k, v in ebs.items() if k != "Iops"} \
        if ebs["VolumeType"] == "gp2" else {k: v for k, v in ebs.items() if k != "Throughput"}
    iid = launch(use1, base_image, BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": ok}])
    inst = use1.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    vol_id = next(m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"] if m["DeviceName"] == "/dev/sdf")
    vol = use1.describe_volumes(VolumeIds=[vol_id])["Volumes"][0]
    assert (vol["VolumeType"], vol.get("Iops")) == (ok["VolumeType"], ok.get("Iops", vol.get("Iops")))
