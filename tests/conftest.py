"""Shared test settings: one torch thread (the CI box has 2 cores and FFCV decodes in threads of its own, so more
torch threads only oversubscribe), a per-session data directory so datasets convert once, and a local S3 server
(moto, started on first use) for the stores on S3."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from s3_server import CREDENTIALS, S3Server, start

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory shared by the whole test session (digits/synthetic .beton files are built once)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def small_runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Three tiny synthetic runs in one folder, each evaluated (eval.json, PGD-20 on 16 points): two seeds of K=1
    (k1-s0, k1-s1) and one of K=0 (k0-s0); TensorBoard scalars every 2 steps."""
    import memloss

    root = tmp_path_factory.mktemp("runs")
    for k, seed in ((1, 0), (1, 1), (0, 0)):
        cfg = memloss.train_config(dataset="synthetic", n=128, resolution=8, batch_size=32, eval_n=16,
                                   attack_steps=2, epochs=3, k=k, seed=seed, out=str(root / f"k{k}-s{seed}"),
                                   data_dir=str(data_dir))
        run = memloss.fit(cfg, quiet=True, threads=1, log_every=2)
        memloss.evaluate(run.run_dir, attacks="pgd20,cw", n=16, data_dir=data_dir, out=run.run_dir / "eval.json")
    return root


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A local S3 server (moto, 127.0.0.1, free port) for the whole session; the AWS credential variables of this
    process are set to its dummy keys meanwhile (the standard chain finds them, as it finds real ones)."""
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server, handle = start()
    try:
        yield server
    finally:
        handle.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ring arithmetic for K ≥ 3 is the same on every backend: on S3 (slower per request) those cases of the
    contract's rotation test run with the heavy checks only."""
    for item in items:
        if "test_ring_rotation_and_slot_semantics[zarr-s3-" in item.nodeid and item.callspec.params.get("k", 0) >= 3:
            item.add_marker(pytest.mark.heavy)
