"""Score COCO results against ground truth with pycocotools (or another backend of BACKENDS)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ssd_eval import extras
from ssd_eval.config.schema import SCORING_BACKENDS
from ssd_eval.errors import UserError

log = logging.getLogger(__name__)

STAT_NAMES = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass(frozen=True)
class Backend:
    """A COCO bbox scoring library and how to build its COCOeval-like evaluator (evaluate / accumulate /
    summarize, ``params``, ``eval``, ``stats``) from prepared ground truth and result dicts."""

    name: str
    package: str  # on PyPI
    module: str  # to import
    extra: str | None  # pip install -e '.[extra]'
    make_evaluator: Callable[[dict, list[dict]], Any]
    mutates_results: bool = True  # writes into the result dicts it gets (pycocotools' loadRes): it gets copies


def _pycocotools_evaluator(prepared: dict, results: list[dict]) -> Any:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ground_truth = COCO()
    ground_truth.dataset = prepared  # fresh annotation dicts already; pycocotools only reads them
    ground_truth.createIndex()
    if results:
        detections = ground_truth.loadRes(results)
    else:  # loadRes cannot take an empty list
        detections = COCO()
        detections.dataset = dict(prepared, annotations=[])
        detections.createIndex()
    return COCOeval(ground_truth, detections, "bbox")


def _hotcoco_evaluator(prepared: dict, results: list[dict]) -> Any:
    import hotcoco

    ground_truth = hotcoco.COCO(prepared)  # converted, never written to (tests/test_streaming.py checks)
    return hotcoco.COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")


BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (
    Backend("pycocotools", "pycocotools", "pycocotools", None, _pycocotools_evaluator),
    Backend("hotcoco", "hotcoco", "hotcoco", "hotcoco", _hotcoco_evaluator, mutates_results=False),
)}
"""Every scoring backend by its ``metrics.backend`` name; pycocotools is the reference."""
assert tuple(BACKENDS) == SCORING_BACKENDS, "config.schema.SCORING_BACKENDS and BACKENDS name the same backends"


@dataclass
class Scores:
    """The outcome of one COCOeval bbox run."""

    stats: list[float]
    per_category_ap: dict[str, float]
    pr_curves: dict[str, list[float]]
    warnings: list[str] = field(default_factory=list)
    categories_averaged: list[str] = field(default_factory=list)  # names the means run over
    per_category_gt: dict[str, int] = field(default_factory=dict)  # ground-truth boxes by name; {}: unknown
    # matches.Matches kept by streaming scoring (keep_matches), for the bootstrap; never written to metrics.json.
    matches: Any = field(default=None, repr=False, compare=False)

    def named(self) -> dict[str, float]:
        """The 12 stats under their readable names."""
        return dict(zip(STAT_NAMES, self.stats))


def prepare_ground_truth(gt: dict[str, Any], *, crowd_as_ground_truth: bool) -> dict[str, Any]:
    """A copy of the annotation data ready for scoring, crowd regions as ordinary boxes with ``crowd_as_ground_truth``.
    With any annotation id <= 0 every annotation's id becomes ``position + 1`` (a match to id 0 reads as none)."""
    prepared = {k: v for k, v in gt.items() if k != "annotations"}
    renumber = any(int(ann["id"]) <= 0 for ann in gt["annotations"])
    annotations = []
    for position, ann in enumerate(gt["annotations"]):
        ann = dict(ann)
        if renumber:
            ann["id"] = position + 1
        ann["bbox"] = list(ann["bbox"])
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        ann["iscrowd"] = 0 if crowd_as_ground_truth else int(ann.get("iscrowd", 0))
        annotations.append(ann)
    prepared["annotations"] = annotations
    return prepared


def prepare_scoring(gt: dict[str, Any], *, crowd_as_ground_truth: bool, exclude_categories: Sequence[str]
                    ) -> tuple[dict[str, Any], dict[int, str], list[int]]:
    """What every scoring route starts from: the prepared ground truth, its category names by id and the
    category ids a mean runs over."""
    prepared = prepare_ground_truth(gt, crowd_as_ground_truth=crowd_as_ground_truth)
    names = category_names(prepared)
    return prepared, names, averaged_category_ids(names, exclude_categories)


def category_names(gt: dict[str, Any]) -> dict[int, str]:
    """Each category's name by its id (the id itself, as text, where a category has no name)."""
    return {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}


def ground_truth_counts(gt: dict[str, Any], image_ids: Iterable[int], *, crowd_as_ground_truth: bool) -> dict[str, int]:
    """Each category's ground-truth boxes among ``image_ids`` by name (every category of the file, 0 where it has
    none): the boxes a detection can match, so crowd regions count only with ``crowd_as_ground_truth``."""
    names = category_names(gt)
    evaluated = set(image_ids)
    counts = Counter(names.get(int(ann["category_id"])) for ann in gt["annotations"]
                     if ann["image_id"] in evaluated and (crowd_as_ground_truth or not int(ann.get("iscrowd", 0))))
    return {name: counts[name] for name in names.values()}


def checked_copies(detections: Iterable[dict], image_ids: Sequence[int], category_ids: Sequence[int],
                   source: str, *, copy: bool = True) -> list[dict]:
    """``checked_copy`` of every result, against the evaluated images and the annotation file's categories."""
    images, categories = set(image_ids), set(category_ids)
    return [checked_copy(det, images, categories, source, copy=copy) for det in detections]


def checked_copy(det: dict, images: set[int], categories: set[int], source: str, *, copy: bool = True) -> dict:
    """One result (a copy unless ``copy=False``), checked to name one of ``images`` and one of ``categories``."""
    if det["image_id"] not in images:
        raise UserError(f"{source}: detections name image id {det['image_id']}, which is not among the "
                        "evaluated images of the annotation file")
    if det["category_id"] not in categories:
        raise UserError(f"{source}: detections use category id {det['category_id']}, which is not a category "
                        "of the annotation file (contiguous labels must be mapped to COCO ids)")
    return dict(det, bbox=list(det["bbox"])) if copy else det


def empty_scores(prepared: dict[str, Any], names: dict[int, str], category_ids: Sequence[int],
                 image_ids: Iterable[int], source: str) -> Scores:
    """The Scores of no detections at all: every metric 0, a category's AP 0 where the evaluated images hold
    its ground truth, else -1."""
    message = f"{source}: no detections to score; every metric is 0"
    log.warning(message)
    zero_curve = [0.0] * 101
    evaluated = set(image_ids)
    with_truth = {a["category_id"] for a in prepared["annotations"] if a["image_id"] in evaluated}
    return Scores(stats=[0.0] * 12, per_category_ap={names[c]: 0.0 if c in with_truth else -1.0 for c in category_ids},
                  pr_curves={"recall": _recall_points(), "iou50": zero_curve, "iou75": list(zero_curve)},
                  warnings=[message], categories_averaged=[names[c] for c in category_ids])


def scores_from_evaluation(stats: Sequence[float], precision: np.ndarray, names: dict[int, str],
                           category_ids: Sequence[int], source: str,
                           averaged: Sequence[int] | None = None) -> Scores:
    """Scores from COCOeval's 12 stats and precision [IoU, recall, category, area, maxDets] over ``category_ids``
    (the evaluator's catIds); the means run over ``averaged`` (default: those same categories)."""
    warnings = []
    if stats[0] < 0:
        warnings.append(f"{source}: the evaluated images have no ground truth boxes; pycocotools reports -1")
        log.warning(warnings[0])
    averaged = category_ids if averaged is None else averaged
    return Scores(
        stats=[float(s) for s in stats[:12]],
        per_category_ap=_per_category_ap(precision, list(category_ids), names),
        pr_curves={
            "recall": _recall_points(),
            "iou50": _mean_curve(precision[0]),
            "iou75": _mean_curve(precision[5]),
        },
        warnings=warnings,
        categories_averaged=[names[c] for c in averaged],
    )


def averaged_category_ids(names: dict[int, str], exclude_categories: Sequence[str]) -> list[int]:
    """The category ids a mean runs over: every id of ``names`` (id -> name) whose name is not excluded."""
    known = set(names.values())
    unknown = [n for n in exclude_categories if n not in known]
    if unknown:
        raise UserError(f"metrics.exclude_categories names {unknown[0]!r}, which is not a category name of the "
                        "annotation file")
    excluded = set(exclude_categories)
    kept = [c for c in sorted(names) if names[c] not in excluded]
    if not kept:
        raise UserError("metrics.exclude_categories leaves no category to average over")
    return kept


def score_batch(gt: dict[str, Any], detections: Iterable[dict], image_ids: Sequence[int], *,
                crowd_as_ground_truth: bool, backend: str, exclude_categories: Sequence[str], source: str) -> Scores:
    """``metrics.score_detections`` without streaming: every detection scored at once by ``backend``."""
    prepared, names, category_ids = prepare_scoring(gt, crowd_as_ground_truth=crowd_as_ground_truth,
                                                    exclude_categories=exclude_categories)
    chosen = BACKENDS.get(backend)
    results = checked_copies(detections, image_ids, sorted(names), source,
                             copy=chosen is None or chosen.mutates_results)
    if not results:
        return empty_scores(prepared, names, category_ids, image_ids, source)
    if chosen is None:
        raise UserError(f"metrics.backend {backend!r} is not one of {', '.join(BACKENDS)}")
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        try:
            evaluator = chosen.make_evaluator(prepared, results)
        except ImportError:
            if chosen.extra is None:  # a core package (requirements.lock): a broken install, not a choice
                raise
            raise UserError(extras.message(extras.scoring_backend(chosen.name))) from None
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.params.catIds = category_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    log.debug("COCOeval output:\n%s", captured.getvalue())
    return scores_from_evaluation(evaluator.stats, np.asarray(evaluator.eval["precision"]), names,
                                  list(evaluator.params.catIds), source, averaged=category_ids)


def _recall_points() -> list[float]:
    return [round(float(r), 2) for r in np.linspace(0.0, 1.0, 101)]


def _mean_curve(precision: np.ndarray) -> list[float]:
    """Mean precision over categories at each recall point (area all, maxDets 100)."""
    curve = []
    for row in precision[:, :, 0, -1]:  # [recall, category]
        valid = row[row > -1]
        curve.append(float(valid.mean()) if valid.size else 0.0)
    return curve


def _per_category_ap(precision: np.ndarray, category_ids: list[int], names: dict[int, str]) -> dict[str, float]:
    result = {}
    for k, category in enumerate(category_ids):
        values = precision[:, :, k, 0, -1]
        valid = values[values > -1]
        result[names[category]] = float(valid.mean()) if valid.size else -1.0
    return result
