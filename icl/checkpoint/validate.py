"""Resume validation: the checkpoint a resume starts from (the newest complete one) and everything
in it that Lightning, torch's optimiser and scheduler and ICLModule will read, checked against the
model its own config rebuilds, so a bad or tampered file is refused in one line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.loops import _FitLoop
from packaging.version import InvalidVersion, Version

from icl.checkpoint.fields import MISSING, describe, is_count, is_real, require, tensor_mismatch
from icl.checkpoint.io import LAST, LAST_FILE, STEP_FILE, read_checkpoint
from icl.checkpoint.load import PREFIX, check_weights, model_from_config
from icl.checkpoint.reference import IMPORT_KEY
from icl.errors import ICLError

# Per-parameter Adam/AdamW state as torch and icl.speed._FlatParameters write it.
MOMENTS = ("exp_avg", "exp_avg_sq")
# Optimiser options icl never turns on; each changes which state a step reads or where it may run.
OFF_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable")


def resume_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The newest complete checkpoint of a run and its contents, checked to resume from (nothing in
    the run is written before this returns): last.ckpt, unless a kill came between writing a
    periodic step=*.ckpt and last.ckpt, which leaves the periodic one newer."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    periodic = sorted((int(m.group(1)), p) for p in ckpt_dir.glob("step=*.ckpt") if (m := STEP_FILE.fullmatch(p.name)))
    last = ckpt_dir / LAST
    if last.is_file():
        hint = f"; move it away to resume from {periodic[-1][1].name}" if periodic else ""
        ckpt = _resumable(run_dir, last, hint)
        if not periodic or periodic[-1][0] <= ckpt["global_step"]:
            return last, ckpt
        return periodic[-1][1], _resumable(run_dir, periodic[-1][1], f"; move it away to resume from {LAST}")
    if not periodic:
        raise ICLError(
            f"--resume {run_dir}: no checkpoint in {ckpt_dir} (stopped before the first save); "
            "start the run again with --overwrite"
        )
    return periodic[-1][1], _resumable(run_dir, periodic[-1][1], "")


def _resumable(run_dir: Path, path: Path, hint: str) -> dict[str, Any]:
    try:
        ckpt = read_checkpoint(path)
        check_resumable(ckpt, path)
    except ICLError as e:
        raise ICLError(f"--resume {run_dir}: {e}{hint}") from None
    return ckpt


def check_resumable(ckpt: dict[str, Any], p: Path) -> None:
    """Everything a resume hands to Lightning, torch's optimiser and scheduler, and ICLModule,
    checked against the model the checkpoint's own ``icl_config`` builds (on the meta device, so
    nothing is allocated): the weights, one Adam state with moments shaped like the parameters,
    one LambdaLR state, Lightning's loop counters, callback and precision state. Takes what
    ``read_checkpoint`` returned; refuses anything else in one line."""
    if IMPORT_KEY in ckpt:  # weights only: no optimiser, scheduler or loop state to continue from
        raise ICLError(
            f"{p}: imported by `icl import` (weights only, no training state to resume); allowed: a checkpoint "
            "icl trained (evaluate this one with icl eval)"
        )
    require("global_step" in ckpt, p, "global_step", MISSING, "an integer >= 0 (the step to resume at)")
    _, model = model_from_config(ckpt, p)
    check_weights(ckpt["state_dict"], model, p)
    params = list(model.named_parameters())
    _check_optimizer(ckpt.get("optimizer_states", MISSING), params, p)
    _check_layout(
        ckpt.get("lr_schedulers", MISSING), [_reference_scheduler()], p, "lr_schedulers", "one LambdaLR state"
    )
    loops = ckpt.get("loops", MISSING)
    require(isinstance(loops, dict), p, "loops", loops, "a mapping of Lightning's loop states")
    _check_callbacks(ckpt.get("callbacks", {}), p)
    version = ckpt.get("pytorch-lightning_version", MISSING)
    require(_is_version(version), p, "pytorch-lightning_version", version, "a version string")
    if version == lightning.__version__:
        # Lightning migrates the loop state of checkpoints from other versions after loading them,
        # so only one written by this version can be held to this version's layout.
        fit_loop = loops.get("fit_loop", MISSING)
        _check_layout(fit_loop, _FitLoop(None).state_dict(), p, "loops['fit_loop']", "Lightning's fit loop")
    keys = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
    for name in ("MixedPrecision", "native_amp_scaling_state"):  # 16-mixed's GradScaler, under either name
        if name in ckpt:
            scaler = ckpt[name]
            ok = isinstance(scaler, dict) and set(scaler) == keys and all(is_real(v) for v in scaler.values())
            require(ok, p, name, scaler, f"a GradScaler state ({', '.join(sorted(keys))}: numbers)")
    for key in ("icl_skipped_steps", "icl_metrics_rows"):
        if key in ckpt:
            require(is_count(ckpt[key]), p, key, ckpt[key], "an integer >= 0")


def _check_optimizer(states: Any, params: list[tuple[str, torch.Tensor]], p: Path) -> None:
    """One Adam/AdamW state over the model's parameters in order (ICLModule.configure_optimizers),
    per parameter as torch writes it and _FlatParameters reads it back; _FlatParameters
    concatenates the moments into one flat buffer, so a moment of the wrong size would corrupt
    memory, not raise."""
    field = "optimizer_states"
    require(
        isinstance(states, list) and len(states) == 1 and isinstance(states[0], dict),
        p,
        field,
        states,
        "a list of one optimizer state",
    )
    opt = states[0]
    groups, state = opt.get("param_groups", MISSING), opt.get("state", MISSING)
    n = len(params)
    require(
        isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict),
        p,
        f"{field}[0]['param_groups']",
        groups,
        "a list of one parameter group",
    )
    _check_group(groups[0], n, p, f"{field}[0]['param_groups'][0]")
    where = f"{field}[0]['state']"
    require(isinstance(state, dict), p, where, state, "a mapping of parameter indices to Adam states")
    missing = [i for i in range(n) if i not in state]
    if state and missing:
        name = f"{PREFIX}{params[missing[0]][0]}"
        raise ICLError(
            f"{p}: {where}: no entry for parameter {missing[0]} ({name}); allowed: one for each of 0..{n - 1}"
        )
    extra = [i for i in state if not (isinstance(i, int) and 0 <= i < n)]
    if extra:
        raise ICLError(
            f"{p}: {where}: got an entry for {extra[0]!r}; allowed: entries for parameter indices 0..{n - 1}"
        )
    want, got = {}, {}
    for i, (name, param) in enumerate(params if state else []):
        entry = state[i]
        require(
            isinstance(entry, dict) and set(entry) == {"step", *MOMENTS},
            p,
            f"{where}[{i}]",
            entry,
            f"step, {', '.join(MOMENTS)}",
        )
        step = entry["step"]
        ok = (is_real(step) or (torch.is_tensor(step) and step.dim() == 0 and step.is_floating_point())) and (
            math.isfinite(float(step)) and float(step) >= 0
        )
        require(ok, p, f"{where}[{i}]['step']", step, "a number >= 0 or a scalar float tensor")
        for k in MOMENTS:
            want[f"{where}[{i}]['{k}'] (of {PREFIX}{name})"] = param
            got[f"{where}[{i}]['{k}'] (of {PREFIX}{name})"] = entry[k]
    problem = tensor_mismatch(want, got)
    if problem:
        raise ICLError(
            f"{p}: {problem}; allowed: Adam moments shaped like the parameters of the model its icl_config describes"
        )


def _check_group(group: dict[str, Any], n: int, p: Path, where: str) -> None:
    require(
        group.get("params") == list(range(n)),
        p,
        f"{where}['params']",
        group.get("params", MISSING),
        f"the parameter indices 0..{n - 1} in order",
    )
    for key in ("lr", "eps", "weight_decay", *(["initial_lr"] if "initial_lr" in group else [])):
        v = group.get(key, MISSING)
        require(is_real(v) and math.isfinite(v) and v >= 0, p, f"{where}[{key!r}]", v, "a number >= 0")
    betas = group.get("betas", MISSING)
    ok = isinstance(betas, (list, tuple)) and len(betas) == 2 and all(is_real(b) and 0 <= b < 1 for b in betas)
    require(ok, p, f"{where}['betas']", betas, "two numbers in [0, 1)")
    for key in OFF_FLAGS:
        require(group.get(key, False) is False, p, f"{where}[{key!r}]", group.get(key), "false (icl never sets it)")
    for key, v in group.items():
        if key not in ("params", "betas"):
            require(v is None or isinstance(v, (bool, int, float, str)), p, f"{where}[{key!r}]", v, "a plain value")
    require(
        not (group.get("fused") and group.get("foreach")),
        p,
        f"{where}['fused']",
        group.get("fused"),
        "not both fused and foreach",
    )


def _reference_scheduler() -> dict[str, Any]:
    """The layout of the state of ICLModule's LambdaLR over one parameter group."""
    opt = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0).state_dict()


def _check_layout(got: Any, ref: Any, p: Path, where: str, allowed: str) -> None:
    problem = _layout_mismatch(got, ref, where)
    if problem:
        raise ICLError(f"{p}: {problem}; allowed: {allowed} as this torch and Lightning write it")


def _layout_mismatch(got: Any, ref: Any, where: str) -> str | None:
    """Where ``got`` differs in layout from ``ref``: the same keys at every level, lists of the
    same length, leaves of the same type. Lightning and torch load these states by updating
    their objects' attributes, so an unknown key or a value of another type would surface later
    as a crash (or replace a method)."""
    if isinstance(ref, dict):
        if not isinstance(got, dict):
            return f"{where}: got {describe(got)}, not a mapping"
        if set(got) != set(ref):
            odd = sorted(map(str, set(got) ^ set(ref)))[0]
            return f"{where}: {'unexpected' if odd in map(str, got) else 'missing'} key {odd!r}"
        return next((m for k in ref if (m := _layout_mismatch(got[k], ref[k], f"{where}[{k!r}]"))), None)
    if isinstance(ref, (list, tuple)):
        if type(got) is not type(ref) or len(got) != len(ref):
            return f"{where}: got {describe(got)}, not a {type(ref).__name__} of {len(ref)}"
        return next(
            (
                m
                for i, (g, r) in enumerate(zip(got, ref, strict=True))
                if (m := _layout_mismatch(g, r, f"{where}[{i}]"))
            ),
            None,
        )
    if torch.is_tensor(ref):
        return None if torch.is_tensor(got) else f"{where}: got {describe(got)}, not a tensor"
    return None if type(got) is type(ref) else f"{where}: got {describe(got)}, not {type(ref).__name__}"


def _check_callbacks(callbacks: Any, p: Path) -> None:
    ok = isinstance(callbacks, dict) and all(isinstance(k, str) and isinstance(v, dict) for k, v in callbacks.items())
    require(ok, p, "callbacks", callbacks, "a mapping of callback names to states")
    for name, state in callbacks.items():
        if name.startswith("ModelCheckpoint"):
            key = "ModelCheckpoint"  # the full name spells out its settings
            paths = {
                k: state.get(k, "") for k in ("dirpath", "best_model_path", "kth_best_model_path", "last_model_path")
            }
            for k, v in paths.items():
                require(isinstance(v, str), p, f"callbacks[{key!r}][{k!r}]", v, "a path")
            # ModelCheckpoint deletes the last checkpoint it remembers when it writes the next one
            # (last.ckpt, or last-vN.ckpt where it found a last.ckpt it did not write, e.g. in a copied run)
            last = paths["last_model_path"]
            require(
                last == "" or LAST_FILE.fullmatch(Path(last).name) is not None,
                p,
                f"callbacks[{key!r}]['last_model_path']",
                last,
                f"a path to {LAST} or last-vN.ckpt",
            )
            require(
                isinstance(state.get("best_k_models", {}), dict),
                p,
                f"callbacks[{key!r}]['best_k_models']",
                state.get("best_k_models"),
                "a mapping",
            )


def _is_version(v: Any) -> bool:
    try:
        Version(v)
    except (InvalidVersion, TypeError):
        return False
    return True
