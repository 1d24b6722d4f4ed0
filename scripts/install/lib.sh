# Shared by the installers in this folder (sourced, not run). Each installs pinned tools into $ROOT/.tools
# (git-ignored) and is idempotent: a stamp holds the hash of its pin files, of this file and of the installer, so a
# re-run with unchanged pins does nothing. Only the package registries (PyPI, npm) are used.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.tools"
PYTHON="${PYTHON:-python3}"

# install_lock NAME: one install of NAME at a time (make targets in parallel would trample each other); sets
# STAMP, the file that holds the hash of what NAME last installed.
install_lock() {
  mkdir -p "$TOOLS"
  exec 9>"$TOOLS/.install-$1.lock"
  # flock is util-linux: macOS has none, and there one install at a time is the user's to keep
  if command -v flock >/dev/null; then flock 9; fi
  STAMP="$TOOLS/.install-stamp-$1"
}

# pins_hash FILE...: the hash of the pin files, this file and the installer that sourced it.
pins_hash() {
  if command -v sha256sum >/dev/null; then
    cat "$@" "${BASH_SOURCE[0]}" "$0" | sha256sum | cut -d' ' -f1
  else  # macOS
    cat "$@" "${BASH_SOURCE[0]}" "$0" | shasum -a 256 | cut -d' ' -f1
  fi
}

# up_to_date STAMP HASH EXECUTABLE...: the stamp holds HASH and every EXECUTABLE is there.
up_to_date() {
  local stamp=$1 want=$2 f
  shift 2
  [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] || return 1
  for f in "$@"; do [[ -x "$f" ]] || return 1; done
}

# venv_pip VENV REQUIREMENTS: (re)creates VENV when it is missing or its python is gone, then installs the pins.
venv_pip() {
  if ! "$1/bin/python" -c '' 2>/dev/null; then
    rm -rf "$1"
    "$PYTHON" -m venv "$1"
  fi
  "$1/bin/python" -m pip install --disable-pip-version-check -q -r "$2"
}

# install_venv NAME VENV PINS EXECUTABLE [CHECK...]: installs the pins PINS into the venv VENV unless NAME is up to
# date (stamp, and EXECUTABLE there); CHECK (a command) then proves the install before the stamp is written.
install_venv() {
  local name=$1 venv=$2 pins=$3 exe=$4 want
  shift 4
  install_lock "$name"
  want="$(pins_hash "$pins")"
  if up_to_date "$STAMP" "$want" "$exe"; then
    echo "$name: up to date in $venv"
    return 0
  fi
  rm -f "$STAMP"
  venv_pip "$venv" "$pins"
  "$@"
  echo "$want" > "$STAMP"
  echo "$name: installed into $venv"
}
