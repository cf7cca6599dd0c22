#!/usr/bin/env bash
# Runs the test suite in .venv. pytest's exit code 5 ("no tests collected") is a failure here, as is any other.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests — that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
