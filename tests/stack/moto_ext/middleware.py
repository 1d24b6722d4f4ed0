"""WSGI middleware in front of moto: the /_sim control API, the EC2 call log and fault injection.

EC2 uses the query protocol: the action is the `Action` form field of the POST body and
the region is in the SigV4 credential scope (`Credential=AKID/DATE/REGION/ec2/aws4_request`).
SSM and CloudWatch Logs requests (JSON protocol, the action in X-Amz-Target) get the same action faults and call
log; other services (STS, KMS, ...) pass through untouched.
"""

import io
import json
import re
import uuid
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from . import iamctx, patches, runcommand, state

SCOPE = re.compile(r"Credential=[^/,]+/\d{8}/([^/]+)/([^/]+)/aws4_request")


def ec2_error(status: int, code: str, message: str) -> tuple[int, list, bytes]:
    """An error in EC2's XML error format (what the AWS SDKs parse for EC2)."""
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>").encode()
    return status, [("Content-Type", "text/xml;charset=UTF-8")], body


def json_error(status: int, code: str, message: str) -> tuple[int, list, bytes]:
    """An error in the awsJson format (SSM, CloudWatch Logs)."""
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, [("Content-Type", "application/x-amz-json-1.1")], body


# JSON-protocol services whose requests get action faults and the call log (SSM Run Command, its CloudWatch Logs).
JSON_FAULTED = ("ssm", "logs")
RUN_COMMAND_ACTIONS = ("SendCommand", "ListCommands", "GetCommandInvocation", "DescribeInstanceInformation",
                       "ListCommandInvocations", "CancelCommand")


# What each creating action's answer names as new (RunInstances with a known ClientToken answers the first
# reservation again: the id repeats, which is how a test tells "adopted" from "made twice").
CREATED = {
    "RunInstances": re.compile(rb"<instanceId>(i-[0-9a-f]+)</instanceId>"),
    "CreateSnapshots": re.compile(rb"<snapshotId>(snap-[0-9a-f]+)</snapshotId>"),
    "RegisterImage": re.compile(rb"<imageId>(ami-[0-9a-f]+)</imageId>"),
    "CopyImage": re.compile(rb"<imageId>(ami-[0-9a-f]+)</imageId>"),
    "CreateLaunchTemplateVersion": re.compile(
        rb"<launchTemplateId>(lt-[0-9a-f]+)</launchTemplateId>|<versionNumber>(\d+)</versionNumber>"),
}


def created_ids(action: str, result: tuple[int, list, bytes]) -> list[str]:
    pattern = CREATED.get(action)
    if not pattern:
        return []
    found = ["".join(g.decode() for g in m.groups() if g) for m in pattern.finditer(result[2])]
    if action == "CreateLaunchTemplateVersion":  # "lt-...:version"
        return [":".join(found)] if found else []
    return list(dict.fromkeys(found))


def form_params(form: dict) -> dict:
    return {k: v[0] if len(v) == 1 else v for k, v in form.items() if k not in ("Action", "Version")}


class SimMiddleware:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_sim/"):
            status, headers, body = self.control(environ)
            return self.respond(start_response, status, headers, body)

        scope = SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        agent = environ.get("HTTP_X_AMZ_USER_AGENT") or environ.get("HTTP_USER_AGENT", "")
        if scope and scope.group(2) != "ec2":
            # JSON protocols (SSM, STS ...): the action is the X-Amz-Target's operation.
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            if target:
                params, resources = iamctx.json_request(environ, scope.group(1), scope.group(2), agent)
                state.record_action(scope.group(2), target.rsplit(".", 1)[-1], agent, params, scope.group(1),
                                    resources)
                if scope.group(2) in JSON_FAULTED:
                    result = self.json_call(environ, scope.group(1), scope.group(2), target.rsplit(".", 1)[-1],
                                            agent)
                    return self.respond(start_response, *result)
        if not scope or scope.group(2) != "ec2":
            return self.app(environ, start_response)
        region = scope.group(1)

        # Read the body to find the action, then hand the app a fresh copy of it.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        environ["CONTENT_LENGTH"] = str(len(raw))
        form = parse_qs(raw.decode("utf-8", "replace")) if raw else {}
        form = form or parse_qs(environ.get("QUERY_STRING", ""))
        action = (form.get("Action") or ["?"])[0]

        # One EC2 request at a time: moto's backends and the sim counters are not thread-safe,
        # and serialising makes poll counts deterministic.
        with state.LOCK:
            # before the call: the tags and attributes IAM would evaluate (tests/e2e/test_iam.py)
            named = iamctx.ec2_resources(region, form_params(form)) if "app/ami-" in agent else {}
            # A DryRun (the trigger's preflight) launches nothing: action faults are for the real calls, and the call
            # log names it apart (moto_ext/dryrun.py answers it; its own fault is `dry_run_denied`).
            dry = (form.get("DryRun") or ["false"])[0].lower() == "true"
            fault = None if dry else state.take_action_fault(region, action)
            result, answer = self.call_or_fault(
                environ, fault, ec2_error, (503, "RequestLimitExceeded", "Request limit exceeded."),
                (500, "InternalError", "An internal error has occurred. (simulated lost response)"))
            created = created_ids(action, result) if result[0] == 200 else []
            result = answer
            params = form_params(form)
            state.record_call(region, f"{action}(DryRun)" if dry else action, result[0], params, created, agent)
            state.record_action("ec2", action, agent, params, region, named)
        return self.respond(start_response, *result)

    def json_call(self, environ, region: str, service: str, action: str, agent: str) -> tuple[int, list, bytes]:
        """An SSM or CloudWatch Logs request: action faults as for EC2, in the JSON error format (`__type`); a lost
        answer is performed, then answered HTTP 500 (issue 13: a lost SendCommand). The call log gets Run Command and
        Logs calls (not Parameter Store's, which tests of "no call before X" do not expect there)."""
        with state.LOCK:
            fault = state.take_action_fault(region, action)
        result, answer = self.call_or_fault(environ, fault, json_error, (400, "ThrottlingException", "Rate exceeded"),
                                            (500, "InternalServerError", "Internal error (simulated lost response)"))
        created = [m.decode() for m in re.findall(rb'"CommandId": ?"([0-9a-f-]{36})"', result[2])][:1] \
            if action == "SendCommand" and result[0] == 200 else []
        result = answer
        if service == "logs" or action in RUN_COMMAND_ACTIONS:
            with state.LOCK:
                state.record_call(region, action, result[0], None, created, agent)
        return result

    def call_or_fault(self, environ, fault: dict | None, error, throttle: tuple, lost: tuple) -> tuple[tuple, tuple]:
        """(what was done, what the client is answered), in the service's error format `error`: a throttle or error
        fault answers instead of the call; a lost answer performs the call, then answers `lost` (the action happened,
        but the client never sees the answer)."""
        kind = fault["kind"] if fault else None
        if kind == "throttle":
            result = error(*throttle)
        elif kind == "error":
            result = error(fault["status"], fault["code"], f"Simulated {fault['code']}.")
        else:
            result = self.run_app(environ)
        return result, error(*lost) if kind == "lost" else result

    def run_app(self, environ) -> tuple[int, list, bytes]:
        """Run moto and collect its whole response (so it is built under the lock)."""
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers

        chunks = self.app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return int(captured["status"].split()[0]), captured["headers"], body

    @staticmethod
    def respond(start_response, status, headers, body):
        from http import HTTPStatus

        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    @staticmethod
    def control(environ) -> tuple[int, list, bytes]:
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        json_headers = [("Content-Type", "application/json")]
        with state.LOCK:
            if path == "/_sim/faults" and method == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                try:
                    spec = json.loads(environ["wsgi.input"].read(length) or b"{}")
                    for one in spec if isinstance(spec, list) else [spec]:
                        state.add_fault(one)
                except (ValueError, KeyError, TypeError) as err:
                    return 400, json_headers, json.dumps({"error": str(err)}).encode()
            elif path == "/_sim/reset" and method == "POST":
                state.reset()
            elif path == "/_sim/snapshot_start_time" and method == "POST":
                # Backdates a snapshot (EC2 sets StartTime when it starts one): for tests of what happens to old
                # snapshots, e.g. retire's orphaned-snapshot sweep. Body: {"region", "snapshot_id", "start_time"}.
                length = int(environ.get("CONTENT_LENGTH") or 0)
                try:
                    spec = json.loads(environ["wsgi.input"].read(length) or b"{}")
                    patches.set_snapshot_start_time(spec["region"], spec["snapshot_id"], spec["start_time"])
                except (ValueError, KeyError, TypeError) as err:
                    return 400, json_headers, json.dumps({"error": str(err)}).encode()
            elif path == "/_sim/command_requested_time" and method == "POST":
                # Backdates a Run Command command (SSM sets RequestedDateTime when it is sent; ExpiresAfter follows):
                # for tests of what expires. Body: {"region", "command_id", "requested_time"}.
                length = int(environ.get("CONTENT_LENGTH") or 0)
                try:
                    spec = json.loads(environ["wsgi.input"].read(length) or b"{}")
                    runcommand.set_requested_time(spec["region"], spec["command_id"], spec["requested_time"])
                except (ValueError, KeyError, TypeError) as err:
                    return 400, json_headers, json.dumps({"error": str(err)}).encode()
            elif not (path in ("/_sim/calls", "/_sim/state") and method == "GET"):
                return 404, json_headers, b'{"error": "unknown /_sim endpoint"}'
            return 200, json_headers, json.dumps(state.snapshot()).encode()
