"""Checks of a training start that need no data, made once in the launching process before torch, ffcv or the
data are loaded and before any file is written (`memloss train` calls `check_start` right after resolving the
config; `fit` repeats the few that guard its own writes). Every refusal is one `ConfigError` line.

- Run-time options: --log-every, --threads.
- Paths: the run directory (not a file, not below one, creatable, not holding a finished run), the store's place
  (not the run directory itself nor a folder that holds it, not a file, creatable), --data-dir, the HAT helper
  (a regular file, or a run directory with its last.safetensors), the generated-data parts (each exists and is a
  regular file, checked with os.stat so that a FIFO never blocks; no file given twice, by path or inode).
- Sizes (bounds.py): schedule, batch, the store's RAM and disk.
- The store's URL and options (one probe of an object store).
- A multi-process start (`check_launch`, --nproc-per-node): refused before torchrun starts any rank.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memloss.errors import ConfigError
from memloss.memstore.location.options import checked_location
from memloss.trainer.config.schema import TrainConfig
from memloss.trainer.training.bounds import check_sizes
from memloss.trainer.training.resume import absolute
from memloss.trainer.training.runs import check_new_run_dir, check_run_dir_path, default_run_dir, load_state

_KIND = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def check_start(cfg: TrainConfig, resume: Path | None, store_options: Mapping[str, Any] | None = None, *,
                log_every: int = 0, threads: str | int | None = None) -> Path:
    """All checks of a start that need no data (module docstring); returns the run directory (absolute)."""
    check_run_options(log_every, threads)
    aux_parts(cfg.data.aux_data)
    if cfg.method.helper:
        check_helper(cfg.method.helper)
    if cfg.data.data_dir:
        check_run_dir_path(Path(absolute(cfg.data.data_dir)), "--data-dir")  # a folder, not below a file
    if resume is not None:
        return Path(absolute(resume))
    run_dir = Path(absolute(cfg.run.out or default_run_dir(cfg)))
    check_new_run_dir(run_dir)
    _creatable(run_dir, "the run directory", "--out")
    store = absolute(cfg.run.store) if cfg.run.store else (str(run_dir / "memory.zarr") if cfg.uses_store else None)
    if cfg.run.store and _local(cfg.run.store):
        check_store_place(Path(store), run_dir)  # type: ignore[arg-type]
    checked_location(cfg.run.store, store_options)
    check_sizes(cfg, store)
    return run_dir


def check_run_options(log_every: int, threads: str | int | None) -> None:
    if log_every < 0:
        raise ConfigError(f"--log-every must be ≥ 0 steps (0: per-epoch scalars only), got {log_every}")
    if threads is None or threads == "auto":
        return
    try:
        number = int(threads)
    except (TypeError, ValueError):
        raise ConfigError(f"--threads must be a positive integer or auto, got {threads!r}") from None
    if number < 1:
        raise ConfigError(f"--threads must be ≥ 1 (or auto), got {number}")


def _local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def writable_folder(folder: Path) -> bool:
    """True when files can be created in the existing `folder`, judged without writing: permissions (root passes
    them all), a read-only mount, or a pseudo-filesystem without blocks (/proc, /sys)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    fs = os.statvfs(folder)
    return not (fs.f_flag & os.ST_RDONLY) and fs.f_blocks > 0


def _creatable(path: Path, what: str, option: str) -> None:
    """Refuses a path whose nearest existing folder cannot be written (so its creation would fail later)."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing == path:
        return
    if not writable_folder(existing):
        raise ConfigError(f"cannot create {what} {path} ({existing} is not writable); choose another {option}")


def check_store_place(store: Path, run_dir: Path) -> None:
    """The store may live inside the run directory (its default place), but not be it or hold it: the run's
    restart and its resume point would then live inside the store (and a new start of a run that never completed
    an epoch would find a store where it expects its own files)."""
    if store == run_dir or run_dir.is_relative_to(store):
        where = "is the run directory" if store == run_dir else f"holds the run directory {run_dir}"
        raise ConfigError(f"--store {store} {where}; the store needs its own folder: leave --store out (it then "
                          f"lives in {run_dir / 'memory.zarr'}) or give another path")
    for part in (store, *store.parents):
        if part.exists():
            if not part.is_dir():
                raise ConfigError(f"--store {store}: {part} is a file, not a memory store directory; choose "
                                  "another path")
            break
    existing = next(p for p in (store, *store.parents) if p.exists())
    if existing != store and not writable_folder(existing):
        raise ConfigError(f"cannot create the store directory {store} ({existing} is not writable); choose another "
                          "--store")


def check_helper(helper: str) -> None:
    """HAT's helper: a regular .safetensors file, or a run directory holding last.safetensors (as the session
    resolves it); never opened here."""
    path = Path(absolute(helper))
    if path.is_dir():
        path = path / "last.safetensors"
    _regular(path, "--helper", "checkpoint {path} does not exist; pass a .safetensors file or a run directory")


def aux_parts(files: tuple[str, ...]) -> None:
    """Each generated-data part exists and is a regular file (os.stat: a FIFO is refused, never opened), and no
    file is given twice (the same path, or two names of the same inode)."""
    seen: dict[tuple[int, int], str] = {}
    for name in files:
        info = _regular(Path(name), "--aux-data", "--aux-data {path} does not exist; check the path")
        key = (info.st_dev, info.st_ino)
        if key in seen:
            same = "twice" if seen[key] == name else f"twice ({seen[key]} and {name} are the same file)"
            raise ConfigError(f"--aux-data lists {name} {same}; give each part file once")
        seen[key] = name


def _regular(path: Path, option: str, missing: str) -> os.stat_result:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(missing.format(path=path)) from None
    except OSError as err:
        raise ConfigError(f"{option} {path}: cannot read it ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = _KIND.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise ConfigError(f"{option} {path} is {kind}, not a file; give a regular file")
    return info


def _check_mix_split(cfg: TrainConfig, nproc: int) -> None:
    """Refuses a mixed batch (--aux-data) that cannot give every process base and generated samples."""
    from memloss.memstore.layout.mixing import PUBLISHED_AUX_FRACTION
    from memloss.trainer.distributed.shards import MixedShards

    d = cfg.data
    aux = int((PUBLISHED_AUX_FRACTION if d.aux_fraction is None else d.aux_fraction) * d.batch_size)
    if 1 <= aux < d.batch_size:  # other fractions are refused by the mix itself
        MixedShards(d.batch_size - aux, aux, 1, nproc, 0)


def check_launch(cfg: TrainConfig, resume: Path | None, nproc: int,
                 store_options: Mapping[str, Any] | None = None) -> None:
    """Raises a `ConfigError` (one line) for a start of `nproc` processes that the ranks would refuse: the process
    count, a global batch not divisible by it (or a mixed one that cannot give each process both kinds of samples),
    an in-process store, a bad store URL or option, a run directory in use (new run) or a resume point of another
    world size. Reads only; writes nothing."""
    from memloss.trainer.distributed.shards import Shards

    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be ≥ 1, got {nproc}")
    Shards(0, cfg.data.batch_size, nproc, 0)  # the global batch splits evenly
    if cfg.data.aux_data:
        _check_mix_split(cfg, nproc)
    if nproc > 1 and cfg.run.store and cfg.run.store.startswith("memory://"):
        raise ConfigError(f"--store {cfg.run.store} lives inside one process; with several processes use a path "
                          "(one node), a shared filesystem path or an s3:// URL (several nodes)")
    checked_location(cfg.run.store, store_options)
    if resume is None and cfg.run.out:
        check_new_run_dir(Path(absolute(cfg.run.out)))
    state = load_state(Path(absolute(resume))) if resume is not None else None  # loads torch: the last check
    if state is not None:
        from memloss.trainer.distributed.state import check_world

        check_world(state, nproc)
