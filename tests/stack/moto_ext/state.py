"""Simulator state shared by the middleware (faults, call log) and the moto patches.

Every EC2 request is handled under LOCK (see middleware.py), so the patches can
read and change this state without further locking.
"""

import json
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
FLAGS: dict = {"fail_copy_regions": set(), "snapshot_error": 0, "image_failed": 0,
               "terminate_role": {}}

# Run Command (runcommand.py): instance id -> run-once key -> the command whose body ran (kept across resets, as
# the instances are): GET /_sim/state shows it, so a test can tell that a guarded script ran once, and in which copy.
RUN_ONCE: dict[str, dict[str, str]] = {}

# Call log: counts[region][action] and one record per call.
COUNTS: dict[str, dict[str, int]] = {}
CALLS: list[dict] = []


def patch(cls, handlers: dict, orig: dict, wrap=lambda fn: fn) -> bool:
    """Replaces `cls`'s methods by `handlers` (name -> function, each through `wrap`) once, keeping the originals in
    `orig`; False when they are already in place."""
    if orig:
        return False
    for name, fn in handlers.items():
        orig[name] = getattr(cls, name, None)
        setattr(cls, name, wrap(fn))
    return True


def reset() -> None:
    """Clear faults and the call log (moto's own state: POST /moto-api/reset)."""
    ACTION_FAULTS.clear()
    FLAGS["fail_copy_regions"] = set()
    FLAGS["snapshot_error"] = 0
    FLAGS["image_failed"] = 0
    FLAGS["billing_lost"] = 0
    FLAGS["agent_offline"] = {}
    FLAGS["agent_connection_lost"] = {}
    FLAGS["stop_during_command"] = {}
    FLAGS["terminate_role"] = {}
    FLAGS["dry_run_denied"] = []
    FLAGS["deregister_snapshot_error"] = []
    from . import ec2_faults  # capacity, limits, eventual consistency (its own module; imports this one)
    ec2_faults.reset()
    COUNTS.clear()
    CALLS.clear()


# Every AWS request (any service, read-only ones too) as {service, action, agent, tagged, profile}, one JSON line
# each, when AMI_SIM_ACTION_LOG names a file: the e2e run checks each function's requests against the actions
# infra/contract.json lists for it (tests/e2e/test_actions.py). The Step Functions runner appends its own.
ACTION_LOG = os.environ.get("AMI_SIM_ACTION_LOG")


def record_action(service: str, action: str, agent: str, params: dict | None = None, region: str = "",
                  resources: dict | None = None) -> None:
    """`tagged`: the request tags on create (TagSpecification.*, authorized as ec2:CreateTags); `profile`: it
    launches with an instance profile (IamInstanceProfile.*, authorized as iam:PassRole). A handler's request also
    keeps its region, parameters and what IAM would see of the resources it names at call time (`resources`,
    moto_ext/iamctx.py), for the e2e's IAM simulation (tests/e2e/test_iam.py)."""
    if not ACTION_LOG:
        return
    keys = list(params or {})
    line = {"service": service, "action": action, "agent": agent,
            "tagged": any(k.startswith("TagSpecification.") for k in keys),
            "profile": any(k.startswith("IamInstanceProfile.") for k in keys)}
    if "app/ami-" in agent:
        line.update(region=region, params=params or {}, resources=resources or {})
    with open(ACTION_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


# Every mutating EC2 request with its parameters, one JSON line each, when AMI_SIM_REQUEST_LOG names a file:
# kept across /_sim/reset, so a test session can audit every request the handlers made (tests/e2e/test_audit.py).
REQUEST_LOG = os.environ.get("AMI_SIM_REQUEST_LOG")
READ_ONLY = ("Describe", "Get", "List", "Search")


def record_call(region: str, action: str, status: int, params: dict | None = None,
                created: list[str] | None = None, agent: str = "") -> None:
    """Log one EC2 call; `created`: ids of the resources the call made (performed calls only); `agent`: the
    caller's user agent (the handlers' says aws-sdk-rust, a test's boto3)."""
    COUNTS.setdefault(region, {}).setdefault(action, 0)
    COUNTS[region][action] += 1
    CALLS.append({"t": time.time(), "region": region, "action": action, "status": status,
                  "created": created or []})
    if REQUEST_LOG and params is not None and not action.startswith(READ_ONLY):
        with open(REQUEST_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"region": region, "action": action, "status": status, "params": params,
                                "created": created or [], "agent": agent}) + "\n")


def add_fault(spec: dict) -> None:
    """Parse one fault spec (see README.md) into ACTION_FAULTS / FLAGS."""
    region = spec.get("region")  # optional: limit an action fault to one region
    skip = int(spec.get("skip", 0))  # optional: let this many matching calls through first
    if "throttle" in spec:
        ACTION_FAULTS.append({"action": spec["action"], "kind": "throttle",
                              "left": int(spec["throttle"]), "region": region, "skip": skip})
    elif "error" in spec:
        code = spec["error"]
        status = spec.get("status") or (503 if code in ("Unavailable", "ServiceUnavailable")
                                        else 500 if code.startswith("Internal") else 400)
        ACTION_FAULTS.append({"action": spec["action"], "kind": "error", "code": code,
                              "status": int(status), "left": int(spec.get("count", 1)),
                              "region": region, "skip": skip})
    elif "lost_response" in spec:
        ACTION_FAULTS.append({"action": spec["lost_response"], "kind": "lost",
                              "left": int(spec.get("count", 1)), "region": region, "skip": skip})
    elif "fail_copy_region" in spec:
        FLAGS["fail_copy_regions"].add(spec["fail_copy_region"])
    elif spec.get("snapshot_error"):
        FLAGS["snapshot_error"] += int(spec.get("count", 1))
    elif spec.get("image_failed"):
        FLAGS["image_failed"] += int(spec.get("count", 1))
    elif "agent_offline" in spec:
        # the SSM agent of the next builder (or smoke) instance never comes online (moto_ext/runcommand.py)
        role = spec["agent_offline"]
        FLAGS.setdefault("agent_offline", {})
        FLAGS["agent_offline"][role] = FLAGS["agent_offline"].get(role, 0) + int(spec.get("count", 1))
    elif "agent_connection_lost" in spec:
        # the SSM agent of the next builder (or smoke) instance is ConnectionLost for `calls` DescribeInstanceInformation
        # calls once its first command succeeded (moto_ext/runcommand.py)
        role = spec["agent_connection_lost"]
        if role not in ("builder", "smoke"):
            raise ValueError(f"agent_connection_lost: builder or smoke, not {role!r}")
        FLAGS.setdefault("agent_connection_lost", {}).setdefault(role, []).append(int(spec.get("calls", 3)))
    elif "stop_during_command" in spec:
        # the next builder (or smoke) instance is stopped from outside while its Run Command script runs
        role = spec["stop_during_command"]
        FLAGS.setdefault("stop_during_command", {})
        FLAGS["stop_during_command"][role] = FLAGS["stop_during_command"].get(role, 0) + int(spec.get("count", 1))
    elif "deregister_snapshot_error" in spec:
        # the next DeregisterImage (DeleteAssociatedSnapshots) keeps one snapshot and reports this ReturnCode for it
        code = spec["deregister_snapshot_error"]
        if code not in ("missing-permissions", "internal-error", "client-error"):
            raise ValueError(f"deregister_snapshot_error: missing-permissions, internal-error or client-error, "
                             f"not {code!r}")
        FLAGS["deregister_snapshot_error"] = [code] * int(spec.get("count", 1))
    elif spec.get("billing_lost"):
        FLAGS["billing_lost"] = FLAGS.get("billing_lost", 0) + int(spec.get("count", 1))
    elif "dry_run_denied" in spec:  # a DryRun of this action answers UnauthorizedOperation (moto_ext/dryrun.py)
        FLAGS.setdefault("dry_run_denied", []).append({"action": spec["dry_run_denied"], "region": region,
                                                       "left": int(spec.get("count", 1))})
    elif "terminate_instance" in spec:
        role = spec["terminate_instance"]
        if role not in ("builder", "smoke"):
            raise ValueError(f"terminate_instance: builder or smoke, not {role!r}")
        FLAGS["terminate_role"][role] = FLAGS["terminate_role"].get(role, 0) + int(spec.get("count", 1))
    else:
        from . import ec2_faults
        if not ec2_faults.add_fault(spec):  # no_capacity, invisible, snapshot_limit, clear
            raise ValueError(f"unknown fault spec: {spec}")


def take_flag(name: str):
    """Consume one pending value of a list-valued flag (None when none is left)."""
    pending = FLAGS.get(name) or []
    return pending.pop(0) if pending else None


def take_action_fault(region: str, action: str) -> dict | None:
    """Consume one pending fault for this call, if any (first posted, first used)."""
    for fault in ACTION_FAULTS:
        if fault["action"] == action and fault["region"] in (None, region) and fault["left"] > 0:
            if fault["skip"] > 0:
                fault["skip"] -= 1
                return None
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
        "image_failed": FLAGS["image_failed"],
        "terminate_instance": dict(FLAGS["terminate_role"]),
        "no_capacity": FLAGS.get("no_capacity", []),
        "hidden": dict(FLAGS.get("hidden", {})),
        "snapshot_limit": FLAGS.get("snapshot_limit"),
        "polls": POLLS,
        "run_once": RUN_ONCE,
    }
