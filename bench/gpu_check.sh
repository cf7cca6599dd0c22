#!/usr/bin/env bash
# The GPU check in one call: installs the carried kit (scripts/device_kit.sh) when there is one, then runs
# bench/gpu_check.py, which writes OUTDIR/gpu_check.json, OUTDIR/gpu_check.md and OUTDIR/gpu_check.log.
#
#   bench/gpu_check.sh OUTDIR [--device cuda|cpu] [--smoke] [--only NAME,...]
#
# On a lent GPU machine (no network; Python 3.12 and its own torch), from the repository root, with `.whl` carried:
#   bench/gpu_check.sh "$OUT"                          # about 8 minutes at most
# Here, as CI does (tests/test_gpu_check.py):
#   bench/gpu_check.sh /tmp/gc --device cpu --smoke    # under a minute
#
# Interpreter: $PYTHON if set; else .venv/bin/python in a development checkout (then no kit is installed); else
# python3 (the GPU machines' image). With $PYTHON or python3, the kit in $MEMLOSS_KIT (default .whl) is installed, if
# it holds wheels, into $MEMLOSS_KIT_TARGET (default /tmp/memloss-kit), which goes on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [--device cuda|cpu] [--smoke] [--only NAME,...]" >&2; exit 2; }

KIT=${MEMLOSS_KIT:-.whl}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python  # a development checkout: its own environment, no kit
else
  PY=${PYTHON:-python3}
  if compgen -G "$KIT/*.whl" >/dev/null; then
    TARGET=${MEMLOSS_KIT_TARGET:-/tmp/memloss-kit}
    built=$(sed -n 's/^tree: \([0-9a-f]*\).*/\1/p' "$KIT/KIT.txt" 2>/dev/null || true)
    if [ -n "$built" ] && [ "$built" != "$(git rev-parse HEAD 2>/dev/null || echo "$built")" ]; then
      echo "gpu_check: warning: the kit's memloss wheel was built from commit $built, not HEAD; rebuild it with scripts/device_kit.sh" >&2
    fi
    echo "gpu_check: installing the kit ($(ls "$KIT"/*.whl | wc -l) wheels, $(du -sh "$KIT" | cut -f1)) into $TARGET"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TARGET" "$KIT"/*.whl
    export PYTHONPATH=$TARGET${PYTHONPATH:+:$PYTHONPATH}
    export PATH=$TARGET/bin:$PATH  # the kit's console scripts (memloss) for the sections' subprocesses
  fi
fi
exec "$PY" bench/gpu_check.py "$@"
