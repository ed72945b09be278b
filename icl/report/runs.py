"""The runs a report covers: the finished runs of a sweep directory, each labelled by what tells it
apart from the others, its trained model loaded on first use; and the specialist runs among them."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Any

from icl.checkpoint.load import load_model
from icl.config import Config, flatten, load_config, to_dict
from icl.errors import ICLError
from icl.evaluation.provenance import checkpoint_info
from icl.runstate import newest_checkpoint, run_state

# Keys that say where or how a run was logged or evaluated, not what was trained: never in a label.
UNLABELLED = ("name", "out_dir", "eval.", "train.loggers", "train.wandb.", "train.progress_bar")
# Keys that change how the arithmetic runs, not what is trained (results agree to rounding): not in
# labels nor seed groups, so runs resumed in bf16 group with fp32 seeds; the runs table shows them.
EXECUTION = (
    "train.precision",
    "train.accelerator",
    "train.compile",
    "train.fused_optimizer",
    "train.keep_freed_memory",
)
RAMP = "data.curriculum.weights."  # a mixture-weight curriculum: labelled as one phrase


@dataclasses.dataclass
class Run:
    path: Path
    cfg: Config
    label: str = ""
    key: str = ""  # the run's name in tables and records: its directory, or sweep/directory where two sweeps share it
    _model: Any = None
    _checkpoint: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.key = self.key or self.path.name

    def model(self, device: str):
        """The model of the run's newest checkpoint, loaded on first use."""
        if self._model is None:
            step, path = newest_checkpoint(self.path)
            self._model, _ = load_model(path, device)
            self._checkpoint = checkpoint_info(path, self._model, step)
        return self._model

    def checkpoint(self, device: str) -> dict[str, Any]:
        """{path, global_step, sha256} of the checkpoint ``model`` loads (icl.evaluation.provenance)."""
        self.model(device)
        return self._checkpoint

    @property
    def active(self) -> list[Any]:
        return [c for c in self.cfg.data.mixture if c.weight > 0]

    @property
    def arch(self) -> tuple[int, int, int]:
        m = self.cfg.model
        return m.n_layer, m.n_head, m.n_embd


def class_label(name: str, params: dict[str, Any]) -> str:
    shown = [
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in params.items()
        if not isinstance(v, (list, dict))
    ]
    return name + (f"({', '.join(shown)})" if shown else "")


def collect_runs(sweep_dirs: list[Path]) -> tuple[list[Run], list[str]]:
    """The finished runs under the sweep directories (trained to train.steps), reported together
    (e.g. a sweep and another that adds seeds to some of its points), and notes on the others."""
    runs, skipped = [], []
    seen: set[Path] = set()
    for sweep_dir in sweep_dirs:
        if not sweep_dir.is_dir():
            raise ICLError(f"sweep directory not found: {sweep_dir}")
        if sweep_dir.resolve() in seen:
            raise ICLError(f"sweep directory {sweep_dir} given twice; allowed: each directory once")
        seen.add(sweep_dir.resolve())
        for cfg_path in sorted(sweep_dir.glob("*/config.yaml")):
            cfg = load_config([cfg_path])
            state = run_state(cfg_path.parent, cfg.train.steps)
            if state in ("done", "trained"):
                runs.append(Run(cfg_path.parent, cfg))
            else:
                skipped.append(f"{cfg_path.parent}: not finished ({state}); not included")
    where = ", ".join(map(str, sweep_dirs))
    if not runs:
        raise ICLError(
            f"{where}: no finished runs (subdirectories with config.yaml and checkpoints/last.ckpt at "
            "train.steps); allowed: sweep directories such as runs/<sweep name>"
        )
    dims = sorted({(r.cfg.data.n_dims, r.cfg.data.n_points) for r in runs})
    if len(dims) > 1:
        raise ICLError(f"{where}: runs differ in (data.n_dims, data.n_points) {dims}; allowed: one problem size")
    for name, count in collections.Counter(r.path.name for r in runs).items():
        if count == 1:
            continue
        same = [r for r in runs if r.path.name == name]
        short = len({r.path.parent.name for r in same}) == len(same)  # else two sweep dirs share a name too
        for run in same:
            run.key = f"{run.path.parent.name}/{name}" if short else str(run.path)
    label_runs(runs)
    runs.sort(key=lambda r: ([-c.weight for c in r.cfg.data.mixture], r.arch, r.path.name))
    return runs, skipped


def execution_keys(runs: list[Run]) -> list[str]:
    """The EXECUTION keys on which the runs differ."""
    flats = [flatten(to_dict(r.cfg)) for r in runs]
    return [k for k in EXECUTION if len({repr(f.get(k)) for f in flats}) > 1]


def _shown(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, list) else value


def label_runs(runs: list[Run]) -> None:
    """Label each run by what tells it apart from the others: mixture, model size, other keys."""
    flats = [flatten(to_dict(r.cfg)) for r in runs]
    keys = sorted({k for f in flats for k in f})
    quiet = UNLABELLED + EXECUTION
    differ = [k for k in keys if not k.startswith(quiet) and any(f.get(k) != flats[0].get(k) for f in flats)]
    for run, flat in zip(runs, flats, strict=True):
        parts = []
        if any(k.startswith("data.mixture") for k in differ):
            parts.append(" + ".join(f"{c.weight:g} {class_label(c.name, dict(c.params))}" for c in run.active))
        ramp = run.cfg.data.curriculum.weights
        if any(k.startswith(RAMP) for k in differ) and ramp.start:
            start = "/".join(f"{w:g}" for w in ramp.start)
            parts.append(f"weights {start} for {ramp.hold} steps, {ramp.steps}-step ramp")
        if any(k.startswith("model.") for k in differ):
            m = run.cfg.model  # the family where runs differ in it (gpt2 / lstm / mamba)
            family = f"{m.family} " if any(k == "model.family" for k in differ) else ""
            parts.append(family + "{}L/{}H/{}".format(*run.arch))
        parts += [f"{k}={_shown(flat.get(k))}" for k in differ if not k.startswith(("data.mixture", "model.", RAMP))]
        run.label = "; ".join(parts) or run.key
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} ({run.key})"


def specialist(runs: list[Run], name: str, params: dict[str, Any], like: Run) -> Run | None:
    """The run trained on function class ``name`` with ``params`` alone, preferring the architecture of ``like``."""
    found = [r for r in runs if len(r.active) == 1 and (r.active[0].name, dict(r.active[0].params)) == (name, params)]
    same = [r for r in found if r.arch == like.arch]
    return (same or found or [None])[0]


def trained_classes(runs: list[Run]) -> set[str]:
    """Registry keys of the function classes in any run's pretraining mixture (zero weights included)."""
    return {c.name for r in runs for c in r.cfg.data.mixture}
