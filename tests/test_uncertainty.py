"""The bootstrap's weighted accumulate against pycocotools: every weight 1 gives pycocotools' mAP/AP50/AP75,
integer weights give pycocotools on a file in which the drawn images are literally duplicated (the naive
bootstrap), weight 0 drops an image; intervals are seeded, paired intervals narrower than unpaired ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_metrics import synthetic_case

from ssd_eval.config.protocols import INC_DROPPED_CATEGORIES
from ssd_eval.scoring import bootstrap as uncertainty
from ssd_eval.scoring.bootstrap import (
    BOOTSTRAP_METRICS,
    MIN_EXTRAPOLATION_IMAGES,
    Interval,
    bootstrap_intervals,
    bootstrap_weights,
    extrapolated_bias,
    full_set_intervals,
    paired_intervals,
    percentile_interval,
    weighted_ap,
)
from ssd_eval.scoring.matches import evaluate_matches
from ssd_eval.scoring.metrics import score_detections
from ssd_eval.testing import coverage
from ssd_eval.testing.synthetic import noisy_detections, synthetic_scoring_case
from ssd_eval.testing.wrappers import bootstrap_map, paired_bootstrap_difference

from helpers import REAL_SHAPED_IDS, real_shaped_sample

EXACT = 1e-12
REPO = Path(__file__).resolve().parents[1]


def quantized(detections: list[dict], step: float) -> list[dict]:
    """The detections with scores rounded to multiples of ``step``: many exact ties, also within an image."""
    return [dict(d, score=round(round(d["score"] / step) * step, 10)) for d in detections]


def duplicated(gt: dict, detections: list[dict], image_ids: list[int], multiplicity: np.ndarray):
    """The literal bootstrap data set: image i appears multiplicity[i] times under new ids (its copies next to
    each other, in image order), with its annotations and detections."""
    annotations, results = {}, {}
    for ann in gt["annotations"]:
        annotations.setdefault(ann["image_id"], []).append(ann)
    for det in detections:
        results.setdefault(det["image_id"], []).append(det)
    entries = {i["id"]: i for i in gt["images"]}
    new_gt = {"images": [], "annotations": [], "categories": gt["categories"]}
    new_detections = []
    for image_id, copies in zip(image_ids, multiplicity):
        for _ in range(int(copies)):
            new_id = len(new_gt["images"]) + 1
            new_gt["images"].append(dict(entries[image_id], id=new_id))
            for ann in annotations.get(image_id, []):
                new_gt["annotations"].append(dict(ann, id=len(new_gt["annotations"]) + 1, image_id=new_id))
            new_detections += [dict(det, image_id=new_id) for det in results.get(image_id, [])]
    return new_gt, new_detections, list(range(1, len(new_gt["images"]) + 1))


def unit_weights(matches) -> np.ndarray:
    return np.ones((1, len(matches.image_ids)), dtype=np.int64)


CASES = {
    "continuous scores": lambda: synthetic_case(images=80, per_image=12, seed=1),
    "scores with ties": lambda: (lambda gt, d: (gt, quantized(d, 0.05)))(*synthetic_case(80, 12, seed=2)),
    "100 per image cap": lambda: synthetic_scoring_case(60, detections_per_image=130, seed=3)[:2],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("protocol", [{}, {"crowd_as_ground_truth": True},
                                      {"exclude_categories": ("c3", "c13")}])
def test_unit_weights_give_pycocotools_stats(case, protocol):
    gt, detections = CASES[case]()
    if "exclude_categories" in protocol and case == "100 per image cap":
        protocol = {"exclude_categories": ("person", "car")}
    image_ids = [i["id"] for i in gt["images"]]
    reference = score_detections(gt, detections, image_ids, **protocol).stats[:3]
    got = weighted_ap(evaluate_matches(gt, detections, image_ids, **protocol), np.ones((1, len(image_ids)), int))
    assert 0.05 < reference[0] < 0.95
    assert np.abs(got[0] - reference).max() <= EXACT


@pytest.mark.parametrize("protocol", ["coco", "inc"])
def test_unit_weights_give_pycocotools_stats_on_the_real_subset(coco_subset, protocol):
    gt = json.loads((coco_subset / "annotations.json").read_text())
    detections = noisy_detections(gt)
    image_ids = [i["id"] for i in gt["images"]]
    options = {} if protocol == "coco" else {"crowd_as_ground_truth": True,
                                             "exclude_categories": INC_DROPPED_CATEGORIES}
    reference = score_detections(gt, detections, image_ids, **options).stats[:3]
    got = weighted_ap(evaluate_matches(gt, detections, image_ids, **options), np.ones((1, len(image_ids)), int))
    assert 0.05 < reference[0] < 0.9
    assert np.abs(got[0] - reference).max() <= EXACT


@pytest.mark.parametrize("step", [None, 0.2])
def test_integer_weights_equal_pycocotools_on_literally_duplicated_images(step):
    gt, detections = synthetic_case(images=40, per_image=8, seed=4)
    if step:  # coarse scores: same-image, same-category runs of equal score mixing hits and misses
        detections = quantized(detections, step)
    image_ids = sorted(i["id"] for i in gt["images"])
    matches = evaluate_matches(gt, detections, image_ids)
    weights = bootstrap_weights(len(image_ids), 12, seed=7)
    got = weighted_ap(matches, weights)
    for row, multiplicity in zip(got, weights):
        reference = score_detections(*duplicated(gt, detections, image_ids, multiplicity)).stats[:3]
        assert np.abs(row - reference).max() <= EXACT
    if step:
        assert any((c.tie_run >= 0).any() for c in matches.categories)


def test_mixed_tie_runs_need_their_copy_by_copy_order(monkeypatch):
    """Without the copy-by-copy expansion the tied case above would differ from the duplicated file."""
    gt, detections = synthetic_case(images=40, per_image=8, seed=4)
    detections = quantized(detections, 0.2)
    image_ids = sorted(i["id"] for i in gt["images"])
    matches = evaluate_matches(gt, detections, image_ids)
    weights = bootstrap_weights(len(image_ids), 12, seed=7)
    exact = weighted_ap(matches, weights)
    monkeypatch.setattr(uncertainty, "_expand_mixed_ties", lambda category, t, positions, tp, fp, w: (tp, fp))
    assert np.abs(weighted_ap(matches, weights) - exact).max() > 1e-4


def test_zero_weights_score_the_other_images_alone():
    gt, detections, image_ids = synthetic_scoring_case(50, detections_per_image=40, seed=5)
    matches = evaluate_matches(gt, detections, image_ids)
    kept = image_ids[::3]
    weights = np.isin(matches.image_ids, kept).astype(np.int64)[None, :]
    reference = score_detections(gt, [d for d in detections if d["image_id"] in set(kept)], kept).stats[:3]
    assert np.abs(weighted_ap(matches, weights)[0] - reference).max() <= EXACT


def test_a_replicate_without_ground_truth_is_undefined():
    gt, detections = synthetic_case(images=10, per_image=3, seed=6)
    empty = {"id": 999, "file_name": "999.jpg", "width": 640, "height": 480}
    gt["images"].append(empty)
    image_ids = [i["id"] for i in gt["images"]]
    matches = evaluate_matches(gt, detections, image_ids)
    only_empty = (np.asarray(matches.image_ids) == 999).astype(np.int64)[None, :] * 3
    assert weighted_ap(matches, only_empty).tolist() == [[-1.0, -1.0, -1.0]]


def test_bootstrap_weights_draw_each_row_with_replacement():
    weights = bootstrap_weights(50, 200, seed=3)
    assert weights.shape == (200, 50) and (weights.sum(axis=1) == 50).all() and (weights >= 0).all()
    assert (bootstrap_weights(50, 200, seed=3) == weights).all()
    assert not (bootstrap_weights(50, 200, seed=4) == weights).all()
    assert abs((weights == 0).mean() - (1 - 1 / 50) ** 50) < 0.02  # about 36.4 % of images left out


def test_bootstrap_map_intervals_are_seeded_and_hold_their_estimate():
    gt, detections = synthetic_case(images=150, per_image=10, seed=8)
    image_ids = [i["id"] for i in gt["images"]]
    intervals = bootstrap_map(gt, detections, image_ids, replicates=300, seed=5)
    assert list(intervals) == list(BOOTSTRAP_METRICS)
    assert bootstrap_map(gt, detections, image_ids, replicates=300, seed=5) == intervals
    reference = score_detections(gt, detections, image_ids).stats
    for k, name in enumerate(BOOTSTRAP_METRICS):
        interval = intervals[name]
        assert isinstance(interval, Interval)
        assert (interval.replicates, interval.seed, interval.level) == (300, 5, 0.95)
        assert abs(interval.estimate - reference[k]) <= EXACT
        assert interval.low < interval.high and 0 < interval.half_width < 0.2
        assert interval.as_dict()["estimate"] == interval.estimate
    assert bootstrap_map(gt, detections, image_ids, replicates=300, seed=6)["mAP"] != intervals["mAP"]


def test_paired_interval_is_narrower_than_unpaired_when_the_models_agree_image_by_image():
    gt, detections = synthetic_case(images=200, per_image=10, seed=9)
    image_ids = [i["id"] for i in gt["images"]]
    rng = np.random.default_rng(0)
    # b: a with a little score noise, as a quantized model differs from its fp32 parent.
    other = [dict(d, score=float(np.clip(d["score"] + rng.normal(0, 0.02), 0, 1))) for d in detections]
    paired = paired_bootstrap_difference(gt, detections, other, image_ids, replicates=400, seed=1)
    matches_a, matches_b = evaluate_matches(gt, detections, image_ids), evaluate_matches(gt, other, image_ids)
    a = weighted_ap(matches_a, bootstrap_weights(len(image_ids), 400, seed=1))
    b = weighted_ap(matches_b, bootstrap_weights(len(image_ids), 400, seed=2))  # independent draws
    stats_a = score_detections(gt, detections, image_ids).stats
    stats_b = score_detections(gt, other, image_ids).stats
    for k, name in enumerate(BOOTSTRAP_METRICS):
        unpaired = percentile_interval(a[:, k] - b[:, k], 0.0, level=0.95, seed=1)
        assert paired[name].half_width < unpaired.half_width / 3
        assert abs(paired[name].estimate - (stats_a[k] - stats_b[k])) <= EXACT
    assert paired_intervals(matches_a, matches_b, replicates=400, seed=1) == paired


def test_paired_difference_of_identical_detections_is_exactly_zero():
    gt, detections = synthetic_case(images=30, per_image=5, seed=10)
    image_ids = [i["id"] for i in gt["images"]]
    for interval in paired_bootstrap_difference(gt, detections, detections, image_ids, replicates=50).values():
        assert (interval.low, interval.high, interval.estimate) == (0.0, 0.0, 0.0)


def test_no_detections_gives_zero():
    gt, _ = synthetic_case(images=20, per_image=0, seed=11)
    image_ids = [i["id"] for i in gt["images"]]
    intervals = bootstrap_intervals(evaluate_matches(gt, [], image_ids), replicates=20)
    assert all((i.low, i.high, i.estimate) == (0.0, 0.0, 0.0) for i in intervals.values())


def test_wrong_weights_and_levels_are_refused():
    gt, detections = synthetic_case(images=5, per_image=2, seed=12)
    matches = evaluate_matches(gt, detections, [i["id"] for i in gt["images"]])
    with pytest.raises(ValueError):
        weighted_ap(matches, np.ones((1, 4)))
    with pytest.raises(ValueError):
        weighted_ap(matches, np.full((1, 5), 0.5))
    with pytest.raises(ValueError):
        weighted_ap(matches, -unit_weights(matches))
    with pytest.raises(ValueError):
        bootstrap_intervals(matches, level=1.5)


def test_recentered_intervals_move_the_percentile_interval_by_the_bootstrap_bias():
    gt, detections = synthetic_case(images=150, per_image=10, seed=8)
    image_ids = [i["id"] for i in gt["images"]]
    matches = evaluate_matches(gt, detections, image_ids)
    percentile = bootstrap_intervals(matches, replicates=300, seed=5)
    recentered = bootstrap_intervals(matches, replicates=300, seed=5, method="recentered")
    for name in BOOTSTRAP_METRICS:
        p, r = percentile[name], recentered[name]
        assert (p.method, r.method) == ("percentile", "recentered") and p.bias == r.bias
        assert r.low == pytest.approx(p.low - p.bias, abs=1e-15) and r.high == pytest.approx(p.high - p.bias, abs=1e-15)
        assert r.low < r.estimate < r.high
    assert percentile["mAP"].bias > 0  # the upward bias of a bootstrapped AP (module docstring, "Bias")
    with pytest.raises(ValueError):
        bootstrap_intervals(matches, method="bca")


def test_coverage_study_reports_coverage_bias_and_spread():
    gt, detections = synthetic_case(images=120, per_image=6, seed=13)
    matches = evaluate_matches(gt, detections, [i["id"] for i in gt["images"]])
    study = coverage.coverage_study(matches, 40, subsets=4, replicates=40, seed=2)
    assert (study.subset_size, study.subsets, study.replicates) == (40, 4, 40)
    assert study.population["mAP"] == pytest.approx(weighted_ap(matches, unit_weights(matches))[0][0], abs=0)
    for name in BOOTSTRAP_METRICS:
        assert 0 <= study.coverage[name] <= 1 and study.mean_half_width[name] > 0 and study.spread[name] > 0
    paired = coverage.coverage_study(matches, 40, subsets=2, replicates=20, matches_b=matches)
    assert paired.population == {name: 0.0 for name in BOOTSTRAP_METRICS} and paired.coverage["mAP"] == 1.0


# --------------------------------------------------------------------------- runs and results (ssd_eval.results.paired)


def test_paired_drop_is_the_drop_ratio_per_replicate():
    from ssd_eval.results.paired import paired_drop

    gt, detections = synthetic_case(images=120, per_image=8, seed=14)
    image_ids = [i["id"] for i in gt["images"]]
    rng = np.random.default_rng(3)
    other = [dict(d, score=float(np.clip(d["score"] + rng.normal(0, 0.05), 0, 1))) for d in detections]
    parent, child = evaluate_matches(gt, detections, image_ids), evaluate_matches(gt, other, image_ids)
    drop = paired_drop(child, parent, replicates=300, seed=4)
    p, q = score_detections(gt, detections, image_ids).stats[0], score_detections(gt, other, image_ids).stats[0]
    assert drop.estimate == pytest.approx((p - q) / p * 100, abs=1e-9)
    assert (drop.replicates, drop.seed, drop.level) == (300, 4, 0.95) and drop.low < drop.estimate < drop.high
    weights = bootstrap_weights(len(image_ids), 300, 4)
    p_r, q_r = weighted_ap(parent, weights)[:, 0], weighted_ap(child, weights)[:, 0]
    assert [drop.low, drop.high] == pytest.approx(np.percentile((p_r - q_r) / p_r * 100, [2.5, 97.5]), abs=1e-12)
    same = paired_drop(parent, parent, replicates=50, seed=0)
    assert (same.low, same.high, same.estimate) == (0.0, 0.0, 0.0)


def test_result_matches_refuse_detections_of_another_run_and_say_when_they_are_missing(tmp_path):
    from pathlib import Path

    from ssd_eval.config.load import load_config
    from ssd_eval.engine.pipeline import evaluate
    from ssd_eval.errors import UserError
    from ssd_eval.results.paired import NoPairing, ResultMatches
    from ssd_eval.results.result import read_metrics_file

    root = Path(__file__).resolve().parents[1]

    evaluate(load_config(root / "configs" / "sample.yaml", [("output.dir", str(tmp_path / "run"))]), progress=False)
    result = read_metrics_file(tmp_path / "run" / "metrics.json")
    matches = ResultMatches().matches(result)
    assert len(matches.image_ids) == 8
    assert weighted_ap(matches, unit_weights(matches))[0][0] == pytest.approx(result["mAP"], abs=1e-12)
    detections = json.loads((tmp_path / "run" / "detections.json").read_text())
    (tmp_path / "run" / "detections.json").write_text(json.dumps(detections[1:]))
    with pytest.raises(UserError, match="not the file that run scored"):
        ResultMatches().matches(result)
    detections[0] = dict(detections[0], category_id=next(d["category_id"] for d in detections
                                                          if d["category_id"] != detections[0]["category_id"]))
    (tmp_path / "run" / "detections.json").write_text(json.dumps(detections))
    with pytest.raises(UserError, match="not of the same run"):
        ResultMatches().matches(result)
    (tmp_path / "run" / "detections.json").unlink()
    with pytest.raises(NoPairing, match="not found"):
        ResultMatches().matches(result)
    moved = dict(result, provenance=dict(result["provenance"], annotations={"path": str(tmp_path / "gone.json"),
                                                                           "sha256": "0" * 64}))
    with pytest.raises(NoPairing, match="is not here"):
        ResultMatches().matches(moved)


# --------------------------------------------------------------------------- issue 23: bounds, boundaries, skips
# Every bound is checked against np.percentile of the very replicates, drawn here from bootstrap_weights and
# weighted_ap (their exactness is tested above), at the tails written out by hand for each level.

LEVEL_TAILS = [(0.95, [2.5, 97.5]), (0.90, [5.0, 95.0])]
REPLICATES, SEED = 400, 11


def real_shaped(gt: dict, detections: list[dict], seed: int = 0) -> tuple[dict, list[dict], list[int]]:
    """``gt`` and ``detections`` with their images renumbered in order to val2017-like ids of 3 to 6 digits (139 and
    802, then random ids up to 581781, as the real val2017 ids run)."""
    old = sorted(image["id"] for image in gt["images"])
    rng = np.random.default_rng(seed)
    drawn = rng.choice(np.arange(1000, 581782), len(old) - 2, replace=False)
    new_id = dict(zip(old, sorted([139, 802, *(int(i) for i in drawn)]), strict=True))
    gt = dict(gt, images=[dict(i, id=new_id[i["id"]]) for i in gt["images"]],
              annotations=[dict(a, image_id=new_id[a["image_id"]]) for a in gt["annotations"]])
    return gt, [dict(d, image_id=new_id[d["image_id"]]) for d in detections], sorted(new_id.values())


@pytest.fixture(scope="module")
def parent_and_child():
    """(gt, parent detections, child detections, ids, parent matches, child matches): 150 real-shaped images, the
    child's scores a little noisy, as a quantized model's differ from its fp32 parent's."""
    gt, parent, ids = real_shaped(*synthetic_case(images=150, per_image=10, seed=8))
    rng = np.random.default_rng(3)
    child = [dict(d, score=float(np.clip(d["score"] + rng.normal(0, 0.05), 0, 1))) for d in parent]
    return gt, parent, child, ids, evaluate_matches(gt, parent, ids), evaluate_matches(gt, child, ids)


def replicates_of(matches) -> np.ndarray:
    return weighted_ap(matches, bootstrap_weights(len(matches.image_ids), REPLICATES, SEED))


@pytest.mark.parametrize("level, tails", LEVEL_TAILS, ids=["level-0.95", "level-0.90"])
def test_a_runs_interval_is_the_replicates_percentiles_at_its_level(parent_and_child, level, tails):
    from ssd_eval.config.load import load_config
    from ssd_eval.engine.finish import run_bootstrap

    gt, parent, _, ids, matches, _ = parent_and_child
    config = load_config(REPO / "configs" / "sample.yaml", [("metrics.bootstrap.replicates", REPLICATES, "test"),
                                                            ("metrics.bootstrap.seed", SEED, "test"),
                                                            ("metrics.bootstrap.level", level, "test")])
    intervals, _, record = run_bootstrap(config, gt, parent, ids)  # metrics.json's intervals
    values = replicates_of(matches)
    assert (values != -1).all()
    for k, name in enumerate(BOOTSTRAP_METRICS):
        expected = np.percentile(values[:, k], tails).tolist()
        assert [intervals[name]["low"], intervals[name]["high"]] == pytest.approx(expected, abs=1e-12)
        assert intervals[name]["level"] == level and intervals[name]["replicates"] == REPLICATES
        direct = bootstrap_intervals(matches, replicates=REPLICATES, seed=SEED, level=level)[name]
        assert [direct.low, direct.high] == pytest.approx(expected, abs=1e-12)
    assert record["level"] == level


@pytest.mark.parametrize("level, tails", LEVEL_TAILS, ids=["level-0.95", "level-0.90"])
def test_a_paired_difference_is_the_percentiles_of_the_replicates_differences(parent_and_child, level, tails):
    from ssd_eval.results.paired import paired_difference

    _, _, _, _, parent, child = parent_and_child
    intervals = paired_difference(child, parent, replicates=REPLICATES, seed=SEED, level=level)
    differences = replicates_of(child) - replicates_of(parent)  # both sides on the same resampled images
    for k, name in enumerate(BOOTSTRAP_METRICS):
        assert [intervals[name].low, intervals[name].high] == pytest.approx(
            np.percentile(differences[:, k], tails).tolist(), abs=1e-12)
        assert intervals[name].level == level and intervals[name].low < intervals[name].high


@pytest.mark.parametrize("level, tails", LEVEL_TAILS, ids=["level-0.95", "level-0.90"])
def test_a_drop_ratio_interval_is_the_percentiles_of_the_replicates_drops(parent_and_child, level, tails):
    from ssd_eval.results.paired import paired_drop

    _, _, _, _, parent, child = parent_and_child
    drop = paired_drop(child, parent, replicates=REPLICATES, seed=SEED, level=level)
    p, q = replicates_of(parent)[:, 0], replicates_of(child)[:, 0]
    assert (p > 0).all()
    assert [drop.low, drop.high] == pytest.approx(np.percentile((p - q) / p * 100, tails).tolist(), abs=1e-12)
    assert drop.level == level and drop.low < drop.high


@pytest.mark.parametrize("images, bootstrapped", [(1999, True), (2000, True), (2001, False)],
                         ids=["one-below", "exactly-max-images", "one-above"])
def test_a_run_of_exactly_max_images_is_bootstrapped(images, bootstrapped):
    from ssd_eval.config.load import load_config
    from ssd_eval.engine.finish import bootstrap_off

    config = load_config(REPO / "configs" / "sample.yaml", [("metrics.bootstrap.max_images", 2000, "test")])
    why = f"{images} images > metrics.bootstrap.max_images 2000 (set it to null to bootstrap every run)"
    assert bootstrap_off(config, images) == (None if bootstrapped else why)


def test_runs_that_skipped_a_bad_image_are_paired_on_the_images_they_scored(tmp_path):
    """dataset.on_bad_image: skip. Pairing rebuilds each run's image set from its settings and checks it against
    image_ids_sha256: the skipped image must be left out, else the table's drop ± ci (and the gate's ci95) say n/a."""
    from ssd_eval.config.load import load_config
    from ssd_eval.engine.pipeline import evaluate
    from ssd_eval.reports.table import build_rows
    from ssd_eval.results.index import load_results
    from ssd_eval.results.paired import ResultMatches, paired_drop

    annotations, images = real_shaped_sample(tmp_path / "coco", REPO / "data" / "sample")
    broken = REAL_SHAPED_IDS[4]  # 10764
    (images / f"{broken:012d}.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    for name in ("sample", "sample-int8"):
        evaluate(load_config(REPO / "configs" / f"{name}.yaml", [
            ("dataset.annotations", str(annotations), "test"), ("dataset.images", str(images), "test"),
            ("dataset.on_bad_image", "skip", "test"), ("output.dir", str(tmp_path / "results" / "{run}"), "test")]),
            progress=False)
    results = load_results(tmp_path / "results", include_partial=True)  # other annotations: a "partial" run
    child, parent = (next(r for r in results if r["variant"] == v) for v in ("sample-int8", "sample"))
    assert [s["image_id"] for s in child["provenance"]["skipped_images"]] == [broken]
    matcher = ResultMatches()
    scored = [i for i in REAL_SHAPED_IDS if i != broken]
    assert matcher.matches(parent).image_ids == scored == matcher.matches(child).image_ids
    drop = paired_drop(matcher.matches(child), matcher.matches(parent), replicates=1000, seed=0)
    row = next(r for r in build_rows(results) if r["variant"] == "sample-int8")
    # Paired on the 7 images both scored (not n/a); the interval is not centred on the point, so [lo, hi].
    assert row["drop_ci"] == f"{drop.estimate:.2f} [{drop.low:.2f}, {drop.high:.2f}]"


# --------------------------------------------------------------------------- a subset's full set (issue 14)

@pytest.mark.parametrize("c, alpha, size, full", [(1.56, 0.65, 500, 5000), (0.4, 1.0, 800, 5000),
                                                  (2.0, 0.3, 400, 40504)])
def test_extrapolated_bias_is_exact_for_a_power_law(c, alpha, size, full):
    def law(m: int) -> float:  # a metric's mean on m random images, minus its limit
        return c * m ** -alpha

    assert extrapolated_bias(law(size // 4) - law(size // 2), size, full, alpha) == pytest.approx(
        law(size) - law(full), rel=1e-12)


def test_full_set_intervals_need_a_large_enough_proper_subset():
    gt, detections, ids = synthetic_scoring_case(40, 20, seed=3)
    matches = evaluate_matches(gt, detections, ids)
    intervals, why = full_set_intervals(matches, full_set_images=5000, replicates=50)
    assert intervals is None and "40 images" in why and str(MIN_EXTRAPOLATION_IMAGES) in why


@pytest.fixture(scope="module")
def subset_matches():
    """500 synthetic images with 20 detections each: the smallest subset full_set_intervals accepts."""
    gt, detections, ids = synthetic_scoring_case(MIN_EXTRAPOLATION_IMAGES, 20, seed=5)
    return evaluate_matches(gt, detections, ids)


def test_full_set_intervals_shift_the_percentile_interval_down_by_the_bias_and_are_seeded(subset_matches):
    intervals, why = full_set_intervals(subset_matches, full_set_images=5000, replicates=200, seed=7, draws=100)
    assert "mAP" in intervals
    for name in set(BOOTSTRAP_METRICS) - set(intervals):  # a metric left out is said why
        assert f"{name} on an eighth, a quarter and a half" in why
    plain = bootstrap_intervals(subset_matches, replicates=200, seed=7)
    for name, interval in intervals.items():
        assert interval.method == "full-set" and interval.full_set_images == 5000 and interval.alpha > 0
        extra = interval.bias - plain[name].bias  # what was added to the bootstrap's own bias
        assert extra > 0  # a small set's AP is biased upward, so the full set's estimate is lower
        assert interval.estimate == pytest.approx(plain[name].estimate - extra, abs=1e-12)
        assert (interval.low, interval.high) == pytest.approx(
            (plain[name].low - interval.bias, plain[name].high - interval.bias), abs=1e-12)
        assert interval.low < interval.estimate < interval.high
        assert interval.as_dict()["alpha"] == interval.alpha
    again, _ = full_set_intervals(subset_matches, full_set_images=5000, replicates=200, seed=7, draws=100)
    assert again == intervals
    nearer, _ = full_set_intervals(subset_matches, full_set_images=1000, replicates=200, seed=7, draws=100)
    assert all(nearer[n].estimate > intervals[n].estimate for n in intervals)  # less bias to remove
    assert "alpha" not in plain["mAP"].as_dict()  # plain intervals keep their fields


def test_full_set_intervals_refuse_the_whole_set(subset_matches):
    intervals, why = full_set_intervals(subset_matches, full_set_images=MIN_EXTRAPOLATION_IMAGES, replicates=20)
    assert intervals is None and "whole annotation file" in why


def test_a_subset_run_records_its_full_set_intervals_or_why_not(tmp_path):
    from ssd_eval.config.load import load_config
    from ssd_eval.data.subsets import ALGORITHM, RANDOM_ALGORITHM
    from ssd_eval.engine.finish import run_bootstrap

    gt, detections, ids = synthetic_scoring_case(1000, 20, seed=5)
    half = ids[:500]
    detections = [d for d in detections if d["image_id"] <= half[-1]]  # a run's detections: its images only
    config = load_config(REPO / "configs" / "sample.yaml", [("metrics.bootstrap.replicates", 100, "test")])
    random_subset = {"name": "r-500", "ids_sha256": "0" * 64, "images": 500, "algorithm": RANDOM_ALGORITHM,
                     "full_set_images": 1000}
    intervals, full_set, record = run_bootstrap(config, gt, detections, half, subset=random_subset)
    assert full_set["mAP"]["full_set_images"] == 1000 and full_set["mAP"]["method"] == "full-set"
    larger = run_bootstrap(config, gt, detections, half, subset=dict(random_subset, full_set_images=1037))[1]
    assert larger["mAP"]["full_set_images"] == 1037  # the size the subset record gives
    assert full_set["mAP"]["estimate"] < intervals["mAP"]["estimate"] and record["full_set_seconds"] >= 0
    assert intervals["mAP"]["estimate"] - full_set["mAP"]["estimate"] == pytest.approx(
        full_set["mAP"]["bias"] - intervals["mAP"]["bias"], abs=1e-12)  # the same replicates on both
    assert run_bootstrap(config, gt, detections, half)[1] is None  # not a subset run: no extrapolation
    stratified = dict(random_subset, algorithm=ALGORITHM)
    _, none, record = run_bootstrap(config, gt, detections, half, subset=stratified)
    assert none is None and f"chosen by {ALGORITHM}, not at random" in record["full_set_off"]
    small = run_bootstrap(config, gt, [d for d in detections if d["image_id"] <= ids[7]], ids[:8],
                          subset=random_subset)
    assert small[1] is None and "8 images" in small[2]["full_set_off"]


def test_the_full_set_of_a_protocol_that_skips_unannotated_images_counts_annotated_ones(tmp_path):
    """subset_record gives the size of the full run the subset stands for: the sample's 8 images, of which
    one has no annotation (left out where the protocol skips such images)."""
    from ssd_eval.config.load import load_config
    from ssd_eval.data.coco import load_annotations
    from ssd_eval.data.subsets import make_subset, write_subset
    from ssd_eval.engine.finish import subset_record

    sample = REPO / "data" / "sample"
    path = write_subset(tmp_path / "r4.json", make_subset(sample / "annotations.json", 4, name="r4",
                                                          algorithm="random"))
    dataset = load_annotations(sample / "annotations.json", sample / "images")
    for skip, expected in ((False, 8), (True, 7)):
        config = load_config(REPO / "configs" / "sample.yaml", [("dataset.subset", str(path), "test"),
                                                                ("dataset.skip_images_without_annotations", skip,
                                                                 "test")])
        assert subset_record(config, dataset)["full_set_images"] == expected
