"""`icl import` of checkpoints in the layout of Garg et al.'s reference code, built here without any
download: a stand-in of their model (HuggingFace GPT2Model between a linear read-in and read-out)
with random weights, saved as they save it (state.pt + config.yaml), imported through the CLI, and
the imported run's predictions compared with the stand-in's on the same prompts."""

import copy
import hashlib
import math
import os
import shutil

import pytest
import torch
import yaml
from support import check_one_line, snapshot
from torch import nn

from icl.checkpoint.load import load_model
from icl.cli import main
from icl.config import load_config
from icl.runstate import run_state
from icl.sampling import Sampler

transformers = pytest.importorskip("transformers")

SIZES = {"family": "gpt2", "n_dims": 4, "n_positions": 12, "n_embd": 32, "n_layer": 2, "n_head": 4}


class ReferenceModel(nn.Module):
    """The reference's model: tokens [x_i, (y_i, 0, ..., 0)] -> Linear(D, E) -> GPT2Model -> Linear(E, 1),
    read at the x tokens; the attribute names are theirs, so state_dict() has their tensor names."""

    def __init__(self, n_dims, n_positions, n_embd, n_layer, n_head, family="gpt2"):
        super().__init__()
        config = transformers.GPT2Config(
            n_positions=2 * n_positions,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
        )
        self._read_in = nn.Linear(n_dims, n_embd)
        self._backbone = transformers.GPT2Model(config)
        self._read_out = nn.Linear(n_embd, 1)

    def forward(self, xs, ys):
        B, N, D = xs.shape
        y_wide = torch.cat([ys[..., None], torch.zeros(B, N, D - 1)], dim=2)
        zs = torch.stack([xs, y_wide], dim=2).reshape(B, 2 * N, D)
        h = self._backbone(inputs_embeds=self._read_in(zs)).last_hidden_state
        return self._read_out(h)[:, ::2, 0]


def reference_model(seed=0, **sizes):
    """A stand-in with weights large enough that every mapped detail (transposes, GELU form, layer
    norm affine, positions) moves the predictions by far more than the tolerance."""
    torch.manual_seed(seed)
    model = ReferenceModel(**{**SIZES, **sizes}).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("wte.weight"):
                continue
            scale = 1 / math.sqrt(p.shape[0]) if p.dim() == 2 else 0.3
            p.copy_(torch.randn_like(p) * scale + (1.0 if ".ln_" in name and name.endswith("weight") else 0.0))
    return model


def conf(task="linear_regression", task_kwargs=None, **model):
    """A config.yaml as the reference code saves one in its run directory."""
    return {
        "model": {**SIZES, **model},
        "training": {
            "task": task,
            "task_kwargs": task_kwargs or {},
            "data": "gaussian",
            "batch_size": 16,
            "learning_rate": 0.0001,
            "train_steps": 1001,
            "save_every_steps": 1000,
            "curriculum": {
                "dims": {"start": 2, "end": 4, "inc": 1, "interval": 100},
                "points": {"start": 5, "end": 11, "inc": 2, "interval": 100},
            },
        },
        "out_dir": "../models/linear_regression",
        "wandb": {"project": "in-context-training", "name": "stand-in"},
        "test_run": False,
    }


def save_reference(run, model, cfg, step=1000, extra=None):
    """state.pt (model_state_dict, optimizer_state_dict, train_step) and config.yaml in ``run``; the
    optimiser state comes from a step of a copy, so ``model`` is left as it is."""
    run.mkdir(parents=True, exist_ok=True)
    trained = copy.deepcopy(model)
    opt = torch.optim.Adam(trained.parameters(), lr=1e-4)
    xs, ys = torch.randn(2, 5, SIZES["n_dims"]), torch.randn(2, 5)
    ((trained(xs, ys) - ys) ** 2).mean().backward()
    opt.step()
    state = {"model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(), "train_step": step}
    torch.save({**state, **(extra or {})}, run / "state.pt")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(stand-in model, its reference run directory), built once; tests work on copies."""
    model = reference_model()
    return model, save_reference(tmp_path_factory.mktemp("reference") / "pretrained", model, conf())


def copy_run(reference, dest):
    return shutil.copytree(reference[1], dest)


def icl(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def prompts(n_points=SIZES["n_positions"], seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, n_points, SIZES["n_dims"], generator=g), torch.randn(6, n_points, generator=g)


def max_diff(imported, reference, n_points=SIZES["n_positions"]):
    xs, ys = prompts(n_points)
    with torch.no_grad():
        return (imported(xs, ys) - reference(xs, ys)).abs().max().item()


def test_imported_run_predicts_as_the_reference(tmp_path, capsys, reference):
    ref = reference[0]
    src = copy_run(reference, tmp_path / "models" / "linear_regression" / "pretrained")
    out = tmp_path / "imported"
    rc, stdout, err = icl(capsys, "import", src, "--out", out)
    assert rc == 0, err
    assert err == ""  # a mapped task, a weights-only file: nothing to note
    assert "dense_linear(normalize=False)" in stdout
    model, cfg = load_model(out)
    assert cfg.model.activation == "gelu_tanh" and cfg.model.max_points == SIZES["n_positions"]
    with torch.no_grad():
        scale = ref(*prompts()).abs().max().item()
    assert scale > 0.1  # predictions of a size the tolerance below means something against
    assert max_diff(model, ref) <= 1e-5  # every position the model has
    # The one model option the match needs: the exact GELU instead of GPT-2's tanh form differs.
    cfg.model.activation = "gelu"
    from icl.model import ICLTransformer

    erf = ICLTransformer(cfg.model, cfg.data.n_dims).eval()
    erf.load_state_dict(model.state_dict())
    assert max_diff(erf, ref) > 1e-4

    # Marked as imported: the source file and its sha256 in the checkpoint and in config.yaml.
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    sha = hashlib.sha256((src / "state.pt").read_bytes()).hexdigest()
    assert ckpt["icl_import"]["source"] == str((src / "state.pt").resolve()) and ckpt["icl_import"]["sha256"] == sha
    assert ckpt["global_step"] == 1000 and sha in (out / "config.yaml").read_text()
    # The run's config.yaml is an ordinary icl config; the run counts as trained (icl report takes it).
    assert load_config([out / "config.yaml"]).model == cfg.model.__class__(
        **{**vars(cfg.model), "activation": "gelu_tanh"}
    )
    assert run_state(out, load_config([out / "config.yaml"]).train.steps) == "trained"


def test_icl_eval_takes_the_imported_run(tmp_path, capsys, reference):
    """`icl eval` with paper 2's convention evaluates the imported run; `icl train --resume` refuses it."""
    out = tmp_path / "imported"
    assert icl(capsys, "import", reference[1], "--out", out)[0] == 0
    rc, stdout, err = icl(
        capsys, "eval", out, "--convention", "mse_over_d", "--n-prompts", "20", "--baselines", "least_squares"
    )
    assert rc == 0, err
    assert "MSE/d" in stdout and (out / "eval" / "in_distribution" / "summary.md").is_file()
    # Weights only: nothing to resume training from, refused in one line.
    before = snapshot(out)
    rc, _, err = icl(capsys, "train", "--resume", out)
    check_one_line(rc, err, r"last\.ckpt: imported by `icl import` \(weights only, no training state to resume\)")
    assert snapshot(out) == before


def test_model_file_with_old_mask_buffers_and_optimizer_objects(tmp_path, capsys, reference):
    """A bare model_<step>.pt with the causal-mask buffers older transformers saved, and a state.pt
    whose optimiser state holds an object the weights-only loader refuses: both import, nothing in
    the file runs, and the predictions match."""
    ref = reference[0]
    run = save_reference(tmp_path / "ref", ref, conf(), extra={"optimizer_extra": Trap(tmp_path / "ran")})
    state = dict(ref.state_dict())
    P = 2 * SIZES["n_positions"]
    for i in range(SIZES["n_layer"]):
        state[f"_backbone.h.{i}.attn.bias"] = torch.tril(torch.ones(P, P, dtype=torch.uint8)).view(1, 1, P, P)
        state[f"_backbone.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, run / "model_500.pt")

    rc, _, err = icl(capsys, "import", run / "model_500.pt", "--out", tmp_path / "a")
    assert rc == 0, err
    model, _ = load_model(tmp_path / "a")
    assert max_diff(model, ref) <= 1e-5
    assert torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 500

    rc, _, err = icl(capsys, "import", run, "--out", tmp_path / "b")
    assert rc == 0, err
    assert not (tmp_path / "ran").exists()  # the object's reduce (open(..., "w")) was never called
    assert err.count("\n") == 1 and "icl: note:" in err and "(io.open)" in err and "nothing in the file was run" in err
    model, _ = load_model(tmp_path / "b")
    assert max_diff(model, ref) <= 1e-5


class Trap:
    """Unpickled by a loader that calls what a file names, this creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize(
    ("task", "kwargs", "want"),
    [
        ("linear_regression", {}, {"name": "dense_linear", "params": {"normalize": False}}),
        (
            "sparse_linear_regression",
            {"sparsity": 2},
            {"name": "sparse_linear", "params": {"nnz": 2, "normalize": False}},
        ),
        (
            "relu_2nn_regression",
            {"hidden_layer_size": 7},
            {"name": "relu_2nn", "params": {"hidden": 7, "normalize": False}},
        ),
        ("noisy_linear_regression", {"noise_std": 0.5}, {"name": "dense_linear", "noise_std": 0.5}),
    ],
)
def test_tasks_map_to_classes_with_the_reference_scaling(tmp_path, capsys, reference, task, kwargs, want):
    """The imported run's training distribution computes the reference's functions: y = w.x with
    w ~ N(0, I) (sparse: `sparsity` nonzero entries), y = sqrt(2/h) relu(x W1) W2 with N(0, 1)
    weights; recomputed here from the sampled parameters with the reference's formulas."""
    src = copy_run(reference, tmp_path / "ref")
    (src / "config.yaml").write_text(yaml.safe_dump(conf(task, kwargs)))
    rc, _, err = icl(capsys, "import", src, "--out", tmp_path / "run")
    assert rc == 0 and err == "", err
    cfg = load_config([tmp_path / "run" / "config.yaml"])
    (component,) = cfg.data.mixture
    assert component.name == want["name"] and component.noise_std == want.get("noise_std", 0.0)
    assert component.params.get("normalize") is False  # the reference's unnormalised functions
    assert {k: component.params[k] for k in want.get("params", {})} == want.get("params", {})
    batch = Sampler(cfg.data, cfg.seed).sample_batch(10_000, batch_size=512, n_points=8)
    xs, p = batch.xs, batch.info["params"][0]
    if task == "relu_2nn_regression":
        W1, W2 = p["W"].transpose(1, 2), p["b"][..., None]  # the reference's (d, h) and (h, 1)
        f = (torch.relu(xs @ W1) @ W2)[..., 0] * math.sqrt(2 / kwargs["hidden_layer_size"])
        assert p["W"].std().item() == pytest.approx(1.0, abs=0.05)
    else:
        f = (xs @ p["w"][..., None])[..., 0]
        nonzero = (p["w"] != 0).sum(1).float()
        assert nonzero.mean().item() == kwargs.get("sparsity", SIZES["n_dims"])
        assert p["w"][p["w"] != 0].std().item() == pytest.approx(1.0, abs=0.05)
    if task == "noisy_linear_regression":
        assert (batch.ys - f).std().item() == pytest.approx(0.5, rel=0.05)
    else:
        torch.testing.assert_close(batch.ys, f, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("task", "kwargs", "name", "params", "loss"),
    [
        ("quadratic_regression", {}, "quadratic", {"normalize": False}, "squared"),
        ("linear_classification", {}, "linear_classification", {}, "logistic"),
        ("decision_tree", {"depth": 3}, "decision_tree", {"depth": 3}, "squared"),
    ],
)
def test_paper2_classes_map_with_the_reference_formula_and_loss(
    tmp_path, capsys, reference, task, kwargs, name, params, loss
):
    src = copy_run(reference, tmp_path / "ref")
    (src / "config.yaml").write_text(yaml.safe_dump(conf(task, kwargs)))
    rc, _, err = icl(capsys, "import", src, "--out", tmp_path / "run")
    assert rc == 0 and err == "", err
    cfg = load_config([tmp_path / "run" / "config.yaml"])
    (component,) = cfg.data.mixture
    assert component.name == name and {k: component.params[k] for k in params} == params
    assert cfg.train.loss == loss  # the reference trains classification on its logistic metric
    if task == "quadratic_regression":  # the reference: y = (x ** 2) @ w / sqrt(3)
        batch = Sampler(cfg.data, cfg.seed).sample_batch(10_000, batch_size=64, n_points=8)  # curriculum done
        f = ((batch.xs**2) @ batch.info["params"][0]["w"][..., None])[..., 0] / math.sqrt(3)
        torch.testing.assert_close(batch.ys, f, rtol=1e-5, atol=1e-5)


def test_unknown_task_imports_with_a_note(tmp_path, capsys, reference):
    ref = reference[0]
    src = copy_run(reference, tmp_path / "ref")
    (src / "config.yaml").write_text(yaml.safe_dump(conf("gaussian_kernel_regression", {"bandwidth": 1.0})))
    rc, _, err = icl(capsys, "import", src, "--out", tmp_path / "run")
    assert rc == 0, err
    lines = err.splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("icl: note: reference task 'gaussian_kernel_regression'")
        and "--suite" in lines[0]
    )
    model, _ = load_model(tmp_path / "run")
    assert max_diff(model, ref) <= 1e-5


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, str):
        path.write_text(obj)
    else:
        torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        ("not_reference", r"state\.pt: not a reference checkpoint: got a mapping with keys foo; allowed: a state\.pt"),
        ("not_torch", r"state\.pt: not a readable checkpoint"),
        ("wider_conf", r"size mismatch for _read_in\.weight: \(32, 4\) in the checkpoint, \(64, 4\) by the conf"),
        ("fewer_layers", r"unexpected _backbone\.h\.1\.attn\.c_attn\.bias \(and 11 more\); allowed: .*n_layer=1"),
        ("more_layers", r"missing _backbone\.h\.2\.ln_1\.weight \(32,\)"),
        ("no_conf", r"config\.yaml: no reference config there; allowed: --conf CONF\.yaml"),
        ("conf_without_model", r"config\.yaml: no model: section; allowed: the reference code's config\.yaml"),
        ("conf_lstm", r"model\.family: got 'lstm'; allowed: gpt2"),
        ("conf_missing_size", r"model\.n_head: got None; allowed: an integer >= 1"),
        ("prompt_longer_than_positions", r"data\.n_points: got 11; allowed: at most model\.max_points \(6\)"),
        ("out_exists", r"--out .*out: exists and holds files; allowed: a new or empty path"),
        ("no_source", r"checkpoint not found: .*missing\.pt"),
        ("icl_checkpoint", r"already an icl checkpoint"),
        ("legacy_with_objects", r"state\.pt: refused: a legacy \(not zip\) torch\.save file holding objects other"),
    ],
)
def test_refusals(tmp_path, capsys, reference, case, pattern):
    """Bad input: one line naming the problem and what is allowed, exit code 2, no traceback, and
    nothing written."""
    run, out = copy_run(reference, tmp_path / "ref"), tmp_path / "out"
    src = run
    if case == "not_reference":
        _write(run / "state.pt", {"foo": torch.zeros(2)})
    elif case == "not_torch":
        _write(run / "state.pt", "not a checkpoint\n")
    elif case == "wider_conf":
        _write(run / "config.yaml", yaml.safe_dump(conf(n_embd=64)))
    elif case == "fewer_layers":
        _write(run / "config.yaml", yaml.safe_dump(conf(n_layer=1)))
    elif case == "more_layers":
        _write(run / "config.yaml", yaml.safe_dump(conf(n_layer=3)))
    elif case == "no_conf":
        (run / "config.yaml").unlink()
    elif case == "conf_without_model":
        _write(run / "config.yaml", "training: {task: linear_regression}\n")
    elif case == "conf_lstm":
        _write(run / "config.yaml", yaml.safe_dump(conf(family="lstm")))
    elif case == "conf_missing_size":
        c = conf()
        del c["model"]["n_head"]
        _write(run / "config.yaml", yaml.safe_dump(c))
    elif case == "prompt_longer_than_positions":
        save_reference(run, reference_model(n_positions=6), conf(n_positions=6))
    elif case == "out_exists":
        _write(out / "notes.txt", "mine\n")
    elif case == "no_source":
        src = run / "missing.pt"
    elif case == "icl_checkpoint":
        _write(run / "state.pt", {"icl_config": {}, "state_dict": {}})
    elif case == "legacy_with_objects":
        state = {"model_state_dict": reference[0].state_dict(), "extra": Trap(tmp_path / "ran")}
        torch.save(state, run / "state.pt", _use_new_zipfile_serialization=False)
    before = snapshot(tmp_path)
    rc, _, err = icl(capsys, "import", src, "--out", out)
    check_one_line(rc, err, pattern)
    assert snapshot(tmp_path) == before


def test_import_needs_out(capsys):
    rc, _, err = icl(capsys, "import", os.devnull)
    check_one_line(rc, err, r"the following arguments are required: --out")


def test_activation_is_a_checked_model_option():
    from icl.errors import ICLError
    from icl.model import ModelConfig

    assert ModelConfig().activation == "gelu"  # the default path keeps the exact GELU
    with pytest.raises(ICLError, match=r"model\.activation: got 'relu'; allowed: gelu, gelu_tanh"):
        ModelConfig(activation="relu").check()
