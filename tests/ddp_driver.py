"""Runs `memloss ARGS...` as one rank of a torchrun launch and records what the tests of tests/test_distributed.py
check: `torchrun --nproc-per-node N tests/ddp_driver.py LOGDIR -- ARGS...`.

Per rank r it appends JSON lines to LOGDIR: `writes.r<r>.jsonl` (every `MemStore.write`: epoch and sample indices),
`reads.r<r>.jsonl` (every `MemStore.read`: rows, valid rows of memory age 0, whether the store is read-only, the
indices and those of them holding age-0 memory),
`chunks.r<r>.jsonl` (every whole-chunk write of the Zarr store: slot and first row), `loads.r<r>.jsonl` (every
load of resident ring slots from storage: the slots), `params.r<r>.jsonl` (after
each epoch: the sha256 of the model's parameters and buffers). With $DDP_KILL = "RANK:STEP", rank RANK kills itself
with SIGKILL at its STEP-th training step of this process. Nothing here is imported by memloss: it is patched in.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

LOGDIR = Path(sys.argv[1])
RANK = int(os.environ["RANK"])


def log(name: str, record: dict) -> None:
    with open(LOGDIR / f"{name}.r{RANK}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def patch() -> None:
    from memloss.memstore.zarrstore import backend as _zarr, resident as _resident
    from memloss.memstore.base import MemStore
    from memloss.trainer.training import epoch, fit

    write, chunks, one_epoch, step = MemStore.write, _zarr.write_chunks, fit._epoch, epoch.train_step
    read = MemStore.read

    def read_logged(self, idx):  # noqa: ANN001, ANN202
        batch = read(self, idx)
        log("reads", {"epoch": self.current_epoch, "rows": len(idx), "valid": int(batch.valid[0].sum()),
                      "read_only": self.read_only, "idx": [int(i) for i in idx],
                      "valid_idx": [int(i) for i in idx[batch.valid[0].numpy()]]})
        return batch

    def write_logged(self, idx, *rest):  # noqa: ANN001, ANN002, ANN202
        log("writes", {"epoch": self.current_epoch, "idx": [int(i) for i in idx]})
        return write(self, idx, *rest)

    def chunks_logged(arrays, jobs):  # noqa: ANN001, ANN202
        for job in jobs:
            log("chunks", {"slot": job.slot, "start": job.start})
        return chunks(arrays, jobs)

    def epoch_logged(s, n, reporter):  # noqa: ANN001, ANN202
        one_epoch(s, n, reporter)
        digest = hashlib.sha256()
        for name, tensor in sorted(s.model.state_dict().items()):
            digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
        log("params", {"epoch": n, "sha256": digest.hexdigest()})

    load_slots = _resident.ResidentPart._load_slots

    def load_logged(self, slots):  # noqa: ANN001, ANN202
        log("loads", {"slots": [int(s) for s in slots]})
        return load_slots(self, slots)

    _resident.ResidentPart._load_slots = load_logged
    kill = os.environ.get("DDP_KILL", "")
    steps = [0]

    def step_maybe_killed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        steps[0] += 1
        if kill and kill == f"{RANK}:{steps[0]}":
            os.kill(os.getpid(), signal.SIGKILL)
        return step(*args, **kwargs)

    MemStore.write, MemStore.read, _zarr.write_chunks, fit._epoch = write_logged, read_logged, chunks_logged, epoch_logged
    epoch.train_step = step_maybe_killed


if __name__ == "__main__":
    LOGDIR.mkdir(parents=True, exist_ok=True)
    patch()
    from memloss.cli.app import main

    sys.argv = ["memloss", *sys.argv[sys.argv.index("--") + 1:]]
    main()
