"""Paper 1's published numbers read back from icl/data/ exactly as digitised, and matched only to runs
at the paper's scale (d = 20, its mixtures, its model sizes, k = 16 for Figs. 1 and 3)."""

from collections import defaultdict
from pathlib import Path

import pytest

from icl.config import load_config
from icl.report.paper import fig1_value, fig3a_curve, fig3b_curves, paper_curve, paper_data, paper_run

ROOT = Path(__file__).resolve().parents[2]
EXP = ROOT / "configs" / "experiments"
# (sweep, family, eval class, size, w) -> (points, sum of the published MSEs), from the digitised tables.
CURVES = {
    ("w", "dense_sparse", "dense", "standard", 0.0): (21, 13.228),
    ("w", "dense_sparse", "dense", "standard", 0.25): (21, 7.766),
    ("w", "dense_sparse", "dense", "standard", 0.5): (21, 7.569),
    ("w", "dense_sparse", "dense", "standard", 0.75): (21, 7.462),
    ("w", "dense_sparse", "dense", "standard", 1.0): (21, 7.37),
    ("w", "dense_sparse", "sparse2", "standard", 0.0): (21, 3.073),
    ("w", "dense_sparse", "sparse2", "standard", 0.25): (21, 3.107),
    ("w", "dense_sparse", "sparse2", "standard", 0.5): (21, 3.451),
    ("w", "dense_sparse", "sparse2", "standard", 0.75): (21, 3.806),
    ("w", "dense_sparse", "sparse2", "standard", 1.0): (21, 7.503),
    ("w", "dense_relu", "dense", "standard", 0.0): (21, 11.326),
    ("w", "dense_relu", "dense", "standard", 0.25): (21, 8.325),
    ("w", "dense_relu", "dense", "standard", 0.5): (21, 7.871),
    ("w", "dense_relu", "dense", "standard", 0.75): (21, 7.567),
    ("w", "dense_relu", "dense", "standard", 1.0): (21, 7.37),
    ("w", "dense_relu", "relu", "standard", 0.0): (21, 10.986),
    ("w", "dense_relu", "relu", "standard", 0.25): (21, 11.121),
    ("w", "dense_relu", "relu", "standard", 0.5): (21, 11.394),
    ("w", "dense_relu", "relu", "standard", 0.75): (21, 11.902),
    ("size", "dense_sparse", "dense", "tiny", 0.5): (14, 6.15),
    ("size", "dense_sparse", "dense", "small", 0.5): (14, 5.6),
    ("size", "dense_sparse", "dense", "standard", 0.5): (14, 5.483),
    ("size", "dense_sparse", "sparse2", "tiny", 0.5): (14, 5.911),
    ("size", "dense_sparse", "sparse2", "small", 0.5): (14, 3.326),
    ("size", "dense_sparse", "sparse2", "standard", 0.5): (14, 2.643),
    ("size", "dense_relu", "dense", "tiny", 0.5): (14, 6.278),
    ("size", "dense_relu", "dense", "small", 0.5): (14, 5.744),
    ("size", "dense_relu", "dense", "standard", 0.5): (14, 5.718),
    ("size", "dense_relu", "relu", "tiny", 0.5): (14, 7.802),
    ("size", "dense_relu", "relu", "small", 0.5): (14, 7.708),
    ("size", "dense_relu", "relu", "standard", 0.5): (14, 7.694),
}
W_KS = [1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 15, 16, 18, 19, 20, 21, 22, 25, 30, 35, 39]
SIZE_KS = [1, 2, 4, 5, 8, 10, 12, 15, 16, 20, 25, 30, 35, 40]


def test_curves_hold_every_published_point():
    groups = defaultdict(list)
    for r in paper_data("paper1_curves"):
        groups[(r["sweep"], r["family"], r["eval_class"], r["size"], r["w"])].append((r["k"], r["mse"]))
    assert set(groups) == set(CURVES)  # no relu curve for the dense-only model: it never saw ReLU data
    for key, (count, total) in CURVES.items():
        ks = [k for k, _ in groups[key]]
        assert ks == (W_KS if key[0] == "w" else SIZE_KS) and len(ks) == count, key
        assert sum(v for _, v in groups[key]) == pytest.approx(total, abs=1e-9), key
    corners = {(r["family"], r["eval_class"], r["size"], r["w"], r["k"]): r["mse"] for r in paper_data("paper1_curves")}
    assert corners[("dense_sparse", "dense", "standard", 0, 1)] == 0.954
    assert corners[("dense_relu", "relu", "standard", 0.75, 39)] == 0.281
    assert corners[("dense_relu", "relu", "tiny", 0.5, 40)] == 0.290


def test_fig1_and_fig3_tables():
    fig1 = {(r["eval_class"], r["w"]): r["mse"] for r in paper_data("paper1_fig1")}
    assert fig1 == {
        ("sparse2", 0): 0.002,
        ("sparse2", 1): 0.237,
        ("sparse2", 0.5): 0.004,
        ("sparse10", 0): 0.351,
        ("sparse10", 1): 0.237,
        ("sparse10", 0.5): 0.236,
        ("dense", 0): 0.554,
        ("dense", 1): 0.225,
        ("dense", 0.5): 0.225,
    }
    for name, key, value, sums in (
        ("paper1_fig3a", "w", "mse_over_d", {1: 0.2363, 0: 0.3212, 0.5: 0.1859}),
        ("paper1_fig3b", "specialist", "normalised_msd", {"dense": 4.276, "sparse": 15.43}),
    ):
        rows = paper_data(name)
        for group, total in sums.items():
            mine = [r for r in rows if r[key] == group]
            assert [r["nnz"] for r in mine] == list(range(1, 21)), (name, group)
            assert sum(r[value] for r in mine) == pytest.approx(total, abs=1e-9), (name, group)
    assert [(r["size"], r["n_layer"], r["n_head"], r["n_embd"]) for r in paper_data("paper1_models")] == [
        ("tiny", 3, 2, 64),
        ("small", 6, 4, 128),
        ("standard", 12, 8, 256),
    ]


def test_paper_numbers_only_match_runs_at_paper_scale():
    cfg = load_config([EXP / "dense_sparse_w0.5.yaml"])
    assert paper_run(cfg) == ("dense_sparse", 0.5, "standard")
    assert paper_curve("dense", paper_run(cfg))[16] == 0.198  # the w sweep (Fig. 2), not the size sweep
    assert 40 not in paper_curve("dense", paper_run(cfg))
    tiny = load_config([EXP / "dense_sparse_w0.5.yaml", ROOT / "configs" / "model" / "tiny.yaml"])
    assert paper_curve("sparse2", paper_run(tiny))[16] == 0.278  # Fig. 8b
    relu = load_config([EXP / "dense_relu_w0.yaml"])
    assert paper_curve("relu", paper_run(relu))[39] == 0.281
    assert paper_curve("sparse10", paper_run(cfg)) is None
    assert paper_run(load_config([ROOT / "configs" / "repro" / "dense_sparse_w0.5.yaml"])) is None
    assert paper_run(load_config([EXP / "dense_sparse_w0.5.yaml"], ["data.mixture.1.params.nnz=3"])) is None


def test_fig1_and_fig3_values_need_a_standard_dense_sparse_run_at_k_16():
    dense = {"name": "dense_linear", "params": {}, "noise_std": 0.0}
    mixture = load_config([EXP / "dense_sparse_w0.5.yaml"])
    assert fig1_value(dense, mixture, 16) == 0.225
    assert fig1_value({**dense, "noise_std": 0.1}, mixture, 16) is None
    assert fig1_value(dense, mixture, 15) is None
    assert fig3a_curve(mixture, 16)[1] == 20 * 0.0001  # plotted as MSE / d, given as raw MSE
    assert fig3b_curves(mixture, 16)["sparse"][20] == 0.990
    dense_only = load_config([EXP / "dense_sparse_w1.yaml"])
    assert fig3a_curve(dense_only, 16)[1] == 20 * 0.0128
    assert fig3b_curves(dense_only, 16) is None  # distances are published for the w = 0.5 mixture only
    tiny = load_config([EXP / "dense_sparse_w0.5.yaml", ROOT / "configs" / "model" / "tiny.yaml"])
    assert fig1_value(dense, tiny, 16) is None and fig3a_curve(tiny, 16) is None
