#!/usr/bin/env bash
# Installs the Python baseline's runtime (bench/requirements.txt: boto3, pinned) into its own venv
# $ROOT/.tools/bench (git-ignored), apart from .tools/venv so the benchmark never changes what the tests run on.
# A no-op when the pins are unchanged (lib.sh; stamp .tools/.install-stamp-bench).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$TOOLS/bench"
check() { "$VENV/bin/python" -c 'import boto3'; }
install_venv bench "$VENV" "$ROOT/bench/requirements.txt" "$VENV/bin/python" check
