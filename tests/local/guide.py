"""infra/DEPLOY.md as a program: its `sh` blocks, in order, run by bash against the local stack
(tests/e2e/test_deploy_guide.py).

What runs for real: every `aws ...` line, with the AWS CLI (.tools/awscli) pointed at the local stack's moto, and
`make preflight`, the repository's Makefile target, whose `aws lambda invoke` reaches the deployed trigger through
this module's control server (it maps the function ARN of the stack's output to the handler process, as Lambda
maps it to the function). What the local stack stands in for, each in one place below (`Guide.handle`):
- `make package`: the handlers are the e2e build of the same workspace (CI builds the zips beside `make test`);
- `sam deploy` / `make deploy`: the local stack deploys `infra/template.yaml` into moto's CloudFormation with the
  block's `--stack-name` and `--parameter-overrides` (CAPABILITY_NAMED_IAM must be among `--capabilities`, as
  CloudFormation requires for the named instance profiles);
- EventBridge's delivery: an `aws events put-events` entry that the deployed release rule's pattern matches (moto's
  pattern engine) is sent to the trigger, as the rule's target would be.
A block preceded by `<!-- not run by the test: <why> -->` is skipped, with its reason in the log.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from .stack import ROOT, TOOLS, Stack, http

DEPLOY_MD = ROOT / "infra" / "DEPLOY.md"
AWS_CLI = TOOLS / "awscli" / "bin"
NOT_RUN = re.compile(r"<!--\s*not run by the test:\s*(.+?)\s*-->")


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    text: str
    skip: str | None  # why it is not run, or None


def blocks(text: str) -> list[Block]:
    """The `sh` blocks of a Markdown text, in order."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start, body = i, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            why = NOT_RUN.search(lines[start - 1]) if start else None
            out.append(Block(start + 1, "\n".join(body) + "\n", why.group(1) if why else None))
        i += 1
    return out


# The shell the blocks run in: `sam` and `make package|deploy` go to the control server; `make` otherwise is the
# repository's Makefile; `aws` is the real CLI, and a successful `events put-events` is handed to EventBridge's stand-in.
PRELUDE = r"""
set -euo pipefail
shopt -s inherit_errexit
guide() { "$GUIDE_PY" -m local.guide "$@"; }
sam() { guide sam "$@"; }
make() {
  case "${1:-}" in
    package | deploy) guide make "$@" ;;
    *) command make --no-print-directory -f "$GUIDE_ROOT/Makefile" "$@" ;;
  esac
}
aws() {
  # AWS CLI v1 sends sqs to its us-east-1 host `queue.amazonaws.com` unless --endpoint-url is given, whatever
  # AWS_ENDPOINT_URL says (awscli/customizations/overridesslcommonname.py): the flag points it at the local stack.
  if [[ "${1:-}" == sqs ]]; then command aws --endpoint-url "$AWS_ENDPOINT_URL" "$@" || return; return 0; fi
  command aws "$@" || return
  if [[ "${1:-} ${2:-}" == "events put-events" ]]; then guide deliver "$@"; fi
}
"""


class Guide:
    """Runs the guide's blocks in a working directory of their own (files the user writes stay there), with
    `infra/` and the Makefile reachable as in a checkout."""

    def __init__(self, stack: Stack, workdir: Path, fill_in: dict[str, str]):
        self.stack, self.workdir, self.fill_in = stack, workdir, fill_in
        self.log: list[str] = []
        self.delivered: list[dict] = []  # trigger outputs of the release events delivered
        self.deployments: list[dict] = []  # the parameters of each `sam deploy`
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.control_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        if not (workdir / "infra").exists():
            (workdir / "infra").symlink_to(ROOT / "infra")

    def close(self) -> None:
        self._server.shutdown()

    def script(self, text: str) -> str:
        """The blocks as one bash script, each announced on stderr; the values a user fills in (`NAME=value` at the
        start of a line of the first block that sets them) replaced by the local stack's."""
        parts = [PRELUDE]
        for b in blocks(text):
            if b.skip:
                self.log.append(f"DEPLOY.md:{b.line}: not run: {b.skip}")
                continue
            body = b.text
            for name, value in self.fill_in.items():
                body = re.sub(rf"^(\s*(?:export\s+)?){name}=\S+", rf"\g<1>{name}={shlex.quote(value)}", body,
                              flags=re.M)
            parts.append(f'echo "::block DEPLOY.md:{b.line}" >&2\n{body}')
        return "\n".join(parts)

    def run(self, text: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        text = DEPLOY_MD.read_text() if text is None else text
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({
            "PATH": f"{AWS_CLI}:{env.get('PATH', '')}",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_PAGER": "",
            "AWS_ENDPOINT_URL": self.stack.moto_url, "AWS_ENDPOINT_URL_LAMBDA": self.control_url,
            "GUIDE_PY": sys.executable, "GUIDE_CONTROL": self.control_url, "GUIDE_ROOT": str(ROOT),
            "PYTHONPATH": str(ROOT / "tests"),
        })
        return subprocess.run(["bash", "-c", self.script(text)], cwd=self.workdir, env=env, capture_output=True,
                              text=True, timeout=timeout)

    def fire_schedules(self, scheduled_time: str) -> dict[str, dict]:
        """Every EventBridge Scheduler schedule of the account, fired once at `scheduled_time` as Scheduler fires
        it (moto keeps schedules but never fires them): its target's input, `<aws.scheduler.scheduled-time>`
        replaced, sent to the function its ARN names. {schedule name: the trigger's answer}."""
        scheduler = self.stack.boto3("scheduler")
        out = {}
        for summary in scheduler.list_schedules()["Schedules"]:
            target = scheduler.get_schedule(Name=summary["Name"], GroupName=summary.get("GroupName", "default"))[
                "Target"]
            payload = json.loads(target["Input"].replace("<aws.scheduler.scheduled-time>", scheduled_time))
            ok, answer = self.stack.invoke(self.stack.binary_of(target["Arn"]), payload)
            out[summary["Name"]] = answer
        return out

    # -- the stand-ins ---------------------------------------------------------------------------------------
    def handle(self, argv: list[str]) -> tuple[int, str]:
        """(exit status, output) of one stood-in command."""
        if argv[:2] == ["make", "package"]:
            return 0, "make package: stood in for by the e2e build of the handlers\n"
        if argv[:2] == ["make", "deploy"] or argv[:2] == ["sam", "deploy"]:
            return self._deploy(argv[2:])
        if argv[:1] == ["deliver"]:
            return self._deliver(argv[1:])
        return 2, f"the local stack has no stand-in for: {' '.join(argv)}\n"

    def _deploy(self, args: list[str]) -> tuple[int, str]:
        opts, key = {}, None
        for a in args:
            if a.startswith("--"):
                key = a[2:]
                opts.setdefault(key, [])
            elif key:
                opts[key].append(a)
        if "guided" in opts:
            return 2, "sam deploy --guided asks questions: the guide must give the parameters\n"
        if "CAPABILITY_NAMED_IAM" not in opts.get("capabilities", []):
            return 1, ("Requires capabilities : [CAPABILITY_NAMED_IAM] (the stack creates named instance "
                       "profiles)\n")
        if opts.get("template-file", ["infra/template.yaml"]) != ["infra/template.yaml"]:
            return 1, f"unexpected template {opts['template-file']}\n"
        params = dict(p.split("=", 1) for p in opts.get("parameter-overrides", []))
        stack_name = (opts.get("stack-name") or ["ami-pipeline"])[0]
        self.deployments.append({"stack": stack_name, "params": params})
        self.stack.deploy(params, stack_name=stack_name)
        return 0, f"deployed {stack_name} with {sorted(params)}\n"

    def _deliver(self, args: list[str]) -> tuple[int, str]:
        from moto.events.models import EventPattern

        entries = json.loads(args[args.index("--entries") + 1])
        events = self.stack.boto3("events")
        out = []
        for entry in entries:
            bus = entry.get("EventBusName", "default")
            event = {"version": "0", "id": f"guide-{len(self.delivered)}", "source": entry["Source"],
                     "detail-type": entry["DetailType"], "account": self.stack.account, "time": self.stack.now(),
                     "region": self.stack.region, "resources": entry.get("Resources", []),
                     "detail": json.loads(entry["Detail"])}
            for rule in events.list_rules(EventBusName=bus)["Rules"]:
                if rule.get("EventPattern") and EventPattern.load(rule["EventPattern"]).matches_event(event):
                    ok, result = self.stack.invoke("ami-trigger", event)
                    self.delivered.append(result)
                    out.append(f"{rule['Name']} -> trigger: {json.dumps(result)}")
        return 0, "\n".join(out) + "\n"


def _handler(guide: Guide):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            m = re.fullmatch(r"/2015-03-31/functions/([^/]+)/invocations", self.path)
            if m:  # Lambda's Invoke API: the function (name or ARN) -> its handler process
                fn = guide.stack.binary_of(unquote(m.group(1)))
                status, headers, out = http("POST", f"{guide.stack.invoke_url}/2015-03-31/functions/{fn}/invocations",
                                            body or b"{}")
                payload = json.dumps(out).encode() if not isinstance(out, str) else out.encode()
                # Lambda answers a function's error with 200, the error object and X-Amz-Function-Error (Invoke API
                # reference); cargo lambda watch answers it with an HTTP error, which the CLI would retry.
                failed = status >= 400 or any(k.lower() == "x-amz-function-error" for k in headers)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                if failed:
                    self.send_header("X-Amz-Function-Error", "Unhandled")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            rc, text = guide.handle(json.loads(body))
            payload = json.dumps({"rc": rc, "out": text}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def main(argv: list[str]) -> int:
    """The client side of a stood-in command (the prelude's `guide`): asks the control server, prints its output."""
    status, _, out = http("POST", os.environ["GUIDE_CONTROL"], argv)
    if status != 200 or not isinstance(out, dict):
        print(f"guide: control server answered HTTP {status}: {out}", file=sys.stderr)
        return 2
    sys.stdout.write(out["out"])
    return out["rc"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
