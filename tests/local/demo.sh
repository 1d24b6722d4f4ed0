#!/usr/bin/env bash
# make demo: bash tests/local/demo.sh [EVENT.json]   (default: infra/events/release.json)
# Installs the pinned tools, builds the handlers, starts the local stack (moto, cargo lambda watch, the Step
# Functions runner), seeds a base image and the example recipe, sends the event through the trigger, waits for the
# pipeline, prints a summary (steps, times, image id per region) and the JSON result, and stops the stack.
# Exits non-zero when the pipeline fails.
set -euo pipefail
EVENT="${1:-${EVENT:-$(dirname "${BASH_SOURCE[0]}")/../../infra/events/release.json}}"
EVENT="$(cd "$(dirname "$EVENT")" && pwd)/$(basename "$EVENT")"  # absolute, before run.sh changes directory
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"

prepare demo
rc=0
run_python -m local.demo "$EVENT" || rc=$?
exit "$rc"
