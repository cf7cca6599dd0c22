"""The adversarial-training methods as pure building blocks: one PGD loop (`pgd`) with pluggable threat model
(`threat`) and objective (`objectives`); the base losses (`losses`) and their registry (`registry`); the MemLoss
term (`memloss`); `total_loss` (`total`); the TE and MeoW regularizers (`te`, `meow`); and the catalogue of
evaluation attacks (`eval_attacks`). Nothing here owns a model's modes (except the attack's `frozen_eval`), an
optimizer or a device."""
