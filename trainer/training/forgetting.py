"""The forgetting monitor: forgetting events, learning events and the error on old adversarial examples, per
memory age, judged *at the visit* — the way Toneva et al. (2019) count forgetting events, applied to adversarial
examples. Its figures are named `*_at_visit`; the toy (trainer/experiments/toy/) judges with the models at the end
of each epoch instead (the paper's figure 3) and names its figures `*_at_epoch_end`. docs/guide.md ("Two
definitions of forgetting") sets both beside Toneva et al.'s.

For a training sample i and its adversarial example x′ made in epoch e (stored as memory):
- *made correct* = the model at the moment x′ was made (its training step in epoch e, eval mode, after the step's
  forwards and before its optimizer update) classifies x′ correctly;
- when i is visited again in epoch n = e + a + 1 (memory age a, 0 = epoch n−1), the model at that moment (same
  point of the step) classifies x′ again. `forget_at_visit` (a forgetting event) is made correct and now wrong;
  `learn_at_visit` (a learning event) is made wrong and now correct; `old_error_at_visit` is now wrong.
Each is a rate over the monitored rows that hold memory of that age. For age 0 this is exactly Toneva et al.'s
event between two consecutive presentations of the example; for older ages it compares the model that made x′ with
the model a + 1 epochs later. Both judgements are of the model of the step that presents the example.

Why the bit is kept here and not in the store: it is a training metric, not memory. The monitor keeps it on the
device (int8 per monitored sample and epoch: −1 unknown, 0 wrong, 1 correct), so recording it needs no host sync,
and saves it with the training state. It is judged on the *quantized* x′ (the memory example the store gives back),
so quantization never shows up as an event.

Cost: on a training set of more than MONITOR_ALL_UP_TO samples a fixed 1/MONITOR_STRIDE of it is monitored (every
sample whose index is a multiple of the stride; smaller sets, whose epochs take seconds, are monitored whole), and
each step evaluates at most MONITOR_AGES ages of its monitored rows (age 0 always when present, the others in
rotation), plus the made-correct bit of the step's own adversarial examples: one eval-mode forward of at most
(MONITOR_AGES + 1)·B/MONITOR_STRIDE rows per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from memloss.memstore.quant import dequantize
from memloss.trainer.common.devices import to_device
from memloss.trainer.common.precision import fp32_exact
from memloss.trainer.training.augment import ViewParams
from memloss.trainer.training.memory import batch_rows, build_memory_examples, valid_counts
from memloss.trainer.training.monitor_keys import MONITOR_KEYS

MONITOR_STRIDE = 8  # every 8th sample index is monitored ...
MONITOR_ALL_UP_TO = 8192  # ... on training sets larger than this; smaller ones are monitored whole
MONITOR_AGES = 4  # memory ages evaluated per step at most (age 0 plus others in rotation)
_EVENTS = MONITOR_KEYS


class ForgettingMonitor:
    """Per-age forgetting/learning events and old-example error of one run; see the module docstring.

    n: training-set size; k: memory ages the store keeps (≥ 1); device: where the bits and the sums live;
    stride: monitor every stride-th sample index (None: 1 up to MONITOR_ALL_UP_TO samples, else MONITOR_STRIDE).
    """

    def __init__(self, n: int, k: int, device: torch.device, stride: int | None = None) -> None:
        stride = stride or (1 if n <= MONITOR_ALL_UP_TO else MONITOR_STRIDE)
        self.n, self.k, self.device, self.stride = n, k, device, stride
        self.rows = -(-n // stride)
        self.made_correct: dict[int, Tensor] = {}  # epoch -> int8 [rows]
        self.epoch = 0
        self._sums = torch.zeros(4, k, device=device)  # forgetting, learning, wrong, count per age
        self._step = 0
        # The step of the epoch (1, 2, …) that set each of the epoch's bits: under torchrun a sample visited twice
        # in an epoch may be judged by two ranks, and the bit kept is the last visit's, as in one process.
        self._stamps = torch.zeros(self.rows, dtype=torch.int32, device=device)
        self._calls = 0

    def begin_epoch(self, epoch: int) -> None:
        """New bits for `epoch`; bits older than the store's memory are dropped; the sums restart."""
        self.epoch = epoch
        self.made_correct = {e: b for e, b in self.made_correct.items() if epoch - self.k <= e < epoch}
        self.made_correct[epoch] = torch.full((self.rows,), -1, dtype=torch.int8, device=self.device)
        self._sums.zero_()
        self._stamps.zero_()
        self._step = self._calls = 0

    def monitored(self, idx: np.ndarray) -> np.ndarray:
        """Batch positions (int64, host) of the monitored samples among dataset indices `idx` [B]."""
        return np.flatnonzero(idx % self.stride == 0).astype(np.int64)

    def _ages(self, counts: list[int]) -> list[int]:
        """Age 0 when it holds memory, then up to MONITOR_AGES − 1 older ages in rotation over the steps."""
        held = [a for a, c in enumerate(counts) if c > 0]
        older = [a for a in held if a != 0]
        take = min(MONITOR_AGES - (0 in held), len(older))
        start = self._step * take
        chosen = sorted({older[(start + j) % len(older)] for j in range(take)}) if older else []
        return ([0] if 0 in held else []) + chosen

    @torch.no_grad()
    def observe(self, model: nn.Module, x: Tensor, x_view: Tensor, stored: tuple[Tensor, Tensor], y: Tensor,
                idx: np.ndarray, memory: Any, views: ViewParams, pad: int) -> None:
        """One step: judges the monitored rows' memory of the chosen ages and records whether this step's own
        adversarial examples are classified correctly. x: float [B,C,H,W] un-augmented; x_view: the step's view;
        stored: its δ as the store keeps it (codes uint8 [B,C,H,W], scale [B], from `DeferredWriter.push`), so the
        judged example is exactly the memory example the store will give back; idx: dataset indices (host);
        memory: the store's MemoryBatch of the batch (None: nothing to judge yet)."""
        self._calls += 1  # every rank observes every step: the epoch's step
        rows = self.monitored(idx)
        if rows.size == 0:
            return
        # Host-to-device copies are non_blocking from pinned memory (to_device): a blocking one, or one from pageable
        # memory, may wait for the step's queued kernels.
        dev_rows = to_device(torch.from_numpy(rows), x.device)
        pos = to_device(torch.from_numpy(idx[rows] // self.stride), x.device)
        view_rows = x_view.index_select(0, dev_rows)
        delta = dequantize(stored[0].index_select(0, dev_rows), stored[1].index_select(0, dev_rows))
        own = (view_rows + delta).clamp_(0.0, 1.0)
        sub = batch_rows(memory, rows) if memory is not None else None
        ages = self._ages(valid_counts(sub, self.k)) if sub is not None else []
        sub_views = ViewParams(views.offset.index_select(0, dev_rows), views.flip.index_select(0, dev_rows))
        old = build_memory_examples(x.index_select(0, dev_rows), sub, sub_views, pad, "recorded", self.k,
                                    slots=ages) if ages else None
        inputs = own if old is None else torch.cat([old.x.flatten(0, 1), own])
        was_training = model.training
        model.eval()
        with fp32_exact(x.device):  # judged on IEEE fp32 logits whatever --precision: a bf16 argmax ties
            logits = model(inputs)
        correct = logits.argmax(dim=1) == y.index_select(0, dev_rows).repeat(inputs.shape[0] // len(rows))
        model.train(was_training)
        self.made_correct[self.epoch][pos] = correct[-len(rows):].to(torch.int8)
        self._stamps[pos] = self._calls
        if old is not None:
            self._count(old.slots, old.valid, correct[:-len(rows)].view(len(old.slots), -1), pos)
        self._step += 1

    def _count(self, ages: tuple[int, ...], valid: Tensor, correct: Tensor, pos: Tensor) -> None:
        """Adds the events of the judged rows: valid/correct bool [A, R] for `ages`, pos int64 [R] bit positions."""
        made = torch.stack([self._bits(self.epoch - 1 - a)[pos] for a in ages])
        known = valid & (made >= 0)
        counts = torch.stack([known & (made == 1) & ~correct, known & (made == 0) & correct, known & ~correct, known])
        index = to_device(torch.tensor(ages), self.device)
        self._sums.index_add_(1, index, counts.sum(dim=2).float())

    def _bits(self, epoch: int) -> Tensor:
        bits = self.made_correct.get(epoch)
        return bits if bits is not None else torch.full((self.rows,), -1, dtype=torch.int8, device=self.device)

    def read(self) -> dict[str, Any]:
        """The epoch's rates (one host sync): age-0 scalars `forget_at_visit`, `learn_at_visit`,
        `old_error_at_visit`, `monitor_rows`; with K > 1 also `<name>_by_age` lists (None where an age had no
        judged row)."""
        forget, learn, wrong, count = self._sums.cpu().tolist()
        if not any(count):
            return {}
        rates = {name: [v / c if c else None for v, c in zip(values, count)]
                 for name, values in zip(_EVENTS, (forget, learn, wrong))}
        out: dict[str, Any] = {name: values[0] for name, values in rates.items() if values[0] is not None}
        out["monitor_rows"] = int(count[0])
        if self.k > 1:
            out.update({f"{name}_by_age": values for name, values in rates.items()})
            out["monitor_rows_by_age"] = [int(c) for c in count]
        return out

    def shared_tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """(event sums float [4,K], this epoch's bits int8 [rows], −1 = not judged, the step that set each bit int32
        [rows], 0 = none), in place: what the ranks of a torchrun run combine at the end of an epoch (sums add up; a
        bit comes from the rank whose visit was the last)."""
        return self._sums, self.made_correct[self.epoch], self._stamps

    def state_dict(self) -> dict[str, Any]:
        return {"made_correct": {str(e): b.cpu() for e, b in self.made_correct.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.made_correct = {int(e): b.to(self.device) for e, b in state["made_correct"].items()}

