"""Measure what the README's "CI on a budget" section states about bootstrap intervals.

    .venv/bin/python tools/bootstrap_study.py [--population 5000] [--subsets 30] [--replicates 200] [--json OUT]

Prints, and with --json writes:

* the sample: the intervals and their cost for the 8 sample images and the 4-image subset sample-4
  (the sample model's own detections, through ``ssd_eval.evaluate``);
* the real COCO subset beside the checkout (../shared/coco-val2017-subset, 200 images, when present): the
  cost of matching and of 1000 replicates for a noisy detector's detections;
* a synthetic population (``synthetic.synthetic_scoring_case``, 100 detections per image): the half-width of
  the 95 % interval at 100 and 500 images (mean over random subsets) and at the whole population, how often
  a subset's interval covers the population's value (single run, and paired against a second detector that
  differs from the first by score noise, as a quantized model from its parent), the subsets' bias and spread.

Not a test: nothing is asserted. Takes a few minutes at the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssd_eval import evaluate  # noqa: E402
from ssd_eval.config.load import load_config  # noqa: E402
from ssd_eval.scoring.bootstrap import (  # noqa: E402
    BOOTSTRAP_METRICS,
    EXTRAPOLATION_DRAWS,
    bootstrap_intervals,
    full_set_intervals,
    weighted_ap,
)
from ssd_eval.scoring.matches import Matches, evaluate_matches  # noqa: E402
from ssd_eval.testing.coverage import coverage_study  # noqa: E402
from ssd_eval.testing.synthetic import noisy_detections, synthetic_scoring_case  # noqa: E402

REAL_SUBSET = ROOT.parent / "shared" / "coco-val2017-subset"


def sample_study() -> dict:
    """Intervals of the sample model on the 8 sample images and on sample-4."""
    found = {}
    with tempfile.TemporaryDirectory() as out:
        for label, overrides in (("sample, 8 images", {}), ("sample-4, 4 images", {"subset": "sample-4"})):
            sets = [("output.dir", f"{out}/{len(found)}", "study")]
            sets += [(f"dataset.{k}", v, "study") for k, v in overrides.items()]
            result = evaluate(load_config(ROOT / "configs" / "sample.yaml", sets), progress=False)
            record = result.provenance["bootstrap"]
            found[label] = {"mAP": result.map, "half_width": {n: (i["high"] - i["low"]) / 2
                                                              for n, i in result.intervals.items()},
                            "interval": {n: [i["low"], i["high"]] for n, i in result.intervals.items()},
                            "match_seconds": record["match_seconds"],
                            "bootstrap_seconds": record["bootstrap_seconds"]}
    return found


def real_subset_study(replicates: int) -> dict | None:
    """Cost of matching and of the replicates on the real 200-image subset, with a noisy detector."""
    if not (REAL_SUBSET / "annotations.json").is_file():
        return None
    gt = json.loads((REAL_SUBSET / "annotations.json").read_text())
    detections = noisy_detections(gt)
    ids = [i["id"] for i in gt["images"]]
    started = time.perf_counter()
    matches = evaluate_matches(gt, detections, ids)
    matched = time.perf_counter()
    intervals = bootstrap_intervals(matches, replicates=replicates, seed=0)
    done = time.perf_counter()
    return {"images": len(ids), "detections": len(detections), "replicates": replicates,
            "match_seconds": matched - started, "bootstrap_seconds": done - matched,
            "mAP": intervals["mAP"].estimate, "half_width": {n: i.half_width for n, i in intervals.items()}}


def score_noise(detections: list[dict], sigma: float, seed: int) -> list[dict]:
    """The detections with Gaussian score noise: a second model that agrees image by image."""
    rng = np.random.default_rng(seed)
    return [dict(d, score=float(np.clip(d["score"] + rng.normal(0, sigma), 0, 1))) for d in detections]


def synthetic_study(population: int, subsets: int, replicates: int) -> dict:
    gt, detections, ids = synthetic_scoring_case(population, 100, seed=0)
    started = time.perf_counter()
    matches = evaluate_matches(gt, detections, ids)
    matched = time.perf_counter()
    full = bootstrap_intervals(matches, replicates=1000, seed=0)
    done = time.perf_counter()
    other = evaluate_matches(gt, score_noise(detections, 0.05, seed=1), ids)
    found: dict = {"population": population, "detections": len(detections),
                   "match_seconds": matched - started, "bootstrap_1000_seconds": done - matched,
                   "full_set": {"mAP": full["mAP"].estimate, "half_width": {n: i.half_width for n, i in full.items()},
                                "bias": {n: i.bias for n, i in full.items()}},
                   "subsets": {}}
    for size in (100, 500):
        single = coverage_study(matches, size, subsets=subsets, replicates=replicates, seed=size)
        paired = coverage_study(matches, size, subsets=subsets, replicates=replicates, seed=size, matches_b=other)
        found["subsets"][size] = {
            "single": {"coverage": single.coverage, "mean_half_width": single.mean_half_width,
                       "bias": single.bias, "spread": single.spread},
            "paired": {"population": paired.population, "coverage": paired.coverage,
                       "mean_half_width": paired.mean_half_width, "bias": paired.bias, "spread": paired.spread},
        }
    return found


def restricted(matches: Matches, members: np.ndarray) -> Matches:
    """The matches of the images at positions ``members`` alone (a subset, scored without the others)."""
    position = np.full(len(matches.image_ids), -1, dtype=np.int64)
    position[members] = np.arange(len(members))
    categories = []
    for category in matches.categories:
        keep = position[category.image_index] >= 0
        categories.append(replace(category, image_index=position[category.image_index[keep]],
                                  true_positive=category.true_positive[:, keep], ignored=category.ignored[:, keep],
                                  tie_run=category.tie_run[keep], gt_count=category.gt_count[members]))
    return Matches([matches.image_ids[i] for i in members], categories, matches.iou_thresholds,
                   matches.recall_thresholds)


def bias_correction_study(population: int, size: int, subsets: int, replicates: int,
                          algorithm: str = "random", draws: int = EXTRAPOLATION_DRAWS) -> dict:
    """Can one subset correct its own small-sample bias? For subsets of ``size`` images of the synthetic
    population (``algorithm``: "random", random draws; "stratified", ``subsets.stratified_subset`` with
    seeds 0, 1, ...), the share of 95 % intervals (mAP) that cover the population's mAP: the percentile
    interval as is, recentered (moved by -bias), basic (moved by -2 x bias: the basic bootstrap's
    centre), and ``uncertainty.full_set_intervals`` (the bias extrapolated to the population)."""
    from ssd_eval.data.subsets import stratified_subset

    gt, detections, ids = synthetic_scoring_case(population, 100, seed=0)
    matches = evaluate_matches(gt, detections, ids)
    truth = weighted_ap(matches, np.ones((1, population), dtype=np.int64))[0, 0]
    rng = np.random.Generator(np.random.PCG64(size))
    position = {image_id: n for n, image_id in enumerate(matches.image_ids)}
    bounds: dict[str, list[tuple[float, float]]] = {"percentile": [], "recentered": [], "basic": [], "full-set": []}
    alphas, refused, estimates = [], [], []
    for s in range(subsets):
        if algorithm == "stratified":
            members = np.array([position[i] for i in stratified_subset(gt, size, seed=s)])
        else:
            members = np.sort(rng.choice(population, size, replace=False))
        subset = restricted(matches, members)
        plain = bootstrap_intervals(subset, replicates=replicates, seed=s)["mAP"]
        estimates.append(plain.estimate)
        for name, shift in (("percentile", 0.0), ("recentered", plain.bias), ("basic", 2 * plain.bias)):
            bounds[name].append((plain.low - shift, plain.high - shift))
        full, why = full_set_intervals(subset, full_set_images=population, replicates=replicates, seed=s,
                                       draws=draws)
        if full is None:
            refused.append(why)
            bounds["full-set"].append((float("nan"), float("nan")))
        else:
            alphas.append(full["mAP"].alpha)
            bounds["full-set"].append((full["mAP"].low, full["mAP"].high))
    return {"population": population, "size": size, "subsets": subsets, "replicates": replicates,
            "algorithm": algorithm, "population_mAP": truth,
            "subset_mAP": {"mean": float(np.mean(estimates)), "min": float(np.min(estimates)),
                           "max": float(np.max(estimates))},
            "coverage": {name: float(np.mean([low <= truth <= high for low, high in rows]))
                         for name, rows in bounds.items()},
            "mean_half_width": {name: float(np.nanmean([(high - low) / 2 for low, high in rows]))
                                for name, rows in bounds.items()},
            "alpha_median": float(np.median(alphas)) if alphas else None, "refused": refused}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=5000)
    parser.add_argument("--subsets", type=int, default=30, help="random subsets per size (default 30)")
    parser.add_argument("--replicates", type=int, default=200, help="replicates per subset (default 200)")
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--bias-correction", type=int, metavar="SIZE",
                        help="only: can a SIZE-image subset correct its own bias? (bias_correction_study)")
    parser.add_argument("--subset-algorithm", choices=("random", "stratified"), default="random",
                        help="with --bias-correction: how the subsets are chosen (default random)")
    args = parser.parse_args()
    if args.bias_correction:
        found = bias_correction_study(args.population, args.bias_correction, args.subsets, args.replicates,
                                      algorithm=args.subset_algorithm)
        mean = found["subset_mAP"]
        print(f"{found['subsets']} {found['algorithm']} subsets of {found['size']} of {found['population']} "
              f"synthetic images (population mAP {found['population_mAP']:.4f}; subsets' mAP {mean['mean']:.4f}, "
              f"{mean['min']:.4f} to {mean['max']:.4f}), 95 % intervals covering it, by shift:")
        for name, share in found["coverage"].items():
            print(f"  {name}: {share:.0%} (mean half-width {found['mean_half_width'][name]:.4f})")
        print(f"  full-set: fitted alpha median {found['alpha_median']}; refused in {len(found['refused'])} "
              f"subsets {sorted(set(found['refused']))[:3]}")
        if args.json:
            Path(args.json).write_text(json.dumps(found, indent=1, default=float) + "\n")
        return 0
    report = {"sample": sample_study(), "real_subset": real_subset_study(1000)}
    print("sample:")
    for label, row in report["sample"].items():
        print(f"  {label}: mAP {row['mAP']:.4f}, half-width " +
              ", ".join(f"{n} {row['half_width'][n]:.4f}" for n in BOOTSTRAP_METRICS) +
              f"; matching {row['match_seconds']:.3f} s, 1000 replicates {row['bootstrap_seconds']:.3f} s")
    real = report["real_subset"]
    if real:
        print(f"real subset: {real['images']} images, {real['detections']} detections: matching "
              f"{real['match_seconds']:.2f} s, {real['replicates']} replicates {real['bootstrap_seconds']:.2f} s, "
              f"mAP {real['mAP']:.4f} ± {real['half_width']['mAP']:.4f}")
    report["synthetic"] = synthetic = synthetic_study(args.population, args.subsets, args.replicates)
    print(f"synthetic population: {synthetic['population']} images, {synthetic['detections']} detections: "
          f"matching {synthetic['match_seconds']:.1f} s, 1000 replicates {synthetic['bootstrap_1000_seconds']:.1f} s")
    print(f"  {synthetic['population']} images: mAP {synthetic['full_set']['mAP']:.4f}, half-width "
          + ", ".join(f"{n} {v:.4f}" for n, v in synthetic["full_set"]["half_width"].items()))
    for size, row in synthetic["subsets"].items():
        single, paired = row["single"], row["paired"]
        print(f"  {size} images ({args.subsets} subsets x {args.replicates} replicates): single run: half-width "
              f"{single['mean_half_width']['mAP']:.4f}, covers the population mAP {single['coverage']['mAP']:.0%}, "
              f"bias {single['bias']['mAP']:+.4f}, spread {single['spread']['mAP']:.4f}; paired difference "
              f"(population {paired['population']['mAP']:+.4f}): half-width {paired['mean_half_width']['mAP']:.4f}, "
              f"covers {paired['coverage']['mAP']:.0%}, bias {paired['bias']['mAP']:+.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
