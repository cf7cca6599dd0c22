"""The names each choice option accepts (methods, norms, architectures, ...) and the one-line refusal of any
other value; shared by the config sections (schema.py, data.py)."""

from __future__ import annotations

from memloss.errors import ConfigError

METHOD_NAMES = ("standard", "at", "trades", "mart", "hat")
VARIANT_NAMES = ("v1", "v2", "v3")
REG_NAMES = ("none", "te", "meow")
NORM_NAMES = ("Linf", "L2")
MEMORY_VIEWS = ("recorded", "aligned")
SLOT_DRAWS = ("step", "window")
MEMORY_FORWARDS = ("separate", "fused")
CLEAN_GRADS = ("through", "stop")
PRECISIONS = ("fp32", "bf16")  # training compute: fp32, or bf16 autocast (CUDA only)
EPOCH_RULES = ("pass", "total")  # trainer/data/mixed.py batch_mix
ATTACK_BN_NAMES = ("eval", "train-frozen")  # methods/threat.py ATTACK_BN_MODES
ATTACK_STARTS = ("normal", "uniform")
SCHEDULE_STEPS = ("batch", "epoch")
SELECT_ATTACKS = ("pgd20", "pgd40-cw")
ARCH_NAMES = ("resnet18", "preact_resnet18", "small_cnn", "wrn-28-10", "wrn-34-10", "wrn-70-16", "wrn-28-10-swish",
              "wrn-34-10-swish", "wrn-70-16-swish")


def choice(value: str, choices: tuple[str, ...], what: str) -> None:
    """Refuses `value` unless it is one of `choices`; `what` names the option in the message."""
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(choices)}")
