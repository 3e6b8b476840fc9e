"""Tests for ssd_eval.reports.report: PNG pictures, TABLE.md links, missing matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ssd_eval.errors import UserError
from ssd_eval.reports.report import (
    MAX_CATEGORY_BARS,
    OKABE_ITO,
    ap_delta_figure,
    category_ap_changes,
    error_breakdown_figure,
    pr_figure,
    write_report,
)
from ssd_eval.scoring.breakdown import ERROR_TYPES

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
    (tmp_path / "ap_delta_old-variant.png").write_bytes(PNG_SIGNATURE)  # stale: where reports drew before
    (tmp_path / "report" / "gone").mkdir(parents=True)
    (tmp_path / "report" / "gone" / "pr_iou50.png").write_bytes(PNG_SIGNATURE)  # stale: a group no longer there

    written = write_report(tmp_path)

    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names == ["report/coco_full-set_ann-sha/ap_delta_ssd-12-int8.png",
                     "report/coco_full-set_ann-sha/pr_iou50.png", "report/coco_full-set_ann-sha/pr_iou75.png",
                     "report/inc_full-set_ann-sha/pr_iou50.png", "report/inc_full-set_ann-sha/pr_iou75.png"]
    for path in written:
        assert_png(path)
    assert not (tmp_path / "ap_delta_old-variant.png").exists() and not (tmp_path / "report" / "gone").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
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
    assert len(category_ap_changes(child, parent, limit=None)) == 39  # c20's zero change is left out
    assert len(category_ap_changes(child, parent, limit=None, min_change=0.0)) == 40


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
    assert str(info.value) == ("ssd-eval report (make report) needs matplotlib, which is not installed: "
                               "pip install -e '.[report]'")


# ---------------------------------------------------------------- issue 12: plots that explain a drop
# Checked on the matplotlib objects (legend texts, line styles, bar labels, tick labels), not on pixels.


def figure_class():
    from matplotlib.figure import Figure

    return Figure


def hex_colour(rgba) -> str:
    from matplotlib.colors import to_hex

    return to_hex(rgba).upper()


def sample_family() -> list[dict]:
    return [metrics_document("sample", mAP=0.5316, AP50=0.6472),
            metrics_document("sample-int8", mAP=0.5231, AP50=0.6391, parent="sample"),
            metrics_document("sample-qdq", mAP=0.5288, AP50=0.6455, parent="sample")]


def with_breakdown(document: dict, dap: dict[str, float], counts: dict[str, int] | None = None) -> dict:
    names = [name for name, _ in ERROR_TYPES]
    document["error_breakdown"] = {"ap50": document["AP50"], "iou": 0.5, "background_iou": 0.1,
                                   "dAP": {n: dap.get(n, 0.01) for n in names},
                                   "counts": {n: (counts or {}).get(n, 3) for n in names},
                                   "oracles": {"all_false_positives": 0.2, "all_false_negatives": 0.1}}
    return document


def test_pr_legend_shows_each_curves_ap_and_every_line_has_its_own_style():
    results = sample_family()
    for key, stat in (("iou50", "AP50"), ("iou75", "AP75")):
        axes = pr_figure(results, key, "t", figure_class()).axes[0]
        texts = [t.get_text() for t in axes.get_legend().get_texts()]
        assert texts == [f"{r['variant']}: {stat} {r[stat]:.3f}" for r in results]  # the title names the protocol
        lines = axes.get_lines()
        styles = [(line.get_linestyle(), line.get_marker()) for line in lines]
        assert len({s[0] for s in styles}) == 3 and len({s[1] for s in styles}) == 3  # apart in grayscale
        assert {hex_colour(line.get_color()) for line in lines} <= set(OKABE_ITO)


def test_ap_delta_bars_are_labelled_colour_blind_safe_and_skip_unchanged_categories():
    parent = metrics_document("sample", mAP=0.5, per_category={"person": 0.5, "car": 0.4, "dog": 0.3, "cat": 0.2})
    child = metrics_document("sample-int8", mAP=0.49, parent="sample",
                             per_category={"person": 0.45, "car": 0.4, "dog": 0.3002, "cat": 0.25})
    changes = category_ap_changes(child, parent)
    assert [name for name, _ in changes] == ["person", "cat"]  # car (0) and dog (+0.0002) unchanged
    axes = ap_delta_figure(child, parent, changes, 4, figure_class()).axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["person", "cat"]  # no empty rows
    assert [t.get_text() for t in axes.texts] == ["-0.050", "+0.050"]  # a value label on each bar
    colours = [hex_colour(bar.get_facecolor()) for bar in axes.patches]
    assert colours == ["#D55E00", "#0072B2"] and set(colours) <= set(OKABE_ITO)  # vermillion loss, blue gain
    assert "2 of 4 categories" in axes.get_title()


def test_error_breakdown_figure_against_the_parent():
    parent = with_breakdown(metrics_document("sample", mAP=0.53, AP50=0.647), {"localization": 0.02},
                            {"localization": 31})
    child = with_breakdown(metrics_document("sample-int8", mAP=0.52, AP50=0.639, parent="sample"),
                           {"localization": 0.05}, {"localization": 35})
    figure = error_breakdown_figure(child, parent, figure_class())
    breakdown_axes, change_axes = figure.axes
    ticks = [t.get_text() for t in breakdown_axes.get_yticklabels()]
    assert ticks[1] == "localization (31 -> 35)" and len(ticks) == len(ERROR_TYPES)
    legend = [t.get_text() for t in breakdown_axes.get_legend().get_texts()]
    assert legend == ["sample (AP50 0.647)", "sample-int8 (AP50 0.639)"]
    hatches = {bar.get_hatch() or "" for bar in breakdown_axes.patches}
    assert len(hatches) == 2  # parent and variant apart without colour
    assert len(breakdown_axes.texts) == 2 * len(ERROR_TYPES)
    change_labels = [t.get_text() for t in change_axes.texts]
    assert change_labels[1] == "+0.030" and change_labels[0] == "+0.000"
    alone = error_breakdown_figure(child, None, figure_class())
    assert len(alone.axes) == 1
    assert [t.get_text() for t in alone.axes[0].get_yticklabels()][1] == "localization (35)"


def test_report_draws_error_breakdowns_and_removes_stale_ones(tmp_path):
    write_metrics(tmp_path, with_breakdown(metrics_document("ssd-12", mAP=0.19), {}))
    write_metrics(tmp_path, with_breakdown(metrics_document("ssd-12-int8", mAP=0.18, parent="ssd-12",
                                                            per_category={"person": 0.3, "car": 0.2}), {}))
    write_metrics(tmp_path, metrics_document("ssd-10", mAP=0.195))  # no breakdown: no chart
    (tmp_path / "errors_gone.png").write_bytes(PNG_SIGNATURE)
    names = sorted(p.name for p in write_report(tmp_path))
    assert names == ["ap_delta_ssd-12-int8.png", "errors_ssd-12-int8.png", "errors_ssd-12.png",
                     "pr_iou50.png", "pr_iou75.png"]
    assert_png(tmp_path / "report" / "coco_full-set_ann-sha" / "errors_ssd-12-int8.png")
    assert not (tmp_path / "errors_gone.png").exists()
    assert "](report/coco_full-set_ann-sha/errors_ssd-12-int8.png)" in (tmp_path / "TABLE.md").read_text()


def test_malformed_error_breakdown_names_the_file(tmp_path):
    document = metrics_document("ssd-12", mAP=0.19)
    document["error_breakdown"] = {"dAP": {}}
    write_metrics(tmp_path, document)
    with pytest.raises(UserError, match=r"ssd-12/metrics\.json: error_breakdown"):
        write_report(tmp_path)


# ---------------------------------------------------------------- issue 25: only runs the table would compare, together


def test_report_draws_each_comparison_group_apart_with_its_image_set_in_every_title(tmp_path, monkeypatch):
    """Issue 25: 8 synthetic images and 200 real ones shared one PR chart labelled only "(coco)"."""
    import ssd_eval.reports.report as report
    from ssd_eval.results.index import comparison_groups, load_results

    sample = [with_breakdown(d, {}) for d in sample_family()]
    for document in sample:
        document["provenance"].update(images=8, image_ids_sha256="ids-8")
    real = [metrics_document(v, mAP=m, images=200, annotations="7f25771d190b-real", parent=p)
            for v, m, p in (("oracle", 0.38, None), ("oracle-noisy", 0.17, "oracle"))]
    real[1]["per_category_ap"] = {"person": 0.2, "car": 0.1, "toaster": -1.0}
    for document in real:
        document["provenance"]["overridden"] = ["dataset.annotations", "dataset.images"]
    subset = metrics_document("sample", mAP=0.50, images=4)
    subset["provenance"]["subset"] = {"name": "sample-4", "images": 4}
    for folder, document in [("sample", sample[0]), ("sample-int8", sample[1]), ("sample-qdq", sample[2]),
                             ("oracle-noisy", real[1]), ("oracle", real[0]), ("sample@sample-4", subset)]:
        write_metrics(tmp_path, document, folder)
    drawn = {}
    save = report._save_png
    monkeypatch.setattr(report, "_save_png", lambda figure, path: drawn.setdefault(
        str(path.relative_to(tmp_path)), figure) and save(figure, path))

    write_report(tmp_path)

    assert sorted({str(Path(name).parent) for name in drawn}) == [
        "report/coco_full-set_ann-sha", "report/coco_own-annotations_7f25771d", "report/coco_sample-4_ann-sha"]
    # the groups are the table's (results.index.comparison_groups), not a second rule
    assert len(comparison_groups(load_results(tmp_path))) == 3

    def legend(name):
        return [t.get_text().split(":")[0] for t in drawn[name].axes[0].get_legend().get_texts()]

    assert legend("report/coco_full-set_ann-sha/pr_iou50.png") == ["sample", "sample-int8", "sample-qdq"]
    assert legend("report/coco_own-annotations_7f25771d/pr_iou75.png") == ["oracle", "oracle-noisy"]
    assert legend("report/coco_sample-4_ann-sha/pr_iou50.png") == ["sample"]
    titles = {name: figure.axes[0].get_title() for name, figure in drawn.items()}
    assert titles["report/coco_full-set_ann-sha/pr_iou50.png"] == (
        "Precision-recall at IoU 0.50\ncoco, full set, 8 images of instances_val2017.json")
    assert "coco, own annotations, 200 images" in titles["report/coco_own-annotations_7f25771d/pr_iou75.png"]
    assert "coco, sample-4, 4 images" in titles["report/coco_sample-4_ann-sha/pr_iou50.png"]
    for name, title in titles.items():  # every picture names its group's image set
        assert any(label in title for label in ("full set", "own annotations", "sample-4")), name
    assert "report/coco_own-annotations_7f25771d/ap_delta_oracle-noisy.png" in drawn
    assert "report/coco_full-set_ann-sha/errors_sample-int8.png" in drawn


def test_an_all_zero_change_panel_gets_a_readable_axis():
    parent = with_breakdown(metrics_document("sample", mAP=0.53, AP50=0.647), {})
    child = with_breakdown(metrics_document("sample-qdq", mAP=0.53, AP50=0.647, parent="sample"), {})
    change_axes = error_breakdown_figure(child, parent, figure_class()).axes[1]
    low, high = change_axes.get_xlim()
    assert high - low >= 0.01 and low < 0 < high  # not a 1e-5 scale with an offset over the axis label
