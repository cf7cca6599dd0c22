"""`python -m memloss.trainer.distributed.torchrun ARGS`: torchrun (`torch.distributed.run`, same arguments) with
memloss's endings, for `memloss train --nproc-per-node N`.

Plain torchrun ends any failed process group with its own traceback and report. Here a rank that stopped on bad input
has printed its one line and exited with 2, so the launcher exits 2 quietly; a rank that crashed or was killed gives
one line naming it and the way on (`--resume`); Ctrl-C exits 130."""

from __future__ import annotations

import logging
import os
import sys

INPUT_ERROR = 2  # a rank's exit code for bad input (cli/errors.py)
INTERRUPTED = 130


def _ending(rank: int, exitcode: int) -> tuple[int, str | None]:
    """(exit code, line to print) for the first rank that failed (torchrun stops the others after it)."""
    if exitcode in (INPUT_ERROR, INTERRUPTED):
        return exitcode, None  # the rank printed the reason
    how = f"was killed by signal {-exitcode}" if exitcode < 0 else f"exited with code {exitcode}"
    return 1, (f"error: training process rank {rank} {how}; the other ranks were stopped. Continue from the last "
               "completed epoch with `memloss train --resume RUN_DIR` (same --nproc-per-node)")


def main(argv: list[str] | None = None) -> int:
    """Runs torchrun with `argv`; the exit code (0, 2 bad input, 130 interrupted, 1 a rank crashed)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # Torchrun's own warnings (SIGTERM sent to the other ranks, OMP_NUM_THREADS set) say what the line below says.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default for several processes, without its banner
    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code, line = _ending(rank, failure.exitcode)
        if line:
            print(line, file=sys.stderr)
        return code
    except (SignalException, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
