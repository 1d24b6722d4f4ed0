"""6. A malformed release event, an untrusted base image and a shared recipe without keys (or with keys that are not
customer managed and enabled) make no mutating call."""

from __future__ import annotations

import json

import pytest

import local
from conftest import mutating_calls, trigger


def test_malformed_release_event_makes_no_call(stack):
    stack.sim("POST", "reset")
    before = {e["name"] for e in stack.executions()}
    event = json.loads((local.ROOT / "infra" / "events" / "release-malformed.json").read_text())
    ok, out = trigger(stack, event)
    assert not ok and out["errorType"] == "AmiPipeline.InvalidInput", out
    assert "event.detail.version" in out["errorMessage"], out
    assert {e["name"] for e in stack.executions()} == before
    assert stack.sim("GET", "calls")["calls"] == []


def test_untrusted_base_image_makes_no_mutating_call(stack):
    recipe = stack.recipe("web-untrusted")
    recipe["source"]["image"]["owners"] = ["999988887777"]  # not moto's amazon account
    stack.put_recipe(recipe)
    stack.sim("POST", "reset")
    before = {e["name"] for e in stack.executions()}
    # refused by the trigger's preflight, under the base image's own error name: nothing started, nothing launched
    ok, out = trigger(stack, local.release_event("web-untrusted", "1.0.0"))
    assert not ok and out["errorType"] == "AmiPipeline.SourceNotTrusted", out
    assert {e["name"] for e in stack.executions()} == before
    assert mutating_calls(stack) == [], mutating_calls(stack)


def test_shared_recipe_without_a_key_for_a_copy_region_is_refused_before_any_call(stack):
    """Snapshots encrypted with the default EBS key cannot be shared with other accounts (ModifySnapshotAttribute
    API reference): a recipe that shares but names no customer-managed key for a copy region would fail at share,
    after the build, test and copies. The trigger refuses it first, naming the field."""
    recipe = stack.recipe("web-nokey")
    assert recipe["distribution"]["accounts"], "the example recipe shares with accounts"
    recipe["distribution"]["kms_key_ids"].pop("ap-southeast-2")
    stack.put_recipe(recipe)
    stack.sim("POST", "reset")
    before = {e["name"] for e in stack.executions()}
    ok, out = trigger(stack, local.release_event("web-nokey", "1.0.0"))
    assert not ok and out["errorType"] == "AmiPipeline.InvalidInput", out
    assert "recipe.distribution.kms_key_ids" in out["errorMessage"] and "ap-southeast-2" in out["errorMessage"], out
    assert {e["name"] for e in stack.executions()} == before
    assert stack.sim("GET", "calls")["calls"] == []


def key_describes(stack) -> int:
    """KMS DescribeKey requests the trigger made so far (the emulators' action log)."""
    lines = stack.action_log.read_text().splitlines() if stack.action_log and stack.action_log.exists() else []
    return sum(1 for line in lines if line.strip() and (r := json.loads(line))["service"] == "kms"
               and r["action"] == "DescribeKey" and "app/ami-trigger" in r.get("agent", ""))


@pytest.mark.parametrize("kind", ["disabled", "aws-managed"])
def test_shared_recipe_with_a_key_that_cannot_be_shared_is_refused_before_any_mutating_call(stack, kind):
    """The trigger describes each key in its region (KMS DescribeKey) before anything is built: a disabled key, or
    the AWS managed aws/ebs key named by its ARN (which the recipe's validation cannot recognise by name), is
    refused naming the field; the emulator's KMS reports aws/ebs as KeyManager AWS, as AWS does."""
    kms = stack.boto3("kms", "eu-west-1")
    if kind == "disabled":
        key = kms.create_key(Description="disabled for the e2e")["KeyMetadata"]
        kms.disable_key(KeyId=key["KeyId"])
        named, expected = key["Arn"], "Disabled"
    else:
        named, expected = kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"], "AWS managed"
    recipe = stack.recipe(f"web-key-{kind}")
    assert recipe["distribution"]["accounts"], "the example recipe shares with accounts"
    recipe["distribution"]["kms_key_ids"]["eu-west-1"] = named
    stack.put_recipe(recipe)
    stack.sim("POST", "reset")
    before, described = {e["name"] for e in stack.executions()}, key_describes(stack)
    ok, out = trigger(stack, local.release_event(recipe["name"], "1.0.0"))
    assert not ok and out["errorType"] == "AmiPipeline.InvalidInput", out
    assert "recipe.distribution.kms_key_ids.eu-west-1" in out["errorMessage"], out
    assert expected in out["errorMessage"], out
    assert key_describes(stack) > described, "the trigger did not ask KMS"
    assert {e["name"] for e in stack.executions()} == before
    # nothing made: the preflight's look-ups are read-only and its launch a DryRun
    assert mutating_calls(stack) == [], mutating_calls(stack)
