"""The fault matrix: every mutating step x four faults, end to end on the local stack.

Faults (injected by the moto extension, tests/stack/README.md):
- throttle: a burst of RequestLimitExceeded longer than the SDK's 3 attempts (Step Functions retries the rest);
- 5xx: a burst of InternalError (HTTP 500) longer than the SDK's 3 attempts;
- lost: the call is performed but its answer is lost (HTTP 500), three times, so the step runs again and must adopt
  what the first call made;
- hard: the resource fails (builder or test instance terminated by someone else, snapshot `error`, image `failed`,
  copy `failed`) or, for steps that make no resource, the call is refused for good (UnauthorizedOperation).

Each run must either succeed with exactly one of each resource, or fail with the expected error name and leave nothing
of its execution behind: no instance running, and no image or snapshot that is not released (publish tags images
`released` before anything points at them; those are kept on purpose, with their snapshots). Duplicates are counted
from the ids the emulator saw created (a ClientToken replay names the same id again, so adopting is not a duplicate).
The table is printed at the end of the e2e run and written to the run's log folder as fault-matrix.json.
"""

from __future__ import annotations

import json

import pytest

import stack as local
from conftest import (REGIONS, errors_besides_polls, explain, launched, release, summary, tags, task_calls,
                      wait_until)

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
    "retire": (dict(DENIED, action="DeregisterImage"), "AmiPipeline.AwsError"),
}
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
    """What the execution left that nothing uses: instances not terminated, images not released, snapshots that
    back no released image."""
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
            if tags(img).get("ami-pipeline:state") == "released" and img["State"] == "available":
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


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", list(STEPS))
def test_fault(stack, retire_pipeline, step, fault):
    pipeline = pipeline_of(step, fault)
    recipe = retire_pipeline if step == "retire" else stack.recipe(pipeline)
    version = f"1.{FAULTS.index(fault)}.0"
    stack.sim("POST", "reset")
    stack.sim("POST", "faults", fault_spec(step, fault))
    try:
        out, detail = release(stack, pipeline, version, recipe, timeout=300)
        calls = stack.sim("GET", "calls")
    finally:
        stack.sim("POST", "reset")
    execution = out["execution_name"]
    faulted = [c for c in calls["calls"] if c["status"] != 200]
    unused = calls["faults"]

    wait_until(lambda: not leaked(stack, execution), 3)
    left = leaked(stack, execution)
    dups = duplicated(stack, execution, calls["calls"])
    expected_error = HARD[step][1] if fault == "hard" else None
    row = MATRIX[(step, fault)] = {
        "status": detail["status"], "error": detail.get("error"), "expected_error": expected_error,
        "faulted_calls": len(faulted), "leaked": left, "duplicated": dups,
        "retries": len(errors_besides_polls(detail)),  # a status Task's NotReady is a poll, not a retry
    }

    # the fault was met (a fault spec never used would make the case prove nothing)
    assert fault == "hard" or faulted, f"no call was faulted: {json.dumps(calls['counts'])}"
    # throttling and 5xx bursts are used up (the call had to get through); a lost answer may be adopted by a look-up
    # without calling again, which leaves the rest of its count unused
    assert not unused or fault in ("hard", "lost"), unused
    assert not dups, f"duplicated: {dups}\n{explain(detail)}"
    assert not left, f"left behind: {left}\n{explain(detail)}"
    if expected_error is None:
        assert detail["status"] == "SUCCEEDED", explain(detail)
        # exactly one image per region, one builder and one test instance
        assert len(detail["output"]["images"]) == len(REGIONS), detail["output"]
        assert launched(stack, execution) == {"builder": 1, "test-instance": 1}
        released = [i for region in REGIONS for i in stack.boto3("ec2", region).describe_images(
            Owners=["self"], Filters=[{"Name": "tag:ami-pipeline:execution", "Values": [execution]}])["Images"]]
        assert len(released) == len(REGIONS), [i["ImageId"] for i in released]
    else:
        assert detail["status"] == "FAILED", explain(detail)
        assert detail["error"] == expected_error, explain(detail)
        assert task_calls(detail, "Cleanup"), explain(detail)
    row["outcome"] = "succeeded" if detail["status"] == "SUCCEEDED" else "failed cleanly"


def write_matrix(log_dir) -> dict:
    """Totals per fault and the rows, as printed; also saved as fault-matrix.json in the run's log folder."""
    totals = {f: {"tried": 0, "succeeded": 0, "failed cleanly": 0, "leaked": 0, "duplicated": 0} for f in FAULTS}
    for (step, fault), row in MATRIX.items():
        t = totals[fault]
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
            bad = len(row["leaked"]) + len(row["duplicated"])
            cells.append(f"{outcome}{' LEAK/DUP ' + str(bad) if bad else ''} ({row['faulted_calls']} faulted)")
        tr.write_line(f"{step:<12}" + "".join(f"{c:<28}" for c in cells))
    tr.write_line(f"{'':<12}" + "".join(f"{'tried succeeded failed-clean':<28}" for _ in FAULTS))
    tr.write_line(f"{'totals':<12}" + "".join(
        f"{t['tried']:>5} {t['succeeded']:>9} {t['failed cleanly']:>12}{'':<1}" for t in data["totals"].values()))
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
