"""Report labels and seed groups from configs alone: what tells runs apart is in the label, how the
arithmetic ran (precision, kernels) is not, and seeds group across it."""

from pathlib import Path

from icl.config import load_config
from icl.report.runs import Run, execution_keys, label_runs
from icl.report.sections.seeds import seed_groups

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "configs" / "repro" / "selection.yaml"  # the sparse specialist
MIXTURE = [
    "data.mixture.0.weight=0.5",
    "data.mixture.1.weight=0.5",
    "data.curriculum.weights.start=[0.0,1.0]",
    "data.curriculum.weights.hold=15000",
    "data.curriculum.weights.steps=5000",
]


def runs(*overrides: list[str]) -> list[Run]:
    out = [Run(Path(f"runs/s/r{i}"), load_config([BASE], extra)) for i, extra in enumerate(overrides)]
    label_runs(out)
    return out


def test_a_weight_ramp_is_labelled_in_words_and_precision_is_not_a_label():
    specialist, mixture, resumed_bf16 = runs([], MIXTURE, [*MIXTURE, "seed=1", "train.precision=bf16-mixed"])
    assert specialist.label == "1 sparse_linear(nnz=1); seed=0"
    ramp = "0.5 dense_linear + 0.5 sparse_linear(nnz=1); weights 0/1 for 15000 steps, 5000-step ramp"
    assert (mixture.label, resumed_bf16.label) == (f"{ramp}; seed=0", f"{ramp}; seed=1")
    assert execution_keys([specialist, mixture, resumed_bf16]) == ["train.precision"]
    assert execution_keys([specialist, mixture]) == []


def test_seeds_group_across_precision_but_not_across_what_was_trained():
    a, b, c, d = runs([], ["seed=1", "train.precision=bf16-mixed"], ["seed=2", "train.lr=2e-3"], MIXTURE)
    assert [[r.path.name for r in g] for g in seed_groups([a, b, c, d])] == [["r0", "r1"]]
