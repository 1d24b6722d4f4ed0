"""4. A burst of throttling on each mutating call still ends in success: the SDK's own retries absorb some, and
Step Functions retries `AmiPipeline.Throttled` for the rest."""

from __future__ import annotations

import pytest

from conftest import NOT_READY, REGIONS, explain, images_of, launched, release

# Every mutating EC2 call the pipeline makes on the success path (a fault for one it does not make stays unused).
MUTATING = [
    "RunInstances", "StopInstances", "TerminateInstances", "CreateSnapshots", "RegisterImage", "CreateTags",
    "CopyImage", "ModifyImageAttribute", "ModifySnapshotAttribute", "CreateLaunchTemplateVersion",
    "ModifyLaunchTemplate", "EnableImageDeprecation", "EnableImageDeregistrationProtection",
    "DisableImageDeregistrationProtection", "DeregisterImage", "DeleteSnapshot",
]
# More than the SDK's 3 attempts, so each burst also reaches the state machine's Retry.
BURST = 4


@pytest.fixture
def throttled(stack):
    stack.sim("POST", "reset")
    stack.sim("POST", "faults", [{"action": a, "throttle": BURST} for a in MUTATING])
    yield
    stack.sim("POST", "reset")


def test_throttling_burst_on_every_mutating_call(stack, throttled):
    out, detail = release(stack, "web-throttled", "1.0.0", stack.recipe("web-throttled"), timeout=300)
    calls = stack.sim("GET", "calls")
    assert detail["status"] == "SUCCEEDED", explain(detail)
    assert len(detail["output"]["images"]) == len(REGIONS)

    made = {c["action"] for c in calls["calls"] if c["action"] in MUTATING}
    throttled_actions = {c["action"] for c in calls["calls"] if c["status"] == 503}
    assert made, calls["counts"]
    # every mutating call the run made met its burst, and the run still succeeded
    assert made <= throttled_actions, (sorted(made), sorted(throttled_actions))
    # the bursts outlasted the SDK's retries: Step Functions retried some Tasks on AmiPipeline.Throttled
    retried = [t for t in detail["tasks"] if t["error"] == "AmiPipeline.Throttled"]
    assert retried, explain(detail)
    # and retried only throttling (no other error on the way); a status call answers throttling NotReady (one more
    # poll), and NotReady comes only from status calls
    assert {t["error"] for t in detail["tasks"] if t["error"]} <= {"AmiPipeline.Throttled", NOT_READY}, \
        explain(detail)
    assert all(t["action"] == "status" for t in detail["tasks"] if t["error"] == NOT_READY), explain(detail)
    assert all(t["action"] != "status" for t in retried), explain(detail)
    # retried starts adopted what the first attempt made: one builder, one test instance, one copy per region
    assert launched(stack, out["execution_name"]) == {"builder": 1, "test-instance": 1}
    for region in REGIONS:
        assert len(images_of(stack, "web-throttled", region)) == 1, region
