"""Pretraining mixtures and ``Sampler.sample_batch``: the only place where random draws happen.
A batch is a pure function of (seed, step, domain); inputs, mixture choice, function
parameters and label noise come from separate streams."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from icl.curriculum import Curriculum, CurriculumConfig
from icl.errors import ICLError
from icl.inputs import InputConfig, sample_inputs
from icl.rng import Domain, Stream, generator
from icl.tasks import FunctionClass, Params, build_task

MIXINGS = ("per_sequence", "per_batch")
# Each loader worker is a process holding its own interpreter and torch; a few keep any device fed
# (sampling is <= 1% of a step), and thousands would exhaust the process table before memory.
MAX_WORKERS = 128


@dataclasses.dataclass
class ComponentConfig:
    """One entry of a pretraining mixture: a registered function class, its weight, optional
    label noise y = f(x) + noise_std * eps, and the class's own parameters."""

    name: str = "dense_linear"
    weight: float = 1.0
    noise_std: float = 0.0
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Component:
    task: FunctionClass
    weight: float
    noise_std: float
    label: str  # display name, e.g. "sparse_linear(nnz=2)"; never parsed


@dataclasses.dataclass
class Batch:
    """xs (B, N, D), ys (B, N) and the ground truth the model never sees: ``info`` holds
    ``component`` (B,) ids into the mixture, ``params`` (one dict per component, each with
    leading dim B; None for zero-weight components), ``noise_std`` (B,) and ``n_dims`` (the
    active input dims; coordinates beyond them are 0)."""

    xs: Tensor
    ys: Tensor
    info: dict[str, Any]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.xs.to(device), self.ys.to(device), _map_tensors(self.info, lambda t: t.to(device)))

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(self.xs[start:stop], self.ys[start:stop], _map_tensors(self.info, lambda t: t[start:stop]))


def _map_tensors(obj: Any, fn) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


class PretrainMixture:
    """A distribution over function classes. ``per_sequence`` (default) draws the class of
    every sequence independently with probabilities ``weights``; ``per_batch`` draws one class
    per batch (Panwar et al.'s scheme). A single task is a one-component mixture."""

    def __init__(self, components: list[Component], mixing: str = "per_sequence") -> None:
        if not components:
            raise ICLError("data.mixture: got an empty list; allowed: one or more {name, weight, params}")
        if mixing not in MIXINGS:
            raise ICLError(f"data.mixing: got {mixing!r}; allowed: {', '.join(MIXINGS)}")
        weights = [c.weight for c in components]
        # Written so that NaN fails: a NaN weight would otherwise pass both tests.
        if not (all(0 <= w < math.inf for w in weights) and abs(sum(weights) - 1.0) <= 1e-6):
            raise ICLError(f"data.mixture weights: got {weights}; allowed: non-negative numbers summing to 1")
        self.components = components
        self.mixing = mixing

    @classmethod
    def from_config(
        cls, specs: list[ComponentConfig] | list[dict], n_dims: int, mixing: str = "per_sequence"
    ) -> PretrainMixture:
        components = []
        for i, spec in enumerate(specs):
            spec = spec if isinstance(spec, ComponentConfig) else ComponentConfig(**spec)
            if not 0 <= spec.noise_std < math.inf:  # NaN noise would silently mean no noise
                raise ICLError(f"data.mixture[{i}].noise_std: got {spec.noise_std}; allowed: a finite number >= 0")
            try:
                task = build_task(spec.name, spec.params)
                task.check(n_dims)
            except ICLError as e:
                raise ICLError(f"data.mixture[{i}]: {e}") from None
            label = spec.name + (
                "(" + ", ".join(f"{k}={v}" for k, v in spec.params.items() if not isinstance(v, (list, dict))) + ")"
                if spec.params
                else ""
            )
            components.append(Component(task, float(spec.weight), float(spec.noise_std), label))
        return cls(components, mixing)

    def component(self, name: str) -> Component | None:
        """The first component of class ``name``, if any."""
        return next((c for c in self.components if c.task.name == name), None)

    def only(self, name: str, flag: str) -> PretrainMixture:
        """This mixture's first component of class ``name`` alone, at weight 1 (prompts from one
        class of a run's mixture); ``flag`` names the option in the refusal."""
        comp = self.component(name)
        if comp is None:
            names = ", ".join(dict.fromkeys(c.task.name for c in self.components))
            raise ICLError(f"{flag}: got {name!r}; allowed: a class of the run's mixture ({names})")
        return PretrainMixture([dataclasses.replace(comp, weight=1.0)], self.mixing)

    def sample(
        self, xs: Tensor, seed: int, step: int, domain: Domain, weights: list[float] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        """ys (B, N) and info for inputs ``xs`` (B, N, d_active); ``weights`` replaces the
        mixture's own (a curriculum's weights at this step)."""
        B, N, d = xs.shape
        dev = xs.device
        g_mix = generator(seed, step, Stream.MIXTURE, domain=domain, device=dev)
        w = [c.weight for c in self.components] if weights is None else weights
        probs = torch.tensor(w, device=dev, dtype=torch.float32)
        if len(self.components) == 1:
            ids = torch.zeros(B, dtype=torch.long, device=dev)
        elif self.mixing == "per_sequence":
            ids = torch.multinomial(probs, B, replacement=True, generator=g_mix)
        else:
            ids = torch.multinomial(probs, 1, generator=g_mix).expand(B).contiguous()
        ys = torch.zeros(B, N, device=dev, dtype=xs.dtype)
        noise_std = torch.zeros(B, device=dev, dtype=xs.dtype)
        params: list[Params | None] = []
        for k, comp in enumerate(self.components):
            if w[k] == 0:
                params.append(None)
                continue
            g = generator(seed, step, Stream.PARAMS, substream=k, domain=domain, device=dev)
            p = comp.task.sample_params(B, d, g)
            params.append(p)
            mask = ids == k
            ys = torch.where(mask[:, None], comp.task.apply(p, xs), ys)
            noise_std = torch.where(mask, torch.full_like(noise_std, comp.noise_std), noise_std)
        if any(c.noise_std > 0 for c in self.components):
            g_noise = generator(seed, step, Stream.NOISE, domain=domain, device=dev)
            ys = ys + noise_std[:, None] * torch.randn(B, N, generator=g_noise, device=dev, dtype=xs.dtype)
        return ys, {"component": ids, "params": params, "noise_std": noise_std, "n_dims": d}

    def evaluate(self, info: dict[str, Any], xs: Tensor) -> Tensor:
        """Noiseless f(xs) for the functions of a sampled batch (``info`` from ``sample``), at
        new inputs ``xs`` (B, M, d_active): queries off the prompt, prediction sweeps."""
        ys = torch.zeros(xs.shape[:2], device=xs.device, dtype=xs.dtype)
        for k, (comp, p) in enumerate(zip(self.components, info["params"], strict=True)):
            if p is not None:
                ys = torch.where((info["component"] == k)[:, None], comp.task.apply(p, xs), ys)
        return ys


@dataclasses.dataclass
class DataConfig:
    """What the model is trained on. ``n_dims`` / ``n_points`` are the full input dimension
    and prompt length (the curriculum's end values)."""

    n_dims: int = 20
    n_points: int = 41
    batch_size: int = 64
    mixture: list[ComponentConfig] = dataclasses.field(default_factory=lambda: [ComponentConfig()])
    mixing: str = "per_sequence"
    inputs: InputConfig = dataclasses.field(default_factory=InputConfig)
    curriculum: CurriculumConfig = dataclasses.field(default_factory=CurriculumConfig)
    num_workers: int = 0  # DataLoader workers (0: sample in the training process)


class Sampler:
    """Everything needed to draw batches: mixture, input distribution and curriculum."""

    def __init__(self, cfg: DataConfig, seed: int) -> None:
        for field in ("n_dims", "n_points", "batch_size"):
            if getattr(cfg, field) < 1:
                raise ICLError(f"data.{field}: got {getattr(cfg, field)}; allowed: an integer >= 1")
        if not 0 <= cfg.num_workers <= MAX_WORKERS:
            raise ICLError(f"data.num_workers: got {cfg.num_workers}; allowed: an integer in 0..{MAX_WORKERS}")
        cfg.inputs.check()
        self.cfg = cfg
        self.seed = seed
        self.mixture = PretrainMixture.from_config(list(cfg.mixture), cfg.n_dims, cfg.mixing)
        self.curriculum = Curriculum.build(
            cfg.curriculum, cfg.n_dims, cfg.n_points, [c.weight for c in self.mixture.components]
        )

    def sample_batch(
        self,
        step: int,
        batch_size: int | None = None,
        domain: Domain = Domain.TRAIN,
        device: torch.device | str = "cpu",
        n_points: int | None = None,
        n_dims: int | None = None,
        inputs: InputConfig | None = None,
        mixture: PretrainMixture | None = None,
    ) -> Batch:
        """The batch for ``step``: a pure function of (seed, step, domain, arguments).

        Evaluation passes ``domain=Domain.EVAL`` and may override the prompt length, the
        active dims, the input distribution or the mixture (out-of-distribution scenarios).
        """
        d_active, points = self.curriculum.at(step)
        d_active = n_dims or d_active
        points = n_points or points
        B = batch_size or self.cfg.batch_size
        g_in = generator(self.seed, step, Stream.INPUTS, domain=domain, device=device)
        xs = sample_inputs(inputs or self.cfg.inputs, B, points, d_active, g_in)
        # The weight ramp shapes training only; evaluation samples the mixture's own weights.
        weights = self.curriculum.weights_at(step) if mixture is None and domain == Domain.TRAIN else None
        ys, info = (mixture or self.mixture).sample(xs, self.seed, step, domain, weights)
        if d_active < self.cfg.n_dims:
            xs = torch.nn.functional.pad(xs, (0, self.cfg.n_dims - d_active))
        return Batch(xs, ys, info)
