"""Streaming scoring: detections are matched a chunk of images at a time as they arrive, so scoring
holds a few bytes per detection instead of every detection.

How it works (and why it equals plain pycocotools):

``StreamingScorer.add(image_id, detections)`` takes one image's detections at a time (the pipeline
reads them back from its resume cache image by image). Once a few thousand detections are pending
they are matched, together with those images' ground truth, by the backend:

- ``pycocotools``: its own ``COCOeval.evaluate()`` on just the chunk's images (every match is decided
  within one image and category, so a chunk's matches are those of a run over every image), and of
  each image / category / area range only what ``COCOeval.accumulate`` reads is kept: the detection
  scores in evaluateImg's order (at most maxDets[-1] per image and category), whether each detection
  is a true positive or ignored at each IoU threshold (bit-packed), and the number of non-ignored
  ground-truth boxes. ``finish()`` then runs ``accumulate`` (a transcription of pycocotools' own:
  images concatenated in ascending id order, the same mergesort on descending score, the same
  cumulative sums, divisions and right-to-left precision envelope, so the arrays are bit for bit
  pycocotools') and pycocotools' own ``summarize`` on the result.
- ``hotcoco``: its ``StreamingEval`` (``update()`` per chunk, ``finalize()``, then its accumulate
  and summarize), restricted to the averaged categories through its ``Params``.

``streams`` says which backends stream (both do).

Images are matched in the order they arrive; the result does not depend on it. Evaluated images that
never received detections are matched at the end with their ground truth alone, as pycocotools
counts them.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from ssd_eval.errors import UserError
from ssd_eval.scoring.cocoeval import (
    BACKENDS,
    Scores,
    averaged_category_ids,
    checked_copy,
    empty_scores,
    prepare_ground_truth,
    scores_from_evaluation,
)

log = logging.getLogger(__name__)

STREAMING_BACKENDS = ("pycocotools", "hotcoco")
"""The metrics backends ``StreamingScorer`` can feed; others are scored in one batch."""

CHUNK_DETECTIONS = 4096  # match once this many detections are pending...
CHUNK_IMAGES = 256  # ...or this many images


def streams(backend: str) -> bool:
    """Whether ``metrics.streaming: true`` streams with this backend (else it scores in one batch)."""
    return backend in STREAMING_BACKENDS


class StreamingScorer:
    """COCO bbox metrics of detections fed one image at a time (``add``), equal to
    ``metrics.score_detections`` on all of them at once; ``finish()`` returns the Scores.

    Each evaluated image may be added once; images never added count as images without detections.
    ``chunks`` counts the batches matched so far, ``peak_pending_detections`` the most detections
    held unmatched at any time, ``retained_bytes()`` what the matched state holds. With
    ``keep_matches`` (pycocotools), ``matches`` is then every detection's match as
    ``uncertainty.evaluate_matches`` gives it, so bootstrap intervals need no second matching pass.
    """

    def __init__(self, gt: dict[str, Any], image_ids: Sequence[int], *, crowd_as_ground_truth: bool = False,
                 backend: str = "pycocotools", exclude_categories: Sequence[str] = (),
                 source: str = "detections", chunk_detections: int | None = None,
                 chunk_images: int | None = None, keep_matches: bool = False):
        if not streams(backend):
            raise UserError(f"metrics.backend {backend!r} cannot stream; streaming backends: "
                            f"{', '.join(STREAMING_BACKENDS)}")
        chunk_detections = CHUNK_DETECTIONS if chunk_detections is None else chunk_detections
        chunk_images = CHUNK_IMAGES if chunk_images is None else chunk_images
        if chunk_detections < 1 or chunk_images < 1:
            raise ValueError("chunk sizes must be positive")
        self.prepared = prepare_ground_truth(gt, crowd_as_ground_truth=crowd_as_ground_truth)
        self.names = {int(c["id"]): str(c.get("name", c["id"])) for c in self.prepared["categories"]}
        self.category_ids = averaged_category_ids(self.names, exclude_categories)
        self.image_ids = sorted({int(i) for i in image_ids})  # pycocotools evaluates np.unique(imgIds)
        self.source = source
        self.backend = backend
        self.chunk_detections, self.chunk_images = chunk_detections, chunk_images
        self._evaluated = set(self.image_ids)
        self._all_categories = set(self.names)
        self._image_entries = {int(i["id"]): i for i in self.prepared["images"] if int(i["id"]) in self._evaluated}
        self._truth: dict[int, list[dict]] = defaultdict(list)
        for annotation in self.prepared["annotations"]:
            if annotation["image_id"] in self._evaluated:
                self._truth[annotation["image_id"]].append(annotation)
        self._position = {image_id: n for n, image_id in enumerate(self.image_ids)}
        self._seen: set[int] = set()
        self._pending: list[tuple[int, list[dict]]] = []
        self._pending_detections = 0
        self.detections = 0
        self.chunks = 0
        self.peak_pending_detections = 0
        self._finished = False
        self._copy = BACKENDS[backend].mutates_results  # pycocotools' loadRes writes into what it gets
        self.evaluation: dict[str, np.ndarray] | None = None  # precision, recall, scores once finished
        self.keep_matches = keep_matches
        self.matches: Any = None  # uncertainty.Matches once finished, with keep_matches (pycocotools only)
        if backend == "hotcoco":
            self._engine: Any = _HotcocoEngine(self.prepared["categories"], self.category_ids)
        else:
            self._engine = _PycocotoolsEngine(self.prepared["categories"], self.category_ids, len(self.image_ids))

    def add(self, image_id: int, detections: Iterable[dict]) -> None:
        """One image's detections (COCO results: image_id, category_id, bbox, score), all of them at once."""
        if self._finished:
            raise RuntimeError("StreamingScorer.add after finish()")
        if image_id not in self._evaluated:
            raise UserError(f"{self.source}: detections name image id {image_id}, which is not among the "
                            "evaluated images of the annotation file")
        if image_id in self._seen:
            raise UserError(f"{self.source}: the detections of image {image_id} are not all together; "
                            "streaming scoring takes each image's detections at once (metrics.streaming: false "
                            "scores them in any order)")
        copies = []
        for detection in detections:
            copy = checked_copy(detection, self._evaluated, self._all_categories, self.source,
                                copy=self._copy)
            if copy["image_id"] != image_id:
                raise UserError(f"{self.source}: a detection of image {copy['image_id']} was given as one of "
                                f"image {image_id}")
            copies.append(copy)
        self._seen.add(image_id)
        self._pending.append((image_id, copies))
        self._pending_detections += len(copies)
        self.detections += len(copies)
        self.peak_pending_detections = max(self.peak_pending_detections, self._pending_detections)
        if self._pending_detections >= self.chunk_detections or len(self._pending) >= self.chunk_images:
            self._flush()

    def add_detections(self, detections: Iterable[dict]) -> None:
        """Detections of any number of images, each image's together (as a resume cache yields them)."""
        for image_id, group in itertools.groupby(detections, key=lambda d: d["image_id"]):
            self.add(image_id, group)

    def _flush(self) -> None:
        if not self._pending:
            return
        pending = sorted(self._pending, key=lambda entry: entry[0])
        image_ids = [image_id for image_id, _ in pending]
        images = [self._image_entries.get(i, {"id": i}) for i in image_ids]
        truth = [annotation for i in image_ids for annotation in self._truth.get(i, ())]
        results = [detection for _, detections in pending for detection in detections]
        self._pending, self._pending_detections = [], 0
        self._engine.update(image_ids, images, truth, results, [self._position[i] for i in image_ids])
        self.chunks += 1

    def retained_bytes(self) -> int | None:
        """Bytes the matched state holds (pycocotools engine; None where the backend keeps it)."""
        return self._engine.retained_bytes()

    def finish(self) -> Scores:
        """Match what is pending and every evaluated image never added (ground truth only), then score."""
        if self._finished:
            raise RuntimeError("StreamingScorer.finish called twice")
        self._flush()
        unseen = [i for i in self.image_ids if i not in self._seen]
        for start in range(0, len(unseen), self.chunk_images):
            for image_id in unseen[start:start + self.chunk_images]:
                self._seen.add(image_id)
                self._pending.append((image_id, []))
            self._flush()
        self._finished = True
        if self.keep_matches:
            self.matches = self._engine.matches(self.image_ids)
        if not self.detections:
            return empty_scores(self.prepared, self.names, self.category_ids, self.image_ids, self.source)
        stats, self.evaluation, category_ids = self._engine.result(self.image_ids)
        if list(category_ids) != self.category_ids:
            raise RuntimeError(f"{self.backend} scored categories {list(category_ids)[:5]}..., not the averaged ones")
        return scores_from_evaluation(stats, self.evaluation["precision"], self.names, self.category_ids,
                                      self.source)


def score_stream(gt: dict[str, Any], detections: Iterable[dict], image_ids: Sequence[int], *,
                 crowd_as_ground_truth: bool = False, backend: str = "pycocotools",
                 exclude_categories: Sequence[str] = (), source: str = "detections",
                 keep_matches: bool = False) -> Scores:
    """``metrics.score_detections`` fed through a ``StreamingScorer``: ``detections`` is read once and each
    image's detections must come together (as ``DetectionCache.detections`` yields them). With
    ``keep_matches``, ``Scores.matches`` holds the matches a bootstrap reweights (pycocotools only)."""
    scorer = StreamingScorer(gt, image_ids, crowd_as_ground_truth=crowd_as_ground_truth, backend=backend,
                             exclude_categories=exclude_categories, source=source, keep_matches=keep_matches)
    scorer.add_detections(detections)
    scores = scorer.finish()
    scores.matches = scorer.matches
    log.debug("%s: streamed %d detections to %s in %d chunks (at most %d pending)", source, scorer.detections,
              backend, scorer.chunks, scorer.peak_pending_detections)
    return scores


# --------------------------------------------------------------------------- engines


class _PycocotoolsEngine:
    """pycocotools' evaluate() per chunk, keeping what accumulate() reads; accumulate() transcribed."""

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
        # Per category: lists of per-chunk arrays (concatenated at the end).
        self.positions: list[list[np.ndarray]] = [[] for _ in self.category_ids]  # image position per detection
        self.ranks: list[list[np.ndarray]] = [[] for _ in self.category_ids]  # rank within image and category
        self.scores: list[list[np.ndarray]] = [[] for _ in self.category_ids]
        self.flags: list[list[np.ndarray]] = [[] for _ in self.category_ids]  # packed [2 x A x T] bits per detection
        self.truth = np.zeros((len(self.category_ids), self.A), dtype=np.int64)  # non-ignored ground truth
        # Per category: (image positions, non-ignored ground truth there) for area all, for bootstrap matches.
        self.truth_positions: list[list[np.ndarray]] = [[] for _ in self.category_ids]
        self.truth_counts: list[list[np.ndarray]] = [[] for _ in self.category_ids]

    def update(self, image_ids: list[int], images: list[dict], truth: list[dict], results: list[dict],
               image_positions: list[int]) -> None:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth = COCO()
            ground_truth.dataset = {"images": images, "annotations": truth, "categories": self.categories}
            ground_truth.createIndex()
            if results:
                detections = ground_truth.loadRes(results)
            else:  # loadRes cannot take an empty list
                detections = COCO()
                detections.dataset = {"images": images, "annotations": [], "categories": self.categories}
                detections.createIndex()
            evaluator = COCOeval(ground_truth, detections, "bbox")
            evaluator.params.imgIds = image_ids
            evaluator.params.catIds = self.category_ids
            evaluator.evaluate()
        if [int(i) for i in evaluator.params.imgIds] != image_ids or list(evaluator.params.catIds) != self.category_ids:
            raise RuntimeError("pycocotools reordered the image or category ids")
        count, areas, T = len(image_ids), self.A, self.T
        entries = evaluator.evalImgs
        for k in range(len(self.category_ids)):
            base = k * areas * count  # evalImgs: category, then area range, then image
            positions, ranks, scores, flags = [], [], [], []
            truth_positions, truth_counts = [], []
            for i in range(count):
                first = entries[base + i]
                if first is None:  # no ground truth and no detection of this category here
                    continue
                for a in range(areas):
                    self.truth[k, a] += int(np.count_nonzero(entries[base + a * count + i]["gtIgnore"] == 0))
                truth_here = int(np.count_nonzero(first["gtIgnore"] == 0))
                if truth_here:
                    truth_positions.append(image_positions[i])
                    truth_counts.append(truth_here)
                detected = len(first["dtScores"])
                if not detected:
                    continue
                bits = np.empty((2, areas, T, detected), dtype=bool)
                for a in range(areas):
                    entry = entries[base + a * count + i]
                    ignored = np.asarray(entry["dtIgnore"], dtype=bool)
                    bits[0, a] = np.logical_and(entry["dtMatches"], np.logical_not(ignored))
                    bits[1, a] = ignored
                positions.append(np.full(detected, image_positions[i], dtype=self.image_dtype))
                ranks.append(np.arange(detected, dtype=np.uint8))
                scores.append(np.asarray(first["dtScores"], dtype=np.float64))
                flags.append(np.packbits(bits.reshape(2 * areas * T, detected), axis=0))
            if truth_positions:
                self.truth_positions[k].append(np.asarray(truth_positions, dtype=self.image_dtype))
                self.truth_counts[k].append(np.asarray(truth_counts, dtype=np.int32))
            if scores:
                self.positions[k].append(np.concatenate(positions))
                self.ranks[k].append(np.concatenate(ranks))
                self.scores[k].append(np.concatenate(scores))
                self.flags[k].append(np.concatenate(flags, axis=1))
        del entries, evaluator

    def retained_bytes(self) -> int:
        arrays = itertools.chain.from_iterable(itertools.chain(*lists) for lists in
                                               (self.positions, self.ranks, self.scores, self.flags))
        return int(sum(a.nbytes for a in arrays)) + self.truth.nbytes

    def matches(self, image_ids: list[int]) -> Any:
        """The run's ``uncertainty.Matches`` (what a bootstrap reweights), equal to
        ``uncertainty.evaluate_matches`` on the same detections: no second matching pass."""
        from ssd_eval.scoring.matches import MAX_DETECTIONS, Matches, category_matches

        p = self.params
        if list(p.maxDets)[-1] != MAX_DETECTIONS or p.areaRngLbl[0] != "all":
            raise RuntimeError("unexpected pycocotools defaults: maxDets[-1] must be 100 and areaRng[0] 'all'")
        T, A = self.T, self.A
        categories = []
        for k, category_id in enumerate(self.category_ids):
            gt_count = np.zeros(len(image_ids), dtype=np.int64)
            if self.truth_positions[k]:
                gt_count[np.concatenate(self.truth_positions[k])] = np.concatenate(self.truth_counts[k])
            if not self.scores[k]:
                empty = np.zeros((T, 0), dtype=bool)
                categories.append(category_matches(category_id, np.zeros(0), np.zeros(0, dtype=np.int64), empty,
                                                   empty, gt_count))
                continue
            positions = np.concatenate(self.positions[k])
            ranks = np.concatenate(self.ranks[k])
            order = np.lexsort((ranks, positions))  # accumulate's input: images ascending, evaluateImg's order
            packed = np.concatenate(self.flags[k], axis=1)[:, order]
            bits = np.unpackbits(packed, axis=0, count=2 * A * T).astype(bool).reshape(2, A, T, -1)
            categories.append(category_matches(category_id, np.concatenate(self.scores[k])[order], positions[order],
                                               bits[0, 0], bits[1, 0], gt_count))
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
            if not self.scores[k]:
                self._accumulate_category(k, None, precision, recall, scores)
                continue
            positions = np.concatenate(self.positions[k])
            self.positions[k] = []
            # pycocotools concatenates images in ascending id order, each in evaluateImg's order.
            order = np.argsort(positions, kind="stable")
            del positions
            ranks = np.concatenate(self.ranks[k])[order]
            values = np.concatenate(self.scores[k])[order]
            packed = np.concatenate(self.flags[k], axis=1)[:, order]
            self.ranks[k], self.scores[k], self.flags[k] = [], [], []
            bits = np.unpackbits(packed, axis=0, count=2 * A * T).astype(bool).reshape(2, A, T, -1)
            self._accumulate_category(k, (ranks, values, bits), precision, recall, scores)
        evaluator = COCOeval(iouType="bbox")
        evaluator.params.imgIds = list(image_ids)
        evaluator.params.catIds = list(self.category_ids)
        evaluator.eval = {"params": evaluator.params, "counts": [T, R, K, A, M], "precision": precision,
                          "recall": recall, "scores": scores}
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.summarize()
        arrays = {"precision": precision, "recall": recall, "scores": scores}
        return [float(s) for s in evaluator.stats], arrays, list(self.category_ids)

    def _accumulate_category(self, k: int, detections, precision: np.ndarray, recall: np.ndarray,
                             scores: np.ndarray) -> None:
        """COCOeval.accumulate for category ``k``, every area range and maxDets (same operations)."""
        p = self.params
        R = len(p.recThrs)
        for a in range(len(p.areaRng)):
            npig = int(self.truth[k, a])
            if npig == 0:  # pycocotools: no evaluated image (E empty) or no non-ignored ground truth
                continue
            for m, max_det in enumerate(p.maxDets):
                if detections is None:
                    dt_scores = np.zeros(0)
                    tps = fps = np.zeros((len(p.iouThrs), 0), dtype=bool)
                else:
                    ranks, values, bits = detections
                    kept = ranks < max_det
                    dt_scores = values[kept]
                    inds = np.argsort(-dt_scores, kind="mergesort")
                    dt_scores_sorted = dt_scores[inds]
                    tps = bits[0, a][:, kept][:, inds]
                    ignored = bits[1, a][:, kept][:, inds]
                    fps = np.logical_and(np.logical_not(tps), np.logical_not(ignored))
                    dt_scores = dt_scores_sorted
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


class _HotcocoEngine:
    """hotcoco's StreamingEval over the averaged categories."""

    def __init__(self, categories: list[dict], category_ids: list[int]):
        import hotcoco

        params = hotcoco.Params("bbox")
        params.cat_ids = list(category_ids)
        self.stream = hotcoco.StreamingEval(categories, "bbox", params=params)

    def update(self, image_ids: list[int], images: list[dict], truth: list[dict], results: list[dict],
               image_positions: list[int]) -> None:
        self.stream.update(images, truth, results)

    def retained_bytes(self) -> None:
        return None

    def matches(self, image_ids: list[int]) -> None:
        return None  # hotcoco keeps its matches to itself: a bootstrap matches once more

    def result(self, image_ids: list[int]) -> tuple[list[float], dict[str, np.ndarray], list[int]]:
        evaluator = self.stream.finalize()
        if sorted(int(i) for i in evaluator.params.img_ids) != list(image_ids):
            raise RuntimeError("hotcoco's StreamingEval evaluated other images than those fed to it")
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.accumulate()
            evaluator.summarize()
        arrays = {name: np.asarray(evaluator.eval[name]) for name in ("precision", "recall", "scores")}
        return [float(s) for s in evaluator.stats], arrays, [int(c) for c in evaluator.params.cat_ids]
