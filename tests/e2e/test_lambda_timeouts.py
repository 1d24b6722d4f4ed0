"""A Lambda function killed at its timeout reaches Step Functions as `Sandbox.Timedout` (current runtimes, Lambda
developer guide "Troubleshoot invocation issues") or as `Lambda.Unknown` (Step Functions developer guide, "Handle
Lambda service exceptions": unhandled errors "include out-of-memory errors and function timeouts"). Every Task retries
both, twice (its actions are idempotent); a third timeout in a row is caught and cleaned up like any failure. The
runner produces either on demand (`POST /_local/faults`, tests/local/runner.mjs): the function runs, its answer is
replaced by the error."""

from __future__ import annotations

import pytest

import local
from conftest import explain, leftovers, release, task_calls

TIMEOUTS = ["Sandbox.Timedout", "Lambda.Unknown"]


def time_out(stack, state: str, error: str, count: int) -> None:
    status, _, body = local.http("POST", f"{stack.sfn_url}/_local/faults",
                                 {"state": state, "error": error, "count": count})
    assert status == 200, body


@pytest.mark.parametrize("error", TIMEOUTS)
def test_a_task_that_timed_out_once_is_retried_and_the_run_succeeds(stack, error):
    pipeline = f"timeout-once-{error.split('.')[0].lower()}"
    time_out(stack, "Share", error, 1)
    _, detail = release(stack, pipeline, "1.0.0", stack.recipe(pipeline))
    assert detail["status"] == "SUCCEEDED", explain(detail)
    assert [c["error"] for c in task_calls(detail, "Share")] == [error, None], explain(detail)


@pytest.mark.parametrize("error", TIMEOUTS)
def test_a_task_that_keeps_timing_out_fails_the_run_after_two_retries_and_cleanup(stack, error):
    pipeline = f"timeout-thrice-{error.split('.')[0].lower()}"
    time_out(stack, "Share", error, 3)
    out, detail = release(stack, pipeline, "1.0.0", stack.recipe(pipeline))
    assert detail["status"] == "FAILED" and detail["error"] == error, explain(detail)
    assert [c["error"] for c in task_calls(detail, "Share")] == [error] * 3, explain(detail)
    assert task_calls(detail, "Cleanup")[-1]["error"] is None, explain(detail)
    # after the test passed: only the tested image and the available copies are kept, for a rerun
    left = leftovers(stack, out["execution_name"])
    assert not left.get("instances"), left
