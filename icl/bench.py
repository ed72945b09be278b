"""`icl bench`: training-step throughput of the ICL transformer against the same-size HuggingFace
GPT-2 stack of paper 2's code, interleaved in one process; sampling cost, Lightning loop
overhead, evaluation wall time, peak memory and bf16 autocast. Prints tables, writes JSON."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from icl.config import Config, load_config, to_dict
from icl.errors import ICLError
from icl.sampling import Sampler
from icl.training import ICLModule, StepStream

PRESETS = {"tiny": (3, 2, 64), "small": (6, 4, 128), "standard": (12, 8, 256)}
SHAPES = {"paper2": (20, 41), "curriculum_start": (5, 11)}  # (d, points): paper 2's end and start
BATCH = 64
QUICKSTART = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"


@dataclasses.dataclass
class Case:
    preset: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.preset}@{self.shape}"

    def config(self, *overrides: str) -> Config:
        L, H, E = PRESETS[self.preset]
        d, n = SHAPES[self.shape]
        return load_config(
            [],
            [
                f"model.n_layer={L}",
                f"model.n_head={H}",
                f"model.n_embd={E}",
                f"model.max_points={n}",
                f"data.n_dims={d}",
                f"data.n_points={n}",
                f"data.batch_size={BATCH}",
                "train.progress_bar=false",
                *overrides,
            ],
        )


def train_flops(cfg: Config) -> float:
    """Nominal FLOPs of one training step (forward + backward = 3x forward), the same count for
    both stacks: read-in on all T = 2N padded tokens, per layer 24 T E^2 for the four matmuls and
    4 T^2 E for scores and weighted values over the full T x T (causal halving not credited),
    read-out at the N x tokens. Work our model skips (the last block's y tokens) is not subtracted."""
    m, d = cfg.model, cfg.data
    T, E = 2 * d.n_points, m.n_embd
    forward = 2 * T * d.n_dims * E + m.n_layer * (24 * T * E * E + 4 * T * T * E) + 2 * d.n_points * E
    return 3.0 * forward * d.batch_size


def matmul_gflops(n: int = 1024, repeats: int = 3) -> float:
    """This machine's dense fp32 matmul rate now: median over ``repeats`` of an n x n x n product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


class ReferenceModel(nn.Module):
    """Paper 2's stack: read-in Linear(D, E) on tokens [x, (y, 0, ..., 0)], HuggingFace
    ``GPT2Model`` (built from a config, never downloaded; dropout 0, no cache) and read-out
    Linear(E, 1), read at the x tokens."""

    def __init__(self, cfg: Config) -> None:
        from transformers import GPT2Config, GPT2Model

        super().__init__()
        m, D, N = cfg.model, cfg.data.n_dims, cfg.data.n_points
        gpt = GPT2Config(
            n_positions=2 * N,
            n_embd=m.n_embd,
            n_layer=m.n_layer,
            n_head=m.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
        )
        self.read_in = nn.Linear(D, m.n_embd)
        self.backbone = GPT2Model(gpt)
        self.read_out = nn.Linear(m.n_embd, 1)

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        B, N, D = xs.shape
        y_tokens = torch.zeros_like(xs)
        y_tokens[..., 0] = ys
        tokens = torch.stack([xs, y_tokens], dim=2).reshape(B, 2 * N, D)
        h = self.backbone(inputs_embeds=self.read_in(tokens)).last_hidden_state
        return self.read_out(h)[:, 0::2, 0]


def reference_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


@dataclasses.dataclass
class Side:
    """One way of running the training step; ``step(xs, ys)`` does forward, loss, backward, update."""

    name: str
    step: Callable[[Tensor, Tensor], Tensor]
    params: int


def our_side(cfg: Config, name: str = "ours", autocast: torch.dtype | None = None) -> Side:
    module = ICLModule(to_dict(cfg))
    optim = module.configure_optimizers()
    opt, sched = optim["optimizer"], optim["lr_scheduler"]["scheduler"]

    def step(xs: Tensor, ys: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            preds = module.train_forward(xs, ys)
        loss = ((preds.float() - ys) ** 2).mean(dim=0).mean()  # as ICLModule.training_step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()  # per step, as Lightning does with interval "step"
        return loss.detach()

    return Side(name, step, module.model.num_params())


def reference_side(cfg: Config) -> Side:
    """The reference with the optimiser ours uses (same class and settings), seeded alike."""
    tcfg = cfg.train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = ReferenceModel(cfg)
    opt = torch.optim.Adam(
        model.parameters(), lr=tcfg.lr, betas=tuple(tcfg.betas), eps=tcfg.eps, fused=tcfg.fused_optimizer or None
    )

    def step(xs: Tensor, ys: Tensor) -> Tensor:
        loss = ((model(xs, ys) - ys) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return Side("reference", step, sum(p.numel() for p in model.parameters()))


def batches(cfg: Config, n: int) -> list[tuple[Tensor, Tensor]]:
    stream = StepStream(Sampler(cfg.data, cfg.seed), 0)
    return [stream.batch(s)[1:] for s in range(n)]


def time_sides(sides: list[Side], data, repeats: int, target_s: float) -> dict[str, dict[str, Any]]:
    """Median per-step wall, user and system time of each side, the sides alternating within
    every repeat (order flipped each repeat) so that load from other processes hits all alike;
    the matmul rate is re-measured in every repeat."""
    first: dict[str, float] = {}
    for side in sides:  # warm-up; the first call of a compiled side includes its compilation
        start = time.perf_counter()
        side.step(*data[0])
        first[side.name] = time.perf_counter() - start
        side.step(*data[1 % len(data)])
    per_repeat: dict[str, float] = {}
    for side in sides:
        start = time.perf_counter()
        side.step(*data[0])
        per_repeat[side.name] = max(1, round(target_s / max(time.perf_counter() - start, 1e-6)))
    rec: dict[str, dict[str, list[float]]] = {s.name: {"wall": [], "user": [], "sys": []} for s in sides}
    mm = []
    for r in range(repeats):
        mm.append(matmul_gflops())
        for side in sides if r % 2 == 0 else sides[::-1]:
            k = per_repeat[side.name]
            t0, c0 = time.perf_counter(), os.times()
            for i in range(k):
                side.step(*data[i % len(data)])
            t1, c1 = time.perf_counter(), os.times()
            rec[side.name]["wall"].append((t1 - t0) / k)
            rec[side.name]["user"].append((c1.user - c0.user) / k)
            rec[side.name]["sys"].append((c1.system - c0.system) / k)
    out = {}
    for side in sides:
        r = rec[side.name]
        wall = statistics.median(r["wall"])
        out[side.name] = {
            "ms_per_step": wall * 1e3,
            "ms_per_step_min": min(r["wall"]) * 1e3,
            "user_ms_per_step": statistics.median(r["user"]) * 1e3,
            "sys_ms_per_step": statistics.median(r["sys"]) * 1e3,
            "first_step_s": first[side.name],
            "steps_per_repeat": per_repeat[side.name],
            "params": side.params,
        }
    return out | {"_matmul_gflops": statistics.median(mm)}


def sampling_ms(cfg: Config, n: int = 20) -> float:
    sampler = Sampler(cfg.data, cfg.seed)
    sampler.sample_batch(0)
    times = []
    for step in range(n):
        start = time.perf_counter()
        sampler.sample_batch(step)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ICLError(f"/proc/self/status has no {field}")


def _peak_memory_child(case: tuple[str, str], side: str, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    if reference_available():
        import transformers  # noqa: F401  (imported in both children: its modules are not charged to a side)
    cfg = Case(*case).config()
    data = batches(cfg, 2)
    base = _status_kib("VmRSS")
    s = reference_side(cfg) if side == "reference" else our_side(cfg)
    for i in range(2):
        s.step(*data[i])
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    for i in range(3):
        s.step(*data[i % 2])
    queue.put(_status_kib("VmHWM") - base)


def peak_memory_mib(case: Case, side: str, threads: int) -> float | None:
    """Peak resident memory of steady-state training steps (VmHWM over 3 steps after 2 warm-up
    steps) minus the RSS before the model was built, in a fresh process per side: weights,
    gradients, optimiser state, the activation peak, allocator caching and library code touched
    by the step. Linux only (None elsewhere)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_memory_child, args=((case.preset, case.shape), side, threads, queue))
    proc.start()
    proc.join()
    return queue.get() / 1024 if proc.exitcode == 0 and not queue.empty() else None


def bench_case(case: Case, args, with_reference: bool) -> dict[str, Any]:
    cfg = case.config()
    sides = [our_side(cfg, "ours")]
    if args.compile:
        sides.append(our_side(case.config("train.compile=true"), "ours_compiled"))
    if with_reference:
        sides.append(reference_side(cfg))
    data = batches(cfg, 4)
    timing = time_sides(sides, data, args.repeats, args.target_s)
    mm = timing.pop("_matmul_gflops")
    flops = train_flops(cfg)
    rec: dict[str, Any] = {"case": case.name, "flops_per_step": flops, "matmul_gflops": mm, "sides": timing}
    for t in timing.values():
        t["samples_per_s"] = BATCH / (t["ms_per_step"] / 1e3)
        t["gflops"] = flops / (t["ms_per_step"] / 1e3) / 1e9
        t["of_matmul"] = t["gflops"] / mm
    if "ours_compiled" in timing:
        c = timing["ours_compiled"]
        c["compile_s"] = max(0.0, c["first_step_s"] - c["ms_per_step"] / 1e3)
    if with_reference:
        ref = timing["reference"]["ms_per_step"]
        for t in timing.values():
            t["speedup_vs_reference"] = ref / t["ms_per_step"]
    rec["sampling_ms"] = sampling_ms(cfg)
    rec["sampling_fraction"] = rec["sampling_ms"] / timing["ours"]["ms_per_step"]
    if args.memory:
        names = ["ours"] + (["reference"] if with_reference else [])
        rec["peak_memory_mib"] = {n: peak_memory_mib(case, n, torch.get_num_threads()) for n in names}
    return rec


def loop_overhead(args) -> dict[str, Any]:
    """Per-step cost of the full Lightning loop (sampling, logging, guards, checkpoint hooks)
    on the quick-start config: (time of an S2-step run - time of an S1-step run) / (S2 - S1),
    so the Trainer's set-up and the final checkpoint cancel out. Compare with the bare step."""
    from icl.runs import prepare_new_run, quiet_lightning, train

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
    from icl.evaluation.run import evaluate_suite

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


def _fmt_table(records: list[dict[str, Any]]) -> str:
    head = (
        f"{'case':<26}{'side':<15}{'ms/step':>9}{'samples/s':>11}{'GFLOP/s':>9}{'/matmul':>9}"
        f"{'user ms':>9}{'sys ms':>8}{'vs ref':>8}{'sampling':>10}{'mem MiB':>9}"
    )
    lines = [head, "-" * len(head)]
    for rec in records:
        for name, t in rec["sides"].items():
            mem = (rec.get("peak_memory_mib") or {}).get(name)
            sp = t.get("speedup_vs_reference")
            lines.append(
                f"{rec['case']:<26}{name:<15}{t['ms_per_step']:>9.1f}{t['samples_per_s']:>11.0f}{t['gflops']:>9.1f}"
                f"{t['of_matmul']:>9.2f}{t['user_ms_per_step']:>9.1f}{t['sys_ms_per_step']:>8.1f}"
                + (f"{sp:>7.2f}x" if sp else f"{'-':>8}")
                + (f"{rec['sampling_fraction']:>9.1%}" if name == "ours" else f"{'':>10}")
                + (f"{mem:>9.1f}" if mem is not None else f"{'':>9}")
            )
        lines.append(f"{'':<26}matmul rate {rec['matmul_gflops']:.1f} GFLOP/s in this case's repeats")
    return "\n".join(lines)


def markdown_table(result: dict[str, Any]) -> str:
    """The throughput table as Markdown (for the README and docs/performance.md)."""
    lines = [
        "| case | side | ms/step | samples/s | GFLOP/s | of matmul rate | vs reference | peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rec in result["cases"]:
        for name, t in rec["sides"].items():
            mem = (rec.get("peak_memory_mib") or {}).get(name)
            sp = t.get("speedup_vs_reference")
            lines.append(
                f"| {rec['case']} | {name} | {t['ms_per_step']:.0f} | {t['samples_per_s']:.0f} | {t['gflops']:.1f} | "
                f"{t['of_matmul']:.2f} | {f'{sp:.2f}x' if sp else '-'} | {f'{mem:.0f}' if mem is not None else '-'} |"
            )
    return "\n".join(lines) + "\n"


def environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_before": os.getloadavg(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def parse_cases(presets: str, shapes: str) -> list[Case]:
    cases = []
    for p in [x for x in presets.split(",") if x]:
        if p not in PRESETS:
            raise ICLError(f"--presets: got {p!r}; allowed: {', '.join(PRESETS)}")
        for s in [x for x in shapes.split(",") if x]:
            if s not in SHAPES:
                raise ICLError(f"--shapes: got {s!r}; allowed: {', '.join(SHAPES)}")
            cases.append(Case(p, s))
    if not cases:
        raise ICLError("--presets/--shapes: nothing to run; allowed: e.g. --presets tiny,small --shapes paper2")
    return cases


def run(args) -> dict[str, Any]:
    if args.repeats < 1:
        raise ICLError(f"--repeats: got {args.repeats}; allowed: an integer >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = parse_cases(args.presets, args.shapes)
    with_reference = args.reference and reference_available()
    if args.reference and not with_reference:
        print(
            "icl bench: transformers is not installed, skipping the HuggingFace reference "
            "(install it with: pip install -e '.[bench]')",
            file=sys.stderr,
        )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"environment": environment(), "cases": []}
    if with_reference:
        import transformers

        result["environment"]["transformers"] = transformers.__version__
        result["environment"]["reference_attention"] = ReferenceModel(
            cases[0].config()
        ).backbone.config._attn_implementation
    for case in cases:
        print(f"[bench] {case.name} ...", file=sys.stderr, flush=True)
        result["cases"].append(bench_case(case, args, with_reference))
        _write(out_dir, result)
    print(_fmt_table(result["cases"]))
    if args.loop:
        print("[bench] Lightning loop overhead (quick-start) ...", file=sys.stderr, flush=True)
        result["loop"] = loop_overhead(args)
        lo = result["loop"]
        print(
            f"quick-start full Lightning loop: {lo['lightning_ms_per_step']:.1f} ms/step "
            f"(bare step {lo['bare_step_ms']:.1f} ms)"
        )
    if args.eval:
        print("[bench] evaluation suite (quick-start) ...", file=sys.stderr, flush=True)
        result["eval"] = eval_wall_time()
        ev = result["eval"]
        print(
            f"evaluation suite {ev['suite']} ({ev['n_prompts']} prompts, "
            f"{', '.join(ev['baselines'])}): {ev['wall_s']:.1f} s"
        )
    if args.bf16:
        print("[bench] bf16 autocast (quick-start) ...", file=sys.stderr, flush=True)
        result["bf16"] = bf16_report(args)
        b = result["bf16"]
        print(
            f"bf16 autocast (CPU avx512_bf16: {b['cpu_has_avx512_bf16']}): "
            f"{b['ms_per_step']['bf16_autocast']:.1f} ms/step vs fp32 {b['ms_per_step']['fp32']:.1f}; "
            f"loss over the first 10 / last 50 of {b['steps']} steps: bf16 "
            f"{b['loss_first_10_steps']['bf16_autocast']:.5f} / {b['loss_last_50_steps']['bf16_autocast']:.5f}, "
            f"fp32 {b['loss_first_10_steps']['fp32']:.5f} / {b['loss_last_50_steps']['fp32']:.5f}; "
            f"per-step |bf16 - fp32| / fp32: mean {b['step_loss_rel_diff_mean']:.1e}, "
            f"max {b['step_loss_rel_diff_max']:.1e}"
        )
    result["environment"]["load_avg_after"] = os.getloadavg()
    path = _write(out_dir, result)
    print(f"written: {path}")
    return result


def _write(out_dir: Path, result: dict[str, Any]) -> Path:
    path = out_dir / "bench.json"
    path.write_text(json.dumps(result, indent=2))
    (out_dir / "bench.md").write_text(markdown_table(result))
    return path
