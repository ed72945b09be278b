"""What a probe is asked to decode from the hidden state after i in-context examples: the true
weights, estimators on the i examples (least squares, ridge, LASSO, X^T y), the support of a sparse
w, the mixture component; and each target's control, the same estimator on the same tokens with
the (x_j, y_j) pairing broken (re-paired), refused where it is linearly predictable from the real
target."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from icl.baselines.lasso import Lasso
from icl.baselines.linear import Ridge, context_fit
from icl.errors import ICLError
from icl.rng import Domain, Stream, generator

KINDS = ("vector", "binary", "classes")  # scored by R^2 and cosine / per-coordinate accuracy / argmax accuracy
MAX_CONTROL_R2 = 0.1  # a control linearly predictable from the real target beyond this is refused
REPAIR = 1  # substream of Stream.PROBE for the re-pairings (icl.analysis.probe uses the others)


def _ols(xs: Tensor, ys: Tensor) -> Tensor:
    return context_fit(xs, ys, 0.0)


def _ridge(xs: Tensor, ys: Tensor) -> Tensor:
    return context_fit(xs, ys, Ridge().lam)


def _lasso(xs: Tensor, ys: Tensor) -> Tensor:
    return Lasso().context_coefficients(xs, ys)


def _xty(xs: Tensor, ys: Tensor) -> Tensor:
    return torch.einsum("pjd,pj->pd", xs.double(), ys.double())


# Estimators on the first i examples, (P, i, D) and (P, i) -> (P, D) float64, with the evaluation
# baselines' own settings (ridge lam and LASSO alpha are the defaults `icl eval` builds them with).
ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ols": _ols,
    "ridge": _ridge,
    "lasso": _lasso,
    "xty": _xty,
}


def estimator_settings() -> dict[str, Any]:
    """The penalties of the ridge and LASSO targets (those of the `ridge` and `lasso` baselines)."""
    return {"ridge_lam": Ridge().lam, "lasso_alpha": Lasso().alpha}


def repair(ys: Tensor, k: int, g: torch.Generator) -> Tensor:
    """ys (P, >= k) with the labels of the first k points moved along a uniformly random k-cycle
    per prompt: no x_j keeps its own y_j (a derangement), the multiset of tokens is unchanged."""
    if k < 2:
        raise ICLError(f"re-pairing: got {k} example(s); allowed: 2 or more (one pair cannot be re-paired)")
    order = torch.rand(ys.shape[0], k, generator=g).argsort(1)  # a random cyclic order of the k points
    succ = order.roll(-1, 1)
    src = torch.empty_like(order)
    src.scatter_(1, order, succ)  # point order[j] takes the label of point order[j + 1]
    out = ys.clone()
    out[:, :k] = ys[:, :k].gather(1, src)
    return out


@dataclasses.dataclass(frozen=True)
class Target:
    """A probe target: ``kind`` picks its scores, ``control`` names the estimator whose re-paired
    version is its control (None: no alternative semantics from the same tokens)."""

    name: str
    kind: str
    summary: str
    control: str | None


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("w", "vector", "the true weights of the prompt's function (params['w'])", "ols"),
        Target("ols", "vector", "min-norm least squares on the i examples", "ols"),
        Target("ridge", "vector", "ridge on the i examples (the ridge baseline's lam)", "ridge"),
        Target("lasso", "vector", "LASSO on the i examples (the lasso baseline's alpha)", "lasso"),
        Target("xty", "vector", "X^T y of the i examples", "xty"),
        Target("support", "binary", "the nonzero coordinates of a sparse w", None),
        Target("component", "classes", "the mixture component the prompt was drawn from", None),
    )
}


def control_label(target: Target) -> str | None:
    return None if target.control is None else f"re-paired {target.control}"


class TargetSet:
    """The targets of P prompts xs (P, N, D), ys (P, N) with their sampling ``info``, at i = ``ks``
    examples. Values are (P, len(ks), outputs) float64; estimators run once per i and are cached.
    Re-pairings are keyed by (seed, i) in the PROBE domain."""

    def __init__(self, xs: Tensor, ys: Tensor, info: dict[str, Any], ks: Sequence[int], seed: int) -> None:
        self.xs, self.ys, self.info, self.ks, self.seed = xs, ys, info, list(ks), seed
        self.active = [(c, p) for c, p in enumerate(info["params"]) if p is not None]
        self._cache: dict[tuple[str, bool, int], Tensor] = {}

    def skip_reason(self, name: str) -> str | None:
        """Why target ``name`` does not apply to these prompts' mixture (None: it applies)."""
        if name not in TARGETS:
            raise ICLError(f"--targets: got {name!r}; allowed: {', '.join(TARGETS)}")
        has_w = all("w" in p and p["w"].ndim == 2 for _, p in self.active)
        if name == "w" and not has_w:
            return "target w skipped: a function class of the mixture has no weight vector w"
        if name == "support" and not (has_w and any("support" in p for _, p in self.active)):
            return "target support skipped: the mixture has no sparse class (params['support'])"
        if name == "component" and len(self.active) < 2:
            return "target component skipped: the mixture has one class"
        return None

    def values(self, name: str) -> Tensor:
        """The real target ``name`` (P, K, O)."""
        if name in ESTIMATORS:
            return torch.stack([self._estimate(name, False, k) for k in self.ks], 1)
        per_prompt = {"w": self._w, "support": self._support, "component": self._component}[name]()
        return per_prompt[:, None].expand(-1, len(self.ks), -1)

    def control(self, name: str) -> tuple[Tensor, list[bool]] | None:
        """The control of target ``name`` (P, K, O), zeros at the i where there is none, and which i
        have one (a single example cannot be re-paired); None for targets without a control."""
        est = TARGETS[name].control
        if est is None:
            return None
        valid = [k >= 2 for k in self.ks]
        rows = [self._estimate(est, k >= 2, k) * (1.0 if k >= 2 else 0.0) for k in self.ks]
        return torch.stack(rows, 1), valid

    def _estimate(self, name: str, repaired: bool, k: int) -> Tensor:
        key = (name, repaired, k)
        if key not in self._cache:
            ys = self.ys
            if repaired:
                ys = repair(ys, k, generator(self.seed, k, Stream.PROBE, substream=REPAIR, domain=Domain.PROBE))
            xs = self.xs[:, :k]
            # No examples, no evidence: every estimator is 0 (the fits' own value at prefix 0).
            self._cache[key] = ESTIMATORS[name](xs, ys[:, :k]) if k else xs.new_zeros(xs.shape[0], xs.shape[2]).double()
        return self._cache[key]

    def _per_prompt(self, pick: Callable[[dict[str, Any]], Tensor]) -> Tensor:
        ids = self.info["component"]
        out = None
        for c, p in self.active:
            value = pick(p).double()
            out = torch.zeros_like(value) if out is None else out
            out = torch.where((ids == c)[:, None], value, out)
        return out

    def _w(self) -> Tensor:
        return self._per_prompt(lambda p: p["w"])

    def _support(self) -> Tensor:
        return self._per_prompt(lambda p: p["support"] if "support" in p else p["w"] != 0)

    def _component(self) -> Tensor:
        n = len(self.info["params"])
        return torch.nn.functional.one_hot(self.info["component"].long(), n).double()


def control_r2(real: Tensor, control: Tensor, train: Tensor, test: Tensor) -> Tensor:
    """How well the control is predicted linearly from the real target, per i: R^2 on the ``test``
    prompts of least squares (with intercept) fit on the ``train`` prompts. real and control are
    (P, K, O); returns (K,)."""
    r, c = real.double().transpose(0, 1), control.double().transpose(0, 1)  # (K, P, O)
    ones = torch.ones(*r.shape[:2], 1, dtype=r.dtype)
    design = torch.cat([r, ones], -1)
    coef = torch.linalg.lstsq(design[:, train], c[:, train]).solution
    pred = design[:, test] @ coef
    sse = ((c[:, test] - pred) ** 2).sum((1, 2))
    sst = ((c[:, test] - c[:, test].mean(1, keepdim=True)) ** 2).sum((1, 2))
    return torch.where(sst > 0, 1 - sse / sst.clamp_min(1e-300), torch.nan)


def refusal(r2: float, target: str, k: int) -> str | None:
    """The message refusing the control of ``target`` at i = ``k`` when it is linearly predictable from
    the real target (R^2 > MAX_CONTROL_R2): a probe that decodes it would say nothing about the
    alternative semantics. None where the control is admissible."""
    if not r2 > MAX_CONTROL_R2:
        return None
    return (
        f"control {control_label(TARGETS[target])} of target {target} at i={k} refused: linearly predictable "
        f"from the target (R^2 = {r2:.3f} > {MAX_CONTROL_R2}); no difference-in-differences there"
    )
