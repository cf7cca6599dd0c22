"""`--threads`: parsing, the measured choice (a probe timed at each candidate count, the fewest threads within 10 %
of the fastest), $OMP_NUM_THREADS winning over the probe, and the setting restored afterwards."""

from __future__ import annotations

import time

import pytest
import torch
from typer.testing import CliRunner

from memloss.cli.app import app
from memloss.errors import ConfigError
from memloss.trainer.common.threads import (
    candidates,
    choose_threads,
    fastest,
    model_probe,
    parse_threads,
    using_threads,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize("bad", ["0", "-2", "many", 0, "1.5"])
def test_bad_thread_counts_are_one_line_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="--threads") as err:
        parse_threads(bad)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_parse_keeps_auto_none_and_numbers() -> None:
    assert [parse_threads(v) for v in ("auto", None, "3", 2)] == ["auto", None, 3, 2]


def test_candidates_double_up_to_the_usable_cores() -> None:
    assert candidates(1) == [1] and candidates(2) == [1, 2] and candidates(6) == [1, 2, 4, 6]


def test_fastest_prefers_fewer_threads_within_ten_percent() -> None:
    assert fastest({1: 1.05, 2: 1.0, 4: 0.99}) == 1
    assert fastest({1: 2.0, 2: 1.0, 4: 0.95}) == 2


def test_auto_measures_and_picks_the_fastest_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("memloss.trainer.common.threads.usable_cores", lambda: 4)
    seen: list[int] = []

    def probe() -> None:  # gets slower with more threads, as on a busy machine
        seen.append(torch.get_num_threads())
        time.sleep(0.002 * torch.get_num_threads())

    before = torch.get_num_threads()
    choice = choose_threads("auto", probe, CPU)
    assert choice.threads == 1 and choice.how == "measured" and sorted(choice.timings) == [1, 2, 4]
    assert set(seen) == {1, 2, 4} and torch.get_num_threads() == before  # measuring does not apply the choice
    assert "measured: 1 →" in choice.describe()


def test_omp_num_threads_wins_over_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    choice = choose_threads("auto", lambda: pytest.fail("the probe must not run"), CPU)
    assert (choice.threads, choice.how) == (3, "OMP_NUM_THREADS")
    assert choose_threads(2, None, CPU).threads == 2 and choose_threads(None, None, CPU).how == "unchanged"


def test_using_threads_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with using_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_model_probe_changes_neither_grads_nor_batchnorm_statistics() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.LazyLinear(3)).train()
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 3, (8,))
    model(x)  # materialize the lazy layer
    stats = model[1].running_mean.clone()
    model_probe(model, x, y)()
    assert model.training and torch.equal(model[1].running_mean, stats)
    assert all(p.grad is None for p in model.parameters())


def test_cli_refuses_a_bad_thread_count() -> None:
    result = CliRunner().invoke(app, ["toy", "--quick", "--threads", "0"])
    assert result.exit_code == 2 and "--threads must be ≥ 1" in result.output
