"""`icl align SOURCES...`: representation alignment between checkpoints (hidden states at chosen
layers, or their function fingerprint) and algorithms (the true function, baselines), each
represented on the same P prompts after i in-context examples; max over layer pairs with a
permutation null per metric; algorithm agreement between every pair of predictors; optionally
alignment to reference algorithms against ICL error across a run's checkpoints. Writes
align.json, align.csv, agreement.csv, trajectory.csv and PNG figures to one output directory."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from icl import outputs
from icl.analysis.align_plots import plot_all
from icl.analysis.hidden import POSITIONS, collect, n_layers
from icl.analysis.null import align
from icl.analysis.similarity import DEFAULT_K, METRICS, build_metric, preprocess
from icl.baselines import BASELINES, build_baseline
from icl.checkpoint.io import LAST, STEP_FILE, resolve_checkpoint
from icl.checkpoint.load import load_model
from icl.config import Config
from icl.console import duration, say
from icl.errors import ICLError
from icl.evaluation.agreement import agreement_table, linearity, pair_label, weight_difference
from icl.evaluation.fingerprint import fingerprint, implied_weights, probe_queries, truth_fingerprint
from icl.fileio import atomic_write
from icl.rng import Domain
from icl.sampling import Batch, PretrainMixture, Sampler

OUT_FLAG = "--out"
TRUTH = "truth"  # the prompt's own function (noiseless), an algorithm beside the baselines
FINGERPRINT = "fingerprint"  # a checkpoint's layer spec for its function fingerprint
REPRESENTATIONS = ("fingerprint", "weights")  # how a predictor is represented (fingerprint.py)
DEFAULT_METRICS = ("mutual_knn", "cka", "cka_unbiased", "cknna")
MAX_PROMPTS = 4096  # the metrics hold N x N matrices per layer
AGREEMENT_PROMPTS = 256  # prompts of the implied-weight and linearity measures of agreement
Predict = Callable[[Tensor, Tensor], Tensor]


def algorithms() -> list[str]:
    """Algorithm source names: the true function and every registered baseline but checkpoint:PATH."""
    return [TRUTH] + [name for name in BASELINES if name != "checkpoint"]


@dataclasses.dataclass
class AlignSettings:
    """The options of `icl align` (docs/alignment.md); ``check`` refuses bad values in one line."""

    metrics: Sequence[str] = DEFAULT_METRICS
    neighbours: int = DEFAULT_K
    n_prompts: int = 1024
    context: int | None = None  # in-context examples i; default max(1, d // 2)
    position: str = "y"
    represent: str = "fingerprint"
    n_queries: int = 32
    n_perm: int = 100
    seed: int | None = None  # default: the first checkpoint's eval.seed
    steps: bool = False
    references: Sequence[str] = (TRUTH, "bayes")
    device: str = "cpu"
    prompts: str | None = None  # one class of the first run's mixture; None: the whole mixture

    def check(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ICLError(
                f"--metrics: got {','.join(self.metrics)!r}; allowed: a comma-separated subset of {', '.join(METRICS)}"
            )
        if not 1 <= self.neighbours:
            raise ICLError(f"--neighbours: got {self.neighbours}; allowed: an integer >= 1 and < --n-prompts")
        if not self.neighbours < self.n_prompts <= MAX_PROMPTS or self.n_prompts < 4:
            raise ICLError(
                f"--n-prompts: got {self.n_prompts}; allowed: an integer in max(4, --neighbours + 1)..{MAX_PROMPTS}"
            )
        if self.position not in POSITIONS:
            raise ICLError(f"--position: got {self.position!r}; allowed: {', '.join(POSITIONS)}")
        if self.represent not in REPRESENTATIONS:
            raise ICLError(f"--represent: got {self.represent!r}; allowed: {', '.join(REPRESENTATIONS)}")
        if self.n_queries < 1:
            raise ICLError(f"--n-queries: got {self.n_queries}; allowed: an integer >= 1")
        if self.n_perm < 0:
            raise ICLError(f"--permutations: got {self.n_perm}; allowed: an integer >= 0")
        bad = [r for r in self.references if r not in algorithms()]
        if bad:
            raise ICLError(f"--references: got {','.join(bad)}; allowed: {', '.join(algorithms())}")


@dataclasses.dataclass
class Spec:
    """One source as given: a checkpoint (``path``, ``layers`` None = all, or indices / fingerprint)
    or an algorithm (``name``)."""

    text: str
    name: str = ""
    path: Path | None = None
    layers: list[int | str] | None = None


@dataclasses.dataclass
class Source:
    label: str
    layers: list[str]
    feats: list[Tensor]  # one (P, E) per layer
    predict: Predict | None = None
    fp: Tensor | None = None  # (P, M) predictions at the probe queries


def parse_source(text: str) -> Spec:
    """``RUN[:LAYERS]`` (a run directory or .ckpt file; LAYERS: comma-separated layer indices,
    0 = embedding, or ``fingerprint``; default every layer) or an algorithm name."""
    if text in algorithms():
        return Spec(text, name=text)
    path, sep, layer_text = text.rpartition(":")
    if not sep or not Path(path).exists():
        path, layer_text = text, ""
    if not Path(path).exists():
        raise ICLError(
            f"source {text!r}: no such checkpoint or run directory, nor an algorithm; allowed: RUN[:LAYERS] "
            f"(LAYERS: comma-separated indices, 0 = embedding, or {FINGERPRINT}) or one of {', '.join(algorithms())}"
        )
    layers: list[int | str] | None = None
    if layer_text:
        layers = []
        for part in layer_text.split(","):
            if part == FINGERPRINT or part.isdigit():
                layers.append(part if part == FINGERPRINT else int(part))
            else:
                raise ICLError(
                    f"source {text!r}: layer {part!r}; allowed: comma-separated layer indices (0 = embedding) "
                    f"or {FINGERPRINT}"
                )
    return Spec(text, path=resolve_checkpoint(path), layers=layers)


def checkpoint_label(path: Path) -> str:
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run_dir.name if path.name == LAST else f"{run_dir.name}:{path.stem}"


def source_label(spec: Spec) -> str:
    """An algorithm's name, or the checkpoint's run (``run:step=...`` for a file other than
    last.ckpt) with its layer spec."""
    if spec.path is None:
        return spec.name
    layers = f":{','.join(map(str, spec.layers))}" if spec.layers else ""
    return checkpoint_label(spec.path) + layers


def build_predictor(name: str, prompts: PretrainMixture, training: PretrainMixture, batch: Batch) -> Predict:
    """The algorithm ``name`` as a predictor on this batch, drawn from ``prompts`` (the run's
    ``training`` mixture or one class of it); truth: the prompt's own noiseless function at every
    input."""
    if name == TRUTH:
        d = batch.info["n_dims"]
        return lambda xs, ys: prompts.evaluate(batch.info, xs[..., :d])
    cls = BASELINES[name]
    if cls.scenario_dependent:
        return cls.for_scenario(prompts, training).predict
    return build_baseline(name).predict


class Context:
    """The shared prompts, probe queries and settings every source is represented on."""

    def __init__(self, cfg: Config, settings: AlignSettings) -> None:
        self.cfg, self.settings = cfg, settings
        d, n = cfg.data.n_dims, cfg.data.n_points
        self.i = settings.context if settings.context is not None else max(1, d // 2)
        if not 1 <= self.i <= n - 1:  # the fingerprint's prompts hold i examples and the query
            raise ICLError(f"--context: got {self.i}; allowed: 1..{n - 1} (the prompts have {n} points)")
        self.seed = settings.seed if settings.seed is not None else cfg.eval.seed
        self.sampler = Sampler(cfg.data, self.seed)
        # the prompts' distribution: the run's mixture, or one class of it (--prompts)
        whole = self.sampler.mixture
        self.mixture = whole.only(settings.prompts, "--prompts") if settings.prompts else whole
        self.batch = self.sampler.sample_batch(
            0, batch_size=settings.n_prompts, domain=Domain.EVAL, n_points=n, n_dims=d, mixture=self.mixture
        )
        self.queries = probe_queries(cfg.data.inputs, settings.n_queries, d, d, self.seed)
        self.device = settings.device

    def fingerprint_of(self, name: str, predict: Predict) -> Tensor:
        if name == TRUTH:
            return truth_fingerprint(self.mixture, self.batch.info, self.queries, self.batch.info["n_dims"])
        return fingerprint(predict, self.batch.xs, self.batch.ys, self.i, self.queries)

    def represent(self, fp: Tensor) -> Tensor:
        return fp if self.settings.represent == "fingerprint" else implied_weights(fp, self.queries)

    def algorithm(self, name: str) -> Source:
        try:
            predict = build_predictor(name, self.mixture, self.sampler.mixture, self.batch)
            fp = self.fingerprint_of(name, predict)
        except ICLError as e:
            raise ICLError(f"source {name}: {e}") from None
        return Source(name, [self.settings.represent], [self.represent(fp)], predict, fp)

    def checkpoint(self, model, label: str, layers: list[int | str] | None) -> Source:
        """Hidden states at the requested layers; the model's fingerprint on all prompts where it is
        a layer, else on the first AGREEMENT_PROMPTS (for agreement only: it costs P x M
        forward passes of i + 1 points)."""
        wanted = list(range(n_layers(model))) if layers is None else list(layers)
        hidden = [layer for layer in wanted if layer != FINGERPRINT]
        feats: dict[int | str, Tensor] = {}
        if hidden:
            xs, ys = self.batch.xs.to(self.device), self.batch.ys.to(self.device)
            states = collect(model, xs, ys, hidden, [self.i], self.settings.position)[:, :, 0]
            feats.update(zip(hidden, states, strict=True))
        predict = _on_device(model.predict, self.device)
        rows = slice(None) if FINGERPRINT in wanted else slice(0, AGREEMENT_PROMPTS)
        fp = fingerprint(predict, self.batch.xs[rows], self.batch.ys[rows], self.i, self.queries)
        if FINGERPRINT in wanted:
            feats[FINGERPRINT] = self.represent(fp)
        names = [layer_name(layer) for layer in wanted]
        return Source(label, names, [feats[layer] for layer in wanted], predict, fp)

    def model_error(self, predict: Predict) -> float:
        """MSE at position i (i examples seen) on the shared prompts."""
        preds = predict(self.batch.xs, self.batch.ys)[:, self.i].double().cpu()
        return float(((preds - self.batch.ys[:, self.i].double()) ** 2).mean())


def layer_name(layer: int | str) -> str:
    return "emb" if layer == 0 else str(layer)


def _on_device(predict: Predict, device: str) -> Predict:
    return lambda xs, ys: predict(xs.to(device), ys.to(device)).cpu()


def load_checkpoint(spec: Spec, settings: AlignSettings, first: Config | None):
    model, cfg = load_model(spec.path, settings.device)
    if first is not None and cfg.data.n_dims != first.data.n_dims:
        raise ICLError(
            f"source {spec.text}: a model of {cfg.data.n_dims}-d inputs; allowed: checkpoints of the first "
            f"checkpoint's input dims ({first.data.n_dims})"
        )
    total = n_layers(model)
    bad = [layer for layer in spec.layers or [] if layer != FINGERPRINT and not 0 <= layer < total]
    if bad:
        raise ICLError(f"source {spec.text}: layers {bad}; allowed: 0 (embedding) .. {total - 1} or {FINGERPRINT}")
    return model, cfg


def align_sources(
    sources: list[Source],
    settings: AlignSettings,
    seed: int,
    pairs: list[tuple[int, int]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """{metric: [record per source pair]} with the max over layer pairs and its null; ``pairs``:
    indices into ``sources`` (default: every pair). Each side is prepared once per metric;
    ``progress`` gets a line per metric as it finishes."""
    start = time.monotonic()
    n = len(sources)
    pairs = pairs if pairs is not None else [(a, b) for a in range(n) for b in range(a + 1, n)]
    out: dict[str, list[dict[str, Any]]] = {}
    for name in settings.metrics:
        metric = build_metric(name, settings.neighbours)
        sides = [metric.stack([metric.prepare(preprocess(f)) for f in s.feats]) for s in sources]
        records = []
        for key, (a, b) in enumerate(pairs):
            result = align(metric, sides[a], sides[b], settings.n_perm, seed, key)
            records.append(
                {"a": sources[a].label, "b": sources[b].label} | result.record(sources[a].layers, sources[b].layers)
            )
        out[name] = records
        del sides
        if progress is not None:
            progress(
                f"[{len(out)}/{len(settings.metrics)}] {name}: {len(pairs)} pairs, {duration(time.monotonic() - start)}"
            )
    return out


def agreement(sources: list[Source], ctx: Context) -> dict[str, Any]:
    """Akyurek et al.'s agreement between every pair of predictor sources: prediction differences
    on all prompts, implied weights and linearity on the first AGREEMENT_PROMPTS."""
    named = {s.label: s for s in sources if s.predict is not None}
    preds = {label: s.predict(ctx.batch.xs, ctx.batch.ys).double().cpu() for label, s in named.items()}
    labels = list(named)
    fps = {label: s.fp[:AGREEMENT_PROMPTS] for label, s in named.items()}
    weights = {
        pair_label(a, b): weight_difference(fps[a], fps[b], ctx.queries)
        for i, a in enumerate(labels)
        for b in labels[i + 1 :]
    }
    return {
        "prediction_difference": agreement_table(preds),
        "weight_difference": weights,
        "linearity_r2": {label: linearity(fp, ctx.queries) for label, fp in fps.items()},
    }


def step_checkpoints(spec: Spec) -> list[tuple[int, Path]]:
    """(step, file) of a run's periodic checkpoints, oldest first."""
    ckpt_dir = spec.path.parent
    found = [(int(m.group(1)), p) for p in ckpt_dir.glob("step=*.ckpt") if (m := STEP_FILE.fullmatch(p.name))]
    return sorted(found)


def trajectory(specs: list[Spec], ctx: Context, settings: AlignSettings, refs: list[Source]) -> list[dict[str, Any]]:
    """Alignment of every periodic checkpoint of each checkpoint source to each reference, with the
    checkpoint's MSE at i examples."""
    rows = []
    for spec in specs:
        run = checkpoint_label(spec.path).partition(":")[0]
        for step, path in step_checkpoints(spec):
            model, _ = load_checkpoint(dataclasses.replace(spec, path=path), settings, ctx.cfg)
            source = ctx.checkpoint(model, f"{run}@{step}", spec.layers)
            error = ctx.model_error(source.predict)
            pairs = [(0, j) for j in range(1, len(refs) + 1)]
            for name, records in align_sources([source, *refs], settings, ctx.seed, pairs).items():
                for rec in records:
                    rows.append(
                        {
                            "run": run,
                            "step": step,
                            "reference": rec["b"],
                            "metric": name,
                            "mse": error,
                            "raw": rec["raw"],
                            "calibrated": rec["calibrated"],
                            "p_value": rec["p_value"],
                            "best_layer": rec["best_layers"][0],
                        }
                    )
    return rows


def run_align(texts: list[str], settings: AlignSettings, out: Path | None) -> tuple[Path, dict[str, Any]]:
    """Compute everything and write it to ``out`` (default: the first checkpoint's run
    directory/eval/align); return (out, the align.json record)."""
    settings.check()
    specs = [parse_source(t) for t in texts]
    ckpts = [s for s in specs if s.path is not None]
    if not ckpts:
        raise ICLError("sources: no checkpoint; allowed: at least one RUN[:LAYERS] (its data defines the prompts)")
    if len(specs) < 2 and not settings.steps:
        raise ICLError("sources: got one; allowed: two or more sources (or one checkpoint with --steps)")
    if settings.steps and not any(step_checkpoints(s) for s in ckpts):
        raise ICLError(
            f"--steps: no checkpoints/step=*.ckpt beside {ckpts[0].path}; allowed: a run with periodic checkpoints"
        )
    labels = [source_label(spec) for spec in specs]
    if len(set(labels)) != len(labels):
        raise ICLError(f"sources: {', '.join(texts)} name the same source twice; allowed: distinct sources")
    first = ckpts[0].path
    run_dir = first.parent.parent if first.parent.name == "checkpoints" else first.parent
    out = Path(out) if out is not None else run_dir / "eval" / "align"
    outputs.check_replaceable(out, outputs.EVAL, OUT_FLAG)
    models: dict[str, tuple[Any, Config]] = {}
    cfg0: Config | None = None
    for spec in ckpts:
        models[spec.text] = load_checkpoint(spec, settings, cfg0)
        cfg0 = cfg0 or models[spec.text][1]
    ctx = Context(cfg0, settings)
    sources = [
        ctx.algorithm(spec.name) if spec.path is None else ctx.checkpoint(models[spec.text][0], label, spec.layers)
        for spec, label in zip(specs, labels, strict=True)
    ]
    record: dict[str, Any] = {
        "sources": [
            {"label": s.label, "kind": "algorithm" if spec.path is None else "checkpoint", "layers": s.layers}
            | {"text": spec.text, "path": str(spec.path) if spec.path else None}
            for s, spec in zip(sources, specs, strict=True)
        ],
        "settings": dataclasses.asdict(settings)
        | {
            "context": ctx.i,
            "seed": ctx.seed,
            "metrics": list(settings.metrics),
            "references": list(settings.references),
        },
        "prompts": "the first checkpoint's training distribution, EVAL domain, step 0",
        "alignment": align_sources(sources, settings, ctx.seed, progress=say) if len(sources) > 1 else {},
        "agreement": agreement(sources, ctx),
    }
    if settings.steps:
        refs = [s for s in sources if s.label in settings.references]
        refs += [ctx.algorithm(r) for r in settings.references if r not in {s.label for s in refs}]
        record["trajectory"] = trajectory([s for s in ckpts if step_checkpoints(s)], ctx, settings, refs)
    partial = outputs.begin(out, outputs.EVAL)
    try:
        write_outputs(record, partial)
    except BaseException:
        outputs.discard(partial)
        raise
    outputs.commit(partial, out, outputs.EVAL, OUT_FLAG)
    return out, record


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def write_outputs(record: dict[str, Any], out: Path) -> None:
    atomic_write(out / "align.json", json.dumps(record, indent=1, allow_nan=True) + "\n")
    rows = [
        {
            "metric": metric,
            "a": r["a"],
            "b": r["b"],
            "raw": r["raw"],
            "calibrated": r["calibrated"],
            "p_value": r["p_value"],
            "null_mean": r["null_mean"],
            "best_layer_a": r["best_layers"][0],
            "best_layer_b": r["best_layers"][1],
        }
        for metric, recs in record["alignment"].items()
        for r in recs
    ]
    atomic_write(out / "align.csv", _csv(rows))
    agree = record["agreement"]
    atomic_write(
        out / "agreement.csv",
        _csv(
            [
                {"pair": pair, "k": k, "sq_prediction_difference": v}
                for pair, curve in agree["prediction_difference"].items()
                for k, v in enumerate(curve)
            ]
        ),
    )
    if "trajectory" in record:
        atomic_write(out / "trajectory.csv", _csv(record["trajectory"]))
    plot_all(record, out)
