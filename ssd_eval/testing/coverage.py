"""How well the bootstrap's intervals cover the truth: the study behind docs/STATISTICS.md (tools/bootstrap_study.py
runs it). Dev only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssd_eval.scoring.bootstrap import BOOTSTRAP_METRICS, _check_level, bootstrap_weights, weighted_ap
from ssd_eval.scoring.matches import Matches


@dataclass(frozen=True)
class CoverageStudy:
    """How often subset intervals cover the whole population's value (per metric), and the subsets' bias."""

    population: dict[str, float]  # the metric on every image (or a - b when paired)
    subset_size: int
    subsets: int
    replicates: int
    level: float
    coverage: dict[str, float]  # share of subsets whose interval holds the population value
    mean_half_width: dict[str, float]
    bias: dict[str, float]  # mean subset estimate - population value
    spread: dict[str, float]  # standard deviation of the subset estimates


def coverage_study(matches: Matches, subset_size: int, *, subsets: int = 50, replicates: int = 500,
                   seed: int = 0, level: float = 0.95, matches_b: Matches | None = None) -> CoverageStudy:
    """Draw random subsets of a population's images and measure how often their bootstrap intervals
    (paired a - b when ``matches_b`` is given) cover the population's value."""
    _check_level(level)
    population_size = len(matches.image_ids)
    if not 1 <= subset_size <= population_size:
        raise ValueError(f"subset_size must be between 1 and {population_size}")
    if matches_b is not None and matches_b.image_ids != matches.image_ids:
        raise ValueError("both sides must be evaluated on the same image ids")

    def metric(weights: np.ndarray) -> np.ndarray:
        value = weighted_ap(matches, weights)
        return value if matches_b is None else value - weighted_ap(matches_b, weights)

    population = metric(np.ones((1, population_size), dtype=np.int64))[0]
    rng = np.random.Generator(np.random.PCG64(seed))
    estimates, lows, highs = [], [], []
    for s in range(subsets):
        members = np.sort(rng.choice(population_size, subset_size, replace=False))
        indicator = np.zeros((1, population_size), dtype=np.int64)
        indicator[0, members] = 1
        weights = np.zeros((replicates, population_size), dtype=np.int64)
        weights[:, members] = bootstrap_weights(subset_size, replicates, seed + 1 + s)
        values = metric(weights)
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(values, [tail, 100 - tail], axis=0)
        estimates.append(metric(indicator)[0])
        lows.append(low)
        highs.append(high)
    estimates, lows, highs = np.array(estimates), np.array(lows), np.array(highs)
    covered = ((lows <= population) & (population <= highs)).mean(axis=0)

    def named(values: np.ndarray) -> dict[str, float]:
        return {name: float(v) for name, v in zip(BOOTSTRAP_METRICS, values)}

    return CoverageStudy(named(population), subset_size, subsets, replicates, level, named(covered),
                         named(((highs - lows) / 2).mean(axis=0)), named(estimates.mean(axis=0) - population),
                         named(estimates.std(axis=0)))
