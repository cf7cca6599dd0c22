"""The installed names: `import memloss` is the public API, the three folders are memloss.memstore/trainer/cli, and
nothing a research repository keeps in its working directory (a trainer.py, a cli.py, a package named trainer)
shadows them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import memloss

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_version_matches_the_installed_distribution() -> None:
    assert memloss.__version__ == metadata.version("memloss")
    script = Path(sys.executable).with_name("memloss")  # the console script next to the interpreter
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"memloss {memloss.__version__}"


def test_public_api_names_resolve() -> None:
    for name in memloss.__all__:
        assert getattr(memloss, name) is not None, name
    with pytest.raises(AttributeError):
        memloss.no_such_name  # noqa: B018


def test_the_three_packages_export_lazily_through_one_helper(tmp_path: Path) -> None:
    """memloss, memloss.memstore and memloss.trainer.data share memloss/_lazy.py: importing them loads neither torch
    nor zarr; a name resolves (under its exported name) on first access and is cached; unknown names fail."""
    code = ("import sys, memloss, memloss.memstore as m, memloss.trainer.data as d; "
            "light = not {'torch', 'zarr'} & set(sys.modules); "
            "assert 'labels_digest' in dir(d) and 'open_store' in dir(m) and 'fit' in dir(memloss); "
            "from memloss.memstore.spec import labels_sha256; "
            "assert d.labels_digest is labels_sha256 and d.__dict__['labels_digest'] is labels_sha256; "
            "print(light, hasattr(d, 'no_such_name'), m.__getattr__.__module__)")
    out = _python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "memloss._lazy"]


def test_every_package_folder_is_installed() -> None:
    """pyproject's explicit package list covers every folder with an __init__.py under the three top folders."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"memloss"} | {
        "memloss." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("memstore", "trainer", "cli") for p in (ROOT / top).rglob("__init__.py")
    }
    assert found == listed


def test_train_config_resolves_the_defaults_the_cli_uses() -> None:
    from memloss.trainer.config.defaults import resolve_config

    cfg = memloss.train_config(dataset="digits", k=3)
    assert cfg == resolve_config({"dataset": "digits", "k": 3})
    assert (cfg.threat.eps, cfg.data.batch_size, cfg.threat.step_size) == ("32/255", 64, "8/255")
    assert memloss.train_config(dataset="cifar100", k=0).method.beta == 6.0  # the paper's TRADES β on CIFAR-100


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    """`memloss --help` must start fast: neither `import memloss` nor the CLI app may load torch, zarr or ffcv."""
    code = ("import sys, memloss, memloss.cli.app; "
            "print(sorted(m for m in ('torch', 'zarr', 'ffcv', 'numpy', 'matplotlib') if m in sys.modules))")
    out = _python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _shadowing_workdir(tmp_path: Path) -> Path:
    """A research repository's working directory: trainer.py and cli.py scripts, and a trainer/ package that fails
    on import, so that picking any of them up instead of ours fails loudly."""
    work = tmp_path / "work"
    (work / "trainer").mkdir(parents=True)
    (work / "trainer.py").write_text("raise RuntimeError('the local trainer.py was imported')\n")
    (work / "cli.py").write_text("raise RuntimeError('the local cli.py was imported')\n")
    (work / "memstore.py").write_text("raise RuntimeError('the local memstore.py was imported')\n")
    return work


def test_a_fake_trainer_package_earlier_on_the_path_does_not_shadow_ours(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    (fake / "trainer").mkdir(parents=True)
    (fake / "trainer" / "__init__.py").write_text("raise RuntimeError('the fake trainer package was imported')\n")
    code = "import memloss.trainer.training.fit as f, memloss.cli.app; print(f.__file__)"
    out = _python(code, tmp_path, env={"PYTHONPATH": str(fake)})
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == ROOT / "trainer" / "training" / "fit.py"


@pytest.mark.slow
def test_api_trains_and_evaluates_from_a_directory_with_its_own_trainer_py(tmp_path: Path, data_dir: Path) -> None:
    work = _shadowing_workdir(tmp_path)
    code = (
        "import memloss\n"
        f"cfg = memloss.train_config(dataset='digits', k=1, epochs=1, eval_n=32, out='run', data_dir={str(data_dir)!r})\n"
        "run = memloss.fit(cfg, quiet=True)\n"
        f"res = memloss.evaluate(run.run_dir, attacks='pgd20', n=16, data_dir={str(data_dir)!r})\n"
        "print(len(run.records), res.n, 0 <= res.attacks[0].robust_accuracy <= res.clean_accuracy)\n"
    )
    out = _python(code, work)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "16", "True"]
    assert (work / "run" / "best.safetensors").is_file()
