"""5. A scheduled run with `refresh: when-source-changes` and an unchanged base image starts nothing."""

from __future__ import annotations

from conftest import explain, mutating_calls, release, trigger


def test_scheduled_run_with_unchanged_base_image_starts_nothing(stack):
    recipe = stack.recipe("web-sched")
    assert recipe["refresh"] == "when-source-changes"
    # a released image built from the current base image
    _, detail = release(stack, "web-sched", "3.1.0", recipe)
    assert detail["status"] == "SUCCEEDED", explain(detail)

    stack.sim("POST", "reset")
    before = {e["name"] for e in stack.executions()}
    ok, out = trigger(stack, {"pipeline": "web-sched", "scheduled_time": "2026-11-27T03:00:00Z"})
    assert ok, out
    assert out["status"] == "skipped", out
    assert out["version"] == "3.1.0", out
    assert {e["name"] for e in stack.executions()} == before
    assert stack.execution(out["execution_name"]) is None
    assert mutating_calls(stack) == []
