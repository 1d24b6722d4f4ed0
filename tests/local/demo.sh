#!/usr/bin/env bash
# make demo: bash tests/local/demo.sh [EVENT.json]   (default: infra/events/release.json)
# Installs the pinned tools, builds the handlers, starts the local stack (moto, cargo lambda watch, the Step
# Functions runner), seeds a base image and the example recipe, sends the event through the trigger, waits for the
# pipeline, prints a summary (steps, times, image id per region) and the JSON result, and stops the stack.
# Exits non-zero when the pipeline fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
EVENT="${1:-${EVENT:-$ROOT/infra/events/release.json}}"
EVENT="$(cd "$(dirname "$EVENT")" && pwd)/$(basename "$EVENT")"  # absolute, before cd
cd "$ROOT"

bash scripts/install/stack.sh >/dev/null
if [[ -z "${SKIP_BUILD:-}" ]]; then  # SKIP_BUILD=1: use the binaries already in target/debug
  echo "demo: cargo build --workspace --all-targets"
  cargo build --workspace --all-targets --locked --quiet  # the build `make test` makes: no second SDK build
fi

pid=""
stop() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

.tools/venv/bin/python tests/local/demo.py "$EVENT" &
pid=$!
set +e
wait "$pid"
rc=$?
set -e
pid=""
exit "$rc"
