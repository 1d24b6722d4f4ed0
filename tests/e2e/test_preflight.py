"""The trigger's preflight (functions/trigger/src/preflight.rs): before anything is built, every problem of every
region in one error; and the preflight mode (`make preflight`), which starts nothing."""

from __future__ import annotations

import local
from conftest import REGIONS, mutating_calls, trigger

UNKNOWN_SUBNET = "subnet-0badbadbadbadbad0"


def instances(stack) -> int:
    return sum(len(r["Instances"]) for region in REGIONS
               for r in stack.boto3("ec2", region).describe_instances()["Reservations"])


def test_preflight_lists_a_missing_key_an_unknown_subnet_and_a_permission_fault_before_any_instance(stack):
    recipe = stack.recipe("web-preflight")
    recipe["distribution"]["kms_key_ids"]["eu-west-1"] = "alias/ami-pipeline-not-created"
    recipe["build"]["subnet_id"] = UNKNOWN_SUBNET
    stack.put_recipe(recipe)
    stack.sim("POST", "reset")
    # the role may not launch the builder (the emulator answers the DryRun UnauthorizedOperation)
    stack.sim("POST", "faults", {"dry_run_denied": "RunInstances", "region": local.REGION})
    before_instances, before = instances(stack), {e["name"] for e in stack.executions()}
    ok, out = trigger(stack, local.release_event("web-preflight", "1.0.0"))
    assert not ok and out["errorType"] == "AmiPipeline.InvalidInput", out
    message = out["errorMessage"]
    assert "3 problems" in message, message
    assert "[eu-west-1] recipe.distribution.kms_key_ids.eu-west-1" in message, message
    assert f"[{local.REGION}] recipe.build.subnet_id: subnet `{UNKNOWN_SUBNET}` does not exist" in message, message
    assert f"[{local.REGION}] recipe.build: the pipeline may not launch the builder" in message, message
    assert {e["name"] for e in stack.executions()} == before
    assert instances(stack) == before_instances
    assert mutating_calls(stack) == [], mutating_calls(stack)
    dry_runs = [c for c in stack.sim("GET", "calls")["calls"] if c["action"] == "RunInstances(DryRun)"]
    assert len(dry_runs) == 1 and dry_runs[0]["created"] == [], dry_runs


def test_preflight_mode_checks_the_stored_recipe_and_starts_nothing(stack):
    recipe = stack.recipe("web-preflight-ok")
    stack.put_recipe(recipe)
    stack.sim("POST", "reset")
    before_instances, before = instances(stack), {e["name"] for e in stack.executions()}
    ok, out = trigger(stack, {"preflight": True, "pipeline": "web-preflight-ok"})
    assert ok and out["status"] == "preflight-passed", out
    assert out["regions"] == [local.REGION, *local.TEST_REGIONS], out
    assert f"{local.REGION} RunInstances DryRun (builder)" in out["checked"], out
    assert {e["name"] for e in stack.executions()} == before
    assert instances(stack) == before_instances
    assert mutating_calls(stack) == []
