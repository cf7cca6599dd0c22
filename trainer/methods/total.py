"""The one loss call of the trainer: base method + MemLoss term + regularizer terms."""

from __future__ import annotations

from collections.abc import Mapping

from memloss.trainer.methods.losses import LossInputs, LossOutput, LossParams
from memloss.trainer.methods.memloss import MemLossConfig, MemoryInputs, memloss_term
from memloss.trainer.methods.registry import MethodSpec, get_method


def total_loss(
    method: str | MethodSpec,
    inputs: LossInputs,
    params: LossParams,
    *,
    memory: MemoryInputs | None = None,
    memloss: MemLossConfig | None = None,
    extra: Mapping[str, LossOutput] | None = None,
    base: LossOutput | None = None,
) -> LossOutput:
    """base method loss (+ MemLoss term when ``memory`` is given) (+ every ``extra`` regularizer term).

    ``base`` replaces the registry loss of ``method`` (used by MeoW, whose reweighted AT/TRADES loss comes from
    ``memloss.trainer.methods.meow.meow_loss``). ``extra`` maps a name to a term (e.g. TE's ``te_term``); its metrics are
    merged under their own names. ``metrics["loss"]`` is the total.
    """
    out = base if base is not None else get_method(method).loss_fn(inputs, params)
    loss, metrics = out.loss, dict(out.metrics)
    if memory is not None:
        if memloss is None:
            raise ValueError("total_loss got memory inputs but no MemLossConfig")
        term = memloss_term(inputs.logits_clean, memory.logits_mem, inputs.y, memory.valid, memloss.beta_prime,
                            memloss.variant, inputs.logits_adv, slots=memory.slots,
                            slot_weights=memory.slot_weights, clean_grad=memloss.clean_grad)
        loss = loss + term.loss
        metrics.update(term.metrics)
    for term in (extra or {}).values():
        loss = loss + term.loss
        metrics.update(term.metrics)
    metrics["loss"] = loss.detach().float()
    return LossOutput(loss, metrics)
