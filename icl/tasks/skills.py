"""Skill composition: functions that are sums of a k-tuple of dictionary atoms ("skills"), with
tuples drawn from a whitelist (training) or from tuples held out of it (evaluation)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from typing import Any

import torch
from torch import Tensor

from icl.errors import ICLError
from icl.tasks.base import FunctionClass, Params, gaussian, require

# Atom kinds, each applied to every coordinate x_j. They are the probabilists' Hermite
# polynomials He_1, He_2 / sqrt 2, He_3 / sqrt 6: under x ~ N(0, I) every atom has mean 0 and
# variance 1 and any two distinct atoms are uncorrelated (orthonormal in L2(N(0, I))), also two
# atoms on the same coordinate. So Var f = sum of squared coefficients for every tuple, and a
# predictor's coefficient on an atom is its projection on that atom. relu(x_j) or |x_j| would
# correlate with x_j, which makes both false.
KINDS: dict[str, Any] = {
    "linear": lambda x: x,
    "square": lambda x: (x * x - 1) / math.sqrt(2),
    "cube": lambda x: (x * x * x - 3 * x) / math.sqrt(6),
}
SPLITS = ("train", "heldout", "all")
_ATOM = re.compile(r"([a-z]+)(\d+)")


def atom_names(kinds: tuple[str, ...], n_dims: int) -> list[str]:
    """The dictionary in order: atom ``i * n_dims + j`` is kind ``kinds[i]`` on coordinate j,
    named ``<kind><j>`` (``linear3``, ``square0``)."""
    return [f"{kind}{j}" for kind in kinds for j in range(n_dims)]


def features(xs: Tensor, kinds: tuple[str, ...] | list[str]) -> Tensor:
    """Every atom at ``xs`` (B, N, D): (B, N, len(kinds) * D), in ``atom_names`` order."""
    return torch.cat([KINDS[kind](xs) for kind in kinds], dim=-1)


def parse_atom(name: Any, kinds: tuple[str, ...], n_dims: int, where: str) -> int:
    """The dictionary index of the atom ``name`` (e.g. ``square3``)."""
    m = _ATOM.fullmatch(name) if isinstance(name, str) else None
    if m is None or m.group(1) not in kinds or int(m.group(2)) >= n_dims:
        raise ICLError(
            f"{where}: got {name!r}; allowed: an atom <kind><coordinate> with kind in {', '.join(kinds)} "
            f"and coordinate in 0..{n_dims - 1}"
        )
    return kinds.index(m.group(1)) * n_dims + int(m.group(2))


@functools.lru_cache(maxsize=64)
def _split_tuples(
    kinds: tuple[str, ...],
    n_dims: int,
    explicit: tuple[tuple[str, ...], ...] | None,
    pair_fraction: float,
    whitelist_seed: int,
    split: str,
    k: int | None,
) -> tuple[tuple[int, ...], ...]:
    """The tuples (sorted atom indices) of ``split``, restricted to size ``k`` if given."""
    n_atoms = len(kinds) * n_dims
    if explicit is not None:
        where = "skill_composition.tuples"
        whitelist = []
        for i, t in enumerate(explicit):
            atoms = sorted(parse_atom(a, kinds, n_dims, f"{where}[{i}]") for a in t)
            if len(set(atoms)) < len(atoms):
                raise ICLError(f"{where}[{i}]: got {list(t)!r}; allowed: distinct atoms")
            whitelist.append(tuple(atoms))
        whitelist = sorted(set(whitelist))
    else:
        pairs = list(itertools.combinations(range(n_atoms), 2))
        g = torch.Generator().manual_seed(whitelist_seed)
        chosen = torch.randperm(len(pairs), generator=g)[: round(pair_fraction * len(pairs))]
        whitelist = [(a,) for a in range(n_atoms)] + sorted(pairs[i] for i in chosen.tolist())
    if split == "train":
        out = whitelist
    else:
        sizes = [k] if k is not None else sorted({len(t) for t in whitelist})
        pool = range(n_atoms) if split == "all" else sorted({a for t in whitelist for a in t})
        out = [t for s in sizes for t in itertools.combinations(pool, s)]
        if split == "heldout":  # atoms all seen in training, never together
            seen = set(whitelist)
            out = [t for t in out if t not in seen]
    return tuple(t for t in out if k is None or len(t) == k)


@dataclasses.dataclass
class SkillComposition(FunctionClass):
    """f(x) = (1/sqrt k) sum_{a in T} c_a phi_a(x) over a k-tuple T of dictionary atoms, c_a ~ N(0, 1).

    The dictionary (``atoms``: kinds of ``KINDS``) holds each kind on every coordinate: ``linear``
    x_j, ``square`` (x_j^2 - 1)/sqrt 2, ``cube`` (x_j^3 - 3 x_j)/sqrt 6; orthonormal under
    x ~ N(0, I), so Var f = 1 in expectation over c for every tuple (as for sparse_linear).
    Sums of linear atoms are linear: a tuple is more than a linear function only if it holds a
    nonlinear atom.

    The whitelist (the training tuples) is ``tuples`` (lists of atom names, e.g.
    ``[[linear0], [linear1, square2]]``), or, when ``tuples`` is null, every singleton plus a
    fraction ``pair_fraction`` of all pairs of distinct atoms, chosen by ``whitelist_seed``.
    ``split`` picks the tuples drawn: ``train`` (the whitelist), ``heldout`` (tuples of the
    whitelist's sizes, or of size ``k``, that are not in the whitelist but whose atoms all appear
    in it), ``all`` (every tuple of those sizes). ``k`` keeps tuples of that size
    only. A tuple is drawn uniformly from the split's list, then its coefficients.

    Params: ``w`` (B, A) coefficients on the A = len(atoms) * d atoms (0 off the tuple),
    ``support`` (B, A) bool. With ``atoms: [linear]`` and singletons only (the default rule), the
    draws equal ``sparse_linear`` with nnz 1 draw for draw (same generator calls in the same
    order). The dictionary is a function of the dims passed to ``sample_params``, so a dims
    curriculum changes it: train this class at fixed dims.
    """

    name = "skill_composition"
    atoms: list[str] = dataclasses.field(default_factory=lambda: ["linear", "square"])
    tuples: list[Any] | None = None
    pair_fraction: float = 0.0
    whitelist_seed: int = 0
    split: str = "train"
    k: int | None = None

    def __post_init__(self) -> None:
        kinds = self.atoms
        require(
            isinstance(kinds, list)
            and len(kinds) > 0
            and all(a in KINDS for a in kinds)
            and len(set(kinds)) == len(kinds),
            "skill_composition.atoms",
            f"a non-empty list of distinct kinds from {', '.join(KINDS)}",
            kinds,
        )
        require(self.split in SPLITS, "skill_composition.split", ", ".join(SPLITS), self.split)
        require(self.k is None or self.k >= 1, "skill_composition.k", "null or an integer >= 1", self.k)
        require(
            0 <= self.pair_fraction <= 1, "skill_composition.pair_fraction", "a number in [0, 1]", self.pair_fraction
        )
        if self.tuples is not None:
            ok = len(self.tuples) > 0 and all(
                isinstance(t, list) and len(t) > 0 and all(isinstance(a, str) for a in t) for t in self.tuples
            )
            require(
                ok, "skill_composition.tuples", "null or a non-empty list of non-empty lists of atom names", self.tuples
            )
            require(
                self.pair_fraction == 0,
                "skill_composition.pair_fraction",
                "0 when tuples are listed (the rule builds the whitelist only where tuples is null)",
                self.pair_fraction,
            )

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.atoms)

    def tuple_list(self, n_dims: int) -> tuple[tuple[int, ...], ...]:
        """The split's tuples, as sorted atom indices into ``atom_names(self.kinds, n_dims)``."""
        explicit = None if self.tuples is None else tuple(tuple(t) for t in self.tuples)
        return _split_tuples(self.kinds, n_dims, explicit, self.pair_fraction, self.whitelist_seed, self.split, self.k)

    def check(self, n_dims: int) -> None:
        if not self.tuple_list(n_dims):
            raise ICLError(
                f"skill_composition: split {self.split!r}"
                + (f" with k = {self.k}" if self.k else "")
                + " has no tuples; allowed: a split and k with at least one tuple (held-out tuples need a whitelist "
                "that leaves out some tuples of its atoms)"
            )

    def floats_per_sequence(self, n_points: int, n_dims: int) -> int:
        n_atoms = len(self.atoms) * n_dims
        return (n_points + 4) * n_atoms + 2 * n_points

    def sample_params(self, n: int, n_dims: int, generator: torch.Generator) -> Params:
        self.check(n_dims)
        table = self.tuple_list(n_dims)
        n_atoms = len(self.atoms) * n_dims
        dev = generator.device
        members = torch.zeros(len(table), n_atoms, dtype=torch.bool, device=dev)
        for i, t in enumerate(table):
            members[i, list(t)] = True
        # A uniform choice among the tuples as the first index of a uniform permutation: the very
        # draw sparse_linear makes for its support, so singleton linear atoms reproduce it exactly.
        choice = torch.rand(n, len(table), generator=generator, device=dev).argsort(dim=1)[:, 0]
        support = members[choice]
        w = gaussian((n, n_atoms), generator) * support
        return {"w": w, "support": support}

    def apply(self, params: Params, xs: Tensor) -> Tensor:
        return torch.einsum("bna,ba->bn", features(xs, self.kinds), coefficients(params).to(xs))


def coefficients(params: Params) -> Tensor:
    """The coefficients of f on the dictionary (B, A): w / sqrt(tuple size). With an orthonormal
    dictionary, ||f||^2 = E f(x)^2 = their squared sum."""
    k = params["support"].sum(dim=1, keepdim=True).clamp_min(1)
    return params["w"] / k.to(params["w"]).sqrt()
