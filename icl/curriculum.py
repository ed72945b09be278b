"""Curriculum on active input dims and prompt length: a pure function of the global step."""

from __future__ import annotations

import dataclasses

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
class CurriculumConfig:
    """``dims.end`` and ``points.end`` are filled from ``data.n_dims`` / ``data.n_points`` when
    left at 0, so a curriculum only needs its start, increment and interval."""

    dims: Ramp = dataclasses.field(default_factory=Ramp)
    points: Ramp = dataclasses.field(default_factory=Ramp)


@dataclasses.dataclass(frozen=True)
class Curriculum:
    dims: Ramp
    points: Ramp

    @classmethod
    def build(cls, cfg: CurriculumConfig, n_dims: int, n_points: int) -> Curriculum:
        dims = dataclasses.replace(cfg.dims, end=cfg.dims.end or n_dims)
        points = dataclasses.replace(cfg.points, end=cfg.points.end or n_points)
        dims.check("data.curriculum.dims")
        points.check("data.curriculum.points")
        if dims.end != n_dims:
            raise ICLError(f"data.curriculum.dims.end: got {dims.end}; allowed: 0 or data.n_dims ({n_dims})")
        if points.end != n_points:
            raise ICLError(f"data.curriculum.points.end: got {points.end}; allowed: 0 or data.n_points ({n_points})")
        return cls(dims, points)

    def at(self, step: int) -> tuple[int, int]:
        """(active dims, points per prompt) at a global step."""
        return self.dims.value(step), self.points.value(step)
