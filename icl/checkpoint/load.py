"""Loading a trained model from a checkpoint: its own config rebuilds the model, whose tensors the
checkpoint's weights must match exactly, on a device that exists here. No Lightning."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from icl.checkpoint.fields import tensor_mismatch
from icl.checkpoint.io import read_checkpoint, resolve_checkpoint
from icl.config import Config, from_dict
from icl.errors import ICLError
from icl.models import build_model

PREFIX = "model."  # ICLModule's state_dict keys: its model is the attribute `model`


def model_from_config(ckpt: dict[str, Any], p: Path) -> tuple[Config, nn.Module]:
    """The checkpoint's config and the model it describes, on the meta device, with the weights'
    dtype in training (Lightning's 64-true trains in float64; every other precision keeps float32
    weights)."""
    try:
        cfg = from_dict(ckpt["icl_config"])
    except ICLError as e:
        raise ICLError(f"{p}: icl_config: {str(e).removeprefix('config: ')}") from None
    except OmegaConfBaseException as e:  # from_dict's OmegaConf.create of values it cannot hold
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ICLError(f"{p}: icl_config: {reason}; allowed: the config icl wrote") from None
    with torch.device("meta"):
        model = build_model(dataclasses.replace(cfg.model), cfg.data.n_dims)
    return cfg, model.double() if cfg.train.precision == "64-true" else model


def check_weights(state: dict[str, Any], model: nn.Module, p: Path) -> None:
    want = {PREFIX + k: v for k, v in model.state_dict().items()}
    problem = tensor_mismatch(want, state)
    if problem:
        raise ICLError(
            f"{p}: weights do not match its config: {problem}; allowed: exactly the tensors of the model its "
            "icl_config describes"
        )


def parse_device(name: str | torch.device) -> torch.device:
    """A torch device that exists on this machine, or one line saying why not."""
    allowed = "allowed: cpu or an available accelerator (cuda, cuda:N, mps)"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ICLError(f"--device: got {str(name)!r}, not a torch device type; {allowed}") from None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:  # accelerator not built in, absent, or no such index
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ICLError(f"--device: got {str(name)!r} ({reason}); {allowed}") from None
    return device


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild the model from a checkpoint's config and load its weights (eval mode)."""
    device = parse_device(device)
    p = resolve_checkpoint(path)
    ckpt = read_checkpoint(p)
    cfg, reference = model_from_config(ckpt, p)
    check_weights(ckpt["state_dict"], reference, p)
    model = build_model(dataclasses.replace(cfg.model), cfg.data.n_dims)
    model.load_state_dict({k.removeprefix(PREFIX): v for k, v in ckpt["state_dict"].items()})
    return model.to(device).eval(), cfg
