"""The ICL transformer: sizes, token format, causality (no label leakage)."""

import pytest
import torch

from icl.errors import ICLError
from icl.model import ICLTransformer, ModelConfig

PAPER_SIZES = {  # (layers, heads, width): published parameter count
    (6, 4, 128): 1.2e6,
    (12, 8, 256): 9.5e6,
}


@pytest.mark.parametrize("shape,expected", PAPER_SIZES.items())
def test_presets_match_the_papers_parameter_counts(shape, expected):
    L, H, E = shape
    n = ICLTransformer(ModelConfig(n_layer=L, n_head=H, n_embd=E), n_dims=20).num_params()
    assert abs(n - expected) / expected < 0.05


def test_tiny_preset_rounds_to_the_papers_0_2m():
    n = ICLTransformer(ModelConfig(n_layer=3, n_head=2, n_embd=64), n_dims=20).num_params()
    assert round(n / 1e6, 1) == 0.2


def small(**kw):
    torch.manual_seed(0)
    return ICLTransformer(ModelConfig(n_layer=2, n_head=2, n_embd=32, max_points=12, **kw), n_dims=4).eval()


def test_no_label_leakage_with_sinusoidal_positions():
    """test_model_families.py checks every family with learned positions and both token formats."""
    model = small(positions="sinusoidal")
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(3, 10, 4, generator=g), torch.randn(3, 10, generator=g)
    base = model(xs, ys)
    for i in range(10):
        xs2, ys2 = xs.clone(), ys.clone()
        ys2[:, i:] = torch.randn(3, 10 - i, generator=g) * 10
        xs2[:, i + 1 :] = torch.randn(3, 9 - i, 4, generator=g) * 10
        out = model(xs2, ys2)
        torch.testing.assert_close(out[:, : i + 1], base[:, : i + 1], rtol=1e-5, atol=1e-5)
        if i < 9:  # and later predictions do see the change (the test can fail)
            assert not torch.allclose(out[:, i + 1 :], base[:, i + 1 :])


def test_embedding_equals_padded_token_read_in():
    model = small(token_format="interleaved_flag")
    xs, ys = torch.randn(2, 3, 4), torch.randn(2, 3)
    tokens = torch.zeros(2, 6, 5)
    tokens[:, 0::2, :4] = xs
    tokens[:, 1::2, 0] = ys
    tokens[:, 1::2, 4] = 1.0
    expected = model.read_in(tokens) + model.pos[:6]
    torch.testing.assert_close(model.embed(xs, ys), expected)


def test_prompt_longer_than_positions_is_refused():
    with pytest.raises(ICLError, match="at most 12"):
        small()(torch.randn(1, 13, 4), torch.randn(1, 13))


@pytest.mark.parametrize("kw,match", [({"n_embd": 30, "n_head": 4}, "multiple"), ({"positions": "rope"}, "learned")])
def test_bad_model_configs(kw, match):
    with pytest.raises(ICLError, match=match):
        ICLTransformer(ModelConfig(**kw), 4)
