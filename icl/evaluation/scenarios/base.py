"""What a scenario is: a mixture to draw from, an optional input distribution, prompt length and
query shift; checked when built. Helpers shared by the scenario families."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from icl.config import Config
from icl.errors import ICLError
from icl.evaluation.queries import query_shift
from icl.inputs import InputConfig
from icl.sampling import Component, PretrainMixture
from icl.tasks import build_task


@dataclasses.dataclass
class Scenario:
    name: str  # file-safe, e.g. "sparsity.nnz_3"
    title: str  # display name, never parsed
    mixture: PretrainMixture
    inputs: InputConfig | None = None
    n_points: int | None = None
    query: str | None = None  # a QUERY_SHIFTS entry (icl/evaluation/queries.py), or None: the query is x_i itself
    group: str | None = None  # sweeps: scenarios of a group share a table ...
    value: float | None = None  # ... with one row per value

    def __post_init__(self) -> None:
        if self.query is not None:
            try:
                query_shift(self.query)
            except ICLError as e:
                raise ICLError(f"scenario {self.name}: {e}") from None


# A scenario family: (config, training mixture) -> its scenarios; registered in SCENARIOS.
ScenarioFamily = Callable[[Config, PretrainMixture], list[Scenario]]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_").lower()


def single(name: str, params: dict | None = None, noise_std: float = 0.0, label: str | None = None) -> PretrainMixture:
    """A one-component mixture of the registered function class ``name``."""
    task = build_task(name, params or {})
    return PretrainMixture([Component(task, 1.0, noise_std, label or name)])


def training_component(mixture: PretrainMixture, cls_name: str) -> Component | None:
    """The training mixture's first component of class ``cls_name``, if any."""
    return next((c for c in mixture.components if c.task.name == cls_name), None)
