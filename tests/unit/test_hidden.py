"""Hidden states: the last layer reproduces the model's predictions; every layer is causal."""

import pytest
import torch

from icl.analysis.hidden import collect, residual_stream
from icl.errors import ICLError
from icl.model import ModelConfig
from icl.models import build_model

D, N = 3, 6


def model_of(family):
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, n_layer=2, n_head=2, n_embd=16, max_points=N)
    return build_model(cfg, D).eval()


def prompts(b=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, N, D, generator=g), torch.randn(b, N, generator=g)


def read_out(model, h):
    norm = {"gpt2": "ln_f", "mamba": "norm_f"}.get(model.cfg.family)
    return model.read_out(getattr(model, norm)(h) if norm else h)[..., 0]


@pytest.mark.parametrize("family", ["gpt2", "lstm", "mamba"])
def test_last_layer_at_x_tokens_gives_the_models_predictions(family):
    model = model_of(family)
    xs, ys = prompts()
    with torch.no_grad():
        stream = residual_stream(model, xs, ys)
        assert len(stream) == 3 and all(h.shape == (5, 2 * N, 16) for h in stream)
        torch.testing.assert_close(read_out(model, stream[-1][:, 0::2]), model(xs, ys), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "lstm", "mamba"])
def test_hidden_states_are_causal(family):
    model = model_of(family)
    xs, ys = prompts()
    xs2, ys2 = xs.clone(), ys.clone()
    xs2[:, 3:] += 1.0  # tokens 6.. change
    ys2[:, 2:] -= 1.0  # tokens 5.. change
    with torch.no_grad():
        a, b = residual_stream(model, xs, ys), residual_stream(model, xs2, ys2)
    for ha, hb in zip(a, b, strict=True):
        torch.testing.assert_close(ha[:, :5], hb[:, :5])
        assert not torch.allclose(ha[:, 5:], hb[:, 5:])


def test_collect_streams_chunks_and_selects_tokens():
    model = model_of("gpt2")
    xs, ys = prompts(b=7)
    with torch.no_grad():
        stream = residual_stream(model, xs, ys)
    got = collect(model, xs, ys, layers=[0, 2], ks=[1, 3], position="y", chunk=3)
    assert got.shape == (2, 7, 2, 16)
    torch.testing.assert_close(got[1, :, 1], stream[2][:, 5])  # y token after 3 examples
    x_tok = collect(model, xs, ys, layers=[1], ks=[0, 2], position="x")
    torch.testing.assert_close(x_tok[0, :, 1], stream[1][:, 4])
    mean = collect(model, xs, ys, layers=[1], ks=[2], position="mean")
    torch.testing.assert_close(mean[0, :, 0], stream[1][:, :4].mean(1))


@pytest.mark.parametrize(
    "kw, match",
    [({"layers": [3]}, "layers"), ({"ks": [0]}, "in-context"), ({"position": "z"}, "position")],
)
def test_collect_rejects_bad_requests(kw, match):
    model = model_of("gpt2")
    xs, ys = prompts()
    args = {"layers": [0], "ks": [1], "position": "y"} | kw
    with pytest.raises(ICLError, match=match):
        collect(model, xs, ys, **args)
