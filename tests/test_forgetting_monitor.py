"""The forgetting monitor on hand-built epochs: forgetting events, learning events and old-example error per memory
age, counted exactly, with a model whose decision we set by hand and the real store and writer in between."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_memory_store
from memloss.trainer.training.augment import identity_views
from memloss.trainer.training.forgetting import ForgettingMonitor
from memloss.trainer.training.memory import DeferredWriter

CPU = torch.device("cpu")
# Mean pixel of each sample's adversarial example, and its label. Under threshold 0.5 (epoch 1) and 0.3 (later):
#   0: 0.40/0 right → wrong (forgetting)   1: 0.35/0 right → wrong (forgetting)   2: 0.20/0 right → right
#   3: 0.40/1 wrong → right (learning)     4: 0.60/1 right → right                 5: 0.45/1 wrong → right (learning)
#   6: 0.10/1 wrong → wrong                7: 0.70/0 wrong → wrong
ADV_MEAN = torch.tensor([0.40, 0.35, 0.20, 0.40, 0.60, 0.45, 0.10, 0.70])
Y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
DELTA = 0.02  # δ = +0.02 everywhere: stored exactly (±s is exact after quantization)


class Threshold(nn.Module):
    """Class 1 iff the mean pixel exceeds `t` (set by hand between epochs); no BN, so eval mode changes nothing."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: Tensor) -> Tensor:
        z = 50.0 * (x.flatten(1).mean(dim=1, keepdim=True) - self.t)
        return torch.cat([torch.zeros_like(z), z], dim=1)


def _epoch(store, monitor: ForgettingMonitor, model: nn.Module, epoch: int, batch: int = 3) -> None:  # noqa: ANN001
    """One epoch as `_train_batch` runs it: read memory, write δ, judge (no optimizer: the model is set by hand)."""
    order = store.begin_epoch(epoch)
    monitor.begin_epoch(epoch)
    writer = DeferredWriter(store, CPU)
    x_all = (ADV_MEAN - DELTA).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        x, y = x_all[idx], Y[idx]
        views = identity_views(len(idx), 0, CPU)
        memory = store.read(idx)
        stored = writer.push(idx, torch.full_like(x, DELTA), views)
        monitor.observe(model, x, x, stored, y, idx, memory, views, pad=0)
    store.commit_epoch()


def _store(k: int):  # noqa: ANN202
    spec = StoreSpec(DatasetFingerprint("hand", 8, (1, 2, 2), "0" * 64), ThreatModel("Linf", "8/255"), k)
    return create_memory_store(spec, block_size=4)


def test_two_epochs_count_forgetting_and_learning_events() -> None:
    store, monitor = _store(1), ForgettingMonitor(8, 1, CPU, stride=1)
    _epoch(store, monitor, Threshold(0.5), 1)
    assert monitor.read() == {}  # nothing to judge in the first epoch
    assert monitor.made_correct[1].tolist() == [1, 1, 1, 0, 1, 0, 0, 0]
    _epoch(store, monitor, Threshold(0.3), 2)
    got = monitor.read()
    assert got == {"forget_at_visit": 2 / 8, "learn_at_visit": 2 / 8, "old_error_at_visit": 4 / 8, "monitor_rows": 8}


def test_stride_monitors_a_fixed_subset() -> None:
    store, monitor = _store(1), ForgettingMonitor(8, 1, CPU, stride=2)  # samples 0, 2, 4, 6
    _epoch(store, monitor, Threshold(0.5), 1)
    _epoch(store, monitor, Threshold(0.3), 2)
    assert monitor.read() == {"forget_at_visit": 1 / 4, "learn_at_visit": 0.0, "old_error_at_visit": 2 / 4,
                              "monitor_rows": 4}


def test_events_per_memory_age() -> None:
    store, monitor = _store(2), ForgettingMonitor(8, 2, CPU, stride=1)
    _epoch(store, monitor, Threshold(0.5), 1)
    _epoch(store, monitor, Threshold(0.3), 2)
    _epoch(store, monitor, Threshold(0.3), 3)
    got = monitor.read()
    # Age 0 (epoch 2's examples, made and judged at 0.3): no events; age 1 (epoch 1's, made at 0.5): as above.
    assert got["forget_at_visit_by_age"] == [0.0, 2 / 8] and got["learn_at_visit_by_age"] == [0.0, 2 / 8]
    assert got["old_error_at_visit_by_age"] == [4 / 8, 4 / 8] and got["monitor_rows_by_age"] == [8, 8]
    assert got["forget_at_visit"] == 0.0 and got["old_error_at_visit"] == 4 / 8


def test_bits_survive_a_state_round_trip_and_old_epochs_are_dropped() -> None:
    store, monitor = _store(1), ForgettingMonitor(8, 1, CPU, stride=1)
    _epoch(store, monitor, Threshold(0.5), 1)
    again = ForgettingMonitor(8, 1, CPU, stride=1)
    again.load_state_dict(monitor.state_dict())
    assert torch.equal(again.made_correct[1], monitor.made_correct[1])
    again.begin_epoch(3)
    assert sorted(again.made_correct) == [3]  # epoch 1 is older than the store's K = 1 epochs of memory


@pytest.mark.parametrize(("n", "stride"), [(1437, 1), (50_000, 8)])
def test_default_stride_follows_the_dataset_size(n: int, stride: int) -> None:
    monitor = ForgettingMonitor(n, 1, CPU)
    assert monitor.stride == stride and monitor.rows == -(-n // stride)
    assert monitor.monitored(np.array([0, 1, 8, 16, 17])).tolist() == ([0, 1, 2, 3, 4] if stride == 1 else [0, 2, 3])
