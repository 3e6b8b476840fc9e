"""The end of a run and of a merge, written once: score, bootstrap, error breakdown, write the result."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ssd_eval.config.schema import Config
from ssd_eval.data import coco as data
from ssd_eval.data.subsets import RANDOM_ALGORITHM, Subset, open_subset, random_subset, select_image_ids, subset_file
from ssd_eval.errors import UserError
from ssd_eval.results.result import EvalResult, result_for, write_result
from ssd_eval.scoring.bootstrap import METHOD, bootstrap_intervals, bootstrap_values, full_set_intervals
from ssd_eval.scoring.breakdown import breakdown_for_run
from ssd_eval.scoring.cocoeval import Scores
from ssd_eval.scoring.matches import Matches, evaluate_matches
from ssd_eval.scoring.metrics import score_detections


def subset_record(config: Config, dataset: data.CocoDataset, subset: Subset | None = None
                  ) -> dict[str, Any] | None:
    """``provenance.subset`` of a run of ``config`` (None without a subset), with the size of the full run it
    stands for. ``subset``: the subset file as the run opened it (else it is opened here)."""
    if config.dataset.subset is None:
        return None
    subset = subset or open_subset(config.dataset.subset, dataset.sha256)
    if subset.algorithm == RANDOM_ALGORITHM and random_subset(dataset.gt, len(subset.image_ids),
                                                              seed=subset.seed) != subset.image_ids:
        raise UserError(f"{subset_file(config.dataset.subset)}: says {RANDOM_ALGORITHM} with seed {subset.seed}, but "
                        "its ids are not that draw (edited?); make it again with python -m ssd_eval.data.subsets")
    skip_unannotated = config.switches()["skip_images_without_annotations"]
    full_run = select_image_ids(dataset, skip_images_without_annotations=skip_unannotated)
    return {"name": subset.name, "ids_sha256": subset.ids_sha256, "images": len(subset.image_ids),
            "algorithm": subset.algorithm, "full_set_images": len(full_run)}


def bootstrap_off(config: Config, image_count: int) -> str | None:
    """Why a run of ``image_count`` images gets no bootstrap intervals under ``config``, or None when it does."""
    boot = config.metrics.bootstrap
    if boot.replicates == 0:
        return "metrics.bootstrap.replicates is 0"
    if boot.max_images is not None and image_count > boot.max_images:
        return (f"{image_count} images > metrics.bootstrap.max_images {boot.max_images} "
                "(set it to null to bootstrap every run)")
    if not image_count:
        return "no images"
    return None


def run_bootstrap(config: Config, gt: dict[str, Any], detections: Iterable[dict], image_ids: Sequence[int],
                  source: str = "detections", matches: Matches | None = None, subset: dict[str, Any] | None = None
                  ) -> tuple[dict[str, dict] | None, dict[str, dict] | None, dict[str, Any]]:
    """(metrics.json ``intervals``, ``full_set_intervals``, ``provenance.bootstrap``) of a scored run: each
    set of intervals None when off (the record says why); the full set's only for a random ``subset`` (its
    ``provenance.subset``). ``matches``: those kept by scoring, else the detections are matched again."""
    boot = config.metrics.bootstrap
    record: dict[str, Any] = {"replicates": 0, "seed": boot.seed, "level": boot.level, "method": METHOD,
                              "unit": "image", "max_images": boot.max_images}
    off = bootstrap_off(config, len(image_ids))
    if off is not None:
        return None, None, {**record, "off": off}
    started = time.perf_counter()
    record["matches_from_scoring"] = matches is not None
    if matches is None:
        switches = config.switches()
        matches = evaluate_matches(gt, detections, image_ids,
                                   crowd_as_ground_truth=switches["crowd_as_ground_truth"],
                                   exclude_categories=switches["exclude_categories"], source=source)
    elif matches.image_ids != sorted({int(i) for i in image_ids}):
        raise RuntimeError("the matches kept by scoring are of other images than the run's")
    matched = time.perf_counter()
    values = bootstrap_values(matches, boot.replicates, boot.seed)
    intervals = bootstrap_intervals(matches, replicates=boot.replicates, seed=boot.seed, level=boot.level,
                                    method=METHOD, values=values)
    done = time.perf_counter()
    record.update(replicates=boot.replicates, match_seconds=round(matched - started, 3),
                  bootstrap_seconds=round(done - matched, 3))
    full_set = None
    if subset is not None and subset.get("algorithm") != RANDOM_ALGORITHM:
        record["full_set_off"] = (f"subset {subset.get('name')} was chosen by "
                                  f"{subset.get('algorithm') or 'an unrecorded rule'}, not at random: its mAP is "
                                  "not a fair draw of the full set's (docs/STATISTICS.md)")
    elif subset is not None:
        extrapolated, why = full_set_intervals(matches, full_set_images=subset["full_set_images"],
                                               replicates=boot.replicates, seed=boot.seed, level=boot.level,
                                               values=values)
        if why:
            record["full_set_off"] = why
        if extrapolated is not None:
            full_set = {name: interval.as_dict() for name, interval in extrapolated.items()}
            record["full_set_seconds"] = round(time.perf_counter() - done, 3)
    return {name: interval.as_dict() for name, interval in intervals.items()}, full_set, record


def score_run(config: Config, gt: dict[str, Any], detections: Callable[[], Iterable[dict]], image_ids: Sequence[int],
              *, count: int, source: str, subset: dict[str, Any] | None, warnings: Sequence[str],
              say: Callable[[str], None]) -> tuple[Scores, dict | None, dict | None, dict[str, Any]]:
    """Score a run's (or a merge's) detections and bootstrap their intervals (``run_bootstrap``).
    ``detections`` gives them afresh for each pass; ``warnings`` go before scoring's own; ``say`` gets
    the progress lines."""
    switches = config.switches()
    say(f"{config.variant}: scoring {count} detections of {len(image_ids)} images with {config.metrics.backend}")
    started = time.perf_counter()
    scores = score_detections(gt, detections(), image_ids, crowd_as_ground_truth=switches["crowd_as_ground_truth"],
                              backend=config.metrics.backend, exclude_categories=switches["exclude_categories"],
                              source=source, streaming=config.metrics.streaming,
                              keep_matches=bootstrap_off(config, len(image_ids)) is None)  # the bootstrap's
    say(f"{config.variant}: scored in {time.perf_counter() - started:.2f} s")
    intervals, full_set, bootstrap = run_bootstrap(config, gt, detections(), image_ids, source=source,
                                                   matches=scores.matches, subset=subset)
    scores.matches = None  # done with: not kept alive in the result
    scores.warnings = [*warnings, *scores.warnings]
    return scores, intervals, full_set, bootstrap


def write_run_result(config: Config, scores: Scores, provenance: dict[str, Any], intervals: dict | None,
                     full_set: dict | None, gt: dict[str, Any], out_dir: Path, image_ids: Sequence[int], *,
                     on_result: Callable[[EvalResult], Any] | None = None) -> EvalResult:
    """Write metrics.json of a scored run, with its intervals and error breakdown (from detections.json,
    already written); then run ``on_result`` (tracking) on the result."""
    result = result_for(config, scores, provenance)
    result.intervals, result.full_set_intervals = intervals, full_set
    result.error_breakdown = breakdown_for_run(config.metrics.error_breakdown, gt, out_dir / "detections.json",
                                               image_ids, config.switches())
    write_result(result, out_dir)
    if on_result is not None:
        on_result(result)
    return result
