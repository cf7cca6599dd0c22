"""Model files: weights (and the normalization buffers) as safetensors with string metadata, written atomically.

A model file is rebuilt from its own metadata: `arch`, `dataset` and, when present, `resolution` give the
architecture through `build_model`; the other keys (`num_classes`, `shape`, `norm`, `eps`, `method`, ...) are
the caller's. A model whose normalization buffers are not in its state dict (the wide ResNets, whose keys follow
the RobustBench zoo) gets them as `normalize_mean` / `normalize_std` metadata (comma-separated floats), written by
`save_model` and applied by `load_model`. The reserved key `memloss_format` marks our files, so a foreign safetensors file is refused.
Nothing here unpickles (no torch.load), so loading a model file cannot run code.
"""

from pathlib import Path
from typing import Any

import torch
from torch import nn

from memloss.errors import MemlossError
from memloss.trainer.common.files import atomic_write_bytes

MODEL_FORMAT_KEY = "memloss_format"
MODEL_FORMAT = "model/1"


class CheckpointError(MemlossError):
    """A model file is missing, foreign, corrupt or does not match its architecture."""


def save_model(path: Path | str, model: nn.Module, meta: dict[str, str]) -> None:
    """Saves `model.state_dict()` (tensors copied to CPU, contiguous) with `meta` as safetensors metadata.
    `meta` needs string values and at least `arch` and `dataset`."""
    atomic_write_bytes(path, model_bytes(model, meta))


def model_bytes(model: nn.Module, meta: dict[str, str]) -> bytes:
    """The bytes `save_model` writes: a snapshot of the weights now (the file can be written later)."""
    from safetensors.torch import save

    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise TypeError("model metadata must map str to str")
    missing = {"arch", "dataset"} - meta.keys()
    if missing:
        raise ValueError(f"model metadata lacks {sorted(missing)}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return save(tensors, metadata={**meta, **normalization_meta(model, tensors), MODEL_FORMAT_KEY: MODEL_FORMAT})


def normalization_meta(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, str]:
    """`normalize_mean`/`normalize_std` for a model whose `normalize` buffers are not in `state`, else {}."""
    normalize = getattr(model, "normalize", None)
    if normalize is None or "normalize.mean" in state:
        return {}
    return {f"normalize_{name}": ",".join(repr(v) for v in getattr(normalize, name).flatten().tolist())
            for name in ("mean", "std")}


def _apply_normalization(path: Path | str, model: nn.Module, meta: dict[str, str]) -> None:
    """Sets the model's mean/std buffers from `normalize_mean`/`normalize_std` metadata, when present."""
    if "normalize_mean" not in meta:
        return
    normalize = getattr(model, "normalize", None)
    if normalize is None:
        raise CheckpointError(f"{path}: normalize_mean metadata but {meta['arch']} has no normalize layer")
    for name in ("mean", "std"):
        buffer = getattr(normalize, name)
        try:
            values = torch.tensor([float(v) for v in meta[f"normalize_{name}"].split(",")], dtype=buffer.dtype)
            buffer.copy_(values.view_as(buffer))
        except (KeyError, ValueError, RuntimeError):
            raise CheckpointError(f"{path}: bad normalize_{name} metadata for {buffer.numel()} channels; "
                                  f"use a model file written by memloss") from None


def load_model(path: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, str]]:
    """(model in eval mode on `device`, metadata) from a file written by `save_model`."""
    from safetensors.torch import load_file

    meta = read_model_meta(path)
    model = _build_from_meta(path, meta)
    try:
        state = load_file(str(path), device="cpu")
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as err:
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} does not match a {meta['arch']} for {meta['dataset']} ({first}); "
                              f"use a model file written by memloss") from None
    _apply_normalization(path, model, meta)
    return model.to(device).eval(), meta


def read_model_meta(path: Path | str) -> dict[str, str]:
    """The metadata of a memloss model file; CheckpointError if missing, not safetensors, or foreign."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise CheckpointError(f"model file not found: {path}; pass the path of a saved model (.safetensors)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(err).__name__}); "
                              f"it may be truncated or of another format") from None
    if meta.get(MODEL_FORMAT_KEY) != MODEL_FORMAT or not {"arch", "dataset"} <= meta.keys():
        raise CheckpointError(f"{path} is not a memloss model file (no {MODEL_FORMAT_KEY}={MODEL_FORMAT} metadata); "
                              f"use a model saved by memloss")
    return meta


def _build_from_meta(path: Path | str, meta: dict[str, str]) -> nn.Module:
    """The empty model that `meta` describes (arch, dataset, optional resolution)."""
    from memloss.trainer.data.registry import info_from_meta
    from memloss.trainer.models.registry import build_model

    try:
        return build_model(meta["arch"], info_from_meta(meta))
    except MemlossError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except ValueError:
        raise CheckpointError(f"{path}: bad resolution {meta.get('resolution')!r} in its metadata") from None


def resolve_checkpoint(path: Path | str, in_run_dir: str = "best.safetensors") -> Path:
    """A .safetensors file, or a run directory (then its file `in_run_dir`: best.safetensors, the model selected
    by PGD-20, for evaluation; last.safetensors for HAT's helper, whose PGD-20 means nothing)."""
    path = Path(path)
    if path.is_dir():
        path = path / in_run_dir
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a .safetensors file or a run directory")
    return path


def require_compatible(meta: dict[str, str], info: Any, path: Path | str) -> None:
    """Refuses a model file (e.g. a HAT helper) made for another dataset, input shape or number of classes than
    `info` (a DatasetInfo)."""
    from memloss.trainer.data.registry import info_from_meta

    theirs = info_from_meta(meta)
    for what, mine, other in (("dataset", info.name, theirs.name), ("input shape", info.shape, theirs.shape),
                              ("number of classes", info.num_classes, theirs.num_classes)):
        if mine != other:
            raise CheckpointError(f"{path} was trained with {what} {other}, but this run has {mine}; use a model "
                                  f"trained on {info.name} at this resolution")
