"""The harness measuring itself (make bench-harness): overhead, memory growth, scoring backends. Dev only."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ssd_eval.config.load import config_from_dict
from ssd_eval.config.schema import Config
from ssd_eval.engine.bench import QUIET_LOAD_CORES, ForeignLoad, _cpu_seconds, _load_text
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
                   providers: Sequence[str] | None = None) -> Config:
    """An evaluation config for a synthetic model and set, fresh output under ``out_dir``.

    ``max_detections``: postprocess.max_detections (None: the protocol's 100; ``"all"`` keeps every
    model output). ``scoring_only``: no pass after scoring (bootstrap intervals, error breakdown), so
    a whole run is inference, cache, scoring and detections.json. ``providers``: runtime.providers
    (default the config's, CPU).
    """
    metrics: dict[str, Any] = {"backend": metrics_backend, "streaming": streaming}
    if scoring_only:
        metrics.update(bootstrap={"replicates": 0}, error_breakdown=False)
    runtime = {"providers": list(providers)} if providers else {}
    return config_from_dict({
        "variant": "bench",
        "runtime": runtime,
        "model": {"path": str(model_path), "input_name": "image"},
        "dataset": {"annotations": str(annotations), "images": str(images), "limit": limit},
        "preprocess": {"input_size": list(input_size)},
        "postprocess": {"max_detections": max_detections},
        "metrics": metrics,
        "output": {"dir": str(out_dir), "resume": True},
    }, default_origin="bench")


def bench_harness(*, quick: bool = False, work_dir: Path | None = None,
                  results_path: str | Path | None = DEFAULT_RESULTS_PATH) -> dict:
    """Measure the harness against its targets: throughput, memory growth, scoring time.

    (a) images/s of a whole ``evaluate`` run vs a bare ``session.run`` loop on the same
    model (target ratio >= 0.95); (b) peak RSS of evaluations of a small and a ten- (quick:
    four-, QUICK_MEMORY_SIZES) times larger image count, each in a fresh process: the pipeline alone (target growth
    < 10 %), whole runs scoring all at once and streaming (targets < 10 % at 100 detections per
    image, < 20 % at 200); (c) scoring time of every backend, all at once and streaming, on
    synthetic detections (full: 500k and 1M), with the 12 stats compared. Prints a report,
    writes it as JSON to ``results_path`` (unless None) and returns it. Synthetic data goes to
    ``work_dir`` (default: a temporary folder).
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
        }
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
    memory = report["memory"]
    streamed = [f"{mode} {100 * m['growth']:.1f} % ({_verdict(m['pass'])})" for mode, m in memory["modes"].items()
                if m["streaming"]]
    unreliable = report["throughput"].get("unreliable")
    print(f"== summary: throughput ratio {report['throughput']['ratio']:.3f} "
          f"({_verdict(report['throughput']['pass'])}{'; ' + unreliable if unreliable else ''}), "
          "image pipeline peak RSS growth "
          f"{100 * memory['growth']:.1f} % ({_verdict(memory['pass'])}), whole runs streaming: "
          + ", ".join(streamed) + "; scoring "
          + ", ".join(f"{name} {speedup:.1f}x" for name, speedup in report['scoring']['speedup'].items()
                      if name != "pycocotools")
          + f" pycocotools (stats {'agree' if report['scoring']['agree'] else 'DIFFER'}); "
          f"{report['total_seconds']:.0f} s ("
          + ", ".join(f"{name} {seconds:.0f}" for name, seconds in report["section_seconds"].items())
          + f"; {report['cpu_seconds']:.0f} s of CPU; other processes used {_load_text(load.cores)} cores)")
    if results_path is not None:
        written = atomic_write_json(results_path, report)
        print(f"written: {written}")
        report["results_path"] = str(written)
    return report


def bench_throughput(directory: Path, *, images: int, repeats: int = 2, spec: DetectorSpec = COSTLY_DETECTOR,
                     warmup: int = 1, providers: Sequence[str] | None = None) -> dict[str, Any]:
    """Section (a): a bare ``session.run`` loop vs whole ``evaluate`` runs, same model, threads and
    execution providers (``providers``: default CPU).

    Each repeat times half the bare loop, one fresh evaluation, then the other half; the
    best time of each side over the repeats is compared (other load only ever slows down).
    """
    from ssd_eval.data.coco import load_annotations
    from ssd_eval.engine.pipeline import PreprocessParams, default_workers, evaluate, load_and_preprocess
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
    """Command line: ``python -m ssd_eval.testing.bench_harness [--quick] [--work-dir DIR]`` (make bench-harness)."""
    parser = argparse.ArgumentParser(prog="python -m ssd_eval.testing.bench_harness",
                                     description="harness overhead, memory growth, scoring backends")
    parser.add_argument("--quick", action="store_true",
                        help="CI-sized run: smaller sizes (a few minutes on 2 cores; docs/PERFORMANCE.md)")
    parser.add_argument("--work-dir", help="keep the synthetic data here (default: a temporary folder)")
    args = parser.parse_args(argv)
    bench_harness(quick=args.quick, work_dir=Path(args.work_dir) if args.work_dir else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
