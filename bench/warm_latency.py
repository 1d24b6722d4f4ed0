#!/usr/bin/env python3
"""Warm-latency control (bench/WARM_LATENCY.md): why a warm invocation of our Rust handlers took ~50 ms on the
local runtime-API path while the Python baseline took ~20 ms (answer: Nagle on bench.py's RuntimeProxy, against a
kept-alive client's delayed ACK; fixed there).

    .tools/venv/bin/python bench/warm_latency.py [--warm 30] [--rounds 2] [--handler target/debug/ami-build] [--out F]

Builds nothing: needs the control (`CARGO_TARGET_DIR=/tmp/warm-target cargo build --release` in bench/control,
binary in --control-bin) and the TCP_NODELAY shim (bench/control/nodelay_shim.c, --shim). Starts the local stack
with nothing served (as `make bench` does for cold starts) and measures, with bench.py's own `one_process` (same
RuntimeProxy, same invoke call, same warm_ms definition), each variant: `runs` processes x `warm` warm invocations.

Variants (every one answers `{}` without an AWS call; queues: see PROXY_QUEUE below). Without a suffix: through a
RuntimeProxy as bench.py's was before the fix (Nagle on its sockets); ", proxy nodelay": through one as fixed.
  control                 hello-world lambda_runtime 1.5.0 (the workspace's version and features), via the proxy
  control+nodelay         the same binary with LD_PRELOAD=nodelay_shim.so (TCP_NODELAY on its client sockets)
  control-error(+nodelay) the control failing every event (lambda_runtime posts to /error, as a rejected input does)
  control direct          the control polling cargo lambda's runtime API itself (no proxy)
  python                  bench/baseline/bootstrap.py (the baseline; `{}` -> ValueError, no AWS call), via the proxy
  python keep-alive       bench/control/keepalive_bootstrap.py: the same loop on one kept-alive connection
  ..., proxy nodelay      the control / keep-alive loop / handler via a proxy whose sockets have Nagle off
  python direct           the same, polling cargo lambda directly
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (bench.py: its proxy, one_process, invoke; it imports the local stack package, tests/local)

local = bench.local
PY = bench.ROOT / ".tools" / "venv" / "bin" / "python"  # has boto3, which the baseline handler imports


def direct_process(stack, cmd: list[str], env: dict, payloads: list, queue: str, cwd: Path) -> dict:
    """one_process without the RuntimeProxy: the process polls cargo lambda's `/.rt/<queue>` itself. One process per
    queue (a killed process's open poll would swallow the next process's invocation), so call once per queue."""
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"{stack.invoke_url}/.rt/{queue}")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)  # let it start and park its first poll (cargo lambda queues the invocation otherwise)
        answers = [bench.invoke(stack, queue, payloads[0])]
        warm = []
        for p in payloads[1:]:
            s = time.perf_counter()
            answers.append(bench.invoke(stack, queue, p))
            warm.append((time.perf_counter() - s) * 1000)
    finally:
        proc.terminate()
        proc.wait(5)
    return {"cold_ms": 0.0, "warm_ms": warm, "rss_kb": 0, "answers": answers}


# cargo lambda watch only queues invocations for the workspace's binaries, so the variants borrow handler names as
# queues: the shared-proxy variants one after another on one name (as bench.py runs its baseline on ami-build), the
# proxy-with-Nagle-off variant on a name of its own (its own RuntimeProxy), each direct process on a name of its own
# (a killed process's open poll would swallow the next invocation on its name).
PROXY_QUEUE, PROXY_NODELAY_QUEUE = "ami-build", "ami-copy"
DIRECT_QUEUES = ["ami-share", "ami-publish", "ami-register", "ami-retire", "ami-snapshot", "ami-test-launch",
                 "ami-cleanup"]


def expect(name: str, samples: list[dict], error_type: str | None) -> None:
    """Every answer is the process's own (not cargo lambda's "Missing function" or a lost invocation)."""
    for s in samples:
        for ok, a in s["answers"]:
            got = a.get("errorType") if not ok else None
            if (got != error_type and not (error_type == "*" and not ok)) or (ok and a != {"ok": True}):
                raise RuntimeError(f"{name}: unexpected answer {a}")


def measure(stack, args) -> dict:
    control = [str(Path(args.control_bin))]
    python = [str(PY), str(HERE / "baseline" / "bootstrap.py")]
    keepalive = [str(PY), str(HERE / "control" / "keepalive_bootstrap.py")]
    q = PROXY_QUEUE
    base_env = stack.function_env(q)
    base_env.update(AWS_ENDPOINT_URL=stack.moto_url, PYTHONPATH=str(HERE / "baseline"),
                    LAMBDA_TASK_ROOT=str(HERE / "baseline"))
    ctl_env = stack.function_env(q)
    nd = {"LD_PRELOAD": args.shim}
    # (name, queue, cmd, env, cwd, scheme, expected errorType or None for {"ok": true})
    variants = [
        ("control", q, control, ctl_env, bench.ROOT, True, None),
        ("control+nodelay", q, control, dict(ctl_env, **nd), bench.ROOT, True, None),
        ("control-error", q, control, dict(ctl_env, CONTROL_FAIL="1"), bench.ROOT, True, "*"),
        ("control-error+nodelay", q, control, dict(ctl_env, CONTROL_FAIL="1", **nd), bench.ROOT, True, "*"),
        ("python", q, python, base_env, HERE / "baseline", False, "ValueError"),
        ("python keep-alive", q, keepalive, ctl_env, bench.ROOT, True, None),
        ("control, proxy nodelay", PROXY_NODELAY_QUEUE, control, stack.function_env(PROXY_NODELAY_QUEUE),
         bench.ROOT, True, None),
        ("python keep-alive, proxy nodelay", PROXY_NODELAY_QUEUE, keepalive, stack.function_env(PROXY_NODELAY_QUEUE),
         bench.ROOT, True, None),
        ("python, proxy nodelay", PROXY_NODELAY_QUEUE, python, base_env, HERE / "baseline", False, "ValueError"),
    ]
    for h in args.handler or []:  # a real handler binary (answers `{}` with InvalidInput, no AWS call)
        fn = Path(h).name
        variants.append((f"{fn}", q, [h], stack.function_env(fn), bench.ROOT, True, "AmiPipeline.InvalidInput"))
        variants.append((f"{fn}+nodelay", q, [h], dict(stack.function_env(fn), **nd), bench.ROOT, True,
                         "AmiPipeline.InvalidInput"))
        variants.append((f"{fn}, proxy nodelay", PROXY_NODELAY_QUEUE, [h], stack.function_env(fn), bench.ROOT, True,
                         "AmiPipeline.InvalidInput"))
    # Both settings explicitly, whatever bench.py's RuntimeProxy defaults to: PROXY_QUEUE's proxy as it was before
    # the fix (Nagle on its accepted sockets), PROXY_NODELAY_QUEUE's as fixed (TCP_NODELAY). Each RuntimeProxy has a
    # Handler class of its own, so the two settings do not interfere.
    for queue, nodelay in ((PROXY_QUEUE, False), (PROXY_NODELAY_QUEUE, True)):
        proxy = bench._PROXIES.get(queue) or bench._PROXIES.setdefault(queue, bench.RuntimeProxy(stack, queue))
        proxy.server.RequestHandlerClass.disable_nagle_algorithm = nodelay
    out: dict = {}
    payloads = [{}] * (1 + args.warm)
    for _ in range(args.rounds):  # rounds interleave the variants, so a burst of load elsewhere hits them all
        for name, queue, cmd, env, cwd, scheme, error_type in variants:
            samples = bench.samples_of(args.runs, lambda: bench.one_process(stack, cmd, env, payloads, queue,
                                                                             cwd=cwd, scheme=scheme))
            expect(name, samples, error_type)
            out.setdefault(name, []).extend(w for s in samples for w in s["warm_ms"])
    directs = iter(DIRECT_QUEUES)
    for name, cmd, env, cwd, error_type in [("control, direct", control, ctl_env, bench.ROOT, None),
                                            ("python, direct", python, base_env, HERE / "baseline", "ValueError")]:
        for _ in range(min(args.rounds, 3)):
            s = direct_process(stack, cmd, env, payloads, next(directs), cwd)
            expect(name, [s], error_type)
            out.setdefault(name, []).extend(s["warm_ms"])
    figures = {name: bench.median_spread(ws) for name, ws in out.items()}
    for name, m in figures.items():
        print(f"warm: {name:<26} {fmt(m)}", flush=True)
    return {"figures": figures, "samples": out}


def fmt(m: dict) -> str:
    return f"median {m['median']:6.2f} ms  min {m['min']:6.2f}  max {m['max']:6.2f}  n {m['n']}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1, help="processes per variant and round (default 1)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over all variants (default 2)")
    ap.add_argument("--warm", type=int, default=30, help="warm invocations per process (default 30)")
    ap.add_argument("--control-bin", default="/tmp/warm-target/release/warm-control")
    ap.add_argument("--shim", default="/tmp/warm-target/nodelay_shim.so")
    ap.add_argument("--handler", action="append", help="also measure this handler binary, and with the shim "
                    "(repeatable), e.g. target/debug/ami-trigger")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    for f in (args.control_bin, args.shim):
        if not Path(f).exists():
            print(f"warm: {f} missing (see this script's docstring)", file=sys.stderr)
            return 2
    with local.Stack(quiet=True, concurrency=0) as stack:
        out = measure(stack, args)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
