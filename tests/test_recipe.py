"""Issue 21: the DM-Improves-AT recipe step for step (docs/presets/dm-improves-at.toml), its attack, BN and schedule
options, and model selection on held-out training images (--val-split, --select-attack)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from memloss.trainer.config.defaults import config_from_dict, resolve_config
from memloss.trainer.data.mixed import batch_mix
from memloss.trainer.methods.pgd import pgd
from memloss.trainer.methods.threat import PGDConfig
from memloss.trainer.training.bn import parameter_groups
from memloss.trainer.training.ema import WARMUP_FRACTION, ema_decay

PRESET = Path(__file__).resolve().parents[1] / "docs" / "presets" / "dm-improves-at.toml"
CIFAR_TRAIN, GENERATED = 50_000, 1_000_000


def published_steps(epochs: int, batch_size: int) -> tuple[int, float]:
    """DM-Improves-AT (b390f25): the sampler's num_batches = ceil(dataset_size / B) with dataset_size the CIFAR-10
    training set before the 1,024 held out (core/data/semisup.py, cifar10s.py); WATrainer.update_steps =
    floor(50000 / B) + 1 and warmup_steps = 0.025 · num_adv_epochs · update_steps (watrain.py)."""
    batches = math.ceil(CIFAR_TRAIN / batch_size)
    update_steps = math.floor(CIFAR_TRAIN / batch_size) + 1
    return batches * epochs, 0.025 * epochs * update_steps


def test_the_preset_runs_the_published_number_of_steps_and_ema_warmup() -> None:
    cfg = resolve_config({}, PRESET)
    d, o = cfg.data, cfg.optim
    mix = batch_mix(CIFAR_TRAIN - d.val_split, GENERATED, d.batch_size, d.aux_fraction, d.epoch_samples, d.aux_draw,
                    d.aux_epoch)
    steps, warmup = published_steps(o.epochs, d.batch_size)
    assert mix.batches == 98 and mix.batches * o.epochs == steps == 39_200
    assert WARMUP_FRACTION * o.epochs * mix.batches == warmup == 980.0  # make_weight_average's warm-up
    assert (mix.aux_per_batch, mix.base_per_batch, mix.draw) == (358, 154, "with-replacement")
    # The published ema_update after global step t: decay 0 before the warm-up, then min(τ, (1+δ)/(10+δ)).
    assert ema_decay(979, o.ema, warmup) == 0.0 and ema_decay(980, o.ema, warmup) == pytest.approx(0.1)
    assert ema_decay(39_200, o.ema, warmup) == 0.995


def test_the_preset_sets_the_recipes_attack_bn_schedule_and_selection() -> None:
    cfg = resolve_config({}, PRESET)
    assert (cfg.method.attack_bn, cfg.method.attack_start) == ("train-frozen", "uniform")
    assert (cfg.optim.schedule_step, cfg.optim.pct_start, cfg.optim.bn_weight_decay) == ("epoch", 0.025, False)
    assert (cfg.optim.bn_momentum, cfg.optim.bn_first_step, cfg.optim.lr, cfg.optim.ema) == (0.01, True, 0.2, 0.995)
    assert (cfg.data.val_split, cfg.run.select_attack, cfg.data.epoch_samples) == (1024, "pgd40-cw", 50_000)
    assert cfg.method.label_smoothing == 0.1 and cfg.method.beta == 5.0 and cfg.run.model == "wrn-28-10-swish"
    assert "67.31" not in PRESET.read_text()  # the README's figure is for a released checkpoint, not this setting


def test_other_methods_keep_their_attack_defaults() -> None:
    cfg = resolve_config({"dataset": "cifar10"})
    assert (cfg.method.attack_bn, cfg.method.attack_start) == ("eval", None)
    assert (cfg.optim.schedule_step, cfg.optim.bn_weight_decay, cfg.optim.bn_momentum) == ("batch", True, None)
    assert (cfg.data.val_split, cfg.run.select_attack) == (0, "pgd20")


class SmallBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_train_frozen_attack_uses_batch_statistics_and_updates_nothing() -> None:
    torch.manual_seed(0)
    model = SmallBN()
    with torch.no_grad():  # running statistics far from any batch's: eval and train-mode attacks then differ
        model.bn.running_mean.fill_(3.0)
        model.bn.running_var.fill_(9.0)
    model.train()
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 3, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eps, step = 8 / 255, 2 / 255
    start = (x + torch.empty_like(x).uniform_(-eps, eps, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    runs = {}
    for bn in ("eval", "train-frozen"):
        cfg = PGDConfig("Linf", eps, step, 5, start="uniform", bn=bn)
        runs[bn] = pgd(model, x, y, cfg, "kl", init=start)
    assert (runs["eval"] != runs["train-frozen"]).float().mean() > 0.05
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing updated
    assert model.training and model.bn.track_running_stats  # modes restored
    # The published attack by hand (gowal21uncovering/utils/trades.py): train mode, track_running_stats off.
    x_adv = start.clone()
    model.bn.track_running_stats = False
    p_nat = torch.softmax(model(x), 1).detach()
    for _ in range(5):
        x_adv.requires_grad_(True)
        loss = nn.functional.kl_div(torch.log_softmax(model(x_adv), 1), p_nat, reduction="sum")
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * g.sign(), x - eps), x + eps).clamp(0, 1)
    model.bn.track_running_stats = True
    assert torch.allclose(runs["train-frozen"], x_adv, atol=1e-6)


def test_bn_parameters_can_be_exempt_from_weight_decay() -> None:
    model = SmallBN()
    groups = parameter_groups(model, 5e-4, bn_decay=False)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert {id(p) for p in groups[1]["params"]} == {id(model.bn.weight), id(model.bn.bias)}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(parameter_groups(model, 5e-4, bn_decay=True)) == 1


def test_older_generated_data_runs_resume_with_the_older_epoch() -> None:
    old = resolve_config({"dataset": "synthetic", "aux_data": ["g.npz"]}).to_dict()
    for key in ("aux_draw", "aux_epoch", "val_split", "val_seed"):
        del old["data"][key]
    for key in ("attack_bn", "attack_start"):
        del old["method"][key]
    for key in ("schedule_step", "bn_weight_decay", "bn_momentum", "bn_first_step"):
        del old["optim"][key]
    del old["run"]["select_attack"]
    cfg = config_from_dict(old)
    assert (cfg.data.aux_epoch, cfg.data.aux_draw) == ("total", "without")
    assert (cfg.method.attack_bn, cfg.optim.schedule_step, cfg.run.select_attack) == ("eval", "batch", "pgd20")
    assert resolve_config({"dataset": "synthetic", "aux_data": ["g.npz"]}).data.aux_epoch == "pass"


def test_the_training_attack_takes_the_start_and_bn_mode_options() -> None:
    from memloss.trainer.training.session import _attack_config

    cfg = resolve_config({"dataset": "synthetic", "attack_bn": "train-frozen", "attack_start": "uniform"})
    attack = _attack_config(cfg, "normal")
    assert attack is not None and (attack.start.value, attack.bn) == ("uniform", "train-frozen")
    plain = _attack_config(resolve_config({"dataset": "synthetic"}), "normal")
    assert plain is not None and (plain.start.value, plain.bn) == ("normal", "eval")


# ---- held-out selection, through the trainer ------------------------------------------------------------------
N, HELD = 96, 16
RECIPE_LIKE = {"dataset": "synthetic", "n": N, "resolution": 8, "batch_size": 32, "attack_steps": 2, "k": 1,
               "val_split": HELD, "val_seed": 3, "select_attack": "pgd40-cw", "ema": 0.9, "schedule_step": "epoch",
               "pct_start": 0.4, "bn_weight_decay": False, "bn_momentum": 0.01, "bn_first_step": True,
               "attack_bn": "train-frozen", "attack_start": "uniform"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from memloss.trainer.data.beton import prepare

    root = tmp_path_factory.mktemp("data")
    prepare("synthetic", "train", root, n=N, resolution=8)
    return root


def test_val_split_selects_on_held_out_images_and_never_reads_the_test_set(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memloss.memstore.store import open_store
    from memloss.trainer.data.holdout import holdout_indices
    from memloss.trainer.training import session as session_module
    from memloss.trainer.training.fit import fit

    def no_test_set(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the test set was read during training")

    monkeypatch.setattr(session_module, "load_tensors", no_test_set)
    cfg = resolve_config({**RECIPE_LIKE, "epochs": 2, "data_dir": str(data_dir), "out": str(tmp_path / "run")})
    result = fit(cfg, quiet=True)
    first = result.records[0]
    assert {"val_clean_acc", "val_pgd40_cw_acc", "ema_val_pgd40_cw_acc"} <= set(first)
    assert not [k for k in first if k.startswith(("test_", "ema_test_"))] and first["eval_n"] == HELD
    held = json.loads((tmp_path / "run" / "heldout.json").read_text())
    assert held["indices"] == holdout_indices(N, HELD, 3).tolist() and held["seed"] == 3
    with open_store(str(tmp_path / "run" / "memory.zarr"), read_only=True) as store:
        assert store.spec.fingerprint.n == N - HELD and store.spec.fingerprint.name == "synthetic-val16s3"
    best = max(range(2), key=lambda i: (result.records[i]["val_pgd40_cw_acc"], i))
    assert result.best_epoch == best + 1
    # The schedule stepped once an epoch: a OneCycle of `epochs` steps, one step after each epoch.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.optim.lr, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.optim.lr, total_steps=2, pct_start=0.4)
    lrs = []
    for _ in range(2):
        opt.step()
        ref.step()
        lrs.append(ref.get_last_lr()[0])
    assert [r["lr"] for r in result.records] == pytest.approx(lrs)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["data"]["val_split"] == HELD and saved["run"]["eval_n"] is None


def test_held_out_images_are_seeded_and_not_trained_on() -> None:
    a, b = holdout_indices_pair()
    assert np.array_equal(a, b) and a.size == 100 and len(set(a.tolist())) == 100
    assert not np.array_equal(a, _held(seed=1))


def holdout_indices_pair() -> tuple[np.ndarray, np.ndarray]:
    return _held(seed=0), _held(seed=0)


def _held(seed: int) -> np.ndarray:
    from memloss.trainer.data.holdout import holdout_indices

    return holdout_indices(1000, 100, seed)


def test_a_recipe_like_run_resumes_to_the_uninterrupted_weights(tmp_path: Path, data_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The new options are part of the run's config and state (the first step's BN momentum, the per-epoch
    schedule, the weight average): an interrupted run continues exactly."""
    from safetensors.torch import load_file

    from memloss.trainer.training import fit as fit_module
    from memloss.trainer.training.fit import fit, resume_config

    common = {**RECIPE_LIKE, "select_attack": "pgd20", "epochs": 3, "data_dir": str(data_dir)}
    straight = fit(resolve_config({**common, "out": str(tmp_path / "a")}), quiet=True)
    original = fit_module.train_epoch

    def stop_at_third(s, epoch, reporter):  # noqa: ANN001, ANN202
        if epoch == 3:
            raise KeyboardInterrupt
        return original(s, epoch, reporter)

    monkeypatch.setattr(fit_module, "train_epoch", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        fit(resolve_config({**common, "out": str(tmp_path / "b")}), quiet=True)
    monkeypatch.setattr(fit_module, "train_epoch", original)
    run = tmp_path / "b"
    resumed = fit(resume_config(run, {}), resume=run, quiet=True)
    assert [r["epoch"] for r in resumed.records] == [1, 2, 3]
    for name in ("last.safetensors", "last-ema.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(run / name))
        assert all(torch.equal(a[key], b[key]) for key in a), name
    assert [r["lr"] for r in straight.records] == [r["lr"] for r in resumed.records]


def test_v3_step_without_any_memory_uses_the_clean_example() -> None:
    """Issue 21 item 5 through the trainer's step: in the first K epochs (no slot holds memory, `memory=None`) V3
    still adds Σ_k β′_k · KL(p(x) ‖ p(x_adv)) (x″ = x, paper Algorithm 1); V1 adds nothing."""
    from memloss.trainer.methods.losses import LossParams
    from memloss.trainer.methods.registry import get_method
    from memloss.trainer.training.step import StepSetup, train_step

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 3, (8,))
    attack = PGDConfig("Linf", 8 / 255, 2 / 255, 2, start="uniform")
    out = {}
    for variant in ("v1", "v3"):
        setup = StepSetup(model, get_method("trades"), LossParams(5.0, 0.5), attack, (2.0, 1.0), variant, None,
                          autocast=False)
        out[variant] = train_step(setup, x, y, torch.arange(8), None, torch.Generator().manual_seed(0))
    assert "mem_loss" not in out["v1"].metrics
    with torch.no_grad():
        p, q = torch.log_softmax(model(x), 1), torch.log_softmax(model(out["v3"].x_adv), 1)
        kl = (p.exp() * (p - q)).sum(1).mean()
    assert kl > 0 and out["v3"].metrics["mem_loss"].item() == pytest.approx(3.0 * kl.item(), rel=1e-5)
