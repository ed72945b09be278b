"""What produced an evaluation: the checkpoint (path, global step, a hash of the weights) and the
settings (suite or scenario, prompts, seed, baselines, convention). Every evaluation record carries
both, and a cached record is reused only when both equal what would be computed now."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from icl.checkpoint.io import LAST, read_checkpoint
from icl.checkpoint.load import PREFIX
from icl.errors import ICLError
from icl.evaluation.gap import DEFINITION as GAP_DEFINITION

CHECKPOINT, SETTINGS = "checkpoint", "settings"  # the record's keys


def weights_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state_dict in key order: each key, dtype, shape and the tensor's bytes (on the
    CPU, so the same weights hash alike on any device)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_sha256(model) -> str:
    return weights_sha256(model.state_dict())


def checkpoint_step(path: Path) -> int | None:
    """The checkpoint's recorded global step (None if it records none)."""
    step = read_checkpoint(path).get("global_step")
    return step if isinstance(step, int) else None


def checkpoint_info(path: Path | None, model, step: int | None = None) -> dict[str, Any]:
    """{path, global_step, sha256} of ``model`` loaded from the checkpoint file ``path`` (None: a model
    in memory that no file is known to hold; its weights' hash still identifies it)."""
    if path is not None and step is None:
        step = checkpoint_step(path)
    return {
        "path": str(Path(path).resolve()) if path is not None else None,
        "global_step": step,
        "sha256": model_sha256(model),
    }


def infer_checkpoint(model, out_dir: Path) -> dict[str, Any]:
    """``checkpoint_info`` of a model evaluated into RUN/eval/<suite> (the end-of-training evaluation
    passes the model in memory): the run's last.ckpt when it holds exactly these weights, else the
    hash alone."""
    info = checkpoint_info(None, model)
    out_dir = Path(out_dir).resolve()
    last = out_dir.parent.parent / "checkpoints" / LAST
    if out_dir.parent.name != "eval" or not last.is_file():
        return info
    try:
        ckpt = read_checkpoint(last)
    except ICLError:
        return info
    state = {k.removeprefix(PREFIX): v for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}
    if weights_sha256(state) != info["sha256"]:
        return info
    step = ckpt.get("global_step")
    return {**info, "path": str(last), "global_step": step if isinstance(step, int) else None}


def settings(
    *,
    suite: str | None,
    scenario: str | None,
    n_prompts: int,
    seed: int,
    baselines: list[str],
    convention: str,
    definition: Any = None,
) -> dict[str, Any]:
    """The evaluation settings a record is reused for; ``definition``: what the scenario draws (e.g.
    an eval class's {name, params, noise_std}), where the name alone may not say it. The gap-closed
    metric's definition (thresholds included) is one of them: a record of another is recomputed."""
    out = {
        "suite": suite,
        "scenario": scenario,
        "n_prompts": int(n_prompts),
        "seed": int(seed),
        "baselines": list(baselines),
        "convention": convention,
        "gap_closed": GAP_DEFINITION,
    }
    if definition is not None:
        out["definition"] = json.loads(json.dumps(definition))  # as the JSON record will hold it
    return out


def matches(record: Mapping[str, Any], checkpoint: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether ``record`` was computed from ``checkpoint`` (the same weights at the same step; the
    path is for people: a moved or copied run keeps its evaluations) with the settings ``wanted``."""
    held = record.get(CHECKPOINT)
    same = isinstance(held, dict) and all(held.get(k) == checkpoint.get(k) for k in ("global_step", "sha256"))
    return same and record.get(SETTINGS) == dict(wanted)


def read_record(path: Path) -> dict[str, Any] | None:
    """A cached JSON record, or None where it is missing or unreadable (then it is recomputed)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe(checkpoint: Mapping[str, Any]) -> str:
    """One line for summaries: ``path (step N, weights sha256 0123456789ab)``."""
    step = checkpoint.get("global_step")
    where = checkpoint.get("path") or "a model in memory"
    return f"{where} (step {step if step is not None else '?'}, weights sha256 {checkpoint['sha256'][:12]})"
