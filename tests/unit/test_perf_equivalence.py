"""Speed paths leave results unchanged: the model's pruned last block and matmul attention
against the plain GPT-2 computation, fused vs unfused Adam, batches drawn on the device vs in
the DataLoader, the flat-parameter optimiser vs the per-parameter one (compiled vs eager and the
memory setting, which need compiles and processes, are in tests/integration/test_speed_paths.py)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from support import loss_after_steps, module

from icl.config import load_config
from icl.errors import ICLError
from icl.model import ICLTransformer, ModelConfig
from icl.sampling import DataConfig, Sampler
from icl.speed import MATMUL_ATTENTION_MAX_TOKENS, FlatAdam, FlatAdamW
from icl.training.stream import StepStream


def plain_forward(model: ICLTransformer, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Textbook pre-LN GPT-2 on every token (fused causal attention), read out at x tokens."""
    h = model.embed(xs, ys)
    B, T, E = h.shape
    for block in model.blocks:
        H = block.attn.n_head
        q, k, v = block.attn.qkv(block.ln1(h)).split(E, dim=-1)
        q, k, v = (t.view(B, T, H, E // H).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, E)
        h = h + block.attn.proj(a)
        h = h + block.fc_out(F.gelu(block.fc(block.ln2(h))))
    return model.read_out(model.ln_f(h))[:, 0::2, 0]


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """CPU kernels split work by thread count: run under each, then restore it."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# Prompts of 2N - 1 tokens (the last y token is dropped): N = limit // 2 is the longest prompt on
# the matmul path (T <= limit) and N = limit // 2 + 1 the shortest on the fused kernel.
@pytest.mark.parametrize("n_points", [5, "longest matmul", "shortest fused", 60])
def test_model_equals_the_plain_computation_on_both_attention_paths(n_points, threads):
    limit = MATMUL_ATTENTION_MAX_TOKENS
    n_points = {"longest matmul": limit // 2, "shortest fused": limit // 2 + 1}.get(n_points, n_points)
    torch.manual_seed(0)
    model = ICLTransformer(ModelConfig(n_layer=3, n_head=2, n_embd=32, max_points=60), n_dims=4)
    for p in model.parameters():  # non-trivial LayerNorm and bias values too
        torch.nn.init.normal_(p, std=0.3)
    xs, ys = torch.randn(3, n_points, 4), torch.randn(3, n_points)
    with torch.no_grad():
        torch.testing.assert_close(model(xs, ys), plain_forward(model, xs, ys), rtol=1e-4, atol=1e-5)


def test_gradients_equal_the_plain_computation():
    torch.manual_seed(0)
    model = ICLTransformer(ModelConfig(n_layer=2, n_head=2, n_embd=16, max_points=8), n_dims=3)
    xs, ys = torch.randn(4, 8, 3), torch.randn(4, 8)
    grads = []
    for fn in (model, lambda a, b: plain_forward(model, a, b)):
        model.zero_grad()
        ((fn(xs, ys) - ys) ** 2).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fused_and_unfused_adam_give_the_same_losses():
    fused = loss_after_steps(module("train.fused_optimizer=true"), 4)
    plain = loss_after_steps(module("train.fused_optimizer=false"), 4)
    assert fused[0] == plain[0]  # same initialisation, same batch
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(plain), rtol=1e-5, atol=1e-6)
    assert fused[-1] != fused[0]  # the optimiser moved the weights


def small_model() -> ICLTransformer:
    torch.manual_seed(0)
    return ICLTransformer(ModelConfig(n_layer=2, n_head=2, n_embd=16, max_points=11), n_dims=3)


def train(model, opt, n_steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        xs, ys = torch.randn(4, 11, 3, generator=g), torch.randn(4, 11, generator=g)
        opt.zero_grad()
        ((model(xs, ys) - ys) ** 2).mean().backward()
        opt.step()


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    "flat_cls,plain_cls,kwargs",
    [(FlatAdam, torch.optim.Adam, {}), (FlatAdamW, torch.optim.AdamW, {"weight_decay": 0.1, "amsgrad": True})],
)
def test_the_flat_optimiser_is_the_per_parameter_one_and_keeps_its_checkpoint_format(flat_cls, plain_cls, kwargs):
    plain_model, flat_model = small_model(), small_model()
    plain = plain_cls(plain_model.parameters(), lr=1e-2, fused=True, **kwargs)
    flat = flat_cls(flat_model.parameters(), lr=1e-2, fused=True, **kwargs)
    train(plain_model, plain, 5, seed=1)
    train(flat_model, flat, 5, seed=1)
    assert_same_params(plain_model, flat_model)  # bitwise: the same kernel on the same numbers
    a, b = plain.state_dict(), flat.state_dict()
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for i, state in a["state"].items():
        assert state.keys() == b["state"][i].keys()
        for key, value in state.items():
            assert torch.equal(value, b["state"][i][key]), (i, key)
    # Checkpoints cross over both ways, and training continues exactly (the unfused optimiser
    # increments every parameter's step in place: each needs its own step tensor).
    resumed = [(plain_model, plain)]
    for cls, state, fused in ((flat_cls, a, True), (plain_cls, b, True), (plain_cls, b, False)):
        model = copy.deepcopy(flat_model)
        opt = cls(model.parameters(), lr=1e-2, fused=fused, **kwargs)
        opt.load_state_dict(copy.deepcopy(state))
        resumed.append((model, opt))
    for model, opt in resumed:
        train(model, opt, 3, seed=2)
    for model, _ in resumed[1:3]:
        assert_same_params(plain_model, model)
    for p, q in zip(plain_model.parameters(), resumed[3][0].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_the_flat_optimiser_can_skip_an_update_and_reattaches_a_dropped_gradient():
    model = small_model()
    opt = FlatAdam(model.parameters(), lr=1e-2, fused=True)
    (flat,) = opt.param_groups[0]["params"]
    before = [p.detach().clone() for p in model.parameters()]

    def backward():
        ((model(torch.randn(2, 11, 3), torch.randn(2, 11)) - 1) ** 2).mean().backward()

    backward()
    flat.grad = None  # how ICLModule skips a non-finite step
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True)) and not opt.state
    model.read_out.weight.grad = None  # as a module's zero_grad(set_to_none=True) would
    opt.zero_grad()  # re-attaches it (and the flat gradient)
    backward()
    opt.step()
    # Adam's first step moves every weight with a non-zero gradient by about lr.
    assert [n for (n, p), q in zip(model.named_parameters(), before, strict=True) if torch.equal(p, q)] == []


@pytest.mark.parametrize("overrides", [[], ["model.token_format=interleaved_flag"], ["model.positions=sinusoidal"]])
def test_every_parameter_gets_a_gradient(overrides):
    """What makes the flat optimiser exact: no parameter ever lacks a gradient (it would still
    see the update of a zero gradient there, where the per-parameter optimiser skips it)."""
    m = module(*overrides, "train.fused_optimizer=false")
    _, xs, ys = StepStream(m.sampler, 0).batch(0)
    ((m.model(xs, ys) - ys) ** 2).mean().backward()
    assert [n for n, p in m.model.named_parameters() if p.grad is None] == []






@pytest.mark.parametrize("rank,world", [(0, 1), (1, 2)])
def test_device_sampling_draws_the_dataloader_batches(rank, world):
    sampler = Sampler(DataConfig(n_dims=4, n_points=6, batch_size=8), seed=3)
    loader = iter(StepStream(sampler, 7, rank, world))
    steps = iter(StepStream(sampler, 7, rank, world, sample=False))
    for _ in range(3):
        step, xs, ys = next(loader)
        assert next(steps) == step
        d_step, d_xs, d_ys = StepStream(sampler, 0, rank, world).batch(step, device="cpu")
        assert d_step == step and torch.equal(d_xs, xs) and torch.equal(d_ys, ys)
        assert xs.shape[0] == 8 // world




def test_bad_sampling_mode_is_refused():
    with pytest.raises(ICLError, match="train.sampling.*auto, loader, device"):
        load_config([], ["train.sampling=gpu"])




