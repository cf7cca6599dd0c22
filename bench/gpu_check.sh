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
# Environment: MEMLOSS_KIT (default .whl): the kit folder; PYTHON: the interpreter (default: .venv/bin/python when the
# repository has one and no kit is installed, else python3); MEMLOSS_KIT_TARGET (default /tmp/memloss-kit): where
# the kit is installed (pip --target; put on PYTHONPATH for the check's processes).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [--device cuda|cpu] [--smoke] [--only NAME,...]" >&2; exit 2; }

KIT=${MEMLOSS_KIT:-.whl}
if compgen -G "$KIT/*.whl" >/dev/null; then
  PY=${PYTHON:-python3}
  TARGET=${MEMLOSS_KIT_TARGET:-/tmp/memloss-kit}
  if [ -f "$KIT/KIT.txt" ] && [ "$(sed -n 's/^tree: //p' "$KIT/KIT.txt")" != "$(git rev-parse HEAD 2>/dev/null || echo unknown)" ]; then
    echo "gpu_check: warning: the kit's memloss wheel was built from another commit ($KIT/KIT.txt); rebuild it with scripts/device_kit.sh" >&2
  fi
  echo "gpu_check: installing the kit ($(ls "$KIT"/*.whl | wc -l) wheels, $(du -sh "$KIT" | cut -f1)) into $TARGET"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TARGET" "$KIT"/*.whl
  export PYTHONPATH=$TARGET${PYTHONPATH:+:$PYTHONPATH}
  # The kit's console scripts (memloss, torchrun's helpers are the image's own) for the sections' subprocesses.
  export PATH=$TARGET/bin:$PATH
else
  if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
fi
exec "$PY" bench/gpu_check.py "$@"
