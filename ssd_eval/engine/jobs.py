"""What the jobs of a split run share, whichever executor runs them (engine.launcher, engine.ray_executor):
threads per job, inputs downloaded once, and the merge of the jobs' shards."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from ssd_eval.config.schema import Config
from ssd_eval.engine.pipeline import fetch_inputs
from ssd_eval.engine.shards import SHARD_FILE, merge_shards
from ssd_eval.results.result import EvalResult, write_result

CUDA = "CUDAExecutionProvider"


def job_overrides(config: Config, jobs: int, cores: int) -> list[str]:
    """The ``--set`` overrides of each of ``jobs`` jobs (or Ray tasks) sharing ``cores`` cores: onnxruntime threads
    and decode workers to match where the config leaves them to the machine, and no tracking."""
    overrides = []
    if config.runtime.intra_op_threads == 0:
        overrides.append(f"runtime.intra_op_threads={max(1, cores // jobs)}")
    if config.pipeline.workers == 0:
        overrides.append(f"pipeline.workers={max(1, min(8, cores // (2 * jobs)))}")
    overrides.append("tracking.log=[]")  # the merged result is tracked once, by the launcher
    return overrides


def merge_jobs(dirs: Sequence[Path], out_dir: Path, *, parallel_s: float, started: float,
               launch: dict[str, Any], strict: bool = False, locked: bool = False) -> EvalResult:
    """Merge the shards ``dirs`` that ran side by side for ``parallel_s`` seconds into ``out_dir`` and write the
    result, its provenance with the parallel phase's figures, ``launch``'s entries and the wall time since
    ``started`` (a ``time.perf_counter()``). ``locked``: the caller holds ``out_dir``'s folder lock."""
    shards = [json.loads((directory / SHARD_FILE).read_text(encoding="utf-8"))["provenance"] for directory in dirs]
    inferred = sum(int(shard["images"]) - int(shard.get("resumed_images") or 0) for shard in shards)
    # images_per_s: the images the jobs inferred together, over the wall time of the parallel phase
    launch = {"parallel_jobs": len(dirs), "parallel_wall_time_s": round(parallel_s, 3),
              "images_per_s": round(inferred / parallel_s, 3) if inferred > 0 and parallel_s > 0 else None, **launch}
    result = merge_shards(dirs, out_dir, launch=launch, locked=locked, strict=strict)
    result.provenance["wall_time_s"] = round(time.perf_counter() - started, 3)  # launch, jobs, merge, scoring
    write_result(result, out_dir)
    return result


def download_inputs(config: Config) -> None:
    """Download the model and COCO when absent, once for every job (N jobs downloading one file would race)."""
    fetch_inputs(config, download=True, progress=False)
