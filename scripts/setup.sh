#!/usr/bin/env bash
# Set up memloss on this machine: FFCV's Debian build dependencies, .venv at the repo root, the package with its
# test extras. Idempotent: a second run with nothing changed takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(pkg-config libopencv-dev libturbojpeg0-dev)
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

missing_apt_packages() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

install_system_packages() {
  local missing
  missing=$(missing_apt_packages)
  if [ -z "$missing" ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: FFCV needs the system packages:" $missing "— not root or no apt-get, so skipping;" \
         "install them yourself (see docs/guide.md, 'Installing FFCV')." >&2
    return 0
  fi
  echo "setup: installing FFCV's build dependencies:" $missing
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
}

quiet_pip() {
  # pip warns about every configured local index folder that lacks a package; those lines are noise here.
  grep -vE "is ignored: it is neither a file nor a directory" || true
}

install_python_packages() {
  local stamp=.venv/.memloss-installed want
  want=$( (cat pyproject.toml; "$PYTHON" --version) | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import memloss.cli, memloss.memstore, memloss.trainer" 2>/dev/null; then
    return 0
  fi
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  echo "setup: installing memloss and its dependencies into .venv (first time: about a minute)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel 2>&1 | quiet_pip
  .venv/bin/python -m pip install -q -e '.[test]' 2>&1 | quiet_pip
  echo "$want" > "$stamp"
}

install_system_packages
install_python_packages
echo "setup: ready (.venv/bin/memloss)"
