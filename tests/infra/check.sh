#!/usr/bin/env bash
# Offline checks of the deployable infrastructure (called by `make test`):
#   1. cfn-lint on infra/template.yaml (SAM schemas; informational rules included), must be clean;
#   2. checkov on it (CloudFormation framework, no download), must be clean: each skip sits in the resource's
#      Metadata with its reason;
#   3. tests/infra/test_template.py: functions vs crates, ASL substitutions, state machine role, and each
#      function's IAM actions vs the SDK calls in its code.
# Tools: cfn-lint and pytest from .tools/venv (tests/stack/install.sh), checkov from .tools/checkov
# (tests/infra/install.sh). Neither needs the network once installed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TEMPLATE="${AMI_TEMPLATE:-$ROOT/infra/template.yaml}"

bash "$ROOT/tests/stack/install.sh" >/dev/null
bash "$HERE/install.sh" >/dev/null

echo "== cfn-lint $TEMPLATE"
"$ROOT/.tools/venv/bin/cfn-lint" --include-checks I -- "$TEMPLATE"
echo "cfn-lint: clean"

echo "== checkov $TEMPLATE"
# BC_SKIP_MAPPING: do not fetch the Prisma Cloud guideline mapping; --skip-download: no external checks.
BC_SKIP_MAPPING=TRUE "$ROOT/.tools/checkov/bin/checkov" --file "$TEMPLATE" --framework cloudformation \
  --skip-download --compact --quiet

echo "== tests/infra"
cd "$ROOT"
AMI_TEMPLATE="$TEMPLATE" "$ROOT/.tools/venv/bin/python" -m pytest -q -p no:cacheprovider tests/infra
