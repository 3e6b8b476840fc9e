"""The local launcher: ``ssd-eval eval --jobs N`` runs N shards side by side on this machine, then merges.

Each job is a subprocess ``ssd-eval eval --shard i/N --no-progress`` writing into ``<output dir>/shard-i-of-N/``
(its output in ``job.log``), with its share of the cores and, when ``runtime.providers`` asks for CUDA, one GPU
(round robin). Progress is the lines of the jobs' resume caches. The first job to fail stops the others and ends
the run with its error line; killed or interrupted, the same command goes on from the jobs' caches.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from ssd_eval import extras
from ssd_eval.config.load import NAME_OPTION
from ssd_eval.config.schema import Config
from ssd_eval.data import coco as data
from ssd_eval.engine.folder_lock import folder_lock
from ssd_eval.engine.jobs import CUDA, download_inputs, job_overrides, merge_jobs
from ssd_eval.engine.progress import ProgressLines, progress_log
from ssd_eval.engine.shards import CACHE_FILE, CacheTail, run_image_ids, shard_dir
from ssd_eval.errors import UserError
from ssd_eval.results.result import EvalResult, prepare_out_dir

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
JOB_LOG = "job.log"
POLL_S = 0.2
STOP_GRACE_S = 10.0


def visible_cuda_devices(environ: dict[str, str] | None = None) -> list[str] | None:
    """The CUDA devices jobs may be given: CUDA_VISIBLE_DEVICES when set, else one per GPU that
    ``nvidia-smi -L`` lists; None when neither says."""
    listed = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES", "")
    if listed.strip():
        return [d.strip() for d in listed.split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    count = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return [str(i) for i in range(count)] or None


@dataclass
class JobPlan:
    """What job i of n runs with: its config overrides and environment."""

    index: int
    total: int
    overrides: list[str] = field(default_factory=list)  # KEY=VALUE for --set
    cuda_device: str | None = None

    @property
    def shard(self) -> str:
        return f"{self.index}/{self.total}"


def plan_jobs(config: Config, jobs: int, *, cores: int | None = None,
              cuda_devices: list[str] | None = None) -> list[JobPlan]:
    """Split this machine (or ``cores``) among ``jobs`` jobs: threads and decode workers (where the config leaves
    them to the machine), one CUDA device each when CUDA is asked for."""
    if not cores:
        try:
            cores = len(os.sched_getaffinity(0))  # the cores this process may run on
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    if jobs > cores:
        log.warning("--jobs %d on %d cores: the jobs will share cores", jobs, cores)
    plans = [JobPlan(i, jobs, job_overrides(config, jobs, cores)) for i in range(1, jobs + 1)]
    if CUDA in config.runtime.providers:
        devices = cuda_devices or [str(i) for i in range(jobs)]
        if cuda_devices is None:
            log.warning("cannot count the CUDA devices (no CUDA_VISIBLE_DEVICES, no nvidia-smi): job i gets "
                        "device i-1")
        elif jobs > len(devices):
            log.warning("--jobs %d with %d CUDA devices: jobs share devices", jobs, len(devices))
        for plan in plans:
            plan.cuda_device = devices[(plan.index - 1) % len(devices)]
    return plans


def job_command(config_path: str | Path, overrides: Sequence[Any], plan: JobPlan, *, fresh: bool,
                verbose: int = 0) -> list[str]:
    """The ``ssd-eval eval --shard i/N`` command line of one job: this process's config overrides (values
    written as JSON, which the config loader reads back as YAML), then the job's own."""
    command = [sys.executable, "-m", "ssd_eval"] + (["-" + "v" * verbose] if verbose else [])
    command += ["eval", "--config", str(config_path)]
    for item in [*overrides, *plan.overrides]:
        if isinstance(item, str):
            command += ["--set", item]
        elif len(item) == 3 and item[2] == NAME_OPTION:
            command += [NAME_OPTION, str(item[1])]  # a named run stays named in its jobs (config.load_config)
        else:
            command += ["--set", f"{item[0]}={json.dumps(item[1])}"]
    return command + ["--shard", plan.shard, "--no-progress"] + (["--fresh"] if fresh else [])


def _stop_with_parent() -> None:  # runs in the child between fork and exec (Linux: PR_SET_PDEATHSIG)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class _Job:
    plan: JobPlan
    process: subprocess.Popen
    log_path: Path
    log_file: IO[bytes]
    cache: CacheTail
    resumed: int = 0  # images its cache held before it started (they count as done, not as this run's speed)


def run_jobs(config: Config, jobs: int, overrides: Sequence[Any], *, config_path: str | Path, fresh: bool = False,
             download: bool = False, verbose: int = 0, progress: bool | str = True,
             shard: str | None = None, strict: bool = False, executor: str = "local",
             on_result: Callable[[EvalResult], Any] | None = None) -> EvalResult:
    """Evaluate ``config`` as ``jobs`` shards side by side (``executor``: ``local`` subprocesses or ``ray`` tasks),
    merge them and return the merged result; ``strict`` and ``on_result`` as ``pipeline.evaluate``'s."""
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    if shard:
        raise UserError("--jobs and --shard: choose one (--jobs N runs every shard i/N itself)")
    if executor == "ray":
        from ssd_eval.engine.ray_executor import RayRun, evaluate_runs, import_ray

        import_ray()  # Ray missing: one line naming the pip command, before any work
    extras.check(config.needed_extras())  # here, not N times in the jobs
    if executor == "ray":
        return evaluate_runs([RayRun(config, str(config_path), list(overrides))], jobs, fresh=fresh,
                             download=download, progress=progress, verbose=verbose, strict=strict,
                             on_results=[on_result])[0]
    if download:  # once, here: N jobs downloading the same file would race
        download_inputs(config)
    out_dir = prepare_out_dir(config.out_dir)
    # Locked from the start to the last file: the merged metrics.json and its rewrite by tracking.
    with folder_lock(out_dir):
        plans = plan_jobs(config, jobs,
                          cuda_devices=visible_cuda_devices() if CUDA in config.runtime.providers else None)
        _warn_of_other_splits(out_dir, jobs)
        total = planned_images(config)
        dirs = [shard_dir(out_dir, (plan.index, jobs)) for plan in plans]
        started = time.perf_counter()
        running = [_start(plan, directory, config_path, overrides, fresh=fresh, verbose=verbose)
                   for plan, directory in zip(plans, dirs)]
        resumed = sum(job.resumed for job in running)
        if progress and total is not None:
            progress_log.info("%s: %d images to run in %d jobs, %d from the jobs' caches; writing to %s",
                              config.variant, total - resumed, jobs, resumed, out_dir)
        try:
            _wait(running, config.variant, progress, total=total, every_s=config.pipeline.progress_interval_s)
        finally:
            _stop(running)
        parallel_s = time.perf_counter() - started
        devices = [p.cuda_device for p in plans] if any(p.cuda_device for p in plans) else None
        result = merge_jobs(dirs, out_dir, parallel_s=parallel_s, started=started,
                            launch={"executor": "local", "parallel_devices": devices}, strict=strict, locked=True)
        if on_result is not None:
            on_result(result)
        return result


def _start(plan: JobPlan, directory: Path, config_path: str | Path, overrides: Sequence[Any], *, fresh: bool,
           verbose: int) -> _Job:
    prepare_out_dir(directory)
    cache = CacheTail(directory / CACHE_FILE)
    if not fresh:  # the images its cache holds already are resumed, not this run's progress
        cache.read()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if plan.cuda_device is not None:
        env["CUDA_VISIBLE_DEVICES"] = plan.cuda_device
    log_path = directory / JOB_LOG
    log_file = open(log_path, "wb")
    command = job_command(config_path, overrides, plan, fresh=fresh, verbose=verbose)
    log.info("job %s: %s", plan.shard, " ".join(command))
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                               env=env, preexec_fn=_stop_with_parent if sys.platform == "linux" else None)
    return _Job(plan, process, log_path, log_file, cache, resumed=cache.images)


def _wait(running: list[_Job], variant: str, progress: bool | str, *, total: int | None = None,
          every_s: float = 120.0) -> None:
    """Wait for every job, showing their progress as a single run shows its own; raise the first failure's error
    line (the caller stops the others)."""
    from tqdm import tqdm

    desc = f"{variant} ({len(running)} jobs)"
    resumed = sum(job.resumed for job in running)
    to_run = None if total is None else max(0, total - resumed)
    if progress == "lines" and to_run is not None:
        bar: Any = ProgressLines(to_run, desc, every_s=every_s)
    else:
        bar = tqdm(total=to_run, desc=desc, unit="img", disable=progress is not True, dynamic_ncols=True)
    with bar:
        while True:
            codes = [job.process.poll() for job in running]  # before counting: a finished job's cache is complete
            _update(bar, running)
            failed = next((job for job, code in zip(running, codes) if code not in (None, 0)), None)
            if failed is not None:
                raise UserError(f"--jobs {len(running)}: job {failed.plan.shard} failed (exit "
                                f"{failed.process.returncode}): {error_line(failed.log_path)} "
                                f"(its output: {failed.log_path})")
            if all(code == 0 for code in codes):
                return
            time.sleep(POLL_S)


def _update(bar: Any, running: list[_Job]) -> None:
    """Bring ``bar`` to the images the jobs inferred so far: their caches' lines past those they held before."""
    done = 0
    for job in running:
        job.cache.read()
        finished = job.cache.images
        if finished < job.resumed:  # its cache was started afresh (another key): nothing of it was resumed
            job.resumed = 0
        done += finished - job.resumed
    bar.update(done - bar.n)


def planned_images(config: Config) -> int | None:
    """How many images the jobs evaluate together; None when the annotations cannot be read here."""
    try:
        dataset = data.load_annotations(config.dataset.annotations, config.dataset.images)
        return len(run_image_ids(config, dataset)[0])
    except (UserError, OSError):
        return None


def _warn_of_other_splits(out_dir: Path, jobs: int) -> None:
    """Warn of shard folders of another split (shard-*-of-M, M != jobs) in ``out_dir``: they pile up."""
    others = sorted(str(p) for p in out_dir.glob("shard-*-of-*") if p.is_dir() and not p.name.endswith(f"-of-{jobs}"))
    if others:
        log.warning("%s: shard folders of another split, not part of this --jobs %d run: %s (remove them)",
                    out_dir, jobs, ", ".join(others))


def error_line(log_path: Path) -> str:
    """The job's ``ssd-eval: error:`` line without its prefix, else its last line of output."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no output)"
    lines = [line for line in map(str.strip, text.splitlines()) if line]
    errors = [line.removeprefix("ssd-eval: error: ") for line in lines if line.startswith("ssd-eval: error:")]
    return errors[-1] if errors else (lines[-1] if lines else "(no output)")


def _stop(running: list[_Job]) -> None:
    """Stop the jobs still running (SIGTERM, then SIGKILL after STOP_GRACE_S) and close every job's log."""
    alive = [job for job in running if job.process.poll() is None]
    for job in alive:
        job.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for job in alive:
        try:
            job.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            job.process.kill()
            job.process.wait()
    for job in running:
        job.log_file.close()
