"""The harness measuring itself (make bench-harness): overhead, memory growth, scoring backends. Dev only."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ssd_eval.config.load import config_from_dict, parse_override
from ssd_eval.config.schema import Config
from ssd_eval.engine.bench import QUIET_LOAD_CORES, ForeignLoad, _cpu_seconds, _load_text, _print_table, _threads_text
from ssd_eval.errors import UserError
from ssd_eval.testing.synthetic import (
    CHEAP_DETECTOR,
    COSTLY_DETECTOR,
    SSD_LIKE_DETECTOR,
    DetectorSpec,
    synthetic_gflops,
    synthetic_scoring_case,
    write_synthetic_coco,
    write_synthetic_detector,
)

HARNESS_TARGET_RATIO = 0.95


QUICK_MEMORY_SIZES = (20, 80)  # images; the full run measures 50 vs 500


# --quick's other sizes: images for the throughput ratio (two repeats) and images scored (100 detections each).
QUICK_THROUGHPUT_IMAGES = 8


QUICK_SCORING_IMAGES = 200


MEMORY_GROWTH_TARGET = 0.10


STATS_TOLERANCE = 1e-9


DEFAULT_RESULTS_PATH = Path("results/bench-harness.json")


def installed_backends() -> list[str]:
    """The metrics backends (metrics.BACKENDS) importable here, pycocotools first."""
    from ssd_eval.scoring.cocoeval import BACKENDS

    return [name for name, backend in BACKENDS.items() if importlib.util.find_spec(backend.module) is not None]


def scorers(backends: Sequence[str] | None = None) -> list[tuple[str, str, bool]]:
    """(label, backend, streaming) of every way to score: each backend (default: every installed one)
    on all detections at once, then each that can stream as ``<backend> streaming``."""
    from ssd_eval.scoring.streaming import streams

    backends = list(backends or installed_backends())
    return ([(name, name, False) for name in backends]
            + [(f"{name} streaming", name, True) for name in backends if streams(name)])


def compare_scoring_backends(gt: dict[str, Any], detections: Sequence[dict], image_ids: Sequence[int],
                             *, backends: Sequence[str] | None = None, streaming: bool = True) -> dict[str, Any]:
    """Score the same detections with each backend (default: every installed one), and with
    ``streaming`` also each streaming one fed image by image: seconds, the 12 stats, and whether they agree.

    ``agree`` is true when every stat matches the first backend's within 1e-9.
    """
    from ssd_eval.scoring.metrics import score_detections

    plan = [entry for entry in scorers(backends) if streaming or not entry[2]]
    runs = {}
    for label, backend, streamed in plan:
        with ForeignLoad() as load:
            started = time.perf_counter()
            scores = score_detections(gt, detections, image_ids, backend=backend, source="bench",
                                      streaming=streamed)
            seconds = time.perf_counter() - started
        runs[label] = {"seconds": seconds, "stats": list(scores.stats), "backend": backend,
                       "streaming": streamed, "foreign_load_cores": load.cores}
    reference = runs[plan[0][0]]["stats"]
    max_difference = max(
        (abs(a - b) for run in runs.values() for a, b in zip(reference, run["stats"])), default=0.0)
    return {"backends": runs, "max_stat_difference": max_difference,
            "agree": max_difference <= STATS_TOLERANCE}


def harness_config(model_path: Path, annotations: Path, images: Path, out_dir: Path, *,
                   limit: int | None = None, input_size: Sequence[int] = (1200, 1200),
                   metrics_backend: str = "pycocotools", streaming: bool = True,
                   max_detections: int | str | None = None, scoring_only: bool = False,
                   providers: Sequence[str] | None = None,
                   overrides: Sequence[tuple[str, Any]] = ()) -> Config:
    """An evaluation config for a synthetic model and set, fresh output under ``out_dir``.

    ``max_detections``: postprocess.max_detections (None: the protocol's 100; ``"all"`` keeps every
    model output). ``scoring_only``: no pass after scoring (bootstrap intervals, error breakdown), so
    a whole run is inference, cache, scoring and detections.json. ``providers``: runtime.providers
    (default the config's, CPU). ``overrides``: (dotted key, value) pairs set last, e.g.
    ``("runtime.allow_spinning", True)``.
    """
    metrics: dict[str, Any] = {"backend": metrics_backend, "streaming": streaming}
    if scoring_only:
        metrics.update(bootstrap={"replicates": 0}, error_breakdown=False)
    runtime = {"providers": list(providers)} if providers else {}
    data = {
        "variant": "bench",
        "runtime": runtime,
        "model": {"path": str(model_path), "input_name": "image"},
        "dataset": {"annotations": str(annotations), "images": str(images), "limit": limit},
        "preprocess": {"input_size": list(input_size)},
        "postprocess": {"max_detections": max_detections},
        "metrics": metrics,
        "output": {"dir": str(out_dir), "resume": True},
    }
    for key, value in overrides:
        *parents, last = key.split(".")
        section = data
        for parent in parents:
            section = section.setdefault(parent, {})
        section[last] = value
    return config_from_dict(data, default_origin="bench")


def bench_harness(*, quick: bool = False, work_dir: Path | None = None,
                  results_path: str | Path | None = DEFAULT_RESULTS_PATH, only: Sequence[str] | None = None,
                  int8_images: int | None = None, int8_repeats: int | None = None,
                  overrides: Sequence[tuple[str, Any]] = (),
                  levers: Sequence[tuple[str, Sequence[tuple[str, Any]]]] = (),
                  int8_formats: Sequence[str] | None = None, preprocess_data: Path | None = None) -> dict:
    """Measure the harness against its targets: throughput, memory growth, scoring time.

    (a) images/s of a whole ``evaluate`` run vs a bare ``session.run`` loop on the same
    model (target ratio >= 0.95); (b) peak RSS of evaluations of a small and a ten- (quick:
    four-, QUICK_MEMORY_SIZES) times larger image count, each in a fresh process: the pipeline alone (target growth
    < 10 %), whole runs scoring all at once and streaming (targets < 10 % at 100 detections per
    image, < 20 % at 200); (c) scoring time of every backend, all at once and streaming, on
    synthetic detections (full: 500k and 1M), with the 12 stats compared. Prints a report,
    writes it as JSON to ``results_path`` (unless None) and returns it. Synthetic data goes to
    ``work_dir`` (default: a temporary folder).
    (d) fp32, int8 (QOperator) and QDQ of the synthetic detector, bare and through the harness, against
    the physical limit set by preprocessing (bench_int8; quick: the 105-GFLOP detector, 16 images).
    ``only``: the sections to run (default every one); ``int8_images`` / ``int8_repeats`` size section
    (d) and ``overrides`` (dotted config keys) apply to its runs; ``levers`` and ``int8_formats``: bench_int8's.
    (d') decode+preprocess CPU per image under each protocol, each normalize route (bench_int8_preprocess), on
    ``preprocess_data`` (a folder with annotations.json and images/, e.g. real val2017 images), else on
    synthetic 1200x1200 images.
    """
    from ssd_eval.engine.provenance import host_info, versions
    from ssd_eval.utils import atomic_write_json

    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="ssd-eval-bench-") as temporary, ForeignLoad() as load:
        root = Path(work_dir) if work_dir is not None else Path(temporary)
        root.mkdir(parents=True, exist_ok=True)
        host = host_info()
        print(f"== bench-harness ({'quick' if quick else 'full'}) on {host['cpu']}, {host['cores']} cores; "
              f"work dir {root}")
        report: dict[str, Any] = {"quick": quick, "host": host, "versions": versions()}
        sections = {
            "throughput": lambda: bench_throughput(root / "throughput", images=QUICK_THROUGHPUT_IMAGES if quick else 16,
                                                   repeats=2, spec=COSTLY_DETECTOR if quick else SSD_LIKE_DETECTOR),
            "memory": lambda: bench_memory(root / "memory", sizes=QUICK_MEMORY_SIZES if quick else (50, 500),
                                           quick=quick),
            "scoring": lambda: bench_scoring(images=QUICK_SCORING_IMAGES if quick else 5000,
                                             detections_per_image=100 if quick else (100, 200)),
            "int8": lambda: bench_int8(root / "int8", images=int8_images or (QUICK_INT8_IMAGES if quick else 48),
                                       repeats=int8_repeats or 2, spec=COSTLY_DETECTOR if quick else SSD_LIKE_DETECTOR,
                                       overrides=overrides, levers=levers, formats=int8_formats or INT8_FORMATS),
        }
        sections["preprocess"] = lambda: bench_int8_preprocess(
            *(_preprocess_data(preprocess_data) if preprocess_data is not None
              else write_synthetic_coco(root / "preprocess", 8 if quick else 40, seed=4)),
            images=8 if quick else 40, repeats=3)
        unknown = sorted(set(only or ()) - set(sections))
        if unknown:
            raise UserError(f"bench-harness: no section {unknown[0]!r}; choose from {', '.join(sections)}")
        sections = {name: run for name, run in sections.items() if not only or name in only}
        # Wall seconds depend on other load; CPU seconds (this process and its probes) much less.
        report["section_seconds"], report["section_cpu_seconds"] = {}, {}
        for name, section in sections.items():
            section_started, section_cpu = time.perf_counter(), _cpu_seconds()
            report[name] = section()
            report["section_seconds"][name] = time.perf_counter() - section_started
            report["section_cpu_seconds"][name] = _cpu_seconds() - section_cpu
    report["total_seconds"] = time.perf_counter() - started
    report["cpu_seconds"] = _cpu_seconds() - cpu_started
    report["foreign_load_cores"] = load.cores
    print("== summary: " + "; ".join(_summary_parts(report))
          + f"; {report['total_seconds']:.0f} s ("
          + ", ".join(f"{name} {seconds:.0f}" for name, seconds in report["section_seconds"].items())
          + f"; {report['cpu_seconds']:.0f} s of CPU; other processes used {_load_text(load.cores)} cores)")
    if results_path is not None:
        written = atomic_write_json(results_path, report)
        print(f"written: {written}")
        report["results_path"] = str(written)
    return report


def _summary_parts(report: dict[str, Any]) -> list[str]:
    """One phrase per section that ran, for bench_harness's summary line."""
    parts = []
    if "throughput" in report:
        unreliable = report["throughput"].get("unreliable")
        parts.append(f"throughput ratio {report['throughput']['ratio']:.3f} "
                     f"({_verdict(report['throughput']['pass'])}{'; ' + unreliable if unreliable else ''})")
    if "memory" in report:
        memory = report["memory"]
        streamed = [f"{mode} {100 * m['growth']:.1f} % ({_verdict(m['pass'])})"
                    for mode, m in memory["modes"].items() if m["streaming"]]
        parts.append(f"image pipeline peak RSS growth {100 * memory['growth']:.1f} % ({_verdict(memory['pass'])}), "
                     "whole runs streaming: " + ", ".join(streamed))
    if "scoring" in report:
        parts.append("scoring " + ", ".join(f"{name} {speedup:.1f}x" for name, speedup
                                            in report["scoring"]["speedup"].items() if name != "pycocotools")
                     + f" pycocotools (stats {'agree' if report['scoring']['agree'] else 'DIFFER'})")
    if "preprocess" in report:
        protocols = report["preprocess"]["protocols"]
        parts.append("decode+preprocess CPU ms " + ", ".join(
            f"{name} " + "/".join(f"{v:.1f}" for v in p["total_ms"].values()) for name, p in protocols.items())
            + " (" + "/".join(report["preprocess"]["routes"]) + ")")
    if "int8" in report:
        models = report["int8"]["models"]
        parts.append("int8 section harness/bare " + ", ".join(
            f"{name} {m['ratio']:.3f} ({m['share_of_limit']:.3f} of the limit {m['limit']:.3f})"
            for name, m in models.items())
            + ("; unreliable: measured under other load" if report["int8"].get("unreliable") else ""))
    return parts


def bench_throughput(directory: Path, *, images: int, repeats: int = 2, spec: DetectorSpec = COSTLY_DETECTOR,
                     warmup: int = 1, providers: Sequence[str] | None = None) -> dict[str, Any]:
    """Section (a): a bare ``session.run`` loop vs whole ``evaluate`` runs, same model, threads and
    execution providers (``providers``: default CPU).

    Each repeat times half the bare loop, one fresh evaluation, then the other half; the
    best time of each side over the repeats is compared (other load only ever slows down).
    """
    from ssd_eval.data.coco import load_annotations
    from ssd_eval.engine.pipeline import evaluate
    from ssd_eval.engine.prefetch import PreprocessParams, default_workers, load_and_preprocess
    from ssd_eval.inference.runner import create_session, resolve_io

    print(f"-- (a) throughput: {images} synthetic images, best of {repeats}; synthetic detector "
          f"(channels {list(spec.channels)}, extra convs {list(spec.extra_convs)}, "
          f"{spec.input_size[0]}x{spec.input_size[1]} input, {synthetic_gflops(spec):.0f} GFLOPs per image)")
    model_path = write_synthetic_detector(directory / "detector.onnx", spec)
    annotations, image_dir = write_synthetic_coco(directory / "coco", images, seed=1)
    config = harness_config(model_path, annotations, image_dir, directory / "out", input_size=spec.input_size,
                            providers=providers)

    # The bare loop runs on real preprocessed inputs, made before timing and reused in turn.
    dataset = load_annotations(annotations, image_dir)
    params = PreprocessParams.from_config(config)
    records = [dataset.images[i] for i in sorted(dataset.images)]
    tensors = []
    preprocess_started = time.perf_counter()
    for record in records[: min(4, len(records))]:
        tensors.append(load_and_preprocess(record, params)[np.newaxis])
    preprocess_seconds = (time.perf_counter() - preprocess_started) / len(tensors)
    session = create_session(model_path, config.runtime)
    io = resolve_io(session, config.model, model_path)
    outputs = [io.boxes, io.labels, io.scores]

    def bare_loop(count: int) -> float:
        loop_started = time.perf_counter()
        for index in range(count):
            session.run(outputs, {io.input_name: tensors[index % len(tensors)]})
        return time.perf_counter() - loop_started

    bare_loop(warmup)
    bare_times, harness_times, loop_rates, bare_loads, harness_loads = [], [], [], [], []
    evaluated = images
    for _ in range(repeats):
        with ForeignLoad() as first_load:
            bare_seconds = bare_loop(images // 2)
        with ForeignLoad() as harness_load:
            harness_started = time.perf_counter()
            result = evaluate(config, fresh=True, progress=False)
            harness_times.append(time.perf_counter() - harness_started)
        with ForeignLoad() as second_load:
            bare_seconds += bare_loop(images - images // 2)
        bare_times.append(bare_seconds)
        bare_loads.append(_mean_load([first_load.cores, second_load.cores]))
        harness_loads.append(harness_load.cores)
        evaluated = result.provenance["images"]
        loop_rates.append(result.provenance["images_per_s"] or 0.0)
    session = None  # free the bare loop's session before the harness runs
    best_bare = int(np.argmin(bare_times))
    best_harness = int(np.argmin(harness_times))
    bare_rate = images / bare_times[best_bare]
    harness_rate = evaluated / harness_times[best_harness]
    foreign = [bare_loads[best_bare], harness_loads[best_harness]]
    quiet = all(load is not None and load <= QUIET_LOAD_CORES for load in foreign)
    unreliable = unreliable_reason(*foreign)
    loop_rate = max(loop_rates)
    ratio = harness_rate / bare_rate
    # With every core busy in inference, preprocessing CPU time is taken from it:
    # the best a pipeline can do without idle cores.
    cores = os.cpu_count() or 1
    ceiling = (1.0 / bare_rate) / (1.0 / bare_rate + preprocess_seconds / cores)
    section = {
        "images": images,
        "repeats": repeats,
        "model": {"channels": list(spec.channels), "extra_convs": list(spec.extra_convs),
                  "input_size": list(spec.input_size), "detections": spec.detections},
        "bare_seconds": bare_times,
        "harness_seconds": harness_times,
        "bare_seconds_per_image": 1.0 / bare_rate,
        "bare_images_per_s": bare_rate,
        "harness_images_per_s": harness_rate,
        "harness_loop_images_per_s": loop_rate,
        "loop_ratio": loop_rate / bare_rate,
        "ratio": ratio,
        "target": HARNESS_TARGET_RATIO,
        "pass": ratio >= HARNESS_TARGET_RATIO,
        "foreign_load_cores": {"bare": bare_loads, "harness": harness_loads},
        "quiet": quiet,
        "unreliable": unreliable,
        "preprocess_seconds_per_image": preprocess_seconds,
        "ratio_ceiling_if_cores_busy": ceiling,
        "threads": {"intra_op": config.runtime.intra_op_threads, "inter_op": config.runtime.inter_op_threads},
        "pipeline_workers": default_workers(config),
    }
    print(f"   bare session.run loop : {bare_rate:.3f} img/s ({1000 / bare_rate:.0f} ms/img; "
          f"runs of {', '.join(f'{t:.1f}' for t in bare_times)} s)")
    print(f"   harness (evaluate)    : {harness_rate:.3f} img/s end to end (runs of "
          f"{', '.join(f'{t:.1f}' for t in harness_times)} s; inference loop alone {loop_rate:.3f} img/s)")
    print(f"   decode+preprocess     : {1000 * preprocess_seconds:.0f} ms of CPU per image, on "
          f"{section['pipeline_workers']} worker(s) beside onnxruntime's threads on {cores} cores "
          f"(ceiling if inference keeps every core busy: {ceiling:.3f})")
    print(f"   ratio {ratio:.3f} (inference loop alone {section['loop_ratio']:.3f}); "
          f"target >= {HARNESS_TARGET_RATIO}: {_verdict(section['pass'])}"
          + (f" ({unreliable})" if unreliable else ""))
    print(f"   other processes used {_load_text(foreign[0])} cores during the best bare run, "
          f"{_load_text(foreign[1])} during the best harness run")
    if not quiet:
        print("   WARNING: the machine was not idle while measuring; this ratio is unreliable, rerun it on an "
              "idle machine")
    return section


# =========================================================================== int8 through the harness

INT8_FORMATS = ("fp32", "int8", "qdq")
"""The section's models: the synthetic detector, quantized QOperator u8s8 (as INC did) and QDQ."""
INT8_LIMIT_SHARE_TARGET = 0.97  # harness / bare as a share of the physical limit
INT8_BARE_TARGET = 0.85  # harness / bare of int8 on the 105-GFLOP detector (--quick's)
QUICK_INT8_IMAGES = 16
INT8_CALIBRATION_IMAGES = 2


def bench_int8_models(directory: Path, spec: DetectorSpec, calibration: Sequence[np.ndarray]) -> dict[str, Path]:
    """The synthetic detector ``spec`` (fp32) and its quantize_static twins, QOperator u8s8 (``int8``) and
    QDQ (``qdq``), calibrated (MinMax) on ``calibration`` (preprocessed (1, 3, H, W) inputs)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"image": tensor} for tensor in calibration])

        def get_next(self):
            return next(self.feeds, None)

    directory.mkdir(parents=True, exist_ok=True)
    models = {"fp32": write_synthetic_detector(directory / "fp32.onnx", spec)}
    root = logging.getLogger()
    advice = _DropQuantizerAdvice()
    root.addFilter(advice)  # quantize_static advises pre-processing on the root logger, twice per model
    try:
        for name, quant_format in (("int8", QuantFormat.QOperator), ("qdq", QuantFormat.QDQ)):
            path = directory / f"{name}.onnx"
            quantize_static(str(models["fp32"]), str(path), Reader(), quant_format=quant_format,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"])
            models[name] = path
    finally:
        root.removeFilter(advice)
    return models


class _DropQuantizerAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage() \
            and "run pre-processing" not in record.getMessage()


def bench_int8_limit(bare_seconds: float, preprocess_cpu_seconds: float, cores: int) -> float:
    """The physical limit of harness / bare when decode+preprocess shares the cores with the model:
    bare / (bare + preprocess CPU / cores) (every core busy, preprocessing's CPU taken from inference)."""
    return bare_seconds / (bare_seconds + preprocess_cpu_seconds / max(cores, 1))


def bench_int8(directory: Path, *, images: int, repeats: int = 2, spec: DetectorSpec = COSTLY_DETECTOR,
               warmup: int = 1, formats: Sequence[str] = INT8_FORMATS,
               overrides: Sequence[tuple[str, Any]] = (),
               levers: Sequence[tuple[str, Sequence[tuple[str, Any]]]] = ()) -> dict[str, Any]:
    """Section (d): fp32, int8 (QOperator u8s8) and QDQ of the synthetic detector, each as a bare
    ``session.run`` loop and through whole ``evaluate`` runs, interleaved (each repeat rotates the
    order; per model: half the bare loop, one evaluation, the other half), best of ``repeats``.

    Per model: harness / bare (images/s of the image loop from metrics.json, and end to end), the
    speedup over fp32 bare and through the harness, decode+preprocess CPU ms per image (the run's
    provenance.stages), the physical limit (bench_int8_limit) and the harness as a share of it,
    session.run's idle share, and the other processes' load while each side was timed.
    ``overrides``: config keys set on every harness run and bare session. ``levers``: (name, config keys)
    to compare side by side: each model runs as it is and with each lever (labelled ``<model> <name>``),
    all interleaved; ``ratio_vs_default_bare`` divides by the bare loop without the lever.
    """
    from ssd_eval.data.coco import load_annotations
    from ssd_eval.engine.prefetch import PreprocessParams, load_and_preprocess
    from ssd_eval.inference import model_info
    from ssd_eval.inference.runner import create_session, resolve_io, spinning_entries

    unknown = sorted(set(formats) - set(INT8_FORMATS))
    if unknown or not formats:
        raise UserError(f"bench-harness: no model {unknown[0] if unknown else ''!r}; "
                        f"choose from {', '.join(INT8_FORMATS)}")
    cores = os.cpu_count() or 1
    print(f"-- (d) int8 through the harness: {images} synthetic images, best of {repeats}, models interleaved; "
          f"synthetic detector {synthetic_gflops(spec):.0f} GFLOPs per image at {spec.input_size[0]}x"
          f"{spec.input_size[1]}, quantized with onnxruntime's quantize_static (QOperator u8s8 and QDQ)")
    annotations, image_dir = write_synthetic_coco(directory / "coco", images, seed=3)
    dataset = load_annotations(annotations, image_dir)
    records = [dataset.images[i] for i in sorted(dataset.images)]
    probe = harness_config(directory / "unused.onnx", annotations, image_dir, directory / "probe",
                           input_size=spec.input_size)
    params = PreprocessParams.from_config(probe)
    tensors = [load_and_preprocess(record, params)[np.newaxis] for record in records[: min(4, len(records))]]
    models = bench_int8_models(directory / "models", spec, tensors[:INT8_CALIBRATION_IMAGES])
    runs: dict[str, dict[str, Any]] = {}
    plan = [(name, name, "", list(overrides)) for name in formats]
    plan += [(f"{name} {lever}", name, lever, [*overrides, *extra]) for lever, extra in levers for name in formats]
    for label, name, lever, keys in plan:
        config = harness_config(models[name], annotations, image_dir,
                                directory / f"out-{label.replace(' ', '-').replace('/', '-')}",
                                input_size=spec.input_size, scoring_only=True, overrides=keys)
        info = model_info.inspect_model(models[name])
        session_config = model_info.int8_session_config(info, config.runtime.session_config,
                                                        exact_int8=config.runtime.exact_int8)
        session = create_session(models[name], config.runtime, session_config=session_config)
        io = resolve_io(session, config.model, models[name])
        runs[label] = {"config": config, "session": session, "io": io, "session_config": session_config,
                       "format": name, "lever": lever, "overrides": keys,
                       "bare": [], "bare_load": [], "harness": [], "harness_load": [], "loop": [], "stages": []}

    def bare_loop(run: dict[str, Any], count: int) -> float:
        io, session = run["io"], run["session"]
        started = time.perf_counter()
        for index in range(count):
            session.run([io.boxes, io.labels, io.scores], {io.input_name: tensors[index % len(tensors)]})
        return time.perf_counter() - started

    for run in runs.values():
        bare_loop(run, warmup)
    order = list(runs)
    for repeat in range(repeats):
        for name in order[repeat % len(order):] + order[: repeat % len(order)]:
            run = runs[name]
            with ForeignLoad() as first:
                seconds = bare_loop(run, images // 2)
            with ForeignLoad() as harness_load:
                started = time.perf_counter()
                result = _evaluate_quietly(run["config"])
                run["harness"].append(time.perf_counter() - started)
            with ForeignLoad() as second:
                seconds += bare_loop(run, images - images // 2)
            run["bare"].append(seconds / images)
            run["bare_load"].append(_mean_load([first.cores, second.cores]))
            run["harness_load"].append(harness_load.cores)
            run["loop"].append(result.provenance["images_per_s"] or 0.0)
            run["stages"].append(result.provenance["stages"])
    models_out = {}
    for name, run in runs.items():
        bare = min(run["bare"])
        best = int(np.argmax(run["loop"]))
        stages = run["stages"][best]
        preprocess_ms = min(s["decode_preprocess"]["cpu_ms"] for s in run["stages"])
        loop_ratio = run["loop"][best] * bare
        end_to_end = images / min(run["harness"]) * bare
        limit = bench_int8_limit(bare, preprocess_ms / 1000.0, cores)
        runtime = run["config"].runtime
        models_out[name] = {
            "format": run["format"],
            "lever": run["lever"],
            "overrides": [list(o) for o in run["overrides"]],
            "model": str(models[run["format"]]),
            "bare_seconds_per_image": bare,
            "bare_runs": run["bare"],
            "harness_loop_images_per_s": run["loop"],
            "harness_seconds": run["harness"],
            "ratio": loop_ratio,
            "end_to_end_ratio": end_to_end,
            "preprocess_cpu_ms": preprocess_ms,
            "preprocess_wall_ms": stages["decode_preprocess"]["wall_ms"],
            "inference_cpu_ms": stages["inference"]["cpu_ms"],
            "idle_share": stages["idle_share"],
            "limit": limit,
            "share_of_limit": loop_ratio / limit,
            "pass_limit": loop_ratio / limit >= INT8_LIMIT_SHARE_TARGET,
            "foreign_load_cores": {"bare": run["bare_load"], "harness": run["harness_load"]},
            "unreliable": unreliable_reason(run["bare_load"][int(np.argmin(run["bare"]))],
                                            run["harness_load"][best]),
            "session_config": run["session_config"],
            "threads": {"intra_op": runtime.intra_op_threads, "inter_op": runtime.inter_op_threads,
                        "spinning": spinning_entries(runtime) or "onnxruntime default (on)"},
            "pipeline": run["config"].pipeline.__dict__ | {"workers_used": _decode_workers(run["config"])},
        }
    fp32 = models_out.get("fp32")
    for entry in models_out.values():
        default = models_out[entry["format"]]
        entry["harness_images_per_s"] = max(entry["harness_loop_images_per_s"])
        entry["ratio_vs_default_bare"] = entry["harness_images_per_s"] * default["bare_seconds_per_image"]
        entry["speedup_bare"] = fp32["bare_seconds_per_image"] / entry["bare_seconds_per_image"] if fp32 else None
        entry["speedup_harness"] = (entry["harness_images_per_s"] / fp32["harness_images_per_s"]) if fp32 else None
    first = next(iter(runs.values()))
    runtime = first["config"].runtime
    print(f"   onnxruntime threads: intra_op {_threads_text(runtime.intra_op_threads, per_core=True)}, inter_op "
          f"{_threads_text(runtime.inter_op_threads, per_core=False)}; spinning: "
          f"{_spinning_text(models_out[order[0]]['threads']['spinning'])}; "
          f"decode workers {_decode_workers(first['config'])} "
          f"({first['config'].pipeline.mode}) on {cores} cores")
    for lever, extra in levers:
        print(f"   lever {lever}: " + ", ".join(f"{key}={value}" for key, value in extra))
    _print_table(
        ["model", "bare s/img", "speedup bare", "harness/bare", "vs default bare", "end to end", "speedup harness",
         "preprocess CPU ms", "limit", "share of limit", "idle", "load bare/harness"],
        [[name, f"{e['bare_seconds_per_image']:.4f}", _number(e["speedup_bare"], "{:.2f}x"), f"{e['ratio']:.3f}",
          f"{e['ratio_vs_default_bare']:.3f}",
          f"{e['end_to_end_ratio']:.3f}", _number(e["speedup_harness"], "{:.2f}x"), f"{e['preprocess_cpu_ms']:.1f}",
          f"{e['limit']:.3f}", f"{e['share_of_limit']:.3f} ({_verdict(e['pass_limit'])})",
          _number(e["idle_share"], "{:.3f}"),
          f"{_load_text(min(_known(e['foreign_load_cores']['bare'])))}/"
          f"{_load_text(min(_known(e['foreign_load_cores']['harness'])))}"]
         for name, e in models_out.items()])
    int8 = models_out.get("int8")
    int8_target = None if int8 is None else int8["ratio"] >= INT8_BARE_TARGET
    print(f"   limit = bare / (bare + preprocess CPU / {cores} cores); targets: share of limit >= "
          f"{INT8_LIMIT_SHARE_TARGET} for every model"
          + ("" if int8 is None else f", int8 harness/bare >= {INT8_BARE_TARGET} (set for the 105-GFLOP "
             f"detector; this one: {synthetic_gflops(spec):.0f} GFLOP): {int8['ratio']:.3f} {_verdict(int8_target)}"))
    unreliable = [f"{name}: {e['unreliable']}" for name, e in models_out.items() if e["unreliable"]]
    if unreliable:
        print("   WARNING: measured under other load, the ratios are unreliable (" + "; ".join(unreliable) + ")")
    return {"images": images, "repeats": repeats, "cores": cores, "gflops": synthetic_gflops(spec),
            "model": {"channels": list(spec.channels), "extra_convs": list(spec.extra_convs),
                      "input_size": list(spec.input_size)},
            "overrides": [list(o) for o in overrides], "levers": [[n, [list(o) for o in e]] for n, e in levers],
            "models": models_out,
            "limit_target": INT8_LIMIT_SHARE_TARGET, "int8_target": INT8_BARE_TARGET,
            "pass_limit": all(e["pass_limit"] for e in models_out.values()), "pass_int8": int8_target,
            "unreliable": unreliable or None}


PREPROCESS_BACKENDS = {"coco": "pil", "mlperf-ssd": "pil", "inc": "opencv"}
"""Each protocol's resize backend (config.PROTOCOL_PRESETS): what its preprocessing costs."""


def bench_int8_preprocess(annotations: Path, images_dir: Path, *, images: int = 40, repeats: int = 3,
                          size_hw: Sequence[int] = (1200, 1200)) -> dict[str, Any]:
    """Decode + resize + normalize CPU ms per image under each protocol's resize, on ``images`` files of
    ``annotations``, normalizing through each route (preprocess.NORMALIZE_ROUTES; the one in use first):
    process CPU time, every step of every image timed in turn (routes interleaved, their order
    alternating), the best of ``repeats`` per image and step, averaged over the images. The routes'
    tensors are compared bit for bit on every image."""
    from ssd_eval.data import coco as data
    from ssd_eval.inference import preprocess

    dataset = data.load_annotations(annotations, images_dir)
    records = [dataset.images[i] for i in sorted(dataset.images)[:images]]
    mean, std, scale = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255
    routes = [preprocess.normalize_route()] + [r for r in preprocess.NORMALIZE_ROUTES
                                                if r != preprocess.normalize_route()]
    if preprocess.normalize_route() == "numpy-take":
        routes = ["numpy-take"]
    print(f"-- (d') decode+preprocess CPU per image: {len(records)} images of {annotations}, to "
          f"{size_hw[0]}x{size_hw[1]}, best of {repeats}; normalize routes {', '.join(routes)} (same bits)")
    buffers = {route: np.empty((3, *size_hw), dtype=np.float32) for route in routes}
    protocols = {}
    for protocol, backend in PREPROCESS_BACKENDS.items():
        steps = ["decode", "resize", *routes]
        best = {step: np.full(len(records), np.inf) for step in steps}  # per image: other load only adds
        identical = True
        for repeat in range(repeats):
            for index, record in enumerate(records):
                # Process CPU time: OpenCV may spread a call over its own threads.
                started = time.process_time()
                image = data.read_image(record)
                best["decode"][index] = min(best["decode"][index], time.process_time() - started)
                started = time.process_time()
                pixels = preprocess.resize(image, size_hw, backend)
                best["resize"][index] = min(best["resize"][index], time.process_time() - started)
                for route in routes if repeat % 2 == 0 else routes[::-1]:
                    started = time.process_time()
                    preprocess.normalize(pixels, mean, std, scale, out=buffers[route], route=route)
                    best[route][index] = min(best[route][index], time.process_time() - started)
                identical = identical and all(np.array_equal(buffers[routes[0]].view(np.uint32), b.view(np.uint32))
                                              for b in buffers.values())
        ms = {step: 1000.0 * float(values.mean()) for step, values in best.items()}
        totals = {route: ms["decode"] + ms["resize"] + ms[route] for route in routes}
        protocols[protocol] = {"backend": backend, "ms": ms, "total_ms": totals, "identical": identical}
        print(f"   {protocol:10s} ({backend:6s}): decode {ms['decode']:.1f} + resize {ms['resize']:.1f} + "
              "normalize " + " / ".join(f"{ms[r]:.1f} ({r})" for r in routes) + " = "
              + " / ".join(f"{totals[r]:.1f}" for r in routes)
              + f" ms of CPU; same bits: {'yes' if identical else 'NO'}")
    return {"images": len(records), "repeats": repeats, "routes": routes, "protocols": protocols,
            "annotations": str(annotations)}


def _preprocess_data(folder: Path) -> tuple[Path, Path]:
    folder = Path(folder)
    annotations, images = folder / "annotations.json", folder / "images"
    if not annotations.is_file() or not images.is_dir():
        raise UserError(f"--preprocess-data {folder}: expected annotations.json and images/ in it")
    return annotations, images


def _decode_workers(config: Config) -> int:
    """The decode workers a run of ``config`` uses (prefetch.default_workers)."""
    from ssd_eval.engine.prefetch import default_workers

    return default_workers(config)


def _evaluate_quietly(config: Config):
    """``evaluate(config)`` afresh, without progress output (the memory probe's way, in process)."""
    from ssd_eval.engine.pipeline import evaluate

    return evaluate(config, fresh=True, progress=False)


def _spinning_text(spinning: dict[str, str] | str) -> str:
    if isinstance(spinning, str):
        return spinning
    return ", ".join(f"{key.split('.')[1].replace('_op', '-op')} {'on' if value == '1' else 'off'}"
                     for key, value in spinning.items())


def _known(values: Sequence[float | None]) -> list[float | None]:
    known = [v for v in values if v is not None]
    return known or [None]


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


# ru_maxrss alone would mislead here: on Linux a child started by fork/exec inherits its
# parent's peak RSS in it, so the probe prefers /proc/self/status VmHWM (reset by exec).
_MEMORY_PROBE = """
import json, resource, sys
from ssd_eval.engine import pipeline
from ssd_eval.config.load import config_from_dict

def peak_kb():
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"

def rss_kb():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))

# The scoring step alone: its peak RSS (VmHWM reset through /proc/self/clear_refs just before it)
# and the RSS when it starts; the whole run's peak is the larger of the peaks before and after.
scoring = {}
original = getattr(pipeline, "score_detections", None)

def measured_scoring(*args, **kwargs):
    scoring["pipeline_peak_kb"] = peak_kb()[0]
    scoring["rss_at_start_kb"] = rss_kb()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        scoring["reset"] = True
    except OSError:
        scoring["reset"] = False
    scores = original(*args, **kwargs)
    scoring["peak_kb"] = peak_kb()[0]
    return scores

config = config_from_dict(json.loads(sys.argv[1]), default_origin="bench")
score = sys.argv[2] == "score"
if score and original is not None and sys.platform.startswith("linux"):
    pipeline.score_detections = measured_scoring
before, source = peak_kb()
result = pipeline.evaluate(config, fresh=True, progress=False, shard=None if score else (1, 1))
after, source = peak_kb()
if scoring.get("reset"):  # (VmHWM can miss a peak that was not yet folded into the kernel's high-water mark)
    after = max(after, scoring["pipeline_peak_kb"], scoring["peak_kb"])
if score:
    provenance = result.provenance
else:
    provenance = json.loads((config.out_dir / "shard-1-of-1" / "shard.json").read_text())["provenance"]
print(json.dumps({"maxrss_kb": after, "maxrss_before_kb": before, "source": source,
                  "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "scoring": scoring if scoring.get("reset") else None,
                  "images": provenance["images"], "detections": provenance["detections"]}))
"""


# What the memory section measures: the image pipeline alone (the target), then whole runs with
# each backend scoring every detection at once, and streaming (ssd_eval.scoring.streaming; targets too),
# at SSD's 100 detections per image and at 200 (the inc and mlperf-ssd protocols keep every output).
MEMORY_LABELS = {"pipeline": "image pipeline peak RSS (no scoring)", "whole": "whole run incl. scoring"}


STREAMING_GROWTH_TARGETS = {100: 0.10, 200: 0.20}


def memory_plan(*, quick: bool = False, backends: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The runs of section (b): per detections-per-image count, the pipeline alone, then each
    backend scoring all at once (at 200 only pycocotools) and each streaming one streaming (quick:
    the pipeline and pycocotools streaming at 100, pycocotools both ways at 200). Full runs measure the modes
    with a target three times (the median counts), quick ones once."""
    backends = list(backends or installed_backends())
    plan = []
    for per_image in STREAMING_GROWTH_TARGETS:
        suffix = "" if per_image == 100 else f" @{per_image}"
        if not (quick and suffix):
            plan.append({"mode": f"pipeline{suffix}", "detections": per_image, "backend": None,
                         "streaming": False, "repeats": 1 if quick else 3})
        for label, backend, streaming in scorers(backends):
            if backend != "pycocotools" and (quick or (suffix and not streaming)):
                continue
            if quick and not streaming and not suffix:  # quick: all at once only at 200, for the contrast
                continue
            plan.append({"mode": label + suffix, "detections": per_image, "backend": backend,
                         "streaming": streaming, "repeats": 1 if quick or not streaming else 3})
    return plan


def bench_memory(directory: Path, *, sizes: tuple[int, int], spec: DetectorSpec = CHEAP_DETECTOR,
                 quick: bool = False, backends: Sequence[str] | None = None) -> dict[str, Any]:
    """Section (b): peak RSS at two image counts, each run in a fresh process.

    The pipeline target (growth < 10 %) applies to decode, preprocess, inference, resume cache
    and detections.json (a ``--shard 1/1`` run, which does not score). Whole runs add scoring
    (no bootstrap or error breakdown): each backend on every detection at once, which holds every
    detection, and each streaming backend, held to STREAMING_GROWTH_TARGETS. Every mode runs at
    ``spec.detections`` (100) and at 200 detections per image (``max_detections: all``).
    """
    import dataclasses

    small, large = sizes
    plan = memory_plan(quick=quick, backends=backends)
    print(f"-- (b) memory: peak RSS of whole runs at {small} vs {large} synthetic images (cheap detector, "
          f"{' and '.join(str(d) for d in STREAMING_GROWTH_TARGETS)} detections per image, fresh process each; "
          "no bootstrap or error breakdown)")
    models = {}
    for per_image in STREAMING_GROWTH_TARGETS:
        models[per_image] = write_synthetic_detector(directory / f"detector-{per_image}.onnx",
                                                     dataclasses.replace(spec, detections=per_image))
    annotations, image_dir = write_synthetic_coco(directory / "coco", large, seed=2)
    modes: dict[str, Any] = {}
    targets_met = []
    for entry in plan:
        mode, per_image, backend = entry["mode"], entry["detections"], entry["backend"]
        runs = []
        for count in sizes:
            config = harness_config(models[per_image], annotations, image_dir,
                                    directory / f"out-{mode.replace(' ', '-').replace('@', '')}-{count}",
                                    limit=count, input_size=spec.input_size, metrics_backend=backend or "pycocotools",
                                    streaming=entry["streaming"], max_detections=None if per_image == 100 else "all",
                                    scoring_only=True)
            # The median of ``repeats`` runs: a peak depends on thread timing (how many images are in
            # flight at once), which other load on the machine shifts.
            repeated = sorted((measure_peak_rss(config, score=backend is not None) for _ in range(entry["repeats"])),
                              key=lambda run: run["maxrss_kb"])
            runs.append(dict(repeated[len(repeated) // 2], repeats_kb=[run["maxrss_kb"] for run in repeated]))
        growth = runs[1]["maxrss_kb"] / runs[0]["maxrss_kb"] - 1.0
        target = STREAMING_GROWTH_TARGETS[per_image] if entry["streaming"] else None
        modes[mode] = {
            **entry,
            "runs": runs,
            "peak_rss_mb": [r["maxrss_kb"] / 1024 for r in runs],
            "growth": growth,
            "kb_per_extra_image": (runs[1]["maxrss_kb"] - runs[0]["maxrss_kb"]) / (large - small),
            # A whole run's peak is the larger of its two phases' (Linux: VmHWM reset before scoring).
            "pipeline_phase_peak_mb": ([r["scoring"]["pipeline_peak_kb"] / 1024 for r in runs]
                                       if all(r.get("scoring") for r in runs) else None),
            "scoring_phase_peak_mb": ([r["scoring"]["peak_kb"] / 1024 for r in runs]
                                      if all(r.get("scoring") for r in runs) else None),
            "target": target,
            "pass": None if target is None else growth < target,
        }
        if target is not None:
            targets_met.append(growth < target)
        # Each figure says what it measures: a pipeline MISS is not scoring memory, nor the reverse.
        what = (MEMORY_LABELS["pipeline"] if backend is None else
                f"{MEMORY_LABELS['whole']} ({backend} {'streaming' if entry['streaming'] else 'all at once'})")
        modes[mode]["measures"] = what
        verdict = "" if target is None else f"; target < {100 * target:.0f} %: {_verdict(growth < target)}"
        phase = modes[mode]["scoring_phase_peak_mb"]
        step = "" if phase is None else f"; scoring phase {phase[0]:.0f} -> {phase[1]:.0f} MB"
        print(f"   {per_image} det/img, {what:25s}: {runs[0]['maxrss_kb'] / 1024:4.0f} -> "
              f"{runs[1]['maxrss_kb'] / 1024:4.0f} MB, growth {100 * growth:5.1f} %{step}{verdict}")
    pipeline = modes["pipeline"]
    section = {
        "sizes": list(sizes),
        "modes": modes,
        "growth": pipeline["growth"],
        "peak_rss_mb": pipeline["peak_rss_mb"],
        "detections_per_image": spec.detections,
        "target": MEMORY_GROWTH_TARGET,
        "pass": pipeline["growth"] < MEMORY_GROWTH_TARGET,
        "streaming_targets": {str(k): v for k, v in STREAMING_GROWTH_TARGETS.items()},
        "streaming_pass": all(targets_met) if targets_met else None,
    }
    print(f"   {MEMORY_LABELS['pipeline']}: pipeline growth {100 * pipeline['growth']:.1f} %; "
          f"target < {100 * MEMORY_GROWTH_TARGET:.0f} %: "
          f"{_verdict(section['pass'])}; streaming whole runs within their targets: "
          f"{'-' if section['streaming_pass'] is None else _verdict(section['streaming_pass'])}")
    return section


def measure_peak_rss(config: Config, *, score: bool = True) -> dict[str, Any]:
    """Run ``evaluate(config)`` in a fresh Python process; its peak RSS (kB) and counts.

    ``score=False`` runs it as shard 1/1: the whole image pipeline, without scoring.

    ``maxrss_kb`` is the process's own peak (VmHWM where /proc exists, else ru_maxrss);
    ``maxrss_before_kb`` the peak after imports, before the evaluation started.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, json.dumps(config.to_dict()),
                                "score" if score else "pipeline"],
                               capture_output=True, text=True, env=environment, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe failed (exit {completed.returncode}): {tail}")
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    measured["seconds"] = seconds
    return measured


def bench_scoring(*, images: int, detections_per_image: int | Sequence[int] = 100, seed: int = 0,
                  backends: Sequence[str] | None = None) -> dict[str, Any]:
    """Section (c): every installed metrics backend, all at once and (where it can) streaming, on the
    same synthetic detections, timed side by side, with each one's speedup over pycocotools and
    whether the 12 stats agree; once per detections-per-image count (the first one's numbers also
    at the top level)."""
    counts = [detections_per_image] if isinstance(detections_per_image, int) else list(detections_per_image)
    sizes = []
    for per_image in counts:
        plan = scorers(backends)
        print(f"-- (c) scoring: {images} images, {images * per_image} detections, "
              + " vs ".join(label for label, _, _ in plan))
        gt, detections, image_ids = synthetic_scoring_case(images, per_image, seed=seed)
        compared = compare_scoring_backends(gt, detections, image_ids, backends=backends)
        del detections
        reference = compared["backends"]["pycocotools"]["seconds"]
        section = {
            "images": images,
            "detections_per_image": per_image,
            "detections": images * per_image,
            "seconds": {name: run["seconds"] for name, run in compared["backends"].items()},
            "speedup": {name: reference / run["seconds"] for name, run in compared["backends"].items()},
            "max_stat_difference": compared["max_stat_difference"],
            "agree": compared["agree"],
            "stats": compared["backends"]["pycocotools"]["stats"],
        }
        width = max(len(label) for label, _, _ in plan)
        section["foreign_load_cores"] = {name: run["foreign_load_cores"]
                                         for name, run in compared["backends"].items()}
        for label, _, _ in plan:
            load = section["foreign_load_cores"][label]
            busy = "" if load is None or load <= QUIET_LOAD_CORES else f"; other processes used {load:.2f} cores"
            print(f"   {label:{width}s} : {section['seconds'][label]:7.2f} s  "
                  f"({section['speedup'][label]:.1f}x pycocotools{busy})")
        print(f"   12 stats agree within {STATS_TOLERANCE:g}: {'yes' if section['agree'] else 'NO'} "
              f"(max difference {section['max_stat_difference']:.3g}); mAP {section['stats'][0]:.4f}")
        sizes.append(section)
    return {**sizes[0], "sizes": sizes, "agree": all(section["agree"] for section in sizes)}


def unreliable_reason(bare_load: float | None, harness_load: float | None) -> str | None:
    """Why a throughput ratio cannot be trusted, in words ("unreliable: other processes used 0.52 cores
    during the bare loop"), or None when other processes stayed under QUIET_LOAD_CORES during both
    timed sides (or the load cannot be read here). A slowed bare loop inflates the ratio; a slowed
    harness run deflates it."""
    parts = [f"{load:.2f} cores during the {side}" for load, side in
             ((bare_load, "bare loop"), (harness_load, "harness run")) if load is not None and load > QUIET_LOAD_CORES]
    return "unreliable: other processes used " + " and ".join(parts) if parts else None


def _mean_load(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m ssd_eval.testing.bench_harness [--quick] [--only SECTION] ...``
    (make bench-harness)."""
    parser = argparse.ArgumentParser(prog="python -m ssd_eval.testing.bench_harness",
                                     description="harness overhead, memory growth, scoring backends, int8 vs the "
                                                 "physical limit (docs/PERFORMANCE.md)")
    parser.add_argument("--quick", action="store_true",
                        help="CI-sized run: smaller sizes (a few minutes on 2 cores; docs/PERFORMANCE.md)")
    parser.add_argument("--work-dir", help="keep the synthetic data here (default: a temporary folder)")
    parser.add_argument("--only", action="append", choices=("throughput", "memory", "scoring", "int8", "preprocess"),
                        help="run only this section (repeatable; default every one)")
    parser.add_argument("--images", type=int, help="images of the int8 section (default 48, --quick 16)")
    parser.add_argument("--repeats", type=int, help="repeats of the int8 section, best counts (default 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in the int8 section's runs and bare sessions, e.g. "
                             "runtime.allow_spinning=true")
    parser.add_argument("--lever", dest="levers", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="int8 section: also run each model with these config keys, side by side with the "
                             "default (repeatable), e.g. spin:runtime.allow_spinning=true")
    parser.add_argument("--formats", help="int8 section: the models, comma-separated (default fp32,int8,qdq)")
    parser.add_argument("--preprocess-data", metavar="DIR",
                        help="preprocess section: a folder with annotations.json and images/ (e.g. real val2017 "
                             "images; default: synthetic 1200x1200 images)")
    args = parser.parse_args(argv)
    levers = []
    for item in args.levers:
        name, _, keys = item.partition(":")
        if not name or not keys:
            parser.error(f"--lever {item!r}: expected NAME:KEY=VALUE[,KEY=VALUE], "
                         "e.g. spin:runtime.allow_spinning=true")
        levers.append((name, [parse_override(key) for key in keys.split(",")]))
    bench_harness(quick=args.quick, work_dir=Path(args.work_dir) if args.work_dir else None, only=args.only,
                  int8_images=args.images, int8_repeats=args.repeats,
                  overrides=[parse_override(item) for item in args.overrides], levers=levers,
                  int8_formats=args.formats.split(",") if args.formats else None,
                  preprocess_data=Path(args.preprocess_data) if args.preprocess_data else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
