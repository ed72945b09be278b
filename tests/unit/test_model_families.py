"""Model families (gpt2, lstm, mamba) behind one interface: the registry, causality (no label
leakage), train/eval agreement, exact parameter counts and memory estimates, presets matched to
gpt2's sizes, and a CLI train -> checkpoint -> reload -> eval run of each."""

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from support import TINY

from icl.checkpoint.load import load_model
from icl.cli import main
from icl.config import load_config
from icl.ensemble.grouping import solo_only
from icl.errors import ICLError
from icl.model import FAMILIES, ModelConfig
from icl.models import MODELS, build_model, mamba
from icl.resources import param_count
from icl.rng import Domain
from icl.sampling import Sampler
from icl.training.module import ICLModule

ROOT = Path(__file__).resolve().parents[2]
SIZES = ("tiny", "small", "standard")


def small(family: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, n_layer=2, n_head=2, n_embd=16, max_points=12, d_state=4, **kw)
    return build_model(cfg, 4).eval()


def test_registry_builds_exactly_the_configurable_families():
    assert tuple(MODELS) == FAMILIES
    for family in FAMILIES:
        model = small(family)
        assert isinstance(model, MODELS[family].model)
        assert model(torch.randn(2, 5, 4), torch.randn(2, 5)).shape == (2, 5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kw", [{}, {"token_format": "interleaved_flag"}])
def test_no_label_leakage(family, kw):
    model = small(family, **kw)
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(3, 10, 4, generator=g), torch.randn(3, 10, generator=g)
    with torch.no_grad():
        base = model(xs, ys)
        for i in range(10):
            xs2, ys2 = xs.clone(), ys.clone()
            ys2[:, i:] = torch.randn(3, 10 - i, generator=g) * 10
            xs2[:, i + 1 :] = torch.randn(3, 9 - i, 4, generator=g) * 10
            out = model(xs2, ys2)
            torch.testing.assert_close(out[:, : i + 1], base[:, : i + 1], rtol=1e-5, atol=1e-5)
            if i < 9:  # and later predictions do see the change (the test can fail)
                assert not torch.allclose(out[:, i + 1 :], base[:, i + 1 :])


def test_mamba_scan_and_convolution_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    B, T, I, S = 2, 7, 3, 4
    x, Bm, Cm = torch.randn(B, T, I, generator=g), torch.randn(B, T, S, generator=g), torch.randn(B, T, S, generator=g)
    delta, A = torch.rand(B, T, I, generator=g), -torch.rand(I, S, generator=g) * 4
    h, ys = torch.zeros(B, I, S), []
    for t in range(T):  # h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t, y_t = h_t . C_t
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * Bm[:, t, None, :] * x[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    torch.testing.assert_close(mamba.selective_scan(x, delta, A, Bm, Cm), torch.stack(ys, 1))
    conv = torch.nn.Conv1d(I, I, mamba.D_CONV, groups=I)
    left_padded = F.pad(x.transpose(1, 2), (mamba.D_CONV - 1, 0))
    expected = F.conv1d(left_padded, conv.weight, conv.bias, groups=I).transpose(1, 2)
    torch.testing.assert_close(mamba.causal_conv(x, conv), expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_train_and_eval_modes_agree_without_dropout(family):
    model = small(family)
    xs, ys = torch.randn(3, 8, 4), torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.train()(xs, ys), model.eval()(xs, ys), rtol=1e-6, atol=1e-6)
        noisy = small(family, dropout=0.5)
        assert not torch.allclose(noisy.train()(xs, ys), noisy.eval()(xs, ys))  # dropout is wired in


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_checks_apply_to_every_family(family):
    with pytest.raises(ICLError, match="at most 12"):
        small(family)(torch.randn(1, 13, 4), torch.randn(1, 13))
    with pytest.raises(ICLError, match="input dims: got 3"):
        small(family)(torch.randn(1, 5, 3), torch.randn(1, 5))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "kw", [{}, {"n_layer": 3, "n_embd": 24, "d_state": 5, "token_format": "interleaved_flag"}, {"n_embd": 40}]
)
def test_param_count_is_exact(family, kw):
    cfg = ModelConfig(**{"family": family, "n_layer": 2, "n_head": 2, "n_embd": 16, "max_points": 9, **kw})
    assert param_count(cfg, 6) == build_model(cfg, 6).num_params()


@pytest.mark.parametrize("family", ["lstm", "mamba"])
@pytest.mark.parametrize("size", SIZES)
def test_presets_match_gpt2_parameter_counts(family, size):
    """At the papers' d = 20 and the default 101 positions, and at the CPU quick-start's d = 5 and
    11 positions (gpt2's learned positions are part of its count)."""
    for base in ([], [ROOT / "configs/quickstart.yaml"]):
        gpt2 = load_config([*base, ROOT / f"configs/model/{size}.yaml"])
        other = load_config([*base, ROOT / f"configs/model/{family}_{size}.yaml"])
        assert other.model.family == family
        ratio = param_count(other.model, other.data.n_dims) / param_count(gpt2.model, gpt2.data.n_dims)
        assert 0.9 <= ratio <= 1.1, (base, ratio)


def saved_floats(model: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> float:
    """The storages autograd saves for the backward pass of ``model(xs, ys)``, in bytes / 4 (some
    are byte workspaces)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes() / 4
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(xs, ys)
    return sum(storages.values())


@pytest.mark.parametrize("family", ["lstm", "mamba"])
def test_activation_estimate_covers_the_saved_tensors_per_layer(family):
    """The per-layer training-memory estimate (icl/resources.py) against what autograd saves: the
    difference between 3 and 1 layers, over 2."""
    xs, ys = torch.randn(16, 9, 5), torch.randn(16, 9)
    cfg = ModelConfig(family=family, n_layer=1, n_embd=32, max_points=9, d_state=8)
    one, three = (saved_floats(build_model(dataclasses.replace(cfg, n_layer=n), 5), xs, ys) for n in (1, 3))
    estimate = MODELS[family].activation_floats(cfg, 16, 9, False)
    assert 1.0 <= estimate / ((three - one) / 2) <= 1.5


def test_family_is_checked_when_the_config_is_built():
    with pytest.raises(ICLError, match="model.family: got 'rnn'; allowed: gpt2, lstm, mamba"):
        load_config([], [*TINY, "model.family=rnn"])
    with pytest.raises(ICLError, match="model.d_state: got 0"):
        load_config([], [*TINY, "model.family=mamba", "model.d_state=0"])
    # n_head is gpt2's: another family's width need not be a multiple of it
    assert load_config([], [*TINY, "model.family=lstm", "model.n_embd=15"]).model.n_embd == 15


def test_only_gpt2_joins_an_ensemble():
    assert solo_only(load_config([], TINY)) is None
    for family in ("lstm", "mamba"):
        reason = solo_only(load_config([], [*TINY, f"model.family={family}"]))
        assert reason.startswith(f"model.family={family}: ")


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_trains_checkpoints_reloads_and_evaluates(family, tmp_path):
    run = tmp_path / family
    args = [
        *TINY,
        f"model.family={family}",
        "model.d_state=4",
        "train.steps=5",
        f"name={family}",
        f"out_dir={tmp_path}",
    ]
    assert main(["train", *args, "--no-eval"]) == 0
    model, cfg = load_model(run)
    assert isinstance(model, MODELS[family].model) and cfg.model.family == family
    module = ICLModule(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["icl_config"])
    trained = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(not torch.equal(v, module.state_dict()[k]) for k, v in trained.items())  # it did train
    module.load_state_dict(trained)
    batch = Sampler(cfg.data, 99).sample_batch(0, domain=Domain.EVAL)
    with torch.no_grad():
        assert torch.equal(model(batch.xs, batch.ys), module.model.eval()(batch.xs, batch.ys))
    assert main(["eval", str(run), "--n-prompts", "20", "--baselines", "least_squares"]) == 0
    assert (run / "eval" / "in_distribution" / "summary.md").is_file()
