"""Shared test settings: one torch thread (the CI box has 2 cores and FFCV decodes in threads of its own, so more
torch threads only oversubscribe), and a per-session data directory so datasets convert once."""

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory shared by the whole test session (digits/synthetic .beton files are built once)."""
    return tmp_path_factory.mktemp("data")
