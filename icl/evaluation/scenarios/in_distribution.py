"""Scenarios drawn from the training distribution itself: each component, the whole mixture,
and the same at longer prompts."""

from __future__ import annotations

import dataclasses

from icl.config import Config
from icl.errors import ICLError
from icl.evaluation.scenarios.base import Scenario, slug
from icl.sampling import Component, PretrainMixture


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
