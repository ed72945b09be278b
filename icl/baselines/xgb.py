"""Gradient-boosted trees (the xgboost package, an optional extra) fit on every prompt and
prefix: Garg et al.'s strongest baseline for decision-tree targets."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from icl.baselines.base import Predictor, check_inputs, is_int, is_number, require
from icl.baselines.optional import require_package


class XGBoost(Predictor):
    """``xgboost.XGBRegressor`` with Garg et al.'s settings (the package defaults: 100 trees of
    depth 6, learning rate 0.3, squared error), pinned here so a package upgrade does not move
    them; one fit per prompt and prefix (boosting does not batch), on one thread, the query
    predicted; 0 with no context. Without the package, building it raises
    icl.baselines.optional.Unavailable (evaluation skips it with a note)."""

    name = "xgboost"

    def __init__(self, n_estimators: int = 100, max_depth: int = 6, learning_rate: float = 0.3) -> None:
        require(is_int(n_estimators) and n_estimators >= 1, "xgboost.n_estimators", "an integer >= 1", n_estimators)
        require(is_int(max_depth) and max_depth >= 1, "xgboost.max_depth", "an integer >= 1", max_depth)
        require(is_number(learning_rate) and learning_rate > 0, "xgboost.learning_rate", "a number > 0", learning_rate)
        self.xgb = require_package("xgboost", "xgboost", "xgboost")
        self.settings = {"n_estimators": n_estimators, "max_depth": max_depth, "learning_rate": learning_rate}
        self.label = "xgboost"

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        check_inputs(xs, ys)
        x = xs.detach().cpu().double().numpy()
        y = ys.detach().cpu().double().numpy()
        b, n, _ = x.shape
        out = np.zeros((b, n))
        for i in range(1, n):
            for j in range(b):
                model = self.xgb.XGBRegressor(**self.settings, n_jobs=1)
                model.fit(x[j, :i], y[j, :i])
                out[j, i] = model.predict(x[j, i : i + 1])[0]
        return torch.from_numpy(out).to(device=ys.device, dtype=ys.dtype)
