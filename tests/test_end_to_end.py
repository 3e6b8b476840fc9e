"""The README's workflow through the CLI on the sample: eval, table, gate (passing and failing), report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from conftest import run_cli as ssd_eval

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample_results(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    for name in ("sample", "sample-int8", "sample-qdq"):
        run = ssd_eval("eval", "--config", f"configs/{name}.yaml", "--out", str(results / name))
        assert run.returncode == 0, run.stderr
    return results


def test_gate_passes_on_the_sample_against_the_checked_in_baselines(sample_results, tmp_path):
    junit = tmp_path / "gate.xml"
    run = ssd_eval("gate", "--results", str(sample_results), "--junit", str(junit))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "FAIL" not in run.stdout
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert int(suite.get("failures")) == 0 and int(suite.get("tests")) >= 9


def test_gate_fails_on_a_deliberately_broken_model(sample_results, tmp_path):
    broken = tmp_path / "results"
    for name in ("sample", "sample-qdq"):
        (broken / name).mkdir(parents=True)
        (broken / name / "metrics.json").write_bytes((sample_results / name / "metrics.json").read_bytes())
    # The off-by-one model stands in for sample-int8: every label is one too high.
    run = ssd_eval("eval", "--config", "configs/sample-int8.yaml", "--model",
                   "data/sample/models/sample-offbyone.onnx", "--out", str(broken / "sample-int8"))
    assert run.returncode == 0, run.stderr
    gate = ssd_eval("gate", "--results", str(broken))
    assert gate.returncode == 1, gate.stdout + gate.stderr
    failing = [line for line in gate.stdout.splitlines() if line.startswith("FAIL")]
    assert any("sample-int8 mAP" in line and "expected" in line and "allowed" in line for line in failing)
    assert any("drop" in line for line in failing)


def test_gate_refuses_results_of_another_protocol(sample_results, tmp_path):
    results = tmp_path / "results"
    run = ssd_eval("eval", "--config", "configs/sample.yaml", "--set", "protocol=inc",
                   "--out", str(results / "sample"))
    assert run.returncode == 0, run.stderr
    gate = ssd_eval("gate", "--results", str(results), "--variant", "sample")
    assert gate.returncode == 2
    assert "protocol" in gate.stderr


def test_table_pairs_quantized_variants_with_their_parent(sample_results):
    run = ssd_eval("table", "--results", str(sample_results))
    assert run.returncode == 0, run.stderr
    table = (sample_results / "TABLE.md").read_text()
    metrics = {n: json.loads((sample_results / n / "metrics.json").read_text()) for n in ("sample", "sample-int8")}
    drop = (metrics["sample"]["mAP"] - metrics["sample-int8"]["mAP"]) / metrics["sample"]["mAP"] * 100
    assert f"{drop:.2f}" in table
    assert "coco" in table
    assert (sample_results / "table.csv").read_text().count("\n") == 4


def test_report_draws_pictures(sample_results):
    pytest.importorskip("matplotlib")
    run = ssd_eval("report", "--results", str(sample_results))
    assert run.returncode == 0, run.stderr
    [group] = (sample_results / "report").iterdir()  # the three sample variants: one comparison group
    assert group.name.startswith("coco_full-set_")
    for name in ("pr_iou50.png", "pr_iou75.png", "ap_delta_sample-int8.png"):
        assert (group / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"report/{group.name}/pr_iou50.png" in (sample_results / "TABLE.md").read_text()
