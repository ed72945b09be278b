"""Measurements on the quick-start config beyond the bare step: the full Lightning loop's cost per
step, the end-of-training evaluation's wall time, and bf16 autocast against fp32."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from icl.bench.cases import QUICKSTART, batches
from icl.bench.sides import our_side
from icl.bench.timing import time_sides
from icl.config import load_config, to_dict
from icl.evaluation.run import evaluate_suite
from icl.runs import prepare_new_run, quiet_lightning, train
from icl.sampling import Sampler
from icl.training.module import ICLModule
from icl.training.stream import StepStream


def loop_overhead(args) -> dict[str, Any]:
    """Per-step cost of the full Lightning loop (sampling, logging, guards, checkpoint hooks)
    on the quick-start config: (time of an S2-step run - time of an S1-step run) / (S2 - S1),
    so the Trainer's set-up and the final checkpoint cancel out. Compare with the bare step."""
    quiet_lightning()
    cfg_args = ["train.progress_bar=false", "train.checkpoint_every=100000", "train.log_every=50", "eval.every=0"]
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (20, 20 + args.loop_steps):
            cfg = load_config([QUICKSTART], [*cfg_args, f"train.steps={steps}"])
            run_dir = prepare_new_run(cfg, Path(tmp) / f"s{steps}", overwrite=False)
            start = time.perf_counter()
            train(cfg, run_dir, evaluate=False)
            times[steps] = time.perf_counter() - start
    per_step = (times[20 + args.loop_steps] - times[20]) / args.loop_steps
    cfg = load_config([QUICKSTART], cfg_args)
    bare = time_sides([our_side(cfg)], batches(cfg, 4), args.repeats, args.target_s)["ours"]["ms_per_step"]
    return {"lightning_ms_per_step": per_step * 1e3, "bare_step_ms": bare, "steps": args.loop_steps}


def eval_wall_time() -> dict[str, Any]:
    """Wall time of the quick-start's end-of-training evaluation (suite in_distribution with the
    config's prompts and baselines) on an untrained model: the work does not depend on the weights."""
    cfg = load_config([QUICKSTART], [])
    model = ICLModule(to_dict(cfg)).model
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        evaluate_suite(model, cfg, "in_distribution", Path(tmp) / "eval")
        wall = time.perf_counter() - start
    return {
        "suite": "in_distribution",
        "n_prompts": cfg.eval.n_prompts,
        "baselines": list(cfg.eval.baselines),
        "wall_s": wall,
    }


def bf16_report(args) -> dict[str, Any]:
    """bf16 autocast on this CPU: step time against fp32 (interleaved) at the quick-start shape, and
    the loss of a short quick-start run from the same initialisation on the same batches."""
    cfg = load_config([QUICKSTART], [])
    fp32, bf16 = our_side(cfg, "fp32"), our_side(cfg, "bf16_autocast", torch.bfloat16)
    timing = time_sides([fp32, bf16], batches(cfg, 4), args.repeats, args.target_s)
    timing.pop("_matmul_gflops")
    traces = {}
    stream = StepStream(Sampler(cfg.data, cfg.seed), 0)
    for dtype in (None, torch.bfloat16):
        side = our_side(cfg, "run", dtype)
        traces["bf16_autocast" if dtype else "fp32"] = torch.stack(
            [side.step(*stream.batch(s)[1:]) for s in range(args.bf16_steps)]
        )
    rel = (traces["bf16_autocast"] - traces["fp32"]).abs() / traces["fp32"]
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {
        "cpu_has_avx512_bf16": "avx512_bf16" in cpu_flags,
        "cpu_has_amx_bf16": "amx_bf16" in cpu_flags,
        "ms_per_step": {k: v["ms_per_step"] for k, v in timing.items()},
        "steps": args.bf16_steps,
        "loss_last_50_steps": {k: t[-50:].mean().item() for k, t in traces.items()},
        "loss_first_10_steps": {k: t[:10].mean().item() for k, t in traces.items()},
        "step_loss_rel_diff_mean": rel.mean().item(),
        "step_loss_rel_diff_max": rel.max().item(),
    }
