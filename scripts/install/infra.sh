#!/usr/bin/env bash
# Installs checkov, pinned with everything it pulls in (tests/infra/requirements.txt), into its own venv
# $ROOT/.tools/checkov (git-ignored). Its own venv because checkov 3.3.30 needs boto3/botocore 1.35,
# packaging < 24 and networkx < 2.7, while .tools/venv pins boto3 1.44.8 for moto and pytest 9.2 needs
# packaging >= 24: in one venv each install would break the other.
# cfn-lint and pytest come from .tools/venv (stack.sh; tests/stack/requirements.txt pins them).
# A no-op when the pins are unchanged (lib.sh; stamp .tools/.install-stamp-infra).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$TOOLS/checkov"
check() {
  "$VENV/bin/python" -m pip check --disable-pip-version-check >/dev/null
  local version
  version="$("$VENV/bin/checkov" --version)"
  [[ "$version" == 3.3.30 ]] || { echo "infra.sh: expected checkov 3.3.30, got $version" >&2; return 1; }
}
install_venv infra "$VENV" "$ROOT/tests/infra/requirements.txt" "$VENV/bin/checkov" check
