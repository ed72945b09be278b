"""`icl report` on tiny finished sweeps (dense/sparse at d = 4, linear/sinusoid at d = 1): every
table and plot is written, the numbers are the runs' own evaluations, the prediction distances
are measured on the evaluation prompts, and each section applies to the runs it declares."""

import csv
import re
from pathlib import Path

import pytest
import torch
import yaml
from support import check_one_line

from icl import sweeps
from icl.checkpoint.load import load_model
from icl.cli import main
from icl.errors import ICLError
from icl.evaluation.curves import error_curves
from icl.report.cache import CLASSES_DIR, class_curves, class_mixture, eval_classes
from icl.report.runs import collect_runs
from icl.report.sections import fig3, gaps, sinusoid
from icl.report.sections.fig3 import prediction_distances
from icl.report.writer import write_report
from icl.sampling import Sampler

TINY = {
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "max_points": 8},
    "train": {"steps": 4, "lr": 1e-3, "progress_bar": False, "log_every": 2, "checkpoint_every": 2},
}
SPARSE = [{"name": "sparse_linear", "weight": 1, "params": {"nnz": 1}}]
SINE = {"name": "sinusoid", "params": {"freq_shape": 6.0, "freq_scale": 0.16666666666666666}}


def make_sweep(root: Path, name: str, base: dict, mixtures: list, seeds: list | None = None) -> Path:
    """Train every point of a tiny sweep in-process, as `icl sweep FILE --point` would."""
    (root / f"{name}.base.yaml").write_text(yaml.safe_dump({**TINY, **base}))
    spec = {
        "name": name,
        "program": "icl",
        "method": "grid",
        "parameters": {"data.mixture": {"values": mixtures}} | ({"seed": {"values": seeds}} if seeds else {}),
        "command": ["icl", "sweep", f"{name}.yaml", "--point", f"{name}.base.yaml", "${args_no_hyphens}"],
    }
    (root / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    sweep = sweeps.load_sweep(f"{name}.yaml")
    for point in sweep.points():
        assert sweeps.run_point(sweep, sweep.base, point.overrides) == "trained"
    return root / "runs" / name


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        w = lambda a: [  # noqa: E731
            {"name": "dense_linear", "weight": a},
            {"name": "sparse_linear", "weight": 1 - a, "params": {"nnz": 1}},
        ]
        dense_sparse = make_sweep(
            root,
            "ds",
            {"data": {"n_dims": 4, "n_points": 6, "batch_size": 8}, "eval": {"n_prompts": 30, "table_k": 3}},
            [w(0.0), w(0.5), w(1.0)],
        )
        s = lambda a: [{"name": "dense_linear", "weight": a}, {**SINE, "weight": 1 - a}]  # noqa: E731
        sine = make_sweep(
            root,
            "sin",
            {
                "data": {"n_dims": 1, "n_points": 8, "batch_size": 8},
                "eval": {"n_prompts": 30, "convex_coefs": [0.5, 1], "frequencies": [0.1, 1]},
            },
            [s(1.0), s(0.5)],
        )
        yield root, dense_sparse, sine


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_dense_sparse_report_has_every_table_and_plot(swept, capsys):
    root, sweep_dir, _ = swept
    assert main(["report", str(sweep_dir)]) == 0
    out = sweep_dir / "report"
    printed = capsys.readouterr()
    assert f"report written to {out}" in printed.out
    # One progress line per run and eval class (3 x 3) and per run's suite, evaluated or reused.
    lines = printed.err.splitlines()
    assert len([x for x in lines if re.search(r": (evaluated at step 4 in \d+:\d\d:\d\d|reused \(step 4\))$", x)]) == 9
    assert len([x for x in lines if ": suite paper1_dense_sparse: " in x]) == 3
    expected = {"report.md", "runs.csv", "training.png", "fig1.csv", "fig1.png", "fig2.csv", "fig2.png", "gaps.csv"}
    expected |= {"fig3.png", "fig3_error.csv", "fig3_distance.csv", "fig1.pdf", "fig2.pdf", "fig3.pdf"}
    assert expected <= {p.name for p in out.iterdir()}
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"  # a vector copy of every figure
    md = (out / "report.md").read_text()
    for section in ("## Fig. 1", "## Fig. 2", "## Fig. 3", "Prediction distance", "Mixture minus specialist"):
        assert section in md
    assert "No run is at paper 1's scale" in md
    # Fig. 1: three classes (dense, sparse nnz 1, weakly sparse nnz d/2 = 2) x three runs at k = 3,
    # equal to each run's own cached curve.
    fig1 = rows(out / "fig1.csv")
    assert [r["eval class"] for r in fig1] == ["dense_linear", "sparse_linear(nnz=1)", "sparse_linear(nnz=2)"]
    labels = ["1 dense_linear", "0.5 dense_linear + 0.5 sparse_linear(nnz=1)", "1 sparse_linear(nnz=1)"]
    assert [h for h in fig1[0] if h in labels] == labels  # dense weight 1, 0.5, 0 (paper's column order reversed)
    assert float(fig1[0]["bayes"]) == pytest.approx(float(fig1[0]["least_squares"]), rel=1e-3)  # dense: LS is Bayes
    for run_dir in (p for p in sweep_dir.iterdir() if (p / "config.yaml").is_file()):
        cached = run_dir / "eval" / CLASSES_DIR / "class.sparse_linear_nnz_1.json"
        assert cached.is_file()
    ls_dense = float(fig1[0]["least_squares"])
    assert 0.0 < ls_dense < 1.0  # 3 examples in 4 dims: 1 - k/d = 0.25 in expectation
    # Fig. 3: nnz = 1..4 and one distance row per nnz for the mixture, whose normalised distances
    # are the raw ones divided by the specialists' distance.
    assert [r["nnz"] for r in rows(out / "fig3_error.csv")] == ["1", "2", "3", "4"]
    dist = rows(out / "fig3_distance.csv")
    assert len(dist) == 4 and {r["mixture model"] for r in dist} == {labels[1]}
    for r in dist:
        assert float(r["normalised to dense"]) == pytest.approx(float(r["MSD to dense"]) / float(r["MSD dense-sparse"]))
    # Reused evaluations: a second report recomputes nothing and gives the same tables.
    first = (out / "fig3_distance.csv").read_text(), (out / "fig1.csv").read_text()
    assert main(["report", str(sweep_dir), "--out", str(root / "again"), "--yscale", "log"]) == 0
    assert ((root / "again" / "fig3_distance.csv").read_text(), (root / "again" / "fig1.csv").read_text()) == first
    lines = capsys.readouterr().err.splitlines()
    assert len([x for x in lines if x.endswith(": reused (step 4)")]) == 9
    assert len([x for x in lines if ": suite paper1_dense_sparse: reused from " in x]) == 3


def test_runs_that_differ_only_in_seed_get_their_spread_across_sweeps(tmp_path, monkeypatch, capsys):
    """A sweep and another adding a seed to its point (computed with another optimiser kernel):
    reported together, the two runs form one seed group; the runs table shows the kernel."""
    monkeypatch.chdir(tmp_path)
    base = {"data": {"n_dims": 2, "n_points": 4, "batch_size": 8}, "eval": {"n_prompts": 20}}
    dense = [[{"name": "dense_linear", "weight": 1}]]
    first = make_sweep(tmp_path, "main", base, dense, seeds=[0])
    other_kernel = {**base, "train": {**TINY["train"], "fused_optimizer": False}}
    extra = make_sweep(tmp_path, "extra", other_kernel, dense, seeds=[1])
    runs, _ = collect_runs([first, extra])
    assert sorted(r.label for r in runs) == ["seed=0", "seed=1"]
    assert main(["report", str(first), str(extra)]) == 0
    out = first / "report"
    md = (out / "report.md").read_text()
    assert md.startswith(f"# Report: {first}, {extra}\n") and "## Seed-to-seed spread" in md
    # Both sweeps name their one run "run": records and tables tell them apart by the sweep.
    table = [(r["run"], r["label"], r["train.fused_optimizer"]) for r in rows(out / "runs.csv")]
    assert table == [("main/run", "seed=0", "True"), ("extra/run", "seed=1", "False")]
    table = [r for r in rows(out / "seeds.csv") if r["quantity"] == "mse"]
    assert {r["runs"] for r in table} == {"runs (seeds 0, 1)"} and {r["n_seeds"] for r in table} == {"2"}
    for r in table:  # each seed's own cached curve, summarised
        k, cls = int(r["k"]), eval_classes(runs)[0]
        per_seed = [class_curves(run, cls, 20, "cpu", [])["curves"]["model"]["mean"][k] for run in runs]
        assert float(r["mean"]) == pytest.approx(sum(per_seed) / 2)
        assert (float(r["min"]), float(r["max"])) == pytest.approx((min(per_seed), max(per_seed)))
        assert float(r["max"]) > float(r["min"])  # the seeds trained different models
    capsys.readouterr()
    rc = main(["report", str(first), str(tmp_path / "runs" / "main")])
    check_one_line(
        rc, capsys.readouterr().err, r"sweep directory .*runs/main given twice; allowed: each directory once"
    )


def test_sinusoid_report_has_convex_and_frequency_tables(swept):
    _, _, sweep_dir = swept
    out = write_report(sweep_dir)
    names = {p.name for p in out.iterdir()}
    assert {"convex.csv", "convex.png", "frequency.csv", "frequency.png", "fig1.png", "fig2.png"} <= names
    assert "fig3.png" not in names  # no sparse class at d = 1
    convex = rows(out / "convex.csv")
    assert [float(r["a"]) for r in convex] == [0.5, 1]
    assert float(convex[1]["least_squares"]) == pytest.approx(0, abs=1e-6)  # a = 1: a line, exact after 2 points
    freq = rows(out / "frequency.csv")
    assert [float(r["frequency w"]) for r in freq] == [0.1, 1]
    prior = [float(r["prior P(W <= w)"]) for r in freq]  # Gamma(6, 1/6): mean 1, almost no mass below 0.1
    assert prior[0] < 0.01 and 0.4 < prior[1] < 0.7


def test_sections_declare_the_runs_they_apply_to(swept):
    _, dense_sparse, sine = swept
    ds, _ = collect_runs([dense_sparse])
    sin, _ = collect_runs([sine])
    assert fig3.applies(ds) and not fig3.applies(sin)  # a sparse class, d >= 2
    assert sinusoid.applies(sin) and not sinusoid.applies(ds)  # sinusoids at d = 1
    assert gaps.applies(ds) and gaps.applies(sin)  # a mixture beside a specialist of one of its classes
    assert not gaps.applies([r for r in ds if len(r.active) == 2])  # a mixture alone
    assert not gaps.applies([r for r in ds if len(r.active) == 1])  # specialists alone


def test_prediction_distances_use_the_evaluation_prompts(swept):
    _, sweep_dir, _ = swept
    runs, _ = collect_runs([sweep_dir])
    run, other = runs[1], runs[0]
    a, b = run.model("cpu"), other.model("cpu")
    mixture = class_mixture({"name": "sparse_linear", "params": {"nnz": 2}, "noise_std": 0.0}, 4)
    dist = prediction_distances({"a": a, "b": b, "a2": a}, run, mixture, 30, "cpu")
    assert dist[("a", "a2")].max() == 0
    # error_curves sees (p_a - p_b + y - y)^2 on its prompts: the same prompts give the same number.
    sampler = Sampler(run.cfg.data, run.cfg.eval.seed)
    curves = error_curves({"d": lambda xs, ys: a(xs, ys) - b(xs, ys) + ys}, sampler, 30, mixture=mixture)
    assert dist[("a", "b")] == pytest.approx(curves.sq_errors["d"].mean(axis=0), rel=1e-6, abs=1e-9)


def test_report_refuses_a_directory_without_finished_runs(tmp_path):
    with pytest.raises(ICLError, match="no finished runs"):
        write_report(tmp_path)
    with pytest.raises(ICLError, match="sweep directory not found"):
        write_report(tmp_path / "missing")


def test_loaded_model_predicts_like_the_cached_curve(swept):
    """The report's numbers come from the trained weights (not, say, a fresh model)."""
    _, sweep_dir, _ = swept
    runs, _ = collect_runs([sweep_dir])
    model, cfg = load_model(runs[0].path)
    cls = next(c for c in eval_classes(runs) if c.title == "dense_linear")
    sampler = Sampler(cfg.data, cfg.eval.seed)
    with torch.no_grad():
        curves = error_curves({"model": model.predict}, sampler, 30, mixture=class_mixture(cls.spec, 4))
    cached = class_curves(runs[0], cls, 30, "cpu", [])
    assert cached["curves"]["model"]["mean"] == pytest.approx(curves.sq_errors["model"].mean(axis=0).tolist())
