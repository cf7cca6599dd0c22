"""The catalogue of bad inputs that tests/test_bad_inputs.py runs through the real CLI: every one must end with exit
code 2, one line on stderr and no traceback, and leave every file that existed before exactly as it was.

A case is (id, argv template, expected text of the error, optional set-up). Templates name the fixture's paths:
{data} the data directory, {run} a finished run, {part} a run stopped after epoch 1 of 2, {store} a store with
committed epochs, {ckpt} a model file, {txt} a text file, {bin} a file that is not UTF-8, {dir} an empty
directory, {new} a path that does not exist yet (a fresh run directory), {case} a folder for the case's own files,
{proc} a location nothing can be written to. A set-up gets the case folder and the world and returns more names
(usually a copy of a run or store that it damages first).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TINY_OPTIONS = {"dataset": "synthetic", "n": 96, "resolution": 8, "batch_size": 32, "eval_n": 16, "attack_steps": 1,
                "epochs": 2}
TINY = [*(a for k, v in TINY_OPTIONS.items() for a in (f"--{k.replace('_', '-')}", str(v))), "--data-dir", "{data}"]
TRAIN = ["train", *TINY, "--out", "{new}"]
Setup = Callable[[Path, dict[str, str]], dict[str, str]]


@dataclass(frozen=True)
class Case:
    """`early`: refused from the options alone, before torch or the data are loaded (bench/refusals.py times these;
    they may use only {new}, {case}, {txt}, {dir}, {data}, {proc} and their own set-up)."""

    id: str
    argv: list[str]
    expect: str
    setup: Setup | None = None
    early: bool = False


def _copy(name: str, key: str) -> Setup:
    def setup(case: Path, world: dict[str, str]) -> dict[str, str]:
        shutil.copytree(world[key], case / name, symlinks=True)
        return {"copy": str(case / name)}
    return setup


def _then(first: Setup, edit: Callable[[Path], None]) -> Setup:
    def setup(case: Path, world: dict[str, str]) -> dict[str, str]:
        names = first(case, world)
        edit(Path(names["copy"]))
        return names
    return setup


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        target = root / rel
        target.write_bytes(data.encode() if isinstance(data, str) else data)
    return edit


def _edit_json(rel: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        doc = json.loads((root / rel).read_text())
        change(doc)
        (root / rel).write_text(json.dumps(doc))
    return edit


def _toml(text: str | bytes) -> Setup:
    def setup(case: Path, world: dict[str, str]) -> dict[str, str]:
        path = case / "c.toml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return {"toml": str(path)}
    return setup


def _flip_chunk(root: Path) -> None:
    chunk = next(p for p in sorted((root / "codes" / "c").rglob("*")) if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def _drop_chunk(root: Path) -> None:
    next(p for p in sorted((root / "info" / "c").rglob("*")) if p.is_file()).unlink()


def _set_cfg(section: str, key: str, value: object) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        doc["config"][section][key] = value
    return change


def _no_store(root: Path) -> None:
    shutil.rmtree(root / "memory.zarr")


def _foreign(case: Path, world: dict[str, str]) -> dict[str, str]:
    (case / "foreign").mkdir()
    (case / "foreign" / "notes.md").write_text("mine")
    return {}


def _lock_store(case: Path, world: dict[str, str]) -> dict[str, str]:
    from memloss.memstore.store import open_store

    names = _copy("s.zarr", "store")(case, world)
    world["_held"] = open_store(names["copy"], owner="runs/other")  # closed by the test after the case
    return names


PART = "{copy}"
CASES: list[Case] = [
    # ---- option values out of range or of the wrong kind ----------------------------------------------------------
    Case("dataset-unknown", ["train", "--dataset", "imagenet", "--out", "{new}"], "unknown dataset 'imagenet'"),
    Case("model-unknown", [*TRAIN, "--model", "vit"], "unknown architecture"),
    Case("k-negative", [*TRAIN, "--k", "-1"], "k must be ≥ 0"),
    Case("k-float", [*TRAIN, "--k", "1.5"], "Invalid value for '--k'"),
    Case("epochs-word", [*TRAIN, "--epochs", "many"], "Invalid value for '--epochs'"),
    Case("option-unknown", [*TRAIN, "--learning-rate", "0.1"], "No such option"),
    Case("command-unknown", ["trian"], "No such command"),
    Case("eps-zero", [*TRAIN, "--eps", "0"], "eps must be > 0"),
    Case("eps-255-scale", [*TRAIN, "--eps", "8"], "did you mean 8/255?"),
    Case("eps-word", [*TRAIN, "--eps", "eight"], "eps must be a number or a fraction"),
    Case("eps-div-zero", [*TRAIN, "--eps", "1/0"], "eps must be a number or a fraction"),
    Case("eps-nan", [*TRAIN, "--eps", "nan"], "eps must be a number or a fraction"),
    Case("step-above-eps", [*TRAIN, "--attack-steps", "3", "--eps", "2/255", "--step-size", "4/255"],
         "step_size 4/255 is larger than eps"),
    Case("step-above-2eps", [*TRAIN, "--eps", "2/255", "--step-size", "5/255"], "larger than 2·eps"),
    Case("step-zero", [*TRAIN, "--step-size", "0"], "step_size must be > 0"),
    Case("epochs-zero", [*TRAIN, "--epochs", "0"], "epochs must be ≥ 1"),
    Case("beta-prime-nan", [*TRAIN, "--beta-prime", "nan"], "beta_prime must be a finite number"),
    Case("beta-prime-word", [*TRAIN, "--beta-prime", "two"], "--beta-prime must be numbers"),
    Case("beta-prime-too-many", [*TRAIN, "--k", "1", "--beta-prime", "2,1"], "give at most k values"),
    Case("beta-negative", [*TRAIN, "--beta", "-1"], "beta must be ≥ 0"),
    Case("beta-nan", [*TRAIN, "--beta", "nan"], "beta must be a finite number"),
    Case("gamma-inf", [*TRAIN, "--gamma", "inf"], "gamma must be a finite number"),
    Case("lr-zero", [*TRAIN, "--lr", "0"], "lr must be > 0"),
    Case("lr-nan", [*TRAIN, "--lr", "nan"], "lr must be a finite number"),
    Case("weight-decay-negative", [*TRAIN, "--weight-decay", "-0.0005"], "weight_decay must be ≥ 0"),
    Case("weight-decay-nan", [*TRAIN, "--weight-decay", "nan"], "weight_decay must be a finite number"),
    Case("seed-negative", [*TRAIN, "--seed", "-1"], "seed must be in [0, 4294967295]"),
    Case("seed-huge", [*TRAIN, "--seed", str(2**70)], "seed must be in [0, 4294967295]"),
    Case("batch-size-zero", [*TRAIN, "--batch-size", "0"], "batch_size must be ≥ 1"),
    Case("attack-steps-zero", [*TRAIN, "--attack-steps", "0"], "attack_steps must be ≥ 1"),
    Case("aux-fraction-without-aux-data", [*TRAIN, "--aux-fraction", "0.5"], "--aux-fraction needs generated data"),
    Case("aux-fraction-one", [*TRAIN, "--aux-data", "{txt}", "--aux-fraction", "1"],
         "must leave both generated and base samples"),
    Case("aux-take-zero", [*TRAIN, "--aux-data", "{txt}", "--aux-take", "0"], "--aux-take must be ≥ 1"),
    Case("aux-data-missing", [*TRAIN, "--aux-data", "{case}/gen.npz"], "gen.npz does not exist"),
    Case("aux-data-not-npz", [*TRAIN, "--aux-data", "{txt}"], "is not a readable .npz"),
    Case("aux-data-torchrun-split", [*TRAIN, "--aux-data", "{txt}", "--aux-fraction", "0.97", "--nproc-per-node", "2"],
         "a batch of 1 base + 31 generated samples cannot give each of the 2 processes both"),
    Case("budget-word", [*TRAIN, "--memory-budget", "lots"], "not a size"),
    Case("budget-tiny", [*TRAIN, "--memory-budget", "10"], "memory_budget must be ≥ 1 MiB"),
    Case("eval-n-zero", [*TRAIN, "--eval-n", "0"], "eval_n must be ≥ 1"),
    Case("eval-n-too-many", ["train", "--dataset", "digits", "--eval-n", "100000", "--data-dir", "{data}",
                             "--out", "{new}"], "--eval-n 100000: n must be ≥ 1 and ≤ 360"),
    Case("too-few-steps", [*TRAIN, "--n", "64"], "warm-up of exactly one step"),
    Case("n-above-split", ["train", "--dataset", "digits", "--n", "100000", "--data-dir", "{data}", "--out", "{new}"],
         "100000"),
    Case("resolution-not-synthetic", ["train", "--dataset", "cifar10", "--resolution", "16", "--out", "{new}"],
         "--resolution applies to the synthetic dataset only"),
    Case("n-too-small", [*TRAIN, "--n", "1"], "n must be ≥ 2"),
    Case("resolution-too-small", [*TRAIN, "--resolution", "2"], "resolution must be ≥ 4"),
    Case("method-unknown", [*TRAIN, "--method", "pgd"], "unknown method 'pgd'"),
    Case("variant-unknown", [*TRAIN, "--memloss-variant", "v9"], "unknown memloss variant"),
    Case("reg-unknown", [*TRAIN, "--reg", "l2"], "unknown reg"),
    Case("view-unknown", [*TRAIN, "--memory-view", "sideways"], "unknown memory view"),
    Case("norm-unknown", [*TRAIN, "--norm", "L3"], "unknown norm"),
    Case("standard-with-memory", [*TRAIN, "--method", "standard", "--k", "1"], "makes no adversarial examples"),
    Case("threads-word", [*TRAIN, "--threads", "many"], "--threads must be a positive integer or auto"),
    Case("threads-zero", [*TRAIN, "--threads", "0"], "--threads must be ≥ 1"),
    Case("log-every-negative", [*TRAIN, "--log-every", "-1"], "--log-every must be ≥ 0"),
    Case("nproc-per-node-zero", [*TRAIN, "--nproc-per-node", "0"], "--nproc-per-node must be ≥ 1"),
    # Refused once by the launching process, before torchrun starts any rank (trainer/training/preflight.py).
    Case("nproc-batch-not-divisible", [*TRAIN, "--nproc-per-node", "3"], "must be divisible by the 3 processes"),
    Case("nproc-out-holds-a-run", ["train", *TINY, "--out", "{run}", "--nproc-per-node", "2"], "already holds a run"),
    Case("nproc-resume-other-world", ["train", "--resume", "{part}", "--nproc-per-node", "2"],
         "trained with 1 process(es) and is resumed with 2"),
    Case("nproc-memory-store", [*TRAIN, "--store", "memory://x", "--nproc-per-node", "2"], "lives inside one process"),
    Case("ema-above-one", [*TRAIN, "--ema", "2"], "ema (the averaging decay) must be in (0, 1)"),
    Case("label-smoothing-one", [*TRAIN, "--label-smoothing", "1"], "label_smoothing must be in [0, 1)"),
    Case("label-smoothing-mart", [*TRAIN, "--method", "mart", "--label-smoothing", "0.1"], "has none to smooth"),
    Case("device-unknown", [*TRAIN, "--device", "tpu"], "unknown --device 'tpu'"),
    Case("device-index", [*TRAIN, "--device", "cuda:99"], "cuda:99"),
    # ---- the HAT helper -------------------------------------------------------------------------------------------
    Case("hat-no-helper", [*TRAIN, "--method", "hat"], "--method hat needs --helper"),
    Case("hat-helper-missing", [*TRAIN, "--method", "hat", "--helper", "{case}/none.safetensors"], "does not exist"),
    Case("hat-helper-not-a-model", [*TRAIN, "--method", "hat", "--helper", "{txt}"], "not a readable safetensors"),
    Case("hat-helper-other-dataset", ["train", "--dataset", "digits", "--epochs", "1", "--eval-n", "16",
                                      "--data-dir", "{data}", "--method", "hat", "--helper", "{ckpt}",
                                      "--out", "{new}"], "was trained with dataset synthetic"),
    Case("hat-helper-other-shape", [*TRAIN, "--resolution", "12", "--method", "hat", "--helper", "{ckpt}"],
         "input shape (3, 8, 8)"),
    # ---- paths of the wrong kind ----------------------------------------------------------------------------------
    Case("out-is-a-file", ["train", *TINY, "--out", "{txt}"], "is a file, not a directory"),
    Case("out-below-a-file", ["train", *TINY, "--out", "{txt}/run"], "is a file, not a directory"),
    Case("out-holds-a-run", ["train", *TINY, "--out", "{run}"], "already holds a run"),
    Case("out-not-creatable", ["train", *TINY, "--out", "{proc}/run"], "cannot create the run directory"),
    Case("store-is-a-file", [*TRAIN, "--store", "{txt}"], "is a file, not a memory store directory"),
    Case("store-foreign", [*TRAIN, "--store", "{case}/foreign"], "not a memloss store", _foreign),
    Case("store-other-run", [*TRAIN, "--k", "2", "--store", "{store}"], "does not match this run: k expected 2"),
    Case("store-url-unknown", [*TRAIN, "--store", "nosuch://bucket/x"], "unknown storage scheme nosuch://"),
    Case("store-option-syntax", [*TRAIN, "--store", "memory://x", "--store-option", "endpoint_url"],
         "is not KEY=VALUE"),
    Case("store-option-without-url", [*TRAIN, "--store-option", "anon=true"], "no store URL"),
    Case("store-option-on-a-path", [*TRAIN, "--store", "{case}/s.zarr", "--store-option", "anon=true"],
         "apply to URLs such as s3://"),
    Case("store-s3-no-bucket", [*TRAIN, "--store", "s3:///x"], "names no bucket"),
    Case("store-read-only", [*TRAIN, "--store", "{proc}/m.zarr"], "cannot create the store directory"),
    Case("store-locked", [*TRAIN, "--store", PART], "is being written by host", _lock_store),
    Case("data-dir-is-a-file", ["train", *TINY[:-2], "--data-dir", "{txt}", "--out", "{new}"], "{txt}"),
    Case("config-missing", [*TRAIN, "--config", "{case}/none.toml"], "does not exist"),
    Case("config-directory", [*TRAIN, "--config", "{dir}"], "is a directory"),
    Case("config-not-utf8", [*TRAIN, "--config", "{bin}"], "is not UTF-8"),
    Case("config-not-toml", [*TRAIN, "--config", "{toml}"], "is not valid TOML", _toml("epochs = = 3")),
    Case("config-unknown-key", [*TRAIN, "--config", "{toml}"], "unknown option(s) epoch", _toml("epoch = 3")),
    Case("config-unknown-section", [*TRAIN, "--config", "{toml}"], "unknown option(s) model_cfg",
         _toml("[model_cfg]\nwidth = 3")),
    Case("config-float-for-int", [*TRAIN, "--config", "{toml}"], "k must be an integer, got 1.5", _toml("k = 1.5")),
    Case("config-string-for-int", [*TRAIN, "--config", "{toml}"], "k must be an integer, got the string 'two'",
         _toml('k = "two"')),
    Case("config-bool-for-int", [*TRAIN, "--config", "{toml}"], "k must be an integer, got True", _toml("k = true")),
    Case("config-list-for-float", [*TRAIN, "--config", "{toml}"], "lr must be a number", _toml("lr = [0.1]")),
    Case("config-float-budget", [*TRAIN, "--config", "{toml}"], "memory_budget must be an integer",
         _toml("memory_budget = 2.5e9")),
    Case("config-eps-255", [*TRAIN, "--config", "{toml}"], "did you mean 8/255?", _toml("eps = 8")),
    Case("config-empty-beta-prime", [*TRAIN, "--config", "{toml}"], "--beta-prime must be numbers",
         _toml("beta_prime = []")),
    Case("config-negative-seed", [*TRAIN, "--config", "{toml}"], "seed must be in", _toml("[run]\nseed = -5")),
    Case("config-negative-workers", [*TRAIN, "--config", "{toml}"], "num_workers must be ≥ 0",
         _toml("num_workers = -1")),
    Case("config-pct-start", [*TRAIN, "--config", "{toml}"], "pct_start must be", _toml("pct_start = 1.5")),
    # ---- damaged run directories and --resume ---------------------------------------------------------------------
    Case("resume-missing", ["train", "--resume", "{case}/none"], "no such run directory"),
    Case("resume-a-file", ["train", "--resume", "{txt}"], "is a file, not a directory"),
    Case("resume-not-a-run", ["train", "--resume", "{dir}"], "holds no run yet"),
    Case("resume-config-missing", ["train", "--resume", PART], "config.json is missing",
         _then(_copy("r", "part"), lambda root: (root / "config.json").unlink())),
    Case("resume-config-not-json", ["train", "--resume", PART], "config.json is corrupt",
         _then(_copy("r", "part"), _write("config.json", "{not json"))),
    Case("resume-config-not-a-record", ["train", "--resume", PART], "not a memloss run record",
         _then(_copy("r", "part"), _write("config.json", "[1, 2]"))),
    Case("resume-config-unknown-key", ["train", "--resume", PART], "unknown option(s) widen",
         _then(_copy("r", "part"), _edit_json("config.json", _set_cfg("optim", "widen", 2)))),
    Case("resume-config-edited", ["train", "--resume", PART], "config.json was edited after the run started: lr",
         _then(_copy("r", "part"), _edit_json("config.json", _set_cfg("optim", "lr", 0.5)))),
    Case("resume-changed-lr", ["train", "--resume", "{part}", "--lr", "0.5"], "refuses a changed config: lr"),
    Case("resume-longer", ["train", "--resume", "{run}", "--epochs", "4"], "the OneCycle schedule of this run ends"),
    Case("resume-other-store", ["train", "--resume", "{part}", "--store", "{case}/s.zarr"], "store (run:"),
    Case("resume-state-corrupt", ["train", "--resume", PART], "last.state.pt is not a memloss training state",
         _then(_copy("r", "part"), _write("last.state.pt", b"\x00garbage"))),
    Case("resume-metrics-corrupt", ["train", "--resume", PART], "metrics.jsonl line 1 is not an epoch record",
         _then(_copy("r", "part"), _write("metrics.jsonl", '{"epoch": 1\n'))),
    Case("resume-store-missing", ["train", "--resume", PART], "memory store", _then(_copy("r", "part"), _no_store)),
    Case("resume-store-damaged", ["train", "--resume", PART], "memloss repair-store",
         _then(_copy("r", "part"), lambda root: _drop_chunk(root / "memory.zarr"))),
    # ---- stores: inspect-store and repair-store -------------------------------------------------------------------
    Case("inspect-missing", ["inspect-store", "{case}/none.zarr"], "no memory store"),
    Case("inspect-a-file", ["inspect-store", "{txt}"], "is a file"),
    Case("inspect-foreign", ["inspect-store", "{dir}"], "no memory store at"),
    Case("inspect-corrupt-chunk", ["inspect-store", PART], "fails its CRC-32C checksum",
         _then(_copy("s.zarr", "store"), _flip_chunk)),
    Case("inspect-missing-chunk", ["inspect-store", PART], "is damaged: chunk info/c/",
         _then(_copy("s.zarr", "store"), _drop_chunk)),
    Case("inspect-corrupt-metadata", ["inspect-store", PART], "zarr.json is not valid JSON",
         _then(_copy("s.zarr", "store"), _write("zarr.json", "{"))),
    Case("inspect-plot-nowhere", ["inspect-store", "{store}", "--plot", "{case}/no/dir/p.png"], "does not exist"),
    Case("inspect-option-syntax", ["inspect-store", "memory://x", "--store-option", "a b=1"], "is not KEY=VALUE"),
    Case("repair-missing", ["repair-store", "{case}/none.zarr"], "no memory store"),
    Case("repair-foreign", ["repair-store", "{dir}"], "no memory store at"),
    Case("repair-locked", ["repair-store", PART], "is being written by host", _lock_store),
    # ---- evaluate and export --------------------------------------------------------------------------------------
    Case("evaluate-missing", ["evaluate", "{case}/none.safetensors"], "does not exist"),
    Case("evaluate-not-a-model", ["evaluate", "{txt}"], "not a readable safetensors"),
    Case("evaluate-n-zero", ["evaluate", "{ckpt}", "--n", "0"], "--n must be ≥ 1"),
    Case("evaluate-eps-255", ["evaluate", "{ckpt}", "--eps", "8"], "did you mean 8/255?"),
    Case("evaluate-norm", ["evaluate", "{ckpt}", "--norm", "L3"], "L3"),
    Case("evaluate-attack-unknown", ["evaluate", "{ckpt}", "--attacks", "fgsm9"], "fgsm9"),
    Case("evaluate-batch-zero", ["evaluate", "{ckpt}", "--batch-size", "0"], "--batch-size must be ≥ 1"),
    Case("evaluate-seed-negative", ["evaluate", "{ckpt}", "--seed", "-1"], "--seed must be in"),
    Case("evaluate-sweep-bad", ["evaluate", "{ckpt}", "--sweep", "steps=abc"], "steps=abc"),
    Case("evaluate-out-a-directory", ["evaluate", "{ckpt}", "--out", "{dir}", "--n", "4", "--attacks", "pgd20",
                                      "--data-dir", "{data}"], "is a directory"),
    Case("export-format", ["export", "{ckpt}", "{new}", "--format", "onnx"], "onnx"),
    Case("export-out-a-file", ["export", "{ckpt}", "{txt}"], "{txt}"),
    Case("export-results-not-json", ["export", "{ckpt}", "{new}", "--results", "{txt}"], "{txt}"),
    Case("compare-nothing", ["compare", "{case}/no-such-run", "--out", "{case}/cmp"], "no-such-run"),
    Case("compare-not-a-run", ["compare", "{dir}", "--out", "{case}/cmp"], "{dir}"),
    Case("compare-out-a-file", ["compare", "{run}", "--out", "{txt}"], "{txt}"),
    # ---- the toy and the demo -------------------------------------------------------------------------------------
    Case("toy-epochs-zero", ["toy", "--epochs", "0", "--out", "{new}"], "epochs"),
    Case("toy-out-a-file", ["toy", "--quick", "--out", "{txt}"], "{txt}"),
    Case("demo-epochs-zero", ["demo", "--epochs", "0", "--out", "{new}"], "epochs"),
    Case("demo-k-negative", ["demo", "--k", "-1", "--out", "{new}"], "k ≥ 1"),
    Case("demo-out-a-file", ["demo", "--quick", "--out", "{txt}"], "{txt}"),
    # ---- recipe options (issue 21: epochs under generated data, attack/BN/schedule options, held-out selection) ---
    Case("train-val-split-with-eval-n", [*TRAIN, "--val-split", "8"], "drop --eval-n"),
    Case("train-val-split-too-large", ["train", *(a for a in TINY if a not in ("--eval-n", "16")), "--val-split", "96",
                                       "--out", "{new}"], "must be between 1 and 95"),
    Case("train-val-split-negative", [*TRAIN, "--val-split", "-1"], "--val-split must be ≥ 0"),
    Case("train-select-attack-unknown", [*TRAIN, "--select-attack", "aa"], "unknown --select-attack 'aa'"),
    Case("train-attack-bn-unknown", [*TRAIN, "--attack-bn", "train"], "unknown --attack-bn 'train'"),
    Case("train-attack-start-unknown", [*TRAIN, "--attack-start", "zero"], "unknown --attack-start 'zero'"),
    Case("train-schedule-step-unknown", [*TRAIN, "--schedule-step", "step"], "unknown --schedule-step 'step'"),
    Case("train-bn-momentum-above-1", [*TRAIN, "--bn-momentum", "1.5"], "bn_momentum must be ≤ 1"),
    Case("train-aux-draw-without-aux-data", [*TRAIN, "--aux-draw", "with-replacement"], "needs generated data"),
    Case("train-v3-slot-sampling", [*TRAIN, "--k", "2", "--memloss-variant", "v3", "--memory-slots-per-step", "1"],
         "needs --memloss-variant v1 or v2"),
]

# ---- precision and determinism (issue 23 / issue 21 item 4) --------------------------------------------------------
CASES += [
    Case("precision-unknown", [*TRAIN, "--precision", "fp16"], "unknown precision 'fp16'"),
    Case("precision-bf16-on-cpu", [*TRAIN, "--device", "cpu", "--precision", "bf16"], "--precision bf16"),
    Case("resume-precision-changed", ["train", "--resume", "{part}", "--precision", "bf16"],
         "refuses a changed config: precision"),
    Case("resume-deterministic-changed", ["train", "--resume", "{part}", "--deterministic"],
         "refuses a changed config: deterministic"),
]


# ---- issue 22: sizes without bounds, checks made late, inputs accepted silently -----------------------------------
# Every case here is refused by the options alone (trainer/training/preflight.py, bounds.py) unless it says otherwise.


def _fifo(case: Path, world: dict[str, str]) -> dict[str, str]:
    import os

    os.mkfifo(case / "parts.npz")
    return {"fifo": str(case / "parts.npz")}


def _link(kind: str) -> Setup:
    def setup(case: Path, world: dict[str, str]) -> dict[str, str]:
        import os

        link = case / "again.npz"
        (os.link if kind == "hard" else os.symlink)(world["txt"], link)
        return {"link": str(link)}
    return setup


def _npz_named(name: str) -> Setup:
    def setup(case: Path, world: dict[str, str]) -> dict[str, str]:
        (case / name).write_bytes(b"x")
        return {"npz": str(case / name)}
    return setup


def _no_metrics_run(case: Path, world: dict[str, str]) -> dict[str, str]:
    (case / "fresh").mkdir()
    shutil.copy(Path(world["run"]) / "config.json", case / "fresh" / "config.json")
    return {}


def _result(case: Path, world: dict[str, str]) -> dict[str, str]:
    (case / "eval.json").write_text('{"earlier": "result"}')
    return {}


BIG = ["train", "--dataset", "synthetic", "--epochs", "1", "--data-dir", "{data}", "--out", "{new}"]
BARE = ["train", "--data-dir", "{data}", "--out", "{new}"]  # options from the TOML file only (the command line wins)
EARLY: list[Case] = [
    # sizes without bounds: the figure, the limit and the fix
    Case("k-huge", [*TRAIN, "--k", "100000000"], "memory store's smallest window", early=True),
    Case("k-huge-config", [*TRAIN, "--config", "{toml}"], "memory store's smallest window", _toml("k = 100000000"),
         early=True),
    Case("batch-size-huge", [*TRAIN, "--batch-size", "1000000000"], "larger than the 96 training samples", early=True),
    Case("batch-size-above-n", [*TRAIN, "--batch-size", "97"], "larger than the 96 training samples", early=True),
    Case("batch-size-above-digits", ["train", "--dataset", "digits", "--batch-size", "2000", "--out", "{new}"],
         "larger than the 1437 training samples", early=True),
    Case("batch-size-ram", [*BIG, "--k", "0", "--n", "2000000000", "--batch-size", "1000000000"], "of RAM (",
         early=True),
    Case("epochs-huge", [*TRAIN, "--epochs", "1000000000000"], "optimizer steps, above the limit", early=True),
    Case("epochs-steps-above-limit", [*TRAIN, "--epochs", "40000000"], "1.2e+08 optimizer steps", early=True),
    Case("epochs-huge-config", [*BARE, "--config", "{toml}"], "optimizer steps", _toml("epochs = 1000000000000"),
         early=True),
    Case("epoch-samples-huge", [*TRAIN, "--aux-data", "{txt}", "--epoch-samples", "1000000000000"],
         "optimizer steps", early=True),
    Case("store-ram-memory-url", [*BIG, "--n", "2000000000", "--store", "memory://big"], "of RAM (K=1",
         early=True),
    Case("store-ram-budget", [*BIG, "--n", "2000000000", "--memory-budget", "100TiB"], "of RAM (K=1", early=True),
    Case("store-index-budget", [*BIG, "--n", "3000000", "--memory-budget", "64MiB"], "index arrays", early=True),
    Case("store-disk", [*BIG, "--n", "2000000000", "--resolution", "64"], "on disk", early=True),
    Case("n-above-cifar10", ["train", "--dataset", "cifar10", "--n", "60000", "--out", "{new}"],
         "above the 50000 samples of the cifar10 training split", early=True),
    Case("eval-n-above-svhn", ["train", "--dataset", "svhn", "--eval-n", "30000", "--out", "{new}"],
         "≤ 26032", early=True),
    # checked late before: paths and files, now before torch and before anything is written
    Case("store-is-out", [*TRAIN, "--store", "{new}"], "is the run directory", early=True),
    Case("store-holds-out", ["train", *TINY, "--store", "{case}/s", "--out", "{case}/s/run"],
         "holds the run directory", early=True),
    Case("store-below-a-file", [*TRAIN, "--store", "{txt}/m.zarr"], "is a file, not a memory store directory",
         early=True),
    Case("store-is-out-torchrun", [*TRAIN, "--store", "{new}", "--nproc-per-node", "2"], "is the run directory",
         early=True),
    Case("helper-dir-without-weights", [*TRAIN, "--method", "hat", "--helper", "{dir}"], "last.safetensors does not "
         "exist", early=True),
    Case("helper-fifo", [*TRAIN, "--method", "hat", "--helper", "{fifo}"], "is a FIFO", _fifo, early=True),
    Case("data-dir-below-a-file", ["train", *TINY[:-2], "--data-dir", "{txt}/d", "--out", "{new}"],
         "is a file, not a directory", early=True),
    Case("out-below-proc", ["train", *TINY, "--out", "{proc}/a/b"], "cannot create the run directory", early=True),
    Case("store-not-creatable", [*TRAIN, "--store", "{proc}/x/m.zarr"], "cannot create the store directory",
         early=True),
    # accepted silently or refused wrongly before
    Case("aux-data-twice", [*TRAIN, "--aux-data", "{txt}", "{txt}"], "twice", early=True),
    Case("aux-data-twice-repeated-option", [*TRAIN, "--aux-data", "{txt}", "--aux-data", "{txt}"], "twice",
         early=True),
    Case("aux-data-hard-link", [*TRAIN, "--aux-data", "{txt}", "{link}"], "are the same file", _link("hard"),
         early=True),
    Case("aux-data-symlink", [*TRAIN, "--aux-data", "{txt}", "{link}"], "are the same file", _link("sym"),
         early=True),
    Case("aux-data-fifo", [*TRAIN, "--aux-data", "{fifo}"], "is a FIFO (named pipe)", _fifo, early=True),
    Case("aux-data-directory", [*TRAIN, "--aux-data", "{dir}"], "is a directory, not a file", early=True),
    Case("aux-data-device", [*TRAIN, "--aux-data", "/dev/null"], "is a character device", early=True),
    Case("aux-data-second-missing", [*TRAIN, "--aux-data", "{npz}", "{case}/p2.npz"], "p2.npz does not exist",
         _npz_named("p1.npz"), early=True),
    Case("memory-slots-zero", [*TRAIN, "--memory-slots-per-step", "0"], "leave it out to use all K slots",
         early=True),
    Case("memory-slots-zero-config", [*TRAIN, "--config", "{toml}"], "would use no memory slot",
         _toml("memory_slots_per_step = 0"), early=True),
    Case("config-aux-data-int", [*TRAIN, "--config", "{toml}"], "aux_data must be a file path or a list of paths",
         _toml("aux_data = 5"), early=True),
    Case("config-aux-data-list-of-int", [*TRAIN, "--config", "{toml}"], "aux_data must be a file path",
         _toml("aux_data = [5]"), early=True),
    Case("config-aux-data-empty", [*TRAIN, "--config", "{toml}"], "aux_data must be a file path",
         _toml('aux_data = [""]'), early=True),
    Case("config-epochs-string", [*BARE, "--config", "{toml}"], "epochs must be an integer, got the string 'x'",
         _toml('epochs = "x"'), early=True),
    Case("config-dataset-int", [*BARE, "--config", "{toml}"], "dataset must be a string", _toml("dataset = 3"),
         early=True),
    Case("config-batch-size-huge", [*BARE, "--config", "{toml}"], "larger than the 1437 training samples",
         _toml("[data]\nbatch_size = 1000000000"), early=True),
    Case("s3-endpoint-placeholder", [*TRAIN, "--store", "s3://bucket/runs/mem.zarr", "--store-option",
                                     "endpoint_url=https://..."], "is not an http(s) URL with a host", early=True),
    Case("s3-endpoint-not-http", [*TRAIN, "--store", "s3://bucket/m.zarr", "--store-option",
                                  "endpoint_url=ftp://host"], "is not an http(s) URL", early=True),
    Case("s3-endpoint-bad-port", [*TRAIN, "--store", "s3://bucket/m.zarr", "--store-option",
                                  "endpoint_url=http://host:99999"], "is not an http(s) URL", early=True),
    # other commands (these load torch: not timed as early refusals)
    Case("compare-no-metrics", ["compare", "{case}/fresh", "--out", "{case}/cmp"], "no metrics to compare in fresh",
         _no_metrics_run),
    Case("evaluate-out-exists", ["evaluate", "{ckpt}", "--out", "{case}/eval.json", "--n", "4", "--attacks", "pgd20",
                                 "--data-dir", "{data}"], "already holds a result; pass --overwrite", _result),
    Case("evaluate-out-exists-text", ["evaluate", "{ckpt}", "--out", "{txt}", "--attacks", "pgd20"],
         "already holds a result"),
]
CASES += EARLY


# ---- the user's own data: --dataset PATH and --test-data (issue 19 item 4) -------------------------------------------
def _user_data(case: Path, world: dict[str, str]) -> dict[str, str]:
    """Good and bad .npz files, image folders and model files that record a user dataset, in the case folder."""
    import numpy as np
    from PIL import Image

    def npz(name: str, **arrays: object) -> str:
        np.savez(case / name, **arrays)
        return str(case / name)

    def images(root: str, sizes: dict[str, list[tuple[int, int]]], mode: str = "RGB") -> str:
        for label, shapes in sizes.items():
            (case / root / label).mkdir(parents=True, exist_ok=True)
            for i, (h, w) in enumerate(shapes):
                shape = (h, w, 3) if mode == "RGB" else (h, w)
                Image.fromarray(np.full(shape, 40 * i, np.uint8), mode).save(case / root / label / f"{i}.png")
        return str(case / root)

    x = np.zeros((20, 24, 24, 3), np.uint8)
    y = np.arange(20) % 2
    names = {"u_train": npz("train.npz", image=x, label=y), "u_test16": npz("t16.npz", image=x[:, :16, :16], label=y),
             "u_nolabel": npz("nolabel.npz", image=x), "u_float": npz("float.npz", image=x / 255.0, label=y),
             "u_3d": npz("threed.npz", image=x[..., 0], label=y),
             "u_nchw": npz("nchw.npz", image=np.zeros((20, 3, 24, 24), np.uint8), label=y),
             "u_negative": npz("negative.npz", image=x, label=y - 1),
             "u_one_class": npz("oneclass.npz", image=x, label=np.zeros(20, np.int64)),
             "u_test_labels": npz("testlabels.npz", image=x, label=y + 5)}
    blob = Path(names["u_train"]).read_bytes()
    (case / "cut.npz").write_bytes(blob[: len(blob) // 2])
    (case / "empty").mkdir()
    (case / "noimages" / "a").mkdir(parents=True)
    (case / "noimages" / "b").mkdir()
    (case / "noimages" / "b" / "readme.txt").write_text("no pictures here")
    names.update(u_cut=str(case / "cut.npz"), u_empty=str(case / "empty"), u_noimages=str(case / "noimages"),
                 u_folder=images("folder", {"a": [(8, 8)] * 3, "b": [(8, 8)] * 3}),
                 u_mixed=images("mixed", {"a": [(8, 8), (8, 8), (9, 8)], "b": [(8, 8)] * 3}),
                 u_gray=images("gray", {"a": [(8, 8)] * 2, "b": [(8, 8)] * 2}, "L"),
                 u_other_class=images("other", {"a": [(8, 8)], "zebra": [(8, 8)]}))
    (case / "broken" / "a").mkdir(parents=True)
    (case / "broken" / "b").mkdir()
    for label in ("a", "b"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(case / "broken" / label / "0.png")
    (case / "broken" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    names["u_broken"] = str(case / "broken")
    names.update(_user_models(case, names))
    return names


def _user_models(case: Path, names: dict[str, str]) -> dict[str, str]:
    """Model files of a user dataset whose test file moved away, and one whose test file changed since."""
    from memloss.trainer.data.registry import UserRecord, info_meta, user_info
    from memloss.trainer.models.files import save_model
    from memloss.trainer.models.registry import build_model

    out = {}
    for key, test in (("u_moved", str(case / "moved-away.npz")), ("u_changed", names["u_train"])):
        record = UserRecord("npz", names["u_train"], test, 0.0, 0, 20, 20, "0" * 64, "0" * 64)
        info = user_info(record, (3, 24, 24), 2, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        path = case / f"{key}.safetensors"
        save_model(path, build_model("small_cnn", info), {"arch": "small_cnn", "dataset": record.train,
                                                          "norm": "Linf", "eps": "8/255", **info_meta(info)})
        out[key] = str(path)
    return out


USER = ["train", "--model", "small_cnn", "--epochs", "1", "--batch-size", "8", "--data-dir", "{data}", "--out", "{new}"]
CASES += [
    Case("user-dataset-missing", ["train", "--dataset", "{case}/none.npz", "--out", "{new}"], "unknown dataset"),
    Case("user-test-data-missing", [*USER, "--dataset", "{u_train}", "--test-data", "{case}/none.npz"],
         "--test-data {case}/none.npz does not exist", _user_data),
    Case("user-test-data-builtin", [*TRAIN, "--test-data", "{txt}"], "--test-data goes with your own --dataset"),
    Case("user-aux-data-size", [*USER, "--dataset", "{u_train}", "--aux-data", "{u_test16}"],
         "{u_test16}: images are 16×16", _user_data),
    Case("user-resolution", [*USER, "--dataset", "{u_train}", "--resolution", "16"],
         "--resolution applies to the synthetic dataset only", _user_data),
    Case("user-npz-missing-key", [*USER, "--dataset", "{u_nolabel}"], "has no 'label' array", _user_data),
    Case("user-npz-float", [*USER, "--dataset", "{u_float}"], "expected uint8", _user_data),
    Case("user-npz-3d", [*USER, "--dataset", "{u_3d}"], "expected 4 axes [N, H, W, C]", _user_data),
    Case("user-npz-nchw", [*USER, "--dataset", "{u_nchw}"], "store them as [N, H, W, C]", _user_data),
    Case("user-npz-negative-label", [*USER, "--dataset", "{u_negative}"], "labels must be class numbers", _user_data),
    Case("user-npz-one-class", [*USER, "--dataset", "{u_one_class}"], "at least 2 classes", _user_data),
    Case("user-npz-truncated", [*USER, "--dataset", "{u_cut}"], "is not a readable .npz", _user_data),
    Case("user-npz-not-npz", [*USER, "--dataset", "{txt}"], "is not a readable .npz"),
    Case("user-test-other-size", [*USER, "--dataset", "{u_train}", "--test-data", "{u_test16}"],
         "use test data of the same size and channels", _user_data),
    Case("user-test-label-out-of-range", [*USER, "--dataset", "{u_train}", "--test-data", "{u_test_labels}"],
         "use test data of the same classes", _user_data),
    Case("user-test-kind", [*USER, "--dataset", "{u_train}", "--test-data", "{u_folder}"], "is a folder but",
         _user_data),
    Case("user-folder-no-classes", [*USER, "--dataset", "{u_empty}"], "has no class subfolders", _user_data),
    Case("user-folder-no-images", [*USER, "--dataset", "{u_noimages}"], "Found no valid file", _user_data),
    Case("user-folder-mixed-sizes", [*USER, "--dataset", "{u_mixed}"], "resize the images to one size", _user_data),
    Case("user-folder-broken-image", [*USER, "--dataset", "{u_broken}"], "is not a readable image", _user_data),
    Case("user-folder-test-gray", [*USER, "--dataset", "{u_folder}", "--test-data", "{u_gray}"],
         "use test data of the same size and channels", _user_data),
    Case("user-folder-test-class", [*USER, "--dataset", "{u_folder}", "--test-data", "{u_other_class}"],
         "are not classes of the training data", _user_data),
    Case("user-evaluate-test-moved", ["evaluate", "{u_moved}", "--attacks", "pgd20", "--n", "2"],
         "moved-away.npz, is not there any more", _user_data),
    Case("user-evaluate-test-changed", ["evaluate", "{u_changed}", "--attacks", "pgd20", "--n", "2"],
         "changed since the model was trained", _user_data),
]
