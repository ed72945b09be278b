"""What a scenario is: a mixture to draw from, an optional input distribution, prompt length and
query shift; checked when built, also from a suite file's entry (``from_spec``). Helpers shared by
the scenario families."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

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
    spec: dict[str, Any] | None = None  # a suite file's entry it was built from (part of its provenance)

    def __post_init__(self) -> None:
        if self.query is not None:
            try:
                query_shift(self.query)
            except ICLError as e:
                raise ICLError(f"scenario {self.name}: {e}") from None

    @classmethod
    def from_spec(cls, spec: dict[str, Any], n_dims: int, train_mixture: PretrainMixture, where: str) -> Scenario:
        """A suite file's explicit scenario (shape checked by icl.suite_spec.read_suite_file):
        ``mixture`` entries as in data.mixture (default: the training mixture), ``inputs`` fields
        as in data.inputs (default: the training inputs)."""
        where = f"{where} ({spec['name']})"
        value = spec.get("value")
        try:
            mixture = PretrainMixture.from_config(spec["mixture"], n_dims) if "mixture" in spec else train_mixture
            inputs = InputConfig(**spec["inputs"]) if "inputs" in spec else None
            if inputs is not None:
                inputs.check()
            return cls(
                spec["name"],
                spec.get("title", spec["name"]),
                mixture,
                inputs,
                spec.get("n_points"),
                spec.get("query"),
                spec.get("group"),
                None if value is None else float(value),
                spec=spec,
            )
        except ICLError as e:
            raise ICLError(f"{where}: {str(e).removeprefix('data.')}") from None
        except TypeError as e:  # an unknown key of a mixture entry (ComponentConfig) or of InputConfig
            fields = ", ".join(f.name for f in dataclasses.fields(InputConfig))
            raise ICLError(
                f"{where}: {e}; allowed: mixture entries {{name, weight, noise_std, params}}, inputs {{{fields}}}"
            ) from None


# A scenario family: (config, training mixture) -> its scenarios; registered in SCENARIOS.
ScenarioFamily = Callable[[Config, PretrainMixture], list[Scenario]]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_").lower()


def single(name: str, params: dict | None = None, noise_std: float = 0.0, label: str | None = None) -> PretrainMixture:
    """A one-component mixture of the registered function class ``name``."""
    task = build_task(name, params or {})
    return PretrainMixture([Component(task, 1.0, noise_std, label or name)])
