"""Tests for ssd_eval.reports.gate: exit codes, printed lines, JUnit XML, baseline updates."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path

import pytest
import yaml

from ssd_eval.errors import UserError
from ssd_eval.reports.baseline import load_baseline, parse_baseline
from ssd_eval.reports.baseline_render import header_comments, inline_comments, render_baseline
from ssd_eval.reports.baseline_update import update_baselines
from ssd_eval.reports.gate import run_gate
from ssd_eval.utils import sha256_of

from helpers import metrics_document, write_metrics

REPO = Path(__file__).resolve().parents[1]

def model_sha(variant: str) -> str:
    """A distinct model sha256 per variant (a quantized result made with its parent's model fails the gate)."""
    return hashlib.sha256(variant.encode()).hexdigest()


def gate_metrics(variant: str, **values) -> dict:
    """metrics_document with the 0.35 AP50 FP32_BASELINE expects (the shared builder derives 1.8 * mAP)
    and the variant's own model sha256."""
    values.setdefault("AP50", 0.35)
    values.setdefault("model_sha", model_sha(variant))
    return metrics_document(variant, **values)


FP32_BASELINE = """\
variant: ssd-12
protocol: coco
images: 5000
metrics:
  mAP: {expected: 0.1898, abs_tol: 0.002, rel_tol: null}
  AP50: {expected: 0.35, abs_tol: 0.002, rel_tol: null}
"""

INT8_BASELINE = """\
variant: ssd-12-int8
protocol: coco
images: 5000
metrics:
  mAP: {expected: 0.1892, abs_tol: 0.002, rel_tol: null}
quantized:
  parent: ssd-12
  max_drop_pct: MAXDROP
"""


@pytest.fixture
def dirs(tmp_path):
    """(baselines_dir, results_dir) holding matching ssd-12 and ssd-12-int8 files."""
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE)
    (baselines / "ssd-12-int8.yaml").write_text(INT8_BASELINE.replace("MAXDROP", "1.0"))
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898))
    write_metrics(results, gate_metrics("ssd-12-int8", mAP=0.1892, parent="ssd-12"))
    return baselines, results


def test_within_tolerance_passes(dirs, capsys):
    assert run_gate(*dirs) == 0
    out = capsys.readouterr().out
    assert "PASS ssd-12 mAP: expected 0.1898, got 0.1898, allowed 0.0020" in out
    assert "PASS ssd-12-int8 drop_pct vs ssd-12: expected <= 1.00%, got 0.32%" in out
    assert "5 passed" not in out and "6 passed, 0 failed, 0 errors" in out  # 2 of them: the gated models


def test_small_loss_within_tolerance_passes(dirs):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1880))  # 0.0018 below, allowed 0.002
    (baselines / "ssd-12-int8.yaml").unlink()
    assert run_gate(baselines, results) == 0


def test_regression_fails_with_full_line(dirs, capsys):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1850))
    assert run_gate(baselines, results, variants=["ssd-12"]) == 1
    out = capsys.readouterr().out
    (line,) = [text for text in out.splitlines() if text.startswith("FAIL")]
    assert "ssd-12 mAP" in line
    assert "expected 0.1898" in line and "got 0.1850" in line and "allowed 0.0020" in line


def test_improvement_beyond_tolerance_passes_with_note(dirs, capsys):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12", mAP=0.2000))
    assert run_gate(baselines, results, variants=["ssd-12"]) == 0
    out = capsys.readouterr().out
    assert "PASS ssd-12 mAP" in out
    assert "ssd-eval baseline --update" in out


def test_broken_drop_rule_fails(dirs, capsys):
    baselines, results = dirs
    (baselines / "ssd-12-int8.yaml").write_text(INT8_BASELINE.replace("MAXDROP", "0.1"))
    assert run_gate(baselines, results) == 1
    out = capsys.readouterr().out
    assert "FAIL ssd-12-int8 drop_pct vs ssd-12: expected <= 0.10%, got 0.32%" in out
    assert "PASS ssd-12-int8 mAP" in out


def test_missing_metrics_is_input_error(dirs, capsys):
    baselines, results = dirs
    (results / "ssd-12-int8" / "metrics.json").unlink()
    assert run_gate(baselines, results) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssd-eval gate: error: ")
    assert "ssd-12-int8/metrics.json" in err


def test_missing_results_dir_is_input_error(dirs, capsys):
    baselines, results = dirs
    assert run_gate(baselines, results.parent / "nowhere") == 2
    assert "results directory not found" in capsys.readouterr().err


def test_missing_parent_result_is_input_error(dirs, capsys):
    baselines, results = dirs
    (results / "ssd-12" / "metrics.json").unlink()
    assert run_gate(baselines, results, variants=["ssd-12-int8"]) == 2
    assert "ssd-12/metrics.json" in capsys.readouterr().err


def test_protocol_mismatch_is_input_error(dirs, capsys):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898, protocol="inc"))
    assert run_gate(baselines, results, variants=["ssd-12"]) == 2
    err = capsys.readouterr().err
    assert "protocol 'inc'" in err and "'coco'" in err


def test_image_count_mismatch_is_input_error(dirs, capsys):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898, images=500))
    assert run_gate(baselines, results, variants=["ssd-12"]) == 2
    err = capsys.readouterr().err
    assert "500 images" in err and "5000 images" in err


def test_input_error_wins_over_regression(dirs):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1))
    (results / "ssd-12-int8" / "metrics.json").unlink()
    assert run_gate(baselines, results) == 2


@pytest.mark.parametrize("text, key", [
    (FP32_BASELINE.replace("abs_tol: 0.002, rel_tol: null}\n  AP50",
                           "abs_tol: null, rel_tol: null}\n  AP50"), "metrics.mAP"),
    (FP32_BASELINE.replace("AP50:", "AP51:"), "metrics.AP51"),
    (FP32_BASELINE.replace("images: 5000", "images: lots"), "images"),
    (FP32_BASELINE.replace("expected: 0.1898", "expected: high"), "metrics.mAP.expected"),
    (FP32_BASELINE.replace("abs_tol: 0.002, rel_tol: null}\n  AP50",
                           "abs_tol: -1, rel_tol: null}\n  AP50"), "metrics.mAP.abs_tol"),
    (FP32_BASELINE + "tolerance: 1\n", "tolerance"),
    (FP32_BASELINE.replace("variant: ssd-12", "variant: ssd-10"), "variant"),
    ("variant: [unclosed\n", "not valid YAML"),
])
def test_malformed_baseline_is_input_error(dirs, capsys, text, key):
    baselines, results = dirs
    (baselines / "ssd-12.yaml").write_text(text)
    assert run_gate(baselines, results) == 2
    err = capsys.readouterr().err
    assert "ssd-12.yaml" in err and key in err


def test_no_baselines_is_input_error(tmp_path, capsys):
    (tmp_path / "baselines").mkdir()
    (tmp_path / "results").mkdir()
    assert run_gate(tmp_path / "baselines", tmp_path / "results") == 2
    assert "no baselines" in capsys.readouterr().err
    assert run_gate(tmp_path / "absent", tmp_path / "results") == 2


def test_unknown_variant_is_input_error(dirs, capsys):
    assert run_gate(*dirs, variants=["ssd-10"]) == 2
    assert "no baseline for variant 'ssd-10'" in capsys.readouterr().err


def test_rel_tol_versus_abs_tol(dirs, capsys):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898, AP50=0.34))  # 0.01 below
    assert run_gate(baselines, results, variants=["ssd-12"]) == 1  # abs_tol 0.002 only
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE.replace(
        "AP50: {expected: 0.35, abs_tol: 0.002, rel_tol: null}",
        "AP50: {expected: 0.35, abs_tol: 0.002, rel_tol: 0.05}"))  # 0.05*0.35 = 0.0175
    capsys.readouterr()
    assert run_gate(baselines, results, variants=["ssd-12"]) == 0
    assert "PASS ssd-12 AP50: expected 0.3500, got 0.3400, allowed 0.0175" in capsys.readouterr().out
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE.replace(
        "AP50: {expected: 0.35, abs_tol: 0.002, rel_tol: null}",
        "AP50: {expected: 0.35, abs_tol: null, rel_tol: 0.02}"))  # 0.007 < 0.01
    assert run_gate(baselines, results, variants=["ssd-12"]) == 1


def test_junit_xml(dirs, tmp_path):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898, AP50=0.30))
    write_metrics(results, gate_metrics("ssd-12-int8", mAP=0.1850, parent="ssd-12"))
    junit = tmp_path / "out" / "gate.xml"
    junit.parent.mkdir()
    # ssd-12: mAP passes, AP50 fails; int8: mAP fails, drop (2.53% > 1%) fails
    assert run_gate(baselines, results, junit=junit) == 1
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("name") == "ssd-eval-gate"
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests")) == 6  # 4 metric and drop checks, 2 model checks
    assert len(suite.findall("testcase/failure")) == int(suite.get("failures")) == 3
    assert suite.findall("testcase/error") == [] and suite.get("errors") == "0"
    assert [p.name for p in junit.parent.iterdir()] == ["gate.xml"]


def test_junit_records_input_errors(dirs, tmp_path):
    baselines, results = dirs
    (results / "ssd-12-int8" / "metrics.json").unlink()
    junit = tmp_path / "gate.xml"
    assert run_gate(baselines, results, junit=junit) == 2
    suite = ET.parse(junit).getroot()
    assert suite.get("errors") == "1"
    (error,) = suite.findall("testcase/error")
    assert "ssd-12-int8/metrics.json" in error.get("message")


# --------------------------------------------------------------------------- update

def test_update_creates_baselines_that_pass(tmp_path, capsys):
    results, baselines = tmp_path / "results", tmp_path / "baselines"
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898))
    write_metrics(results, gate_metrics("ssd-12-int8", mAP=0.1892, parent="ssd-12"))
    assert update_baselines(baselines, results) == 0
    out = capsys.readouterr().out
    assert "--- /dev/null" in out and f"+++ {baselines / 'ssd-12-int8.yaml'}" in out
    data = yaml.safe_load((baselines / "ssd-12-int8.yaml").read_text())
    assert data["variant"] == "ssd-12-int8" and data["protocol"] == "coco"
    assert data["images"] == 5000
    assert list(data["metrics"]) == ["mAP", "AP50", "AP75"]
    assert data["metrics"]["mAP"] == {"expected": 0.1892, "abs_tol": 0.002, "rel_tol": None}
    assert data["quantized"] == {"parent": "ssd-12", "max_drop_pct": 1.0}
    assert "quantized" not in yaml.safe_load((baselines / "ssd-12.yaml").read_text())
    assert run_gate(baselines, results) == 0


def test_update_rewrites_values_and_keeps_tolerances(dirs, capsys):
    baselines, results = dirs
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE.replace(
        "AP50: {expected: 0.35, abs_tol: 0.002, rel_tol: null}",
        "APs: {expected: 0.04, abs_tol: null, rel_tol: 0.1}"))
    (baselines / "ssd-12-int8.yaml").write_text(INT8_BASELINE.replace("MAXDROP", "2.5"))
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1800))
    write_metrics(results, gate_metrics("ssd-12-int8", mAP=0.1790, parent="ssd-12"))
    assert run_gate(baselines, results) == 1
    capsys.readouterr()

    assert update_baselines(baselines, results, abs_tol=0.5, max_drop_pct=9.0) == 0
    out = capsys.readouterr().out
    assert "-  mAP: {expected: 0.1898" in out and "+  mAP: {expected: 0.18," in out
    assert "+  mAP: {expected: 0.179," in out
    fp32 = yaml.safe_load((baselines / "ssd-12.yaml").read_text())
    assert fp32["metrics"] == {"mAP": {"expected": 0.18, "abs_tol": 0.002, "rel_tol": None},
                               "APs": {"expected": 0.05, "abs_tol": None, "rel_tol": 0.1}}
    int8 = yaml.safe_load((baselines / "ssd-12-int8.yaml").read_text())
    assert int8["quantized"] == {"parent": "ssd-12", "max_drop_pct": 2.5}
    assert int8["metrics"]["mAP"]["abs_tol"] == 0.002
    assert run_gate(baselines, results) == 0

    capsys.readouterr()
    assert update_baselines(baselines, results) == 0  # nothing changes the second time
    out = capsys.readouterr().out
    assert "---" not in out and "0 file(s) changed" in out


def test_update_follows_protocol_and_image_count(dirs):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12", mAP=0.19, protocol="inc", images=4952))
    assert update_baselines(baselines, results, variants=["ssd-12"]) == 0
    data = yaml.safe_load((baselines / "ssd-12.yaml").read_text())
    assert (data["protocol"], data["images"]) == ("inc", 4952)
    assert run_gate(baselines, results, variants=["ssd-12"]) == 0


def test_update_input_errors(dirs, capsys):
    baselines, results = dirs
    before = (baselines / "ssd-12.yaml").read_text()
    assert update_baselines(baselines, results, variants=["ssd-10"]) == 2
    assert "ssd-eval baseline: error:" in capsys.readouterr().err
    assert update_baselines(baselines, results.parent / "nowhere") == 2
    (baselines / "ssd-12-int8.yaml").write_text("metrics: 3\n")
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1))
    assert update_baselines(baselines, results) == 2
    assert "ssd-12-int8.yaml" in capsys.readouterr().err
    assert (baselines / "ssd-12.yaml").read_text() == before  # nothing written on error


def test_update_rounds_expected_and_zero_tolerance_still_passes(tmp_path):
    results, baselines = tmp_path / "results", tmp_path / "baselines"
    write_metrics(results, gate_metrics("ssd-12", mAP=0.18923456789, AP50=0.3400000000000001))
    assert update_baselines(baselines, results, abs_tol=0.0) == 0
    text = (baselines / "ssd-12.yaml").read_text()
    assert "mAP: {expected: 0.189235, abs_tol: 0.0, rel_tol: null}" in text
    assert "AP50: {expected: 0.34," in text
    assert run_gate(baselines, results) == 0


def test_inc_protocol_results_are_found_in_their_own_folder(tmp_path, capsys):
    # `make eval MODEL=ssd-12 PROTOCOL=inc` writes results/ssd-12-inc/.
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE.replace("protocol: coco", "protocol: inc"))
    (baselines / "ssd-12-int8.yaml").write_text(
        INT8_BASELINE.replace("MAXDROP", "1.0").replace("protocol: coco", "protocol: inc"))
    for variant, value, parent in (("ssd-12", 0.1898, None), ("ssd-12-int8", 0.1892, "ssd-12")):
        write_metrics(results, gate_metrics(variant, mAP=value - 0.05, parent=parent))  # coco: lower
        reference = gate_metrics(variant, mAP=value, parent=parent, protocol="inc")
        path = results / f"{variant}-inc" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(reference))
    assert run_gate(baselines, results) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "drop_pct vs ssd-12" in out


# --------------------------------------------------------------------------- which result is gated

def reference_dirs(tmp_path):
    """(baselines_dir, results_dir): inc-protocol baselines for ssd-12 and ssd-12-int8."""
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE.replace("protocol: coco", "protocol: inc"))
    (baselines / "ssd-12-int8.yaml").write_text(
        INT8_BASELINE.replace("MAXDROP", "1.0").replace("protocol: coco", "protocol: inc"))
    return baselines, results


reference_metrics = partial(gate_metrics, protocol="inc")


def test_canonical_folder_wins_over_a_stale_copy(tmp_path, capsys):
    baselines, results = reference_dirs(tmp_path)
    write_metrics(results, reference_metrics("ssd-12", mAP=0.1898), "ssd-12-inc")
    # An old good copy sorts first; the canonical folder holds the current, regressed run.
    write_metrics(results, reference_metrics("ssd-12-int8", mAP=0.1892, parent="ssd-12"),
                  "archive-2026-10")
    write_metrics(results, reference_metrics("ssd-12-int8", mAP=0.1700, parent="ssd-12"),
                  "ssd-12-int8-inc")
    assert run_gate(baselines, results, variants=["ssd-12-int8"]) == 1
    out = capsys.readouterr().out
    assert "FAIL ssd-12-int8 mAP: expected 0.1892, got 0.1700" in out
    assert "FAIL ssd-12-int8 drop_pct vs ssd-12" in out
    assert "archive-2026-10" not in out


def test_parent_canonical_folder_wins_over_a_stale_copy(tmp_path, capsys):
    baselines, results = reference_dirs(tmp_path)
    write_metrics(results, reference_metrics("ssd-12", mAP=0.1892), "archive-2026-10")  # drop 0 %
    write_metrics(results, reference_metrics("ssd-12", mAP=0.1950), "ssd-12-inc")  # drop 2.97 %
    write_metrics(results, reference_metrics("ssd-12-int8", mAP=0.1892, parent="ssd-12"),
                  "ssd-12-int8-inc")
    assert run_gate(baselines, results, variants=["ssd-12-int8"]) == 1
    assert "FAIL ssd-12-int8 drop_pct vs ssd-12: expected <= 1.00%, got 2.97%" in capsys.readouterr().out


def test_single_result_outside_the_canonical_folder_is_used_and_named(tmp_path, capsys):
    baselines, results = reference_dirs(tmp_path)
    write_metrics(results, reference_metrics("ssd-12", mAP=0.1898), "ssd-12-inc")
    write_metrics(results, gate_metrics("ssd-12-int8", mAP=0.1500, parent="ssd-12"))  # coco: not this one
    write_metrics(results, reference_metrics("ssd-12-int8", mAP=0.1892, parent="ssd-12"), "run-7")
    assert run_gate(baselines, results, variants=["ssd-12-int8"]) == 0
    out = capsys.readouterr().out
    assert "PASS ssd-12-int8 mAP: expected 0.1892, got 0.1892" in out
    (note,) = [line for line in out.splitlines() if line.startswith("note:")]
    assert "ssd-12-int8-inc/ missing" in note
    assert f"using {results / 'run-7' / 'metrics.json'}" in note


def test_several_results_outside_the_canonical_folder_are_an_input_error(tmp_path, capsys):
    baselines, results = reference_dirs(tmp_path)
    write_metrics(results, reference_metrics("ssd-12", mAP=0.1898), "ssd-12-inc")
    write_metrics(results, reference_metrics("ssd-12-int8", mAP=0.1892, parent="ssd-12"), "run-7")
    write_metrics(results, reference_metrics("ssd-12-int8", mAP=0.1500, parent="ssd-12"), "run-8")
    assert run_gate(baselines, results, variants=["ssd-12-int8"]) == 2
    captured = capsys.readouterr()
    assert "PASS" not in captured.out and "FAIL" not in captured.out
    err = captured.err
    assert err.startswith("ssd-eval gate: error: ")
    assert "ssd-12-int8-inc/metrics.json: missing" in err
    assert str(results / "run-7" / "metrics.json") in err and str(results / "run-8" / "metrics.json") in err


def test_several_parent_results_outside_the_canonical_folder_are_an_input_error(tmp_path, capsys):
    baselines, results = reference_dirs(tmp_path)
    write_metrics(results, reference_metrics("ssd-12", mAP=0.1898), "old-a")
    write_metrics(results, reference_metrics("ssd-12", mAP=0.1892), "old-b")
    write_metrics(results, reference_metrics("ssd-12-int8", mAP=0.1892, parent="ssd-12"),
                  "ssd-12-int8-inc")
    assert run_gate(baselines, results, variants=["ssd-12-int8"]) == 2
    err = capsys.readouterr().err
    assert "ssd-12-inc/metrics.json: missing" in err
    assert "old-a" in err and "old-b" in err and "parent of ssd-12-int8" in err


def test_single_parent_result_outside_the_canonical_folder_is_used_and_named(tmp_path, capsys):
    baselines, results = reference_dirs(tmp_path)
    write_metrics(results, reference_metrics("ssd-12", mAP=0.1898), "old-a")
    write_metrics(results, reference_metrics("ssd-12-int8", mAP=0.1892, parent="ssd-12"),
                  "ssd-12-int8-inc")
    assert run_gate(baselines, results, variants=["ssd-12-int8"]) == 0
    out = capsys.readouterr().out
    assert "PASS ssd-12-int8 drop_pct vs ssd-12" in out
    assert f"using {results / 'old-a' / 'metrics.json'}" in out


def test_canonical_folder_holding_another_variant_is_an_input_error(dirs, capsys):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-10", mAP=0.1898), "ssd-12")
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898), "elsewhere")
    assert run_gate(baselines, results, variants=["ssd-12"]) == 2
    assert "holds variant 'ssd-10', not 'ssd-12'" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, protocol", [
    ({}, "coco"),
    ({"protocol": "inc"}, "inc"),
    ({"protocol": "inc", "preprocess": {"resize_backend": "pil"}},
     "inc+resize_backend=pil"),
])
def test_canonical_folder_is_where_eval_writes(overrides, protocol):
    from ssd_eval.config.schema import Config, PreprocessConfig, run_name

    config = Config(variant="ssd-12", protocol=overrides.get("protocol", "coco"),
                    preprocess=PreprocessConfig(**overrides.get("preprocess", {})))
    assert config.protocol_label() == protocol
    assert config.out_dir.parent.name == "results"
    assert config.out_dir.name == run_name("ssd-12", protocol)


def test_each_metrics_file_is_read_once_per_gate_run(dirs, monkeypatch):
    from ssd_eval.results import index as results

    reads = []
    real = results.read_metrics_file
    monkeypatch.setattr(results, "read_metrics_file", lambda path: reads.append(path) or real(path))
    assert run_gate(*dirs) == 0
    assert len(reads) == len(set(reads)) == 2


def test_parent_not_comparable_is_input_error(dirs, capsys):
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898, annotations="other-ann"))
    assert run_gate(baselines, results, variants=["ssd-12-int8"]) == 2
    captured = capsys.readouterr()
    assert "drop_pct" not in captured.out
    assert "is not comparable with" in captured.err and "different annotation files" in captured.err


@pytest.mark.parametrize("make_target", ["directory", "file as parent"])
def test_unwritable_junit_path_is_input_error(dirs, tmp_path, capsys, make_target):
    target = tmp_path / "junit-target"
    if make_target == "directory":
        target.mkdir()
    else:
        target.write_text("not a directory")
        target = target / "gate.xml"
    assert run_gate(*dirs, junit=target) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssd-eval gate: error: ") and str(target) in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- update: which result

ZOO_INT8 = """\
# Published ONNX Model Zoo mAP for ssd-12-int8, as a gate for inc-protocol runs.
# These are the published numbers, not a measurement made here.
variant: ssd-12-int8
protocol: inc
images: 4952
metrics:
  mAP: {expected: 0.1892, abs_tol: 0.002, rel_tol: null}
quantized:
  parent: ssd-12
  max_drop_pct: 2.0   # published: int8 0.32 %, qdq 1.84 %
"""


def test_update_reads_the_result_under_the_existing_files_protocol(tmp_path, capsys):
    baselines, results = tmp_path / "zoo", tmp_path / "results"
    baselines.mkdir()
    (baselines / "ssd-12-int8.yaml").write_text(ZOO_INT8)
    write_metrics(results, gate_metrics("ssd-12", mAP=0.15))
    write_metrics(results, gate_metrics("ssd-12-int8", mAP=0.14, parent="ssd-12"))
    write_metrics(results, reference_metrics("ssd-12", mAP=0.1901, images=4952), "ssd-12-inc")
    write_metrics(results, reference_metrics("ssd-12-int8", mAP=0.1893, parent="ssd-12", images=4952),
                  "ssd-12-int8-inc")
    assert update_baselines(baselines, results, variants=["ssd-12-int8"]) == 0
    text = (baselines / "ssd-12-int8.yaml").read_text()
    data = yaml.safe_load(text)
    assert (data["protocol"], data["images"]) == ("inc", 4952)
    assert data["metrics"] == {"mAP": {"expected": 0.1893, "abs_tol": 0.002, "rel_tol": None}}
    assert data["quantized"] == {"parent": "ssd-12", "max_drop_pct": 2.0}
    assert text.startswith(ZOO_INT8.split("variant:")[0])  # the comment header is kept
    pin = f"model_sha256: {model_sha('ssd-12-int8')}   # the model measured (another one is gated on mAP, with a note)"
    assert text == ZOO_INT8.replace("expected: 0.1892", "expected: 0.1893").replace(  # and inline comments
        "metrics:", f"{pin}\nmetrics:", 1)
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    changed = [line for line in captured.out.splitlines()
               if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))]
    assert changed == [f"+{pin}",
                       "-  mAP: {expected: 0.1892, abs_tol: 0.002, rel_tol: null}",
                       "+  mAP: {expected: 0.1893, abs_tol: 0.002, rel_tol: null}"]
    assert run_gate(baselines, results) == 0


@pytest.mark.parametrize("path", sorted((REPO / "baselines").rglob("*.yaml")), ids=lambda p: p.name)
def test_checked_in_baselines_render_back_unchanged(path):
    # What `baseline --update` writes when no value changed: the file as it is, comments included.
    text = path.read_text()
    assert render_baseline(load_baseline(path), header_comments(text), inline_comments(text)) == text


def test_update_without_a_result_under_the_files_protocol_writes_nothing(tmp_path, capsys):
    baselines, results = tmp_path / "zoo", tmp_path / "results"
    baselines.mkdir()
    (baselines / "ssd-12-int8.yaml").write_text(ZOO_INT8)
    write_metrics(results, gate_metrics("ssd-12", mAP=0.15))
    write_metrics(results, gate_metrics("ssd-12-int8", mAP=0.14, parent="ssd-12"))
    assert update_baselines(baselines, results) == 2
    err = capsys.readouterr().err
    assert "ssd-12-int8-inc/metrics.json: missing" in err and "PROTOCOL=inc" in err
    assert (baselines / "ssd-12-int8.yaml").read_text() == ZOO_INT8


def test_update_finds_variants_by_their_metrics_not_their_folder(tmp_path, capsys):
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    write_metrics(results, reference_metrics("ssd-12", mAP=0.19, images=4952), "ssd-12-inc")
    assert update_baselines(baselines, results) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "skipping" not in captured.err
    data = yaml.safe_load((baselines / "ssd-12.yaml").read_text())
    assert (data["variant"], data["protocol"], data["images"]) == ("ssd-12", "inc", 4952)
    assert sorted(p.name for p in baselines.iterdir()) == ["ssd-12.yaml"]
    assert run_gate(baselines, results) == 0


def test_new_baseline_with_several_protocols_uses_coco_and_says_so(tmp_path, capsys):
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    write_metrics(results, reference_metrics("ssd-12", mAP=0.19, images=4952), "ssd-12-inc")
    write_metrics(results, gate_metrics("ssd-12", mAP=0.17))
    assert update_baselines(baselines, results) == 0
    err = capsys.readouterr().err
    assert "ssd-eval baseline: note: ssd-12 has results under protocols" in err
    assert "coco" in err and "inc" in err
    data = yaml.safe_load((baselines / "ssd-12.yaml").read_text())
    assert (data["protocol"], data["images"], data["metrics"]["mAP"]["expected"]) == ("coco", 5000, 0.17)


def test_new_baseline_with_several_protocols_but_no_coco_is_an_input_error(tmp_path, capsys):
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    write_metrics(results, reference_metrics("ssd-12", mAP=0.19, images=4952), "ssd-12-inc")
    mixed = gate_metrics("ssd-12", mAP=0.18, protocol="inc+resize_backend=pil", images=4952)
    write_metrics(results, mixed, "ssd-12-inc+resize_backend=pil")
    assert update_baselines(baselines, results) == 2
    assert "ssd-12 has results under protocols" in capsys.readouterr().err
    assert not baselines.exists() or not list(baselines.iterdir())


def test_baseline_pins_the_annotation_file(tmp_path, capsys):
    results, baselines = tmp_path / "results", tmp_path / "baselines"
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898, annotations="a" * 64))
    assert update_baselines(baselines, results) == 0
    assert yaml.safe_load((baselines / "ssd-12.yaml").read_text())["annotations_sha256"] == "a" * 64
    assert run_gate(baselines, results) == 0
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898, annotations="b" * 64))
    capsys.readouterr()
    assert run_gate(baselines, results) == 2
    assert capsys.readouterr().err.splitlines()[0].endswith(
        f"annotation file sha256 bbbbbbbbbbbb but {baselines / 'ssd-12.yaml'} applies to aaaaaaaaaaaa")


def test_malformed_annotations_sha256_in_a_baseline_is_an_input_error(dirs, capsys):
    baselines, results = dirs
    path = baselines / "ssd-12.yaml"
    path.write_text(path.read_text() + "annotations_sha256: nope\n")
    assert run_gate(baselines, results) == 2
    assert "annotations_sha256" in capsys.readouterr().err


# --------------------------------------------------------------------------- issue 13: which model was gated

def pinning_config(configs: Path, variant: str, sha256: str | None) -> Path:
    """A minimal loadable configs/<variant>.yaml, pinning `sha256` (or nothing)."""
    configs.mkdir(exist_ok=True)
    path = configs / f"{variant}.yaml"
    path.write_text(f"variant: {variant}\nmodel:\n  path: data/models/{variant}.onnx\n  sha256: "
                    f"{sha256 or 'null'}\ndataset:\n  annotations: a.json\n  images: images\n")
    return path


def test_gate_prints_which_model_was_gated(dirs, tmp_path, capsys):
    """Item 11: the gated model's sha256 (12 hex) is in the output, and whether anything pinned it."""
    pinning_config(tmp_path / "configs", "ssd-12", model_sha("ssd-12"))
    pinning_config(tmp_path / "configs", "ssd-12-int8", None)
    assert run_gate(*dirs, configs_dir=tmp_path / "configs") == 0
    out = capsys.readouterr().out
    assert (f"PASS ssd-12 model: gated {model_sha('ssd-12')[:12]} (data/models/ssd-12.onnx), pinned by "
            f"{tmp_path / 'configs' / 'ssd-12.yaml'} model.sha256") in out
    assert (f"PASS ssd-12-int8 model: gated {model_sha('ssd-12-int8')[:12]} (data/models/ssd-12-int8.onnx), "
            f"not pinned ({tmp_path / 'configs' / 'ssd-12-int8.yaml'} pins no model.sha256; ") in out


def test_model_other_than_the_config_pin_is_gated_on_map_with_a_note_unless_required(dirs, tmp_path, capsys):
    """Issue 21: a new model of a variant (`eval --model` drops the config's pin) is gated on its metrics, with a
    note naming both hashes; --require-model-sha256 keeps the old pin."""
    pinning_config(tmp_path / "configs", "ssd-12", "5ec1e058e666" + "0" * 52)
    assert run_gate(*dirs, variants=["ssd-12"], configs_dir=tmp_path / "configs") == 0
    out = capsys.readouterr().out
    assert (f"PASS ssd-12 model: gated {model_sha('ssd-12')[:12]} (data/models/ssd-12.onnx), a new model of the "
            "variant (see the note)\n"
            f"note: ssd-12 model changed since {tmp_path / 'configs' / 'ssd-12.yaml'} model.sha256: 5ec1e058e666… -> "
            f"{model_sha('ssd-12')[:12]}…; gated on mAP, AP50\n") in out
    assert run_gate(*dirs, variants=["ssd-12"], configs_dir=tmp_path / "configs", require_model_sha256=True) == 1
    assert (f"FAIL ssd-12 model: gated {model_sha('ssd-12')[:12]} (data/models/ssd-12.onnx), expected "
            f"5ec1e058e666 ({tmp_path / 'configs' / 'ssd-12.yaml'} model.sha256; --require-model-sha256): this "
            "result is not of ssd-12's pinned model") in capsys.readouterr().out


def test_a_better_model_than_the_baseline_pin_passes_with_the_model_changed_note(dirs, capsys):
    """Issue 21: `baseline --update` pinned model_sha256; an improved model is what the gate judges, on mAP."""
    baselines, results = dirs
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE + f"model_sha256: '{'0' * 64}'\n")
    write_metrics(results, gate_metrics("ssd-12", mAP=0.25, model_sha="f" * 64))
    assert run_gate(baselines, results, variants=["ssd-12"]) == 0
    out = capsys.readouterr().out
    assert "note: ssd-12 model changed since the baseline: 000000000000… -> ffffffffffff…; gated on mAP, AP50" in out
    assert "PASS ssd-12 mAP: expected 0.1898, got 0.2500" in out
    write_metrics(results, gate_metrics("ssd-12", mAP=0.15, model_sha="f" * 64))  # a worse new model fails on mAP
    assert run_gate(baselines, results, variants=["ssd-12"]) == 1
    assert "FAIL ssd-12 mAP: expected 0.1898, got 0.1500" in capsys.readouterr().out


def test_require_model_sha256_in_the_baseline_keeps_the_pin(dirs, capsys):
    baselines, results = dirs
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE + f"model_sha256: '{'0' * 64}'\nrequire_model_sha256: true\n")
    write_metrics(results, gate_metrics("ssd-12", mAP=0.25, model_sha="f" * 64))
    assert run_gate(baselines, results, variants=["ssd-12"]) == 1
    assert (f"expected 000000000000 ({baselines / 'ssd-12.yaml'} model_sha256; {baselines / 'ssd-12.yaml'} "
            "require_model_sha256): this result is not of ssd-12's pinned model") in capsys.readouterr().out
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898, model_sha="0" * 64))
    assert run_gate(baselines, results, variants=["ssd-12"]) == 0


@pytest.mark.parametrize("recorded, gated, status", [
    ("QOperator", "none", "FAIL"), ("QOperator", "QDQ", "FAIL"), ("QDQ", "QDQ", "PASS"), ("none", "none", "PASS"),
    ("QOperator", None, "FAIL")])
def test_a_model_of_another_quantization_format_than_the_baselines_fails(dirs, capsys, recorded, gated, status):
    baselines, results = dirs
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE + f"quantization: {recorded}\n")
    document = gate_metrics("ssd-12", mAP=0.1898)
    if gated is not None:
        document["provenance"]["model"]["quantization"] = gated
    write_metrics(results, document)
    assert run_gate(baselines, results, variants=["ssd-12"]) == (1 if status == "FAIL" else 0)
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{status} ssd-12 model")]
    if status == "FAIL":
        assert line.endswith(f"has quantization {gated or 'unrecorded'} but {baselines / 'ssd-12.yaml'} quantization "
                             f"{recorded}: not a model of ssd-12's kind")
    else:
        assert f", quantization {gated} as the baseline's, " in line


def test_quantized_variant_evaluated_with_its_parents_model_fails(dirs, capsys):
    """Item 8 without any pin: the int8 result's model is the fp32 parent's."""
    baselines, results = dirs
    write_metrics(results, gate_metrics("ssd-12-int8", mAP=0.1898, parent="ssd-12", model_sha=model_sha("ssd-12")))
    assert run_gate(baselines, results, variants=["ssd-12-int8"]) == 1
    assert f"is the model of its parent ssd-12 ({results / 'ssd-12' / 'metrics.json'})" in capsys.readouterr().out


def test_model_override_on_the_sample_does_not_pass_as_the_variant(tmp_path, monkeypatch, capsys):
    """Item 8 end to end: the fp32 sample model evaluated as sample-int8 fails the gate (exit 1)."""
    from ssd_eval.cli import main

    monkeypatch.chdir(REPO)
    results, baselines = tmp_path / "results", tmp_path / "baselines"
    for variant in ("sample", "sample-int8"):
        assert main(["eval", "--config", f"configs/{variant}.yaml", "--out", str(results / variant),
                     "--no-progress"]) == 0
    assert main(["baseline", "--update", "--baselines", str(baselines), "--results", str(results),
                 "--max-drop-pct", "100"]) == 0
    assert main(["gate", "--baselines", str(baselines), "--results", str(results)]) == 0
    assert main(["eval", "--config", "configs/sample-int8.yaml", "--model", "data/sample/models/sample.onnx",
                 "--out", str(results / "sample-int8"), "--no-progress", "--fresh"]) == 0
    capsys.readouterr()
    assert main(["gate", "--baselines", str(baselines), "--results", str(results), "--variant", "sample-int8"]) == 1
    out = capsys.readouterr().out
    gated = sha256_of(REPO / "data" / "sample" / "models" / "sample.onnx")[:12]
    assert (f"FAIL sample-int8 model: gated {gated} (data/sample/models/sample.onnx) has quantization none but "
            f"{baselines / 'sample-int8.yaml'} quantization QOperator: not a model of sample-int8's kind") in out


def test_stray_yml_beside_yaml_is_an_input_error(dirs, capsys):
    """Item 10: a stray baselines/<variant>.yml no longer silently wins."""
    baselines, results = dirs
    (baselines / "ssd-12.yml").write_text(FP32_BASELINE.replace("0.1898", "0.1"))
    assert run_gate(baselines, results) == 2
    assert f"{baselines / 'ssd-12.yaml'} and {baselines / 'ssd-12.yml'}: two baselines for variant 'ssd-12'" in \
        capsys.readouterr().err
    assert update_baselines(baselines, results) == 2


def test_deeply_nested_baseline_and_metrics_are_input_errors(dirs, capsys):
    """Item 13: RecursionError becomes one line and exit 2."""
    baselines, results = dirs
    (baselines / "ssd-12.yaml").write_text("variant: " + "[" * 5000 + "]" * 5000 + "\n")
    (results / "ssd-12-int8" / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    assert run_gate(baselines, results) == 2
    err = capsys.readouterr().err
    assert "ssd-12.yaml: not a baseline: YAML nested too deeply" in err
    assert "ssd-12-int8/metrics.json: not a metrics file: JSON nested too deeply" in err


def test_alias_bomb_in_a_baseline_is_quoted_short(dirs, capsys):
    """Item 13: the error quotes at most 200 characters of the value, not the expanded bomb."""
    baselines, results = dirs
    levels = ["  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    (baselines / "ssd-12.yaml").write_text("variant: ssd-12\nprotocol:\n" + "\n".join(levels) + "\n")
    assert run_gate(baselines, results, variants=["ssd-12"]) == 2
    [line] = [x for x in capsys.readouterr().err.splitlines() if "protocol: expected a non-empty string" in x]
    assert len(line) < 200 + len(str(baselines)) + 100


def _on_cpu(document: dict, kernel_class: str, quantization: str = "QOperator") -> dict:
    document["provenance"]["model"]["quantization"] = quantization
    document["provenance"]["int8"] = {"cpu": {"kernel_class": kernel_class, "cpu": "AMD EPYC"}}
    document["provenance"]["runtime"]["session_config"] = {"session.x64quantprecision": "1"}
    return document


@pytest.mark.parametrize("kernel_class, quantization, noted", [
    ("x86-avx2", "QOperator", True),   # another class than the baseline's: say so
    ("x86-vnni", "QOperator", False),  # the baseline's own class
    ("x86-avx2", "none", False),       # fp32 models do not depend on the int8 path
])
def test_gate_explains_a_quantized_result_from_another_cpu_class(tmp_path, capsys, kernel_class, quantization, noted):
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE)
    (baselines / "ssd-12-int8.yaml").write_text(
        INT8_BASELINE.replace("MAXDROP", "1.0").replace("images: 5000\n", "images: 5000\nint8_path: x86-vnni\n"))
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1898))
    write_metrics(results, _on_cpu(gate_metrics("ssd-12-int8", mAP=0.1850, parent="ssd-12"), kernel_class,
                                   quantization))
    assert run_gate(baselines, results) == 1  # the regression is still a regression
    out = capsys.readouterr().out
    assert ("ran on a x86-avx2 CPU" in out and "measured on x86-vnni" in out) == noted


def test_int8_path_is_checked_and_kept_by_update(tmp_path):
    text = INT8_BASELINE.replace("MAXDROP", "1.0").replace("images: 5000\n", "images: 5000\nint8_path: x86-fast\n")
    with pytest.raises(UserError, match="int8_path"):
        parse_baseline(text, "ssd-12-int8.yaml")
    baseline = parse_baseline(text.replace("x86-fast", "x86-vnni"), "ssd-12-int8.yaml")
    assert "int8_path: x86-vnni" in render_baseline(baseline)


# --------------------------------------------------------------------------- subsets and tolerance: ci95 (issue 14)

def scored_result(results: Path, variant: str, annotations: Path, detections: list[dict], *,
                  parent: str | None = None, folder: str | None = None) -> dict:
    """A real result of `detections` on every image of `annotations`, as `ssd-eval eval` writes it
    (metrics.json with intervals and a reconstructible image set, detections.json beside it)."""
    from ssd_eval.config.load import config_from_dict
    from ssd_eval.data.coco import load_annotations
    from ssd_eval.data.subsets import select_image_ids
    from ssd_eval.engine.finish import run_bootstrap
    from ssd_eval.results.result import result_for, write_detections, write_result
    from ssd_eval.scoring.metrics import score_detections
    from ssd_eval.utils import hash_data

    from helpers import config_dict

    images = annotations.parent / "images"
    data = config_dict(Path("model.onnx"), annotations, images, results / (folder or variant))
    data["variant"] = variant
    data["model"]["parent"] = parent
    config = config_from_dict(data)
    dataset = load_annotations(annotations, images)
    ids = select_image_ids(dataset)
    # Matched once, as `ssd-eval eval` does: streaming scoring keeps the matches the bootstrap resamples.
    scores = score_detections(dataset.gt, detections, ids, streaming=True, keep_matches=True)
    intervals, _, bootstrap = run_bootstrap(config, dataset.gt, detections, ids, matches=scores.matches)
    provenance = metrics_document(variant, mAP=0.0)["provenance"]
    provenance.update(annotations={"path": str(annotations), "sha256": dataset.sha256}, images_dir=str(images),
                      config=config.to_dict(), images=len(ids), image_ids_sha256=hash_data(ids),
                      detections=len(detections), bootstrap=bootstrap, subset=None)
    provenance["model"]["sha256"] = model_sha(variant)
    result = result_for(config, scores, provenance)
    result.intervals = intervals
    out = results / (folder or variant)
    out.mkdir(parents=True, exist_ok=True)
    write_detections(out / "detections.json", detections)
    write_result(result, out)
    return result.to_document()


def scored_parent_and_child(results: Path, population) -> tuple[dict, dict]:
    """Results p (detector "a") and its child q (detector "noise", parent p) scored on the population."""
    annotations, detectors = population
    parent = scored_result(results, "p", annotations, detectors["a"])
    return parent, scored_result(results, "q", annotations, detectors["noise"], parent="p")


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """80 synthetic images: an annotation file and three detectors on it: `a`, `noise` (a with score
    noise, as a quantized model differs from its parent image by image) and `offbyone` (every category
    id moved to the next one: the sample's deliberately broken model)."""
    import numpy as np

    from ssd_eval.testing.synthetic import synthetic_scoring_case

    root = tmp_path_factory.mktemp("population")
    gt, detections, _ = synthetic_scoring_case(80, 20, seed=1)
    (root / "annotations.json").write_text(json.dumps(gt))
    rng = np.random.default_rng(2)
    noise = [dict(d, score=round(float(np.clip(d["score"] + rng.normal(0, 0.02), 0, 1)), 5)) for d in detections]
    ids = sorted(c["id"] for c in gt["categories"])
    shift = {c: ids[(k + 1) % len(ids)] for k, c in enumerate(ids)}
    offbyone = [dict(d, category_id=shift[d["category_id"]]) for d in detections]
    return root / "annotations.json", {"a": detections, "noise": noise, "offbyone": offbyone}


def ci95_baseline(variant: str, document: dict, *, detections: str | None = None, parent: str | None = None,
                  abs_tol: float = 0.0001) -> str:
    lines = [f"variant: {variant}", "protocol: coco", f"images: {document['provenance']['images']}"]
    if detections:
        lines.append(f"detections: {detections}")
    lines.append("metrics:")
    for name in ("mAP", "AP50", "AP75"):
        lines.append(f"  {name}: {{expected: {round(document[name], 6)}, abs_tol: {abs_tol}, rel_tol: null, "
                     "tolerance: ci95}")
    if parent:
        lines += ["quantized:", f"  parent: {parent}", "  max_drop_pct: 100.0"]
    return "\n".join(lines) + "\n"


def test_ci95_against_kept_detections_passes_noise_and_fails_the_off_by_one_model(tmp_path, population, capsys):
    """Issue 21's rule on real paired intervals: noise whose whole interval lies within the margin passes
    (non-inferior); the same noise under a margin its interval reaches past is FAIL (inconclusive); a drop beyond
    a margin fails whatever the interval says; the off-by-one model fails."""
    annotations, detectors = population
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    reference = scored_result(tmp_path / "reference", "m", annotations, detectors["a"])
    (baselines / "m.detections.json").write_bytes((tmp_path / "reference" / "m" / "detections.json").read_bytes())
    (baselines / "m.yaml").write_text(ci95_baseline("m", reference, detections="m.detections.json", abs_tol=0.01))

    noisy = scored_result(results, "m", annotations, detectors["noise"])
    assert noisy["mAP"] != reference["mAP"]  # a real, noise-level difference...
    code = run_gate(baselines, results)
    out = capsys.readouterr().out
    assert code == 0, out  # ...whose intervals lie within the margin 0.01
    lines = [line for line in out.splitlines() if line.startswith("PASS m ")]
    assert len(lines) == 4 and all("95% interval [" in line for line in lines[1:])
    assert all("ci95 vs baseline detections" in line and "(non-inferior: " in line for line in lines[1:])
    assert all(", 1000 replicates, seed 0" in line for line in lines[1:])  # reproducible: seeded as the run's

    # A margin below the noise's point drop fails, whatever the interval says (never looser than abs_tol):
    (baselines / "m.yaml").write_text(ci95_baseline("m", reference, detections="m.detections.json", abs_tol=0.0001))
    lowered = {n for n in ("mAP", "AP50", "AP75") if noisy[n] < reference[n] - 0.0001}
    assert lowered and run_gate(baselines, results) == 1
    failing = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert {line.split(":")[0].split()[-1] for line in failing} == lowered
    assert all("beyond the margin 0.0001, whatever the interval says" in line for line in failing)

    # A margin above the point drop but inside the interval: inconclusive, with the images it would take.
    (baselines / "m.yaml").write_text(ci95_baseline("m", reference, detections="m.detections.json", abs_tol=0.003))
    assert run_gate(baselines, results) == 1
    out = capsys.readouterr().out
    [ap50] = [line for line in out.splitlines() if line.startswith("FAIL m AP50: ")]
    assert "(inconclusive: the drop " in ap50 and "is within the margin 0.0030 but the interval's lower end " in ap50
    assert " images instead of 80 would narrow it enough" in ap50

    (baselines / "m.yaml").write_text(ci95_baseline("m", reference, detections="m.detections.json", abs_tol=0.01))
    scored_result(results, "m", annotations, detectors["offbyone"])
    assert run_gate(baselines, results) == 1
    failing = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 3 and all("beyond the margin" in line for line in failing)


def test_ci95_against_the_parent_uses_the_baselines_gap(tmp_path, population, capsys):
    annotations, detectors = population
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    parent, child = scored_parent_and_child(results, population)
    (baselines / "p.yaml").write_text(ci95_baseline("p", parent).replace(", tolerance: ci95", ""))
    (baselines / "q.yaml").write_text(ci95_baseline("q", child, parent="p", abs_tol=0.01))
    assert run_gate(baselines, results) == 0
    out = capsys.readouterr().out
    assert "ci95 vs parent p" in out and "paired 95% interval [" in out  # the drop's interval too
    for name in ("mAP", "AP50", "AP75"):
        assert f"(expected {round(child[name], 6) - round(parent[name], 6):+.4f})" in out

    scored_result(results, "q", annotations, detectors["offbyone"], parent="p")
    assert run_gate(baselines, results) == 1
    failing = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL q ")]
    assert {line.split(":")[0] for line in failing} >= {"FAIL q mAP", "FAIL q AP50", "FAIL q AP75"}


def test_ci95_without_a_paired_comparison_falls_back_to_abs_tol_and_says_so(tmp_path, population, capsys):
    annotations, detectors = population
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    child = scored_result(results, "q", annotations, detectors["a"], parent="p")
    scored_result(results, "p", annotations, detectors["a"])
    (baselines / "q.yaml").write_text(ci95_baseline("q", child, parent="p", abs_tol=0.002))  # no p.yaml
    assert run_gate(baselines, results, variants=["q"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PASS q A") or
             line.startswith("PASS q mAP")]
    assert len(lines) == 3
    assert all("ci95 not possible (no baseline of the parent p" in line and "allowed 0.0020" in line and
               "95% interval [" in line for line in lines)
    scored_result(results, "q", annotations, detectors["offbyone"], parent="p")
    assert run_gate(baselines, results, variants=["q"]) == 1  # never a silent pass


def test_kept_detections_that_do_not_give_the_expected_values_are_an_input_error(tmp_path, population, capsys):
    annotations, detectors = population
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    result = scored_result(results, "m", annotations, detectors["a"])
    (baselines / "m.detections.json").write_text(json.dumps(detectors["noise"]))
    (baselines / "m.yaml").write_text(ci95_baseline("m", result, detections="m.detections.json"))
    assert run_gate(baselines, results, junit=tmp_path / "gate.xml") == 2
    assert "not the detections the baseline was measured from" in capsys.readouterr().err
    errors = [(case.get("classname"), case.get("name")) for case in ET.parse(tmp_path / "gate.xml").getroot()
              if case.find("error") is not None]
    assert errors == [("ssd-eval-gate.m", "mAP"), ("ssd-eval-gate.m", "AP50"), ("ssd-eval-gate.m", "AP75")]
    (baselines / "m.detections.json").unlink()
    assert run_gate(baselines, results) == 2
    assert "m.detections.json: detections file not found" in capsys.readouterr().err


def test_fixed_tolerance_lines_print_the_runs_own_interval(tmp_path, population, capsys):
    annotations, detectors = population
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    result = scored_result(results, "m", annotations, detectors["a"])
    (baselines / "m.yaml").write_text(ci95_baseline("m", result).replace(", tolerance: ci95", ""))
    assert run_gate(baselines, results) == 0
    out = capsys.readouterr().out
    for name in ("mAP", "AP50", "AP75"):
        interval = result["intervals"][name]
        assert f"{name}: expected" in out and f"95% interval [{interval['low']:.4f}, {interval['high']:.4f}]" in out
    images = result["provenance"]["images"]
    write_metrics(results, gate_metrics("m", mAP=result["mAP"], AP50=result["AP50"], images=images) |
                  {"AP75": result["AP75"]})
    assert run_gate(baselines, results) == 0
    assert out.count("no interval") == 0 and "no interval (the run predates metrics.bootstrap)" in \
        capsys.readouterr().out


SUBSET_BASELINE = FP32_BASELINE.replace("images: 5000", "images: 4\nsubset: sample-4")


def test_a_result_on_another_image_set_than_the_baseline_is_an_input_error(tmp_path, capsys):
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    (baselines / "ssd-12.yaml").write_text(SUBSET_BASELINE)
    full = gate_metrics("ssd-12", mAP=0.1898, images=4)
    write_metrics(results, full, "ssd-12@sample-4")  # a full-set run of 4 images in the subset's folder
    assert run_gate(baselines, results) == 2
    assert "image set differs" in (err := capsys.readouterr().err) and "full set vs subset sample-4" in err
    on_subset = gate_metrics("ssd-12", mAP=0.1898, images=4)
    on_subset["provenance"]["subset"] = {"name": "sample-4", "ids_sha256": "0" * 64, "images": 4}
    write_metrics(results, on_subset, "ssd-12@sample-4")
    assert run_gate(baselines, results) == 0
    capsys.readouterr()
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE.replace("images: 5000", "images: 4"))
    write_metrics(results, on_subset, "ssd-12")
    assert run_gate(baselines, results) == 2
    assert "subset sample-4 vs full set" in capsys.readouterr().err


def test_a_subset_baseline_finds_its_result_in_the_subset_folder(tmp_path, capsys):
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    (baselines / "ssd-12.yaml").write_text(SUBSET_BASELINE)
    write_metrics(results, gate_metrics("ssd-12", mAP=0.1, images=5000))  # the full-set run: not this baseline's
    assert run_gate(baselines, results) == 2
    err = capsys.readouterr().err
    assert "ssd-12@sample-4/metrics.json: missing" in err and "--subset sample-4" in err


@pytest.mark.parametrize("text, key", [
    (FP32_BASELINE.replace("rel_tol: null}", "rel_tol: null, tolerance: ci99}", 1), "tolerance"),
    (FP32_BASELINE + "  APs: {expected: 0.1, abs_tol: 0.01, rel_tol: null, tolerance: ci95}\n", "ci95 is available"),
    (FP32_BASELINE.replace("images: 5000", "images: 5000\nsubset: ../ci"), "subset"),
    (FP32_BASELINE.replace("images: 5000", "images: 5000\ndetections: 3"), "detections"),
])
def test_malformed_ci95_subset_and_detections_keys(text, key):
    with pytest.raises(UserError, match=key):
        parse_baseline(text, "baselines/ssd-12.yaml")


def test_subset_detections_and_tolerance_render_back_and_are_kept_by_update(tmp_path, population, capsys):
    annotations, detectors = population
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    result = scored_result(results, "m", annotations, detectors["a"])
    text = ci95_baseline("m", result, detections="m.detections.json")
    baseline = parse_baseline(text, str(baselines / "m.yaml"))
    assert baseline.detections_path == baselines / "m.detections.json"
    assert {r.tolerance for r in baseline.metrics} == {"ci95"}
    rendered = render_baseline(baseline)
    assert parse_baseline(rendered, str(baselines / "m.yaml")) == baseline
    (baselines / "m.yaml").write_text(rendered)
    scored_result(results, "m", annotations, detectors["noise"])
    assert update_baselines(baselines, results) == 0
    updated = load_baseline(baselines / "m.yaml")
    assert updated.detections == "m.detections.json" and {r.tolerance for r in updated.metrics} == {"ci95"}
    assert (baselines / "m.detections.json").read_bytes() == (results / "m" / "detections.json").read_bytes()
    assert "copied" in capsys.readouterr().out
    assert run_gate(baselines, results) == 0


def test_update_writes_new_subset_baselines_with_kept_detections(tmp_path, capsys):
    results, baselines = tmp_path / "results", tmp_path / "ci"
    run = partial(subprocess_cli, cwd=REPO)
    for name in ("sample", "sample-int8"):
        assert run("eval", "--config", f"configs/{name}.yaml", "--subset", "sample-4",
                   "--out", str(results / "{run}")).returncode == 0
    done = run("baseline", "--update", "--baselines", str(baselines), "--results", str(results),
               "--subset", "sample-4", "--keep-detections", "--variant", "sample")
    assert done.returncode == 0, done.stderr
    baseline = load_baseline(baselines / "sample.yaml")
    assert (baseline.subset, baseline.images, baseline.detections) == ("sample-4", 4, "sample.detections.json")
    assert (baselines / "sample.detections.json").is_file()
    gate = run("gate", "--baselines", str(baselines), "--results", str(results))
    assert gate.returncode == 0, gate.stdout + gate.stderr


def subprocess_cli(*args, cwd):
    from conftest import run_cli

    return run_cli(*args, cwd=cwd)


@pytest.mark.slow
def test_make_ci_gate_on_the_sample_passes_and_the_off_by_one_model_fails_ci95(tmp_path):
    """The README's CI recipe end to end: `make ci-gate` (sample-4 subset, then the gate against baselines/ci),
    then the deliberately broken model in place of sample: its ci95 lines fail outside the interval."""

    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    results = tmp_path / "results"
    # A clean make: not the variables of a `make test ARGS=...` this suite may be running under.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS")}
    done = subprocess.run([make, "-s", "-o", ".venv/.installed", "ci-gate", f"PY={sys.executable}",
                           f"CI_RESULTS={results}", "ARGS="], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-2:] == ["gate: 14 passed, 0 failed, 0 errors",
                                             "gate verdict: PASS (exit 0): every check holds"]
    # issue 25: one short line per run (no summary, no progress), then the gate's checks, the verdict last
    lines = done.stdout.splitlines()
    assert [line.split("  ")[:4] for line in lines[:3]] == [
        [variant, "coco", "sample-4", "4 images"] for variant in ("sample", "sample-int8", "sample-qdq")]
    assert all(f"-> {results}/" in line and len(line.split(" -> ")[0]) < 100 for line in lines[:3])
    assert all(line.startswith("PASS ") for line in lines[3:-2]) and len(lines) == 3 + 14 + 2
    assert done.stderr == ""
    assert sorted(p.name for p in results.iterdir() if p.is_dir()) == \
        ["sample-int8@sample-4", "sample-qdq@sample-4", "sample@sample-4"]
    assert done.stdout.count("ci95 vs baseline detections") == 9 and "paired 95% interval" in done.stdout
    assert done.stdout.count("95% interval [+0.0000, +0.0000]") == 9  # identical detections: [0, 0], and pass

    shutil.rmtree(results / "sample@sample-4")  # an explicit --out puts the broken model's run where sample's was
    broken = subprocess_cli("eval", "--config", "configs/sample.yaml", "--subset", "sample-4", "--model",
                            "data/sample/models/sample-offbyone.onnx", "--out", str(results / "sample@sample-4"),
                            cwd=REPO)
    assert broken.returncode == 0, broken.stderr
    gate = subprocess_cli("gate", "--baselines", "baselines/ci", "--results", str(results), "--variant", "sample",
                          cwd=REPO)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    failing = [line for line in gate.stdout.splitlines() if line.startswith("FAIL sample ")]
    for name in ("mAP", "AP50", "AP75"):
        assert any(line.startswith(f"FAIL sample {name}: ") and "ci95 vs baseline detections" in line
                   and "beyond the margin 0.0020, whatever the interval says" in line for line in failing)
    assert "note: sample model changed since the baseline: 1b21e54584bc… -> " in gate.stdout  # gated on mAP


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["preprocess.std=[0.9,0.9,0.9]"],
                                       ["preprocess.mean=[0.5,0.5,0.5]", "preprocess.std=[0.5,0.5,0.5]"]],
                         ids=["std-0.9", "mean-std-0.5"])
def test_make_ci_gate_fails_a_preprocessing_regression_and_the_cli_says_1(tmp_path, overrides):
    """Issue 21's first report: every variant of the sample (the quantized ones as broken as their parent) run with
    a broken preprocessing. `make ci-gate` fails (make's own 2), `ssd-eval gate` exits 1, and each variant's mAP
    line names the metric, the point, the interval and the margin."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS")}
    sets = " ".join(f"--set {item}" for item in overrides)
    done = subprocess.run([make, "-s", "-o", ".venv/.installed", "ci-gate", f"PY={sys.executable}",
                           f"CI_RESULTS={results}", f"ARGS=--no-progress {sets}"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode != 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "gate verdict: FAIL (exit 1): a check failed"
    gate = subprocess_cli("gate", "--baselines", "baselines/ci", "--results", str(results), "--variant", "sample",
                          "--variant", "sample-int8", "--variant", "sample-qdq", cwd=REPO)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    for variant in ("sample", "sample-int8", "sample-qdq"):
        [line] = [line for line in gate.stdout.splitlines() if line.startswith(f"FAIL {variant} mAP: ")]
        assert re.search(r"got 0\.\d+, allowed 0\.0020; ci95 vs baseline detections .*: difference -0\.\d{4} "
                         r"\(expected \+0\.0000\), 95% interval \[-0\.\d{4}, \+0\.\d{4}\], .* \(regressed by 0\.\d+, "
                         r"beyond the margin 0\.0020, whatever the interval says\)$", line), line


# --------------------------------------------------------------------------- found by mutation testing (issue 15)

def test_junit_report_holds_every_check_with_its_status_message_and_notes():
    """render_junit on checks written out here: one testcase per check, failures and errors with their message
    as attribute and text, notes as system-out, and the suite's counts."""
    from ssd_eval.reports.gate import Check, render_junit

    checks = [Check("a", "mAP", "PASS", "PASS a mAP", ("note one", "note two")),
              Check("a", "AP50", "FAIL", "FAIL a AP50: regressed"),
              Check("b", "mAP", "FAIL", "FAIL b mAP"),
              Check("b", "drop_pct vs a", "FAIL", "FAIL b drop"),
              Check("c", "results", "ERROR", "c: metrics.json not found")]
    text = render_junit(checks)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuite ') and text.endswith("</testsuite>\n")
    suite = ET.fromstring(text.split("\n", 1)[1])
    assert suite.attrib == {"name": "ssd-eval-gate", "tests": "5", "failures": "3", "errors": "1", "skipped": "0"}
    cases = suite.findall("testcase")
    assert [c.attrib for c in cases] == [
        {"classname": "ssd-eval-gate.a", "name": "mAP", "time": "0"},
        {"classname": "ssd-eval-gate.a", "name": "AP50", "time": "0"},
        {"classname": "ssd-eval-gate.b", "name": "mAP", "time": "0"},
        {"classname": "ssd-eval-gate.b", "name": "drop_pct vs a", "time": "0"},
        {"classname": "ssd-eval-gate.c", "name": "results", "time": "0"}]
    assert [[child.tag for child in case] for case in cases] == [["system-out"], ["failure"], ["failure"],
                                                                 ["failure"], ["error"]]
    assert cases[0].find("system-out").text == "note one\nnote two"
    failure = cases[1].find("failure")
    assert (failure.attrib, failure.text) == ({"message": "FAIL a AP50: regressed", "type": "regression"},
                                              "FAIL a AP50: regressed")
    error = cases[4].find("error")
    assert (error.attrib, error.text) == ({"message": "c: metrics.json not found", "type": "input"},
                                          "c: metrics.json not found")


def ci95_check(got: float, estimate: float, low: float, high: float, *, expected_difference: float = 0.0,
               against: str = "baseline detections d.json", abs_tol: float = 0.002, images: int = 4):
    """check_metric_ci95 of metric mAP (expected 0.5) on an interval written out here (200 replicates, seed 0)."""
    from ssd_eval.reports.baseline import MetricRule
    from ssd_eval.reports.gate import check_metric_ci95
    from ssd_eval.scoring.bootstrap import Interval

    return check_metric_ci95("m", MetricRule("mAP", 0.5, abs_tol, None, "ci95"), got,
                             Interval(low=low, high=high, level=0.95, replicates=200, seed=0, estimate=estimate),
                             expected_difference, against, images)


@pytest.mark.parametrize("got, estimate, low, high, status, tail", [
    # identical detections: d = 0 with a zero-width interval
    (0.5, 0.0, 0.0, 0.0, "PASS", "(non-inferior: the interval's lower end +0.0000 is within the margin -0.0020)"),
    # the lower end exactly at -allowed, and within the float slack (1e-6) beyond it
    (0.4995, -0.0005, -0.002, 0.001, "PASS", "(non-inferior: the interval's lower end -0.0020 is within the margin "
                                            "-0.0020)"),
    (0.4995, -0.0005, -0.0020009, 0.001, "PASS", "(non-inferior: the interval's lower end -0.0020 is within the "
                                                 "margin -0.0020)"),
    # just past it: inconclusive, with the images it would take: 4 x (0.0025 / 0.0015)^2 = 11.1 -> 12
    (0.4995, -0.0005, -0.003, 0.001, "FAIL", "(inconclusive: the drop 0.0005 is within the margin 0.0020 but the "
                                             "interval's lower end -0.0030 is below -0.0020; about 12 images instead "
                                             "of 4 would narrow it enough, the width shrinking about as "
                                             "1/sqrt(images))"),
    # the std 0.9: a point drop far beyond the margin inside a wide interval that contains 0
    (0.240264, -0.2620, -0.5042, 0.1464, "FAIL", "(regressed by 0.2620, beyond the margin 0.0020, whatever the "
                                                 "interval says)"),
    # the point drop exactly at the margin: within the written tolerance, but nothing settles the interval
    (0.498, -0.002, -0.3, 0.3, "FAIL", "(inconclusive: the drop 0.0020 is within the margin 0.0020 but the "
                                       "interval's lower end -0.3000 is below -0.0020; the point drop is at the "
                                       "margin itself: no number of images would settle it)"),
], ids=["identical", "low-at-margin", "low-within-slack", "inconclusive", "std-0.9", "drop-at-margin"])
def test_ci95_is_a_non_inferiority_test_never_looser_than_the_margin(got, estimate, low, high, status, tail):
    """Issue 21's rule at its edges: PASS only when the interval's lower end is within -allowed; a drop beyond the
    margin fails whatever the interval says. The image counts are 4 x (lower half / room)^2, worked out by hand."""
    check = ci95_check(got, estimate, low, high)
    assert check.status == status
    assert check.message.startswith(f"{status} m mAP: expected 0.5000, got ")
    assert ", allowed 0.0020; ci95 vs baseline detections d.json: difference " in check.message
    assert check.message.endswith(f"200 replicates, seed 0 {tail}")


def test_a_quantized_child_equal_to_its_broken_parent_fails_its_own_baseline():
    """Against the parent the paired difference is the baselines' gap (point 0 relative to it), but the child's
    own mAP is far below its baseline: the written tolerance fails it."""
    check = ci95_check(0.24, -0.0152, -0.02, -0.01, expected_difference=-0.0152, against="parent p (r/p)",
                       images=500)
    assert check.status == "FAIL"
    assert check.message.endswith("(regressed by 0.2600, beyond the margin 0.0020, whatever the interval says)")
    # ... while the same pairing with the child at its baseline and a narrow interval passes:
    assert ci95_check(0.5, -0.0152, -0.0160, -0.0140, expected_difference=-0.0152, against="parent p (r/p)",
                      images=500).status == "PASS"


def test_a_paired_point_drop_beyond_the_margin_fails_even_when_the_own_value_is_within():
    check = ci95_check(0.5, -0.0252, -0.03, -0.02, expected_difference=-0.0152, against="parent p (r/p)")
    assert check.status == "FAIL" and "(regressed by 0.0100, beyond the margin 0.0020" in check.message


@pytest.mark.parametrize("images, estimate, low, allowed, needed", [
    (4, 0.0, -0.3, 0.002, 90000),  # 4 x 150^2
    (500, -0.001, -0.01, 0.002, 41000),  # 500 x 9^2 = 40500 -> two significant digits, upward
    (500, 0.0, -0.0021, 0.002, 560),  # 551.25 -> 560
    (100, 0.0, -0.002001, 0.002, 110),  # 100.1 -> 110: two significant digits, upward
    (4, -0.0025, -0.3, 0.002, None), (4, -0.002, -0.3, 0.002, None),  # at or beyond the margin
])
def test_images_needed_scales_the_lower_half_width_as_one_over_sqrt_n(images, estimate, low, allowed, needed):
    from ssd_eval.reports.gate import images_needed

    assert images_needed(images, estimate, low, allowed) == needed


def test_the_gate_help_works_the_rule_through_with_the_gates_own_numbers():
    """The worked example in `ssd-eval gate --help` says what images_needed and the rule give."""
    from ssd_eval.cli.parser import GATE_DESCRIPTION
    from ssd_eval.reports.gate import images_needed

    assert f"about {images_needed(4, -0.0007, -0.045, 0.002)} images" in " ".join(GATE_DESCRIPTION.split())
    assert ci95_check(0.5015, -0.0007, -0.045, 0.03).status == "FAIL"
    assert ci95_check(0.5015, -0.0007, -0.0019, 0.0004).status == "PASS"
    assert ci95_check(0.2403, -0.2619, -0.5, 0.1).status == "FAIL"


def test_ci95_lines_spell_out_the_signed_interval_and_the_note_above_it():
    lower = ci95_check(0.4, -0.1, -0.2, 0.05, abs_tol=0.001)
    assert (lower.status, lower.notes) == ("FAIL", ())
    assert lower.message == ("FAIL m mAP: expected 0.5000, got 0.4000, allowed 0.0010; ci95 vs baseline detections "
                             "d.json: difference -0.1000 (expected +0.0000), 95% interval [-0.2000, +0.0500], 200 "
                             "replicates, seed 0 (regressed by 0.1000, beyond the margin 0.0010, whatever the "
                             "interval says)")
    above = ci95_check(0.6, 0.1, 0.05, 0.15, expected_difference=0.02, against="parent p (r/p)", abs_tol=0.001)
    assert above.message == ("PASS m mAP: expected 0.5000, got 0.6000, allowed 0.0010; ci95 vs parent p (r/p): "
                             "difference +0.1000 (expected +0.0200), 95% interval [+0.0500, +0.1500], 200 replicates, "
                             "seed 0 (non-inferior: the interval's lower end +0.0300 is within the margin -0.0010)")
    assert above.notes == (
        "note: m mAP improved beyond tolerance (0.6000 > 0.5000 + 0.0010); consider `ssd-eval baseline --update "
        "--variant m`",
        "note: m mAP lies above the baseline beyond the interval vs parent p (r/p) (or the parent regressed); if that "
        "is the new normal, `ssd-eval baseline --update --variant m`")


@pytest.mark.parametrize("low", [0.0, 1e-6], ids=["low-at-expected", "low-at-expected-plus-slack"])
def test_ci95_note_only_when_the_whole_interval_lies_above_beyond_the_slack(low):
    check = ci95_check(0.5005, 0.05, low, 0.1, abs_tol=0.001)
    assert (check.status, check.notes) == ("PASS", ())


def test_ci95_note_against_the_baselines_own_detections_does_not_blame_a_parent():
    check = ci95_check(0.5005, 0.1, 0.01, 0.2, abs_tol=0.001)
    assert (check.variant, check.name, check.status) == ("m", "mAP", "PASS")
    assert check.notes == ("note: m mAP lies above the baseline beyond the interval vs baseline detections d.json; "
                           "if that is the new normal, `ssd-eval baseline --update --variant m`",)


def test_ci95_without_kept_detections_or_a_parent_result_says_why_it_falls_back(tmp_path, population, capsys):
    annotations, detectors = population
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    solo = scored_result(results, "solo", annotations, detectors["a"])
    (baselines / "solo.yaml").write_text(ci95_baseline("solo", solo))
    orphan = scored_result(results, "orphan", annotations, detectors["a"], parent="gone")
    (baselines / "orphan.yaml").write_text(ci95_baseline("orphan", orphan, parent="gone"))
    run_gate(baselines, results, variants=["solo", "orphan"])
    lines = [line for line in capsys.readouterr().out.splitlines() if " mAP: " in line]
    assert len(lines) == 2
    assert (f"; ci95 not possible ({baselines / 'solo.yaml'} keeps no detections and solo has no parent): abs/rel "
            "tolerance used; " in lines[0])
    assert (f"; ci95 not possible ({results / 'gone' / 'metrics.json'}: missing (gone, parent of orphan, protocol "
            "coco); run `make eval MODEL=gone` first): abs/rel tolerance used; " in lines[1])


@pytest.mark.parametrize("int8, runtime, expected", [
    ({"cpu": {"kernel_class": "x86-avx2", "cpu": "AMD EPYC"}}, {"session_config": {"session.x64quantprecision": "1"}},
     "note: ssd-12-int8 ran on a x86-avx2 CPU (AMD EPYC) but ssd-12-int8.yaml holds numbers measured on x86-vnni: u8s8 "
     "products were computed exactly (session.x64quantprecision=1), other int8 kernels may still round "
     "differently; see docs/QUANTIZATION.md"),
    ({"cpu": {"kernel_class": "x86-avx2", "cpu": "AMD EPYC"}}, {"session_config": {}},
     "note: ssd-12-int8 ran on a x86-avx2 CPU (AMD EPYC) but ssd-12-int8.yaml holds numbers measured on x86-vnni: "
     "its u8s8 kernels may saturate and other int8 kernels round differently; see docs/QUANTIZATION.md"),
    ({}, {}, "note: ssd-12-int8 ran on a unknown CPU (?) but ssd-12-int8.yaml holds numbers measured on x86-vnni: "
             "its u8s8 kernels may saturate and other int8 kernels round differently; see "
             "docs/QUANTIZATION.md"),
    ({"cpu": {"kernel_class": "x86-vnni", "cpu": "Xeon"}}, {}, None),  # the baseline's own class
], ids=["exact-u8s8", "saturating", "no-cpu-record", "same-class"])
def test_the_int8_path_note_word_for_word(int8, runtime, expected):
    from ssd_eval.reports.gate import int8_path_note

    baseline = parse_baseline(INT8_BASELINE.replace("MAXDROP", "1.0") + "int8_path: x86-vnni\n", "ssd-12-int8.yaml")
    result = {"provenance": {"model": {"quantization": "QOperator"}, "int8": int8, "runtime": runtime}}
    assert int8_path_note(baseline, result) == expected


@pytest.mark.parametrize("value, text", [(0.1892, "0.1892"), (0.18925, "0.189250"), (0.12345, "0.123450"),
                                         (0.5, "0.5000"), (0.0, "0.0000"), (1 / 3, "0.333333")])
def test_gate_numbers_get_6_decimals_only_where_4_would_hide_a_difference(value, text):
    from ssd_eval.reports.gate import _fmt

    assert _fmt(value) == text


def test_no_int8_path_note_for_a_result_without_provenance():
    from ssd_eval.reports.gate import int8_path_note

    text = INT8_BASELINE.replace("MAXDROP", "1.0") + "int8_path: x86-vnni\n"
    assert int8_path_note(parse_baseline(text, "ssd-12-int8.yaml"), {}) is None


@pytest.mark.parametrize("baseline_path, model", [(None, {"quantization": "QOperator"}),
                                                  ("x86-vnni", {"quantization": "none"}),
                                                  ("x86-vnni", {}), ("x86-vnni", None)],
                         ids=["baseline-without-int8-path", "fp32-model", "no-quantization-record", "no-model"])
def test_no_int8_path_note_where_the_int8_path_does_not_apply(baseline_path, model):
    from ssd_eval.reports.gate import int8_path_note

    text = INT8_BASELINE.replace("MAXDROP", "1.0") + (f"int8_path: {baseline_path}\n" if baseline_path else "")
    result = {"provenance": {"model": model, "int8": {"cpu": {"kernel_class": "x86-avx2"}}}}
    assert int8_path_note(parse_baseline(text, "ssd-12-int8.yaml"), result) is None


def test_ci95_against_a_parent_baseline_without_the_metric_falls_back_and_says_so(tmp_path, population, capsys):
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    parent, child = scored_parent_and_child(results, population)
    without_ap75 = "\n".join(line for line in ci95_baseline("p", parent).replace(", tolerance: ci95", "").splitlines()
                             if not line.startswith("  AP75")) + "\n"
    (baselines / "p.yaml").write_text(without_ap75)
    (baselines / "q.yaml").write_text(ci95_baseline("q", child, parent="p", abs_tol=0.01))
    assert run_gate(baselines, results, variants=["q"]) == 0
    out = capsys.readouterr().out
    [ap75] = [line for line in out.splitlines() if line.startswith("PASS q AP75:")]
    assert f"ci95 not possible (no baseline of the parent p with AP75 beside {baselines / 'q.yaml'})" in ap75
    [map_line] = [line for line in out.splitlines() if line.startswith("PASS q mAP:")]
    assert "ci95 vs parent p" in map_line and "1000 replicates, seed 0 (non-inferior: " in map_line


def test_the_drop_line_ends_with_the_paired_drop_ratio_interval_in_percent(tmp_path, population, capsys):
    """Both runs have bootstrap intervals (or a metric uses ci95): the drop line ends with the paired interval
    of (parent - child) / parent x 100 over the same resampled images, in percent with 2 decimals."""
    from ssd_eval.results.index import ResultIndex
    from ssd_eval.results.paired import ResultMatches, paired_drop

    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    _, child = scored_parent_and_child(results, population)
    (baselines / "q.yaml").write_text(ci95_baseline("q", child, parent="p").replace(", tolerance: ci95", ""))
    index, matcher = ResultIndex(results), ResultMatches()
    q, _ = index.find("q", "coco", "q", None)
    p, _ = index.find("p", "coco", "p", None)
    drop = paired_drop(matcher.matches(q), matcher.matches(p), replicates=1000, seed=0)
    assert 0 < drop.high - drop.low < 5
    expected = f"; paired 95% interval [{drop.low:.2f}%, {drop.high:.2f}%]"
    assert run_gate(baselines, results, variants=["q"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("PASS q drop_pct vs p:")]
    assert line.endswith(expected)

    for variant in ("q", "p"):  # runs without intervals and no ci95 metric: no interval, and why
        path = results / variant / "metrics.json"
        document = json.loads(path.read_text())
        document.pop("intervals")
        path.write_text(json.dumps(document))
        assert run_gate(baselines, results, variants=["q"]) == 0  # one run without: no interval either
        [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("PASS q drop_pct vs p:")]
        assert line.endswith("; no interval (the runs have no bootstrap intervals and no metric uses ci95)")
    (baselines / "q.yaml").write_text(ci95_baseline("q", child, parent="p", abs_tol=0.01))  # ci95: paired anyway
    run_gate(baselines, results, variants=["q"])
    [line] = [x for x in capsys.readouterr().out.splitlines() if "q drop_pct vs p:" in x]
    assert line.endswith(expected)


def test_direct_checks_without_an_interval_end_with_the_numbers():
    from ssd_eval.reports.baseline import MetricRule
    from ssd_eval.reports.gate import check_drop, check_metric

    rule = MetricRule(name="mAP", expected=0.2, abs_tol=0.01, rel_tol=None)
    assert check_metric("v", rule, 0.2).message == ("PASS v mAP: expected 0.2000, got 0.2000, allowed 0.0100 "
                                                    "(within the margin)")
    at_the_top = check_metric("v", rule, 0.21)  # exactly expected + allowed: no "improved" note yet
    assert at_the_top.status == "PASS" and at_the_top.notes == ()
    low = check_metric("v", rule, 0.17)
    assert low.message == ("FAIL v mAP: expected 0.2000, got 0.1700, allowed 0.0100 (regressed by 0.0300, beyond "
                           "the margin)")
    drop = check_drop("v", "p", 1.0, 0.199, 0.2)
    assert (drop.variant, drop.name, drop.status) == ("v", "drop_pct vs p", "PASS")
    assert drop.message == ("PASS v drop_pct vs p: expected <= 1.00%, got 0.50% (mAP 0.1990 vs 0.2000), within the "
                            "limit")
    assert check_drop("v", "p", 0.4, 0.199, 0.2).message.endswith("got 0.50% (mAP 0.1990 vs 0.2000), above the limit")


def test_the_model_check_names_its_variant_and_every_pin(tmp_path):
    """check_model's Check is the variant's "model" check (its JUnit test case) in each outcome, and the PASS
    line lists every pin, or every reason there is none."""
    from ssd_eval.reports.gate import check_model

    sha = model_sha("ssd-12")
    result = {"_source": "r/metrics.json", "provenance": {"model": {"sha256": sha, "path": "m.onnx"}}}
    pinned = parse_baseline(FP32_BASELINE + f"model_sha256: '{sha}'\n", "ssd-12.yaml")
    unpinned = parse_baseline(FP32_BASELINE, "ssd-12.yaml")
    configs = tmp_path / "configs"
    pinning_config(configs, "ssd-12", sha)
    outcomes = {
        "two-pins": check_model(pinned, result, None, configs),
        "no-pins": check_model(unpinned, result, None, tmp_path / "elsewhere"),
        "other-pin": check_model(parse_baseline(FP32_BASELINE + f"model_sha256: '{'0' * 64}'\n", "ssd-12.yaml"),
                                 result, None, None),
        "parents-model": check_model(unpinned, result, {"_source": "p/metrics.json",
                                                        "provenance": {"model": {"sha256": sha}}}, None),
    }
    assert {(c.variant, c.name) for c in outcomes.values()} == {("ssd-12", "model")}
    assert [c.status for c in outcomes.values()] == ["PASS", "PASS", "PASS", "FAIL"]
    assert outcomes["other-pin"].notes == (f"note: ssd-12 model changed since the baseline: {'0' * 12}… -> "
                                           f"{sha[:12]}…; gated on mAP, AP50",)
    assert outcomes["two-pins"].message == (f"PASS ssd-12 model: gated {sha[:12]} (m.onnx), pinned by "
                                            f"{configs / 'ssd-12.yaml'} model.sha256, ssd-12.yaml model_sha256")
    assert outcomes["no-pins"].message == (f"PASS ssd-12 model: gated {sha[:12]} (m.onnx), not pinned (no "
                                           f"{tmp_path / 'elsewhere' / 'ssd-12.yaml'}; ssd-12.yaml has no "
                                           "model_sha256)")


def test_input_errors_are_the_variants_own_junit_cases_with_their_notes(tmp_path, capsys):
    """A missing result, a result beside its canonical folder of another image count, and a metric missing
    from metrics.json: each an ERROR test case of its variant, named for what failed; the note saying which
    file was used rides on its case."""
    baselines, results = tmp_path / "baselines", tmp_path / "results"
    baselines.mkdir()
    for variant in ("a", "b", "c"):
        (baselines / f"{variant}.yaml").write_text(FP32_BASELINE.replace("variant: ssd-12", f"variant: {variant}"))
    # a: no result at all. b: its only result sits in another folder and is of 4 images, not 5000.
    write_metrics(results, gate_metrics("b", mAP=0.1898, images=4))
    (results / "b").rename(results / "elsewhere")
    document = gate_metrics("c", mAP=0.1898)
    document.pop("AP50")  # c: a metric the baseline gates is missing (the metric after it is still checked)
    (baselines / "c.yaml").write_text("variant: c\nprotocol: coco\nimages: 5000\nmetrics:\n"
                                      "  AP50: {expected: 0.35, abs_tol: 0.002, rel_tol: null}\n"
                                      "  mAP: {expected: 0.1898, abs_tol: 0.002, rel_tol: null}\n")
    write_metrics(results, document)
    assert run_gate(baselines, results, junit=tmp_path / "gate.xml") == 2
    err = capsys.readouterr().err
    assert (f"{results / 'a' / 'metrics.json'}: missing (baselined variant a, protocol coco); run `make eval "
            "MODEL=a` first") in err
    cases = {(c.get("classname"), c.get("name")): c for c in ET.parse(tmp_path / "gate.xml").getroot()}
    errors = sorted(key for key, case in cases.items() if case.find("error") is not None)
    assert errors == [("ssd-eval-gate.a", "results"), ("ssd-eval-gate.b", "results"), ("ssd-eval-gate.c", "AP50")]
    assert cases[("ssd-eval-gate.c", "AP50")].find("error").text == (f"{results / 'c' / 'metrics.json'}: "
                                                                     "missing key AP50")
    assert cases[("ssd-eval-gate.c", "mAP")].find("error") is None
    note = cases[("ssd-eval-gate.b", "results")].find("system-out").text
    assert note == f"note: b (protocol coco): {results / 'b'}/ missing; using {results / 'elsewhere' / 'metrics.json'}"


def test_check_variant_called_on_a_results_folder_reads_it_and_matches_by_itself(tmp_path, population):
    """The Python entry point without a ResultIndex or a matcher (run_gate shares both between variants)."""
    from ssd_eval.reports.gate import check_variant

    results = tmp_path / "results"
    _, child = scored_parent_and_child(results, population)
    baseline = parse_baseline(ci95_baseline("q", child, parent="p").replace(", tolerance: ci95", ""), "q.yaml")
    checks = check_variant(baseline, results)
    assert [(c.name, c.status) for c in checks] == [("model", "PASS"), ("mAP", "PASS"), ("AP50", "PASS"),
                                                    ("AP75", "PASS"), ("drop_pct vs p", "PASS")]
    assert "; paired 95% interval [" in checks[-1].message and {c.variant for c in checks} == {"q"}


GATE_INPUT_ERRORS = {
    # name: (how the run is broken, variants, JUnit (classname, name), message with {b} the baselines dir, {r} results)
    "no-baselines-dir": (lambda b, r: shutil.rmtree(b), None, ("gate", "baselines"),
                         "{b}: baselines directory not found"),
    "no-results-dir": (lambda b, r: shutil.rmtree(r), None, ("gate", "results"),
                       "{r}: results directory not found; run `make eval` first"),
    "no-baseline-files": (lambda b, r: [p.unlink() for p in b.glob("*.yaml")], None, ("gate", "baselines"),
                          "{b}: no baselines (*.yaml) found; create them with `ssd-eval baseline --update`"),
    "no-variant-selected": (lambda b, r: None, [], ("gate", "baselines"), "no variants selected"),
    "unknown-variant": (lambda b, r: None, ["ssd-99"], ("ssd-99", "baseline"),
                        "{b}: no baseline for variant 'ssd-99' (have: ssd-12, ssd-12-int8)"),
    "malformed-baseline": (lambda b, r: (b / "ssd-12.yaml").write_text("variant: ssd-12\n"), ["ssd-12"],
                           ("ssd-12", "baseline"), None),
}


@pytest.mark.parametrize("case", sorted(GATE_INPUT_ERRORS))
def test_each_gate_input_error_is_one_line_and_its_own_junit_error_case(dirs, tmp_path, capsys, case):
    breaks, variants, (classname, name), message = GATE_INPUT_ERRORS[case]
    baselines, results = dirs
    breaks(baselines, results)
    assert run_gate(baselines, results, variants=variants, junit=tmp_path / "gate.xml") == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    [error] = [c for c in ET.parse(tmp_path / "gate.xml").getroot() if c.find("error") is not None]
    assert (error.get("classname"), error.get("name")) == (f"ssd-eval-gate.{classname}", name)
    assert line == f"ssd-eval gate: error: {error.find('error').text}"
    if message is not None:
        assert error.find("error").text == message.format(b=baselines, r=results)
    else:
        assert error.find("error").text.startswith(f"{baselines / 'ssd-12.yaml'}: ")
    assert captured.out.splitlines()[-2:] == [
        "gate: 0 passed, 0 failed, 1 errors",
        "gate verdict: ERROR (exit 2): the gate could not run as asked (input error)"]


def junit_cases(path: Path) -> dict[tuple[str, str], ET.Element]:
    return {(c.get("classname").removeprefix("ssd-eval-gate."), c.get("name")): c for c in ET.parse(path).getroot()}


def test_an_unknown_variant_does_not_stop_the_gate_checking_the_next(dirs, tmp_path, capsys):
    assert run_gate(*dirs, variants=["ssd-99", "ssd-12"], junit=tmp_path / "gate.xml") == 2
    cases = junit_cases(tmp_path / "gate.xml")
    assert cases[("ssd-99", "baseline")].find("error") is not None
    assert cases[("ssd-12", "mAP")].find("error") is None and cases[("ssd-12", "mAP")].find("failure") is None


def test_no_baseline_files_and_named_variants_is_one_error(dirs, tmp_path, capsys):
    baselines, results = dirs
    for path in baselines.glob("*.yaml"):
        path.unlink()
    assert run_gate(baselines, results, variants=["ssd-12"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"ssd-eval gate: error: {baselines}: no baselines (*.yaml) found; create them with `ssd-eval baseline "
        "--update`"]


def test_a_note_rides_on_the_variants_first_check_and_keeps_it_whole(dirs, tmp_path, capsys):
    baselines, results = dirs
    (results / "ssd-12").rename(results / "ssd-12-copy")  # its only result, beside its canonical folder
    assert run_gate(baselines, results, variants=["ssd-12"], junit=tmp_path / "gate.xml") == 0
    cases = junit_cases(tmp_path / "gate.xml")
    assert list(cases)[0] == ("ssd-12", "model")
    model = cases[("ssd-12", "model")]
    assert model.find("system-out").text == (f"note: ssd-12 (protocol coco): {results / 'ssd-12'}/ missing; "
                                             f"using {results / 'ssd-12-copy' / 'metrics.json'}")
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        f"PASS ssd-12 model: gated {model_sha('ssd-12')[:12]} (data/models/ssd-12.onnx), not pinned "
        f"({baselines / 'ssd-12.yaml'} has no model_sha256)",
        model.find("system-out").text]
    assert out[-2] == "gate: 3 passed, 0 failed, 0 errors"  # the check carrying the note still counts
    assert out[-1] == "gate verdict: PASS (exit 0): every check holds"


def test_a_drop_or_model_check_that_cannot_run_is_that_checks_error(dirs, tmp_path, capsys):
    baselines, results = dirs
    shutil.rmtree(results / "ssd-12")  # the parent's result is gone: no drop ratio
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "ssd-12-int8.yaml").write_text("variant: [\n")  # and the variant's config does not load
    assert run_gate(baselines, results, variants=["ssd-12-int8"], junit=tmp_path / "gate.xml",
                    configs_dir=configs) == 2
    cases = junit_cases(tmp_path / "gate.xml")
    errors = [key for key, case in cases.items() if case.find("error") is not None]
    assert errors == [("ssd-12-int8", "model"), ("ssd-12-int8", "drop_pct vs ssd-12")]
    assert list(cases)[0] == ("ssd-12-int8", "model")  # the model check comes first, as when it passes
    assert cases[("ssd-12-int8", "model")].find("error").text.startswith(f"{configs / 'ssd-12-int8.yaml'}: ")
    assert "ssd-12" in cases[("ssd-12-int8", "drop_pct vs ssd-12")].find("error").text


def test_an_unwritable_junit_path_is_one_line_naming_it(dirs, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    junit = tmp_path / "file" / "gate.xml"
    assert run_gate(*dirs, junit=junit) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"ssd-eval gate: error: {junit}: cannot write the JUnit "
                                                        "report: File exists")  # mkdir of its folder


# --------------------------------------------------------------------------- issue 21: unlisted results, exit codes

def test_results_without_a_baseline_are_listed_and_strict_fails_them(dirs, tmp_path, capsys):
    baselines, results = dirs
    write_metrics(results, gate_metrics("oracle", mAP=0.4))
    write_metrics(results, gate_metrics("oracle-noisy", mAP=0.39))
    assert run_gate(baselines, results) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["gate: 6 passed, 0 failed, 0 errors; not gated: oracle, oracle-noisy: no baseline "
                        "(--strict: fail)", "gate verdict: PASS (exit 0): every check holds"]
    assert run_gate(baselines, results, strict=True, junit=tmp_path / "gate.xml") == 1
    out = capsys.readouterr().out
    assert (f"FAIL oracle baseline: it has results in {results} but no baseline in {baselines} (--strict)"
            in out.splitlines())
    assert "gate: 6 passed, 2 failed, 0 errors; not gated: oracle, oracle-noisy: no baseline\n" in out
    assert junit_cases(tmp_path / "gate.xml")[("oracle-noisy", "baseline")].find("failure") is not None
    assert run_gate(baselines, results, variants=["ssd-12"], strict=True) == 0  # named variants: the rest is not asked


@pytest.mark.parametrize("args, code, verdict", [
    ([], 0, "gate verdict: PASS (exit 0): every check holds"),
    (["--variant", "ssd-12", "--strict"], 1, "gate verdict: FAIL (exit 1): a check failed"),
    (["--variant", "ssd-99"], 2, "gate verdict: ERROR (exit 2): the gate could not run as asked (input error)"),
], ids=["pass", "fail", "error"])
def test_the_cli_exit_code_is_the_gates_and_its_last_line_the_verdict(dirs, args, code, verdict):
    """What CI reads: `ssd-eval gate` exits 0, 1 or 2 (make would turn 1 and 2 into 2) and ends with the verdict."""
    baselines, results = dirs
    if code == 1:
        write_metrics(results, gate_metrics("ssd-12", mAP=0.1))
    done = subprocess_cli("gate", "--baselines", str(baselines), "--results", str(results), "--configs",
                          str(baselines.parent / "configs"), *args, cwd=REPO)
    assert done.returncode == code, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == verdict


def test_update_writes_the_asked_tolerance_and_says_which(dirs, capsys):
    baselines, results = dirs
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE.replace("  AP50:", "  APs: {expected: 0.05, abs_tol: 0.002, "
                                                                 "rel_tol: null}\n  AP50:"))
    assert update_baselines(baselines, results, variants=["ssd-12"], tolerance="ci95") == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"baseline: {baselines / 'ssd-12.yaml'}: tolerance ci95 (mAP, AP50); tolerance fixed (APs)",
        "baseline: 1 file(s) changed, 0 unchanged"]
    assert [r.tolerance for r in load_baseline(baselines / "ssd-12.yaml").metrics] == ["ci95", "fixed", "ci95"]
    assert update_baselines(baselines, results, variants=["ssd-12"]) == 0  # without: each file keeps its own
    assert f"{baselines / 'ssd-12.yaml'}: tolerance ci95 (mAP, AP50); tolerance fixed (APs)" in capsys.readouterr().out
    assert update_baselines(baselines, results, variants=["ssd-12"], tolerance="fixed") == 0
    assert f"{baselines / 'ssd-12.yaml'}: tolerance fixed (mAP, APs, AP50)" in capsys.readouterr().out
    assert update_baselines(baselines, results, tolerance="ci99") == 2


def test_update_records_the_quantization_format_and_keeps_require_model_sha256(dirs):
    baselines, results = dirs
    document = gate_metrics("ssd-12-int8", mAP=0.1892, parent="ssd-12")
    document["provenance"]["model"]["quantization"] = "QDQ"
    write_metrics(results, document)
    (baselines / "ssd-12-int8.yaml").write_text(INT8_BASELINE.replace("MAXDROP", "1.0")
                                                + f"model_sha256: '{'0' * 64}'\nrequire_model_sha256: true\n")
    assert update_baselines(baselines, results, variants=["ssd-12-int8"]) == 0
    updated = load_baseline(baselines / "ssd-12-int8.yaml")
    assert (updated.quantization, updated.require_model_sha256) == ("QDQ", True)
    assert updated.model_sha256 == model_sha("ssd-12-int8")


@pytest.mark.parametrize("text, message", [
    ("quantization: int4\n", "quantization: expected one of none, QOperator, QDQ or null, got 'int4'"),
    ("require_model_sha256: yes please\n", "require_model_sha256: expected true or false, got 'yes please'"),
    ("require_model_sha256: true\n", "require_model_sha256: true needs a model_sha256 to require"),
])
def test_malformed_quantization_and_require_keys(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_baseline(FP32_BASELINE + text, "ssd-12.yaml")


def test_a_baseline_naming_a_key_twice_is_one_error_naming_both_lines(dirs, capsys):
    """Issue 21: `mAP: {expected: 0.6, expected: 0.531605, ...}` used to gate on the last value."""
    baselines, results = dirs
    twice = FP32_BASELINE.replace("{expected: 0.1898,", "{expected: 0.6, expected: 0.1898,")
    (baselines / "ssd-12.yaml").write_text(twice)
    assert run_gate(baselines, results, variants=["ssd-12"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"ssd-eval gate: error: {baselines / 'ssd-12.yaml'}: duplicate key 'expected' (line 5 and line 5); YAML keeps "
        "only the last, so delete one"]
    (baselines / "ssd-12.yaml").write_text(FP32_BASELINE + "protocol: inc\n")
    assert run_gate(baselines, results, variants=["ssd-12"]) == 2
    assert "duplicate key 'protocol' (line 2 and line 7)" in capsys.readouterr().err


def test_the_new_export_flow_one_command_each(tmp_path, monkeypatch, capsys):
    """The README's flow for a new export of a variant: evaluate the new file as the variant (`eval --config
    configs/<variant>.yaml --model NEW --out results/<variant>`), then gate it: the verdict is on its metrics, with the
    "model changed" note. Here the baseline was pinned on the broken off-by-one export and the new one is better."""
    from ssd_eval.cli import main

    monkeypatch.chdir(REPO)
    results, baselines = tmp_path / "results", tmp_path / "baselines"
    old = REPO / "data" / "sample" / "models" / "sample-offbyone.onnx"
    new = tmp_path / "new.onnx"
    shutil.copyfile(REPO / "data" / "sample" / "models" / "sample.onnx", new)
    assert main(["eval", "--config", "configs/sample.yaml", "--model", str(old), "--out", str(results / "sample"),
                 "--no-progress"]) == 0
    assert main(["baseline", "--update", "--baselines", str(baselines), "--results", str(results), "--variant",
                 "sample"]) == 0
    capsys.readouterr()
    assert main(["eval", "--config", "configs/sample.yaml", "--model", str(new), "--out", str(results / "sample"),
                 "--no-progress", "--fresh"]) == 0
    capsys.readouterr()
    assert main(["gate", "--baselines", str(baselines), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    old_sha, new_sha = sha256_of(old)[:12], sha256_of(new)[:12]
    assert f"note: sample model changed since the baseline: {old_sha}… -> {new_sha}…; gated on mAP, AP50, AP75" in out
    assert "note: sample mAP improved beyond tolerance" in out
    assert out.splitlines()[-1] == "gate verdict: PASS (exit 0): every check holds"
