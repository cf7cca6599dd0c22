#!/usr/bin/env bash
# Runs memloss's test suite under another Python in a clean Debian 13 (trixie) root built with debootstrap.
#
#   sudo scripts/check_python.sh 3.13 [--root DIR] [--keep-venv] [-- PYTEST_ARGS...]
#
# What it does, step by step (each step prints one line):
#   1. needs root (debootstrap, chroot, mount); installs debootstrap with apt-get if it is missing;
#   2. builds the root once with `debootstrap --variant=minbase trixie` from deb.debian.org into DIR
#      (default /var/tmp/memloss-trixie, outside the repository; env MEMLOSS_CHROOT overrides) and keeps it as a cache;
#   3. mounts /proc, /sys, /dev, /dev/pts, /dev/shm inside it (unmounted by a trap on every exit), copies resolv.conf,
#      /etc/hosts and this machine's extra certificate authorities (/usr/local/share/ca-certificates);
#   4. installs Debian's python$VERSION, its venv and headers, a C++ compiler, FFCV's build dependencies
#      (libopencv-imgproc-dev, libturbojpeg0-dev) and opencv-python's runtime libraries (libgl1, libglib2.0-0t64) with
#      apt-get inside the root;
#   5. builds FFCV 1.0.2 from its sdist as a local wheel with scripts/ffcv_wheel.sh (FFCV publishes no wheels; the
#      build needs only a pkg-config shim for Debian's split OpenCV, no source change) — cached per Python version;
#   6. copies the repository's tracked and untracked-not-ignored files to /src inside the root, creates a fresh venv
#      (--keep-venv reuses the last one, and skips pip when it was installed from the same pyproject.toml), installs
#      memloss with its test extra (`pip install -e '.[test]'`, as scripts/setup.sh does) from PyPI with the FFCV
#      wheel found through --find-links (this machine's pip configuration and version caps do not apply inside);
#   7. runs pytest (default arguments: -q -p no:cacheprovider, i.e. the default suite without `heavy`) and prints its
#      summary, the installed versions and the wall time of each phase.
# Exit status: pytest's (1 when tests fail), 2 for bad usage.
#
# Python 3.12: Debian ships no python3.12 package (not in trixie, trixie-backports, sid or experimental), and only
# PyPI, Debian and npm are reachable here, so there is no pyenv-free route to 3.12 from Debian's packages: the script
# refuses 3.12 with that reason. The GPU machines' image runs Python 3.12 (bench/gpu_check.sh covers it there).
set -euo pipefail

usage() { echo "usage: $0 3.13 [--root DIR] [--keep-venv] [-- PYTEST_ARGS...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
VERSION=$1; shift
ROOT=${MEMLOSS_CHROOT:-/var/tmp/memloss-trixie}
KEEP_VENV=0
PYTEST_ARGS=(-q -p no:cacheprovider)
while [ $# -gt 0 ]; do
  case $1 in
    --root) ROOT=$2; shift 2 ;;
    --keep-venv) KEEP_VENV=1; shift ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    *) usage ;;
  esac
done
case $VERSION in
  3.13) ;;
  3.12) echo "check_python: Python 3.12 is not packaged in Debian 13 (trixie ships python3.13 only) and no other" \
             "source of CPython is reachable here (only PyPI, Debian, npm): only 3.13 can be checked" >&2; exit 2 ;;
  *) echo "check_python: VERSION must be 3.13 (3.12: see the header of this script), got '$VERSION'" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "$0")/.." && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FFCV_VERSION=1.0.2
T_START=$(date +%s)
phase() { echo "check_python: [$(( $(date +%s) - T_START )) s] $*"; }
in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
            DEBIAN_FRONTEND=noninteractive "$@"; }

case $ROOT in "$REPO"|"$REPO"/*) echo "check_python: --root must lie outside the repository ($REPO)" >&2; exit 2 ;; esac
if [ "$(id -u)" -ne 0 ]; then
  echo "check_python: needs root (debootstrap, chroot and mount); run it with sudo" >&2; exit 2
fi

# 1. debootstrap
if ! command -v debootstrap >/dev/null 2>&1; then
  phase "debootstrap is missing: apt-get update && apt-get install -y debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# 2. the Debian 13 root, built once
if [ ! -f "$ROOT/.memloss-base" ]; then
  phase "building a Debian 13 (trixie) root in $ROOT with debootstrap (a few minutes, once)"
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  debootstrap --variant=minbase --include=ca-certificates trixie "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { echo "check_python: debootstrap failed; its log: $ROOT.debootstrap.log" >&2; exit 1; }
  printf 'Types: deb deb-src\nURIs: %s\nSuites: trixie trixie-updates\nComponents: main\nSigned-By: %s\n' \
    "$MIRROR" /usr/share/keyrings/debian-archive-keyring.gpg > "$ROOT/etc/apt/sources.list.d/debian.sources"
  rm -f "$ROOT/etc/apt/sources.list"
  touch "$ROOT/.memloss-base"
fi

# 3. mounts, undone by the trap whatever happens
MOUNTED=()
cleanup() {
  local i
  for (( i=${#MOUNTED[@]}-1; i>=0; i-- )); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount_in() {  # mount_in TYPE-OR---bind SOURCE TARGET
  mkdir -p "$ROOT$3"
  if mountpoint -q "$ROOT$3"; then return 0; fi  # left by an earlier run that was killed: reuse it
  if [ "$1" = --bind ]; then mount --bind "$2" "$ROOT$3"; else mount -t "$1" "$2" "$ROOT$3"; fi
  MOUNTED+=("$ROOT$3")
}
mount_in proc proc /proc
mount_in sysfs sysfs /sys
mount_in --bind /dev /dev
mount_in --bind /dev/pts /dev/pts
mount_in tmpfs tmpfs /dev/shm
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# This machine's hosts file: torchrun --standalone resolves the host's own name, which debootstrap's root does not
# know (the distributed tests then hang in the rendezvous until their 600 s timeout).
cp -L /etc/hosts "$ROOT/etc/hosts"
# Certificate authorities this machine adds to Debian's (an HTTPS-inspecting proxy, say): the root trusts them too.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  in_root update-ca-certificates >/dev/null 2>&1
fi

# 4. Python and FFCV's build dependencies from Debian
# libgl1 and libglib2.0-0t64: FFCV requires opencv-python (not -headless), whose cv2 loads libGL.so.1 and GLib; a
# minimal Debian has neither, and every test that touches FFCV then fails with "libGL.so.1: cannot open shared object".
APT=(python$VERSION python$VERSION-venv python$VERSION-dev g++ make pkg-config libopencv-imgproc-dev
     libturbojpeg0-dev libgl1 libglib2.0-0t64)
if [ ! -f "$ROOT/.memloss-apt-$VERSION" ] || [ "$(cat "$ROOT/.memloss-apt-$VERSION")" != "${APT[*]}" ]; then
  phase "apt-get install inside the root: ${APT[*]}"
  in_root apt-get update -qq
  in_root apt-get install -y -qq --no-install-recommends "${APT[@]}" >/dev/null
  echo "${APT[*]}" > "$ROOT/.memloss-apt-$VERSION"
fi
PY=/usr/bin/python$VERSION
phase "$(in_root $PY --version) from Debian $(cat "$ROOT/etc/debian_version")"

# 5. FFCV as a local wheel, built with the fix applied
WHEELS=/opt/memloss-wheels-$VERSION
if ! ls "$ROOT$WHEELS"/ffcv-$FFCV_VERSION-*.whl >/dev/null 2>&1; then
  phase "building a wheel of FFCV $FFCV_VERSION from its sdist (scripts/ffcv_wheel.sh)"
  rm -rf "$ROOT/opt/ffcv-build" && mkdir -p "$ROOT/opt/ffcv-build" "$ROOT$WHEELS"
  cp "$REPO/scripts/ffcv_wheel.sh" "$ROOT/opt/ffcv-build/"
  in_root bash /opt/ffcv-build/ffcv_wheel.sh "$PY" /opt/ffcv-build "$WHEELS" "$FFCV_VERSION"
fi

# 6. the repository, a venv, memloss[test]
phase "copying the repository to /src inside the root"
rm -rf "$ROOT/src" && mkdir -p "$ROOT/src"
(cd "$REPO" && git ls-files -z -co --exclude-standard \
   | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
   | tar --null -cf - -T - ) | tar -xf - -C "$ROOT/src"
VENV=/opt/venv-$VERSION
# (the venv's bin/python links to /usr/bin/python3.X of the root: test it from inside, not from this machine)
if [ "$KEEP_VENV" -eq 0 ] || ! in_root test -x "$VENV/bin/python"; then
  rm -rf "${ROOT:?}$VENV"
  in_root $PY -m venv "$VENV"
fi
# The editable install maps memloss to /src, which is copied anew above: a kept venv whose install came from the same
# pyproject.toml needs no second pip run (pip's resolver can take many minutes on the test extra's moto[server]).
STAMP=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
T_PIP=$(date +%s)
if [ "$KEEP_VENV" -eq 1 ] && [ "$(cat "$ROOT$VENV/.memloss-stamp" 2>/dev/null)" = "$STAMP" ]; then
  phase "reusing $VENV (installed from this pyproject.toml)"
else
  phase "pip install -e '.[test]' (torch and the rest from PyPI, FFCV from $WHEELS)"
  rm -f "$ROOT$VENV/.memloss-stamp"
  in_root "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  in_root sh -c "cd /src && $VENV/bin/python -m pip install -q --find-links $WHEELS -e '.[test]'"
  echo "$STAMP" > "$ROOT$VENV/.memloss-stamp"
fi
phase "installed in $(( $(date +%s) - T_PIP )) s:" \
  "$(in_root "$VENV/bin/python" -m pip list --format=freeze 2>/dev/null \
     | grep -iE '^(torch|torchvision|numpy|zarr|numcodecs|ffcv|numba|pyautoattack|robustbench|moto|scikit-learn)==' \
     | tr '\n' ' ')"

# 7. the test suite
phase "running pytest ${PYTEST_ARGS[*]} under $(in_root "$VENV/bin/python" --version)"
T_TEST=$(date +%s)
set +e
in_root sh -c "cd /src && exec $VENV/bin/python -m pytest $(printf '%q ' "${PYTEST_ARGS[@]}")"
RC=$?
set -e
phase "pytest exit status $RC; tests took $(( $(date +%s) - T_TEST )) s; whole check $(( $(date +%s) - T_START )) s"
exit $RC
