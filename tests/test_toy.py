"""The 2-D toy problem: data in the unit square, the two-logit wrapper, the forgetting metrics on a hand-made
case, config validation, and the quick run over two seeds end to end (library and CLI), for both bases."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memloss.errors import MemlossError
from memloss.trainer.experiments.toy.config import ToyConfig, ToyConfigError
from memloss.trainer.experiments.toy.data import make_toy_data
from memloss.trainer.experiments.toy.model import TwoLogitMLP, error_rate
from memloss.trainer.experiments.toy.result import ToyResult, save_toy_result
from memloss.trainer.experiments.toy.run import _event_metrics, pick_panel_epoch, run_toy


class _LinearToy(nn.Module):
    """z = x1 − 0.5: class 1 right of the vertical line x1 = 0.5 (a boundary whose answers we know)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x[:, :1] - 0.5
        return torch.cat([torch.zeros_like(z), z], dim=1)


@pytest.fixture(scope="module")
def quick_result() -> ToyResult:
    return run_toy(ToyConfig.quick(seed=0))  # TRADES, 2 seeds


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


def test_forgetting_metric_on_a_hand_made_case() -> None:
    # Previous-epoch adversarial examples; the boundary x1 = 0.5 misclassifies exactly points 1 and 2 of 4.
    adv_prev = torch.tensor([[0.2, 0.5], [0.6, 0.1], [0.4, 0.9], [0.9, 0.3]])
    y = torch.tensor([0, 0, 1, 1])
    assert error_rate(_LinearToy(), adv_prev, y).item() == pytest.approx(0.5)
    assert error_rate(_LinearToy(), adv_prev[[0, 3]], y[[0, 3]]).item() == 0.0
    # The previous model got points 0 and 1 wrong: point 1 stays wrong, 2 is forgotten, 0 is learned.
    got = _event_metrics(_LinearToy(), adv_prev, torch.tensor([True, True, False, False]), y)
    assert {k: v.item() for k, v in got.items()} == {"old_error": 0.5, "forgetting_events": 0.25,
                                                     "learning_events": 0.25}


def test_pick_panel_epoch_searches_the_second_half() -> None:
    # forgetting[i] belongs to epoch i + 2; the early peak (epoch 2) is outside the searched half.
    assert pick_panel_epoch([0.9, 0.1, 0.2, 0.4, 0.5, 0.4], panel_from=0.5) == 6
    assert pick_panel_epoch([0.9, 0.1, 0.2, 0.4, 0.3, 0.4], panel_from=0.5) == 5  # earliest on a tie
    assert pick_panel_epoch([0.9, 0.1, 0.2, 0.4], panel_from=0.0) == 2


@pytest.mark.parametrize(
    "kwargs", [{"epochs": 0}, {"epochs": 1}, {"eps": 0.0}, {"eps": 0.6}, {"lr": -1.0}, {"batch_size": 0},
               {"momentum": 1.0}, {"beta_prime": -1.0}, {"panel_from": 1.0}, {"grid": 1}, {"base": "mart"},
               {"seeds": 0}, {"beta": -1.0}],
)
def test_config_rejects_impossible_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ToyConfigError) as err:
        ToyConfig(**kwargs)
    assert isinstance(err.value, MemlossError) and "\n" not in str(err.value)


def test_quick_run_values_and_panels(quick_result: ToyResult) -> None:
    cfg = quick_result.config
    assert list(quick_result.runs) == ["TRADES", "TRADES+MemLoss"]
    for traces in quick_result.runs.values():
        assert [t.seed for t in traces] == [0, 1]
        for run in traces:
            assert len(run.old_error) == len(run.forgetting_events) == len(run.learning_events) == cfg.epochs - 1
            assert len(run.clean_acc) == len(run.robust_acc) == len(run.own_error) == cfg.epochs
            for values in (run.old_error, run.forgetting_events, run.learning_events, run.own_error, run.clean_acc,
                           run.robust_acc):
                assert all(0.0 <= v <= 1.0 for v in values)
            assert all(f <= g for f, g in zip(run.forgetting_events, run.old_error))
            # old error(n) = own error(n−1) + forgetting(n) − learning(n): each point is counted once.
            for n in range(len(run.old_error)):
                expected = run.own_error[n] + run.forgetting_events[n] - run.learning_events[n]
                assert run.old_error[n] == pytest.approx(expected, abs=1e-6)
    base = quick_result.runs["TRADES"][0]
    panels = quick_result.panels
    assert panels.wrong.shape == (3, cfg.n_train)
    # Panel (c) is exactly the old-example error of the plotted epoch, panel (b) the own error.
    assert panels.wrong[2].mean() == pytest.approx(base.old_error[panels.epoch - 2])
    assert panels.wrong[1].mean() == pytest.approx(base.own_error[panels.epoch - 1])
    assert (abs(panels.adv_prev - panels.x) <= cfg.eps + 1e-6).all()
    summary = quick_result.summary()
    robust = [t.robust_acc[-1] for t in quick_result.runs["TRADES"]]
    assert summary["TRADES"]["final_robust_acc"][0] == pytest.approx(sum(robust) / 2)


def test_seeds_differ_and_the_run_is_deterministic(quick_result: ToyResult) -> None:
    again = run_toy(ToyConfig.quick(seed=1, seeds=1))  # seed 1 alone = the second seed of the 2-seed run
    assert {name: traces[0] for name, traces in again.runs.items()} == {
        name: traces[1] for name, traces in quick_result.runs.items()}
    first, second = quick_result.runs["TRADES"]
    assert first.robust_acc != second.robust_acc


def test_at_base_runs() -> None:
    result = run_toy(ToyConfig.quick(seed=0, base="at", seeds=1))
    assert list(result.runs) == ["AT", "AT+MemLoss"] and len(result.runs["AT"]) == 1


def test_plots_and_json_are_written(quick_result: ToyResult, tmp_path: Path) -> None:
    from memloss.trainer.experiments.toy.plot import plot_toy

    paths = plot_toy(quick_result, tmp_path / "figs")
    assert [p.name for p in paths] == ["toy_panels.png", "toy_clean_boundary.png", "toy_forgetting.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    saved = json.loads(save_toy_result(quick_result, tmp_path / "figs").read_text())
    assert saved["per_seed"]["TRADES"][1]["final_old_error"] == quick_result.runs["TRADES"][1].old_error[-1]
    assert saved["summary"]["TRADES+MemLoss"]["old_error"]["std"] >= 0
    assert saved["config"]["epochs"] == quick_result.config.epochs and saved["config"]["seeds"] == 2


def test_output_path_that_is_a_file_is_refused(quick_result: ToyResult, tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    with pytest.raises(ToyConfigError):
        save_toy_result(quick_result, blocker)
    assert blocker.read_text() == "keep me"


@pytest.mark.slow
def test_cli_quick_writes_json_and_pngs(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from memloss.cli.toy import toy

    app = typer.Typer()
    app.command("toy")(toy)
    app.callback()(lambda: None)
    result = CliRunner().invoke(app, ["toy", "--quick", "--seeds", "2", "--base", "at", "--out", str(tmp_path)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "AT+MemLoss" in result.output and "±" in result.output
    figures = {f"toy_{name}.{ext}" for name in ("panels", "clean_boundary", "forgetting") for ext in ("png", "pdf")}
    assert {p.name for p in tmp_path.iterdir()} == {"toy_result.json", *figures}
    assert "AT+MemLoss, seed 1: 12/12 epochs" in result.output  # plain progress lines when not a terminal
