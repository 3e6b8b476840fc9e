"""One evaluation run, end to end: data -> preprocess -> runner -> postprocess -> metrics -> results.

Decoding and preprocessing run ahead of inference in a bounded pool; postprocessing and the resume
cache are handled by a writer thread, so ``session.run`` is the only work on the main thread's critical path.
"""

from __future__ import annotations

import collections
import concurrent.futures as futures
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ssd_eval import extras, fetch, utils
from ssd_eval.config.schema import Config, run_name
from ssd_eval.data import coco as data
from ssd_eval.engine import finish
from ssd_eval.engine.cache import DetectionCache, cache_key
from ssd_eval.engine.folder_lock import folder_lock
from ssd_eval.engine.prefetch import PreprocessParams, default_workers, pipeline_settings, prefetch_images
from ssd_eval.engine.progress import ProgressLines, progress_log
from ssd_eval.engine.provenance import run_provenance
from ssd_eval.engine.shards import run_image_ids, shard_dir, write_shard_manifest
from ssd_eval.engine.stages import StageClock, stage_times
from ssd_eval.errors import UserError
from ssd_eval.inference import model_info, postprocess
from ssd_eval.inference.runner import Detector
from ssd_eval.results.result import EvalResult, prepare_out_dir, tidy_output_dir, write_detections

log = logging.getLogger(__name__)


def evaluate(config: Config, *, shard: tuple[int, int] | None = None, fresh: bool = False, download: bool = False,
             progress: bool | str = True, strict: bool = False, shard_out: Path | None = None,
             on_result: Callable[[EvalResult], Any] | None = None) -> EvalResult | None:
    """Evaluate ``config`` and write its results; returns the result (None for a shard).

    ``progress``: True for a bar, ``"lines"`` for an occasional plain line (logs), False for none. ``strict``:
    outputs almost certainly read wrongly (``postprocess.output_warnings``) are a UserError, not a warning.
    ``shard_out``: a shard's folder instead of its own under out_dir (a Ray worker's scratch folder).
    ``on_result``: run on the result once metrics.json is written, while the folder is still locked.
    """
    started = time.perf_counter()
    extras.check(config.needed_extras())  # an optional package the config asks for and lacks: stop before any work
    out_dir = config.out_dir if shard is None else Path(shard_out) if shard_out else shard_dir(config.out_dir, shard)
    prepare_out_dir(out_dir, create=False)  # created once the run's inputs are checked (_RunFolder)
    model_path = fetch_inputs(config, download=download, progress=progress is True)
    dataset = data.load_annotations(config.dataset.annotations, config.dataset.images)
    image_ids, opened = run_image_ids(config, dataset, shard)
    subset = finish.subset_record(config, dataset, opened)
    if not image_ids and shard is None:  # an empty shard (more shards than images) is fine
        raise UserError(f"{dataset.annotations_path}: no images to evaluate with these settings")
    model_sha256 = utils.sha256_of(model_path)  # the .onnx file: what model.sha256 pins
    content_sha256 = model_info.model_sha256(model_path, model_sha256)  # with external data: what shapes detections
    categories = postprocess.label_map(dataset.category_ids, config.postprocess.label_map)
    label_notes = postprocess.label_space_notes(categories, dataset.gt["categories"],
                                                explicit=config.postprocess.label_map is not None)
    for note in label_notes:  # the summary and metrics.json warnings carry them
        log.info("%s: %s", dataset.annotations_path, note)
    int8 = model_info.inspect_model(model_path, sha256=model_sha256)  # this CPU's int8 capability
    session_config = model_info.int8_session_config(int8, config.runtime.session_config,
                                                    exact_int8=config.runtime.exact_int8)
    int8_warning = model_info.saturation_warning(int8, session_config, config.runtime.graph_optimization)
    if int8_warning:
        log.warning(int8_warning)
    detector = Detector(model_path, config.model, config.runtime, config.preprocess.input_size, content_sha256,
                        session_config=session_config)
    _warn_if_partial(config)
    cache_path = out_dir / "cache.jsonl"
    key = cache_key(config, content_sha256, categories, dataset, detector.providers, session_config, detector.io)
    # The folder stays locked (_RunFolder) until its last file is written: metrics.json, and its rewrite by
    # tracking (shard.json for a shard), so no other run can replace the files that metrics.json describes.
    with _RunFolder(out_dir) as folder, DetectionCache(cache_path, key, fresh=fresh or not config.output.resume,
                                                      images={i: dataset.images[i].path for i in image_ids}) as cache:
        folder.cache = cache
        tidy_output_dir(out_dir, discard_results=cache.started_afresh)  # before inference: no stale results
        resumed = sum(1 for i in image_ids if i in cache)
        todo = [dataset.images[i] for i in image_ids if i not in cache]
        if resumed:
            log.warning("resuming: %d of %d images already done in %s", resumed, len(image_ids), cache_path)
        _say(progress, _start_line(config, len(todo), resumed, detector, out_dir))
        clock = StageClock()
        loop_started = time.perf_counter()
        skipped = _run_images(todo, config, detector, categories, cache, progress=progress, clock=clock)
        evaluated = [i for i in image_ids if i in cache]
        speed = _speed(cache, evaluated, [r.id for r in todo], skipped)
        output_counts = cache.stored_output_counts(evaluated)
        output_warnings = postprocess.checked_outputs(output_counts, config.postprocess.score_threshold,
                                                      strict=strict)
        scoring_started, scoring_cpu = time.perf_counter(), time.process_time()
        scores = intervals = full_set = bootstrap = None
        if shard is None:  # streamed from the cache file, for scoring and writing: no copy of every detection
            scores, intervals, full_set, bootstrap = finish.score_run(
                config, dataset.gt, lambda: cache.detections(evaluated), evaluated, count=cache.count(evaluated),
                source=str(cache_path), subset=subset, warnings=[*label_notes, *output_warnings],
                say=lambda message: _say(progress, message))
        scoring_ended, scoring_cpu = time.perf_counter(), time.process_time() - scoring_cpu
        detection_count = write_detections(out_dir / "detections.json", cache.detections(evaluated))
        provenance = run_provenance(config, model_path, model_sha256, content_sha256, int8, int8_warning, dataset,
                                    detector, evaluated, skipped, detection_count, shard=shard, resumed=resumed,
                                    speed=speed)
        provenance.update(subset=subset, output_counts=output_counts)
        if bootstrap is not None:
            provenance["bootstrap"] = bootstrap
        ended = time.perf_counter()
        provenance.update(pipeline=pipeline_settings(config), wall_time_s=round(ended - started, 3), stages=stage_times(
            clock, images=len(todo) - len(skipped), evaluated=len(evaluated), setup_s=loop_started - started,
            scoring_s=scoring_ended - scoring_started, scoring_cpu_s=scoring_cpu,  # a shard: none, about 0
            output_s=ended - scoring_ended, wall_s=ended - started))
        if shard is not None:
            write_shard_manifest(out_dir, config, shard, evaluated, provenance)
            log.info("shard %d/%d: %d images, %d detections written to %s", shard[0], shard[1], len(evaluated),
                     detection_count, out_dir)
            return None
        return finish.write_run_result(config, scores, provenance, intervals, full_set, dataset.gt, out_dir, evaluated,
                                       on_result=on_result)


def fetch_inputs(config: Config, *, download: bool, progress: bool) -> Path:
    """Check the model and COCO files (downloading what is absent with ``download``); returns the model's path."""
    model, dataset = config.model, config.dataset
    model_path = fetch.ensure_model(Path(model.path), url=model.url, size=model.size, sha256=model.sha256,
                                    download_missing=download, progress=progress,
                                    variant=config.variant if model.url else None)
    fetch.ensure_coco(Path(dataset.annotations), Path(dataset.images), annotations_url=dataset.annotations_url,
                      images_url=dataset.images_url, download_missing=download,
                      downloads_dir=Path(dataset.downloads_dir), progress=progress,
                      annotations_zip=(dataset.annotations_zip_size, dataset.annotations_zip_sha256),
                      images_zip=(dataset.images_zip_size, dataset.images_zip_sha256))
    return model_path


def _say(progress: bool | str, message: str) -> None:
    """A start, scoring or end line (``progress_log``), unless progress reports are off."""
    if progress:
        progress_log.info(message)


def _warn_if_partial(config: Config) -> None:
    """A warning when the run is partial (``Config.partial_parts``); under ``--out``, only for a limit."""
    parts = config.partial_parts()
    if not parts:
        return
    what = ", ".join(description for _, description in parts)
    if "{run}" in config.output.dir:
        canonical = Path(config.output.dir.replace("{run}", run_name(config.variant, config.protocol_label(),
                                                                        config.subset_name)))
        log.warning("partial run (%s): results go to %s/, not to %s/; a partial run is for testing, "
                    "the table and the gate read only full runs", what, config.out_dir, canonical)
    elif config.dataset.limit is not None:
        log.warning("partial run (limit %d): its metrics are for testing, not the variant's result",
                    config.dataset.limit)


def _start_line(config: Config, todo: int, cached: int, detector: Detector, out_dir: Path) -> str:
    runtime = config.runtime
    return (f"{config.variant}: {todo} images to run, {cached} from the cache; "
            f"{', '.join(detector.providers)}; threads intra {runtime.intra_op_threads} inter "
            f"{runtime.inter_op_threads} (0: onnxruntime default); batch {runtime.batch_size}; "
            f"decode workers {default_workers(config)} ({config.pipeline.mode}); protocol {config.protocol_label()}; "
            f"writing to {out_dir}")


def _speed(cache: DetectionCache, evaluated: Sequence[int], todo: Sequence[int],
           skipped: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The images, loop and inference seconds images/s is computed from: the images inferred in this run,
    else (``from_cache``) those stored when the cached images were inferred; 0 images where none is timed."""
    skipped_ids = {s["image_id"] for s in skipped}
    inferred = [i for i in todo if i not in skipped_ids]
    timed = inferred or list(evaluated)
    stored = cache.stored_seconds(timed)  # None for no images
    if stored is None or stored[0] <= 0:
        return {"images": len(inferred), "loop_s": 0.0, "inference_s": None, "from_cache": False}
    return {"images": len(timed), "loop_s": stored[0], "inference_s": stored[1] if not inferred else None,
            "from_cache": not inferred}


class _RunFolder:
    """Creates a run's output folder and holds its lock (``folder_lock``); when the block fails before any
    image was recorded in ``cache``, removes the cache file it began and the (empty) folders it created."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.cache: DetectionCache | None = None
        self._lock = contextlib.ExitStack()

    def __enter__(self) -> "_RunFolder":
        self.created: list[Path] = [folder for folder in (self.out_dir, *self.out_dir.parents) if not folder.exists()]
        prepare_out_dir(self.out_dir)
        self._lock.enter_context(folder_lock(self.out_dir))
        return self

    def __exit__(self, exc_type, *_) -> None:
        with self._lock:  # released last, after the clean-up
            if exc_type is None or (self.cache is not None and self.cache.offsets):
                return
            with contextlib.suppress(OSError):
                if self.cache is not None and self.cache.started_afresh:  # a cache this run began, still empty
                    self.cache.path.unlink(missing_ok=True)
                for folder in self.created:  # deepest first; only while empty
                    folder.rmdir()
                if self.created:
                    log.info("removed %s: the run failed before evaluating any image", self.created[-1])


def _run_images(todo: Sequence[data.ImageRecord], config: Config, detector: Detector, categories: np.ndarray,
                cache: DetectionCache, *, progress: bool | str,
                clock: StageClock | None = None) -> list[dict[str, Any]]:
    """Infer every image in ``todo`` and record its detections in the cache; returns the skipped images."""
    if not todo:
        return []
    clock = clock if clock is not None else StageClock()
    clock.decode_in_process = config.pipeline.mode != "process"
    loop_started, loop_cpu = time.perf_counter(), time.process_time()
    params = PreprocessParams.from_config(config)
    workers = default_workers(config)
    batch_size = config.runtime.batch_size
    depth = config.pipeline.prefetch or 2 * workers * batch_size
    skipped: list[dict[str, Any]] = []
    pending: collections.deque[futures.Future] = collections.deque()
    post = config.postprocess
    # Each image's loop_s: the time since the previous batch was recorded, split over the batch.
    last_recorded = time.perf_counter()

    def record_batch(records: list[data.ImageRecord], raws, inference_s: float) -> None:  # on the writer thread
        nonlocal last_recorded
        post_started, post_cpu = time.perf_counter(), time.thread_time()
        batch = [postprocess.to_coco_results(
            raw.boxes, raw.labels, raw.scores, image_id=record.id, width=record.width, height=record.height,
            categories=categories, max_detections=post.max_detections,
            score_threshold=post.score_threshold, clip_boxes=post.clip_boxes,
            keep_inverted_boxes=post.keep_inverted_boxes, box_format=post.box_format,
            box_scale=post.box_scale) for record, raw in zip(records, raws)]
        counts = [postprocess.output_counts(raw.boxes, raw.scores, post.box_format, post.box_scale) for raw in raws]
        now = time.perf_counter()
        loop_s, last_recorded = (now - last_recorded) / len(records), now
        for record, detections, image_counts in zip(records, batch, counts):
            cache.add(record.id, detections, loop_s=loop_s, inference_s=inference_s / len(records),
                      output_counts=image_counts)
        clock.postprocessed += len(records)
        clock.post_wall_s += time.perf_counter() - post_started
        clock.post_cpu_s += time.thread_time() - post_cpu

    bar = (ProgressLines(len(todo), config.variant, every_s=config.pipeline.progress_interval_s) if progress == "lines"
           else tqdm(total=len(todo), desc=config.variant, unit="img", disable=not progress, dynamic_ncols=True))
    # Inputs alive at once: the prefetch ring's and, for batches of more than one image, one batch buffer
    # each image is copied into as it arrives (so the ring may reuse the image's buffer at once).
    stacked = np.empty((batch_size, 3, *params.size_hw), dtype=np.float32) if batch_size > 1 else None
    with bar, futures.ThreadPoolExecutor(max_workers=1) as writer:
        batch_records: list[data.ImageRecord] = []
        single: list[np.ndarray] = []  # a batch of one: the input itself, given a batch axis as a view

        def wait_for_writer(most_pending: int) -> None:
            waited = time.perf_counter()
            while pending and (pending[0].done() or len(pending) > most_pending):
                pending.popleft().result()  # re-raises a postprocessing error here
            clock.post_wait_s += time.perf_counter() - waited

        def flush_batch() -> None:
            batch = single.pop()[np.newaxis] if stacked is None else stacked[:len(batch_records)]
            inference_before = detector.inference_seconds
            raws = detector.run(batch)
            del batch
            inference_s = detector.inference_seconds - inference_before
            clock.inference_s += inference_s
            waited = time.perf_counter()  # handing the batch to the writer (a GIL hand-off) and waiting for it
            pending.append(writer.submit(record_batch, list(batch_records), raws, inference_s))
            clock.post_wait_s += time.perf_counter() - waited
            bar.update(len(batch_records))
            batch_records.clear()
            wait_for_writer(depth)

        stream = contextlib.closing(prefetch_images(todo, params, workers=workers, mode=config.pipeline.mode,
                                                    depth=depth, reuse_buffers=True, clock=clock))
        with stream as images:
            for record, array in _waited(images, clock):
                if isinstance(array, data.BadImageError):
                    if config.dataset.on_bad_image != "skip":
                        raise array
                    log.warning("skipping %s", array)
                    skipped.append({"image_id": record.id, "file": str(record.path), "reason": str(array)})
                    bar.update(1)
                    continue
                if stacked is None:
                    single.append(array)
                else:
                    stacked[len(batch_records)] = array  # a copy: the ring's buffer is free again
                batch_records.append(record)
                del array  # else it stays bound (one more input alive) while the next image is awaited
                if len(batch_records) == batch_size:
                    flush_batch()
        if batch_records:
            flush_batch()
        wait_for_writer(0)
    clock.loop_s += time.perf_counter() - loop_started
    clock.loop_cpu_s += time.process_time() - loop_cpu
    return skipped


def _waited(items: Iterator, clock: StageClock) -> Iterator:
    """``items``, adding the time spent waiting for each one to ``clock.input_wait_s``."""
    while True:
        waited = time.perf_counter()
        item = next(items, None)
        clock.input_wait_s += time.perf_counter() - waited
        if item is None:
            return
        yield item
        del item  # else the last input stays alive while the next one is awaited
