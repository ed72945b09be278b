"""The ensemble's parts against their solo counterparts: the stacked model computes each member's
predictions and gradients with that member's weights alone; the stacked Adam is torch's Adam /
AdamW per member (own lr, weight decay, step count) and leaves a switched-off member untouched;
the stacked stream yields each member's solo batches bitwise; grouping keeps shapes apart."""

import copy

import pytest
import torch

from icl.config import load_config
from icl.ensemble.grouping import differences, group, shape_key, solo_only
from icl.ensemble.optim import StackedAdam
from icl.ensemble.stacked import StackedTransformer
from icl.ensemble.stream import StackedStepStream
from icl.model import ICLTransformer, ModelConfig
from icl.sampling import Sampler
from icl.training.loss import prefix_losses
from icl.training.stream import StepStream


def members(n: int, **model) -> list[ICLTransformer]:
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=16, max_points=8, **model)
    out = []
    for i in range(n):
        torch.manual_seed(i)
        m = ICLTransformer(cfg, 3)
        with torch.no_grad():  # distinct LayerNorm and bias values, so a mix-up would show
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
        out.append(m)
    return out


@pytest.mark.parametrize(
    "model",
    [{}, {"token_format": "interleaved_flag"}, {"positions": "sinusoidal"}, {"activation": "gelu_tanh"}],
    ids=["interleaved", "flag", "sinusoidal", "gelu_tanh"],
)
def test_stacked_model_computes_each_members_predictions_and_gradients(model):
    solo = members(3, **model)
    stacked = StackedTransformer.from_models(solo)
    torch.manual_seed(5)
    xs, ys = torch.randn(3, 4, 7, 3), torch.randn(3, 4, 7)
    preds = stacked(xs, ys)
    losses, _ = prefix_losses(preds, ys)
    losses.sum().backward()
    grads = dict(stacked.named_parameters())
    for m, model_m in enumerate(solo):
        p = model_m(xs[m], ys[m])
        torch.testing.assert_close(preds[m], p, rtol=1e-5, atol=1e-6)
        prefix_losses(p, ys[m])[0].backward()
        for name, param in model_m.named_parameters():
            torch.testing.assert_close(grads[name].grad[m], param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_members_come_back_out_exactly():
    solo = members(2)
    stacked = StackedTransformer.from_models(solo)
    for m, model_m in enumerate(solo):
        back = stacked.member(m).state_dict()
        assert back.keys() == model_m.state_dict().keys()
        assert all(torch.equal(back[k], v) for k, v in model_m.state_dict().items())


def adam_pair(decoupled: bool, lrs, wds):
    """A stacked Adam over 3 members and torch's own optimiser for each member's copy."""
    solo = members(3)
    stacked = StackedTransformer.from_models(solo)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    opts = [
        cls(m.parameters(), lr=lr, weight_decay=wd, betas=(0.9, 0.99), eps=1e-6)
        for m, lr, wd in zip(solo, lrs, wds, strict=True)
    ]
    opt = StackedAdam(stacked.parameters(), lrs, wds, (0.9, 0.99), 1e-6, decoupled, {})
    return solo, stacked, opts, opt


def set_grads(stacked, solo, step: int) -> None:
    gen = torch.Generator().manual_seed(step)
    for name, p in stacked.named_parameters():
        g = torch.randn(p.shape, generator=gen)
        p.grad.copy_(g)
        for m, model_m in enumerate(solo):
            dict(model_m.named_parameters())[name].grad = g[m].clone()


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
def test_stacked_adam_is_torch_adam_per_member(decoupled):
    lrs, wds = [1e-3, 3e-3, 1e-2], [0.0, 0.1, 0.01]
    solo, stacked, opts, opt = adam_pair(decoupled, lrs, wds)
    for step in range(20):
        set_grads(stacked, solo, step)
        opt.step()
        for o in opts:
            o.step()
    params = dict(stacked.named_parameters())
    for m, model_m in enumerate(solo):
        for name, p in model_m.named_parameters():
            torch.testing.assert_close(params[name][m], p, rtol=1e-5, atol=1e-7, msg=name)
    # the member's state is the solo optimiser's, in its layout
    mine, theirs = opt.member_state_dict(1), opts[1].state_dict()
    assert mine["state"].keys() == theirs["state"].keys()
    for i, s in theirs["state"].items():
        assert float(mine["state"][i]["step"]) == float(s["step"])
        torch.testing.assert_close(mine["state"][i]["exp_avg_sq"], s["exp_avg_sq"], rtol=1e-5, atol=1e-12)


def test_a_switched_off_member_is_left_exactly_as_it_was():
    solo, stacked, _, opt = adam_pair(False, [1e-3] * 3, [0.0] * 3)
    _, _, _, reference = adam_pair(False, [1e-3] * 3, [0.0] * 3)  # the same start, every member on
    for step in range(4):
        set_grads(stacked, solo, step)
        reference.grad.copy_(opt.grad)
        if step == 3:
            opt.grad[1] = float("nan")  # member 1's last step is non-finite: switched off
            opt.apply = torch.tensor([True, False, True])
            before = (opt.flat[1].clone(), opt.exp_avg[1].clone(), opt.exp_avg_sq[1].clone())
        opt.step()
        reference.step()
    assert torch.equal(opt.flat[1], before[0]) and torch.equal(opt.exp_avg[1], before[1])
    assert torch.equal(opt.exp_avg_sq[1], before[2])
    assert opt.steps[:, 0].tolist() == [4.0, 3.0, 4.0]
    for m in (0, 2):  # the others took their normal step
        torch.testing.assert_close(opt.flat[m], reference.flat[m], rtol=1e-6, atol=1e-8)
    assert opt.apply is None  # a switch holds for one step


def test_stacked_stream_yields_each_members_solo_batches_bitwise():
    cfgs = [
        load_config([], ["data.n_dims=4", "data.n_points=6", "data.batch_size=5", "seed=3"]),
        load_config(
            [],
            [
                "data.n_dims=4",
                "data.n_points=6",
                "data.batch_size=5",
                "seed=4",
                "data.mixture=[{name: sparse_linear, params: {nnz: 1}}]",
            ],
        ),
    ]
    samplers = [Sampler(c.data, c.seed) for c in cfgs]
    stream = StackedStepStream(samplers, 0)
    for step in (0, 7):
        _, xs, ys = stream.batch(step)
        for m, s in enumerate(samplers):
            _, x, y = StepStream(s, 0).batch(step)
            assert torch.equal(xs[m], x) and torch.equal(ys[m], y)


def test_grouping_keeps_shapes_apart_and_members_together():
    base = ["data.n_dims=4", "data.n_points=6"]
    a = load_config([], [*base, "seed=1", "train.lr=1e-3", "data.mixture=[{name: sparse_linear}]"])
    b = load_config([], [*base, "seed=2", "train.grad_clip=1.0", "eval.n_prompts=10"])
    c = load_config([], ["data.n_dims=5", "data.n_points=6"])
    assert shape_key(a) == shape_key(b) and differences([a, b]) == []
    assert "data.n_dims" in differences([a, c])
    d = copy.deepcopy(a)
    d.eval.every = 5  # periodic evaluation runs at the same steps for every member
    assert differences([a, d]) == ["eval.every"]
    fp16 = load_config([], [*base, "train.precision=16-mixed"])
    assert solo_only(fp16) and solo_only(a) is None
    items = [("a1", a), ("c", c), ("a2", a), ("b", b), ("fp16", fp16), ("a3", a), ("a4", b)]
    assert group(items, 16) == [["a1", "a2", "b", "a3", "a4"], ["c"], ["fp16"]]
    assert group(items, 2) == [["a1", "a2"], ["b", "a3"], ["a4"], ["c"], ["fp16"]]
    assert group(items, 1) == [["a1"], ["a2"], ["b"], ["a3"], ["a4"], ["c"], ["fp16"]]
    # two worker processes: every shape's runs in at least two ensembles where there are two runs
    assert group(items, 16, parts=2) == [["a1", "a2", "b"], ["a3", "a4"], ["c"], ["fp16"]]
