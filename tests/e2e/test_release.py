"""1. A release event produces a tested, shared, published image in three regions, tagged with pipeline, release and
source; the output lists them. 2. The same release event three times gives one execution and one image per region."""

from __future__ import annotations

import concurrent.futures

import pytest

import local
from conftest import (NOT_READY, REGIONS, errors_besides_polls, explain, images_of, launched, leftovers, release,
                      tags, task_calls, trigger, wait_until)

VERSION = "1.4.0"


@pytest.fixture(scope="module")
def web_release(stack):
    """The demo's pipeline `web`, released once; shared by the tests of this module."""
    stack.sim("POST", "reset")
    out, detail = release(stack, "web", VERSION)
    calls = stack.sim("GET", "calls")
    return out, detail, calls


def test_release_builds_tests_shares_and_publishes_in_three_regions(stack, web_release):
    out, detail, calls = web_release
    assert detail["status"] == "SUCCEEDED", explain(detail)
    result = detail["output"]
    base = stack.seed["base_image_id"]
    recipe = stack.seed["recipe"]

    # the output lists the image per region (home region first), the source image, the release and the test time
    assert result["pipeline"] == "web"
    assert result["release"]["version"] == VERSION
    assert result["source_image_id"] == base
    assert [i["region"] for i in result["images"]] == REGIONS
    assert isinstance(result["boot_to_ready_seconds"], int), result
    image_ids = {i["region"]: i["image_id"] for i in result["images"]}
    assert len(set(image_ids.values())) == 3, image_ids

    for region, image_id in image_ids.items():
        ec2 = stack.boto3("ec2", region)
        image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        t = tags(image)
        assert image["State"] == "available", (region, image)
        assert image["Name"] == result["images"][0]["name"], (region, image["Name"])
        # tagged with pipeline, release, source; handed over (published)
        assert t.get("ami-pipeline:pipeline") == "web", (region, t)
        assert t.get("ami-pipeline:release") == VERSION, (region, t)
        assert t.get("ami-pipeline:source-image") == base, (region, t)
        assert t.get("ami-pipeline:execution") == out["execution_name"], (region, t)
        assert t.get("ami-pipeline:state") == "released", (region, t)
        # shared with the recipe's accounts, in every region
        perms = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")["LaunchPermissions"]
        assert {p.get("UserId") for p in perms} >= set(recipe["distribution"]["accounts"]), (region, perms)
        # published: the recipe's SSM parameter points at this region's image
        for name in recipe["publish"]["ssm_parameters"]:
            value = stack.boto3("ssm", region).get_parameter(Name=name)["Parameter"]["Value"]
            assert value == image_id, (region, name, value)

    # tested: the home image records how long the test instance took to pass; the test instance is gone
    home = stack.boto3("ec2").describe_images(ImageIds=[image_ids[local.REGION]])["Images"][0]
    assert tags(home).get("ami-pipeline:boot-to-ready-seconds") == str(result["boot_to_ready_seconds"])
    test_state = [t for t in detail["tasks"] if t["state"] == "Test Finish"]
    assert test_state and not test_state[0]["error"], explain(detail)

    # published: the launch template's default version launches the new image
    lt = stack.boto3("ec2").describe_launch_template_versions(LaunchTemplateName="web-servers",
                                                              Versions=["$Default"])
    assert lt["LaunchTemplateVersions"][0]["LaunchTemplateData"]["ImageId"] == image_ids[local.REGION]

    # the copies to every region started in one call and were polled in one loop, the home region's "copy" being
    # the tested image itself: one CopyImage into each other region; one Share call for every region
    assert len(task_calls(detail, "Copy Start")) == 1, explain(detail)
    assert len(task_calls(detail, "Share")) == 1, explain(detail)
    polls = task_calls(detail, "Copy Status")
    assert polls and polls[-1]["error"] is None and {p["error"] for p in polls[:-1]} <= {NOT_READY}, explain(detail)
    copied = sorted(c["region"] for c in calls["calls"] if c["action"] == "CopyImage")
    assert copied == sorted(r for r in REGIONS if r != local.REGION), calls["counts"]


def test_release_leaves_no_instance_and_only_the_published_images(stack, web_release):
    """After a success only the published images (and their snapshots) remain: no builder, no test instance."""
    out, detail, _ = web_release
    assert detail["status"] == "SUCCEEDED", explain(detail)
    found = leftovers(stack, out["execution_name"])
    assert len(found.get("images", [])) == 3, found
    assert "instances" not in found, found


def test_release_makes_few_calls(stack, web_release):
    """A sanity bound on the work one release takes locally (moto's resources turn ready after 2 polls)."""
    _, detail, calls = web_release
    assert detail["status"] == "SUCCEEDED", explain(detail)
    assert len(detail["tasks"]) < 60, explain(detail)
    assert len(calls["calls"]) < 400, calls["counts"]
    # no error but the status Tasks' NotReady (each a poll, retried by the state machine)
    assert not errors_besides_polls(detail), explain(detail)


def test_same_release_three_times_gives_one_execution_and_one_image_per_region(stack):
    recipe = stack.recipe("web-dup")
    stack.put_recipe(recipe)
    event = local.release_event("web-dup", "2.0.0")

    # three deliveries at once
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: trigger(stack, event), range(3)))
    assert all(ok for ok, _ in results), results
    names = {out["execution_name"] for _, out in results}
    assert len(names) == 1, results
    name = names.pop()
    assert all(out["status"] in ("started", "duplicate") for _, out in results), results
    assert any(out["status"] == "started" for _, out in results), results

    detail = stack.wait_for(name, 180)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    # StartExecution with the same name and input while the execution runs is that execution (AWS semantics)
    assert [r["result"] for r in detail["startRequests"]].count("created") == 1, detail["startRequests"]
    assert len(detail["startRequests"]) == 3, detail["startRequests"]

    # a fourth delivery after the end: a duplicate, nothing started
    ok, out = trigger(stack, event)
    assert ok and out["status"] == "duplicate" and out["execution_name"] == name, out
    ours = [e for e in stack.executions() if e["name"].startswith("web-dup-")]
    assert [e["name"] for e in ours] == [name], ours
    assert stack.execution(name)["startRequests"][-1]["result"] == "ExecutionAlreadyExists"

    for region in REGIONS:
        images = wait_until(lambda: images_of(stack, "web-dup", region), 2)
        assert len(images) == 1, (region, [i["ImageId"] for i in images])
    # one builder and one test instance were launched, however many deliveries
    assert launched(stack, name) == {"builder": 1, "test-instance": 1}
