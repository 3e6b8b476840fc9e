"""Streaming scoring (ssd_eval.scoring.streaming): the same numbers as pycocotools scoring every detection at
once, and detections really matched chunk by chunk as they arrive, keeping a few bytes each."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import random
from pathlib import Path

import numpy as np
import pytest

from ssd_eval.errors import UserError
from ssd_eval.scoring import matches, streaming
from ssd_eval.scoring.cocoeval import BACKENDS, prepare_ground_truth
from ssd_eval.scoring.metrics import score_detections
from ssd_eval.scoring.streaming import STREAMING_BACKENDS, StreamingScorer
from ssd_eval.testing import synthetic

REPO = Path(__file__).resolve().parents[1]
TINY = synthetic.DetectorSpec(input_size=(64, 64), channels=(4, 8, 8), extra_convs=(0, 1, 0), detections=20)


@functools.lru_cache(maxsize=1)
def large_case():
    """~12,000 synthetic detections over 300 images (crowd regions, every area range, scores on a 1e-5
    grid so ties occur), plus 150 detections of one category on one image (past maxDets 100)."""
    gt, detections, image_ids = synthetic.synthetic_scoring_case(300, 40, seed=5)
    crowded = [a for a in gt["annotations"] if a["image_id"] == 7][0]
    x, y, w, h = crowded["bbox"]
    extra = [{"image_id": 7, "category_id": crowded["category_id"], "bbox": [x + k % 5, y + k % 3, w, h],
              "score": round(0.2 + 0.005 * (k % 50), 5)} for k in range(150)]
    at = max(i for i, d in enumerate(detections) if d["image_id"] == 7) + 1
    detections[at:at] = extra
    return gt, detections, image_ids


def by_image(detections):
    groups: dict[int, list[dict]] = {}
    for detection in detections:
        groups.setdefault(detection["image_id"], []).append(detection)
    return groups


def plain_pycocotools(gt, detections, image_ids, *, crowd_as_ground_truth=False, category_ids=None):
    """pycocotools' own evaluate / accumulate / summarize on every detection at once."""
    prepared = prepare_ground_truth(gt, crowd_as_ground_truth=crowd_as_ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = BACKENDS["pycocotools"].make_evaluator(prepared, copy.deepcopy(detections))
        evaluator.params.imgIds = sorted(image_ids)
        if category_ids is not None:
            evaluator.params.catIds = category_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def assert_same_scores(got, expected, tolerance=1e-9):
    assert got.stats == pytest.approx(expected.stats, abs=tolerance)
    assert got.per_category_ap == pytest.approx(expected.per_category_ap, abs=tolerance)
    assert set(got.pr_curves) == set(expected.pr_curves)
    for name, values in expected.pr_curves.items():
        assert got.pr_curves[name] == pytest.approx(values, abs=tolerance)
    assert got.categories_averaged == expected.categories_averaged


@pytest.mark.parametrize("crowd_as_ground_truth, exclude", [(False, ()), (True, ()), (False, ("person", "car"))],
                         ids=["crowd-ignored", "crowd-as-truth", "category-subset"])
def test_pycocotools_streaming_gives_pycocotools_arrays_bit_for_bit(crowd_as_ground_truth, exclude):
    """Images arriving in shuffled order, small chunks: precision, recall and scores arrays equal
    pycocotools' accumulate() exactly, and so do the 12 stats."""
    gt, detections, image_ids = large_case()
    names = {c["id"]: c["name"] for c in gt["categories"]}
    category_ids = [c for c in sorted(names) if names[c] not in exclude]
    groups = list(by_image(detections).items())
    random.Random(3).shuffle(groups)
    scorer = StreamingScorer(gt, image_ids, crowd_as_ground_truth=crowd_as_ground_truth,
                             exclude_categories=exclude, chunk_detections=700)
    for image_id, image_detections in groups[:-20]:  # the last 20 images with detections never come
        scorer.add(image_id, image_detections)
    dropped = {image_id for image_id, _ in groups[-20:]}
    scores = scorer.finish()
    kept = [d for d in detections if d["image_id"] not in dropped]
    reference = plain_pycocotools(gt, kept, image_ids, crowd_as_ground_truth=crowd_as_ground_truth,
                                  category_ids=category_ids)
    assert scorer.chunks > 10
    for name in ("precision", "recall", "scores"):
        assert np.array_equal(scorer.evaluation[name], reference.eval[name]), name
    assert scores.stats == [float(s) for s in reference.stats]
    assert len(kept) > 10000 and 0.05 < scores.stats[0] < 0.95
    assert scores.categories_averaged == [names[c] for c in category_ids]


@functools.lru_cache(maxsize=2)
def large_case_reference(crowd_as_ground_truth: bool):
    gt, detections, image_ids = large_case()
    return score_detections(gt, detections, image_ids, crowd_as_ground_truth=crowd_as_ground_truth)


@pytest.mark.parametrize("backend", STREAMING_BACKENDS)
@pytest.mark.parametrize("crowd_as_ground_truth", [False, True])
def test_streaming_equals_pycocotools_all_at_once_on_a_synthetic_large_case(backend, crowd_as_ground_truth):
    pytest.importorskip(BACKENDS[backend].module)
    gt, detections, image_ids = large_case()
    reference = large_case_reference(crowd_as_ground_truth)
    streamed = score_detections(gt, detections, image_ids, crowd_as_ground_truth=crowd_as_ground_truth,
                                backend=backend, streaming=True)
    assert_same_scores(streamed, reference)


@pytest.mark.parametrize("backend", STREAMING_BACKENDS)
def test_streaming_equals_all_at_once_on_the_sample(tmp_path, backend):
    pytest.importorskip(BACKENDS[backend].module)
    from ssd_eval.config.load import load_config
    from ssd_eval.engine.pipeline import evaluate

    results = {}
    for name, chosen, streamed in (("reference", "pycocotools", False), ("streamed", backend, True)):
        config = load_config(REPO / "configs" / "sample.yaml", [
            ("dataset.annotations", str(REPO / "data/sample/annotations.json")),
            ("dataset.images", str(REPO / "data/sample/images")),
            ("model.path", str(REPO / "data/sample/models/sample.onnx")),
            ("output.dir", str(tmp_path / name)), ("metrics.backend", chosen),
            ("metrics.streaming", streamed)])
        results[name] = evaluate(config, progress=False)
    assert_same_scores(results["streamed"].scores, results["reference"].scores)
    assert results["streamed"].provenance["metrics_streaming"] is True
    assert results["reference"].provenance["metrics_streaming"] is False
    assert results["streamed"].provenance["config"]["metrics"]["streaming"] is True


# --------------------------------------------------------------------------- it really streams


def test_detections_are_matched_in_chunks_while_they_are_still_being_read(monkeypatch):
    """The scorer matches a chunk as soon as enough detections are pending, long before the input
    ends, and never holds more than one chunk (plus one image) unmatched."""
    gt, detections, image_ids = synthetic.synthetic_scoring_case(120, 30, seed=2)
    read = 0
    seen_at_update = []

    def source():
        nonlocal read
        for detection in detections:
            read += 1
            yield detection

    scorer = StreamingScorer(gt, image_ids, chunk_detections=300)
    engine_update = scorer._engine.update

    def update(image_ids, images, truth, results, positions):
        seen_at_update.append((read, len(results)))
        return engine_update(image_ids, images, truth, results, positions)

    monkeypatch.setattr(scorer._engine, "update", update)
    scorer.add_detections(source())
    matched_before_finish = sum(count for _, count in seen_at_update)
    retained = scorer.retained_bytes()
    scores = scorer.finish()

    assert len(seen_at_update) >= 10 and scorer.chunks == len(seen_at_update)
    assert seen_at_update[0][0] < len(detections) / 5  # the first chunk is matched early
    matched = 0
    for read_then, count in seen_at_update:
        matched += count
        assert read_then - matched <= 30  # at most the image being read stays unmatched
    assert 300 <= scorer.peak_pending_detections < 300 + 30
    assert all(count <= 300 + 30 for _, count in seen_at_update)
    assert matched_before_finish > len(detections) - 330
    # What a matched detection leaves behind: its score, image, rank and 80 packed flag bits.
    assert retained / len(detections) <= 24
    assert scores.stats == score_detections(gt, detections, image_ids).stats


def test_chunks_are_bounded_by_images_too():
    gt, detections, image_ids = synthetic.synthetic_scoring_case(40, 2, seed=4)
    scorer = StreamingScorer(gt, image_ids, chunk_images=8)
    scorer.add_detections(detections)
    assert scorer.chunks == 5 and scorer.peak_pending_detections <= 16
    assert scorer.finish().stats == score_detections(gt, detections, image_ids).stats


def test_a_run_streams_its_cache_into_the_scorer(tmp_path, monkeypatch):
    """evaluate() with metrics.streaming (the default) feeds the scorer chunk by chunk, with the same
    result as scoring every detection at once; the choice is recorded in provenance."""
    from ssd_eval.engine.pipeline import evaluate
    from ssd_eval.testing.bench_harness import harness_config

    annotations, images = synthetic.write_synthetic_coco(tmp_path / "coco", 12, seed=4, size_range=(40, 80))
    model = synthetic.write_synthetic_detector(tmp_path / "model.onnx", TINY)
    monkeypatch.setattr(streaming, "CHUNK_DETECTIONS", 50)
    scorers = []
    finish = StreamingScorer.finish

    def spy(self):
        scorers.append(self)
        return finish(self)

    monkeypatch.setattr(StreamingScorer, "finish", spy)
    streamed = evaluate(harness_config(model, annotations, images, tmp_path / "a", input_size=TINY.input_size),
                        fresh=True, progress=False)
    assert len(scorers) == 1 and scorers[0].chunks >= 4 and scorers[0].detections == 12 * TINY.detections
    assert scorers[0].peak_pending_detections < 50 + TINY.detections
    at_once = evaluate(harness_config(model, annotations, images, tmp_path / "b", input_size=TINY.input_size,
                                      streaming=False), fresh=True, progress=False)
    assert len(scorers) == 1  # not used when off
    assert_same_scores(streamed.scores, at_once.scores)
    assert streamed.provenance["metrics_streaming"] is True
    assert at_once.provenance["metrics_streaming"] is False


# --------------------------------------------------------------------------- edge cases, as score_detections


def small_truth():
    return {
        "images": [{"id": 7, "width": 200, "height": 100}, {"id": 8, "width": 200, "height": 100}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [20.0, 10.0, 80.0, 40.0],
                         "area": 3200.0, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }


CAR = {"image_id": 7, "category_id": 3, "bbox": [20.0, 10.0, 80.0, 40.0], "score": 0.9}


def test_no_detections_give_the_same_zeros_and_warning_as_scoring_at_once():
    streamed = score_detections(small_truth(), [], [7, 8], streaming=True)
    assert_same_scores(streamed, score_detections(small_truth(), [], [7, 8]))
    assert streamed.warnings and "no detections" in streamed.warnings[0]


def test_no_ground_truth_gives_minus_one_with_a_warning_as_scoring_at_once():
    gt = small_truth()
    gt["annotations"] = []
    streamed = score_detections(gt, [CAR], [7, 8], streaming=True)
    assert streamed.stats[0] == -1.0
    assert streamed.warnings and "no ground truth" in streamed.warnings[0]
    assert_same_scores(streamed, score_detections(gt, [CAR], [7, 8]))


@pytest.mark.parametrize("streamed", [True, False], ids=["streaming", "at-once"])
@pytest.mark.parametrize("backend", STREAMING_BACKENDS)
def test_neither_detections_nor_ground_truth_are_written_to(backend, streamed):
    """hotcoco gets the caller's dicts uncopied (it only reads them); pycocotools gets copies."""
    pytest.importorskip(BACKENDS[backend].module)
    gt, detections, image_ids = synthetic.synthetic_scoring_case(30, 10, seed=6)
    before, gt_before = copy.deepcopy(detections), copy.deepcopy(gt)
    score_detections(gt, detections, image_ids, backend=backend, streaming=streamed)
    assert detections == before and gt == gt_before


def test_an_image_whose_detections_are_split_is_refused():
    with pytest.raises(UserError, match="image 7 are not all together"):
        score_detections(small_truth(), [CAR, dict(CAR, image_id=8), CAR], [7, 8], streaming=True)


@pytest.mark.parametrize("detection, message", [
    (dict(CAR, image_id=9), "image id 9"),
    (dict(CAR, category_id=2), "category id 2"),
])
def test_unknown_images_and_categories_are_clear_errors(detection, message):
    with pytest.raises(UserError, match=message):
        score_detections(small_truth(), [detection], [7, 8], streaming=True)


def test_a_detection_given_under_another_image_is_refused():
    scorer = StreamingScorer(small_truth(), [7, 8])
    with pytest.raises(UserError, match="image 8 was given as one of image 7"):
        scorer.add(7, [dict(CAR, image_id=8)])


# --------------------------------------------------------------------------- the bootstrap's matches

def assert_same_matches(kept, matched):
    assert kept.image_ids == matched.image_ids
    assert np.array_equal(kept.iou_thresholds, matched.iou_thresholds)
    assert np.array_equal(kept.recall_thresholds, matched.recall_thresholds)
    assert [c.category_id for c in kept.categories] == [c.category_id for c in matched.categories]
    for ours, theirs in zip(kept.categories, matched.categories):
        for name in ("image_index", "true_positive", "ignored", "tie_run", "gt_count"):
            assert np.array_equal(getattr(ours, name), getattr(theirs, name)), (ours.category_id, name)


def streamed_matches(gt, detections, image_ids, **switches):
    scorer = StreamingScorer(gt, image_ids, keep_matches=True, chunk_detections=997, **switches)
    scorer.add_detections(detections)
    scorer.finish()
    return scorer.matches


@pytest.mark.parametrize("crowd_as_ground_truth, exclude", [(False, ()), (True, ()), (False, ("person", "car"))],
                         ids=["coco", "crowd-as-ground-truth", "categories-excluded"])
def test_matches_kept_while_streaming_equal_a_second_matching_pass(crowd_as_ground_truth, exclude):
    """What streaming scoring keeps for the bootstrap is uncertainty.evaluate_matches' answer, ties included
    (scores on a 1e-5 grid, 150 detections of one category on one image, chunks cutting across the set)."""
    from ssd_eval.scoring.bootstrap import bootstrap_intervals
    from ssd_eval.scoring.matches import evaluate_matches

    gt, detections, image_ids = large_case()
    switches = {"crowd_as_ground_truth": crowd_as_ground_truth, "exclude_categories": exclude}
    kept = streamed_matches(gt, detections, image_ids, **switches)
    matched = evaluate_matches(gt, detections, image_ids, **switches)
    assert_same_matches(kept, matched)
    assert bootstrap_intervals(kept, replicates=50, seed=3) == bootstrap_intervals(matched, replicates=50, seed=3)


def test_matches_kept_on_the_real_subset_equal_a_second_matching_pass(coco_subset):
    import json

    from ssd_eval.scoring.matches import evaluate_matches

    gt = json.loads((coco_subset / "annotations.json").read_text())
    detections = synthetic.noisy_detections(gt, seed=4)
    image_ids = sorted(i["id"] for i in gt["images"])
    assert_same_matches(streamed_matches(gt, detections, image_ids), evaluate_matches(gt, detections, image_ids))


def test_no_detections_keep_the_ground_truth_counts():
    from ssd_eval.scoring.matches import evaluate_matches

    gt, _, image_ids = large_case()
    assert_same_matches(streamed_matches(gt, [], image_ids), evaluate_matches(gt, [], image_ids))


def test_a_run_bootstraps_from_the_matches_its_scoring_kept(tmp_path, monkeypatch):
    """One matching pass: with streaming pycocotools the bootstrap reuses scoring's matches; the intervals
    equal those of a run that matches a second time (metrics.streaming: false)."""
    from ssd_eval.config.load import load_config
    from ssd_eval.engine.pipeline import evaluate

    def run(out, streaming):
        config = load_config(REPO / "configs" / "sample.yaml", [("output.dir", str(out), "test"),
                                                                ("metrics.streaming", streaming, "test")])
        return evaluate(config, progress=False)

    second_passes = []
    original = matches.evaluate_matches
    monkeypatch.setattr("ssd_eval.engine.finish.evaluate_matches",
                        lambda *a, **k: second_passes.append(1) or original(*a, **k))
    streamed = run(tmp_path / "streamed", True)
    assert second_passes == [] and streamed.provenance["bootstrap"]["matches_from_scoring"] is True
    at_once = run(tmp_path / "at-once", False)
    assert second_passes == [1] and at_once.provenance["bootstrap"]["matches_from_scoring"] is False
    assert streamed.intervals == at_once.intervals and streamed.intervals["mAP"]["replicates"] == 1000
