"""Simulator state shared by the middleware (faults, call log) and the moto patches.

Every EC2 request is handled under LOCK (see middleware.py), so the patches can
read and change this state without further locking.
"""

import os
import threading
import time

LOCK = threading.RLock()

# K: how many observing calls a resource stays in a transitional state.
POLLS = int(os.environ.get("AMI_SIM_POLLS", "2"))

# Per resource id: {"polls": int, ...}. Kept across /_sim/reset on purpose:
# resetting the clock of a resource in flight would make it go back to pending.
RESOURCES: dict[str, dict] = {}

# ClientToken -> (parameter fingerprint, resource id), per (account, region, action).
TOKENS: dict[tuple, tuple[str, str]] = {}

# Faults, as posted to /_sim/faults. Each action fault: {"action", "kind", "left", ...}.
ACTION_FAULTS: list[dict] = []
FLAGS: dict = {"fail_copy_regions": set(), "snapshot_error": 0}

# Call log: counts[region][action] and one record per call.
COUNTS: dict[str, dict[str, int]] = {}
CALLS: list[dict] = []


def reset() -> None:
    """Clear faults and the call log (moto's own state: POST /moto-api/reset)."""
    ACTION_FAULTS.clear()
    FLAGS["fail_copy_regions"] = set()
    FLAGS["snapshot_error"] = 0
    COUNTS.clear()
    CALLS.clear()


def record_call(region: str, action: str, status: int) -> None:
    COUNTS.setdefault(region, {}).setdefault(action, 0)
    COUNTS[region][action] += 1
    CALLS.append({"t": time.time(), "region": region, "action": action, "status": status})


def add_fault(spec: dict) -> None:
    """Parse one fault spec (see README.md) into ACTION_FAULTS / FLAGS."""
    region = spec.get("region")  # optional: limit an action fault to one region
    if "throttle" in spec:
        ACTION_FAULTS.append({"action": spec["action"], "kind": "throttle",
                              "left": int(spec["throttle"]), "region": region})
    elif "error" in spec:
        code = spec["error"]
        status = spec.get("status") or (503 if code in ("Unavailable", "ServiceUnavailable")
                                        else 500 if code.startswith("Internal") else 400)
        ACTION_FAULTS.append({"action": spec["action"], "kind": "error", "code": code,
                              "status": int(status), "left": int(spec.get("count", 1)),
                              "region": region})
    elif "lost_response" in spec:
        ACTION_FAULTS.append({"action": spec["lost_response"], "kind": "lost",
                              "left": int(spec.get("count", 1)), "region": region})
    elif "fail_copy_region" in spec:
        FLAGS["fail_copy_regions"].add(spec["fail_copy_region"])
    elif spec.get("snapshot_error"):
        FLAGS["snapshot_error"] += int(spec.get("count", 1))
    else:
        raise ValueError(f"unknown fault spec: {spec}")


def take_action_fault(region: str, action: str) -> dict | None:
    """Consume one pending fault for this call, if any (first posted, first used)."""
    for fault in ACTION_FAULTS:
        if fault["action"] == action and fault["region"] in (None, region) and fault["left"] > 0:
            fault["left"] -= 1
            return fault
    return None


def snapshot() -> dict:
    return {
        "counts": COUNTS,
        "calls": CALLS,
        "faults": [f for f in ACTION_FAULTS if f["left"] > 0],
        "fail_copy_regions": sorted(FLAGS["fail_copy_regions"]),
        "snapshot_error": FLAGS["snapshot_error"],
        "polls": POLLS,
    }
