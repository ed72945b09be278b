"""Baseline predictors and their registry: ``build_baseline(name, **kwargs)``. Every baseline
answers ``predict(xs (B, N, D), ys (B, N)) -> preds (B, N)`` for all prefixes at once, with
``preds[:, i]`` using only ``xs[:, :i+1]`` and ``ys[:, :i]``."""

from __future__ import annotations

import inspect
from typing import Any

from icl.baselines.base import Predictor
from icl.baselines.bayes import BayesMixture, BayesPosterior, BayesTrain, component
from icl.baselines.checkpoint import CheckpointPredictor
from icl.baselines.gd_2nn import GD2NN
from icl.baselines.lasso import Lasso, LassoCV
from icl.baselines.linear import LeastSquares, Ridge
from icl.baselines.logistic import Logistic
from icl.baselines.optional import Unavailable
from icl.baselines.oracle import DictionaryLasso, OracleSupport
from icl.baselines.quadratic import QuadraticLeastSquares
from icl.baselines.simple import KNN, Averaging, Zero
from icl.baselines.tree import GreedyTree, GreedyTreeFull
from icl.baselines.xgb import XGBoost
from icl.errors import ICLError
from icl.plugins import check_complete, check_free

BASELINES: dict[str, type[Predictor]] = {
    cls.name: cls
    for cls in (
        Zero,
        Averaging,
        KNN,
        LeastSquares,
        Ridge,
        Lasso,
        LassoCV,
        BayesMixture,
        BayesTrain,
        CheckpointPredictor,
        QuadraticLeastSquares,
        GD2NN,
        GreedyTree,
        GreedyTreeFull,
        XGBoost,
        Logistic,
        OracleSupport,
        DictionaryLasso,
    )
}


def register(*classes: type[Predictor]) -> None:
    """Add baselines to ``BASELINES`` under their ``name`` (the name in --baselines and
    eval.baselines); a user module's way in. The same class again does nothing."""
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, Predictor) and cls.name):
            raise ICLError(f"baseline {cls!r}: allowed: a subclass of icl.baselines.Predictor with a `name`")
        check_free("baseline", cls.name, cls, BASELINES)
        check_complete("baseline", cls)
        BASELINES[cls.name] = cls


def baseline_params(name: str) -> list[str]:
    """The keyword arguments ``build_baseline(name, ...)`` accepts."""
    params = list(inspect.signature(BASELINES[name].__init__).parameters.values())
    return [p.name for p in params if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]


def build_baseline(name: str, **kwargs: Any) -> Predictor:
    """Build a registered baseline, rejecting unknown names and keyword arguments with an
    ICLError that lists what is allowed."""
    if name not in BASELINES:
        raise ICLError(f"unknown baseline {name!r}; allowed: {', '.join(sorted(BASELINES))}")
    allowed = baseline_params(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ICLError(f"{name}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or '(none)'}")
    try:
        return BASELINES[name](**kwargs)
    except TypeError as err:  # a required argument is missing
        raise ICLError(f"{name}: {err}; allowed parameters: {', '.join(allowed)}") from None


__all__ = [
    "BASELINES",
    "Averaging",
    "BayesMixture",
    "BayesPosterior",
    "BayesTrain",
    "CheckpointPredictor",
    "DictionaryLasso",
    "GD2NN",
    "GreedyTree",
    "GreedyTreeFull",
    "KNN",
    "Lasso",
    "LassoCV",
    "LeastSquares",
    "Logistic",
    "OracleSupport",
    "Predictor",
    "QuadraticLeastSquares",
    "Ridge",
    "Unavailable",
    "XGBoost",
    "Zero",
    "baseline_params",
    "build_baseline",
    "component",
    "register",
]
