#!/usr/bin/env bash
# End-to-end tests on the local stack, in one command:
#   bash tests/local/e2e.sh [PYTEST ARGS...]      e.g. bash tests/local/e2e.sh -k throttling
# Installs the pinned tools (scripts/install/stack.sh), builds the handlers once (cargo build), then runs
# tests/e2e with pytest: the session starts moto, cargo lambda watch (the handlers) and the Step Functions runner
# on free loopback ports, and stops them at the end, on failure, and on Ctrl-C/TERM. Prints a summary table.
# Logs: .tools/logs/<run>/ (moto.log, lambda.log, runner.log, functions/<name>.log, executions/<name>.json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

bash scripts/install/stack.sh >/dev/null
echo "e2e: tools installed in .tools/"

if [[ -z "${SKIP_BUILD:-}" ]]; then  # SKIP_BUILD=1: use the binaries already in target/debug
  start=$SECONDS
  # --all-targets: the same feature set as `cargo test` (dev-dependencies on), so the handler binaries reuse the
  # unit tests' build of the SDK crates; `--bins` alone resolves other features and rebuilds all of them (~6 min).
  echo "e2e: cargo build --workspace --all-targets"
  cargo build --workspace --all-targets --locked --quiet
  echo "e2e: built in $((SECONDS - start)) s"
fi

pid=""
stop() {
  # pytest stops the stack itself (also on SIGTERM); this forwards the signal and waits for it to finish.
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

start=$SECONDS
.tools/venv/bin/python -m pytest tests/e2e -p no:cacheprovider -q -rfE "$@" &
pid=$!
set +e
wait "$pid"
rc=$?
set -e
pid=""
echo "e2e: $([[ $rc -eq 0 ]] && echo passed || echo FAILED) in $((SECONDS - start)) s (after the build)"
exit "$rc"
