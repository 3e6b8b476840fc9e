"""Command line: ``ssd-eval <command> ...`` (also ``python -m ssd_eval``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from ssd_eval.errors import UserError

DEFAULT_CONFIG = "configs/sample.yaml"
CONFIGS_DIR = Path("configs")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="ssd-eval", description="COCO accuracy evaluation of SSD ONNX models")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more diagnostics (-vv: debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("eval", help="evaluate a model on a COCO-format set")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
    run.add_argument("--limit", type=int,
                     help="evaluate only the first N image ids (a partial run: written to results/<run>@limitN/)")
    run.add_argument("--subset", metavar="NAME",
                     help="evaluate exactly the images of subsets/NAME.json (overrides dataset.subset), e.g. ci-500")
    run.add_argument("--model", help="ONNX model file (overrides model.path; drops the expected size/sha256)")
    run.add_argument("--annotations", help="COCO annotation json (overrides dataset.annotations)")
    run.add_argument("--images", help="image folder (overrides dataset.images)")
    run.add_argument("--out", help="output directory (overrides output.dir)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override any config key, e.g. --set runtime.intra_op_threads=4 (repeatable)")
    run.add_argument("--shard", help="evaluate slice i of n (e.g. 2/4) and write only its detections")
    run.add_argument("--fresh", action="store_true", help="ignore and discard the resume cache")
    run.add_argument("--download", action="store_true", help="download the model and COCO when absent")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress report (default: a start line, then a bar on a terminal or in logs a line "
                          "after 10 s or 5 %% and every pipeline.progress_interval_s (120 s), and the scoring time)")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="run N shards side by side on this machine (each with cores/N threads, or one CUDA "
                          "device each) and merge them into the normal results folder")
    add_tracking_options(run)
    run.set_defaults(handler=cmd_eval)

    merge = commands.add_parser("merge", help="score shard outputs together")
    merge.add_argument("shards", nargs="+", help="shard output directories")
    merge.add_argument("--out", help="output directory (default: the config's output.dir)")
    add_tracking_options(merge)
    merge.set_defaults(handler=cmd_merge)

    show = commands.add_parser("show", help="print a result's summary: the 12 stats and per-category AP")
    show.add_argument("metrics", metavar="METRICS.json", help="a metrics.json (or the results folder holding one)")
    show.add_argument("--all", action="store_true", help="every category's AP, not only the best and worst")
    show.add_argument("--top", type=int, default=5, help="categories shown at each end (default 5)")
    show.set_defaults(handler=cmd_show)

    table = commands.add_parser("table", help="write results/TABLE.md and results/table.csv")
    table.add_argument("--results", default="results", help="results directory (default results)")
    table.set_defaults(handler=cmd_table)

    gate = commands.add_parser("gate", help="fail (exit 1) when results regressed against the baselines")
    gate.add_argument("--baselines", default="baselines", help="baseline directory (default baselines)")
    gate.add_argument("--results", default="results", help="results directory (default results)")
    gate.add_argument("--variant", action="append", help="only this variant (repeatable)")
    gate.add_argument("--junit", help="also write JUnit XML here")
    gate.add_argument("--configs", default="configs",
                      help="variant configs whose pinned model.sha256 the gated model must match (default configs)")
    gate.set_defaults(handler=cmd_gate)

    baseline = commands.add_parser("baseline", help="show or rewrite baselines from current results")
    baseline.add_argument("--update", action="store_true", required=True, help="rewrite the baseline files")
    baseline.add_argument("--baselines", default="baselines")
    baseline.add_argument("--results", default="results")
    baseline.add_argument("--variant", action="append", help="only this variant (repeatable)")
    baseline.add_argument("--abs-tol", type=float, default=0.002,
                          help="absolute mAP tolerance for new baseline files (default 0.002)")
    baseline.add_argument("--max-drop-pct", type=float, default=1.0,
                          help="allowed drop of a quantized variant vs its fp32 parent, in %% (default 1.0)")
    baseline.add_argument("--subset", metavar="NAME",
                          help="new baseline files are for results on this image subset (results/<run>@NAME/)")
    baseline.add_argument("--keep-detections", action="store_true",
                          help="each updated baseline keeps a copy of its result's detections beside it "
                               "(detections:), which tolerance: ci95 pairs with")
    baseline.set_defaults(handler=cmd_baseline)

    report = commands.add_parser("report", help="draw PR curves and per-category AP changes as PNG")
    report.add_argument("--results", default="results")
    report.set_defaults(handler=cmd_report)

    bench = commands.add_parser("bench", help="model-alone speed: fp32 and quantized variants side by side")
    bench.add_argument("--variant", help="ssd-10, ssd-12, ssd-12-int8, ssd-12-qdq or sample (default sample)")
    bench.add_argument("--config", action="append", help="benchmark these configs instead (repeatable)")
    bench.add_argument("--iterations", type=int, default=20, help="timed runs per model (default 20)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed runs per model first (default 2)")
    bench.add_argument("--compare-exact-int8", action="store_true",
                       help="also time each quantized model with the other session.x64quantprecision setting "
                            "(done anyway where this CPU needs it for exact int8)")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key in every benchmarked config, e.g. runtime.intra_op_threads=4")
    bench.set_defaults(handler=cmd_bench)

    harness = commands.add_parser("bench-harness", help="harness overhead, memory growth, scoring backends, "
                                                        "int8 vs the physical limit")
    harness.add_argument("--quick", action="store_true",
                         help="CI-sized run: smaller sizes (a few minutes on 2 cores; README: Benchmarks)")
    harness.add_argument("--work-dir", help="keep the synthetic data here (default: a temporary folder)")
    harness.add_argument("--only", action="append", choices=("throughput", "memory", "scoring", "int8", "preprocess"),
                         help="run only this section (repeatable; default every one)")
    harness.add_argument("--images", type=int, help="images of the int8 section (default 48, --quick 16)")
    harness.add_argument("--repeats", type=int, help="repeats of the int8 section, best counts (default 2)")
    harness.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config key in the int8 section's runs and bare sessions, e.g. "
                              "runtime.allow_spinning=true")
    harness.add_argument("--lever", dest="levers", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                         help="int8 section: also run each model with these config keys, side by side with the "
                              "default (repeatable), e.g. spin:runtime.allow_spinning=true")
    harness.add_argument("--formats", help="int8 section: the models, comma-separated (default fp32,int8,qdq)")
    harness.add_argument("--preprocess-data", metavar="DIR",
                         help="preprocess section: a folder with annotations.json and images/ (e.g. real val2017 "
                              "images; default: synthetic 1200x1200 images)")
    harness.set_defaults(handler=cmd_bench_harness)

    fetch = commands.add_parser("fetch", help="download models or COCO val2017")
    fetch.add_argument("what", choices=("models", "data"))
    fetch.add_argument("--variant", action="append",
                       help="only this model (repeatable; default: every configs/*.yaml variant with a model.url)")
    fetch.add_argument("--config", default="configs/ssd-12.yaml", help="config naming the COCO locations (data)")
    fetch.add_argument("--no-progress", action="store_true")
    fetch.set_defaults(handler=cmd_fetch)

    inspect = commands.add_parser("inspect", help="a model's inputs, quantization, int8 weight ranges, saturation risk")
    inspect.add_argument("model", metavar="MODEL", help="ONNX file, or a variant name (configs/<variant>.yaml's model)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of the report")
    inspect.set_defaults(handler=cmd_inspect)
    return parser


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    """--log, --log-uri, --log-dir: experiment tracking (ssd_eval.tracking), off by default."""
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
        from ssd_eval.tracking import describe

        print(describe(result.provenance["tracking"]))


def eval_overrides(args: argparse.Namespace) -> list[Any]:
    """Config overrides from the ``eval`` options, in the order they apply."""
    overrides: list[Any] = list(args.overrides)
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
    return overrides + tracking_overrides(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from ssd_eval.config import load_config
    from ssd_eval.data import parse_shard
    from ssd_eval.pipeline import evaluate
    from ssd_eval.results import render_result
    from ssd_eval.shards import shard_dir

    config = load_config(args.config, eval_overrides(args))
    shard = parse_shard(args.shard) if args.shard else None
    progress = False if args.no_progress else True if sys.stderr.isatty() else "lines"
    if args.jobs != 1:  # N shards side by side, then merged (ssd_eval.launcher)
        from ssd_eval.launcher import run_jobs

        result = run_jobs(config, args.jobs, eval_overrides(args), config_path=args.config, fresh=args.fresh,
                          download=args.download, verbose=args.verbose, progress=progress, shard=args.shard)
    else:
        result = evaluate(config, shard=shard, fresh=args.fresh, download=args.download, progress=progress)
    if result is None:
        print(f"shard {args.shard} of {config.variant} written to {shard_dir(config.out_dir, shard)}; "
              "score all shards with 'ssd-eval merge'")
        return 0
    print(render_result(result))
    print(f"results: {result.files['metrics']}  {result.files['detections']}")
    print_tracking(result)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ssd_eval.config import TrackingConfig
    from ssd_eval.results import render_result
    from ssd_eval.shards import merge_shards
    from ssd_eval.tracking import check_trackers, track

    tracking = TrackingConfig(log=list(dict.fromkeys(args.log or [])), uri=args.log_uri,
                              tensorboard_dir=args.log_dir)
    check_trackers(tracking)
    result = merge_shards(args.shards, args.out)
    track(result, tracking)
    print(render_result(result))
    print(f"results: {result.files['metrics']}  {result.files['detections']}")
    print_tracking(result)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ssd_eval.results import EvalResult, read_metrics_file, render_result

    path = Path(args.metrics)
    if path.is_dir():
        path = path / "metrics.json"
    if args.top < 1:
        raise UserError("show: --top must be at least 1")
    result = EvalResult.from_document(read_metrics_file(path))
    print(render_result(result, top=args.top, all_categories=args.all))
    print(f"results: {result.files['metrics']}  {result.files['detections']}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from ssd_eval.table import write_table

    write_table(Path(args.results))
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from ssd_eval.gate import run_gate

    return run_gate(Path(args.baselines), Path(args.results), variants=args.variant,
                    junit=Path(args.junit) if args.junit else None, configs_dir=Path(args.configs))


def cmd_baseline(args: argparse.Namespace) -> int:
    from ssd_eval.baseline import update_baselines

    return update_baselines(Path(args.baselines), Path(args.results), variants=args.variant,
                            abs_tol=args.abs_tol, max_drop_pct=args.max_drop_pct, subset=args.subset,
                            keep_detections=args.keep_detections)


def cmd_report(args: argparse.Namespace) -> int:
    from ssd_eval.report import write_report

    for path in write_report(Path(args.results)):
        print(path)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ssd_eval.bench import bench_models, configs_for_bench
    from ssd_eval.config import load_config

    if args.iterations <= 0 or args.warmup < 0:
        raise UserError("bench: --iterations must be positive and --warmup not negative")
    if args.config:
        configs = [load_config(path, args.overrides) for path in args.config]
    else:
        configs = configs_for_bench(args.variant)
        if args.overrides:
            configs = [load_config(c.source, args.overrides) for c in configs]
    bench_models(configs, warmup=args.warmup, iterations=args.iterations, compare_exact_int8=args.compare_exact_int8)
    return 0


def cmd_bench_harness(args: argparse.Namespace) -> int:
    from ssd_eval.bench import bench_harness
    from ssd_eval.config import parse_override

    levers = []
    for item in args.levers:
        name, _, keys = item.partition(":")
        if not name or not keys:
            raise UserError(f"--lever {item!r}: expected NAME:KEY=VALUE[,KEY=VALUE], "
                            "e.g. spin:runtime.allow_spinning=true")
        levers.append((name, [parse_override(key) for key in keys.split(",")]))
    bench_harness(quick=args.quick, work_dir=Path(args.work_dir) if args.work_dir else None, only=args.only,
                  int8_images=args.images, int8_repeats=args.repeats,
                  overrides=[parse_override(item) for item in args.overrides], levers=levers,
                  int8_formats=args.formats.split(",") if args.formats else None,
                  preprocess_data=Path(args.preprocess_data) if args.preprocess_data else None)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ssd_eval import fetch
    from ssd_eval.config import load_config, variant_configs

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
    config = load_config(args.config)
    fetch.ensure_coco(Path(config.dataset.annotations), Path(config.dataset.images),
                      annotations_url=config.dataset.annotations_url, images_url=config.dataset.images_url,
                      download_missing=True, downloads_dir=Path(config.dataset.downloads_dir), progress=progress,
                      annotations_zip=(config.dataset.annotations_zip_size, config.dataset.annotations_zip_sha256),
                      images_zip=(config.dataset.images_zip_size, config.dataset.images_zip_sha256))
    print(f"COCO: {config.dataset.annotations}  {config.dataset.images}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from ssd_eval.model_info import inspect_model, render

    model = Path(args.model)
    variant_config = CONFIGS_DIR / f"{args.model}.yaml"
    if not model.exists() and model.suffix != ".onnx" and variant_config.is_file():
        from ssd_eval.config import load_config

        model = Path(load_config(variant_config).model.path)
        if not model.exists():
            url = load_config(variant_config).model.url
            hint = f"; 'ssd-eval fetch models --variant {args.model}' downloads it" if url else ""
            raise UserError(f"{model}: no such file (the model of {variant_config}{hint})")
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
    # A run's start, scoring and end lines (pipeline.progress_log): plain lines on stderr, in logs too.
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
