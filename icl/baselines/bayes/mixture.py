"""The Bayes-optimal (posterior-mean) predictor for a pretraining mixture: each component's
posterior mean, weighted by prior weight x marginal likelihood of the context."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from icl.baselines.base import Predictor, check_inputs, is_int, is_number, require
from icl.baselines.bayes.common import FLOAT32_UNIT, PRECISION_FACTOR, ComponentPosterior, PosteriorOptions
from icl.baselines.bayes.posteriors import POSTERIORS
from icl.errors import ICLError
from icl.sampling import Component, PretrainMixture
from icl.tasks import TASKS, FunctionClass


@dataclasses.dataclass
class BayesPosterior:
    """Everything ``BayesMixture.posterior`` computes, per prompt and prefix: the mixture
    prediction (B, N), each kept component's prediction, log evidence and posterior weight
    (B, N, C); ``labels`` names the C kept components (zero-weight ones are dropped)."""

    preds: Tensor
    component_preds: Tensor
    log_evidence: Tensor
    weights: Tensor
    labels: list[str]


class BayesMixture(Predictor):
    """Posterior mean of f(x_query) under the pretraining prior, for any mixture of classes
    that declare a ``bayes_posterior`` (a single class is a one-component mixture), built from
    the task objects themselves so the prior always matches the sampler.

    Per component, the posterior its class names: dense linear -> ridge with lam = sigma^2 / v;
    sparse linear -> exact average over all C(d, nnz) supports; sinusoid (d = 1) -> adaptive
    frequency grid with the amplitude integrated out. The mixture weights components by prior weight x
    evidence. As an evaluation baseline (``bayes``) it is built per scenario, for the scenario's
    own distribution.

    Noiseless classes get the exact sigma -> 0 limit, up to the labels' float32 rounding: every
    component assumes a noise std of at least ``precision_std(d)``, 4 float32 units of the
    largest prior label scale (about 2.4e-7 for unit-variance labels; see
    icl.baselines.bayes.common), the same for all components so that their evidences stay
    comparable. The linear posteriors are computed so that this stays exact in float64
    (chain-rule evidence, the dual form for prefixes with fewer points than features): dense is
    min-norm least squares, sparse picks the consistent support at k = nnz + 1, and in a
    mixture the class that fits the context with fewer free parameters wins by ~1e6 per extra
    point. The sinusoid's frequency posterior, which narrows to ~1e-7 once three labels are
    seen, is integrated on a grid refined around its modes per prompt and prefix.

    ``noise_floor`` / ``sinusoid_noise_floor`` (default 0, off): a larger noise std to assume
    for linear / sinusoid components, max(noise_std, floor); exact no-ops for noise_std above
    them. The former defaults 1e-3 / 0.01 smoothed the posteriors for a fixed grid and cost
    5e-4 at k = d on dense d = 8 data, 2e-3 at k = nnz + 1 on sparse, 3e-5 on the sinusoid.

    ``n_dims``: active input dims (coordinates beyond are ignored), for curriculum batches
    padded with zeros; default all of xs's.

    Each prompt is treated on its own, which is exact for ``per_sequence`` mixing; under
    ``per_batch`` mixing it ignores what the other prompts of a batch reveal about the class.

    The MSE of even this predictor against noisy labels includes the label noise:
    ``irreducible_mse()`` = sum_k weight_k noise_std_k^2 is that floor.
    """

    name = "bayes"
    scenario_dependent = True

    def __init__(
        self,
        mixture: PretrainMixture | Sequence[Component] | Component,
        noise_floor: float = 0.0,
        sinusoid_noise_floor: float = 0.0,
        max_supports: int = 20_000,
        n_grid: int = 2000,
        n_dims: int | None = None,
        label: str | None = None,
    ) -> None:
        comps = _components(mixture)
        for field, value in (
            ("noise_floor", noise_floor),
            ("sinusoid_noise_floor", sinusoid_noise_floor),
        ):
            require(is_number(value) and value >= 0, f"bayes.{field}", "a number >= 0", value)
        for field, value in (("max_supports", max_supports), ("n_grid", n_grid)):
            require(is_int(value) and value >= 1, f"bayes.{field}", "an integer >= 1", value)
        ok_dims = n_dims is None or (is_int(n_dims) and n_dims >= 1)
        require(ok_dims, "bayes.n_dims", "null or an integer >= 1", n_dims)
        total = sum(c.weight for c in comps)
        require(
            all(c.weight >= 0 for c in comps) and total > 0,
            "bayes.mixture weights",
            "non-negative numbers with a positive sum",
            [c.weight for c in comps],
        )
        unsupported = [c.label for c in comps if c.weight > 0 and c.task.bayes_posterior is None]
        if unsupported:
            allowed = [name for name, cls in TASKS.items() if cls.bayes_posterior is not None]
            raise ICLError(
                f"bayes: no Bayes-optimal predictor for component(s) {', '.join(unsupported)}; "
                f"allowed: {', '.join(allowed)}"
            )
        self.components = [c for c in comps if c.weight > 0]
        self.log_prior = [math.log(c.weight / total) for c in self.components]
        self.options = PosteriorOptions(float(noise_floor), float(sinusoid_noise_floor), max_supports, n_grid)
        self.n_dims = n_dims
        self.posteriors: list[ComponentPosterior] = [self._posterior(c) for c in self.components]
        self.label = label or "bayes[" + " + ".join(f"{c.weight / total:g} {c.label}" for c in self.components) + "]"

    @classmethod
    def for_scenario(cls, scenario: PretrainMixture, train: PretrainMixture) -> BayesMixture:
        return cls(scenario)

    def _posterior(self, comp: Component) -> ComponentPosterior:
        key = comp.task.bayes_posterior
        if key not in POSTERIORS:
            raise ICLError(
                f"bayes: function class {comp.task.name} declares bayes_posterior {key!r}; "
                f"allowed: {', '.join(POSTERIORS)} (icl/baselines/bayes/posteriors.py) or None"
            )
        return POSTERIORS[key].from_task(comp.task, comp.noise_std, self.options)

    def precision_std(self, n_dims: int) -> float:
        """The noise std every component assumes at least: PRECISION_FACTOR float32 units of the
        largest prior label scale (icl.baselines.bayes.common), shared by all components so that
        their evidences stay comparable. It stands in for the labels' float32 rounding, so
        noiseless components get the sigma -> 0 limit up to that rounding; far below any real
        label noise, where it changes nothing."""
        return PRECISION_FACTOR * FLOAT32_UNIT * max(p.label_std(n_dims) for p in self.posteriors)

    def irreducible_mse(self) -> float:
        """E (y - f(x))^2 under the mixture: the label-noise floor that even the Bayes
        predictor's MSE against noisy labels cannot go below (0 for noiseless mixtures)."""
        total = sum(c.weight for c in self.components)
        return sum(c.weight / total * c.noise_std**2 for c in self.components)

    def posterior(self, xs: Tensor, ys: Tensor) -> BayesPosterior:
        check_inputs(xs, ys)
        x64, y64 = xs.double(), ys.double()
        if self.n_dims is not None:
            x64 = x64[..., : self.n_dims]
        min_std = self.precision_std(x64.shape[-1])
        results = [p.evaluate(x64, y64, min_std) for p in self.posteriors]
        comp_preds = torch.stack([pred for pred, _ in results], -1)
        log_ev = torch.stack([ev for _, ev in results], -1)
        log_prior = torch.tensor(self.log_prior, dtype=torch.float64, device=xs.device)
        weights = torch.softmax(log_ev + log_prior, dim=-1)
        mix = (weights * comp_preds).sum(-1)
        return BayesPosterior(mix, comp_preds, log_ev, weights, [c.label for c in self.components])

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        return self.posterior(xs, ys).preds.to(ys.dtype)


class BayesTrain(BayesMixture):
    """``bayes_train``: as an evaluation baseline, Bayes-optimal for the training mixture on every
    scenario (what a model that has learned its pretraining prior exactly would predict)."""

    name = "bayes_train"

    @classmethod
    def for_scenario(cls, scenario: PretrainMixture, train: PretrainMixture) -> BayesTrain:
        return cls(train)


def _components(mixture: PretrainMixture | Sequence[Component] | Component) -> list[Component]:
    if isinstance(mixture, PretrainMixture):
        return list(mixture.components)
    if isinstance(mixture, Component):
        return [mixture]
    if isinstance(mixture, (list, tuple)) and mixture and all(isinstance(c, Component) for c in mixture):
        return list(mixture)
    raise ICLError(
        f"bayes.mixture: got {type(mixture).__name__}; "
        "allowed: a PretrainMixture, a Component or a non-empty list of Components"
    )


def component(task: FunctionClass, noise_std: float = 0.0, weight: float = 1.0, label: str | None = None) -> Component:
    """A mixture component from a task object, for building Bayes predictors by hand."""
    return Component(task, weight, noise_std, label or task.name or type(task).__name__)
