"""DryRun RunInstances in the emulator (moto_ext/dryrun.py), against a real server process: answered as EC2 answers
it (DryRunOperation when it would succeed, the launch's own error for what does not exist, UnauthorizedOperation
for an injected permission fault), and never launching anything."""

import pytest
from botocore.exceptions import ClientError

from test_moto_ext import base_image, client, error_of, euw1, request_log, reset_sim, server, sim, use1  # noqa: F401


def network(ec2):
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]["GroupId"]
    return subnet, group


def dry_run(ec2, image, subnet, group, **kw):
    with pytest.raises(ClientError) as e:
        ec2.run_instances(DryRun=True, ImageId=image, MinCount=1, MaxCount=1, InstanceType=kw.pop("type", "t3.micro"),
                          NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet, "Groups": [group],
                                              "AssociatePublicIpAddress": False}], **kw)
    return error_of(e)[0]  # the code (moto answers HTTP 400 for each; see dryrun.py)


def instances(ec2):
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


def test_a_dry_run_that_would_succeed_answers_dry_run_operation_and_launches_nothing(use1, base_image):
    subnet, group = network(use1)
    before = len(instances(use1))
    assert dry_run(use1, base_image, subnet, group) == "DryRunOperation"
    assert len(instances(use1)) == before


def test_a_dry_run_names_what_does_not_exist(use1, base_image):
    subnet, group = network(use1)
    assert dry_run(use1, "ami-0123456789abcdef0", subnet, group) == "InvalidAMIID.NotFound"
    assert dry_run(use1, base_image, "subnet-0123456789abcdef0", group) == "InvalidSubnetID.NotFound"
    assert dry_run(use1, base_image, subnet, "sg-0123456789abcdef0") == "InvalidGroup.NotFound"
    assert dry_run(use1, base_image, subnet, group, type="t9.huge") == "InvalidParameterValue"
    assert dry_run(use1, base_image, subnet, group, IamInstanceProfile={"Name": "no-such-profile"}) == "InvalidParameterValue"


def test_an_injected_permission_fault_answers_unauthorized_once_and_only_in_its_region(use1, euw1, base_image):
    subnet, group = network(use1)
    sim_url = use1.meta.endpoint_url
    sim(sim_url, "/_sim/faults", {"dry_run_denied": "RunInstances", "region": "us-east-1"})
    eu_subnet, eu_group = network(euw1)
    eu_image = euw1.describe_images(Owners=["amazon"], Filters=[
        {"Name": "architecture", "Values": ["x86_64"]}, {"Name": "root-device-type", "Values": ["ebs"]}])["Images"][0]
    assert dry_run(euw1, eu_image["ImageId"], eu_subnet, eu_group) == "DryRunOperation"
    # authorization is answered first: the unknown subnet stays hidden from a role without the permission
    assert dry_run(use1, base_image, "subnet-0123456789abcdef0", group) == "UnauthorizedOperation"
    assert dry_run(use1, base_image, subnet, group) == "DryRunOperation"


def test_a_launch_without_dry_run_is_untouched(use1, base_image):
    subnet, group = network(use1)
    sim(use1.meta.endpoint_url, "/_sim/faults", {"dry_run_denied": "RunInstances"})
    out = use1.run_instances(ImageId=base_image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet, "Groups": [group]}])
    assert out["Instances"][0]["InstanceId"].startswith("i-")
