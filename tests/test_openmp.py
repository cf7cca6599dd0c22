"""`import memloss` makes torch's OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE), as libgomp itself
reports (OMP_DISPLAY_ENV=verbose prints the spin count it uses), unless the user chose a policy; and it says so when
torch was imported first, too late for the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memloss.trainer.common import openmp
from memloss.trainer.common.openmp import WaitPolicy, passive_waits


def libgomp_spincount(code: str, **env: str) -> str:
    """The GOMP_SPINCOUNT libgomp settled on in a fresh interpreter running `code` (it prints it when it loads)."""
    base = {k: v for k, v in os.environ.items() if k not in openmp.USER_VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], env={**base, "OMP_DISPLAY_ENV": "VERBOSE", **env},
                         capture_output=True, text=True, check=True)
    lines = [line for line in out.stderr.splitlines() if "GOMP_SPINCOUNT" in line]
    if "OPENMP DISPLAY ENVIRONMENT" not in out.stderr:
        pytest.skip("this torch does not run on GNU OpenMP (libgomp)")
    assert lines, out.stderr[-2000:]
    return lines[0].split("=")[1].strip().strip("'")


def test_libgomp_waits_passively_once_memloss_is_imported_first() -> None:
    assert libgomp_spincount("import memloss, torch") == "0"
    assert libgomp_spincount("import torch") == "300000"  # libgomp's own default: spin ~3 ms before sleeping


def test_the_users_choice_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000")):
        monkeypatch.setattr(openmp, "_STATE", None)
        for other in openmp.USER_VARIABLES:
            monkeypatch.delenv(other, raising=False)
        monkeypatch.setenv(name, value)
        state = passive_waits()
        assert not state.set_here and os.environ[name] == value and state.note() is None
    monkeypatch.setattr(openmp, "_STATE", None)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert passive_waits().set_here and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_torch_imported_first_gets_a_note() -> None:
    note = WaitPolicy(set_here=True, torch_first=True).note()
    assert note is not None and "OMP_WAIT_POLICY=PASSIVE" in note and "\n" not in note
    assert WaitPolicy(set_here=True, torch_first=False).note() is None
