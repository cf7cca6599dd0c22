"""Everything about running one training or evaluation on several processes (torchrun / `torch.distributed`).

The training loop and the evaluator call small hooks from here; with one process (no torchrun) every hook is a
no-op. `context` (process group from torchrun's environment, per-rank seeds), `shards` (each rank's share of every
global batch, of the evaluation points), `writes` (the ranks' store writes gathered to rank 0, the one writer),
`store` (rank 0 writes, other ranks read committed epochs), `reduce` (metrics and monitor reduced once per epoch),
`model` (DDP, --sync-bn), `state` (per-rank resume state), `launch` (`memloss train --nproc-per-node N`).
"""
