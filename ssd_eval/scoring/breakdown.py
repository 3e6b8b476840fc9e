"""Where a model loses AP: a TIDE-style error breakdown (Bolya et al., ECCV 2020) by hotcoco's
``COCOeval.tide_errors``, on the run's own ground truth, images, categories and crowd handling.

Every false positive at IoU 0.5 is put in one class: classification (IoU >= 0.5 with a box of another
category), localization (0.1 <= IoU < 0.5 with a box of its own category), both (0.1 <= IoU < 0.5 with a box
of another category), duplicate (IoU >= 0.5 with a box of its own category already matched by a higher score)
or background (IoU < 0.1 with every box); a ground-truth box no detection covers, not even through a
classification or localization error, is missed. ``dAP`` of a class: how much AP50 would rise if only those
errors were fixed, as TIDE fixes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from ssd_eval import extras
from ssd_eval.scoring.cocoeval import BACKENDS, checked_copies, prepare_scoring
from ssd_eval.utils import package_version

ERROR_TYPES: tuple[tuple[str, str], ...] = (
    # (name in metrics.json, hotcoco's key)
    ("classification", "Cls"),
    ("localization", "Loc"),
    ("both", "Both"),
    ("duplicate", "Dupe"),
    ("background", "Bkg"),
    ("missed", "Miss"),
)
"""The six TIDE error types, in TIDE's order."""

ORACLES: tuple[tuple[str, str], ...] = (
    ("all_false_positives", "FP"),  # every false positive removed: perfect precision, same recall
    ("all_false_negatives", "FN"),  # every missed box left out of the count: perfect recall
)

POS_IOU = 0.5
BACKGROUND_IOU = 0.1


def compute_breakdown(gt: dict[str, Any], detections: Iterable[dict] | str | Path, image_ids: Sequence[int], *,
                      crowd_as_ground_truth: bool = False, exclude_categories: Sequence[str] = (),
                      source: str = "detections") -> dict[str, Any]:
    """The TIDE breakdown of ``detections`` over ``image_ids`` (the metrics.json ``error_breakdown``):
    COCO results, checked like the scores', or the path of a detections.json the run wrote, which hotcoco
    reads itself (faster, and half the memory of a Python list)."""
    prepared, names, category_ids = prepare_scoring(gt, crowd_as_ground_truth=crowd_as_ground_truth,
                                                    exclude_categories=exclude_categories)
    is_path = isinstance(detections, (str, Path))
    results = str(detections) if is_path else checked_copies(detections, image_ids, sorted(names), source)
    evaluator = BACKENDS["hotcoco"].make_evaluator(prepared, results)  # a path: hotcoco reads the file itself
    evaluator.params.imgIds = sorted(image_ids)
    evaluator.params.catIds = category_ids
    evaluator.evaluate()
    tide = evaluator.tide_errors(pos_thr=POS_IOU, bg_thr=BACKGROUND_IOU)
    return {
        "method": f"TIDE via hotcoco {package_version('hotcoco')} COCOeval.tide_errors",
        "iou": POS_IOU,
        "background_iou": BACKGROUND_IOU,
        "ap50": float(tide["ap_base"]),
        "dAP": {name: float(tide["delta_ap"][key]) for name, key in ERROR_TYPES},
        "counts": {name: int(tide["counts"][key]) for name, key in ERROR_TYPES},
        "oracles": {name: float(tide["delta_ap"][key]) for name, key in ORACLES},
    }


def breakdown_for_run(setting: bool, gt: dict[str, Any], detections: str | Path | list[dict],
                      image_ids: Sequence[int], switches: dict[str, Any]) -> dict[str, Any] | None:
    """The breakdown of a run's detections (its detections.json, or the list), or None when
    ``metrics.error_breakdown`` is false (the default); asked for, it needs hotcoco (a UserError otherwise)."""
    if not setting:
        return None
    extras.require(extras.ERROR_BREAKDOWN)
    source = "detections" if isinstance(detections, list) else str(detections)
    if not isinstance(detections, list) and not Path(detections).is_file():
        raise FileNotFoundError(2, "no such file", str(detections))
    return compute_breakdown(gt, detections, image_ids, crowd_as_ground_truth=switches["crowd_as_ground_truth"],
                             exclude_categories=switches["exclude_categories"], source=source)


def breakdown_change(result: dict, parent: dict) -> dict[str, float] | None:
    """dAP of each error type in ``result`` minus the parent's (positive: the variant loses more AP
    to that error than its parent), or None when either metrics.json lacks a breakdown."""
    ours, theirs = result.get("error_breakdown"), parent.get("error_breakdown")
    if not (isinstance(ours, dict) and isinstance(theirs, dict)):
        return None
    try:
        return {name: float(ours["dAP"][name]) - float(theirs["dAP"][name]) for name, _ in ERROR_TYPES}
    except (KeyError, TypeError, ValueError):
        return None
