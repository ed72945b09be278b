"""Named evaluation scenarios: what to sample (mixture, inputs, prompt length) for a curve."""

from __future__ import annotations

import dataclasses
import re

from icl.config import Config
from icl.inputs import InputConfig
from icl.sampling import Component, PretrainMixture


@dataclasses.dataclass
class Scenario:
    name: str  # file-safe, e.g. "in_dist.sparse_linear_nnz_2"
    title: str  # display name, never parsed
    mixture: PretrainMixture
    inputs: InputConfig | None = None
    n_points: int | None = None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


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
