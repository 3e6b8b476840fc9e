"""One-call shortcuts that only tests use: from detections straight to bootstrap intervals, and a subset
file's ids checked against an annotation file. The product goes through the steps these wrap
(``scoring.matches.evaluate_matches``, ``scoring.bootstrap``, ``data.subsets.open_subset``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from ssd_eval.data.subsets import check_made_from, read_subset
from ssd_eval.scoring.bootstrap import Interval, bootstrap_intervals, paired_intervals
from ssd_eval.scoring.matches import evaluate_matches


def bootstrap_map(
    gt: dict[str, Any],
    detections: Iterable[dict],
    image_ids: Sequence[int],
    *,
    crowd_as_ground_truth: bool = False,
    exclude_categories: Sequence[str] = (),
    replicates: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "percentile",
) -> dict[str, Interval]:
    """Bootstrap intervals (resampling images) for mAP, AP50 and AP75 of one run's detections."""
    matches = evaluate_matches(gt, detections, image_ids, crowd_as_ground_truth=crowd_as_ground_truth,
                               exclude_categories=exclude_categories)
    return bootstrap_intervals(matches, replicates=replicates, seed=seed, level=level, method=method)


def paired_bootstrap_difference(
    gt: dict[str, Any],
    detections_a: Iterable[dict],
    detections_b: Iterable[dict],
    image_ids: Sequence[int],
    *,
    crowd_as_ground_truth: bool = False,
    exclude_categories: Sequence[str] = (),
    replicates: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "percentile",
) -> dict[str, Interval]:
    """Intervals for metric(a) - metric(b), both scored on the same resampled images in each replicate."""
    options = dict(crowd_as_ground_truth=crowd_as_ground_truth, exclude_categories=exclude_categories)
    matches_a = evaluate_matches(gt, detections_a, image_ids, source="detections a", **options)
    matches_b = evaluate_matches(gt, detections_b, image_ids, source="detections b", **options)
    return paired_intervals(matches_a, matches_b, replicates=replicates, seed=seed, level=level, method=method)


def load_subset(path: str | Path, annotations_sha256: str) -> list[int]:
    """The image ids of a subset file, refused unless its ids hash right and it was made from these annotations."""
    subset = read_subset(path)
    check_made_from(path, subset, annotations_sha256)
    return list(subset.image_ids)
