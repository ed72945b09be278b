"""The scenario registry: ``SCENARIOS`` (family name -> function building its scenarios), the
suites of families (icl/data/suites.yaml, plus those user modules add with ``register_suite``), and
``build_suite`` over both and over suite files (YAML, read by icl/suite_spec.py)."""

from __future__ import annotations

import functools

from icl.config import Config
from icl.errors import ICLError
from icl.evaluation.scenarios.base import Scenario, ScenarioFamily, slug
from icl.evaluation.scenarios.in_distribution import in_distribution, longer_prompts
from icl.evaluation.scenarios.paper1 import convex_sweep, dense_vs_sparse, frequency_sweep, sparsity_sweep
from icl.evaluation.scenarios.quadratic import quadratic_data
from icl.evaluation.scenarios.robustness import robustness
from icl.evaluation.scenarios.skills import skill_tuples
from icl.plugins import check_free
from icl.sampling import PretrainMixture
from icl.suite_spec import SUITES_FILE, is_suite_file, read_suite_file, shipped_suites

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
        skill_tuples,
    )
}


def register(family: ScenarioFamily, name: str | None = None) -> None:
    """Add a scenario family (``(cfg, training mixture) -> list[Scenario]``) under ``name``
    (default: its function name); the same function again does nothing."""
    name = name or getattr(family, "__name__", "")
    if not callable(family) or not name.isidentifier():
        raise ICLError(f"scenario family {family!r}: allowed: a function (cfg, mixture) -> list[Scenario] with a name")
    check_free("scenario family", name, family, SCENARIOS)
    SCENARIOS[name] = family


def register_suite(name: str, families: list[str]) -> None:
    """Add a suite: a list of registered scenario families, run in order; the same list under
    the same name again does nothing."""
    families = list(families)
    if not (families and all(isinstance(f, str) and f in SCENARIOS for f in families)):
        raise ICLError(f"suite {name!r}: got {families!r}; allowed: a non-empty list of {', '.join(SCENARIOS)}")
    held = suites().get(name)
    if held is not None and held != families:
        raise ICLError(f"suite {name!r}: already registered as {held}; allowed: a name not taken")
    suites()[name] = families


@functools.cache
def suites() -> dict[str, list[str]]:
    """Suite name -> scenario family names: those of SUITES_FILE (every family registered), then
    those user modules add with ``register_suite``."""
    loaded = shipped_suites()
    for name, families in loaded.items():
        if not (isinstance(families, list) and families and all(f in SCENARIOS for f in families)):
            raise ICLError(
                f"{SUITES_FILE}: suite {name!r}: got {families!r}; allowed: a non-empty list of {', '.join(SCENARIOS)}"
            )
    return loaded


def build_suite(name: str, cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """A suite (``suites()``), a single scenario family (SCENARIOS) or a suite file (*.yaml) by
    name. A suite file's own scenarios need names no other scenario of the suite has (each is a
    file of the evaluation)."""
    if not is_suite_file(name):
        return _named(name, cfg, mixture)
    scenarios: list[Scenario] = []
    for i, entry in enumerate(read_suite_file(name)):
        where = f"{name}: scenarios[{i}]"
        if isinstance(entry, str):
            scenarios += _named(entry, cfg, mixture, f"{where}: ")
        else:
            scenarios.append(Scenario.from_spec(entry, cfg.data.n_dims, mixture, where))
    for sc in scenarios:
        if sc.spec is not None and sum(other.name == sc.name for other in scenarios) > 1:
            raise ICLError(f"{name}: scenario name {sc.name!r} appears twice in the suite; allowed: unique names")
    return scenarios


def _named(name: str, cfg: Config, mixture: PretrainMixture, where: str = "") -> list[Scenario]:
    families = suites().get(name) or ([name] if name in SCENARIOS else None)
    if families is None:
        raise ICLError(
            f"{where}unknown suite or scenario {name!r}; allowed suites: {', '.join(suites())}; "
            f"scenarios: {', '.join(SCENARIOS)}; or a suite file (*.yaml)"
        )
    return [s for fam in families for s in SCENARIOS[fam](cfg, mixture)]


__all__ = [
    "SCENARIOS",
    "SUITES_FILE",
    "Scenario",
    "ScenarioFamily",
    "build_suite",
    "register",
    "register_suite",
    "slug",
    "suites",
]
