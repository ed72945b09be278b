"""Named evaluation scenarios (in and out of distribution) and suites of them. A scenario says
what to sample: a mixture, an input distribution, a prompt length, an optional query shift."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from icl.config import Config
from icl.errors import ICLError
from icl.inputs import InputConfig
from icl.sampling import Component, PretrainMixture
from icl.tasks import build_task


@dataclasses.dataclass
class Scenario:
    name: str  # file-safe, e.g. "sparsity.nnz_3"
    title: str  # display name, never parsed
    mixture: PretrainMixture
    inputs: InputConfig | None = None
    n_points: int | None = None
    query: str | None = None  # a QUERY_SHIFTS entry, or None: the query is x_i itself
    group: str | None = None  # sweeps: scenarios of a group share a table ...
    value: float | None = None  # ... with one row per value


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_").lower()


def single(name: str, params: dict | None = None, noise_std: float = 0.0, label: str | None = None) -> PretrainMixture:
    task = build_task(name, params or {})
    return PretrainMixture([Component(task, 1.0, noise_std, label or name)])


def _training_component(mixture: PretrainMixture, cls_name: str) -> Component | None:
    return next((c for c in mixture.components if c.task.name == cls_name), None)


def in_distribution(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """One scenario per training component (weight > 0), each a pure draw from that class,
    plus the whole mixture when it has more than one component."""
    active = [c for c in mixture.components if c.weight > 0]
    out = [
        Scenario(
            f"in_dist.{slug(c.label)}",
            f"in distribution: {c.label}" + (f", noise {c.noise_std}" if c.noise_std else ""),
            PretrainMixture([Component(c.task, 1.0, c.noise_std, c.label)]),
        )
        for c in active
    ]
    if len(active) > 1:
        out.append(Scenario("in_dist.mixture", "in distribution: training mixture", mixture))
    return out


def dense_vs_sparse(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """Paper 1 Figs. 1-2: dense linear and sparse linear data (the training nnz, else 2)."""
    sparse = _training_component(mixture, "sparse_linear")
    nnz = sparse.task.nnz if sparse else min(2, cfg.data.n_dims)
    return [
        Scenario("cross.dense", "dense linear", single("dense_linear")),
        Scenario(
            f"cross.sparse_nnz_{nnz}",
            f"sparse linear, nnz {nnz}",
            single("sparse_linear", {"nnz": nnz}, label=f"sparse_linear(nnz={nnz})"),
        ),
    ]


def sparsity_sweep(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """Paper 1 Fig. 3: sparse linear data with nnz = 1..d."""
    return [
        Scenario(
            f"sparsity.nnz_{s}",
            f"sparse linear, nnz {s}",
            single("sparse_linear", {"nnz": s}, label=f"sparse_linear(nnz={s})"),
            group="sparsity",
            value=s,
        )
        for s in range(1, cfg.data.n_dims + 1)
    ]


def frequency_sweep(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """Paper 1 Fig. 6: sinusoids at fixed frequencies ``eval.frequencies``."""
    return [
        Scenario(
            f"frequency.w_{f:g}",
            f"sinusoid, frequency {f:g}",
            single("sinusoid", {"freq": float(f)}, label=f"sinusoid(freq={f:g})"),
            group="frequency",
            value=f,
        )
        for f in cfg.eval.frequencies
    ]


def convex_sweep(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """Paper 1 Figs. 4-5: f = a f_A + (1 - a) f_B for a in ``eval.convex_coefs``, with
    (f_A, f_B) = ``eval.convex_pair`` (default: dense linear and a cosine of frequency 1,
    i.e. a b1 x + (1 - a) b2 cos(2 pi x))."""
    pair = [dict(c) for c in cfg.eval.convex_pair]
    if len(pair) != 2:
        raise ICLError(f"eval.convex_pair: got {len(pair)} entries; allowed: exactly two {{name, params}}")
    names = " + ".join(p["name"] for p in pair)
    return [
        Scenario(
            f"convex.a_{a:g}",
            f"{a:g} {pair[0]['name']} + {1 - a:g} {pair[1]['name']}",
            single(
                "convex_combination",
                {"components": pair, "coefs": [float(a), 1.0 - float(a)]},
                label=f"convex({names}, a={a:g})",
            ),
            group="convex",
            value=a,
        )
        for a in cfg.eval.convex_coefs
    ]


def robustness(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """Paper 2's robustness suite on dense linear functions (the training class's convention)."""
    dense = _training_component(mixture, "dense_linear")
    normalize = dense.task.normalize if dense else True
    base = {"normalize": normalize}
    lin = single("dense_linear", base)
    out = [
        Scenario("robust.skewed", "skewed covariance (eigenvalues ~ 1/i)", lin, InputConfig(covariance="skewed")),
        Scenario(
            "robust.half_subspace", "inputs in a random d/2 subspace", lin, InputConfig(covariance="half_subspace")
        ),
        Scenario(
            "robust.noisy",
            f"noisy labels (std {cfg.eval.label_noise:g})",
            single("dense_linear", base, noise_std=cfg.eval.label_noise),
        ),
        Scenario("robust.orthant", "context inputs in one random orthant", lin, query="orthant_context"),
        Scenario("robust.orthogonal", "query orthogonal to the context", lin, query="orthogonal"),
        Scenario("robust.repeat", "query equal to a context input", lin, query="repeat"),
    ]
    for s in cfg.eval.scales:
        out.append(
            Scenario(
                f"robust.x_scale_{s:.3g}",
                f"inputs scaled by {s:.3g}",
                lin,
                InputConfig(scale=float(s)),
                group="x_scale",
                value=s,
            )
        )
        out.append(
            Scenario(
                f"robust.w_scale_{s:.3g}",
                f"weights scaled by {s:.3g}",
                single("dense_linear", {**base, "w_scale": float(s)}),
                group="w_scale",
                value=s,
            )
        )
    return out


def longer_prompts(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """Every training component at the longest prompt the model's positions allow."""
    n = cfg.model.max_points
    if n <= cfg.data.n_points:
        raise ICLError(
            f"scenario longer_prompts: model.max_points ({n}) is not longer than the training prompts "
            f"({cfg.data.n_points}); allowed only for models trained with max_points > data.n_points"
        )
    return [
        dataclasses.replace(s, name=s.name.replace("in_dist.", "longer."), title=f"{s.title}, {n} points", n_points=n)
        for s in in_distribution(cfg, mixture)
    ]


SCENARIOS: dict[str, Callable[[Config, PretrainMixture], list[Scenario]]] = {
    f.__name__: f
    for f in (
        in_distribution,
        dense_vs_sparse,
        sparsity_sweep,
        frequency_sweep,
        convex_sweep,
        robustness,
        longer_prompts,
    )
}
SUITES: dict[str, list[str]] = {
    "in_distribution": ["in_distribution"],
    "paper1_dense_sparse": ["in_distribution", "dense_vs_sparse", "sparsity_sweep"],
    "paper1_sinusoid": ["in_distribution", "frequency_sweep", "convex_sweep"],
    "robustness": ["robustness"],
    "length": ["longer_prompts"],
}


def build_suite(name: str, cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """A suite (SUITES) or a single scenario family (SCENARIOS) by name."""
    families = SUITES.get(name) or ([name] if name in SCENARIOS else None)
    if families is None:
        raise ICLError(
            f"unknown suite or scenario {name!r}; allowed suites: {', '.join(SUITES)}; "
            f"scenarios: {', '.join(SCENARIOS)}"
        )
    return [s for fam in families for s in SCENARIOS[fam](cfg, mixture)]
