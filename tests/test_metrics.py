"""Known-answer scoring tests, directly and through the whole pipeline, plus pycocotools pitfalls."""

from __future__ import annotations

import copy
import json

import pytest

import ssd_eval
from ssd_eval.errors import UserError
from ssd_eval.scoring.cocoeval import BACKENDS, STAT_NAMES
from ssd_eval.scoring.metrics import score_detections

from helpers import config_dict, fixed_detector, write_coco

# One 200x100 image with one "car" (id 3 = COCO-80 label 3) at pixels [20, 10, 80, 40] (xywh).
IMAGE = {"id": 7, "width": 200, "height": 100}
CAR = {"image_id": 7, "category_id": 3, "bbox": [20, 10, 80, 40]}
CAR_NORMALIZED = [20 / 200, 10 / 100, 100 / 200, 50 / 100]


def run_pipeline(tmp_path, boxes, labels, scores, images=(IMAGE,), annotations=(CAR,), **sections):
    annotations_path, image_dir = write_coco(tmp_path / "set", list(images), list(annotations))
    model = fixed_detector(tmp_path / "model.onnx", boxes, labels, scores)
    config = config_dict(model, annotations_path, image_dir, tmp_path / "out", **sections)
    return ssd_eval.evaluate(config)


def test_perfect_detection_scores_one(tmp_path):
    result = run_pipeline(tmp_path, [CAR_NORMALIZED], [3], [0.9])
    assert result.scores.stats[0] == pytest.approx(1.0)
    assert result.scores.stats[1] == pytest.approx(1.0)
    assert result.scores.per_category_ap["car"] == pytest.approx(1.0)
    assert result.scores.per_category_ap["person"] == -1.0  # no ground truth for person


def test_wrong_category_scores_zero(tmp_path):
    result = run_pipeline(tmp_path, [CAR_NORMALIZED], [1], [0.9])  # label 1 = person
    assert result.scores.stats[0] == pytest.approx(0.0)
    assert result.scores.per_category_ap["car"] == pytest.approx(0.0)


def test_shifted_box_matches_only_low_iou_thresholds(tmp_path):
    # Shift right by 20 px of an 80 px wide box: IoU = 60*40 / (2*80*40 - 60*40) = 0.6.
    # 0.6 sits on a threshold, so shift by 16 px instead: IoU = 64 / 96 = 0.667
    # -> true positive at 0.50, 0.55, 0.60, 0.65 (4 of 10 thresholds) -> mAP 0.4.
    shifted = [(20 + 16) / 200, 10 / 100, (100 + 16) / 200, 50 / 100]
    result = run_pipeline(tmp_path, [shifted], [3], [0.9])
    named = result.scores.named()
    assert named["mAP"] == pytest.approx(0.4)
    assert named["AP50"] == pytest.approx(1.0)
    assert named["AP75"] == pytest.approx(0.0)


CROWD = {"image_id": 7, "category_id": 3, "bbox": [120, 50, 70, 45], "iscrowd": 1}


def test_crowd_region_is_ignored_under_coco_protocol(tmp_path):
    # Only the ordinary car is detected; the crowd region is not a miss under the coco protocol.
    result = run_pipeline(tmp_path, [CAR_NORMALIZED], [3], [0.9], annotations=(CAR, CROWD))
    assert result.protocol == "coco"
    assert result.scores.stats[0] == pytest.approx(1.0)


def test_crowd_as_ground_truth_makes_the_crowd_a_miss(tmp_path):
    # Counting the crowd as ground truth halves recall: precision 1 at recall 0..0.5 -> 51/101.
    result = run_pipeline(tmp_path, [CAR_NORMALIZED], [3], [0.9], annotations=(CAR, CROWD),
                          metrics={"crowd_as_ground_truth": True})
    assert result.scores.stats[0] == pytest.approx(51 / 101)
    assert result.protocol == "coco+crowd_as_ground_truth=True"


def test_detection_inside_crowd_region_is_free_only_when_crowd_is_ignored(tmp_path):
    inside_crowd = [130 / 200, 60 / 100, 150 / 200, 80 / 100]  # small box inside the crowd region
    boxes, labels, scores = [inside_crowd, CAR_NORMALIZED], [3, 3], [0.95, 0.9]
    ignored = run_pipeline(tmp_path / "a", boxes, labels, scores, annotations=(CAR, CROWD))
    counted = run_pipeline(tmp_path / "b", boxes, labels, scores, annotations=(CAR, CROWD),
                           metrics={"crowd_as_ground_truth": True})
    assert ignored.scores.stats[0] == pytest.approx(1.0)
    assert counted.scores.stats[0] < ignored.scores.stats[0]


# Id 3 sorts before 7: at equal scores pycocotools ranks image 3's detection first.
EMPTY_IMAGE = {"id": 3, "width": 200, "height": 100}


def test_false_positive_on_image_without_annotations_counts_under_coco_protocol(tmp_path):
    # The fixed model puts the car box on both images; on image 3 (no annotations) it is a
    # false positive ranked first: precision 0.5 at recall 1 -> AP 0.5 at every IoU.
    images = (IMAGE, EMPTY_IMAGE)
    standard = run_pipeline(tmp_path / "a", [CAR_NORMALIZED], [3], [0.9], images=images)
    skipping = run_pipeline(tmp_path / "b", [CAR_NORMALIZED], [3], [0.9], images=images,
                            dataset={"skip_images_without_annotations": True})
    assert standard.provenance["images"] == 2
    assert standard.scores.stats[0] == pytest.approx(0.5)
    assert skipping.provenance["images"] == 1
    assert skipping.protocol == "coco+skip_images_without_annotations=True"
    assert skipping.scores.stats[0] == pytest.approx(1.0)


def test_false_positive_ranked_above_the_true_positive_halves_ap(tmp_path):
    elsewhere = [0.6, 0.6, 0.9, 0.9]
    result = run_pipeline(tmp_path, [elsewhere, CAR_NORMALIZED], [3, 3], [0.95, 0.9])
    assert result.scores.stats[0] == pytest.approx(0.5)


# --------------------------------------------------------------- direct scoring and pitfalls


def ground_truth():
    return {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 200, "height": 100}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [20.0, 10.0, 80.0, 40.0],
                         "area": 3200.0, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }


def test_empty_results_give_zero_stats_with_warning(caplog):
    scores = score_detections(ground_truth(), [], [7])  # naive pycocotools: loadRes([]) -> IndexError
    assert scores.stats == [0.0] * 12
    assert scores.warnings and "no detections" in scores.warnings[0]
    assert "no detections" in caplog.text


@pytest.mark.parametrize("backend", list(BACKENDS))  # hotcoco's results are checked without a copy
def test_unknown_image_id_is_a_clear_error_naming_the_source(backend):
    pytest.importorskip(BACKENDS[backend].module)
    detection = {"image_id": 8, "category_id": 3, "bbox": [20, 10, 80, 40], "score": 0.9}
    with pytest.raises(UserError, match=r"^run x: detections name image id 8,"):
        score_detections(ground_truth(), [detection], [7], backend=backend, source="run x")


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_contiguous_label_submitted_as_category_id_is_caught(backend):
    pytest.importorskip(BACKENDS[backend].module)
    # Label 2 (car) submitted as category id 2, which does not exist in COCO.
    detection = {"image_id": 7, "category_id": 2, "bbox": [20, 10, 80, 40], "score": 0.9}
    with pytest.raises(UserError, match=r"^run x: detections use category id 2,"):
        score_detections(ground_truth(), [detection], [7], backend=backend, source="run x")


def test_detections_are_not_mutated_and_scoring_is_repeatable():
    detections = [{"image_id": 7, "category_id": 3, "bbox": [20.0, 10.0, 80.0, 40.0], "score": 0.9}]
    before = copy.deepcopy(detections)
    gt = ground_truth()
    gt_before = copy.deepcopy(gt)
    first = score_detections(gt, detections, [7])
    second = score_detections(gt, detections, [7])
    assert detections == before  # pycocotools' loadRes adds area/id/iscrowd to the dicts it gets
    assert gt == gt_before
    assert first.stats == second.stats
    assert first.stats[0] == pytest.approx(1.0)


def test_stats_follow_pycocotools_order():
    scores = score_detections(ground_truth(), [
        {"image_id": 7, "category_id": 3, "bbox": [20.0, 10.0, 80.0, 40.0], "score": 0.9}], [7])
    assert list(scores.named()) == list(STAT_NAMES)
    assert len(scores.pr_curves["iou50"]) == len(scores.pr_curves["recall"]) == 101


def test_same_stats_as_plain_pycocotools_on_a_file(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = ground_truth()
    gt["annotations"].append({"id": 2, "image_id": 7, "category_id": 1, "bbox": [100.0, 0.0, 50.0, 90.0],
                              "area": 4500.0, "iscrowd": 0})
    detections = [
        {"image_id": 7, "category_id": 3, "bbox": [25.0, 12.0, 75.0, 40.0], "score": 0.8},
        {"image_id": 7, "category_id": 1, "bbox": [95.0, 5.0, 50.0, 80.0], "score": 0.7},
        {"image_id": 7, "category_id": 1, "bbox": [0.0, 0.0, 30.0, 30.0], "score": 0.9},
    ]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(detections))
    coco = COCO(str(tmp_path / "gt.json"))
    evaluator = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    ours = score_detections(gt, detections, [7])
    assert ours.stats == pytest.approx(list(evaluator.stats), abs=1e-12)


# --------------------------------------------------------------- the optional hotcoco backend


def synthetic_case(images: int, per_image: int, seed: int = 0):
    """Random ground truth and noisy detections (some matching, some not) over 5 categories."""
    import numpy as np

    rng = np.random.default_rng(seed)
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 3, 11, 13, 18)]
    gt = {"images": [], "annotations": [], "categories": categories}
    detections = []
    ann_id = 0
    for image_id in range(1, images + 1):
        gt["images"].append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.integers(0, 6))):
            ann_id += 1
            x, y = rng.uniform(0, 500), rng.uniform(0, 380)
            w, h = rng.uniform(4, 140), rng.uniform(4, 100)
            category = int(rng.choice([1, 3, 11, 13, 18]))
            gt["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": category,
                                      "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.05)})
            detections.append({"image_id": image_id, "category_id": category,
                               "bbox": [x + rng.normal(0, 6), y + rng.normal(0, 6), w * rng.uniform(0.8, 1.2),
                                        h * rng.uniform(0.8, 1.2)], "score": float(rng.uniform(0.3, 1.0))})
        for _ in range(per_image):
            detections.append({"image_id": image_id, "category_id": int(rng.choice([1, 3, 11, 13, 18])),
                               "bbox": [rng.uniform(0, 600), rng.uniform(0, 440), rng.uniform(2, 200),
                                        rng.uniform(2, 200)], "score": float(rng.uniform(0, 0.6))})
    return gt, detections


ALTERNATIVE_BACKENDS = [name for name in BACKENDS if name != "pycocotools"]


@pytest.mark.parametrize("backend", ALTERNATIVE_BACKENDS)
def test_alternative_backend_gives_the_same_stats_on_a_synthetic_large_case(backend):
    pytest.importorskip(BACKENDS[backend].module)
    gt, detections = synthetic_case(images=400, per_image=40)
    image_ids = [i["id"] for i in gt["images"]]
    reference = score_detections(gt, detections, image_ids, backend="pycocotools")
    other = score_detections(gt, detections, image_ids, backend=backend)
    assert len(detections) > 15000
    assert 0.05 < reference.stats[0] < 0.95
    assert other.stats == pytest.approx(reference.stats, abs=1e-9)
    assert other.per_category_ap == pytest.approx(reference.per_category_ap, abs=1e-9)
    for curve, values in reference.pr_curves.items():
        assert other.pr_curves[curve] == pytest.approx(values, abs=1e-9)


@pytest.mark.parametrize("backend", ALTERNATIVE_BACKENDS)
def test_alternative_backend_gives_the_same_stats_on_the_sample(tmp_path, backend):
    pytest.importorskip(BACKENDS[backend].module)
    from pathlib import Path

    from ssd_eval.config.load import load_config
    from ssd_eval.engine.pipeline import evaluate

    repo = Path(__file__).resolve().parents[1]
    results = {}
    for name in ("pycocotools", backend):
        config = load_config(repo / "configs" / "sample.yaml", [
            ("dataset.annotations", str(repo / "data/sample/annotations.json")),
            ("dataset.images", str(repo / "data/sample/images")),
            ("model.path", str(repo / "data/sample/models/sample.onnx")),
            ("output.dir", str(tmp_path / name)), ("metrics.backend", name)])
        results[name] = evaluate(config, progress=False)
    assert results[backend].scores.stats == pytest.approx(results["pycocotools"].scores.stats, abs=1e-9)
    assert results[backend].scores.per_category_ap == pytest.approx(
        results["pycocotools"].scores.per_category_ap, abs=1e-9)
    assert results[backend].provenance["metrics_backend"] == backend


@pytest.mark.parametrize("backend", ALTERNATIVE_BACKENDS)
def test_missing_backend_is_a_clear_error(monkeypatch, backend):
    monkeypatch.setitem(__import__("sys").modules, BACKENDS[backend].module, None)
    gt = ground_truth()
    detection = {"image_id": 7, "category_id": 3, "bbox": [20, 10, 80, 40], "score": 0.9}
    with pytest.raises(UserError, match=rf"\.\[{BACKENDS[backend].extra}\]"):
        score_detections(gt, [detection], [7], backend=backend)


def test_unknown_backend_is_refused_at_config_load():
    from ssd_eval.config.load import config_from_dict

    with pytest.raises(UserError, match="metrics.backend"):
        config_from_dict({"model": {"path": "m"}, "dataset": {"annotations": "a", "images": "i"},
                          "metrics": {"backend": "cocoapi"}})


def test_empty_results_mark_categories_without_ground_truth():
    scores = score_detections(ground_truth(), [], [7])
    assert scores.per_category_ap == {"person": -1.0, "car": 0.0}


def test_no_ground_truth_among_the_evaluated_images_is_a_warning():
    gt = ground_truth()
    gt["annotations"] = []
    scores = score_detections(gt, [{"image_id": 7, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.5}], [7])
    assert scores.stats[0] == -1.0
    assert scores.warnings and "no ground truth" in scores.warnings[0]


# ---------------------------------------------------------------- found by mutation testing (docs/TESTING.md)

CAR_DETECTION = {"image_id": 7, "category_id": 3, "bbox": [20.0, 10.0, 80.0, 40.0], "score": 0.9}


def test_no_detections_give_flat_zero_pr_curves_over_the_averaged_categories():
    scores = score_detections(ground_truth(), [], [7], exclude_categories=["person"])
    assert scores.pr_curves == {"recall": [round(i / 100, 2) for i in range(101)], "iou50": [0.0] * 101,
                                "iou75": [0.0] * 101}
    assert scores.categories_averaged == ["car"]
    assert score_detections(ground_truth(), [], [7]).categories_averaged == ["person", "car"]


def test_categories_averaged_name_the_categories_left_after_exclusion():
    assert score_detections(ground_truth(), [CAR_DETECTION], [7]).categories_averaged == ["person", "car"]
    assert score_detections(ground_truth(), [CAR_DETECTION], [7],
                            exclude_categories=["person"]).categories_averaged == ["car"]


def test_a_zero_map_with_ground_truth_is_not_the_no_ground_truth_warning(caplog):
    far_away = dict(CAR_DETECTION, bbox=[150.0, 60.0, 10.0, 10.0])
    scores = score_detections(ground_truth(), [far_away], [7])
    assert scores.stats[0] == 0.0 and scores.warnings == []
    half = score_detections(ground_truth(), [CAR_DETECTION, dict(far_away, score=0.95)], [7])
    assert 0 < half.stats[0] < 1 and half.warnings == []
    assert "no ground truth" not in caplog.text


def test_the_no_ground_truth_warning_is_logged_as_it_is_returned(caplog):
    gt = ground_truth()
    gt["annotations"] = []
    scores = score_detections(gt, [CAR_DETECTION], [7], source="run x")
    assert scores.warnings == ["run x: the evaluated images have no ground truth boxes; pycocotools reports -1"]
    assert scores.warnings[0] in caplog.text


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_scoring_prints_nothing(capsys, backend):
    pytest.importorskip(BACKENDS[backend].module)
    score_detections(ground_truth(), [CAR_DETECTION], [7], backend=backend)
    assert capsys.readouterr().out == ""  # COCOeval's summary goes to the debug log, never to stdout


def test_an_unknown_backend_in_a_direct_call_is_a_user_error_naming_the_choices():
    with pytest.raises(UserError) as info:
        score_detections(ground_truth(), [CAR_DETECTION], [7], backend="cocoapi")
    assert str(info.value) == "metrics.backend 'cocoapi' is not one of pycocotools, hotcoco"


def test_curves_and_per_category_ap_are_read_at_area_all_and_100_detections():
    # Twelve medium (40x40) cars in one image, each found exactly: AP 1 and precision 1 at every recall point.
    # Read at maxDets 10 instead, recall stops at 10/12 (AP 84/101); read at area "small", there is no data.
    image = {"id": 1, "width": 600, "height": 100}
    boxes = [[50.0 * i, 10.0, 40.0, 40.0] for i in range(12)]
    gt = {"images": [image], "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 3, "bbox": b, "iscrowd": 0}
                          for i, b in enumerate(boxes)]}
    detections = [{"image_id": 1, "category_id": 3, "bbox": b, "score": 0.9 - 0.01 * i} for i, b in enumerate(boxes)]
    scores = score_detections(gt, detections, [1])
    assert scores.per_category_ap == {"person": -1.0, "car": 1.0}
    assert scores.pr_curves["iou50"] == scores.pr_curves["iou75"] == [1.0] * 101


def test_curves_without_any_ground_truth_are_zero_not_nan():
    gt = ground_truth()
    gt["annotations"] = []
    scores = score_detections(gt, [CAR_DETECTION], [7])
    assert scores.pr_curves["iou50"] == scores.pr_curves["iou75"] == [0.0] * 101


def test_ground_truth_without_area_or_iscrowd_is_a_plain_box_of_width_times_height():
    # 60 x 20 = 1200 px: a medium box (32^2..96^2); 20 x 20 or 60 / 20 would be small. No iscrowd: not a crowd.
    gt = {"images": [{"id": 7, "width": 200, "height": 100}], "categories": [{"id": 3, "name": "car"}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [20, 10, 60, 20]}]}
    scores = score_detections(gt, [dict(CAR_DETECTION, bbox=[20.0, 10.0, 60.0, 20.0])], [7]).named()
    assert [scores[k] for k in ("mAP", "APs", "APm", "APl")] == pytest.approx([1.0, -1.0, 1.0, -1.0])


def test_crowd_regions_are_ignored_unless_asked_and_errors_name_the_source():
    gt = ground_truth()
    gt["annotations"].append({"id": 2, "image_id": 7, "category_id": 3, "bbox": [120.0, 50.0, 70.0, 45.0],
                              "area": 3150.0, "iscrowd": 1})
    assert score_detections(gt, [CAR_DETECTION], [7]).stats[0] == pytest.approx(1.0)  # the coco default
    assert score_detections(gt, [CAR_DETECTION], [7], crowd_as_ground_truth=True).stats[0] < 0.6
    with pytest.raises(UserError, match=r"^run x: detections name image id 8,"):
        score_detections(gt, [dict(CAR_DETECTION, image_id=8)], [7], source="run x")


def test_categories_without_a_name_are_named_by_their_id():
    gt = ground_truth()
    gt["categories"] = [{"id": 1}, {"id": 3}]
    assert score_detections(gt, [CAR_DETECTION], [7]).per_category_ap == pytest.approx({"1": -1.0, "3": 1.0})


@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_streaming_passes_every_setting_on(monkeypatch, backend):
    pytest.importorskip(BACKENDS[backend].module)
    import ssd_eval.scoring.streaming

    seen = {}
    real = ssd_eval.scoring.streaming.score_stream
    monkeypatch.setattr(ssd_eval.scoring.streaming, "score_stream", lambda *a, **kw: seen.update(kw) or real(*a, **kw))
    streamed = score_detections(ground_truth(), [CAR_DETECTION], [7], backend=backend, streaming=True,
                                exclude_categories=["person"], source="run x", crowd_as_ground_truth=True,
                                keep_matches=True)
    assert seen == {"backend": backend, "exclude_categories": ["person"], "source": "run x",
                    "crowd_as_ground_truth": True, "keep_matches": True}
    assert (streamed.matches is not None) == (backend == "pycocotools")  # hotcoco keeps no matches
    assert streamed.categories_averaged == ["car"]


def test_streamed_matches_are_kept_only_when_asked():
    streamed = score_detections(ground_truth(), [CAR_DETECTION], [7], streaming=True)
    assert streamed.matches is None  # every detection's match costs memory on the full set
    kept = score_detections(ground_truth(), [CAR_DETECTION], [7], streaming=True, keep_matches=True).matches
    (car,) = [c for c in kept.categories if c.category_id == 3]
    assert kept.image_ids == [7] and car.true_positive.shape == (10, 1)
    assert car.true_positive.all()  # the one car box lies on the ground-truth box: a match at every IoU


def test_excluding_an_unknown_or_every_category_is_refused():
    with pytest.raises(UserError) as info:
        score_detections(ground_truth(), [CAR_DETECTION], [7], exclude_categories=["car", "cat"])
    assert str(info.value) == ("metrics.exclude_categories names 'cat', which is not a category name of the "
                               "annotation file")
    with pytest.raises(UserError) as info:
        score_detections(ground_truth(), [CAR_DETECTION], [7], exclude_categories=["car", "person"])
    assert str(info.value) == "metrics.exclude_categories leaves no category to average over"


def test_the_no_detections_warning_names_the_source():
    expected = ["detections: no detections to score; every metric is 0"]
    assert score_detections(ground_truth(), [], [7]).warnings == expected
    assert score_detections(ground_truth(), [], [7], source="run x").warnings[0].startswith("run x: ")


def test_pr_curves_are_taken_at_iou_exactly_50_and_75():
    # A car found at IoU 0.525 (a match at 0.50, not 0.55) and a person at IoU 0.775 (at 0.75, not 0.80).
    gt = {"images": [{"id": 1, "width": 200, "height": 200}, {"id": 2, "width": 200, "height": 200}],
          "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 100], "iscrowd": 0},
                          {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 0}]}
    detections = [{"image_id": 1, "category_id": 3, "bbox": [0.0, 0.0, 100.0, 52.5], "score": 0.9},
                  {"image_id": 2, "category_id": 1, "bbox": [0.0, 0.0, 100.0, 77.5], "score": 0.9}]
    curves = score_detections(gt, detections, [1, 2]).pr_curves
    assert curves["iou50"] == pytest.approx([1.0] * 101)  # both categories match
    assert curves["iou75"] == pytest.approx([0.5] * 101)  # only the person


# --------------------------------------------------------------- annotation ids 0 and below (issue 22)


def plain_pycocotools_stats(gt: dict, detections: list[dict], image_ids: list[int]) -> list[float]:
    """COCOeval's 12 stats straight from pycocotools (loadRes gets copies)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = copy.deepcopy(gt)
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(copy.deepcopy(detections)), "bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(s) for s in evaluator.stats]


@pytest.mark.parametrize("first_id", [0, -3])
@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_annotation_ids_from_zero_or_below_score_a_perfect_detector_one_on_every_backend(backend, streaming,
                                                                                        first_id):
    """Many exporters number annotations from 0; pycocotools records a match as the ground truth's id,
    so a match to id 0 read as a miss (0.96 for a perfect detector). Every backend, streaming or not,
    gives the 12 stats plain pycocotools gives the same file numbered from 1."""
    pytest.importorskip(BACKENDS[backend].module)
    gt, noisy = synthetic_case(images=30, per_image=3, seed=4)
    gt["annotations"] = [a for a in gt["annotations"] if not a["iscrowd"]]
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
                "score": 0.5 + 0.001 * n} for n, a in enumerate(gt["annotations"])]
    from_one = copy.deepcopy(gt)
    for n, annotation in enumerate(from_one["annotations"]):
        annotation["id"] = n + 1
    shifted = copy.deepcopy(gt)
    for n, annotation in enumerate(shifted["annotations"]):
        annotation["id"] = first_id + n
    image_ids = [i["id"] for i in gt["images"]]
    assert plain_pycocotools_stats(shifted, perfect, image_ids)[0] < 0.999  # the bug this guards against
    for detections in (perfect, noisy):
        expected = plain_pycocotools_stats(from_one, detections, image_ids)
        ours = score_detections(shifted, detections, image_ids, backend=backend, streaming=streaming)
        assert ours.stats == pytest.approx(expected, abs=1e-12)
    assert score_detections(shifted, perfect, image_ids, backend=backend, streaming=streaming).stats[:3] == \
        pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    assert [a["id"] for a in shifted["annotations"]][:2] == [first_id, first_id + 1]  # the caller's data untouched


# --------------------------------------------------------------- issue 25: each category's ground-truth boxes

@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("crowd_as_ground_truth, cars", [(False, 2), (True, 3)])
def test_scores_count_each_categorys_ground_truth_boxes_in_the_evaluated_images(streaming, crowd_as_ground_truth,
                                                                                 cars):
    gt = ground_truth()
    gt["images"].append({"id": 8, "file_name": "b.jpg", "width": 200, "height": 100})
    gt["annotations"] += [
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [100.0, 10.0, 50.0, 40.0], "area": 2000.0, "iscrowd": 0},
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0.0, 0.0, 200.0, 100.0], "area": 2e4, "iscrowd": 1},
        {"id": 4, "image_id": 8, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0], "area": 100.0, "iscrowd": 0}]
    detection = {"image_id": 7, "category_id": 3, "bbox": [20.0, 10.0, 80.0, 40.0], "score": 0.9}
    scores = score_detections(gt, [detection], [7], crowd_as_ground_truth=crowd_as_ground_truth, streaming=streaming)
    assert scores.per_category_gt == {"person": 0, "car": cars}  # image 8 (a person) is not evaluated
    assert score_detections(gt, [], [7, 8]).per_category_gt == {"person": 1, "car": 2}  # no detections: still counted


def test_the_ground_truth_counts_reach_metrics_json(tmp_path):
    result = run_pipeline(tmp_path, [CAR_NORMALIZED], [3], [0.9], annotations=(CAR, CROWD))
    document = json.loads(result.files["metrics"].read_text())
    assert document["per_category_gt"]["car"] == 1 and document["per_category_gt"]["person"] == 0
