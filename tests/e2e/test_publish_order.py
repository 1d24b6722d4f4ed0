"""Issue 14 item 5: publish never goes backwards. Releases published out of order leave the SSM parameter (in every
region) and the launch template's default version at the newer release; the older one reports them skipped; a
release event with `"force": true` moves them back (a rollback)."""

from __future__ import annotations

import pytest

import local
from conftest import REGIONS, explain, trigger

PIPELINE = "pub-order"
PARAM = "/images/pub-order/latest"
TEMPLATE = "pub-order-servers"


@pytest.fixture(scope="module")
def recipe(stack):
    ec2 = stack.boto3("ec2")
    try:
        ec2.create_launch_template(
            LaunchTemplateName=TEMPLATE,
            LaunchTemplateData={"ImageId": stack.seed["base_image_id"], "InstanceType": "t3.small"},
            TagSpecifications=[{"ResourceType": "launch-template",
                                "Tags": [{"Key": "ami-pipeline:publish", "Value": "true"}]}])
    except Exception as e:  # noqa: BLE001 - a stack reused across runs
        if "AlreadyExists" not in str(e):
            raise
    r = stack.recipe(PIPELINE, publish={"ssm_parameters": [PARAM], "launch_templates": [{"id_or_name": TEMPLATE}]})
    stack.put_recipe(r)
    return r


def run(stack, version: str, force: bool = False) -> dict:
    event = local.release_event(PIPELINE, version)
    if force:
        event["detail"]["force"] = True
    ok, out = trigger(stack, event)
    assert ok and out["status"] == "started", out
    detail = stack.wait_for(out["execution_name"], 180)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    return detail


def pointers(stack) -> dict[str, str]:
    """The image each pointer holds: the parameter per region, and the template's default version."""
    out = {r: stack.boto3("ssm", r).get_parameter(Name=PARAM)["Parameter"]["Value"] for r in REGIONS}
    lt = stack.boto3("ec2").describe_launch_template_versions(LaunchTemplateName=TEMPLATE, Versions=["$Default"])
    out["template"] = lt["LaunchTemplateVersions"][0]["LaunchTemplateData"]["ImageId"]
    return out


def images(detail: dict) -> dict[str, str]:
    ids = {i["region"]: i["image_id"] for i in detail["output"]["images"]}
    return {**ids, "template": ids[local.REGION]}


def test_out_of_order_publishes_leave_the_pointers_at_the_newer_release(stack, recipe):
    stack.sim("POST", "reset")
    newer = run(stack, "2.1.0")
    assert pointers(stack) == images(newer)

    # 2.0.0 finishes after 2.1.0: its images are released, but nothing points back at them
    older = run(stack, "2.0.0")
    assert pointers(stack) == images(newer), "a pointer went back to the older release"
    published = older["output"]["published"]["regions"]
    assert [r["region"] for r in published] == REGIONS
    for r in published:
        p = r["parameters"][0]
        assert not p["changed"] and p["skipped"]["image_id"] == images(newer)[r["region"]], r
        assert p["skipped"]["release"] == "2.1.0", r
    lt = published[0]["launch_templates"][0]
    assert not lt["changed"] and lt["skipped"]["release"] == "2.1.0", lt
    # no launch template version was made for the older release
    versions = stack.boto3("ec2").describe_launch_template_versions(LaunchTemplateName=TEMPLATE)
    launched = {v["LaunchTemplateData"].get("ImageId") for v in versions["LaunchTemplateVersions"]}
    assert images(older)[local.REGION] not in launched, launched

    # a rollback says so: "force": true moves every pointer back to 1.9.0
    rollback = run(stack, "1.9.0", force=True)
    assert pointers(stack) == images(rollback)
    assert all(r["parameters"][0]["changed"] for r in rollback["output"]["published"]["regions"])
