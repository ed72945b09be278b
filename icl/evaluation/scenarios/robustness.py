"""Paper 2's robustness suite: dense linear functions under shifted inputs, noisy labels,
shifted queries and scaled inputs or weights."""

from __future__ import annotations

from icl.config import Config
from icl.evaluation.scenarios.base import Scenario, single
from icl.inputs import InputConfig
from icl.sampling import PretrainMixture


def robustness(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """Paper 2's robustness suite on dense linear functions (the training class's convention)."""
    dense = mixture.component("dense_linear")
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
