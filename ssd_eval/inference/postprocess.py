"""Raw model output -> COCO results: pixel xywh, real category ids, optional clipping and top-k per image."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Sequence

import numpy as np

from ssd_eval.data.coco import COCO_CATEGORIES
from ssd_eval.errors import UserError

log = logging.getLogger(__name__)


COCO_80_IDS: tuple[int, ...] = tuple(sorted(cat_id for cat_id, _, _ in COCO_CATEGORIES))
"""The 80 published COCO detection category ids: contiguous label k is the k-th of them."""

NOT_SCORED = 0
"""A label map entry for a label whose category the annotation file does not list: not scored."""


def label_map(category_ids: Sequence[int], explicit: Sequence[int] | None = None) -> np.ndarray:
    """Lookup table from contiguous label k (1..K; index 0 unused) to COCO category id: the k-th of ``explicit``
    (``postprocess.label_map``, each a category of the file), or by default of ``COCO_80_IDS``, ``NOT_SCORED``
    where the file does not list it (as pycocotools leaves results outside its ``catIds`` unscored)."""
    if explicit is None:
        listed = set(category_ids)
        return np.asarray([0] + [c if c in listed else NOT_SCORED for c in COCO_80_IDS], dtype=np.int64)
    ids = list(explicit)
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise UserError(f"postprocess.label_map names category id {duplicate} twice; each label needs its own id")
    unknown = sorted(set(ids) - set(category_ids))
    if unknown:
        raise UserError(f"postprocess.label_map names category id {unknown[0]}, "
                        "which is not in the annotation file's categories")
    return np.asarray([0] + ids, dtype=np.int64)


def label_space_notes(categories: np.ndarray, file_categories: Sequence[dict], *, explicit: bool) -> list[str]:
    """The summary's notes on the label map ``categories`` against the annotation file's ``categories``: how many
    of the model's categories are scored when the file lists only some, and which file categories no label maps to."""
    labels = len(categories) - 1
    scored = int(np.count_nonzero(categories[1:] != NOT_SCORED))
    source = "postprocess.label_map" if explicit else "the COCO-80 label table"
    notes = []
    if scored < labels:
        notes.append(f"scored {scored} of {labels} categories: the annotation file lists only these of "
                     f"{source}; detections of the other {labels - scored} are not scored")
    mapped = set(int(c) for c in categories[1:])
    extra = [str(c.get("name", c["id"])) for c in sorted(file_categories, key=lambda c: c["id"])
             if int(c["id"]) not in mapped]
    if extra:
        shown = ", ".join(extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
        notes.append(f"{len(extra)} categories of the annotation file are outside {source} ({shown}): "
                     "the model can never detect them; where they have ground truth they count in the mean "
                     "with AP 0 (metrics.exclude_categories leaves them out)")
    return notes


BOX_FORMATS = ("xyxy", "yxyx", "xywh")
"""The orders of a model's 4 box values ``postprocess.box_format`` can name (the zoo's: xyxy)."""


def normalized_xyxy(boxes: np.ndarray, box_format: str = "xyxy",
                    box_scale: Sequence[float] | None = None) -> np.ndarray:
    """A model's boxes (N, 4) in ``box_format`` order, relative to ``box_scale`` ([width, height]; None: already
    normalized), as normalized [x_min, y_min, x_max, y_max] (float64)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_format == "yxyx":
        boxes = boxes[:, [1, 0, 3, 2]]
    elif box_format == "xywh":
        boxes = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    elif box_format != "xyxy":
        raise ValueError(f"unknown box format {box_format!r}")
    if box_scale is not None:
        boxes = boxes / np.array([box_scale[0], box_scale[1], box_scale[0], box_scale[1]], dtype=np.float64)
    return boxes


def to_coco_results(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, *, image_id: int, width: int,
                    height: int, categories: np.ndarray, max_detections: int | str | None = 100,
                    score_threshold: float = 0.0, clip_boxes: bool = True, keep_inverted_boxes: bool = False,
                    box_format: str = "xyxy", box_scale: Sequence[float] | None = None) -> list[dict]:
    """One image's detections as COCO result dicts, best score first.

    Boxes (see ``normalized_xyxy``) become [x, y, width, height] in the image's pixels, clipped to the image first
    with ``clip_boxes``. An inverted box gets width or height 0, or with ``keep_inverted_boxes`` the negative one
    (as INC and the MLPerf export hand it to pycocotools). ``max_detections`` keeps the best N ("all" or None:
    every output); detections of labels ``categories`` maps to ``NOT_SCORED`` are dropped after that cap.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    bad = (labels < 1) | (labels >= len(categories))
    if bad.any():
        raise UserError(f"image {image_id}: the model produced label {int(labels[bad][0])}, outside "
                        f"1..{len(categories) - 1} (contiguous labels; see postprocess.label_map)")
    # NaN boxes would match every ground truth in pycocotools (a NaN IoU never fails `iou < t`).
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        what = "boxes" if not np.isfinite(boxes).all() else "scores"
        raise UserError(f"image {image_id}: the model produced non-finite {what} (NaN or Inf); "
                        "no mAP can be computed from them")
    keep = np.flatnonzero(scores >= score_threshold)
    order = keep[np.argsort(-scores[keep], kind="stable")]
    if isinstance(max_detections, int):
        order = order[:max_detections]
    order = order[categories[labels[order]] != NOT_SCORED]
    selected = normalized_xyxy(boxes[order], box_format, box_scale)
    if clip_boxes:
        selected = np.clip(selected, 0.0, 1.0)
    pixel = selected * np.array([width, height, width, height], dtype=np.float64)
    pixel[:, 2:] -= pixel[:, :2]  # x_max, y_max -> width, height
    if not keep_inverted_boxes:
        pixel[:, 2:] = np.maximum(pixel[:, 2:], 0.0)
    columns = zip(categories[labels[order]].tolist(), pixel.tolist(), scores[order].tolist())
    return [{"image_id": int(image_id), "category_id": category, "bbox": bbox, "score": score}
            for category, bbox, score in columns]


MOST = 0.5
"""Output checks warn when more than this share of a run's boxes, coordinates or scores look wrong."""


def output_counts(boxes: np.ndarray, scores: np.ndarray, box_format: str = "xyxy",
                  box_scale: Sequence[float] | None = None) -> dict[str, int]:
    """What ``output_warnings`` checks in one image's raw outputs (every row, before any threshold): boxes,
    box coordinates above 1.05 (after ``box_format`` / ``box_scale``), inverted boxes and negative scores."""
    xyxy = normalized_xyxy(boxes, box_format, box_scale)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    return {
        "boxes": int(len(xyxy)),
        "coordinates_above_1.05": int(np.count_nonzero(xyxy > 1.05)),
        "inverted_boxes": int(np.count_nonzero((xyxy[:, 2] < xyxy[:, 0]) | (xyxy[:, 3] < xyxy[:, 1]))),
        "negative_scores": int(np.count_nonzero(scores < 0)),
    }


def add_counts(total: dict[str, int] | None, counts: dict[str, int] | None) -> dict[str, int] | None:
    """Two ``output_counts`` added key by key (None counts as nothing)."""
    if total is None and counts is None:
        return None
    summed = Counter(total or {})
    summed.update(counts or {})
    return dict(summed)


def output_warnings(counts: dict[str, int] | None, score_threshold: float = 0.0) -> list[str]:
    """Warnings about model outputs that are almost certainly read wrongly: most box coordinates above 1.05
    (pixels), most boxes inverted (another box order), most scores below 0 (logits), each naming the fix."""
    boxes = int((counts or {}).get("boxes", 0))
    if not boxes:
        return []
    share = {key: int(counts.get(key, 0)) / (4 * boxes if key.startswith("coordinates") else boxes)
             for key in ("coordinates_above_1.05", "inverted_boxes", "negative_scores")}
    warnings = []
    if share["coordinates_above_1.05"] > MOST:
        warnings.append(f"model outputs: {share['coordinates_above_1.05']:.0%} of box coordinates are above 1.05: "
                        "the boxes are likely in pixels, not normalized to [0, 1]; set postprocess.box_scale to the "
                        "[width, height] they are relative to (e.g. the model input's, [1200, 1200])")
    if share["inverted_boxes"] > MOST:
        warnings.append(f"model outputs: {share['inverted_boxes']:.0%} of boxes have x_max < x_min or y_max < y_min: "
                        "the box values are likely in another order than [x_min, y_min, x_max, y_max]; "
                        f"set postprocess.box_format (one of {', '.join(BOX_FORMATS)})")
    if share["negative_scores"] > MOST:
        warnings.append(f"model outputs: {share['negative_scores']:.0%} of scores are below 0: the scores are likely "
                        f"logits, not probabilities, and postprocess.score_threshold {score_threshold:g} drops "
                        "those below it; set postprocess.score_threshold below the lowest logit (e.g. -1.0e+9: COCO AP "
                        "depends only on the ranking)")
    return warnings


def checked_outputs(counts: dict[str, int] | None, score_threshold: float, *, strict: bool) -> list[str]:
    """``output_warnings`` of a run's summed output counts, logged, or with ``strict`` a UserError."""
    warnings = output_warnings(counts, score_threshold)
    if strict and warnings:
        more = f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""
        raise UserError(f"--strict: {warnings[0]}{more}")
    for warning in warnings:
        log.warning(warning)
    return warnings
