"""Bootstrap confidence intervals for COCO mAP, AP50 and AP75 from a run's own detections (no re-inference).

How it works (and why it is exact):

1. ``evaluate_matches`` runs pycocotools' ``COCOeval.evaluate()`` once, with the harness's
   scoring conventions (``metrics.prepare_ground_truth`` for crowd regions, ``params.imgIds`` the
   evaluated images, ``params.catIds`` the averaged categories), and keeps, per category, the
   area-``all`` / maxDets-100 detections in the order pycocotools' ``accumulate`` sorts them
   (concatenated in image-id order, stable mergesort by descending score), with their
   true-positive and ignore flags at each of the 10 IoU thresholds, and the number of
   non-ignored ground-truth boxes per image.
2. A bootstrap replicate draws the images with replacement: image ``i`` gets a multiplicity
   ``w_i`` (how often it was drawn). A replicate's data set is the literal one in which each drawn
   image appears ``w_i`` times (its copies right after it, under new ids): each detection counts
   ``w_i`` times and each category's ground-truth count is the weighted sum of non-ignored boxes.
3. ``weighted_ap`` re-accumulates precision/recall for every replicate at once with weighted
   cumulative sums instead of materialised copies, following ``COCOeval.accumulate`` exactly:
   precision made monotone from the right, 101 recall points looked up with
   ``searchsorted(side='left')``, -1 (left out of the mean) where a category has no ground truth.

   Only true-positive positions matter to the interpolated precision (a false positive lowers
   precision at the same recall, so it never wins the right-to-left maximum), so per IoU
   threshold only the true-positive "columns" are evaluated: the true-positive count there is a
   cumulative sum of the weights of the true positives, the false-positive count is (weighted
   count of every detection so far) - (true positives) - (ignored detections). The recall points
   a column covers are counted with ``searchsorted(recall_points, recall, side='right')``, the
   same comparisons pycocotools makes. All counts are integers held exactly in float64, so with
   all weights 1 the stats equal pycocotools' ``stats[0:3]`` up to the order of the final mean.

   Copies tie in score. Copies of one detection share its match, so their order among
   themselves cannot matter. The one case where order does matter is a run of detections of
   the same image and category with exactly the same score but different match status
   (common with quantized scores): pycocotools takes them in results-file order, and in the
   duplicated file the whole run repeats once per copy (``d1 d2 d1' d2'``, not ``d1 d1' d2 d2'``).
   Such runs are expanded copy by copy, so the result still equals pycocotools on the literal
   duplicated file.

Cost: the matching (``COCOeval.evaluate``) once per detection set, then about (replicates x detections)
array operations. Measured on a 2-core CPU (``time_bootstrap``): 500 images x 100 detections (50,000):
matching 2.7 s, 1000 replicates 0.86 s (1.7 s with scores on a 1/32 grid, many ties); 5000 images x 100
detections: matching 34 s, 1000 replicates about 13 s.

Bias (measured with ``coverage_study`` on a synthetic 5000-image set): COCO AP of a small sample is on
average above that of a large one (likely cause: the right-to-left precision envelope of a noisier PR curve
lies higher), and a bootstrap replicate holds only about 63 % distinct images, so the replicates' mAP is on
average above the estimate (``Interval.bias`` > 0) and the percentile interval of one run's mAP can lie
entirely above its estimate; ``method="recentered"`` shifts it back. For the same reason a subset's mAP is on
average above the full set's (by 0.022 for 500 of 5000 synthetic images, about 8 times the spread between
subsets), so an interval from a subset says little about the full-set mAP. Verdicts should compare runs on
the same images with ``paired_intervals``: the bias mostly cancels in a difference (29 of 30
paired 95 % intervals from 500-image subsets covered the 5000-image difference). To say what the full set's
mAP is from a random subset, ``full_set_intervals`` extrapolates the bias (28 of 30 500-image subsets covered it).

Replicates are drawn with numpy's PCG64 generator from ``seed``: the same seed and numpy version
give the same replicates on every machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ssd_eval.scoring.matches import CategoryMatches, Matches

BOOTSTRAP_METRICS = ("mAP", "AP50", "AP75")
"""The stats the bootstrap resamples, in pycocotools' order (stats[0], stats[1], stats[2])."""

METHODS = ("percentile", "recentered")
"""Interval methods one may ask for: ``percentile``, the replicates' percentiles; ``recentered``, that
interval shifted by ``-bias`` (the replicates' mean moved onto the estimate; see "Bias" in the module
docstring). ``full_set_intervals`` labels its own intervals ``full-set``."""

METHOD = "percentile"
"""The method a run's intervals and paired differences use (metrics.json ``intervals``, gate, table)."""

MIN_EXTRAPOLATION_IMAGES = 500
"""Fewest images ``full_set_intervals`` extrapolates from: their eighths must still give a usable mAP. On the
synthetic 5000-image population 95 % intervals covered its mAP in 93 % of random 500-image subsets but in 60 % of
400-image ones (0 % at 250: the fitted power came out near 0.2). tools/bootstrap_study.py --bias-correction."""

EXTRAPOLATION_DRAWS = 1500
"""Random sub-subsets per size (an eighth, a quarter, a half) in ``full_set_intervals``: the extrapolation's
Monte Carlo noise costs coverage. 30 random 500-of-5000 synthetic subsets covered the population's mAP
24 times at 400 draws, 28 times at 1500 (tools/bootstrap_study.py --bias-correction 500)."""

_CHUNK_ELEMENTS = 8_000_000  # replicates x detections held at once per category (64 MB of float64)


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap confidence interval for one metric, with how it was drawn."""

    low: float
    high: float
    level: float  # e.g. 0.95
    replicates: int  # bootstrap replicates drawn
    seed: int
    estimate: float  # the metric on the evaluated images themselves (every weight 1)
    method: str = "percentile"  # one of METHODS
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
        fields = asdict(self)
        for name in ("full_set_images", "alpha"):
            if fields[name] is None:
                del fields[name]
        return fields


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
                        method: str = "percentile") -> Interval:
    """The interval of bootstrap ``values`` by ``method`` (replicates where the metric is -1, undefined, left out)."""
    _check_level(level)
    values = np.asarray(values, dtype=float)
    return _interval(values, values != -1, estimate, level, seed, method)


def bootstrap_values(matches: Matches, replicates: int, seed: int) -> np.ndarray:
    """[replicates, 3] mAP, AP50, AP75 of each bootstrap replicate over the images (-1: undefined)."""
    return weighted_ap(matches, bootstrap_weights(len(matches.image_ids), replicates, seed))


def bootstrap_intervals(matches: Matches, *, replicates: int = 1000, seed: int = 0, level: float = 0.95,
                        method: str = "percentile", values: np.ndarray | None = None) -> dict[str, Interval]:
    """Bootstrap intervals (resampling images) for mAP, AP50 and AP75 of matches already evaluated (by
    ``evaluate_matches``); ``values``: the replicates of ``bootstrap_values`` when already drawn."""
    _check_level(level)
    _check_method(method)
    estimate = weighted_ap(matches, np.ones((1, len(matches.image_ids)), dtype=np.int64))[0]
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
    drawn from at random (a subset run), and why a metric has none (None when all have one); a metric
    left out has no interval, and None stands for no metric at all.

    A subset's COCO AP is biased upward (module docstring, "Bias"). The subset's own random eighths,
    quarters and halves (``draws`` each, without replacement) show how a metric's mean falls with the
    number of images; a power law c * m^-alpha through those three means (alpha = log2 of the ratio of
    the two drops) is extrapolated from the subset's size to the full set's. The interval is the
    percentile interval moved by the bootstrap's own bias plus that extrapolated bias; its ``estimate``
    is the subset's value minus the extrapolated bias. Measured on a synthetic 5000-image population,
    95 % intervals from random 500-image subsets covered its mAP 28 times out of 30 (uncorrected: 0 of
    30); the model is an empirical fit, so the guarantee is that measurement, not a theorem, and it
    holds for random subsets only (see ``ssd_eval.data.subsets``). ``values``: the replicates of
    ``bootstrap_values(matches, replicates, seed)`` when already drawn (the same numbers, not redrawn).
    """
    _check_level(level)
    size = len(matches.image_ids)
    if size < MIN_EXTRAPOLATION_IMAGES:
        return None, f"{size} images: extrapolating to the full set needs at least {MIN_EXTRAPOLATION_IMAGES}"
    if full_set_images <= size:
        return None, "the run covers the whole annotation file"
    estimate = weighted_ap(matches, np.ones((1, size), dtype=np.int64))[0]
    if values is None:
        values = bootstrap_values(matches, replicates, seed)
    elif values.shape != (replicates, len(BOOTSTRAP_METRICS)):
        raise ValueError(f"values must be [{replicates}, {len(BOOTSTRAP_METRICS)}], got {values.shape}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1])))  # not the bootstrap's stream
    means = {}
    for part in (8, 4, 2):
        chosen = np.argsort(rng.random((draws, size)), axis=1)[:, : size // part]
        weights = np.zeros((draws, size), dtype=np.int64)
        np.put_along_axis(weights, chosen, 1, axis=1)
        sub = weighted_ap(matches, weights)
        means[part] = [sub[sub[:, j] != -1, j].mean() if (sub[:, j] != -1).any() else np.nan
                       for j in range(len(BOOTSTRAP_METRICS))]
    intervals, refused = {}, []
    for j, name in enumerate(BOOTSTRAP_METRICS):
        eighth, quarter, half = means[8][j], means[4][j], means[2][j]
        if not eighth - quarter > quarter - half > 0:  # falling, ever more slowly: alpha > 0
            refused.append(f"{name} on an eighth, a quarter and a half of the subset ({eighth:.4f}, {quarter:.4f}, "
                           f"{half:.4f}) does not fall ever more slowly: no power law to extrapolate")
            continue
        alpha = float(np.log2((eighth - quarter) / (quarter - half)))
        extra = extrapolated_bias(quarter - half, size, full_set_images, alpha)
        base = _interval(values[:, j], values[:, j] != -1, estimate[j], level, seed, "percentile")
        shift = base.bias + extra
        intervals[name] = Interval(base.low - shift, base.high - shift, level, replicates, seed,
                                   float(estimate[j] - extra), "full-set", float(shift),
                                   full_set_images=full_set_images, alpha=alpha)
    return intervals or None, "; ".join(refused) or None


def paired_intervals(matches_a: Matches, matches_b: Matches, *, replicates: int = 1000, seed: int = 0,
                     level: float = 0.95, method: str = "percentile") -> dict[str, Interval]:
    """Intervals for metric(a) - metric(b) of matches already evaluated on the same images and categories,
    both scored on the same resampled images in each replicate."""
    _check_level(level)
    _check_method(method)
    if matches_a.image_ids != matches_b.image_ids:
        raise ValueError("a paired bootstrap needs both sides evaluated on the same image ids")
    if [c.category_id for c in matches_a.categories] != [c.category_id for c in matches_b.categories]:
        raise ValueError("a paired bootstrap needs both sides averaged over the same categories")
    ones = np.ones((1, len(matches_a.image_ids)), dtype=np.int64)
    estimate = weighted_ap(matches_a, ones)[0] - weighted_ap(matches_b, ones)[0]
    weights = bootstrap_weights(len(matches_a.image_ids), replicates, seed)
    a, b = weighted_ap(matches_a, weights), weighted_ap(matches_b, weights)
    # Both sides have the same ground truth, so a replicate is undefined (-1) on both or neither.
    defined = (a != -1) & (b != -1)
    return {name: _interval(a[:, j] - b[:, j], defined[:, j], estimate[j], level, seed, method)
            for j, name in enumerate(BOOTSTRAP_METRICS)}


# --------------------------------------------------------------------------- internals


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def _interval(values: np.ndarray, defined: np.ndarray, estimate: float, level: float, seed: int,
              method: str) -> Interval:
    _check_method(method)
    if not defined.any():
        return Interval(-1.0, -1.0, level, len(values), seed, float(estimate), method, 0.0)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values[defined], [tail, 100 - tail])
    bias = float(values[defined].mean() - estimate)
    shift = bias if method == "recentered" else 0.0
    return Interval(float(low - shift), float(high - shift), level, len(values), seed, float(estimate), method, bias)


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
        if not has_truth.any():
            continue
        valid += has_truth
        if not category.image_index.size:
            continue  # ground truth but no detection: precision 0 at every recall point
        per_threshold = np.zeros((rows, thresholds))
        position_weight = w[:, category.image_index]  # [rows, N]
        seen = np.cumsum(position_weight, axis=1)  # weighted detections at positions <= p
        for t in range(thresholds):
            per_threshold[:, t] = _precision_sum(category, t, weights, position_weight, seen,
                                                 npig.astype(float), matches.recall_thresholds)
        per_threshold[~has_truth] = 0.0
        sums[:, 0] += per_threshold.sum(axis=1)
        sums[:, 1] += per_threshold[:, t50]
        sums[:, 2] += per_threshold[:, t75]
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.stack([sums[:, 0] / (thresholds * recall_points * valid),
                           sums[:, 1] / (recall_points * valid),
                           sums[:, 2] / (recall_points * valid)], axis=1)
    result[valid == 0] = -1.0
    return result


def _precision_sum(category: CategoryMatches, t: int, weights: np.ndarray, position_weight: np.ndarray,
                   seen: np.ndarray, npig: np.ndarray, recall_thresholds: np.ndarray) -> np.ndarray:
    """Per row, the sum over the 101 recall points of interpolated precision at IoU threshold ``t``."""
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
    run_of_tied = category.tie_run[tied]
    hit = category.true_positive[t, tied]
    miss = ~hit & ~category.ignored[t, tied]
    _, first_tied = np.unique(run_of_tied, return_index=True)
    hits_per_run = np.add.reduceat(hit.astype(np.int64), first_tied)
    misses_per_run = np.add.reduceat(miss.astype(np.int64), first_tied)
    ends = np.append(first_tied[1:], tied.size)
    mixed = []
    for start, end in zip(first_tied[(hits_per_run > 0) & (misses_per_run > 0)],
                          ends[(hits_per_run > 0) & (misses_per_run > 0)]):
        members = tied[start:end]
        member_tp = category.true_positive[t, members]
        mixed.append((members, member_tp, ~member_tp & ~category.ignored[t, members]))
    if not mixed:
        return tp, fp
    tp_pieces, fp_pieces = [], []
    done = 0  # columns copied so far
    for members, member_tp, member_fp in mixed:
        first = int(np.searchsorted(tp_positions, members[0]))
        n_tp = int(member_tp.sum())
        tp_pieces.append(tp[:, done:first])
        fp_pieces.append(fp[:, done:first])
        multiplicity = weights[:, category.image_index[members[0]]].astype(float)  # [rows]
        # Counts just before the run: the run's first TP column minus the run's own contribution.
        fp_in_run_before = np.cumsum(member_fp)[member_tp]  # FPs of one copy before each of its TPs
        fp_before_first = fp_in_run_before[0]
        tp_base = tp[:, first] - multiplicity
        fp_base = fp[:, first] - multiplicity * fp_before_first
        n_fp = int(member_fp.sum())
        copies = max(int(multiplicity.max()), 1)
        copy = np.repeat(np.arange(copies), n_tp)  # column order: copy-major, then the run's order
        rank = np.tile(np.arange(1, n_tp + 1), copies)
        fp_rank = np.tile(fp_in_run_before, copies)
        new_tp = tp_base[:, None] + copy * n_tp + rank
        new_fp = fp_base[:, None] + copy * n_fp + fp_rank
        inactive = copy[None, :] >= multiplicity[:, None]
        new_tp[inactive] = np.nan
        new_fp[inactive] = np.nan
        tp_pieces.append(new_tp)
        fp_pieces.append(new_fp)
        done = first + n_tp
    tp_pieces.append(tp[:, done:])
    fp_pieces.append(fp[:, done:])
    return np.concatenate(tp_pieces, axis=1), np.concatenate(fp_pieces, axis=1)

