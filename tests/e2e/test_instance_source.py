"""The other source: a recipe that snapshots a hand-kept instance skips the build (the `Source?` Choice), stops the
instance first when asked, and never terminates it."""

from __future__ import annotations

from conftest import REGIONS, explain, release, task_calls


def test_instance_source_skips_the_build_and_keeps_the_instance(stack):
    ec2 = stack.boto3("ec2")
    seed = stack.seed
    # opted in as infra/DEPLOY.md asks: the snapshot and register roles act only on an instance tagged so (the IAM
    # simulation, tests/e2e/test_iam.py, found that this instance lacked it)
    opt_in = [{"ResourceType": "instance", "Tags": [{"Key": "ami-pipeline:source-instance", "Value": "true"}]}]
    instance_id = ec2.run_instances(ImageId=seed["base_image_id"], InstanceType="t3.small", MinCount=1, MaxCount=1,
                                    SubnetId=seed["subnet_id"], TagSpecifications=opt_in)["Instances"][0]["InstanceId"]
    recipe = stack.recipe("web-instance")
    recipe.pop("build")
    recipe["source"] = {"instance": {"id": instance_id, "stop_first": True}}

    out, detail = release(stack, "web-instance", "1.0.0", recipe)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    assert not task_calls(detail, "Build Start"), explain(detail)
    result = detail["output"]
    assert result["source_image_id"] == seed["base_image_id"]
    assert [i["region"] for i in result["images"]] == REGIONS
    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "stopped", state
