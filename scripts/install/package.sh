#!/usr/bin/env bash
# Installs what packaging needs, pinned (scripts/install/package-requirements.txt), into $ROOT/.tools/package
# (git-ignored): cargo-lambda and zig. Nothing else: `make package` and `make deploy` must work on any machine that
# builds Rust (Linux x86_64 or arm64, macOS), not only where the emulator's tools install.
# A no-op when the pins are unchanged (lib.sh; stamp .tools/.install-stamp-package).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$TOOLS/package"
check() {
  "$VENV/bin/cargo-lambda" lambda --version >/dev/null
  "$VENV/bin/python" -m ziglang version >/dev/null
}
install_venv package "$VENV" "$ROOT/scripts/install/package-requirements.txt" "$VENV/bin/cargo-lambda" check
