"""Paper 1's published numbers (data files under icl/data/, read by ``paper_data``) and which of
them a run is comparable with: same d, mixture, model size and k as the paper's figures."""

from __future__ import annotations

import csv
import functools
from importlib import resources
from typing import Any, NamedTuple

from icl.config import Config
from icl.errors import ICLError

PAPER_D = 20  # every paper 1 number is at d = 20
PAPER_K = 16  # Figs. 1 and 3 are read at k = 16
# The paper's function classes and pretraining families as (registry key, params).
CLASSES = {
    "dense": ("dense_linear", {}),
    "sparse2": ("sparse_linear", {"nnz": 2}),
    "sparse10": ("sparse_linear", {"nnz": 10}),
    "relu": ("relu_2nn", {"hidden": 100}),
}
FAMILIES = {"dense_sparse": CLASSES["sparse2"], "dense_relu": CLASSES["relu"]}  # each beside dense_linear


class PaperRun(NamedTuple):
    family: str  # a FAMILIES key
    w: float  # weight on dense_linear
    size: str  # a size of paper1_models.csv


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@functools.cache
def paper_data(name: str) -> tuple[dict[str, Any], ...]:
    """The rows of ``icl/data/<name>.csv`` (lines starting with # describe the file), numbers parsed."""
    path = resources.files("icl") / "data" / f"{name}.csv"
    if not path.is_file():
        raise ICLError(f"paper data file {path} is missing: a broken install of icl (reinstall it)")
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return tuple({k: _number(v) for k, v in row.items()} for row in csv.DictReader(lines))


def paper_run(cfg: Config) -> PaperRun | None:
    """The paper's (family, w, size) when a run is one of paper 1's (d = 20, dense_linear + sparse(2) or
    ReLU(100) mixture, a paper model size), else None: only then are its numbers comparable."""
    mix = [(c.name, dict(c.params)) for c in cfg.data.mixture]
    arch = (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd)
    size = next(
        (m["size"] for m in paper_data("paper1_models") if (m["n_layer"], m["n_head"], m["n_embd"]) == arch), None
    )
    if cfg.model.family != "gpt2":  # the paper's models are GPT-2 transformers
        return None
    if cfg.data.n_dims != PAPER_D or size is None or len(mix) != 2 or mix[0] != CLASSES["dense"]:
        return None
    family = next((f for f, cls in FAMILIES.items() if mix[1] == cls), None)
    return PaperRun(family, float(cfg.data.mixture[0].weight), size) if family else None


def paper_class(spec: dict[str, Any], d: int) -> str | None:
    """The paper's name for an eval class ``{name, params, noise_std}``, or None if the paper has none."""
    if d != PAPER_D or spec["noise_std"]:
        return None
    return next((c for c, cls in CLASSES.items() if (spec["name"], spec["params"]) == cls), None)


def paper_curve(kind: str | None, run: PaperRun | None) -> dict[int, float] | None:
    """Paper 1's published curve (k -> raw MSE) for eval class ``kind`` and a ``paper_run``: the w sweep
    (Figs. 2, 7) for standard models, the size sweep at w = 0.5 (Figs. 8, 9) for the other sizes."""
    if kind is None or run is None:
        return None
    rows = [r for r in paper_data("paper1_curves") if (r["family"], r["eval_class"]) == (run.family, kind)]
    if run.size == "standard" and any(r["sweep"] == "w" for r in rows):
        curve = {r["k"]: r["mse"] for r in rows if r["sweep"] == "w" and r["w"] == run.w}
    elif run.w == 0.5 and any(r["sweep"] == "size" for r in rows):
        curve = {r["k"]: r["mse"] for r in rows if r["sweep"] == "size" and r["size"] == run.size}
    else:
        return None
    return curve or None


def _fig1_scale(cfg: Config, k: int) -> PaperRun | None:
    """A standard dense + sparse(2) run at d = 20 reported at k = 16: the runs of Figs. 1 and 3."""
    run = paper_run(cfg)
    ok = run is not None and run.family == "dense_sparse" and run.size == "standard" and k == PAPER_K
    return run if ok else None


def fig1_value(spec: dict[str, Any], cfg: Config, k: int) -> float | None:
    """Fig. 1's raw MSE for eval class ``spec`` and the run trained with ``cfg``, if comparable."""
    run, kind = _fig1_scale(cfg, k), paper_class(spec, cfg.data.n_dims)
    if run is None:
        return None
    return next((r["mse"] for r in paper_data("paper1_fig1") if (r["eval_class"], r["w"]) == (kind, run.w)), None)


def fig3a_curve(cfg: Config, k: int) -> dict[int, float] | None:
    """Fig. 3a (nnz -> raw MSE; the paper plots MSE / d) for the run trained with ``cfg``, if comparable."""
    run = _fig1_scale(cfg, k)
    if run is None:
        return None
    return {r["nnz"]: PAPER_D * r["mse_over_d"] for r in paper_data("paper1_fig3a") if r["w"] == run.w} or None


def fig3b_curves(cfg: Config, k: int) -> dict[str, dict[int, float]] | None:
    """Fig. 3b ({specialist: nnz -> normalised distance}) for the w = 0.5 mixture run, if comparable."""
    run = _fig1_scale(cfg, k)
    if run is None or run.w != 0.5:
        return None
    curves: dict[str, dict[int, float]] = {}
    for r in paper_data("paper1_fig3b"):
        curves.setdefault(r["specialist"], {})[r["nnz"]] = r["normalised_msd"]
    return curves
