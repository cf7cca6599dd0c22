"""`memloss train --nproc-per-node N ...`: the same command started N times on this node by torchrun
(`python -m memloss.trainer.distributed.torchrun --standalone --nproc-per-node N -m memloss.cli.app -- train ...`,
torchrun with memloss's one-line endings, torchrun.py)."""

from __future__ import annotations

import subprocess
import sys

from memloss.errors import ConfigError
from memloss.trainer.distributed.context import launched_by_torchrun

OPTION = "--nproc-per-node"


def without_option(argv: list[str], option: str = OPTION) -> list[str]:
    """`argv` without `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def torchrun_command(nproc: int, command_args: list[str]) -> list[str]:
    """The torchrun command line that runs `memloss <command_args>` in `nproc` processes on this node. The `--`
    before the memloss command keeps torchrun's parser off its options (it would take `--n` for an abbreviation of
    its own `--nnodes`/`--node-rank`); memloss's command line reads `-- train ...` as `train ...`."""
    return [sys.executable, "-m", "memloss.trainer.distributed.torchrun", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "memloss.cli.app", "--", *command_args]


def relaunch(nproc: int, argv: list[str]) -> int:
    """Runs `memloss <argv minus --nproc-per-node>` under torchrun with `nproc` processes; its exit code."""
    if nproc < 1:
        raise ConfigError(f"{OPTION} must be ≥ 1, got {nproc}")
    if launched_by_torchrun():
        raise ConfigError(f"{OPTION} starts torchrun itself; under torchrun leave it out (torchrun's own "
                          f"{OPTION} sets the number of processes)")
    return subprocess.call(torchrun_command(nproc, without_option(argv)))
