"""Tests for ssd_eval.scoring.breakdown: the TIDE breakdown on a case whose errors are known by construction."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ssd_eval.config.load import load_config
from ssd_eval.engine.pipeline import evaluate
from ssd_eval.errors import UserError
from ssd_eval.scoring.breakdown import ERROR_TYPES, breakdown_change, breakdown_for_run, compute_breakdown
from ssd_eval.scoring.metrics import score_detections

pytest.importorskip("hotcoco")

REPO = Path(__file__).resolve().parents[1]

BOX = [10.0, 10.0, 40.0, 40.0]
SHIFTED = [20.0, 20.0, 40.0, 40.0]  # IoU with BOX: 900 / 2300 = 0.39 (between 0.1 and 0.5)
NUDGED = [11.0, 11.0, 40.0, 40.0]  # IoU with BOX: 1521 / 1679 = 0.91

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def known_case() -> tuple[dict, list[dict]]:
    """Ground truth and detections in which each error type happens exactly once.

    cat (5 boxes): img1 box only seen shifted (localization), img2 box seen as a dog (classification),
    img3 box found twice (true positive + duplicate), img5 box never seen (missed), img7 box found;
    a cat on empty img4 (background). dog (1 box): img6 found; a dog shifted over img7's cat (both).
    """
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in range(1, 8)]
    boxes = [(1, 1), (2, 1), (3, 1), (5, 1), (6, 2), (7, 1)]  # (image, category)
    annotations = [{"id": n, "image_id": image, "category_id": category, "bbox": list(BOX), "area": 1600.0,
                    "iscrowd": 0} for n, (image, category) in enumerate(boxes, start=1)]
    detections = [
        {"image_id": 4, "category_id": 1, "bbox": list(BOX), "score": 0.95},  # background
        {"image_id": 1, "category_id": 1, "bbox": list(SHIFTED), "score": 0.90},  # localization
        {"image_id": 7, "category_id": 2, "bbox": list(SHIFTED), "score": 0.88},  # both
        {"image_id": 2, "category_id": 2, "bbox": list(BOX), "score": 0.85},  # classification
        {"image_id": 3, "category_id": 1, "bbox": list(BOX), "score": 0.80},  # true positive
        {"image_id": 3, "category_id": 1, "bbox": list(NUDGED), "score": 0.75},  # duplicate
        {"image_id": 6, "category_id": 2, "bbox": list(BOX), "score": 0.60},  # true positive
        {"image_id": 7, "category_id": 1, "bbox": list(BOX), "score": 0.50},  # true positive
    ]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}, detections


def ap101(hits: list[bool], boxes: int) -> float:
    """COCO's 101-point interpolated AP of detections ranked by score (True: a match), ``boxes`` ground truth."""
    hits_array = np.array(hits, dtype=float)
    tp, fp = np.cumsum(hits_array), np.cumsum(1 - hits_array)
    recall, precision = tp / boxes, tp / (tp + fp)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    found = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(sum(precision[i] for i in found if i < len(precision)) / 101)


# The ranked match flags of each category by construction, and what fixing each error type does to them.
CAT = [False, False, True, False, True]  # background .95, localization .90, TP .80, duplicate .75, TP .50
DOG = [False, False, True]  # both .88, classification .85, TP .60
BASE = (ap101(CAT, 5) + ap101(DOG, 1)) / 2
FIXED = {
    # the dog on img2's cat becomes that cat (score .85, between localization and the TP)
    "classification": (ap101([False, False, True, True, False, True], 5) + ap101([False, True], 1)) / 2,
    "localization": (ap101([False, True, True, False, True], 5) + ap101(DOG, 1)) / 2,  # re-boxed: a match
    "both": (ap101(CAT, 5) + ap101([False, True], 1)) / 2,  # dropped
    "duplicate": (ap101([False, False, True, True], 5) + ap101(DOG, 1)) / 2,  # dropped
    "background": (ap101([False, True, False, True], 5) + ap101(DOG, 1)) / 2,  # dropped
    "missed": (ap101(CAT, 4) + ap101(DOG, 1)) / 2,  # img5's cat out of the count
}


def test_each_error_type_is_found_once_and_recovers_what_fixing_it_gives():
    gt, detections = known_case()
    breakdown = compute_breakdown(gt, detections, list(range(1, 8)))
    assert breakdown["counts"] == {name: 1 for name, _ in ERROR_TYPES}
    assert breakdown["ap50"] == pytest.approx(BASE, abs=1e-12)
    for name, _ in ERROR_TYPES:
        assert breakdown["dAP"][name] == pytest.approx(FIXED[name] - BASE, abs=1e-12), name
        assert FIXED[name] - BASE > 0.005, name  # the case is built so every fix moves AP
    assert breakdown["iou"] == 0.5 and breakdown["background_iou"] == 0.1
    assert breakdown["oracles"]["all_false_positives"] > max(breakdown["dAP"].values())
    assert "hotcoco" in breakdown["method"]


def test_ap50_is_the_runs_ap50_and_category_exclusion_applies():
    gt, detections = known_case()
    images = list(range(1, 8))
    assert compute_breakdown(gt, detections, images)["ap50"] == pytest.approx(
        score_detections(gt, detections, images).stats[1], abs=1e-12)
    cats_only = compute_breakdown(gt, detections, images, exclude_categories=["dog"])
    assert cats_only["ap50"] == pytest.approx(ap101(CAT, 5), abs=1e-12)
    assert cats_only["counts"]["both"] == 0  # the dog detections are not scored
    with pytest.raises(UserError, match="not a category name"):
        compute_breakdown(gt, detections, images, exclude_categories=["horse"])


def test_breakdown_for_run_reads_detections_json_and_honours_the_switch(tmp_path):
    gt, detections = known_case()
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(detections))
    switches = {"crowd_as_ground_truth": False, "exclude_categories": []}
    from_file = breakdown_for_run(True, gt, path, list(range(1, 8)), switches)
    assert from_file == compute_breakdown(gt, detections, list(range(1, 8)))
    assert breakdown_for_run(False, gt, path, list(range(1, 8)), switches) is None


def test_an_asked_for_breakdown_that_fails_fails_the_run(tmp_path):
    gt, _ = known_case()
    switches = {"crowd_as_ground_truth": False, "exclude_categories": []}
    with pytest.raises(FileNotFoundError):
        breakdown_for_run(True, gt, tmp_path / "none.json", [1], switches)


def test_without_hotcoco_false_is_off_and_true_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "hotcoco", None)
    gt, detections = known_case()
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(detections))
    switches = {"crowd_as_ground_truth": False, "exclude_categories": []}
    assert breakdown_for_run(False, gt, path, [1], switches) is None
    with pytest.raises(UserError) as info:
        breakdown_for_run(True, gt, path, [1], switches)
    assert str(info.value) == ("metrics.error_breakdown: true needs hotcoco, which is not installed: "
                               "pip install -e '.[hotcoco]' (or set metrics.error_breakdown: false)")


def test_change_against_the_parent():
    gt, detections = known_case()
    images = list(range(1, 8))
    parent = {"error_breakdown": compute_breakdown(gt, detections, images)}
    # the quantized child also misplaces img7's cat: one more localization error, one less match
    child_detections = [dict(d, bbox=list(SHIFTED)) if (d["image_id"], d["category_id"]) == (7, 1) else d
                        for d in detections]
    child = {"error_breakdown": compute_breakdown(gt, child_detections, images)}
    change = breakdown_change(child, parent)
    assert child["error_breakdown"]["counts"]["localization"] == 2
    assert change["localization"] > 0.01
    assert set(change) == {name for name, _ in ERROR_TYPES}
    assert breakdown_change(child, {"variant": "old, no breakdown"}) is None


def test_a_sample_run_records_the_breakdown_when_asked_and_none_by_default(tmp_path):
    sample = REPO / "data" / "sample"

    def run(out, *overrides):
        config = load_config(REPO / "configs" / "sample-int8.yaml", [
            ("dataset.annotations", str(sample / "annotations.json")), ("dataset.images", str(sample / "images")),
            ("model.path", str(sample / "models" / "sample-int8.onnx")), ("output.dir", str(out)),
            ("metrics.bootstrap.replicates", 0), *overrides])
        evaluate(config, progress=False)
        return json.loads((out / "metrics.json").read_text())

    document = run(tmp_path / "on", ("metrics.error_breakdown", True))
    breakdown = document["error_breakdown"]
    assert breakdown["ap50"] == pytest.approx(document["AP50"], abs=1e-9)
    assert set(breakdown["dAP"]) == {name for name, _ in ERROR_TYPES}
    assert sum(breakdown["counts"].values()) > 0
    assert "error_breakdown" not in run(tmp_path / "off")  # base.yaml: false, whatever is installed
