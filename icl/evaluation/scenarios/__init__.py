"""The scenario registry: ``SCENARIOS`` (family name -> function building its scenarios), the
suites of families read from icl/data/suites.yaml, and ``build_suite`` over both."""

from __future__ import annotations

import functools
from pathlib import Path

from icl.config import Config
from icl.errors import ICLError
from icl.evaluation.scenarios.base import Scenario, ScenarioFamily, slug
from icl.evaluation.scenarios.in_distribution import in_distribution, longer_prompts
from icl.evaluation.scenarios.paper1 import convex_sweep, dense_vs_sparse, frequency_sweep, sparsity_sweep
from icl.evaluation.scenarios.quadratic import quadratic_data
from icl.evaluation.scenarios.robustness import robustness
from icl.sampling import PretrainMixture
from icl.yamlio import read_yaml

SUITES_FILE = Path(__file__).parents[2] / "data" / "suites.yaml"

SCENARIOS: dict[str, ScenarioFamily] = {
    f.__name__: f
    for f in (
        in_distribution,
        dense_vs_sparse,
        sparsity_sweep,
        frequency_sweep,
        convex_sweep,
        robustness,
        longer_prompts,
        quadratic_data,
    )
}


@functools.cache
def suites() -> dict[str, list[str]]:
    """Suite name -> scenario family names, from SUITES_FILE; every family must be registered."""
    loaded = read_yaml(SUITES_FILE, "suites file")
    if not isinstance(loaded, dict) or not loaded:
        raise ICLError(f"{SUITES_FILE}: allowed: a mapping of suite name -> list of scenario families")
    for name, families in loaded.items():
        if not (isinstance(families, list) and families and all(f in SCENARIOS for f in families)):
            raise ICLError(
                f"{SUITES_FILE}: suite {name!r}: got {families!r}; allowed: a non-empty list of {', '.join(SCENARIOS)}"
            )
    return loaded


def build_suite(name: str, cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """A suite (``suites()``) or a single scenario family (SCENARIOS) by name."""
    families = suites().get(name) or ([name] if name in SCENARIOS else None)
    if families is None:
        raise ICLError(
            f"unknown suite or scenario {name!r}; allowed suites: {', '.join(suites())}; "
            f"scenarios: {', '.join(SCENARIOS)}"
        )
    return [s for fam in families for s in SCENARIOS[fam](cfg, mixture)]


__all__ = ["SCENARIOS", "SUITES_FILE", "Scenario", "ScenarioFamily", "build_suite", "slug", "suites"]
