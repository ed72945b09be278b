"""When two scenarios are the same evaluation: ``definition`` (what is drawn and asked, never the
name or title) and ``distinct``, which keeps one scenario per definition in a suite."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from icl.config import Config
from icl.evaluation.scenarios.base import Scenario


def definition(sc: Scenario, cfg: Config) -> str:
    """Everything that decides a scenario's prompts and queries, as canonical JSON: each component's
    class, parameters, weight and label noise, the input distribution, the prompt length and the
    query shift (defaults resolved from ``cfg``)."""
    spec: dict[str, Any] = {
        "components": [
            {"class": c.task.name, "params": _params(c.task), "weight": c.weight, "noise_std": c.noise_std}
            for c in sc.mixture.components
        ],
        "inputs": dataclasses.asdict(sc.inputs or cfg.data.inputs),
        "n_points": sc.n_points or cfg.data.n_points,
        "query": sc.query,
    }
    return json.dumps(spec, sort_keys=True, default=str)


def _params(task: Any) -> Any:
    return dataclasses.asdict(task) if dataclasses.is_dataclass(task) else repr(task)


def distinct(scenarios: list[Scenario], cfg: Config) -> tuple[list[Scenario], list[str]]:
    """``scenarios`` with one per definition, in order, and a note per scenario left out. A member of
    a sweep (``group`` set) is kept over a lone scenario (its sweep table needs every value); else
    the first is kept."""
    keep: dict[str, Scenario] = {}
    dropped: list[tuple[Scenario, str]] = []
    for sc in scenarios:
        key = definition(sc, cfg)
        first = keep.get(key)
        if first is None:
            keep[key] = sc
        elif sc.group and not first.group:
            keep[key] = sc
            dropped.append((first, key))
        else:
            dropped.append((sc, key))
    kept = [sc for sc in scenarios if any(sc is k for k in keep.values())]
    notes = [f"{sc.name}: left out, the same evaluation as {keep[key].name}" for sc, key in dropped]
    return kept, notes
