"""The registry of component posteriors: a function class's ``bayes_posterior`` names one of
these, or is None where no exact posterior exists."""

from __future__ import annotations

from icl.baselines.bayes.common import ComponentPosterior
from icl.baselines.bayes.linear import DenseLinearPosterior, SparseLinearPosterior
from icl.baselines.bayes.sinusoid import SinusoidPosterior

POSTERIORS: dict[str, type[ComponentPosterior]] = {
    cls.name: cls for cls in (DenseLinearPosterior, SparseLinearPosterior, SinusoidPosterior)
}
