"""The training loss at every prefix of a prompt (``train.loss``: squared error, or the logistic
loss for +-1 labels), the one definition used by ICLModule.training_step, EnsembleModule and the
benchmark."""

from __future__ import annotations

import torch
from torch import Tensor

# train.loss -> the loss of each prediction. logistic: softplus(-y * pred) = -log sigmoid(y * pred),
# the binary cross-entropy of sigmoid(pred) against (y + 1) / 2 for labels y = +-1 (paper 2's loss
# for linear classification), computed without overflow for large |pred|.
LOSSES = {
    "squared": lambda preds, ys: (preds - ys) ** 2,
    "logistic": lambda preds, ys: torch.nn.functional.softplus(-ys * preds),
}


def prefix_losses(preds: Tensor, ys: Tensor, loss: str = "squared") -> tuple[Tensor, Tensor]:
    """(loss, per_position) of predictions ``preds`` (..., B, N) of targets ``ys`` (..., B, N): the
    ``loss`` (a LOSSES key, train.loss) averaged over the batch at each position (..., N), and its
    mean over positions, the loss that is minimised (...,). Leading axes (an ensemble's members) are
    kept apart. Computed in float32 whatever the dtype of ``preds`` (bf16 under autocast)."""
    per_position = LOSSES[loss](preds.float(), ys.float()).mean(dim=-2)  # (..., N)
    return per_position.mean(dim=-1), per_position
