"""Tests for ssd_eval.inference.postprocess: box conversion, label -> category id, top-k per image."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ssd_eval.data.coco import COCO_CATEGORIES
from ssd_eval.errors import UserError
from ssd_eval.inference.postprocess import label_map, to_coco_results

from helpers import CATEGORIES

CATEGORY_IDS = [c["id"] for c in CATEGORIES]  # 1, 3, 11, 13, 18
CATS = label_map(CATEGORY_IDS)
# Their labels in the COCO-80 table (label k = the k-th published id; 12 is not one): person 1, car 3,
# fire hydrant 11, stop sign 12, dog 17.
PERSON, CAR, HYDRANT, STOP, DOG = 1, 3, 11, 12, 17


def results(boxes, labels, scores, *, width=640, height=480, categories=CATS, **kwargs):
    return to_coco_results(np.asarray(boxes, dtype=np.float32), np.asarray(labels),
                           np.asarray(scores, dtype=np.float32), image_id=42, width=width, height=height,
                           categories=categories, **kwargs)


# ---------------------------------------------------------------- label_map


def test_default_label_map_is_the_coco_80_table_whatever_the_file_lists():
    """Label k is the k-th of the 80 published COCO ids, read from data.COCO_CATEGORIES' own table;
    labels of categories the file does not list map to 0 (not scored)."""
    published = [cat_id for cat_id, _, _ in COCO_CATEGORIES]
    assert len(published) == 80
    assert label_map(published).tolist() == [0, *published]
    assert label_map(published + [12, 91]).tolist() == [0, *published]  # a 91-entry list shifts nothing
    assert label_map(published[::-1]).tolist() == [0, *published]
    assert CATS[[PERSON, CAR, HYDRANT, STOP, DOG]].tolist() == [1, 3, 11, 13, 18]
    assert np.count_nonzero(CATS) == 5 and len(CATS) == 81


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
    dets = results([[0.1, 0.1, 0.2, 0.2]], np.array([CAR], dtype=np.int64), [0.5])
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
    dets = results([[0, 0, 0.5, 0.5]] * 5, [PERSON, CAR, HYDRANT, STOP, DOG], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert [d["category_id"] for d in dets] == [1, 3, 11, 13, 18]


def test_detections_of_categories_the_file_does_not_list_are_dropped_after_the_cap():
    """As pycocotools leaves results outside its catIds unscored; the per-image cap counts them first,
    as it would in a results file written before scoring."""
    labels = [2, CAR, 4, PERSON]  # bicycle and motorcycle are not in the file
    dets = results([[0, 0, 0.5, 0.5]] * 4, labels, [0.9, 0.8, 0.7, 0.6], max_detections=3)
    assert [d["category_id"] for d in dets] == [3]


def test_explicit_label_map_is_used():
    dets = results([[0, 0, 0.5, 0.5]] * 2, [1, 2], [0.9, 0.8], categories=label_map(CATEGORY_IDS, [18, 11]))
    assert [d["category_id"] for d in dets] == [18, 11]


def test_naive_labels_as_category_ids_differ():
    labels = [CAR, STOP, DOG]
    dets = results([[0, 0, 0.5, 0.5]] * 3, labels, [0.9, 0.8, 0.7])
    correct = [d["category_id"] for d in dets]
    assert correct == [3, 13, 18]
    assert correct != labels  # the naive mistake would submit 3, 12, 17


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
    cats = label_map([cat_id for cat_id, _, _ in COCO_CATEGORIES])
    [det] = results([[0, 0, 1, 1]], [80], [0.9], categories=cats)
    assert det["category_id"] == 90



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
    dets = results([[0, 0, 1, 1]] * 4, [PERSON, CAR, HYDRANT, STOP], [0.1, 0.4, 0.3, 0.2], max_detections=2)
    assert [(d["category_id"], round(d["score"], 3)) for d in dets] == [(3, 0.4), (11, 0.3)]


def test_boxes_follow_their_scores_when_sorted():
    boxes = [[0.0, 0.0, 0.1, 0.1], [0.0, 0.0, 0.5, 0.5]]
    dets = results(boxes, [PERSON, CAR], [0.2, 0.9], width=100, height=100)
    assert dets[0]["category_id"] == 3
    assert dets[0]["bbox"] == pytest.approx([0, 0, 50, 50], rel=1e-6)
    assert dets[1]["bbox"] == pytest.approx([0, 0, 10, 10], rel=1e-6)


def test_score_threshold_keeps_scores_at_or_above():
    dets = results([[0, 0, 1, 1]] * 4, [1, 1, 1, 1], [0.05, 0.5, 0.3, 0.29], score_threshold=0.3)
    assert [round(d["score"], 3) for d in dets] == [0.5, 0.3]


def test_equal_scores_keep_model_order():
    dets = results([[0, 0, 1, 1]] * 3, [HYDRANT, PERSON, CAR], [0.5, 0.5, 0.5])
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
    dets = to_coco_results(np.asarray([[0, 0, 1, 1]] * 2, dtype=np.float32), np.asarray([3.0, 17.0], dtype=np.float32),
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


# ---------------------------------------------------------------- issue 22: label space, odd outputs, inverted boxes


def test_label_space_notes_count_the_scored_categories_and_name_the_extra_ones():
    from ssd_eval.inference.postprocess import label_space_notes

    person_only = [{"id": 1, "name": "person"}]
    notes = label_space_notes(label_map([1]), person_only, explicit=False)
    assert len(notes) == 1 and notes[0].startswith("scored 1 of 80 categories")
    coco_91 = [{"id": i, "name": n} for i, n, _ in COCO_CATEGORIES] + [{"id": 12, "name": "street sign"}]
    notes = label_space_notes(label_map([c["id"] for c in coco_91]), coco_91, explicit=False)
    assert len(notes) == 1 and "(street sign)" in notes[0] and "can never detect them" in notes[0]
    coco_80 = coco_91[:-1]
    assert label_space_notes(label_map([c["id"] for c in coco_80]), coco_80, explicit=False) == []
    explicit = label_space_notes(label_map([1, 3], [3]), [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
                                 explicit=True)
    assert explicit == [explicit[0]] and "(person)" in explicit[0] and "postprocess.label_map" in explicit[0]


def test_inverted_box_keeps_its_negative_size_when_asked():
    [det] = results([[0.5, 0.25, 0.25, 0.5]], [1], [0.5], width=100, height=100, clip_boxes=False,
                    keep_inverted_boxes=True)
    assert det["bbox"] == pytest.approx([50.0, 25.0, -25.0, 25.0])


@pytest.mark.parametrize("box_format, box", [("xyxy", [0.1, 0.2, 0.5, 0.6]), ("yxyx", [0.2, 0.1, 0.6, 0.5]),
                                             ("xywh", [0.1, 0.2, 0.4, 0.4])])
def test_box_format_and_scale_give_the_same_box(box_format, box):
    [det] = results([box], [1], [0.5], width=200, height=100, box_format=box_format)
    assert det["bbox"] == pytest.approx([20.0, 20.0, 80.0, 40.0])
    in_pixels = np.asarray(box) * 600
    [det] = results([in_pixels], [1], [0.5], width=200, height=100, box_format=box_format, box_scale=[600, 600])
    assert det["bbox"] == pytest.approx([20.0, 20.0, 80.0, 40.0])


def odd_outputs(kind: str, rows: int = 10, odd: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and scores of which ``odd`` rows of ``rows`` look like pixels, inverted boxes or logits."""
    boxes = np.tile([0.1, 0.2, 0.5, 0.6], (rows, 1))
    scores = np.full(rows, 0.5)
    if kind == "pixels":
        boxes[:odd] *= 1200
    elif kind == "inverted":
        boxes[:odd] = boxes[:odd][:, [2, 1, 0, 3]]  # x_max first
    elif kind == "logits":
        scores[:odd] = -2.0
    return boxes, scores


@pytest.mark.parametrize("kind, key", [("pixels", "postprocess.box_scale"), ("inverted", "postprocess.box_format"),
                                       ("logits", "postprocess.score_threshold")])
def test_output_warnings_name_the_likely_cause_and_the_key_that_fixes_it(kind, key):
    from ssd_eval.inference.postprocess import add_counts, output_counts, output_warnings

    counts = output_counts(*odd_outputs(kind))
    [warning] = output_warnings(counts)
    assert key in warning and "60%" in warning
    assert output_warnings(output_counts(*odd_outputs(kind, odd=5))) == []  # half is not "most"
    assert output_warnings(output_counts(*odd_outputs("none"))) == []
    assert output_warnings(None) == [] and output_warnings(output_counts(np.zeros((0, 4)), np.zeros(0))) == []
    twice = add_counts(counts, output_counts(*odd_outputs("none")))
    assert twice["boxes"] == 20 and output_warnings(twice) == []  # counted over the whole run


def test_output_counts_follow_box_format_and_scale():
    from ssd_eval.inference.postprocess import output_counts, output_warnings

    boxes, scores = odd_outputs("pixels", odd=10)
    assert output_warnings(output_counts(boxes, scores, box_scale=[1200, 1200])) == []
    xywh = np.tile([0.5, 0.5, 0.1, 0.1], (4, 1))  # read as xyxy, every box is inverted
    assert output_counts(xywh, np.ones(4))["inverted_boxes"] == 4
    assert output_counts(xywh, np.ones(4), box_format="xywh")["inverted_boxes"] == 0


def test_strict_output_checks_are_one_line_errors():
    from ssd_eval.inference.postprocess import checked_outputs, output_counts

    counts = output_counts(*odd_outputs("logits"))
    assert len(checked_outputs(counts, 0.0, strict=False)) == 1
    with pytest.raises(UserError) as info:
        checked_outputs(counts, 0.0, strict=True)
    assert str(info.value).startswith("--strict: model outputs: 60% of scores are below 0")
    assert "\n" not in str(info.value)


def test_label_space_notes_say_exactly_what_is_scored_and_what_cannot_be_detected():
    """The full sentences users read: counts, the source named, ids where a category has no name, and at
    most 8 names before 'and N more' (the tests above check fragments; these pin every number)."""
    from ssd_eval.inference.postprocess import label_space_notes

    file_categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    assert label_space_notes(label_map([1, 3]), file_categories, explicit=False) == [
        "scored 2 of 80 categories: the annotation file lists only these of the COCO-80 label table; "
        "detections of the other 78 are not scored"]
    extra = [{"id": 100 + i, "name": f"thing{i}"} for i in range(9)] + [{"id": 200}]
    notes = label_space_notes(label_map([1, 3], [1, 3]), file_categories + extra, explicit=True)
    assert notes == [
        "10 categories of the annotation file are outside postprocess.label_map (thing0, thing1, thing2, thing3, "
        "thing4, thing5, thing6, thing7 and 2 more): the model can never detect them; where they have ground "
        "truth they count in the mean with AP 0 (metrics.exclude_categories leaves them out)"]
    eight = label_space_notes(label_map([1, 3], [1, 3]), file_categories + extra[:7] + [{"id": 200}],
                              explicit=True)
    assert "(thing0, thing1, thing2, thing3, thing4, thing5, thing6, 200):" in eight[0]


def test_summed_output_counts_keep_one_key_order_in_every_process():
    """metrics.json must be the same bytes run after run: summing counts over a run keeps output_counts' key order,
    whatever the process's string-hash seed (a set of keys would reorder them from run to run)."""
    code = ("from ssd_eval.inference.postprocess import add_counts, output_counts\n"
            "import numpy as np\n"
            "one = output_counts(np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([0.9]))\n"
            "print(list(add_counts(one, dict(one))))")
    orders = {subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert orders == {"['boxes', 'coordinates_above_1.05', 'inverted_boxes', 'negative_scores']\n"}
