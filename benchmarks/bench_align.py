"""Time and peak memory of `icl align`'s alignment stage (preprocessing, every metric, the
permutation null) on synthetic features of a given shape: S sources of L layers x E dims (or
fingerprints of M dims for the algorithm sources), N prompts, P permutations. Model forward
passes are not included. Run: python benchmarks/bench_align.py [--checkpoints 1 --algorithms 4]"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from icl.analysis.align_run import DEFAULT_METRICS, AlignSettings, Source, align_sources


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoints", type=int, default=1, help="checkpoint sources of --layers x --width")
    p.add_argument("--algorithms", type=int, default=4, help="one-layer sources of --queries dims")
    p.add_argument("--layers", type=int, default=13)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--queries", type=int, default=32)
    p.add_argument("--n-prompts", type=int, default=1024)
    p.add_argument("--permutations", type=int, default=100)
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    n = args.n_prompts
    layers = [str(j) for j in range(args.layers)]
    sources = [
        Source(f"ckpt{i}", layers, [torch.randn(n, args.width, generator=g) for _ in layers])
        for i in range(args.checkpoints)
    ] + [Source(f"alg{i}", ["fp"], [torch.randn(n, args.queries, generator=g)]) for i in range(args.algorithms)]
    settings = AlignSettings(metrics=args.metrics.split(","), n_prompts=n, n_perm=args.permutations)
    start = time.perf_counter()
    times = {}

    def progress(line: str) -> None:
        times[line.split("]")[1].split(":")[0].strip()] = time.perf_counter() - start

    align_sources(sources, settings, seed=0, progress=progress)
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shape = f"{args.checkpoints} x ({args.layers} layers x {args.width}) + {args.algorithms} x {args.queries}"
    print(f"sources: {shape}; N = {n}, {args.permutations} permutations, {torch.get_num_threads()} thread(s)")
    last = 0.0
    for name, t in times.items():
        print(f"  {name}: {t - last:.1f} s")
        last = t
    print(f"alignment total {total:.1f} s, peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
