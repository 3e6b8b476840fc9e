"""The ``ssd-eval`` subcommands: each ``cmd_*`` turns parsed options into config overrides and runs one job."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from ssd_eval.errors import UserError

log = logging.getLogger("ssd_eval.cli")
CONFIGS_DIR = Path("configs")


def set_overrides(args: argparse.Namespace) -> list[Any]:
    """The --set overrides, then --protocol's."""
    return list(args.overrides) + ([args.protocol] if args.protocol else [])


def _given(*overrides: tuple[str, Any, str]) -> list[Any]:
    """The ``(key, value, option)`` overrides whose option was given (value not None)."""
    return [override for override in overrides if override[1] is not None]


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
    # an empty --annotations, --images, --out, --log-uri or --log-dir counts as not given
    return overrides + _given(
        ("dataset.annotations", args.annotations or None, "--annotations"),
        ("dataset.images", args.images or None, "--images"), ("output.dir", args.out or None, "--out"),
        ("dataset.limit", args.limit, "--limit"), ("dataset.subset", args.subset, "--subset"),
        ("variant", args.name, NAME_OPTION),
        ("tracking.log", list(dict.fromkeys(args.log)) if args.log else None, "--log"),
        ("tracking.uri", args.log_uri or None, "--log-uri"),
        ("tracking.tensorboard_dir", args.log_dir or None, "--log-dir"))


def cmd_eval(args: argparse.Namespace) -> int:
    from ssd_eval.config.load import check_variant_name, config_path, load_config
    from ssd_eval.engine.pipeline import evaluate
    from ssd_eval.engine.shards import shard_dir
    from ssd_eval.reports.tracking import tracker_for
    from ssd_eval.results.summary import render_result, render_result_line

    if args.name is not None:
        check_variant_name(args.name, CONFIGS_DIR)
    args.config = config_path(args.config, CONFIGS_DIR)
    overrides = eval_overrides(args)
    config = load_config(args.config, overrides)
    shard = parse_shard(args.shard) if args.shard else None
    progress = False if args.no_progress else True if sys.stderr.isatty() else "lines"
    # MLflow / TensorBoard: checked before any work, given the result while its folder is still locked; a
    # shard is tracked by its merge.
    on_result = None if shard else tracker_for(config.tracking, config.out_dir)
    if args.jobs != 1 or args.executor != "local":  # N shards side by side, then merged (ssd_eval.engine.launcher)
        from ssd_eval.engine.launcher import run_jobs

        result = run_jobs(config, args.jobs, overrides, config_path=args.config, fresh=args.fresh,
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
    common: list[Any] = [*args.overrides, ("output.dir", str(Path(args.results) / "{run}"), "--results"),
                         *_given(("dataset.limit", args.limit, "--limit"), ("dataset.subset", args.subset, "--subset"))]
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
    overrides = set_overrides(args)
    variant_file = None if args.variant is None else config_path(args.variant, CONFIGS_DIR)
    if args.config or (variant_file and variant_file != CONFIGS_DIR / f"{args.variant}.yaml"):
        # configs named as files, each alone (a variant name brings its fp32 parent or quantized children)
        configs = [load_config(config_path(text, CONFIGS_DIR), overrides) for text in args.config or [args.variant]]
    else:
        configs = configs_for_bench(args.variant)
        if overrides:
            configs = [load_config(c.source, overrides) for c in configs]
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
        configs = {name: load_config(path) for name, path in variant_configs(CONFIGS_DIR).items()}
        downloadable = {name: config for name, config in configs.items() if config.model.url}
        for variant in args.variant or []:
            if variant not in downloadable:
                raise UserError(f"fetch models: no downloadable variant {variant!r} in {CONFIGS_DIR}/ "
                                f"(have: {', '.join(downloadable)})")
        for variant in args.variant or downloadable:
            config = downloadable[variant]
            path = fetch.ensure_model(Path(config.model.path), url=config.model.url, size=config.model.size,
                                      sha256=config.model.sha256, download_missing=True, progress=progress,
                                      variant=variant)
            print(f"{variant}: {path}")
        return 0
    dataset = load_config(config_path(args.config, CONFIGS_DIR)).dataset
    fetch.ensure_coco(Path(dataset.annotations), Path(dataset.images), annotations_url=dataset.annotations_url,
                      images_url=dataset.images_url, download_missing=True, downloads_dir=Path(dataset.downloads_dir),
                      progress=progress, annotations_zip=(dataset.annotations_zip_size, dataset.annotations_zip_sha256),
                      images_zip=(dataset.images_zip_size, dataset.images_zip_sha256))
    print(f"COCO: {dataset.annotations}  {dataset.images}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from ssd_eval.inference.model_info import inspect_model, render

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
