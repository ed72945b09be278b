"""Which runs can train together as one ensemble: those whose configs agree on everything but
what a member may have of its own (MEMBER_KEYS), on one device in one process."""

from __future__ import annotations

from typing import Any

from icl.config import Config, flatten, to_dict

# Dotted config keys (or sections, ending in ".") a member may set differently from the others:
# its data (mixture, inputs, mixture-weight ramp), seed, learning rate and schedule, weight decay, clipping, trackers,
# evaluation and name. Everything else (the model, d, prompt length, batch size, curriculum,
# steps, optimiser kind, betas, precision, devices, checkpoint and log cadence, ...) is shared.
MEMBER_KEYS = (
    "seed",
    "name",
    "out_dir",
    "data.mixture",
    "data.mixing",
    "data.inputs.",
    "data.curriculum.weights.",
    "train.lr",
    "train.schedule",
    "train.warmup_steps",
    "train.final_lr_fraction",
    "train.weight_decay",
    "train.grad_clip",
    "train.loggers",
    "train.wandb.",
    "eval.",
)
SHARED_IN_EVAL = ("eval.every",)  # periodic evaluation runs for every member at the same steps


def is_member_key(key: str) -> bool:
    if key in SHARED_IN_EVAL:
        return False
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MEMBER_KEYS)


def shape_key(cfg: Config) -> tuple[tuple[str, str], ...]:
    """What members of one ensemble must share: every config value but the member keys."""
    return tuple((k, repr(v)) for k, v in sorted(flatten(to_dict(cfg)).items()) if not is_member_key(k))


def solo_only(cfg: Config) -> str | None:
    """Why a run cannot be an ensemble member (it then trains alone), or None."""
    t = cfg.train
    if cfg.model.family != "gpt2":
        return f"model.family={cfg.model.family}: the ensemble trainer stacks gpt2 models only"
    if t.precision == "16-mixed":
        return "train.precision=16-mixed (one loss scaler would skip every member's step for one member's overflow)"
    if str(t.devices) not in ("1", "auto") or t.num_nodes != 1 or t.strategy != "auto":
        return "several devices or processes (train.devices, num_nodes, strategy): an ensemble runs on one device"
    return None


def differences(cfgs: list[Config]) -> list[str]:
    """The shared keys on which ``cfgs`` disagree (empty: they can form one ensemble)."""
    first = dict(shape_key(cfgs[0]))
    out = []
    for cfg in cfgs[1:]:
        other = dict(shape_key(cfg))
        out += [k for k in sorted(first.keys() | other.keys()) if first.get(k) != other.get(k) and k not in out]
    return out


def group(items: list[tuple[Any, Config]], size: int, parts: int = 1) -> list[list[Any]]:
    """``items`` (tag, config) in ensembles of at most ``size`` members, in order: runs with equal
    shape keys together, split into near-equal chunks, at least ``parts`` of them where there are
    enough runs (one per worker process); runs that cannot join one alone."""
    groups: dict[Any, list[Any]] = {}
    for i, (tag, cfg) in enumerate(items):
        key = ("solo", i) if solo_only(cfg) else shape_key(cfg)
        groups.setdefault(key, []).append(tag)
    out = []
    for tags in groups.values():
        n = max(-(-len(tags) // max(1, size)), min(parts, len(tags)))  # chunks
        per = -(-len(tags) // n)
        out += [tags[i : i + per] for i in range(0, len(tags), per)]
    return out
