"""Config: every shipped file validates; merge order; bad input is one clear ICLError."""

from pathlib import Path

import pytest

from icl.config import from_dict, load_config, to_dict
from icl.errors import ICLError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


def test_configs_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {"quickstart", "tiny", "small", "standard", "dense_sparse_w0.5", "linear_sinusoid_w0.5"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config([path])
    assert cfg.name == path.stem
    assert from_dict(to_dict(cfg)) == cfg  # round trip through the checkpoint record


def test_paper1_experiment_configs():
    for w in (0, 0.25, 0.5, 0.75, 1):
        cfg = load_config([ROOT / f"configs/experiments/dense_sparse_w{w}.yaml"])
        weights = {c.name: c.weight for c in cfg.data.mixture}
        assert weights == {"dense_linear": w, "sparse_linear": 1 - w}
        assert cfg.data.n_dims == 20 and cfg.model.n_layer == 12 and cfg.model.n_embd == 256


def test_merge_order_defaults_then_files_then_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("train: {lr: 0.5, steps: 10}\ndata: {n_dims: 3}\n")
    b = tmp_path / "b.yaml"
    b.write_text("train: {lr: 0.25}\n")
    cfg = load_config([a, b], ["train.steps=7", "data.mixture.0.params.normalize=false"])
    assert (cfg.train.lr, cfg.train.steps, cfg.data.n_dims, cfg.name) == (0.25, 7, 3, "b")
    assert cfg.data.mixture[0].params == {"normalize": False}
    assert cfg.data.n_points == 41  # untouched default


def test_mixture_list_override():
    cfg = load_config(
        [], ["data.mixture=[{name: dense_linear, weight: 0.5}, {name: sinusoid, weight: 0.5}]", "data.n_dims=1"]
    )
    assert [c.name for c in cfg.data.mixture] == ["dense_linear", "sinusoid"]


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["nope=1"], "unknown key 'nope'.*allowed keys here: seed, name"),
        (["train.nope=1"], "unknown key 'train.nope'"),
        (["data.n_dims=abc"], "data.n_dims"),
        (["train.lr"], "key=value"),
        (["data.mixture.0.name=quadratic"], "unknown function class 'quadratic'; allowed: convex_combination"),
        (["data.mixture.0.name=sparse_linear", "data.mixture.0.params.nnz=0"], r"nnz.*1..20"),
        (["data.mixture.0.name=sparse_linear", "data.mixture.0.params.nnz=21"], r"nnz.*1..20"),
        (["data.mixture.0.weight=0.7"], "summing to 1"),
        (["data.mixture.0.weight=-1"], "non-negative"),
        (["data.n_points=102"], "model.max_points"),
        (["train.schedule=cosine"], "constant, warmup_rsqrt"),
        (["train.loggers=[csv,mlflow]"], "csv, tensorboard, wandb"),
        (["train.wandb.mode=sometimes"], "offline, online, disabled"),
        (["model.n_head=3"], "multiple"),
    ],
)
def test_bad_values_name_the_field_and_the_allowed_values(overrides, match):
    with pytest.raises(ICLError, match=match):
        load_config([], overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ICLError, match="not found"):
        load_config([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ICLError, match="not valid YAML"):
        load_config([bad])
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ICLError, match="mapping"):
        load_config([listy])
