"""`memloss train`: options → TrainConfig → memloss.trainer.training.fit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from memloss.cli.common import store_options_option, threads_option
from memloss.cli.endings import interruptible_run, print_summary

Opt = typer.Option
# Options of this invocation only (how to run, not what to train): not part of the run's config.
RUN_TIME_OPTIONS = ("config", "resume", "threads", "log_every", "store_option", "nproc_per_node", "ctx")
# `--aux-data FILE [FILE ...]`: click has no variadic options, so `train` takes extra arguments and the files after
# --aux-data arrive there (train has no positional arguments of its own).
CONTEXT = {"allow_extra_args": True}


def aux_files(given: Optional[list[str]], extra: list[str]) -> Optional[tuple[str, ...]]:
    """The generated-data files: those of --aux-data (repeatable) and the arguments that followed it."""
    from memloss.errors import ConfigError

    if extra and not given:
        raise ConfigError(f"unexpected argument(s) {' '.join(extra)}; train takes only options (part files of a "
                          "generated set go after --aux-data)")
    files = [*(given or []), *extra]
    return tuple(files) if files else None


def train(
    ctx: typer.Context,
    dataset: Annotated[Optional[str], Opt(help="cifar10 | cifar100 | svhn | digits | synthetic, or a PATH to your own data: an .npz with image uint8 [N,H,W,C] and label [N], or an image folder (torchvision ImageFolder layout; train/ and test/ or val/ inside, or class folders directly); converted once and cached (default: digits)", rich_help_panel="Data")] = None,
    test_data: Annotated[Optional[str], Opt(metavar="PATH", rich_help_panel="Data", help="With --dataset PATH: the test split, an .npz or image folder like it (default: the folder's test/ or val/, else a seeded 10% held out of the training data)")] = None,
    k: Annotated[Optional[int], Opt("--k", help="Memory depth K: epochs of adversarial examples kept (0 = no MemLoss term) (default: 1)", rich_help_panel="Memory")] = None,
    store: Annotated[Optional[str], Opt(help="Memory store path or fsspec URL, e.g. s3://bucket/prefix/mem.zarr (default: RUN_DIR/memory.zarr)", rich_help_panel="Store")] = None,
    store_option: Annotated[Optional[list[str]], store_options_option(panel="Store")] = None,
    method: Annotated[Optional[str], Opt(help="Base method: standard | at | trades | mart | hat (default: trades)", rich_help_panel="Method")] = None,
    beta: Annotated[Optional[float], Opt(help="Robust-term weight β (default: the paper's for dataset and method)", rich_help_panel="Method")] = None,
    beta_prime: Annotated[Optional[str], Opt(help="MemLoss weight β′: one value for every memory age, or one per age like 2,1,0.5 (age k = the adversarial examples of epoch n−k) (default: 2; HAT: 1)", rich_help_panel="Memory")] = None,
    gamma: Annotated[Optional[float], Opt(help="HAT helper-term weight γ (default: 0.5)", rich_help_panel="Method")] = None,
    memloss_variant: Annotated[Optional[str], Opt(help="MemLoss term: v1 (weighted, paper eq. 5) | v2 | v3 (default: v1)", rich_help_panel="Memory")] = None,
    reg: Annotated[Optional[str], Opt(help="Extra regularizer: none | te | meow (default: none)", rich_help_panel="Method")] = None,
    helper: Annotated[Optional[str], Opt(help="HAT helper: a model trained with --method standard: a .safetensors file, or its run directory (then its last.safetensors)", rich_help_panel="Method")] = None,
    memory_view: Annotated[Optional[str], Opt(help="recorded: memory example = its own epoch's view + δ (as the official code) | aligned: δ moved into the current view (default: recorded)", rich_help_panel="Memory")] = None,
    memory_slots_per_step: Annotated[Optional[int], Opt(help="m: each step uses m of the S memory ages that hold memory for the batch, drawn at random and weighted S/m, so the expected MemLoss term is the full one (default: all, the paper)", rich_help_panel="Memory")] = None,
    memory_slot_draw: Annotated[Optional[str], Opt(help="step: a new draw of m memory ages per step | window: one draw per store window, so the store need read only those (default: step)", rich_help_panel="Memory")] = None,
    memory_forward: Annotated[Optional[str], Opt(help="separate: one train-mode forward per memory age, BN statistics per age (official) | fused: one forward of all the step's memory examples (default: separate)", rich_help_panel="Memory")] = None,
    beta_prime_decay: Annotated[Optional[float], Opt(help="γ: β′_k = β′·γ^(k−1) over the memory ages (the paper's momentum idea); not together with a per-age --beta-prime list (default: none)", rich_help_panel="Memory")] = None,
    memloss_clean_grad: Annotated[Optional[str], Opt(help="through: the MemLoss KL back-propagates into p(x) (paper eq. 5) | stop: p(x) is a constant target of the MemLoss term (default: through)", rich_help_panel="Memory")] = None,
    epochs: Annotated[Optional[int], Opt(help="Training epochs (default: 70 CIFAR, 22 SVHN, 10 digits, 5 synthetic)", rich_help_panel="Schedule")] = None,
    batch_size: Annotated[Optional[int], Opt(help="Batch size (default: 128; digits 64)", rich_help_panel="Schedule")] = None,
    lr: Annotated[Optional[float], Opt(help="Peak learning rate of the OneCycle schedule (default: 0.21 CIFAR, 0.05 SVHN/digits, 0.1 synthetic)", rich_help_panel="Schedule")] = None,
    weight_decay: Annotated[Optional[float], Opt(help="SGD weight decay (default: 5e-4)", rich_help_panel="Schedule")] = None,
    ema: Annotated[Optional[float], Opt(help="Keep a weight average with this decay, e.g. 0.995 (published warm-up); evaluated each epoch, saved as best-ema/last-ema.safetensors (default: none)", rich_help_panel="Schedule")] = None,
    label_smoothing: Annotated[Optional[float], Opt(help="Label smoothing ε of the clean CE term (standard, trades, hat), e.g. 0.1 (default: 0)", rich_help_panel="Method")] = None,
    seed: Annotated[Optional[int], Opt(help="Random seed (default: 0)", rich_help_panel="Run")] = None,
    device: Annotated[Optional[str], Opt(help="auto | cpu | cuda | cuda:N (default: auto)", rich_help_panel="Run")] = None,
    precision: Annotated[Optional[str], Opt(help="Training compute: fp32 | bf16 (CUDA bf16 autocast; refused on CPU). The per-epoch selection (clean, PGD-20) and the forgetting judgement always run in IEEE fp32 (default: fp32)", rich_help_panel="Run")] = None,
    deterministic: Annotated[Optional[bool], Opt("--deterministic/--no-deterministic", help="Deterministic CUDA kernels (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG=:4096:8, no cuDNN autotuning): a resumed GPU run ends with exactly the uninterrupted weights, at a speed cost; CPU runs are exact without it (default: off)", rich_help_panel="Run")] = None,
    out: Annotated[Optional[str], Opt(help="Run directory (default: runs/<dataset>-<method>-k<K>-s<seed>)", rich_help_panel="Run")] = None,
    eval_n: Annotated[Optional[int], Opt(help="Test points for the per-epoch PGD-20 model selection (default: whole test set)", rich_help_panel="Evaluation")] = None,
    model: Annotated[Optional[str], Opt(help="resnet18 | preact_resnet18 | small_cnn | wrn-28-10 | wrn-34-10 | wrn-70-16 | wrn-28-10-swish | wrn-34-10-swish | wrn-70-16-swish (default: per dataset)", rich_help_panel="Method")] = None,
    norm: Annotated[Optional[str], Opt(help="Threat model norm: Linf | L2 (default: Linf)", rich_help_panel="Method")] = None,
    eps: Annotated[Optional[str], Opt(help="Radius ε as a fraction or float, e.g. 8/255 (default: 8/255; digits 32/255)", rich_help_panel="Method")] = None,
    step_size: Annotated[Optional[str], Opt(help="PGD step α (default: 2/255; SVHN 1/255; digits 8/255)", rich_help_panel="Method")] = None,
    attack_steps: Annotated[Optional[int], Opt(help="PGD steps during training (default: 10)", rich_help_panel="Method")] = None,
    memory_budget: Annotated[Optional[str], Opt(help="RAM for the store's window of memory, e.g. 2GiB, 512MB (default: 2GiB)", rich_help_panel="Store")] = None,
    track_forgetting: Annotated[Optional[bool], Opt("--track-forgetting/--no-track-forgetting", help="Log forgetting and learning events and the error on earlier epochs' adversarial examples (always on when K ≥ 1); for K=0 keeps a K=1 store just for this", rich_help_panel="Memory")] = None,
    data_dir: Annotated[Optional[str], Opt(help="Dataset directory (default: $MEMLOSS_DATA or ~/.cache/memloss/data)", rich_help_panel="Data")] = None,
    n: Annotated[Optional[int], Opt(help="Training samples: the first N of the training split; synthetic: N generated (default: all; synthetic 1024)", rich_help_panel="Data")] = None,
    resolution: Annotated[Optional[int], Opt(help="synthetic only: image side in pixels (default: 32)", rich_help_panel="Data")] = None,
    aux_data: Annotated[Optional[list[str]], Opt(metavar="FILE", help="Generated images mixed into every batch: .npz files with image uint8 [N,H,W,C] and label [N]; several part files form one set (--aux-data p1.npz p2.npz); converted once to a .beton beside the base set's (default: none)", rich_help_panel="Data")] = None,
    aux_take: Annotated[Optional[int], Opt(help="Use a seeded subset of this many generated images (the published aux_take_amount, seed 13) (default: all)", rich_help_panel="Data")] = None,
    aux_fraction: Annotated[Optional[float], Opt(help="Share f of generated samples in every batch: int(f·B) of B (default: 0.7 with --aux-data, the published recipe)", rich_help_panel="Data")] = None,
    epoch_samples: Annotated[Optional[int], Opt(help="Samples per epoch with --aux-data, in whole batches (default: base + generated set size)", rich_help_panel="Data")] = None,
    aux_draw: Annotated[Optional[str], Opt(help="How generated samples are drawn: without (as even as possible over the set) | with-replacement (uniform, the published sampler) (default: without)", rich_help_panel="Data")] = None,
    aux_epoch: Annotated[Optional[str], Opt(help="Epoch length with --aux-data when --epoch-samples is not given: pass (one pass over the larger part: every sample at least once an epoch, so every row holds memory of the epoch before) | total (ceil(N_total/B) batches, the older default) (default: pass)", rich_help_panel="Data")] = None,
    val_split: Annotated[Optional[int], Opt(help="Hold out N training images (seeded by --val-seed, recorded in the run) and select best/best-ema on them; the test set is then left to `memloss evaluate` (default: 0, select on the test points)", rich_help_panel="Evaluation")] = None,
    val_seed: Annotated[Optional[int], Opt(help="Seed of the --val-split draw, separate from --seed so runs of several seeds hold out the same images (default: 0)", rich_help_panel="Evaluation")] = None,
    select_attack: Annotated[Optional[str], Opt(help="Per-epoch attack that selects best/best-ema: pgd20 (CE, 20 steps, the paper's early stopping) | pgd40-cw (CW margin, 40 steps of the training step size, DM-Improves-AT's) (default: pgd20)", rich_help_panel="Evaluation")] = None,
    attack_bn: Annotated[Optional[str], Opt(help="Model mode of the training attack: eval (official TRADES/HAT/MemLoss) | train-frozen (train mode, BN on batch statistics, running statistics not updated: DM-Improves-AT) (default: eval)", rich_help_panel="Method")] = None,
    attack_start: Annotated[Optional[str], Opt(help="Start of the training attack: normal (x + 0.001·N(0,1)) | uniform (U(−ε, ε), DM-Improves-AT) (default: the method's: normal for trades/hat/mart, uniform for at)", rich_help_panel="Method")] = None,
    schedule_step: Annotated[Optional[str], Opt(help="Step the OneCycle schedule per batch or per epoch (DM-Improves-AT's 'cosinew': per epoch) (default: batch)", rich_help_panel="Schedule")] = None,
    bn_weight_decay: Annotated[Optional[bool], Opt("--bn-weight-decay/--no-bn-weight-decay", help="Weight decay on BN weights and biases too; --no-bn-weight-decay exempts them, as DM-Improves-AT (default: on)", rich_help_panel="Schedule")] = None,
    bn_momentum: Annotated[Optional[float], Opt(help="Momentum of the BN running statistics, e.g. 0.01 (DM-Improves-AT) (default: the architecture's: 0.1, WRN-swish 0.01)", rich_help_panel="Schedule")] = None,
    bn_first_step: Annotated[Optional[bool], Opt("--bn-first-step/--no-bn-first-step", help="BN momentum 1.0 on the run's first optimizer step: running statistics start as the first batch's (DM-Improves-AT, as Haiku) (default: off)", rich_help_panel="Schedule")] = None,
    config: Annotated[Optional[Path], Opt(help="TOML file with any of these options; command-line values win", rich_help_panel="Run")] = None,
    resume: Annotated[Optional[Path], Opt(help="Continue the run in this directory exactly where it stopped", rich_help_panel="Run")] = None,
    threads: Annotated[str, threads_option(panel="Run")] = "auto",
    log_every: Annotated[int, Opt(help="Steps between the per-step TensorBoard scalars; 0 = per epoch only (default: 50)", show_default=False, rich_help_panel="Run")] = 50,
    # Several processes (torchrun / DDP): see the guide's "More than one GPU".
    nproc_per_node: Annotated[Optional[int], Opt(help="Start this many training processes on this node through torchrun (DDP; --batch-size stays the global batch); under torchrun leave it out", show_default=False, rich_help_panel="Distributed")] = None,
    sync_bn: Annotated[Optional[bool], Opt("--sync-bn/--no-sync-bn", help="Several processes: synchronize BN statistics over them (SyncBatchNorm, CUDA only) (default: per process)", rich_help_panel="Distributed")] = None,
) -> None:
    """Train a model adversarially, with the MemLoss term when --k > 0.

    `memloss train --dataset cifar10 --k 1 --store s.zarr` is the paper's CIFAR-10 MemLoss+TRADES run.
    """
    overrides: dict[str, Any] = {key: value for key, value in locals().items() if key not in RUN_TIME_OPTIONS}
    overrides["aux_data"] = aux_files(aux_data, list(ctx.args))
    # Every check that needs no data comes first, before torch, ffcv or the data load and before any file is written.
    from memloss.memstore.location.options import parse_store_options
    from memloss.trainer.config.defaults import resolve_config
    from memloss.trainer.training.preflight import check_start
    from memloss.trainer.training.resume import resume_config

    with rank_zero_speaks():
        cfg = resume_config(resume, overrides, config) if resume is not None else resolve_config(overrides, config)
        options = parse_store_options(store_option or [])
        run_dir = check_start(cfg, resume, options, log_every=log_every, threads=threads)
    if nproc_per_node is not None:  # bad input is refused here, once, before any process starts
        import sys

        from memloss.trainer.training.preflight import check_launch

        check_launch(cfg, resume, nproc_per_node, options)  # the ranks' rank 0 prints the first line
        from memloss.trainer.distributed.launch import relaunch

        raise typer.Exit(relaunch(nproc_per_node, sys.argv[1:]))
    with interruptible_run(cfg, resume, store_options=bool(options)):
        announce(cfg, run_dir, resume)
        from memloss.trainer.training.fit import fit

        result = fit(cfg, resume=resume, threads=threads, log_every=log_every, store_options=options)
    from memloss.trainer.distributed.context import env_rank

    if env_rank() == 0:  # under torchrun: one summary, from rank 0
        print_summary(result)


@contextmanager
def rank_zero_speaks() -> Iterator[None]:
    """Under torchrun every rank makes the same checks: rank 0 says the one line, the others end with the same
    exit code silently (as after a refusal in the process group)."""
    import os

    from memloss.errors import MemlossError, PeerFailed

    try:
        yield
    except MemlossError:
        if os.environ.get("RANK", "0") != "0":
            raise PeerFailed from None
        raise


def announce(cfg: Any, run_dir: Path, resume: Optional[Path]) -> None:
    """The first line of a start, once the checks passed: what is being prepared (rank 0 only under torchrun)."""
    import os

    if os.environ.get("RANK", "0") != "0":
        return
    what = "resuming" if resume is not None else "preparing"
    d, m = cfg.data, cfg.method
    aux = f" + {len(d.aux_data)} generated part(s)" if d.aux_data else ""
    procs = f", {os.environ['WORLD_SIZE']} processes" if "WORLD_SIZE" in os.environ else ""
    print(f"{what} {run_dir}: {d.dataset}{aux}, {m.method} K={m.k}, {cfg.optim.epochs} epochs of batch "
          f"{d.batch_size}{procs} (loading torch, data and model)", flush=True)
