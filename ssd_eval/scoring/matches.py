"""The per-detection match table that streaming keeps and the bootstrap reweights."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ssd_eval.scoring.cocoeval import BACKENDS, averaged_category_ids, checked_copies, prepare_ground_truth

MAX_DETECTIONS = 100  # pycocotools' maxDets[-1], the one mAP/AP50/AP75 use


@dataclass(frozen=True)
class CategoryMatches:
    """One category's area-all, maxDets-100 detections in pycocotools' accumulate order, with their matches."""

    category_id: int
    image_index: np.ndarray  # int64 [N]: index into Matches.image_ids of each detection's image
    true_positive: np.ndarray  # bool [T, N]: matched to a non-ignored box at IoU threshold t
    ignored: np.ndarray  # bool [T, N]: pycocotools' dtIgnore (matched to a crowd/ignored box)
    tie_run: np.ndarray  # int64 [N]: id of the run of same-image, same-score detections (-1: alone)
    gt_count: np.ndarray  # int64 [I]: non-ignored ground-truth boxes of this category per image


@dataclass(frozen=True)
class Matches:
    """Every detection's match at each IoU threshold, evaluated once (what a bootstrap reweights)."""

    image_ids: list[int]  # ascending, unique: the resampling units
    categories: list[CategoryMatches]  # the averaged categories, ascending id
    iou_thresholds: np.ndarray  # [T]
    recall_thresholds: np.ndarray  # [R]


def evaluate_matches(
    gt: dict[str, Any],
    detections: Iterable[dict],
    image_ids: Sequence[int],
    *,
    crowd_as_ground_truth: bool = False,
    exclude_categories: Sequence[str] = (),
    source: str = "detections",
) -> Matches:
    """Match ``detections`` to ground truth once with pycocotools, under the harness's scoring conventions."""
    from pycocotools.cocoeval import Params

    prepared = prepare_ground_truth(gt, crowd_as_ground_truth=crowd_as_ground_truth)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in prepared["categories"]}
    category_ids = averaged_category_ids(names, exclude_categories)
    ids = sorted({int(i) for i in image_ids})  # pycocotools evaluates np.unique(imgIds)
    results = checked_copies(detections, ids, sorted(names), source)
    params = Params(iouType="bbox")
    if list(params.maxDets)[-1] != MAX_DETECTIONS or params.areaRngLbl[0] != "all":
        raise RuntimeError("unexpected pycocotools defaults: maxDets[-1] must be 100 and areaRng[0] 'all'")
    iou_thresholds = np.asarray(params.iouThrs, dtype=float)
    recall_thresholds = np.asarray(params.recThrs, dtype=float)
    if not results:  # pycocotools' loadRes cannot take an empty list: no detection, only ground truth
        return Matches(ids, [_empty_category(c, _gt_counts(prepared, ids, c), len(iou_thresholds))
                             for c in category_ids], iou_thresholds, recall_thresholds)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = BACKENDS["pycocotools"].make_evaluator(prepared, results)
        evaluator.params.imgIds = ids
        evaluator.params.catIds = category_ids
        evaluator.evaluate()
    p = evaluator.params
    if list(p.imgIds) != ids or list(p.catIds) != category_ids:
        raise RuntimeError("pycocotools reordered the image or category ids")
    n_images, n_areas = len(ids), len(p.areaRng)
    categories = []
    for k, category_id in enumerate(category_ids):
        start = k * n_areas * n_images  # evalImgs: category, then area range (0 = all), then image
        categories.append(_category_matches(category_id, evaluator.evalImgs[start:start + n_images],
                                            len(iou_thresholds)))
    return Matches(ids, categories, iou_thresholds, recall_thresholds)


def _gt_counts(prepared: dict[str, Any], ids: list[int], category_id: int) -> np.ndarray:
    """Non-ignored ground truth per image for area 'all', as pycocotools counts it (no crowd, 0 <= area <= 1e10)."""
    position = {image_id: i for i, image_id in enumerate(ids)}
    counts = np.zeros(len(ids), dtype=np.int64)
    for ann in prepared["annotations"]:
        i = position.get(ann["image_id"])
        if i is not None and ann["category_id"] == category_id and not ann["iscrowd"] \
                and 0 <= ann["area"] <= 1e5 ** 2:
            counts[i] += 1
    return counts


def _empty_category(category_id: int, gt_count: np.ndarray, thresholds: int) -> CategoryMatches:
    empty = np.zeros((thresholds, 0), dtype=bool)
    return CategoryMatches(category_id, np.zeros(0, dtype=np.int64), empty, empty.copy(),
                           np.zeros(0, dtype=np.int64), gt_count)


def _category_matches(category_id: int, entries: list, thresholds: int) -> CategoryMatches:
    """The accumulate-ordered detections of one category from its per-image evalImgs (area all)."""
    gt_count = np.zeros(len(entries), dtype=np.int64)
    scores, images, matched, ignored = [], [], [], []
    for i, entry in enumerate(entries):
        if entry is None:
            continue
        gt_count[i] = np.count_nonzero(np.asarray(entry["gtIgnore"]) == 0)
        count = len(entry["dtScores"][:MAX_DETECTIONS])
        if count:
            scores.append(np.asarray(entry["dtScores"][:MAX_DETECTIONS], dtype=float))
            images.append(np.full(count, i, dtype=np.int64))
            matched.append(np.asarray(entry["dtMatches"])[:, :MAX_DETECTIONS])
            ignored.append(np.asarray(entry["dtIgnore"])[:, :MAX_DETECTIONS])
    if not scores:
        return _empty_category(category_id, gt_count, thresholds)
    dt_ignore = np.concatenate(ignored, axis=1).astype(bool)
    true_positive = np.logical_and(np.concatenate(matched, axis=1), ~dt_ignore)
    return category_matches(category_id, np.concatenate(scores), np.concatenate(images), true_positive, dt_ignore,
                            gt_count)


def category_matches(category_id: int, scores: np.ndarray, image_index: np.ndarray, true_positive: np.ndarray,
                     ignored: np.ndarray, gt_count: np.ndarray) -> CategoryMatches:
    """One category's ``CategoryMatches`` from its area-all, maxDets-100 detections in the order
    ``COCOeval.accumulate`` concatenates them (images ascending, each in evaluateImg's order): their
    scores, image indices, true-positive and ignore flags [T, N], and each image's non-ignored ground truth."""
    if scores.size == 0:
        return _empty_category(category_id, gt_count, true_positive.shape[0])
    order = np.argsort(-scores, kind="mergesort")  # exactly accumulate's order
    score = scores[order]
    image_index = image_index[order].astype(np.int64)
    dt_ignore = ignored[:, order].astype(bool)
    true_positive = true_positive[:, order].astype(bool)
    # Runs of the same image with the same score are consecutive after the stable sort.
    new_run = np.ones(score.size, dtype=bool)
    new_run[1:] = (image_index[1:] != image_index[:-1]) | (score[1:] != score[:-1])
    run_id = np.cumsum(new_run) - 1
    run_length = np.bincount(run_id)
    tie_run = np.where(run_length[run_id] > 1, run_id, -1)
    # Detections after the last true positive (at every threshold) cannot change any precision; a tie run
    # is kept whole, since in the duplicated file its trailing false positives precede the next copy's hits.
    hits = np.flatnonzero(true_positive.any(axis=0))
    keep = int(np.flatnonzero(run_id == run_id[hits[-1]])[-1]) + 1 if hits.size else 0
    image_index, true_positive, dt_ignore = image_index[:keep], true_positive[:, :keep], dt_ignore[:, :keep]
    tie_run = tie_run[:keep]
    return CategoryMatches(category_id, image_index, true_positive, dt_ignore, tie_run.astype(np.int64),
                           np.asarray(gt_count, dtype=np.int64))
