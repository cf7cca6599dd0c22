"""`memloss export`: a checkpoint as files a user can load without memloss, in the RobustBench convention (a plain
state dict of a model that takes [0,1] inputs and normalizes inside).

OUT (a directory) receives:
- `model.safetensors`: the state dict, keys without "module." / "_orig_mod." prefixes, with memloss's model metadata
  (architecture, dataset, normalization), so `memloss.load_model("model.safetensors")` rebuilds the model;
- `model.pt`: the same dict for `torch.load(path, weights_only=True)` (plain tensors only, nothing to unpickle);
- `card.json`: architecture, dataset, threat model, normalization, accuracies when known, and how to load: Python
  code run in the export directory (`how_to_load`; for CIFAR-10/100 under Linf/L2 also
  `how_to_load_robustbench`, through RobustBench's own `load_model` from a local zoo-layout directory; both tested
  by tests/test_robustbench_load.py).
Existing files are never overwritten.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from memloss.trainer.common.files import atomic_write_bytes, file_sha256
from memloss.trainer.data.registry import USER_META_KEY
from memloss.trainer.methods.eval_attacks import EvaluationError
from memloss.trainer.models.files import MODEL_FORMAT, MODEL_FORMAT_KEY, load_model, resolve_checkpoint
from memloss.trainer.models.zoo import loading_code, robustbench_loading_code, zoo_definition

# Prefixes that DataParallel/DistributedDataParallel ("module.") and torch.compile ("_orig_mod.") add to keys.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
FILES = {"safetensors": "model.safetensors", "pt": "model.pt", "card": "card.json"}


class ExportFormat(StrEnum):
    ROBUSTBENCH = "robustbench"


@dataclass(frozen=True)
class ExportResult:
    """Paths of the written files and the card's content."""

    safetensors: Path
    pt: Path
    card: Path
    card_data: dict[str, Any]


def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared tensors under prefix-free keys (safetensors refuses shared storage)."""
    state = model.state_dict()
    for prefix in WRAPPER_PREFIXES:
        consume_prefix_in_state_dict_if_present(state, prefix)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def read_results(path: Path, sha256: str) -> dict[str, Any]:
    """Accuracies from a `memloss evaluate --out` JSON of the same checkpoint (refused if of another one)."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        raise EvaluationError(f"--results {path} is not a readable results JSON of memloss evaluate") from None
    if results.get("checkpoint_sha256") != sha256:
        raise EvaluationError(f"--results {path} was computed on another checkpoint (sha256 differs); "
                              f"evaluate this checkpoint first")
    accuracy = {"clean": results["clean_accuracy"], "worst_case": results["worst_case_accuracy"]}
    accuracy.update({a["name"]: a["robust_accuracy"] for a in results["attacks"]})
    return {"accuracy": accuracy, "evaluated_points": results["n"],
            "threat_model_evaluated": {"norm": results["norm"], "eps": results["eps"]}}


def model_card(meta: dict[str, str], model: torch.nn.Module, sha256: str, source: Path) -> dict[str, Any]:
    """The JSON card: what the weights are and how to load them (code; without memloss where the zoo's class
    computes the same function)."""
    normalize = getattr(model, "normalize", None)
    mean = normalize.mean.flatten().tolist() if normalize is not None else None
    std = normalize.std.flatten().tolist() if normalize is not None else None
    num_classes = int(meta["num_classes"]) if meta.get("num_classes") else None
    saved = [k for k in ("normalize.mean", "normalize.std") if k in model.state_dict()]
    zoo = zoo_definition(meta["arch"], mean or [], std or [], num_classes or 0)
    card = {
        "format": str(ExportFormat.ROBUSTBENCH), "arch": meta["arch"], "dataset": meta["dataset"],
        "num_classes": num_classes,
        "input_shape": [int(v) for v in meta["shape"].split(",")] if meta.get("shape") else None,
        "threat_model": {"norm": meta.get("norm"), "eps": meta.get("eps")},
        "input_range": [0.0, 1.0],
        "normalization": {"mean": mean, "std": std, "inside_model": True, "buffers": saved},
        "parameters": sum(p.numel() for p in model.parameters()),
        "training_metadata": {k: v for k, v in meta.items() if k != MODEL_FORMAT_KEY},
        "source_checkpoint": str(source), "source_sha256": sha256, "files": dict(FILES),
        "how_to_load": loading_code(zoo, mean or [], std or []),
    }
    robustbench = robustbench_loading_code(meta, zoo, mean or [], std or [])
    if robustbench is not None:
        card["how_to_load_robustbench"] = robustbench
    if zoo:
        card["robustbench_zoo"] = zoo
    if USER_META_KEY in meta:  # the user's own data: where it was, its shape, classes and statistics
        card["user_dataset"] = json.loads(meta[USER_META_KEY])
    return card


def export(checkpoint: Path, fmt: str, out: Path, *, results: Path | None = None) -> ExportResult:
    """Writes model.safetensors, model.pt and card.json under directory `out` (created; existing files refused).

    Example
    -------
    >>> export(Path("runs/x"), "robustbench", Path("export/x"))  # doctest: +SKIP
    """
    if fmt not in ExportFormat._value2member_map_:
        raise EvaluationError(f"unknown export format {fmt!r}; valid: {', '.join(ExportFormat)}")
    out = Path(out)
    taken = [name for name in FILES.values() if (out / name).exists()]
    if taken:
        raise EvaluationError(f"{out} already holds {', '.join(taken)}; choose an empty or new OUT directory")
    source = resolve_checkpoint(checkpoint)
    model, meta = load_model(source, "cpu")
    sha = file_sha256(source)
    card = model_card(meta, model, sha, source)
    if results is not None:
        card.update(read_results(results, sha))
    return write_export(out, plain_state_dict(model), card, meta)


def write_export(out: Path, state: dict[str, torch.Tensor], card: dict[str, Any],
                 meta: dict[str, str]) -> ExportResult:
    from safetensors.torch import save

    paths = {kind: out / name for kind, name in FILES.items()}
    atomic_write_bytes(paths["safetensors"], save(state, metadata={**meta, MODEL_FORMAT_KEY: MODEL_FORMAT}))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(paths["pt"], buffer.getvalue())
    atomic_write_bytes(paths["card"], json.dumps(card, indent=2).encode())
    return ExportResult(paths["safetensors"], paths["pt"], paths["card"], card)
