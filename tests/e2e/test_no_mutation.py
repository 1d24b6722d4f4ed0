"""6. A malformed release event and an untrusted base image make no mutating call."""

from __future__ import annotations

import json

import stack as local
from conftest import explain, mutating_calls, release, task_calls, trigger


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
    out, detail = release(stack, "web-untrusted", "1.0.0")
    assert detail["status"] == "FAILED", explain(detail)
    assert detail["error"] == "AmiPipeline.SourceNotTrusted", explain(detail)
    # never retried, nothing launched; cleanup found nothing to do
    assert len(task_calls(detail, "Build Start")) == 1, explain(detail)
    assert mutating_calls(stack) == [], explain(detail)
