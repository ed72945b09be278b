"""Speed paths leave results unchanged: the model's pruned last block and matmul attention
against the plain GPT-2 computation, compiled vs eager, fused vs unfused Adam, and batches
drawn on the device vs in the DataLoader."""

import pytest
import torch
import torch.nn.functional as F
from support import TINY

from icl.config import load_config, to_dict
from icl.errors import ICLError
from icl.model import ICLTransformer, ModelConfig, matmul_attention_max_tokens
from icl.sampling import DataConfig, Sampler
from icl.training import ICLModule, StepStream


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
    """The attention path depends on the thread count: run under each, then restore it."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# Prompts of 2N - 1 tokens (the last y token is dropped): N = limit // 2 is the longest prompt on
# the matmul path (T <= limit) and N = limit // 2 + 1 the shortest on the fused kernel.
@pytest.mark.parametrize("n_points", [5, "longest matmul", "shortest fused", 60])
def test_model_equals_the_plain_computation_on_both_attention_paths(n_points, threads):
    limit = matmul_attention_max_tokens(threads)
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


def module(*overrides):
    return ICLModule(to_dict(load_config([], [*TINY, *overrides])))


def loss_after_steps(m: ICLModule, n_steps: int) -> list[float]:
    opt = m.configure_optimizers()["optimizer"]
    stream = StepStream(m.sampler, 0)
    losses = []
    for step in range(n_steps):
        _, xs, ys = stream.batch(step)
        loss = ((m.train_forward(xs, ys) - ys) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_fused_and_unfused_adam_give_the_same_losses():
    fused = loss_after_steps(module("train.fused_optimizer=true"), 4)
    plain = loss_after_steps(module("train.fused_optimizer=false"), 4)
    assert fused[0] == plain[0]  # same initialisation, same batch
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(plain), rtol=1e-5, atol=1e-6)
    assert fused[-1] != fused[0]  # the optimiser moved the weights


@pytest.mark.parametrize("n_points", [11, 41])
def test_the_model_compiles_to_one_graph(n_points):
    """A graph break (e.g. an untraceable call in a block) splits the compiled model into
    per-block frames, which recompile per block and fall back to eager past dynamo's limit."""
    model = ICLTransformer(ModelConfig(n_layer=2, n_head=2, n_embd=16, max_points=41), n_dims=3)
    explained = torch._dynamo.explain(model.forward)(torch.randn(2, n_points, 3), torch.randn(2, n_points))
    assert explained.graph_break_count == 0, explained.break_reasons


def test_compiled_and_eager_give_the_same_losses():
    compiled, eager = module("train.compile=true"), module("train.compile=false")
    assert compiled.train_forward is not compiled.model
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged
    torch.testing.assert_close(
        torch.tensor(loss_after_steps(compiled, 2)), torch.tensor(loss_after_steps(eager, 2)), rtol=1e-4, atol=1e-6
    )


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


def test_device_sampling_trains_to_the_same_weights(tmp_path):
    from icl.runs import prepare_new_run, train

    states = []
    for mode in ("loader", "device"):
        cfg = load_config([], [*TINY, "train.steps=3", f"train.sampling={mode}"])
        run_dir = prepare_new_run(cfg, tmp_path / mode, overwrite=False)
        train(cfg, run_dir, evaluate=False)
        states.append(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_bad_sampling_mode_is_refused():
    with pytest.raises(ICLError, match="train.sampling.*auto, loader, device"):
        load_config([], ["train.sampling=gpu"])


def test_bench_cli_writes_the_table_and_json(tmp_path, capsys):
    import json

    from icl.cli import main

    args = ["bench", "--presets", "tiny", "--shapes", "curriculum_start", "--repeats", "1", "--target-s", "0.01"]
    flags = ["--no-reference", "--no-compile", "--no-memory", "--no-loop", "--no-eval", "--no-bf16"]
    assert main([*args, *flags, "--out", str(tmp_path)]) == 0
    assert "tiny@curriculum_start" in capsys.readouterr().out
    rec = json.loads((tmp_path / "bench.json").read_text())["cases"][0]
    ours = rec["sides"]["ours"]
    assert ours["ms_per_step"] > 0 and 0 < rec["sampling_fraction"] < 1
    # 3 layers, E = 64, T = 22, d = 5, N = 11: 3 x forward x batch
    forward = 2 * 22 * 5 * 64 + 3 * (24 * 22 * 64 * 64 + 4 * 22 * 22 * 64) + 2 * 11 * 64
    assert rec["flops_per_step"] == 3 * forward * 64


def test_bench_cli_refuses_an_unknown_preset(capsys):
    from icl.cli import main

    assert main(["bench", "--presets", "huge"]) == 2
    assert "allowed: tiny, small, standard" in capsys.readouterr().err
