"""Config: every shipped file validates; merge order; bad input is one clear ICLError; every
number finite; safe YAML; sizes by arithmetic (parameter count, memory estimates); the bottom of
the import graph."""

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

from icl import resources
from icl.config import Config, from_dict, load_config, to_dict
from icl.errors import ICLError
from icl.eval_config import MAX_PROMPTS
from icl.model import ICLTransformer, ModelConfig
from icl.resources import (
    check_evaluation,
    check_resources,
    checkpoint_bytes,
    evaluation_estimate,
    param_count,
    training_estimate,
)
from icl.runs import check_run_config
from icl.tasks import TASKS
from icl.yamlio import MAX_YAML_BYTES, read_yaml

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
        (["data.mixture.0.name=cubic"], "unknown function class 'cubic'; allowed: convex_combination"),
        (["data.mixture.0.name=sparse_linear", "data.mixture.0.params.nnz=0"], r"nnz.*1..20"),
        (["data.mixture.0.name=sparse_linear", "data.mixture.0.params.nnz=21"], r"nnz.*1..20"),
        (["data.mixture.0.weight=0.7"], "summing to 1"),
        (["data.mixture.0.weight=-1"], "non-negative"),
        (["data.n_points=102"], "model.max_points"),
        (["train.schedule=cosine"], "constant, warmup_rsqrt"),
        (["train.loggers=[csv,mlflow]"], "csv, tensorboard, wandb"),
        (["train.wandb.mode=sometimes"], "offline, online, disabled"),
        (["model.n_head=3"], "multiple"),
        (["eval.yscale=cubic"], "eval.yscale: got 'cubic'; allowed: auto, linear, log"),
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


# --- every number finite ---------------------------------------------------------------------


def numeric_keys(obj, prefix=""):
    """(dotted key, value) of every number and list of numbers in the default config, found by
    walking the dataclasses, so a field added later is covered without editing this test."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from numeric_keys(value, key + ".")
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            yield from numeric_keys(value[0], f"{key}.0.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield key, value
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            yield key, value


NUMERIC = dict(numeric_keys(Config()))


def test_the_walk_finds_every_section():
    sections = {k.split(".")[0] for k in NUMERIC}
    assert sections == {"seed", "data", "model", "train", "eval"}
    assert {"train.eps", "train.weight_decay", "data.mixture.0.noise_std", "eval.label_noise"} <= NUMERIC.keys()
    assert {"data.inputs.shift", "data.curriculum.dims.start", "eval.scales", "train.betas"} <= NUMERIC.keys()


def shown(key: str) -> str:
    """How a message names a key: list indices in brackets (data.mixture[0].weight)."""
    return re.escape(re.sub(r"\.(\d+)", r"[\1]", key)).replace(r"data\.mixture\[0\]\.weight", r"data\.mixture")


@pytest.mark.parametrize("bad", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize("key", [k for k, v in NUMERIC.items() if isinstance(v, float) or isinstance(v, list)])
def test_non_finite_numbers_are_refused_everywhere(key, bad):
    value = f"[{bad}, 0.5]" if isinstance(NUMERIC[key], list) else bad
    with pytest.raises(ICLError, match=shown(key) + r".*(nan|inf)"):
        load_config([], [f"{key}={value}"])


@pytest.mark.parametrize("key", [k for k, v in NUMERIC.items() if isinstance(v, int)])
def test_integers_beyond_64_bits_are_refused(key):
    # A curriculum ramp's cross-field rule names the ramp (data.curriculum.dims: got start=...).
    with pytest.raises(ICLError, match=shown(key.rsplit(".", 1)[0] if "curriculum" in key else key)):
        load_config([], [f"{key}={2**63}"])


TASK_FLOATS = [
    (name, f.name)
    for name, cls in TASKS.items()
    for f in dataclasses.fields(cls)
    if "float" in str(f.type) and "list" not in str(f.type)
]


def test_task_floats_are_found():
    assert ("dense_linear", "w_scale") in TASK_FLOATS and ("sinusoid", "freq") in TASK_FLOATS


@pytest.mark.parametrize("bad", [".nan", ".inf"])
@pytest.mark.parametrize("name,param", TASK_FLOATS)
def test_non_finite_task_parameters_are_refused(name, param, bad):
    with pytest.raises(ICLError, match=rf"data\.mixture\[0\]: {name}\.{param}: got (nan|inf); allowed: a finite"):
        load_config([], [f"data.mixture=[{{name: {name}, params: {{{param}: {bad}}}}}]"])


@pytest.mark.parametrize(
    "override,match",
    [
        (
            "data.mixture=[{name: convex_combination, params: {components: [{name: dense_linear, params: "
            "{w_scale: .nan}}, {name: sinusoid}], coefs: [0.5, 0.5]}}]",
            r"dense_linear\.w_scale: got nan",
        ),
        (
            "data.mixture=[{name: convex_combination, params: {components: [{name: dense_linear}, {name: sinusoid}], "
            "coefs: [.nan, 1.0]}}]",
            r"convex_combination\.coefs: got \[nan, 1\.0\]",
        ),
        ("eval.convex_pair=[{name: dense_linear}, {name: sinusoid, params: {freq: .nan}}]", r"convex_pair\[1\].*nan"),
        ("data.mixture=[{name: dense_linear, weight: .nan}, {name: sparse_linear, weight: 0.5}]", r"got \[nan, 0\.5\]"),
        ("train.eps=-1", r"train\.eps: got -1\.0; allowed: a number > 0"),
        ("train.weight_decay=-5", r"train\.weight_decay: got -5\.0; allowed: a number >= 0"),
        ("train.lr=nan", r"train\.lr: got nan; allowed: a number > 0"),  # a string OmegaConf turns into a float
        ("train.lr=1e999", r"train\.lr: got inf; allowed: a finite number"),
        ("eval.label_noise=-1", r"eval\.label_noise: got -1\.0; allowed: a number >= 0"),
        ("eval.n_prompts=1000001", rf"eval\.n_prompts: got 1000001; allowed: an integer in 1\.\.{MAX_PROMPTS}"),
        ("eval.table_k=41", r"eval\.table_k: got 41; allowed: an integer in 0\.\.40"),
        ("eval.convex_coefs=[0.5, -0.1]", r"eval\.convex_coefs\[1\]: got -0\.1; allowed: numbers in \[0, 1\]"),
        ("data.mixture.0.params.w_scale=0", r"dense_linear\.w_scale: got 0\.0; allowed: a number > 0"),
        ("data.num_workers=129", r"data\.num_workers: got 129; allowed: an integer in 0\.\.128"),
    ],
)
def test_range_rules(override, match):
    with pytest.raises(ICLError, match=match):
        load_config([], [override])


def test_interpolation_errors_are_one_line():
    with pytest.raises(ICLError, match=r"train\.lr: Recursive interpolation detected"):
        load_config([], ["train.lr=${train.lr}"])


# --- safe YAML -------------------------------------------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    names = "abcdefghijklmnop"[:levels]
    lines += [f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip(names, names[1:], strict=False)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", r"empty config file; allowed: a mapping of config sections \(seed, name, data, model, train, eval\)"),
        (b"# only\n# comments\n", "empty config file"),
        (b"null\n", "empty config file"),
        (b"{}\n", "empty config file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", r"not a text file \(NUL byte at offset 8\); allowed: a UTF-8 YAML config file"),
        ("seed: 1 # caf\xe9\n".encode("latin-1"), r"not a text file \(byte 0xe9 at offset 13 is not UTF-8\)"),
        (billion_laughs().encode(), r"expands to more than 100000 values through aliases at line \d+; allowed: "),
        (b"model: " + b"[" * 40 + b"]" * 40, r"nested deeper than 32 levels at line 1"),
        (b"#" * (MAX_YAML_BYTES + 1), rf"{MAX_YAML_BYTES + 1} bytes; allowed: a YAML config file of at most 1 MiB"),
    ],
    ids=["empty", "comments", "null", "empty_mapping", "binary", "latin1", "alias_bomb", "deep", "big"],
)
def test_config_files_are_read_safely(tmp_path, content, match):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ICLError, match=re.escape(str(path)) + ": " + match):
        load_config([path])


def test_utf8_with_bom_and_a_directory(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffseed: 3\n".encode())
    assert load_config([path]).seed == 3
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ICLError, match="not a regular file"):
        read_yaml(tmp_path / "dir.yaml")


def test_aliases_as_yaml_writes_them_load(tmp_path):
    path = tmp_path / "dumped.yaml"
    scales = [0.5, 2.0]
    path.write_text(yaml.safe_dump({"eval": {"scales": scales, "frequencies": scales}}))
    assert "&id001" in path.read_text()  # safe_dump shares the repeated list through an alias
    cfg = load_config([path])
    assert cfg.eval.scales == cfg.eval.frequencies == scales


def test_override_values_are_parsed_safely():
    assert load_config([], ["eval.scales=[&a 1.0, *a]"]).eval.scales == [1.0, 1.0]
    with pytest.raises(ICLError, match=r"inputs\.covariance: got '\[unclosed'"):  # not YAML: the raw text
        load_config([], ["data.inputs.covariance=[unclosed"])
    assert load_config([], ["data.mixture.0.params={w_scale: 2.0}"]).data.mixture[0].params == {"w_scale": 2.0}


def test_shipped_yaml_reads_safely():
    root = Path(__file__).resolve().parents[2]
    for path in [*sorted((root / "configs").rglob("*.yaml")), *sorted((root / "sweeps").glob("*.yaml"))]:
        read_yaml(path, "sweep file")  # refuses alias bombs, oversize and binary files


# --- sizes by arithmetic ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,n_dims",
    [
        ({"n_layer": 1, "n_head": 2, "n_embd": 16, "max_points": 8}, 3),
        ({"n_layer": 3, "n_head": 2, "n_embd": 64, "positions": "sinusoidal"}, 20),
        ({"n_layer": 2, "n_head": 4, "n_embd": 32, "token_format": "interleaved_flag", "mlp_ratio": 3}, 1),
        ({"n_layer": 2, "n_head": 2, "n_embd": 24, "positions": "sinusoidal", "token_format": "interleaved_flag"}, 5),
        ({}, 20),  # standard: the papers' 9.5M
    ],
)
def test_parameter_count_formula_equals_the_built_model(kw, n_dims):
    cfg = ModelConfig(**kw)
    model = ICLTransformer(cfg, n_dims)
    assert param_count(cfg, n_dims) == sum(p.numel() for p in model.parameters())


def test_checkpoint_bytes_are_weights_and_two_moments():
    cfg = load_config([], ["model.n_layer=2", "model.n_embd=32", "model.n_head=2", "data.n_dims=4"])
    n = sum(p.numel() for p in ICLTransformer(cfg.model, 4).parameters())
    assert checkpoint_bytes(cfg) == 3 * 4 * n
    cfg.train.precision = "64-true"
    assert checkpoint_bytes(cfg) == 3 * 8 * n


def test_resource_constants_mirror_the_evaluation_code():
    from icl.evaluation.curves import BLOCK, CurveResult

    assert resources.EVAL_BLOCK == BLOCK
    assert resources.BOOTSTRAP_SAMPLES == inspect.signature(CurveResult.summary).parameters["n_boot"].default


def test_validation_builds_nothing_proportional_to_the_model():
    cfg = load_config([], ["model.n_layer=100000"])  # about 79 billion parameters: only arithmetic is cheap
    assert param_count(cfg.model, cfg.data.n_dims) > 7.8e10


def test_huge_model_and_batch_are_refused_by_arithmetic():
    with pytest.raises(ICLError, match=r"^model\.n_layer=100000: about 79 billion parameters, training needs about"):
        check_resources(load_config([], ["model.n_layer=100000"]), available_bytes=16 * 10**9)
    with pytest.raises(ICLError, match=r"^data\.batch_size=1000000000: .* 16 GB available; allowed: a model and"):
        check_resources(load_config([], ["data.batch_size=1000000000"]), available_bytes=16 * 10**9)
    with pytest.raises(ICLError, match=r"^data\.mixture\[0\]\.params\.hidden=1000000000: "):
        check_resources(
            load_config([], ["data.mixture=[{name: relu_2nn, params: {hidden: 1000000000}}]"]), available_bytes=10**10
        )


def test_a_default_config_fits_a_workstation_and_not_a_byte():
    cfg = load_config([], [])
    check_resources(cfg, available_bytes=64 * 10**9)
    with pytest.raises(ICLError, match=r"^model and data\.batch_size: about 9\.5 million parameters.*, 1 bytes avail"):
        check_resources(cfg, available_bytes=1)


def test_estimates_grow_with_what_they_should():
    small = ["model.n_layer=2", "model.n_embd=32", "model.n_head=2", "data.n_points=11"]  # matmul attention
    cfg = load_config([], small)
    one = training_estimate(cfg)
    assert training_estimate(cfg, processes=2).total > one.total
    assert training_estimate(cfg, fused_attention=True).training < one.training
    bigger = load_config([], [*small, "data.batch_size=128"])
    assert training_estimate(bigger).training > 1.9 * one.training
    assert evaluation_estimate(cfg, 2000)[1] > 1.9 * evaluation_estimate(cfg, 1000)[1]


def test_evaluation_check_names_how_many_prompts_fit():
    cfg = load_config([], [])
    with pytest.raises(ICLError, match=rf"--n-prompts: got {MAX_PROMPTS + 1}; allowed: an integer in 1\.\."):
        check_evaluation(cfg, MAX_PROMPTS + 1, available_bytes=10**15)
    available = 4 * 10**9
    with pytest.raises(ICLError, match=r"eval\.n_prompts=100000: evaluation needs about .* 4\.0 GB available") as e:
        check_evaluation(cfg, 100_000, "eval.n_prompts", available_bytes=available)
    fit = int(re.search(r"at most (\d+) prompts", str(e.value)).group(1))
    check_evaluation(cfg, fit, available_bytes=available)
    with pytest.raises(ICLError):
        check_evaluation(cfg, fit + 1, available_bytes=available)




@pytest.mark.parametrize(
    "override,match",
    [
        ("eval.baselines=[nope]", r"eval\.baselines: unknown baseline 'nope'; allowed: .*checkpoint:PATH"),
        ("eval.periodic_baselines=[nope]", r"eval\.periodic_baselines: unknown baseline 'nope'"),
        ("eval.periodic_suite=bogus", r"eval\.periodic_suite: unknown suite or scenario 'bogus'"),
    ],
)
def test_registry_names_are_checked_by_the_run_layer(override, match):
    cfg = load_config([], ["eval.every=10", override])  # config.py knows no registry above it
    with pytest.raises(ICLError, match=match):
        check_run_config(cfg)
