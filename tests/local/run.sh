# Shared by demo.sh and e2e.sh (sourced): from the repository root, install the pinned tools, build the handlers
# once, then run one Python child that owns the stack, forwarding Ctrl-C/TERM to it and waiting for it to stop.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# prepare NAME: the tools, then the build (SKIP_BUILD=1: use the binaries already in target/debug).
prepare() {
  bash scripts/install/stack.sh >/dev/null
  echo "$1: tools installed in .tools/"
  if [[ -z "${SKIP_BUILD:-}" ]]; then
    local start=$SECONDS
    # --all-targets: the same feature set as `cargo test` (dev-dependencies on), so the handler binaries reuse the
    # unit tests' build of the SDK crates; `--bins` alone resolves other features and rebuilds all of them (~6 min).
    echo "$1: cargo build --workspace --all-targets"
    cargo build --workspace --all-targets --locked --quiet
    echo "$1: built in $((SECONDS - start)) s"
  fi
}

# run_python ARGS...: the venv's python with tests/ on the path (the `local` package), stopped with this shell; its
# exit status is this function's.
run_python() {
  pid=""
  stop() {
    # the child stops the stack itself (also on SIGTERM); this forwards the signal and waits for it to finish.
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  }
  trap 'stop; exit 130' INT
  trap 'stop; exit 143' TERM
  trap stop EXIT
  PYTHONPATH="$ROOT/tests" .tools/venv/bin/python "$@" &
  pid=$!
  local rc=0
  wait "$pid" || rc=$?
  pid=""
  return "$rc"
}
