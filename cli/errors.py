"""Every failure the user can cause or fix ends as one line on stderr and exit code 2, never a traceback.

- The library's `MemlossError`s: `error: <message>`.
- Errors of the environment that the library did not wrap (a full disk, a read-only or missing path): `error:` with
  the system's reason and the file, which the user can fix as well.
- Usage errors of the command line (an unknown option, `--k 1.5`): `error:` with click's message and the command
  whose `--help` lists the options (`OneLineGroup`).
- Under torchrun: a rank whose peer (rank 0) refused bad input ends quietly with exit 2 (rank 0 printed the line);
  a rank that loses its connection to a crashed or killed rank says so in one line and exits 1.
- Ctrl-C: one line and exit code 130.
Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, ParamSpec, TypeVar

import typer
from typer.core import TyperGroup

from memloss.errors import MemlossError, PeerFailed

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str, code: int = 2) -> typer.Exit:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return typer.Exit(code=code)


def os_error_message(err: OSError) -> str:
    """'cannot access PATH: reason' for an OSError the library did not wrap."""
    where = f" {err.filename}" if err.filename else ""
    reason = err.strerror or type(err).__name__
    return f"cannot access{where}: {reason}"


def lost_peer(err: RuntimeError) -> bool:
    """True for the error a torchrun rank gets in a collective when another rank died (gloo: the connection closed;
    NCCL: a DistBackendError): the dead rank's own output and torchrun's say why, a traceback here adds nothing."""
    if "RANK" not in os.environ:
        return False
    dist = sys.modules.get("torch.distributed")
    backend_error = getattr(dist, "DistBackendError", ()) if dist is not None else ()
    text = str(err)
    return (bool(backend_error) and isinstance(err, backend_error)) or any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "remote worker"))


def one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wraps a CLI command: MemlossError and OSError become `error: <message>` on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except PeerFailed:  # torchrun: rank 0 printed the line; this rank ends with the same code, silently
            raise typer.Exit(code=2) from None
        except MemlossError as err:
            raise _fail(str(err)) from None
        except OSError as err:
            raise _fail(os_error_message(err)) from None
        except RuntimeError as err:
            if not lost_peer(err):
                raise
            raise _fail(f"this training process (rank {os.environ.get('RANK')}) stopped: another rank of the job "
                        "is gone (crashed or killed; its own output says why)", code=1) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper


class OneLineGroup(TyperGroup):
    """The root command group: usage errors (bad option values, unknown options) are one line, like every other
    error, instead of click's usage box."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except typer.TyperException as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # bare `memloss`: the help text, as click shows it
                err.show()  # type: ignore[attr-defined]
                sys.exit(getattr(err, "exit_code", 2))
            ctx = getattr(err, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            print(f"error: {' '.join(err.format_message().split())}{where}", file=sys.stderr)
            sys.exit(2)
        except typer.Abort:
            print("aborted", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
