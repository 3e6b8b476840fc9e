"""How sure a comparison of finished runs is (gate ``ci95``, table ``drop ± ci``; docs/STATISTICS.md): both
sides' detections matched on the images the run evaluated, resampled alike in each replicate.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Callable

import numpy as np

from ssd_eval.config.load import config_from_dict
from ssd_eval.data import coco as data
from ssd_eval.data import subsets
from ssd_eval.errors import UserError
from ssd_eval.results.result import is_detection
from ssd_eval.scoring.bootstrap import (
    BOOTSTRAP_METRICS,
    METHOD,
    Interval,
    bootstrap_weights,
    paired_intervals,
    weighted_ap,
)
from ssd_eval.scoring.matches import Matches, evaluate_matches
from ssd_eval.utils import hash_data

DEFAULT_REPLICATES = 1000
"""Replicates of a comparison when the runs themselves had no bootstrap (``metrics.bootstrap.replicates: 0``)."""

ESTIMATE_SLACK = 1e-4
"""How far the metric recomputed from detections.json may lie from metrics.json's (backends other than
pycocotools may round differently in the last digits)."""


class NoPairing(UserError):
    """A paired comparison is not possible with what is at hand (a missing file, the runs' settings); the
    caller says so and falls back. Inputs that contradict each other are plain ``UserError``."""


def result_interval(result: dict, metric: str) -> Interval | None:
    """A metrics.json's own interval of ``metric`` (``intervals``), or None when the run has none."""
    entry = (result.get("intervals") or {}).get(metric)
    try:
        return Interval(**entry) if isinstance(entry, dict) else None
    except TypeError:  # fields Interval does not have
        return None


def bootstrap_off_reason(result: dict) -> str:
    """Why a result has no intervals, in a few words."""
    record = (result.get("provenance") or {}).get("bootstrap")
    if not isinstance(record, dict):
        return "the run predates metrics.bootstrap"
    return str(record.get("off") or "no intervals")


def comparison_settings(result: dict) -> tuple[int, int]:
    """(replicates, seed) for a comparison involving ``result``: its own bootstrap's, else 1000 and 0."""
    record = (result.get("provenance") or {}).get("bootstrap")
    if isinstance(record, dict) and isinstance(record.get("replicates"), int) and record["replicates"] > 0:
        return record["replicates"], int(record.get("seed") or 0)
    return DEFAULT_REPLICATES, 0


class ResultMatches:
    """Finished results' detections matched against their annotation files, each result once (by file)."""

    def __init__(self) -> None:
        self._datasets: dict[str, data.CocoDataset] = {}
        self._matchers: dict[str, Callable[..., Matches]] = {}
        self._matches: dict[str, Matches] = {}
        self._paired: dict[tuple, dict[str, Interval]] = {}

    def paired(self, key: tuple, matches_a: Matches, matches_b: Matches, *, replicates: int,
               seed: int) -> dict[str, Interval]:
        """``paired_difference`` of two matched runs, computed once per ``key`` (it covers mAP, AP50, AP75)."""
        full_key = (*key, replicates, seed)
        if full_key not in self._paired:
            self._paired[full_key] = paired_difference(matches_a, matches_b, replicates=replicates, seed=seed)
        return self._paired[full_key]

    def matches(self, result: dict) -> Matches:
        """The matches of ``result``'s detections.json on its evaluated images; NoPairing when a file is missing,
        UserError when the files contradict the result."""
        source = result["_source"]
        if source not in self._matches:
            match = self._matcher(result)
            path = Path(source).parent / "detections.json"
            detections = _read_detections(path)
            expected = (result.get("provenance") or {}).get("detections")
            if isinstance(expected, int) and expected != len(detections):
                raise UserError(f"{path}: holds {len(detections)} detections but {source} counts {expected}: "
                                "it is not the file that run scored")
            matches = match(detections, source=str(path))
            for name, got in _estimates(matches).items():
                value = result.get(name)
                if isinstance(value, (int, float)) and abs(got - value) > ESTIMATE_SLACK:
                    raise UserError(f"{path}: gives {name} {got:.6f}, but {source} says {value:.6f}: "
                                    "the detections and the metrics are not of the same run")
            self._matches[source] = matches
        return self._matches[source]

    def detections_matches(self, path: Path, result: dict, expected: dict[str, float]) -> Matches:
        """Matches of a kept detections file (a baseline's) on ``result``'s images, refused unless it
        reproduces the ``expected`` metrics (what the baseline says it measured)."""
        key = f"{path}\0{result['_source']}"
        if key not in self._matches:
            match = self._matcher(result)
            if not Path(path).is_file():
                raise UserError(f"{path}: detections file not found")
            matches = match(_read_detections(Path(path)), source=str(path))
            for name, got in _estimates(matches).items():
                if name in expected and abs(got - expected[name]) > ESTIMATE_SLACK:
                    raise UserError(f"{path}: gives {name} {got:.6f} on the images of {result['_source']}, "
                                    f"not the expected {expected[name]:.6f}: it is not the detections the "
                                    "baseline was measured from (or the image set differs)")
            self._matches[key] = matches
        return self._matches[key]

    def _matcher(self, result: dict) -> Callable[..., Matches]:
        """evaluate_matches on the images ``result`` evaluated, with its settings: (detections, source=...)."""
        source = result["_source"]
        if source in self._matchers:
            return self._matchers[source]
        provenance = result.get("provenance") or {}
        annotations = provenance.get("annotations") or {}
        path = annotations.get("path")
        if not isinstance(path, str) or not Path(path).is_file():
            raise NoPairing(f"{source}: its annotation file {path} is not here")
        if path not in self._datasets:
            self._datasets[path] = data.load_annotations(path, provenance.get("images_dir") or ".")
        dataset = self._datasets[path]
        if dataset.sha256 != annotations.get("sha256"):
            raise UserError(f"{path}: changed since {source} was scored (sha256 {dataset.sha256[:12]}, "
                            f"not {str(annotations.get('sha256'))[:12]})")
        try:
            config = config_from_dict(copy.deepcopy(provenance.get("config") or {}), default_origin=source)
        except UserError as exc:
            raise NoPairing(f"{source}: cannot read the config it was run with ({exc})") from None
        switches = config.switches()
        ids = subsets.select_image_ids(dataset, limit=config.dataset.limit, subset=config.dataset.subset,
                                    skip_images_without_annotations=switches["skip_images_without_annotations"])
        skipped = {s.get("image_id") for s in provenance.get("skipped_images") or [] if isinstance(s, dict)}
        ids = [i for i in ids if i not in skipped]
        if hash_data(ids) != provenance.get("image_ids_sha256"):
            raise NoPairing(f"{source}: cannot tell which images it evaluated (its settings select another "
                            "image set than image_ids_sha256 records)")
        self._matchers[source] = functools.partial(
            evaluate_matches, dataset.gt, image_ids=ids, crowd_as_ground_truth=switches["crowd_as_ground_truth"],
            exclude_categories=switches["exclude_categories"])
        return self._matchers[source]


def _read_detections(path: Path) -> list[dict]:
    try:
        detections = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise NoPairing(f"{path}: not found (a paired comparison needs the run's detections)") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"{path}: unreadable detections ({exc})") from None
    if not isinstance(detections, list) or not all(is_detection(d) for d in detections):
        raise UserError(f"{path}: not a list of COCO results (image_id, category_id, bbox, score)")
    return detections


def _estimates(matches: Matches) -> dict[str, float]:
    """mAP, AP50 and AP75 of ``matches`` on their images as they are (no resampling)."""
    ones = np.ones((1, len(matches.image_ids)), dtype=np.int64)
    return dict(zip(BOOTSTRAP_METRICS, weighted_ap(matches, ones)[0]))


def paired_difference(matches_a: Matches, matches_b: Matches, *, replicates: int, seed: int,
                      level: float = 0.95) -> dict[str, Interval]:
    """Intervals of metric(a) - metric(b) for mAP, AP50, AP75, both scored on the same resampled images."""
    _check_pair(matches_a, matches_b)
    return paired_intervals(matches_a, matches_b, replicates=replicates, seed=seed, level=level, method=METHOD)


def paired_drop(matches_quantized: Matches, matches_parent: Matches, *, replicates: int, seed: int,
                level: float = 0.95) -> Interval:
    """Interval of the mAP drop ratio ``(parent - quantized) / parent x 100`` (computed per replicate, both
    sides on the same resampled images); replicates where the parent's mAP is undefined or 0 are left out."""
    _check_pair(matches_quantized, matches_parent)
    q0, p0 = _estimates(matches_quantized)["mAP"], _estimates(matches_parent)["mAP"]
    if p0 <= 0:
        raise NoPairing("the parent's mAP is not positive: no drop ratio")
    estimate = (p0 - q0) / p0 * 100
    weights = bootstrap_weights(len(matches_parent.image_ids), replicates, seed)
    q, p = weighted_ap(matches_quantized, weights)[:, 0], weighted_ap(matches_parent, weights)[:, 0]
    defined = p > 0
    if not defined.any():
        return Interval(float("nan"), float("nan"), level, replicates, seed, float(estimate), METHOD, 0.0)
    drops = (p[defined] - q[defined]) / p[defined] * 100
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(drops, [tail, 100 - tail])
    return Interval(float(low), float(high), level, replicates, seed, float(estimate), METHOD,
                    float(drops.mean() - estimate))


def _check_pair(a: Matches, b: Matches) -> None:
    if a.image_ids != b.image_ids:
        raise NoPairing("the two runs did not score the same images")
    if [c.category_id for c in a.categories] != [c.category_id for c in b.categories]:
        raise NoPairing("the two runs do not average over the same categories")


def format_interval(interval: Interval, *, signed: bool = False, digits: int = 4, unit: str = "") -> str:
    """``[low, high]`` with the level, e.g. ``95% interval [+0.0012, +0.0150]``."""
    sign = "+" if signed else ""
    return (f"{interval.level * 100:g}% interval [{interval.low:{sign}.{digits}f}{unit}, "
            f"{interval.high:{sign}.{digits}f}{unit}]")
