"""Evaluation during training: the Lightning callback that sends error curves of the model and
some baselines to every logger every ``eval.every`` steps."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from icl.config import Config
from icl.evaluation.curves import error_curves, scenario_metric
from icl.evaluation.run import build_baselines, build_predictors
from icl.evaluation.scenarios import build_suite
from icl.evaluation.scenarios.identity import distinct
from icl.sampling import Sampler
from icl.trackers import Curves, curve_metrics, log_evaluation


class PeriodicEval(Callback):
    """Every ``eval.every`` steps: curves of the model and ``eval.periodic_baselines`` on
    ``eval.periodic_suite`` with ``eval.periodic_n_prompts`` prompts, sent to every logger by
    ``icl.trackers.log_evaluation``: eval/<scenario>/<predictor>/mse@<k> for every k and, in
    wandb, a line plot per scenario."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.sampler = Sampler(cfg.data, cfg.eval.seed)
        self.scenarios, _ = distinct(build_suite(cfg.eval.periodic_suite, cfg, self.sampler.mixture), cfg)
        self.baselines = build_baselines(cfg.eval.periodic_baselines, cfg.data.n_dims)
        # each scenario's error: mse, or zero_one where all its classes are classification classes
        self.metrics = {sc.name: scenario_metric(sc.mixture) for sc in self.scenarios}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.cfg.eval.every or trainer.global_rank != 0:
            return
        self.log_curves(trainer.loggers, module.model, module.device, step)

    def log_curves(self, loggers, model, device, step: int) -> None:
        """Evaluate ``model`` now and send its curves to ``loggers`` at ``step``. (Not ``log``: Lightning
        sets a callback's ``log`` to the module's.)"""
        log_evaluation(loggers, self.curves(model, device), step, metric=self.metrics)

    def values(self, model, device) -> dict[str, float]:
        """The scalars of ``model`` now: eval/<scenario>/<predictor>/<metric>@<k> for every k."""
        return curve_metrics(self.curves(model, device), self.metrics)

    def curves(self, model, device) -> Curves:
        """Mean error at every k per scenario and predictor of ``model`` now (its train/eval mode
        is restored afterwards)."""
        was_training = model.training
        model.eval()
        curves: Curves = {}
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
                curves[sc.name] = {pred: err.mean(axis=0).tolist() for pred, err in result.errors().items()}
        model.train(was_training)
        return curves
