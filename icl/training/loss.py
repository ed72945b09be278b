"""The training loss: squared error at every prefix of a prompt, the one definition used by
ICLModule.training_step and by the benchmark."""

from __future__ import annotations

from torch import Tensor


def prefix_losses(preds: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
    """(loss, per_position) of predictions ``preds`` (..., B, N) of targets ``ys`` (..., B, N): the
    squared error averaged over the batch at each position (..., N), and its mean over positions,
    the loss that is minimised (...,). Leading axes (an ensemble's members) are kept apart.
    Computed in float32 whatever the dtype of ``preds`` (bf16 under autocast)."""
    per_position = ((preds.float() - ys.float()) ** 2).mean(dim=-2)  # (..., N)
    return per_position.mean(dim=-1), per_position
