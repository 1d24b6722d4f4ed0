#!/usr/bin/env python3
"""Runs one event through the trigger on the local stack and prints what the pipeline did.

    cd tests && ../.tools/venv/bin/python -m local.demo [EVENT.json]      (default: infra/events/release.json)

Starts the stack (tests/local/stack.py: moto, the handlers under cargo lambda watch, the Step Functions runner),
seeds a base image and the example recipe, sends the event to ami-trigger, waits for the execution, prints a
summary (steps, times, calls, image id per region) and the execution's JSON result, and stops the stack.
Exit status: 0 when the pipeline succeeded (or the trigger rightly started nothing), 1 when it failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import stack as local

# Display names for the states, in pipeline order: a state belongs to the step its name starts with (`Build Start`,
# `Build Wait`, `Build Status`, `Build Finish` are Build). A long step's polls are its Status Task's retries.
STEPS = [
    ("Build", "build the image on the builder"),
    ("Snapshot", "snapshot the builder's volumes"),
    ("Register", "register the candidate image"),
    ("Test", "launch and smoke-test the candidate"),
    ("Copy", "copy to every other region, started and polled in one call"),
    ("Share", "launch permissions in every region, one call"),
    ("Publish", "hand over: tags, SSM parameters, launch templates"),
    ("Retire", "deprecate and remove old images"),
    ("Cleanup", "remove what the failed run made"),
]
NOT_READY = "AmiPipeline.NotReady"


def step_of(state: str) -> str | None:
    for step, _ in STEPS:
        if state == step or state.startswith(step + " "):
            return step
    return None


def summarize(detail: dict) -> list[str]:
    """Per step: first entry to last exit, number of handler calls (of which status polls answered NotReady),
    errors met (retried or caught)."""
    spans: dict[str, list[float]] = {}
    for ev in detail["events"]:
        if ev["type"] not in ("StateEntered", "StateExited", "StateFailed") or "state" not in ev:
            continue
        step = step_of(ev["state"])
        if step is None:
            continue
        span = spans.setdefault(step, [ev["t"], ev["t"]])
        span[0], span[1] = min(span[0], ev["t"]), max(span[1], ev["t"])
    calls: dict[str, list[dict]] = {}
    for t in detail["tasks"]:
        step = step_of(t["state"])
        if step:
            calls.setdefault(step, []).append(t)
    lines = []
    for step, what in STEPS:
        if step not in spans:
            continue
        t0, t1 = spans[step]
        these = calls.get(step, [])
        not_ready = sum(1 for t in these if t["error"] == NOT_READY and t.get("action") == "status")
        errors = sorted({t["error"] for t in these
                         if t["error"] and not (t["error"] == NOT_READY and t.get("action") == "status")})
        polls = f" ({not_ready} not ready)" if not_ready else ""
        note = f"  errors: {', '.join(errors)}" if errors else ""
        lines.append(f"  {step:<9} {(t1 - t0) / 1000:7.2f} s  {len(these):3d} calls{polls:<16} {what}{note}")
    return lines


def main(argv: list[str]) -> int:
    event_path = Path(argv[1]) if len(argv) > 1 else local.ROOT / "infra" / "events" / "release.json"
    event = json.loads(event_path.read_text())
    with local.Stack(quiet=False) as s:
        print(f"\nevent: {event_path}", flush=True)
        ok, out = s.invoke("ami-trigger", event)
        print(f"trigger: {json.dumps(out)}")
        if not ok:
            print(f"\nthe trigger rejected the event: {out.get('errorType')}: {out.get('errorMessage')}")
            return 1
        if out["status"] != "started":
            print(f"\nnothing started ({out['status']}): {out.get('reason', '')}")
            return 0
        detail = s.wait_for(out["execution_name"], timeout=600)

        print(f"\nexecution {detail['name']}: {detail['status']} in {detail['durationMs'] / 1000:.1f} s"
              f" (waits shortened to {s.wait_ms} ms, retry intervals x{s.retry_scale}; moto resources ready after"
              f" {s.polls} polls)")
        for line in summarize(detail):
            print(line)
        result = detail.get("output")
        if detail["status"] == "SUCCEEDED" and isinstance(result, dict):
            print("\nimages:")
            for image in result.get("images", []):
                print(f"  {image['region']:<16} {image['image_id']}  {image.get('name', '')}")
            print(f"  source image {result.get('source_image_id')}, release {result.get('release', {}).get('version')}"
                  f", boot to ready {result.get('boot_to_ready_seconds')} s")
            print("\nresult:")
            print(json.dumps(result, indent=2))
            print(f"\nlogs: {s.log_dir}")
            return 0
        print(f"\nerror: {detail.get('error')}\ncause: {detail.get('cause')}")
        print(json.dumps({"status": detail["status"], "error": detail.get("error"), "cause": detail.get("cause")},
                         indent=2))
        print(f"\nlogs: {s.log_dir}")
        return 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stack stopped", file=sys.stderr)
        sys.exit(130)
