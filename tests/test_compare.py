"""Tests for ssd_eval.results.compare called directly: the like-with-like rules' exact reasons, the parent lookup.

The table's view of the same rules is in test_table.py; these were added for mutants that survived it
(docs/TESTING.md, mutation testing).
"""

from __future__ import annotations

from ssd_eval.config.schema import run_name
from ssd_eval.results.compare import accuracy_mismatch, find_parent_result, parent_for_drop, speed_mismatch
from ssd_eval.results.index import ResultIndex

from helpers import metrics_document, write_metrics


def fp32(**kw):
    return metrics_document("ssd-12", mAP=0.1898, images_per_s=2.0, **kw)


def int8(**kw):
    return metrics_document("ssd-12-int8", mAP=0.1892, parent="ssd-12", images_per_s=6.98, **kw)


def with_config(document: dict, config: dict) -> dict:
    document["provenance"]["config"] = config
    return document


def test_a_setting_only_one_side_records_is_a_difference():
    parent = with_config(fp32(), {"postprocess": {"max_detections": 100}})
    child = with_config(int8(), {"postprocess": {"max_detections": 100, "score_threshold": 0.05, "clip_boxes": False}})
    assert accuracy_mismatch(child, parent) == "n/a: different postprocess (clip_boxes, score_threshold)"


def test_speed_needs_accuracy_comparability_first():
    assert speed_mismatch(int8(protocol="inc"), fp32()) == "n/a: protocol inc vs coco"


def test_provider_reasons_name_both_lists_and_a_missing_one():
    child = int8(providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert speed_mismatch(child, fp32()) == "n/a: provider CUDA+CPU vs CPU"
    parent = fp32()
    del parent["provenance"]["runtime"]["providers"]
    assert speed_mismatch(int8(), parent) == "n/a: provider CPU vs none"
    child = int8()
    del child["provenance"]["runtime"]["providers"]
    assert speed_mismatch(child, fp32()) == "n/a: provider none vs CPU"


def test_graph_optimization_level_blanks_the_speedup():
    parent = with_config(fp32(), {"runtime": {"graph_optimization": "all"}})
    child = with_config(int8(), {"runtime": {"graph_optimization": "disable"}})
    assert accuracy_mismatch(child, parent) is None
    assert speed_mismatch(child, parent) == "n/a: different graph optimization"


def test_the_parent_is_a_result_of_the_parent_variant():
    other = metrics_document("ssd-13", mAP=0.2, images_per_s=2.0)  # comparable in every other way
    parent, child = fp32(), int8()
    assert find_parent_result(child, [child, other, parent]) == (parent, None)


def test_the_drop_parent_is_looked_up_on_the_child_subset(tmp_path):
    subset = {"name": "ci-500", "ids_sha256": "0" * 64, "images": 500}
    parent, child = fp32(images=500), int8(images=500)
    for document in (parent, child):
        document["provenance"]["subset"] = dict(subset)
        write_metrics(tmp_path, document, run_name(document["variant"], "coco", "ci-500"))
    found, note = parent_for_drop(ResultIndex(tmp_path), child, "ssd-12")
    assert (found["variant"], found["mAP"], note) == ("ssd-12", 0.1898, None)
