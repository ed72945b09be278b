"""`icl import`: a checkpoint of Garg et al.'s reference code (github.com/dtsip/in-context-learning; a
``state.pt`` or ``model_<step>.pt`` beside its ``config.yaml``) made into an icl run directory whose
model computes the same predictions: GPT-2's weights mapped exactly, its tanh GELU, its task named
by the icl function class with the reference's scaling."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from icl import outputs
from icl.checkpoint.fields import describe, shape_of
from icl.checkpoint.io import LAST
from icl.checkpoint.load import PREFIX
from icl.checkpoint.unpickle import Opaque, load_restricted
from icl.config import from_dict, to_dict
from icl.errors import ICLError
from icl.fileio import atomic_write, atomic_writer
from icl.model import ICLTransformer
from icl.outputs import CONFIG_FILE
from icl.yamlio import read_yaml

STATE_FILE = "state.pt"  # the reference's training state: model_state_dict, optimizer_state_dict, train_step
MODEL_FILE = re.compile(r"model_(\d+)\.pt")  # the reference's kept snapshots: a bare state dict
CONF_FILE = "config.yaml"
IMPORT_KEY = "icl_import"  # in the imported checkpoint: where it came from
FORMAT = "garg2022"
MODEL_KEYS = ("n_dims", "n_positions", "n_embd", "n_layer", "n_head")
# Tensors of the reference's GPT2Model that no prediction reads: the token embedding (the model is
# fed embeddings) and the causal-mask buffers older transformers versions saved.
UNUSED = re.compile(r"_backbone\.(wte\.weight|h\.\d+\.attn\.(bias|masked_bias))")
# dtypes whose values float32 holds exactly
EXACT_IN_FLOAT32 = (torch.float32, torch.float16, torch.bfloat16)


@dataclasses.dataclass
class Imported:
    run_dir: Path
    source: Path
    task: str  # the reference's task name
    mixture: str  # what data.mixture became, e.g. "dense_linear(normalize=False)"
    notes: list[str]


# ---- the reference's tasks -> icl function classes ---------------------------------------------------
# Each entry maps the reference's task_kwargs to one data.mixture component with the reference's
# scaling (unit-variance x, so Var y = d for the linear classes), or None when icl has no class that
# computes the same functions from those kwargs.


def _scaled(kw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
    scale = kw.get("scale", 1)
    if not _is_number(scale) or scale <= 0:
        return None
    return {**params, **({"w_scale": float(scale)} if scale != 1 else {})}


def _linear(kw: dict[str, Any], n_dims: int) -> dict[str, Any] | None:
    params = _scaled(kw, {"normalize": False})
    return None if params is None or set(kw) - {"scale"} else {"name": "dense_linear", "params": params}


def _sparse_linear(kw: dict[str, Any], n_dims: int) -> dict[str, Any] | None:
    nnz = kw.get("sparsity", 3)  # the reference's default
    if set(kw) - {"scale", "sparsity", "valid_coords"} or kw.get("valid_coords", n_dims) != n_dims:
        return None
    params = _scaled(kw, {"nnz": nnz, "normalize": False})
    return None if params is None else {"name": "sparse_linear", "params": params}


def _noisy_linear(kw: dict[str, Any], n_dims: int) -> dict[str, Any] | None:
    noise = kw.get("noise_std", 0)
    if kw.get("renormalize_ys") or not _is_number(noise) or noise < 0:
        return None
    base = _linear({k: v for k, v in kw.items() if k not in ("noise_std", "renormalize_ys")}, n_dims)
    return None if base is None else {**base, "noise_std": float(noise)}


def _relu_2nn(kw: dict[str, Any], n_dims: int) -> dict[str, Any] | None:
    if set(kw) - {"scale", "hidden_layer_size"} or kw.get("scale", 1) != 1:
        return None
    return {"name": "relu_2nn", "params": {"hidden": kw.get("hidden_layer_size", 100), "normalize": False}}


def _quadratic(kw: dict[str, Any], n_dims: int) -> dict[str, Any] | None:
    if set(kw) - {"scale"} or kw.get("scale", 1) != 1:
        return None
    return {"name": "quadratic", "params": {"normalize": False}}  # w . (x * x) / sqrt(3), as theirs


def _classification(kw: dict[str, Any], n_dims: int) -> dict[str, Any] | None:
    return None if set(kw) - {"scale"} else {"name": "linear_classification"}  # a scale changes no label


def _decision_tree(kw: dict[str, Any], n_dims: int) -> dict[str, Any] | None:
    depth = kw.get("depth", 4)
    if set(kw) - {"depth"} or not isinstance(depth, int) or depth < 1:
        return None
    return {"name": "decision_tree", "params": {"depth": depth}}


REFERENCE_TASKS = {
    "linear_regression": _linear,
    "sparse_linear_regression": _sparse_linear,
    "noisy_linear_regression": _noisy_linear,
    "relu_2nn_regression": _relu_2nn,
    "quadratic_regression": _quadratic,
    "linear_classification": _classification,
    "decision_tree": _decision_tree,
}
# The reference trains each task on its own training metric: logistic for classification.
REFERENCE_LOSS = {"linear_classification": "logistic"}
# What an unmapped task's run is given as its training distribution, so that it validates and
# evaluates; the model can be evaluated on any class with --suite.
PLACEHOLDER = {"name": "dense_linear", "params": {"normalize": False}}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _label(component: dict[str, Any]) -> str:
    shown = [f"{k}={v}" for k, v in component.get("params", {}).items()]
    if component.get("noise_std"):
        shown.append(f"noise_std={component['noise_std']}")
    return f"{component['name']}({', '.join(shown)})"


# ---- reading ---------------------------------------------------------------------------------------


def _locate(src: Path, conf: Path | None) -> tuple[Path, Path]:
    """The checkpoint file and its conf: SRC/state.pt and SRC/config.yaml for a run directory, the
    config.yaml beside a file."""
    if src.is_dir():
        ckpt = src / STATE_FILE
        if not ckpt.is_file():
            raise ICLError(
                f"{src}: no {STATE_FILE} in this directory; allowed: a reference run directory (state.pt and "
                "config.yaml), or a state.pt / model_<step>.pt file"
            )
    elif src.is_file():
        ckpt = src
    else:
        raise ICLError(f"checkpoint not found: {src}; allowed: a state.pt / model_<step>.pt file or a run directory")
    conf = conf if conf is not None else ckpt.parent / CONF_FILE
    if not conf.is_file():
        raise ICLError(
            f"{conf}: no reference config there; allowed: --conf CONF.yaml, the config.yaml the reference code "
            "saved beside the checkpoint (its model: and training: sections)"
        )
    return ckpt, conf


def _read_torch(p: Path, notes: list[str]) -> Any:
    """The file's contents, weights-only. A torch.save archive that the weights-only loader refuses
    because it also holds other objects (an optimiser state of another torch version, say) is read
    again with every such object replaced by an inert placeholder, so its tensors still load."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        with p.open("rb") as f:
            pickle_stream = f.read(1) == b"\x80"  # a legacy torch.save file: a pickle of protocol >= 2
        if "Weights only load failed" not in str(e) or not (zipfile.is_zipfile(p) or pickle_stream):
            raise _unreadable(p, e) from None
        if not zipfile.is_zipfile(p):
            raise ICLError(
                f"{p}: refused: a legacy (not zip) torch.save file holding objects other than tensors and plain "
                "values; allowed: a torch.save zip archive, or one of tensors and plain values"
            ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, MemoryError) as e:
        raise _unreadable(p, e) from None
    obj, opaque = load_restricted(p)
    names = sorted(set(opaque))
    notes.append(
        f"{p} also holds objects other than tensors and plain values ({', '.join(names[:3])}"
        f"{', ...' if len(names) > 3 else ''}); read without them (nothing in the file was run)"
    )
    return obj


def _unreadable(p: Path, e: BaseException) -> ICLError:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # torch wraps the weights-only unpickler's reason in advice (weights_only=False) that does not apply
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    reason = next((line for line in lines if not line.startswith(boilerplate)), type(e).__name__)[:200]
    return ICLError(f"{p}: not a readable checkpoint (truncated, corrupted or not torch.save?): {reason}")


def _model_state(obj: Any, p: Path) -> tuple[dict[str, Any], int | None]:
    """(model state dict, training step or None) of a reference state.pt or model_<step>.pt."""
    if isinstance(obj, dict) and "icl_config" in obj:
        raise ICLError(f"{p}: already an icl checkpoint; allowed: a reference checkpoint (evaluate this one directly)")
    if isinstance(obj, dict) and "model_state_dict" in obj:
        state, step = obj["model_state_dict"], obj.get("train_step")
        step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None
    elif isinstance(obj, dict) and any(isinstance(k, str) and k.startswith("_read_in.") for k in obj):
        state, m = obj, MODEL_FILE.fullmatch(p.name)
        step = int(m.group(1)) if m else None
    else:
        raise ICLError(
            f"{p}: not a reference checkpoint: got {describe(obj)}; allowed: a state.pt (with model_state_dict) or "
            "a model_<step>.pt (a state dict of _read_in, _backbone, _read_out tensors)"
        )
    if not isinstance(state, dict):
        raise ICLError(f"{p}: model_state_dict: got {describe(state)}; allowed: a mapping of tensor names to tensors")
    return state, step


def _read_conf(conf: Path) -> dict[str, Any]:
    data = read_yaml(conf, "reference config")
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ICLError(
            f"{conf}: no model: section; allowed: the reference code's config.yaml (model: n_dims, n_positions, "
            "n_embd, n_layer, n_head; training: task, ...)"
        )
    model = data["model"]
    family = model.get("family", "gpt2")
    if family != "gpt2":
        raise ICLError(f"{conf}: model.family: got {family!r}; allowed: gpt2 (the only reference model icl rebuilds)")
    for key in MODEL_KEYS:
        v = model.get(key)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            extra = (
                " (a config with inherit: must first be resolved: give the config.yaml of the run)"
                if ("inherit" in data)
                else ""
            )
            raise ICLError(f"{conf}: model.{key}: got {describe(v)}; allowed: an integer >= 1{extra}")
    training = data.get("training") or {}
    if not isinstance(training, dict):
        raise ICLError(f"{conf}: training: got {describe(training)}; allowed: a mapping (task, task_kwargs, ...)")
    task, kwargs = training.get("task"), training.get("task_kwargs") or {}
    if not isinstance(task, str) or not task:
        raise ICLError(f"{conf}: training.task: got {describe(task)}; allowed: a task name, e.g. linear_regression")
    if not isinstance(kwargs, dict):
        raise ICLError(f"{conf}: training.task_kwargs: got {describe(kwargs)}; allowed: a mapping")
    return data


# ---- the weights -------------------------------------------------------------------------------------


def _expected(m: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the reference model of conf ``m`` holds and a prediction reads."""
    D, E, L = m["n_dims"], m["n_embd"], m["n_layer"]
    shapes = {
        "_read_in.weight": (E, D),
        "_read_in.bias": (E,),
        "_backbone.wpe.weight": (2 * m["n_positions"], E),
        "_backbone.ln_f.weight": (E,),
        "_backbone.ln_f.bias": (E,),
        "_read_out.weight": (1, E),
        "_read_out.bias": (1,),
    }
    for i in range(L):
        h = f"_backbone.h.{i}."
        # transformers' Conv1D stores its weight as (in, out): the transpose of nn.Linear's (out, in)
        shapes |= {
            h + "ln_1.weight": (E,),
            h + "ln_1.bias": (E,),
            h + "attn.c_attn.weight": (E, 3 * E),
            h + "attn.c_attn.bias": (3 * E,),
            h + "attn.c_proj.weight": (E, E),
            h + "attn.c_proj.bias": (E,),
            h + "ln_2.weight": (E,),
            h + "ln_2.bias": (E,),
            h + "mlp.c_fc.weight": (E, 4 * E),
            h + "mlp.c_fc.bias": (4 * E,),
            h + "mlp.c_proj.weight": (4 * E, E),
            h + "mlp.c_proj.bias": (E,),
        }
    return shapes


# reference name -> (icl name, transposed: Conv1D weights)
_TOP = {
    "_read_in.weight": ("read_in.weight", False),
    "_read_in.bias": ("read_in.bias", False),
    "_backbone.wpe.weight": ("pos", False),  # one learned vector per token, as icl's learned positions
    "_backbone.ln_f.weight": ("ln_f.weight", False),
    "_backbone.ln_f.bias": ("ln_f.bias", False),
    "_read_out.weight": ("read_out.weight", False),
    "_read_out.bias": ("read_out.bias", False),
}
_BLOCK = {
    "ln_1.weight": ("ln1.weight", False),
    "ln_1.bias": ("ln1.bias", False),
    "attn.c_attn.weight": ("attn.qkv.weight", True),  # columns q | k | v, heads contiguous: icl's qkv layout
    "attn.c_attn.bias": ("attn.qkv.bias", False),
    "attn.c_proj.weight": ("attn.proj.weight", True),
    "attn.c_proj.bias": ("attn.proj.bias", False),
    "ln_2.weight": ("ln2.weight", False),
    "ln_2.bias": ("ln2.bias", False),
    "mlp.c_fc.weight": ("fc.weight", True),
    "mlp.c_fc.bias": ("fc.bias", False),
    "mlp.c_proj.weight": ("fc_out.weight", True),
    "mlp.c_proj.bias": ("fc_out.bias", False),
}
_BLOCK_NAME = re.compile(r"_backbone\.h\.(\d+)\.(.+)")


def _icl_name(ref: str) -> tuple[str, bool]:
    if ref in _TOP:
        return _TOP[ref]
    m = _BLOCK_NAME.fullmatch(ref)
    name, transposed = _BLOCK[m.group(2)]
    return f"blocks.{m.group(1)}.{name}", transposed


def map_weights(state: dict[str, Any], m: dict[str, int], p: Path, conf: Path) -> dict[str, torch.Tensor]:
    """icl's ICLTransformer state dict from the reference's, after checking every name and shape
    against the conf's sizes."""
    sizes = ", ".join(f"{k}={m[k]}" for k in MODEL_KEYS)
    allowed = f"allowed: the tensors of the reference model {conf} describes ({sizes})"
    want = _expected(m)
    for name, shape in want.items():
        t = state.get(name)
        if t is None:
            raise ICLError(f"{p}: missing {name} {shape}; {allowed}")
        if isinstance(t, Opaque) or not torch.is_tensor(t) or t.layout != torch.strided:
            raise ICLError(f"{p}: {name}: got {describe(t)}, not a dense tensor; {allowed}")
        if tuple(t.shape) != shape:
            raise ICLError(
                f"{p}: size mismatch for {name}: {shape_of(t)} in the checkpoint, {shape} by the conf; {allowed}"
            )
        if t.dtype not in EXACT_IN_FLOAT32:
            raise ICLError(f"{p}: {name}: dtype {t.dtype}; allowed: float32, float16 or bfloat16 weights")
    extra = sorted(str(k) for k in state if k not in want and not (isinstance(k, str) and UNUSED.fullmatch(k)))
    if extra:
        raise ICLError(
            f"{p}: unexpected {extra[0]}{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}; {allowed}"
        )
    mapped = {}
    for ref in want:
        name, transposed = _icl_name(ref)
        t = state[ref].to(torch.float32)
        mapped[name] = (t.T if transposed else t).contiguous()
    return mapped


# ---- the run -----------------------------------------------------------------------------------------


def _ramp(curriculum: Any, key: str) -> dict[str, int] | None:
    ramp = curriculum.get(key) if isinstance(curriculum, dict) else None
    fields = ("start", "end", "inc", "interval")
    if not isinstance(ramp, dict) or not all(isinstance(ramp.get(f), int) for f in fields):
        return None
    return {f: ramp[f] for f in fields}


def build_config(data: dict[str, Any], conf: Path, step: int | None, name: str, notes: list[str]) -> dict[str, Any]:
    """The icl config of the reference run ``data`` (its config.yaml): the same model with GPT-2's tanh
    GELU, the task as an icl function class with the reference's scaling, the curriculum, batch and
    learning rate it trained with."""
    m, training = data["model"], data["training"]
    task, kwargs = training["task"], training.get("task_kwargs") or {}
    mapper = REFERENCE_TASKS.get(task)
    component = mapper(kwargs, m["n_dims"]) if mapper else None
    if component is None:
        why = "no icl function class" if mapper is None else "no icl function class for its task_kwargs"
        shown = f" with task_kwargs {kwargs}" if kwargs else ""
        notes.append(
            f"reference task {task!r}{shown} has {why}; data.mixture is {_label(PLACEHOLDER)} as a placeholder: "
            "evaluate the model on the classes you choose with icl eval --suite"
        )
        component = PLACEHOLDER
    curriculum = training.get("curriculum")
    dims, points = _ramp(curriculum, "dims"), _ramp(curriculum, "points")
    n_points = points["end"] if points else m["n_positions"]
    if points is None:
        notes.append(f"{conf}: no training.curriculum.points; data.n_points is model.n_positions ({n_points})")
    if dims is not None and dims["end"] != m["n_dims"]:
        notes.append(f"{conf}: trained on at most {dims['end']} of {m['n_dims']} input dims (curriculum.dims.end)")
        dims = None
    ramps = {k: {**r, "end": 0} for k, r in (("dims", dims), ("points", points)) if r is not None}
    train: dict[str, Any] = {"steps": max(step or 0, 1)}
    if component is not PLACEHOLDER and task in REFERENCE_LOSS:
        train["loss"] = REFERENCE_LOSS[task]
    lr, batch = training.get("learning_rate"), training.get("batch_size")
    if _is_number(lr) and lr > 0:
        train["lr"] = float(lr)
    return {
        "name": name,
        "data": {
            "n_dims": m["n_dims"],
            "n_points": n_points,
            **({"batch_size": batch} if isinstance(batch, int) and not isinstance(batch, bool) else {}),
            "mixture": [{"weight": 1.0, **component}],
            "curriculum": ramps,
        },
        "model": {
            "n_layer": m["n_layer"],
            "n_head": m["n_head"],
            "n_embd": m["n_embd"],
            "max_points": m["n_positions"],  # GPT2Config(n_positions=2 * n_positions): one position per token
            "positions": "learned",
            "token_format": "interleaved",  # the reference's _combine: [x_i, (y_i, 0, ..., 0)]
            "dropout": 0.0,
            "mlp_ratio": 4,
            "activation": "gelu_tanh",  # GPT-2's gelu_new
        },
        "train": train,
    }


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _run_name(out: Path) -> str:
    name = out.resolve().name
    return name if name.replace("-", "").replace("_", "").replace(".", "").isalnum() else "imported"


def import_reference(src: str | Path, conf: str | Path | None, out: str | Path) -> Imported:
    """Write the icl run directory ``out`` (config.yaml, checkpoints/last.ckpt) of the reference
    checkpoint ``src`` and its conf. Everything is read and checked before anything is written, and
    ``out`` must be a new or empty path."""
    src, out = Path(src), Path(out)
    ckpt_path, conf_path = _locate(src, Path(conf) if conf is not None else None)
    if outputs.holds_files(out):
        raise ICLError(f"--out {out}: exists and holds files; allowed: a new or empty path")
    outputs.check_replaceable(out, outputs.RUN, "--out")
    data = _read_conf(conf_path)
    notes: list[str] = []
    state, step = _model_state(_read_torch(ckpt_path, notes), ckpt_path)
    weights = map_weights(state, data["model"], ckpt_path, conf_path)
    if step is None:
        notes.append(f"{ckpt_path}: no training step recorded (train_step, or model_<step>.pt); recorded as none")
    cfg_dict = build_config(data, conf_path, step, _run_name(out), notes)
    try:
        cfg = from_dict(cfg_dict)
    except ICLError as e:
        raise ICLError(f"{conf_path}: {str(e).removeprefix('config: ')}") from None
    model = ICLTransformer(dataclasses.replace(cfg.model), cfg.data.n_dims)
    model.load_state_dict(weights)  # strict: exactly the model's names and shapes
    state_dict = {PREFIX + k: v for k, v in model.state_dict().items()}
    sha = _sha256(ckpt_path)
    record = {
        "format": FORMAT,
        "source": str(ckpt_path.resolve()),
        "sha256": sha,
        "conf": str(conf_path.resolve()),
        "task": data["training"]["task"],
        "train_step": step,
        "notes": notes,
    }
    checkpoint = {"icl_config": to_dict(cfg), "state_dict": state_dict, IMPORT_KEY: record}
    if step is not None:
        checkpoint["global_step"] = step
    header = f"# imported by `icl import` from {record['source']} (sha256 {sha}), conf {record['conf']}\n"
    out.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out / "checkpoints" / LAST) as f:
        torch.save(checkpoint, f)
    atomic_write(out / CONFIG_FILE, header + OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    outputs.mark(out, outputs.RUN)
    return Imported(out, ckpt_path, record["task"], _label(cfg_dict["data"]["mixture"][0]), notes)
