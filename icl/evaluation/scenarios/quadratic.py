"""Quadratic functions, a class outside the papers' mixtures: at fresh queries and at negated
context inputs, where an even function repeats a value the context already shows."""

from __future__ import annotations

from icl.config import Config
from icl.evaluation.scenarios.base import Scenario, single
from icl.sampling import PretrainMixture


def quadratic_data(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    quad = single("quadratic")  # a one-component mixture of a registered class
    return [
        Scenario("quadratic.fresh", "quadratic functions", quad),
        Scenario("quadratic.negated", "quadratic functions, query = -(an earlier input)", quad, query="negated"),
    ]
