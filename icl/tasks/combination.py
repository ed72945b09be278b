"""Convex combinations f(x) = sum_k a_k f_k(x) of function classes, a class in its own right
(e.g. paper 1's a x + (1 - a) cos(2 pi x))."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from icl.tasks.base import FunctionClass, Params, require
from icl.tasks.registry import build_task


@dataclasses.dataclass
class ConvexCombination(FunctionClass):
    """f = sum_k coefs[k] f_k, each f_k drawn independently from its own class.

    ``components`` is a list of ``{name: ..., params: {...}}``; ``coefs`` are non-negative and
    sum to 1. The sum is not renormalised: with unit-variance parts, Var f = sum_k a_k^2.
    """

    name = "convex_combination"
    components: list[Any] = dataclasses.field(default_factory=list)
    coefs: list[float] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        require(
            len(self.components) >= 1,
            "convex_combination.components",
            "a non-empty list of {name, params}",
            self.components,
        )
        require(
            len(self.coefs) == len(self.components),
            "convex_combination.coefs",
            f"{len(self.components)} numbers (one per component)",
            self.coefs,
        )
        require(
            all(a >= 0 for a in self.coefs) and abs(sum(self.coefs) - 1) < 1e-6,
            "convex_combination.coefs",
            "non-negative numbers summing to 1",
            self.coefs,
        )
        self.parts: list[FunctionClass] = []
        for i, spec in enumerate(self.components):
            require(
                isinstance(spec, dict) and "name" in spec and set(spec) <= {"name", "params"},
                f"convex_combination.components[{i}]",
                "a mapping with keys name and params",
                spec,
            )
            self.parts.append(build_task(spec["name"], spec.get("params") or {}))

    def check(self, n_dims: int) -> None:
        for part in self.parts:
            part.check(n_dims)

    def floats_per_sequence(self, n_points: int, n_dims: int) -> int:
        return sum(part.floats_per_sequence(n_points, n_dims) for part in self.parts) + n_points

    def sample_params(self, n: int, n_dims: int, generator: torch.Generator) -> Params:
        return {f"c{k}": part.sample_params(n, n_dims, generator) for k, part in enumerate(self.parts)}

    def apply(self, params: Params, xs: Tensor) -> Tensor:
        return sum(
            a * part.apply(params[f"c{k}"], xs) for k, (a, part) in enumerate(zip(self.coefs, self.parts, strict=True))
        )
