"""Command line: ``ssd-eval <command> ...`` (also ``python -m ssd_eval``)."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from ssd_eval.errors import UserError

log = logging.getLogger(__name__)
DEFAULT_CONFIG = "configs/sample.yaml"
CONFIGS_DIR = Path("configs")

GATE_DESCRIPTION = """\
Check each variant's metrics.json against baselines/<variant>.yaml (format and rules: baselines/README.md).

The rule, per gated metric: allowed = max(abs_tol, rel_tol x expected).
  - A drop larger than allowed fails, always, whatever any interval says.
  - tolerance: ci95 can only make it stricter. With d = new - reference, paired over the same images
    (reference: the baseline's kept detections, else the parent's run with the baselines' gap e), and
    [lo, hi] its 95 % bootstrap interval, it passes only when lo - e >= -allowed (95 % sure the drop is
    at most the margin); a point drop within the margin with lo below it is FAIL (inconclusive).
  - A quantized variant is gated against its own baseline first; the drop vs its parent
    (quantized.max_drop_pct) is an additional check.
  - A new model of a variant is gated on its metrics, with a "model changed" note; a model of another
    quantization format than the baseline's `quantization` fails (require_model_sha256: true, or
    --require-model-sha256, fails any model but the pinned one).

Worked example: expected 0.5022, abs_tol 0.002, rel_tol null: allowed = 0.0020.
  got 0.2403                                       FAIL: regressed by 0.2619, beyond the margin
  got 0.5015, d = -0.0007, interval [-0.0450, +0.0300] on 4 images
                                                   FAIL (inconclusive): lo -0.0450 < -0.0020; about 4700
                                                   images would narrow it enough (width ~ 1/sqrt(n))
  got 0.5015, d = -0.0007, interval [-0.0019, +0.0004] PASS: non-inferior
  identical detections: d = 0, interval [0, 0]    PASS

Exit codes: 0 every check holds, 1 a check failed, 2 input error (the gate could not run as asked).
make turns any failure into 2: CI that must tell 1 from 2 calls `.venv/bin/ssd-eval gate` directly.
The last line printed is the verdict.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="ssd-eval", description="COCO accuracy evaluation of SSD ONNX models")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more diagnostics (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"ssd-eval {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("eval", help="evaluate a model on a COCO-format set")
    run.add_argument("--config", default=DEFAULT_CONFIG, metavar="VARIANT|PATH",
                     help=f"a variant (configs/VARIANT.yaml) or a YAML config file (default {DEFAULT_CONFIG})")
    run.add_argument("--limit", type=int,
                     help="evaluate only the first N image ids (a partial run: written to results/<run>@limitN/)")
    run.add_argument("--subset", metavar="NAME",
                     help="evaluate exactly the images of subsets/NAME.json (overrides dataset.subset), e.g. ci-500")
    run.add_argument("--model", help="ONNX model file (overrides model.path; drops the expected size/sha256)")
    run.add_argument("--annotations", help="COCO annotation json (overrides dataset.annotations)")
    run.add_argument("--images", help="image folder (overrides dataset.images)")
    run.add_argument("--name", metavar="NAME",
                     help="a variant name for this run of your own model or data (--model/--annotations/--images): "
                          "written to results/NAME/ like any variant, shown in the table, gated once "
                          "baselines/NAME.yaml exists (ssd-eval baseline --update --variant NAME)")
    run.add_argument("--out", help="output directory (overrides output.dir)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override any config key, e.g. --set runtime.intra_op_threads=4 (repeatable)")
    add_protocol_option(run)
    run.add_argument("--shard", help="evaluate slice i of n (e.g. 2/4) and write only its detections")
    run.add_argument("--fresh", action="store_true", help="ignore and discard the resume cache")
    run.add_argument("--download", action="store_true", help="download the model and COCO when absent")
    run.add_argument("--strict", action="store_true",
                     help="model outputs that look read wrongly (boxes in pixels, inverted boxes, logits) are an "
                          "error (exit 2) before scoring, not a warning in the summary")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress report (default: a start line, then a bar on a terminal or in logs a line "
                          "after 10 s or 5 %% and every pipeline.progress_interval_s (120 s), and the scoring time)")
    run.add_argument("--summary", choices=("full", "line"), default="full",
                     help="what to print when the run ends: the full summary (default), or one line (variant, "
                          "protocol, image set, mAP, images/s, where metrics.json is), as make ci-gate does")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="run N shards side by side on this machine (each with cores/N threads, or one CUDA "
                          "device each) and merge them into the normal results folder")
    add_executor_option(run)
    add_tracking_options(run)
    run.set_defaults(handler=cmd_eval)

    sweep = commands.add_parser("sweep", help="evaluate several configs under several protocols (with --executor "
                                              "ray as one Ray job), then write the table")
    sweep.add_argument("--config", action="append", required=True, help="a variant config (repeatable)")
    sweep.add_argument("--protocol", action="append",
                       help="evaluate every config under this protocol (repeatable; default: each config's own)")
    sweep.add_argument("--results", default="results",
                       help="results directory: each run writes to RESULTS/<run>/, the table to RESULTS/TABLE.md "
                            "(default results)")
    sweep.add_argument("--jobs", type=int, default=1, metavar="N", help="shards per run (default 1)")
    add_executor_option(sweep)
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key in every run (repeatable)")
    sweep.add_argument("--limit", type=int, help="evaluate only the first N image ids of each run (partial runs)")
    sweep.add_argument("--subset", metavar="NAME", help="evaluate exactly the images of subsets/NAME.json")
    sweep.add_argument("--fresh", action="store_true", help="ignore and discard the resume caches")
    sweep.add_argument("--download", action="store_true", help="download the models and COCO when absent")
    sweep.add_argument("--no-progress", action="store_true", help="no progress report")
    sweep.set_defaults(handler=cmd_sweep)

    merge = commands.add_parser("merge", help="score shard outputs together")
    merge.add_argument("shards", nargs="+", metavar="DIR",
                       help="shard output folders (shard-i-of-n), or the folder holding them (eval --shard's --out)")
    merge.add_argument("--out", help="output directory (default: the config's output.dir)")
    add_tracking_options(merge)
    merge.set_defaults(handler=cmd_merge)

    show = commands.add_parser("show", help="print a result's summary: the 12 stats, per-category AP and the error "
                                             "breakdown")
    show.add_argument("metrics", metavar="METRICS.json", help="a metrics.json (or the results folder holding one)")
    show.add_argument("--all", action="store_true", help="every category's AP, not only the best and worst")
    show.add_argument("--top", type=int, default=5, help="categories shown at each end (default 5)")
    show.set_defaults(handler=cmd_show)

    table = commands.add_parser("table", help="write results/TABLE.md and results/table.csv")
    table.add_argument("--results", default="results", help="results directory (default results)")
    table.add_argument("--all", action="store_true",
                       help="show every column (default: the columns a reader compares, ~120 characters wide); "
                            "table.csv always holds every column")
    table.set_defaults(handler=cmd_table)

    gate = commands.add_parser("gate", help="fail (exit 1) when results regressed against the baselines",
                               description=GATE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    gate.add_argument("--baselines", default="baselines", help="baseline directory (default baselines)")
    gate.add_argument("--results", default="results", help="results directory (default results)")
    gate.add_argument("--variant", action="append", help="only this variant (repeatable)")
    gate.add_argument("--junit", help="also write JUnit XML here")
    gate.add_argument("--configs", default="configs",
                      help="variant configs whose model.sha256 pins the variant's model (default configs); another "
                           "model is gated on its metrics with a note")
    gate.add_argument("--strict", action="store_true",
                      help="without --variant: a variant with results but no baseline fails (default: listed as "
                           "'not gated')")
    gate.add_argument("--require-model-sha256", action="store_true",
                      help="a model other than the pinned one fails (as a baseline's require_model_sha256: true)")
    gate.set_defaults(handler=cmd_gate)

    baseline = commands.add_parser(
        "baseline", help="rewrite baselines/<variant>.yaml from current results (--update), printing each diff",
        description="Write or rewrite baselines/<variant>.yaml from each variant's current result, printing a "
                    "unified diff of every changed file and the tolerance each file holds. --update is required: "
                    "there is no dry run (the files are in git: review the diff there).")
    baseline.add_argument("--update", action="store_true", required=True,
                          help="required: rewrite (or create) the baseline files")
    baseline.add_argument("--baselines", default="baselines")
    baseline.add_argument("--results", default="results")
    baseline.add_argument("--variant", action="append", help="only this variant (repeatable)")
    baseline.add_argument("--abs-tol", type=float, default=0.002,
                          help="absolute mAP tolerance for new baseline files (default 0.002)")
    baseline.add_argument("--max-drop-pct", type=float, default=1.0,
                          help="allowed drop of a quantized variant vs its fp32 parent, in %% (default 1.0)")
    baseline.add_argument("--subset", metavar="NAME",
                          help="new baseline files are for results on this image subset (results/<run>@NAME/)")
    baseline.add_argument("--tolerance", choices=("fixed", "ci95"),
                          help="write this tolerance on every metric of the updated files (ci95: mAP, AP50, AP75 "
                               "only); default: keep each file's, fixed for new files")
    baseline.add_argument("--keep-detections", action="store_true",
                          help="each updated baseline keeps a copy of its result's detections beside it "
                               "(detections:), which tolerance: ci95 pairs with")
    baseline.set_defaults(handler=cmd_baseline)

    report = commands.add_parser("report", help="draw PR curves and per-category AP changes as PNG")
    report.add_argument("--results", default="results")
    report.set_defaults(handler=cmd_report)

    bench = commands.add_parser("bench", help="model-alone speed: fp32 and quantized variants side by side")
    bench.add_argument("--variant", metavar="VARIANT|PATH",
                       help="ssd-10, ssd-12, ssd-12-int8, ssd-12-qdq or sample (default sample), with its fp32 parent "
                            "or quantized children; a config path is benchmarked alone")
    bench.add_argument("--config", action="append", metavar="VARIANT|PATH",
                       help="benchmark these configs instead (a variant or a YAML file; repeatable)")
    bench.add_argument("--iterations", type=int, default=20, help="timed runs per model (default 20)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed runs per model first (default 2)")
    bench.add_argument("--compare-exact-int8", action="store_true",
                       help="also time each quantized model with the other session.x64quantprecision setting "
                            "(done anyway where this CPU needs it for exact int8)")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key in every benchmarked config, e.g. runtime.intra_op_threads=4")
    add_protocol_option(bench)
    bench.set_defaults(handler=cmd_bench)

    harness = commands.add_parser("bench-harness", help="deprecated: make bench-harness "
                                                        "(python -m ssd_eval.testing.bench_harness)")
    harness.add_argument("arguments", nargs=argparse.REMAINDER, help="passed on")
    harness.set_defaults(handler=cmd_bench_harness)

    fetch = commands.add_parser("fetch", help="download models or COCO val2017")
    fetch.add_argument("what", choices=("models", "data"))
    fetch.add_argument("--variant", action="append",
                       help="only this model (repeatable; default: every configs/*.yaml variant with a model.url)")
    fetch.add_argument("--config", default="configs/ssd-12.yaml", metavar="VARIANT|PATH",
                       help="a variant or config file naming the COCO locations (data; default configs/ssd-12.yaml)")
    fetch.add_argument("--no-progress", action="store_true")
    fetch.set_defaults(handler=cmd_fetch)

    inspect = commands.add_parser("inspect", help="a model's inputs, quantization, int8 weight ranges, saturation risk")
    inspect.add_argument("model", metavar="MODEL|VARIANT|PATH",
                         help="an ONNX file, or a variant or config file (its model.path)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of the report")
    inspect.set_defaults(handler=cmd_inspect)
    return parser


def add_executor_option(parser: argparse.ArgumentParser) -> None:
    """--executor: where the --jobs shards run."""
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where the --jobs shards run: local, subprocesses on this machine (default); ray, Ray "
                             "tasks on the cluster at RAY_ADDRESS or a local Ray instance (pip install -e '.[ray]')")


def _version() -> str:
    """This package's version, from its installed metadata ("(not installed)" when run from a bare copy)."""
    from ssd_eval.utils import package_version

    return package_version("ssd_eval") or "(not installed)"


def add_protocol_option(parser: argparse.ArgumentParser) -> None:
    """--protocol NAME: short for --set protocol=NAME, beside every --set (applied after them)."""
    parser.add_argument("--protocol", metavar="NAME", type=_protocol_override,
                        help="evaluate under this protocol: coco, inc, mlperf-ssd or published (the one the "
                             "variant's number was published under); short for --set protocol=NAME")
    parser.set_defaults(protocol=None)


def _protocol_override(name: str) -> tuple[str, str, str]:
    return ("protocol", name, "--protocol")


def set_overrides(args: argparse.Namespace) -> list[Any]:
    """The --set overrides, then --protocol's."""
    return list(args.overrides) + ([args.protocol] if args.protocol else [])


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    """--log, --log-uri, --log-dir: experiment tracking (ssd_eval.reports.tracking), off by default."""
    parser.add_argument("--log", action="append", choices=("mlflow", "tensorboard"),
                        help="send the results to MLflow or TensorBoard (repeatable; sets tracking.log; "
                             "pip install -e '.[mlflow]' / '.[tensorboard]')")
    parser.add_argument("--log-uri", metavar="URI",
                        help="MLflow tracking URI or folder (tracking.uri; default the file store ./mlruns)")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="TensorBoard event folder (tracking.tensorboard_dir; default <output dir>/tb)")


def tracking_overrides(args: argparse.Namespace) -> list[Any]:
    """Config overrides from --log, --log-uri and --log-dir."""
    overrides: list[Any] = []
    if args.log:
        overrides.append(("tracking.log", list(dict.fromkeys(args.log)), "--log"))
    if args.log_uri:
        overrides.append(("tracking.uri", args.log_uri, "--log-uri"))
    if args.log_dir:
        overrides.append(("tracking.tensorboard_dir", args.log_dir, "--log-dir"))
    return overrides


def print_tracking(result: Any) -> None:
    """Where the run was logged (MLflow run, TensorBoard folder), when it was."""
    if result.provenance.get("tracking"):
        from ssd_eval.reports.tracking import describe

        print(describe(result.provenance["tracking"]))


def eval_overrides(args: argparse.Namespace) -> list[Any]:
    """Config overrides from the ``eval`` options, in the order they apply."""
    from ssd_eval.config.load import NAME_OPTION

    overrides: list[Any] = set_overrides(args)
    if args.model:
        overrides += [("model.path", args.model, "--model"), ("model.url", None, "--model"),
                      ("model.size", None, "--model"), ("model.sha256", None, "--model")]
    if args.annotations:
        overrides.append(("dataset.annotations", args.annotations, "--annotations"))
    if args.images:
        overrides.append(("dataset.images", args.images, "--images"))
    if args.out:
        overrides.append(("output.dir", args.out, "--out"))
    if args.limit is not None:
        overrides.append(("dataset.limit", args.limit, "--limit"))
    if args.subset is not None:
        overrides.append(("dataset.subset", args.subset, "--subset"))
    if args.name is not None:
        overrides.append(("variant", args.name, NAME_OPTION))
    return overrides + tracking_overrides(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from ssd_eval.config.load import check_variant_name, config_path, load_config
    from ssd_eval.engine.pipeline import evaluate
    from ssd_eval.engine.shards import shard_dir
    from ssd_eval.reports.tracking import tracker_for
    from ssd_eval.results.summary import render_result, render_result_line

    if args.name is not None:
        check_variant_name(args.name, CONFIGS_DIR)
    args.config = config_path(args.config, CONFIGS_DIR)
    config = load_config(args.config, eval_overrides(args))
    shard = parse_shard(args.shard) if args.shard else None
    progress = False if args.no_progress else True if sys.stderr.isatty() else "lines"
    # MLflow / TensorBoard: checked before any work, given the result while its folder is still locked; a
    # shard is tracked by its merge.
    on_result = None if shard else tracker_for(config.tracking, config.out_dir)
    if args.jobs != 1 or args.executor != "local":  # N shards side by side, then merged (ssd_eval.engine.launcher)
        from ssd_eval.engine.launcher import run_jobs

        result = run_jobs(config, args.jobs, eval_overrides(args), config_path=args.config, fresh=args.fresh,
                          download=args.download, verbose=args.verbose, progress=progress, shard=args.shard,
                          strict=args.strict, executor=args.executor, on_result=on_result)
    else:
        result = evaluate(config, shard=shard, fresh=args.fresh, download=args.download, progress=progress,
                          strict=args.strict, on_result=on_result)
    if result is None:
        print(f"shard {args.shard} of {config.variant} written to {shard_dir(config.out_dir, shard)}; "
              f"once every shard is written, score them with 'ssd-eval merge {config.out_dir}'")
        return 0
    if args.summary == "line":
        print(render_result_line(result))
    else:
        print(render_result(result))
        print(f"results: {result.files['metrics']}  {result.files['detections']}")
    print_tracking(result)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Every config under every protocol, each into ``--results``/<run>/ (with ``--executor ray``: all their
    shards as one Ray job), then the table of ``--results``."""
    from ssd_eval.config.load import load_config
    from ssd_eval.reports.table import write_table
    from ssd_eval.reports.tracking import tracker_for

    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.executor == "ray":
        from ssd_eval.engine.ray_executor import import_ray

        import_ray()  # Ray missing: one line naming the pip command, before any work
    progress = False if args.no_progress else True if sys.stderr.isatty() else "lines"
    common: list[Any] = list(args.overrides) + [("output.dir", str(Path(args.results) / "{run}"), "--results")]
    if args.limit is not None:
        common.append(("dataset.limit", args.limit, "--limit"))
    if args.subset is not None:
        common.append(("dataset.subset", args.subset, "--subset"))
    runs = []
    for config_path in dict.fromkeys(args.config):
        for protocol in dict.fromkeys(args.protocol or [None]):
            overrides = common + ([("protocol", protocol, "--protocol")] if protocol else [])
            runs.append((config_path, overrides, load_config(config_path, overrides)))
    # Each run's tracking (its config's tracking.log), checked before any work, as eval does.
    trackers = [tracker_for(config.tracking, config.out_dir) for _, _, config in runs]
    if args.executor == "ray":
        from ssd_eval.engine.ray_executor import RayRun, evaluate_runs

        results = evaluate_runs([RayRun(config, path, overrides) for path, overrides, config in runs], args.jobs,
                                fresh=args.fresh, download=args.download, progress=progress, verbose=args.verbose,
                                on_results=trackers)
    else:
        from ssd_eval.engine.launcher import run_jobs
        from ssd_eval.engine.pipeline import evaluate

        results = [evaluate(config, fresh=args.fresh, download=args.download, progress=progress, on_result=tracker)
                   if args.jobs == 1
                   else run_jobs(config, args.jobs, overrides, config_path=path, fresh=args.fresh,
                                 download=args.download, verbose=args.verbose, progress=progress, on_result=tracker)
                   for (path, overrides, config), tracker in zip(runs, trackers)]
    for result in results:
        print(f"{result.variant} ({result.protocol}): mAP {result.map:.6f}  {result.files['metrics']}")
    write_table(Path(args.results))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ssd_eval.config.schema import TrackingConfig
    from ssd_eval.engine.shards import merge_out_dir, merge_shards
    from ssd_eval.reports.tracking import tracker_for
    from ssd_eval.results.summary import render_result

    tracking = TrackingConfig(log=list(dict.fromkeys(args.log or [])), uri=args.log_uri,
                              tensorboard_dir=args.log_dir)
    # Tracking rewrites metrics.json: it runs while merge still holds the output folder's lock. Its folder
    # checks are made against the folder merge writes to (without --out: the shards' config's output folder).
    on_result = tracker_for(tracking, merge_out_dir(args.shards, args.out) if tracking.log else None)
    result = merge_shards(args.shards, args.out, on_result=on_result)
    print(render_result(result))
    print(f"results: {result.files['metrics']}  {result.files['detections']}")
    print_tracking(result)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ssd_eval.results.result import EvalResult, read_metrics_file
    from ssd_eval.results.summary import render_result

    path = Path(args.metrics)
    if path.is_dir():
        path = path / "metrics.json"
    if args.top < 1:
        raise UserError("show: --top must be at least 1")
    result = EvalResult.from_document(read_metrics_file(path))
    print(render_result(result, top=args.top, all_categories=args.all, error_breakdown=True))
    print(f"results: {result.files['metrics']}  {result.files['detections']}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from ssd_eval.reports.table import write_table

    write_table(Path(args.results), all_columns=args.all)
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from ssd_eval.reports.gate import run_gate

    return run_gate(Path(args.baselines), Path(args.results), variants=args.variant,
                    junit=Path(args.junit) if args.junit else None, configs_dir=Path(args.configs),
                    strict=args.strict, require_model_sha256=args.require_model_sha256)


def cmd_baseline(args: argparse.Namespace) -> int:
    from ssd_eval.reports.baseline_update import update_baselines

    return update_baselines(Path(args.baselines), Path(args.results), variants=args.variant,
                            abs_tol=args.abs_tol, max_drop_pct=args.max_drop_pct, subset=args.subset,
                            keep_detections=args.keep_detections, tolerance=args.tolerance)


def cmd_report(args: argparse.Namespace) -> int:
    from ssd_eval.reports.report import write_report

    for path in write_report(Path(args.results)):
        print(path)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ssd_eval.config.load import config_path, load_config
    from ssd_eval.engine.bench import bench_models, configs_for_bench

    if args.iterations <= 0 or args.warmup < 0:
        raise UserError("bench: --iterations must be positive and --warmup not negative")
    variant_file = None if args.variant is None else config_path(args.variant, CONFIGS_DIR)
    if args.config or (variant_file and variant_file != CONFIGS_DIR / f"{args.variant}.yaml"):
        # configs named as files, each alone (a variant name brings its fp32 parent or quantized children)
        configs = [load_config(config_path(text, CONFIGS_DIR), set_overrides(args))
                   for text in args.config or [args.variant]]
    else:
        configs = configs_for_bench(args.variant)
        if set_overrides(args):
            configs = [load_config(c.source, set_overrides(args)) for c in configs]
    bench_models(configs, warmup=args.warmup, iterations=args.iterations, compare_exact_int8=args.compare_exact_int8)
    return 0


def cmd_bench_harness(args: argparse.Namespace) -> int:
    # A dev tool outside the product since 0.2 (README, changelog); run as its own program, never imported.
    log.warning("ssd-eval bench-harness is deprecated: use make bench-harness "
                "(python -m ssd_eval.testing.bench_harness)")
    return subprocess.call([sys.executable, "-m", "ssd_eval.testing.bench_harness", *args.arguments])


def cmd_fetch(args: argparse.Namespace) -> int:
    from ssd_eval import fetch
    from ssd_eval.config.load import config_path, load_config, variant_configs

    progress = not args.no_progress
    if args.what == "models":
        downloadable = {name: config for name, config in
                        ((name, load_config(path)) for name, path in variant_configs(CONFIGS_DIR).items())
                        if config.model.url}
        unknown = [v for v in args.variant or [] if v not in downloadable]
        if unknown:
            raise UserError(f"fetch models: no downloadable variant {unknown[0]!r} in {CONFIGS_DIR}/ "
                            f"(have: {', '.join(downloadable)})")
        for variant in args.variant or downloadable:
            config = downloadable[variant]
            path = fetch.ensure_model(Path(config.model.path), url=config.model.url, size=config.model.size,
                                      sha256=config.model.sha256, download_missing=True, progress=progress,
                                      variant=variant)
            print(f"{variant}: {path}")
        return 0
    config = load_config(config_path(args.config, CONFIGS_DIR))
    fetch.ensure_coco(Path(config.dataset.annotations), Path(config.dataset.images),
                      annotations_url=config.dataset.annotations_url, images_url=config.dataset.images_url,
                      download_missing=True, downloads_dir=Path(config.dataset.downloads_dir), progress=progress,
                      annotations_zip=(config.dataset.annotations_zip_size, config.dataset.annotations_zip_sha256),
                      images_zip=(config.dataset.images_zip_size, config.dataset.images_zip_sha256))
    print(f"COCO: {config.dataset.annotations}  {config.dataset.images}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from ssd_eval.inference.model_info import inspect_model
    from ssd_eval.inference.model_report import render

    model = Path(args.model)
    if model.suffix in (".yaml", ".yml") or (model.suffix != ".onnx" and not model.is_file()):  # a config
        from ssd_eval.config.load import config_path, load_config

        source = config_path(args.model, CONFIGS_DIR)
        config = load_config(source)
        model = Path(config.model.path)
        if not model.exists():
            hint = f"; 'ssd-eval fetch models --variant {config.variant}' downloads it" if config.model.url else ""
            raise UserError(f"{model}: no such file (the model of {source}{hint})")
    info = inspect_model(model)
    print(json.dumps(info.to_dict(), indent=2) if args.json else render(info))
    return 0


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a line is logged (not when it was made)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(verbosity: int) -> None:
    """Diagnostics to stderr: warnings by default, -v info, -vv debug."""
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="ssd-eval: %(levelname)s: %(message)s", stream=sys.stderr, force=True)
    # A run's start, scoring and end lines (engine.progress.progress_log): plain lines on stderr, in logs too.
    progress = logging.getLogger("ssd_eval.progress")
    for handler in list(progress.handlers):
        progress.removeHandler(handler)
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for user errors, no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"ssd-eval: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system refusal the specific checks did not foresee: still one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ssd-eval: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; finished images stay in the resume cache: run the same command to go on" \
            if args.command == "eval" else ""
        print(f"ssd-eval: interrupted{hint}", file=sys.stderr)
        return 130


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (1 <= i <= n) into ``(i, n)``."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/n, e.g. --shard 2/4") from None
    if not 1 <= index <= count:
        raise UserError(f"--shard {text!r}: i must be between 1 and n")
    return index, count
