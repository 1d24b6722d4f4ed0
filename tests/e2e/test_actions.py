"""Least privilege, proven by what ran: every AWS request each function made during this e2e run (all services,
read-only calls and faulted attempts included; the emulators log them by the SDK user agent's `app/<binary>`,
tests/stack/moto_ext/state.py and tests/local/runner.mjs) against the actions infra/contract.json lists for it,
which the template's roles must allow exactly (tests/infra/test_template.py). A request tagging on create counts
as ec2:CreateTags, one launching with an instance profile as iam:PassRole (EC2 User Guide, "Grant permission to
tag resources during creation"; IAM User Guide, "Grant a user permissions to pass a role"). Runs last."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import summary

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = json.loads((ROOT / "infra" / "contract.json").read_text())
DECLARED = {binary: set(f["actions"]) for binary, f in CONTRACT["functions"].items()}
APP = re.compile(r"\bapp/(ami-[a-z-]+)")


def observed(stack) -> dict[str, set[str]]:
    """{binary: the IAM actions its logged requests needed}."""
    assert stack.action_log and stack.action_log.exists(), "the emulators kept no action log"
    out: dict[str, set[str]] = {}
    for line in stack.action_log.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        m = APP.search(r.get("agent", ""))
        if not m:
            continue  # the tests' own set-up and inspection calls (boto3)
        actions = out.setdefault(m.group(1), set())
        actions.add(f"{r['service']}:{r['action']}")
        if r.get("tagged"):
            actions.add("ec2:CreateTags")
        if r.get("profile"):
            actions.add("iam:PassRole")
    return out


def test_every_request_is_an_action_the_contract_lists(stack):
    seen = observed(stack)
    assert seen, "no request was attributed to a function: is AWS_SDK_UA_APP_ID set (tests/local/stack.py)?"
    unknown = sorted(set(seen) - set(DECLARED))
    assert not unknown, f"requests from functions the contract does not know: {unknown}"
    missing = {b: sorted(a - DECLARED[b]) for b, a in seen.items() if a - DECLARED[b]}
    assert not missing, (f"functions made requests their contract actions (and so their roles) do not cover: "
                         f"{missing}; add them to ACTIONS in functions/core/src/contract.rs")


def test_every_listed_action_was_needed(stack, request):
    if len(request.session.items) < 20:
        pytest.skip("needs the whole e2e run: a subset does not exercise every path")
    seen = observed(stack)
    # Granted for a path the run does not reach, each with its reason in the contract.
    excused = {(u["function"], u["action"]) for u in CONTRACT["unexercised_actions"]}
    for binary, action in excused:
        assert action in DECLARED[binary], f"{binary}: {action} is excused but not in its actions"
        assert action not in seen.get(binary, set()), f"{binary}: {action} is exercised now: drop its excuse"
    unused = {b: sorted(x for x in a - seen.get(b, set()) if (b, x) not in excused) for b, a in DECLARED.items()}
    unused = {b: a for b, a in unused.items() if a}
    lines = [f"{b:<16} {len(seen.get(b, set()))}/{len(a)} actions seen" for b, a in sorted(DECLARED.items())]

    @summary
    def table(tr):
        tr.write_line("IAM actions: the actions each function's requests needed in this run, of those its contract lists")
        for line in lines:
            tr.write_line("  " + line)

    assert not unused, (f"actions the contract (and so the role) grants that no request of this run needed: {unused}; "
                        "remove them, or add a test that exercises the path")
