"""The figures of `icl align`, drawn from its align.json record: source x source calibrated
alignment, layer x source and layer x layer scores, agreement curves and, with --steps, alignment
to the references against ICL error across a run's checkpoints."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from icl.evaluation.agreement import SEP
from icl.figures import DPI, plt
from icl.fileio import atomic_write

FLOOR = 1e-16  # squared differences below this (exact agreement) are drawn at it on a log axis


def save_png(fig, path: Path) -> None:
    """``path`` as a PNG only (the command's outputs are PNG, JSON and CSV), written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    atomic_write(path, buf.getvalue())
    plt.close(fig)


SHORT = 20  # labels longer than this are shortened in figures, with a numbered key below


def names(record: dict[str, Any]) -> dict[str, str]:
    """Source label -> its name in figures: the label itself when all are short, else a number and
    the label with its middle elided (the key, ``key_text``, gives the full labels)."""
    labels = [s["label"] for s in record["sources"]]
    if all(len(label) <= SHORT for label in labels):
        return {label: label for label in labels}
    half = (SHORT - 1) // 2
    cut = {label: label if len(label) <= SHORT else f"{label[:half]}…{label[-half:]}" for label in labels}
    return {label: f"{i}. {cut[label]}" for i, label in enumerate(labels, 1)}


def key_text(record: dict[str, Any]) -> str:
    shown = names(record)
    if all(shown[label] == label for label in shown):
        return ""
    return "   ".join(f"{i}. {label}" for i, label in enumerate(shown, 1))


def panels(count: int, size: float):
    """A figure of ``count`` square panels of ``size`` inches, two per row."""
    ncols = min(2, count)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), layout="constrained", squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def finish(fig, record: dict[str, Any], title: str) -> None:
    fig.suptitle(title, fontsize=9)
    key = key_text(record)
    if key:
        fig.supxlabel(key, fontsize=6, wrap=True)


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "source"


def _heatmap(ax, values: np.ndarray, rows: list[str], cols: list[str], title: str, text=None) -> None:
    finite = values[np.isfinite(values)]
    bound = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-12)
    image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=8)
    if text is not None and values.size <= 100:
        for (r, c), label in np.ndenumerate(text):
            if label:
                dark = np.isfinite(values[r, c]) and abs(values[r, c]) > 0.6 * bound
                ax.text(c, r, label, ha="center", va="center", fontsize=6, color="white" if dark else "black")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def _table(rec: dict[str, Any], label: str) -> np.ndarray:
    """Layer-pair scores with ``label``'s layers as rows."""
    table = np.asarray(rec["table"], dtype=float)
    return table if rec["a"] == label else table.T


def plot_sources(record: dict[str, Any], out: Path) -> None:
    labels = [s["label"] for s in record["sources"]]
    shown = names(record)
    metrics = list(record["alignment"])
    fig, axes = panels(len(metrics), max(3.8, 0.8 * len(labels) + 2.2))
    for ax, metric in zip(axes, metrics, strict=True):
        values = np.full((len(labels), len(labels)), np.nan)
        text = np.full(values.shape, "", dtype=object)
        for rec in record["alignment"][metric]:
            i, j = labels.index(rec["a"]), labels.index(rec["b"])
            values[i, j] = values[j, i] = rec["calibrated"]
            text[i, j] = text[j, i] = f"{rec['calibrated']:.2f}\np={rec['p_value']:.2g}"
        ticks = [shown[label] for label in labels]
        _heatmap(ax, values, ticks, ticks, f"{metric}: max over layer pairs, raw - mean(null)", text)
    finish(fig, record, "Calibrated alignment between sources (cells: calibrated score, p-value)")
    save_png(fig, out / "sources.png")


def plot_layers(record: dict[str, Any], out: Path) -> list[str]:
    """Per multi-layer source: its layers x every other source (max over the other's layers);
    per pair of multi-layer sources: layer x layer. Returns the file names written."""
    sources = {s["label"]: s["layers"] for s in record["sources"]}
    shown = names(record)
    metrics = list(record["alignment"])
    written = []
    for label, layers in sources.items():
        if len(layers) < 2:
            continue
        others = [o for o in sources if o != label]
        fig, axes = panels(len(metrics), max(3.8, 0.6 * max(len(others), len(layers)) + 2.5))
        for ax, metric in zip(axes, metrics, strict=True):
            values = np.full((len(layers), len(others)), np.nan)
            for rec in record["alignment"][metric]:
                if label in (rec["a"], rec["b"]):
                    other = rec["b"] if rec["a"] == label else rec["a"]
                    values[:, others.index(other)] = _table(rec, label).max(axis=1)
            _heatmap(ax, values, layers, [shown[o] for o in others], f"{metric} (raw)")
            ax.set_ylabel(f"layer of {shown[label]}", fontsize=7)
        finish(fig, record, f"{shown[label]}: each layer against each source (max over that source's layers)")
        name = f"layers.{safe(label)}.png"
        save_png(fig, out / name)
        written.append(name)
    for rec in record["alignment"][metrics[0]] if metrics else []:
        a, b = rec["a"], rec["b"]
        if len(sources[a]) < 2 or len(sources[b]) < 2:
            continue
        fig, axes = panels(len(metrics), max(3.8, 0.35 * max(len(sources[a]), len(sources[b])) + 2.5))
        for ax, metric in zip(axes, metrics, strict=True):
            pair = next(r for r in record["alignment"][metric] if (r["a"], r["b"]) == (a, b))
            _heatmap(ax, np.asarray(pair["table"], dtype=float), sources[a], sources[b], f"{metric} (raw)")
            ax.set_ylabel(f"layer of {shown[a]}", fontsize=7)
            ax.set_xlabel(f"layer of {shown[b]}", fontsize=7)
        finish(fig, record, f"layer x layer: {shown[a]} vs {shown[b]}")
        name = f"layers.{safe(a)}__{safe(b)}.png"
        save_png(fig, out / name)
        written.append(name)
    return written


def plot_agreement(record: dict[str, Any], out: Path) -> None:
    """Squared prediction difference per k: pairs with a checkpoint in one panel, pairs of
    algorithms in the other."""
    shown = names(record)
    checkpoints = {s["label"] for s in record["sources"] if s["kind"] == "checkpoint"}
    groups: dict[str, dict[str, list[float]]] = {"with a checkpoint": {}, "between algorithms": {}}
    for pair, values in record["agreement"]["prediction_difference"].items():
        a, _, b = pair.partition(SEP)
        title = "with a checkpoint" if {a, b} & checkpoints else "between algorithms"
        groups[title][f"{shown.get(a, a)} vs {shown.get(b, b)}"] = values
    groups = {title: group for title, group in groups.items() if group}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.8), layout="constrained", squeeze=False)
    context = record["settings"]["context"]
    for ax, (title, group) in zip(axes[0], groups.items(), strict=True):
        for i, (pair, values) in enumerate(group.items()):
            ax.plot(range(len(values)), np.maximum(values, FLOOR), label=pair, color=plt.cm.tab20(i % 20), lw=1.2)
        positive = [v for values in group.values() for v in values if v > FLOOR and math.isfinite(v)]
        if positive and max(positive) / min(positive) > 100:
            ax.set_yscale("log")
        ax.axvline(context, color="grey", ls=":", lw=1)
        ax.set_xlabel(f"in-context examples k (dotted: i = {context}, the representations)", fontsize=8)
        ax.set_ylabel(f"mean squared prediction difference (floor {FLOOR:g})", fontsize=8)
        ax.set_title(f"pairs {title}", fontsize=8)
        ax.legend(fontsize=6, frameon=False, ncol=2)
    finish(fig, record, "Algorithm agreement (Akyurek et al.)")
    save_png(fig, out / "agreement.png")


def elide(label: str, width: int = 2 * SHORT) -> str:
    half = (width - 1) // 2
    return label if len(label) <= width else f"{label[:half]}…{label[-half:]}"


def _trajectory_lines(ax, rows: list[dict[str, Any]], metric: str, x: str) -> None:
    """One line per (run, reference) of ``metric``'s calibrated alignment against ``x`` (``mse``
    or ``step``): a colour per run, a line style per reference; first and last step marked."""
    runs = list(dict.fromkeys(r["run"] for r in rows))
    refs = list(dict.fromkeys(r["reference"] for r in rows))
    styles = ["-", "--", ":", "-."]
    for run in runs:
        for ref in refs:
            pts = sorted(
                (r["step"], r[x], r["calibrated"])
                for r in rows
                if (r["metric"], r["run"], r["reference"]) == (metric, run, ref)
            )
            if not pts:
                continue
            ax.plot(
                [p[1] for p in pts],
                [p[2] for p in pts],
                marker="o",
                ms=3,
                ls=styles[refs.index(ref) % len(styles)],
                color=plt.cm.tab10(runs.index(run) % 10),
                label=f"{elide(run)} vs {ref}",
            )
            if x == "mse":
                for step, px, py in (pts[0], pts[-1]):
                    ax.annotate(f"{step}", (px, py), fontsize=6, textcoords="offset points", xytext=(3, 3))
    ax.set_ylabel("calibrated alignment", fontsize=8)
    ax.set_title(metric, fontsize=8)


def plot_trajectory(record: dict[str, Any], out: Path) -> None:
    """Calibrated alignment to each reference across a run's checkpoints, against the model's MSE
    (trajectory.png: the Platonic paper's "stronger models align more") and against the training
    step, with the model's MSE in a last panel (trajectory_steps.png)."""
    rows = record["trajectory"]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    i = record["settings"]["context"]
    fig, axes = panels(len(metrics), 4.2)
    for ax, metric in zip(axes, metrics, strict=True):
        _trajectory_lines(ax, rows, metric, "mse")
        errors = [r["mse"] for r in rows if r["mse"] > 0]
        if errors and max(errors) / min(errors) > 10:
            ax.set_xscale("log")
        ax.set_xlabel(f"model MSE at i = {i}", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=6, frameon=False)
    fig.suptitle("Alignment to references vs ICL error across checkpoints (first and last step marked)", fontsize=9)
    save_png(fig, out / "trajectory.png")

    fig, axes = panels(len(metrics) + 1, 4.2)
    for ax, metric in zip(axes, metrics, strict=False):
        _trajectory_lines(ax, rows, metric, "step")
        ax.set_xlabel("training step", fontsize=8)
    ax = axes[-1]
    runs = list(dict.fromkeys(r["run"] for r in rows))
    for run in runs:
        pts = sorted({(r["step"], r["mse"]) for r in rows if r["run"] == run})
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=plt.cm.tab10(runs.index(run) % 10), label=elide(run))
    ax.set_xlabel("training step", fontsize=8)
    ax.set_ylabel(f"model MSE at i = {i}", fontsize=8)
    ax.set_title("ICL error on the same prompts", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=6, frameon=False)
    fig.suptitle("Alignment to references and ICL error vs training step", fontsize=9)
    save_png(fig, out / "trajectory_steps.png")


def plot_all(record: dict[str, Any], out: Path) -> None:
    if record["alignment"]:
        plot_sources(record, out)
        plot_layers(record, out)
    plot_agreement(record, out)
    if record.get("trajectory"):
        plot_trajectory(record, out)
