"""Wide-ResNet weights to and from the RobustBench model zoo (and DM-Improves-AT checkpoints).

memloss's wide ResNets have the zoo's state_dict keys (models/wide_resnet.py), so weights move both ways with
`load_state_dict(strict=True)`. What the keys do not carry is the input normalization, and there the two zoo classes
differ: `DMWideResNet` normalizes inside with the mean/std passed to its constructor (not saved in its state dict),
while the classic `WideResNet` does not normalize at all (TRADES/MART-era checkpoints take raw [0, 1] inputs).
`import_zoo_checkpoint` therefore sets memloss's normalization to what the zoo's class would apply, and
`zoo_definition` tells the export card how to rebuild a memloss model in the zoo's code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from memloss.trainer.data.registry import dataset_info
from memloss.trainer.models.files import CheckpointError, save_model
from memloss.trainer.models.registry import build_model
from memloss.trainer.models.wide_resnet import WIDE_RESNETS

# Key prefixes that wrappers add: DataParallel ("module."), torch.compile ("_orig_mod."), RobustBench's own
# re-saves ("model."), and DM-Improves-AT's nn.Sequential(backbone) ("0.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "0.")
# The TRADES WideResNet's unused `sub_block1` (never called in forward; several zoo checkpoints still hold it).
UNUSED_PREFIXES = ("sub_block1.",)
# Where a checkpoint dict keeps its weights: DM-Improves-AT ("model_state_dict", the averaged model), others.
STATE_KEYS = ("model_state_dict", "state_dict", "model")


def zoo_definition(arch: str, mean: Sequence[float], std: Sequence[float], num_classes: int) -> dict[str, Any]:
    """How the RobustBench zoo builds `arch` (a wide ResNet), for a model card; {} for other architectures."""
    if arch not in WIDE_RESNETS:
        return {}
    depth, width, swish = WIDE_RESNETS[arch]
    if swish:
        return {"module": "robustbench.model_zoo.architectures.dm_wide_resnet", "class": "DMWideResNet",
                "kwargs": {"num_classes": num_classes, "depth": depth, "width": width,
                           "activation_fn": "torch.nn.SiLU", "mean": list(mean), "std": list(std)},
                "normalization": "inside (the mean/std kwargs; not in the state dict)"}
    return {"module": "robustbench.model_zoo.architectures.wide_resnet", "class": "WideResNet",
            "kwargs": {"depth": depth, "widen_factor": width, "num_classes": num_classes},
            "normalization": f"none inside the zoo's class: feed it (x - {list(mean)}) / {list(std)} per channel"}


def zoo_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The plain state dict inside a zoo / DM-Improves-AT checkpoint: wrapper prefixes stripped, unused keys dropped."""
    state: Any = checkpoint
    for key in STATE_KEYS:
        if not _is_state(state) and isinstance(state, Mapping) and key in state:
            state = state[key]
    if not _is_state(state):
        raise CheckpointError(f"no state dict found (looked for a dict of tensors under {', '.join(STATE_KEYS)})")
    state = dict(state)
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state, stripped = {k[len(prefix):]: v for k, v in state.items()}, True
    return {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}


def _is_state(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) > 0 and all(isinstance(v, torch.Tensor) for v in value.values())


def import_zoo_checkpoint(checkpoint: Path | str, arch: str, dataset: str, out: Path | str, *,
                          mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                          norm: str | None = None, eps: str | None = None) -> Path:
    """Writes a memloss model file `out` (.safetensors) holding the weights of a zoo or DM-Improves-AT checkpoint.

    `mean`/`std` default to what the zoo's class applies: the dataset's statistics for the `-swish` (DMWideResNet)
    networks, none (mean 0, std 1) for the classic WideResNet. `norm`/`eps` (e.g. "Linf", "8/255") are recorded as the
    model's threat model, the default of `memloss evaluate`. The checkpoint is read with torch.load(weights_only=True).

    Example
    -------
    >>> import_zoo_checkpoint("Wang2023Better_WRN-28-10.pt", "wrn-28-10-swish", "cifar10", "wang.safetensors",
    ...                       norm="Linf", eps="8/255")  # doctest: +SKIP
    """
    checkpoint = Path(checkpoint)
    if arch not in WIDE_RESNETS:
        raise CheckpointError(f"zoo import takes a wide ResNet ({', '.join(WIDE_RESNETS)}), got {arch!r}")
    info = dataset_info(dataset)
    model = build_model(arch, info)
    state = zoo_state_dict(_read(checkpoint))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{checkpoint} does not hold a {arch} for {dataset} ({first}); "
                              f"pick the --model that the checkpoint was trained with") from None
    mean = _zoo_mean(arch, info) if mean is None else tuple(mean)
    std = _zoo_std(arch, info) if std is None else tuple(std)
    _set_normalization(model, arch, info.shape[0], mean, std)
    meta = {"arch": arch, "dataset": dataset, "resolution": "", "num_classes": str(info.num_classes),
            "shape": ",".join(str(v) for v in info.shape), "source": str(checkpoint)}
    meta.update({k: v for k, v in (("norm", norm), ("eps", eps)) if v is not None})
    save_model(out, model, meta)
    return Path(out)


def _zoo_mean(arch: str, info: Any) -> Sequence[float]:
    return info.mean if WIDE_RESNETS[arch][2] else (0.0,) * info.shape[0]


def _zoo_std(arch: str, info: Any) -> Sequence[float]:
    return info.std if WIDE_RESNETS[arch][2] else (1.0,) * info.shape[0]


def _set_normalization(model: torch.nn.Module, arch: str, channels: int, mean: Sequence[float],
                       std: Sequence[float]) -> None:
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise CheckpointError(f"mean/std need {channels} values each (std > 0) for {arch}, got {mean} / {std}")
    with torch.no_grad():
        model.normalize.mean.copy_(torch.tensor(mean, dtype=torch.float32).view_as(model.normalize.mean))
        model.normalize.std.copy_(torch.tensor(std, dtype=torch.float32).view_as(model.normalize.std))


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the zoo's .pt file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors of every kind mean the same: not a plain tensor checkpoint
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint of plain tensors "
                              f"({type(err).__name__}); pass the zoo's .pt file") from None


# RobustBench's load_model finds checkpoints at <model_dir>/<dataset>/<threat>/<name>.pt for names in its registry.
ROBUSTBENCH_DATASETS = ("cifar10", "cifar100")
ROBUSTBENCH_THREATS = ("Linf", "L2")


def zoo_builds_exactly(zoo: Mapping[str, Any], mean: Sequence[float], std: Sequence[float]) -> bool:
    """True if the zoo's class alone computes memloss's outputs: DMWideResNet normalizes with its mean/std kwargs;
    the classic WideResNet normalizes nothing, which is memloss's model only at mean 0, std 1."""
    if not zoo:
        return False
    return zoo["class"] == "DMWideResNet" or (all(m == 0 for m in mean) and all(s == 1 for s in std))


def _builder(zoo: Mapping[str, Any], mean: Sequence[float], std: Sequence[float]) -> list[str]:
    """Lines that set `model` to the network, without its weights when the zoo's class builds it."""
    if not zoo_builds_exactly(zoo, mean, std):
        return ["import memloss", "model, _ = memloss.load_model('model.safetensors')  # memloss's own definition"]
    args = ", ".join(f"{k}={v if k == 'activation_fn' else repr(v)}" for k, v in zoo["kwargs"].items())
    return ["import torch", f"from {zoo['module']} import {zoo['class']}", f"model = {zoo['class']}({args})"]


def loading_code(zoo: Mapping[str, Any], mean: Sequence[float], std: Sequence[float]) -> str:
    """Python code for a model card, run in the export directory: leaves the model, eval mode, in `model` (the
    zoo's class where it computes the same function, else memloss's definition)."""
    lines = ["# Run in the export directory. Inputs: float [B, C, H, W] in [0, 1]; outputs: logits.",
             *_builder(zoo, mean, std)]
    if zoo_builds_exactly(zoo, mean, std):
        lines.append("model.load_state_dict(torch.load('model.pt', weights_only=True))")
    return "\n".join([*lines, "model.eval()"]) + "\n"


def robustbench_loading_code(meta: Mapping[str, str], zoo: Mapping[str, Any], mean: Sequence[float],
                             std: Sequence[float]) -> str | None:
    """Python code for a model card that loads the export through `robustbench.utils.load_model` from a local
    zoo-layout directory (no download): the model is registered under a new name, model.pt copied to
    robustbench-models/<dataset>/<threat>/<name>.pt. None where RobustBench has no such leaderboard."""
    dataset, threat = meta.get("dataset"), meta.get("norm")
    if dataset not in ROBUSTBENCH_DATASETS or threat not in ROBUSTBENCH_THREATS:
        return None
    return "\n".join([
        "# Run in the export directory; needs `pip install robustbench`. load_model reads",
        "# <model_dir>/<dataset>/<threat>/<name>.pt for a name in RobustBench's registry: register this model",
        "# under a new name, put model.pt there, load it (nothing is downloaded when the file exists).",
        "import shutil", "import sys", "from pathlib import Path", "",
        "try:  # robustbench 1.1.1 imports fra31's `autoattack` (not on PyPI); pyautoattack is the same code",
        "    import autoattack  # noqa: F401", "except ImportError:", "    import pyautoattack", "    import pyautoattack.state",
        "    sys.modules['autoattack'], sys.modules['autoattack.state'] = pyautoattack, pyautoattack.state", "",
        "from robustbench.model_zoo import model_dicts", "from robustbench.model_zoo.enums import BenchmarkDataset, "
        "ThreatModel", "from robustbench.utils import load_model", "", "",
        "def build():", *(f"    {line}" for line in _builder(zoo, mean, std)), "    return model", "", "",
        f"name, dataset, threat = {'memloss-' + meta['arch']!r}, {dataset!r}, {threat!r}",
        "model_dir = Path('robustbench-models')",
        "target = model_dir / dataset / threat / f'{name}.pt'",
        "target.parent.mkdir(parents=True, exist_ok=True)",
        "shutil.copyfile('model.pt', target)",
        "registry = model_dicts[BenchmarkDataset(dataset)].setdefault(ThreatModel(threat), {})",
        "registry[name] = {'model': build, 'gdrive_id': ''}  # gdrive_id: never used, the file is there",
        "model = load_model(name, model_dir=model_dir, dataset=dataset, threat_model=threat)  # eval mode",
    ]) + "\n"
