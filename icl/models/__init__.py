"""The model families behind one interface: ``build_model(cfg, n_dims)`` builds the family that
``model.family`` names; each family's size arithmetic (exact parameter count, activations held
for the backward pass) sits beside its model, for icl/resources.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from icl.model import ICLTransformer, ModelConfig
from icl.models import gpt2, lstm, mamba


@dataclasses.dataclass(frozen=True)
class Family:
    """A sequence model behind the shared read-in and read-out. ``model(cfg, n_dims)`` answers the
    predictor contract ``model(xs, ys) -> preds``; ``param_count(cfg, n_dims)``: its exact
    number of parameters, by arithmetic; ``activation_floats(cfg, batch, n_points,
    fused_attention)``: floats one of its layers holds for the backward pass of a training step."""

    model: type[nn.Module]
    param_count: Callable[[ModelConfig, int], int]
    activation_floats: Callable[[ModelConfig, int, int, bool], int]


# Keys: icl.model.FAMILIES (config validation), in the same order (tests/unit/test_model_families.py).
MODELS: dict[str, Family] = {
    "gpt2": Family(ICLTransformer, gpt2.param_count, gpt2.activation_floats),
    "lstm": Family(lstm.ICLLSTM, lstm.param_count, lstm.activation_floats),
    "mamba": Family(mamba.ICLMamba, mamba.param_count, mamba.activation_floats),
}


def family(cfg: ModelConfig) -> Family:
    """The registry entry of ``cfg.family`` (checked by ModelConfig.check)."""
    cfg.check()
    return MODELS[cfg.family]


def build_model(cfg: ModelConfig, n_dims: int) -> nn.Module:
    """The model ``cfg`` describes for ``n_dims``-dimensional inputs, freshly initialised from
    torch's global generator (callers seed it: icl/training/module.py)."""
    return family(cfg).model(cfg, n_dims)
