"""score_detections: one entry point for batch or streamed scoring."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ssd_eval.scoring.cocoeval import (
    BACKENDS,
    Scores,
    _run_cocoeval,
    checked_copies,
    empty_scores,
    ground_truth_counts,
    log,
    prepare_scoring,
    scores_from_evaluation,
)


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
        prepared, names, category_ids = prepare_scoring(gt, crowd_as_ground_truth=crowd_as_ground_truth,
                                                        exclude_categories=exclude_categories)
        chosen = BACKENDS.get(backend)
        results = checked_copies(detections, image_ids, sorted(names), source,
                                 copy=chosen is None or chosen.mutates_results)
        if results:
            evaluator = _run_cocoeval(prepared, results, sorted(image_ids), category_ids, backend)
            scores = scores_from_evaluation(evaluator.stats, np.asarray(evaluator.eval["precision"]), names,
                                            list(evaluator.params.catIds), source, averaged=category_ids)
        else:
            scores = empty_scores(prepared, names, category_ids, image_ids, source)
    counts = ground_truth_counts(gt, image_ids, crowd_as_ground_truth=crowd_as_ground_truth)
    scores.per_category_gt = {name: counts.get(name, 0) for name in scores.per_category_ap}
    return scores
