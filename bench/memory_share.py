"""What share of the rows an epoch visits hold memory, computed from the store's order alone (no training).

A row visited in epoch n holds memory of age a (epoch n−a) iff epoch n−a visited it (docs/store-format.md, "Memory
under uneven visits"). For a two-part set (base + generated) and a batch mix, this script builds the plans of
epochs 1..E exactly as a store does (memstore/layout/mixing.py `plan_mixed`, the default block size and the windows of a
memory budget) and prints, per age, the share of the visits of epochs K+1..E that hold memory, for the base part,
the generated part and all visits, and the share of the set's rows an epoch visits at least once.

Usage: python bench/memory_share.py [--base 48976] [--generated 1000000] [--batch 512] [--fraction 0.7]
       [--epoch-samples 50000] [--draw with-replacement] [--rule pass] [--k 4] [--epochs 8] [--budget-gib 2]
Defaults: the DM-Improves-AT preset (docs/presets/dm-improves-at.toml) with 1M generated images.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from memloss.memstore.entries import row_bytes
from memloss.memstore.layout.mixing import plan_mixed
from memloss.memstore.layout.budget import memory_plan
from memloss.memstore.layout.order import BlockLayout, default_block_size, layout_members
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.trainer.data.mixed import batch_mix


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=int, default=50_000 - 1024)
    p.add_argument("--generated", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--fraction", type=float, default=0.7)
    p.add_argument("--epoch-samples", type=int, default=50_000, help="0: the --rule's epoch")
    p.add_argument("--draw", default="with-replacement")
    p.add_argument("--rule", default="pass")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--budget-gib", type=float, default=2.0)
    a = p.parse_args(argv)
    parts = (a.base, a.generated)
    spec = StoreSpec(DatasetFingerprint("bench+generated", sum(parts), (3, 32, 32), "0" * 64, parts),
                     ThreatModel("Linf", "8/255"), a.k)
    block = default_block_size(min(parts), spec.sample_bytes)
    window, _ = memory_plan(int(a.budget_gib * 2**30), a.k, parts, block, row_bytes(spec))
    layout = BlockLayout.from_members(layout_members(parts, block, 0), block, parts)
    mix = batch_mix(a.base, a.generated, a.batch, a.fraction, a.epoch_samples or None, a.draw, a.rule)
    t0 = time.perf_counter()
    visited = []  # per epoch: bool [samples], visited at least once
    held = np.zeros((a.k, 3))  # per age: visits holding memory (base, generated, all)
    total = np.zeros(3)
    for epoch in range(1, a.epochs + 1):
        order = plan_mixed(layout, window, 0, epoch, mix).order
        seen = np.zeros(sum(parts), dtype=bool)
        seen[order] = True
        if epoch > a.k:
            gen = order >= a.base
            total += [(~gen).sum(), gen.sum(), order.size]
            for age in range(a.k):
                hit = visited[epoch - 2 - age][order]
                held[age] += [hit[~gen].sum(), hit[gen].sum(), hit.sum()]
        visited.append(seen)
    share = held / total
    reach = np.mean([[v[: a.base].mean(), v[a.base :].mean()] for v in visited], axis=0)
    print(f"{mix.describe(parts)}; block {block} rows, window {window} blocks; plans of {a.epochs} epochs in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"rows an epoch visits at least once: base {100 * reach[0]:.2f} %, generated {100 * reach[1]:.2f} %")
    for age in range(a.k):
        print(f"age {age + 1} (epoch n−{age + 1}): visits holding memory: base {100 * share[age, 0]:.2f} %, "
              f"generated {100 * share[age, 1]:.2f} %, all {100 * share[age, 2]:.2f} %")
    print(f"load average {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
