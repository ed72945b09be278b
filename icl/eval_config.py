"""The eval section of the config (EvalConfig) and the cap on prompts per scenario: what evaluation
runs, and with how many prompts, at the end of training, by `icl eval` and periodically. Values
only; the checks that need the baseline and suite registries are in icl/evaluation/checks.py."""

from __future__ import annotations

import dataclasses
from typing import Any

# Evaluation prompts per scenario (default 1000): the cap keeps a typo (three extra zeros) from
# starting hours of evaluation on a machine with the memory for it.
MAX_PROMPTS = 1_000_000


@dataclasses.dataclass
class EvalConfig:
    """Evaluation: at the end of training (suite ``in_distribution``), by ``icl eval``, and
    periodically during training (every ``every`` steps, 0 = never, on ``periodic_suite``
    with ``periodic_n_prompts`` prompts, logged as eval/<scenario>/<predictor>/mse@<k>)."""

    n_prompts: int = 1000
    baselines: list[str] = dataclasses.field(default_factory=lambda: ["least_squares", "averaging", "bayes"])
    seed: int = 1234  # evaluation sets are keyed by this seed in the EVAL domain
    table_k: int = 0  # k reported in sweep tables; 0 = min(16, prompt length - 1) as in paper 1
    sweep_k: int = 10  # in-context examples shown in 1-D prediction-sweep plots
    frequencies: list[float] = dataclasses.field(default_factory=lambda: [0.01, 0.1, 0.5, 1.0, 5.0])
    convex_coefs: list[float] = dataclasses.field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    )
    convex_pair: list[Any] = dataclasses.field(
        default_factory=lambda: [{"name": "dense_linear"}, {"name": "sinusoid", "params": {"freq": 1.0}}]
    )
    scales: list[float] = dataclasses.field(default_factory=lambda: [1 / 3, 0.5, 2.0, 3.0])
    label_noise: float = 0.2
    every: int = 0
    periodic_suite: str = "in_distribution"
    periodic_n_prompts: int = 200
    periodic_baselines: list[str] = dataclasses.field(default_factory=lambda: ["least_squares"])
