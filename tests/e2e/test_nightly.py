"""Issue 21 item 6: the stack's one nightly schedule refreshes every stored recipe (functions/trigger/src/nightly.rs).

Three recipes are stored: one whose newest image was built from an older base image (a run starts and succeeds),
one built from the current base (unchanged: nothing starts), and a broken one (refused, naming its field, without
stopping the others). The trigger is invoked with the input of the template's NightlySchedule. The refresh lists
every recipe under the prefix, so the other tests' recipes are set aside while it runs and put back afterwards.
And item 4: a schedule naming a pipeline without a recipe is a skip, not an error."""

from __future__ import annotations

import contextlib
import json

from local import cfn

from conftest import explain, images_of, release, trigger

import local

TEMPLATE = cfn.load_template()
RECIPE_PREFIX = TEMPLATE["Parameters"]["RecipePrefix"]["Default"]
SCHEDULED_TIME = "2026-11-27T03:00:00Z"
DAY = "20261127"
SOURCE_IMAGE_TAG = json.loads((local.ROOT / "infra" / "contract.json").read_text())["tags"]["source_image"]


def schedule_input() -> dict:
    """What the template's NightlySchedule sends the trigger, Scheduler's placeholder filled in."""
    text = TEMPLATE["Resources"]["NightlySchedule"]["Properties"]["Target"]["Input"]
    return json.loads(text.replace("<aws.scheduler.scheduled-time>", SCHEDULED_TIME))


@contextlib.contextmanager
def only_these_recipes(stack, names: set[str]):
    """Every other recipe under the prefix set aside (deleted) for the block, then stored again as it was."""
    ssm = stack.boto3("ssm")
    others = []
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=RECIPE_PREFIX, Recursive=False):
        others += [p for p in page["Parameters"] if p["Name"].rsplit("/", 1)[1] not in names]
    for p in others:
        ssm.delete_parameter(Name=p["Name"])
    try:
        yield
    finally:
        for p in others:
            ssm.put_parameter(Name=p["Name"], Value=p["Value"], Type=p["Type"], Overwrite=True)


def names(entries: list[dict]) -> list[str]:
    return [e["pipeline"] for e in entries]


def test_the_nightly_schedule_starts_the_changed_pipeline_skips_the_unchanged_and_refuses_the_broken(stack):
    changed, unchanged, broken = "nightly-changed", "nightly-unchanged", "nightly-broken"
    for name in (changed, unchanged):
        _, detail = release(stack, name, "2.0.0", stack.recipe(name))
        assert detail["status"] == "SUCCEEDED", explain(detail)
    # A newer base image since `changed` was built: its released image now records an older one as its source.
    (image,) = images_of(stack, changed, local.REGION)
    stack.boto3("ec2").create_tags(Resources=[image["ImageId"]],
                                   Tags=[{"Key": SOURCE_IMAGE_TAG, "Value": "ami-0000000000000001a"}])
    stack.put_recipe(stack.recipe(broken, **{"retention.keep": 0}))

    with only_these_recipes(stack, {changed, unchanged, broken}):
        ok, out = trigger(stack, schedule_input())
        assert ok, out
        assert out["day"] == DAY, out
        assert names(out["started"]) == [changed], out
        assert out["started"][0]["execution_name"] == f"{changed}-s-{DAY}", out
        assert out["started"][0]["version"] == "2.0.0", out
        assert names(out["unchanged"]) == [unchanged], out
        assert "unchanged" in out["unchanged"][0]["reason"], out
        assert [(r["pipeline"], r["error"]) for r in out["refused"]] == [(broken, "AmiPipeline.InvalidInput")], out
        assert "recipe.retention.keep" in out["refused"][0]["reason"], out
        assert out["duplicate"] == [] and out["opted_out"] == [], out

        # Scheduler delivers at least once: the same day again starts nothing new.
        ok, again = trigger(stack, schedule_input())
        assert ok, again
        assert names(again["started"]) == [] and names(again["duplicate"]) == [changed], again
        assert names(again["unchanged"]) == [unchanged], again

    detail = stack.wait_for(out["started"][0]["execution_name"])
    assert detail["status"] == "SUCCEEDED", explain(detail)


def test_a_schedule_for_a_pipeline_without_a_recipe_is_a_skip_not_an_error(stack):
    ok, out = trigger(stack, {"pipeline": "nightly-never-stored", "scheduled_time": SCHEDULED_TIME})
    assert ok, out
    assert out["status"] == "skipped", out
    assert "no recipe for pipeline `nightly-never-stored`" in out["reason"], out
    # a release for it still fails, naming where the recipe belongs
    ok, err = trigger(stack, local.release_event("nightly-never-stored", "1.0.0"))
    assert not ok and err["errorType"] == "AmiPipeline.RecipeNotFound", err
