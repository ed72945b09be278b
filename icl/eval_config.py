"""The eval section of the config (EvalConfig) and the cap on prompts per scenario: what evaluation
runs, and with how many prompts, at the end of training, by `icl eval` and periodically; and which
config keys `icl eval RUN key=value` may override. Values only; the checks that need the baseline
and suite registries are in icl/evaluation/checks.py."""

from __future__ import annotations

import dataclasses
from typing import Any

from icl.errors import ICLError

# Evaluation prompts per scenario (default 1000): the cap keeps a typo (three extra zeros) from
# starting hours of evaluation on a machine with the memory for it.
MAX_PROMPTS = 1_000_000
YSCALES = ("auto", "linear", "log")  # figures' y axis (icl/figures.py)


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
    yscale: str = "auto"  # figures' y axis: auto (log where curves span > 2 decades), linear or log
    # Also record, per scenario, the model's agreement with each baseline (mean squared prediction
    # difference per k, icl/evaluation/agreement.py) as "agreement" in its JSON: costs one more pass.
    agreement: bool = False


def check_eval_overrides(items: list[str]) -> list[str]:
    """``key=value`` items of `icl eval`: the eval section's fields and ``imports`` (user modules
    adding scenarios, suites or baselines) may change; keys that would change the trained model or
    its training problem (model.*, data.*, train.*, seed) are refused. Values are checked when the
    overrides are applied to the run's config (icl.config.load_config)."""
    fields = [f.name for f in dataclasses.fields(EvalConfig)]
    allowed = f"eval.<key> ({', '.join(fields)}) and imports=[...]"
    for item in items:
        key, eq, _value = item.partition("=")
        section, _, field = key.partition(".")
        if not eq or not key:
            raise ICLError(f"unrecognized arguments: {item}; allowed after the run: key=value overrides of {allowed}")
        if section == "model":
            raise ICLError(
                f"override {item!r}: model keys would change the trained model; allowed at evaluation: {allowed}"
            )
        if key == "imports" or (section == "eval" and field.partition(".")[0] in fields):
            continue
        if section == "eval":
            raise ICLError(f"override {item!r}: unknown key {field!r}; allowed keys here: {', '.join(fields)}")
        raise ICLError(f"override {item!r}: not an evaluation setting; allowed at evaluation: {allowed}")
    return list(items)
