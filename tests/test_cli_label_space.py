"""Issue 22 through the command line: annotation ids from 0, category lists other than COCO's 80,
model outputs that are read wrongly, inverted boxes. Each expected value comes from plain pycocotools
on results built here from the model's known boxes."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import run_cli
from helpers import fixed_detector, write_coco

# The 80 published COCO ids, written out independently of the harness: 1..90 without these 10.
COCO_80 = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
NAMES = {1: "person", 2: "bicycle", 3: "car", 13: "stop sign", 18: "dog"}
WIDTH, HEIGHT = 200, 100
INPUT_HW = (64, 64)
OBJECTS = [(1, [10, 10, 40, 60]), (3, [100, 20, 60, 30]), (13, [60, 50, 30, 40]), (18, [150, 60, 40, 30])]


def normalized(x: float, y: float, w: float, h: float) -> list[float]:
    return [x / WIDTH, y / HEIGHT, (x + w) / WIDTH, (y + h) / HEIGHT]


# (normalized xyxy box, COCO-80 label, score): a hit per object (the car shifted), a false positive
# of bicycle (label 2) and one of person.
ROWS = [
    (normalized(10, 10, 40, 60), 1, 0.9),
    (normalized(106, 23, 60, 30), 3, 0.8),
    (normalized(60, 50, 30, 40), 12, 0.7),
    (normalized(150, 60, 40, 30), 17, 0.6),
    (normalized(0, 0, 40, 20), 2, 0.95),
    (normalized(120, 5, 30, 30), 1, 0.3),
]


def expected_stats(gt: dict, rows, *, clamp: bool = True) -> list[float]:
    """Plain pycocotools: the rows as COCO results (label k -> the k-th COCO id), every category the
    file lists; annotation ids renumbered from 1 here."""
    gt = copy.deepcopy(gt)
    for n, annotation in enumerate(gt["annotations"]):
        annotation["id"] = n + 1
    results = []
    for box, label, score in rows:
        x0, y0, x1, y1 = (float(np.float32(v)) for v in box)
        w, h = (x1 - x0) * WIDTH, (y1 - y0) * HEIGHT
        if clamp:
            w, h = max(w, 0.0), max(h, 0.0)
        results.append({"image_id": 7, "category_id": COCO_80[label - 1], "bbox": [x0 * WIDTH, y0 * HEIGHT, w, h],
                        "score": float(np.float32(score))})
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = gt
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(s) for s in evaluator.stats]


def coco_set(root: Path, categories: list[dict], objects=OBJECTS, first_id: int = 1) -> tuple[Path, Path, dict]:
    annotations, images = write_coco(root, [{"id": 7, "width": WIDTH, "height": HEIGHT}],
                                     [{"image_id": 7, "category_id": c, "bbox": b} for c, b in objects], categories)
    gt = json.loads(annotations.read_text())
    for n, annotation in enumerate(gt["annotations"]):
        annotation["id"] = first_id + n
    annotations.write_text(json.dumps(gt))
    return annotations, images, gt


def coco_80_categories() -> list[dict]:
    return [{"id": i, "name": NAMES.get(i, f"category {i}")} for i in COCO_80]


def run(tmp_path: Path, rows, annotations: Path, images: Path, name: str, *args: str, scale: float = 1.0):
    boxes = [np.asarray(box) * scale for box, _, _ in rows]
    model = fixed_detector(tmp_path / f"{name}.onnx", boxes, [label for _, label, _ in rows],
                           [score for _, _, score in rows], input_hw=INPUT_HW)
    out = tmp_path / name
    result = run_cli("eval", "--model", str(model), "--annotations", str(annotations), "--images", str(images),
                     "--out", str(out), "--set", f"preprocess.input_size=[{INPUT_HW[0]}, {INPUT_HW[1]}]",
                     "--set", "pipeline.workers=1", "--set", "metrics.bootstrap.replicates=0", "--no-progress", *args)
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else None
    return result, metrics, out


def test_a_91_entry_category_list_numbered_from_0_scores_as_plain_pycocotools(tmp_path):
    """The 91-entry lists add id 12 'street sign': the old default shifted every label from 12 up;
    annotation ids from 0 made a match to id 0 a miss."""
    categories = coco_80_categories() + [{"id": 12, "name": "street sign"}]
    annotations, images, gt = coco_set(tmp_path / "set", categories, first_id=0)
    result, metrics, _ = run(tmp_path, ROWS, annotations, images, "ninety-one")
    assert result.returncode == 0, result.stderr
    expected = expected_stats(gt, ROWS)
    assert 0.3 < expected[0] < 0.95
    assert metrics["stats"] == pytest.approx(expected, abs=1e-9)
    assert metrics["per_category_ap"]["stop sign"] == pytest.approx(1.0)
    [note] = [w for w in metrics["warnings"] if "street sign" in w]
    assert "can never detect them" in note
    assert f"warning: {note}" in result.stdout
    perfect = [row for row in ROWS if row[1] != 2 and row[2] != 0.3]
    perfect[1] = (normalized(100, 20, 60, 30), 3, 0.8)
    result, metrics, _ = run(tmp_path, perfect, annotations, images, "perfect")
    assert result.returncode == 0, result.stderr
    assert metrics["stats"][:3] == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)


def test_a_person_only_file_scores_only_person_as_pycocotools_does(tmp_path):
    annotations, images, gt = coco_set(tmp_path / "set", [{"id": 1, "name": "person"}],
                                       objects=[o for o in OBJECTS if o[0] == 1])
    rows = [(normalized(60, 50, 30, 40), 1, 0.97), *ROWS]  # a person false positive ranked first
    result, metrics, out = run(tmp_path, rows, annotations, images, "person")
    assert result.returncode == 0, result.stderr
    expected = expected_stats(gt, rows)  # pycocotools leaves the other categories' results unscored
    assert 0.3 < expected[0] < 0.9
    assert metrics["stats"] == pytest.approx(expected, abs=1e-9)
    assert "warning: scored 1 of 80 categories" in result.stdout
    assert any(w.startswith("scored 1 of 80 categories") for w in metrics["warnings"])
    assert {d["category_id"] for d in json.loads((out / "detections.json").read_text())} == {1}


@pytest.fixture
def coco_80_set(tmp_path):
    return coco_set(tmp_path / "set", coco_80_categories())


def test_boxes_in_pixels_warn_fail_with_strict_and_score_right_with_box_scale(tmp_path, coco_80_set):
    annotations, images, gt = coco_80_set
    result, metrics, _ = run(tmp_path, ROWS, annotations, images, "pixels", scale=INPUT_HW[0])
    assert result.returncode == 0, result.stderr
    [warning] = [w for w in metrics["warnings"] if w.startswith("model outputs:")]
    assert "pixels" in warning and "postprocess.box_scale" in warning
    assert f"warning: {warning}" in result.stdout
    strict, _, out = run(tmp_path, ROWS, annotations, images, "strict", "--strict", scale=INPUT_HW[0])
    assert strict.returncode == 2
    errors = [line for line in strict.stderr.splitlines() if line.startswith("ssd-eval: error:")]
    assert len(errors) == 1 and "--strict" in errors[0] and "postprocess.box_scale" in errors[0]
    assert "Traceback" not in strict.stderr and not (out / "metrics.json").exists()
    fixed, metrics, _ = run(tmp_path, ROWS, annotations, images, "scaled", "--strict", "--set",
                            f"postprocess.box_scale=[{INPUT_HW[1]}, {INPUT_HW[0]}]", scale=INPUT_HW[0])
    assert fixed.returncode == 0, fixed.stderr
    assert metrics["stats"] == pytest.approx(expected_stats(gt, ROWS), abs=1e-9)
    assert not [w for w in metrics["warnings"] if w.startswith("model outputs:")]


def test_logits_warn_and_a_lower_threshold_scores_them_as_probabilities(tmp_path, coco_80_set):
    annotations, images, gt = coco_80_set
    logits = [(box, label, float(np.log(score / (1 - score)))) for box, label, score in ROWS]
    shifted = [(box, label, score - 3.0) for box, label, score in logits]  # sigmoid(x - 3): the same ranking
    result, metrics, _ = run(tmp_path, shifted, annotations, images, "logits")
    assert result.returncode == 0, result.stderr
    [warning] = [w for w in metrics["warnings"] if w.startswith("model outputs:")]
    assert "logits" in warning and "postprocess.score_threshold" in warning
    result, metrics, _ = run(tmp_path, shifted, annotations, images, "lowered", "--set",
                             "postprocess.score_threshold=-1.0e+9")
    assert result.returncode == 0, result.stderr
    assert metrics["stats"][:3] == pytest.approx(expected_stats(gt, ROWS)[:3], abs=1e-9)


@pytest.mark.parametrize("protocol", ["coco", "mlperf-ssd"])
def test_an_inverted_box_is_clamped_under_coco_and_passed_through_under_mlperf(tmp_path, coco_80_set, protocol):
    """A car box with x_max < x_min, ranked first: a false positive of width 0 under coco; under
    mlperf-ssd its negative width reaches pycocotools, whose negative area makes it ignored."""
    annotations, images, gt = coco_80_set
    inverted = [(normalized(160, 20, -60, 30), 3, 0.99), *ROWS]
    result, metrics, _ = run(tmp_path, inverted, annotations, images, protocol, "--set", f"protocol={protocol}")
    assert result.returncode == 0, result.stderr
    clamped, passed = expected_stats(gt, inverted, clamp=True), expected_stats(gt, inverted, clamp=False)
    assert clamped[0] != pytest.approx(passed[0], abs=1e-3)
    assert metrics["stats"] == pytest.approx(clamped if protocol == "coco" else passed, abs=1e-9)
    assert metrics["protocol_switches"]["keep_inverted_boxes"] is (protocol != "coco")
