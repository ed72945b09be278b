"""Paper 1's out-of-distribution scenarios: dense vs sparse data, the sparsity sweep, fixed
sinusoid frequencies and convex combinations of two classes."""

from __future__ import annotations

from icl.config import Config
from icl.errors import ICLError
from icl.evaluation.scenarios.base import Scenario, single
from icl.sampling import PretrainMixture


def dense_vs_sparse(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """Paper 1 Figs. 1-2: dense linear and sparse linear data (the training nnz, else 2).
    A suite that also runs in_distribution or sparsity_sweep (paper1_dense_sparse) evaluates each
    of these once, under the name there (icl.evaluation.scenarios.identity.distinct)."""
    sparse = mixture.component("sparse_linear")
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
