"""The speed tricks, in one place: the CPU attention-form rule the model asks, the flat-parameter
Adam, and glibc malloc tuning. Each changes speed only, never results (tests/unit/
test_perf_equivalence.py); each one's measured gain is in docs/performance.md."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import torch

MATMUL_ATTENTION_MAX_TOKENS = 48


def use_matmul_attention(n_tokens: int, device: torch.device) -> bool:
    """Whether attention over ``n_tokens`` tokens on ``device`` runs as two batched matmuls rather
    than torch's fused kernel: on the CPU, for short prompts (up to MATMUL_ATTENTION_MAX_TOKENS),
    where the fused kernel's per-(sequence, head) tiling overhead dominates; everywhere else the
    fused kernel (docs/performance.md has the measured gain)."""
    return device.type == "cpu" and n_tokens <= MATMUL_ATTENTION_MAX_TOKENS


class _FlatParameters:
    """Mixin for a torch optimiser: it steps one flat tensor whose consecutive slices are the
    parameters. Their ``.data`` and ``.grad`` become views of one flat parameter and one flat
    gradient buffer (autograd accumulates into the views), so a fused update is one kernel over
    one tensor instead of one per parameter. Build it after the model is on its device and in
    its dtype.

    Same maths as the per-parameter optimiser as long as every parameter gets a gradient at
    every step (true of ICLTransformer, tested): a parameter without one would still see the
    update of a zero gradient. Same checkpoint format: ``state_dict`` splits the flat state per
    parameter and ``load_state_dict`` takes per-parameter state, so checkpoints written with or
    without it resume with either."""

    def __init__(self, params, **kwargs) -> None:
        self._params = list(params)
        first = self._params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in self._params):
            raise ValueError("flat parameters need one dtype and one device")
        flat = torch.empty(sum(p.numel() for p in self._params), dtype=first.dtype, device=first.device)
        self._grad = torch.zeros_like(flat)
        self._slices: list[slice] = []
        offset = 0
        with torch.no_grad():
            for p in self._params:
                part = slice(offset, offset + p.numel())
                flat[part].copy_(p.reshape(-1))
                p.data = flat[part].view_as(p)
                self._slices.append(part)
                offset = part.stop
        self._grads = [self._grad[part].view_as(p) for part, p in zip(self._slices, self._params, strict=True)]
        self._flat = torch.nn.Parameter(flat)
        super().__init__([self._flat], **kwargs)
        # A fused torch optimiser declares that its step undoes fp16 loss scaling itself, and
        # Lightning then refuses gradient clipping under any mixed precision, bf16 included (no
        # scaler there). Declared False, a GradScaler unscales the gradients before clipping, as
        # for any optimiser, and the fused step gets no scale to undo.
        self._step_supports_amp_scaling = False
        self.zero_grad()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zeroes the flat gradient; ``set_to_none`` is ignored (the views must stay attached).
        A gradient someone replaced or dropped is re-attached. To skip an update, set the grad
        of ``param_groups``' (flat) parameter to None after the backward."""
        for p, g in zip(self._params, self._grads, strict=True):
            if p.grad is not g:
                p.grad = g
        self._grad.zero_()
        self._flat.grad = self._grad

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        flat_state = sd["state"].get(0, {})
        state = {}
        if flat_state:
            for i, (part, p) in enumerate(zip(self._slices, self._params, strict=True)):
                state[i] = {
                    k: v[part].view_as(p)
                    if k != "step" and torch.is_tensor(v) and v.shape == self._flat.shape
                    # Own step tensors: the unfused optimiser increments each in place.
                    else (v.clone() if torch.is_tensor(v) else v)
                    for k, v in flat_state.items()
                }
        (group,) = sd["param_groups"]
        return {"state": state, "param_groups": [{**group, "params": list(range(len(self._params)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        ids = [i for g in groups for i in g["params"]]
        if len(groups) != 1 or len(ids) != len(self._params):
            raise ValueError(
                f"optimizer state: {len(groups)} group(s) of {len(ids)} parameters; this model has 1 of "
                f"{len(self._params)}"
            )
        per = state_dict["state"]
        flat_state = {}
        if per:
            missing = [i for i in ids if i not in per]
            if missing:
                raise ValueError(f"optimizer state: no state for parameter(s) {missing[:5]}")
            for k, v in per[ids[0]].items():
                if k != "step" and torch.is_tensor(v) and v.shape == self._params[0].shape:
                    v = torch.cat([per[i][k].reshape(-1).to(self._flat) for i in ids])
                flat_state[k] = v
        super().load_state_dict(
            {"state": {0: flat_state} if per else {}, "param_groups": [{**groups[0], "params": [0]}]}
        )


class FlatAdam(_FlatParameters, torch.optim.Adam):
    pass


class FlatAdamW(_FlatParameters, torch.optim.AdamW):
    pass


def keep_freed_memory() -> bool:
    """Stop glibc malloc from handing the memory a training step frees back to the OS.

    By default glibc serves blocks above an adaptive threshold (at most 32 MiB) with mmap and
    trims the heap once more than twice the last such block's size is free at its top; a training
    step frees its activations at the end, so the next step faults every page in again. Here
    every block comes from the heap (no mmap: an ensemble's activations exceed any threshold) and
    the heap is trimmed only above 1 GiB free. Process-wide; returns whether it applied (False
    off Linux/glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    # Setting the trim threshold also freezes glibc's adaptive mmap threshold; with mmap off
    # that threshold no longer matters.
    return bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 1 << 30))
