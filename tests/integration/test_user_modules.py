"""Extending icl without editing it: user modules (``imports``), the registration API, suite files
(``--suite FILE.yaml``) and evaluation-time overrides (``icl eval RUN key=value``), with the worked
example of README "Extending" (examples/) trained and evaluated from outside the repository."""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from support import TINY, check_one_line

from icl import baselines, inputs, plugins, tasks
from icl.cli import main
from icl.config import from_dict, load_config, to_dict
from icl.errors import ICLError
from icl.eval_config import check_eval_overrides
from icl.evaluation import queries, scenarios
from icl.evaluation.scenarios import SCENARIOS, build_suite, suites
from icl.sampling import Sampler
from icl.suite_spec import read_suite_file, shipped_names

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
SMALL = [f"data.n_dims={3}", "data.n_points=6", "model.max_points=8"]


@pytest.fixture(autouse=True)
def restore_registries():
    """Registrations made by a test's user modules end with it."""
    held = [tasks.TASKS, baselines.BASELINES, SCENARIOS, queries.QUERY_SHIFTS, inputs.DISTRIBUTIONS, suites()]
    saved = [dict(r) for r in held]
    modules = set(sys.modules)
    yield
    for registry, before in zip(held, saved, strict=True):
        registry.clear()
        registry.update(before)
    for name in set(sys.modules) - modules:
        if name.startswith("icl_user_"):
            del sys.modules[name]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


COUNTING = """
    import dataclasses
    from pathlib import Path

    import torch

    from icl import tasks

    runs = Path(__file__).with_suffix(".count")
    runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))


    @dataclasses.dataclass
    class Doubled(tasks.FunctionClass):
        name = "doubled_{tag}"

        def sample_params(self, n, n_dims, generator):
            return {{"w": torch.randn(n, n_dims, generator=generator, device=generator.device)}}

        def apply(self, params, xs):
            return 2 * torch.einsum("bnd,bd->bn", xs, params["w"].to(xs))


    tasks.register(Doubled)
    tasks.register(Doubled)  # the same class again: nothing happens
"""


# --- the loader ---------------------------------------------------------------------------------


def test_a_user_class_trains_from_an_override_and_is_recorded_absolute(tmp_path, monkeypatch):
    write(tmp_path / "lab" / "mine.py", COUNTING.format(tag="a"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config([], [*SMALL, "imports=[lab/mine.py]", "data.mixture=[{name: doubled_a}]"])
    assert cfg.imports == [str(tmp_path / "lab" / "mine.py")]
    batch = Sampler(cfg.data, 0).sample_batch(0, batch_size=4)
    w = batch.info["params"][0]["w"]
    torch.testing.assert_close(batch.ys, 2 * torch.einsum("bnd,bd->bn", batch.xs, w))


def test_a_yaml_files_imports_are_relative_to_it_and_accumulate(tmp_path, monkeypatch):
    write(tmp_path / "cfgs" / "one.py", COUNTING.format(tag="one"))
    write(tmp_path / "two.py", COUNTING.format(tag="two"))
    write(tmp_path / "cfgs" / "exp.yaml", "imports: [one.py]\ndata:\n  mixture: [{name: doubled_one}]\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config([tmp_path / "cfgs" / "exp.yaml"], [*SMALL, "imports=two.py"])
    assert cfg.imports == [str(tmp_path / "cfgs" / "one.py"), str(tmp_path / "two.py")]
    assert {"doubled_one", "doubled_two"} <= set(tasks.TASKS)


def test_importing_one_file_twice_runs_it_once(tmp_path, monkeypatch):
    path = write(tmp_path / "mine.py", COUNTING.format(tag="b"))
    monkeypatch.chdir(tmp_path)
    first = load_config([], [*SMALL, "imports=[mine.py]", "data.mixture=[{name: doubled_b}]"])
    cls = tasks.TASKS["doubled_b"]
    again = load_config([], [*SMALL, f"imports=[{path}, ./mine.py]", "data.mixture=[{name: doubled_b}]"])
    assert from_dict(to_dict(again)).imports == first.imports == again.imports == [str(path)]
    assert tasks.TASKS["doubled_b"] is cls
    assert (tmp_path / "mine.count").read_text() == "1"


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        (None, r"imports: .*missing\.py: no such file; allowed: a list of \.py file paths"),
        ("raise ValueError('boom')\n", r"imports: .*bad\.py raised on import: ValueError: boom"),
        ("import no_such_dependency_xyz\n", r"raised on import: ModuleNotFoundError: No module named"),
        (
            "import dataclasses\nfrom icl import tasks\n\n\n@dataclasses.dataclass\n"
            "class Other(tasks.FunctionClass):\n    name = 'dense_linear'\n\n\ntasks.register(Other)\n",
            r"imports: .*bad\.py raised on import: function class 'dense_linear': already registered to "
            r"icl\.tasks\.linear\.DenseLinear, not icl_user_bad_\w+\.Other; allowed: a name not taken",
        ),
    ],
    ids=["missing_file", "raises", "its_own_import_fails", "name_clash"],
)
def test_a_bad_user_module_is_one_line_naming_it(tmp_path, monkeypatch, capsys, source, pattern):
    name = "missing.py" if source is None else "bad.py"
    if source is not None:
        write(tmp_path / name, source)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ICLError, match=pattern):
        load_config([], [f"imports=[{name}]"])
    # The CLI: one line, exit code 2, before any run directory exists.
    check_one_line(main(["train", *TINY, f"imports=[{name}]", "--run-dir", "run"]), capsys.readouterr().err, pattern)
    assert not (tmp_path / "run").exists()
    assert not [m for m in sys.modules if m.startswith("icl_user_bad_")]  # a failed import leaves nothing


def test_a_module_name_and_bad_entries(tmp_path, monkeypatch):
    write(tmp_path / "pkg_for_icl_test" / "__init__.py", COUNTING.format(tag="m"))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config([], [*SMALL, "imports=[pkg_for_icl_test]", "data.mixture=[{name: doubled_m}]"])
    assert cfg.imports == ["pkg_for_icl_test"]
    with pytest.raises(ICLError, match=r"module 'no_such_module_xyz' not found on sys.path"):
        load_config([], ["imports=[no_such_module_xyz]"])
    with pytest.raises(ICLError, match=r"imports: 'not a module' is neither a \.py file path nor a module name"):
        load_config([], ["imports=[not a module]"])
    with pytest.raises(ICLError, match=r"got \{'a': 1\}; allowed: a list of \.py file paths"):
        load_config([], ["imports={a: 1}"])
    with pytest.raises(ICLError, match=r"allowed form is imports=\[FILE\.py, module, \.\.\.\]"):
        load_config([], ["imports.0=x.py"])


def test_every_registry_accepts_the_same_object_twice_and_refuses_a_clash():
    def shift(xs, fresh, gen):
        return xs, fresh

    def family(cfg, mixture):
        return []

    def dist(n, n_points, n_dims, gen):
        return torch.zeros(n, n_points, n_dims)

    class Mine(baselines.Zero):
        name = "mine"

    for register, name, obj, other in [
        (lambda o: queries.register("mine", o), "query shift 'mine'", shift, lambda *a: a),
        (lambda o: scenarios.register(o, "mine"), "scenario family 'mine'", family, lambda *a: []),
        (lambda o: inputs.register("mine", o), "input distribution 'mine'", dist, lambda *a: a),
        (baselines.register, "baseline 'mine'", Mine, type("Mine", (baselines.Zero,), {"name": "mine"})),
    ]:
        register(obj)
        register(obj)
        with pytest.raises(ICLError, match=f"{name}: already registered to .*; allowed: a name not taken"):
            register(other)
    scenarios.register_suite("my_suite", ["mine"])
    scenarios.register_suite("my_suite", ["mine"])
    with pytest.raises(ICLError, match="suite 'my_suite': already registered as"):
        scenarios.register_suite("my_suite", ["in_distribution"])
    with pytest.raises(ICLError, match="suite 'x': got \\['nope'\\]; allowed: a non-empty list of in_distribution"):
        scenarios.register_suite("x", ["nope"])


def test_a_registered_input_distribution_is_a_config_value(tmp_path):
    write(
        tmp_path / "uniform.py",
        """
        import torch

        from icl import inputs


        def uniform(n, n_points, n_dims, gen):
            return (torch.rand(n, n_points, n_dims, generator=gen, device=gen.device) * 2 - 1) * 3**0.5


        inputs.register("uniform", uniform)
        """,
    )
    with pytest.raises(ICLError, match="data.inputs.distribution: got 'uniform'; allowed: gaussian"):
        load_config([], [*SMALL, "data.inputs.distribution=uniform"])
    cfg = load_config([], [*SMALL, f"imports=[{tmp_path / 'uniform.py'}]", "data.inputs.distribution=uniform"])
    xs = Sampler(cfg.data, 0).sample_batch(0, batch_size=2000).xs
    assert xs.abs().max() <= 3**0.5 and xs.var().item() == pytest.approx(1.0, abs=0.05)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(
        inputs.sample_inputs(cfg.data.inputs, 2, 3, 3, gen),
        inputs.sample_inputs(cfg.data.inputs, 2, 3, 3, torch.Generator().manual_seed(0)),
    )


# --- suite files ----------------------------------------------------------------------------------


def piecewise_cfg():
    return load_config([], [*SMALL, f"imports=[{EXAMPLES / 'piecewise_linear.py'}]"])


def test_the_example_suite_file_builds():
    cfg = piecewise_cfg()
    mixture = Sampler(cfg.data, 0).mixture
    built = build_suite(str(EXAMPLES / "piecewise_suite.yaml"), cfg, mixture)
    assert [sc.name for sc in built] == [
        "in_dist.dense_linear",
        *(f"pieces.n_{k}" for k in range(1, 5)),
        "piecewise.wide_inputs",
        "piecewise.noisy_negated",
    ]
    wide, noisy = built[-2:]
    assert wide.inputs.scale == 2.0 and wide.mixture.components[0].task.n_pieces == 3
    assert noisy.query == "negated" and noisy.mixture.components[0].noise_std == 0.1 and noisy.inputs is None
    assert wide.spec == read_suite_file(EXAMPLES / "piecewise_suite.yaml")[2]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("- a\n", r"got list; allowed: a mapping with key scenarios"),
        ("scenarios: [in_distribution]\nextra: 1\n", r"got \['extra', 'scenarios'\]; allowed: a mapping"),
        ("scenarios: []\n", r"scenarios: got \[\]; allowed"),
        ("scenarios: [3]\n", r"scenarios\[0\]: got 3; allowed: a suite or scenario family name, or a mapping"),
        ("scenarios: [{name: a, colour: red}]\n", r"scenarios\[0\]: unknown key\(s\) colour; allowed: name, title"),
        ("scenarios: [{name: a/b}]\n", r"scenarios\[0\]: name: got 'a/b'; allowed: letters, digits"),
        ("scenarios: [{name: a, n_points: 1}]\n", r"\(a\): n_points: got 1; allowed: an integer >= 2"),
        ("scenarios: [{name: a, mixture: {name: x}}]\n", r"\(a\): mixture: got \{'name': 'x'\}; allowed: a list"),
        ("scenarios: [{name: a, mixture: [{weight: 1}]}]\n", r"\(a\): mixture: got .*\(name required\)"),
        ("scenarios: [{name: a, group: g}]\n", r"\(a\): group and value: allowed: both"),
        ("scenarios: [{name: a, value: .nan, group: g}]\n", r"\(a\): value: got nan; allowed: a finite number"),
    ],
)
def test_a_malformed_suite_file_is_one_line(tmp_path, text, pattern):
    with pytest.raises(ICLError, match=pattern):
        read_suite_file(write(tmp_path / "s.yaml", text))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("scenarios: [nope]\n", r"scenarios\[0\]: unknown suite or scenario 'nope'; allowed suites: in_distribution"),
        (
            "scenarios: [{name: a, mixture: [{name: nope}]}]\n",
            r"scenarios\[0\] \(a\): mixture\[0\]: unknown function class 'nope'; allowed: convex_combination",
        ),
        (
            "scenarios: [{name: a, mixture: [{name: sparse_linear, params: {nnz: 9}}]}]\n",
            r"scenarios\[0\] \(a\): mixture\[0\]: sparse_linear.nnz: got 9; allowed",
        ),
        (
            "scenarios: [{name: a, mixture: [{name: dense_linear, colour: 1}]}]\n",
            r"scenarios\[0\] \(a\): .*colour.*allowed: mixture",
        ),
        (
            "scenarios: [{name: a, inputs: {scale: -1}}]\n",
            r"scenarios\[0\] \(a\): inputs.scale: got -1; allowed: a finite number > 0",
        ),
        (
            "scenarios: [{name: a, query: sideways}]\n",
            r"scenarios\[0\] \(a\): scenario a: unknown query shift 'sideways'; allowed",
        ),
        ("scenarios: [{name: a}, {name: a}]\n", r"scenario name 'a' appears twice in the suite"),
    ],
)
def test_a_suite_file_naming_what_is_not_there_is_one_line(tmp_path, text, pattern):
    cfg = load_config([], SMALL)
    path = write(tmp_path / "s.yaml", text)
    with pytest.raises(ICLError, match=f"{re.escape(str(path))}: {pattern}"):
        build_suite(str(path), cfg, Sampler(cfg.data, 0).mixture)


def test_an_explicit_scenario_without_a_mixture_draws_the_training_one(tmp_path):
    cfg = load_config([], SMALL)
    mixture = Sampler(cfg.data, 0).mixture
    (sc,) = build_suite(str(write(tmp_path / "s.yaml", "scenarios: [{name: far, inputs: {shift: 3}}]\n")), cfg, mixture)
    assert sc.mixture is mixture and sc.inputs.shift == 3 and sc.title == "far"


def test_the_shipped_names_cover_every_family_of_the_package():
    """The early --suite check refuses names outside this list: it must hold every shipped suite
    and scenario family, or a valid name would be refused."""
    builtin = [name for name, fam in SCENARIOS.items() if fam.__module__.startswith("icl.")]
    assert set(shipped_names()) == set(builtin) | set(suites())


# --- evaluation-time overrides and the early checks ---------------------------------------------------


def test_eval_overrides_allow_the_eval_section_and_imports_only():
    ok = ["eval.n_prompts=2000", "eval.label_noise=0.5", "eval.scales=[4, 8]", "imports=[x.py]"]
    assert check_eval_overrides(ok) == ok
    fields = r"allowed at evaluation: eval\.<key> \(n_prompts, baselines, .*\) and imports=\[\.\.\.\]"
    for item, pattern in [
        ("model.n_layer=2", r"model keys would change the trained model; " + fields),
        ("data.n_dims=3", r"not an evaluation setting; " + fields),
        ("seed=3", r"not an evaluation setting; " + fields),
        ("eval.colour=3", r"unknown key 'colour'; allowed keys here: n_prompts, baselines"),
        ("extra", r"unrecognized arguments: extra; allowed after the run: key=value overrides"),
    ]:
        with pytest.raises(ICLError, match=pattern):
            check_eval_overrides([item])


def test_eval_overrides_are_validated_on_the_runs_config():
    cfg = load_config([], SMALL)
    changed = load_config([], ["eval.n_prompts=7", "eval.label_noise=0.5"], base=cfg)
    assert (changed.eval.n_prompts, changed.eval.label_noise) == (7, 0.5)
    assert changed.model == cfg.model and changed.data == cfg.data and changed.name == cfg.name
    with pytest.raises(ICLError, match=r"eval.n_prompts: got 0; allowed: an integer in 1\.\.1000000"):
        load_config([], ["eval.n_prompts=0"], base=cfg)
    with pytest.raises(ICLError, match=r"eval.label_noise: got -1.0; allowed: a number >= 0"):
        load_config([], ["eval.label_noise=-1"], base=cfg)


def run_cli_without_torch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`icl ARGS` in a fresh interpreter that reports whether torch was imported."""
    code = (
        "import sys\nfrom icl.cli import main\nrc = main(sys.argv[1:])\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\nsys.exit(rc)\n"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--suite", "bogus"], r"unknown suite or scenario 'bogus'; allowed suites: in_distribution"),
        (["--suite", "missing.yaml"], r"--suite missing\.yaml: no such file"),
        (["--suite", "bad.yaml"], r"bad\.yaml: scenarios\[0\]: unknown key\(s\) colour"),
        (["--suite", "names.yaml"], r"names\.yaml: unknown suite or scenario 'nope'"),
        (["model.n_layer=2"], r"model keys would change the trained model"),
    ],
)
def test_a_bad_suite_or_override_is_refused_before_torch_and_the_checkpoint(tmp_path, args, pattern):
    write(tmp_path / "bad.yaml", "scenarios: [{name: a, colour: red}]\n")
    write(tmp_path / "names.yaml", "scenarios: [in_distribution, nope]\n")
    res = run_cli_without_torch(["eval", "no_such_run", *args], tmp_path)
    check_one_line(res.returncode, res.stderr, pattern)
    assert res.stdout.strip() == "no torch"


def test_a_run_with_user_modules_defers_unknown_names_to_its_registry(tmp_path):
    run = tmp_path / "run"
    write(run / "config.yaml", f"imports: [{tmp_path / 'mine.py'}]\n")
    assert plugins.recorded_imports(run) == [str(tmp_path / "mine.py")]
    assert plugins.recorded_imports(tmp_path / "absent") == []
    res = run_cli_without_torch(["eval", str(run), "--suite", "my_family"], tmp_path)
    assert "unknown suite" not in res.stderr and res.returncode == 2  # the checkpoint is what is missing


# --- README and the worked example through the CLI --------------------------------------------------


def test_the_readme_example_is_the_example_files_code():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Extending") :].split("**Inside the package.**", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1 and blocks[0] in (EXAMPLES / "piecewise_linear.py").read_text()
    for path in re.findall(r"examples/[\w.]+", section):
        assert (ROOT / path).is_file(), path


def test_the_example_config_validates_and_names_its_module_relative_to_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: the path is relative to the YAML file
    cfg = load_config([EXAMPLES / "piecewise_linear.yaml"])
    assert cfg.imports == [str(EXAMPLES / "piecewise_linear.py")] and cfg.name == "piecewise_linear"
    assert [(c.name, c.params) for c in cfg.data.mixture] == [("piecewise_linear", {"n_pieces": 3})]


def icl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "icl", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def finite_records(out: Path) -> dict:
    records = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert records and (out / "summary.md").is_file()
    for rec in records.values():
        for curve in rec["curves"].values():
            assert np.isfinite(curve["mean"]).all()
    return records


def test_the_example_trains_and_evaluates_from_outside_the_repository(tmp_path):
    lab = tmp_path / "lab"
    lab.mkdir()
    for name in ("piecewise_linear.py", "piecewise_linear.yaml", "piecewise_suite.yaml"):
        shutil.copy(EXAMPLES / name, lab / name)
    tiny = [*TINY, "train.steps=3", "train.warmup_steps=0", "eval.baselines=[least_squares]"]
    res = icl("train", "piecewise_linear.yaml", *tiny, "--run-dir", "run", "--no-eval", cwd=lab)
    assert res.returncode == 0, res.stderr
    run = lab / "run"
    assert "/lab/piecewise_linear.py" in (run / "config.yaml").read_text()

    res = icl("eval", "run", "--suite", "piecewise_suite.yaml", "eval.n_prompts=12", "eval.label_noise=0.3", cwd=lab)
    assert res.returncode == 0, res.stderr
    records = finite_records(run / "eval" / "piecewise_suite")
    assert {"pieces.n_1", "pieces.n_4", "piecewise.wide_inputs", "piecewise.noisy_negated"} <= set(records)
    assert records["piecewise.noisy_negated"]["settings"]["n_prompts"] == 12
    assert (run / "eval" / "piecewise_suite" / "table.pieces.csv").is_file()

    # Later, elsewhere, from the run directory alone: the recorded module is imported again.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = icl("eval", str(run), cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert set(finite_records(run / "eval" / "in_distribution")) == {"in_dist.piecewise_linear_n_pieces_3"}
    res = icl("train", "--resume", str(run), "train.steps=4", "--no-eval", cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert "train.steps 3 -> 4" in (run / "resume.log").read_text()
