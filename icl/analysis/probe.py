"""Probes on hidden states: the split of prompts into train / validation / test, ridge probes (the
penalty chosen on validation, closed form) and one-hidden-layer MLP probes, both batched over G
groups (layer x position) and over output dimensions, and their scores on the test prompts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from icl.errors import ICLError
from icl.rng import Domain, Stream, generator

FRACTIONS = (0.6, 0.2, 0.2)  # train, validation, test
SPLIT, INIT = 2, 3  # substreams of Stream.PROBE (icl.analysis.probe_targets.REPAIR is 1)
RIDGE_RATIOS = tuple(10.0**e for e in range(-6, 5))  # penalties, times the mean eigenvalue of H^T H
MLP_INPUTS = 64
MLP_HIDDEN = 64
MLP_EPOCHS = 30
MLP_BATCH = 256
MLP_LR = 1e-2
MIN_SCALE = 1e-6  # features and targets with a smaller spread are only centred


@dataclasses.dataclass(frozen=True)
class Split:
    """Prompt indices of the three parts; a prompt belongs to exactly one."""

    train: Tensor
    val: Tensor
    test: Tensor

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_prompts(n: int, seed: int, probe_seed: int) -> Split:
    """A random split of ``n`` prompts by prompt, FRACTIONS of them each, keyed by (seed, probe_seed)."""
    if n < 10:
        raise ICLError(f"--n-prompts: got {n}; allowed: at least 10 (train, validation and test need prompts)")
    order = torch.randperm(n, generator=generator(seed, probe_seed, Stream.PROBE, SPLIT, Domain.PROBE))
    n_train, n_val = int(n * FRACTIONS[0]), int(n * FRACTIONS[1])
    return Split(order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])


def check_split(split: Split, xs: Tensor | None = None, ys: Tensor | None = None) -> None:
    """Raise ICLError if a prompt is in two parts: the same index, or (given the prompts) the same
    tokens under two indices. A probe scored on prompts it was fit on would measure memory."""
    parts = {"train": split.train, "validation": split.val, "test": split.test}
    names = list(parts)
    for a in range(3):
        for b in range(a + 1, 3):
            shared = set(parts[names[a]].tolist()) & set(parts[names[b]].tolist())
            if shared:
                raise ICLError(
                    f"probe split: prompt {min(shared)} is in both {names[a]} and {names[b]}; allowed: each prompt "
                    "in one part"
                )
    if xs is None:
        return
    flat = xs.flatten(1) if ys is None else torch.cat([xs.flatten(1), ys.flatten(1)], 1)
    index = torch.cat(list(parts.values()))
    part = torch.cat([torch.full((len(p),), i) for i, p in enumerate(parts.values())])
    _, group = torch.unique(flat[index], dim=0, return_inverse=True)
    n_groups = int(group.max()) + 1 if len(group) else 0
    low = torch.full((n_groups,), 3).scatter_reduce(0, group, part, "amin")
    high = torch.full((n_groups,), -1).scatter_reduce(0, group, part, "amax")
    mixed = (low != high).nonzero()
    if len(mixed):
        rows = index[group == mixed[0, 0]].tolist()
        raise ICLError(
            f"probe split: prompts {', '.join(map(str, rows))} are the same prompt in more than one part; "
            "allowed: each prompt in one part"
        )


def groups(h: Tensor) -> Tensor:
    """Hidden states (L', P, K, E) as G = L' * K groups (G, P, E), layer-major."""
    n_layers, p, k, e = h.shape
    return h.permute(0, 2, 1, 3).reshape(n_layers * k, p, e)


def group_targets(y: Tensor, n_layers: int) -> Tensor:
    """A target (P, K, O) matched to ``groups``: (G, P, O), the same for every layer."""
    p, k, o = y.shape
    return y.permute(1, 0, 2)[None].expand(n_layers, k, p, o).reshape(n_layers * k, p, o)


def _standardize(train: Tensor) -> tuple[Tensor, Tensor]:
    mean = train.mean(1, keepdim=True)
    scale = train.std(1, keepdim=True)
    return mean, torch.where(scale > MIN_SCALE, scale, torch.ones_like(scale))


class RidgeProbe:
    """Ridge regression from standardised features, one eigendecomposition of H^T H per group shared
    by every target; the penalty is chosen per group and target by the validation error over
    RIDGE_RATIOS x the mean eigenvalue."""

    def __init__(self, h: Tensor, split: Split) -> None:
        h = h.double()
        mean, scale = _standardize(h[:, split.train])
        train = (h[:, split.train] - mean) / scale
        self.evals, evecs = torch.linalg.eigh(train.transpose(1, 2) @ train)  # (G, E), (G, E, E)
        self.evals = self.evals.clamp_min(0)
        # Features in the eigenbasis, per part: (G, P_part, E).
        self.train = train @ evecs
        self.val, self.test = (((h[:, part] - mean) / scale) @ evecs for part in (split.val, split.test))
        self.split = split

    def predict(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Test predictions (G, P_test, O) of target y (G, P, O), and the chosen penalties (G,)."""
        y = y.double()
        y_train, y_val = y[:, self.split.train], y[:, self.split.val]
        y_mean = y_train.mean(1, keepdim=True)
        proj = self.train.transpose(1, 2) @ (y_train - y_mean)  # (G, E, O)
        base = self.evals.mean(1, keepdim=True)  # (G, 1)
        best_err = torch.full((y.shape[0],), torch.inf, dtype=y.dtype)
        best_lam = torch.zeros(y.shape[0], dtype=y.dtype)
        for ratio in RIDGE_RATIOS:
            lam = ratio * base
            coef = proj / (self.evals + lam)[..., None]
            err = ((self.val @ coef + y_mean - y_val) ** 2).sum((1, 2))
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lam = torch.where(better, lam[:, 0], best_lam)
        coef = proj / (self.evals + best_lam[:, None])[..., None]
        return self.test @ coef + y_mean, best_lam


class MLPProbe:
    """One hidden layer of MLP_HIDDEN ReLU units per group and target, trained by Adam on minibatches
    of standardised targets, all G groups at once; each group keeps its parameters of the epoch with
    the lowest validation error (early stopping). Its inputs are the MLP_INPUTS leading principal
    components of the standardised features (of the training prompts), whitened: most of the
    variance at a fraction of the cost, which is in the first layer."""

    def __init__(self, h: Tensor, split: Split, seed: int, probe_seed: int) -> None:
        h = h.double()
        mean, scale = _standardize(h[:, split.train])
        z = (h - mean) / scale
        train = z[:, split.train]
        evals, evecs = torch.linalg.eigh(train.transpose(1, 2) @ train / len(split.train))  # ascending
        top = evecs[..., -MLP_INPUTS:] / evals[:, None, -MLP_INPUTS:].clamp_min(MIN_SCALE**2).sqrt()
        self.z = (z @ top).float()  # whitened principal components
        self.split = split
        self.seed, self.probe_seed = seed, probe_seed

    def predict(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Test predictions (G, P_test, O) of target y (G, P, O), and the epochs kept (G,)."""
        split = self.split
        y = y.float()
        y_mean, y_scale = _standardize(y[:, split.train])
        t = (y - y_mean) / y_scale
        g = generator(self.seed, self.probe_seed, Stream.PROBE, INIT, Domain.PROBE)
        n_groups, _, e = self.z.shape
        o = t.shape[-1]

        def init(fan_in: int, *shape: int) -> Tensor:
            bound = fan_in**-0.5
            return ((torch.rand(n_groups, *shape, generator=g) * 2 - 1) * bound).requires_grad_()

        hidden = MLP_HIDDEN
        params = [init(e, e, hidden), init(e, 1, hidden), init(hidden, hidden, o), init(hidden, 1, o)]
        opt = torch.optim.Adam(params, lr=MLP_LR)
        z_train, t_train = self.z[:, split.train], t[:, split.train]
        z_val, t_val = self.z[:, split.val], t[:, split.val]
        best = [p.detach().clone() for p in params]
        best_err = torch.full((n_groups,), torch.inf)
        best_epoch = torch.zeros(n_groups, dtype=torch.long)
        n = z_train.shape[1]
        for epoch in range(MLP_EPOCHS):
            order = torch.randperm(n, generator=g)
            for start in range(0, n, MLP_BATCH):
                rows = order[start : start + MLP_BATCH]
                loss = ((_mlp(params, z_train[:, rows]) - t_train[:, rows]) ** 2).mean((1, 2)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                err = ((_mlp(params, z_val) - t_val) ** 2).mean((1, 2))
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                best_epoch = torch.where(better, epoch + 1, best_epoch)
                for kept, p in zip(best, params, strict=True):
                    kept.copy_(torch.where(better[:, None, None], p, kept))
        with torch.no_grad():
            pred = _mlp(best, self.z[:, split.test]) * y_scale + y_mean
        return pred.double(), best_epoch


def _mlp(params: list[Tensor], z: Tensor) -> Tensor:
    w1, b1, w2, b2 = params
    return torch.relu(z @ w1 + b1) @ w2 + b2


PROBES: dict[str, Callable[..., RidgeProbe | MLPProbe]] = {
    "ridge": lambda h, split, seed, probe_seed: RidgeProbe(h, split),
    "mlp": MLPProbe,
}


# ------------------------------------------------------------------------------------------ scores


def r2(pred: Tensor, y: Tensor) -> Tensor:
    """Pooled R^2 per group: 1 - SSE / SST over prompts and outputs, SST about each output's mean
    on these prompts; NaN where the target is constant. pred and y (G, P, O) -> (G,)."""
    sse = ((y - pred) ** 2).sum((1, 2))
    sst = ((y - y.mean(1, keepdim=True)) ** 2).sum((1, 2))
    return torch.where(sst > 0, 1 - sse / sst.clamp_min(1e-300), torch.nan)


def cosine(pred: Tensor, y: Tensor) -> Tensor:
    """Mean cosine similarity of predicted and true vectors over the prompts whose target is not 0."""
    norm = y.norm(dim=-1)
    cos = (pred * y).sum(-1) / (pred.norm(dim=-1) * norm).clamp_min(1e-300)
    keep = norm > 0
    return torch.where(keep.any(1), (cos * keep).sum(1) / keep.sum(1).clamp_min(1), torch.nan)


def accuracy_binary(pred: Tensor, y: Tensor) -> Tensor:
    """Share of (prompt, coordinate) pairs on the right side of 0.5."""
    return ((pred > 0.5) == (y > 0.5)).double().mean((1, 2))


def accuracy_classes(pred: Tensor, y: Tensor) -> Tensor:
    """Share of prompts whose largest predicted output is the true class (one-hot targets)."""
    return (pred.argmax(-1) == y.argmax(-1)).double().mean(1)


# Scores of each target kind (icl.analysis.probe_targets.KINDS); the first is the one compared.
SCORES: dict[str, dict[str, Callable[[Tensor, Tensor], Tensor]]] = {
    "vector": {"r2": r2, "cosine": cosine},
    "binary": {"accuracy": accuracy_binary, "r2": r2},
    "classes": {"accuracy": accuracy_classes},
}


def score(kind: str, pred: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Every score of ``kind`` for predictions and targets (G, P, O): name -> (G,)."""
    return {name: fn(pred.double(), y.double()) for name, fn in SCORES[kind].items()}


def did(model_real: Tensor, model_control: Tensor, base_real: Tensor, base_control: Tensor) -> Tensor:
    """Difference in differences: what the model's probe gains on the real target over the control,
    beyond what the same probe gains on the baseline representation."""
    return (model_real - model_control) - (base_real - base_control)
