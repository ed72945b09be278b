"""The function-class contract: a prior over functions (``sample_params``) and how to
evaluate one (``apply``), both batched over sequences and free of side effects."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from icl.errors import ICLError

Params = dict[str, Any]  # tensors with leading dim B (nested dicts for composite classes)


@dataclasses.dataclass
class FunctionClass(abc.ABC):
    """Base class. Subclasses are dataclasses whose fields are their config parameters.

    ``sample_params(n, n_dims, generator)`` draws ``n`` functions on ``R^n_dims``;
    ``apply(params, xs)`` maps ``xs`` (B, N, n_dims) to ``ys`` (B, N).
    ``n_dims`` is the number of *active* input dimensions (it grows under a curriculum), so a
    normalised class keeps Var f(x) = 1 at every curriculum stage for x ~ N(0, I).
    """

    name: ClassVar[str] = ""
    # How the Bayes-optimal baseline computes this class's posterior: a key of
    # icl.baselines.bayes.POSTERIORS, or None where no exact posterior exists (`bayes` then
    # refuses mixtures that give the class a positive weight).
    bayes_posterior: ClassVar[str | None] = None
    # The error the class is judged by (icl.tasks.METRICS): mse, or zero_one for +-1 labels.
    metric: ClassVar[str] = "mse"

    def check(self, n_dims: int) -> None:  # noqa: B027 (a default: every n_dims is accepted)
        """Raise ICLError if this class cannot be used with inputs of ``n_dims`` dimensions."""

    @abc.abstractmethod
    def sample_params(self, n: int, n_dims: int, generator: torch.Generator) -> Params: ...

    @abc.abstractmethod
    def apply(self, params: Params, xs: Tensor) -> Tensor: ...

    def floats_per_sequence(self, n_points: int, n_dims: int) -> int:
        """About how many floats ``sample_params`` and ``apply`` hold at once per sequence: the
        memory estimate of a batch (icl/resources.py) sums it over the mixture. The default fits
        classes whose parameters are O(n_dims) vectors."""
        return 4 * n_dims + 2 * n_points

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def gaussian(shape: tuple[int, ...], generator: torch.Generator, device=None) -> Tensor:
    device = device if device is not None else generator.device
    return torch.randn(*shape, generator=generator, device=device)


def require(cond: bool, field: str, allowed: str, value: Any) -> None:
    if not cond:
        raise ICLError(f"{field}: got {value!r}; allowed: {allowed}")
