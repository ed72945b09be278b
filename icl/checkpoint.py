"""Checkpoints: crash-safe writing (AtomicCheckpointIO), choosing the one to resume from, and
reading them back, weights-only (never running code from the file) and checked against the model
their own config rebuilds, so a bad or tampered file is refused with one clear line."""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import re
import signal
import warnings
import zipfile
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loops import _FitLoop
from omegaconf.errors import OmegaConfBaseException
from packaging.version import InvalidVersion, Version

from icl.config import Config, from_dict
from icl.errors import ICLError
from icl.fileio import atomic_writer
from icl.model import ICLTransformer

LAST = "last.ckpt"
LAST_FILE = re.compile(r"last(-v\d+)?\.ckpt")  # ModelCheckpoint's save_last names
STEP_FILE = re.compile(r"step=(\d+)\.ckpt")  # ModelCheckpoint's periodic files, step=0001000.ckpt
# Test-only fault injection: with ICL_FAULT_KILL_IN_SAVE=n the process SIGKILLs itself during its
# n-th checkpoint save (1-based), after half of the temporary file is written and synced.
FAULT_KILL_IN_SAVE = "ICL_FAULT_KILL_IN_SAVE"
PREFIX = "model."  # ICLModule's state_dict keys: its ICLTransformer is the attribute `model`
# Per-parameter Adam/AdamW state as torch and icl.training._FlatParameters write it.
MOMENTS = ("exp_avg", "exp_avg_sq")
# Optimiser options icl never turns on; each changes which state a step reads or where it may run.
OFF_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable")
_MISSING = object()  # a key the checkpoint lacks, shown as "got nothing"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer made crash-safe: temporary file, fsync, rename, fsync of the
    directory (icl.fileio.atomic_writer). A kill during a save leaves the previous file intact
    and at most a ``*.ckpt.tmp`` that no reader takes for a checkpoint. Lightning's own read of
    the checkpoint it resumes from goes through ``read_checkpoint`` and ``check_resumable``."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0
        self.kill_at = int(os.environ.get(FAULT_KILL_IN_SAVE) or 0)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        self.saves += 1
        with atomic_writer(Path(path)) as f:
            torch.save(checkpoint, f)
            if self.saves == self.kill_at:
                f.flush()
                f.truncate(f.tell() // 2)
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # Always weights-only and on the CPU (Lightning moves the state to its devices afterwards),
        # whatever the caller asks: Lightning reads checkpoints only to resume from them.
        ckpt = read_checkpoint(path)
        check_resumable(ckpt, resolve_checkpoint(path))
        return ckpt


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


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its checkpoints/last.ckpt)."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / LAST
    if not p.is_file():
        raise ICLError(f"checkpoint not found: {p} (give a .ckpt file or a run directory with checkpoints/last.ckpt)")
    return p


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of an icl checkpoint (file or run directory), loaded weights-only: tensors
    and plain values, never other objects, so nothing in the file runs. Checks what every reader
    uses: ``icl_config`` a mapping, ``state_dict`` a mapping of names to tensors, ``global_step``
    (where present) an integer >= 0."""
    p = resolve_checkpoint(path)
    ckpt = _load(p)
    if not isinstance(ckpt, dict) or "icl_config" not in ckpt or "state_dict" not in ckpt:
        raise ICLError(f"{p}: not an icl checkpoint (no icl_config / state_dict)")
    _require(isinstance(ckpt["icl_config"], dict), p, "icl_config", ckpt["icl_config"], "a mapping (the run's config)")
    state = ckpt["state_dict"]
    _require(isinstance(state, dict), p, "state_dict", state, "a mapping of tensor names to tensors")
    for k, v in state.items():
        _require(isinstance(k, str) and torch.is_tensor(v), p, f"state_dict[{k!r}]", v, "a tensor under a str name")
    if "global_step" in ckpt:
        _require(_is_count(ckpt["global_step"]), p, "global_step", ckpt["global_step"], "an integer >= 0")
    return ckpt


def _load(p: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # torch warns on stderr before refusing a pickle protocol it does not read; the refusal says it all
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # A zip archive (torch.save) or a pickle stream (legacy torch.save, pickle.dump) that the
        # weights-only unpickler stopped at: it asks for something beyond tensors and plain values.
        if "Weights only load failed" in str(e) and _head(p) in (b"PK\x03\x04", b"\x80"):
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            example = f", e.g. {found.group(1)}" if found else ""
            raise ICLError(
                f"{p}: refused: it holds objects other than tensors and plain values{example} (weights-only "
                "loading never runs code from a checkpoint); allowed: checkpoints written by icl"
            ) from None
        raise _unreadable(p, e) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, MemoryError) as e:
        raise _unreadable(p, e) from None


def _head(p: Path) -> bytes:
    with p.open("rb") as f:
        head = f.read(4)
    return head if head == b"PK\x03\x04" else head[:1]


def _unreadable(p: Path, e: BaseException) -> ICLError:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # torch wraps the weights-only unpickler's reason (e.g. "Unsupported operand 110") in advice
    # about weights_only=False that does not apply here
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    reason = next((line for line in lines if not line.startswith(boilerplate)), type(e).__name__)[:200]
    return ICLError(f"{p}: not a readable checkpoint (truncated or corrupted?): {reason}")


def check_resumable(ckpt: dict[str, Any], p: Path) -> None:
    """Everything a resume hands to Lightning, torch's optimiser and scheduler, and ICLModule,
    checked against the model the checkpoint's own ``icl_config`` builds (on the meta device, so
    nothing is allocated): the weights, one Adam state with moments shaped like the parameters,
    one LambdaLR state, Lightning's loop counters, callback and precision state. Takes what
    ``read_checkpoint`` returned; refuses anything else in one line."""
    _require("global_step" in ckpt, p, "global_step", _MISSING, "an integer >= 0 (the step to resume at)")
    _, model = _model_from_config(ckpt, p)
    _check_weights(ckpt["state_dict"], model, p)
    params = list(model.named_parameters())
    _check_optimizer(ckpt.get("optimizer_states", _MISSING), params, p)
    _check_layout(
        ckpt.get("lr_schedulers", _MISSING), [_reference_scheduler()], p, "lr_schedulers", "one LambdaLR state"
    )
    loops = ckpt.get("loops", _MISSING)
    _require(isinstance(loops, dict), p, "loops", loops, "a mapping of Lightning's loop states")
    _check_callbacks(ckpt.get("callbacks", {}), p)
    version = ckpt.get("pytorch-lightning_version", _MISSING)
    _require(_is_version(version), p, "pytorch-lightning_version", version, "a version string")
    if version == lightning.__version__:
        # Lightning migrates the loop state of checkpoints from other versions after loading them,
        # so only one written by this version can be held to this version's layout.
        fit_loop = loops.get("fit_loop", _MISSING)
        _check_layout(fit_loop, _FitLoop(None).state_dict(), p, "loops['fit_loop']", "Lightning's fit loop")
    keys = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
    for name in ("MixedPrecision", "native_amp_scaling_state"):  # 16-mixed's GradScaler, under either name
        if name in ckpt:
            scaler = ckpt[name]
            ok = isinstance(scaler, dict) and set(scaler) == keys and all(_is_real(v) for v in scaler.values())
            _require(ok, p, name, scaler, f"a GradScaler state ({', '.join(sorted(keys))}: numbers)")
    for key in ("icl_skipped_steps", "icl_metrics_rows"):
        if key in ckpt:
            _require(_is_count(ckpt[key]), p, key, ckpt[key], "an integer >= 0")


def _model_from_config(ckpt: dict[str, Any], p: Path) -> tuple[Config, ICLTransformer]:
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
        model = ICLTransformer(dataclasses.replace(cfg.model), cfg.data.n_dims)
    return cfg, model.double() if cfg.train.precision == "64-true" else model


def _check_weights(state: dict[str, Any], model: ICLTransformer, p: Path) -> None:
    want = {PREFIX + k: v for k, v in model.state_dict().items()}
    problem = _tensor_mismatch(want, state)
    if problem:
        raise ICLError(
            f"{p}: weights do not match its config: {problem}; allowed: exactly the tensors of the model its "
            "icl_config describes"
        )


def _tensor_mismatch(want: dict[str, torch.Tensor], got: dict[Any, Any]) -> str | None:
    """The first way ``got`` differs from the names, shapes and dtypes of ``want``, or None."""
    for name, ref in want.items():
        if name not in got:
            return f"missing {name} {_shape(ref)}"
        t = got[name]
        if not torch.is_tensor(t) or t.layout != torch.strided or t.is_meta:
            return f"{name} is {_what(t)}, not a dense tensor"
        if t.shape != ref.shape:
            return f"size mismatch for {name}: {_shape(t)} in the checkpoint, {_shape(ref)} in the model"
        if t.dtype != ref.dtype:
            return f"dtype mismatch for {name}: {t.dtype} in the checkpoint, {ref.dtype} in the model"
    extra = [k for k in got if k not in want]
    return f"unexpected {extra[0]}" if extra else None


def _check_optimizer(states: Any, params: list[tuple[str, torch.Tensor]], p: Path) -> None:
    """One Adam/AdamW state over the model's parameters in order (ICLModule.configure_optimizers),
    per parameter as torch writes it and _FlatParameters reads it back; _FlatParameters
    concatenates the moments into one flat buffer, so a moment of the wrong size would corrupt
    memory, not raise."""
    field = "optimizer_states"
    _require(
        isinstance(states, list) and len(states) == 1 and isinstance(states[0], dict),
        p,
        field,
        states,
        "a list of one optimizer state",
    )
    opt = states[0]
    groups, state = opt.get("param_groups", _MISSING), opt.get("state", _MISSING)
    n = len(params)
    _require(
        isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict),
        p,
        f"{field}[0]['param_groups']",
        groups,
        "a list of one parameter group",
    )
    _check_group(groups[0], n, p, f"{field}[0]['param_groups'][0]")
    where = f"{field}[0]['state']"
    _require(isinstance(state, dict), p, where, state, "a mapping of parameter indices to Adam states")
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
        _require(
            isinstance(entry, dict) and set(entry) == {"step", *MOMENTS},
            p,
            f"{where}[{i}]",
            entry,
            f"step, {', '.join(MOMENTS)}",
        )
        step = entry["step"]
        ok = (_is_real(step) or (torch.is_tensor(step) and step.dim() == 0 and step.is_floating_point())) and (
            math.isfinite(float(step)) and float(step) >= 0
        )
        _require(ok, p, f"{where}[{i}]['step']", step, "a number >= 0 or a scalar float tensor")
        for k in MOMENTS:
            want[f"{where}[{i}]['{k}'] (of {PREFIX}{name})"] = param
            got[f"{where}[{i}]['{k}'] (of {PREFIX}{name})"] = entry[k]
    problem = _tensor_mismatch(want, got)
    if problem:
        raise ICLError(
            f"{p}: {problem}; allowed: Adam moments shaped like the parameters of the model its icl_config describes"
        )


def _check_group(group: dict[str, Any], n: int, p: Path, where: str) -> None:
    _require(
        group.get("params") == list(range(n)),
        p,
        f"{where}['params']",
        group.get("params", _MISSING),
        f"the parameter indices 0..{n - 1} in order",
    )
    for key in ("lr", "eps", "weight_decay", *(["initial_lr"] if "initial_lr" in group else [])):
        v = group.get(key, _MISSING)
        _require(_is_real(v) and math.isfinite(v) and v >= 0, p, f"{where}[{key!r}]", v, "a number >= 0")
    betas = group.get("betas", _MISSING)
    ok = isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_is_real(b) and 0 <= b < 1 for b in betas)
    _require(ok, p, f"{where}['betas']", betas, "two numbers in [0, 1)")
    for key in OFF_FLAGS:
        _require(group.get(key, False) is False, p, f"{where}[{key!r}]", group.get(key), "false (icl never sets it)")
    for key, v in group.items():
        if key not in ("params", "betas"):
            _require(v is None or isinstance(v, (bool, int, float, str)), p, f"{where}[{key!r}]", v, "a plain value")
    _require(
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
            return f"{where}: got {_what(got)}, not a mapping"
        if set(got) != set(ref):
            odd = sorted(map(str, set(got) ^ set(ref)))[0]
            return f"{where}: {'unexpected' if odd in map(str, got) else 'missing'} key {odd!r}"
        return next((m for k in ref if (m := _layout_mismatch(got[k], ref[k], f"{where}[{k!r}]"))), None)
    if isinstance(ref, (list, tuple)):
        if type(got) is not type(ref) or len(got) != len(ref):
            return f"{where}: got {_what(got)}, not a {type(ref).__name__} of {len(ref)}"
        return next(
            (
                m
                for i, (g, r) in enumerate(zip(got, ref, strict=True))
                if (m := _layout_mismatch(g, r, f"{where}[{i}]"))
            ),
            None,
        )
    if torch.is_tensor(ref):
        return None if torch.is_tensor(got) else f"{where}: got {_what(got)}, not a tensor"
    return None if type(got) is type(ref) else f"{where}: got {_what(got)}, not {type(ref).__name__}"


def _check_callbacks(callbacks: Any, p: Path) -> None:
    ok = isinstance(callbacks, dict) and all(isinstance(k, str) and isinstance(v, dict) for k, v in callbacks.items())
    _require(ok, p, "callbacks", callbacks, "a mapping of callback names to states")
    for name, state in callbacks.items():
        if name.startswith("ModelCheckpoint"):
            key = "ModelCheckpoint"  # the full name spells out its settings
            paths = {
                k: state.get(k, "") for k in ("dirpath", "best_model_path", "kth_best_model_path", "last_model_path")
            }
            for k, v in paths.items():
                _require(isinstance(v, str), p, f"callbacks[{key!r}][{k!r}]", v, "a path")
            # ModelCheckpoint deletes the last checkpoint it remembers when it writes the next one
            # (last.ckpt, or last-vN.ckpt where it found a last.ckpt it did not write, e.g. in a copied run)
            last = paths["last_model_path"]
            _require(
                last == "" or LAST_FILE.fullmatch(Path(last).name) is not None,
                p,
                f"callbacks[{key!r}]['last_model_path']",
                last,
                f"a path to {LAST} or last-vN.ckpt",
            )
            _require(
                isinstance(state.get("best_k_models", {}), dict),
                p,
                f"callbacks[{key!r}]['best_k_models']",
                state.get("best_k_models"),
                "a mapping",
            )


def _require(ok: bool, p: Path, field: str, got: Any, allowed: str) -> None:
    if not ok:
        raise ICLError(f"{p}: {field}: got {_what(got)}; allowed: {allowed}")


def _what(v: Any) -> str:
    if torch.is_tensor(v):
        return f"a tensor {_shape(v)} {v.dtype}"
    if v is None or isinstance(v, (bool, int, float)):
        return repr(v)
    if isinstance(v, str):
        return repr(v[:60])
    if v is _MISSING:
        return "nothing"
    if isinstance(v, dict):
        keys = sorted(map(str, v))
        return f"a mapping with keys {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}" if keys else "{}"
    if isinstance(v, (list, tuple)):
        return f"a {type(v).__name__} of {len(v)}"
    return type(v).__name__


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_version(v: Any) -> bool:
    try:
        Version(v)
    except (InvalidVersion, TypeError):
        return False
    return True


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


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ICLTransformer, Config]:
    """Rebuild the model from a checkpoint's config and load its weights (eval mode)."""
    device = parse_device(device)
    p = resolve_checkpoint(path)
    ckpt = read_checkpoint(p)
    cfg, reference = _model_from_config(ckpt, p)
    _check_weights(ckpt["state_dict"], reference, p)
    model = ICLTransformer(dataclasses.replace(cfg.model), cfg.data.n_dims)
    model.load_state_dict({k.removeprefix(PREFIX): v for k, v in ckpt["state_dict"].items()})
    return model.to(device).eval(), cfg
