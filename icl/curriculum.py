"""Curriculum on active input dims, prompt length and mixture weights: a pure function of the
global step."""

from __future__ import annotations

import dataclasses
import math

from icl.errors import ICLError


@dataclasses.dataclass
class Ramp:
    """start, then + inc every ``interval`` steps, capped at ``end``.

    value(step) = min(end, start + inc * (step // interval)). ``interval = 0`` disables the ramp
    (value = end from step 0). Paper 2: dims 5 -> 20 (+1 every 2000), points 11 -> 41 (+2).
    """

    start: int = 0
    end: int = 0
    inc: int = 1
    interval: int = 0

    def value(self, step: int) -> int:
        if self.interval <= 0:
            return self.end
        return min(self.end, self.start + self.inc * (step // self.interval))

    def check(self, field: str) -> None:
        if self.interval < 0:
            raise ICLError(f"{field}.interval: got {self.interval}; allowed: an integer >= 0 (0 = no ramp)")
        if self.interval > 0 and not (1 <= self.start <= self.end and self.inc >= 1):
            raise ICLError(
                f"{field}: got start={self.start}, end={self.end}, inc={self.inc}; "
                "allowed: 1 <= start <= end and inc >= 1"
            )


@dataclasses.dataclass
class WeightRamp:
    """Mixture weights that move from ``start`` to the mixture's own weights (``data.mixture``).

    ``start`` is held for steps < ``hold``, then interpolated linearly over the next ``steps``
    steps; from ``hold + steps`` on, the mixture's weights apply. ``start = []`` disables it.
    Example: ``start: [0, 1], hold: 20000, steps: 5000`` trains on the second class alone for
    20k steps, then moves to the configured mixture by step 25k.
    """

    start: list[float] = dataclasses.field(default_factory=list)
    hold: int = 0
    steps: int = 0

    def check(self, final: list[float]) -> None:
        field = "data.curriculum.weights"
        if len(self.start) != len(final):
            raise ICLError(
                f"{field}.start: got {len(self.start)} weights; allowed: one per data.mixture entry ({len(final)})"
            )
        # Written so that NaN fails.
        if not (all(0 <= w < math.inf for w in self.start) and abs(sum(self.start) - 1.0) <= 1e-6):
            raise ICLError(f"{field}.start: got {list(self.start)}; allowed: non-negative numbers summing to 1")
        for name in ("hold", "steps"):
            if getattr(self, name) < 0:
                raise ICLError(f"{field}.{name}: got {getattr(self, name)}; allowed: an integer >= 0")

    def value(self, step: int, final: list[float]) -> list[float]:
        if not self.start:
            return list(final)
        if step < self.hold:
            return list(self.start)
        t = 1.0 if self.steps == 0 else min(1.0, (step - self.hold) / self.steps)
        return [(1 - t) * a + t * b for a, b in zip(self.start, final, strict=True)]


@dataclasses.dataclass
class CurriculumConfig:
    """``dims.end`` and ``points.end`` are filled from ``data.n_dims`` / ``data.n_points`` when
    left at 0, so a curriculum only needs its start, increment and interval. ``weights`` ramps
    the training mixture's weights (evaluation always uses the mixture's own)."""

    dims: Ramp = dataclasses.field(default_factory=Ramp)
    points: Ramp = dataclasses.field(default_factory=Ramp)
    weights: WeightRamp = dataclasses.field(default_factory=WeightRamp)


@dataclasses.dataclass(frozen=True)
class Curriculum:
    dims: Ramp
    points: Ramp
    weights: WeightRamp = dataclasses.field(default_factory=WeightRamp)
    final_weights: tuple[float, ...] = ()

    @classmethod
    def build(cls, cfg: CurriculumConfig, n_dims: int, n_points: int, weights: list[float] | None = None) -> Curriculum:
        dims = dataclasses.replace(cfg.dims, end=cfg.dims.end or n_dims)
        points = dataclasses.replace(cfg.points, end=cfg.points.end or n_points)
        dims.check("data.curriculum.dims")
        points.check("data.curriculum.points")
        if dims.end != n_dims:
            raise ICLError(f"data.curriculum.dims.end: got {dims.end}; allowed: 0 or data.n_dims ({n_dims})")
        if points.end != n_points:
            raise ICLError(f"data.curriculum.points.end: got {points.end}; allowed: 0 or data.n_points ({n_points})")
        final = list(weights or [])
        if cfg.weights.start:
            cfg.weights.check(final)
        return cls(dims, points, cfg.weights, tuple(final))

    def at(self, step: int) -> tuple[int, int]:
        """(active dims, points per prompt) at a global step."""
        return self.dims.value(step), self.points.value(step)

    def weights_at(self, step: int) -> list[float] | None:
        """The training mixture's weights at a global step; None without a weight ramp."""
        if not self.weights.start:
            return None
        return self.weights.value(step, list(self.final_weights))
