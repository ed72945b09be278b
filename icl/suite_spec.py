"""What ``--suite`` names, read without torch: the shipped suites (icl/data/suites.yaml), a YAML
suite file's entries checked for shape, and the early check `icl eval` makes before it loads the
evaluation stack. The scenarios themselves are built by icl/evaluation/scenarios."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from icl.errors import ICLError
from icl.yamlio import read_yaml

SUITES_FILE = Path(__file__).parent / "data" / "suites.yaml"
SUFFIXES = (".yaml", ".yml")
# An explicit scenario of a suite file: Scenario's fields (icl/evaluation/scenarios/base.py).
SCENARIO_KEYS = ("name", "title", "mixture", "inputs", "n_points", "query", "group", "value")
SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
FILE_FORM = (
    "allowed: a mapping with key scenarios: a list of registered suite or scenario family names and "
    f"scenarios {{{', '.join(SCENARIO_KEYS)}}} (docs/extending.md)"
)


def is_suite_file(suite: str) -> bool:
    return suite.endswith(SUFFIXES)


def suite_label(suite: str) -> str:
    """The name an evaluation's outputs go under (RUN/eval/<label>): a suite file's stem."""
    return Path(suite).stem if is_suite_file(suite) else suite


def shipped_suites() -> dict[str, list[str]]:
    """Suite name -> scenario family names, as SUITES_FILE lists them (unchecked)."""
    loaded = read_yaml(SUITES_FILE, "suites file")
    if not isinstance(loaded, dict) or not loaded:
        raise ICLError(f"{SUITES_FILE}: allowed: a mapping of suite name -> list of scenario families")
    return loaded


def shipped_names() -> list[str]:
    """Every shipped suite and scenario family (each family of the package is in a suite)."""
    suites = shipped_suites()
    return list(dict.fromkeys([*suites, *(f for fams in suites.values() if isinstance(fams, list) for f in fams)]))


def read_suite_file(path: str | Path) -> list[str | dict[str, Any]]:
    """A suite file's entries: names (str) and explicit scenarios (dict), checked for shape; what
    they name is checked when the suite is built."""
    path = Path(path)
    if not path.is_file():
        raise ICLError(f"--suite {path}: no such file; allowed: an existing suite file (*.yaml), or a suite name")
    spec = read_yaml(path, "suite file")
    if not isinstance(spec, dict) or set(spec) != {"scenarios"}:
        got = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ICLError(f"{path}: got {got}; {FILE_FORM}")
    items = spec["scenarios"]
    if not isinstance(items, list) or not items:
        raise ICLError(f"{path}: scenarios: got {items!r}; {FILE_FORM}")
    for i, item in enumerate(items):
        _check_entry(item, f"{path}: scenarios[{i}]")
    return items


def _check_entry(item: Any, where: str) -> None:
    if isinstance(item, str):
        return
    if not isinstance(item, dict):
        raise ICLError(f"{where}: got {item!r}; allowed: a suite or scenario family name, or a mapping")
    unknown = sorted(map(str, set(item) - set(SCENARIO_KEYS)))
    if unknown:
        raise ICLError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SCENARIO_KEYS)}")
    name = item.get("name")
    if not (isinstance(name, str) and SCENARIO_NAME.fullmatch(name)):
        raise ICLError(f"{where}: name: got {name!r}; allowed: letters, digits, '.', '_', '-' (a file name)")
    where = f"{where} ({name})"
    mixture = item.get("mixture", [{"name": "the training mixture"}])  # none: the training mixture
    if not (isinstance(mixture, list) and mixture and all(isinstance(c, dict) and "name" in c for c in mixture)):
        raise ICLError(
            f"{where}: mixture: got {mixture!r}; allowed: a list of {{name, weight, noise_std, params}} (name required)"
        )
    rules = {
        "title": (str, "a string"),
        "inputs": (dict, "a mapping of input-distribution fields (data.inputs)"),
        "query": (str, "a query shift's name"),
        "group": (str, "a string (the sweep table's name)"),
    }
    for key, (kind, allowed) in rules.items():
        if key in item and not isinstance(item[key], kind):
            raise ICLError(f"{where}: {key}: got {item[key]!r}; allowed: {allowed}")
    n = item.get("n_points")
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 2):
        raise ICLError(f"{where}: n_points: got {n!r}; allowed: an integer >= 2")
    value = item.get("value")
    if value is not None and not (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ):
        raise ICLError(f"{where}: value: got {value!r}; allowed: a finite number (the sweep table's row)")
    if ("group" in item) != ("value" in item):
        raise ICLError(f"{where}: group and value: allowed: both (a sweep table's row) or neither")


def check_suite_early(suite: str, user_modules: bool) -> None:
    """Refuse a bad ``--suite`` before torch and the checkpoint load: a suite file must exist and
    have the right shape; a name must be shipped, unless user modules (which register their own
    suites and families) are to be imported, when the registry answers once they are."""
    if is_suite_file(suite):
        names = [e for e in read_suite_file(suite) if isinstance(e, str)]
    else:
        names = [suite]
    known = shipped_names()
    unknown = [n for n in names if n not in known]
    if unknown and not user_modules:
        suites = shipped_suites()
        families = [n for n in known if n not in suites]
        where = f"{suite}: " if is_suite_file(suite) else ""
        raise ICLError(
            f"{where}unknown suite or scenario {unknown[0]!r}; allowed suites: {', '.join(suites)}; "
            f"scenarios: {', '.join(families)}; or a suite file (*.yaml); user modules (imports=[...]) add more"
        )
