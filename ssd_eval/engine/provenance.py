"""Provenance: everything a number needs to be trusted and reproduced (docs/FORMATS.md)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ssd_eval.config.schema import Config
from ssd_eval.data import coco as data
from ssd_eval.inference import model_info
from ssd_eval.inference.runner import Detector, spinning_entries
from ssd_eval.scoring.cocoeval import BACKENDS
from ssd_eval.scoring.streaming import streams
from ssd_eval.utils import hash_data, now, package_version


def run_provenance(config: Config, model_path: Path, model_sha256: str, content_sha256: str,
                   int8: model_info.ModelInfo, int8_warning: str | None, dataset: data.CocoDataset,
                   detector: Detector, evaluated: list[int], skipped: list[dict[str, Any]], detection_count: int, *,
                   shard: tuple[int, int] | None, resumed: int, speed: dict[str, Any]) -> dict[str, Any]:
    """A run's provenance (docs/FORMATS.md); ``speed``: ``pipeline._speed``'s record."""
    return {
        "model": {"path": str(model_path), "sha256": model_sha256, "content_sha256": content_sha256,
                  "size": model_path.stat().st_size, "quantization": int8.quantization_format},
        "int8": {"cpu": int8.capability.to_dict() if int8.capability else None,
                 "saturation_risk": int8.saturation_risk, "can_saturate_here": int8.can_saturate_here,
                 "exact_int8": config.runtime.exact_int8, "warning": int8_warning},
        "annotations": {"path": str(dataset.annotations_path), "sha256": dataset.sha256},
        "images_dir": str(dataset.images_dir),
        "config": config.to_dict(),
        "config_sha256": config.sha256(),
        "config_file": config.source,
        "images": len(evaluated),
        "image_ids_sha256": hash_data(evaluated),
        "skipped_images": skipped,
        "detections": detection_count,
        "limit": config.dataset.limit,
        "partial": [part for part, _ in config.partial_parts()],
        "overridden": list(config.overridden),
        "name": config.name_record(),
        "shards": None if shard is None else [f"{shard[0]}/{shard[1]}"],
        "runtime": {
            "onnxruntime": package_version("onnxruntime"),
            "providers_requested": list(config.runtime.providers),
            "providers": detector.providers,
            "intra_op_threads": config.runtime.intra_op_threads,
            "inter_op_threads": config.runtime.inter_op_threads,
            "batch_size": config.runtime.batch_size,
            "session_config": dict(detector.session_config),
            "spinning": spinning_entries(config.runtime),
        },
        "versions": versions(),
        "harness_commit": harness_commit(),
        "host": host_info(),
        "metrics_backend": config.metrics.backend,
        "metrics_streaming": None if shard is not None else (config.metrics.streaming
                                                             and streams(config.metrics.backend)),
        "resumed_images": resumed,
        "inference_time_s": round(detector.inference_seconds if speed["inference_s"] is None
                                  else speed["inference_s"], 3),
        "images_per_s": (round(speed["images"] / speed["loop_s"], 3)
                         if speed["images"] > 0 and speed["loop_s"] > 0 else None),
        "speed_from_cache": speed["from_cache"],
        "date": now(),
    }


def versions() -> dict[str, str | None]:
    """Versions of Python and the packages that shape a result."""
    packages = ["ssd_eval", "numpy", "onnxruntime", "pillow", "opencv-python-headless",
                *(backend.package for backend in BACKENDS.values())]
    return {"python": platform.python_version(), **{name: package_version(name) for name in packages}}


def host_info() -> dict[str, Any]:
    """CPU model, core count and platform of this machine."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def harness_commit() -> str | None:
    """The git commit of this ssd_eval checkout ("+dirty" with uncommitted changes); None outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None
