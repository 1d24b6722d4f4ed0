"""The fault matrix: every mutating step x four faults, end to end on the local stack.

Faults (injected by the moto extension, tests/stack/README.md):
- throttle: a burst of RequestLimitExceeded longer than the SDK's 3 attempts (Step Functions retries the rest);
- 5xx: a burst of InternalError (HTTP 500) longer than the SDK's 3 attempts;
- lost: the call is performed but its answer is lost (HTTP 500), three times, so the step runs again and must adopt
  what the first call made;
- hard: the resource fails (builder or test instance terminated by someone else, snapshot `error`, image `failed`,
  copy `failed`) or, for steps that make no resource, the call is refused for good (UnauthorizedOperation).
  Retire runs after publish: its hard failure must not fail the published release, so that run succeeds with the
  error recorded under `warnings.retire` in its output (and the notification rule matches it).

Each run must either succeed with exactly one of each resource, or fail with the expected error name and leave nothing
of its execution behind: no instance running, and no image or snapshot that is not released (publish tags images
`released` before anything points at them; those are kept on purpose, with their snapshots). Duplicates are counted
from the ids the emulator saw created (a ClientToken replay names the same id again, so adopting is not a duplicate).
The table is printed at the end of the e2e run and written to the run's log folder as fault-matrix.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import local
from conftest import (REGIONS, errors_besides_polls, explain, launched, release, summary, tags, task_calls,
                      wait_until)

CONTRACT = json.loads((Path(__file__).resolve().parents[2] / "infra" / "contract.json").read_text())

# step -> (the mutating EC2 action its fault targets, extra selectors for that action's faults)
STEPS = {
    "build": ("RunInstances", {}),
    "snapshot": ("CreateSnapshots", {}),
    "register": ("RegisterImage", {}),
    "test-launch": ("RunInstances", {"skip": 1}),  # the builder's RunInstances goes through
    "copy": ("CopyImage", {"region": "eu-west-1"}),
    "share": ("ModifyImageAttribute", {}),
    "publish": ("CreateLaunchTemplateVersion", {}),
    "retire": ("DeregisterImage", {}),
}
BURST = 4  # more than the SDK's 3 attempts
DENIED = {"error": "UnauthorizedOperation", "status": 403, "count": 50}

# step -> (fault spec for a hard failure, the error the execution must end with)
HARD = {
    "build": ({"terminate_instance": "builder"}, "AmiPipeline.ResourceGone"),
    "snapshot": ({"snapshot_error": True}, "AmiPipeline.SnapshotFailed"),
    "register": ({"image_failed": True}, "AmiPipeline.ImageFailed"),
    "test-launch": ({"terminate_instance": "smoke"}, "AmiPipeline.ResourceGone"),
    "copy": ({"fail_copy_region": "eu-west-1"}, "AmiPipeline.ImageFailed"),
    "share": (dict(DENIED, action="ModifyImageAttribute"), "AmiPipeline.AwsError"),
    "publish": (dict(DENIED, action="CreateLaunchTemplateVersion"), "AmiPipeline.AwsError"),
    "retire": (dict(DENIED, action="DeregisterImage"), None),
}
# step -> the error a hard failure leaves as a warning in a SUCCEEDED run's output (steps after publish)
WARNED = {"retire": "AmiPipeline.AwsError"}
FAULTS = ["throttle", "5xx", "lost", "hard"]
VOLUMES = 2  # the test recipe's root and data volume

# (step, fault) -> result row; printed by conftest.pytest_terminal_summary
MATRIX: dict[tuple[str, str], dict] = {}


def fault_spec(step: str, fault: str) -> dict:
    action, selectors = STEPS[step]
    if fault == "throttle":
        return dict(selectors, action=action, throttle=BURST)
    if fault == "5xx":
        return dict(selectors, action=action, error="InternalError", count=BURST)
    if fault == "lost":
        return dict(selectors, lost_response=action, count=3)
    return HARD[step][0]


def pipeline_of(step: str, fault: str) -> str:
    # retire needs older releases of the same pipeline to retire: all its cases share one pipeline
    return "fm-retire" if step == "retire" else f"fm-{step}-{fault}"


@pytest.fixture(scope="module")
def retire_pipeline(stack):
    """fm-retire keeps one image besides the published one: from the third release on, each release retires one.
    (The image the SSM parameter and launch template point at is protected and takes no `keep` place.)"""
    recipe = stack.recipe("fm-retire", **{"retention.keep": 1})
    stack.sim("POST", "reset")
    for version in ("0.8.0", "0.9.0"):
        _, detail = release(stack, "fm-retire", version, recipe)
        assert detail["status"] == "SUCCEEDED", explain(detail)
    return recipe


def leaked(stack: local.Stack, execution: str) -> list[str]:
    """What the execution left that nothing uses: instances not terminated, images neither released nor kept for a
    rerun (`tested`: a failure after the test keeps the tested image and the available copies, ami_core::model::rerun),
    snapshots that back no such image."""
    flt = [{"Name": "tag:ami-pipeline:execution", "Values": [execution]}]
    found = []
    for region in REGIONS:
        ec2 = stack.boto3("ec2", region)
        for r in ec2.describe_instances(Filters=flt)["Reservations"]:
            for i in r["Instances"]:
                if i["State"]["Name"] not in ("terminated", "shutting-down"):
                    found.append(f"{region}:{i['InstanceId']} ({i['State']['Name']})")
        kept_snapshots = set()
        for img in ec2.describe_images(Owners=["self"], Filters=flt)["Images"]:
            if tags(img).get("ami-pipeline:state") in ("released", "tested") and img["State"] == "available":
                kept_snapshots |= {m["Ebs"]["SnapshotId"] for m in img.get("BlockDeviceMappings", [])
                                   if m.get("Ebs", {}).get("SnapshotId")}
            else:
                found.append(f"{region}:{img['ImageId']} ({img['State']})")
        for snap in ec2.describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"]:
            if snap["SnapshotId"] not in kept_snapshots:
                found.append(f"{region}:{snap['SnapshotId']} ({snap['State']})")
    return found


def duplicated(stack: local.Stack, execution: str, calls: list[dict]) -> list[str]:
    """Resources made more than once: from the ids the emulator saw created during this run."""
    made: dict[tuple[str, str], set[str]] = {}
    for c in calls:
        for rid in c.get("created", []):
            made.setdefault((c["region"], c["action"]), set()).add(rid)
    limit = {"CreateSnapshots": VOLUMES, "RegisterImage": 1, "CopyImage": 1, "CreateLaunchTemplateVersion": 1}
    dups = [f"{region}:{action} made {sorted(ids)}" for (region, action), ids in made.items()
            if action in limit and len(ids) > limit[action]]
    for role, n in launched(stack, execution).items():  # RunInstances: one builder, one test instance
        if n > 1:
            dups.append(f"{n} instances with role {role}")
    return dups


def run_faulted(stack, step: str, fault: str, pipeline: str, version: str, recipe: dict, faults: dict | None,
                expected_error: str | None) -> tuple[dict, dict, dict, str]:
    """One release with `faults` posted to the emulator, then its matrix row: (detail, calls, row, execution). The
    emulator is reset before and after, and the run's leftovers are given a moment to be cleaned up."""
    stack.sim("POST", "reset")
    if faults:
        stack.sim("POST", "faults", faults)
    try:
        out, detail = release(stack, pipeline, version, recipe, timeout=300)
        calls = stack.sim("GET", "calls")
    finally:
        stack.sim("POST", "reset")
    execution = out["execution_name"]
    wait_until(lambda: not leaked(stack, execution), 3)
    row = MATRIX[(step, fault)] = {
        "status": detail["status"], "error": detail.get("error"), "expected_error": expected_error,
        "faulted_calls": len([c for c in calls["calls"] if c["status"] != 200]),
        "leaked": leaked(stack, execution), "duplicated": duplicated(stack, execution, calls["calls"]),
        "retries": len(errors_besides_polls(detail)),  # a status Task's NotReady is a poll, not a retry
    }
    return detail, calls, row, execution


def assert_clean(row: dict, detail: dict):
    """Nothing made twice, nothing of the execution left behind."""
    assert not row["duplicated"], f"duplicated: {row['duplicated']}\n{explain(detail)}"
    assert not row["leaked"], f"left behind: {row['leaked']}\n{explain(detail)}"


def assert_failed_cleanly(detail: dict, expected_error: str):
    """Failed with the expected error, after Cleanup ran."""
    assert detail["status"] == "FAILED", explain(detail)
    assert detail["error"] == expected_error, explain(detail)
    assert task_calls(detail, "Cleanup"), explain(detail)


def assert_released_once(stack, detail: dict, execution: str):
    """Succeeded with exactly one image per region, one builder and one test instance."""
    assert detail["status"] == "SUCCEEDED", explain(detail)
    assert len(detail["output"]["images"]) == len(REGIONS), detail["output"]
    assert launched(stack, execution) == {"builder": 1, "test-instance": 1}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", list(STEPS))
def test_fault(stack, retire_pipeline, step, fault):
    pipeline = pipeline_of(step, fault)
    recipe = retire_pipeline if step == "retire" else stack.recipe(pipeline)
    version = f"1.{FAULTS.index(fault)}.0"
    expected_error = HARD[step][1] if fault == "hard" else None
    detail, calls, row, execution = run_faulted(stack, step, fault, pipeline, version, recipe,
                                                fault_spec(step, fault), expected_error)
    unused = calls["faults"]
    expected_warning = WARNED.get(step) if fault == "hard" else None
    warnings = (detail.get("output") or {}).get("warnings") if detail["status"] == "SUCCEEDED" else None
    row["warnings"] = warnings

    # the fault was met (a fault spec never used would make the case prove nothing)
    assert fault == "hard" or row["faulted_calls"], f"no call was faulted: {json.dumps(calls['counts'])}"
    # throttling and 5xx bursts are used up (the call had to get through); a lost answer may be adopted by a look-up
    # without calling again, which leaves the rest of its count unused
    assert not unused or fault in ("hard", "lost"), unused
    assert_clean(row, detail)
    if expected_error is None:
        assert_released_once(stack, detail, execution)
        released = [i for region in REGIONS for i in stack.boto3("ec2", region).describe_images(
            Owners=["self"], Filters=[{"Name": "tag:ami-pipeline:execution", "Values": [execution]}])["Images"]]
        assert len(released) == len(REGIONS), [i["ImageId"] for i in released]
        if expected_warning:
            # published and released everywhere, the error kept for the notification; no Cleanup ran
            assert warnings["retire"]["Error"] == expected_warning, detail["output"]
            assert warnings["notice"] == CONTRACT["warning_notice"], detail["output"]
            assert not task_calls(detail, "Cleanup"), explain(detail)
            assert [p["region"] for p in detail["output"]["images"]] == REGIONS, detail["output"]
        else:
            assert warnings == {}, detail["output"]
    else:
        assert_failed_cleanly(detail, expected_error)
    row["outcome"] = "succeeded" if detail["status"] == "SUCCEEDED" else "failed cleanly"
    if warnings:
        row["warned"] = sorted(k for k in warnings if k != "notice")


# Capacity, limits and eventual consistency (moto_ext/ec2_faults.py; issue 14): (step, fault) -> (the faults to
# post, recipe changes, the error the run must end with or None). `{primary}` / `{other}` stand for the recipe's
# subnet and a default subnet in another Availability Zone.
NEW_FAULTS = {
    ("build", "no capacity, fallback subnet"): (
        {"no_capacity": {"subnet_id": "{primary}", "instance_type": "t3.small"}},
        {"build.fallback_subnet_ids": ["{other}"], "test.fallback_subnet_ids": ["{other}"]}, None),
    ("build", "no capacity, no fallback"): (
        {"no_capacity": {"subnet_id": "{primary}", "instance_type": "t3.small"}}, {}, "AmiPipeline.NoCapacity"),
    ("test-launch", "unsupported, fallback type"): (
        {"no_capacity": {"subnet_id": "{primary}", "instance_type": "t3.medium"}, "code": "Unsupported"},
        {"test.instance_type": "t3.medium", "test.fallback_instance_types": ["m5.large"]}, None),
    ("build", "limit"): ({"action": "RunInstances", "error": "VcpuLimitExceeded", "count": 2}, {}, None),
    ("snapshot", "limit"): ({"snapshot_limit": 0, "count": 2}, {}, None),
    ("copy", "limit"): (
        {"action": "CopyImage", "error": "ResourceLimitExceeded", "count": 2, "region": "eu-west-1"}, {}, None),
    ("build", "consistency"): ({"invisible": "instance", "calls": 3}, {}, None),
    ("test-launch", "consistency"): ({"invisible": "instance", "calls": 3, "skip": 1}, {}, None),
    ("snapshot", "consistency"): ({"invisible": "snapshot", "calls": 2, "count": 2}, {}, None),
    ("snapshot", "lost + consistency"): (
        [{"lost_response": "CreateSnapshots"}, {"invisible": "snapshot", "calls": 1, "count": 2}], {}, None),
    ("register", "lost + consistency"): (
        [{"lost_response": "RegisterImage"}, {"invisible": "image", "calls": 2}], {}, None),
}


def placeholders(stack: local.Stack, recipe: dict) -> dict[str, str]:
    """The recipe's subnet and a default subnet of the same VPC in another Availability Zone."""
    ec2 = stack.boto3("ec2")
    primary = recipe["build"]["subnet_id"]
    subnets = ec2.describe_subnets()["Subnets"]
    zone = next(s["AvailabilityZone"] for s in subnets if s["SubnetId"] == primary)
    vpc = next(s["VpcId"] for s in subnets if s["SubnetId"] == primary)
    other = next(s["SubnetId"] for s in subnets if s["VpcId"] == vpc and s["AvailabilityZone"] != zone)
    return {"{primary}": primary, "{other}": other}


def filled(value, names: dict[str, str]):
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, list):
        return [filled(v, names) for v in value]
    if isinstance(value, dict):
        return {k: filled(v, names) for k, v in value.items()}
    return value


@pytest.mark.parametrize("step,fault", list(NEW_FAULTS), ids=[f"{s}-{f}" for s, f in NEW_FAULTS])
def test_capacity_limit_and_consistency_fault(stack, step, fault):
    specs, changes, expected_error = NEW_FAULTS[(step, fault)]
    slug = "".join(c if c.isalnum() else "-" for c in fault.lower()).replace("--", "-").strip("-")
    pipeline = f"fm-{step}-{slug}"[:40].rstrip("-")
    recipe = stack.recipe(pipeline)
    names = placeholders(stack, recipe)
    recipe = stack.recipe(pipeline, **filled(changes, names))
    detail, calls, row, execution = run_faulted(stack, step, fault, pipeline, "1.0.0", recipe, filled(specs, names),
                                                expected_error)
    assert row["faulted_calls"], f"no call was faulted: {json.dumps(calls['counts'])}"
    assert not calls["faults"], calls["faults"]  # error bursts used up
    assert_clean(row, detail)
    if expected_error is None:
        assert_released_once(stack, detail, execution)
    else:
        assert_failed_cleanly(detail, expected_error)
        assert launched(stack, execution) == {}, "nothing was launched"
    row["outcome"] = "succeeded" if detail["status"] == "SUCCEEDED" else "failed cleanly"


def write_matrix(log_dir) -> dict:
    """Totals per fault and the rows, as printed; also saved as fault-matrix.json in the run's log folder."""
    totals = {f: {"tried": 0, "succeeded": 0, "failed cleanly": 0, "leaked": 0, "duplicated": 0} for f in FAULTS}
    for (step, fault), row in MATRIX.items():
        t = totals.setdefault(fault, {"tried": 0, "succeeded": 0, "failed cleanly": 0, "leaked": 0, "duplicated": 0})
        t["tried"] += 1
        t["succeeded"] += row.get("outcome") == "succeeded"
        t["failed cleanly"] += row.get("outcome") == "failed cleanly"
        t["leaked"] += len(row["leaked"])
        t["duplicated"] += len(row["duplicated"])
    data = {"totals": totals, "rows": [dict(step=s, fault=f, **r) for (s, f), r in MATRIX.items()]}
    if log_dir:
        (log_dir / "fault-matrix.json").write_text(json.dumps(data, indent=2))
    return data


@summary
def print_matrix(tr):
    if not MATRIX:
        return
    data = write_matrix(getattr(_STACK, "log_dir", None))
    tr.section("fault matrix (outcome per mutating step and fault; leaked and duplicated must be 0)")
    tr.write_line(f"{'step':<12}" + "".join(f"{f:<28}" for f in FAULTS))
    for step in STEPS:
        cells = []
        for fault in FAULTS:
            row = MATRIX.get((step, fault))
            if row is None:
                cells.append("not run")
                continue
            outcome = row.get("outcome") or f"FAILED TEST ({row['status']} {row['error'] or ''})"
            if outcome == "failed cleanly":
                outcome = row["error"].removeprefix("AmiPipeline.")
            elif row.get("warned"):
                outcome = "succeeded, warned"
            bad = len(row["leaked"]) + len(row["duplicated"])
            cells.append(f"{outcome}{' LEAK/DUP ' + str(bad) if bad else ''} ({row['faulted_calls']} faulted)")
        tr.write_line(f"{step:<12}" + "".join(f"{c:<28}" for c in cells))
    tr.write_line(f"{'':<12}" + "".join(f"{'tried succeeded failed-clean':<28}" for _ in FAULTS))
    tr.write_line(f"{'totals':<12}" + "".join(
        f"{t['tried']:>5} {t['succeeded']:>9} {t['failed cleanly']:>12}{'':<1}"
        for f, t in data["totals"].items() if f in FAULTS))
    # capacity, limits and eventual consistency: one row per case (they apply to some steps only)
    for (step, fault), row in MATRIX.items():
        if fault in FAULTS:
            continue
        outcome = row.get("outcome") or f"FAILED TEST ({row['status']} {row['error'] or ''})"
        if outcome == "failed cleanly":
            outcome = f"failed cleanly: {row['error'].removeprefix('AmiPipeline.')}"
        bad = len(row["leaked"]) + len(row["duplicated"])
        tr.write_line(f"{step:<12}{fault:<30} {outcome}{' LEAK/DUP ' + str(bad) if bad else ''} "
                      f"({row['faulted_calls']} faulted, {row['retries']} retries, leaked {len(row['leaked'])}, "
                      f"duplicated {len(row['duplicated'])})")
    leaked_total = sum(t["leaked"] for t in data["totals"].values())
    dup_total = sum(t["duplicated"] for t in data["totals"].values())
    tried = sum(t["tried"] for t in data["totals"].values())
    tr.write_line(f"{tried} faults tried: "
                  f"{sum(t['succeeded'] for t in data['totals'].values())} succeeded, "
                  f"{sum(t['failed cleanly'] for t in data['totals'].values())} failed cleanly, "
                  f"leaked {leaked_total}, duplicated {dup_total}")


_STACK = None


@pytest.fixture(autouse=True)
def _remember_stack(stack):
    global _STACK
    _STACK = stack


# SSM Run Command, the build's and smoke test's channel (moto_ext/runcommand.py; issue 13): (step, fault) -> (the
# faults to post, what the recipe's script gets, the error the run must end with or None, what its cause must say).
RUN_COMMAND_FAULTS = {
    ("build", "agent never online"): ({"agent_offline": "builder"}, None, "AmiPipeline.AgentNotOnline",
                                      ["did not come online"]),
    ("test-launch", "agent never online"): ({"agent_offline": "smoke"}, None, "AmiPipeline.AgentNotOnline",
                                            ["did not come online"]),
    ("build", "script fails with output"): (None, ("build", "# sim:fail-provision\n"), "AmiPipeline.ProvisionFailed",
                                            ["exit code 3", "error: package nginx not found", "/stdout"]),
    ("test-launch", "smoke fails with output"): (None, ("test", "# sim:fail-smoke\n"), "AmiPipeline.TestFailed",
                                                 ["exit code 7", "Failed to connect", "/stdout"]),
    ("build", "command times out"): (None, ("build", "# sim:command-timeout\n"), "AmiPipeline.Timeout",
                                     ["execution timeout", "still working"]),
    ("build", "stopped during the command"): ({"stop_during_command": "builder"}, None,
                                              "AmiPipeline.ProvisionFailed", ["stopped from outside"]),
    ("build", "lost SendCommand"): ({"lost_response": "SendCommand", "count": 3}, None, None, []),
}


@pytest.mark.parametrize("step,fault", list(RUN_COMMAND_FAULTS), ids=[f"{s}-{f}" for s, f in RUN_COMMAND_FAULTS])
def test_run_command_fault(stack, step, fault):
    spec, script, expected_error, cause_says = RUN_COMMAND_FAULTS[(step, fault)]
    slug = "".join(c if c.isalnum() else "-" for c in fault.lower())
    pipeline = f"fm-rc-{step}-{slug}"[:40].rstrip("-")
    recipe = stack.recipe(pipeline)
    if script:
        recipe[script[0]]["script"] += script[1]
    detail, calls, row, execution = run_faulted(stack, step, fault, pipeline, "1.0.0", recipe, spec, expected_error)
    assert not calls["faults"] or spec.get("lost_response"), calls["faults"]  # the fault was met
    assert_clean(row, detail)
    if expected_error is None:
        assert_released_once(stack, detail, execution)
    else:
        assert_failed_cleanly(detail, expected_error)
        for words in cause_says:
            assert words in detail["cause"], detail["cause"]
        roles = {"builder": 1} if step == "build" else {"builder": 1, "test-instance": 1}
        assert launched(stack, execution) == roles, "one of each instance, none again"
    row["outcome"] = "succeeded" if detail["status"] == "SUCCEEDED" else "failed cleanly"
