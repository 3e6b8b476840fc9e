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


def assert_same_detections(expected_out: Path, out: Path, *, box_px: float, score: float) -> None:
    """Per image the same number of detections of the same classes, boxes within ``box_px`` pixels and
    scores within ``score`` (each image's rows paired after sorting by class, then score)."""
    expected, got = detections_by_image(expected_out), detections_by_image(out)
    assert sorted(got) == sorted(expected)
    worst_box = worst_score = 0.0
    for image_id, rows in expected.items():
        assert len(got[image_id]) == len(rows), image_id
        order = lambda d: (d["category_id"], -d["score"])  # noqa: E731
        for a, b in zip(sorted(rows, key=order), sorted(got[image_id], key=order)):
            assert a["category_id"] == b["category_id"], image_id
            worst_box = max(worst_box, *(abs(x - y) for x, y in zip(a["bbox"], b["bbox"])))
            worst_score = max(worst_score, abs(a["score"] - b["score"]))
    print(f"  detections: largest box difference {worst_box:.2e} px, largest score difference {worst_score:.2e}")
    assert worst_box <= box_px and worst_score <= score


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
    assert_same_detections(tmp_path / "cpu", tmp_path / "cuda", box_px=1.0, score=1e-3)


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
    assert_same_detections(tmp_path / "single", tmp_path / "jobs", box_px=1e-3, score=1e-5)
