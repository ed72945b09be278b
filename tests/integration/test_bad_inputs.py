"""The bad-input catalogue (docs/reliability.md): every case ends in exactly one stderr line
naming the problem and what is allowed, exit code 2, no traceback, and leaves every file that
existed before untouched. Most cases run in-process through ``icl.cli.main``; a few go through
the console entry point in subprocesses."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import TINY, check_one_line, snapshot

from icl import resources
from icl.cli import main
from icl.config import load_config
from icl.runs import prepare_new_run, train

NEW = [*TINY, "train.steps=4", "--no-eval"]  # a valid new run, made bad by one extra argument
AVAILABLE = 16 * 10**9  # bytes of memory the catalogue pretends are free

# (id, argv, regex the one stderr line must match). Paths are relative to the fixture directory.
CASES = [
    # config files
    ("config_file_missing", ["train", "missing.yaml"], r"config file not found: missing\.yaml"),
    ("config_file_not_yaml", ["train", "bad.yaml"], r"bad\.yaml: not valid YAML"),
    ("config_file_not_a_mapping", ["train", "list.yaml"], r"list\.yaml: top level must be a mapping"),
    ("config_file_unknown_section", ["train", "typo.yaml"], r"typo\.yaml: unknown key 'modle'; allowed keys.*model"),
    ("config_file_binary", ["train", "binary.yaml"], r"binary\.yaml: not a text file \(NUL byte at offset 8\)"),
    ("config_file_not_utf8", ["train", "latin1.yaml"], r"latin1\.yaml: not a text file \(byte 0xe9 at offset 17"),
    ("config_file_empty", ["train", "empty.yaml"], r"empty\.yaml: empty config file; allowed: a mapping of config sec"),
    ("config_file_only_comments", ["train", "comments.yaml"], r"comments\.yaml: empty config file; allowed: a mapping"),
    ("config_file_too_large", ["train", "huge.yaml"], r"huge\.yaml: 1100000 bytes; allowed: .* at most 1 MiB"),
    ("config_file_is_a_directory", ["train", "adir.yaml"], r"adir\.yaml: not a regular file; allowed: a YAML config"),
    ("yaml_alias_bomb", ["train", "bomb.yaml"], r"bomb\.yaml: expands to more than 100000 values through aliases"),
    ("yaml_nested_too_deep", ["train", "deep.yaml"], r"deep\.yaml: nested deeper than 32 levels at line 1"),
    # overrides
    ("override_unknown_key", ["train", "foo=1"], r"unknown key 'foo'; allowed keys here: seed, name"),
    ("override_misspelt_key", ["train", "model.n_layers=2"], r"unknown key 'model\.n_layers'; allowed.*n_layer"),
    ("override_wrong_type", ["train", "data.n_dims=x"], r"data\.n_dims: Value 'x'.*Integer"),
    ("override_list_for_int", ["train", "data.n_dims=[1,2]"], r"data\.n_dims: .*could not be converted to Integer"),
    ("override_without_key", ["train", "=3"], r"allowed form is key=value"),
    ("override_undefined_alias", ["train", "train.lr=*a"], r"override 'train\.lr=\*a': train\.lr: Value '\*a'"),
    ("override_interpolation_loop", ["train", "train.lr=${train.lr}"], r"train\.lr: Recursive interpolation.*allowed"),
    ("unknown_function_class", ["train", "data.mixture.0.name=nope"], r"unknown function class 'nope'; allowed: "),
    ("unknown_task_parameter", ["train", "data.mixture=[{name: sparse_linear, params: {k: 2}}]"], r"unknown param"),
    ("sparsity_above_dims", ["train", *TINY, "data.mixture=[{name: sparse_linear, params: {nnz: 5}}]"], r"nnz.*1\.\.3"),
    ("mixture_weights_sum", ["train", "data.mixture=[{name: dense_linear, weight: 0.5}]"], r"summing to 1"),
    (
        "mixture_weight_negative",
        ["train", "data.mixture=[{name: dense_linear, weight: -1}, {name: sparse_linear, weight: 2}]"],
        r"non-negative",
    ),
    (
        "mixture_weight_nan",
        ["train", "data.mixture=[{name: dense_linear, weight: .nan}, {name: sparse_linear, weight: 0.5}]"],
        r"data\.mixture weights: got \[nan, 0\.5\]; allowed: non-negative numbers summing to 1",
    ),
    ("noise_std_nan", ["train", "data.mixture.0.noise_std=.nan"], r"mixture\[0\]\.noise_std: got nan; allowed: a fin"),
    ("task_parameter_inf", ["train", "data.mixture.0.params.w_scale=.inf"], r"w_scale: got inf; allowed: a finite"),
    ("task_parameter_zero", ["train", "data.mixture.0.params.w_scale=0"], r"w_scale: got 0\.0; allowed: a number > 0"),
    (
        "sinusoid_frequency_nan",
        ["train", "data.n_dims=1", "data.mixture=[{name: sinusoid, params: {freq: .nan}}]"],
        r"data\.mixture\[0\]: sinusoid\.freq: got nan; allowed: a finite number",
    ),
    (
        "task_too_large",
        ["train", "data.mixture=[{name: relu_2nn, params: {hidden: 1000000000}}]"],
        r"data\.mixture\[0\]\.params\.hidden=1000000000: about 9\.5 million parameters, training needs about",
    ),
    ("mixture_not_a_list", ["train", "data.mixture=5"], r"data\.mixture: .*not a ListConfig"),
    ("batch_size_zero", ["train", "data.batch_size=0"], r"data\.batch_size: got 0; allowed: an integer >= 1"),
    (
        "batch_too_large",
        ["train", "data.batch_size=1000000000"],
        r"data\.batch_size=1000000000: about 9\.5 million parameters, training needs about .* PB of memory .* "
        r"available; allowed: a model and batch that fit",
    ),
    ("workers_too_many", ["train", "data.num_workers=100000"], r"data\.num_workers: got 100000; allowed: .* 0\.\.128"),
    ("input_shift_nan", ["train", "data.inputs.shift=.nan"], r"inputs\.shift: got nan; allowed: a finite number"),
    ("input_scale_inf", ["train", "data.inputs.scale=.inf"], r"inputs\.scale: got inf; allowed: a finite number > 0"),
    ("input_covariance", ["train", "data.inputs.covariance=banana"], r"covariance: got 'banana'; allowed: isotropic"),
    (
        "curriculum_start_above_end",
        ["train", "data.curriculum.dims.start=30", "data.curriculum.dims.interval=5"],
        r"curriculum\.dims: got start=30, end=20.*allowed: 1 <= start <= end",
    ),
    ("heads_do_not_divide_width", ["train", "model.n_embd=30", "model.n_head=4"], r"a multiple of model\.n_head"),
    ("prompt_longer_than_positions", ["train", "data.n_points=200"], r"at most model\.max_points \(101\)"),
    ("dropout_out_of_range", ["train", "model.dropout=1.5"], r"model\.dropout: got 1\.5; allowed: a number in \[0, 1"),
    ("dropout_nan", ["train", "model.dropout=.nan"], r"model\.dropout: got nan; allowed: a number in \[0, 1\)"),
    (
        "model_too_large",
        ["train", "model.n_layer=100000"],
        r"model\.n_layer=100000: about 79 billion parameters, training needs about .* TB of memory \(weights and "
        r"Adam state .*\), .* available; allowed: a model and batch that fit",
    ),
    ("steps_zero", ["train", "train.steps=0"], r"train\.steps: got 0; allowed: an integer >= 1"),
    ("learning_rate_negative", ["train", "train.lr=-1"], r"train\.lr: got -1\.0; allowed: a number > 0"),
    ("learning_rate_inf", ["train", "train.lr=.inf"], r"train\.lr: got inf; allowed: a finite number"),
    ("learning_rate_nan_text", ["train", "train.lr=nan"], r"train\.lr: got nan; allowed: a number > 0"),
    ("learning_rate_overflow", ["train", "train.lr=1e999"], r"train\.lr: got inf; allowed: a finite number"),
    ("train_eps_negative", ["train", "train.eps=-1"], r"train\.eps: got -1\.0; allowed: a number > 0"),
    ("train_eps_nan", ["train", "train.eps=.nan"], r"train\.eps: got nan; allowed: a number > 0"),
    ("weight_decay_negative", ["train", "train.weight_decay=-5"], r"train\.weight_decay: got -5\.0; allowed: a num"),
    ("betas_nan", ["train", "train.betas=[.nan,0.999]"], r"train\.betas: got \[nan, 0\.999\]; allowed: two numbers"),
    ("grad_clip_inf", ["train", "train.grad_clip=.inf"], r"train\.grad_clip: got inf; allowed: a finite number"),
    ("optimizer_unknown", ["train", "train.optimizer=sgd"], r"train\.optimizer: got 'sgd'; allowed: adam, adamw"),
    ("schedule_unknown", ["train", "train.schedule=cosine"], r"allowed: constant, warmup_rsqrt"),
    ("rsqrt_without_warmup", ["train", "train.schedule=warmup_rsqrt"], r"train\.warmup_steps: got 0; allowed: .*>= 1"),
    ("precision_unknown", ["train", "train.precision=8bit"], r"train\.precision: got '8bit'; allowed: 32-true"),
    ("logger_unknown", ["train", "train.loggers=[mlflow]"], r"train\.loggers: got \['mlflow'\]; allowed: any of csv"),
    ("wandb_mode_unknown", ["train", "train.wandb.mode=cloud"], r"allowed: offline, online, disabled"),
    ("nonfinite_policy_unknown", ["train", "train.nonfinite=ignore"], r"train\.nonfinite: got 'ignore'; allowed: stop"),
    ("run_name_with_slash", ["train", "name=a/b"], r"name: got 'a/b'; allowed: letters, digits"),
    ("config_eval_prompts_zero", ["train", "eval.n_prompts=0"], r"eval\.n_prompts: got 0; allowed: an integer in 1"),
    (
        "config_eval_prompts_too_many",
        ["train", "eval.n_prompts=1000000000"],
        r"eval\.n_prompts: got 1000000000; allowed: an integer in 1\.\.1000000",
    ),
    ("eval_label_noise_negative", ["train", "eval.label_noise=-1"], r"eval\.label_noise: got -1\.0; allowed: a n"),
    ("eval_label_noise_nan", ["train", "eval.label_noise=.nan"], r"eval\.label_noise: got nan; allowed: a number >= 0"),
    ("eval_scale_nan", ["train", "eval.scales=[1.0,.nan]"], r"eval\.scales\[1\]: got nan; allowed: finite numbers > 0"),
    ("eval_frequency_negative", ["train", "eval.frequencies=[-1]"], r"eval\.frequencies\[0\]: got -1\.0; allowed"),
    ("eval_convex_coef_above_1", ["train", "eval.convex_coefs=[1.5]"], r"eval\.convex_coefs\[0\]: got 1\.5; allowed"),
    ("eval_table_k_too_large", ["train", "eval.table_k=41"], r"eval\.table_k: got 41; allowed: an integer in 0\.\.40"),
    (
        "eval_seed_beyond_64_bits",
        ["train", "eval.seed=99999999999999999999"],
        r"eval\.seed: got 99999999999999999999; allowed: an integer of at most 64 bits",
    ),
    (
        "config_eval_baseline_unknown",
        ["train", "eval.baselines=[nope]"],
        r"eval\.baselines: unknown baseline 'nope'; allowed",
    ),
    ("eval_every_negative", ["train", "eval.every=-1"], r"eval\.every: got -1; allowed: an integer >= 0"),
    (
        "periodic_scenario_unknown",
        ["train", "eval.every=10", "eval.periodic_suite=bogus"],
        r"eval\.periodic_suite: unknown suite or scenario 'bogus'; allowed suites: in_distribution",
    ),
    ("accelerator_unknown", ["train", *NEW, "train.accelerator=bogus", "--run-dir", "new"], r"invalid accelerator"),
    ("devices_not_a_count", ["train", *NEW, "train.devices=abc", "--run-dir", "new"], r"train\.devices='abc'.*int"),
    ("strategy_unknown", ["train", *NEW, "train.strategy=foo", "--run-dir", "new"], r"invalid strategy name"),
    (
        "strategy_spawned_workers",
        ["train", *NEW, "train.devices=2", "train.strategy=ddp_spawn", "--run-dir", "new"],
        r"train\.strategy: got 'ddp_spawn'; allowed: auto or ddp",
    ),
    # CLI arguments
    ("no_subcommand", [], r"required: command"),
    ("subcommand_unknown", ["fly"], r"invalid choice: 'fly' \(choose from 'train', 'eval'"),
    ("option_unknown", ["train", "--frobnicate"], r"'--frobnicate': allowed: a YAML config file"),
    ("positional_not_yaml", ["train", "bogus"], r"'bogus': allowed: a YAML config file \(\*\.yaml\) or a key=value"),
    ("run_dir_exists", ["train", *NEW, "--run-dir", "run"], r"run directory run exists; use --resume run"),
    ("run_dir_below_a_file", ["train", *NEW, "--run-dir", "afile/run"], r"afile/run is not writable"),
    ("run_dir_is_a_file", ["train", *NEW, "--run-dir", "afile"], r"run directory afile is a file"),
    ("resume_not_a_run", ["train", "--resume", "nowhere"], r"--resume nowhere: not a run directory"),
    ("resume_with_config_file", ["train", "--resume", "run", "x.yaml"], r"--resume takes the run's own config\.yaml"),
    ("resume_finished_run", ["train", "--resume", "run"], r"already trained 4 steps; raise train\.steps \(now 4\)"),
    (
        "resume_changed_model",
        ["train", "--resume", "run", "train.steps=8", "model.n_embd=32"],
        r"model\.n_embd 16 -> 32 differs from the checkpoint; allowed to change on resume: train\.\*",
    ),
    (
        "resume_changed_data",
        ["train", "--resume", "run", "train.steps=8", "data.mixture=[{name: sparse_linear}]"],
        r"data\.mixture .* differs from the checkpoint",
    ),
    (
        "resume_corrupted_last_ckpt",
        ["train", "--resume", "corrupt_run", "train.steps=8"],
        r"last\.ckpt: not a readable checkpoint.*; move it away to resume from step=0000003\.ckpt",
    ),
    ("resume_before_first_checkpoint", ["train", "--resume", "empty_run", "train.steps=8"], r"no checkpoint in"),
    # checkpoint files and `icl eval` arguments
    ("eval_checkpoint_missing", ["eval", "nowhere.ckpt"], r"checkpoint not found: nowhere\.ckpt \(give a \.ckpt"),
    ("eval_directory_without_checkpoint", ["eval", "empty_run"], r"checkpoint not found: empty_run/checkpoints/last"),
    ("eval_checkpoint_garbage", ["eval", "garbage.ckpt"], r"garbage\.ckpt: not a readable checkpoint"),
    ("eval_checkpoint_truncated", ["eval", "truncated.ckpt"], r"truncated\.ckpt: not a readable checkpoint"),
    ("eval_checkpoint_foreign", ["eval", "foreign.ckpt"], r"foreign\.ckpt: not an icl checkpoint"),
    (
        "eval_checkpoint_mismatched",
        ["eval", "mismatched.ckpt"],
        r"mismatched\.ckpt: weights do not match its config: size mismatch for ",
    ),
    ("eval_suite_unknown", ["eval", "run", "--suite", "bogus"], r"unknown suite or scenario 'bogus'; allowed suites"),
    ("eval_scenario_impossible", ["eval", "run", "--suite", "length"], r"longer_prompts: .*allowed only for models"),
    ("eval_baseline_unknown", ["eval", "run", "--baselines", "nope"], r"unknown baseline 'nope'; allowed: "),
    ("eval_checkpoint_baseline_empty", ["eval", "run", "--baselines", "checkpoint:"], r"checkpoint:PATH"),
    ("eval_prompts_zero", ["eval", "run", "--n-prompts", "0"], r"--n-prompts: got 0; allowed: an integer in 1\.\."),
    ("eval_prompts_not_int", ["eval", "run", "--n-prompts", "abc"], r"--n-prompts: invalid int value: 'abc'"),
    (
        "eval_prompts_too_many",
        ["eval", "run", "--n-prompts", "1000000000"],
        r"--n-prompts: got 1000000000; allowed: an integer in 1\.\.1000000",
    ),
    (
        "eval_prompts_beyond_memory",
        ["eval", "run", "--n-prompts", "1000000"],
        r"--n-prompts 1000000: evaluation needs about .* GB of memory, 16 GB available; allowed: at most \d+ prompts",
    ),
    ("eval_convention_unknown", ["eval", "run", "--convention", "l1"], r"--convention: got 'l1'; allowed: mse"),
    ("eval_device_unknown", ["eval", "run", "--device", "gpu0"], r"--device: got 'gpu0', not a torch device type"),
    ("eval_device_absent", ["eval", "run", "--device", "cuda:99"], r"--device: got 'cuda:99' .*allowed: cpu"),
    ("eval_out_is_a_file", ["eval", "run", "--out", "afile"], r"--out afile: is a file; allowed: a directory"),
    ("eval_extra_argument", ["eval", "run", "extra"], r"unrecognized arguments: extra"),
    ("loss_unsuited_to_mixture", ["train", "train.loss=logistic"], r"train\.loss: got 'logistic' with data\.mixture"),
]
SUBPROCESS = ["subcommand_unknown", "eval_checkpoint_truncated"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad_inputs")
    cfg = load_config([], [*TINY, "train.steps=4", "model.max_points=6"])  # no room for longer prompts
    run = prepare_new_run(cfg, d / "run", overwrite=False)
    train(cfg, run, evaluate=False)
    last = (run / "checkpoints" / "last.ckpt").read_bytes()
    shutil.copytree(run, d / "corrupt_run")
    (d / "corrupt_run" / "checkpoints" / "last.ckpt").write_bytes(last[: len(last) // 2])
    shutil.copytree(run, d / "empty_run")
    for p in (d / "empty_run" / "checkpoints").iterdir():
        p.unlink()
    (d / "truncated.ckpt").write_bytes(last[: len(last) // 3])
    (d / "garbage.ckpt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, d / "foreign.ckpt")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    ckpt["icl_config"]["model"]["n_embd"] = 32
    torch.save(ckpt, d / "mismatched.ckpt")
    (d / "bad.yaml").write_text("model: [1, 2\n")
    (d / "list.yaml").write_text("- model\n- data\n")
    (d / "typo.yaml").write_text("modle:\n  n_layer: 2\n")
    (d / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (d / "latin1.yaml").write_bytes("model: {name: caf\xe9}\n".encode("latin-1"))
    (d / "empty.yaml").write_text("")
    (d / "comments.yaml").write_text("# a config\n# with nothing in it\n")
    (d / "huge.yaml").write_text("#" * 99 + "\n" + "seed: 1\n".rjust(100, " ") * 10_999)
    (d / "adir.yaml").mkdir()
    laughs = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)]
    (d / "bomb.yaml").write_text("\n".join(laughs) + "\n")
    (d / "deep.yaml").write_text("model: " + "[" * 100 + "]" * 100 + "\n")
    (d / "afile").write_text("precious")
    return d


@pytest.mark.parametrize("argv,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(workdir, monkeypatch, capsys, argv, pattern):
    monkeypatch.chdir(workdir)
    # The memory cases compare estimates with the available memory: the same verdict on every machine.
    monkeypatch.setattr(resources, "available_memory", lambda: AVAILABLE)
    before = snapshot(workdir)
    rc = main(list(argv))
    check_one_line(rc, capsys.readouterr().err, pattern)
    assert snapshot(workdir) == before  # nothing lost, changed or left behind


def test_catalogue_size_and_unique_names():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_bad_inputs_through_the_console_entry_point(workdir):
    cases = {c[0]: c for c in CASES if c[0] in SUBPROCESS}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "icl", *argv], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, (_, argv, _) in cases.items()
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        check_one_line(proc.returncode, err, cases[name][2])
