"""score_detections: one entry point for batch or streamed scoring."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

from ssd_eval.scoring.cocoeval import Scores, ground_truth_counts, score_batch

log = logging.getLogger(__name__)


def score_detections(gt: dict[str, Any], detections: Iterable[dict], image_ids: Sequence[int], *,
                     crowd_as_ground_truth: bool = False, backend: str = "pycocotools",
                     exclude_categories: Sequence[str] = (), source: str = "detections", streaming: bool = False,
                     keep_matches: bool = False) -> Scores:
    """COCO bbox metrics of ``detections`` (any iterable, read once) over exactly ``image_ids``, averaged over the
    file's categories except those named in ``exclude_categories``, with their ground-truth counts.

    ``streaming``: match the detections a chunk of images at a time as they are read (same numbers; each
    image's detections must then come together); backends that cannot stream score in one batch.
    ``keep_matches``: when streaming with pycocotools, keep every detection's match in ``Scores.matches``.
    """
    from ssd_eval.scoring.streaming import score_stream, streams  # looked up per call: tests replace score_stream

    if streaming and streams(backend):
        scores = score_stream(gt, detections, image_ids, crowd_as_ground_truth=crowd_as_ground_truth,
                              backend=backend, exclude_categories=exclude_categories, source=source,
                              keep_matches=keep_matches)
    else:
        if streaming:
            log.info("metrics.backend %s cannot stream: scoring every detection at once", backend)
        scores = score_batch(gt, detections, image_ids, crowd_as_ground_truth=crowd_as_ground_truth, backend=backend,
                             exclude_categories=exclude_categories, source=source)
    counts = ground_truth_counts(gt, image_ids, crowd_as_ground_truth=crowd_as_ground_truth)
    scores.per_category_gt = {name: counts.get(name, 0) for name in scores.per_category_ap}
    return scores
