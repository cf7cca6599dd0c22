"""The 2-D toy as an instrument: data in the unit square, the two-logit wrapper, the ensemble of runs (each run its
own network and gradient), the end-of-epoch events on a hand-made case, the paired t-interval, the positive
control's plumbing and verdict, config validation, and a quick run end to end (library and CLI)."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memloss.errors import MemlossError
from memloss.trainer.experiments.toy.config import ToyConfig, ToyConfigError
from memloss.trainer.experiments.toy.data import make_toy_data
from memloss.trainer.experiments.toy.model import EnsembleMLP, TwoLogitMLP
from memloss.trainer.experiments.toy.result import ToyResult, save_toy_result
from memloss.trainer.experiments.toy.run import _events, pick_panel_epoch, run_toy
from memloss.trainer.experiments.toy.stats import paired_difference


@pytest.fixture(scope="module")
def quick_result() -> ToyResult:
    return run_toy(ToyConfig.quick(seed=0), threads=1)  # TRADES, 3 seeds × 5 variants


def test_data_in_unit_square_balanced_and_seeded() -> None:
    data = make_toy_data(200, 0.1, seed=3)
    assert data.x.shape == (200, 2) and data.x.dtype == torch.float32
    assert data.x.min() >= 0 and data.x.max() <= 1
    assert int(data.y.sum()) == 100
    assert torch.equal(data.x, make_toy_data(200, 0.1, seed=3).x)
    assert not torch.equal(data.x, make_toy_data(200, 0.1, seed=4).x)


def test_two_logit_cross_entropy_is_the_papers_bce() -> None:
    model = TwoLogitMLP(8)
    x = torch.rand(16, 2)
    y = torch.randint(0, 2, (16,))
    z = model.body(x).squeeze(1)
    bce = F.binary_cross_entropy_with_logits(z, y.float())
    assert torch.allclose(F.cross_entropy(model(x), y), bce, atol=1e-6)


def test_ensemble_runs_are_independent_networks() -> None:
    ens = EnsembleMLP(runs=3, hidden=8, dims=4)
    ens.init_runs([7, 8, 7])  # runs 0 and 2 share a seed: same initial weights (the pairing)
    assert torch.equal(ens.w1[0], ens.w1[2]) and not torch.equal(ens.w1[0], ens.w1[1])
    x, y = torch.rand(3, 5, 4), torch.randint(0, 2, (3, 5))
    logits = ens(x.reshape(-1, 4))
    # Σ over runs of each run's mean loss: run r's gradient is that of its own network alone.
    total = sum(F.cross_entropy(logits.view(3, 5, 2)[r], y[r]) for r in range(3))
    total.backward()
    for r in range(3):
        single = ens.member(r)
        out = single(x[r])
        assert torch.allclose(out, logits.view(3, 5, 2)[r], atol=1e-6)
        F.cross_entropy(out, y[r]).backward()
        assert torch.allclose(single.body[0].weight.grad, ens.w1.grad[r].T, atol=1e-6)


def test_end_of_epoch_events_on_a_hand_made_case() -> None:
    # Two runs, four old examples each: made_wrong = model n−1 wrong on x′ₙ₋₁, now_wrong = model n wrong on it.
    made_wrong = torch.tensor([[True, True, False, False], [False, False, False, False]])
    now_wrong = torch.tensor([[False, True, True, False], [True, False, False, False]])
    got = {k: v.tolist() for k, v in _events(made_wrong, now_wrong).items()}
    assert got == {"made_correct": [2, 4], "forget_at_epoch_end": [1, 1], "learn_at_epoch_end": [1, 0],
                   "old_error_at_epoch_end": [2, 1]}


def test_pick_panel_epoch_searches_the_measured_epochs() -> None:
    # forget[i] belongs to epoch i + 2; the early peak (epoch 2) is before the first measured epoch.
    assert pick_panel_epoch([0.9, 0.1, 0.2, 0.4, 0.5, 0.4], first=4) == 6
    assert pick_panel_epoch([0.9, 0.1, 0.2, 0.4, 0.3, 0.4], first=4) == 5  # earliest on a tie
    assert pick_panel_epoch([0.9, 0.1, 0.2, 0.4], first=2) == 2


def test_paired_t_interval() -> None:
    treated, base = np.array([3.0, 5.0, 4.0, 8.0]), np.array([2.0, 3.0, 1.0, 4.0])  # d = 1, 2, 3, 4
    d = paired_difference(treated, base)
    sd = math.sqrt(sum((v - 2.5) ** 2 for v in (1, 2, 3, 4)) / 3)
    # t_{0.975, 3} = 3.182446 (Student's table): the interval is mean ± t·sd/√n.
    assert d.mean == pytest.approx(2.5) and d.std == pytest.approx(sd) and d.n == 4
    assert d.half_width == pytest.approx(3.182446 * sd / 2, rel=1e-6)
    assert d.low == pytest.approx(2.5 - d.half_width) and d.excludes_zero
    # Pairing: a shift shared by both arms of every seed changes nothing.
    assert paired_difference(treated + 100 * np.arange(4), base + 100 * np.arange(4)) == d
    assert not paired_difference(np.array([1.0, -1.0, 2.0]), np.zeros(3)).excludes_zero
    with pytest.raises(ValueError):
        paired_difference(np.array([1.0]), np.array([0.0]))


@pytest.mark.parametrize(
    "kwargs", [{"epochs": 2}, {"eps": 0.0}, {"eps": 0.6}, {"lr": -1.0}, {"batch_size": 0}, {"momentum": 1.0},
               {"beta_prime": 0.0}, {"sweep": (2.0,)}, {"sweep": (-1.0,)}, {"grid": 1}, {"base": "mart"},
               {"seeds": 0}, {"beta": -1.0}, {"control_weight": -1.0}, {"measure_from": 1.0},
               {"schedule": "step"}],
)
def test_config_rejects_impossible_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ToyConfigError) as err:
        ToyConfig(**kwargs)
    assert isinstance(err.value, MemlossError) and "\n" not in str(err.value)


def test_variants_base_memloss_sweep_control() -> None:
    kinds = [(v.kind, v.weight) for v in ToyConfig(beta_prime=2.0, sweep=(8.0, 0.5), control_weight=3.0).variants]
    assert kinds == [("base", 0.0), ("memloss", 2.0), ("memloss", 0.5), ("memloss", 8.0), ("control", 3.0)]
    assert [v.kind for v in ToyConfig(sweep=(), control_weight=0.0).variants] == ["base", "memloss"]


def test_quick_run_shapes_identities_and_pairing(quick_result: ToyResult) -> None:
    cfg = quick_result.config
    runs = len(cfg.variants) * cfg.seeds
    a = quick_result.arrays
    assert a["forget_at_epoch_end"].shape == (cfg.epochs - 1, runs) and a["robust_acc"].shape == (cfg.epochs, runs)
    # old error(n) = own error(n−1) + forgetting(n) − learning(n): each point is counted once.
    assert np.allclose(a["old_error_at_epoch_end"],
                       a["own_error"][:-1] + a["forget_at_epoch_end"] - a["learn_at_epoch_end"])
    assert np.allclose(a["made_correct"], 1 - a["own_error"][:-1])
    # Epoch 1 has no memory: every variant of a seed is still the base run (same data, weights, order, starts).
    base, memloss = a["own_error"][0, : cfg.seeds], a["own_error"][0, cfg.seeds: 2 * cfg.seeds]
    assert np.array_equal(base, memloss)
    # From epoch 2 on the control trains on the memory examples: its runs leave the base's.
    assert not np.array_equal(a["own_error"][1:, : cfg.seeds], a["own_error"][1:, -cfg.seeds:])
    panels = quick_result.panels
    assert panels.wrong.shape == (3, cfg.n_train)
    assert panels.wrong[2].mean() == pytest.approx(a["old_error_at_epoch_end"][panels.epoch - 2, 0])


def test_base_runs_do_not_depend_on_the_other_variants(quick_result: ToyResult) -> None:
    alone = run_toy(replace(quick_result.config, sweep=(), control_weight=0.0), threads=1)
    s = quick_result.config.seeds
    for key in ("own_error", "forget_at_epoch_end", "robust_acc"):
        assert np.allclose(alone.arrays[key][:, :s], quick_result.arrays[key][:, :s], atol=1e-6)


def test_loss_adds_each_variants_term_to_its_own_runs_only() -> None:
    from memloss.trainer.experiments.toy.run import _Layout, _loss
    from memloss.trainer.methods.memloss import memloss_term
    from memloss.trainer.methods.registry import get_method

    cfg = ToyConfig(seeds=2, sweep=(), control_weight=3.0, base="at")  # base, MemLoss β′=2, control: 6 runs
    layout = _Layout(cfg.seeds, len(cfg.variants))
    model = EnsembleMLP(layout.runs, hidden=8)
    model.init_runs(list(range(layout.runs)))
    gen = torch.Generator().manual_seed(0)
    x, x_adv, mem = (torch.rand(layout.runs * 4, 2, generator=gen) for _ in range(3))
    y = torch.randint(0, 2, (layout.runs * 4,), generator=gen)
    got = _loss(model, (x, y, x_adv), mem, cfg, get_method("at"), layout)
    expected = torch.zeros(())
    for r in range(layout.runs):  # run r = variant r // 2 of seed r % 2, rows 4r … 4r + 3
        rows = slice(4 * r, 4 * r + 4)
        expected = expected + F.cross_entropy(model(x_adv)[rows], y[rows])  # AT: CE on x_adv
        if r // 2 == 1:
            valid = torch.ones(1, 4, dtype=torch.bool)
            expected = expected + memloss_term(model(x)[rows], model(mem)[rows].unsqueeze(0), y[rows], valid,
                                               2.0, "v1").loss
        if r // 2 == 2:
            expected = expected + 3.0 * F.cross_entropy(model(mem)[rows], y[rows])  # the control
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(_loss(model, (x, y, x_adv), None, cfg, get_method("at"), layout),
                          sum(F.cross_entropy(model(x_adv)[4 * r: 4 * r + 4], y[4 * r: 4 * r + 4])
                              for r in range(layout.runs)), atol=1e-5)


def _synthetic(control_forget: float) -> ToyResult:
    """A result whose control run forgets `control_forget` of the points each epoch, the base 0.2 (± seed noise)."""
    cfg = ToyConfig(epochs=4, seeds=3, sweep=(), measure_from=0.0)
    variants, e = len(cfg.variants), cfg.epochs
    noise = np.tile([0.0, 0.01, -0.01], variants)
    forget = np.tile(np.repeat([0.2, 0.2, control_forget], 3), (e - 1, 1)) + noise
    arrays = {"made_correct": np.full((e - 1, 9), 0.8), "forget_at_epoch_end": forget,
              "learn_at_epoch_end": forget * 0, "old_error_at_epoch_end": forget + 0.2,
              **{k: np.full((e, 9), 0.5) for k in ("own_error", "clean_acc", "robust_acc")}}
    return ToyResult(cfg, arrays, None, 0.0)  # type: ignore[arg-type]


def test_control_verdict() -> None:
    moved, not_moved = _synthetic(0.1), _synthetic(0.3)
    assert moved.control_moves_metric() is True and not_moved.control_moves_metric() is False
    control = moved.config.variants[-1]
    assert control.kind == "control"
    assert moved.paired()[control.name]["forget_rate_at_epoch_end"].mean == pytest.approx((0.1 - 0.2) / 0.8)
    no_control = replace(moved.config, control_weight=0.0)
    assert ToyResult(no_control, {}, None, 0.0).control_moves_metric() is None  # type: ignore[arg-type]


def test_plots_and_json_are_written(quick_result: ToyResult, tmp_path: Path) -> None:
    from memloss.trainer.experiments.toy.plot import plot_toy

    paths = plot_toy(quick_result, tmp_path / "figs")
    assert [p.name for p in paths] == ["toy_panels.png", "toy_clean_boundary.png", "toy_forgetting.png",
                                       "toy_paired.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    saved = json.loads(save_toy_result(quick_result, tmp_path / "figs").read_text())
    name = quick_result.config.variants[1].name
    assert saved["paired"][name]["forget_rate_at_epoch_end"]["n"] == 3
    assert saved["control_moves_metric"] in (True, False) and "Student t" in saved["interval"]
    assert len(saved["per_seed"]["TRADES"]["robust_acc"]) == 3


def test_output_path_that_is_a_file_is_refused(quick_result: ToyResult, tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    with pytest.raises(ToyConfigError):
        save_toy_result(quick_result, blocker)
    assert blocker.read_text() == "keep me"


def test_cli_quick_prints_the_paired_table(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from memloss.cli.toy import toy

    app = typer.Typer()
    app.command("toy")(toy)
    app.callback()(lambda: None)
    args = ["toy", "--quick", "--base", "at", "--sweep", "8", "--threads", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "+MemLoss β′=2" in result.output and "+MemLoss β′=8" in result.output and "(control)" in result.output
    assert "positive control (CE on the memory examples) moved:" in result.output and " ± " in result.output
    figures = {f"toy_{n}.{ext}" for n in ("panels", "clean_boundary", "forgetting", "paired") for ext in ("png", "pdf")}
    assert {p.name for p in tmp_path.iterdir()} == {"toy_result.json", *figures}
    bad = CliRunner().invoke(app, ["toy", "--quick", "--sweep", "x", "--out", str(tmp_path)])
    assert bad.exit_code != 0
