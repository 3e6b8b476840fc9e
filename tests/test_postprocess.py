"""Tests for ssd_eval.postprocess: box conversion, label -> category id, top-k per image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssd_eval.errors import UserError
from ssd_eval.postprocess import label_map, to_coco_results

from helpers import CATEGORIES

CATEGORY_IDS = [c["id"] for c in CATEGORIES]  # 1, 3, 11, 13, 18
CATS = label_map(CATEGORY_IDS)


def results(boxes, labels, scores, *, width=640, height=480, categories=CATS, **kwargs):
    return to_coco_results(np.asarray(boxes, dtype=np.float32), np.asarray(labels),
                           np.asarray(scores, dtype=np.float32), image_id=42, width=width, height=height,
                           categories=categories, **kwargs)


# ---------------------------------------------------------------- label_map


def test_label_map_sorted_ids_with_gaps():
    assert CATS.tolist() == [0, 1, 3, 11, 13, 18]
    assert CATS[4] == 13


def test_label_map_sorts_unsorted_input():
    assert label_map([18, 1, 13, 3, 11]).tolist() == [0, 1, 3, 11, 13, 18]


def test_explicit_label_map_keeps_its_order():
    assert label_map(CATEGORY_IDS, [18, 1, 13]).tolist() == [0, 18, 1, 13]


def test_explicit_label_map_with_unknown_id():
    with pytest.raises(UserError, match="category id 12"):
        label_map(CATEGORY_IDS, [1, 12])


# ---------------------------------------------------------------- boxes


def test_normalized_xyxy_to_pixel_xywh_in_original_size():
    [det] = results([[0.1, 0.25, 0.5, 0.75]], [1], [0.9], width=640, height=480)
    assert det["image_id"] == 42
    assert det["bbox"] == pytest.approx([64.0, 120.0, 256.0, 240.0], rel=1e-6)
    assert det["score"] == pytest.approx(0.9, rel=1e-6)
    assert det["category_id"] == 1


def test_non_square_image_uses_width_for_x_and_height_for_y():
    [det] = results([[0.0, 0.0, 1.0, 1.0]], [1], [0.5], width=300, height=100)
    assert det["bbox"] == pytest.approx([0.0, 0.0, 300.0, 100.0])


def test_boxes_are_clipped_to_the_image():
    [det] = results([[-0.1, -0.2, 1.3, 0.5]], [1], [0.5], width=640, height=480)
    assert det["bbox"] == pytest.approx([0.0, 0.0, 640.0, 240.0], rel=1e-6)


def test_inverted_box_gets_zero_size():
    [det] = results([[0.5, 0.5, 0.25, 0.25]], [1], [0.5], width=100, height=100)
    assert det["bbox"] == pytest.approx([50.0, 50.0, 0.0, 0.0])


def test_results_are_plain_json_types():
    dets = results([[0.1, 0.1, 0.2, 0.2]], np.array([2], dtype=np.int64), [0.5])
    det = dets[0]
    assert type(det["image_id"]) is int
    assert type(det["category_id"]) is int
    assert type(det["score"]) is float
    assert all(type(v) is float for v in det["bbox"])
    assert json.loads(json.dumps(dets)) == dets


def test_empty_detections():
    assert results(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0)) == []


# ---------------------------------------------------------------- labels


def test_label_with_gap_maps_to_real_category_id():
    dets = results([[0, 0, 0.5, 0.5]] * 5, [1, 2, 3, 4, 5], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert [d["category_id"] for d in dets] == [1, 3, 11, 13, 18]


def test_explicit_label_map_is_used():
    dets = results([[0, 0, 0.5, 0.5]] * 2, [1, 2], [0.9, 0.8], categories=label_map(CATEGORY_IDS, [18, 11]))
    assert [d["category_id"] for d in dets] == [18, 11]


def test_naive_labels_as_category_ids_differ():
    labels = [2, 4, 5]
    dets = results([[0, 0, 0.5, 0.5]] * 3, labels, [0.9, 0.8, 0.7])
    correct = [d["category_id"] for d in dets]
    assert correct == [3, 13, 18]
    assert correct != labels  # the naive mistake would submit 2, 4, 5


def test_label_zero_is_user_error_naming_image():
    with pytest.raises(UserError) as info:
        results([[0, 0, 1, 1]], [0], [0.9])
    assert "image 42" in str(info.value)
    assert "label 0" in str(info.value)


def test_label_81_with_80_categories_is_user_error():
    cats = label_map(list(range(1, 81)))
    with pytest.raises(UserError) as info:
        results([[0, 0, 1, 1], [0, 0, 1, 1]], [80, 81], [0.9, 0.8], categories=cats)
    assert "image 42" in str(info.value)
    assert "label 81" in str(info.value)
    assert "1..80" in str(info.value)


def test_label_80_with_80_categories_is_fine():
    cats = label_map(list(range(1, 81)))
    [det] = results([[0, 0, 1, 1]], [80], [0.9], categories=cats)
    assert det["category_id"] == 80



# ---------------------------------------------------------------- top-k and threshold


def test_top_100_cap_keeps_highest_scores_descending():
    rng = np.random.default_rng(3)
    scores = rng.permutation(150).astype(np.float32) / 150
    boxes = np.tile([0.1, 0.1, 0.2, 0.2], (150, 1))
    labels = np.ones(150, dtype=np.int64)
    dets = results(boxes, labels, scores)
    got = [d["score"] for d in dets]
    assert len(got) == 100
    assert got == sorted(got, reverse=True)
    np.testing.assert_allclose(got, np.sort(scores)[::-1][:100], rtol=1e-6)
    assert min(got) == pytest.approx(50 / 150, rel=1e-6)


def test_max_detections_parameter():
    dets = results([[0, 0, 1, 1]] * 4, [1, 2, 3, 4], [0.1, 0.4, 0.3, 0.2], max_detections=2)
    assert [(d["category_id"], round(d["score"], 3)) for d in dets] == [(3, 0.4), (11, 0.3)]


def test_boxes_follow_their_scores_when_sorted():
    boxes = [[0.0, 0.0, 0.1, 0.1], [0.0, 0.0, 0.5, 0.5]]
    dets = results(boxes, [1, 2], [0.2, 0.9], width=100, height=100)
    assert dets[0]["category_id"] == 3
    assert dets[0]["bbox"] == pytest.approx([0, 0, 50, 50], rel=1e-6)
    assert dets[1]["bbox"] == pytest.approx([0, 0, 10, 10], rel=1e-6)


def test_score_threshold_keeps_scores_at_or_above():
    dets = results([[0, 0, 1, 1]] * 4, [1, 1, 1, 1], [0.05, 0.5, 0.3, 0.29], score_threshold=0.3)
    assert [round(d["score"], 3) for d in dets] == [0.5, 0.3]


def test_equal_scores_keep_model_order():
    dets = results([[0, 0, 1, 1]] * 3, [3, 1, 2], [0.5, 0.5, 0.5])
    assert [d["category_id"] for d in dets] == [11, 1, 3]


def test_label_map_with_a_duplicate_id_is_an_error():
    with pytest.raises(UserError, match="category id 3 twice"):
        label_map([1, 3, 11], [1, 3, 3])


# ---------------------------------------------------------------- found by mutation testing (docs/TESTING.md)


def test_score_exactly_at_the_threshold_is_kept():
    # 0.25 and 0.5 are exact in float32, so the boundary is tested exactly (a float32 0.3 is above 0.3).
    dets = results([[0, 0, 1, 1]] * 3, [1, 1, 1], [0.5, 0.25, 0.2499], score_threshold=0.25)
    assert [d["score"] for d in dets] == [0.5, 0.25]


def test_threshold_compares_the_float32_score_exactly():
    # float32(0.7) is 0.69999998807...: below a 0.7 threshold, though equal to it once 0.7 is rounded to float32.
    dets = results([[0, 0, 1, 1]] * 2, [1, 1], [0.7, 0.75], score_threshold=0.7)
    assert [d["score"] for d in dets] == [0.75]


def test_ties_keep_model_order_in_a_long_list():
    # numpy's default sort reorders equal keys in arrays past 16 items; the top-k cut must not depend on it.
    n = 200
    scores = (np.random.default_rng(0).integers(0, 5, n) / 4.0).astype(np.float32)  # five levels, ~40 ties each
    boxes = [[i / 1000, 0.0, 0.5, 1.0] for i in range(n)]  # x_min tells the detections apart
    dets = results(boxes, np.ones(n, dtype=np.int64), scores, width=1000, max_detections=100)
    expected = sorted(range(n), key=lambda i: -scores[i])[:100]  # Python's sort is stable
    assert [round(d["bbox"][0]) for d in dets] == expected


def test_float_labels_are_read_as_integers():
    dets = to_coco_results(np.asarray([[0, 0, 1, 1]] * 2, dtype=np.float32), np.asarray([2.0, 5.0], dtype=np.float32),
                           np.asarray([0.9, 0.8], dtype=np.float32), image_id=1, width=10, height=10, categories=CATS)
    assert [d["category_id"] for d in dets] == [3, 18]


@pytest.mark.parametrize("bad, what", [("boxes", "boxes"), ("scores", "scores")])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_boxes_or_scores_alone_are_refused_by_name(bad, what, value):
    boxes = np.asarray([[0, 0, 1, 1]] * 2, dtype=np.float32)
    scores = np.asarray([0.9, 0.8], dtype=np.float32)
    (boxes if bad == "boxes" else scores)[1] = value
    with pytest.raises(UserError) as info:
        results(boxes, [1, 2], scores)
    assert f"image 42: the model produced non-finite {what} (NaN or Inf)" in str(info.value)
