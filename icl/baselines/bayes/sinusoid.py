"""Posterior of the 1-D sinusoid class f(x) = b cos(2 pi w x): an adaptive grid over the
frequency w (Gamma prior, or a point mass when fixed) with the Gaussian amplitude b integrated
out."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from icl.baselines.base import batch_chunks, exclusive_cumsum
from icl.baselines.bayes.common import HypothesisAverage, PosteriorOptions
from icl.errors import ICLError
from icl.tasks import Sinusoid
from icl.tasks.sinusoid import cos2_mean

# Adaptive refinement of the frequency grid, per prompt and prefix: the REFINE_MODES most
# probable modes (local maxima over the shared grid's cells; REFINE_MODES_EARLY of them while
# the context has at most two points, REFINE_MODES_THIRD at three: there the true frequency's
# peak is already far narrower than a shared cell, so the shared grid ranks it poorly, and 2
# modes missed it on 16 prompts in 1000) are each split into REFINE_SPLIT sub-cells,
# REFINE_LEVELS times over (REFINE_LEVELS_EARLY early; each level splits each mode's best
# sub-cell of the level before), so the finest cells are REFINE_SPLIT ** REFINE_LEVELS times
# narrower than the shared grid's: 4096 x, 1e-6 of the shared grid's 3.6e-3 at the default
# prior, about the posterior's width once three noiseless labels pin the frequency down.
REFINE_MODES_EARLY = 16
REFINE_MODES_THIRD = 8
REFINE_MODES = 2
REFINE_SPLIT = 16
REFINE_LEVELS_EARLY = 4
REFINE_LEVELS = 3
PREFIX_BLOCK = 8  # prefixes refined together: each block's context stops at its last query


class SinusoidPosterior:
    """For a frequency w, y = b phi(x) + noise with phi = cos(2 pi w x) and b ~ N(0, a^2) is a
    1-parameter Gaussian linear model: posterior mean b_hat = S_py / (S_pp + sigma^2 / a^2)
    with S_pp = sum phi_j^2, S_py = sum phi_j y_j, and log evidence in closed form
    (``_per_prefix``). Frequencies are weighted by prior mass times evidence.

    The frequency integral is a midpoint rule on an adaptive grid: a shared uniform grid of
    ``n_grid`` cells on (0, mean + 15 sd] (the tails keep cells, for out-of-distribution
    frequencies), whose cells holding the most probable modes for each prompt and prefix are
    replaced by finer cells, recursively (levels of REFINE_SPLIT sub-cells, see above): once
    a few labels are seen the posterior over w is far narrower than the shared grid's spacing,
    and the refinement follows it down to 1 / REFINE_SPLIT ** REFINE_LEVELS of a cell. A
    shared cell that is refined is taken out of the shared sum; each level's cells are the
    sub-cells of the level before, so the cells always partition the frequency axis.

    Only d = 1: for d > 1 the class's direction u is uniform on the sphere and would need a
    posterior over directions as well, which this predictor does not attempt.
    """

    name = "frequency_grid"

    def __init__(self, task: Sinusoid, noise_std: float, n_grid: int) -> None:
        task.check(1)
        self.task, self.noise_std, self.n_grid = task, noise_std, n_grid
        self.amp_var = task._amp_scale() ** 2  # the sampler's own amplitude scale

    @classmethod
    def from_task(cls, task: Sinusoid, noise_std: float, options: PosteriorOptions) -> SinusoidPosterior:
        return cls(task, max(noise_std, options.sinusoid_noise_floor), options.n_grid)

    def label_std(self, n_dims: int) -> float:
        t = self.task
        return math.sqrt(self.amp_var * cos2_mean(t.freq_shape, t.freq_scale, t.freq))

    def _log_pdf(self, w: Tensor) -> Tensor:
        t = self.task
        return (t.freq_shape - 1) * torch.log(w) - w / t.freq_scale

    def frequency_grid(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """The shared grid: (freqs (G,), log prior masses (G,)) in float64, summing to 1 in
        probability."""
        t = self.task
        if t.freq is not None:
            return torch.tensor([float(t.freq)], dtype=torch.float64, device=device), torch.zeros(
                1, dtype=torch.float64, device=device
            )
        w = (torch.arange(self.n_grid, dtype=torch.float64, device=device) + 0.5) * self.step()
        log_mass = self._log_pdf(w) + math.log(self.step())
        return w, log_mass - torch.logsumexp(log_mass, 0)

    def step(self) -> float:
        """The shared grid's spacing."""
        t = self.task
        mean, sd = t.freq_shape * t.freq_scale, math.sqrt(t.freq_shape) * t.freq_scale
        return (mean + 15 * sd) / self.n_grid

    def evaluate(self, xs: Tensor, ys: Tensor, min_std: float) -> tuple[Tensor, Tensor]:
        b, n, d = xs.shape
        if d != 1:
            raise ICLError(
                f"bayes: sinusoid with d={d} input dims; allowed: d=1 (for d > 1 the direction "
                "u is unknown and not integrated out; pass n_dims=1 if only the first "
                "coordinate is active)"
            )
        x, y = xs[..., 0], ys
        noise_var = max(self.noise_std, min_std) ** 2
        freqs, log_prior = self.frequency_grid(xs.device)
        acc = HypothesisAverage()
        refine = self.task.freq is None and min(REFINE_LEVELS, REFINE_LEVELS_EARLY) > 0
        n_keep = min(max(REFINE_MODES_EARLY, REFINE_MODES_THIRD, REFINE_MODES), freqs.numel())
        top_score = top_logw = top_w = top_pred = None
        chunk = max(1, (1 << 22) // (b * n))
        for start in range(0, freqs.numel(), chunk):
            w = freqs[start : start + chunk]
            pred, log_ev = self._shared(x, y, w, noise_var)
            logw = log_ev + log_prior[start : start + chunk]
            acc.add(logw, pred)
            if refine:  # the running best local maxima (modes) of each prompt and prefix
                score = torch.where(_local_max(logw), logw, -math.inf)
                cand_w = w.expand(b, n, -1)
                if top_logw is not None:
                    score, logw = torch.cat([top_score, score], -1), torch.cat([top_logw, logw], -1)
                    cand_w, pred = torch.cat([top_w, cand_w], -1), torch.cat([top_pred, pred], -1)
                idx = score.topk(n_keep, -1).indices
                top_score, top_logw = score.gather(-1, idx), logw.gather(-1, idx)
                top_w, top_pred = cand_w.gather(-1, idx), pred.gather(-1, idx)
        if not refine:
            return acc.result()
        # Modes refined per prefix: many while the context has at most two points (amplitude and
        # frequency are two unknowns, so a whole family of frequencies fits them), few after.
        counts = torch.arange(n, device=xs.device)
        n_modes = torch.where(
            counts < 3, REFINE_MODES_EARLY, torch.where(counts == 3, REFINE_MODES_THIRD, REFINE_MODES)
        )
        n_modes = n_modes.clamp_max(n_keep)
        refined = torch.arange(n_keep, device=xs.device) < n_modes[:, None]  # (N, modes)
        acc.remove(torch.where(refined, top_logw, -math.inf), top_pred)
        log_norm = torch.logsumexp(self._log_pdf(freqs) + math.log(self.step()), 0)
        for lo, hi in _prefix_blocks(n):
            k = int(n_modes[lo:hi].max())
            levels = REFINE_LEVELS_EARLY if hi <= 3 else REFINE_LEVELS
            logw, pred = self._refine(x[:, :hi], y[:, :hi], top_w[:, lo:hi, :k], lo, levels, noise_var, log_norm)
            logw = torch.where(refined[lo:hi, :k, None], logw, -math.inf).flatten(-2)
            pad = (0, 0, lo, n - hi)  # back to (B, N, H), other prefixes weightless
            acc.add(F.pad(logw, pad, value=-math.inf), F.pad(pred.flatten(-2), pad))
        return acc.result()

    def _refine(
        self, x: Tensor, y: Tensor, centres: Tensor, lo: int, levels: int, noise_var: float, log_norm: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(log weights, preds), each (B, P, modes, levels * split), of the refined cells of
        prefixes lo .. lo + P - 1 around their modes' shared-grid cells ``centres`` (B, P,
        modes); x, y hold the points 0 .. lo + P - 1. A mode's best sub-cell at each level is
        split again at the next, so its weight there is -inf (the finer cells replace it)."""
        width = self.step()
        offsets = torch.arange(REFINE_SPLIT, dtype=torch.float64, device=x.device) + 0.5 - REFINE_SPLIT / 2
        all_logw, all_pred = [], []
        for level in range(levels):
            width /= REFINE_SPLIT
            w = centres[..., None] + offsets * width  # (B, P, modes, split)
            pred, log_ev = self._per_prefix(x, y, w.flatten(-2), lo, noise_var)
            logw = (log_ev + self._log_pdf(w.flatten(-2)) + math.log(width) - log_norm).unflatten(-1, w.shape[-2:])
            pred = pred.unflatten(-1, w.shape[-2:])
            if level + 1 < levels:
                best = logw.argmax(-1, keepdim=True)
                centres = w.gather(-1, best)[..., 0]
                logw = logw.scatter(-1, best, -math.inf)
            all_logw.append(logw)
            all_pred.append(pred)
        return torch.cat(all_logw, -1), torch.cat(all_pred, -1)

    def _shared(self, x: Tensor, y: Tensor, w: Tensor, noise_var: float) -> tuple[Tensor, Tensor]:
        """(pred, log evidence), each (B, N, G), for frequencies w (G,) shared by every prefix,
        in the closed form of ``_per_prefix``."""
        ratio = noise_var / self.amp_var
        phi = torch.cos(2 * math.pi * x[..., None] * w)  # (B, N, G)
        prec = exclusive_cumsum(phi * phi) + ratio
        s_py = exclusive_cumsum(phi * y[..., None])
        count = torch.arange(x.shape[1], device=x.device, dtype=torch.float64)[:, None]
        fit = (exclusive_cumsum(y * y)[..., None] - s_py * s_py / prec).clamp_min(0)
        log_ev = (
            -0.5 * count * math.log(2 * math.pi * noise_var) - 0.5 * torch.log(prec / ratio) - 0.5 * fit / noise_var
        )
        return s_py / prec * phi, log_ev

    def _per_prefix(self, x: Tensor, y: Tensor, w: Tensor, lo: int, noise_var: float) -> tuple[Tensor, Tensor]:
        """(pred, log evidence), each (B, P, G), for frequencies w (B, P, G) of each prompt and of
        prefixes lo .. lo + P - 1 (x, y: the points 0 .. lo + P - 1), so the cost per frequency
        is the context length, not 1 as on the shared grid.

        The closed form here, not the chain rule: with prec = S_pp + sigma^2 / a^2,
        log p = -k/2 log(2 pi sigma^2) - 1/2 log(prec a^2 / sigma^2)
                - (S_yy - S_py^2 / prec) / (2 sigma^2).
        Its cancellation costs about 1e-15 S_yy / sigma^2 (a few hundredths at the smallest
        sigma), which only these cells' relative weights around one mode see."""
        b, p, g = w.shape
        n = x.shape[1]
        ratio = noise_var / self.amp_var
        pred = torch.empty(b, p, g, dtype=torch.float64, device=x.device)
        log_ev = torch.empty_like(pred)
        rows = torch.arange(lo, lo + p, device=x.device)
        before = (torch.arange(n, device=x.device) < rows[:, None]).double()  # [i, j]: j < i
        count = rows.double()[:, None]
        s_yy = (y * y) @ before.T  # (B, P)
        arg = 2 * math.pi * x
        for sl in batch_chunks(b, p * n * g, budget=1 << 21):
            phi = torch.cos(w[sl, :, :, None] * arg[sl, None, None, :])  # (b, i, g, j)
            prec = torch.einsum("bigj,ij->big", phi * phi, before) + ratio
            s_py = torch.einsum("bigj,bj,ij->big", phi, y[sl], before)
            fit = (s_yy[sl, :, None] - s_py * s_py / prec).clamp_min(0)
            log_ev[sl] = (
                -0.5 * count * math.log(2 * math.pi * noise_var) - 0.5 * torch.log(prec / ratio) - 0.5 * fit / noise_var
            )
            query = torch.cos(w[sl] * arg[sl, lo : lo + p, None])
            pred[sl] = s_py / prec * query
        return pred, log_ev


def _prefix_blocks(n: int) -> list[tuple[int, int]]:
    """[lo, hi) blocks of prefixes: the first 3 and the 4th (more modes) alone, then
    PREFIX_BLOCK at a time."""
    edges = sorted({0, min(3, n), *range(min(4, n), n, PREFIX_BLOCK), n})
    return list(zip(edges[:-1], edges[1:], strict=False))


def _local_max(logw: Tensor) -> Tensor:
    """Cells at least as probable as both neighbours along the last dim (ends compare to one)."""
    pad = F.pad(logw, (1, 1), value=-math.inf)
    return (logw >= pad[..., :-2]) & (logw >= pad[..., 2:])


def _exclusive_cumsum_last(t: Tensor) -> Tensor:
    """out[..., j] = sum_{l < j} t[..., l] (shift, then sum: entry j never sees l >= j)."""
    return torch.cumsum(F.pad(t[..., :-1], (1, 0)), dim=-1)
