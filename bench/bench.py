#!/usr/bin/env python3
"""`make bench`: cold start, warm latency, peak memory, package size, cost per run, scale and build time, side by side
with a Python/boto3 baseline, on the local stack. Writes bench/results.json and BENCHMARKS.md (from the JSON).

    .tools/venv/bin/python bench/bench.py [--runs 10] [--scale 50] [--skip-package]
    python3 bench/bench.py --cost-only [--event-log .tools/logs/RUN/executions/NAME.json]

`--cost-only` needs nothing built: it prints the orchestration cost per reference run, the detection delay and the
worst-case history of the committed definition (from a recorded local execution when given, else from the
definition's success path at 300 ms per call), and exits.

Needs: the release binaries (`cargo build --release --bins`, target/release), the arm64 zips (`make package`, dist/),
the pinned tools (scripts/install/stack.sh) and the bench venv (.tools/bench: boto3, bench/requirements.txt).
The Makefile's `bench` target does all of that. Not part of `make test`: figures are measured, not asserted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # the local stack package, tests/local (pytest: tests/pytest.ini)

try:
    import local  # noqa: E402
except ImportError:  # --cost-only runs without the stack's dependencies (boto3)
    local = None

BENCH_PY = ROOT / ".tools" / "bench" / "bin" / "python"
RELEASE = ROOT / "target" / "release"
DIST = ROOT / "dist"
TEMPLATE = ROOT / "infra" / "template.yaml"
DEFINITION = ROOT / "statemachine" / "pipeline.asl.json"
CONTRACT_JSON = ROOT / "infra" / "contract.json"

# Public prices (us-east-1, 2026): Standard workflow transitions, arm64 Lambda compute, Lambda requests.
PRICE_TRANSITION = 0.025 / 1000
PRICE_GB_S_ARM = 0.0000133334
PRICE_REQUEST = 0.20 / 1_000_000
# The reference run of the issue: minutes per step; the copy goes to 3 regions (home and 2 more), all started in one
# call and polled in one call.
REFERENCE = {"build": 30, "snapshot": 15, "register": 10, "test": 5, "copy": 20}
REFERENCE_REGIONS = 3
# The long steps: `<Title> Start` (Task), `<Title> Wait` (the first wait), `<Title> Status` (Task), whose Retry on
# AmiPipeline.NotReady is the poll loop: one transition (and one invocation) per poll.
LOOPS = {"build": "Build", "snapshot": "Snapshot", "register": "Register", "test": "Test", "copy": "Copy"}
NOT_READY = "AmiPipeline.NotReady"
# For comparison: the same loop with a fixed 15 s interval (BackoffRate 1, first wait 15 s).
FIXED_POLL = 15
# Step Functions history: a Task is 5 events (entered, scheduled, started, succeeded/failed, exited) and each retry 3
# more (scheduled, started, failed); Pass, Wait, Choice, Fail are 2; plus ExecutionStarted and the end.
HISTORY_QUOTA = 25_000
# EC2 token buckets (refill per second) of the calls that matter at scale (aws-facts.md).
REFILL = {"RunInstances": 2, "CopyImage": 1, "CreateSnapshots": 5, "RegisterImage": 5, "DeregisterImage": 5,
          "ModifyImageAttribute": 5, "TerminateInstances": 5}
GOALS = {"cold_start_ratio": 5.0, "peak_rss_mb": 32.0, "zip_mb": 8.0, "cost_usd": 0.003, "detection_delay_pct": 15.0}


def median_spread(values: list[float]) -> dict:
    values = sorted(values)
    return {"median": round(statistics.median(values), 2), "min": round(values[0], 2), "max": round(values[-1], 2),
            "n": len(values)}


def peak_rss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) if m else 0


# -- cold start, warm latency, memory -----------------------------------------------------------------------------

class RuntimeProxy:
    """Serves the Lambda runtime API at the root path (`host:port`, as awslambdaric and AWS's own runtimes expect)
    and forwards it to cargo lambda's `/.rt/<function>` prefix; our handlers and the baseline both go through it, so
    both pay the same hop. One proxy per function, reused by its successive processes. It keeps exactly one
    long-poll for work open upstream and hands what it gets to the current process: a killed process's poll would
    otherwise stay open in cargo lambda and swallow the next process's invocation."""

    def __init__(self, stack: local.Stack, fn: str):
        import http.client
        import http.server

        host, port = stack.invoke_url.removeprefix("http://").split(":")
        prefix = f"/.rt/{fn}"
        proxy = self
        self.generation = 0
        self.polled = threading.Event()
        self.cond = threading.Condition()
        self.ready: list = []  # invocations fetched from cargo lambda, not yet handed out
        self.closed = False

        def upstream(method: str, path: str, body=None, headers=None):
            conn = http.client.HTTPConnection(host, int(port), timeout=900)
            try:
                conn.request(method, prefix + path, body=body, headers=headers or {})
                r = conn.getresponse()
                return r.status, r.getheaders(), r.read()
            finally:
                conn.close()

        def fetch():
            while not proxy.closed:
                try:
                    answer = upstream("GET", "/2018-06-01/runtime/invocation/next")
                except OSError:
                    time.sleep(0.05)
                    continue
                with proxy.cond:
                    proxy.ready.append(answer)
                    proxy.cond.notify_all()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY on each accepted socket. reply() sends the headers and the body in two writes; with Nagle
            # on, the body waits for the ACK of the headers, which a kept-alive client (lambda_runtime's hyper pool)
            # delays ~40 ms: +40 ms on every warm invocation of ours, not of the baseline, whose urllib connects anew
            # per request (bench/WARM_LATENCY.md).
            disable_nagle_algorithm = True

            def forward(self):
                generation = proxy.generation
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/invocation/next"):
                    proxy.polled.set()  # the process is initialised and waits for work
                    with proxy.cond:
                        while not (proxy.ready and generation == proxy.generation) and not proxy.closed:
                            proxy.cond.wait(0.5)
                        if generation != proxy.generation or proxy.closed:
                            return  # its process is gone
                        answer = proxy.ready.pop(0)
                    return self.reply(*answer)
                try:
                    answer = upstream(self.command, self.path, body or None,
                                      {k: v for k, v in self.headers.items()
                                       if k.lower() not in ("host", "content-length", "connection")})
                except OSError:
                    return
                self.reply(*answer)

            def reply(self, status, headers, data):
                self.send_response(status)
                for k, v in headers:
                    if k.lower() == "lambda-runtime-deadline-ms" and int(v) < 10**12:
                        # cargo lambda sends the timeout itself; AWS sends an epoch-ms deadline
                        v = str(int(time.time() * 1000) + int(v))
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

            do_GET = do_POST = forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=fetch, daemon=True).start()

    def next_process(self) -> None:
        """The process before is gone: its pending poll gets nothing more."""
        with self.cond:
            self.generation += 1
            self.polled.clear()
            self.cond.notify_all()

    def close(self):
        self.closed = True
        self.server.shutdown()
        self.server.server_close()


_PROXIES: dict[str, RuntimeProxy] = {}


def invoke(stack: local.Stack, fn: str, payload, timeout: float = 30.0) -> tuple[bool, dict]:
    """One invocation with a bounded wait (a lost invocation must not stall the benchmark)."""
    status, headers, body = local.http("POST", f"{stack.invoke_url}/2015-03-31/functions/{fn}/invocations", payload,
                                       timeout=timeout)
    failed = status >= 400 or (isinstance(body, dict) and "errorType" in body)
    return (not failed), body if isinstance(body, dict) else {"raw": body}


def one_process(stack: local.Stack, cmd: list[str], env: dict, payloads: list, fn: str, cwd: Path = ROOT,
                scheme: bool = True) -> dict | None:
    """Starts `cmd` as a fresh Lambda process for `fn` (nothing else serves it) and invokes it with each payload in
    turn. cold_ms: from process start until the first invocation has returned (sent the moment the process first
    asks for work); warm_ms: each later invocation; rss: VmHWM. The runtime API goes through the function's
    RuntimeProxy (scheme: the address with `http://`). None when an invocation was lost (counted, not retried)."""
    proxy = _PROXIES.get(fn) or _PROXIES.setdefault(fn, RuntimeProxy(stack, fn))
    env = dict(env, AWS_LAMBDA_RUNTIME_API=(f"http://{proxy.address}" if scheme else proxy.address))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not proxy.polled.wait(120):
            raise RuntimeError(f"{fn}: the process never asked for an invocation in 120 s")
        answers = [invoke(stack, fn, payloads[0])]
        cold = (time.perf_counter() - t0) * 1000
        warm = []
        for p in payloads[1:]:
            s = time.perf_counter()
            answers.append(invoke(stack, fn, p))
            warm.append((time.perf_counter() - s) * 1000)
        rss = peak_rss_kb(proc.pid)
    except (TimeoutError, urllib.error.URLError):
        LOST[fn] = LOST.get(fn, 0) + 1
        print(f"bench: {fn}: an invocation got no answer in 30 s; sample dropped", flush=True)
        return None
    finally:
        local.stop_process(proc, 5)
        proxy.next_process()
    return {"cold_ms": cold, "warm_ms": warm, "rss_kb": rss, "answers": answers}


LOST: dict[str, int] = {}


def samples_of(n: int, make) -> list[dict]:
    """n complete samples (lost ones are re-taken, at most n more times)."""
    out: list[dict] = []
    for _ in range(2 * n):
        if len(out) == n:
            break
        s = make()
        if s is not None:
            out.append(s)
    if not out:
        raise RuntimeError("no complete sample")
    return out


def rust_cmd(fn: str) -> list[str]:
    return [str(RELEASE / fn)]


def baseline_cmd() -> list[str]:
    return [str(BENCH_PY), str(HERE / "baseline" / "bootstrap.py")]


def baseline_env(stack: local.Stack, queue: str) -> dict:
    env = stack.function_env("baseline", queue)
    env["AWS_ENDPOINT_URL"] = stack.moto_url
    env["PYTHONPATH"] = str(HERE / "baseline")
    env["LAMBDA_TASK_ROOT"] = str(HERE / "baseline")
    return env


class Serving:
    """One process of a function on its queue while the `with` block runs (a Stack started with concurrency 0
    serves nothing)."""

    def __init__(self, stack: local.Stack, fn: str):
        # through the function's proxy: its long-poll would otherwise take this process's invocations
        self.proxy = _PROXIES.get(fn) or _PROXIES.setdefault(fn, RuntimeProxy(stack, fn))
        env = dict(stack.function_env(fn), AWS_LAMBDA_RUNTIME_API=f"http://{self.proxy.address}")
        self.proc = subprocess.Popen(rust_cmd(fn), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)
        self.proxy.next_process()


def stopped_builder(stack: local.Stack, run: dict) -> dict:
    """A builder that finished provisioning (stopped, result SUCCESS on its console), launched by the real
    ami-build `start`; returns the `status` request both handlers then answer."""
    execution = {"name": f"bench-status-{uuid.uuid4().hex[:8]}",
                 "id": f"arn:aws:states:{local.REGION}:{local.ACCOUNT}:execution:ami-pipeline:bench"}
    request = {"action": "start", "execution": execution, "run": run, "steps": {}}
    with Serving(stack, "ami-build"):
        ok, build = invoke(stack, "ami-build", request)
        if not ok:
            raise RuntimeError(f"build start: {build}")
        status = dict(request, action="status", steps={"build": build})
        for _ in range(20):  # the emulated guest finishes after a few polls
            ok, polled = invoke(stack, "ami-build", status)
            if not ok:
                raise RuntimeError(f"build status: {polled}")
            if polled["status"] == "ready":
                break
        else:
            raise RuntimeError(f"the builder never got ready: {polled}")
    return status


def measure_functions(stack: local.Stack, run: dict, runs: int, warm: int) -> dict:
    """Cold start on a stack that serves nothing: each invocation is queued on the function's name before its
    process starts."""
    out: dict = {"functions": {}, "head_to_head": {}}
    # 1. every function, first invocation `{}`: init (config, clients) and a rejected input, no AWS call
    for fn in local.FUNCTIONS:
        env = stack.function_env(fn)
        samples = samples_of(runs, lambda: one_process(stack, rust_cmd(fn), env, [{}] * (1 + warm), fn))
        wrong = [a for s in samples for _, a in s["answers"] if a.get("errorType") != "AmiPipeline.InvalidInput"]
        if wrong:
            raise RuntimeError(f"{fn}: not the handler's answer: {wrong[:2]}")
        out["functions"][fn] = summarize(samples)
        print(f"bench: {fn:<16} cold {out['functions'][fn]['cold_ms']['median']:7.1f} ms  "
              f"rss {out['functions'][fn]['peak_rss_mb']['median']:5.1f} MB", flush=True)
    base_env = baseline_env(stack, "ami-build")
    samples = samples_of(runs, lambda: one_process(stack, baseline_cmd(), base_env, [{}] * (1 + warm), "ami-build",
                                                   cwd=HERE / "baseline", scheme=False))
    wrong = [a for s in samples for _, a in s["answers"] if a.get("errorType") != "ValueError"]
    if wrong:
        raise RuntimeError(f"baseline: not the handler's answer: {wrong[:2]}")
    out["baseline_invalid_input"] = summarize(samples)

    # 2. the same EC2 calls: build status on a stopped builder (DescribeInstances + GetConsoleOutput)
    request = stopped_builder(stack, run)
    for name, cmd, env, cwd, scheme in [
        ("ami-build status", rust_cmd("ami-build"), stack.function_env("ami-build"), ROOT, True),
        ("python boto3 baseline", baseline_cmd(), base_env, HERE / "baseline", False),
    ]:
        samples = samples_of(runs, lambda: one_process(stack, cmd, env, [request] * (1 + warm), "ami-build", cwd=cwd,
                                                       scheme=scheme))
        failed = [a for s in samples for ok, a in s["answers"] if not ok]
        if failed:
            raise RuntimeError(f"{name}: failed: {failed[:2]}")
        out["head_to_head"][name] = summarize(samples)
        print(f"bench: {name:<22} cold {out['head_to_head'][name]['cold_ms']['median']:7.1f} ms  warm "
              f"{out['head_to_head'][name]['warm_ms']['median']:6.2f} ms", flush=True)
    ours, base = out["head_to_head"]["ami-build status"], out["head_to_head"]["python boto3 baseline"]
    out["cold_start_ratio"] = round(base["cold_ms"]["median"] / ours["cold_ms"]["median"], 1)
    out["warm_ratio"] = round(base["warm_ms"]["median"] / ours["warm_ms"]["median"], 1)
    out["lost_samples"] = dict(LOST)
    return out


def summarize(samples: list[dict]) -> dict:
    return {"cold_ms": median_spread([s["cold_ms"] for s in samples]),
            "warm_ms": median_spread([w for s in samples for w in s["warm_ms"]] or [0.0]),
            "peak_rss_mb": median_spread([s["rss_kb"] / 1024 for s in samples])}


# -- cost per run and detection delay -----------------------------------------------------------------------------

def load_definition() -> dict:
    return json.loads(DEFINITION.read_text())


def poll_retrier(definition: dict, title: str) -> dict:
    """The committed `<title> Status` Task's NotReady retrier: interval, backoff, cap, attempts; `first` is the
    first wait, INTERVAL / (BACKOFF - 1) by the rule the handlers follow (ami_core::model::steps::polling), so every
    later poll comes at most (BACKOFF - 1) of the elapsed time after the resource is ready."""
    state = definition["States"][f"{title} Status"]
    (r,) = [r for r in state["Retry"] if r["ErrorEquals"] == [NOT_READY]]
    interval, rate = float(r.get("IntervalSeconds", 1)), float(r.get("BackoffRate", 2.0))
    return {"interval": interval, "rate": rate, "cap": float(r.get("MaxDelaySeconds", float("inf"))),
            "attempts": int(r.get("MaxAttempts", 3)), "jitter": r.get("JitterStrategy", "NONE"),
            "first": round(interval / (rate - 1), 6)}


def fixed_retrier(seconds: float) -> dict:
    return {"interval": seconds, "rate": 1.0, "cap": float("inf"), "attempts": 99_999_999, "jitter": "NONE",
            "first": seconds}


def call_times(duration_s: float, retrier: dict) -> list[float]:
    """Seconds from the step's start of every status call until the first one at or after duration_s: the first
    after the Wait, then retry k after min(interval * rate^k, cap)."""
    times = [retrier["first"]]
    while times[-1] < duration_s:
        k = len(times) - 1
        if k >= retrier["attempts"]:
            raise ValueError(f"the retrier runs out ({retrier['attempts']} retries) before {duration_s} s")
        times.append(times[-1] + min(retrier["interval"] * retrier["rate"] ** k, retrier["cap"]))
    return times


def schedule(duration_s: float, retrier: dict) -> tuple[int, float, float]:
    """(status calls, seconds from ready until the pipeline notices, worst case of that: the gap between the two
    calls around duration_s, i.e. the resource ready just after the call before) for a step of duration_s."""
    times = call_times(duration_s, retrier)
    before = times[-2] if len(times) > 1 else 0.0
    return len(times), times[-1] - duration_s, times[-1] - before


def memory_mb() -> dict[str, int]:
    """MemorySize per function from the SAM template (CodeUri ../dist/<fn>/...)."""
    text = TEMPLATE.read_text()
    sizes = {}
    for block in re.split(r"\n  \w+Function:\n", text):
        fn = re.search(r"dist/(ami-[a-z-]+)/", block)
        mem = re.search(r"MemorySize: (\d+)", block)
        if fn and mem:
            sizes[fn.group(1)] = int(mem.group(1))
    return sizes


def function_of(state: dict) -> str:
    """The local function name of a Task: the binary behind its `${XFunctionArn}` (infra/contract.json)."""
    functions = json.loads(CONTRACT_JSON.read_text())["functions"]
    return {f["substitution"]: binary for binary, f in functions.items()}[state["Resource"][2:-1]]


def success_path(definition: dict, run: dict) -> list[str]:
    """The states a successful execution with input {run} enters, in order (Choices on `$.run.<field>`)."""
    states, name, path = definition["States"], definition["StartAt"], []
    while name:
        path.append(name)
        state = states[name]
        if state["Type"] == "Choice":
            nxt = state.get("Default")
            for c in state["Choices"]:
                value = run.get(c["Variable"].removeprefix("$.run."))
                if ("BooleanEquals" in c and value == c["BooleanEquals"]) or \
                        ("StringEquals" in c and value == c["StringEquals"]):
                    nxt = c["Next"]
                    break
            name = nxt
        else:
            name = None if state.get("End") else state.get("Next")
    return path


def reference_detail(definition: dict, per_call_ms: float) -> dict:
    """An event log as the local runner writes it, for a successful image-source run whose every status call finds
    the resource ready (cost() then recounts the polls for the reference durations)."""
    path = success_path(definition, {"build": True})
    states = definition["States"]
    events = [{"type": "StateEntered", "state": n, "stateType": states[n]["Type"]} for n in path]
    tasks = [{"state": n, "function": function_of(states[n]), "action": states[n]["Parameters"]["action"],
              "ms": per_call_ms, "error": None} for n in path if states[n]["Type"] == "Task"]
    return {"events": events, "tasks": tasks,
            "input": {"run": {"regions": [f"region-{i}" for i in range(REFERENCE_REGIONS)]}}}


def cost(detail: dict, per_call_ms: float | None, definition: dict) -> dict:
    """Transitions, invocations and GB-s of the reference run, built from one local execution's event log: every
    state entered and every retry as they ran (one billed transition each), each long step's status calls
    recounted for the reference durations (one transition and one invocation per poll). The copy is one loop for
    every region, so the number of regions changes no count."""
    entered = [e["state"] for e in detail["events"] if e["type"] == "StateEntered"]
    retried = [e["state"] for e in detail["events"] if e["type"] == "StateRetried"]
    tasks = detail["tasks"]
    mem = memory_mb()
    fn_ms: dict[str, list[float]] = {}
    for t in tasks:
        fn_ms.setdefault(t["function"], []).append(t["ms"])
    ms_of = {fn: (per_call_ms if per_call_ms is not None else statistics.median(v)) for fn, v in fn_ms.items()}
    gb_s_of = {fn: ms_of[fn] / 1000 * mem.get(fn, 128) / 1024 for fn in ms_of}
    out = {}
    for mode in ("backoff", f"fixed {FIXED_POLL} s"):
        transitions = len(entered) + len(retried)
        invocations = len(tasks)
        gbs = sum(gb_s_of[t["function"]] for t in tasks)
        delays = {}
        for step, title in LOOPS.items():
            retrier = poll_retrier(definition, title) if mode == "backoff" else fixed_retrier(FIXED_POLL)
            polls, delay, worst = schedule(REFERENCE[step] * 60, retrier)
            status = f"{title} Status"
            fn = function_of(definition["States"][status])
            extra = polls - sum(1 for t in tasks if t["state"] == status)
            transitions += extra
            invocations += extra
            gbs += extra * gb_s_of[fn]
            step_s = REFERENCE[step] * 60
            delays[step] = {"seconds": round(delay, 1), "pct_of_step": round(100 * delay / step_s, 1),
                            "worst_seconds": round(worst, 1), "worst_pct": round(100 * worst / step_s, 1),
                            "polls": polls}
        usd = transitions * PRICE_TRANSITION + invocations * PRICE_REQUEST + gbs * PRICE_GB_S_ARM
        out[mode] = {"transitions": round(transitions), "invocations": round(invocations), "gb_s": round(gbs, 3),
                     "usd": round(usd, 5), "usd_transitions": round(transitions * PRICE_TRANSITION, 5),
                     "detection_delay": delays,
                     "worst_delay_pct": max(d["worst_pct"] for d in delays.values())}
    return out


def worst_case_history(definition: dict) -> dict:
    """The most history events and transitions any execution can take, over the graph's paths with every retrier
    exhausted, then caught (as functions/core/src/definition/tests.rs computes it from the same JSON)."""
    states = definition["States"]

    def own(state: dict) -> tuple[int, int]:
        retries = sum(r.get("MaxAttempts", 3) for r in state.get("Retry", []))
        return (5 + 3 * retries, 1 + retries) if state["Type"] == "Task" else (2, 1)

    memo: dict[str, tuple[int, int]] = {}

    def worst(name: str, seen: tuple[str, ...]) -> tuple[int, int]:
        if name in memo:
            return memo[name]
        if name in seen:
            raise ValueError(f"the definition loops through {name}: its history is not bounded")
        state = states[name]
        nexts = [n for n in [state.get("Next"), state.get("Default")] +
                 [c["Next"] for k in ("Choices", "Catch") for c in state.get(k, [])] if n]
        rest = max((worst(n, seen + (name,)) for n in nexts), default=(0, 0))
        e, t = own(state)
        memo[name] = (e + rest[0], t + rest[1])
        return memo[name]

    events, transitions = worst(definition["StartAt"], ())
    events += 2  # ExecutionStarted, ExecutionFailed/Succeeded
    return {"events": events, "transitions": transitions, "quota": HISTORY_QUOTA,
            "pct_of_quota": round(100 * events / HISTORY_QUOTA, 1),
            "usd_transitions": round(transitions * PRICE_TRANSITION, 4)}


# CloudWatch Logs: the state machine logs at level ALL with execution data (infra/template.yaml). Assumed sizes: an
# event's envelope (ids, type, timestamps, ARNs) and the state data an input/output-bearing event carries (the run
# with its recipe, about the size of infra/recipes/al2023-web.json, plus the steps' outputs so far).
LOG_ENVELOPE_BYTES = 350
PRICE_LOG_GB = 0.50


def log_volume(c: dict, detail: dict) -> dict:
    """Log events per reference run by level: ALL logs every history event (a Task 5, a retry 3, other states 2);
    ERROR logs failure events only, and every NotReady poll is a LambdaFunctionFailed. Bytes are an estimate."""
    states = {e["state"]: e.get("stateType") for e in detail["events"] if e["type"] == "StateEntered"}
    entered = [e["state"] for e in detail["events"] if e["type"] == "StateEntered"]
    tasks_entered = sum(1 for n in entered if states.get(n) == "Task")
    retries = c["transitions"] - len(entered)  # every transition beyond the entries is a retry (a poll)
    events = 5 * tasks_entered + 2 * (len(entered) - tasks_entered) + 3 * retries + 2
    # with data: StateEntered/Exited carry the state, TaskScheduled the parameters, Succeeded the output
    with_data = 4 * tasks_entered + 2 * (len(entered) - tasks_entered) + retries + 2
    recipe = (ROOT / "infra" / "recipes" / "al2023-web.json").stat().st_size
    data_bytes = 2 * recipe  # the run (recipe and release) and the steps so far, roughly
    all_bytes = events * LOG_ENVELOPE_BYTES + with_data * data_bytes
    error_events = retries  # LambdaFunctionFailed per NotReady poll (a successful run has no other failure)
    error_bytes = error_events * (LOG_ENVELOPE_BYTES + 200)  # error name and cause
    return {"level_all_events": events, "level_all_kb": round(all_bytes / 1024),
            "level_all_usd": round(all_bytes / 2**30 * PRICE_LOG_GB, 5),
            "level_error_events": error_events, "level_error_kb": round(error_bytes / 1024),
            "assumed_state_bytes": data_bytes}


def cost_report(detail: dict | None, definition: dict) -> dict:
    """The cost section of results.json: from a recorded local execution, or from the definition alone."""
    measured = detail is not None
    if detail is None:
        detail = reference_detail(definition, 300.0)
    regions = len((detail.get("input") or {}).get("run", {}).get("regions", [])) or None
    contract = json.loads((ROOT / "infra" / "contract.json").read_text()).get("polling", {})
    for title in LOOPS.values():  # the handlers' first wait (contract) is the rule's, for every loop
        first = poll_retrier(definition, title)["first"]
        if contract.get("first_poll_seconds") not in (None, first):
            raise ValueError(f"{title}: first wait {contract['first_poll_seconds']} s in infra/contract.json, "
                             f"{first} s by IntervalSeconds / (BackoffRate - 1)")
    report = {"source": "the local runner's event log of one release" if measured else
              "the committed definition's success path (image source; 300 ms per call)",
              "reference_minutes": REFERENCE, "copy_regions": REFERENCE_REGIONS, "local_regions": regions,
              "poll_retriers": {t: poll_retrier(definition, t) for t in LOOPS.values()},
              "local_run": {"transitions": sum(1 for e in detail["events"]
                                               if e["type"] in ("StateEntered", "StateRetried")),
                            "invocations": len(detail["tasks"])},
              "300_ms_per_call": cost(detail, 300.0, definition),
              "worst_case_history": worst_case_history(definition)}
    if measured:
        report["measured_durations"] = cost(detail, None, definition)
    report["logs"] = log_volume(report["300_ms_per_call"]["backoff"], detail)
    return report


# -- scale --------------------------------------------------------------------------------------------------------

def scale(stack: local.Stack, n: int) -> dict:
    """n releases of n different pipelines at once; all must succeed."""
    for i in range(n):
        stack.put_recipe(stack.recipe(f"scale-{i:03d}"))
    stack.sim("POST", "reset")
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        started = list(pool.map(lambda i: stack.invoke("ami-trigger", local.release_event(f"scale-{i:03d}", "1.0.0")),
                                range(n)))
    names = [out["execution_name"] for ok, out in started if ok]
    if len(names) != n:
        raise RuntimeError(f"scale: {n - len(names)} triggers failed: {[o for ok, o in started if not ok][:2]}")
    details = [stack.wait_for(name, 1800) for name in names]
    elapsed = time.time() - t0
    calls = stack.sim("GET", "calls")["calls"]
    statuses = [d["status"] for d in details]
    per_action: dict[str, list[float]] = {}
    for c in calls:
        per_action.setdefault(c["action"], []).append(c["t"])
    peaks = {}
    for action, ts in per_action.items():
        ts.sort()
        j, best = 0, 0
        for i, t in enumerate(ts):  # most calls in any 1-second window
            while ts[j] < t - 1.0:
                j += 1
            best = max(best, i - j + 1)
        peaks[action] = {"calls": len(ts), "peak_per_s": best}
    return {"executions": n, "succeeded": statuses.count("SUCCEEDED"), "seconds": round(elapsed, 1),
            "executions_per_minute": round(n / elapsed * 60, 1),
            "throttled_calls": sum(1 for c in calls if c["status"] == 503),
            "ec2_calls": len(calls), "peaks": {a: peaks[a] for a in REFILL if a in peaks},
            "function_processes": stack.concurrency}


# -- package ------------------------------------------------------------------------------------------------------

def package(skip: bool) -> dict:
    clean = not (ROOT / "target" / "aarch64-unknown-linux-gnu" / "release").exists()
    seconds = None
    if not skip:
        t = time.time()
        subprocess.run(["bash", str(ROOT / "scripts" / "package.sh")], check=True, cwd=ROOT)
        seconds = round(time.time() - t)
    zips = {p.parent.name: p.stat().st_size for p in sorted(DIST.glob("*/bootstrap.zip"))}
    arch = (DIST / "ARCHITECTURE").read_text().strip() if (DIST / "ARCHITECTURE").exists() else None
    return {"architecture": arch, "zip_bytes": zips, "build_seconds": seconds, "clean_build": clean and not skip}


# -- report -------------------------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return {"cpus": os.cpu_count(), "cpu": cpu.group(1) if cpu else platform.processor(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(),
            "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()}


def main() -> int:
    global RELEASE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="cold starts per function (default 10)")
    ap.add_argument("--warm", type=int, default=20, help="warm invocations after each cold start (default 20)")
    ap.add_argument("--scale", type=int, default=50, help="simultaneous releases (default 50)")
    ap.add_argument("--skip-package", action="store_true", help="use dist/ as it is (no build, no build time)")
    ap.add_argument("--package-seconds", type=int, help="with --skip-package: the wall time of the build that made "
                    "dist/ (printed by scripts/package.sh), recorded as such")
    ap.add_argument("--package-clean", action="store_true", help="with --package-seconds: that build was clean")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--bin-dir", default="target/release", help="the handler binaries (default target/release)")
    ap.add_argument("--cost-only", action="store_true", help="print the cost per reference run, detection delay and "
                    "worst-case history of the committed definition, and exit (nothing built or started)")
    ap.add_argument("--event-log", help="with --cost-only: a local execution's log (runner.mjs --log-dir) to count "
                    "from; default: the definition's success path")
    ap.add_argument("--update", action="store_true", help="with --cost-only: also replace the cost section and goals "
                    "of --out (bench/results.json) and regenerate BENCHMARKS.md, noting that only the cost was "
                    "recomputed")
    args = ap.parse_args()
    RELEASE = ROOT / args.bin_dir
    if args.cost_only:
        detail = json.loads(Path(args.event_log).read_text()) if args.event_log else None
        report = cost_report(detail, load_definition())
        print(json.dumps(report, indent=2))
        c, h = report["300_ms_per_call"]["backoff"], report["worst_case_history"]
        print(f"bench: reference run {c['transitions']} transitions, {c['invocations']} invocations, ${c['usd']:.5f} "
              f"(goal <= ${GOALS['cost_usd']}); worst detection delay {c['worst_delay_pct']}% (goal <= "
              f"{GOALS['detection_delay_pct']}%); worst-case history {h['events']} events "
              f"({h['pct_of_quota']}% of {h['quota']}), {h['transitions']} transitions", file=sys.stderr)
        if args.update:
            results = json.loads(Path(args.out).read_text())
            results["cost"] = report
            results["goals"] = goals(results)
            results["cost_note"] = (f"The orchestration cost section was recomputed on {time.strftime('%Y-%m-%d')} by "
                               f"`bench/bench.py --cost-only --update` from {report['source']}, after polling moved "
                               f"to Task Retry; the other figures are from the {results['date']} run.")
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
            (ROOT / "BENCHMARKS.md").write_text(render(results))
            print(f"bench: updated {args.out} and BENCHMARKS.md (cost and goals only)", file=sys.stderr)
        return 0

    missing = [fn for fn in local.FUNCTIONS if not (RELEASE / fn).exists()]
    if missing:
        print(f"bench: release binaries missing ({missing}): run `cargo build --release --bins`", file=sys.stderr)
        return 2
    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                     "commands": ["make bench", f"bench/bench.py --runs {args.runs} --warm {args.warm} "
                                  f"--scale {args.scale}"]}
    results["package"] = package(args.skip_package)
    if args.skip_package and args.package_seconds:
        results["package"].update(build_seconds=args.package_seconds, clean_build=args.package_clean,
                                  build_note="measured by scripts/package.sh before this run")
    os.environ["AMI_STACK_BIN_DIRS"] = str(RELEASE)  # the stack serves the release build too
    with local.Stack(quiet=False, concurrency=4) as stack:
        ok, out = stack.invoke("ami-trigger", local.release_event("web", "9.9.9"))
        if not ok:
            raise RuntimeError(out)
        detail = stack.wait_for(out["execution_name"], 300)
        if detail["status"] != "SUCCEEDED":
            raise RuntimeError(f"reference run: {detail['status']} {detail.get('error')}")
        results["cost"] = cost_report(detail, load_definition())
        run = detail["input"]["run"]
        results["scale"] = scale(stack, args.scale)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")  # partial, in case the rest fails
    with local.Stack(quiet=False, concurrency=0) as stack:  # serves nothing: every start below is cold
        run = dict(run, recipe=stack.seed["recipe"], pipeline=stack.seed["recipe"]["name"])
        results["lambda"] = measure_functions(stack, run, args.runs, args.warm)
    results["goals"] = goals(results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "BENCHMARKS.md").write_text(render(results))
    print(f"bench: wrote {args.out} and BENCHMARKS.md", flush=True)
    return 0


def goals(r: dict) -> dict:
    rss = max(f["peak_rss_mb"]["median"] for f in r["lambda"]["functions"].values())
    zips = r["package"]["zip_bytes"]
    biggest = max(zips.values()) / 2**20 if zips else None
    c = r["cost"]["300_ms_per_call"]["backoff"]
    return {
        "cold start >= 5x faster than Python": {"value": r["lambda"]["cold_start_ratio"],
                                                "met": r["lambda"]["cold_start_ratio"] >= GOALS["cold_start_ratio"]},
        "peak memory < 32 MB per function": {"value": round(rss, 1), "met": rss < GOALS["peak_rss_mb"]},
        "each zip < 8 MB": {"value": round(biggest, 2) if biggest else None,
                            "met": biggest is not None and biggest < GOALS["zip_mb"]},
        "orchestration cost per reference run <= $0.003": {"value": c["usd"], "met": c["usd"] <= GOALS["cost_usd"]},
        "detection delay <= 15% of the step": {"value": c["worst_delay_pct"],
                                               "met": c["worst_delay_pct"] <= GOALS["detection_delay_pct"]},
    }


def render(r: dict) -> str:
    L = ["# Benchmarks", "",
         f"Measured {r['date']} on {r['machine']['cpus']} cores ({r['machine']['cpu']}), "
         f"{r['machine']['memory_gb']} GB, {r['machine']['rustc']}, Python {r['machine']['python']}. "
         f"Command: `{r['commands'][0]}` (`{r['commands'][1]}`). Generated from `bench/results.json` by "
         "`bench/bench.py`; do not edit by hand. A figure is the median of the runs, with min-max.", "",
         "## Goals", "", "| goal | measured | met |", "| --- | --- | --- |"]
    for goal, g in r["goals"].items():
        L.append(f"| {goal} | {g['value']} | {'yes' if g['met'] else '**no**'} |")
    lam = r["lambda"]
    L += ["", "## Cold start, warm latency, memory (release x86_64 build, cargo lambda's runtime API, moto)", "",
          "Cold start: from process start until the first invocation has returned. Each function's first "
          "invocation is `{}` (initialisation, then a rejected input, no AWS call).", "",
          "| function | cold start ms | warm ms | peak RSS MB |", "| --- | --- | --- | --- |"]
    for fn, f in lam["functions"].items():
        L.append(f"| {fn} | {fmt(f['cold_ms'])} | {fmt(f['warm_ms'])} | {fmt(f['peak_rss_mb'])} |")
    b = lam["baseline_invalid_input"]
    L.append(f"| Python 3 + boto3 baseline | {fmt(b['cold_ms'])} | {fmt(b['warm_ms'])} | {fmt(b['peak_rss_mb'])} |")
    L += ["", "Head to head, the same EC2 calls (build status of a stopped builder: DescribeInstances, "
          "GetConsoleOutput):", "", "| handler | cold start ms | warm ms | peak RSS MB |", "| --- | --- | --- | --- |"]
    for name, f in lam["head_to_head"].items():
        L.append(f"| {name} | {fmt(f['cold_ms'])} | {fmt(f['warm_ms'])} | {fmt(f['peak_rss_mb'])} |")
    L += ["", f"Ratio baseline / ours: cold start {lam['cold_start_ratio']}x, warm {lam['warm_ratio']}x.", ""]
    p = r["package"]
    L += [f"## Package ({p['architecture']}, `make package`)", "",
          f"Build: {p['build_seconds']} s wall time" + (" from clean" if p["clean_build"] else
                                                         " (not from clean)" if p["build_seconds"] else
                                                         " (not rebuilt in this run)") + ".", "",
          "| function | bootstrap.zip |", "| --- | --- |"]
    for fn, size in p["zip_bytes"].items():
        L.append(f"| {fn} | {size / 2**20:.2f} MB |")
    L += [""] + render_cost(r["cost"])
    s = r["scale"]
    L += ["## Scale", "",
          f"{s['executions']} releases of {s['executions']} pipelines at once: {s['succeeded']} succeeded in "
          f"{s['seconds']} s ({s['executions_per_minute']} executions per minute; {s['function_processes']} "
          f"processes per function), {s['ec2_calls']} EC2 calls, {s['throttled_calls']} throttled.", "",
          "| action | calls | peak calls in 1 s | EC2 refill per s |", "| --- | --- | --- | --- |"]
    for action, pk in s["peaks"].items():
        L.append(f"| {action} | {pk['calls']} | {pk['peak_per_s']} | {REFILL[action]} |")
    L += ["", "The local runner shortens every Wait to 20 ms and scales every Retry interval by 0.001, so the local "
          "call rate is far above a real run's; "
          "see the README (Scale) for what bounds the rate in AWS.", ""]
    L += ["## Caveats", "",
          "- Warm latency: runs before 2026-11-27's fix measured ~50 ms warm for every handler, even for a rejected "
          "input with no AWS call. bench/WARM_LATENCY.md found the cause with a control (a lambda_runtime hello "
          "world, bench/control): the benchmark's runtime proxy sent each reply's headers and body in two writes with "
          "Nagle on, and lambda_runtime's kept-alive connection then waited ~40 ms for a delayed ACK (the Python "
          "baseline opened a new connection per request). With TCP_NODELAY on the proxy: control 1.2 ms, ami-build "
          "(rejected input) 1.3 ms, Python baseline 1.7 ms. Not a property of our handlers or of AWS.",
          "- The Python baseline runs a minimal runtime loop (bench/baseline/bootstrap.py) instead of awslambdaric, "
          "whose native client never answered an invocation from cargo lambda's emulator here; it does less work "
          "than awslambdaric, so it can only flatter the baseline.",
          f"- Lost samples (an invocation the emulator never delivered, dropped and re-taken): "
          f"{r['lambda'].get('lost_samples') or 'none'}.",
          "- Polling is a status Task's Retry on AmiPipeline.NotReady: one transition per poll, the copy to every "
          "region one loop. Each not-ready poll is a function error: a LambdaFunctionFailed history (and, at log "
          "level ERROR or ALL, log) event, and one count in the function's Lambda `Errors` and the state machine's "
          "`LambdaFunctionsFailed` metrics. Alarm on `ExecutionsFailed` (as the template does), not on those.", ""]
    if r.get("note"):
        L += [f"- {r['note']}", ""]
    if r.get("cost_note"):
        L += [f"- {r['cost_note']}", ""]
    return "\n".join(L)


def render_cost(c: dict) -> list[str]:
    """The cost section of BENCHMARKS.md (also what `--cost-only` computes)."""
    b = c["300_ms_per_call"]["backoff"]
    retr = c["poll_retriers"]["Build"]
    L = ["## Orchestration cost per reference run", "",
         "Reference: " + ", ".join(f"{k} {v} min" for k, v in c["reference_minutes"].items()) +
         f" (copy to {c['copy_regions']} regions, started in one call and polled in one loop). Counted from "
         f"{c['source']}: {c['local_run']['transitions']} transitions and {c['local_run']['invocations']} "
         "invocations as they ran (every state entered and every retry is a billed transition), then each long "
         "step's status calls recounted for the reference durations. Polling: `<Step> Start`, `<Step> Wait` (the first wait, "
         f"{retr['first']:g} s = IntervalSeconds / (BackoffRate - 1)), then `<Step> Status` retried on "
         f"AmiPipeline.NotReady after min({retr['interval']:g} x {retr['rate']:g}^k, {retr['cap']:g}) s (read from "
         "the committed definition): one transition and one invocation per poll. Prices: $0.025 per 1,000 "
         "transitions, $0.0000133334 per GB-s (arm64), $0.20 per million requests; memory from the template.", "",
         "| polling | invocation time | transitions | invocations | GB-s | USD per run | worst detection delay |",
         "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, key in (("measured locally", "measured_durations"), ("300 ms each", "300_ms_per_call")):
        for mode, m in c.get(key, {}).items():
            L.append(f"| {mode} | {label} | {m['transitions']} | {m['invocations']} | {m['gb_s']} | "
                     f"${m['usd']:.5f} | {m['worst_delay_pct']}% |")
    d = b["detection_delay"]
    L += ["", "Detection delay with backoff (seconds after the resource is ready; share of the step): " +
          ", ".join(f"{k} {v['seconds']} s ({v['pct_of_step']}%, {v['polls']} polls)" for k, v in d.items()) +
          ". Worst case (ready just after a poll: the gap between the two polls around the step's end): " +
          ", ".join(f"{k} {v['worst_seconds']} s ({v['worst_pct']}%)" for k, v in d.items()) +
          ". The goal is checked against the worst case.", ""]
    h = c["worst_case_history"]
    L += [f"Worst-case history (every retrier exhausted on the longest path, then caught): {h['events']} events, "
          f"{h['pct_of_quota']}% of the {h['quota']:,} quota; {h['transitions']} transitions "
          f"(${h['usd_transitions']}).", ""]
    lg = c.get("logs")
    if lg:
        L += [f"CloudWatch Logs per reference run (estimate; level ALL with execution data): "
              f"{lg['level_all_events']} events, ~{lg['level_all_kb']} KB (${lg['level_all_usd']} at $0.50 per GB "
              f"ingested, assuming {lg['assumed_state_bytes']} bytes of state data per data event); level ERROR (as deployed, "
              f"chosen by this figure): "
              f"{lg['level_error_events']} events (one LambdaFunctionFailed per not-ready poll), ~{lg['level_error_kb']}"
              " KB.", ""]
    return L


def fmt(m: dict) -> str:
    return f"{m['median']} ({m['min']}-{m['max']})"


if __name__ == "__main__":
    sys.exit(main())
