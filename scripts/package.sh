#!/usr/bin/env bash
# Builds every Lambda function of the workspace for AWS Lambda (provided.al2023) in ONE cargo build, and leaves
#   dist/<binary>/bootstrap.zip   (one per functions/<step> crate: ami-trigger, ami-build, ...)
# which infra/template.yaml's CodeUri entries point at. `sam deploy` uploads these zips as they are: do not
# run `sam build` (SAM's Rust builder would rebuild the whole workspace once per function).
#
#   scripts/package.sh            arm64 (Graviton, the template's default)
#   scripts/package.sh --x86_64   x86_64 (deploy with --parameter-overrides Architecture=x86_64)
#
# Cross-compiles with cargo-lambda and zig from the pinned pip packages in .tools/package (installed by
# scripts/install/package.sh, which installs nothing else). Runs on Linux (x86_64, arm64) and macOS: bash 3.2 and
# BSD tools suffice. The release profile is the root Cargo.toml's [profile.release] only:
# --disable-optimizations stops cargo-lambda from adding its own (lto, codegen-units=1, panic=abort, strip)
# on top, so what is measured and documented is what is built. CARGO_PROFILE_RELEASE_* variables still
# override single settings, e.g. to compare profiles.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/package"
DIST="$ROOT/dist"

arch=arm64
for arg in "$@"; do
  case "$arg" in
    --x86_64 | --x86-64) arch=x86_64 ;;
    --arm64) arch=arm64 ;;
    -h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "package.sh: unknown argument $arg (use --x86_64 or --arm64)" >&2; exit 2 ;;
  esac
done
case "$arch" in
  arm64) triple=aarch64-unknown-linux-gnu; flag=--arm64 ;;
  x86_64) triple=x86_64-unknown-linux-gnu; flag=--x86-64 ;;
esac

bash "$ROOT/scripts/install/package.sh" >/dev/null
# cargo-lambda looks for zig on PATH; the venv has `cargo-lambda` and the `ziglang` package's zig.
export PATH="$VENV/bin:$PATH"
if ! rustup target list --installed | grep -qx "$triple"; then
  rustup target add "$triple"
fi

# The binaries: every [[bin]] of the workspace's function crates (functions/core is a library).
bins=()
while IFS= read -r bin; do bins+=("$bin"); done < <(
  cargo metadata --no-deps --format-version 1 --manifest-path "$ROOT/Cargo.toml" --locked |
  "$VENV/bin/python" -c '
import json, sys
meta = json.load(sys.stdin)
for p in meta["packages"]:
    for t in p["targets"]:
        if "bin" in t["kind"]:
            print(t["name"])' | sort)
[[ ${#bins[@]} -gt 0 ]] || { echo "package.sh: no binaries in the workspace" >&2; exit 1; }

lambda_dir="$(mktemp -d "${TMPDIR:-/tmp}/ami-package.XXXXXX")"
trap 'rm -rf "$lambda_dir"' EXIT

start=$SECONDS
cd "$ROOT"
cargo lambda build --release "$flag" --disable-optimizations --output-format zip --workspace --bins --locked \
  --lambda-dir "$lambda_dir"
elapsed=$((SECONDS - start))

rm -rf "$DIST"
mkdir -p "$DIST"
for bin in "${bins[@]}"; do
  zip="$lambda_dir/$bin/bootstrap.zip"
  [[ -f "$zip" ]] || { echo "package.sh: cargo lambda built no $zip" >&2; exit 1; }
  mkdir -p "$DIST/$bin"
  cp "$zip" "$DIST/$bin/bootstrap.zip"
done
printf '%s\n' "$arch" > "$DIST/ARCHITECTURE"

echo "packaged ${#bins[@]} functions for $arch in ${elapsed}s:"
for bin in "${bins[@]}"; do
  printf '  %-18s %8s bytes  dist/%s/bootstrap.zip\n' "$bin" "$(wc -c <"$DIST/$bin/bootstrap.zip" | tr -d ' ')" "$bin"
done
if [[ "$arch" == x86_64 ]]; then
  echo "deploy with: sam deploy --template-file infra/template.yaml --parameter-overrides Architecture=x86_64 ..."
fi
