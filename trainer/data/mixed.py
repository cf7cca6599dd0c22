"""The training set of a run: the base split alone, or the base split plus generated images mixed into every batch.

With generated data (`--aux-data`), global sample i < N_base is base sample i and N_base + j is generated sample j,
and an epoch is `BatchMix.batches` batches of `aux_per_batch` generated and `base_per_batch` base samples
(memloss.memstore.layout.mixing: the published recipe's sampler, with the generated part in whole store blocks).
How many batches (`batch_mix`): one pass over the larger part by default, ceil(--epoch-samples / B) when given.
The user's own data (`prepare_user_training_set`) mixes generated images the same way; with --val-split it is held out
as well.

Loading: two FFCV loaders zipped per batch (`MixedLoader`), one per `.beton`, each following its slice of every
batch of the epoch's order. Two loaders rather than one because FFCV reads one file per loader and the two sets are
converted and cached independently (the base set once per dataset, the generated set once per set of part files and
subset); one `.beton` of both would be a third copy of millions of images, rebuilt for every subset. Each batch costs
one concatenation on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memloss.errors import ConfigError
from memloss.memstore.layout.mixing import PUBLISHED_AUX_FRACTION, BatchMix, plan_mixed, unstored_layout
from memloss.memstore.spec import DatasetFingerprint, parts_labels_sha256
from memloss.trainer.data.beton import PreparedSplit, prepare
from memloss.trainer.data.generated import GeneratedSource, prepare_generated
from memloss.trainer.data.holdout import HeldOut, prepare_heldout
from memloss.trainer.data.registry import DatasetInfo, SampleLayout, dataset_info
from memloss.trainer.data.loader import BatchLoader, make_loader
from memloss.trainer.data.userdata import prepare_user, user_slug


@dataclass(frozen=True)
class TrainingSet:
    """The base split, and with generated data its split and the batch mix of every epoch."""

    dataset: str
    base: PreparedSplit
    aux: PreparedSplit | None = None
    mix: BatchMix | None = None
    held_out: HeldOut | None = None  # --val-split: the base images kept out of `base` for model selection

    @property
    def n(self) -> int:
        """Samples: base plus generated."""
        return self.base.n + (self.aux.n if self.aux is not None else 0)

    @property
    def parts(self) -> tuple[int, ...]:
        return (self.base.n,) if self.aux is None else (self.base.n, self.aux.n)

    def fingerprint(self) -> DatasetFingerprint:
        """What a memory store of this set is made for (two parts with generated data)."""
        name = self.dataset
        if self.held_out is not None:  # a store of the reduced training set is refused for the full one
            name += f"-val{self.held_out.indices.size}s{self.held_out.seed}"
        if self.aux is None:
            return DatasetFingerprint(name, self.base.n, self.base.shape, self.base.labels_sha256)
        digest = parts_labels_sha256([self.base.labels_sha256, self.aux.labels_sha256])
        return DatasetFingerprint(f"{name}+generated", self.n, self.base.shape, digest, self.parts)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.mix.batches if self.mix is not None else -(-self.base.n // batch_size)


EPOCH_RULES = ("pass", "total")


def batch_mix(n_base: int, n_aux: int, batch_size: int, aux_fraction: float, epoch_samples: int | None = None,
              draw: str = "without", rule: str = "pass") -> BatchMix:
    """int(f·B) generated samples a batch (f = aux_fraction, e.g. PUBLISHED_AUX_FRACTION) and the epoch's batches:
    ceil(epoch_samples / B) when given (the published recipe: ceil(50,000 / B) whatever the generated set's size);
    else by `rule`: ``pass`` (the default) as many as make one pass over the larger part, max(ceil(N_base / b),
    ceil(N_gen / a)), so every base and every generated sample is visited at least once an epoch and holds memory
    of the epoch before; ``total`` ceil((N_base + N_gen) / B), the epoch of memloss before this option (runs started
    then resume with it). `draw`: how the generated rows are drawn (memstore/layout/mixing.py)."""
    aux = int(aux_fraction * batch_size)
    if epoch_samples is not None:
        batches = -(-epoch_samples // batch_size)
    elif rule == "total":
        batches = -(-(n_base + n_aux) // batch_size)
    else:
        batches = max(-(-n_base // (batch_size - aux)), -(-n_aux // aux)) if aux else -(-n_base // batch_size)
    return BatchMix(batch_size, aux, batches, draw)


def prepare_training_set(dataset: str, data_dir: str | Path | None = None, *, n: int | None = None,
                         resolution: int | None = None, batch_size: int = 128, aux_data: Sequence[str] = (),
                         aux_take: int | None = None, aux_fraction: float | None = None,
                         epoch_samples: int | None = None, num_workers: int | None = None,
                         aux_draw: str = "without", aux_epoch: str = "pass", val_split: int = 0,
                         val_seed: int = 0) -> TrainingSet:
    """The base split of `dataset` (converted once; without `val_split` held-out images, holdout.py), and the
    generated set of `aux_data` (converted once beside it) with its batch mix; a mix the sets cannot serve is a
    one-line StoreError."""
    held = None
    if val_split:
        base, held = prepare_heldout(dataset, data_dir, n=n, resolution=resolution, count=val_split, seed=val_seed,
                                     num_workers=num_workers)
    else:
        base = prepare(dataset, "train", data_dir, n=n, resolution=resolution)
    if not aux_data:
        return TrainingSet(dataset, base, held_out=held)
    generated = GeneratedRequest(tuple(aux_data), aux_take, aux_fraction, epoch_samples, aux_draw, aux_epoch)
    return with_generated(TrainingSet(dataset, base, held_out=held), generated, dataset_info(dataset, resolution),
                          dataset, data_dir, batch_size, num_workers)


@dataclass(frozen=True)
class GeneratedRequest:
    """What the run asks of its generated part (`--aux-data` and its options; see `prepare_training_set`)."""

    files: tuple[str, ...]
    take: int | None = None
    fraction: float | None = None
    epoch_samples: int | None = None
    draw: str = "without"
    epoch_rule: str = "pass"


def with_generated(data: TrainingSet, request: GeneratedRequest, info: DatasetInfo, cache_name: str,
                   data_dir: str | Path | None, batch_size: int, num_workers: int | None) -> TrainingSet:
    """`data` (its base split) plus the generated set of `request` and the batch mix of every epoch. `info`: the
    base set's facts, which the generated images must match (shape, classes); `cache_name` names their cache files.
    The files are checked and the mix validated before a conversion of millions of images starts."""
    mix = generated_mix(request, info, data.base.n, batch_size)
    aux = prepare_generated(list(request.files), cache_name, data_dir, take=request.take, num_workers=num_workers,
                            info=info)
    return TrainingSet(data.dataset, data.base, aux, mix, data.held_out)


def generated_mix(request: GeneratedRequest, info: SampleLayout, n_base: int, batch_size: int) -> BatchMix:
    """The batch mix of `request`'s generated files over a base set of `n_base` samples described by `info`; a
    one-line error when the files do not match `info` (image size, channels) or the sets cannot serve the mix.
    Reads only the files' headers."""
    n_aux = len(GeneratedSource(list(request.files), info, request.take))
    fraction = PUBLISHED_AUX_FRACTION if request.fraction is None else request.fraction
    mix = batch_mix(n_base, n_aux, batch_size, fraction, request.epoch_samples, request.draw, request.epoch_rule)
    mix.check((n_base, n_aux))
    return mix


def prepare_user_training_set(dataset: str, test_data: str | None, data_dir: str | Path | None, *,
                              n: int | None, num_workers: int | None, val_split: int, val_seed: int,
                              eval_n: int | None, batch_size: int = 128, generated: GeneratedRequest | None = None
                              ) -> tuple[DatasetInfo, TrainingSet, torch.Tensor, torch.Tensor]:
    """(facts, training set, selection points x uint8 [m,C,H,W], y int64 [m]) of the user's own data (--dataset
    PATH, userdata.py), with the generated images of `generated` mixed into every batch of `batch_size` when given
    (they must have the user set's image size, channels and classes): with `val_split` the held-out training images
    select (the test set is left to `memloss evaluate`), else the first `eval_n` test points (None = all)."""
    wanted = generated if generated is not None and generated.files else None
    check = None if wanted is None else lambda layout, rows: generated_mix(wanted, layout, rows, batch_size)
    user = prepare_user(dataset, test_data, data_dir, n=n, num_workers=num_workers, val_split=val_split,
                        val_seed=val_seed, check=check)
    if eval_n is not None and eval_n > len(user.test_y):
        raise ConfigError(f"--eval-n {eval_n}: the test split of {test_data or dataset} has {len(user.test_y)} "
                          f"points; pass --eval-n {len(user.test_y)} or less")
    data = TrainingSet(user.info.name, user.base, held_out=user.held_out)
    if wanted is not None:
        data = with_generated(data, wanted, user.info, f"user-{user_slug(Path(user.info.name))}", data_dir,
                              batch_size, num_workers)
    if user.held_out is not None:
        return user.info, data, user.held_out.x, user.held_out.y
    return user.info, data, user.test_x[:eval_n], user.test_y[:eval_n]


def unstored_order(parts: tuple[int, ...], seed: int, mix: BatchMix) -> Callable[[int], np.ndarray]:
    """The mixed order of a run that keeps no memory store: the same sampler with blocks of one sample in one
    window, i.e. a uniform draw of the generated samples as `mix.draw` says (pure in seed and epoch)."""
    layout = unstored_layout(parts, seed)
    return lambda epoch: plan_mixed(layout, layout.num_blocks, seed, epoch, mix).order


class MixedLoader:
    """Batches (x uint8 [B,C,H,W], y int64 [B], idx int64 [B]) of a two-part epoch on `device`: base rows first,
    then generated ones, idx global. `order(epoch)` gives the epoch's global order int64 [batches·B]. Under torchrun
    `rows` = (base, generated) rows of this rank's batch and `order` its part of the epoch (MixedShards.local)."""

    def __init__(self, data: TrainingSet, order: Callable[[int], np.ndarray], device: torch.device,
                 num_workers: int | None, rows: tuple[int, int] | None = None) -> None:
        assert data.aux is not None and data.mix is not None
        mix, first_aux = data.mix, data.base.n
        m, a = rows if rows is not None else (mix.base_per_batch, mix.aux_per_batch)
        self._shift = first_aux

        def part(epoch: int, lo: int, hi: int, shift: int) -> np.ndarray:
            return order(epoch).reshape(mix.batches, m + a)[:, lo:hi].ravel() - shift

        self._loaders: list[BatchLoader] = [
            make_loader(data.base, batch_size=m, device=device, num_workers=num_workers,
                        order=lambda e: part(e, 0, m, 0), length=mix.batches * m),
            make_loader(data.aux, batch_size=a, device=device, num_workers=num_workers,
                        order=lambda e: part(e, m, m + a, first_aux), length=mix.batches * a),
        ]
        self.batches, self.batch_size = mix.batches, m + a  # batch_size: rows of a joined batch
        self.base_rows = m  # the first rows of every batch are base samples

    def __len__(self) -> int:
        return self.batches

    def set_epoch(self, epoch: int) -> None:
        for loader in self._loaders:
            loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for (xb, yb, ib), (xa, ya, ia) in zip(*self._loaders):
            yield torch.cat([xb, xa]), torch.cat([yb, ya]), torch.cat([ib, ia + self._shift])

    def close(self) -> None:
        for loader in self._loaders:
            loader.close()

    def __enter__(self) -> MixedLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
