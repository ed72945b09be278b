"""Evaluation during training: the Lightning callback that logs error curves of the model and
some baselines every ``eval.every`` steps."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from icl.config import Config
from icl.evaluation.curves import error_curves
from icl.evaluation.ks import interesting_ks
from icl.evaluation.run import build_baselines, build_predictors
from icl.evaluation.scenarios import build_suite
from icl.sampling import Sampler


class PeriodicEval(Callback):
    """Every ``eval.every`` steps: curves of the model and ``eval.periodic_baselines`` on
    ``eval.periodic_suite`` with ``eval.periodic_n_prompts`` prompts, sent to every logger
    as eval/<scenario>/<predictor>/mse@<k> for k in ``interesting_ks`` (1, d/2, d, 2d, last)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.sampler = Sampler(cfg.data, cfg.eval.seed)
        self.scenarios = build_suite(cfg.eval.periodic_suite, cfg, self.sampler.mixture)
        self.baselines = build_baselines(cfg.eval.periodic_baselines, cfg.data.n_dims)
        self.ks = interesting_ks(cfg.data.n_dims, cfg.data.n_points)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.cfg.eval.every or trainer.global_rank != 0:
            return
        values = self.values(module.model, module.device)
        for lg in trainer.loggers:
            lg.log_metrics(values, step=step)

    def values(self, model, device) -> dict[str, float]:
        """The logged values of ``model`` now (its train/eval mode is restored afterwards)."""
        was_training = model.training
        model.eval()
        values: dict[str, float] = {}
        with torch.no_grad():
            for sc in self.scenarios:
                predictors = build_predictors(
                    model,
                    self.cfg.eval.periodic_baselines,
                    self.baselines,
                    sc,
                    self.sampler.mixture,
                    self.cfg.data.n_dims,
                    [],
                )
                result = error_curves(
                    predictors,
                    self.sampler,
                    self.cfg.eval.periodic_n_prompts,
                    n_points=sc.n_points,
                    mixture=sc.mixture,
                    inputs=sc.inputs,
                    query=sc.query,
                    device=device,
                )
                for pred, err in result.sq_errors.items():
                    mean = err.mean(axis=0)
                    values.update({f"eval/{sc.name}/{pred}/mse@{k}": float(mean[k]) for k in self.ks if k < len(mean)})
        model.train(was_training)
        return values
