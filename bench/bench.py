#!/usr/bin/env python3
"""`make bench`: cold start, warm latency, peak memory, package size, cost per run, scale and build time, side by side
with a Python/boto3 baseline, on the local stack. Writes bench/results.json and BENCHMARKS.md (from the JSON).

    .tools/venv/bin/python bench/bench.py [--runs 10] [--scale 50] [--skip-package]

Needs: the release binaries (`cargo build --release --bins`, target/release), the arm64 zips (`make package`, dist/),
the pinned tools (tests/stack/install.sh) and the bench venv (.tools/bench: boto3, bench/requirements.txt).
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
sys.path.insert(0, str(ROOT / "tests" / "local"))

import stack as local  # noqa: E402

BENCH_PY = ROOT / ".tools" / "bench" / "bin" / "python"
RELEASE = ROOT / "target" / "release"
DIST = ROOT / "dist"
TEMPLATE = ROOT / "infra" / "template.yaml"

# Public prices (us-east-1, 2026): Standard workflow transitions, arm64 Lambda compute, Lambda requests.
PRICE_TRANSITION = 0.025 / 1000
PRICE_GB_S_ARM = 0.0000133334
PRICE_REQUEST = 0.20 / 1_000_000
# The reference run of the issue: minutes per step; the copy runs in 3 regions at once.
REFERENCE = {"build": 30, "snapshot": 15, "register": 10, "test": 5, "copy": 20}
COPY_REGIONS = 3
# The state machine's polling loops: Start task, then (Wait, Status, Ready?) per poll; the Ready? after Start too.
LOOPS = {"build": "Build", "snapshot": "Snapshot", "register": "Register", "test": "Test", "copy": "Copy"}
MIN_WAIT, MAX_WAIT = 15, 600  # functions/core/src/steps.rs Progress::polled
FIXED_POLL = 15
# EC2 token buckets (refill per second) of the calls that matter at scale (aws-facts.md).
REFILL = {"RunInstances": 2, "CopyImage": 1, "CreateSnapshots": 5, "RegisterImage": 5, "DeregisterImage": 5,
          "ModifyImageAttribute": 5, "TerminateInstances": 5}
GOALS = {"cold_start_ratio": 5.0, "peak_rss_mb": 32.0, "zip_mb": 8.0, "cost_usd": 0.005, "detection_delay_pct": 20.0}


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
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
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

def schedule(duration_s: float, backoff: bool) -> tuple[int, float, float]:
    """(status polls, seconds from ready until the pipeline notices, worst case of that: the wait in effect when the
    resource became ready) for a step that takes duration_s."""
    t, polls, wait = 0.0, 0, 0
    while t < duration_s:
        wait = int(min(max(t / 8, MIN_WAIT), MAX_WAIT)) if backoff else FIXED_POLL
        t += wait
        polls += 1
    return polls, t - duration_s, wait


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


def cost(detail: dict, per_call_ms: float | None) -> dict:
    """Transitions, invocations and GB-s of the reference run, built from one local execution's event log: the
    states outside the polling loops as they ran, each loop re-counted for the reference durations, and the copy
    Map widened to the reference's regions (per region: Copy Start, Copy Ready?, Share, Region Done)."""
    entered = [e["state"] for e in detail["events"] if e["type"] == "StateEntered"]
    tasks = detail["tasks"]
    mem = memory_mb()
    fn_ms: dict[str, list[float]] = {}
    for t in tasks:
        fn_ms.setdefault(t["function"], []).append(t["ms"])
    ms_of = {fn: (per_call_ms if per_call_ms is not None else statistics.median(v)) for fn, v in fn_ms.items()}
    gb_s_of = {fn: ms_of[fn] / 1000 * mem.get(fn, 128) / 1024 for fn in ms_of}
    fn_of_loop = {"build": "ami-build", "snapshot": "ami-snapshot", "register": "ami-register",
                  "test": "ami-test-launch", "copy": "ami-copy"}
    local_copies = entered.count("Copy Start") - 1  # the home region's iteration copies nothing
    more_regions = COPY_REGIONS - local_copies
    out = {}
    for mode in ("backoff", "fixed 15 s"):
        transitions = len(entered) + 4 * more_regions
        invocations = len(tasks) + 2 * more_regions
        gbs = sum(gb_s_of[t["function"]] for t in tasks) + more_regions * (gb_s_of["ami-copy"] +
                                                                          gb_s_of.get("ami-share", 0.0))
        delays = {}
        for step, prefix in LOOPS.items():
            polls, delay, worst = schedule(REFERENCE[step] * 60, mode == "backoff")
            loops = COPY_REGIONS if step == "copy" else 1
            extra = polls * loops - entered.count(f"{prefix} Status")  # each poll: Wait, Status, Ready?
            transitions += 3 * extra
            invocations += extra
            gbs += extra * gb_s_of[fn_of_loop[step]]
            delays[step] = {"seconds": round(delay, 1), "pct_of_step": round(100 * delay / (REFERENCE[step] * 60), 1),
                            "worst_seconds": worst, "worst_pct": round(100 * worst / (REFERENCE[step] * 60), 1),
                            "polls": polls}
        usd = transitions * PRICE_TRANSITION + invocations * PRICE_REQUEST + gbs * PRICE_GB_S_ARM
        out[mode] = {"transitions": round(transitions), "invocations": round(invocations), "gb_s": round(gbs, 3),
                     "usd": round(usd, 5), "usd_transitions": round(transitions * PRICE_TRANSITION, 5),
                     "detection_delay": delays,
                     "worst_delay_pct": max(d["worst_pct"] for d in delays.values())}
    return out


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
    args = ap.parse_args()
    RELEASE = ROOT / args.bin_dir

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
        results["cost"] = {"measured_durations": cost(detail, None), "300_ms_per_call": cost(detail, 300.0),
                           "reference_minutes": REFERENCE, "copy_regions": COPY_REGIONS,
                           "local_run": {"transitions": sum(1 for e in detail["events"]
                                                            if e["type"] == "StateEntered"),
                                         "invocations": len(detail["tasks"])}}
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
        "orchestration cost per reference run < $0.005": {"value": c["usd"], "met": c["usd"] < GOALS["cost_usd"]},
        "detection delay <= 20% of the step": {"value": c["worst_delay_pct"],
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
    L += ["", "## Orchestration cost per reference run", "",
          "Reference: " + ", ".join(f"{k} {v} min" for k, v in r["cost"]["reference_minutes"].items()) +
          f" (copy in {r['cost']['copy_regions']} regions). From the local runner's event log of one release "
          f"({r['cost']['local_run']['transitions']} transitions, {r['cost']['local_run']['invocations']} "
          "invocations), each polling loop recounted for the reference durations. Prices: $0.025 per 1,000 "
          "transitions, $0.0000133334 per GB-s (arm64), $0.20 per million requests; memory from the template.", "",
          "| polling | invocation time | transitions | invocations | GB-s | USD per run | worst detection delay |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, key in (("measured locally", "measured_durations"), ("300 ms each", "300_ms_per_call")):
        for mode, c in r["cost"][key].items():
            L.append(f"| {mode} | {label} | {c['transitions']} | {c['invocations']} | {c['gb_s']} | "
                     f"${c['usd']:.5f} | {c['worst_delay_pct']}% |")
    d = r["cost"]["300_ms_per_call"]["backoff"]["detection_delay"]
    L += ["", "Detection delay with backoff (seconds after the resource is ready; share of the step): " +
          ", ".join(f"{k} {v['seconds']} s ({v['pct_of_step']}%, {v['polls']} polls)" for k, v in d.items()) +
          ". Worst case (ready just after a poll: the wait then in effect): " +
          ", ".join(f"{k} {v['worst_seconds']} s ({v['worst_pct']}%)" for k, v in d.items()) +
          ". The goal is checked against the worst case.",
          ""]
    s = r["scale"]
    L += ["## Scale", "",
          f"{s['executions']} releases of {s['executions']} pipelines at once: {s['succeeded']} succeeded in "
          f"{s['seconds']} s ({s['executions_per_minute']} executions per minute; {s['function_processes']} "
          f"processes per function), {s['ec2_calls']} EC2 calls, {s['throttled_calls']} throttled.", "",
          "| action | calls | peak calls in 1 s | EC2 refill per s |", "| --- | --- | --- | --- |"]
    for action, pk in s["peaks"].items():
        L.append(f"| {action} | {pk['calls']} | {pk['peak_per_s']} | {REFILL[action]} |")
    L += ["", "The local runner shortens every Wait to 20 ms, so the local call rate is far above a real run's; "
          "see the README (Scale) for what bounds the rate in AWS.", ""]
    L += ["## Caveats", "",
          "- Warm latency is not a handler comparison here: a rejected input with no AWS call takes as long warm "
          "(~50 ms) as a status call with two EC2 calls, so the figure is the floor of the local runtime-API path "
          "(cargo lambda, the benchmark's runtime proxy, moto), not the handler. Cold start and memory are the "
          "figures to read.",
          "- The Python baseline runs a minimal runtime loop (bench/baseline/bootstrap.py) instead of awslambdaric, "
          "whose native client never answered an invocation from cargo lambda's emulator here; it does less work "
          "than awslambdaric, so it can only flatter the baseline.",
          f"- Lost samples (an invocation the emulator never delivered, dropped and re-taken): "
          f"{r['lambda'].get('lost_samples') or 'none'}.",
          "- The orchestration cost misses its goal: 3 transitions per poll (Wait, Status, Choice) and per-region "
          "copy polling. See the README's Benchmarks section for the planned fix.", ""]
    if r.get("note"):
        L += [f"- {r['note']}", ""]
    return "\n".join(L)


def fmt(m: dict) -> str:
    return f"{m['median']} ({m['min']}-{m['max']})"


if __name__ == "__main__":
    sys.exit(main())
