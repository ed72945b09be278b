"""The run config: section dataclasses (defined beside their code) composed into ``Config``;
merged from defaults, YAML files and ``key=value`` overrides; validated once, when built; saved,
read back and flattened to dotted keys. At the bottom of the import graph: no Lightning, no
evaluation stack, no baselines (their name checks are icl/evaluation/checks.py's); user modules
(``imports``) are imported by path (icl/plugins.py) and import the registries themselves."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from icl.errors import ICLError
from icl.eval_config import MAX_PROMPTS, YSCALES, EvalConfig
from icl.fileio import atomic_write
from icl.model import ModelConfig
from icl.plugins import entries, import_all
from icl.sampling import DataConfig, Sampler
from icl.tasks import build_task
from icl.train_config import TrainConfig
from icl.yamlio import one_line, parse_yaml, read_yaml

INT64 = 1 << 63  # seeds, sizes and steps reach torch and numpy as 64-bit integers
SECTIONS = "seed, name, data, model, train, eval"


@dataclasses.dataclass
class Config:
    seed: int = 0
    name: str = ""  # run name; default: the last YAML file's stem
    out_dir: str = "runs"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    # User modules (.py paths or module names) imported before validation: they register their own
    # function classes, baselines, scenarios... Saved with absolute paths (icl/plugins.py).
    imports: list[str] = dataclasses.field(default_factory=list)


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value parsed as YAML; the raw text where it is not valid YAML)."""
    key, eq, value = item.partition("=")
    if not eq or not key:
        raise ICLError(f"override {item!r}: allowed form is key=value, e.g. train.lr=3e-4")
    try:
        return key, parse_yaml(value, f"override {item!r}") if value else ""
    except yaml.YAMLError:
        return key, value


def load_config(files: list[str | Path] = (), overrides: list[str] = (), base: Config | None = None) -> Config:
    """Defaults (or ``base``) <- each YAML file (left to right) <- ``key=value`` overrides, then
    validate. ``imports`` accumulate instead of replacing one another: a file's entries are paths
    relative to that file, an override's relative to the current directory; all are imported
    before the config is validated, so its mixture may name the classes they register."""
    merged = OmegaConf.structured(base if base is not None else Config)
    imports: list[tuple[Path | None, str]] = [(None, e) for e in base.imports] if base is not None else []
    for f in files:
        path = Path(f)
        loaded = read_yaml(path)
        if loaded is None or loaded == {}:
            # An empty file would otherwise mean "all defaults": a paper-scale run nobody asked for.
            raise ICLError(f"{path}: empty config file; allowed: a mapping of config sections ({SECTIONS})")
        if not isinstance(loaded, dict):
            raise ICLError(f"{path}: top level must be a mapping of config sections")
        if "imports" in loaded:
            loaded = dict(loaded)
            imports += [(path.parent, e) for e in entries(loaded.pop("imports") or [], f"{path}: imports")]
        merged = _guard(functools.partial(OmegaConf.merge, merged, loaded), str(path))
    for item in overrides:
        key, parsed = parse_override(item)
        if key == "imports":
            imports += [(None, e) for e in entries(parsed or [], f"override {item!r}")]
            continue
        if key.startswith("imports."):
            raise ICLError(f"override {item!r}: allowed form is imports=[FILE.py, module, ...]")
        _guard(functools.partial(OmegaConf.update, merged, key, parsed, merge=True), f"override {item!r}")
    # (directory relative paths start from, None: the current one; base's entries are absolute)
    merged.imports = list(dict.fromkeys(e for where, entry in imports for e in import_all([entry], where)))
    try:
        cfg = OmegaConf.to_object(merged)  # resolves ${...} interpolations
    except OmegaConfBaseException as e:
        raise ICLError(
            f"{e.full_key or 'config'}: {one_line(e)}; allowed: values, or ${{key}} interpolations that resolve to one"
        ) from None
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
        raise ICLError(f"{where}: {e.full_key or ''}: {one_line(e)}") from None


def validate(cfg: Config) -> None:
    """Cross-field rules, checked once when the config is built. Nothing here is proportional to
    the model's size (sizes are judged by arithmetic in icl/resources.py, by the run layer), and
    nothing needs a registry above this module (baseline and suite names are checked by the run
    layer with icl.evaluation.checks.check_eval_config)."""
    if not cfg.name.replace("-", "").replace("_", "").replace(".", "").isalnum() and cfg.name:
        raise ICLError(f"name: got {cfg.name!r}; allowed: letters, digits, '-', '_', '.'")
    cfg.model.check()
    cfg.train.check()
    _check_eval_numbers(cfg)
    # builds and checks the mixture, inputs and curriculum; train.loss must suit the mixture
    cfg.train.check_mixture(Sampler(cfg.data, cfg.seed).mixture)
    if cfg.data.n_points > cfg.model.max_points:
        raise ICLError(
            f"data.n_points: got {cfg.data.n_points}; allowed: at most model.max_points ({cfg.model.max_points})"
        )
    # After the per-field checks, whose messages give each field's range: whatever number they
    # do not cover (a task parameter, an input shift, a list entry) must still be finite.
    check_numbers(cfg)


def check_numbers(obj: Any, where: str = "") -> None:
    """Every number in a config, at any depth (dataclass fields, lists, task parameter mappings):
    floats finite, integers within 64 bits. NaN would pass range checks written as ``x < 0`` and
    silently mean something else (noise_std=nan trains without noise)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ICLError(f"{where}: got {obj}; allowed: a finite number")
    elif isinstance(obj, int):
        if not -INT64 <= obj < INT64:
            raise ICLError(f"{where}: got {obj}; allowed: an integer of at most 64 bits (|x| < 2^63)")
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            check_numbers(getattr(obj, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_numbers(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_numbers(v, f"{where}[{i}]")


def _each(field: str, values: list[float], ok, allowed: str) -> None:
    for i, v in enumerate(values):
        if not ok(v):
            raise ICLError(f"eval.{field}[{i}]: got {v}; allowed: {allowed}")


def _check_eval_numbers(cfg: Config) -> None:
    """Ranges of the eval section's numbers: those used only at the end of training are checked
    now, so a bad value cannot cost a whole run. Comparisons are written so that NaN fails."""
    e = cfg.eval
    for field in ("n_prompts", "periodic_n_prompts"):
        n = getattr(e, field)
        if not 1 <= n <= MAX_PROMPTS:
            raise ICLError(f"eval.{field}: got {n}; allowed: an integer in 1..{MAX_PROMPTS}")
    if not 0 <= e.table_k < cfg.data.n_points:
        raise ICLError(
            f"eval.table_k: got {e.table_k}; allowed: an integer in 0..{cfg.data.n_points - 1} "
            "(data.n_points - 1; 0 = min(16, data.n_points - 1))"
        )
    if e.every < 0:
        raise ICLError(f"eval.every: got {e.every}; allowed: an integer >= 0 (0 = no periodic evaluation)")
    if e.yscale not in YSCALES:
        raise ICLError(f"eval.yscale: got {e.yscale!r}; allowed: {', '.join(YSCALES)}")
    if not e.sweep_k >= 0:
        raise ICLError(f"eval.sweep_k: got {e.sweep_k}; allowed: an integer >= 0")
    if not e.label_noise >= 0:
        raise ICLError(f"eval.label_noise: got {e.label_noise}; allowed: a number >= 0")
    _each("frequencies", e.frequencies, lambda f: 0 < f < math.inf, "finite numbers > 0")
    _each("scales", e.scales, lambda s: 0 < s < math.inf, "finite numbers > 0")
    _each("convex_coefs", e.convex_coefs, lambda a: 0 <= a <= 1, "numbers in [0, 1]")
    pair = e.convex_pair
    if len(pair) != 2:
        raise ICLError(f"eval.convex_pair: got {len(pair)} entries; allowed: exactly two {{name, params}}")
    for i, spec in enumerate(pair):
        if not (isinstance(spec, dict) and "name" in spec and set(spec) <= {"name", "params"}):
            raise ICLError(f"eval.convex_pair[{i}]: got {spec!r}; allowed: a mapping with keys name and params")
        try:
            build_task(spec["name"], spec.get("params") or {}).check(cfg.data.n_dims)
        except ICLError as err:
            raise ICLError(f"eval.convex_pair[{i}]: {err}") from None


def to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def from_dict(d: dict[str, Any]) -> Config:
    """The config a run recorded (a checkpoint's icl_config), its user modules imported first."""
    if isinstance(d, dict) and d.get("imports"):
        import_all(entries(d["imports"]))
    cfg = OmegaConf.to_object(_merge(OmegaConf.structured(Config), OmegaConf.create(d), "config"))
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    atomic_write(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys: {"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}.
    Lists are values, kept as they are."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
