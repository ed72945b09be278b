"""What `icl bench` measures: cases (a model preset of configs/model/ at one prompt shape, batch 64),
their configs, the pre-drawn batches they train on, and the nominal FLOPs of one training step."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from torch import Tensor

from icl.config import Config, load_config
from icl.errors import ICLError
from icl.sampling import Sampler
from icl.training.stream import StepStream

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QUICKSTART = CONFIGS / "quickstart.yaml"
SHAPES = {"paper2": (20, 41), "curriculum_start": (5, 11)}  # (d, points): paper 2's end and start
BATCH = 64


@functools.cache
def presets() -> dict[str, Path]:
    """The model presets, ``configs/model/<name>.yaml`` (the files `icl train` takes), smallest first."""
    files = sorted((CONFIGS / "model").glob("*.yaml"))
    models = {f.stem: load_config([f]).model for f in files}
    return {f.stem: f for f in sorted(files, key=lambda f: models[f.stem].n_layer * models[f.stem].n_embd ** 2)}


@dataclasses.dataclass
class Case:
    preset: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.preset}@{self.shape}"

    def config(self, *overrides: str) -> Config:
        """The preset's YAML at this shape and batch size, then ``overrides``."""
        d, n = SHAPES[self.shape]
        return load_config(
            [presets()[self.preset]],
            [
                f"model.max_points={n}",
                f"data.n_dims={d}",
                f"data.n_points={n}",
                f"data.batch_size={BATCH}",
                "train.progress_bar=false",
                *overrides,
            ],
        )


def parse_cases(preset_list: str, shape_list: str) -> list[Case]:
    """The cases of ``--presets`` x ``--shapes`` (comma-separated names)."""
    known = presets()
    cases = []
    for p in [x for x in preset_list.split(",") if x]:
        if p not in known:
            raise ICLError(f"--presets: got {p!r}; allowed: {', '.join(known)}")
        for s in [x for x in shape_list.split(",") if x]:
            if s not in SHAPES:
                raise ICLError(f"--shapes: got {s!r}; allowed: {', '.join(SHAPES)}")
            cases.append(Case(p, s))
    if not cases:
        raise ICLError("--presets/--shapes: nothing to run; allowed: e.g. --presets tiny,small --shapes paper2")
    return cases


def batches(cfg: Config, n: int) -> list[tuple[Tensor, Tensor]]:
    """The (xs, ys) of the first ``n`` training steps of ``cfg``."""
    stream = StepStream(Sampler(cfg.data, cfg.seed), 0)
    return [stream.batch(s)[1:] for s in range(n)]


def train_flops(cfg: Config) -> float:
    """Nominal FLOPs of one training step (forward + backward = 3x forward), the same count for
    both stacks: read-in on all T = 2N padded tokens, per layer 24 T E^2 for the four matmuls and
    4 T^2 E for scores and weighted values over the full T x T (causal halving not credited),
    read-out at the N x tokens. Work our model skips (the last y token, the last block's y tokens)
    is not subtracted: it counts as speed."""
    m, d = cfg.model, cfg.data
    T, E = 2 * d.n_points, m.n_embd
    forward = 2 * T * d.n_dims * E + m.n_layer * (24 * T * E * E + 4 * T * T * E) + 2 * d.n_points * E
    return 3.0 * forward * d.batch_size
