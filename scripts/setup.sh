#!/usr/bin/env bash
# Set up memloss on this machine: FFCV's Debian build dependencies (as root), .venv at the repo root, the package with
# its test extras at the versions of constraints.txt (what CI runs), and FFCV when it can be built here. Without root
# or a compiler memloss installs without FFCV and loads batches with its numpy reader (same batches; docs/guide.md).
# Idempotent: a second run with nothing changed takes about a second.
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
    return 0  # not root or no apt-get: FFCV is built only if its dependencies are already here (below)
  fi
  echo "setup: installing FFCV's build dependencies:" $missing
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
}

ffcv_buildable() {
  # FFCV 1.0.2's setup.py asks pkg-config for opencv4 (or opencv) and libturbojpeg, and compiles C++.
  command -v pkg-config >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 \
    && { pkg-config --exists opencv4 || pkg-config --exists opencv; } && pkg-config --exists libturbojpeg
}

quiet_pip() {
  # pip warns about every configured local index folder that lacks a package; those lines are noise here.
  grep -vE "is ignored: it is neither a file nor a directory" || true
}

install_python_packages() {
  local stamp=.venv/.memloss-installed want extras=test
  ffcv_buildable && extras=test,ffcv
  want=$( (cat pyproject.toml constraints.txt; "$PYTHON" --version; echo "$extras") | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import memloss.cli, memloss.memstore, memloss.trainer" 2>/dev/null; then
    return 0
  fi
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  [ "$extras" = test,ffcv ] || echo "setup: FFCV cannot be built here (needs pkg-config, OpenCV and libjpeg-turbo" \
    "headers and a C++ compiler): installing without it; memloss reads the same .beton with numpy, same batches" \
    "(docs/guide.md, 'Installing without root')."
  echo "setup: installing memloss[$extras] and its dependencies into .venv at the versions of constraints.txt" \
       "(first time: a few minutes)"
  .venv/bin/python -m pip install -q -c constraints.txt --upgrade pip setuptools wheel 2>&1 | quiet_pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[$extras]" 2>&1 | quiet_pip
  echo "$want" > "$stamp"
}

install_autoattack_alias() {
  # robustbench 1.1.1 imports fra31's `autoattack`, which is not on PyPI: alias it to pyautoattack (scripts/autoattack-alias).
  .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('autoattack') is None)" \
    && return 0
  .venv/bin/python -m pip install -q --no-deps ./scripts/autoattack-alias 2>&1 | quiet_pip
}

install_system_packages
install_python_packages
install_autoattack_alias
echo "setup: ready (.venv/bin/memloss)"
