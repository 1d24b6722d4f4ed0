"""End-to-end tests: the real state machine definition and the real handlers on the local stack
(tests/local/stack.py). Run them with `bash tests/local/e2e.sh` (installs, builds, runs, stops), or, once installed
and built, `.tools/venv/bin/python -m pytest tests/e2e`.

Tests run one at a time (fault injection and the EC2 call log are global to the moto server); each works on its own
pipeline name, so executions, images and "newest released image" look-ups do not interfere.
"""

from __future__ import annotations

import os
import time

import pytest

import local

REGIONS = [local.REGION, *local.TEST_REGIONS]
# regions only test_payload.py copies to (a release shared with 450 accounts in 10 regions)
KEY_ONLY_REGIONS = ["eu-central-1", "us-west-2", "ap-northeast-1", "ca-central-1", "sa-east-1", "eu-north-1",
                    "ap-south-1"]
TAG_EXECUTION = "ami-pipeline:execution"
TAG_PIPELINE = "ami-pipeline:pipeline"


def pytest_collection_modifyitems(config, items):
    # The static check needs no stack: run it first, so a broken definition fails fast. The request audit and the
    # IAM-actions check read what every other test sent: run them last.
    last = ("test_audit", "test_actions", "test_iam")
    items.sort(key=lambda item: 0 if "static" in item.nodeid else 2 if any(n in item.nodeid for n in last) else 1)


def needs_every_function(s: local.Stack) -> None:
    missing = set(local.FUNCTIONS) - set(s.functions)
    if missing and not os.environ.get("AMI_E2E_ALLOW_MISSING"):
        pytest.exit(f"handlers not built: {sorted(missing)}; run `cargo build --workspace --all-targets`", returncode=2)


@pytest.fixture(scope="session")
def stack():
    """The session's stack: the template deployed with every optional part set (tests/local/stack.py
    everything_set); tests/e2e/test_deployments.py starts one with the defaults beside it."""
    # image keys (the stack's KmsKeyArns) in every region a test shares an image to, as a user lists them
    key_regions = [local.REGION, *local.TEST_REGIONS, *KEY_ONLY_REGIONS]
    with local.Stack(params=local.everything_set, key_regions=key_regions, quiet=False) as s:
        needs_every_function(s)
        yield s


# -- helpers -----------------------------------------------------------------------------------------------------

def trigger(stack: local.Stack, event: dict) -> tuple[bool, dict]:
    return stack.invoke("ami-trigger", event)


def release(stack: local.Stack, pipeline: str, version: str, recipe: dict | None = None,
            timeout: float = 180.0) -> tuple[dict, dict]:
    """Stores `recipe` (if given), sends a release event, waits for the execution to end: (trigger output,
    execution detail)."""
    if recipe is not None:
        stack.put_recipe(recipe)
    ok, out = trigger(stack, local.release_event(pipeline, version))
    assert ok and out["status"] == "started", out
    return out, stack.wait_for(out["execution_name"], timeout)


def leftovers(stack: local.Stack, execution: str) -> dict[str, list[str]]:
    """Instances not terminated, images and snapshots tagged with the execution, in every region."""
    found: dict[str, list[str]] = {}
    flt = [{"Name": f"tag:{TAG_EXECUTION}", "Values": [execution]}]
    for region in REGIONS:
        ec2 = stack.boto3("ec2", region)
        for r in ec2.describe_instances(Filters=flt)["Reservations"]:
            for i in r["Instances"]:
                # shutting-down: TerminateInstances was called; EC2 finishes it on its own
                if i["State"]["Name"] not in ("terminated", "shutting-down"):
                    found.setdefault("instances", []).append(f"{region}:{i['InstanceId']} ({i['State']['Name']})")
        for img in ec2.describe_images(Owners=["self"], Filters=flt)["Images"]:
            found.setdefault("images", []).append(f"{region}:{img['ImageId']} ({img['State']})")
        for snap in ec2.describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"]:
            found.setdefault("snapshots", []).append(f"{region}:{snap['SnapshotId']} ({snap['State']})")
    return found


def launched(stack: local.Stack, execution: str) -> dict[str, int]:
    """How many instances the execution launched, by role, whatever their state."""
    counts: dict[str, int] = {}
    flt = [{"Name": f"tag:{TAG_EXECUTION}", "Values": [execution]}]
    for region in REGIONS:
        for r in stack.boto3("ec2", region).describe_instances(Filters=flt)["Reservations"]:
            for i in r["Instances"]:
                role = tags(i).get("ami-pipeline:role", "?")
                counts[role] = counts.get(role, 0) + 1
    return counts


def images_of(stack: local.Stack, pipeline: str, region: str) -> list[dict]:
    ec2 = stack.boto3("ec2", region)
    return ec2.describe_images(Owners=["self"],
                               Filters=[{"Name": f"tag:{TAG_PIPELINE}", "Values": [pipeline]}])["Images"]


def tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def mutating_calls(stack: local.Stack) -> list[str]:
    calls = stack.sim("GET", "calls")["calls"]
    # a DryRun (the trigger's preflight, logged `<Action>(DryRun)`) makes nothing
    return [f"{c['region']}:{c['action']}" for c in calls
            if not c["action"].startswith(local.MUTATING_PREFIXES) and not c["action"].endswith("(DryRun)")]


def task_calls(detail: dict, state: str) -> list[dict]:
    """Every call of a Task state, one per attempt (a status Task's polls are its retries)."""
    return [t for t in detail["tasks"] if t["state"] == state]


NOT_READY = "AmiPipeline.NotReady"


def errors_besides_polls(detail: dict) -> list[dict]:
    """Task calls that failed with something other than a status Task's `NotReady` (a poll, not a fault)."""
    return [t for t in detail["tasks"] if t["error"] and not (t["error"] == NOT_READY and t["action"] == "status")]


def explain(detail: dict) -> str:
    """A failure message: status, error, and the task calls."""
    lines = [f"{detail['name']}: {detail['status']} {detail.get('error') or ''} {detail.get('cause') or ''}"]
    for t in detail["tasks"]:
        lines.append(f"  {t['state']:<16} {t['function']:<16} {t.get('action') or '':<7} {t['ms']} ms"
                     f" {t['error'] or ''}")
    return "\n".join(lines)


# -- a table of outcomes and durations at the end ----------------------------------------------------------------

_RESULTS: dict[str, list] = {}  # test -> [outcome, seconds (setup, call and teardown)]
_SUMMARIES: list = []  # more tables for the end of the run: callables taking the terminal reporter


def summary(fn):
    """Registers fn(terminalreporter) to print a table at the end of the run (the fault matrix, the audit)."""
    _SUMMARIES.append(fn)
    return fn


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    name = item.nodeid.split("::", 1)[-1]
    entry = _RESULTS.setdefault(name, ["passed", 0.0])
    entry[1] += rep.duration
    if rep.outcome != "passed" and entry[0] == "passed":
        entry[0] = rep.outcome if rep.when == "call" else f"{rep.outcome}:{rep.when}"


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    tr = terminalreporter
    for report in _SUMMARIES:
        report(tr)
    tr.section("e2e summary (seconds include fixtures: stack start-up is in the first test that needs it)")
    for name, (outcome, duration) in _RESULTS.items():
        tr.write_line(f"{outcome.upper():<16} {duration:7.1f} s  {name}")
    passed = sum(1 for o, _ in _RESULTS.values() if o == "passed")
    tr.write_line(f"{passed}/{len(_RESULTS)} passed, {sum(d for _, d in _RESULTS.values()):.1f} s")


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.2):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() > deadline:
            return value
        time.sleep(interval)
