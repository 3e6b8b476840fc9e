"""The per-detection match table that streaming keeps and the bootstrap reweights.

``PycocotoolsMatcher`` runs pycocotools' ``COCOeval.evaluate()`` a chunk of images at a time (matches never
cross images), keeps what ``accumulate`` reads (scores, ranks, true-positive / ignored bits, non-ignored ground
truth) and gives ``Matches`` or pycocotools' arrays and stats (``accumulate`` transcribed bit for bit).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ssd_eval.scoring.cocoeval import BACKENDS, checked_copies, prepare_scoring

MAX_DETECTIONS = 100  # pycocotools' maxDets[-1], the one mAP/AP50/AP75 use


@dataclass(frozen=True)
class CategoryMatches:
    """One category's area-all, maxDets-100 detections in pycocotools' accumulate order, with their matches."""

    category_id: int
    image_index: np.ndarray  # int64 [N]: index into Matches.image_ids of each detection's image
    true_positive: np.ndarray  # bool [T, N]: matched to a non-ignored box at IoU threshold t
    ignored: np.ndarray  # bool [T, N]: pycocotools' dtIgnore (matched to a crowd/ignored box)
    tie_run: np.ndarray  # int64 [N]: id of the run of same-image, same-score detections (-1: alone)
    gt_count: np.ndarray  # int64 [I]: non-ignored ground-truth boxes of this category per image


@dataclass(frozen=True)
class Matches:
    """Every detection's match at each IoU threshold, evaluated once (what a bootstrap reweights)."""

    image_ids: list[int]  # ascending, unique: the resampling units
    categories: list[CategoryMatches]  # the averaged categories, ascending id
    iou_thresholds: np.ndarray  # [T]
    recall_thresholds: np.ndarray  # [R]


def evaluate_matches(gt: dict[str, Any], detections: Iterable[dict], image_ids: Sequence[int], *,
                     crowd_as_ground_truth: bool = False, exclude_categories: Sequence[str] = (),
                     source: str = "detections") -> Matches:
    """Match ``detections`` (in their given order) to ground truth once with pycocotools, under the harness's
    scoring conventions."""
    prepared, names, category_ids = prepare_scoring(gt, crowd_as_ground_truth=crowd_as_ground_truth,
                                                    exclude_categories=exclude_categories)
    ids = sorted({int(i) for i in image_ids})  # pycocotools evaluates np.unique(imgIds)
    results = checked_copies(detections, ids, sorted(names), source)
    evaluated = set(ids)
    images = {int(i["id"]): i for i in prepared["images"] if int(i["id"]) in evaluated}
    truth = [annotation for annotation in prepared["annotations"] if annotation["image_id"] in evaluated]
    matcher = PycocotoolsMatcher(prepared["categories"], category_ids, len(ids))
    matcher.update(ids, [images.get(i, {"id": i}) for i in ids], truth, results, list(range(len(ids))))
    return matcher.matches(ids)


def category_matches(category_id: int, scores: np.ndarray, image_index: np.ndarray, true_positive: np.ndarray,
                     ignored: np.ndarray, gt_count: np.ndarray) -> CategoryMatches:
    """One category's ``CategoryMatches`` from its area-all, maxDets-100 detections in the order ``accumulate``
    concatenates them: their scores, image indices, true-positive and ignore flags [T, N], and gt counts."""
    order = np.argsort(-scores, kind="mergesort")  # exactly accumulate's order
    score = scores[order]
    image_index = image_index[order].astype(np.int64)
    dt_ignore = ignored[:, order].astype(bool)
    true_positive = true_positive[:, order].astype(bool)
    # Runs of the same image with the same score are consecutive after the stable sort.
    new_run = np.ones(score.size, dtype=bool)
    new_run[1:] = (image_index[1:] != image_index[:-1]) | (score[1:] != score[:-1])
    run_id = np.cumsum(new_run) - 1
    run_length = np.bincount(run_id)
    tie_run = np.where(run_length[run_id] > 1, run_id, -1)
    # Detections after the last true positive (at every threshold) cannot change any precision; a tie run
    # is kept whole, since in the duplicated file its trailing false positives precede the next copy's hits.
    hits = np.flatnonzero(true_positive.any(axis=0))
    keep = int(np.flatnonzero(run_id == run_id[hits[-1]])[-1]) + 1 if hits.size else 0
    return CategoryMatches(category_id, image_index[:keep], true_positive[:, :keep], dt_ignore[:, :keep],
                           tie_run[:keep].astype(np.int64), np.asarray(gt_count, dtype=np.int64))


class PycocotoolsMatcher:
    """pycocotools' evaluate() a chunk of images at a time (``update``), read back as ``Matches`` (``matches``)
    or as COCOeval's arrays and stats (``result``)."""

    def __init__(self, categories: list[dict], category_ids: list[int], image_count: int):
        from pycocotools.cocoeval import Params

        self.categories = categories
        self.category_ids = list(category_ids)
        self.params = Params(iouType="bbox")
        self.params.catIds = self.category_ids
        self.T = len(self.params.iouThrs)
        self.A = len(self.params.areaRng)
        if max(self.params.maxDets) > 255:
            raise RuntimeError("unexpected pycocotools maxDets: ranks are kept as uint8")
        self.image_dtype = np.int32 if image_count < 2**31 else np.int64
        # Per category, one entry per chunk: each detection's image position, rank within its image and
        # category, score and packed [2 x A x T] true-positive / ignored bits.
        self.kept: list[list[tuple[np.ndarray, ...]]] = [[] for _ in self.category_ids]
        self.truth = np.zeros((len(self.category_ids), self.A), dtype=np.int64)  # non-ignored ground truth
        # Per category, one entry per chunk: image positions and their non-ignored ground truth at area all.
        self.truth_kept: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in self.category_ids]

    def update(self, image_ids: list[int], images: list[dict], truth: list[dict], results: list[dict],
               image_positions: list[int]) -> None:
        chunk = {"images": images, "annotations": truth, "categories": self.categories}
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = BACKENDS["pycocotools"].make_evaluator(chunk, results)
            evaluator.params.imgIds = image_ids
            evaluator.params.catIds = self.category_ids
            evaluator.evaluate()
        if [int(i) for i in evaluator.params.imgIds] != image_ids or list(evaluator.params.catIds) != self.category_ids:
            raise RuntimeError("pycocotools reordered the image or category ids")
        count, areas = len(image_ids), self.A
        entries = evaluator.evalImgs
        for k in range(len(self.category_ids)):
            base = k * areas * count  # evalImgs: category, then area range, then image
            positions, ranks, scores, flags = [], [], [], []
            truth_positions, truth_counts = [], []
            for i in range(count):
                first = entries[base + i]
                if first is None:  # no ground truth and no detection of this category here
                    continue
                per_area = [entries[base + a * count + i] for a in range(areas)]
                truth_here = [int(np.count_nonzero(entry["gtIgnore"] == 0)) for entry in per_area]
                self.truth[k] += truth_here
                if truth_here[0]:  # area all
                    truth_positions.append(image_positions[i])
                    truth_counts.append(truth_here[0])
                detected = len(first["dtScores"])
                if not detected:
                    continue
                ignored = np.array([entry["dtIgnore"] for entry in per_area], dtype=bool)  # [A, T, detected]
                matched = np.array([entry["dtMatches"] for entry in per_area], dtype=bool)  # a ground-truth id; 0: none
                bits = np.stack([matched & ~ignored, ignored])
                positions.append(np.full(detected, image_positions[i], dtype=self.image_dtype))
                ranks.append(np.arange(detected, dtype=np.uint8))
                scores.append(np.asarray(first["dtScores"], dtype=np.float64))
                flags.append(np.packbits(bits.reshape(-1, detected), axis=0))
            if truth_positions:
                self.truth_kept[k].append((np.asarray(truth_positions, dtype=self.image_dtype),
                                           np.asarray(truth_counts, dtype=np.int32)))
            if scores:
                self.kept[k].append((np.concatenate(positions), np.concatenate(ranks), np.concatenate(scores),
                                     np.concatenate(flags, axis=1)))

    def retained_bytes(self) -> int:
        return sum(a.nbytes for chunks in self.kept for chunk in chunks for a in chunk) + self.truth.nbytes

    def matches(self, image_ids: list[int]) -> Any:
        """The ``Matches`` of every image updated so far (what a bootstrap reweights)."""
        p = self.params
        if list(p.maxDets)[-1] != MAX_DETECTIONS or p.areaRngLbl[0] != "all":
            raise RuntimeError("unexpected pycocotools defaults: maxDets[-1] must be 100 and areaRng[0] 'all'")
        categories = []
        for k, category_id in enumerate(self.category_ids):
            gt_count = np.zeros(len(image_ids), dtype=np.int64)
            for positions, counts in self.truth_kept[k]:
                gt_count[positions] = counts
            positions, _, values, bits = self._detections(k)
            categories.append(category_matches(category_id, values, positions, bits[0, 0], bits[1, 0], gt_count))
        return Matches(list(image_ids), categories, np.asarray(p.iouThrs, dtype=float),
                       np.asarray(p.recThrs, dtype=float))

    def result(self, image_ids: list[int]) -> tuple[list[float], dict[str, np.ndarray], list[int]]:
        """(stats, precision / recall / scores arrays, category ids) as pycocotools' accumulate() and
        summarize() give them."""
        from pycocotools.cocoeval import COCOeval

        p = self.params
        T, R, K, A, M = len(p.iouThrs), len(p.recThrs), len(self.category_ids), len(p.areaRng), len(p.maxDets)
        precision = -np.ones((T, R, K, A, M))  # -1 for the precision of absent categories
        recall = -np.ones((T, K, A, M))
        scores = -np.ones((T, R, K, A, M))
        for k in range(K):
            _, ranks, values, bits = self._detections(k, release=True)
            self._accumulate_category(k, ranks, values, bits, precision, recall, scores)
        evaluator = COCOeval(iouType="bbox")  # only to summarize: it reads params, precision and recall
        evaluator.params = p
        evaluator.eval = {"precision": precision, "recall": recall, "scores": scores}
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.summarize()
        return [float(s) for s in evaluator.stats], evaluator.eval, list(self.category_ids)

    def _detections(self, k: int, release: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Category ``k``'s detections in accumulate's input order (images ascending, each in evaluateImg's order):
        image positions, ranks within the image, scores and the bits [2, A, T, N]. ``release``: drop the chunks."""
        if not self.kept[k]:
            return (np.zeros(0, dtype=self.image_dtype), np.zeros(0, dtype=np.uint8), np.zeros(0),
                    np.zeros((2, self.A, self.T, 0), dtype=bool))
        positions, ranks, values, packed = (np.concatenate(parts, axis=-1) for parts in zip(*self.kept[k]))
        if release:
            self.kept[k] = []
        order = np.argsort(positions, kind="stable")
        bits = np.unpackbits(packed[:, order], axis=0, count=2 * self.A * self.T).astype(bool)
        return positions[order], ranks[order], values[order], bits.reshape(2, self.A, self.T, -1)

    def _accumulate_category(self, k: int, ranks: np.ndarray, values: np.ndarray, bits: np.ndarray,
                             precision: np.ndarray, recall: np.ndarray, scores: np.ndarray) -> None:
        """COCOeval.accumulate for category ``k``, every area range and maxDets (same operations)."""
        p = self.params
        R = len(p.recThrs)
        for a in range(len(p.areaRng)):
            npig = int(self.truth[k, a])
            if npig == 0:  # pycocotools: no evaluated image (E empty) or no non-ignored ground truth
                continue
            for m, max_det in enumerate(p.maxDets):
                kept = ranks < max_det
                inds = np.argsort(-values[kept], kind="mergesort")
                dt_scores = values[kept][inds]
                tps = bits[0, a][:, kept][:, inds]
                fps = np.logical_and(np.logical_not(tps), np.logical_not(bits[1, a][:, kept][:, inds]))
                tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                nd = tp_sum.shape[1]
                for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                    rc = tp / npig
                    pr = tp / (fp + tp + np.spacing(1))
                    q = np.zeros((R,))
                    ss = np.zeros((R,))
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    if nd:
                        pr = np.maximum.accumulate(pr[::-1])[::-1]  # pr[i-1] = max(pr[i-1], pr[i]), right to left
                        inds = np.searchsorted(rc, p.recThrs, side="left")
                        inside = inds < nd  # pycocotools stops at the first index past the end
                        q[inside] = pr[inds[inside]]
                        ss[inside] = dt_scores[inds[inside]]
                    precision[t, :, k, a, m] = q
                    scores[t, :, k, a, m] = ss
