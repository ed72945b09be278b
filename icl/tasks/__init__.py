"""Function classes and their registration: ``build_task(name, params)`` turns a config entry into
a ``FunctionClass``. Registry keys equal the config names."""

from __future__ import annotations

from collections.abc import Iterable

from icl.errors import ICLError
from icl.tasks.base import FunctionClass, Params
from icl.tasks.classification import LinearClassification
from icl.tasks.combination import ConvexCombination
from icl.tasks.decision_tree import DecisionTree
from icl.tasks.linear import DenseLinear, SparseLinear
from icl.tasks.quadratic import Quadratic
from icl.tasks.registry import TASKS, build_task, register
from icl.tasks.relu import ReluNet
from icl.tasks.sinusoid import Sinusoid
from icl.tasks.skills import SkillComposition

register(DenseLinear, SparseLinear, Sinusoid, ReluNet, ConvexCombination, Quadratic, LinearClassification, DecisionTree)
register(SkillComposition)

METRICS = ("mse", "zero_one")  # how a class's predictions are judged (icl.evaluation.curves computes them)


def metric_of(task: FunctionClass) -> str:
    """The error a function class is judged by, declared by the class as ``metric``: ``mse``
    (every regression class; the default for classes that declare none) or ``zero_one`` (the 0/1
    error of sign(prediction) on +-1 labels: classification classes)."""
    metric = getattr(task, "metric", "mse")
    if metric not in METRICS:
        raise ICLError(f"function class {task.name}: metric {metric!r}; allowed: {', '.join(METRICS)}")
    return metric


def mixture_metric(tasks: Iterable[FunctionClass]) -> str:
    """The metric of data drawn from ``tasks`` (a mixture's classes of positive weight): the one
    they all declare, else ``mse`` (a 0/1 error means nothing on real-valued labels)."""
    metrics = {metric_of(t) for t in tasks}
    return metrics.pop() if len(metrics) == 1 else "mse"


__all__ = [
    "TASKS",
    "FunctionClass",
    "Params",
    "build_task",
    "DenseLinear",
    "SparseLinear",
    "Sinusoid",
    "ReluNet",
    "ConvexCombination",
    "Quadratic",
    "LinearClassification",
    "DecisionTree",
    "SkillComposition",
    "METRICS",
    "metric_of",
    "mixture_metric",
]
