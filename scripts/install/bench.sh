#!/usr/bin/env bash
# Installs the Python baseline's runtime (bench/requirements.txt: boto3, pinned) into its own venv
# $ROOT/.tools/bench (git-ignored), apart from .tools/venv so the benchmark never changes what the tests run on.
# A no-op when the pins are unchanged (lib.sh; stamp .tools/.install-stamp-bench).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PINS="$ROOT/bench/requirements.txt"
VENV="$TOOLS/bench"

install_lock bench
want="$(pins_hash "$PINS")"
if up_to_date "$STAMP" "$want" "$VENV/bin/python"; then
  echo "bench venv up to date: $VENV"
  exit 0
fi
rm -f "$STAMP"

venv_pip "$VENV" "$PINS"
"$VENV/bin/python" -c 'import boto3'
echo "$want" > "$STAMP"
echo "bench venv: $VENV"
