"""Capacity (issue 14): a builder or test instance EC2 has no capacity for is launched in the recipe's fallback
subnets / instance types; without fallbacks the run fails with AmiPipeline.NoCapacity, naming what was tried, and
leaves nothing behind. The emulator's `no_capacity` fault (moto_ext/ec2_faults.py) refuses RunInstances per subnet /
Availability Zone and type with InsufficientInstanceCapacity (HTTP 500) until cleared."""

from __future__ import annotations

import json

from conftest import TAG_EXECUTION, explain, launched, leftovers, release, tags, task_calls


def zones(stack) -> tuple[str, str, str]:
    """(the seeded recipe's subnet, its Availability Zone, a default subnet of the same VPC in another zone)."""
    recipe = stack.recipe("x")
    primary = recipe["build"]["subnet_id"]
    subnets = stack.boto3("ec2").describe_subnets()["Subnets"]
    mine = next(s for s in subnets if s["SubnetId"] == primary)
    other = next(s["SubnetId"] for s in subnets
                 if s["VpcId"] == mine["VpcId"] and s["AvailabilityZone"] != mine["AvailabilityZone"])
    return primary, mine["AvailabilityZone"], other


def instances_of(stack, execution: str) -> dict[str, dict]:
    flt = [{"Name": f"tag:{TAG_EXECUTION}", "Values": [execution]}]
    return {tags(i)["ami-pipeline:role"]: i for r in stack.boto3("ec2").describe_instances(Filters=flt)["Reservations"]
            for i in r["Instances"]}


def run_instances(calls: dict) -> list[dict]:
    return [c for c in calls["calls"] if c["action"] == "RunInstances"]


def test_no_capacity_in_the_first_zone_launches_builder_and_test_instance_in_the_fallback_subnet(stack):
    primary, zone, other = zones(stack)
    recipe = stack.recipe("cap-fallback", **{
        "build.fallback_subnet_ids": [other], "build.fallback_instance_types": ["m5.large"],
        "test.fallback_subnet_ids": [other]})
    stack.sim("POST", "reset")
    stack.sim("POST", "faults", {"no_capacity": {"availability_zone": zone, "instance_type": "t3.small"}})
    try:
        out, detail = release(stack, "cap-fallback", "1.0.0", recipe)
        calls = stack.sim("GET", "calls")
    finally:
        stack.sim("POST", "reset")
    assert detail["status"] == "SUCCEEDED", explain(detail)
    execution = out["execution_name"]
    made = instances_of(stack, execution)
    # the same type in the other zone comes before another type (placements keep the type across subnets first)
    for role in ("builder", "test-instance"):
        assert made[role]["SubnetId"] == other, (role, made[role]["SubnetId"])
        assert made[role]["InstanceType"] == "t3.small", (role, made[role]["InstanceType"])
    assert launched(stack, execution) == {"builder": 1, "test-instance": 1}
    refused = [c for c in run_instances(calls) if c["status"] == 500]
    assert refused, "the first zone was tried first"
    # one ClientToken per placement: the refused attempts in the first zone and the launch in the fallback differ
    logged = [json.loads(line) for line in stack.request_log.read_text().splitlines() if line.strip()]
    mine = [r for r in logged if r["action"] == "RunInstances" and execution in json.dumps(r["params"])]
    by_subnet: dict[str, set[str]] = {}
    for r in mine:
        by_subnet.setdefault(r["params"].get("NetworkInterface.1.SubnetId"), set()).add(r["params"]["ClientToken"])
    assert set(by_subnet) == {primary, other}, by_subnet
    assert not by_subnet[primary] & by_subnet[other], by_subnet
    assert len(by_subnet[other]) == 2, "builder and test instance, one token each"
    assert not leftovers(stack, execution).get("instances"), "both instances terminated"


def test_without_fallbacks_no_capacity_fails_naming_what_was_tried_and_leaves_nothing(stack):
    primary, _, _ = zones(stack)
    recipe = stack.recipe("cap-none")
    stack.sim("POST", "reset")
    stack.sim("POST", "faults", {"no_capacity": {"subnet_id": primary, "instance_type": "t3.small"}})
    try:
        out, detail = release(stack, "cap-none", "1.0.0", recipe, timeout=240)
        calls = stack.sim("GET", "calls")
    finally:
        stack.sim("POST", "reset")
    assert detail["status"] == "FAILED", explain(detail)
    assert detail["error"] == "AmiPipeline.NoCapacity", explain(detail)
    assert f"t3.small in {primary}: InsufficientInstanceCapacity" in (detail.get("cause") or ""), detail.get("cause")
    # retried with back-off (capacity comes back within minutes), then given up; Cleanup ran
    starts = task_calls(detail, "Build Start")
    assert len(starts) > 1 and all(t["error"] == "AmiPipeline.NoCapacity" for t in starts), explain(detail)
    assert task_calls(detail, "Cleanup"), explain(detail)
    execution = out["execution_name"]
    assert launched(stack, execution) == {}
    assert leftovers(stack, execution) == {}
    assert run_instances(calls) and all(c["status"] != 200 for c in run_instances(calls))
