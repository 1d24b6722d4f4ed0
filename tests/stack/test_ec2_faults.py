"""Capacity, limits and eventual consistency in the emulator (moto_ext/ec2_faults.py), against a real server process."""

import pytest
from botocore.exceptions import ClientError

from test_moto_ext import base_image, client, error_of, launch, request_log, reset_sim, server, sim, use1  # noqa: F401


def subnets_by_az(ec2) -> dict[str, str]:
    """One default subnet per Availability Zone."""
    out = {}
    for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]:
        out.setdefault(s["AvailabilityZone"], s["SubnetId"])
    assert len(out) >= 2, out
    return out


def launch_in(ec2, image, subnet, itype="t3.micro", token=None):
    kw = {"ClientToken": token} if token else {}
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType=itype, **kw,
                             NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet,
                                                 "AssociatePublicIpAddress": False}])["Instances"][0]["InstanceId"]


def test_no_capacity_for_a_type_in_one_availability_zone_until_cleared(server, use1, base_image):
    zones = subnets_by_az(use1)
    (az_a, subnet_a), (az_b, subnet_b) = sorted(zones.items())[:2]
    sim(server, "/_sim/faults", {"no_capacity": {"availability_zone": az_a, "instance_type": "t3.micro"}})
    with pytest.raises(ClientError) as e:
        launch_in(use1, base_image, subnet_a)
    assert error_of(e) == ("InsufficientInstanceCapacity", 500)  # a server error code
    message = e.value.response["Error"]["Message"]
    assert f"sufficient t3.micro capacity in the Availability Zone you requested ({az_a})" in message
    assert az_b in message and az_a not in message.split("choosing")[1], message
    # another type in that zone, and the same type in another zone, launch
    assert launch_in(use1, base_image, subnet_a, itype="m5.large").startswith("i-")
    assert launch_in(use1, base_image, subnet_b).startswith("i-")
    # the refused call made nothing, and the fault stays until cleared
    with pytest.raises(ClientError):
        launch_in(use1, base_image, subnet_a)
    state = sim(server, "/_sim/faults", {"clear": "no_capacity"})
    assert state["no_capacity"] == []
    assert launch_in(use1, base_image, subnet_a).startswith("i-")


def test_an_instance_type_not_offered_in_a_subnet_is_unsupported(server, use1, base_image):
    zones = subnets_by_az(use1)
    subnet = sorted(zones.values())[0]
    sim(server, "/_sim/faults", {"no_capacity": {"subnet_id": subnet}, "code": "Unsupported"})
    with pytest.raises(ClientError) as e:
        launch_in(use1, base_image, subnet, itype="c7g.large")
    assert error_of(e) == ("Unsupported", 400)
    assert "Your requested instance type (c7g.large) is not supported" in e.value.response["Error"]["Message"]
    with pytest.raises(ValueError):
        from moto_ext import ec2_faults
        ec2_faults.add_fault({"no_capacity": {"zone": "x"}})


def test_a_new_instance_is_unknown_to_describes_for_n_calls(server, use1, base_image):
    sim(server, "/_sim/faults", {"invisible": "instance", "calls": 2})
    iid = launch(use1, base_image)
    tag = [{"Name": "instance-id", "Values": [iid]}]
    # call 1, by id: NotFound, as EC2 answers right after RunInstances
    with pytest.raises(ClientError) as e:
        use1.describe_instances(InstanceIds=[iid])
    assert error_of(e)[0] == "InvalidInstanceID.NotFound"
    # call 2, a listing: left out
    assert use1.describe_instances(Filters=tag)["Reservations"] == []
    # then known, by id and in listings
    assert use1.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["InstanceId"] == iid
    assert use1.describe_instances(Filters=tag)["Reservations"]
    # only the next `count` (1) creation was invisible
    other = launch(use1, base_image)
    assert use1.describe_instances(InstanceIds=[other])["Reservations"]


def test_a_client_token_replay_is_not_a_new_invisible_instance(server, use1, base_image):
    iid = launch(use1, base_image, ClientToken="replay-token-ec2-faults")
    sim(server, "/_sim/faults", {"invisible": "instance", "calls": 3})
    assert launch(use1, base_image, ClientToken="replay-token-ec2-faults") == iid
    assert use1.describe_instances(InstanceIds=[iid])["Reservations"], "known before the fault: stays known"


def test_new_snapshots_and_images_are_unknown_for_n_calls(server, use1, base_image):
    iid = launch(use1, base_image)
    sim(server, "/_sim/faults", [{"invisible": "snapshot", "calls": 1, "count": 5},
                                 {"invisible": "image", "calls": 1}])
    snaps = use1.create_snapshots(InstanceSpecification={"InstanceId": iid})["Snapshots"]
    ids = [s["SnapshotId"] for s in snaps]
    with pytest.raises(ClientError) as e:
        use1.describe_snapshots(SnapshotIds=ids)
    assert error_of(e)[0] == "InvalidSnapshot.NotFound"
    assert {s["SnapshotId"] for s in use1.describe_snapshots(SnapshotIds=ids)["Snapshots"]} == set(ids)
    image_id = use1.register_image(Name="ec2-faults-invisible", RootDeviceName="/dev/xvda",
                                   BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                                         "Ebs": {"SnapshotId": ids[0]}}])["ImageId"]
    listing = use1.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["ec2-faults-invisible"]}])
    assert listing["Images"] == [], "not listed yet"
    # the name is taken all the same: a second RegisterImage is a duplicate of an image nobody sees yet
    with pytest.raises(ClientError) as e:
        use1.register_image(Name="ec2-faults-invisible", RootDeviceName="/dev/xvda",
                            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": ids[0]}}])
    assert error_of(e)[0] == "InvalidAMIName.Duplicate"
    assert use1.describe_images(ImageIds=[image_id])["Images"][0]["ImageId"] == image_id


def test_concurrent_snapshot_limit_refuses_until_it_lifts(server, use1, base_image):
    iid = launch(use1, base_image)
    sim(server, "/_sim/faults", {"snapshot_limit": 0, "count": 2})
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            use1.create_snapshots(InstanceSpecification={"InstanceId": iid})
        assert error_of(e) == ("ConcurrentSnapshotLimitExceeded", 400)
    # lifted after two refusals (other snapshots completed); nothing was made by the refused calls
    assert sim(server, "/_sim/state")["snapshot_limit"] is None
    made = use1.create_snapshots(InstanceSpecification={"InstanceId": iid})["Snapshots"]
    assert made
    # a limit the pending snapshots already fill, without a count: refused until cleared
    sim(server, "/_sim/faults", {"snapshot_limit": len(made)})
    with pytest.raises(ClientError):
        use1.create_snapshots(InstanceSpecification={"InstanceId": iid})
    sim(server, "/_sim/faults", {"clear": "snapshot_limit"})
    assert use1.create_snapshots(InstanceSpecification={"InstanceId": iid})["Snapshots"]


def test_reset_clears_every_fault_of_this_module(server, use1, base_image):
    sim(server, "/_sim/faults", [{"no_capacity": {}}, {"invisible": "instance", "calls": 5},
                                 {"snapshot_limit": 0}])
    sim(server, "/_sim/reset", {})
    state = sim(server, "/_sim/state")
    assert (state["no_capacity"], state["hidden"], state["snapshot_limit"]) == ([], {}, None)
    iid = launch(use1, base_image)
    assert use1.describe_instances(InstanceIds=[iid])["Reservations"]


def test_invisible_can_skip_the_first_creations(server, use1, base_image):
    sim(server, "/_sim/faults", {"invisible": "instance", "calls": 1, "skip": 1})
    first, second = launch(use1, base_image), launch(use1, base_image)
    assert use1.describe_instances(InstanceIds=[first])["Reservations"], "skipped: known at once"
    with pytest.raises(ClientError) as e:
        use1.describe_instances(InstanceIds=[second])
    assert error_of(e)[0] == "InvalidInstanceID.NotFound"
