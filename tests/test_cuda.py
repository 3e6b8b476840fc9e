"""The CUDA path: runs on a GPU only where onnxruntime offers CUDAExecutionProvider (skipped elsewhere).

What it checks, each against the same run on the CPU in the same test: the session really uses CUDA
(provenance lists the providers the session took, not the ones asked for), the sample's stats agree
with the CPU's, a resume cache written on the CPU is refused on CUDA, and ``--jobs 2`` on one GPU
gives both jobs that device and the same detections as one CUDA run. ``tools/check_cuda.sh`` runs
this file with the numbers printed; README.md (`runtime.providers`) has the last readings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

ort = pytest.importorskip("onnxruntime")
CUDA = "CUDAExecutionProvider"
pytestmark = pytest.mark.skipif(CUDA not in ort.get_available_providers(),
                                reason="onnxruntime here has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
ON_CUDA = f"runtime.providers=[{CUDA}, CPUExecutionProvider]"


def evaluate_sample(config: str, out: Path, *extra: str) -> dict:
    """``ssd-eval eval`` of one sample variant; its metrics.json."""
    done = run_cli("eval", "--config", config, "--out", str(out), "--no-progress", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "metrics.json").read_text())


def detections_by_image(out: Path) -> dict[int, list]:
    rows: dict[int, list] = {}
    for row in json.loads((out / "detections.json").read_text()):
        rows.setdefault(row["image_id"], []).append(row)
    return rows


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two COCO [x, y, w, h] boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def assert_same_detections(expected_out: Path, out: Path, *, share: float) -> None:
    """At least ``share`` of the expected detections have a twin in ``out``: the same image and class,
    IoU >= 0.99 and a score within 1e-3 (each twin used once). Float kernels may differ in the last
    bits, which can swap a detection across the top-100 or score-threshold cut, so not all of them."""
    expected, got = detections_by_image(expected_out), detections_by_image(out)
    assert sorted(got) == sorted(expected)
    total = twins = 0
    for image_id, rows in expected.items():
        free = list(got[image_id])
        for row in rows:
            total += 1
            candidates = [d for d in free if d["category_id"] == row["category_id"]
                          and abs(d["score"] - row["score"]) <= 1e-3 and iou(d["bbox"], row["bbox"]) >= 0.99]
            if candidates:
                twins += 1
                free.remove(max(candidates, key=lambda d: iou(d["bbox"], row["bbox"])))
    print(f"  detections: {twins} of {total} have a twin ({twins / total:.4f})")
    assert twins >= share * total


@pytest.mark.parametrize("config, tolerance", [
    ("configs/sample.yaml", 1e-3),
    # int8 / QDQ: nodes CUDA cannot run fall back to the CPU; the rest runs in float on the GPU.
    ("configs/sample-int8.yaml", 1e-2),
    ("configs/sample-qdq.yaml", 1e-2),
])
def test_sample_on_cuda_uses_cuda_and_agrees_with_the_cpu(tmp_path, config, tolerance):
    cpu = evaluate_sample(config, tmp_path / "cpu")
    gpu = evaluate_sample(config, tmp_path / "cuda", "--set", ON_CUDA)
    assert cpu["provenance"]["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert gpu["provenance"]["runtime"]["providers"][0] == CUDA
    differences = [abs(a - b) for a, b in zip(gpu["stats"], cpu["stats"])]
    print(f"{config}: CPU mAP {cpu['stats'][0]:.6f}, CUDA mAP {gpu['stats'][0]:.6f}, "
          f"largest stat difference {max(differences):.2e}; images/s CPU "
          f"{cpu['provenance']['images_per_s']} CUDA {gpu['provenance']['images_per_s']}")
    assert max(differences) <= tolerance
    assert_same_detections(tmp_path / "cpu", tmp_path / "cuda", share=0.98)


def test_a_cache_written_on_the_cpu_is_refused_on_cuda(tmp_path):
    evaluate_sample("configs/sample.yaml", tmp_path / "out")
    refused = run_cli("eval", "--config", "configs/sample.yaml", "--out", str(tmp_path / "out"), "--no-progress",
                      "--set", ON_CUDA)
    assert refused.returncode == 2
    assert "cache.jsonl: was written for a different run" in refused.stderr and "Traceback" not in refused.stderr
    gpu = evaluate_sample("configs/sample.yaml", tmp_path / "out", "--set", ON_CUDA, "--fresh")
    assert gpu["provenance"].get("resumed_images", 0) == 0
    assert gpu["provenance"]["runtime"]["providers"][0] == CUDA


def test_two_jobs_share_one_gpu_and_equal_one_cuda_run(tmp_path):
    single = evaluate_sample("configs/sample.yaml", tmp_path / "single", "--set", ON_CUDA)
    jobs = evaluate_sample("configs/sample.yaml", tmp_path / "jobs", "--set", ON_CUDA, "--jobs", "2")
    provenance = jobs["provenance"]
    assert provenance["parallel_jobs"] == 2
    assert provenance["runtime"]["providers"][0] == CUDA
    assert provenance["parallel_devices"] is not None and len(provenance["parallel_devices"]) == 2
    assert jobs["stats"] == pytest.approx(single["stats"], abs=1e-6)
    assert_same_detections(tmp_path / "single", tmp_path / "jobs", share=1.0)
