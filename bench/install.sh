#!/usr/bin/env bash
# Installs the Python baseline's runtime (bench/requirements.txt: boto3, pinned) into its own venv
# $ROOT/.tools/bench (git-ignored), apart from .tools/venv so the benchmark never changes what the tests run on.
# Idempotent: a stamp holds the hash of the pins and of this script. Only PyPI is used, through pip.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/bench"
STAMP="$TOOLS/.bench-install-stamp"
PYTHON="${PYTHON:-python3}"

mkdir -p "$TOOLS"
exec 9>"$TOOLS/.bench-install.lock"
flock 9

want="$(cat "$HERE/requirements.txt" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]]; then
  echo "bench venv up to date: $VENV"
  exit 0
fi
rm -f "$STAMP"
if ! "$VENV/bin/python" -c '' 2>/dev/null; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$HERE/requirements.txt"
"$VENV/bin/python" -c 'import boto3'
echo "$want" > "$STAMP"
echo "bench venv: $VENV"
