"""Bootstrap confidence intervals for COCO mAP, AP50 and AP75 from a run's own detections (no re-inference).

A replicate draws the images with replacement; ``weighted_ap`` re-accumulates ``matches.evaluate_matches``'
matches for every replicate at once with weighted cumulative sums: with integer weights it equals pycocotools on
the file holding each image as often as drawn (same-image, same-score runs that mix hits and misses expanded
copy by copy, ``d1 d2 d1' d2'``, as that file orders them). Replicates lie above the estimate on average
(``Interval.bias`` > 0), as a subset's mAP lies above the full set's: compare runs on the same images
(``paired_intervals``), shift by the bias (``method="recentered"``) or extrapolate to the full set
(``full_set_intervals``); docs/STATISTICS.md. The same seed and numpy version give the same replicates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ssd_eval.scoring.matches import CategoryMatches, Matches

BOOTSTRAP_METRICS = ("mAP", "AP50", "AP75")  # pycocotools' stats[0], stats[1], stats[2]
METHODS = ("percentile", "recentered")  # the replicates' percentiles, or that interval shifted by -bias
METHOD = "percentile"  # what a run's intervals and paired differences use (metrics.json, gate, table)

MIN_EXTRAPOLATION_IMAGES = 500  # fewest for full_set_intervals (below, an eighth's mAP is too noisy)
EXTRAPOLATION_DRAWS = 1500  # full_set_intervals' random draws of each size (an eighth, a quarter, a half)
_CHUNK_ELEMENTS = 8_000_000  # replicates x detections held at once per category (64 MB of float64)


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval for one metric, with how it was drawn."""

    low: float
    high: float
    level: float  # e.g. 0.95
    replicates: int  # bootstrap replicates drawn
    seed: int
    estimate: float  # the metric on the evaluated images themselves (every weight 1)
    method: str = "percentile"  # one of METHODS, or "full-set"
    bias: float = 0.0  # mean of the replicates - estimate (the bootstrap's estimate of the metric's bias)
    # full-set intervals only: the full set's size and the fitted exponent of the bias (see full_set_intervals)
    full_set_images: int | None = None
    alpha: float | None = None

    @property
    def half_width(self) -> float:
        """Half the interval's width (what a table prints after the ±)."""
        return (self.high - self.low) / 2

    def as_dict(self) -> dict[str, Any]:
        """The interval as plain JSON-ready fields (for metrics.json); the full-set fields only where set."""
        return {name: value for name, value in asdict(self).items()
                if value is not None or name not in ("full_set_images", "alpha")}


def bootstrap_weights(images: int, replicates: int, seed: int) -> np.ndarray:
    """Multiplicities [replicates, images] of a bootstrap over images: each row draws ``images`` with replacement."""
    if images < 1 or replicates < 1:
        raise ValueError("a bootstrap needs at least one image and one replicate")
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.integers(0, images, size=(replicates, images))
    flat = (draws + np.arange(replicates)[:, None] * images).ravel()
    return np.bincount(flat, minlength=replicates * images).reshape(replicates, images).astype(np.int64)


def weighted_ap(matches: Matches, weights: np.ndarray) -> np.ndarray:
    """[rows, 3] mAP, AP50, AP75 of each row of integer image multiplicities [rows, images] (-1: no ground truth)."""
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != len(matches.image_ids):
        raise ValueError(f"weights must be [rows, {len(matches.image_ids)}], got {weights.shape}")
    if not np.issubdtype(weights.dtype, np.integer):
        if not np.array_equal(weights, np.round(weights)):
            raise ValueError("weights must be integer multiplicities")
        weights = weights.astype(np.int64)
    if (weights < 0).any():
        raise ValueError("weights must be >= 0")
    longest = max((c.image_index.size for c in matches.categories), default=0)
    chunk = max(1, _CHUNK_ELEMENTS // max(longest, 1))
    return np.concatenate([_weighted_ap_chunk(matches, weights[s:s + chunk])
                           for s in range(0, len(weights), chunk)], axis=0)


def percentile_interval(values: np.ndarray, estimate: float, *, level: float, seed: int,
                        method: str = "percentile", defined: np.ndarray | None = None) -> Interval:
    """The interval of bootstrap ``values`` by ``method`` over the replicates ``defined`` (by default those
    where the metric is not -1, undefined)."""
    _check_level(level)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    values = np.asarray(values, dtype=float)
    defined = values != -1 if defined is None else defined
    if not defined.any():
        return Interval(-1.0, -1.0, level, len(values), seed, float(estimate), method, 0.0)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values[defined], [tail, 100 - tail])
    bias = float(values[defined].mean() - estimate)
    shift = bias if method == "recentered" else 0.0
    return Interval(float(low - shift), float(high - shift), level, len(values), seed, float(estimate), method, bias)


def bootstrap_values(matches: Matches, replicates: int, seed: int) -> np.ndarray:
    """[replicates, 3] mAP, AP50, AP75 of each bootstrap replicate over the images (-1: undefined)."""
    return weighted_ap(matches, bootstrap_weights(len(matches.image_ids), replicates, seed))


def bootstrap_intervals(matches: Matches, *, replicates: int = 1000, seed: int = 0, level: float = 0.95,
                        method: str = "percentile", values: np.ndarray | None = None) -> dict[str, Interval]:
    """Bootstrap intervals (resampling images) for mAP, AP50 and AP75 of ``evaluate_matches``' matches;
    ``values``: the replicates of ``bootstrap_values`` when already drawn."""
    estimate = _estimate(matches)
    if values is None:
        values = bootstrap_values(matches, replicates, seed)
    return {name: percentile_interval(values[:, j], estimate[j], level=level, seed=seed, method=method)
            for j, name in enumerate(BOOTSTRAP_METRICS)}


def extrapolated_bias(quarter_minus_half: float, size: int, full_set_images: int, alpha: float) -> float:
    """How much higher a metric is on ``size`` images than on ``full_set_images`` if its mean on m random
    images falls as c * m^-alpha, with c fixed by the drop from a quarter to a half of ``size``."""
    scale = quarter_minus_half / ((size // 4) ** -alpha - (size // 2) ** -alpha)
    return scale * (size ** -alpha - full_set_images ** -alpha)


def full_set_intervals(matches: Matches, *, full_set_images: int, replicates: int = 1000, seed: int = 0,
                       level: float = 0.95, draws: int = EXTRAPOLATION_DRAWS, values: np.ndarray | None = None
                       ) -> tuple[dict[str, Interval] | None, str | None]:
    """Intervals for mAP, AP50 and AP75 of the ``full_set_images``-image set that ``matches``' images were
    drawn from at random, and why a metric has none (None when all have one; None intervals: no metric has one).

    The means of ``draws`` random eighths, quarters and halves of the subset fit a power law c * m^-alpha,
    extrapolated to the full set: the percentile interval moves by the bootstrap's bias plus that extrapolated
    bias, the estimate by the latter; an empirical fit, for random subsets only (docs/STATISTICS.md).
    ``values``: ``bootstrap_values(matches, replicates, seed)`` when already drawn.
    """
    _check_level(level)
    size = len(matches.image_ids)
    if size < MIN_EXTRAPOLATION_IMAGES:
        return None, f"{size} images: extrapolating to the full set needs at least {MIN_EXTRAPOLATION_IMAGES}"
    if full_set_images <= size:
        return None, "the run covers the whole annotation file"
    if values is not None and values.shape != (replicates, len(BOOTSTRAP_METRICS)):
        raise ValueError(f"values must be [{replicates}, {len(BOOTSTRAP_METRICS)}], got {values.shape}")
    base = bootstrap_intervals(matches, replicates=replicates, seed=seed, level=level, values=values)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1])))  # not the bootstrap's stream
    means = []  # of each metric on an eighth, a quarter and a half of the images
    for part in (8, 4, 2):
        chosen = np.argsort(rng.random((draws, size)), axis=1)[:, : size // part]
        weights = np.zeros((draws, size), dtype=np.int64)
        np.put_along_axis(weights, chosen, 1, axis=1)
        sub = weighted_ap(matches, weights)
        means.append([sub[sub[:, j] != -1, j].mean() if (sub[:, j] != -1).any() else np.nan
                      for j in range(len(BOOTSTRAP_METRICS))])
    intervals, refused = {}, []
    for j, name in enumerate(BOOTSTRAP_METRICS):
        eighth, quarter, half = (by_part[j] for by_part in means)
        if not eighth - quarter > quarter - half > 0:  # falling, ever more slowly: alpha > 0
            refused.append(f"{name} on an eighth, a quarter and a half of the subset ({eighth:.4f}, {quarter:.4f}, "
                           f"{half:.4f}) does not fall ever more slowly: no power law to extrapolate")
            continue
        alpha = float(np.log2((eighth - quarter) / (quarter - half)))
        extra = extrapolated_bias(quarter - half, size, full_set_images, alpha)
        shift = base[name].bias + extra
        intervals[name] = Interval(base[name].low - shift, base[name].high - shift, level, replicates, seed,
                                   float(base[name].estimate - extra), "full-set", float(shift),
                                   full_set_images=full_set_images, alpha=alpha)
    return intervals or None, "; ".join(refused) or None


def paired_intervals(matches_a: Matches, matches_b: Matches, *, replicates: int = 1000, seed: int = 0,
                     level: float = 0.95, method: str = "percentile") -> dict[str, Interval]:
    """Intervals for metric(a) - metric(b) of matches already evaluated on the same images and categories,
    both scored on the same resampled images in each replicate."""
    if matches_a.image_ids != matches_b.image_ids:
        raise ValueError("a paired bootstrap needs both sides evaluated on the same image ids")
    if [c.category_id for c in matches_a.categories] != [c.category_id for c in matches_b.categories]:
        raise ValueError("a paired bootstrap needs both sides averaged over the same categories")
    estimate = _estimate(matches_a) - _estimate(matches_b)
    weights = bootstrap_weights(len(matches_a.image_ids), replicates, seed)
    a, b = weighted_ap(matches_a, weights), weighted_ap(matches_b, weights)
    # Both sides have the same ground truth, so a replicate is undefined (-1) on both or neither.
    defined = (a != -1) & (b != -1)
    return {name: percentile_interval(a[:, j] - b[:, j], estimate[j], level=level, seed=seed, method=method,
                                      defined=defined[:, j])
            for j, name in enumerate(BOOTSTRAP_METRICS)}


# --------------------------------------------------------------------------- internals


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")


def _estimate(matches: Matches) -> np.ndarray:
    """mAP, AP50, AP75 on the evaluated images themselves (every weight 1)."""
    return weighted_ap(matches, np.ones((1, len(matches.image_ids)), dtype=np.int64))[0]


def _weighted_ap_chunk(matches: Matches, weights: np.ndarray) -> np.ndarray:
    rows = len(weights)
    thresholds = len(matches.iou_thresholds)
    recall_points = len(matches.recall_thresholds)
    t50 = int(np.where(matches.iou_thresholds == 0.5)[0][0])  # as COCOeval.summarize selects them
    t75 = int(np.where(matches.iou_thresholds == 0.75)[0][0])
    w = weights.astype(float)
    sums = np.zeros((rows, 3))
    valid = np.zeros(rows)
    for category in matches.categories:
        npig = weights @ category.gt_count  # exact integer sum
        has_truth = npig > 0
        valid += has_truth
        if not has_truth.any() or not category.image_index.size:
            continue  # ground truth but no detection: precision 0 at every recall point
        position_weight = w[:, category.image_index]  # [rows, N]
        seen = np.cumsum(position_weight, axis=1)  # weighted detections at positions <= p
        per_threshold = np.stack([_precision_sum(category, t, weights, position_weight, seen, npig.astype(float),
                                                 matches.recall_thresholds) for t in range(thresholds)], axis=1)
        per_threshold[~has_truth] = 0.0
        sums += np.stack([per_threshold.sum(axis=1), per_threshold[:, t50], per_threshold[:, t75]], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # mAP averages over thresholds, AP50 and AP75 over one
        result = sums / (np.array([thresholds, 1, 1]) * recall_points * valid[:, None])
    result[valid == 0] = -1.0
    return result


def _precision_sum(category: CategoryMatches, t: int, weights: np.ndarray, position_weight: np.ndarray,
                   seen: np.ndarray, npig: np.ndarray, recall_thresholds: np.ndarray) -> np.ndarray:
    """Per row, the sum over the 101 recall points of interpolated precision at IoU threshold ``t``, taken at the
    true positives only (a false positive never sets the precision envelope); counts are exact in float64."""
    tp_positions = np.flatnonzero(category.true_positive[t])
    if not tp_positions.size:
        return np.zeros(len(weights))
    tp = np.cumsum(position_weight[:, tp_positions], axis=1)
    fp = seen[:, tp_positions] - tp
    ig_positions = np.flatnonzero(category.ignored[t])
    if ig_positions.size:
        ig = np.cumsum(position_weight[:, ig_positions], axis=1)
        before = np.searchsorted(ig_positions, tp_positions)  # ignored detections before each TP
        fp -= np.where(before > 0, ig[:, np.maximum(before - 1, 0)], 0.0)
    tp, fp = _expand_mixed_ties(category, t, tp_positions, tp, fp, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / npig[:, None]
        precision = tp / (fp + tp + np.spacing(1))  # pycocotools' expression, same rounding
    precision[np.isnan(tp)] = 0.0  # inactive expanded columns (see _expand_mixed_ties)
    recall[np.isnan(tp)] = -np.inf
    recall = np.maximum.accumulate(recall, axis=1)
    interpolated = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    covered = np.searchsorted(recall_thresholds, recall, side="right")  # recall points <= recall
    new_points = np.diff(covered, axis=1, prepend=0)
    return (interpolated * new_points).sum(axis=1)


def _expand_mixed_ties(category: CategoryMatches, t: int, tp_positions: np.ndarray, tp: np.ndarray,
                       fp: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace the columns of same-image, same-score runs that mix true and false positives by their literal
    copy-by-copy sequence (``d1 d2 d1' d2'``); columns a row does not draw are NaN."""
    if not (category.tie_run[tp_positions] >= 0).any():
        return tp, fp
    tied = np.flatnonzero(category.tie_run >= 0)  # run ids grow along positions: runs are contiguous
    hit = category.true_positive[t, tied]
    miss = ~hit & ~category.ignored[t, tied]
    _, starts = np.unique(category.tie_run[tied], return_index=True)
    mixed = np.logical_or.reduceat(hit, starts) & np.logical_or.reduceat(miss, starts)
    if not mixed.any():
        return tp, fp
    ends = np.append(starts[1:], tied.size)
    tp_pieces, fp_pieces = [], []
    done = 0  # columns copied so far
    for start, end in zip(starts[mixed], ends[mixed]):
        members, member_tp, member_fp = tied[start:end], hit[start:end], miss[start:end]
        first = int(np.searchsorted(tp_positions, members[0]))
        n_tp, n_fp = int(member_tp.sum()), int(member_fp.sum())
        tp_pieces.append(tp[:, done:first])
        fp_pieces.append(fp[:, done:first])
        multiplicity = weights[:, category.image_index[members[0]]].astype(float)  # [rows]
        # Counts just before the run: the run's first TP column minus the run's own contribution.
        fp_in_run_before = np.cumsum(member_fp)[member_tp]  # FPs of one copy before each of its TPs
        tp_base = tp[:, first] - multiplicity
        fp_base = fp[:, first] - multiplicity * fp_in_run_before[0]
        copies = max(int(multiplicity.max()), 1)
        copy = np.repeat(np.arange(copies), n_tp)  # column order: copy-major, then the run's order
        rank = np.tile(np.arange(1, n_tp + 1), copies)
        new_tp = tp_base[:, None] + copy * n_tp + rank
        new_fp = fp_base[:, None] + copy * n_fp + np.tile(fp_in_run_before, copies)
        inactive = copy[None, :] >= multiplicity[:, None]
        tp_pieces.append(np.where(inactive, np.nan, new_tp))
        fp_pieces.append(np.where(inactive, np.nan, new_fp))
        done = first + n_tp
    tp_pieces.append(tp[:, done:])
    fp_pieces.append(fp[:, done:])
    return np.concatenate(tp_pieces, axis=1), np.concatenate(fp_pieces, axis=1)

