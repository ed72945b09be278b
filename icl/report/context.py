"""What every section of a report reads: the runs, the eval classes with each run's curves on them,
the k shown in tables, the output folder and the notes; eval suites are read (or run) on request."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from icl.evaluation.ks import table_ks
from icl.report.cache import EvalClass, class_curves, eval_classes, suite_records
from icl.report.runs import Run


@dataclasses.dataclass
class Report:
    runs: list[Run]
    classes: list[EvalClass]
    records: dict[str, dict[str, dict[str, Any]]]  # Run.key -> eval class name -> curve record
    k: int  # in-context examples in tables (eval.table_k)
    n_prompts: int
    device: str
    out: Path  # where sections write their files
    notes: list[str]
    yscale: str = "auto"  # the figures' y axes: auto, linear or log (icl.figures.choose_yaxis)

    @classmethod
    def evaluate(
        cls, runs: list[Run], k: int, n_prompts: int, device: str, out: Path, notes: list[str], yscale: str = "auto"
    ) -> Report:
        """Every run on every eval class (from the runs' caches where they hold these curves)."""
        classes = eval_classes(runs)
        records = {r.key: {c.name: class_curves(r, c, n_prompts, device, notes, yscale) for c in classes} for r in runs}
        return cls(runs, classes, records, k, n_prompts, device, out, notes, yscale)

    @property
    def d(self) -> int:
        return self.runs[0].cfg.data.n_dims

    @property
    def n_points(self) -> int:
        return self.runs[0].cfg.data.n_points

    def shown_ks(self) -> list[int]:
        """The k's of the per-class tables: every k = 1..d, a few beyond (``table_ks``) and the table k."""
        return table_ks(self.d, self.n_points, (self.k,))

    def curves(self, run: Run, cls: EvalClass) -> dict[str, dict[str, list[float]]]:
        """{predictor: {mean, ci_low, ci_high}} of ``run`` on ``cls``."""
        return self.records[run.key][cls.name]["curves"]

    def gap_closed(self, run: Run, cls: EvalClass) -> dict[str, list[float | None]] | None:
        """{mean, ci_low, ci_high} per k (None where undefined) of ``run``'s model on ``cls``: the fraction
        of the least-squares-to-Bayes gap it closes; None where Bayes does not exist for the class."""
        return self.records[run.key][cls.name].get("gap_closed", {}).get("model")

    def checkpoint(self, run: Run) -> dict[str, Any]:
        """{path, global_step, sha256} of the checkpoint every number of ``run`` comes from."""
        return run.checkpoint(self.device)

    def suite(self, name: str, baselines: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """Run.key -> scenario name -> record of eval suite ``name``, evaluated where a run lacks it."""
        return {r.key: suite_records(r, name, self.n_prompts, self.device, baselines, self.yscale) for r in self.runs}
