#!/usr/bin/env bash
# End-to-end tests on the local stack, in one command:
#   bash tests/local/e2e.sh [PYTEST ARGS...]      e.g. bash tests/local/e2e.sh -k throttling
# Installs the pinned tools (scripts/install/stack.sh), builds the handlers once (cargo build), then runs
# tests/e2e with pytest: the session starts moto, cargo lambda watch (the handlers) and the Step Functions runner
# on free loopback ports, and stops them at the end, on failure, and on Ctrl-C/TERM. Prints a summary table.
# Logs: .tools/logs/<run>/ (moto.log, lambda.log, runner.log, functions/<name>.log, executions/<name>.json).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"

prepare e2e
start=$SECONDS
rc=0
run_python -m pytest tests/e2e -p no:cacheprovider -q -rfE "$@" || rc=$?
echo "e2e: $([[ $rc -eq 0 ]] && echo passed || echo FAILED) in $((SECONDS - start)) s (after the build)"
exit "$rc"
