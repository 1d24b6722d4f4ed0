#!/usr/bin/env bash
# Installs checkov, pinned with everything it pulls in (tests/infra/requirements.txt), into its own venv
# $ROOT/.tools/checkov (git-ignored). Its own venv because checkov 3.3.30 needs boto3/botocore 1.35,
# packaging < 24 and networkx < 2.7, while .tools/venv pins boto3 1.44.8 for moto and pytest 9.2 needs
# packaging >= 24: in one venv each install would break the other.
# cfn-lint and pytest come from .tools/venv (tests/stack/requirements.txt pins them).
# Idempotent: a stamp holds the hash of the pins and of this script; a re-run with unchanged pins does nothing.
# Only PyPI is used, through pip.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/checkov"
STAMP="$TOOLS/.checkov-install-stamp"
PYTHON="${PYTHON:-python3}"

mkdir -p "$TOOLS"
exec 9>"$TOOLS/.checkov-install.lock"
flock 9

want="$(cat "$HERE/requirements.txt" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/checkov" ]]; then
  echo "checkov up to date: $VENV/bin/checkov"
  exit 0
fi
rm -f "$STAMP"

if ! "$VENV/bin/python" -c '' 2>/dev/null; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$HERE/requirements.txt"
"$VENV/bin/python" -m pip check --disable-pip-version-check >/dev/null
version="$("$VENV/bin/checkov" --version)"
[[ "$version" == 3.3.30 ]] || { echo "install.sh: expected checkov 3.3.30, got $version" >&2; exit 1; }

echo "$want" > "$STAMP"
echo "installed checkov $version into $VENV"
