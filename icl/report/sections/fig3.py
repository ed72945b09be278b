"""Paper 1 Fig. 3: error on sparse data with nnz = 1..d at the table k (suite paper1_dense_sparse),
and each dense + sparse mixture model's prediction distance to the dense and sparse specialists."""

from __future__ import annotations

import math
from typing import Any

import torch

from icl import figures
from icl.evaluation.curves import BLOCK
from icl.report.cache import class_mixture
from icl.report.context import Report
from icl.report.paper import fig3a_curve, fig3b_curves
from icl.report.render import colors, fmt, md_table, plt, write_csv
from icl.report.runs import Run, specialist, trained_classes
from icl.rng import Domain
from icl.sampling import PretrainMixture, Sampler

SUITE = "paper1_dense_sparse"
# Least squares only: exact Bayes on sparse data averages over C(d, nnz) supports, hours on a CPU at
# d = 20 (run `icl eval` with more baselines first: the report reuses it).
BASELINES = ["least_squares"]


def applies(runs: list[Run]) -> bool:
    return "sparse_linear" in trained_classes(runs) and runs[0].cfg.data.n_dims >= 2


BELOW = {"fontsize": 6, "loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "frameon": False}


def write(report: Report) -> str:
    runs, k = report.runs, report.k
    suites = report.suite(SUITE, BASELINES)
    nnzs = list(range(1, report.d + 1))
    # Each panel's legend below it (one line per run, two per mixture on the right): never over the data.
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4 + 0.11 * 2 * len(runs)), layout="constrained")
    header, cols, drawn = ["nnz"], [], {}
    for run, color in zip(runs, colors(len(runs)), strict=True):
        vals = [suites[run.key][f"sparsity.nnz_{s}"]["curves"]["model"]["mean"][k] for s in nnzs]
        ax1.plot(nnzs, vals, "o-", color=color, ms=3, label=run.label)
        drawn[run.label] = (nnzs, vals)
        header.append(run.label)
        cols.append(vals)
        published = fig3a_curve(run.cfg, k)
        if published:  # the paper plots MSE / d; fig3a_curve gives raw MSE
            paper = [published[s] for s in nnzs]
            ax1.plot(nnzs, paper, "x", color=color, ms=4, label=f"paper 1 (x 20): {run.label}")
            drawn[f"paper 1 (x 20): {run.label}"] = (nnzs, paper)
            header.append(f"paper x 20: {run.label}")
            cols.append(paper)
    first = suites[runs[0].key]
    if all("least_squares" in first[f"sparsity.nnz_{s}"]["curves"] for s in nnzs):
        ls = [first[f"sparsity.nnz_{s}"]["curves"]["least_squares"]["mean"][k] for s in nnzs]
        style = figures.line_style("least_squares")
        ax1.plot(nnzs, ls, color=figures.color("least_squares"), ls=style, lw=1.2, label="least_squares")
        drawn["least_squares"] = (nnzs, ls)
        header.append("least_squares")
        cols.append(ls)
    figures.set_yaxis(ax1, drawn, report.yscale, keep=[r.label for r in runs])
    ax1.set_xlabel("non-zero coefficients (nnz)")
    ax1.set_ylabel(f"MSE at k = {k}")
    ax1.set_title("Fig. 3a: sparse data, nnz = 1..d", fontsize=9)
    ax1.legend(**BELOW)
    ax1.grid(alpha=0.25, lw=0.5)
    rows = [[s, *vals] for s, *vals in zip(nnzs, *cols, strict=True)]
    write_csv(report.out / "fig3_error.csv", header, rows)
    text = f"## Fig. 3: sparsity sweep at k = {k}\n\n![fig3](fig3.png)\n\n"
    text += md_table(header, [[str(r[0])] + [fmt(v) for v in r[1:]] for r in rows])
    if any(h.startswith("paper") for h in header):
        text += "\nPaper 1's Fig. 3a plots MSE/d; its values are shown multiplied by d = 20 (raw MSE).\n"
    dist = distance_rows(report, nnzs, ax2)
    figures.save_figure(fig, report.out / "fig3.png")
    if not dist:
        return text + "\nPrediction distance: needs a dense + sparse mixture run and both specialists (w = 0 and 1).\n"
    header = ["mixture model", "nnz", "MSD to dense", "MSD to sparse", "MSD dense-sparse"]
    header += ["normalised to dense", "normalised to sparse"]
    if any(len(r) > len(header) for r in dist):
        header += ["paper normalised to dense", "paper normalised to sparse"]
    dist = [r + [""] * (len(header) - len(r)) for r in dist]
    write_csv(report.out / "fig3_distance.csv", header, dist)
    text += (
        "\n### Prediction distance to the specialists\n\nMSD: mean over prompts of the squared difference between "
        f"two models' predictions at k = {k} on the same prompts; normalised: divided by the MSD between the two "
        "specialists (0: the mixture predicts like that specialist; paper 1 does not state its normalisation, this "
        "one matches its values at the extremes).\n\n"
    )
    return text + md_table(header, [[r[0], str(r[1])] + [fmt(v) if v != "" else "" for v in r[2:]] for r in dist])


def distance_rows(report: Report, nnzs: list[int], ax) -> list[list[Any]]:
    """For each dense + sparse mixture run with both specialists: MSD to each at every nnz."""
    runs, k, device = report.runs, report.k, report.device
    rows = []
    for run, color in zip(runs, colors(len(runs)), strict=True):
        sparse_c = next((a for a in run.active if a.name == "sparse_linear"), None)
        if len(run.active) < 2 or sparse_c is None or "dense_linear" not in {a.name for a in run.active}:
            continue
        dense = specialist(runs, "dense_linear", {}, run)
        sparse = specialist(runs, "sparse_linear", dict(sparse_c.params), run)
        if dense is None or sparse is None:
            continue
        models = {"mixture": run.model(device), "dense": dense.model(device), "sparse": sparse.model(device)}
        paper = fig3b_curves(run.cfg, k)
        norm = {"dense": [], "sparse": []}
        for s in nnzs:
            params = {**sparse_c.params, "nnz": s}
            data = class_mixture({"name": "sparse_linear", "params": params, "noise_std": 0.0}, report.d)
            msd = {pair: v[k] for pair, v in prediction_distances(models, run, data, report.n_prompts, device).items()}
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
        ax.legend(**BELOW)
    else:
        ax.text(0.5, 0.5, "needs a mixture run and both specialists", ha="center", transform=ax.transAxes)
    return rows


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
