"""Evaluation's daily-loop additions: AutoAttack's single attacks and rand version, and progress without a
terminal (sub-attack, points, running robust accuracy) in 80 columns."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from memloss.cli.errors import one_line_errors
from memloss.cli.evaluate import evaluate as evaluate_command
from memloss.trainer.evaluation.results import EvalConfig
from memloss.trainer.evaluation.run import evaluate

N_AA = 6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """best.safetensors of 2 epochs of TRADES on digits (clean ≈ 90 %, robust well above 0)."""
    import memloss

    out = tmp_path_factory.mktemp("digits") / "run"
    cfg = memloss.train_config(dataset="digits", k=0, epochs=2, eval_n=32, out=str(out), data_dir=str(data_dir))
    return memloss.fit(cfg, quiet=True, threads=1).run_dir / "best.safetensors"


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("evaluate")(one_line_errors(evaluate_command))
    app.command("noop")(lambda: None)
    return app


@pytest.mark.slow
def test_single_autoattack_attacks_keep_the_standard_settings(checkpoint: Path, data_dir: Path) -> None:
    from memloss.trainer.methods.eval_attacks import parse_attacks

    assert [str(a) for a in parse_attacks("all")] == ["aa", "pgd+", "cw", "pgd20"]
    cfg = EvalConfig(checkpoint, attacks="aa,apgd-ce", n=N_AA, batch_size=N_AA, seed=0, device="cpu", threads=1,
                     data_dir=data_dir)
    aa, apgd_ce = evaluate(cfg).attacks
    # AutoAttack's first sub-attack is apgd-ce with the same settings and seed: what survives aa survives it alone.
    assert aa.name == "aa" and not (aa.robust & ~apgd_ce.robust).any() and apgd_ce.robust.any()
    assert (apgd_ce.params["version"], apgd_ce.params["attacks"]) == ("standard", ["apgd-ce"])
    assert aa.params["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]


@pytest.mark.heavy
def test_the_rand_version_runs_its_two_attacks(checkpoint: Path, data_dir: Path) -> None:
    """20 EOT iterations per step make it slow on a CPU: outside the default run."""
    rand = evaluate(EvalConfig(checkpoint, attacks="aa-rand", n=2, seed=0, device="cpu", threads=1,
                               data_dir=data_dir)).attacks[0]
    assert (rand.params["version"], rand.params["attacks"]) == ("rand", ["apgd-ce", "apgd-dlr"])
    assert rand.seconds > 0 and rand.max_perturbation <= 32 / 255 + 1e-6


@pytest.mark.slow
def test_cli_progress_without_a_terminal_names_subattack_points_and_accuracy(checkpoint: Path,
                                                                           data_dir: Path) -> None:
    args = ["evaluate", str(checkpoint), "--attacks", "apgd-t,pgd20", "--n", "8", "--batch-size", "4",
            "--threads", "1", "--data-dir", str(data_dir)]
    result = CliRunner().invoke(cli_app(), args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "apgd-t: started, 8 points" in result.output and "pgd20: started, 8 points" in result.output
    assert "apgd-t: 8/8 points  robust" in result.output and "threads: 1 (given)" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80 and "…" not in result.output
    assert "\x1b[" not in result.output  # plain text, no terminal control codes
