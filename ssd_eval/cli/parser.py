"""The ``ssd-eval`` argument parser: every subcommand, its options and help text."""

from __future__ import annotations

import argparse

from ssd_eval.cli import commands
from ssd_eval.utils import package_version

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
    # "(not installed)" when run from a bare copy, without the package's metadata
    parser.add_argument("--version", action="version",
                        version=f"ssd-eval {package_version('ssd_eval') or '(not installed)'}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, **kwargs) -> argparse.ArgumentParser:
        subparser = subcommands.add_parser(name, **kwargs)
        subparser.set_defaults(handler=handler)
        return subparser

    run = command("eval", commands.cmd_eval, help="evaluate a model on a COCO-format set")
    run.add_argument("--config", default="configs/sample.yaml", metavar="VARIANT|PATH",
                     help="a variant (configs/VARIANT.yaml) or a YAML config file (default %(default)s)")
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

    sweep = command("sweep", commands.cmd_sweep,
                    help="evaluate several configs under several protocols (with --executor ray as one Ray job), "
                         "then write the table")
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

    merge = command("merge", commands.cmd_merge, help="score shard outputs together")
    merge.add_argument("shards", nargs="+", metavar="DIR",
                       help="shard output folders (shard-i-of-n), or the folder holding them (eval --shard's --out)")
    merge.add_argument("--out", help="output directory (default: the config's output.dir)")
    add_tracking_options(merge)

    show = command("show", commands.cmd_show,
                   help="print a result's summary: the 12 stats, per-category AP and the error breakdown")
    show.add_argument("metrics", metavar="METRICS.json", help="a metrics.json (or the results folder holding one)")
    show.add_argument("--all", action="store_true", help="every category's AP, not only the best and worst")
    show.add_argument("--top", type=int, default=5, help="categories shown at each end (default 5)")

    table = command("table", commands.cmd_table, help="write results/TABLE.md and results/table.csv")
    table.add_argument("--results", default="results", help="results directory (default results)")
    table.add_argument("--all", action="store_true",
                       help="show every column (default: the columns a reader compares, ~120 characters wide); "
                            "table.csv always holds every column")

    gate = command("gate", commands.cmd_gate, help="fail (exit 1) when results regressed against the baselines",
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

    baseline = command(
        "baseline", commands.cmd_baseline,
        help="rewrite baselines/<variant>.yaml from current results (--update), printing each diff",
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

    report = command("report", commands.cmd_report, help="draw PR curves and per-category AP changes as PNG")
    report.add_argument("--results", default="results")

    bench = command("bench", commands.cmd_bench, help="model-alone speed: fp32 and quantized variants side by side")
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

    harness = command("bench-harness", commands.cmd_bench_harness,
                      help="deprecated: make bench-harness (python -m ssd_eval.testing.bench_harness)")
    harness.add_argument("arguments", nargs=argparse.REMAINDER, help="passed on")

    fetch = command("fetch", commands.cmd_fetch, help="download models or COCO val2017")
    fetch.add_argument("what", choices=("models", "data"))
    fetch.add_argument("--variant", action="append",
                       help="only this model (repeatable; default: every configs/*.yaml variant with a model.url)")
    fetch.add_argument("--config", default="configs/ssd-12.yaml", metavar="VARIANT|PATH",
                       help="a variant or config file naming the COCO locations (data; default configs/ssd-12.yaml)")
    fetch.add_argument("--no-progress", action="store_true")

    inspect = command("inspect", commands.cmd_inspect,
                      help="a model's inputs, quantization, int8 weight ranges, saturation risk")
    inspect.add_argument("model", metavar="MODEL|VARIANT|PATH",
                         help="an ONNX file, or a variant or config file (its model.path)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of the report")
    return parser


def add_executor_option(parser: argparse.ArgumentParser) -> None:
    """--executor: where the --jobs shards run."""
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where the --jobs shards run: local, subprocesses on this machine (default); ray, Ray "
                             "tasks on the cluster at RAY_ADDRESS or a local Ray instance (pip install -e '.[ray]')")


def add_protocol_option(parser: argparse.ArgumentParser) -> None:
    """--protocol NAME: short for --set protocol=NAME, beside every --set (applied after them)."""
    parser.add_argument("--protocol", metavar="NAME", type=lambda name: ("protocol", name, "--protocol"),
                        help="evaluate under this protocol: coco, inc, mlperf-ssd or published (the one the "
                             "variant's number was published under); short for --set protocol=NAME")


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    """--log, --log-uri, --log-dir: experiment tracking (ssd_eval.reports.tracking), off by default."""
    parser.add_argument("--log", action="append", choices=("mlflow", "tensorboard"),
                        help="send the results to MLflow or TensorBoard (repeatable; sets tracking.log; "
                             "pip install -e '.[mlflow]' / '.[tensorboard]')")
    parser.add_argument("--log-uri", metavar="URI",
                        help="MLflow tracking URI or folder (tracking.uri; default the file store ./mlruns)")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="TensorBoard event folder (tracking.tensorboard_dir; default <output dir>/tb)")
