"""Speed paths that need a compiler, a training run or a process of their own: the compiled model
is one graph and trains like the eager one (slow: torch.compile), device sampling trains to the
loader's weights, the flat optimiser clips under bf16 autocast, and keep_freed_memory stops the
page faults of every step."""

import subprocess
import sys

import pytest
import torch
from support import TINY, loss_after_steps, module

from icl.config import load_config
from icl.model import ICLTransformer, ModelConfig
from icl.runs import prepare_new_run, train


@pytest.mark.slow
@pytest.mark.parametrize("n_points", [11, 41])
def test_the_model_compiles_to_one_graph(n_points):
    """A graph break (e.g. an untraceable call in a block) splits the compiled model into
    per-block frames, which recompile per block and fall back to eager past dynamo's limit."""
    model = ICLTransformer(ModelConfig(n_layer=2, n_head=2, n_embd=16, max_points=41), n_dims=3)
    explained = torch._dynamo.explain(model.forward)(torch.randn(2, n_points, 3), torch.randn(2, n_points))
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.slow
def test_compiled_and_eager_give_the_same_losses():
    compiled, eager = module("train.compile=true"), module("train.compile=false")
    assert compiled.train_forward is not compiled.model
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged
    torch.testing.assert_close(
        torch.tensor(loss_after_steps(compiled, 2)), torch.tensor(loss_after_steps(eager, 2)), rtol=1e-4, atol=1e-6
    )


def test_device_sampling_trains_to_the_same_weights(tmp_path):
    states = []
    for mode in ("loader", "device"):
        cfg = load_config([], [*TINY, "train.steps=3", f"train.sampling={mode}"])
        run_dir = prepare_new_run(cfg, tmp_path / mode, overwrite=False)
        train(cfg, run_dir, evaluate=False)
        states.append(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k



def test_the_flat_optimiser_clips_under_bf16_autocast_as_the_plain_one(tmp_path):
    """Lightning refuses to clip for an optimiser that declares it undoes loss scaling itself (a
    fused torch optimiser does), under any mixed precision; the flat optimiser declares it does
    not, so bf16-mixed with train.grad_clip trains, and clips as the per-parameter Adam does."""
    states = []
    for fused in ("true", "false"):
        overrides = ["train.steps=3", "train.precision=bf16-mixed", "train.grad_clip=0.01"]
        cfg = load_config([], [*TINY, *overrides, f"train.fused_optimizer={fused}"])
        run_dir = prepare_new_run(cfg, tmp_path / fused, overwrite=False)
        train(cfg, run_dir, evaluate=False)
        states.append(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"])
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-5, atol=1e-6, msg=k)

_FAULTS_SCRIPT = """
import resource, torch
from icl.speed import keep_freed_memory

def faults_per_step():
    faults = []
    for step in range(6):  # one "step": 2 activations of 40 MiB written, then freed
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        acts = [torch.empty(10 << 20).fill_(1.0) for _ in range(2)]
        del acts
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return min(faults[2:])

print(faults_per_step(), keep_freed_memory(), faults_per_step())
"""


# Slow tier: it counts the kernel's page faults, which a proactive reclaimer (DAMON, on some
# machines of this kind) can add back between two "steps" whatever the allocator keeps.
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_keeping_freed_memory_stops_the_page_faults_of_every_step():
    """By default glibc maps blocks above 32 MiB (its adaptive threshold's ceiling; smaller blocks
    fault or not depending on what the process freed before) afresh at every allocation, so every
    step faults its pages in again: 2 x 40 MiB = 20480 pages of 4 KiB, at least 40 if the kernel
    backs them with 2 MiB pages. Once train.keep_freed_memory applies, they are reused."""
    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, check=True)
    default, applied, kept = (int(v) if v.isdigit() else v for v in out.stdout.split())
    assert applied == "True"
    assert default >= 40
    assert kept * 10 < default
