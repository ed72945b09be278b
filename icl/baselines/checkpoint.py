"""A trained model with ``predict(xs, ys)`` (e.g. a specialist loaded from a checkpoint by the
evaluation layer) used as a baseline."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from icl.baselines.base import Predictor, check_inputs, require


class CheckpointPredictor(Predictor):
    """Wraps an already loaded torch module whose ``predict`` follows the predictor contract.
    Predictions run in eval mode without gradients, on the module's device and dtype; the result
    comes back on the input's device and dtype, and the module's train/eval mode is restored."""

    name = "checkpoint"

    def __init__(self, model: Any, label: str = "checkpoint") -> None:
        require(
            callable(getattr(model, "predict", None)),
            "checkpoint.model",
            "an object with a predict(xs, ys) method",
            type(model).__name__,
        )
        require(isinstance(label, str) and label != "", "checkpoint.label", "a non-empty string", label)
        self.model = model
        self.label = label

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        params = next(iter(self.model.parameters()), None) if hasattr(self.model, "parameters") else None
        device = params.device if params is not None else xs.device
        dtype = params.dtype if params is not None else xs.dtype
        training = getattr(self.model, "training", False)
        if hasattr(self.model, "eval"):
            self.model.eval()
        try:
            with torch.no_grad():
                preds = self.model.predict(xs.to(device, dtype), ys.to(device, dtype))
        finally:
            if training and hasattr(self.model, "train"):
                self.model.train(True)
        return preds.to(xs.device, ys.dtype)
