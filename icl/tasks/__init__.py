"""Function classes and their registration: ``build_task(name, params)`` turns a config entry into
a ``FunctionClass``. Registry keys equal the config names."""

from __future__ import annotations

from icl.tasks.base import FunctionClass, Params
from icl.tasks.combination import ConvexCombination
from icl.tasks.linear import DenseLinear, SparseLinear
from icl.tasks.quadratic import Quadratic
from icl.tasks.registry import TASKS, build_task, register
from icl.tasks.relu import ReluNet
from icl.tasks.sinusoid import Sinusoid

register(DenseLinear, SparseLinear, Sinusoid, ReluNet, ConvexCombination, Quadratic)

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
]
