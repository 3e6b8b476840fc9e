"""Scoring (issue 15): evaluate() against an independent route on the sample, and per-category AP and
PR curves worked out by hand.

The independent route decodes, resizes and normalizes each sample image itself, runs the model in its own
onnxruntime session, turns the raw outputs into COCO results under the coco rules (best 100 per image,
boxes clipped, label k -> k-th smallest category id) and scores them with plain pycocotools over exactly
the images the run selected.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd_eval.config.load import load_config
from ssd_eval.engine.pipeline import evaluate
from ssd_eval.scoring.metrics import score_detections

pytest.importorskip("pycocotools")
ort = pytest.importorskip("onnxruntime")

from helpers import plain_cocoeval  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
MODEL = SAMPLE / "models" / "sample.onnx"


def independent_outputs(annotations: dict) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Raw (boxes, labels, scores) per image id, from this file's own preprocessing and session."""
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    outputs = {}
    for image in annotations["images"]:
        with Image.open(SAMPLE / "images" / image["file_name"]) as opened:
            pixels = np.asarray(opened.convert("RGB").resize((1200, 1200), Image.Resampling.BILINEAR))
        tensor = ((pixels / 255.0 - mean) / std).transpose(2, 0, 1)[np.newaxis].astype(np.float32)
        named = dict(zip(names, session.run(names, {session.get_inputs()[0].name: tensor})))
        outputs[image["id"]] = (named["bboxes"][0], named["labels"][0], named["scores"][0])
    return outputs


def coco_results(annotations: dict, outputs: dict, image_ids: list[int]) -> list[dict]:
    """The coco protocol's results: best 100 per image, clipped pixel xywh, real category ids."""
    category_ids = sorted(c["id"] for c in annotations["categories"])
    sizes = {i["id"]: (i["width"], i["height"]) for i in annotations["images"]}
    results = []
    for image_id in image_ids:
        boxes, labels, scores = outputs[image_id]
        width, height = sizes[image_id]
        for k in sorted(range(len(scores)), key=lambda k: -float(scores[k]))[:100]:
            x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in boxes[k])
            results.append({"image_id": image_id, "category_id": category_ids[int(labels[k]) - 1],
                            "bbox": [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height],
                            "score": float(scores[k])})
    return results


@pytest.fixture(scope="module")
def sample_case() -> tuple[dict, dict]:
    annotations = json.loads((SAMPLE / "annotations.json").read_text())
    return annotations, independent_outputs(annotations)


@pytest.mark.parametrize("limit", [None, 3], ids=["full-sample", "limit-3"])
def test_evaluate_equals_plain_pycocotools_on_an_independent_route(tmp_path, sample_case, limit):
    annotations, outputs = sample_case
    image_ids = sorted(i["id"] for i in annotations["images"])[:limit]
    evaluator = plain_cocoeval(annotations, coco_results(annotations, outputs, image_ids), image_ids)
    config = load_config(REPO / "configs" / "sample.yaml", [
        ("dataset.annotations", str(SAMPLE / "annotations.json")), ("dataset.images", str(SAMPLE / "images")),
        ("model.path", str(MODEL)), ("output.dir", str(tmp_path / "out")), ("dataset.limit", limit),
        ("pipeline.workers", 1)])
    result = evaluate(config, progress=False)
    assert result.provenance["images"] == len(image_ids)
    assert result.scores.stats == pytest.approx([float(s) for s in evaluator.stats], abs=1e-6)
    assert 0.1 < result.scores.stats[0] < 0.95  # a case where the numbers mean something
    # per category: mean precision over IoU thresholds and recall points, area all, maxDets 100
    precision = evaluator.eval["precision"]
    names = {c["id"]: c["name"] for c in annotations["categories"]}
    for k, category in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, 2]
        expected = float(values[values > -1].mean()) if (values > -1).any() else -1.0
        assert result.scores.per_category_ap[names[category]] == pytest.approx(expected, abs=1e-6), names[category]


# ------------------------------------------------------------------ per-category AP and PR curves by hand

# Two 100x100 images, three categories of five with ground truth or detections:
#  - person (1), image 1: two boxes, found exactly (scores 0.9 and 0.8) with a false positive (0.85) between.
#    Ranked: TP, FP, TP -> precision 1 up to recall 0.5, then 2/3 up to recall 1, at every IoU threshold.
#    AP over the 101 recall points: (51 * 1 + 50 * 2/3) / 101. With maxDets 1 only the best detection per
#    image counts: recall 0.5 at precision 1, AP 51 / 101.
#  - car (3), image 2: one box [10, 10, 20, 20]; a false positive (0.95) ranked above a detection covering
#    its top 72 % ([10, 10, 20, 14.4], IoU 0.72, score 0.6). For IoU thresholds 0.50..0.70 (5 of 10): precision
#    1/2 at every recall point; 0.75..0.95: no match, precision 0. AP = (5 * 0.5) / 10 = 0.25. maxDets 1: 0.
#  - fire hydrant (11): no ground truth anywhere, one detection: AP -1 ("no data"), left out of the PR means.
#  - stop sign (13), dog (18): no ground truth, no detections: -1.
PERSON = (51 * 1 + 50 * 2 / 3) / 101
HAND_GT = {
    "images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 100},
               {"id": 2, "file_name": "2.jpg", "width": 100, "height": 100}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50.0, 50.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 11, "name": "fire hydrant"},
                   {"id": 13, "name": "stop sign"}, {"id": 18, "name": "dog"}],
}
HAND_DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 20.0, 20.0], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [25.0, 25.0, 10.0, 10.0], "score": 0.85},
    {"image_id": 1, "category_id": 1, "bbox": [50.0, 50.0, 20.0, 20.0], "score": 0.8},
    {"image_id": 2, "category_id": 3, "bbox": [60.0, 60.0, 20.0, 20.0], "score": 0.95},
    {"image_id": 2, "category_id": 3, "bbox": [10.0, 10.0, 20.0, 14.4], "score": 0.6},
    {"image_id": 2, "category_id": 11, "bbox": [40.0, 40.0, 10.0, 10.0], "score": 0.5},
]


@pytest.fixture(scope="module")
def hand_scores():
    return score_detections(copy.deepcopy(HAND_GT), copy.deepcopy(HAND_DETECTIONS), [1, 2])


def test_per_category_ap_by_hand_at_max_dets_100(hand_scores):
    assert hand_scores.per_category_ap == pytest.approx(
        {"person": PERSON, "car": 0.25, "fire hydrant": -1.0, "stop sign": -1.0, "dog": -1.0}, abs=1e-9)
    # maxDets 1 would give person 51/101 and car 0: the two differ on this case
    assert abs(PERSON - 51 / 101) > 0.3


def test_map_is_the_mean_of_the_categories_with_ground_truth(hand_scores):
    assert hand_scores.stats[0] == pytest.approx((PERSON + 0.25) / 2, abs=1e-9)
    # AP50: person's curve, and car at precision 1/2 (matched at IoU 0.5)
    assert hand_scores.stats[1] == pytest.approx((PERSON + 0.5) / 2, abs=1e-9)
    # AP75: the car detection (IoU 0.72) no longer matches
    assert hand_scores.stats[2] == pytest.approx(PERSON / 2, abs=1e-9)


def test_pr_curves_by_hand_at_iou_50_and_75(hand_scores):
    curves = hand_scores.pr_curves
    recall = curves["recall"]
    assert recall == pytest.approx([r / 100 for r in range(101)], abs=1e-12)
    # mean over person and car only (fire hydrant, stop sign and dog have no ground truth: -1, left out)
    for index, point in enumerate(recall):
        person = 1.0 if point <= 0.5 else 2 / 3
        assert curves["iou50"][index] == pytest.approx((person + 0.5) / 2, abs=1e-9), point
        assert curves["iou75"][index] == pytest.approx((person + 0.0) / 2, abs=1e-9), point
    assert curves["iou50"][50] == pytest.approx(0.75) and curves["iou50"][51] == pytest.approx(7 / 12)
    assert curves["iou75"][0] == pytest.approx(0.5) and curves["iou75"][100] == pytest.approx(1 / 3)

