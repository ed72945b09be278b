"""Figures of `icl probe` from its record (probe.json): per probe kind, the score vs layer (real
target and control, model and baseline), the score vs i beside the model's error curve, and the
difference-in-differences by layer with its range over probe seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from icl.figures import color, legend_outside, mark_k_equals_d, plt, save_figure  # plt with the file-only backend

BASELINE_GREY = "#7f7f7f"
SUMMARY = ("mean", "low", "high")


def _array(nested: Any) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in nested], dtype=float)


def _panels(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows + 0.8), layout="constrained", squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _cmap(n: int) -> list:
    return [plt.get_cmap("viridis")(x) for x in np.linspace(0.0, 0.9, max(n, 1))]


def _primary(record: dict[str, Any], name: str) -> str:
    return record["targets"][name]["scores"][0]


def _label(score: str) -> str:
    return {"r2": "R^2", "accuracy": "accuracy", "cosine": "cosine"}[score]


def layers_figure(record: dict[str, Any], probe: str, path: Path) -> None:
    """Score vs layer per target: the model's probe on the real target (solid) and on the control
    (dashed), one colour per i; the baseline's at the largest i in grey."""
    by_target = record["results"][probe]
    layers, ks = record["layers"], record["ks"]
    fig, axes = _panels(len(by_target))
    colours = _cmap(len(ks))
    for ax, (name, entry) in zip(axes, by_target.items(), strict=True):
        score = _primary(record, name)
        shown = []
        for variant, style in (("real", "-"), ("control", "--")):
            if variant not in entry["model"]:
                continue
            model = _array(entry["model"][variant][score]["mean"])
            for j, k in enumerate(ks):
                label = f"model, i = {k}" if variant == "real" else None
                ax.plot(layers, model[:, j], style, color=colours[j], lw=1.4, marker=".", label=label)
            base = _array(entry["baseline"][variant][score]["mean"])
            ax.plot(layers, base[:, -1], style, color=BASELINE_GREY, lw=1, label=f"baseline, i = {ks[-1]}")
            shown += [model, base[:, -1:]]
        if "control" in entry["model"]:
            ax.plot([], [], "--", color="black", lw=1, label="dashed: control (the re-paired estimator)")
        title = f"{name}: {_label(score)}"
        if "control" in entry["model"]:
            title += f" (control: {record['targets'][name]['control']})"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("layer (0 = embedding)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(_limits(score, shown))
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"{probe} probes vs layer, position {record['position']}", fontsize=10)
    save_figure(fig, path)


def ks_figure(record: dict[str, Any], probe: str, path: Path) -> None:
    """Score vs i per target, one line per layer (the model, real target), and the model's error
    curve vs the number of in-context examples in the last panel."""
    by_target = record["results"][probe]
    layers, ks = record["layers"], record["ks"]
    fig, axes = _panels(len(by_target) + 1)
    colours = _cmap(len(layers))
    for ax, (name, entry) in zip(axes, by_target.items(), strict=False):
        score = _primary(record, name)
        model = _array(entry["model"]["real"][score]["mean"])
        for a, layer in enumerate(layers):
            ax.plot(ks, model[a], "-", color=colours[a], lw=1.2, marker=".", label=f"layer {layer}")
        ax.set_title(f"{name}: {_label(score)}", fontsize=9)
        ax.set_xlabel("i (in-context examples)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(_limits(score, [model]))
        ax.grid(alpha=0.3)
    ax = axes[-1]
    curve = record["error_curve"]
    for name in ("model", "least_squares"):
        ax.plot(curve["k"], curve[name], color=color(name), lw=1.4, label=f"{name} MSE")
    mark_k_equals_d(ax, record["n_dims"])
    ax.set_yscale("log" if max(curve["model"]) > 100 * max(min(curve["model"]), 1e-12) else "linear")
    ax.set_title("error on the probe prompts", fontsize=9)
    ax.set_xlabel("k (in-context examples)")
    ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"{probe} probes vs i (model, real targets), position {record['position']}", fontsize=10)
    save_figure(fig, path)


def did_figure(record: dict[str, Any], probe: str, path: Path) -> bool:
    """Difference-in-differences by layer (mean over the i's with a control), one line per target
    with its range over probe seeds; False where no target has a control."""
    entries = {n: e["did"] for n, e in record["results"][probe].items() if "did" in e}
    if not entries:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    layers = record["layers"]
    colours = _cmap(len(entries))
    for c, (name, entry) in zip(colours, entries.items(), strict=True):
        by_layer = entry["by_layer"]
        mean, low, high = (np.array([np.nan if v is None else v for v in by_layer[q]], float) for q in SUMMARY)
        ax.plot(layers, mean, "-", color=c, marker=".", label=f"{name} ({_label(entry['score'])})")
        ax.fill_between(layers, low, high, color=c, alpha=0.2, lw=0)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("layer (0 = embedding)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("difference in differences")
    ax.set_title(f"{probe} probes: (model real - control) - (baseline real - control)", fontsize=9)
    ax.grid(alpha=0.3)
    legend_outside(fig, ax)
    save_figure(fig, path)
    return True


def _limits(score: str, shown: list[np.ndarray]) -> tuple[float, float]:
    """0..1 for accuracy; for R^2 and cosine down to the lowest value shown, at most to -1 (a probe far
    below 0 only says it fails)."""
    if score == "accuracy":
        return 0.0, 1.02
    values = np.concatenate([np.ravel(v) for v in shown]) if shown else np.array([])
    values = values[np.isfinite(values)]
    low = float(values.min()) if values.size else 0.0
    return max(-1.0, min(-0.1, low - 0.05)), 1.02


def _legend(fig: plt.Figure, axes: list[plt.Axes]) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles[label], labels[label] = h, label
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=4, fontsize=7, frameon=False)


def write_figures(record: dict[str, Any], out: Path) -> list[Path]:
    """Every figure of ``record`` into ``out`` (PNG and PDF); returns the PNG paths."""
    written = []
    for probe in record["results"]:
        for stem, draw in (("layers", layers_figure), ("ks", ks_figure), ("did", did_figure)):
            path = out / f"probe_{stem}_{probe}.png"
            if draw(record, probe, path) is not False:
                written.append(path)
    return written
