"""The `data` section of the training configuration: which data, how it is batched, the generated images mixed in
(--aux-data) and the held-out images that select (--val-split); validated at construction."""

from __future__ import annotations

from dataclasses import dataclass

from memloss.errors import ConfigError
from memloss.trainer.config.checks import check_seed
from memloss.trainer.config.choices import EPOCH_RULES, choice
from memloss.trainer.data.registry import DATASETS


@dataclass(frozen=True)
class DataConfig:
    """Which data and how it is batched. `dataset`: a built-in name or the absolute path of the user's data (an .npz
    or an image folder, trainer/data/userdata.py), `test_data` its test split (None: the folder's test/ or val/, else
    a seeded held-out share). `resolution` only applies to the synthetic dataset. `aux_data`:
    generated-image .npz part files forming one set, mixed into every batch at `aux_fraction` (default 0.7 with
    aux_data); `aux_take`: a seeded subset of them; `epoch_samples`: samples per epoch, ceil(epoch_samples / B)
    batches (default: `aux_epoch`'s rule: ``pass``, one pass over the larger part, every sample visited at least
    once; ``total``, ceil(N_total / B), the epoch of older runs); `aux_draw`: ``without`` (generated rows as even as
    possible) or ``with-replacement`` (uniform, as the published sampler); memstore/layout/mixing.py. `val_split`: base
    training images held out (seeded by `val_seed`) for model selection (trainer/data/holdout.py)."""

    dataset: str = "digits"
    test_data: str | None = None
    data_dir: str | None = None
    n: int | None = None
    resolution: int | None = None
    batch_size: int = 128
    num_workers: int | None = None
    aux_data: tuple[str, ...] = ()
    aux_take: int | None = None
    aux_fraction: float | None = None
    epoch_samples: int | None = None
    aux_draw: str | None = None
    aux_epoch: str | None = None
    val_split: int = 0
    val_seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.n is not None and self.n < 2:
            raise ConfigError(f"n must be ≥ 2, got {self.n}")
        if self.resolution is not None and self.resolution < 4:
            raise ConfigError(f"resolution must be ≥ 4 pixels, got {self.resolution}")
        if self.resolution is not None and self.dataset != "synthetic":
            raise ConfigError(f"--resolution applies to the synthetic dataset only; {self.dataset} has a fixed "
                              "resolution: drop --resolution")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers must be ≥ 0, got {self.num_workers}")
        object.__setattr__(self, "aux_data", tuple(str(f) for f in self.aux_data))
        self._check_user_data()
        self._check_aux()

    def _check_user_data(self) -> None:
        builtin = self.dataset in DATASETS
        if builtin and self.test_data is not None:
            raise ConfigError(f"--test-data goes with your own --dataset PATH; {self.dataset} has its own test split: "
                              "drop --test-data")

    def _check_aux(self) -> None:
        given = [name for name in ("aux_take", "aux_fraction", "epoch_samples", "aux_draw", "aux_epoch")
                 if getattr(self, name) is not None]
        if given and not self.aux_data:
            raise ConfigError(f"--{given[0].replace('_', '-')} needs generated data: add --aux-data FILE [FILE ...]")
        if self.val_split < 0:
            raise ConfigError(f"--val-split must be ≥ 0 held-out training images (0 = none), got {self.val_split}")
        check_seed(self.val_seed)
        if not self.aux_data:
            return
        from memloss.memstore.layout.mixing import AUX_DRAWS  # here: it loads numpy (the CLI checks first)

        choice(self.aux_draw or "without", AUX_DRAWS, "--aux-draw")
        choice(self.aux_epoch or "pass", EPOCH_RULES, "--aux-epoch")
        if self.epoch_samples is not None and self.aux_epoch is not None:
            raise ConfigError("give either --epoch-samples (a fixed epoch) or --aux-epoch (a rule), not both")
        object.__setattr__(self, "aux_draw", self.aux_draw or "without")
        if self.epoch_samples is None:
            object.__setattr__(self, "aux_epoch", self.aux_epoch or "pass")
        if self.aux_fraction is None:
            # here: it loads numpy (the CLI checks first)
            from memloss.memstore.layout.mixing import PUBLISHED_AUX_FRACTION

            object.__setattr__(self, "aux_fraction", PUBLISHED_AUX_FRACTION)
        f = float(self.aux_fraction)  # type: ignore[arg-type]
        if not 0 < f < 1 or not 1 <= int(f * self.batch_size) < self.batch_size:
            raise ConfigError(f"--aux-fraction {f} must leave both generated and base samples in a batch of "
                              f"{self.batch_size} (int(f·B) between 1 and B−1), e.g. 0.7")
        if self.aux_take is not None and self.aux_take < 1:
            raise ConfigError(f"--aux-take must be ≥ 1 generated images, got {self.aux_take}")
        if self.epoch_samples is not None and self.epoch_samples < 1:
            raise ConfigError(f"--epoch-samples must be ≥ 1, got {self.epoch_samples}")
