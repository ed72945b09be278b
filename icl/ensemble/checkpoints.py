"""An ensemble's checkpoints are its members' own: every save writes one ordinary solo checkpoint
per member into the member's run directory (the file a solo run of that config would write at
that step, to rounding), and a resume reads the members' checkpoints back into one ensemble
state. So `icl eval`, `icl report`, `icl train --resume` and the sweep see M ordinary runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from icl.checkpoint.io import read_checkpoint
from icl.checkpoint.validate import check_resumable
from icl.checkpoint.writer import AtomicCheckpointIO
from icl.errors import ICLError
from icl.runstate import checkpoint_steps, expect_existing_checkpoints

# What an ensemble checkpoint holds per member (lists, one entry per member), beside Lightning's
# own keys, which every member shares (global step, loop counters, version).
PER_MEMBER = ("state_dict", "optimizer_states", "lr_schedulers", "callbacks")
ENSEMBLE_KEYS = ("icl_configs", "icl_skipped_steps", "icl_diverged", "icl_metrics_rows")


def member_checkpoint(ens: dict[str, Any], m: int, dirs: list[Path]) -> dict[str, Any]:
    """Member ``m``'s solo checkpoint from the ensemble's: its slice of every weight (a copy: a
    view would save the whole stacked storage), its Adam state and schedule, the checkpoint
    callback's state with the member's own paths, its config, skipped steps and metrics rows."""
    ck = {k: v for k, v in ens.items() if k not in PER_MEMBER and k not in ENSEMBLE_KEYS}
    ck["state_dict"] = {k: v[m].clone() for k, v in ens["state_dict"].items()}
    ck["optimizer_states"] = [ens["optimizer_states"][0]["members"][m]]
    sched = ens["lr_schedulers"][0]
    ck["lr_schedulers"] = [
        {**sched, "base_lrs": [sched["base_lrs"][m]], "_last_lr": [sched["_last_lr"][m]], "lr_lambdas": [None]}
    ]
    ck["callbacks"] = {
        name: _repath(state, str(dirs[0]), str(dirs[m]))
        for name, state in ens.get("callbacks", {}).items()
        if name.startswith("ModelCheckpoint")
    }
    ck["icl_config"] = ens["icl_configs"][m]
    ck["icl_format"] = 1
    ck["icl_skipped_steps"] = ens["icl_skipped_steps"][m]
    if ens["icl_metrics_rows"][m] is not None:
        ck["icl_metrics_rows"] = ens["icl_metrics_rows"][m]
    return ck


def _repath(obj: Any, old: str, new: str) -> Any:
    """``obj`` with every string (and mapping key) under directory ``old`` moved to ``new``."""
    if isinstance(obj, str):
        return new + obj[len(old) :] if obj == old or obj.startswith(old + os.sep) else obj
    if isinstance(obj, dict):
        return {_repath(k, old, new): _repath(v, old, new) for k, v in obj.items()}
    return obj


def merge_checkpoints(ckpts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ensemble's checkpoint from its members' solo ones (each read and checked to resume
    from), all at one step: the inverse of ``member_checkpoint``. The loop counters and callback
    state are the first member's (the members' are equal)."""
    first = ckpts[0]
    steps = {int(c["global_step"]) for c in ckpts}
    if len(steps) != 1:
        raise ICLError(f"ensemble resume: the members' checkpoints are at steps {sorted(steps)}; allowed: one step")
    ens = {k: v for k, v in first.items() if k not in PER_MEMBER and not k.startswith("icl_")}
    ens["state_dict"] = {k: torch.stack([c["state_dict"][k] for c in ckpts]) for k in first["state_dict"]}
    ens["optimizer_states"] = [{"members": [c["optimizer_states"][0] for c in ckpts]}]
    sched = first["lr_schedulers"][0]
    ens["lr_schedulers"] = [
        {
            **sched,
            "base_lrs": [c["lr_schedulers"][0]["base_lrs"][0] for c in ckpts],
            "_last_lr": [c["lr_schedulers"][0]["_last_lr"][0] for c in ckpts],
            "lr_lambdas": [None] * len(ckpts),
        }
    ]
    ens["callbacks"] = first.get("callbacks", {})
    ens["icl_configs"] = [c["icl_config"] for c in ckpts]
    ens["icl_skipped_steps"] = [c.get("icl_skipped_steps", 0) for c in ckpts]
    ens["icl_diverged"] = []
    ens["icl_metrics_rows"] = [c.get("icl_metrics_rows") for c in ckpts]
    return ens


def common_step(run_dirs: list[Path]) -> int | None:
    """The newest step at which every run has a checkpoint, or None. A kill during an ensemble's
    save can leave some members one save ahead; they restart from the common step with the others
    (and write the same files again: training is deterministic)."""
    steps = [set(checkpoint_steps(d)) for d in run_dirs]
    common = set.intersection(*steps) if steps else set()
    return max(common) if common else None


class MemberCheckpointIO(AtomicCheckpointIO):
    """Lightning's checkpoint writer and reader for an ensemble. A save of FILE writes each
    member's solo checkpoint to ``<member run>/checkpoints/<FILE's name>`` (atomically, as every
    checkpoint; diverged members are left out); a removal removes every member's; a load
    (resume) reads each member's checkpoint in ``resume_from`` and merges them, whatever path
    Lightning names."""

    def __init__(self, run_dirs: list[Path], resume_from: list[Path] | None = None) -> None:
        super().__init__()
        self.run_dirs = [Path(d) for d in run_dirs]
        # absolute, as ModelCheckpoint records its directory: member_checkpoint moves those paths
        self.ckpt_dirs = [(d / "checkpoints").resolve() for d in self.run_dirs]
        self.resume_from = resume_from
        if resume_from is not None:
            expect_existing_checkpoints()

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        name = Path(path).name
        diverged = set(checkpoint["icl_diverged"])
        for m, ckpt_dir in enumerate(self.ckpt_dirs):
            if m not in diverged:
                super().save_checkpoint(member_checkpoint(checkpoint, m, self.ckpt_dirs), ckpt_dir / name)

    def remove_checkpoint(self, path) -> None:
        for ckpt_dir in self.ckpt_dirs:
            (ckpt_dir / Path(path).name).unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if self.resume_from is None:
            raise ICLError("ensemble resume: no member checkpoints given")
        ckpts = []
        for p in self.resume_from:
            ckpt = read_checkpoint(p)
            check_resumable(ckpt, p)
            ckpts.append(ckpt)
        ens = merge_checkpoints(ckpts)
        # The first member's ModelCheckpoint state names the directory it was written in; moved since
        # (a copied or renamed sweep), Lightning would warn that the dirpath changed and drop the
        # state. Its files moved with it: the state names the directory the ensemble writes now.
        ens["callbacks"] = {
            name: _repath(state, state["dirpath"], str(self.ckpt_dirs[0]))
            if isinstance(state, dict) and isinstance(state.get("dirpath"), str)
            else state
            for name, state in ens["callbacks"].items()
        }
        return ens
