"""Decode and preprocess ahead of inference: the worker pool, the reused input ring, and what the pool used."""

from __future__ import annotations

import collections
import concurrent.futures as futures
import itertools
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from ssd_eval.config.schema import Config
from ssd_eval.data import coco as data
from ssd_eval.engine.stages import StageClock
from ssd_eval.inference import preprocess


@dataclass(frozen=True)
class PreprocessParams:
    """Everything a pool worker needs to turn an image file into a tensor (picklable)."""

    size_hw: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float
    backend: str
    normalize: str | None = None  # preprocess.NORMALIZE_ROUTES; None: preprocess.normalize_route()

    @classmethod
    def from_config(cls, config: Config) -> "PreprocessParams":
        """The preprocessing a config asks for, with the protocol's resize backend."""
        pre = config.preprocess
        return cls(size_hw=(pre.input_size[0], pre.input_size[1]), mean=(pre.mean[0], pre.mean[1], pre.mean[2]),
                   std=(pre.std[0], pre.std[1], pre.std[2]), scale=pre.scale, backend=pre.resize_backend,
                   normalize=None if config.pipeline.normalize == "auto" else config.pipeline.normalize)


def default_workers(config: Config) -> int:
    """Decode/preprocess workers: the config's, else half the CPU cores (1 to 8)."""
    return config.pipeline.workers or max(1, min(8, (os.cpu_count() or 2) // 2))


def pipeline_settings(config: Config) -> dict[str, Any]:
    """The decode pool a run used, with what the machine chose (provenance.pipeline)."""
    workers = default_workers(config)
    return {"workers": workers, "workers_from": "config" if config.pipeline.workers else "cores",
            "mode": config.pipeline.mode,
            "prefetch": config.pipeline.prefetch or 2 * workers * config.runtime.batch_size,
            "cores": os.cpu_count(),
            "normalize": (preprocess.normalize_route() if config.pipeline.normalize == "auto"
                          else config.pipeline.normalize)}


def load_and_preprocess(record: data.ImageRecord, params: PreprocessParams,
                        out: np.ndarray | None = None) -> np.ndarray:
    """Decode one image and make it a model input (runs in a pool worker); ``out``: a float32 (3, H, W)
    buffer to write it into (and return) instead of a new array."""
    return preprocess.preprocess(data.read_image(record), size_hw=params.size_hw, mean=params.mean,
                                 std=params.std, scale=params.scale, backend=params.backend, out=out,
                                 route=params.normalize)


def timed_load(record: data.ImageRecord, params: PreprocessParams,
               out: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """``load_and_preprocess`` with its wall and CPU seconds (this thread's own CPU time)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    array = load_and_preprocess(record, params, out)
    return array, time.perf_counter() - wall, time.thread_time() - cpu


def prefetch_images(
    records: Iterable[data.ImageRecord], params: PreprocessParams, *, workers: int, mode: str, depth: int,
    reuse_buffers: bool = False, clock: StageClock | None = None,
) -> Iterator[tuple[data.ImageRecord, np.ndarray | data.BadImageError]]:
    """Preprocessed images (or their BadImageError) in input order, decoded ``depth`` images ahead by a pool;
    the generator keeps no reference to an image it has yielded, and closing it cancels what is queued.

    ``reuse_buffers`` (thread mode only): images are preprocessed into ``depth + 1`` buffers reused in turn, so
    the caller must be done with an array (run or copied it) when it asks for the next. ``clock``: gets each
    image's decode+preprocess seconds.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1, not {depth}")
    if mode == "process":
        # spawn, not fork: forking after onnxruntime started its threads can deadlock.
        pool = futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_process_worker_setup, initargs=(os.getpid(),))
        reuse_buffers = False
    else:
        pool = futures.ThreadPoolExecutor(max_workers=workers)
    ring = np.empty((depth + 1, 3, *params.size_hw), dtype=np.float32) if reuse_buffers else None
    buffers = itertools.repeat(None) if ring is None else itertools.cycle(ring)  # None: a new array per image
    records = iter(records)
    window: collections.deque = collections.deque()

    def submit_next() -> None:
        record = next(records, None)
        if record is not None:
            window.append((record, pool.submit(timed_load, record, params, next(buffers))))

    def take() -> tuple[data.ImageRecord, np.ndarray | data.BadImageError]:
        # The future and its result go out of scope on return: the yielded array is the caller's alone.
        record, future = window.popleft()
        submit_next()
        try:
            array, wall, cpu = future.result()
        except data.BadImageError as exc:
            return record, exc
        if clock is not None:
            clock.decoded += 1
            clock.decode_wall_s += wall
            clock.decode_cpu_s += cpu
        return record, array

    try:
        for _ in range(depth):
            submit_next()
        while window:
            yield take()
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
