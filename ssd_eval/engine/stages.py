"""Where a run's time goes: the image loop's stage clock and the per-stage times of provenance.stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class StageClock:
    """Seconds spent in each stage of the image loop, summed over its images (``_run_images``). The writer
    thread adds ``post_*``, the main thread the rest (the decode workers' times arrive with their results)."""

    decoded: int = 0  # images whose decode+preprocess times are counted
    decode_wall_s: float = 0.0  # on the worker, per image summed (workers run beside inference)
    decode_cpu_s: float = 0.0  # the worker thread's (or process's) own CPU time
    input_wait_s: float = 0.0  # the main thread waiting for the next input: session.run idle
    inference_s: float = 0.0  # session.run
    postprocessed: int = 0
    post_wall_s: float = 0.0  # writer thread: to_coco_results and the cache line
    post_cpu_s: float = 0.0
    post_wait_s: float = 0.0  # the main thread waiting for the writer
    loop_s: float = 0.0  # the loop's wall time
    loop_cpu_s: float = 0.0  # this process's CPU time (every thread) during the loop
    decode_in_process: bool = True  # False: decode ran in other processes (pipeline.mode process)


def stage_times(clock: StageClock, *, images: int, evaluated: int, setup_s: float, scoring_s: float,
                scoring_cpu_s: float, output_s: float, wall_s: float) -> dict[str, Any]:
    """Per-stage times of a run for provenance.stages (docs/FORMATS.md), in ms per image of ``images`` (inferred
    in this run) or ``evaluated`` (scored). Inference CPU is the loop's process CPU time less the decode
    workers' (thread mode) and the writer's: onnxruntime's threads, spinning included."""
    def per_image(seconds: float, count: int) -> float | None:
        return round(1000.0 * seconds / count, 3) if count > 0 else None

    decode_cpu = clock.decode_cpu_s if clock.decode_in_process else 0.0
    inference_cpu = clock.loop_cpu_s - decode_cpu - clock.post_cpu_s
    seconds = {"setup": setup_s, "input_wait": clock.input_wait_s, "inference": clock.inference_s,
               "postprocess_wait": clock.post_wait_s, "scoring": scoring_s, "output": output_s}
    return {
        "images": images,
        "decode_preprocess": {"cpu_ms": per_image(clock.decode_cpu_s, clock.decoded),
                              "wall_ms": per_image(clock.decode_wall_s, clock.decoded),
                              "wait_ms": per_image(clock.input_wait_s, images)},
        "inference": {"cpu_ms": per_image(inference_cpu, images), "wall_ms": per_image(clock.inference_s, images)},
        "postprocess": {"cpu_ms": per_image(clock.post_cpu_s, clock.postprocessed),
                        "wall_ms": per_image(clock.post_wall_s, clock.postprocessed),
                        "wait_ms": per_image(clock.post_wait_s, images)},
        "scoring": {"cpu_ms": per_image(scoring_cpu_s, evaluated), "wall_ms": per_image(scoring_s, evaluated)},
        "idle_share": round(clock.input_wait_s / clock.loop_s, 4) if clock.loop_s > 0 else None,
        "loop_s": round(clock.loop_s, 3),
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "accounted_share": round(sum(seconds.values()) / wall_s, 4) if wall_s > 0 else None,
    }
