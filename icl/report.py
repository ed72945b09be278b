"""`icl report SWEEP_DIR`: paper 1's figures and tables from a sweep's finished runs (Fig. 1
bars, Fig. 2 curves, Fig. 3 sparsity sweep and distance to the specialists, convex-combination
and frequency tables, training curves), evaluating whatever the runs' eval/ outputs lack."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icl import outputs
from icl.config import Config, load_config
from icl.errors import ICLError
from icl.evaluation.curves import BLOCK, error_curves
from icl.evaluation.report import save_figure, write_curves
from icl.evaluation.run import build_baselines, build_predictors, evaluate_suite, table_k
from icl.evaluation.scenarios import Scenario, slug
from icl.fileio import atomic_write
from icl.resources import check_evaluation
from icl.rng import Domain
from icl.sampling import PretrainMixture, Sampler

REFERENCES = ["least_squares", "bayes"]  # drawn beside the models; bayes is skipped where it does not exist
CLASSES_DIR = "report_classes"  # per-run cache of the cross-class curves, under RUN/eval/
SIZES = {(3, 2, 64): "tiny", (6, 4, 128): "small", (12, 8, 256): "standard"}


@dataclasses.dataclass
class Run:
    path: Path
    cfg: Config
    label: str = ""
    _model: Any = None

    def model(self, device: str):
        from icl.checkpoint import load_model
        from icl.runstate import newest_checkpoint

        if self._model is None:
            self._model, _ = load_model(newest_checkpoint(self.path)[1], device)
        return self._model

    @property
    def active(self) -> list[Any]:
        return [c for c in self.cfg.data.mixture if c.weight > 0]

    @property
    def arch(self) -> tuple[int, int, int]:
        m = self.cfg.model
        return m.n_layer, m.n_head, m.n_embd


@dataclasses.dataclass
class EvalClass:
    """A pure function class every run is evaluated on (the classes of the sweep's mixtures)."""

    name: str  # scenario file name, e.g. class.sparse_linear_nnz_2
    title: str
    spec: dict[str, Any]  # {name, params, noise_std}


def class_label(name: str, params: dict[str, Any]) -> str:
    shown = [
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in params.items()
        if not isinstance(v, (list, dict))
    ]
    return name + (f"({', '.join(shown)})" if shown else "")


# --------------------------------------------------------------------------------------------- runs


def collect_runs(sweep_dir: Path) -> tuple[list[Run], list[str]]:
    """The finished runs under ``sweep_dir`` (trained to train.steps) and notes on the others."""
    from icl.runstate import run_state

    if not sweep_dir.is_dir():
        raise ICLError(f"sweep directory not found: {sweep_dir}")
    runs, skipped = [], []
    for cfg_path in sorted(sweep_dir.glob("*/config.yaml")):
        cfg = load_config([cfg_path])
        state = run_state(cfg_path.parent, cfg.train.steps)
        if state in ("done", "trained"):
            runs.append(Run(cfg_path.parent, cfg))
        else:
            skipped.append(f"{cfg_path.parent.name}: not finished ({state}); not included")
    if not runs:
        raise ICLError(
            f"{sweep_dir}: no finished runs (subdirectories with config.yaml and checkpoints/last.ckpt at "
            "train.steps); allowed: a sweep directory such as runs/<sweep name>"
        )
    dims = sorted({(r.cfg.data.n_dims, r.cfg.data.n_points) for r in runs})
    if len(dims) > 1:
        raise ICLError(f"{sweep_dir}: runs differ in (data.n_dims, data.n_points) {dims}; allowed: one problem size")
    _label_runs(runs)
    runs.sort(key=lambda r: ([-c.weight for c in r.cfg.data.mixture], r.arch, r.path.name))
    return runs, skipped


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        return {k2: v2 for k, v in d.items() for k2, v2 in _flat(v, f"{prefix}{k}.").items()}
    return {prefix[:-1]: json.dumps(d, sort_keys=True) if isinstance(d, list) else d}


def _label_runs(runs: list[Run]) -> None:
    """Label each run by what tells it apart from the others: mixture, model size, other keys."""
    from icl.config import to_dict

    flats = [_flat(to_dict(r.cfg)) for r in runs]
    keys = sorted({k for f in flats for k in f})
    ignore = ("name", "out_dir", "eval.", "train.loggers", "train.wandb.", "train.progress_bar")
    differ = [k for k in keys if not k.startswith(ignore) and len({str(f.get(k)) for f in flats}) > 1]
    for run in runs:
        parts = []
        if any(k.startswith("data.mixture") for k in differ):
            parts.append(" + ".join(f"{c.weight:g} {class_label(c.name, dict(c.params))}" for c in run.active))
        if any(k.startswith("model.") for k in differ):
            parts.append("{}L/{}H/{}".format(*run.arch))
        flat = _flat(to_dict(run.cfg))
        parts += [f"{k}={flat.get(k)}" for k in differ if not k.startswith(("data.mixture", "model."))]
        run.label = "; ".join(parts) or run.path.name
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} ({run.path.name})"


# ----------------------------------------------------------------------------------- evaluation


def eval_classes(runs: list[Run]) -> list[EvalClass]:
    """Every class named in any run's mixture (zero-weight components included), plus weakly
    sparse data (nnz = d/2, paper 1's nnz 10 of 20) where a sparse class is trained."""
    d = runs[0].cfg.data.n_dims
    specs: dict[str, dict[str, Any]] = {}
    for run in runs:
        for c in run.cfg.data.mixture:
            spec = {"name": c.name, "params": dict(c.params), "noise_std": c.noise_std}
            specs.setdefault(json.dumps(spec, sort_keys=True), spec)
    for spec in list(specs.values()):
        if spec["name"] == "sparse_linear" and d >= 2 and spec["params"].get("nnz") != d // 2:
            weak = {**spec, "params": {**spec["params"], "nnz": d // 2}}
            specs.setdefault(json.dumps(weak, sort_keys=True), weak)
    out = []
    for spec in specs.values():
        label = class_label(spec["name"], spec["params"]) + (
            f", noise {spec['noise_std']:g}" if spec["noise_std"] else ""
        )
        out.append(EvalClass(f"class.{slug(label)}", label, spec))
    return out


def _mixture(spec: dict[str, Any], d: int) -> PretrainMixture:
    return PretrainMixture.from_config([{**spec, "weight": 1.0}], d)


def class_curves(run: Run, cls: EvalClass, n_prompts: int, device: str, notes: list[str]) -> dict[str, Any]:
    """Error curves of the run's model (and the references) on one class, cached in the run."""
    out = run.path / "eval" / CLASSES_DIR
    cached = out / f"{cls.name}.json"
    if cached.is_file():
        record = json.loads(cached.read_text())
        if record.get("n_prompts") == n_prompts:
            return record
    cfg, d = run.cfg, run.cfg.data.n_dims
    sampler = Sampler(cfg.data, cfg.eval.seed)
    scenario = Scenario(cls.name, cls.title, _mixture(cls.spec, d))
    local: list[str] = []
    predictors = build_predictors(
        run.model(device), REFERENCES, build_baselines(REFERENCES, d), scenario, sampler.mixture, d, local
    )
    notes += [n for n in local if n not in notes]
    result = error_curves(predictors, sampler, n_prompts, mixture=scenario.mixture, device=device)
    return write_curves(result, out, cls.name, f"{run.label}: {cls.title}")


def suite_records(run: Run, suite: str, n_prompts: int, device: str, baselines: list[str]) -> dict[str, dict[str, Any]]:
    """The run's eval/<suite> records, running the suite (with ``baselines``) if the run lacks it."""
    out = run.path / "eval" / suite
    if not (out / "summary.md").is_file():
        evaluate_suite(run.model(device), run.cfg, suite, out, baselines=baselines, n_prompts=n_prompts)
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


@torch.no_grad()
def prediction_distances(models: dict[str, Any], run: Run, mixture: PretrainMixture, n_prompts: int, device: str):
    """Mean over prompts of (p_a - p_b)^2 at every k for every pair of ``models``, on the same
    prompts as ``error_curves`` (EVAL domain, blocks of BLOCK)."""
    sampler = Sampler(run.cfg.data, run.cfg.eval.seed)
    names = list(models)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    sums = {p: 0.0 for p in pairs}
    for block in range((n_prompts + BLOCK - 1) // BLOCK):
        batch = sampler.sample_batch(block, batch_size=BLOCK, domain=Domain.EVAL, device=device, mixture=mixture)
        batch = batch.slice(0, min(BLOCK, n_prompts - block * BLOCK))
        preds = {n: m.predict(batch.xs, batch.ys).double() for n, m in models.items()}
        for a, b in pairs:
            sums[(a, b)] = sums[(a, b)] + ((preds[a] - preds[b]) ** 2).sum(dim=0).cpu().numpy()
    return {p: s / n_prompts for p, s in sums.items()}


# ---------------------------------------------------------------------------------- paper 1 data


def paper_run(cfg: Config) -> tuple[str, float, str] | None:
    """(family, w, size) when a run is one of paper 1's (d = 20, dense + sparse(2) or dense +
    ReLU(100) mixture, a paper model size), else None: only then are its numbers comparable."""
    mix = [(c.name, dict(c.params)) for c in cfg.data.mixture]
    size = SIZES.get((cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd))
    if cfg.data.n_dims != 20 or size is None or len(mix) != 2 or mix[0] != ("dense_linear", {}):
        return None
    family = {("sparse_linear", '{"nnz": 2}'): "dense_sparse", ("relu_2nn", '{"hidden": 100}'): "dense_relu"}.get(
        (mix[1][0], json.dumps(mix[1][1], sort_keys=True))
    )
    return (family, float(cfg.data.mixture[0].weight), size) if family else None


def paper_class(cls: EvalClass, d: int) -> str | None:
    if d != 20 or cls.spec["noise_std"]:
        return None
    return {
        ("dense_linear", "{}"): "dense",
        ("sparse_linear", '{"nnz": 2}'): "sparse2",
        ("sparse_linear", '{"nnz": 10}'): "sparse10",
        ("relu_2nn", '{"hidden": 100}'): "relu",
    }.get((cls.spec["name"], json.dumps(cls.spec["params"], sort_keys=True)))


def _table(text: str) -> dict[str, dict[int, float]]:
    rows = list(csv.reader(io.StringIO(text.strip())))
    return {h: {int(r[0]): float(r[i]) for r in rows[1:] if r[i]} for i, h in enumerate(rows[0]) if i}


def paper_curve(kind: str | None, run: tuple[str, float, str] | None) -> dict[int, float] | None:
    """Paper 1's published curve (k -> raw MSE) for eval class ``kind`` and run ``paper_run``."""
    if kind is None or run is None:
        return None
    family, w, size = run
    if size == "standard" and (kind, family, "w") in PAPER_CURVES:
        return _table(PAPER_CURVES[(kind, family, "w")]).get(f"{w:g}") or None
    if w == 0.5 and (kind, family, "size") in PAPER_CURVES:
        return _table(PAPER_CURVES[(kind, family, "size")]).get(size) or None
    return None


# ------------------------------------------------------------------------------------- writing


def _fmt(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list[Any]:
    cmap = _plt().get_cmap("viridis")
    return [cmap(i / max(1, n - 1) * 0.9) for i in range(n)]


def training_section(runs: list[Run], out: Path) -> str:
    """train/loss against step from every run's metrics.csv."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    rows = []
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        path = run.path / "metrics.csv"
        data = list(csv.DictReader(path.open())) if path.is_file() else []
        pts = [(int(r["step"]), float(r["train/loss"])) for r in data if r.get("train/loss")]
        if pts:
            ax.plot(*zip(*pts, strict=True), color=color, label=run.label, lw=1.2)
        rows.append([run.path.name, run.label, str(run.cfg.train.steps), _fmt(pts[-1][1] if pts else None)])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over positions)")
    ax.set_yscale("log")
    if ax.get_lines():
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no train/loss rows in metrics.csv", ha="center", transform=ax.transAxes)
    ax.set_title("Training loss (metrics.csv)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "training.png")
    header = ["run", "label", "steps", "last train/loss"]
    _write_csv(out / "runs.csv", header, rows)
    return "## Runs and training loss\n\n" + _md_table(header, rows) + "\n![training loss](training.png)\n"


def _paper_fig1(cls: EvalClass, run: Run, d: int, k: int) -> float | None:
    pr = paper_run(run.cfg)
    if k != 16 or pr is None or pr[0] != "dense_sparse" or pr[2] != "standard":
        return None
    return PAPER_FIG1.get((paper_class(cls, d), pr[1]))


def fig1_section(runs, classes, records, k: int, out: Path) -> str:
    """Paper 1 Fig. 1: error at k by eval class (groups) and pretraining mixture (bars)."""
    plt = _plt()
    d = runs[0].cfg.data.n_dims
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(classes) * max(1, len(runs)) / 3), 4))
    width = 0.8 / len(runs)
    header = ["eval class", *[r.label for r in runs], *REFERENCES]
    rows, md_rows = [], []
    for j, (run, color) in enumerate(zip(runs, _colors(len(runs)), strict=True)):
        means = [records[run.path.name][c.name]["curves"]["model"]["mean"][k] for c in classes]
        lo = [records[run.path.name][c.name]["curves"]["model"]["ci_low"][k] for c in classes]
        hi = [records[run.path.name][c.name]["curves"]["model"]["ci_high"][k] for c in classes]
        xs = np.arange(len(classes)) + (j - (len(runs) - 1) / 2) * width
        err = [np.subtract(means, lo), np.subtract(hi, means)]
        ax.bar(xs, means, width, yerr=err, color=color, label=run.label, capsize=2)
    first = records[runs[0].path.name]
    for i, c in enumerate(classes):
        ours = [records[r.path.name][c.name]["curves"]["model"]["mean"][k] for r in runs]
        refs = [first[c.name]["curves"].get(p, {}).get("mean", [math.nan] * (k + 1))[k] for p in REFERENCES]
        paper = [_paper_fig1(c, r, d, k) for r in runs]
        rows.append([c.title, *ours, *refs, *paper])
        md_rows.append(
            [c.title]
            + [_fmt(v) + (f" (paper {p:g})" if p is not None else "") for v, p in zip(ours, paper, strict=True)]
            + [_fmt(v) for v in refs]
        )
        ax.plot(
            [i - 0.45, i + 0.45], [refs[0]] * 2, color="black", ls="--", lw=1, label="least squares" if i == 0 else None
        )
    ax.set_xticks(range(len(classes)), [c.title for c in classes], fontsize=8)
    ax.set_ylabel(f"MSE at k = {k}")
    ax.set_title(f"Fig. 1: error after k = {k} in-context examples (raw MSE, 90% bootstrap intervals)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "fig1.png")
    _write_csv(out / "fig1.csv", [*header, *[f"paper: {r.label}" for r in runs]], rows)
    note = (
        "Paper 1's Fig. 1 values (d = 20, standard model, k = 16) are shown in brackets where a run matches."
        if any(paper_run(r.cfg) for r in runs)
        else "No run is at paper 1's scale (d = 20, a paper model size), so no published numbers are shown."
    )
    return (
        f"## Fig. 1: error at k = {k} by eval class and pretraining mixture\n\n![fig1](fig1.png)\n\n{note}\n\n"
        + _md_table(header, md_rows)
    )


def fig2_section(runs, classes, records, k: int, out: Path) -> str:
    """Paper 1 Fig. 2: curves vs k, one panel per eval class, one line per run; the paper's
    curves as markers where a run is at paper scale; mixture minus specialist gaps."""
    plt = _plt()
    d, n = runs[0].cfg.data.n_dims, runs[0].cfg.data.n_points
    cols = min(3, len(classes))
    nrows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    long_rows = []
    overlaid = False
    for ax, c in zip(axes.flat, classes, strict=False):
        for run, color in zip(runs, _colors(len(runs)), strict=True):
            rec = records[run.path.name][c.name]["curves"]["model"]
            ks = np.arange(len(rec["mean"]))
            ax.plot(ks, rec["mean"], color=color, lw=1.5, label=run.label)
            ax.fill_between(ks, rec["ci_low"], rec["ci_high"], color=color, alpha=0.15)
            paper = paper_curve(paper_class(c, d), paper_run(run.cfg))
            if paper:
                overlaid = True
                ax.plot(list(paper), list(paper.values()), "x", color=color, ms=4)
            for kk in ks:
                long_rows.append(
                    [
                        c.title,
                        run.label,
                        int(kk),
                        rec["mean"][kk],
                        rec["ci_low"][kk],
                        rec["ci_high"][kk],
                        (paper or {}).get(int(kk), ""),
                    ]
                )
        first = records[runs[0].path.name][c.name]["curves"]
        for ref, style in zip(REFERENCES, ("--", ":"), strict=True):
            if ref in first:
                ax.plot(first[ref]["mean"], color="black", ls=style, lw=1, label=ref)
        ax.axvline(d, color="grey", ls=":", lw=0.8)
        ax.set_title(c.title, fontsize=9)
        ax.set_xlabel("in-context examples k")
        ax.set_ylabel("MSE")
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(classes) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    marks = "; crosses: paper 1's published curves" if overlaid else ""
    fig.suptitle(f"Fig. 2: error vs k per pretraining mixture (raw MSE, 90% bootstrap bands{marks})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "fig2.png")
    _write_csv(out / "fig2.csv", ["eval class", "run", "k", "mean", "ci_low", "ci_high", "paper"], long_rows)
    show = sorted({1, max(1, d // 2), d, 2 * d, k, n - 1} & set(range(n)))
    text = "## Fig. 2: error vs number of in-context examples\n\n![fig2](fig2.png)\n\n"
    text += "Crosses: paper 1's published curves (raw MSE, d = 20) for runs at paper scale.\n\n" if overlaid else ""
    for c in classes:
        first = records[runs[0].path.name][c.name]["curves"]
        rows = [
            [r.label] + [_fmt(records[r.path.name][c.name]["curves"]["model"]["mean"][kk]) for kk in show] for r in runs
        ]
        rows += [[ref] + [_fmt(first[ref]["mean"][kk]) for kk in show] for ref in REFERENCES if ref in first]
        text += f"### {c.title}\n\n" + _md_table(["model", *[f"k={kk}" for kk in show]], rows) + "\n"
    return text + gaps_section(runs, classes, records, show, out)


def _specialist(runs: list[Run], spec: dict[str, Any], like: Run) -> Run | None:
    """The run trained on ``spec`` alone, preferring the same architecture as ``like``."""
    found = [
        r
        for r in runs
        if len(r.active) == 1 and (r.active[0].name, dict(r.active[0].params)) == (spec["name"], spec["params"])
    ]
    same = [r for r in found if r.arch == like.arch]
    return (same or found or [None])[0]


def gaps_section(runs, classes, records, show: list[int], out: Path) -> str:
    """Mixture model minus the specialist of each class it was trained on, per k."""
    rows = []
    for run in runs:
        if len(run.active) < 2:
            continue
        for c in classes:
            comp = next((a for a in run.active if (a.name, dict(a.params)) == (c.spec["name"], c.spec["params"])), None)
            spec_run = _specialist(runs, c.spec, run) if comp else None
            if spec_run is None:
                continue
            mine = records[run.path.name][c.name]["curves"]["model"]["mean"]
            theirs = records[spec_run.path.name][c.name]["curves"]["model"]["mean"]
            rows.append([run.label, c.title, spec_run.label] + [mine[kk] - theirs[kk] for kk in show])
    if not rows:
        return ""
    header = ["mixture model", "eval class", "specialist", *[f"k={kk}" for kk in show]]
    _write_csv(out / "gaps.csv", header, rows)
    md = [r[:3] + [f"{v:+.4f}" for v in r[3:]] for r in rows]
    return (
        "### Mixture minus specialist on the specialist's class (MSE; > 0: the mixture is worse)\n\n"
        + _md_table(header, md)
        + "\n"
    )


def _paper_scale(run: Run, k: int, w: float | None = None) -> bool:
    """A standard-size dense + sparse(2) run at d = 20 reported at k = 16 (Figs. 1 and 3)."""
    pr = paper_run(run.cfg)
    return bool(pr) and pr[0] == "dense_sparse" and pr[2] == "standard" and k == 16 and (w is None or pr[1] == w)


def fig3_section(runs, suites, k: int, n_prompts: int, device: str, out: Path) -> str:
    """Paper 1 Fig. 3: error on sparse data with nnz = 1..d at k, and each mixture model's
    prediction distance to the dense and sparse specialists."""
    plt = _plt()
    d = runs[0].cfg.data.n_dims
    nnzs = list(range(1, d + 1))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    header, cols = ["nnz"], []
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        vals = [suites[run.path.name][f"sparsity.nnz_{s}"]["curves"]["model"]["mean"][k] for s in nnzs]
        ax1.plot(nnzs, vals, "o-", color=color, ms=3, label=run.label)
        header.append(run.label)
        cols.append(vals)
        col = {1.0: "dense", 0.0: "sparse", 0.5: "mixture"}.get(paper_run(run.cfg)[1]) if _paper_scale(run, k) else None
        if col:  # the paper plots MSE / d: times d = 20 gives raw MSE
            paper = [20 * _table(PAPER_FIG3A)[col][s] for s in nnzs]
            ax1.plot(nnzs, paper, "x", color=color, ms=4, label=f"paper 1 (x 20): {run.label}")
            header.append(f"paper x 20: {run.label}")
            cols.append(paper)
    first = suites[runs[0].path.name]
    if all("least_squares" in first[f"sparsity.nnz_{s}"]["curves"] for s in nnzs):
        ls = [first[f"sparsity.nnz_{s}"]["curves"]["least_squares"]["mean"][k] for s in nnzs]
        ax1.plot(nnzs, ls, color="black", ls="--", lw=1, label="least squares")
        header.append("least_squares")
        cols.append(ls)
    ax1.set_xlabel("non-zero coefficients (nnz)")
    ax1.set_ylabel(f"MSE at k = {k}")
    ax1.set_title("Fig. 3a: sparse data, nnz = 1..d", fontsize=9)
    ax1.legend(fontsize=6)
    rows = [[s, *vals] for s, *vals in zip(nnzs, *cols, strict=True)]
    _write_csv(out / "fig3_error.csv", header, rows)
    text = f"## Fig. 3: sparsity sweep at k = {k}\n\n![fig3](fig3.png)\n\n"
    text += _md_table(header, [[str(r[0])] + [_fmt(v) for v in r[1:]] for r in rows])
    if any(h.startswith("paper") for h in header):
        text += "\nPaper 1's Fig. 3a plots MSE/d; its values are shown multiplied by d = 20 (raw MSE).\n"
    dist = distance_rows(runs, nnzs, k, n_prompts, device, ax2)
    fig.tight_layout()
    save_figure(fig, out / "fig3.png")
    if not dist:
        return text + "\nPrediction distance: needs a dense + sparse mixture run and both specialists (w = 0 and 1).\n"
    header = ["mixture model", "nnz", "MSD to dense", "MSD to sparse", "MSD dense-sparse"]
    header += ["normalised to dense", "normalised to sparse"]
    if any(len(r) > len(header) for r in dist):
        header += ["paper normalised to dense", "paper normalised to sparse"]
    dist = [r + [""] * (len(header) - len(r)) for r in dist]
    _write_csv(out / "fig3_distance.csv", header, dist)
    text += (
        "\n### Prediction distance to the specialists\n\nMSD: mean over prompts of the squared difference between "
        f"two models' predictions at k = {k} on the same prompts; normalised: divided by the MSD between the two "
        "specialists (0: the mixture predicts like that specialist; paper 1 does not state its normalisation, this "
        "one matches its values at the extremes).\n\n"
    )
    return text + _md_table(header, [[r[0], str(r[1])] + [_fmt(v) if v != "" else "" for v in r[2:]] for r in dist])


def distance_rows(runs, nnzs: list[int], k: int, n_prompts: int, device: str, ax) -> list[list[Any]]:
    """For each dense + sparse mixture run with both specialists: MSD to each at every nnz."""
    d = runs[0].cfg.data.n_dims
    rows = []
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        sparse_c = next((a for a in run.active if a.name == "sparse_linear"), None)
        if len(run.active) < 2 or sparse_c is None or "dense_linear" not in {a.name for a in run.active}:
            continue
        dense = _specialist(runs, {"name": "dense_linear", "params": {}}, run)
        sparse = _specialist(runs, {"name": "sparse_linear", "params": dict(sparse_c.params)}, run)
        if dense is None or sparse is None:
            continue
        models = {"mixture": run.model(device), "dense": dense.model(device), "sparse": sparse.model(device)}
        paper = _table(PAPER_FIG3B) if _paper_scale(run, k, 0.5) else None
        norm = {"dense": [], "sparse": []}
        for s in nnzs:
            data = _mixture({"name": "sparse_linear", "params": {**sparse_c.params, "nnz": s}, "noise_std": 0.0}, d)
            msd = {pair: v[k] for pair, v in prediction_distances(models, run, data, n_prompts, device).items()}
            between = msd[("dense", "sparse")]
            for spec in norm:
                norm[spec].append(msd[("mixture", spec)] / between if between > 0 else math.nan)
            rows.append([run.label, s, msd[("mixture", "dense")], msd[("mixture", "sparse")], between])
            rows[-1] += [norm["dense"][-1], norm["sparse"][-1]] + (
                [paper["dense"][s], paper["sparse"][s]] if paper else []
            )
        ax.plot(nnzs, norm["dense"], "o-", color=color, ms=3, label=f"{run.label} vs dense specialist")
        ax.plot(nnzs, norm["sparse"], "s--", color=color, ms=3, label=f"{run.label} vs sparse specialist")
        if paper:
            ax.plot(nnzs, [paper["dense"][s] for s in nnzs], "x", color=color, ms=4, label="paper 1 vs dense")
            ax.plot(nnzs, [paper["sparse"][s] for s in nnzs], "+", color=color, ms=5, label="paper 1 vs sparse")
    ax.set_xlabel("non-zero coefficients (nnz)")
    ax.set_ylabel("MSD / MSD(dense, sparse specialists)")
    ax.set_title(f"Fig. 3b: prediction distance at k = {k}", fontsize=9)
    if rows:
        ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "needs a mixture run and both specialists", ha="center", transform=ax.transAxes)
    return rows


def sinusoid_section(runs, suites, k: int, out: Path) -> str:
    """Paper 1 Figs. 4-6 as numbers: error at k vs the convex coefficient a and vs frequency."""
    plt = _plt()
    text = ""
    for group, what, xlabel in (
        ("convex", "a f_A + (1 - a) f_B (eval.convex_pair; default a b1 x + (1 - a) b2 cos(2 pi x))", "a"),
        ("frequency", "sinusoids b cos(2 pi w x) at fixed frequencies w", "frequency w"),
    ):
        first = suites[runs[0].path.name]
        scen = sorted((r for r in first.values() if r.get("group") == group), key=lambda r: r["value"])
        if not scen:
            continue
        values = [r["value"] for r in scen]
        refs = [p for p in REFERENCES if p in scen[0]["curves"]]
        header = [xlabel, *[r.label for r in runs], *refs]
        prior = _frequency_prior(runs) if group == "frequency" else None
        if prior is not None:
            header.append("prior P(W <= w)")
        rows = []
        fig, ax = plt.subplots(figsize=(6, 4))
        for run, color in zip(runs, _colors(len(runs)), strict=True):
            recs = {r["value"]: r for r in suites[run.path.name].values() if r.get("group") == group}
            ys = [recs[v]["curves"]["model"]["mean"][k] for v in values]
            ax.plot(values, ys, "o-", color=color, ms=3, label=run.label)
        for ref, style in zip(refs, ("--", ":"), strict=False):
            ax.plot(values, [r["curves"][ref]["mean"][k] for r in scen], color="black", ls=style, lw=1, label=ref)
        for i, v in enumerate(values):
            row = [v] + [
                next(r for r in suites[run.path.name].values() if r.get("group") == group and r["value"] == v)[
                    "curves"
                ]["model"]["mean"][k]
                for run in runs
            ]
            row += [scen[i]["curves"][ref]["mean"][k] for ref in refs]
            if prior is not None:
                row.append(float((prior <= v).mean()))
            rows.append(row)
        if group == "frequency":
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"MSE at k = {k}")
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_title(f"{what}", fontsize=8)
        ax.legend(fontsize=6)
        fig.tight_layout()
        save_figure(fig, out / f"{group}.png")
        _write_csv(out / f"{group}.csv", header, rows)
        md = [[f"{r[0]:g}"] + [_fmt(v) for v in r[1:]] for r in rows]
        text += (
            f"## {group.capitalize()} sweep: {what}, error at k = {k}\n\n![{group}]({group}.png)\n\n"
            + _md_table(header, md)
            + "\n"
        )
    return text


def _frequency_prior(runs: list[Run]) -> np.ndarray | None:
    """Draws of the training frequency prior (a Gamma), to say where each test frequency lies."""
    for run in runs:
        for c in run.cfg.data.mixture:
            p = dict(c.params)
            if c.name == "sinusoid" and "freq_shape" in p and "freq_scale" in p and p.get("freq") in (None, 0):
                return np.random.default_rng(0).gamma(p["freq_shape"], p["freq_scale"], 200_000)
    return None


# ---------------------------------------------------------------------------------------- main


def write_report(sweep_dir: Path, out: Path | None = None, n_prompts: int | None = None, device: str = "cpu") -> Path:
    """Write report.md, CSV tables and PNG plots for the finished runs under ``sweep_dir``."""
    runs, skipped = collect_runs(sweep_dir)
    cfg = runs[0].cfg
    if n_prompts is not None:
        check_evaluation(cfg, n_prompts, "--n-prompts")  # the range, and memory for the largest run
    n_prompts = n_prompts or cfg.eval.n_prompts
    d, k = cfg.data.n_dims, table_k(cfg, cfg.data.n_points)
    out = Path(out) if out else sweep_dir / "report"
    outputs.check_replaceable(out, outputs.REPORT, "--out")  # before any evaluation
    partial = outputs.begin(out, outputs.REPORT)
    notes = list(skipped)
    try:
        classes = eval_classes(runs)
        records = {r.path.name: {c.name: class_curves(r, c, n_prompts, device, notes) for c in classes} for r in runs}
        parts = [
            f"# Report: {sweep_dir}\n\n{len(runs)} finished runs; raw MSE (paper 1's convention: unit-variance "
            f"functions, the zero predictor scores about 1) on {n_prompts} prompts per class, evaluation seed "
            f"{cfg.eval.seed}, d = {d}, k = {k} in tables (eval.table_k). References (least squares, Bayes-optimal "
            "for the class) come from the first run's evaluation; every run sees the same prompts.\n",
            training_section(runs, partial),
            fig1_section(runs, classes, records, k, partial),
            fig2_section(runs, classes, records, k, partial),
        ]
        trained = {c.name for r in runs for c in r.cfg.data.mixture}
        if "sparse_linear" in trained and d >= 2:
            # Least squares only: exact Bayes on sparse data averages over C(d, nnz) supports, hours
            # on a CPU at d = 20 (run `icl eval` with more baselines first: the report reuses it).
            suites = {
                r.path.name: suite_records(r, "paper1_dense_sparse", n_prompts, device, ["least_squares"]) for r in runs
            }
            parts.append(fig3_section(runs, suites, k, n_prompts, device, partial))
        if "sinusoid" in trained and d == 1:
            suites = {r.path.name: suite_records(r, "paper1_sinusoid", n_prompts, device, REFERENCES) for r in runs}
            parts.append(sinusoid_section(runs, suites, k, partial))
        if notes:
            parts.append("## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
        atomic_write(partial / "report.md", "\n".join(parts))
    except BaseException:
        outputs.discard(partial)
        raise
    outputs.commit(partial, out, outputs.REPORT, "--out")
    return out


# Paper 1's published numbers, read from the figures' vector data (raw MSE, d = 20; standard
# model unless a column names a size). Columns: w = weight on the dense class; rows: k.
PAPER_FIG1 = {  # Fig. 1, k = 16: (eval class, w) -> MSE; w = 0 sparse-only, 1 dense-only
    ("sparse2", 0.0): 0.002,
    ("sparse2", 1.0): 0.237,
    ("sparse2", 0.5): 0.004,
    ("sparse10", 0.0): 0.351,
    ("sparse10", 1.0): 0.237,
    ("sparse10", 0.5): 0.236,
    ("dense", 0.0): 0.554,
    ("dense", 1.0): 0.225,
    ("dense", 0.5): 0.225,
}
PAPER_CURVES = {  # Figs. 2, 7 (columns w) and 8, 9 (columns: model size, w = 0.5): (eval class, family, columns)
    ("dense", "dense_sparse", "w"): """k,0,0.25,0.5,0.75,1
1,0.954,0.950,0.947,0.948,0.947
2,0.995,0.945,0.923,0.909,0.905
3,1.036,0.930,0.883,0.857,0.841
4,1.107,0.908,0.854,0.830,0.810
5,1.067,0.810,0.788,0.771,0.755
6,1.006,0.733,0.733,0.725,0.711
8,0.897,0.610,0.607,0.607,0.603
10,0.789,0.489,0.487,0.487,0.486
12,0.730,0.403,0.402,0.401,0.401
14,0.621,0.303,0.300,0.300,0.300
15,0.574,0.260,0.258,0.257,0.255
16,0.534,0.200,0.198,0.197,0.196
18,0.459,0.105,0.101,0.100,0.099
19,0.432,0.069,0.060,0.057,0.054
20,0.405,0.029,0.018,0.012,0.006
21,0.370,0.013,0.006,0.003,0.001
22,0.338,0.006,0.003,0.001,0.000
25,0.304,0.002,0.001,0.000,0.000
30,0.214,0.001,0.000,0.000,0.000
35,0.209,0.000,0.000,0.000,0.000
39,0.187,0.000,0.000,0.000,0.000
""",
    ("sparse2", "dense_sparse", "w"): """k,0,0.25,0.5,0.75,1
1,0.981,0.980,0.986,0.987,0.992
2,0.829,0.834,0.853,0.873,0.920
3,0.603,0.616,0.648,0.694,0.848
4,0.378,0.389,0.468,0.539,0.803
5,0.184,0.176,0.270,0.370,0.752
6,0.071,0.082,0.154,0.230,0.722
8,0.018,0.017,0.047,0.073,0.617
10,0.004,0.004,0.012,0.019,0.517
12,0.001,0.002,0.003,0.006,0.395
14,0.001,0.001,0.002,0.005,0.306
15,0.001,0.001,0.002,0.003,0.252
16,0.001,0.001,0.001,0.002,0.203
18,0.000,0.001,0.001,0.001,0.099
19,0.000,0.001,0.001,0.001,0.058
20,0.000,0.001,0.001,0.001,0.010
21,0.001,0.001,0.001,0.001,0.004
22,0.000,0.000,0.001,0.001,0.001
25,0.000,0.000,0.000,0.000,0.001
30,0.000,0.000,0.000,0.000,0.000
35,0.000,0.000,0.000,0.000,0.003
39,0.000,0.000,0.000,0.000,0.000
""",
    ("dense", "dense_relu", "w"): """k,0,0.25,0.5,0.75,1
1,1.071,1.017,0.979,0.956,0.947
2,1.060,0.996,0.953,0.920,0.905
3,0.986,0.929,0.888,0.858,0.841
4,0.963,0.902,0.863,0.832,0.810
5,0.900,0.837,0.799,0.772,0.755
6,0.838,0.778,0.746,0.724,0.711
8,0.753,0.680,0.646,0.623,0.603
10,0.649,0.559,0.526,0.504,0.486
12,0.568,0.465,0.434,0.415,0.401
14,0.500,0.362,0.331,0.313,0.300
15,0.468,0.310,0.281,0.265,0.255
16,0.421,0.243,0.218,0.204,0.196
18,0.358,0.132,0.114,0.105,0.099
19,0.349,0.080,0.067,0.060,0.054
20,0.317,0.026,0.019,0.012,0.006
21,0.291,0.007,0.005,0.003,0.001
22,0.269,0.002,0.002,0.001,0.000
25,0.225,0.000,0.000,0.000,0.000
30,0.154,0.000,0.000,0.000,0.000
35,0.105,0.000,0.000,0.000,0.000
39,0.081,0.000,0.000,0.000,0.000
""",
    ("relu", "dense_relu", "w"): """k,0,0.25,0.5,0.75,1
1,0.894,0.902,0.925,0.962,
2,0.796,0.803,0.827,0.878,
3,0.739,0.749,0.775,0.829,
4,0.713,0.722,0.746,0.797,
5,0.684,0.693,0.716,0.764,
6,0.660,0.666,0.686,0.728,
8,0.602,0.611,0.632,0.671,
10,0.573,0.579,0.596,0.631,
12,0.529,0.542,0.563,0.599,
14,0.479,0.488,0.504,0.532,
15,0.487,0.500,0.517,0.549,
16,0.455,0.465,0.480,0.501,
18,0.443,0.454,0.465,0.481,
19,0.438,0.447,0.454,0.465,
20,0.420,0.422,0.425,0.432,
21,0.405,0.406,0.409,0.408,
22,0.398,0.399,0.399,0.400,
25,0.375,0.375,0.376,0.376,
30,0.331,0.332,0.332,0.333,
35,0.284,0.285,0.285,0.285,
39,0.281,0.281,0.282,0.281,
""",
    ("dense", "dense_sparse", "size"): """k,tiny,small,standard
1,0.946,0.947,0.947
2,0.907,0.918,0.923
4,0.818,0.859,0.854
5,0.764,0.797,0.788
8,0.614,0.634,0.607
10,0.515,0.503,0.487
12,0.446,0.415,0.402
15,0.344,0.268,0.258
16,0.297,0.206,0.198
20,0.207,0.046,0.018
25,0.125,0.004,0.001
30,0.077,0.001,0.000
35,0.052,0.001,0.000
40,0.038,0.001,0.000
""",
    ("sparse2", "dense_sparse", "size"): """k,tiny,small,standard
1,0.995,0.982,0.986
2,0.912,0.867,0.853
4,0.789,0.548,0.468
5,0.729,0.429,0.270
8,0.587,0.223,0.047
10,0.497,0.139,0.012
12,0.397,0.073,0.003
15,0.299,0.029,0.002
16,0.278,0.023,0.001
20,0.175,0.008,0.001
25,0.108,0.002,0.000
30,0.064,0.001,0.000
35,0.047,0.001,0.000
40,0.034,0.001,0.000
""",
    ("dense", "dense_relu", "size"): """k,tiny,small,standard
1,0.979,0.979,0.979
2,0.957,0.952,0.953
4,0.866,0.863,0.863
5,0.802,0.799,0.799
8,0.649,0.645,0.646
10,0.535,0.526,0.526
12,0.457,0.434,0.434
15,0.343,0.282,0.281
16,0.291,0.220,0.218
20,0.187,0.041,0.019
25,0.101,0.002,0.000
30,0.055,0.001,0.000
35,0.034,0.000,0.000
40,0.022,0.000,0.000
""",
    ("relu", "dense_relu", "size"): """k,tiny,small,standard
1,0.926,0.925,0.925
2,0.827,0.827,0.827
4,0.747,0.746,0.746
5,0.717,0.717,0.716
8,0.633,0.634,0.632
10,0.599,0.597,0.596
12,0.563,0.564,0.563
15,0.521,0.519,0.517
16,0.485,0.480,0.480
20,0.446,0.428,0.425
25,0.397,0.376,0.376
30,0.353,0.334,0.332
35,0.298,0.286,0.285
40,0.290,0.275,0.274
""",
}
PAPER_FIG3A = """nnz,dense,sparse,mixture
1,0.0128,0.0000,0.0001
2,0.0118,0.0001,0.0002
3,0.0125,0.0012,0.0020
4,0.0120,0.0039,0.0049
5,0.0117,0.0060,0.0073
6,0.0120,0.0094,0.0094
7,0.0116,0.0116,0.0103
8,0.0117,0.0125,0.0109
9,0.0118,0.0156,0.0113
10,0.0119,0.0176,0.0118
11,0.0116,0.0190,0.0116
12,0.0116,0.0216,0.0117
13,0.0118,0.0225,0.0119
14,0.0120,0.0238,0.0122
15,0.0121,0.0237,0.0122
16,0.0118,0.0247,0.0120
17,0.0116,0.0266,0.0118
18,0.0116,0.0269,0.0117
19,0.0112,0.0268,0.0113
20,0.0112,0.0277,0.0113
"""  # Fig. 3a, k = 16, as plotted: MSE / d
PAPER_FIG3B = """nnz,dense,sparse
1,0.994,0.009
2,0.999,0.023
3,0.784,0.177
4,0.535,0.426
5,0.370,0.589
6,0.200,0.759
7,0.110,0.873
8,0.071,0.909
9,0.046,0.922
10,0.025,0.955
11,0.020,0.965
12,0.018,0.971
13,0.014,0.970
14,0.015,0.974
15,0.015,0.975
16,0.014,0.981
17,0.012,0.987
18,0.013,0.988
19,0.013,0.987
20,0.008,0.990
"""  # Fig. 3b, k = 16: MSD(mixture, specialist) normalised
