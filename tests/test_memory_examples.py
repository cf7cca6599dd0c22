"""A memory example rebuilt from the store equals the adversarial image of its epoch within the quantization bound."""

from __future__ import annotations

import numpy as np
import torch

from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_memory_store
from memloss.trainer.methods.pgd import pgd
from memloss.trainer.methods.threat import PGDConfig
from memloss.trainer.training.augment import align_delta, apply_view, sample_views
from memloss.trainer.training.memory import DeferredWriter, build_memory_examples

EPS = 8 / 255


def _spec(n: int) -> StoreSpec:
    return StoreSpec(DatasetFingerprint("synthetic", n, (3, 8, 8), "0" * 64), ThreatModel("Linf", "8/255"), 2)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))


def test_rebuilt_memory_example_is_the_adversarial_image_of_its_epoch() -> None:
    n, pad = 24, 2
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    model, store = _model(), create_memory_store(_spec(n), block_size=8)
    order = store.begin_epoch(1)
    views = sample_views(n, pad, True, g, torch.device("cpu"))
    x_view = apply_view(x[order], views, pad)
    x_adv = pgd(model, x_view, y[order], PGDConfig("Linf", EPS, 2 / 255, 5, start="uniform"), "ce", generator=g)
    writer = DeferredWriter(store, torch.device("cpu"))
    writer.push(order, x_adv - x_view, views)
    writer.flush()
    store.commit_epoch()

    order2 = store.begin_epoch(2)
    position = {int(i): p for p, i in enumerate(order)}
    memory = store.read(order2)
    now = sample_views(n, pad, True, g, torch.device("cpu"))
    rebuilt = build_memory_examples(x[order2], memory, now, pad, "recorded", 2)
    assert rebuilt is not None and rebuilt.slots == (0,) and bool(rebuilt.valid.all())
    original = x_adv[[position[int(i)] for i in order2]]
    bound = (memory.scale[0] / 254).view(-1, 1, 1, 1) + 1e-6
    assert ((rebuilt.x[0] - original).abs() <= bound).all()
    assert ((rebuilt.x[0] - original).abs().amax() > 0)  # it really went through the uint8 codes
    store.close()


def test_aligned_view_moves_delta_into_the_current_view() -> None:
    n, pad = 6, 1
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 6, 6, generator=g)
    store = create_memory_store(StoreSpec(DatasetFingerprint("d", n, (1, 6, 6), "0" * 64),
                                          ThreatModel("Linf", "8/255"), 1), block_size=3)
    order = store.begin_epoch(1)
    made_on = sample_views(n, pad, False, g, torch.device("cpu"))
    delta = (torch.rand(n, 1, 6, 6, generator=g) * 2 - 1) * EPS
    DeferredWriter(store, torch.device("cpu")).push(order, delta, made_on)
    store.commit_epoch()
    store.begin_epoch(2)
    memory = store.read(order)
    now = sample_views(n, pad, False, g, torch.device("cpu"))
    rebuilt = build_memory_examples(x[order], memory, now, pad, "aligned", 1)
    expected = (apply_view(x[order], now, pad) + align_delta(delta, made_on, now, pad)).clamp(0, 1)
    assert rebuilt is not None
    assert torch.allclose(rebuilt.x[0], expected, atol=EPS / 254 + 1e-6)
    store.close()


def test_no_memory_in_the_first_epoch() -> None:
    store = create_memory_store(_spec(8), block_size=4)
    order = store.begin_epoch(1)
    memory = store.read(np.asarray(order))
    assert build_memory_examples(torch.rand(8, 3, 8, 8), memory, sample_views(
        8, 0, False, torch.Generator(), torch.device("cpu")), 0, "recorded", 2) is None
    store.close()
