"""Reading checkpoints: every icl checkpoint carries its resolved config, from which the
model is rebuilt. Bad files are refused with one clear line."""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from icl.config import Config, from_dict
from icl.errors import ICLError
from icl.model import ICLTransformer


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its checkpoints/last.ckpt)."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "last.ckpt"
    if not p.is_file():
        raise ICLError(f"checkpoint not found: {p} (give a .ckpt file or a run directory with checkpoints/last.ckpt)")
    return p


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise ICLError(
            f"{p}: not a readable checkpoint (truncated or corrupted?): {str(e).splitlines()[0][:200]}"
        ) from None
    if not isinstance(ckpt, dict) or "icl_config" not in ckpt or "state_dict" not in ckpt:
        raise ICLError(f"{p}: not an icl checkpoint (no icl_config / state_dict)")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ICLTransformer, Config]:
    """Rebuild the model from a checkpoint's config and load its weights (eval mode)."""
    ckpt = read_checkpoint(path)
    cfg = from_dict(ckpt["icl_config"])
    model = ICLTransformer(dataclasses.replace(cfg.model), cfg.data.n_dims)
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ICLError(
            f"{resolve_checkpoint(path)}: weights do not match its config: {str(e).splitlines()[0][:200]}"
        ) from None
    return model.to(device).eval(), cfg
