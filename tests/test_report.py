"""Tests for ssd_eval.report: PNG pictures, TABLE.md links, missing matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ssd_eval.errors import UserError
from ssd_eval.report import MAX_CATEGORY_BARS, category_ap_changes, write_report

from helpers import metrics_document, write_metrics

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > 5000, path


def test_report_writes_pngs_and_links_them(tmp_path):
    write_metrics(tmp_path, metrics_document("ssd-12", mAP=0.1898))
    write_metrics(tmp_path, metrics_document(
        "ssd-12-int8", mAP=0.1892, parent="ssd-12",
        per_category={"person": 0.28, "car": 0.21, "toaster": 0.1}))
    # no comparable parent (other protocol): no AP-change chart
    write_metrics(tmp_path, metrics_document("ssd-12-qdq", mAP=0.1863, parent="ssd-12",
                                        protocol="inc", images=4952))
    (tmp_path / "ap_delta_old-variant.png").write_bytes(PNG_SIGNATURE)  # stale

    written = write_report(tmp_path)

    names = sorted(p.name for p in written)
    assert names == ["ap_delta_ssd-12-int8.png", "pr_iou50.png", "pr_iou75.png"]
    for path in written:
        assert_png(path)
    assert not (tmp_path / "ap_delta_old-variant.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    table_md = (tmp_path / "TABLE.md").read_text()
    for name in names:
        assert f"]({name})" in table_md
    assert (tmp_path / "table.csv").exists()


def test_category_changes_skip_missing_and_sort_losses_first():
    parent = metrics_document("p", mAP=0.2, per_category={f"c{i}": 0.5 for i in range(40)}
                          | {"nogt": -1.0, "only_parent": 0.3})
    child_ap = {f"c{i}": 0.5 + (i - 20) / 100 for i in range(40)} | {"nogt": 0.2}
    child = metrics_document("q", mAP=0.19, parent="p", per_category=child_ap)
    changes = category_ap_changes(child, parent)
    assert len(changes) == MAX_CATEGORY_BARS
    assert changes[0] == ("c0", pytest.approx(-0.20))
    values = [v for _, v in changes]
    assert values == sorted(values)
    names = {n for n, _ in changes}
    assert "nogt" not in names and "only_parent" not in names
    assert "c20" not in names  # a zero change is among the smallest
    assert len(category_ap_changes(child, parent, limit=None)) == 40


def test_malformed_pr_curves_names_file(tmp_path):
    data = metrics_document("ssd-12", mAP=0.19)
    data["pr_curves"]["iou75"] = [0.5] * 3
    write_metrics(tmp_path, data)
    with pytest.raises(UserError, match=r"ssd-12/metrics\.json: pr_curves\.iou75"):
        write_report(tmp_path)


def test_no_results_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="make eval"):
        write_report(tmp_path)


def test_missing_matplotlib_is_a_user_error(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    write_metrics(tmp_path, metrics_document("ssd-12", mAP=0.19))
    with pytest.raises(UserError) as info:
        write_report(tmp_path)
    assert str(info.value) == "make report needs matplotlib: pip install -e '.[report]'"
