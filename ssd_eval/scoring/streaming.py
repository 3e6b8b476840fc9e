"""Streaming scoring: detections matched a chunk of images at a time as they arrive (pycocotools through
``matches.PycocotoolsMatcher``, hotcoco through its ``StreamingEval``), with the numbers of batch scoring."""

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
    checked_copy,
    empty_scores,
    prepare_scoring,
    scores_from_evaluation,
)
from ssd_eval.scoring.matches import PycocotoolsMatcher

log = logging.getLogger(__name__)

STREAMING_BACKENDS = ("pycocotools", "hotcoco")
"""The metrics backends ``StreamingScorer`` can feed; others are scored in one batch."""

CHUNK_DETECTIONS = 4096  # match once this many detections are pending...
CHUNK_IMAGES = 256  # ...or this many images


def streams(backend: str) -> bool:
    """Whether ``metrics.streaming: true`` streams with this backend (else it scores in one batch)."""
    return backend in STREAMING_BACKENDS


class StreamingScorer:
    """COCO bbox metrics of detections fed one image at a time (``add``, each evaluated image once), equal to
    ``metrics.score_detections`` on all of them at once; ``finish()`` returns the Scores. With ``keep_matches``
    (pycocotools), ``matches`` is then every detection's match as ``matches.evaluate_matches`` gives it."""

    def __init__(self, gt: dict[str, Any], image_ids: Sequence[int], *, crowd_as_ground_truth: bool = False,
                 backend: str = "pycocotools", exclude_categories: Sequence[str] = (),
                 source: str = "detections", chunk_detections: int | None = None,
                 chunk_images: int | None = None, keep_matches: bool = False):
        if not streams(backend):
            raise UserError(f"metrics.backend {backend!r} cannot stream; streaming backends: "
                            f"{', '.join(STREAMING_BACKENDS)}")
        # None: the module's constants at the time of the call (tests lower them)
        self.chunk_detections = CHUNK_DETECTIONS if chunk_detections is None else chunk_detections
        self.chunk_images = CHUNK_IMAGES if chunk_images is None else chunk_images
        if self.chunk_detections < 1 or self.chunk_images < 1:
            raise ValueError("chunk sizes must be positive")
        self.prepared, self.names, self.category_ids = prepare_scoring(
            gt, crowd_as_ground_truth=crowd_as_ground_truth, exclude_categories=exclude_categories)
        self.image_ids = sorted({int(i) for i in image_ids})  # pycocotools evaluates np.unique(imgIds)
        self.source = source
        self.backend = backend
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
        self.detections = 0
        self.chunks = 0
        self.peak_pending_detections = 0
        self._finished = False
        self._copy = BACKENDS[backend].mutates_results  # pycocotools' loadRes writes into what it gets
        self.evaluation: dict[str, np.ndarray] | None = None  # precision, recall, scores once finished
        self.keep_matches = keep_matches
        self.matches: Any = None  # matches.Matches once finished, with keep_matches (pycocotools only)
        if backend == "hotcoco":
            self._engine: Any = _HotcocoEngine(self.prepared["categories"], self.category_ids)
        else:
            self._engine = PycocotoolsMatcher(self.prepared["categories"], self.category_ids, len(self.image_ids))

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
            copy = checked_copy(detection, self._evaluated, self._all_categories, self.source, copy=self._copy)
            if copy["image_id"] != image_id:
                raise UserError(f"{self.source}: a detection of image {copy['image_id']} was given as one of "
                                f"image {image_id}")
            copies.append(copy)
        self._seen.add(image_id)
        self._pending.append((image_id, copies))
        pending = sum(len(image_detections) for _, image_detections in self._pending)
        self.detections += len(copies)
        self.peak_pending_detections = max(self.peak_pending_detections, pending)
        if pending >= self.chunk_detections or len(self._pending) >= self.chunk_images:
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
        self._pending = []
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
        for image_id in [i for i in self.image_ids if i not in self._seen]:
            self.add(image_id, ())  # flushed every chunk_images
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
    """``metrics.score_detections`` fed through a ``StreamingScorer``: each image's detections must come together
    (as ``DetectionCache.detections`` yields them); ``keep_matches`` fills ``Scores.matches`` (pycocotools)."""
    scorer = StreamingScorer(gt, image_ids, crowd_as_ground_truth=crowd_as_ground_truth, backend=backend,
                             exclude_categories=exclude_categories, source=source, keep_matches=keep_matches)
    scorer.add_detections(detections)
    scores = scorer.finish()
    scores.matches = scorer.matches
    log.debug("%s: streamed %d detections to %s in %d chunks (at most %d pending)", source, scorer.detections,
              backend, scorer.chunks, scorer.peak_pending_detections)
    return scores


# --------------------------------------------------------------------------- engines


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
