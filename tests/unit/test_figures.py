"""Figures and tables: the y axis follows the plotted values (log past two decades, an exploding
baseline clipped and marked), every figure comes with a vector copy, a predictor has one colour
in every figure, Fig. 1 has the Bayes bar, summary tables show every k <= d, no suite evaluates
one scenario twice, and checkpoint baselines get distinct names."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Annotation
from support import TINY

from icl.config import load_config
from icl.errors import ICLError
from icl.evaluation import report as eval_report
from icl.evaluation.ks import table_ks
from icl.evaluation.run import build_baselines, suite_scenarios, write_summary
from icl.evaluation.scenarios import build_suite, suites
from icl.evaluation.scenarios.identity import definition
from icl.figures import choose_yaxis, color
from icl.report.cache import EvalClass
from icl.report.context import Report
from icl.report.runs import Run
from icl.report.sections import fig1, fig2
from icl.sampling import Sampler

K = list(range(11))
FLAT = list(np.linspace(1.0, 0.2, 11))
EXPLODING = [1, 0.8, 0.6, 0.5, 0.7, 3000, 40, 5, 2, 1, 0.6]


def stats(mean) -> dict[str, list[float]]:
    m = np.asarray(mean, dtype=float)
    return {"mean": list(m), "ci_low": list(0.9 * m), "ci_high": list(1.1 * m)}


def record(curves: dict[str, list[float]], n_dims: int = 5) -> dict:
    return {
        "k": K,
        "convention": "mse",
        "n_dims": n_dims,
        "title": "synthetic",
        "n_prompts": 10,
        "curves": {name: stats(v) for name, v in curves.items()},
    }


def capture(monkeypatch, module) -> list:
    """The figures ``module`` saves, kept open for inspection instead of written."""
    figs = []
    monkeypatch.setattr(module, "save_figure", lambda fig, path: figs.append(fig))
    return figs


def test_an_exploding_baseline_is_clipped_and_marked(monkeypatch):
    axis = choose_yaxis({"model": FLAT, "least_squares": EXPLODING, "averaging": FLAT[::-1]}, keep=["model"])
    assert axis.off_scale == ["least_squares"]
    assert axis.top < 2 and axis.scale == "linear"  # the model's 0.2..1 fills the axis
    figs = capture(monkeypatch, eval_report)
    eval_report.plot_curves(record({"model": FLAT, "least_squares": EXPLODING}), Path("unused.png"))
    ax = figs[0].axes[0]
    assert ax.get_ylim()[1] < 2
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    assert [a.xy for a in arrows] == [(5, 1.0)]  # at the top of the axis, above the peak (k = 5)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "least_squares (off scale, max 3e+03)" in legend and "model" in legend
    assert "k = d = 5" in legend


def test_a_narrow_range_stays_linear_and_a_wide_one_is_log():
    narrow = choose_yaxis({"model": FLAT, "averaging": [1.2] * 11}, keep=["model"])
    assert (narrow.scale, narrow.bottom, narrow.off_scale) == ("linear", 0.0, [])
    assert narrow.top == pytest.approx(1.2 * 1.05)
    wide = choose_yaxis({"model": list(np.logspace(0, -3, 11)), "least_squares": [1e-14] * 11}, keep=["model"])
    assert wide.scale == "log" and wide.bottom == pytest.approx(1e-3 / 100)  # exact fits end below the axis
    # A flat model beside an exact fit (~0): linear shows both; the log axis would flatten the model.
    assert choose_yaxis({"model": [1.0] * 11, "bayes": [1e-14] * 11}, keep=["model"]).scale == "linear"


def test_the_y_scale_can_be_forced_and_bad_values_are_refused():
    curves = {"model": FLAT, "least_squares": EXPLODING}
    assert choose_yaxis(curves, "log", keep=["model"]).scale == "log"
    assert choose_yaxis(curves, "log", keep=["model"]).off_scale == []  # a forced log axis shows up to 1e4 x
    assert choose_yaxis(curves, "linear", keep=["model"]).off_scale == ["least_squares"]
    with pytest.raises(ICLError, match="yscale: got 'cubic'; allowed: auto, linear, log"):
        choose_yaxis(curves, "cubic")


def test_every_figure_is_written_as_png_and_pdf(tmp_path):
    eval_report.plot_curves(record({"model": FLAT}), tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "curve.pdf").read_bytes()[:5] == b"%PDF-"


def fake_report(tmp_path, classes: dict[str, dict[str, list[float]]]) -> Report:
    """A report over two runs whose curves on each class are ``classes[title]`` (predictor -> mean)."""
    cfg = load_config([], [*TINY, "data.n_points=11", "model.max_points=11"])
    runs = [Run(tmp_path / name, cfg, label=name) for name in ("run a", "run b")]
    cls = [
        EvalClass(f"class.{i}", title, {"name": "dense_linear", "params": {}, "noise_std": 0.0})
        for i, title in enumerate(classes)
    ]
    records = {
        r.path.name: {c.name: {"curves": {n: stats(v) for n, v in classes[c.title].items()}} for c in cls} for r in runs
    }
    return Report(runs, cls, records, k=3, n_prompts=10, device="cpu", out=tmp_path, notes=[])


def test_a_predictor_has_the_same_colour_in_every_figure(tmp_path, monkeypatch):
    eval_figs, report_figs = capture(monkeypatch, eval_report), capture(monkeypatch, fig2)
    eval_report.plot_curves(record({"bayes": FLAT, "model": FLAT, "least_squares": FLAT}), Path("unused.png"))
    eval_report.plot_curves(record({"least_squares": FLAT, "model": FLAT}), Path("unused.png"))
    fig2.write(fake_report(tmp_path, {"dense": {"model": FLAT, "least_squares": FLAT, "bayes": FLAT}}))

    def line_colors(fig, name):
        return [ln.get_color() for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == name]

    for name in ("least_squares", "bayes"):
        seen = {c for fig in (*eval_figs, *report_figs) for c in line_colors(fig, name)}
        assert seen == {color(name)}, name
    assert len(line_colors(eval_figs[1], "least_squares")) == 1
    assert color("least_squares") != color("bayes") != color("model")
    assert color("checkpoint(qs:step=0000200)") == color("checkpoint(qs:step=0000200)")  # names off the palette too


def test_fig1_has_a_bayes_bar_beside_least_squares(tmp_path, monkeypatch):
    figs = capture(monkeypatch, fig1)
    bayes = [1.0, 0.5, 0.3, 0.1] + [0.05] * 7
    fig1.write(fake_report(tmp_path, {"dense": {"model": FLAT, "least_squares": FLAT, "bayes": bayes}}))
    ax = figs[0].axes[0]
    bars = {c.get_label(): c for c in ax.containers if hasattr(c, "patches")}
    assert {"run a", "run b", "least_squares", "bayes"} <= set(bars)
    assert bars["bayes"].patches[0].get_height() == pytest.approx(0.1)  # k = 3
    assert bars["bayes"].patches[0].get_facecolor()[:3] == pytest.approx(
        tuple(int(color("bayes")[i : i + 2], 16) / 255 for i in (1, 3, 5))
    )


def test_summary_tables_show_every_k_up_to_d(tmp_path):
    assert table_ks(5, 11) == [1, 2, 3, 4, 5, 7, 10]
    assert table_ks(20, 41) == [*range(1, 21), 30, 40]
    assert table_ks(4, 6, (3,)) == [1, 2, 3, 4, 5]
    cfg = load_config([], [*TINY, "data.n_dims=5", "data.n_points=11", "model.max_points=11"])
    records = {"s": {**record({"model": FLAT}), "scenario": "s"}}
    write_summary(records, {}, [], cfg, "suite", "mse", 10, tmp_path)
    header = next(line for line in (tmp_path / "summary.md").read_text().splitlines() if line.startswith("| predictor"))
    assert header == "| predictor | k=1 | k=2 | k=3 | k=4 | k=5 | k=7 | k=10 |"


CONFIGS = {
    "dense": [*TINY, "model.max_points=10"],
    "dense_sparse2": [
        *TINY,
        "data.n_dims=4",
        "data.mixture=[{name: dense_linear, weight: 0.5}, {name: sparse_linear, weight: 0.5, params: {nnz: 2}}]",
    ],
    "sparse_noisy": [*TINY, "data.mixture=[{name: sparse_linear, weight: 1, noise_std: 0.1, params: {nnz: 1}}]"],
    "sine_d1": [
        *TINY,
        "data.n_dims=1",
        "data.mixture=[{name: dense_linear, weight: 0.5}, {name: sinusoid, weight: 0.5}]",
    ],
}


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_no_suite_evaluates_the_same_scenario_twice(overrides):
    cfg = load_config([], overrides)
    mixture = Sampler(cfg.data, 0).mixture
    for suite in suites():
        try:
            scenarios, notes = suite_scenarios(suite, cfg, mixture)
        except ICLError:  # a suite this model cannot take (e.g. longer prompts than it has positions for)
            continue
        defs = [definition(sc, cfg) for sc in scenarios]
        assert len(set(defs)) == len(defs), suite
        assert len(scenarios) + len(notes) == len(build_suite(suite, cfg, mixture))
        if suite == "paper1_dense_sparse":  # Fig. 3 reads every nnz of the sweep
            nnz = [sc.name for sc in scenarios if sc.group == "sparsity"]
            assert nnz == [f"sparsity.nnz_{s}" for s in range(1, cfg.data.n_dims + 1)]


def test_paper1_dense_sparse_leaves_out_its_duplicates_with_a_note():
    cfg = load_config([], CONFIGS["dense"])
    scenarios, notes = suite_scenarios("paper1_dense_sparse", cfg, Sampler(cfg.data, 0).mixture)
    names = [sc.name for sc in scenarios]
    assert names == ["in_dist.dense_linear", *[f"sparsity.nnz_{s}" for s in range(1, 4)]]
    assert notes == [
        "cross.dense: left out, the same evaluation as in_dist.dense_linear",
        "cross.sparse_nnz_2: left out, the same evaluation as sparsity.nnz_2",
    ]
    # Scenarios that differ in any part of their definition are all kept.
    alone, _ = suite_scenarios("dense_vs_sparse", cfg, Sampler(cfg.data, 0).mixture)
    assert [sc.name for sc in alone] == ["cross.dense", "cross.sparse_nnz_2"]


def test_checkpoint_baselines_of_one_run_get_distinct_names_and_a_repeat_is_noted(tmp_path, monkeypatch):
    from icl.evaluation import run as run_module

    class Model:
        n_dims = 3

        def predict(self, xs, ys):
            return ys

    monkeypatch.setattr(run_module, "load_model", lambda path: (Model(), None))
    ckpts = tmp_path / "qs" / "checkpoints"
    ckpts.mkdir(parents=True)
    for name in ("step=0000100.ckpt", "step=0000200.ckpt", "last.ckpt"):
        (ckpts / name).touch()
    a, b = f"checkpoint:{ckpts / 'step=0000100.ckpt'}", f"checkpoint:{ckpts / 'step=0000200.ckpt'}"
    notes: list[str] = []
    built = build_baselines([a, b], 3, notes)
    assert set(built) == {"checkpoint(qs:step=0000100)", "checkpoint(qs:step=0000200)"} and notes == []
    assert set(build_baselines([b], 3)) == {"checkpoint(qs:step=0000200)"}  # a step, even alone, says so
    assert set(build_baselines([f"checkpoint:{tmp_path / 'qs'}"], 3)) == {"checkpoint(qs)"}
    built = build_baselines([f"checkpoint:{tmp_path / 'qs'}", f"checkpoint:{ckpts / 'last.ckpt'}", a], 3, notes)
    assert set(built) == {"checkpoint(qs:last)", "checkpoint(qs:step=0000100)"}
    assert len(notes) == 1 and "the same checkpoint file" in notes[0] and "one baseline checkpoint(qs:last)" in notes[0]
