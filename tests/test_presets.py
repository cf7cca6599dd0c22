"""The documented presets in docs/presets/ load through the real configuration resolution (`--config`)."""

from __future__ import annotations

from pathlib import Path

from memloss.trainer.config.defaults import resolve_config

PRESETS = Path(__file__).resolve().parents[1] / "docs" / "presets"


def test_the_generated_data_recipe_preset_resolves_to_the_published_settings() -> None:
    cfg = resolve_config({}, PRESETS / "dm-improves-at.toml")
    assert (cfg.data.dataset, cfg.data.batch_size) == ("cifar10", 512)
    assert (cfg.run.model, cfg.method.method, cfg.method.beta) == ("wrn-28-10-swish", "trades", 5.0)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.ema, cfg.optim.pct_start) == (0.2, 400, 0.995, 0.025)
    assert cfg.method.label_smoothing == 0.1 and (cfg.threat.eps, cfg.threat.attack_steps) == ("8/255", 10)


def test_command_line_options_win_over_the_preset() -> None:
    cfg = resolve_config({"k": 0, "epochs": 2, "ema": None}, PRESETS / "dm-improves-at.toml")
    assert (cfg.method.k, cfg.optim.epochs, cfg.optim.ema) == (0, 2, 0.995)
