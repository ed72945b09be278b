"""Skill composition scenarios: the training whitelist's tuples (seen) and tuples never seen
together (held out), one scenario per tuple size k."""

from __future__ import annotations

import dataclasses

from icl.config import Config
from icl.evaluation.scenarios.base import Scenario
from icl.sampling import Component, PretrainMixture
from icl.tasks import SkillComposition


def skill_tuples(cfg: Config, mixture: PretrainMixture) -> list[Scenario]:
    """For every tuple size k of the training skill_composition's whitelist: its seen tuples
    (``split: train``) and its held-out tuples (``split: heldout``: atoms all trained, never
    together), where there are any. Sweep tables ``skills.seen`` and ``skills.heldout`` have one
    row per k. A model trained on other classes gets skill_composition's default whitelist
    (every singleton of its dictionary). Larger held-out tuples (k beyond the whitelist's sizes)
    go in a suite file: ``{name: skill_composition, params: {..., split: heldout, k: 3}}``."""
    comp = mixture.component("skill_composition")
    task, noise_std = (comp.task, comp.noise_std) if comp is not None else (SkillComposition(), 0.0)
    d = cfg.data.n_dims
    sizes = sorted({len(t) for t in dataclasses.replace(task, split="train", k=None).tuple_list(d)})
    out = []
    for split, seen in (("train", "seen"), ("heldout", "heldout")):
        for k in sizes:
            sub = dataclasses.replace(task, split=split, k=k)
            n = len(sub.tuple_list(d))
            if n == 0:
                continue
            label = f"skill_composition({seen}, k={k})"
            out.append(
                Scenario(
                    f"skills.{seen}_size{k}",
                    f"{seen} tuples of {k} skill{'s' if k > 1 else ''} ({n} tuples)",
                    PretrainMixture([Component(sub, 1.0, noise_std, label)]),
                    group=f"skills.{seen}",
                    value=k,
                )
            )
    return out
