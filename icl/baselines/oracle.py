"""Baselines on a dictionary of atoms (icl/tasks/skills.py): least squares on the atoms of the
prompt's own tuple (an oracle told the support) and LASSO over every atom's feature."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from icl.baselines.base import Predictor, check_inputs, is_int, require
from icl.baselines.lasso import Lasso
from icl.baselines.linear import _spectral_fit
from icl.errors import ICLError
from icl.sampling import PretrainMixture
from icl.tasks.skills import KINDS, SkillComposition, atom_names, features, parse_atom

DEFAULT_KINDS = ["linear", "square"]  # skill_composition's default dictionary


def _check_kinds(name: str, atoms: Any) -> list[str]:
    ok = isinstance(atoms, (list, tuple)) and len(atoms) > 0 and all(a in KINDS for a in atoms)
    require(
        ok and len(set(atoms)) == len(atoms),
        f"{name}.atoms",
        f"a list of distinct kinds from {', '.join(KINDS)}",
        atoms,
    )
    return list(atoms)


def _skill_task(name: str, scenario: PretrainMixture) -> SkillComposition:
    """The scenario's one skill_composition class (every positive-weight component)."""
    tasks = [c.task for c in scenario.components if c.weight > 0]
    if not tasks or any(not isinstance(t, SkillComposition) for t in tasks) or len({tuple(t.atoms) for t in tasks}) > 1:
        raise ICLError(f"{name}: allowed only on skill_composition data with one dictionary")
    return tasks[0]


class OracleSupport(Predictor):
    """Least squares on the atoms of each prompt's tuple only: the model-selection oracle for
    skill composition. Noiseless, it is exact once the context holds as many points as the tuple
    has atoms. ``support``: atoms shared by every prompt (indices in ``atom_names`` order, or
    names), or a (B, A) bool tensor, one row per prompt; ``given(params)`` binds a batch's own
    supports (what icl.evaluation.composition does). Minimum-norm least squares on the features
    with every other atom zeroed, so the fit puts weight 0 there."""

    name = "oracle_support"
    # Built per scenario: icl eval gives it a scenario that draws a single tuple; per-prompt
    # tuples need the batch's parameters (``given``).
    scenario_dependent = True

    def __init__(self, support: list[int | str] | Tensor, atoms: list[str] | None = None) -> None:
        self.atoms = _check_kinds("oracle_support", DEFAULT_KINDS if atoms is None else atoms)
        if not isinstance(support, Tensor):
            ok = isinstance(support, (list, tuple)) and len(support) > 0
            ok = ok and all((is_int(a) and a >= 0) or isinstance(a, str) for a in support)
            allowed = "a non-empty list of atom indices or names (linear0, square3, ...), or a (B, A) bool tensor"
            require(ok, "oracle_support.support", allowed, support)
        self.support = support
        self.label = "oracle_support"

    def given(self, params: dict[str, Any]) -> OracleSupport:
        """This predictor told the supports of a batch drawn by skill_composition (its params)."""
        return OracleSupport(params["support"], self.atoms)

    @classmethod
    def for_scenario(cls, scenario: PretrainMixture, train: PretrainMixture) -> OracleSupport:
        task = _skill_task(cls.name, scenario)
        if task.tuples is None or len(task.tuples) != 1 or task.split != "train":
            raise ICLError(
                "oracle_support: needs each prompt's tuple; allowed: a scenario of skill_composition with one "
                "listed tuple and split train (per-prompt tuples: icl.evaluation.composition)"
            )
        return cls(list(task.tuples[0]), task.atoms)

    def mask(self, b: int, n_dims: int, device: torch.device) -> Tensor:
        n_atoms = len(self.atoms) * n_dims
        if isinstance(self.support, Tensor):
            if tuple(self.support.shape) != (b, n_atoms):
                raise ICLError(
                    f"oracle_support.support: got shape {tuple(self.support.shape)}; allowed: ({b}, {n_atoms}) "
                    f"for {b} prompts and the {n_atoms} atoms of {n_dims}-d inputs"
                )
            return self.support.to(device=device, dtype=torch.float64)[:, None, :]
        names = atom_names(tuple(self.atoms), n_dims)
        index = [
            a if is_int(a) else parse_atom(a, tuple(self.atoms), n_dims, "oracle_support.support") for a in self.support
        ]
        if max(index) >= n_atoms:
            raise ICLError(f"oracle_support.support: got {self.support}; allowed: indices into {', '.join(names)}")
        m = torch.zeros(n_atoms, dtype=torch.float64, device=device)
        m[index] = 1.0
        return m[None, None, :]

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        phi = features(xs.double(), self.atoms) * self.mask(xs.shape[0], xs.shape[2], xs.device)
        return _spectral_fit(phi, ys, 0.0).to(ys.dtype)


class DictionaryLasso(Predictor):
    """LASSO over every atom's feature (``atoms``: the dictionary's kinds), on every prefix, with
    the batched homotopy solver of ``lasso``: sparse recovery that does not know the tuple. Built
    per scenario from the scenario's skill_composition dictionary; ``atoms`` otherwise."""

    name = "dictionary_lasso"
    scenario_dependent = True

    def __init__(self, alpha: float = 0.01, atoms: list[str] | None = None) -> None:
        self.atoms = _check_kinds("dictionary_lasso", DEFAULT_KINDS if atoms is None else atoms)
        self.lasso = Lasso(alpha)
        self.label = f"dictionary_lasso(alpha={alpha:g})"

    @classmethod
    def for_scenario(cls, scenario: PretrainMixture, train: PretrainMixture) -> DictionaryLasso:
        return cls(atoms=_skill_task(cls.name, scenario).atoms)

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        return self.lasso.predict(features(xs.double(), self.atoms), ys.double()).to(ys.dtype)
