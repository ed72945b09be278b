"""The run config: section dataclasses (defined beside their code) composed into ``Config``;
merged from defaults, YAML files and ``key=value`` overrides; validated once, when built."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from icl.errors import ICLError
from icl.fileio import atomic_write
from icl.model import ModelConfig
from icl.sampling import DataConfig, Sampler
from icl.training import TrainConfig


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


@dataclasses.dataclass
class Config:
    seed: int = 0
    name: str = ""  # run name; default: the last YAML file's stem
    out_dir: str = "runs"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


def _one_line(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


def load_config(files: list[str | Path] = (), overrides: list[str] = ()) -> Config:
    """Defaults <- each YAML file (left to right) <- ``key=value`` overrides, then validate."""
    merged = OmegaConf.structured(Config)
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ICLError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ICLError(f"{path}: not valid YAML ({_one_line(e)})") from None
        if not isinstance(loaded, dict):
            raise ICLError(f"{path}: top level must be a mapping of config sections")
        merged = _merge(merged, OmegaConf.create(loaded), str(path))
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ICLError(f"override {item!r}: allowed form is key=value, e.g. train.lr=3e-4")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        _guard(functools.partial(OmegaConf.update, merged, key, parsed, merge=True), f"override {item!r}")
    cfg = OmegaConf.to_object(merged)
    if not cfg.name and files:
        cfg.name = Path(files[-1]).stem
    validate(cfg)
    return cfg


def _merge(base: DictConfig, other: DictConfig, where: str) -> DictConfig:
    return _guard(lambda: OmegaConf.merge(base, other), where)


def _guard(fn, where: str):
    """Run an OmegaConf operation, turning its errors into one-line ICLErrors."""
    try:
        return fn()
    except (ConfigKeyError, ConfigAttributeError) as e:
        owner = getattr(e, "object_type", None)
        allowed = (
            ", ".join(f.name for f in dataclasses.fields(owner))
            if dataclasses.is_dataclass(owner)
            else "see docs/config.md"
        )
        raise ICLError(f"{where}: unknown key {e.full_key or e.key!r}; allowed keys here: {allowed}") from None
    except OmegaConfBaseException as e:
        raise ICLError(f"{where}: {e.full_key or ''}: {_one_line(e)}") from None


def validate(cfg: Config) -> None:
    """Cross-field rules, checked once when the config is built."""
    if not cfg.name.replace("-", "").replace("_", "").replace(".", "").isalnum() and cfg.name:
        raise ICLError(f"name: got {cfg.name!r}; allowed: letters, digits, '-', '_', '.'")
    cfg.model.check()
    cfg.train.check()
    sampler = Sampler(cfg.data, cfg.seed)  # builds and checks the mixture, inputs and curriculum
    if cfg.data.n_points > cfg.model.max_points:
        raise ICLError(
            f"data.n_points: got {cfg.data.n_points}; allowed: at most model.max_points ({cfg.model.max_points})"
        )
    if cfg.eval.n_prompts < 1:
        raise ICLError(f"eval.n_prompts: got {cfg.eval.n_prompts}; allowed: an integer >= 1")
    _check_eval(cfg, sampler.mixture)


def _check_eval(cfg: Config, mixture) -> None:
    """Names that training uses only later (periodic and final evaluation), checked now, before a
    run directory is created or a step is trained."""
    from icl.baselines import BASELINES  # lazy: these modules import this one
    from icl.evaluation.run import BAYES
    from icl.evaluation.scenarios import build_suite

    for field in ("baselines", "periodic_baselines"):
        for name in getattr(cfg.eval, field):
            if name not in BAYES and name.partition(":")[0] not in BASELINES:
                allowed = ", ".join(sorted({*BASELINES, *BAYES} - {"checkpoint"}))
                raise ICLError(f"eval.{field}: unknown baseline {name!r}; allowed: {allowed}, checkpoint:PATH")
    if cfg.eval.every < 0:
        raise ICLError(f"eval.every: got {cfg.eval.every}; allowed: an integer >= 0 (0 = no periodic evaluation)")
    if cfg.eval.every:
        if cfg.eval.periodic_n_prompts < 1:
            raise ICLError(f"eval.periodic_n_prompts: got {cfg.eval.periodic_n_prompts}; allowed: an integer >= 1")
        try:
            build_suite(cfg.eval.periodic_suite, cfg, mixture)
        except ICLError as e:
            raise ICLError(f"eval.periodic_suite: {e}") from None


def to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def from_dict(d: dict[str, Any]) -> Config:
    cfg = OmegaConf.to_object(_merge(OmegaConf.structured(Config), OmegaConf.create(d), "config"))
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    atomic_write(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))
