"""Shards as Ray tasks: ``ssd-eval eval --executor ray --jobs N`` and ``ssd-eval sweep --executor ray``.

Every shard i/N of every run is one Ray task (``run_shard``) on the cluster at ``RAY_ADDRESS``, else on a local
Ray instance; it streams back its resume cache's new lines, its warnings, then its detections.json and shard.json,
which the driver writes into the usual ``<out>/shard-i-of-N/`` folders before merging each run. The images and the
model must be readable at the same paths on every node. A task whose worker or node dies is submitted again from
the cache lines it sent (Ray's own retry would start from its first image).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Callable, Iterator, Sequence

from ssd_eval.config.load import load_config
from ssd_eval.config.schema import Config
from ssd_eval.data import coco as data
from ssd_eval.engine.folder_lock import folder_lock, lock_file
from ssd_eval.engine.jobs import CUDA, download_inputs, job_overrides, merge_jobs
from ssd_eval.engine.pipeline import evaluate
from ssd_eval.engine.progress import ProgressLines, progress_log
from ssd_eval.engine.shards import CACHE_FILE, SHARD_FILE, CacheTail, run_image_ids, shard_dir
from ssd_eval.errors import UserError
from ssd_eval.results.result import EvalResult, prepare_out_dir, tidy_output_dir
from ssd_eval.utils import atomic_path

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # how many times a shard whose worker or node died is submitted again
STREAM_EVERY_S = 0.25  # how often a task sends the cache lines flushed since its last message
POLL_S = 0.2


def import_ray() -> ModuleType:
    """The ``ray`` module; a UserError naming the pip command where Ray is not installed."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, which is not installed: pip install -e '.[ray]'") from None
    return ray


@dataclass
class RayRun:
    """One evaluation to run as shards on Ray: its config, and the config file and overrides its shards load."""

    config: Config
    config_path: str
    overrides: list[Any] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- on a worker


def run_shard(config: Config, shard: tuple[int, int], resume: bytes, cwd: str, shown_dir: str) -> Iterator[dict]:
    """A Ray generator task: ``eval --shard`` in a scratch folder from the resume-cache bytes ``resume``, in ``cwd``
    (the driver's) where it exists. Yields ``start`` (node_info), then every ``STREAM_EVERY_S`` the cache's new
    ``lines`` and the warnings (``logs``), last ``done`` (the output files); its messages name ``shown_dir``, the
    driver's shard folder, instead of the scratch folder."""
    yield {"start": node_info()}
    scratch = Path(tempfile.mkdtemp(prefix="ssd_eval-shard-"))
    folder = shard_dir(scratch, shard)
    records = _Records()
    logger = logging.getLogger("ssd_eval")
    logger.addHandler(records)
    previous_cwd = os.getcwd()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            evaluate(config, shard=shard, progress=False, shard_out=folder)
        except BaseException as exc:  # re-raised below, in the task's own thread
            failure.append(exc)

    try:
        if os.path.isdir(cwd):
            os.chdir(cwd)
        folder.mkdir()
        (folder / CACHE_FILE).write_bytes(resume)
        tail = CacheTail(folder / CACHE_FILE, len(resume))
        worker = threading.Thread(target=work, daemon=True, name=f"shard-{shard[0]}-of-{shard[1]}")
        worker.start()
        while worker.is_alive():
            worker.join(STREAM_EVERY_S)
            message = dict(tail.read(), logs=records.take(str(folder), shown_dir))
            if message.get("lines") or message.get("reset") or message["logs"]:
                yield message
        if failure:
            error = failure[0]
            if isinstance(error, UserError):
                raise type(error)(str(error).replace(str(folder), shown_dir)) from None
            raise error
        yield dict(tail.read(), logs=records.take(str(folder), shown_dir),
                   done={"detections": (folder / "detections.json").read_bytes(),
                         "manifest": (folder / SHARD_FILE).read_bytes()})
    finally:
        logger.removeHandler(records)
        os.chdir(previous_cwd)
        shutil.rmtree(scratch, ignore_errors=True)


def node_info() -> dict[str, Any]:
    """The Ray node and process this runs in: node id, IP address, host name, process id."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname(), "pid": os.getpid()}


class _Records(logging.Handler):
    """Warnings logged by the shard's run, kept to be sent to the driver."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.kept: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:  # called holding self.lock (logging.Handler.handle)
        self.kept.append((record.levelno, record.getMessage()))

    def take(self, scratch: str, shown: str) -> list[tuple[int, str]]:
        """The records since the last take, the scratch folder named as ``shown``."""
        with self.lock:
            taken, self.kept = self.kept, []
        return [(level, text.replace(scratch, shown)) for level, text in taken]


# ----------------------------------------------------------------------------------------------- on the driver


@dataclass
class _Shard:
    """One shard task as the driver follows it: its config, its folder here, what it has sent back."""

    run: int  # index in the runs
    shard: tuple[int, int]
    config: Config  # the run's config with this task's threads (jobs.job_overrides)
    folder: Path  # <out>/shard-i-of-N here
    images: int  # images of the shard
    resources: dict[str, Any]
    cache: IO[bytes]  # the folder's cache.jsonl, locked, appended to as lines arrive
    lines: int = 0  # complete lines in the cache file (the header, then one per finished image)
    resumed: int = 0  # images already in the cache when the run began
    attempts: int = 0
    node: dict[str, Any] | None = None
    stream: Any = None  # the task's ObjectRefGenerator
    done: bool = False
    done_at: float = 0.0  # time.perf_counter() when its results arrived

    @property
    def name(self) -> str:
        return f"{self.config.variant} shard {self.shard[0]}/{self.shard[1]}"

    @property
    def finished(self) -> int:
        """Images finished so far (all of them once the shard is done, skipped images included)."""
        return self.images if self.done else max(0, self.lines - 1)


def evaluate_runs(runs: Sequence[RayRun], jobs: int, *, fresh: bool = False, download: bool = False,
                  progress: bool | str = True, verbose: int = 0, strict: bool = False,
                  on_results: Sequence[Callable[[EvalResult], Any] | None] | None = None) -> list[EvalResult]:
    """Evaluate each run as ``jobs`` shards, all Ray tasks submitted at once, and return each run's merged result;
    ``fresh``, ``strict`` and each of ``on_results`` as ``pipeline.evaluate``'s ``fresh``, ``strict``, ``on_result``."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    ray = import_ray()
    _check_out_dirs(runs)
    name = runs[0].config.variant if len(runs) == 1 else f"{len(runs)} runs"
    # Each run's results folder is locked from its shards' first file to its metrics.json and on_result (tracking).
    with contextlib.ExitStack() as held:
        for run in runs:
            held.enter_context(folder_lock(prepare_out_dir(run.config.out_dir)))
        if download:  # once, here, for every run: tasks downloading the same file would race
            for config in {str(r.config.model.path): r.config for r in runs}.values():
                download_inputs(config)
        started = time.perf_counter()
        started_ray = _connect(ray, verbose)
        shards: list[_Shard] = []
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            shards = _plan(runs, jobs, nodes, held, fresh=fresh)
            remote = ray.remote(max_retries=0)(run_shard)  # retried here, from the lines sent back
            cwd = os.getcwd()
            total = sum(s.images - s.resumed for s in shards)
            if progress:
                progress_log.info(f"{name}: {len(shards)} shards as Ray tasks on {len(nodes)} node(s) "
                                  f"({_resources(nodes)}); {total} images to run, {sum(s.resumed for s in shards)} "
                                  f"from the shards' caches; {shards[0].resources['num_cpus']} CPU(s) and onnxruntime "
                                  "threads per task")
            submitted = time.perf_counter()  # the parallel phase: from the first task submitted to the last done
            for shard in shards:
                _submit(remote, shard, cwd)
            _follow(ray, remote, shards, cwd, progress=progress, total=total, desc=f"{name} (ray, {len(shards)} tasks)")
            results = []
            for index, run in enumerate(runs):
                mine = [s for s in shards if s.run == index]
                launch = {"executor": "ray", "ray_nodes": len(nodes),
                          "shard_nodes": [{"shard": f"{s.shard[0]}/{s.shard[1]}", "attempts": s.attempts,
                                           **{k: v for k, v in (s.node or {}).items() if k != "pid"}} for s in mine]}
                # The run's parallel phase ends with its last shard (in a sweep, runs shared the cluster meanwhile).
                parallel_s = max(s.done_at for s in mine) - submitted
                result = merge_jobs([s.folder for s in mine], run.config.out_dir, parallel_s=parallel_s,
                                    started=started, launch=launch, strict=strict, locked=True)
                if on_results is not None and on_results[index] is not None:
                    on_results[index](result)
                results.append(result)
            return results
        finally:
            for shard in shards:
                if not shard.done and shard.stream is not None:
                    try:
                        ray.cancel(shard.stream, force=True)
                    except Exception as exc:  # noqa: BLE001 - a task that already ended cannot be cancelled
                        log.debug("cancel: %s", exc)
            if started_ray:
                ray.shutdown()


def _check_out_dirs(runs: Sequence[RayRun]) -> None:
    seen: dict[Path, str] = {}
    for run in runs:
        out_dir = run.config.out_dir.resolve()
        name = f"{run.config.variant} ({run.config.protocol_label()})"
        if out_dir in seen:
            raise UserError(f"{run.config.out_dir}: both {seen[out_dir]} and {name} would write their results "
                            "there; give the output folder a {run} part (output.dir, --out)")
        seen[out_dir] = name


def _connect(ray: ModuleType, verbose: int) -> bool:
    """Connect to the cluster at RAY_ADDRESS, or start a local Ray instance; True when this call did (the caller
    then shuts Ray down), False when this process already had Ray initialized."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS") or None
    level = logging.ERROR if verbose == 0 else logging.WARNING if verbose == 1 else logging.INFO
    local = {} if address else {"include_dashboard": False}
    try:  # not log_to_driver: the tasks' warnings come as messages
        ray.init(address=address, log_to_driver=False, logging_level=level, **local)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray instance"
        raise UserError(f"--executor ray: cannot start or reach {where}: {str(exc).splitlines()[0]}") from None
    log.info("Ray: %s", ray.get_runtime_context().gcs_address)
    return True


def _resources(nodes: list[dict]) -> str:
    cpus = sum(n["Resources"].get("CPU", 0) for n in nodes)
    gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
    return f"{cpus:g} CPUs" + (f", {gpus:g} GPUs" if gpus else "")


def _plan(runs: Sequence[RayRun], jobs: int, nodes: list[dict], held: contextlib.ExitStack, *,
          fresh: bool) -> list[_Shard]:
    """Every run's shard tasks: config with threads, resources, images, and the shard folder here (its old results
    removed, its cache.jsonl locked until ``held`` closes, cut to its complete lines or emptied when fresh)."""
    node_cpus = max([int(n["Resources"].get("CPU", 0)) for n in nodes] or [1]) or 1
    total_cpus = int(sum(n["Resources"].get("CPU", 0) for n in nodes)) or 1
    gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
    # Each task's threads: the cluster's CPUs split among the jobs, at most one node's.
    cores = max(1, min(node_cpus, total_cpus // jobs)) * jobs
    datasets: dict[tuple[str, str], data.CocoDataset] = {}
    shards: list[_Shard] = []
    for index, run in enumerate(runs):
        config = load_config(run.config_path, [*run.overrides, *job_overrides(run.config, jobs, cores)])
        threads = config.runtime.intra_op_threads
        if threads > node_cpus:
            log.warning("%s: runtime.intra_op_threads %d but the largest Ray node has %d CPUs: each task asks "
                        "for %d", run.config_path, threads, node_cpus, node_cpus)
        cuda = CUDA in config.runtime.providers
        if cuda and not gpus:
            raise UserError(f"{run.config_path}: runtime.providers asks for {CUDA} but the Ray cluster has no GPU")
        resources = {"num_cpus": min(threads, node_cpus), "num_gpus": int(cuda)}
        key = (config.dataset.annotations, config.dataset.images)
        if key not in datasets:
            datasets[key] = data.load_annotations(*key)
        out_dir = prepare_out_dir(run.config.out_dir)
        for shard in [(i, jobs) for i in range(1, jobs + 1)]:
            images = len(run_image_ids(config, datasets[key], shard)[0])
            folder = prepare_out_dir(shard_dir(out_dir, shard))
            path = folder / CACHE_FILE
            cache = held.enter_context(open(path, "a+b"))
            lock_file(cache, path)
            cache.seek(0)
            kept = b"" if fresh or not config.output.resume else cache.read()
            kept = kept[:kept.rfind(b"\n") + 1]  # its complete lines
            cache.truncate(len(kept))
            cache.seek(0, os.SEEK_END)
            tidy_output_dir(folder, discard_results=True)
            lines = kept.count(b"\n")
            shards.append(_Shard(index, shard, config, folder, images, resources, cache, lines=lines,
                                 resumed=max(0, lines - 1)))
    return shards


def _submit(remote: Any, shard: _Shard, cwd: str) -> None:
    """Start (or start again) the shard's task with the cache lines received so far (none without resume)."""
    shard.cache.flush()
    if not shard.config.output.resume:
        shard.cache.truncate(0)
        shard.lines = 0
    shard.cache.seek(0)
    sent = shard.cache.read()
    shard.attempts += 1
    shard.stream = remote.options(name=f"ssd-eval {shard.name}", **shard.resources).remote(
        shard.config, shard.shard, sent, cwd, str(shard.folder))


def _follow(ray: ModuleType, remote: Any, shards: list[_Shard], cwd: str, *, progress: bool | str, total: int,
            desc: str) -> None:
    """Take every task's messages until all are done, showing the images finished across them; submit a task
    whose worker died again; raise a task's user error as one line."""
    from tqdm import tqdm

    bar: Any = (ProgressLines(total, desc, every_s=shards[0].config.pipeline.progress_interval_s)
                if progress == "lines" else
                tqdm(total=total, desc=desc, unit="img", disable=progress is not True, dynamic_ncols=True))
    baseline = sum(s.finished for s in shards)
    with bar:
        while not all(s.done for s in shards):
            running = {id(s.stream): s for s in shards if not s.done}
            ready, _ = ray.wait([s.stream for s in running.values()], num_returns=len(running), timeout=POLL_S)
            for stream in ready:
                shard = running[id(stream)]
                try:
                    message = ray.get(next(stream))
                except StopIteration:  # ended without its results: as if its worker had died
                    _retry(remote, shard, cwd, "its task ended without results")
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, UserError):  # not retried: the same input fails again
                        raise UserError(f"{shard.name}: {exc.cause}") from None
                    raise
                except ray.exceptions.TaskCancelledError:
                    raise
                except ray.exceptions.RayError as exc:  # its worker or node died, or its objects were lost
                    _retry(remote, shard, cwd, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                else:
                    _receive(shard, message)
            finished = sum(s.finished for s in shards) - baseline
            if finished > bar.n:
                bar.update(finished - bar.n)


def _retry(remote: Any, shard: _Shard, cwd: str, why: str) -> None:
    if shard.attempts > MAX_RETRIES:
        raise UserError(f"{shard.name}: failed {shard.attempts} times, the last time because {why}; its "
                        f"{shard.finished} finished images are kept in {shard.folder / CACHE_FILE}: run the "
                        "same command to go on")
    where = f" on {shard.node['node_ip']}" if shard.node else ""
    log.warning("%s: its worker%s died (%s); submitting it again (retry %d of %d) from its %d finished images",
                shard.name, where, why, shard.attempts, MAX_RETRIES, shard.finished)
    _submit(remote, shard, cwd)


def _receive(shard: _Shard, message: dict[str, Any]) -> None:
    """Take one message of a shard's task (``run_shard``) into the shard's cache, log and folder here."""
    if "start" in message:
        shard.node = message["start"]
    if message.get("reset"):
        shard.cache.truncate(0)
        shard.lines = 0
    if message.get("lines"):
        shard.cache.write(message["lines"])
        shard.cache.flush()
        shard.lines += message["lines"].count(b"\n")
    for level, text in message.get("logs") or ():
        log.log(level, "%s: %s", shard.name, text)
    if "done" in message:
        for name, content in (("detections.json", message["done"]["detections"]),
                              (SHARD_FILE, message["done"]["manifest"])):  # the manifest last, as eval writes it
            with atomic_path(shard.folder / name) as temp:
                temp.write_bytes(content)
        shard.done, shard.done_at = True, time.perf_counter()
