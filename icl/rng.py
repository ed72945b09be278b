"""Counter-based seeding: every random draw in icl comes from a generator keyed by
(seed, domain, step, stream, substream). No global RNG, no Python ``hash()``."""

from __future__ import annotations

from enum import IntEnum

import torch

_MASK64 = (1 << 64) - 1


class Stream(IntEnum):
    """Independent random streams of one batch."""

    MIXTURE = 1  # which component each sequence is drawn from
    INPUTS = 2  # the x's
    PARAMS = 3  # function parameters (substream = component index)
    NOISE = 4  # label noise
    BASIS = 5  # fixed per-run structures, e.g. the eigenbasis of a skewed covariance
    INIT = 6  # model initialisation
    PROBE = 7  # probe fitting (icl.analysis.probe): prompt splits, re-pairings, probe initialisation


class Domain(IntEnum):
    """Training and evaluation draw from disjoint key spaces, so an evaluation set never
    repeats a training batch."""

    TRAIN = 0
    EVAL = 1
    PROBE = 2  # prompts of `icl probe`: never a training or evaluation prompt


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(seed: int, *keys: int) -> int:
    """Mix ``seed`` and integer keys into a 63-bit seed (order matters)."""
    h = _splitmix64(int(seed) & _MASK64)
    for k in keys:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return h >> 1


def generator(
    seed: int,
    step: int,
    stream: Stream,
    substream: int = 0,
    domain: Domain = Domain.TRAIN,
    device: torch.device | str = "cpu",
) -> torch.Generator:
    """A fresh generator for one (seed, domain, step, stream, substream)."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, int(domain), step, int(stream), substream))
    return g
