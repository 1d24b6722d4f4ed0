#!/usr/bin/env bash
# Installs the AWS CLI (tests/local/awscli-requirements.txt) into $ROOT/.tools/awscli (git-ignored), for the test
# that runs infra/DEPLOY.md's commands against the local stack. A no-op when the pins are unchanged (lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$TOOLS/awscli"
check() {
  [[ "$("$VENV/bin/aws" --version 2>&1)" == aws-cli/1.46.3\ * ]] || { echo "awscli.sh: expected aws-cli 1.46.3" >&2; return 1; }
}
install_venv awscli "$VENV" "$ROOT/tests/local/awscli-requirements.txt" "$VENV/bin/aws" check
