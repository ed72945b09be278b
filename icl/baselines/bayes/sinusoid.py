"""Posterior of the 1-D sinusoid class f(x) = b cos(2 pi w x): a fine grid over the frequency
w (Gamma prior, or a point mass when fixed) with the Gaussian amplitude b integrated out."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from icl.baselines.base import exclusive_cumsum
from icl.baselines.bayes.common import HypothesisAverage, PosteriorOptions, gaussian_log_norm
from icl.errors import ICLError
from icl.tasks import Sinusoid


class SinusoidPosterior:
    """For a frequency w on the grid, y = b phi(x) + noise with phi = cos(2 pi w x) and
    b ~ N(0, a^2) is a 1-parameter Gaussian linear model: posterior mean
    b_hat = S_py / (S_pp + sigma^2 / a^2) with S_pp = sum phi_j^2, S_py = sum phi_j y_j, and
    log evidence -k/2 log(2 pi sigma^2) - 1/2 log(1 + a^2 S_pp / sigma^2)
    - (S_yy - S_py^2 / (S_pp + sigma^2 / a^2)) / (2 sigma^2). Grid points are weighted by
    prior mass times evidence. The grid is uniform on (0, mean + 15 sd] with midpoint prior
    masses (renormalised), so the tails keep grid points (out-of-distribution frequencies).

    Only d = 1: for d > 1 the class's direction u is uniform on the sphere and would need a
    posterior over directions as well, which this predictor does not attempt.
    """

    name = "frequency_grid"

    def __init__(self, task: Sinusoid, noise_var: float, n_grid: int) -> None:
        task.check(1)
        self.task, self.noise_var, self.n_grid = task, noise_var, n_grid
        self.amp_var = task._amp_scale() ** 2  # the sampler's own amplitude scale

    @classmethod
    def from_task(cls, task: Sinusoid, noise_std: float, options: PosteriorOptions) -> SinusoidPosterior:
        # Its own floor: the frequency posterior narrows like sigma / sqrt(k) (see BayesMixture).
        return cls(task, max(noise_std, options.sinusoid_noise_floor) ** 2, options.n_grid)

    def frequency_grid(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """(freqs (G,), log prior masses (G,)) in float64, summing to 1 in probability."""
        t = self.task
        if t.freq is not None:
            return torch.tensor([float(t.freq)], dtype=torch.float64, device=device), torch.zeros(
                1, dtype=torch.float64, device=device
            )
        mean, sd = t.freq_shape * t.freq_scale, math.sqrt(t.freq_shape) * t.freq_scale
        top = mean + 15 * sd
        step = top / self.n_grid
        w = (torch.arange(self.n_grid, dtype=torch.float64, device=device) + 0.5) * step
        log_pdf = (t.freq_shape - 1) * torch.log(w) - w / t.freq_scale
        log_mass = log_pdf + math.log(step)
        return w, log_mass - torch.logsumexp(log_mass, 0)

    def evaluate(self, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        b, n, d = xs.shape
        if d != 1:
            raise ICLError(
                f"bayes: sinusoid with d={d} input dims; allowed: d=1 (for d > 1 the direction "
                "u is unknown and not integrated out; pass n_dims=1 if only the first "
                "coordinate is active)"
            )
        x, y = xs[..., 0], ys
        freqs, log_prior = self.frequency_grid(xs.device)
        yty = exclusive_cumsum(y * y)
        count = torch.arange(n, device=xs.device, dtype=torch.float64)
        base = gaussian_log_norm(count, self.noise_var)[None, :, None]
        ratio = self.noise_var / self.amp_var
        acc = HypothesisAverage()
        chunk = max(1, (1 << 22) // (b * n))
        for start in range(0, freqs.numel(), chunk):
            w = freqs[start : start + chunk]
            phi = torch.cos(2 * math.pi * x[..., None] * w)  # (B, N, g)
            s_pp = exclusive_cumsum(phi * phi)
            s_py = exclusive_cumsum(phi * y[..., None])
            prec = s_pp + ratio
            pred = s_py / prec * phi
            fit = (yty[..., None] - s_py * s_py / prec).clamp_min(0)
            log_ev = base - 0.5 * torch.log(prec / ratio) - 0.5 * fit / self.noise_var
            acc.add(log_ev + log_prior[start : start + chunk], pred)
        return acc.result()
