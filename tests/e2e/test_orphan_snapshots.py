"""Retire's sweep of orphaned snapshots: a pipeline's snapshots that no image uses and that are older than any
execution can run are deleted at the end of a release; a young one (a running execution's, not registered yet),
one an image still maps (even as a data volume, which EC2 itself would let go), another pipeline's and one no
execution made are kept. The emulator's /_sim/snapshot_start_time backdates snapshots."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import local
from conftest import explain, release

PIPELINE = "web-orphans"
# Older than retire's grace (the longest execution, about 5.2 days, plus a day: functions/retire/src/lib.rs).
OLD = timedelta(days=8)


def make_snapshot(stack, volume: str, tags: dict[str, str], age: timedelta | None) -> str:
    ec2 = stack.boto3("ec2")
    snap = ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{
        "ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["SnapshotId"]
    if age is not None:
        when = (datetime.now(timezone.utc) - age).strftime("%Y-%m-%dT%H:%M:%SZ")
        stack.sim("POST", "snapshot_start_time", {"region": local.REGION, "snapshot_id": snap, "start_time": when})
    return snap


def exists(stack, snapshot_id: str) -> bool:
    found = stack.boto3("ec2").describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "snapshot-id", "Values": [snapshot_id]}])["Snapshots"]
    return bool(found)


def test_retire_deletes_old_orphaned_snapshots_and_keeps_the_rest(stack):
    ec2 = stack.boto3("ec2")
    volume = ec2.create_volume(AvailabilityZone=f"{local.REGION}a", Size=8)["VolumeId"]
    ours = {"ami-pipeline:pipeline": PIPELINE, "ami-pipeline:execution": "web-orphans-r-0-9-0-0badc0de",
            "ami-pipeline:role": "snapshot"}
    orphan = make_snapshot(stack, volume, ours, OLD)
    young = make_snapshot(stack, volume, ours, timedelta(days=2))
    by_hand = make_snapshot(stack, volume, {k: v for k, v in ours.items() if k != "ami-pipeline:execution"}, OLD)
    other = make_snapshot(stack, volume, dict(ours, **{"ami-pipeline:pipeline": "web-orphans-other"}), OLD)
    # An image someone registered from two of our old snapshots: the root one EC2 would refuse to delete, the data
    # one it would delete (DeleteSnapshot protects only an AMI's root snapshot): retire keeps both.
    root, data = make_snapshot(stack, volume, ours, OLD), make_snapshot(stack, volume, ours, OLD)
    ec2.register_image(Name="orphans-by-hand", Architecture="x86_64", RootDeviceName="/dev/xvda",
                       VirtualizationType="hvm",
                       BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root}},
                                            {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": data}}])

    # private and with the default EBS key: keys play no part in the sweep
    recipe = stack.recipe(PIPELINE, **{"image.kms_key_id": None, "distribution.kms_key_ids": {},
                                       "distribution.accounts": []})
    out, detail = release(stack, PIPELINE, "1.0.0", recipe)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    assert not exists(stack, orphan), "the old orphan is deleted"
    for kept in (young, by_hand, other, root, data):
        assert exists(stack, kept), kept

    # What retire reports: invoked again as the state machine invokes it, after one more orphan appeared.
    late = make_snapshot(stack, volume, ours, OLD)
    execution = {"name": out["execution_name"], "id": f"{stack.state_machine_arn}:{out['execution_name']}"}
    ok, retired = stack.invoke("ami-retire", {"action": "start", "execution": execution,
                                              "run": detail["input"]["run"], "steps": {}})
    assert ok, retired
    home = next(r for r in retired["regions"] if r["region"] == local.REGION)
    assert home["orphan_snapshots_deleted"] == [late], home
    assert not exists(stack, late)
    assert exists(stack, young) and exists(stack, data)
