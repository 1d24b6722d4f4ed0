"""Reruns (issue 14, items 1 and 2): a release whose execution failed is rerun by sending the same event again, under
the next attempt's name (`<name>-a2`); a run that failed after its image passed the test keeps the tested image and
the copies that succeeded, and the rerun adopts them: no builder, no test instance, one copy (the failed region's).
A running or succeeded release stays a duplicate. Each test works on its own pipeline."""

from __future__ import annotations

import concurrent.futures
import time

import local
from conftest import REGIONS, explain, images_of, launched, leftovers, tags, task_calls, trigger, wait_until

HOME = local.REGION
FAILING = "ap-southeast-2"
STATE = "ami-pipeline:state"
RECIPE_HASH = "ami-pipeline:recipe-hash"
EXECUTION = "ami-pipeline:execution"


def send(stack, event: dict) -> dict:
    ok, out = trigger(stack, event)
    assert ok, out
    return out


def test_a_release_failed_on_a_fault_is_rerun_by_sending_it_again_and_succeeds(stack):
    pipeline = "web-rerun-fault"
    stack.put_recipe(stack.recipe(pipeline))
    event = local.release_event(pipeline, "1.0.0")
    # the builder is terminated by someone else: a failure before the test, so nothing is kept
    stack.sim("POST", "faults", {"terminate_instance": "builder"})
    try:
        first = send(stack, event)
        assert first["status"] == "started", first
        failed = stack.wait_for(first["execution_name"], 180)
    finally:
        stack.sim("POST", "reset")
    assert failed["status"] == "FAILED" and failed["error"] == "AmiPipeline.ResourceGone", explain(failed)
    assert not leftovers(stack, first["execution_name"])

    rerun = send(stack, event)
    assert rerun["status"] == "rerun", rerun
    assert rerun["execution_name"] == f"{first['execution_name']}-a2", rerun
    assert "nothing kept" in rerun["reason"], rerun
    detail = stack.wait_for(rerun["execution_name"], 180)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    # a full run: built and tested again
    assert task_calls(detail, "Build Start") and task_calls(detail, "Test Start"), explain(detail)
    for image in detail["output"]["images"]:
        t = tags(stack.boto3("ec2", image["region"]).describe_images(ImageIds=[image["image_id"]])["Images"][0])
        assert t[STATE] == "released" and t[EXECUTION] == rerun["execution_name"], (image, t)

    # the succeeded rerun is now the release's execution: the same event again is a duplicate of it
    again = send(stack, event)
    assert again["status"] == "duplicate", again
    assert again["execution_name"] == rerun["execution_name"], again
    names = [e["name"] for e in stack.executions() if e["name"].startswith(first["execution_name"])]
    assert sorted(names) == sorted([first["execution_name"], rerun["execution_name"]]), names


def test_a_copy_failure_in_one_region_is_rerun_with_no_builder_no_test_and_one_copy(stack):
    pipeline = "web-rerun-copy"
    stack.put_recipe(stack.recipe(pipeline))
    event = local.release_event(pipeline, "1.0.0")
    stack.sim("POST", "faults", {"fail_copy_region": FAILING})
    try:
        first = send(stack, event)
        failed = stack.wait_for(first["execution_name"], 180)
    finally:
        stack.sim("POST", "reset")  # also clears the call log: what follows is the rerun's alone
    assert failed["status"] == "FAILED" and failed["error"] == "AmiPipeline.ImageFailed", explain(failed)
    assert task_calls(failed, "Cleanup"), explain(failed)

    # kept: the tested image and the copy that succeeded, tagged `tested` with the recipe's hash, never `released`;
    # the failed copy and the instances are gone
    kept = {}
    for region in REGIONS:
        mine = [i for i in images_of(stack, pipeline, region) if tags(i).get(EXECUTION) == first["execution_name"]]
        if region == FAILING:
            assert not mine, mine
            continue
        assert len(mine) == 1 and mine[0]["State"] == "available", (region, mine)
        t = tags(mine[0])
        assert t[STATE] == "tested" and len(t.get(RECIPE_HASH, "")) == 64, (region, t)
        kept[region] = mine[0]["ImageId"]
    assert set(kept) == set(REGIONS) - {FAILING}
    assert "instances" not in leftovers(stack, first["execution_name"])

    # three deliveries of the rerun at once: one execution
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: send(stack, event), range(3)))
    assert {a["execution_name"] for a in answers} == {f"{first['execution_name']}-a2"}, answers
    assert {a["status"] for a in answers} <= {"rerun", "duplicate"} and "rerun" in [a["status"] for a in answers]
    assert kept[HOME] in next(a["reason"] for a in answers if a["status"] == "rerun"), answers
    name = answers[0]["execution_name"]
    detail = stack.wait_for(name, 180)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    assert not [e for e in stack.executions() if e["name"] == f"{first['execution_name']}-a3"]

    # the rerun adopted the tested image: no build, snapshot, register or test step ran
    for state in ("Build Start", "Snapshot Start", "Register Start", "Test Start"):
        assert not task_calls(detail, state), explain(detail)
    calls = stack.sim("GET", "calls")["calls"]
    run_instances = [c for c in calls if c["action"] == "RunInstances"]
    assert not run_instances, run_instances  # no builder, no test instance
    assert not launched(stack, name), launched(stack, name)
    copies = [c for c in calls if c["action"] == "CopyImage"]
    assert [(c["region"], len(c["created"])) for c in copies] == [(FAILING, 1)], copies
    new_copy = copies[0]["created"][0]

    # the output: the kept images where they were kept, the new copy where the first copy failed; all released
    images = {i["region"]: i["image_id"] for i in detail["output"]["images"]}
    assert images == {**kept, FAILING: new_copy}, images
    assert detail["output"]["source_image_id"] == stack.seed["base_image_id"], detail["output"]
    assert isinstance(detail["output"]["boot_to_ready_seconds"], int), detail["output"]
    for region, image_id in images.items():
        image = stack.boto3("ec2", region).describe_images(ImageIds=[image_id])["Images"][0]
        assert tags(image)[STATE] == "released", (region, tags(image))
    # nothing of either attempt is left unreleased
    for execution in (first["execution_name"], name):
        for region in REGIONS:
            left = [i for i in images_of(stack, pipeline, region)
                    if tags(i).get(EXECUTION) == execution and tags(i).get(STATE) != "released"]
            assert not left, (execution, region, left)


def test_a_running_or_succeeded_release_stays_a_duplicate(stack):
    pipeline = "web-rerun-dup"
    stack.put_recipe(stack.recipe(pipeline))
    event = local.release_event(pipeline, "1.0.0")
    first = send(stack, event)
    assert first["status"] == "started", first
    # a run takes a few seconds locally: the same event a moment later finds it running (StartExecution succeeds
    # with the original response, whose start date tells the trigger it did not start it: over 1 s before its call)
    time.sleep(1.5)
    assert stack.execution(first["execution_name"])["status"] == "RUNNING"
    running = send(stack, event)
    assert running["status"] == "duplicate", running
    assert "RUNNING" in running["reason"], running
    assert running["execution_name"] == first["execution_name"]
    detail = stack.wait_for(first["execution_name"], 180)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    succeeded = send(stack, event)
    assert succeeded["status"] == "duplicate", succeeded
    assert succeeded["execution_name"] == first["execution_name"]
    assert "SUCCEEDED" in succeeded["reason"], succeeded
    assert not wait_until(lambda: stack.execution(f"{first['execution_name']}-a2"), 1)
