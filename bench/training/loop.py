"""The epoch loop every fine-tuning trainer shares: steps, per-epoch logging, best-on-val state."""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import Tensor

from bench.core.errors import DivergenceError
from bench.data import PatchSampler
from bench.runtime.workers import stage_threads
from bench.training.context import TrainContext

StepFn = Callable[[Tensor, Tensor], float]

MAX_LOSS = 1e6  # far above any sane loss here (λ_out·Σ L1 ≤ 10·batch); beyond it training has diverged


def check_loss(loss: float, where: str, epoch: int) -> None:
    """Raise DivergenceError on a NaN/inf or exploding loss, naming the stage and epoch."""
    if not math.isfinite(loss) or abs(loss) > MAX_LOSS:
        raise DivergenceError(f"{where}: loss {loss:.4g} at epoch {epoch} (non-finite or above {MAX_LOSS:g}); "
                              f"lower the learning rate or λ")


def check_weights(model: torch.nn.Module, where: str, epoch: int) -> None:
    """Raise DivergenceError if a weight went non-finite (a NaN/inf gradient the loss has not shown yet)."""
    bad = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise DivergenceError(f"{where}: non-finite weights ({bad}) after epoch {epoch} (a NaN/inf gradient); "
                              f"lower the learning rate or λ")


def fit(model: torch.nn.Module, step: StepFn, sample: PatchSampler, *, epochs: int, steps_per_epoch: int,
        val_every: int, validate: Callable[[int], dict[str, float]], score_key: str, prefix: str,
        ctx: TrainContext, stateful: list) -> None:
    """Run ``epochs × steps_per_epoch`` steps; validate every ``val_every`` epochs and at the end,
    keep the state with the highest ``validate(epoch)[score_key]`` and load it back at the end.

    ``stateful`` are the optimizers and LR schedulers ``step`` uses, and the sampler: their state
    goes into the in-stage checkpoints, and an interrupted stage (``ctx.resume``) goes on from the
    epoch after its last checkpoint."""
    stage_threads()
    start, saved = ctx.restore(model, stateful)
    best_score, best_state = saved.get("best_score", float("-inf")), saved.get("best_state")
    with ctx.progress((epochs - start + 1) * steps_per_epoch, prefix, epochs=epochs) as advance:
        for epoch in range(start, epochs + 1):
            total = 0.0
            for _ in range(steps_per_epoch):
                noisy, clean = (t.to(ctx.device) for t in sample())
                loss = step(noisy, clean)
                check_loss(loss, prefix, epoch)
                total += loss
                advance(epoch=epoch, loss=loss)
            check_weights(model, prefix, epoch)
            metrics = {f"{prefix}/loss": total / steps_per_epoch}
            if epoch % val_every == 0 or epoch == epochs:
                val = validate(epoch)
                metrics.update({f"{prefix}/{k}": v for k, v in val.items()})
                ctx.on_validate(epoch, val)
                if val[score_key] > best_score:
                    best_score, best_state = val[score_key], copy.deepcopy(model.state_dict())
                    metrics[f"{prefix}/best_epoch"] = epoch
            ctx.record(metrics, epoch)
            ctx.checkpoint(epoch, model, stateful, last=epoch == epochs, best_score=best_score,
                           best_state=best_state)
    model.load_state_dict(best_state)
