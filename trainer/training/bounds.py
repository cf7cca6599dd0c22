"""Size bounds of a training start, checked from the config alone (no torch, no data read, nothing written): what
the run would need against what the machine and the data have. Each refusal is one line with the figure, the
limit and the fix.

- Schedule: epochs × steps per epoch above `MAX_OPTIMIZER_STEPS` (10⁸). The longest published adversarial-training
  schedules (thousands of epochs over millions of generated CIFAR-10 images, e.g. Wang et al. 2023) stay in
  the order of 10⁶–10⁷ optimizer steps; 10⁸ is beyond all of them and, at an optimistic 10 ms a step, 11.6 days
  of one GPU. A run past it is a typo (`--epochs 1000000000000`), not a schedule.
- The training set: a batch larger than it (without generated data) can only be a typo; `--n` / `--eval-n` above
  the split sizes of the built-in datasets.
- RAM: one batch's input tensors (the images, their augmented view, the adversarial copy and its gradient, HAT's
  helper example and the memory examples, float32) on a CPU run, and the memory store's RAM (its smallest window at
  K, or what the budget lets it keep resident) against psutil's available memory.
- Disk: the store's slots written over the run (min(K+1, epochs) of rows × row bytes, raw) against the free space
  where it will live (local paths; an object store URL is not checked; a memory:// store counts against RAM).
"""

from __future__ import annotations

import os
from pathlib import Path

from memloss.errors import ConfigError
from memloss.trainer.common.files import free_bytes
from memloss.trainer.config.schema import TrainConfig
from memloss.trainer.data.registry import SYNTHETIC_DEFAULT_N, dataset_info, is_builtin

MAX_OPTIMIZER_STEPS = 10**8
# Bytes of one store row besides the δ codes: scale f32 + (epoch, dy, dx, flip) int32 (memstore.entries.ROW_AUX_BYTES;
# not imported from there: it loads torch).
ROW_AUX_BYTES = 4 + 4 * 4
# (train, test) sizes of the built-in datasets' splits; synthetic has any size (its n).
SPLIT_SIZES: dict[str, tuple[int, int]] = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000),
                                           "svhn": (73_257, 26_032), "digits": (1_437, 360)}
# float32 copies of a batch on a CPU run besides the memory examples: x, its view, x_adv and the attack's gradient.
BATCH_COPIES = 4


def gib(n: float) -> str:
    """Bytes as the refusals show them: GiB with 2 decimals, or MiB below 1 GiB."""
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def available_ram() -> int:
    """Bytes of RAM available to a new allocation (psutil; MemAvailable on Linux)."""
    import psutil

    return int(psutil.virtual_memory().available)


def base_samples(cfg: TrainConfig) -> int:
    """Training samples of the base set: the first --n of the split (synthetic: n generated)."""
    d = cfg.data
    if d.dataset == "synthetic":
        return d.n or SYNTHETIC_DEFAULT_N
    train, _ = SPLIT_SIZES[d.dataset]
    if d.n is not None and d.n > train:
        raise ConfigError(f"--n {d.n} is above the {train} samples of the {d.dataset} training split; lower --n or "
                          "leave it out for all of them")
    return d.n or train


def check_eval_n(cfg: TrainConfig) -> None:
    d, e = cfg.data, cfg.run.eval_n
    if e is None or d.dataset == "synthetic":
        return
    _, test = SPLIT_SIZES[d.dataset]
    if e > test:
        raise ConfigError(f"--eval-n {e}: n must be ≥ 1 and ≤ {test} (the {d.dataset} test split); lower --eval-n "
                          "or leave it out for the whole test set")


def aux_samples(files: tuple[str, ...], take: int | None) -> int | None:
    """Images of the generated set, from the .npz headers (None when a header cannot be read: the data checks
    later say why)."""
    if not files:
        return 0
    from memloss.trainer.data.npz import open_member

    try:
        total = sum(int(open_member(Path(f), "label").shape[0]) for f in files)
    except Exception:  # an unreadable part is refused, with its reason, when the data is prepared
        return None
    return min(total, take) if take is not None else total


def check_schedule(cfg: TrainConfig, samples: int) -> None:
    b, epochs = cfg.data.batch_size, cfg.optim.epochs
    steps = -(-samples // b)
    total = epochs * steps
    if total > MAX_OPTIMIZER_STEPS:
        raise ConfigError(f"--epochs {epochs} × {steps} steps per epoch = {total:.3g} optimizer steps, above the "
                          f"limit of {MAX_OPTIMIZER_STEPS:.0e} (beyond any published schedule); lower --epochs")


def check_batch(cfg: TrainConfig, samples: int, cpu: bool) -> None:
    """A batch larger than the training set, or whose input tensors alone exceed the available RAM (CPU run)."""
    d, m = cfg.data, cfg.method
    if not d.aux_data and d.batch_size > samples:
        raise ConfigError(f"--batch-size {d.batch_size} is larger than the {samples} training samples (not one full "
                          f"batch per epoch); use --batch-size {samples} or less, or more samples")
    c, h, w = dataset_info(d.dataset, d.resolution).shape
    slots = min(m.memory_slots_per_step or m.k, cfg.optim.epochs - 1)  # ages that can hold memory (0 when k = 0)
    copies = BATCH_COPIES + slots + (1 if m.method == "hat" else 0)
    need = d.batch_size * c * h * w * (4 * copies if cpu else 2)  # on a GPU the host holds the uint8 batches
    ram = available_ram()
    if need > ram:
        where = f"{copies} float32 copies of" if cpu else "the uint8 read-ahead of"
        raise ConfigError(f"--batch-size {d.batch_size} needs at least {gib(need)} of RAM ({where} {c}×{h}×{w} "
                          f"images, before the model's activations), but {gib(ram)} are available; lower "
                          "--batch-size (e.g. 128)")


def check_store(cfg: TrainConfig, rows: int, store_path: str | None) -> None:
    """The store's RAM (smallest window at K, or what it keeps resident) and disk against the machine."""
    if not cfg.uses_store:
        return
    from memloss.memstore.layout.budget import DECODE_GROUP_BLOCKS, WRITE_BATCH_BLOCKS, index_bytes
    from memloss.memstore.layout.order import default_block_size

    k = max(cfg.method.k, 1)
    c, h, w = dataset_info(cfg.data.dataset, cfg.data.resolution).shape
    sample = c * h * w
    row = sample + ROW_AUX_BYTES
    block = default_block_size(rows, sample) * row
    smallest = (2 * k + 2) * block + 2 * DECODE_GROUP_BLOCKS * k * block
    budget, index = cfg.run.memory_budget, index_bytes(rows)  # the index arrays come out of the budget first
    if smallest > budget:
        raise ConfigError(f"--k {cfg.method.k} needs at least {gib(smallest)} of RAM for the memory store's smallest "
                          f"window ({2 * k + 2} slots of one block, plus decoding), above --memory-budget "
                          f"{gib(budget)}; lower --k or raise --memory-budget")
    resident = index + (k + 1) * rows * row + 2 * (DECODE_GROUP_BLOCKS * k + WRITE_BATCH_BLOCKS) * block
    uses = min(budget, resident)
    in_ram = bool(store_path and store_path.startswith("memory://"))
    slots = min(k + 1, cfg.optim.epochs)
    disk = slots * rows * row
    ram = available_ram()
    if uses + (disk if in_ram else 0) > ram:
        raise ConfigError(f"the memory store would use {gib(uses + (disk if in_ram else 0))} of RAM (K={cfg.method.k}, "
                          f"{rows} rows, --memory-budget {gib(budget)}), but {gib(ram)} are available; lower "
                          "--memory-budget or --k")
    if not (in_ram or store_path is None or ("://" in store_path and not store_path.startswith("file://"))):
        free, where = free_bytes(Path(store_path.removeprefix("file://")))
        if disk > free:
            raise ConfigError(f"the memory store would grow to {gib(disk)} on disk ({slots} slots × {rows} rows × "
                              f"{row} B), but {where} has {gib(free)} free; free space, lower --k or put --store "
                              "elsewhere")
    if index + smallest > budget:
        raise ConfigError(f"--memory-budget {gib(budget)} cannot hold the memory store's index arrays ({gib(index)} "
                          f"for {rows} rows) and its smallest window ({gib(smallest)}); raise --memory-budget")


def check_sizes(cfg: TrainConfig, store_path: str | None) -> None:
    """Every size bound of a new run (see the module docstring). `store_path`: where the store will live. The user's
    own data (--dataset PATH) is sized when it is read (trainer/data/userdata.py), not here."""
    if not is_builtin(cfg.data.dataset):
        return
    base = base_samples(cfg)
    check_eval_n(cfg)
    aux = aux_samples(cfg.data.aux_data, cfg.data.aux_take)
    samples = cfg.data.epoch_samples or base + (aux or 0)
    check_schedule(cfg, samples)
    check_store(cfg, base + (aux or 0), store_path)
    check_batch(cfg, base + (aux or 0), cpu=_cpu_run(cfg.run.device))


def _cpu_run(device: str) -> bool:
    """True when the run surely trains on the CPU: --device cpu, or auto on a machine without an NVIDIA device
    node (decided without importing torch)."""
    if device == "cpu":
        return True
    return device == "auto" and not any(os.path.exists(f"/dev/nvidia{i}") for i in range(8))
