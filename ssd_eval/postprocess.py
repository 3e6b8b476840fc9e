"""Raw model output -> COCO results: pixel xywh, real category ids, optional clipping and top-k per image."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ssd_eval.errors import UserError


def label_map(category_ids: Sequence[int], explicit: Sequence[int] | None = None) -> np.ndarray:
    """Lookup table from contiguous label k (1..K) to COCO category id; index 0 is unused.

    Default: label k is the k-th smallest category id of the annotation file.
    """
    ids = list(explicit) if explicit is not None else sorted(category_ids)
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"postprocess.label_map names category id {duplicate} twice; each label needs its own id")
    if explicit is not None:
        unknown = sorted(set(ids) - set(category_ids))
        if unknown:
            raise UserError(f"postprocess.label_map names category id {unknown[0]}, "
                            "which is not in the annotation file's categories")
    return np.asarray([0] + ids, dtype=np.int64)


def to_coco_results(
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    image_id: int,
    width: int,
    height: int,
    categories: np.ndarray,
    max_detections: int | str | None = 100,
    score_threshold: float = 0.0,
    clip_boxes: bool = True,
) -> list[dict]:
    """One image's detections as COCO result dicts, best score first.

    ``boxes`` are normalized [x_min, y_min, x_max, y_max], scaled to the image's original
    pixel size as [x, y, width, height] (clipped to the image first with ``clip_boxes``).
    ``max_detections`` keeps the best N; ``"all"`` or None keeps every output.
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
    selected = boxes[order]
    if clip_boxes:
        selected = np.clip(selected, 0.0, 1.0)
    pixel = selected * np.array([width, height, width, height], dtype=np.float64)
    x, y = pixel[:, 0], pixel[:, 1]
    w = np.maximum(pixel[:, 2] - x, 0.0)
    h = np.maximum(pixel[:, 3] - y, 0.0)
    category = categories[labels[order]]
    score = scores[order]
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category[i]),
            "bbox": [float(x[i]), float(y[i]), float(w[i]), float(h[i])],
            "score": float(score[i]),
        }
        for i in range(len(order))
    ]
