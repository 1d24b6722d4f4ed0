"""3. A provisioning failure, a failed smoke test and a copy failure in one region each end in a failed execution with
the right error name, after cleanup, and leave no instance, image or snapshot of that execution in any region (but
for the copy failure, which came after the test: its tested image and the copy that succeeded are kept, tagged
`tested`, for a rerun to adopt; tests/e2e/test_rerun.py)."""

from __future__ import annotations

import pytest

from conftest import REGIONS, errors_besides_polls, explain, leftovers, release, task_calls, wait_until


def check_failed_and_clean(stack, out, detail, error, kept_tested=False):
    assert detail["status"] == "FAILED", explain(detail)
    assert detail["error"] == error, explain(detail)
    # the cause is the handler's, not the cleanup's
    assert error in detail["cause"], detail["cause"]
    cleanup = task_calls(detail, "Cleanup")
    assert cleanup and cleanup[-1]["error"] is None, explain(detail)
    # cleanup ran last: nothing after it
    assert detail["tasks"][-1]["state"] == "Cleanup", explain(detail)
    # nothing of the execution is left (terminating takes a few polls in the emulator too: allow a moment)
    if kept_tested:
        # a failure after the test keeps the tested image and the copies that succeeded, with their snapshots, for a
        # rerun (tests/e2e/test_rerun.py): anything else of the execution is gone
        kept = set()
        for region in REGIONS:
            ec2 = stack.boto3("ec2", region)
            flt = [{"Name": "tag:ami-pipeline:execution", "Values": [out["execution_name"]]},
                   {"Name": "tag:ami-pipeline:state", "Values": ["tested"]}]
            for img in ec2.describe_images(Owners=["self"], Filters=flt)["Images"]:
                kept.add(f"{region}:{img['ImageId']} ({img['State']})")
                kept |= {f"{region}:{m['Ebs']['SnapshotId']} (completed)" for m in img.get("BlockDeviceMappings", [])
                         if m.get("Ebs", {}).get("SnapshotId")}
        assert any(k.startswith(f"{REGIONS[0]}:ami-") for k in kept), kept
    else:
        kept = set()

    def unkept():
        found = leftovers(stack, out["execution_name"])
        return {k: [x for x in v if x not in kept] for k, v in found.items() if [x for x in v if x not in kept]}

    wait_until(lambda: not unkept(), 3)
    found = unkept()
    assert not found, f"left behind: {found}\n{explain(detail)}"
    # nothing was published
    assert not task_calls(detail, "Publish"), explain(detail)


@pytest.mark.parametrize("pipeline,script,marker,error,reached,not_reached", [
    # the build's script fails: nothing was snapshot
    pytest.param("web-fail-build", "build", "# sim:fail-provision\n", "AmiPipeline.ProvisionFailed", [],
                 ["Snapshot Start"], id="provisioning_failure"),
    # the smoke test fails: the image was registered, then removed by cleanup; no copy was made
    pytest.param("web-fail-smoke", "test", "# sim:fail-smoke\n", "AmiPipeline.TestFailed", ["Register Start"],
                 ["Copy Start"], id="failed_smoke_test"),
])
def test_failing_script(stack, pipeline, script, marker, error, reached, not_reached):
    recipe = stack.recipe(pipeline)
    recipe[script]["script"] += marker
    out, detail = release(stack, pipeline, "1.0.0", recipe)
    check_failed_and_clean(stack, out, detail, error)
    for state in reached:
        assert task_calls(detail, state), explain(detail)
    for state in not_reached:
        assert not task_calls(detail, state), explain(detail)


@pytest.fixture
def failing_copies(stack):
    stack.sim("POST", "faults", {"fail_copy_region": "ap-southeast-2"})
    yield "ap-southeast-2"
    stack.sim("POST", "reset")


def test_copy_failure_in_one_region(stack, failing_copies):
    out, detail = release(stack, "web-fail-copy", "1.0.0", stack.recipe("web-fail-copy"))
    check_failed_and_clean(stack, out, detail, "AmiPipeline.ImageFailed", kept_tested=True)
    # the copies to every region are polled in one call: that call fails, naming the failing region only
    failed = [t for t in detail["tasks"] if t["error"] == "AmiPipeline.ImageFailed"]
    assert failed and all(t["state"] == "Copy Status" for t in failed), explain(detail)
    assert failing_copies in detail["cause"], detail["cause"]
    assert not [r for r in REGIONS if r != failing_copies and r in detail["cause"]], detail["cause"]
    # ImageFailed is not retried: the only other errors are polls before the failure was seen
    assert errors_besides_polls(detail) == failed[:1], explain(detail)


def test_a_snapshot_deregister_image_could_not_delete_is_deleted_by_cleanup(stack):
    """DeregisterImage with DeleteAssociatedSnapshots succeeds even when a snapshot was not deleted: it says so per
    snapshot (`DeleteSnapshotResults`, e.g. `internal-error`). Cleanup deletes that one again, so the failed run
    still leaves nothing."""
    pipeline = "web-fail-snapdel"
    recipe = stack.recipe(pipeline)
    recipe["test"]["script"] += "# sim:fail-smoke\n"
    stack.sim("POST", "faults", {"deregister_snapshot_error": "internal-error"})
    try:
        out, detail = release(stack, pipeline, "1.0.0", recipe)
    finally:
        stack.sim("POST", "reset")
    check_failed_and_clean(stack, out, detail, "AmiPipeline.TestFailed")
