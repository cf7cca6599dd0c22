"""What an evaluation runs on: the threat model (given, or the checkpoint's), the test points and the model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from memloss.trainer.evaluation.results import EvalConfig
from memloss.trainer.methods.eval_attacks import EvaluationError, ThreatModel
from memloss.trainer.models.files import load_model


def resolve_threat(cfg: EvalConfig, meta: dict[str, str]) -> ThreatModel:
    """--norm/--eps when given, else the checkpoint's training threat model."""
    norm, eps = cfg.norm or meta.get("norm"), cfg.eps if cfg.eps is not None else meta.get("eps")
    if norm is None or eps is None:
        raise EvaluationError("the checkpoint stores no threat model (norm/eps); pass --norm and --eps")
    return ThreatModel(norm, eps)


def load_points(meta: dict[str, str], n: int | None, data_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test points of the checkpoint's dataset: x uint8 [n,C,H,W], y int64 [n] on CPU."""
    from memloss.trainer.data.registry import USER_META_KEY, info_from_meta
    from memloss.trainer.data.sources import load_tensors

    if USER_META_KEY in meta:  # the user's own data: the test split the model file records
        from memloss.trainer.data.userdata import recorded_test_points

        return recorded_test_points(info_from_meta(meta), n)
    resolution = int(meta["resolution"]) if meta.get("resolution") else None
    x, y = load_tensors(meta["dataset"], "test", data_dir, resolution=resolution)
    if n is None or n <= len(y):
        return x[:n], y[:n]
    if meta["dataset"] == "synthetic":  # generated on demand: any n exists
        return load_tensors("synthetic", "test", data_dir, n=n, resolution=resolution)
    raise EvaluationError(f"--n {n} is larger than the {meta['dataset']} test set ({len(y)} points); "
                          f"use --n {len(y)} or less")


def load_eval_model(path: Path, device: torch.device) -> nn.Module:
    """The checkpoint's model on `device`, in eval mode."""
    model, _ = load_model(path, device)
    return model.eval()
