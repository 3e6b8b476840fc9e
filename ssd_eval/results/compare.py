"""Like with like: when two results' accuracies or speeds may be compared, and the drop ratio (the one home
of these rules: the table, the gate and `baseline --update` read them)."""

from __future__ import annotations

from typing import Any

from ssd_eval.errors import UserError
from ssd_eval.results.index import ResultIndex, describe_image_set, result_subset
from ssd_eval.utils import get_dotted

FLOAT_SLACK = 1e-6
"""Comparisons forgive this much: `baseline --update` writes values rounded to 6 decimals."""


def provenance_value(result: dict, dotted_key: str, default: Any = None) -> Any:
    """``result["provenance"]`` at a dotted key, or ``default`` where it is missing."""
    try:
        return get_dotted(result.get("provenance", {}), dotted_key)
    except KeyError:
        return default


def _both(result: dict, parent: dict, dotted_key: str, default: Any = None) -> tuple[Any, Any]:
    """``provenance_value`` of ``result`` and of ``parent``."""
    return provenance_value(result, dotted_key, default), provenance_value(parent, dotted_key, default)


def short_provider_names(providers: list[str]) -> str:
    """'CUDAExecutionProvider','CPUExecutionProvider' -> 'CUDA+CPU'."""
    return "+".join(p.removesuffix("ExecutionProvider") for p in providers) or "none"


def accuracy_mismatch(result: dict, parent: dict) -> str | None:
    """Why the two results' accuracies cannot be compared (`n/a: ...`), or None when they can (same protocol,
    images, annotation file, pre- and postprocessing)."""
    if result["protocol"] != parent["protocol"]:
        return f"n/a: protocol {result['protocol']} vs {parent['protocol']}"
    subset, parent_subset = result_subset(result), result_subset(parent)
    if subset != parent_subset:
        return f"n/a: {describe_image_set(subset)} vs {describe_image_set(parent_subset)}"
    for key, reason in (("images", "{} vs {} images"), ("image_ids_sha256", "different image sets"),
                        ("annotations.sha256", "different annotation files")):
        mine, theirs = _both(result, parent, key)
        if mine != theirs:
            return "n/a: " + reason.format(mine, theirs)
    for section in ("preprocess", "postprocess"):
        mine, theirs = _both(result, parent, f"config.{section}")
        # resize_backend is already part of the protocol label compared above
        differing = sorted(k for k in set(mine or {}) | set(theirs or {})
                           if k != "resize_backend" and mine and theirs and mine.get(k) != theirs.get(k))
        if differing:
            return f"n/a: different {section} ({', '.join(differing)})"
    return None


def speed_mismatch(result: dict, parent: dict) -> str | None:
    """Why the two results' speeds cannot be compared, or None when they can: accuracies comparable, images/s
    on both sides (no resumed run, no merge of shards), the same jobs, providers, host, threads and runtime."""
    reason = accuracy_mismatch(result, parent)
    if reason:
        return reason
    for side in (result, parent):
        if provenance_value(side, "images_per_s") is None:
            return f"n/a: no images/s for {side['variant']}"
        if provenance_value(side, "resumed_images") and not provenance_value(side, "speed_from_cache"):
            return f"n/a: {side['variant']} run was resumed"
        if provenance_value(side, "shards") and not provenance_value(side, "parallel_jobs"):
            return f"n/a: {side['variant']} merged from shards"
    jobs, parent_jobs = (value or 1 for value in _both(result, parent, "parallel_jobs"))
    if jobs != parent_jobs:  # eval --jobs N: images/s of N jobs side by side (ssd_eval.engine.launcher)
        return f"n/a: {jobs} vs {parent_jobs} parallel jobs"
    providers, parent_providers = _both(result, parent, "runtime.providers", [])
    if providers != parent_providers:
        return f"n/a: provider {short_provider_names(providers)} vs {short_provider_names(parent_providers)}"
    for key, reason in (("host.cpu", "different host cpu"), ("host.cores", "{} vs {} cores")):
        mine, theirs = _both(result, parent, key)
        if mine != theirs:
            return "n/a: " + reason.format(mine, theirs)
    intra, parent_intra = _both(result, parent, "runtime.intra_op_threads")
    inter, parent_inter = _both(result, parent, "runtime.inter_op_threads")
    if (intra, inter) != (parent_intra, parent_inter):
        return f"n/a: threads intra/inter {intra}/{inter} vs {parent_intra}/{parent_inter}"
    batch, parent_batch = _both(result, parent, "runtime.batch_size")
    if batch != parent_batch:
        return f"n/a: batch {batch} vs {parent_batch}"
    for key, label in (("runtime.onnxruntime", "onnxruntime"), ("config.runtime.graph_optimization",
                       "graph optimization"), ("config.pipeline", "decode pipeline")):
        mine, theirs = _both(result, parent, key)
        if isinstance(mine, dict) and isinstance(theirs, dict):  # how often progress is logged does not count
            mine, theirs = ({k: v for k, v in d.items() if k != "progress_interval_s"} for d in (mine, theirs))
        if mine is not None and theirs is not None and mine != theirs:
            return f"n/a: different {label}"
    return None


def find_parent_result(result: dict, results: list[dict]) -> tuple[dict | None, str | None]:
    """(the parent result to compare `result` with, None): accuracy-comparable, and speed-comparable where one
    is; else (None, why not), or (None, None) without a parent."""
    parent_name = result.get("parent")
    if not parent_name:
        return None, None
    candidates = [r for r in results if r.get("variant") == parent_name and r is not result]
    if not candidates:
        return None, f"n/a: no {parent_name} result"
    comparable = [c for c in candidates if accuracy_mismatch(result, c) is None]
    if not comparable:
        return None, accuracy_mismatch(result, candidates[0])
    return next((c for c in comparable if speed_mismatch(result, c) is None), comparable[0]), None


def drop_ratio_pct(map_value: float, parent_map: float) -> float:
    """(parent_mAP - mAP) / parent_mAP * 100; raises ZeroDivisionError on parent 0."""
    return (parent_map - map_value) / parent_map * 100.0


def comparable_parent(index: ResultIndex, result: dict, parent: str) -> tuple[dict, str | None]:
    """The parent's result under `result`'s protocol and image subset, checked to be comparable
    (accuracy_mismatch), plus its lookup note."""
    parent_result, note = index.find(parent, result["protocol"],
                                     f"{parent}, parent of {result['variant']}", result_subset(result))
    reason = accuracy_mismatch(result, parent_result)
    if reason:
        raise UserError(f"{parent_result['_source']} is not comparable with "
                        f"{result['_source']} ({reason.removeprefix('n/a: ')})")
    return parent_result, note


def parent_for_drop(index: ResultIndex, result: dict, parent: str) -> tuple[dict, str | None]:
    """The parent's result under `result`'s protocol, checked for a drop ratio, plus its lookup note."""
    parent_result, note = comparable_parent(index, result, parent)
    if parent_result["mAP"] <= 0:
        raise UserError(f"{parent_result['_source']}: mAP is {parent_result['mAP']}; "
                        "cannot compute a drop ratio")
    return parent_result, note
