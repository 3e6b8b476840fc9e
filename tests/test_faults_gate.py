"""Gate and table limits (issue 15): the drop rule at its edge, a parent mAP of 0, like-with-like
comparisons of preprocessing and the decode pipeline, and non-finite numbers in metrics files."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from ssd_eval.errors import UserError
from ssd_eval.reports.gate import run_gate
from ssd_eval.reports.table import build_rows, write_table
from ssd_eval.results.index import load_results

from helpers import metrics_document, write_metrics

PARENT, CHILD = "ssd-12", "ssd-12-int8"


def result(variant: str, mAP: float, **kwargs) -> dict:
    """A metrics.json of ``variant`` with its own model sha256 (a quantized result must not use its parent's)."""
    kwargs.setdefault("model_sha", hashlib.sha256(variant.encode()).hexdigest())
    if variant == CHILD:
        kwargs.setdefault("parent", PARENT)
    return metrics_document(variant, mAP=mAP, **kwargs)


def write_case(tmp_path, parent_map: float, child_map: float, max_drop_pct: float = 1.0, parent=None, child=None):
    """(baselines, results): the child's baseline gates its mAP loosely and its drop vs the parent strictly."""
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir(parents=True)
    (baselines / f"{CHILD}.yaml").write_text(
        f"variant: {CHILD}\nprotocol: coco\nimages: 5000\n"
        f"metrics:\n  mAP: {{expected: {child_map}, abs_tol: 0.5, rel_tol: null}}\n"
        f"quantized:\n  parent: {PARENT}\n  max_drop_pct: {max_drop_pct}\n")
    write_metrics(results, parent or result(PARENT, parent_map))
    write_metrics(results, child or result(CHILD, child_map))
    return baselines, results


# ------------------------------------------------------------------------------ the drop rule at its edge

# Parent mAP 0.2 and max_drop_pct 1.0: a child at 0.198 drops exactly 1 %, at 0.19799 1.005 %.
@pytest.mark.parametrize("child_map, drop, code", [
    (0.2, "0.00", 0),
    (0.198, "1.00", 0),          # exactly at max_drop_pct: passes
    (0.19799, "1.01", 1),        # 0.005 percentage points above (1.005 %): fails
    (0.1978, "1.10", 1),
], ids=["no-drop", "exactly-at-limit", "0.005-above", "0.1-above"])
def test_drop_rule_edge(tmp_path, capsys, child_map, drop, code):
    baselines, results = write_case(tmp_path, 0.2, child_map)
    assert run_gate(baselines, results, variants=[CHILD]) == code
    out = capsys.readouterr().out
    status = "PASS" if code == 0 else "FAIL"
    assert f"{status} {CHILD} drop_pct vs {PARENT}: expected <= 1.00%, got {drop}%" in out


def test_drop_limit_zero_tolerates_only_rounding(tmp_path):
    baselines, results = write_case(tmp_path, 0.2, 0.2, max_drop_pct=0.0)
    assert run_gate(baselines, results, variants=[CHILD]) == 0
    baselines, results = write_case(tmp_path / "b", 0.2, 0.19999, max_drop_pct=0.0)  # 0.005 % drop
    assert run_gate(baselines, results, variants=[CHILD]) == 1


def test_parent_map_of_zero_is_one_input_error_line(tmp_path, capsys):
    baselines, results = write_case(tmp_path, 0.0, 0.1)
    assert run_gate(baselines, results, variants=[CHILD]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1, errors
    assert errors[0].startswith("ssd-eval gate: error: ") and "mAP is 0" in errors[0]
    assert "drop ratio" in errors[0]


# ------------------------------------------------------------------------------ like with like


def with_config(document: dict, **sections) -> dict:
    document = copy.deepcopy(document)
    base = {"preprocess": {"input_size": [1200, 1200], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "scale": 1 / 255, "resize_backend": "pil"},
            "postprocess": {"max_detections": 100, "score_threshold": 0.0, "clip_boxes": True, "label_map": None},
            "pipeline": {"workers": 2, "mode": "thread", "prefetch": 0}}
    for section, values in sections.items():
        base[section] = dict(base[section], **values)
    document["provenance"]["config"] = base
    return document


def rows_for(parent: dict, child: dict) -> dict:
    return next(r for r in build_rows([parent, child]) if r["variant"] == CHILD)


def test_same_settings_are_compared():
    row = rows_for(with_config(result(PARENT, 0.2, images_per_s=2.0)),
                   with_config(result(CHILD, 0.19, images_per_s=7.0)))
    assert row["drop_pct"] == "5.00" and row["speedup"] == "3.50x"


@pytest.mark.parametrize("change, key", [
    ({"mean": [0.5, 0.5, 0.5]}, "mean"),
    ({"std": [0.225, 0.224, 0.229]}, "std"),
    ({"input_size": [1200, 1000]}, "input_size"),
    ({"scale": 1.0}, "scale"),
])
def test_preprocessing_differences_are_not_compared(change, key):
    row = rows_for(with_config(result(PARENT, 0.2)), with_config(result(CHILD, 0.19), preprocess=change))
    assert row["drop_pct"] == f"n/a: different preprocess ({key})"
    assert row["speedup"] == f"n/a: different preprocess ({key})"


def test_gate_refuses_a_parent_with_other_preprocessing(tmp_path, capsys):
    parent = with_config(result(PARENT, 0.2))
    child = with_config(result(CHILD, 0.2), preprocess={"mean": [0.5, 0.5, 0.5]})
    baselines, results = write_case(tmp_path, 0.2, 0.2, parent=parent, child=child)
    assert run_gate(baselines, results, variants=[CHILD]) == 2
    assert "different preprocess (mean)" in capsys.readouterr().err


@pytest.mark.parametrize("change", [{"workers": 8}, {"mode": "process"}, {"prefetch": 64}])
def test_decode_pipeline_differences_blank_only_the_speedup(change):
    row = rows_for(with_config(result(PARENT, 0.2, images_per_s=2.0)),
                   with_config(result(CHILD, 0.19, images_per_s=7.0), pipeline=change))
    assert row["drop_pct"] == "5.00"
    assert row["speedup"] == "n/a: different decode pipeline"


# ------------------------------------------------------------------------------ non-finite numbers


def _set(document: dict, dotted: str, value) -> None:
    node = document
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value


@pytest.mark.parametrize("key, value", [
    ("mAP", float("nan")),
    ("mAP", float("inf")),
    ("AP50", float("nan")),
    ("AR100", float("-inf")),
    ("published_map", float("nan")),
    ("provenance.images_per_s", float("inf")),
])
def test_nan_or_inf_in_a_metrics_file_is_refused_naming_file_and_key(tmp_path, key, value):
    document = result(PARENT, 0.2, published=0.19)
    _set(document, key, value)
    path = write_metrics(tmp_path, document)
    assert ("NaN" if value != value else "Infinity") in path.read_text()  # as Python's json writes them
    with pytest.raises(UserError) as refused:
        load_results(tmp_path)
    assert str(path) in str(refused.value) and key in str(refused.value)
    with pytest.raises(UserError):
        write_table(tmp_path, quiet=True)
    assert not (tmp_path / "TABLE.md").exists() and not (tmp_path / "table.csv").exists()


def test_a_finite_file_makes_a_table(tmp_path):
    write_metrics(tmp_path, result(PARENT, 0.2, published=0.19))
    [row] = write_table(tmp_path, quiet=True)
    assert row["map"] == "0.2000" and json.loads(json.dumps(row)) == row
