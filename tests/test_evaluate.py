"""memloss evaluate: attack bounds, the threat model, AutoAttack parity, bad input, resume, sweeps and the CLI, on a
small CNN trained for a few seconds with PGD-AT on digits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
from typer.testing import CliRunner

from memloss.cli.errors import one_line_errors
from memloss.cli.evaluate import evaluate as evaluate_command
from memloss.cli.evaluate import export as export_command
from memloss.errors import MemlossError
from memloss.trainer.data.registry import dataset_info
from memloss.trainer.data.sources import load_tensors
from memloss.trainer.evaluation.results import EvalConfig, EvalResult
from memloss.trainer.evaluation.run import clean_pass, evaluate
from memloss.trainer.evaluation.sweep import SweepKind, SweepSpec, parse_sweep
from memloss.trainer.methods.eval_attacks import ATTACKS, ThreatModel, pgd_ce_spec, run_attack
from memloss.trainer.methods.pgd import pgd
from memloss.trainer.methods.threat import PGDConfig
from memloss.trainer.models.files import load_model, save_model
from memloss.trainer.models.registry import build_model

EPS = "32/255"  # the digits default of trainer/config/defaults.py
N_AA = 32  # AutoAttack runs once per batch: one batch of 32 points keeps it to seconds


def train_digits_model() -> torch.nn.Module:
    """small_cnn after 2 epochs of PGD-AT (2 steps) on the digits training split: clean ≈ 95 %, PGD ≈ 60-70 %."""
    torch.manual_seed(0)
    x, y = load_tensors("digits", "train")
    x = x.float() / 255
    model = build_model("small_cnn", dataset_info("digits"))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    attack = PGDConfig(norm="Linf", eps=32 / 255, step_size=16 / 255, steps=2, start="uniform")
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        for idx in torch.randperm(len(y), generator=generator).split(128):
            x_adv = pgd(model, x[idx], y[idx], attack, "ce", generator=generator)
            model.train()
            loss = F.cross_entropy(model(x_adv), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # AutoAttack's many tiny steps run ~10x slower with 2 threads when other tests share the 2 cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "digits.safetensors"
    meta = {"arch": "small_cnn", "dataset": "digits", "num_classes": "10", "shape": "1,8,8", "norm": "Linf",
            "eps": EPS, "method": "at"}
    save_model(path, train_digits_model(), meta)
    return path


@pytest.fixture(scope="module")
def full_run(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[EvalResult, Path]:
    out = tmp_path_factory.mktemp("eval") / "results.json"
    cfg = EvalConfig(checkpoint, attacks=("all",), n=N_AA, batch_size=N_AA, seed=0, device="cpu", out=out)
    return evaluate(cfg), out


def points(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_tensors("digits", "test", n=n)
    return x.float() / 255, y


@pytest.mark.slow
def test_worst_case_below_every_attack_below_clean(full_run: tuple[EvalResult, Path]) -> None:
    result, _ = full_run
    assert [a.name for a in result.attacks] == ["aa", "pgd+", "cw", "pgd20"]
    assert 0.5 < result.clean_accuracy <= 1
    for attack in result.attacks:
        assert not (attack.robust & ~result.clean_correct).any()
        assert not (result.worst_case & ~attack.robust).any()
        assert result.worst_case_accuracy <= attack.robust_accuracy <= result.clean_accuracy
    assert result.worst_case_accuracy < result.clean_accuracy  # the attacks do break some points
    assert result.worst_case_accuracy > 0  # and the PGD-AT model keeps some


@pytest.mark.slow
def test_reported_perturbations_stay_in_threat_model(full_run: tuple[EvalResult, Path]) -> None:
    result, _ = full_run
    for attack in result.attacks:
        assert attack.max_perturbation <= 32 / 255 + 1e-6
        assert 0 <= attack.x_min and attack.x_max <= 1


@pytest.mark.slow
def test_autoattack_number_is_the_package_number(full_run: tuple[EvalResult, Path], checkpoint: Path) -> None:
    from pyautoattack import AutoAttack

    result, _ = full_run
    model, _ = load_model(checkpoint)
    x, y = points(N_AA)
    adversary = AutoAttack(model, norm="Linf", eps=32 / 255, version="standard", seed=0)
    x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=N_AA)
    assert np.array_equal(result.attacks[0].robust, (y_adv == y).numpy())
    assert (x_adv - x).abs().max() <= 32 / 255 + 1e-6


@pytest.mark.slow
def test_results_json_records_the_run(full_run: tuple[EvalResult, Path], checkpoint: Path) -> None:
    result, out = full_run
    saved = json.loads(out.read_text())
    assert saved["eps"] == EPS and saved["norm"] == "Linf" and saved["n"] == N_AA and saved["seed"] == 0
    assert saved["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert saved["versions"]["pyautoattack"] == "0.2.0" and "torch" in saved["versions"]
    assert saved["worst_case_accuracy"] == result.worst_case_accuracy
    by_name = {a["name"]: a for a in saved["attacks"]}
    assert by_name["pgd+"]["params"]["restarts"] == 5 and by_name["pgd+"]["params"]["steps"] == 40
    assert by_name["aa"]["params"]["package"] == "pyautoattack"
    assert all(a["seconds"] > 0 for a in saved["attacks"])
    log = Path(saved["files"]["aa_log"])
    assert log == out.with_name("results.aa.log") and "apgd-ce" in log.read_text()
    assert not out.with_name("results.state.json").exists()  # dropped once the results are written


@pytest.mark.parametrize("name", ["pgd+", "cw", "pgd20"])
@pytest.mark.parametrize("norm, eps", [("Linf", EPS), ("L2", "0.5")])
def test_adversarial_points_in_ball_and_box(checkpoint: Path, name: str, norm: str, eps: str) -> None:
    model, _ = load_model(checkpoint)
    x, y = points(16)
    spec = ATTACKS[name](ThreatModel(norm, eps))  # type: ignore[index]
    x_adv, robust = run_attack(spec, model, x, y, seed=0)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    assert (size <= float(ThreatModel(norm, eps).eps) + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(robust, model(x_adv).argmax(1) == y)


def test_more_restarts_never_more_robust(checkpoint: Path) -> None:
    model, _ = load_model(checkpoint)
    x, y = points(64)
    threat = ThreatModel("Linf", EPS)
    one = pgd_ce_spec("pgd+", threat, restarts=1)
    five = pgd_ce_spec("pgd+", threat, restarts=5)
    _, robust_one = run_attack(one, model, x, y, seed=3)
    _, robust_five = run_attack(five, model, x, y, seed=3)
    assert not (robust_five & ~robust_one).any()
    assert robust_five.sum() <= robust_one.sum()


def test_restart_sweep_is_monotone_and_plotted(checkpoint: Path, tmp_path: Path) -> None:
    cfg = EvalConfig(checkpoint, attacks=(), sweeps=(parse_sweep("restarts=1,3"),), n=48, batch_size=48,
                     device="cpu", out=tmp_path / "r.json", plot=tmp_path / "sweep.png")
    result = evaluate(cfg)
    one, three = result.sweeps["restarts"]
    assert (one.params["restarts"], three.params["restarts"]) == (1, 3)
    assert not (three.robust & ~one.robust).any()
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "r.json").read_text())["sweeps"]["restarts"][1]["name"] == "pgd-ce restarts=3"


def test_threat_model_override_is_echoed(checkpoint: Path) -> None:
    result = evaluate(EvalConfig(checkpoint, attacks=("pgd20",), n=16, eps="0.05", norm="L2", device="cpu"))
    assert result.threat.eps_text == "0.05" and result.threat.norm == "L2"
    assert result.attacks[0].params["eps"] == "0.05"
    assert result.attacks[0].max_perturbation <= 0.05 + 1e-6


def test_run_directory_uses_best_weights(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "best.safetensors").write_bytes(checkpoint.read_bytes())
    result = evaluate(EvalConfig(tmp_path, attacks=("pgd20",), n=8, device="cpu"))
    assert result.checkpoint == str(tmp_path / "best.safetensors")


def test_resume_after_interrupt_matches_uninterrupted_run(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cfg = EvalConfig(checkpoint, attacks=("pgd20", "cw"), n=64, batch_size=16, seed=1, device="cpu", out=out)

    class StopAfter:
        """Interrupts once `batches` whole batches of 16 points are done (the bar also moves inside a batch)."""

        def __init__(self, batches: int | None) -> None:
            self.stop_at, self.done, self.begun = None if batches is None else 16.0 * batches, 0.0, {}

        def begin(self, task: str, total: float, completed: float = 0, unit: str = "batches") -> None:
            self.begun[task] = completed

        def advance(self, task: str, amount: float = 1) -> None:
            self.done += amount
            if self.stop_at is not None and self.done > self.stop_at - 1e-6:
                raise KeyboardInterrupt

        def status(self, task: str, text: str, *, log: bool = True) -> None:
            pass

        def end(self, task: str) -> None:
            pass

    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg, StopAfter(5))
    state = out.with_name("results.state.json")
    assert state.exists() and not out.exists()
    before = state.read_bytes()
    with pytest.raises(MemlossError, match="other settings.*seed") as err:
        evaluate(EvalConfig(checkpoint, attacks=("pgd20", "cw"), n=64, batch_size=16, seed=2, out=out))
    assert "\n" not in str(err.value) and state.read_bytes() == before  # refused, state untouched

    watcher = StopAfter(None)
    resumed = evaluate(cfg, watcher)
    assert watcher.begun == {"pgd20": 64, "cw": 16} and watcher.done == pytest.approx(48)  # points restored
    assert resumed.resumed_batches == 5 and not state.exists() and out.exists()
    fresh = evaluate(EvalConfig(checkpoint, attacks=("pgd20", "cw"), n=64, batch_size=16, seed=1, device="cpu"))
    for a, b in zip(resumed.attacks, fresh.attacks):
        assert np.array_equal(a.robust, b.robust)


def test_probability_outputs_and_dead_gradients_are_flagged(checkpoint: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = load_model(checkpoint)
    x, y = load_tensors("digits", "test", n=16)
    parts = [slice(0, 8), slice(8, 16)]
    correct, warnings = clean_pass(model, x, y, parts, torch.device("cpu"))
    assert warnings == [] and correct.shape == (16,)
    softmax = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()
    _, warnings = clean_pass(softmax, x, y, parts, torch.device("cpu"))
    assert any("probabilities" in w for w in warnings)
    # A model that rounds its input has zero input gradients everywhere: gradient masking.
    rounding = torch.nn.Sequential(RoundInput(), model).eval()
    monkeypatch.setattr("memloss.trainer.evaluation.run.load_eval_model", lambda path, device: rounding)
    result = evaluate(EvalConfig(checkpoint, attacks=("pgd20",), n=16, device="cpu"))
    assert any("gradients vanish on 16 of 16" in w for w in result.warnings)
    assert result.to_dict()["suspicious"] is True


class RoundInput(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


@pytest.mark.parametrize("change, match", [
    ({"attacks": ("aa", "fgsm")}, "unknown attack 'fgsm'"),
    ({"attacks": ("pgd20", "pgd20")}, "listed twice"),
    ({"eps": "0"}, "eps must be > 0"),
    ({"eps": "-8/255"}, "eps must be > 0"),
    ({"eps": "eight"}, "eps must be a number"),
    ({"norm": "L1"}, "unknown norm"),
    ({"n": 0}, "--n must be"),
    ({"batch_size": 0}, "--batch-size"),
    ({"attacks": ()}, "nothing to run"),
    ({"plot": Path("x.png")}, "--plot draws the --sweep"),
])
def test_bad_config_is_one_line_error(checkpoint: Path, change: dict, match: str) -> None:
    with pytest.raises(MemlossError, match=match) as err:
        EvalConfig(**{"checkpoint": checkpoint, "attacks": ("pgd20",), **change})
    assert "\n" not in str(err.value)


def test_bad_files_and_sizes_are_one_line_errors(checkpoint: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    text = tmp_path / "notes.safetensors"
    text.write_text("not a model")
    cases = [(tmp_path / "missing.safetensors", {}, "does not exist"), (tmp_path, {}, "does not exist"),
             (foreign, {}, "not a memloss model"), (text, {}, "not a readable safetensors"),
             (checkpoint, {"n": 361}, "larger than the digits test set \\(360")]
    for path, change, match in cases:
        with pytest.raises(MemlossError, match=match) as err:
            evaluate(EvalConfig(path, attacks=("pgd20",), device="cpu", **change))
        assert "\n" not in str(err.value)
    with pytest.raises(MemlossError, match="--sweep must look like"):
        parse_sweep("iterations=5")
    with pytest.raises(MemlossError, match="between 1 and"):
        SweepSpec(SweepKind.STEPS, (0, 10))


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("evaluate")(one_line_errors(evaluate_command))
    app.command("export")(one_line_errors(export_command))
    return app


def test_cli_evaluate_prints_table_and_writes_json(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "cli.json"  # the folder is created
    result = CliRunner().invoke(cli_app(), ["evaluate", str(checkpoint), "--attacks", "pgd20,cw", "--n", "20",
                                            "--batch-size", "10", "--eps", "8/255", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("clean", "pgd20", "cw", "worst case", "ε = 8/255", "pgd20: 20/20 points  robust"):
        assert text in result.output
    assert json.loads(out.read_text())["eps"] == "8/255"


def test_cli_sweep_and_errors(checkpoint: Path, tmp_path: Path) -> None:
    runner, app = CliRunner(), cli_app()
    result = runner.invoke(app, ["evaluate", str(checkpoint), "--sweep", "steps=2,5", "--n", "8",
                                 "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert "pgd-ce steps=5" in result.output and (tmp_path / "p.png").exists()
    for args, message in ([["--attacks", "bim"], "unknown attack"], [["--eps", "0"], "eps must be > 0"],
                          [["--n", "100000"], "larger than the digits test set"]):
        result = runner.invoke(app, ["evaluate", str(checkpoint), *args])
        assert result.exit_code == 2 and message in result.output
        assert len(result.output.strip().splitlines()) == 1
    help_text = runner.invoke(app, ["evaluate", "--help"]).output
    assert "--attacks" in help_text and "--sweep" in help_text and "worst case" in help_text


def test_autoattack_log_goes_to_file_and_warnings_are_kept(tmp_path: Path) -> None:
    import logging

    from memloss.trainer.evaluation.aa_log import autoattack_log

    logger = logging.getLogger("auto-attack")
    with autoattack_log(tmp_path / "sub" / "r.aa.log") as warnings:
        logger.debug("apgd-ce - 1/1 - 3 out of 8 successfully perturbed")
        logger.warning("it seems to be a randomized defense!")
        logger.warning("it seems to be a randomized defense!")
    logger.warning("after the run: neither kept nor written")
    assert warnings == ["AutoAttack: it seems to be a randomized defense!"]
    text = (tmp_path / "sub" / "r.aa.log").read_text()
    assert "successfully perturbed" in text and "after the run" not in text
    assert not logger.handlers

