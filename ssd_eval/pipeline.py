"""One evaluation run, end to end: data -> preprocess -> runner -> postprocess -> metrics -> results.

Decoding and preprocessing run ahead of inference in a bounded pool; postprocessing
and the resume cache are handled by a writer thread, so ``session.run`` is the only
work on the main thread's critical path.
"""

from __future__ import annotations

import collections
import concurrent.futures as futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ssd_eval import cpu, data, fetch, model_info, postprocess, preprocess
from ssd_eval.cache import DetectionCache
from ssd_eval.config import Config, hash_data
from ssd_eval.errors import UserError
from ssd_eval.metrics import score_detections
from ssd_eval.provenance import run_provenance
from ssd_eval.results import EvalResult, prepare_out_dir, result_for, tidy_output_dir, write_detections, write_result
from ssd_eval.runner import Detector
from ssd_eval.shards import shard_dir, write_shard_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessParams:
    """Everything a pool worker needs to turn an image file into a tensor (picklable)."""

    size_hw: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float
    backend: str

    @classmethod
    def from_config(cls, config: Config) -> "PreprocessParams":
        """The preprocessing a config asks for, with the protocol's resize backend."""
        pre = config.preprocess
        return cls(size_hw=(pre.input_size[0], pre.input_size[1]), mean=(pre.mean[0], pre.mean[1], pre.mean[2]),
                   std=(pre.std[0], pre.std[1], pre.std[2]), scale=pre.scale, backend=pre.resize_backend)


def default_workers(config: Config) -> int:
    """Decode/preprocess workers: the config's, else half the CPU cores (1 to 8)."""
    return config.pipeline.workers or max(1, min(8, (os.cpu_count() or 2) // 2))


def load_and_preprocess(record: data.ImageRecord, params: PreprocessParams) -> np.ndarray:
    """Decode one image and make it a model input (runs in a pool worker)."""
    image = data.read_image(record)
    return preprocess.preprocess(image, size_hw=params.size_hw, mean=params.mean, std=params.std,
                                 scale=params.scale, backend=params.backend)


def prefetch_images(
    records: Iterable[data.ImageRecord], params: PreprocessParams, *, workers: int, mode: str, depth: int
) -> Iterator[tuple[data.ImageRecord, np.ndarray | data.BadImageError]]:
    """Preprocessed images in input order, computed ``depth`` images ahead by a pool.

    Closing the generator early cancels what is queued and does not wait for the pool.
    Process workers leave Ctrl-C to this process and exit by themselves when it dies (even
    by SIGTERM or SIGKILL), so none stays blocked writing a result that nobody reads.
    """
    if mode == "process":
        # spawn, not fork: forking after onnxruntime started its threads can deadlock.
        pool = futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_process_worker_setup, initargs=(os.getpid(),))
    else:
        pool = futures.ThreadPoolExecutor(max_workers=workers)
    records = iter(records)
    window: collections.deque = collections.deque()

    def submit_next() -> None:
        record = next(records, None)
        if record is not None:
            window.append((record, pool.submit(load_and_preprocess, record, params)))

    try:
        for _ in range(depth):
            submit_next()
        while window:
            record, future = window.popleft()
            submit_next()
            try:
                yield record, future.result()
            except data.BadImageError as exc:
                yield record, exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _process_worker_setup(parent_pid: int) -> None:
    """Runs first in each process-pool worker: ignore Ctrl-C, and exit once the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="exit-with-parent", daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)  # even while the main thread is blocked writing to the dead parent's pipe


class ProgressLines:
    """Progress as an occasional plain line on stderr, for logs where a bar would be one endless line.

    A line is printed every ``every_s`` seconds, and at the end when any was printed before:
    short runs stay silent.
    """

    def __init__(self, total: int, desc: str, *, every_s: float = 120.0, clock=time.monotonic, stream=None):
        self.total, self.desc, self.every_s, self.clock = total, desc, every_s, clock
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.started = self.last_line = clock()
        self.printed = False

    def update(self, count: int) -> None:
        """Count ``count`` more finished images; print a line when one is due."""
        self.done += count
        now = self.clock()
        if now - self.last_line >= self.every_s or (self.done >= self.total and self.printed):
            self.last_line, self.printed = now, True
            rate = self.done / max(now - self.started, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"{self.desc}: {self.done}/{self.total} images ({100 * self.done / max(self.total, 1):.0f} %), "
                  f"{rate:.2f} img/s, about {_duration(left)} left", file=self.stream, flush=True)

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, *exc) -> None:
        return None


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def cache_key(config: Config, model_sha256: str, categories: np.ndarray, dataset: data.CocoDataset,
              providers: Sequence[str], session_config: dict[str, str] | None = None) -> dict[str, Any]:
    """What determines one image's detections: model (with its external data), data,
    preprocessing, postprocessing, providers, graph optimization and session config entries.

    The config's protocol is resolved (config.resolve_protocol), so the preprocess and
    postprocess sections hold every switch in force: a new switch cannot be left out.
    """
    pre = dataclasses.asdict(config.preprocess)
    post = dict(dataclasses.asdict(config.postprocess), label_map=[int(c) for c in categories[1:]])
    return {
        "model_sha256": model_sha256,
        "annotations_sha256": dataset.sha256,
        "images_dir": str(dataset.images_dir.resolve()),
        "preprocess_sha256": hash_data(pre),
        "postprocess_sha256": hash_data(post),
        "execution": hash_data({"providers": list(providers),
                                "graph_optimization": config.runtime.graph_optimization,
                                "session_config": dict(session_config or {})}),
    }


def evaluate(
    config: Config,
    *,
    shard: tuple[int, int] | None = None,
    fresh: bool = False,
    download: bool = False,
    progress: bool | str = True,
) -> EvalResult | None:
    """Evaluate ``config`` and write its results; returns the result (None for a shard).

    ``progress``: True for a progress bar, ``"lines"`` for an occasional plain line (logs),
    False for none.
    """
    started = time.perf_counter()
    switches = config.switches()
    out_dir = prepare_out_dir(config.out_dir if shard is None else shard_dir(config.out_dir, shard))
    model_path = fetch.ensure_model(Path(config.model.path), url=config.model.url, size=config.model.size,
                                    sha256=config.model.sha256, download_missing=download,
                                    progress=progress is True, variant=config.variant if config.model.url else None)
    fetch.ensure_coco(Path(config.dataset.annotations), Path(config.dataset.images),
                      annotations_url=config.dataset.annotations_url, images_url=config.dataset.images_url,
                      download_missing=download, downloads_dir=Path(config.dataset.downloads_dir),
                      progress=progress is True)
    if switches["resize_backend"] == "opencv":
        preprocess.import_opencv()  # fail before any work when OpenCV is missing
    dataset = data.load_annotations(config.dataset.annotations, config.dataset.images)
    image_ids = data.select_image_ids(
        dataset, limit=config.dataset.limit,
        skip_images_without_annotations=switches["skip_images_without_annotations"], shard=shard)
    if not image_ids and shard is None:  # an empty shard (more shards than images) is fine
        raise UserError(f"{dataset.annotations_path}: no images to evaluate with these settings")
    model_sha256 = fetch.sha256_of(model_path)  # the .onnx file: what model.sha256 pins
    content_sha256 = fetch.model_sha256(model_path)  # with its external data: what determines detections
    categories = postprocess.label_map(dataset.category_ids, config.postprocess.label_map)
    int8 = model_info.inspect_model(model_path, cpu.detect_int8_capability())
    session_config = model_info.int8_session_config(int8, config.runtime.session_config,
                                                    exact_int8=config.runtime.exact_int8)
    int8_warning = model_info.saturation_warning(int8, session_config, config.runtime.graph_optimization)
    if int8_warning:
        log.warning(int8_warning)
    detector = Detector(model_path, config.model, config.runtime, config.preprocess.input_size, content_sha256,
                        session_config=session_config)

    cache_path = out_dir / "cache.jsonl"
    key = cache_key(config, content_sha256, categories, dataset, detector.providers, session_config)
    with DetectionCache(cache_path, key, fresh=fresh or not config.output.resume,
                        images={i: dataset.images[i].path for i in image_ids}) as cache:
        tidy_output_dir(out_dir, discard_results=cache.started_afresh)  # before inference: no stale results
        resumed = sum(1 for i in image_ids if i in cache)
        todo = [dataset.images[i] for i in image_ids if i not in cache]
        if resumed:
            log.warning("resuming: %d of %d images already done in %s", resumed, len(image_ids), cache_path)
        loop_started = time.perf_counter()
        skipped = _run_images(todo, config, detector, categories, cache, progress=progress)
        loop_seconds = time.perf_counter() - loop_started
        evaluated = [i for i in image_ids if i in cache]
        # Streamed from the cache file, for scoring and writing: no copy of every detection is kept.
        # Scoring comes first, so a failure there leaves the previous results untouched.
        scores = None if shard is not None else score_detections(
            dataset.gt, cache.detections(evaluated), evaluated, crowd_as_ground_truth=switches["crowd_as_ground_truth"],
            backend=config.metrics.backend, exclude_categories=switches["exclude_categories"], source=str(cache_path))
        detection_count = write_detections(out_dir / "detections.json", cache.detections(evaluated))

    provenance = run_provenance(config, model_path, model_sha256, content_sha256, int8, int8_warning, dataset,
                             detector, evaluated, skipped,
                             detection_count, shard=shard, resumed=resumed, inferred=len(todo) - len(skipped),
                             loop_seconds=loop_seconds)
    provenance["wall_time_s"] = round(time.perf_counter() - started, 3)
    if shard is not None:
        write_shard_manifest(out_dir, config, shard, evaluated, provenance)
        log.info("shard %d/%d: %d images, %d detections written to %s", shard[0], shard[1], len(evaluated),
                 detection_count, out_dir)
        return None
    result = result_for(config, scores, provenance)
    write_result(result, out_dir)
    return result


def _run_images(todo: Sequence[data.ImageRecord], config: Config, detector: Detector, categories: np.ndarray,
                cache: DetectionCache, *, progress: bool | str) -> list[dict[str, Any]]:
    """Infer every image in ``todo`` and record its detections in the cache; returns skipped images."""
    if not todo:
        return []
    params = PreprocessParams.from_config(config)
    workers = default_workers(config)
    batch_size = config.runtime.batch_size
    depth = config.pipeline.prefetch or 2 * workers * batch_size
    skipped: list[dict[str, Any]] = []
    pending: collections.deque[futures.Future] = collections.deque()
    post = config.postprocess

    def finish(records: list[data.ImageRecord], raws) -> None:
        for record, raw in zip(records, raws):
            detections = postprocess.to_coco_results(
                raw.boxes, raw.labels, raw.scores, image_id=record.id, width=record.width, height=record.height,
                categories=categories, max_detections=post.max_detections,
                score_threshold=post.score_threshold, clip_boxes=post.clip_boxes)
            cache.add(record.id, detections)

    if progress == "lines":
        bar = ProgressLines(len(todo), config.variant)
    else:
        bar = tqdm(total=len(todo), desc=config.variant, unit="img", disable=not progress, dynamic_ncols=True)
    with bar, futures.ThreadPoolExecutor(max_workers=1) as writer:
        batch_records: list[data.ImageRecord] = []
        batch_arrays: list[np.ndarray] = []

        def flush_batch() -> None:
            # A single image needs no copy into a new batch array: add the batch axis as a view.
            batch = batch_arrays[0][np.newaxis] if len(batch_arrays) == 1 else np.stack(batch_arrays)
            raws = detector.run(batch)
            pending.append(writer.submit(finish, list(batch_records), raws))
            bar.update(len(batch_records))
            batch_records.clear()
            batch_arrays.clear()
            while pending and (pending[0].done() or len(pending) > depth):
                pending.popleft().result()  # re-raises a postprocessing error here

        stream = contextlib.closing(
            prefetch_images(todo, params, workers=workers, mode=config.pipeline.mode, depth=depth))
        with stream as images:
            for record, array in images:
                if isinstance(array, data.BadImageError):
                    if config.dataset.on_bad_image != "skip":
                        raise array
                    log.warning("skipping %s", array)
                    skipped.append({"image_id": record.id, "file": str(record.path), "reason": str(array)})
                    bar.update(1)
                    continue
                batch_records.append(record)
                batch_arrays.append(array)
                if len(batch_records) == batch_size:
                    flush_batch()
        if batch_records:
            flush_batch()
        while pending:
            pending.popleft().result()
    return skipped


