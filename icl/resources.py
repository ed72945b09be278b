"""Sizes by arithmetic, never by building a model: the exact parameter count of a config's
model (each family's arithmetic sits beside it in icl/models/), checkpoint bytes, estimates of
training and evaluation memory, and the checks that refuse a run or an evaluation that cannot
fit, before anything is written."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from icl.config import Config
from icl.errors import ICLError
from icl.eval_config import MAX_PROMPTS
from icl.model import ModelConfig
from icl.models import family
from icl.tasks import TASKS, build_task

# Mirrors of the evaluation code's constants (tests/unit/test_config.py keeps them equal):
# prompts drawn per block (icl/evaluation/curves.py BLOCK) and bootstrap resamples
# (CurveResult.summary's n_boot).
EVAL_BLOCK = 100
BOOTSTRAP_SAMPLES = 1000

# The bootstrap's (resamples, prompts, positions) float64 array and its index, times this
# allowance: measured end-of-training evaluation at 200, 1000 and 2000 prompts (d = 20, N = 41)
# grew 1.1-1.3x faster than those arrays alone.
BOOTSTRAP_ALLOWANCE = 1.25
# Baselines solve in chunks of about this many float64 elements (icl/baselines/base.py
# batch_chunks), a few arrays of that size at once.
BASELINE_CHUNK = 1 << 23
BASELINE_ARRAYS = 2
# Each data-parallel process beyond this one starts its own interpreter with torch and Lightning
# (measured: 403 MiB resident after `import icl.runs`).
PROCESS_BYTES = 400 << 20


def param_count(model: ModelConfig, n_dims: int) -> int:
    """The exact number of parameters of ``build_model(model, n_dims)`` (tested against the built
    models of every family)."""
    return family(model).param_count(model, n_dims)


def _itemsize(precision: str) -> int:
    # bf16-mixed and 16-mixed keep fp32 weights and optimiser state; their activations are
    # partly half precision, so fp32 sizes are an upper bound there.
    return 8 if precision == "64-true" else 4


def checkpoint_bytes(cfg: Config) -> int:
    """Size of one checkpoint: the weights and Adam's two moments."""
    return 3 * _itemsize(cfg.train.precision) * param_count(cfg.model, cfg.data.n_dims)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes, by what holds them. ``working`` memory is freed and reused between the phases of a
    run (a training step's activations, then evaluation's per-block work); ``retained`` arrays
    (the evaluation's errors and bootstrap) are fresh allocations on top."""

    params: int
    states: int  # weights (and position buffers), gradients, Adam's two moments
    training: int  # one step's activations and batch (and the interpreters of extra processes)
    evaluation_working: int  # one block of prompts through the model and the baselines
    evaluation_retained: int  # squared errors of every predictor, the bootstrap

    @property
    def total(self) -> int:
        return self.states + max(self.training, self.evaluation_working) + self.evaluation_retained


def batch_bytes(cfg: Config, batch: int, n_points: int | None = None, skewed: bool | None = None) -> int:
    """One batch as sampled: inputs (drawn, transformed, padded), targets and every mixture
    component's parameters and intermediate values (each component is drawn for the whole batch)."""
    n, d = n_points or cfg.data.n_points, cfg.data.n_dims
    per_sequence = 3 * n * d + 2 * n
    for spec in cfg.data.mixture:
        task = build_task(spec.name, spec.params)
        per_sequence += task.floats_per_sequence(n, d)
    skewed = cfg.data.inputs.covariance != "isotropic" if skewed is None else skewed
    basis = 4 * 8 * d * d if skewed else 0  # float64 d x d Gaussian, its QR and the factor
    return 4 * batch * per_sequence + basis


def _activation_floats(model: ModelConfig, batch: int, n_points: int, fused_attention: bool = False) -> int:
    """Floats one layer of ``model`` holds for the backward pass (its family's estimate, e.g.
    icl/models/gpt2.py). ``fused_attention``: the run is on an accelerator."""
    return family(model).activation_floats(model, batch, n_points, fused_attention)


def evaluation_estimate(
    cfg: Config,
    n_prompts: int,
    n_predictors: int | None = None,
    n_points: int | None = None,
    skewed: bool | None = None,
) -> tuple[int, int]:
    """(working, retained) bytes of evaluating ``n_prompts`` prompts per scenario: scenarios run
    one after another, blocks of EVAL_BLOCK prompts go through the model (no gradients: one
    layer's activations at a time) and the baselines; the squared errors of every predictor are
    kept as float64 and the 90% interval resamples them BOOTSTRAP_SAMPLES times. ``skewed``:
    whether a scenario draws skewed-covariance inputs (default: as in training)."""
    n = n_points or cfg.data.n_points
    d = cfg.data.n_dims
    n_predictors = 1 + len(cfg.eval.baselines) if n_predictors is None else n_predictors
    itemsize = _itemsize(cfg.train.precision)
    model = itemsize * _activation_floats(cfg.model, EVAL_BLOCK, n)
    per_prompt_solve = n * n * max(n, d)
    baselines = 8 * BASELINE_ARRAYS * min(EVAL_BLOCK * per_prompt_solve, max(BASELINE_CHUNK, per_prompt_solve))
    working = model + baselines + batch_bytes(cfg, EVAL_BLOCK, n, skewed)
    errors = 8 * n_predictors * n_prompts * n
    bootstrap = math.ceil(BOOTSTRAP_ALLOWANCE * 8 * BOOTSTRAP_SAMPLES * n_prompts * (n + 1))
    return working, errors + bootstrap


def training_estimate(
    cfg: Config, processes: int = 1, world_size: int | None = None, fused_attention: bool = False
) -> MemoryEstimate:
    """Memory of ``icl train`` with ``cfg``: ``processes`` data-parallel processes sharing this
    memory, each holding the model and 1/``world_size`` of the batch (``world_size`` defaults to
    ``processes``), then rank 0's end-of-training evaluation (``eval.n_prompts`` on the
    in-distribution suite) and the periodic evaluation. ``fused_attention``: on an accelerator."""
    itemsize = _itemsize(cfg.train.precision)
    m = cfg.model
    params = param_count(m, cfg.data.n_dims)
    buffers = 0 if m.positions == "learned" else 2 * m.max_points * m.n_embd
    states = itemsize * (4 * params + buffers)
    batch = -(-cfg.data.batch_size // (world_size or processes))
    activations = _activation_floats(m, batch, cfg.data.n_points, fused_attention)
    step = itemsize * m.n_layer * activations + batch_bytes(cfg, batch)
    working, retained = evaluation_estimate(cfg, cfg.eval.n_prompts)
    if cfg.eval.every:
        periodic_working, _ = evaluation_estimate(cfg, cfg.eval.periodic_n_prompts)
        periodic_errors = 8 * (1 + len(cfg.eval.periodic_baselines)) * cfg.eval.periodic_n_prompts * cfg.data.n_points
        working = max(working, periodic_working + periodic_errors)  # no bootstrap: means only
    return MemoryEstimate(
        params, processes * states, processes * step + (processes - 1) * PROCESS_BYTES, working, retained
    )


def available_memory() -> int | None:
    """Bytes this machine can give a new allocation without swapping: MemAvailable on Linux (free
    memory plus what the kernel can reclaim), else the free physical pages; None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    for unit, size in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            v = n / size
            return f"{v:.1e} {unit}" if v >= 1e4 else f"{v:.1f} {unit}" if v < 10 else f"{v:.0f} {unit}"
    return f"{int(n)} bytes"


def human_count(n: int) -> str:
    for unit, size in (("trillion", 1e12), ("billion", 1e9), ("million", 1e6), ("thousand", 1e3)):
        if n >= size:
            v = n / size
            return f"{v:.1e} {unit}" if v >= 1e4 else f"{v:.1f} {unit}" if v < 10 else f"{v:.0f} {unit}"
    return str(n)


def _size_keys(cfg: Config) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, default) of every config value the estimate grows with."""
    keys = []
    for section, names in (
        ("model", ("n_layer", "n_head", "n_embd", "mlp_ratio", "max_points", "d_state")),
        ("data", ("batch_size", "n_points", "n_dims")),
        ("eval", ("n_prompts",)),
    ):
        obj = getattr(cfg, section)
        defaults = {f.name: f.default for f in dataclasses.fields(obj)}
        keys += [(f"{section}.{name}", getattr(obj, name), defaults[name]) for name in names]
    for i, spec in enumerate(cfg.data.mixture):
        cls = TASKS.get(spec.name)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)} if cls else {}
        for k, v in spec.params.items():
            if isinstance(v, int) and not isinstance(v, bool) and isinstance(defaults.get(k), int):
                keys.append((f"data.mixture[{i}].params.{k}", v, defaults[k]))
    return keys


def _with(cfg: Config, key: str, value: Any) -> Config:
    out = copy.deepcopy(cfg)
    if key.startswith("data.mixture["):
        i = int(key[len("data.mixture[") : key.index("]")])
        out.data.mixture[i].params[key.rsplit(".", 1)[1]] = value
    else:
        section, name = key.split(".")
        setattr(getattr(out, section), name, value)
    return out


def _culprit(cfg: Config, total: int, estimate) -> str | None:
    """The key whose return to its default would shrink the estimate most (at least 2x), as
    ``key=value``; None when no single key stands out."""
    best, label = 2.0, None
    for key, value, default in _size_keys(cfg):
        if value == default:
            continue
        shrunk = estimate(_with(cfg, key, default))
        if shrunk > 0 and total / shrunk >= best:
            best, label = total / shrunk, f"{key}={value}"
    return label


def check_resources(
    cfg: Config,
    available_bytes: int | None = None,
    processes: int = 1,
    world_size: int | None = None,
    fused_attention: bool = False,
) -> None:
    """Refuse a training run whose estimated memory (``training_estimate``) exceeds
    ``available_bytes`` (default: this machine's available memory). On an accelerator pass the
    device's free memory (``torch.cuda.mem_get_info()[0]``), ``processes=1``, the job's world
    size and ``fused_attention=True``. Arithmetic only: well under a second for any config."""
    available = available_memory() if available_bytes is None else available_bytes
    est = training_estimate(cfg, processes, world_size, fused_attention)
    if available is None or est.total <= available:
        return
    label = _culprit(cfg, est.total, lambda c: training_estimate(c, processes, world_size, fused_attention).total)
    label = label or "model and data.batch_size"
    evaluation = max(0, max(est.training, est.evaluation_working) - est.training) + est.evaluation_retained
    raise ICLError(
        f"{label}: about {human_count(est.params)} parameters, training needs about {human_bytes(est.total)} of "
        f"memory (weights and Adam state {human_bytes(est.states)}, activations {human_bytes(est.training)}, "
        f"evaluation {human_bytes(evaluation)}), {human_bytes(available)} available; "
        "allowed: a model and batch that fit (smaller model.n_layer / n_embd, data.batch_size or eval.n_prompts)"
    )


def check_evaluation(
    cfg: Config,
    n_prompts: int,
    field: str = "--n-prompts",
    *,
    n_predictors: int | None = None,
    n_points: int | None = None,
    skewed: bool | None = None,
    available_bytes: int | None = None,
) -> None:
    """Refuse an evaluation of ``n_prompts`` prompts per scenario (named ``field`` in the message)
    that exceeds MAX_PROMPTS or whose estimated memory, with the model's weights, exceeds
    ``available_bytes`` (default: this machine's available memory). ``n_points``: the longest
    scenario's prompt length; ``skewed``: whether a scenario draws skewed-covariance inputs."""
    if not 1 <= n_prompts <= MAX_PROMPTS:
        raise ICLError(f"{field}: got {n_prompts}; allowed: an integer in 1..{MAX_PROMPTS}")
    available = available_memory() if available_bytes is None else available_bytes
    if available is None:
        return
    weights = _itemsize(cfg.train.precision) * param_count(cfg.model, cfg.data.n_dims)

    def need(p: int) -> int:
        working, retained = evaluation_estimate(cfg, p, n_predictors, n_points, skewed)
        return weights + working + retained

    total = need(n_prompts)
    if total <= available:
        return
    if available >= need(1):  # the need grows linearly with the prompts
        allowed = f"at most {(available - need(1)) // (need(2) - need(1)) + 1} prompts with this much memory"
    else:
        allowed = f"more free memory (the model and one prompt need about {human_bytes(need(1))})"
    where = f"{field} {n_prompts}" if field.startswith("-") else f"{field}={n_prompts}"
    raise ICLError(
        f"{where}: evaluation needs about {human_bytes(total)} of memory, {human_bytes(available)} available; "
        f"allowed: {allowed}"
    )
