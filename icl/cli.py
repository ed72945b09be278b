"""`icl train ...`: parse arguments, load the config, call one function. Bad input ends in one
line on stderr and exit code 2, never a traceback; the other exit codes are in icl/errors.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from icl.errors import ICLError, WriteError

# Each command imports its own stack when it runs, so `icl --help` and a bad argument answer
# without loading torch, Lightning or the evaluation code.


class _Parser(argparse.ArgumentParser):
    # Called before help is printed: help built from the registries, which need torch, is filled
    # in only when asked for.
    help_hook = None

    def error(self, message: str) -> None:  # one line instead of usage + message
        raise ICLError(f"{message} (see `{self.prog} --help`)")

    def format_help(self) -> str:
        if self.help_hook is not None:
            self.help_hook(self)
        return super().format_help()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("icl")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from icl import __version__

        return __version__


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"icl {_version()}")
        parser.exit()


def _summary(obj) -> str:
    """The first line of ``obj``'s docstring ("" without one)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def _registries() -> list[tuple[str, dict[str, str]]]:
    """(section title, name -> one-line description) for every registry a config or `icl eval` names."""
    from icl.baselines import BASELINES
    from icl.evaluation.queries import QUERY_SHIFTS
    from icl.evaluation.scenarios import SCENARIOS, suites
    from icl.tasks import TASKS

    return [
        ("function classes (data.mixture[].name)", {n: _summary(c) for n, c in TASKS.items()}),
        ("baselines (--baselines, eval.baselines)", {n: _summary(c) for n, c in BASELINES.items()}),
        ("suites (--suite, eval.periodic_suite)", {n: ", ".join(f) for n, f in suites().items()}),
        ("scenario families (--suite)", {n: _summary(f) for n, f in SCENARIOS.items()}),
        ("query shifts", {n: _summary(f) for n, f in QUERY_SHIFTS.items()}),
    ]


def cmd_list(args: argparse.Namespace) -> int:
    if args.items:
        raise ICLError(f"unrecognized arguments: {' '.join(args.items)} (see `icl list --help`)")
    for i, (title, entries) in enumerate(_registries()):
        print(("\n" if i else "") + f"{title}:")
        width = max(map(len, entries), default=0)
        for name, text in entries.items():
            print(f"  {name:<{width}}  {text}".rstrip())
    return 0


def _eval_help(parser: argparse.ArgumentParser) -> None:
    from icl.baselines import BASELINES
    from icl.evaluation.scenarios import SCENARIOS, suites

    for action in parser._actions:
        if action.dest == "suite":
            action.help = (
                f"a suite ({', '.join(suites())}) or one scenario family ({', '.join(SCENARIOS)}), or a "
                "suite file (*.yaml, docs/extending.md); default: in_distribution"
            )
        elif action.dest == "baselines":
            names = [n for n in BASELINES if n != "checkpoint"]
            action.help = (
                f"comma-separated baselines ({', '.join(names)}; default: eval.baselines of the run's config); "
                "checkpoint:PATH adds a trained model (run directory or .ckpt) as a baseline"
            )


def _split_args(items: list[str]) -> tuple[list[str], list[str]]:
    files, overrides = [], []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif item.endswith((".yaml", ".yml")):
            files.append(item)
        else:
            raise ICLError(f"argument {item!r}: allowed: a YAML config file (*.yaml) or a key=value override")
    return files, overrides


def cmd_train(args: argparse.Namespace) -> int:
    from icl import runs
    from icl.config import load_config

    files, overrides = _split_args(args.items)
    if args.resume:
        if files:
            raise ICLError(
                "--resume takes the run's own config.yaml; give only key=value overrides (e.g. train.steps=20000)"
            )
        run_dir = Path(args.resume)
        cfg = runs.load_run_config(run_dir, overrides)
    else:
        cfg = load_config(files, overrides)
        run_dir = runs.prepare_new_run(cfg, args.run_dir, args.overwrite)
    records = runs.train(cfg, run_dir, resume=bool(args.resume), evaluate=not args.no_eval)
    _print_records(records, cfg.data.n_dims, run_dir / "eval" / "in_distribution")
    return 0


def _print_records(records: dict, n_dims: int, out: Path, written: str = "written to") -> None:
    from icl.evaluation.report import METRIC_LABEL

    for name, rec in records.items():
        curves = rec["curves"]
        ks = [k for k in (n_dims, 2 * n_dims) if k < len(rec["k"])] or [len(rec["k"]) - 1]
        parts = [f"{p} " + " ".join(f"k={k}:{curves[p]['mean'][k]:.4f}" for k in ks) for p in curves]
        label = {"mse": "MSE", "mse_over_d": "MSE/d"}[rec["convention"]]
        if rec.get("metric", "mse") != "mse":  # classification: the 0/1 error of sign(prediction)
            label = METRIC_LABEL.get(rec["metric"], rec["metric"])
        print(f"{name} ({label}): " + " | ".join(parts))
    if records:
        print(f"evaluation {written} {out} (summary.md, *.json, *.csv, *.png, *.pdf)")


def cmd_eval(args: argparse.Namespace) -> int:
    from icl.eval_config import check_eval_overrides
    from icl.plugins import recorded_imports
    from icl.suite_spec import check_suite_early, suite_label

    # Before torch and the checkpoint are loaded: the overrides' keys, and the suite (a file's
    # shape; a name against the shipped ones, where no user module may register more).
    overrides = check_eval_overrides(args.items)
    user_modules = recorded_imports(args.target) != [] or any(o.startswith("imports=") for o in overrides)
    check_suite_early(args.suite, user_modules)

    from icl import outputs
    from icl.checkpoint.io import resolve_checkpoint
    from icl.checkpoint.load import load_model
    from icl.config import load_config
    from icl.evaluation.provenance import checkpoint_info
    from icl.evaluation.run import evaluate_suite

    ckpt = resolve_checkpoint(args.target)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out = Path(args.out) if args.out else run_dir / "eval" / suite_label(args.suite)
    outputs.check_replaceable(out, outputs.EVAL, "--out")  # before the model is loaded and evaluated
    if args.log_to_run:  # the run's TensorBoard and wandb, checked before the evaluation (icl.trackers)
        from icl.evaluation.provenance import checkpoint_step
        from icl.trackers import run_trackers

        step = checkpoint_step(ckpt) or 0
        trackers = run_trackers(run_dir, step)
    model, cfg = load_model(ckpt, device=args.device)
    cfg = load_config([], overrides, base=cfg) if overrides else cfg  # the run's config, eval settings changed
    baselines = None if args.baselines is None else [b for b in args.baselines.split(",") if b]
    records = evaluate_suite(
        model,
        cfg,
        args.suite,
        out,
        baselines=baselines,
        n_prompts=args.n_prompts,
        convention=args.convention,
        check_memory=True,
        checkpoint=checkpoint_info(ckpt, model),
        reuse=not args.recompute,
    )
    if records.reused:
        print(f"{out} already holds this checkpoint's evaluation with these settings: reused (--recompute to redo it)")
    _print_records(records, cfg.data.n_dims, out, "reused from" if records.reused else "written to")
    if args.log_to_run and trackers:
        from icl.trackers import close_loggers, log_suite

        log_suite(trackers, records, step, out, suite_label(args.suite))
        close_loggers(trackers)
        print(f"evaluation logged at step {step} to {', '.join(lg.label for lg in trackers)}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from icl.checkpoint.reference import import_reference

    if args.items:
        raise ICLError(f"unrecognized arguments: {' '.join(args.items)} (see `icl import --help`)")
    done = import_reference(args.source, args.conf, args.out)
    for note in done.notes:
        print(f"icl: note: {note}", file=sys.stderr)
    print(f"imported {done.source} (reference task {done.task} as {done.mixture}) into {done.run_dir}")
    print(f"evaluate it with: icl eval {done.run_dir} --convention mse_over_d [--suite SUITE]")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from icl import sweeps

    sweep = sweeps.load_sweep(args.file)
    if args.point and args.members:
        raise ICLError("--point and --members: allowed: one of them")
    extra = list(args.set or [])
    if not (args.point or args.members):  # key=value after the file: overrides for every point
        files, extra_items = _split_args(args.items)
        if files:
            raise ICLError(f"arguments {' '.join(files)}: allowed after the sweep file: key=value overrides")
        extra += extra_items
    bad = [item for item in extra if "=" not in item]
    if bad:
        raise ICLError(f"--set {bad[0]!r}: allowed: key=value, e.g. train.steps=100")
    sweep.set_extra(extra)
    if args.point:
        files, overrides = _split_args(args.items)
        print(f"{sweep.name}: {sweeps.run_point(sweep, files, overrides)}", file=sys.stderr)
        return 0
    if args.members:
        return sweeps.run_members(sweep, args.items)
    if args.wandb:
        path = sweeps.register(sweep, args.project, args.entity)
        print(f"registered W&B sweep {path}; on each machine, from the repository root: wandb agent {path}")
        return 0
    return sweeps.run_local(sweep, args.workers, args.dry_run, args.ensemble)


def cmd_report(args: argparse.Namespace) -> int:
    from icl.report.writer import write_report

    if args.items:
        raise ICLError(f"unrecognized arguments: {' '.join(args.items)} (see `icl report --help`)")
    out = write_report(
        [Path(d) for d in args.sweep_dirs],
        Path(args.out) if args.out else None,
        args.n_prompts,
        args.device,
        args.yscale,
    )
    print(f"report written to {out} (report.md, *.csv, *.png, *.pdf)")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    if args.items:
        raise ICLError(f"unrecognized arguments: {' '.join(args.items)} (see `icl probe --help`)")
    from icl.analysis.probe_run import parse_settings, run_probe

    settings = parse_settings(
        args.layers, args.position, args.ks, args.targets, args.n_prompts, args.probe, args.probe_seeds, args.prompts
    )
    out = run_probe(args.target, settings, args.out, args.device)
    print(f"probes written to {out} (probe.json, probe.csv, probe_*.png)")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    if args.items:
        raise ICLError(f"unrecognized arguments: {' '.join(args.items)} (see `icl compose --help`)")
    if args.n_prompts < 1:
        raise ICLError(f"--n-prompts: got {args.n_prompts}; allowed: an integer >= 1")
    if not args.tau > 0:
        raise ICLError(f"--tau: got {args.tau}; allowed: a number > 0")
    from icl.evaluation.composition import report_run

    out = Path(args.out) if args.out else Path(args.target) / "eval" / "composition"
    report_run(args.target, out, n_context=args.k, n_prompts=args.n_prompts, tau=args.tau)
    print(f"composition metrics written to {out} (composition.json, composition.md)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from icl.bench.run import run

    if args.items:
        raise ICLError(f"unrecognized arguments: {' '.join(args.items)} (see `icl bench --help`)")
    run(args)
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    if args.items:
        raise ICLError(f"unrecognized arguments: {' '.join(args.items)} (see `icl align --help`)")
    from icl.analysis.align_run import AlignSettings, run_align

    settings = AlignSettings(
        metrics=[m for m in args.metrics.split(",") if m],
        neighbours=args.neighbours,
        n_prompts=args.n_prompts,
        context=args.context,
        position=args.position,
        represent=args.represent,
        n_queries=args.n_queries,
        n_perm=args.permutations,
        seed=args.seed,
        steps=args.steps,
        references=[r for r in args.references.split(",") if r],
        device=args.device,
        prompts=args.prompts,
    )
    out, record = run_align(args.sources, settings, Path(args.out) if args.out else None)
    for metric, recs in record["alignment"].items():
        for r in recs:
            scores = f"raw {r['raw']:.4f}, calibrated {r['calibrated']:.4f}, p {r['p_value']:.3g}"
            print(f"{metric} {r['a']} vs {r['b']}: {scores}")
    print(f"alignment written to {out} (align.json, align.csv, agreement.csv, *.png)")
    return 0


def _prompts_option(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument(
        "--prompts",
        help=f"one class of {whose} mixture to draw the prompts from, e.g. sparse_linear (default: the whole mixture)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="icl", description="In-context learning of function classes with transformers.")
    parser.add_argument("--version", action=_VersionAction, help="print `icl VERSION` and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train a model on a pretraining mixture, then evaluate it")
    p.add_argument("items", nargs="*", help="YAML config files (merged left to right) and key=value overrides")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--run-dir", help="where to write the run (default: OUT_DIR/NAME from the config)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-eval", action="store_true", help="skip the end-of-training evaluation")
    p.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="evaluate a checkpoint on a suite of scenarios")
    e.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT")
    e.add_argument(
        "items", nargs="*", metavar="KEY=VALUE", help="evaluation settings for this evaluation: eval.* and imports"
    )
    e.help_hook = _eval_help  # --suite and --baselines list the registries' names
    e.add_argument(
        "--suite",
        default="in_distribution",
        help="a suite or one scenario family (`icl list`), or a suite file (*.yaml, docs/extending.md)",
    )
    e.add_argument("--baselines", help="comma-separated baselines (`icl list`)")
    e.add_argument("--n-prompts", type=int, help="prompts per scenario (default: eval.n_prompts)")
    e.add_argument("--convention", default="mse", help="mse (raw, paper 1) or mse_over_d (paper 2)")
    e.add_argument("--out", help="output directory (default: RUN_DIR/eval/SUITE)")
    e.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    e.add_argument(
        "--recompute",
        action="store_true",
        help="evaluate even where --out already holds this checkpoint's evaluation with the same settings",
    )
    e.add_argument(
        "--log-to-run",
        action="store_true",
        help="also log the curves and figures to the run's TensorBoard and wandb run (its train.loggers); "
        "docs/tracking.md",
    )
    e.set_defaults(func=cmd_eval, items=[])
    m = sub.add_parser(
        "import", help="a checkpoint of Garg et al.'s reference code as an icl run directory; docs/importing.md"
    )
    m.add_argument("source", metavar="SRC", help="a state.pt or model_<step>.pt, or the reference run directory")
    m.add_argument("--conf", help="the reference config.yaml (default: the config.yaml beside the checkpoint)")
    m.add_argument("--out", required=True, metavar="RUN_DIR", help="the icl run directory to write (new or empty)")
    m.set_defaults(func=cmd_import, items=[])
    b = sub.add_parser("bench", help="training throughput against the HuggingFace GPT-2 reference; docs/performance.md")
    b.add_argument(
        "--presets", default="tiny,small,standard", help="comma-separated model presets of configs/model/ (tiny, ...)"
    )
    b.add_argument("--shapes", default="paper2,curriculum_start", help="paper2 (d=20, N=41), curriculum_start (5, 11)")
    b.add_argument("--repeats", type=int, default=5, help="interleaved repeats per case; medians are reported")
    b.add_argument("--target-s", type=float, default=0.5, help="seconds of steps per side and repeat")
    b.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    b.add_argument("--no-reference", dest="reference", action="store_false", help="skip the HuggingFace reference")
    b.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile'd side")
    b.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory subprocesses")
    b.add_argument("--no-loop", dest="loop", action="store_false", help="skip the Lightning loop measurement")
    b.add_argument("--loop-steps", type=int, default=100, help="steps of the Lightning loop measurement")
    b.add_argument("--no-eval", dest="eval", action="store_false", help="skip the evaluation-suite timing")
    b.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bf16 autocast report")
    b.add_argument("--bf16-steps", type=int, default=300, help="steps of the bf16 vs fp32 loss comparison")
    b.add_argument(
        "--ensemble",
        action="store_true",
        help="also measure ensembles (M members as one stacked module) per case against one solo process "
        "and two single-thread solo processes",
    )
    b.add_argument("--members", default="1,2,5,10", help="with --ensemble: comma-separated member counts M")
    b.add_argument(
        "--device",
        default="cpu",
        help="torch device of the training steps, e.g. cpu or cuda; off the CPU only our eager side and "
        "--ensemble run (add --no-reference --no-compile --no-loop --no-eval --no-bf16)",
    )
    b.add_argument("--out", default="runs/bench", help="directory for bench.json (default: runs/bench)")
    b.set_defaults(func=cmd_bench, items=[])
    w = sub.add_parser("sweep", help="run a W&B-format grid sweep here (resumable) or register it with W&B")
    w.add_argument("file", metavar="SWEEP.yaml")
    w.add_argument("--workers", type=int, default=1, help="processes training at once (default 1)")
    w.add_argument(
        "--ensemble",
        default="auto",
        metavar="auto|off|N",
        help="train points of one shape as one ensemble in one process: auto (default), off (every "
        "point alone), or at most N members per ensemble; docs/sweeps.md",
    )
    w.add_argument("--dry-run", action="store_true", help="list the points, their state and commands; run nothing")
    w.add_argument("--wandb", action="store_true", help="register the sweep with W&B for `wandb agent` (needs a login)")
    w.add_argument("--project", help="W&B project for --wandb (default: train.wandb.project)")
    w.add_argument("--entity", help="W&B entity for --wandb (default: train.wandb.entity or your default)")
    w.add_argument(
        "--point", action="store_true", help="train one point: BASE.yaml ... key=value ... (the sweep's command)"
    )
    w.add_argument(
        "--members", action="store_true", help="train the named points as one ensemble: NAME ... (what auto starts)"
    )
    w.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="an override for every point (repeatable; the same as KEY=VALUE after the file), e.g. "
        "train.steps=10 out_dir=/tmp/smoke for a smoke run",
    )
    w.set_defaults(func=cmd_sweep, items=[])
    r = sub.add_parser("report", help="tables and plots (paper 1 Figs. 1-3, sweep tables) from a sweep's finished runs")
    r.add_argument(
        "sweep_dirs",
        metavar="SWEEP_DIR",
        nargs="+",
        help="a sweep's runs directory; several are reported together (e.g. a sweep and one adding seeds)",
    )
    r.add_argument("--out", help="output directory (default: the first SWEEP_DIR/report)")
    r.add_argument(
        "--n-prompts", type=int, help="prompts per scenario for evaluations still missing (default: eval.n_prompts)"
    )
    r.add_argument("--device", default="cpu", help="torch device for missing evaluations, e.g. cpu or cuda")
    r.add_argument("--yscale", help="the figures' y axes: auto (default), linear or log")
    r.set_defaults(func=cmd_report, items=[])
    a = sub.add_parser(
        "align", help="representation alignment and algorithm agreement of models and algorithms; docs/alignment.md"
    )
    a.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="RUN[:LAYERS] (a run directory or .ckpt; LAYERS: comma-separated indices, 0 = embedding, or "
        "fingerprint; default all) or an algorithm: truth or a baseline (least_squares, ridge, lasso, bayes, ...)",
    )
    a.add_argument(
        "--metrics",
        default="mutual_knn,cka,cka_unbiased,cknna",
        help="comma-separated: mutual_knn, cka, cka_unbiased, cknna, svcca (default: all but svcca)",
    )
    a.add_argument("--neighbours", type=int, default=10, help="k of mutual_knn and cknna (default 10)")
    a.add_argument("--n-prompts", type=int, default=1024, help="prompts: the rows of every representation")
    a.add_argument("--context", type=int, help="in-context examples i before the representations (default d // 2)")
    a.add_argument("--position", default="y", help="hidden-state token: y (after i examples), x or mean")
    a.add_argument(
        "--represent", default="fingerprint", help="predictors as fingerprint (predictions at probe queries) or weights"
    )
    a.add_argument("--n-queries", type=int, default=32, help="probe queries M of the fingerprints (default 32)")
    a.add_argument("--permutations", type=int, default=100, help="permutations of the null per source pair")
    a.add_argument("--seed", type=int, help="prompt, query and permutation seed (default: the first run's eval.seed)")
    _prompts_option(a, "the first run's")
    a.add_argument(
        "--steps", action="store_true", help="also align every step=*.ckpt of each checkpoint's run to --references"
    )
    a.add_argument("--references", default="truth,bayes", help="algorithms for --steps (default truth,bayes)")
    a.add_argument("--out", help="output directory (default: FIRST_RUN/eval/align)")
    a.add_argument("--device", default="cpu", help="torch device of the models, e.g. cpu or cuda")
    a.set_defaults(func=cmd_align, items=[])
    pr = sub.add_parser(
        "probe", help="probes for w, least squares, ridge, LASSO, ... in hidden states, with controls; docs/probing.md"
    )
    pr.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT")
    pr.add_argument("--layers", default="all", help="all (default: embedding 0 and every block) or e.g. 0,3,6")
    pr.add_argument("--position", default="y", help="y (the y token after i examples; default), x or mean")
    pr.add_argument("--ks", help="comma-separated i's (in-context examples); default: about d/2, d, between, N")
    pr.add_argument(
        "--targets", help="comma-separated: w,ols,ridge,lasso,xty,support,component (default: all that apply)"
    )
    pr.add_argument("--n-prompts", type=int, default=4096, help="fresh prompts, split 60/20/20 (default 4096)")
    pr.add_argument("--probe", default="ridge", help="ridge (default), mlp or both; mlp costs minutes at 4096 prompts")
    pr.add_argument("--probe-seeds", type=int, default=3, help="splits and probe initialisations (default 3)")
    _prompts_option(pr, "the run's")
    pr.add_argument("--out", help="output directory (default: RUN_DIR/eval/probe)")
    pr.add_argument("--device", default="cpu", help="torch device of the forward passes, e.g. cpu or cuda")
    pr.set_defaults(func=cmd_probe, items=[])
    co = sub.add_parser(
        "compose", help="skill composition of a skill_composition run: seen vs held-out tuples; docs/skills.md"
    )
    co.add_argument("target", metavar="RUN_DIR")
    co.add_argument("--k", type=int, help="in-context examples (default: the run's eval.table_k)")
    co.add_argument("--n-prompts", type=int, default=200, help="prompts per tuple size and split (default 200)")
    co.add_argument("--tau", type=float, default=0.1, help="full marks: normalised error below tau (default 0.1)")
    co.add_argument("--out", help="output directory (default: RUN_DIR/eval/composition)")
    co.set_defaults(func=cmd_compose, items=[])
    lst = sub.add_parser(
        "list", help="every function class, baseline, suite, scenario family and query shift, with a line on each"
    )
    lst.set_defaults(func=cmd_list, items=[])
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        # Options may come after key=value overrides; leftovers join the config items.
        args, extra = build_parser().parse_known_args(argv)
        if extra and not hasattr(args, "items"):
            raise ICLError(f"unrecognized arguments: {' '.join(extra)} (see `icl {args.command} --help`)")
        if extra:
            args.items += extra
        return args.func(args)
    except ICLError as e:  # bad input, divergence, a refused write, a signal: each has its exit code
        print(f"icl: {e.label}: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a write or read the system refused outside the places that name it
        where = f"{e.filename}: " if e.filename else ""
        print(f"icl: error: {where}{e.strerror or e}; files written before are intact", file=sys.stderr)
        return WriteError.exit_code
    except KeyboardInterrupt:
        print("icl: interrupted", file=sys.stderr)
        return 130
