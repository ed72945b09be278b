"""Training throughput of the ICL transformer against the same-size HuggingFace GPT-2 stack of
paper 2's code: the same measurement as `icl bench` (see docs/performance.md), runnable as a
script. Prints figures only (no assertions about time).

    python benchmarks/bench_train.py [--presets tiny,small,standard] [--shapes paper2,curriculum_start]
        [--repeats 5] [--threads N] [--no-compile] [--no-reference] [--out runs/bench]
"""

from __future__ import annotations

import sys

from icl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
