"""`icl probe RUN`: fresh prompts (PROBE domain) split by prompt, hidden states of the trained model
and of a randomly initialised model of the same architecture, probes for every target and its
control, the difference-in-differences score per layer, written as probe.json, probe.csv and
figures beside the model's error curve (docs/probing.md)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from icl import outputs
from icl.analysis.hidden import POSITIONS, collect, n_layers
from icl.analysis.probe import PROBES, SCORES, Split, check_split, did, group_targets, groups, score, split_prompts
from icl.analysis.probe_targets import TARGETS, TargetSet, control_label, control_r2, estimator_settings, refusal
from icl.errors import ICLError
from icl.fileio import atomic_write

MAX_PROMPTS = 1_000_000
CHUNK = 256  # prompts per forward pass when collecting hidden states
OUT_FLAG = "--out"
REPS = ("model", "baseline")  # the trained model; a randomly initialised one of the same architecture


@dataclasses.dataclass
class ProbeSettings:
    """What `icl probe` computes; ``layers`` and ``ks`` None mean every layer and the default i's."""

    layers: list[int] | None = None
    position: str = "y"
    ks: list[int] | None = None
    targets: list[str] | None = None  # None: every target that applies to the run's mixture
    n_prompts: int = 4096
    probes: tuple[str, ...] = ("ridge",)
    probe_seeds: int = 3
    prompts: str | None = None  # one class of the run's mixture; None: the whole mixture


def _ints(text: str, flag: str, allowed: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ICLError(f"{flag}: got {text!r}; allowed: {allowed}") from None
    if not values:
        raise ICLError(f"{flag}: got {text!r}; allowed: {allowed}")
    return sorted(set(values))


def parse_settings(
    layers: str,
    position: str,
    ks: str | None,
    targets: str | None,
    n_prompts: int,
    probe: str,
    probe_seeds: int,
    prompts: str | None = None,
) -> ProbeSettings:
    """The command line's values as ProbeSettings, each refused with one line naming what is allowed
    (the ranges that depend on the model are checked once it is loaded, by ``resolve``)."""
    if position not in POSITIONS:
        raise ICLError(f"--position: got {position!r}; allowed: {', '.join(POSITIONS)}")
    probes = {"both": ("ridge", "mlp"), **{name: (name,) for name in PROBES}}
    if probe not in probes:
        raise ICLError(f"--probe: got {probe!r}; allowed: {', '.join(probes)}")
    if not 10 <= n_prompts <= MAX_PROMPTS:
        raise ICLError(f"--n-prompts: got {n_prompts}; allowed: an integer in 10..{MAX_PROMPTS}")
    if not 1 <= probe_seeds <= 100:
        raise ICLError(f"--probe-seeds: got {probe_seeds}; allowed: an integer in 1..100")
    names = None
    if targets is not None:
        names = [t for t in targets.split(",") if t]
        bad = [t for t in names if t not in TARGETS] or ([] if names else [targets])
        if bad:
            raise ICLError(f"--targets: got {bad[0]!r}; allowed: a comma-separated list of {', '.join(TARGETS)}")
        names = list(dict.fromkeys(names))
    return ProbeSettings(
        layers=None if layers == "all" else _ints(layers, "--layers", "all or comma-separated layer numbers"),
        position=position,
        ks=None if ks is None else _ints(ks, "--ks", "comma-separated numbers of in-context examples"),
        targets=names,
        n_prompts=n_prompts,
        probes=probes[probe],
        probe_seeds=probe_seeds,
        prompts=prompts,
    )


def default_ks(n_dims: int, position: str, n_points: int) -> list[int]:
    """Four i's: about d / 2, d, halfway to the longest context, and the longest context."""
    high = n_points - 1 if position == "x" else n_points
    return sorted({min(high, max(2, n_dims // 2)), min(high, n_dims), (min(high, n_dims) + high) // 2, high})


def resolve(settings: ProbeSettings, total_layers: int, n_dims: int, n_points: int) -> tuple[list[int], list[int]]:
    """The layers and i's to probe, checked against the model (0 .. L layers) and the prompt length."""
    layers = list(range(total_layers)) if settings.layers is None else settings.layers
    bad = [layer for layer in layers if not 0 <= layer < total_layers]
    if bad:
        raise ICLError(f"--layers: got {bad[0]}; allowed: all or numbers in 0 (embedding) .. {total_layers - 1}")
    ks = default_ks(n_dims, settings.position, n_points) if settings.ks is None else settings.ks
    low, high = (0, n_points - 1) if settings.position == "x" else (1, n_points)
    bad = [k for k in ks if not low <= k <= high]
    if bad:
        raise ICLError(f"--ks: got {bad[0]}; allowed: numbers in {low} .. {high} for --position {settings.position}")
    return layers, ks


def baseline_model(model: torch.nn.Module, cfg) -> torch.nn.Module:
    """A randomly initialised model of the run's architecture, keyed by the run's seed."""
    from icl.models import build_model
    from icl.rng import Domain, Stream, derive_seed

    param = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, Domain.PROBE, Stream.INIT))
        fresh = build_model(dataclasses.replace(cfg.model), cfg.data.n_dims)
    return fresh.to(device=param.device, dtype=param.dtype).eval()


@torch.no_grad()
def error_curve(model: torch.nn.Module, xs: Tensor, ys: Tensor) -> dict[str, list[float]]:
    """Mean squared error at every number of in-context examples k = 0 .. N-1 on the probe prompts:
    the model and least squares."""
    from icl.baselines.linear import LeastSquares

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    preds = torch.cat(
        [
            model(xs[s : s + CHUNK].to(device, dtype), ys[s : s + CHUNK].to(device, dtype)).cpu()
            for s in range(0, len(xs), CHUNK)
        ]
    )
    out = {"k": list(range(xs.shape[1])), "model": ((preds.double() - ys.double()) ** 2).mean(0).tolist()}
    ls = LeastSquares().predict(xs, ys)
    out["least_squares"] = ((ls.double() - ys.double()) ** 2).mean(0).tolist()
    return out


def probe_representation(
    h: Tensor,
    targets: dict[str, tuple[str, Tensor, Tensor | None]],
    split: Split,
    probe: str,
    seed: int,
    probe_seed: int,
) -> dict[str, dict[str, dict[str, Tensor]]]:
    """Scores of one probe on hidden states h (L', P, K, E) for every target: name -> variant (real,
    control) -> score -> (L', K)."""
    n_layers_kept, _, n_ks, _ = h.shape
    fitted = PROBES[probe](groups(h), split, seed, probe_seed)
    out: dict[str, dict[str, dict[str, Tensor]]] = {}
    done: dict[int, dict[str, Tensor]] = {}  # a control shared by two targets is fit once
    for name, (kind, real, control) in targets.items():
        out[name] = {}
        for variant, values in (("real", real), ("control", control)):
            if values is None:
                continue
            if id(values) not in done:
                y = group_targets(values, n_layers_kept)
                pred, _ = fitted.predict(y)
                scores = score(kind, pred, y[:, split.test])
                done[id(values)] = {k: v.reshape(n_layers_kept, n_ks) for k, v in scores.items()}
            out[name][variant] = done[id(values)]
    return out


def _summary(per_seed: list[Tensor]) -> dict[str, Any]:
    """Mean and range over probe seeds of (L', K) arrays, as nested lists (NaN as null)."""
    stack = torch.stack(per_seed)
    return {"mean": _listed(stack.mean(0)), "low": _listed(stack.min(0).values), "high": _listed(stack.max(0).values)}


def _listed(t: Tensor) -> Any:
    return [_listed(row) for row in t] if t.ndim else (None if math.isnan(float(t)) else round(float(t), 6))


def run_probe(
    target: str | Path,
    settings: ProbeSettings,
    out: str | Path | None = None,
    device: str = "cpu",
    say: Callable[[str], None] = print,
) -> Path:
    """Probe the run or checkpoint ``target``; returns the output directory (default RUN/eval/probe)."""
    from icl.checkpoint.io import resolve_checkpoint
    from icl.checkpoint.load import load_model
    from icl.evaluation.provenance import checkpoint_info
    from icl.rng import Domain
    from icl.sampling import Sampler

    ckpt = resolve_checkpoint(target)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out = Path(out) if out else run_dir / outputs.EVAL_AREA / "probe"
    outputs.check_replaceable(out, outputs.EVAL, OUT_FLAG)
    model, cfg = load_model(ckpt, device=device)
    d, n_points = cfg.data.n_dims, cfg.data.n_points
    layers, ks = resolve(settings, n_layers(model), d, n_points)
    seed = cfg.eval.seed
    sampler = Sampler(cfg.data, seed)
    mixture = sampler.mixture.only(settings.prompts, "--prompts") if settings.prompts else None
    batch = sampler.sample_batch(
        0, batch_size=settings.n_prompts, domain=Domain.PROBE, n_points=n_points, n_dims=d, mixture=mixture
    )
    xs, ys = batch.xs, batch.ys
    target_set = TargetSet(xs, ys, batch.info, ks, seed)
    notes: list[str] = []
    names = []
    for name in settings.targets or list(TARGETS):
        reason = target_set.skip_reason(name)
        if reason:
            notes.append(reason)
        else:
            names.append(name)
    if not names:
        raise ICLError(f"--targets: none of {', '.join(settings.targets or TARGETS)} applies to this run's mixture")
    for note in notes:
        say(note)

    say(f"targets {', '.join(names)} at i = {', '.join(map(str, ks))} on {settings.n_prompts} prompts")
    values: dict[str, tuple[str, Tensor, Tensor | None]] = {}
    valid: dict[str, list[bool]] = {}
    controls: dict[str | None, tuple[Tensor, list[bool]] | None] = {None: None}  # one per re-paired estimator
    split0 = split_prompts(len(xs), seed, 0)
    predictability: dict[str, list[float | None]] = {}
    for name in names:
        est = TARGETS[name].control
        if est not in controls:
            controls[est] = target_set.control(name)
        real, control = target_set.values(name), controls[est]
        values[name] = (TARGETS[name].kind, real.float(), None if control is None else control[0].float())
        valid[name] = [False] * len(ks) if control is None else list(control[1])
        if control is None:
            continue
        r2 = control_r2(real, control[0], split0.train, split0.test)
        predictability[name] = _listed(r2)
        for j, k in enumerate(ks):
            message = refusal(float(r2[j]), name, k) if valid[name][j] else None
            if message:
                notes.append(message)
                say(message)
                valid[name][j] = False

    say(f"hidden states at layers {layers[0]}..{layers[-1]}, position {settings.position}: model and baseline")
    hidden = {
        "model": collect(model, xs, ys, layers, ks, settings.position, CHUNK),
        "baseline": collect(baseline_model(model, cfg), xs, ys, layers, ks, settings.position, CHUNK),
    }
    curve = error_curve(model, xs, ys)

    raw: dict[str, dict[str, dict[str, dict[str, dict[str, list[Tensor]]]]]] = {}
    sizes = {}
    for probe_seed in range(settings.probe_seeds):
        split = split_prompts(len(xs), seed, probe_seed)
        check_split(split, xs, ys)
        sizes = split.sizes()
        for probe in settings.probes:
            for rep in REPS:
                say(f"probe {probe}, seed {probe_seed}, {rep}")
                scores = probe_representation(hidden[rep], values, split, probe, seed, probe_seed)
                for name, variants in scores.items():
                    for variant, by_score in variants.items():
                        for score_name, arr in by_score.items():
                            slot = raw.setdefault(probe, {}).setdefault(name, {}).setdefault(rep, {})
                            slot.setdefault(variant, {}).setdefault(score_name, []).append(arr)

    results: dict[str, Any] = {}
    for probe, by_target in raw.items():
        results[probe] = {}
        for name, reps in by_target.items():
            entry: dict[str, Any] = {
                rep: {v: {s: _summary(a) for s, a in sc.items()} for v, sc in variants.items()}
                for rep, variants in reps.items()
            }
            if values[name][2] is not None:
                primary = next(iter(SCORES[values[name][0]]))
                mask = torch.tensor(valid[name])
                per_seed = [
                    torch.where(mask, did(mr, mc, br, bc), torch.nan)
                    for mr, mc, br, bc in zip(
                        reps["model"]["real"][primary],
                        reps["model"]["control"][primary],
                        reps["baseline"]["real"][primary],
                        reps["baseline"]["control"][primary],
                        strict=True,
                    )
                ]
                entry["did"] = {
                    "score": primary,
                    "by_layer_and_i": _summary(per_seed),
                    "by_layer": _summary([a.nanmean(1) for a in per_seed]),  # mean over the i's with a control
                }
            results[probe][name] = entry

    record = {
        "checkpoint": checkpoint_info(ckpt, model),
        "run": str(run_dir),
        "n_dims": d,
        "position": settings.position,
        "layers": layers,
        "ks": ks,
        "n_prompts": settings.n_prompts,
        "prompts": settings.prompts or "the run's mixture",
        "split": sizes,
        "probe_seeds": settings.probe_seeds,
        "probes": list(settings.probes),
        "seed": seed,
        "targets": {
            name: {
                "kind": values[name][0],
                "summary": TARGETS[name].summary,
                "scores": list(SCORES[values[name][0]]),
                "control": control_label(TARGETS[name]),
                "control_ks": [k for k, ok in zip(ks, valid[name], strict=True) if ok],
                "control_r2_from_target": predictability.get(name),
            }
            for name in names
        },
        **estimator_settings(),
        "error_curve": curve,
        "results": results,
        "notes": notes,
    }
    from icl.analysis.probe_plots import write_figures

    partial = outputs.begin(out, outputs.EVAL)
    try:
        atomic_write(partial / "probe.json", json.dumps(record, indent=1))
        atomic_write(partial / "probe.csv", to_csv(record))
        write_figures(record, partial)
    except BaseException:
        outputs.discard(partial)
        raise
    outputs.commit(partial, out, outputs.EVAL, OUT_FLAG)
    return out


def to_csv(record: dict[str, Any]) -> str:
    """One row per (probe, target, representation, variant, score, layer, i): mean, low, high over seeds."""
    rows = ["probe,target,representation,variant,score,layer,i,mean,low,high"]

    def cell(v: float | None) -> str:
        return "" if v is None else f"{v:.6g}"

    def emit(prefix: str, summary: dict[str, Any]) -> None:
        for a, layer in enumerate(record["layers"]):
            for b, k in enumerate(record["ks"]):
                vals = [summary[q][a][b] for q in ("mean", "low", "high")]
                rows.append(f"{prefix},{layer},{k}," + ",".join(cell(v) for v in vals))

    for probe, by_target in record["results"].items():
        for name, entry in by_target.items():
            for rep in REPS:
                for variant, scores in entry[rep].items():
                    for score_name, summary in scores.items():
                        emit(f"{probe},{name},{rep},{variant},{score_name}", summary)
            if "did" in entry:
                emit(f"{probe},{name},did,did,{entry['did']['score']}", entry["did"]["by_layer_and_i"])
    return "\n".join(rows) + "\n"
