"""Checks of the eval section that need the baseline and suite registries, run by the run layer
before a run directory is created or a step is trained."""

from __future__ import annotations

from icl.baselines import BASELINES
from icl.config import Config
from icl.errors import ICLError
from icl.evaluation.scenarios import build_suite
from icl.sampling import PretrainMixture


def check_eval_config(cfg: Config, mixture: PretrainMixture) -> None:
    """Names that training uses only later (periodic and final evaluation), checked now, before a
    run directory is created or a step is trained."""
    for field in ("baselines", "periodic_baselines"):
        for name in getattr(cfg.eval, field):
            if name.partition(":")[0] not in BASELINES:
                allowed = ", ".join(sorted(set(BASELINES) - {"checkpoint"}))
                raise ICLError(f"eval.{field}: unknown baseline {name!r}; allowed: {allowed}, checkpoint:PATH")
    if cfg.eval.every:
        try:
            build_suite(cfg.eval.periodic_suite, cfg, mixture)
        except ICLError as e:
            raise ICLError(f"eval.periodic_suite: {e}") from None
