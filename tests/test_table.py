"""Tests for ssd_eval.reports.table: like-with-like comparisons, rendering, atomic files."""

from __future__ import annotations

import copy
import csv
import io
from types import SimpleNamespace

import pytest

import ssd_eval.reports.table
from ssd_eval.errors import UserError
from ssd_eval.reports.table import build_rows, write_table
from ssd_eval.reports.table_render import COLUMNS, render_csv, render_markdown, render_terminal, table_view
from ssd_eval.results.index import load_results

from helpers import metrics_document, write_metrics


def fp32(**kw):
    return metrics_document("ssd-12", mAP=0.1898, published=0.1898, images_per_s=2.0, **kw)


def int8(**kw):
    kw.setdefault("images_per_s", 6.98)
    return metrics_document("ssd-12-int8", mAP=0.1892, parent="ssd-12", published=0.1892, **kw)


REFERENCE_FULL = {"protocol": "inc", "images": 4952, "image_ids": "ids-4952"}
"""How the published zoo numbers were measured (delta is filled only for such rows)."""


def row_of(rows, variant):
    (row,) = [r for r in rows if r["variant"] == variant]
    return row


# --------------------------------------------------------------------------- like with like

def test_same_protocol_and_images_gives_drop_and_speedup():
    rows = build_rows([fp32(), int8()])
    row = row_of(rows, "ssd-12-int8")
    assert row["drop_pct"] == "0.32"  # (0.1898 - 0.1892) / 0.1898 * 100 = 0.316
    assert row["speedup"] == "3.49x"  # 6.98 / 2.0
    assert row["map"] == "0.1892"
    assert row["published_map"] == "0.1892"
    assert row["delta"] == "n/a: published under inc protocol, full set"  # coco run
    assert row["protocol"] == "coco"
    assert row["images"] == "5000"
    assert row["provider"] == "CPU"
    assert row["date"] == "2026-11-25"
    assert row["model_sha256"] == "abababababab"
    parent_row = row_of(rows, "ssd-12")
    assert parent_row["drop_pct"] == "" and parent_row["speedup"] == ""


def test_drop_ratio_exact_value():
    parent = metrics_document("ssd-12", mAP=0.2, images_per_s=4.0)
    child = metrics_document("ssd-12-qdq", mAP=0.19, parent="ssd-12", images_per_s=10.0)
    row = row_of(build_rows([parent, child]), "ssd-12-qdq")
    assert row["drop_pct"] == "5.00"
    assert row["speedup"] == "2.50x"


def test_different_protocol_is_blank_with_reason():
    row = row_of(build_rows([fp32(), int8(protocol="inc")]), "ssd-12-int8")
    assert row["drop_pct"] == "n/a: protocol inc vs coco"
    assert row["speedup"] == "n/a: protocol inc vs coco"


def test_different_image_count_is_blank_with_reason():
    row = row_of(build_rows([fp32(), int8(images=500, image_ids="ids-500")]), "ssd-12-int8")
    assert row["drop_pct"] == "n/a: 500 vs 5000 images"
    assert row["speedup"] == "n/a: 500 vs 5000 images"


def test_same_count_different_image_set_or_annotations_is_blank():
    row = row_of(build_rows([fp32(), int8(image_ids="other")]), "ssd-12-int8")
    assert row["drop_pct"] == "n/a: different image sets"
    row = row_of(build_rows([fp32(), int8(annotations="other")]), "ssd-12-int8")
    assert row["drop_pct"] == "n/a: different annotation files"


def test_missing_parent_is_blank_with_reason():
    row = row_of(build_rows([int8()]), "ssd-12-int8")
    assert row["drop_pct"] == "n/a: no ssd-12 result"
    assert row["speedup"] == "n/a: no ssd-12 result"


def test_different_provider_keeps_drop_but_blanks_speedup():
    rows = build_rows([fp32(), int8(providers=("CUDAExecutionProvider",))])
    row = row_of(rows, "ssd-12-int8")
    assert row["drop_pct"] == "0.32"
    assert row["speedup"] == "n/a: provider CUDA vs CPU"
    assert row["provider"] == "CUDA"


@pytest.mark.parametrize("change, reason", [
    ({"cores": 2}, "n/a: 2 vs 4 cores"),
    ({"cpu": "EPYC"}, "n/a: different host cpu"),
    ({"intra": 4}, "n/a: threads intra/inter 4/0 vs 0/0"),
    ({"images_per_s": None}, "n/a: no images/s for ssd-12-int8"),
])
def test_speedup_needs_same_host_threads_and_timing(change, reason):
    row = row_of(build_rows([fp32(), int8(**change)]), "ssd-12-int8")
    assert row["drop_pct"] == "0.32"
    assert row["speedup"] == reason


def test_different_batch_size_blanks_speedup():
    child = int8()
    child["provenance"]["runtime"]["batch_size"] = 4
    row = row_of(build_rows([fp32(), child]), "ssd-12-int8")
    assert row["drop_pct"] == "0.32"
    assert row["speedup"] == "n/a: batch 4 vs 1"


@pytest.mark.parametrize("side", ["child", "parent"])
def test_run_merged_from_shards_has_no_speedup(side):
    parent, child = fp32(), int8()
    merged = child if side == "child" else parent
    merged["provenance"]["shards"] = ["1/2", "2/2"]
    row = row_of(build_rows([parent, child]), "ssd-12-int8")
    assert row["drop_pct"] == "0.32"
    assert row["speedup"] == f"n/a: {merged['variant']} merged from shards"


def test_parent_with_zero_map_gives_no_drop_ratio():
    parent = fp32()
    parent["mAP"] = 0.0
    row = row_of(build_rows([parent, int8()]), "ssd-12-int8")
    assert row["drop_pct"] == "n/a: ssd-12 mAP is 0"
    assert row["speedup"] == "3.49x"


def test_speed_comparable_parent_is_preferred():
    # Both parents are accuracy-comparable; only the second ran on the same provider.
    gpu_parent = metrics_document("ssd-12", mAP=0.2, images_per_s=20.0,
                                  providers=("CUDAExecutionProvider",))
    rows = build_rows([gpu_parent, fp32(), int8()])
    row = rows[2]
    assert row["variant"] == "ssd-12-int8"
    assert row["speedup"] == "3.49x"  # 6.98 / 2.0, against the CPU parent
    assert row["drop_pct"] == "0.32"  # and the drop against that same parent (not 5.40)


def test_resumed_run_has_no_speedup():
    child = int8()
    child["provenance"]["resumed_images"] = 100
    row = row_of(build_rows([fp32(), child]), "ssd-12-int8")
    assert row["speedup"] == "n/a: ssd-12-int8 run was resumed"


def test_parent_chosen_under_the_same_protocol():
    reference_parent = fp32(protocol="inc", images=4952, image_ids="ids-4952")
    reference_parent["mAP"] = 0.19
    results = [fp32(), reference_parent, int8(protocol="inc", images=4952,
                                              image_ids="ids-4952")]
    row = build_rows(results)[2]
    assert row["protocol"] == "inc"
    assert row["drop_pct"] == "0.42"  # (0.19 - 0.1892) / 0.19 * 100 = 0.421


def test_no_published_map_leaves_published_and_delta_empty_without_a_note():
    """Issue 25: `n/a: no published mAP` filled every row; the empty published cell says it."""
    data = int8()
    data["published_map"] = None
    rows = build_rows([data])
    row = row_of(rows, "ssd-12-int8")
    assert row["published_map"] == "" and row["delta"] == ""
    assert "no published" not in render_terminal(rows) + render_markdown(rows) + render_csv(rows)


def test_delta_is_signed_measured_minus_published():
    data = fp32(**REFERENCE_FULL)
    data["mAP"] = 0.1850
    assert row_of(build_rows([data]), "ssd-12")["delta"] == "-0.0048"


def test_delta_only_under_the_published_protocol_on_the_full_set():
    # The published zoo numbers: inc protocol, all 4952 annotated val2017 images.
    assert row_of(build_rows([int8(**REFERENCE_FULL)]), "ssd-12-int8")["delta"] == "+0.0000"
    coco_small = int8(images=50, image_ids="ids-50")
    coco_small["provenance"]["limit"] = 50
    assert (row_of(build_rows([coco_small]), "ssd-12-int8")["delta"]
            == "n/a: published under inc protocol, full set")
    mixed = int8(protocol="inc+resize_backend=pil", images=4952, image_ids="ids-4952")
    assert (row_of(build_rows([mixed]), "ssd-12-int8")["delta"]
            == "n/a: published under inc protocol, full set")
    limited = int8(protocol="inc", images=50, image_ids="ids-50")
    limited["provenance"]["limit"] = 50
    assert (row_of(build_rows([limited]), "ssd-12-int8")["delta"]
            == "n/a: limited run (--limit 50); published over the full set")
    limited["published_map"] = None
    assert row_of(build_rows([limited]), "ssd-12-int8")["delta"] == ""


def test_table_md_header_explains_when_delta_is_filled(tmp_path):
    write_metrics(tmp_path, fp32())
    write_table(tmp_path, quiet=True)
    header = (tmp_path / "TABLE.md").read_text().split("| variant |")[0]
    expected = "filled only for runs under the protocol the published\n  value was measured with, over the full set"
    assert expected in header


# --------------------------------------------------------------------------- rendering

def test_csv_content():
    text = render_csv(build_rows([fp32(), int8(protocol="inc")]))
    records = list(csv.DictReader(io.StringIO(text)))
    assert list(records[0]) == ["variant", "protocol", "image_set", "images", "subset", "map", "map_ci", "map_ci_note",
                                "published_map", "delta", "delta_note", "drop_pct", "drop_note", "drop_ci",
                                "drop_ci_note", "ap50", "ap75", "aps", "apm", "apl", "area_note", "images_per_s",
                                "images_per_s_note", "speedup", "speedup_note", "provider", "int8_path", "date",
                                "model_sha256"]
    assert records[0]["variant"] == "ssd-12" and records[0]["map"] == "0.1898"
    assert records[1]["drop_pct"] == "" and records[1]["drop_note"] == "n/a: protocol inc vs coco"
    assert records[1]["images_per_s"] == "6.98"


def numeric_columns_parse(text: str) -> list[dict]:
    """table.csv's records, after checking every numeric column holds a number (float()) or nothing."""
    from ssd_eval.reports.table_render import CSV_NUMERIC

    records = list(csv.DictReader(io.StringIO(text)))
    for record in records:
        for key in CSV_NUMERIC:
            if record[key] != "":
                float(record[key])  # raises on "n/a: ..." or "0.98x"
    return records


def test_csv_numeric_columns_hold_only_numbers_and_reasons_go_to_note_columns():
    """Issue 11: table.csv put `n/a: ...` strings in numeric columns (pandas read them as object columns)."""
    parent = fp32(**REFERENCE_FULL)
    children = [int8(**REFERENCE_FULL),  # delta +0.0000, drop and speedup filled
                metrics_document("ssd-12-qdq", mAP=0.1863, parent="ssd-12", published=0.1863,
                                 protocol="coco", images=5000, images_per_s=None),  # every comparison n/a
                int8(**REFERENCE_FULL)]  # below: ran on another int8 kernel class, so its delta has a note
    children[2].update(variant="ssd-12-int8-avx2", published_int8_path="x86-vnni")
    children[2]["provenance"]["model"]["quantization"] = "QDQ"
    children[2]["provenance"]["int8"] = {"cpu": {"kernel_class": "x86-avx2"}}
    records = {r["variant"]: r for r in numeric_columns_parse(render_csv(build_rows([parent, *children])))}
    int8_row, qdq, avx2 = records["ssd-12-int8"], records["ssd-12-qdq"], records["ssd-12-int8-avx2"]
    assert (float(int8_row["delta"]), float(int8_row["drop_pct"]), float(int8_row["speedup"])) == (0.0, 0.32, 3.49)
    assert int8_row["delta_note"] == int8_row["drop_note"] == int8_row["speedup_note"] == ""
    assert (qdq["delta"], qdq["drop_pct"], qdq["speedup"], qdq["images_per_s"]) == ("", "", "", "")
    assert qdq["delta_note"] == "n/a: published under inc protocol, full set"
    assert qdq["drop_note"] == qdq["speedup_note"] == "n/a: protocol coco vs inc"
    assert float(avx2["delta"]) == 0.0 and avx2["delta_note"] == "int8 on x86-avx2; published on x86-vnni"
    # the display table keeps the reasons in the cells
    row = row_of(build_rows([parent, *children]), "ssd-12-qdq")
    assert row["drop_pct"] == "n/a: protocol coco vs inc"


def test_ap50_ap75_always_and_area_aps_only_where_comparable():
    coco = build_rows([fp32()])[0]
    data = fp32()
    assert (coco["ap50"], coco["ap75"], coco["aps"], coco["apm"], coco["apl"]) == tuple(
        f"{data[name]:.4f}" for name in ("AP50", "AP75", "APs", "APm", "APl"))
    inc = build_rows([fp32(**REFERENCE_FULL)])[0]
    assert inc["ap50"] == f"{data['AP50']:.4f}" and (inc["aps"], inc["apm"], inc["apl"]) == ("n/a",) * 3
    [record] = numeric_columns_parse(render_csv([inc]))
    assert (record["aps"], record["apm"], record["apl"]) == ("", "", "")
    assert record["area_note"] == "n/a: inc computes areas from normalized boxes"
    header = render_markdown([coco], all_columns=True).splitlines()[0]
    assert "| AP50 | AP75 | APs | APm | APl |" in header
    # the views: the n/a cells empty, and one note for the three
    headers, [cells], notes = table_view([inc], all_columns=True)
    assert [cells[headers.index(h)] for h in ("APs", "APm", "APl", "note")] == ["", "", "", "1,2"]
    assert notes == ["1. mAP ± ci: no intervals", "2. APs, APm, APl: inc computes areas from normalized boxes"]


def test_table_md_explains_the_area_columns_and_cached_speed(tmp_path):
    write_metrics(tmp_path, fp32())
    write_table(tmp_path, quiet=True)
    text = (tmp_path / "TABLE.md").read_text()
    assert "INC computes areas from normalized boxes" in text and '"(cached)"' in text


def test_a_run_served_from_the_cache_keeps_its_speedup_and_says_so():
    parent, child = fp32(), int8()
    for result in (parent, child):
        result["provenance"].update(resumed_images=5000, speed_from_cache=True)
    rows = build_rows([parent, child])
    assert row_of(rows, "ssd-12-int8")["speedup"] == "3.49x"
    assert row_of(rows, "ssd-12-int8")["images_per_s"] == "6.98 (cached)"
    child["provenance"]["speed_from_cache"] = False  # resumed half way: its speed covers only part of the run
    assert row_of(build_rows([parent, child]), "ssd-12-int8")["speedup"] == "n/a: ssd-12-int8 run was resumed"


def test_a_progress_interval_does_not_make_speeds_incomparable():
    parent, child = fp32(), int8()
    parent["provenance"]["config"] = {"pipeline": {"workers": 1, "mode": "thread", "prefetch": 0}}
    child["provenance"]["config"] = {"pipeline": {"workers": 1, "mode": "thread", "prefetch": 0,
                                                  "progress_interval_s": 30.0}}
    assert row_of(build_rows([parent, child]), "ssd-12-int8")["speedup"] == "3.49x"


def test_markdown_content():
    rows = build_rows([with_interval(fp32(**REFERENCE_FULL)), with_interval(int8(**REFERENCE_FULL))])
    for all_columns, expected in ((True, {"variant": "ssd-12-int8", "protocol": "inc", "image set": "full set",
                                          "images": "4952", "mAP": "0.1892", "published mAP": "0.1892",
                                          "delta": "+0.0000", "drop %": "0.32", "speedup": "3.49x",
                                          "AP50": f"{0.1892 * 1.8:.4f}", "drop ± ci": "", "note": "2,1"}),
                                  (False, {"variant": "ssd-12-int8", "protocol": "inc", "image set": "full set",
                                           "images": "4952", "mAP (95% ci)": "0.1892 ± 0.0100",
                                           "published": "0.1892", "delta": "+0.0000", "drop %": "0.32",
                                           "images/s": "6.98", "sha256": "abababab"})):
        lines = render_markdown(rows, all_columns=all_columns).splitlines()
        assert lines[0].startswith("| variant | protocol | image set | images |")
        assert set(lines[1]) <= {"|", "-"}
        headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
        cells = dict(zip(headers, (cell.strip() for cell in lines[3].strip("|").split("|"))))
        assert {k: cells[k] for k in expected} == expected
        if all_columns:  # each reason once, numbered in order of first appearance
            assert lines[4:] == ["", "Notes:", "", "1. APs, APm, APl: inc computes areas from normalized boxes",
                                 "2. drop ± ci: no detections.json"]
        else:
            assert headers[-1] == "sha256" and len(lines) == 4  # nothing empty for a reason: no note column


def test_markdown_escapes_pipes():
    data = fp32(protocol="custom(a|b)")
    assert "custom(a\\|b)" in render_markdown(build_rows([data]))


def test_hostile_variant_names_stay_on_one_row_and_are_not_formulas():
    """Issue 13, item 15: a newline cannot break TABLE.md; =cmd does not run as a formula in table.csv."""
    rows = build_rows([metrics_document("evil\n| x |\n=cmd", mAP=0.2), metrics_document("=HYPERLINK(1)", mAP=0.1),
                       metrics_document("-x", mAP=0.3, published=0.4, protocol="inc", images=4952)])
    lines = render_markdown(rows).splitlines()
    assert len(lines) == 5 and lines[4].startswith("| evil \\| x \\| =cmd | coco |")
    records = list(csv.reader(io.StringIO(render_csv(rows))))
    assert [r[0] for r in records[1:]] == ["'-x", "'=HYPERLINK(1)", "evil | x | =cmd"]
    assert records[1][records[0].index("delta")] == "-0.1000"  # numbers keep their sign
    assert len([line for line in render_terminal(rows).splitlines() if "coco" in line or "inc" in line]) == 3


def test_terminal_table_is_aligned():
    text = render_terminal(build_rows([fp32(), int8()]))
    lines = text.splitlines()
    assert lines[0].startswith("variant") and len(lines) == 5  # header, rule, 2 rows, 1 note
    start = lines[0].index("protocol")
    assert all(line[start:].startswith(("protocol", "coco", "-")) for line in lines[:4])
    assert lines[4] == "1. delta: published under inc protocol, full set"


# --------------------------------------------------------------------------- files

def test_write_table_writes_files_atomically_and_prints(tmp_path, capsys):
    write_metrics(tmp_path, fp32())
    write_metrics(tmp_path, int8())
    rows = write_table(tmp_path)
    assert [r["variant"] for r in rows] == ["ssd-12", "ssd-12-int8"]
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert leftovers == ["TABLE.md", "table.csv"]
    table_md = (tmp_path / "TABLE.md").read_text()
    assert "protocol" in table_md and "| ssd-12-int8 | coco |" in table_md
    assert "drop %" in table_md
    assert ".png" not in table_md
    assert (tmp_path / "table.csv").read_text() == render_csv(rows)
    out = capsys.readouterr().out
    assert "ssd-12-int8" in out and "0.32" in out and "3.49x" not in out  # speedup: --all
    write_table(tmp_path, all_columns=True)
    assert "3.49x" in capsys.readouterr().out and "3.49x" in (tmp_path / "TABLE.md").read_text()


def test_write_table_quiet_prints_nothing(tmp_path, capsys):
    write_metrics(tmp_path, fp32())
    write_table(tmp_path, quiet=True)
    assert capsys.readouterr().out == ""


def test_table_links_report_pictures_group_by_group(tmp_path):
    write_metrics(tmp_path, fp32())
    names = ["report/coco_ci-500_aaaa/pr_iou50.png", "report/coco_full-set_bbbb/pr_iou50.png",
             "report/coco_full-set_bbbb/ap_delta_ssd-12-int8.png"]
    for name in names + ["pr_iou75.png"]:  # an old report's picture beside TABLE.md is not linked
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"\x89PNG")
    write_table(tmp_path, quiet=True)
    table_md = (tmp_path / "TABLE.md").read_text()
    pictures = table_md.split("## Pictures (`ssd-eval report`)\n")[1]
    assert pictures == ("\n### coco_ci-500_aaaa\n\n![pr_iou50](report/coco_ci-500_aaaa/pr_iou50.png)\n"
                        "\n### coco_full-set_bbbb\n\n![pr_iou50](report/coco_full-set_bbbb/pr_iou50.png)\n"
                        "![ap_delta_ssd-12-int8](report/coco_full-set_bbbb/ap_delta_ssd-12-int8.png)\n")


def test_failed_write_keeps_old_table_and_leaves_no_temp_file(tmp_path, monkeypatch):
    write_metrics(tmp_path, fp32())
    write_table(tmp_path, quiet=True)
    before = (tmp_path / "TABLE.md").read_text()
    write_metrics(tmp_path, int8())

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", failing_fsync)
    with pytest.raises(UserError, match="TABLE.md: cannot write: disk full"):  # the path is named
        write_table(tmp_path, quiet=True)
    assert (tmp_path / "TABLE.md").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["TABLE.md", "table.csv"]


def test_no_results_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="make eval"):
        write_table(tmp_path)
    with pytest.raises(UserError, match="make eval"):
        write_table(tmp_path / "missing")


def test_malformed_json_names_the_file(tmp_path):
    write_metrics(tmp_path, fp32())
    bad = tmp_path / "ssd-12-int8" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(UserError, match=r"ssd-12-int8/metrics\.json"):
        load_results(tmp_path)
    with pytest.raises(UserError, match=r"ssd-12-int8/metrics\.json"):
        write_table(tmp_path)


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.pop("mAP"), "mAP"),
    (lambda d: d["provenance"].pop("image_ids_sha256"), "provenance.image_ids_sha256"),
    (lambda d: d["provenance"]["runtime"].update(providers="CPU"), "provenance.runtime.providers"),
    (lambda d: d.update(schema=2), "schema"),
    (lambda d: d.update(published_map="high"), "published_map"),
    (lambda d: d["provenance"].update(limit="50"), "provenance.limit"),
])
def test_malformed_metrics_names_file_and_key(tmp_path, mutate, key):
    data = copy.deepcopy(fp32())
    mutate(data)
    write_metrics(tmp_path, data)
    with pytest.raises(UserError) as info:
        load_results(tmp_path)
    assert "ssd-12/metrics.json" in str(info.value) and key in str(info.value)


def test_load_results_sorted_with_source(tmp_path):
    write_metrics(tmp_path, int8())
    write_metrics(tmp_path, fp32())
    results = load_results(tmp_path)
    assert [r["variant"] for r in results] == ["ssd-12", "ssd-12-int8"]
    assert results[0]["_source"].endswith("ssd-12/metrics.json")


def test_different_postprocessing_is_not_compared():
    parent, child = fp32(), int8()
    parent["provenance"]["config"] = {"preprocess": {"mean": [0.5]}, "postprocess": {"max_detections": 100}}
    child["provenance"]["config"] = {"preprocess": {"mean": [0.5]}, "postprocess": {"max_detections": 200}}
    row = row_of(build_rows([parent, child]), "ssd-12-int8")
    assert row["drop_pct"] == "n/a: different postprocess (max_detections)"


def test_resize_backend_spelled_out_or_left_to_the_protocol_is_the_same():
    parent, child = fp32(), int8()
    parent["provenance"]["config"] = {"preprocess": {"resize_backend": None}}
    child["provenance"]["config"] = {"preprocess": {"resize_backend": "pil"}}
    row = row_of(build_rows([parent, child]), "ssd-12-int8")
    assert not str(row["drop_pct"]).startswith("n/a")


def test_other_onnxruntime_version_blanks_only_the_speedup():
    parent, child = fp32(), int8()
    child["provenance"]["runtime"]["onnxruntime"] = "1.99.0"
    row = row_of(build_rows([parent, child]), "ssd-12-int8")
    assert not str(row["drop_pct"]).startswith("n/a")
    assert row["speedup"] == "n/a: different onnxruntime"


def test_int8_path_column_and_published_class_note():
    quantized = int8(**REFERENCE_FULL)
    quantized["published_int8_path"] = "x86-vnni"
    quantized["provenance"]["model"]["quantization"] = "QDQ"
    quantized["provenance"]["int8"] = {"cpu": {"kernel_class": "x86-avx2"}}
    row = row_of(build_rows([fp32(**REFERENCE_FULL), quantized]), "ssd-12-int8")
    assert row["int8_path"] == "x86-avx2"
    assert row["delta"] == "+0.0000 (int8 on x86-avx2; published on x86-vnni)"
    quantized["provenance"]["int8"]["cpu"]["kernel_class"] = "x86-vnni"
    assert row_of(build_rows([quantized]), "ssd-12-int8")["delta"] == "+0.0000"
    assert row_of(build_rows([fp32(**REFERENCE_FULL)]), "ssd-12")["int8_path"] == ""


# --------------------------------------------------------------------------- subsets and intervals (issue 14)

def on_subset(document: dict, name: str = "ci-500") -> dict:
    document["provenance"]["subset"] = {"name": name, "ids_sha256": "0" * 64, "images": 500}
    return document


def test_a_subset_run_is_compared_only_with_a_run_on_the_same_subset():
    rows = build_rows([fp32(images=500, image_ids="ids-500"), on_subset(int8(images=500, image_ids="ids-500"))])
    row = row_of(rows, "ssd-12-int8")
    assert row["subset"] == "ci-500" and row_of(rows, "ssd-12")["subset"] == ""
    assert row["drop_pct"] == row["speedup"] == row["drop_ci"] == "n/a: subset ci-500 vs full set"
    subset_rows = build_rows([on_subset(fp32(images=500, image_ids="ids-500")),
                              on_subset(int8(images=500, image_ids="ids-500"))])
    assert row_of(subset_rows, "ssd-12-int8")["drop_pct"] == "0.32"
    other = build_rows([on_subset(fp32(images=500, image_ids="ids-500"), "ci-500b"),
                        on_subset(int8(images=500, image_ids="ids-500"))])
    assert row_of(other, "ssd-12-int8")["drop_pct"] == "n/a: subset ci-500 vs subset ci-500b"


def test_delta_is_blank_for_a_subset_run_and_says_why():
    row = row_of(build_rows([on_subset(int8(**REFERENCE_FULL))]), "ssd-12-int8")
    assert row["delta"] == "n/a: subset ci-500; published over the full set"


def with_interval(document: dict, level: float = 0.95) -> dict:
    document["intervals"] = {"mAP": {"low": document["mAP"] - 0.01, "high": document["mAP"] + 0.01, "level": level,
                                     "replicates": 1000, "seed": 0, "estimate": document["mAP"],
                                     "method": "percentile", "bias": 0.0}}
    return document


def test_map_ci_shows_half_the_interval_and_keeps_the_map_column_a_number():
    off = fp32()
    off["provenance"]["bootstrap"] = {"replicates": 0, "off": "5000 images > metrics.bootstrap.max_images 2000"}
    rows = [build_rows([doc])[0] for doc in (with_interval(fp32()), with_interval(fp32(), level=0.9), off, fp32())]
    assert [r["map"] for r in rows] == ["0.1898"] * 4
    assert [r["map_ci"] for r in rows] == ["0.1898 ± 0.0100", "0.1898 ± 0.0100 (90%)", "n/a: bootstrap off",
                                           "n/a: no intervals"]
    assert rows[0]["drop_ci"] == ""  # not a quantized variant
    # table.csv: the half width alone, a level other than 95 % and the reasons in the note column
    records = numeric_columns_parse(render_csv(rows))
    assert [(r["map"], r["map_ci"], r["map_ci_note"]) for r in records] == [
        ("0.1898", "0.0100", ""), ("0.1898", "0.0100", "90%"), ("0.1898", "", "n/a: bootstrap off"),
        ("0.1898", "", "n/a: no intervals")]


def test_drop_ci_is_the_paired_interval_of_both_runs_detections(tmp_path):
    from pathlib import Path

    from ssd_eval.config.load import load_config
    from ssd_eval.engine.pipeline import evaluate
    from ssd_eval.results.paired import ResultMatches, paired_drop

    repo = Path(__file__).resolve().parents[1]
    for name in ("sample", "sample-int8"):
        evaluate(load_config(repo / "configs" / f"{name}.yaml", [("dataset.subset", "sample-4"),
                                                                 ("output.dir", str(tmp_path / "{run}"))]),
                 progress=False)
    results = load_results(tmp_path)
    row = row_of(build_rows(results), "sample-int8")
    int8_result, parent = (next(r for r in results if r["variant"] == v) for v in ("sample-int8", "sample"))
    matcher = ResultMatches()
    drop = paired_drop(matcher.matches(int8_result), matcher.matches(parent), replicates=1000, seed=0)
    assert drop.estimate == pytest.approx((parent["mAP"] - int8_result["mAP"]) / parent["mAP"] * 100, abs=1e-9)
    centred = f"{(drop.low + drop.high) / 2:.2f}" == f"{drop.estimate:.2f}"
    assert row["drop_ci"] == (f"{drop.estimate:.2f} ± {drop.half_width:.2f}" if centred else
                              f"{drop.estimate:.2f} [{drop.low:.2f}, {drop.high:.2f}]") and drop.half_width > 0
    assert row["subset"] == "sample-4" and row["map_ci"].startswith(f"{int8_result['mAP']:.4f} ")


@pytest.mark.parametrize("low, high, cell, csv", [
    (0.0995, 0.1403, "0.1008 [0.0995, 0.1403]", ("0.0204", "[0.0995, 0.1403]")),  # issue 21's: not centred
    (0.0908, 0.1108, "0.1008 ± 0.0100", ("0.0100", "")),  # centred on the point: a ± says it right
    (0.09085, 0.11085, "0.1008 ± 0.0100", ("0.0100", "")),  # centred as printed (0.10085 -> 0.1008)
    (0.0906, 0.1108, "0.1008 [0.0906, 0.1108]", ("0.0101", "[0.0906, 0.1108]")),  # centre 0.1007: off by 1e-4
], ids=["issue-21", "centred", "centred-as-printed", "off-centre-by-1e-4"])
def test_map_ci_prints_the_interval_as_low_high_unless_it_is_centred_on_the_point(low, high, cell, csv):
    document = fp32()
    document["mAP"] = 0.1008
    document["intervals"] = {"mAP": {"low": low, "high": high, "level": 0.95, "replicates": 1000, "seed": 0,
                                     "estimate": 0.1008, "method": "percentile", "bias": 0.0}}
    row = build_rows([document])[0]
    assert row["map_ci"] == cell
    [record] = numeric_columns_parse(render_csv([row]))
    assert (record["map_ci"], record["map_ci_note"]) == csv


# ------------------------------------------------------------------ found by mutation testing (docs/TESTING.md)

def test_csv_cells_starting_with_plus_or_at_are_not_formulas():
    rows = build_rows([metrics_document("+cmd", mAP=0.2), metrics_document("@SUM(A1)", mAP=0.1)])
    records = list(csv.reader(io.StringIO(render_csv(rows))))
    assert sorted(r[0] for r in records[1:]) == ["'+cmd", "'@SUM(A1)"]


def test_speedup_over_a_slow_parent_and_a_parent_at_zero_images_per_s():
    parent, child = fp32(), int8()
    parent["provenance"]["images_per_s"] = 0.5
    assert row_of(build_rows([parent, child]), "ssd-12-int8")["speedup"] == "13.96x"
    parent["provenance"]["images_per_s"] = 0.0
    assert row_of(build_rows([parent, child]), "ssd-12-int8")["speedup"] == "n/a: ssd-12 images/s is 0"


def test_a_run_without_a_measured_speed_leaves_the_speed_cell_empty():
    document = fp32()
    document["provenance"]["images_per_s"] = None
    assert row_of(build_rows([document]), "ssd-12")["images_per_s"] == ""


def test_int8_path_of_a_model_marked_unquantized_or_without_a_kernel_class():
    quantized = int8()
    quantized["provenance"]["model"]["quantization"] = "none"
    assert row_of(build_rows([quantized]), "ssd-12-int8")["int8_path"] == ""
    quantized["provenance"]["model"]["quantization"] = "QDQ"
    assert row_of(build_rows([quantized]), "ssd-12-int8")["int8_path"] == "unknown"


def test_markdown_rows_open_and_close_with_a_pipe():
    lines = render_markdown(build_rows([fp32(), int8()])).splitlines()[:4]
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines[:1] + lines[2:])
    assert lines[1] == "|" + "---|" * (lines[0].count(" | ") + 1)


def test_table_md_keeps_the_table_then_one_picture_section_and_ends_in_one_newline(tmp_path):
    write_metrics(tmp_path, fp32())
    rows = write_table(tmp_path, quiet=True)
    plain = (tmp_path / "TABLE.md").read_text()
    assert plain.endswith("\n" + render_markdown(rows)) and not plain.endswith("\n\n")
    (tmp_path / "report" / "g").mkdir(parents=True)
    (tmp_path / "report" / "g" / "pr_iou50.png").write_bytes(b"\x89PNG")
    write_table(tmp_path, quiet=True)
    assert (tmp_path / "TABLE.md").read_text() == (
        plain + "\n\n## Pictures (`ssd-eval report`)\n\n### g\n\n![pr_iou50](report/g/pr_iou50.png)\n")


def test_write_table_prints_the_terminal_table_and_nothing_else(tmp_path, capsys):
    write_metrics(tmp_path, fp32())
    rows = write_table(tmp_path)
    assert capsys.readouterr().out == render_terminal(rows)


def test_a_non_inc_row_leaves_the_area_note_empty_and_an_inc_variant_protocol_fills_it():
    [coco] = numeric_columns_parse(render_csv(build_rows([fp32()])))
    assert (coco["aps"], coco["area_note"]) == (f"{fp32()['APs']:.4f}", "")
    inc_switched = build_rows([fp32(protocol="inc+resize_backend=pil")])[0]
    assert (inc_switched["aps"], inc_switched["area_note"]) == ("n/a", "n/a: inc computes areas from normalized boxes")


def test_a_result_without_ap_breakdown_leaves_those_cells_empty():
    document = fp32()
    for name in ("AP50", "AP75", "APs", "APm", "APl"):
        del document[name]  # metrics.json requires only mAP
    row = build_rows([document])[0]
    assert [row[key] for key in ("map", "ap50", "ap75", "aps", "apm", "apl")] == ["0.1898", "", "", "", "", ""]


def test_a_measured_speed_is_not_marked_cached():
    document = fp32()
    document["provenance"]["speed_from_cache"] = False  # as every metrics.json records it
    assert row_of(build_rows([document]), "ssd-12")["images_per_s"] == "2.00"


@pytest.mark.parametrize("missing, expected_cell", [
    ("child interval", "n/a: a run without bootstrap"), ("parent interval", "n/a: a run without bootstrap"),
    ("child source", "n/a: no detections.json"), ("parent source", "n/a: no detections.json"),
    (None, "1.23 ± 0.45")])
def test_drop_ci_needs_both_intervals_and_both_detections_then_uses_the_childs_bootstrap_settings(
        monkeypatch, missing, expected_cell):
    parent, child = with_interval(fp32()), with_interval(int8())
    parent["_source"], child["_source"] = "results/ssd-12/metrics.json", "results/ssd-12-int8/metrics.json"
    child["provenance"]["bootstrap"] = {"replicates": 200, "seed": 7}
    if missing:
        side, what = missing.split()
        document = child if side == "child" else parent
        del document["intervals" if what == "interval" else "_source"]
    calls = []

    class Matches:
        def matches(self, result):
            return f"matches of {result['variant']}"

    def fake_paired_drop(child_matches, parent_matches, **settings):
        calls.append((child_matches, parent_matches, settings))
        return SimpleNamespace(estimate=1.234, low=0.785, high=1.683, half_width=0.449, level=0.95)

    monkeypatch.setattr(ssd_eval.reports.table, "paired_drop", fake_paired_drop)
    monkeypatch.setattr(ssd_eval.reports.table, "ResultMatches", Matches)
    assert row_of(build_rows([parent, child]), "ssd-12-int8")["drop_ci"] == expected_cell
    assert calls == ([] if missing else [("matches of ssd-12-int8", "matches of ssd-12",
                                          {"replicates": 200, "seed": 7})])


# ------------------------------------------------------------------ issue 25: the default view, order, image set

def zoo_rows() -> list[dict]:
    """Real-length rows: the zoo variants on the full set under the published protocol, on ci-500 under coco,
    and a --limit run, with bootstrap intervals, cached speeds and int8 kernel-class notes."""
    documents = []
    for subset in (None, "ci-500"):
        for maker in (fp32, int8):
            document = maker(protocol="inc" if subset is None else "coco", images=4952 if subset is None else 500,
                             image_ids=f"ids-{subset}")
            with_interval(document)["intervals"]["mAP"].update(low=document["mAP"] - 0.0181,
                                                               high=document["mAP"] + 0.0193)
            document["provenance"]["images_per_s"] = 12.3456
            document["provenance"]["speed_from_cache"] = True
            if subset:
                on_subset(document, subset)
            if maker is int8:
                document["published_int8_path"] = "x86-vnni"
                document["provenance"]["model"]["quantization"] = "QOperator"
                document["provenance"]["int8"] = {"cpu": {"kernel_class": "x86-avx2"}}
            documents.append(document)
    limited = metrics_document("ssd-10", mAP=0.1949, published=0.195, published_protocol="mlperf-ssd",
                               protocol="mlperf-ssd", images=1000)
    limited["provenance"]["limit"] = 1000
    return build_rows(documents + [limited])


def test_the_default_view_fits_120_columns_with_real_values_and_all_shows_every_column():
    rows = zoo_rows()
    default = render_terminal(rows).splitlines()
    assert max(len(line) for line in default) <= 120, "\n".join(default)
    assert default[0].split() == ["variant", "protocol", "image", "set", "images", "mAP", "(95%", "ci)", "published",
                                  "delta", "drop", "%", "images/s", "sha256", "note"]
    everything = render_terminal(rows, all_columns=True).splitlines()
    for _, header in COLUMNS:
        assert header in everything[0]
    assert max(len(line) for line in everything) > 120
    # table.csv keeps every column, whatever the view
    assert list(csv.DictReader(io.StringIO(render_csv(rows))))[0].keys() >= {k for k, _ in COLUMNS}


def test_an_empty_cell_stays_empty_and_its_reason_is_a_numbered_note_given_once():
    rows = zoo_rows()
    text = render_terminal(rows)
    assert "n/a" not in text
    headers, grid, notes = table_view(rows)
    marks = [cells[-1] for cells in grid]
    assert notes == ["1. delta: limited run (--limit 1000); published over the full set",
                     "2. delta: published under inc protocol, full set",
                     "3. images/s: from the resume cache, as measured when its images were inferred",
                     "4. delta: int8 on x86-avx2; published on x86-vnni"]
    delta = headers.index("delta")
    by_row = {(cells[0], cells[2]): (cells[delta], mark) for cells, mark in zip(grid, marks)}
    assert by_row[("ssd-10", "limit 1000")] == ("", "1")
    assert by_row[("ssd-12", "ci-500")] == ("", "2,3") and by_row[("ssd-12-int8", "ci-500")] == ("", "2,3")
    assert by_row[("ssd-12", "full set")] == ("+0.0000", "3")
    assert by_row[("ssd-12-int8", "full set")] == ("+0.0000", "4,3")  # a qualified number keeps its number
    assert text.endswith("\n".join(notes) + "\n")


def test_rows_go_by_variant_protocol_image_set_not_by_folder_name(tmp_path):
    """Issue 25: sorted by folder, oracle-noisy/ came before oracle/ (and oracle@ci-500/ after both)."""
    documents = {
        "oracle-noisy": metrics_document("oracle-noisy", mAP=0.39),
        "oracle@limit50": metrics_document("oracle", mAP=0.41, images=50),
        "oracle@limit100": metrics_document("oracle", mAP=0.42, images=100),
        "oracle@ci-500": on_subset(metrics_document("oracle", mAP=0.4, images=500)),
        "oracle-inc": metrics_document("oracle", mAP=0.38, protocol="inc"),
        "oracle": metrics_document("oracle", mAP=0.4),
        "oracle@own": metrics_document("oracle", mAP=0.9, images=200),
    }
    documents["oracle@limit50"]["provenance"]["limit"] = 50
    documents["oracle@limit100"]["provenance"]["limit"] = 100
    documents["oracle@own"]["provenance"]["overridden"] = ["dataset.annotations", "dataset.images"]
    for folder, document in documents.items():
        write_metrics(tmp_path, document, folder)
    rows = build_rows(load_results(tmp_path, include_partial=True))
    assert [(r["variant"], r["protocol"], r["image_set"]) for r in rows] == [
        ("oracle", "coco", "full set"), ("oracle", "coco", "ci-500"), ("oracle", "coco", "limit 50"),
        ("oracle", "coco", "limit 100"), ("oracle", "coco", "own annotations"), ("oracle", "inc", "full set"),
        ("oracle-noisy", "coco", "full set")]


def test_image_set_names_subset_limit_and_own_data_together():
    from ssd_eval.results.index import image_set

    document = metrics_document("x", mAP=0.1)
    assert image_set(document) == "full set"
    on_subset(document, "ci-500")
    document["provenance"]["limit"] = 20
    assert image_set(document) == "ci-500, limit 20"
    document["provenance"]["overridden"] = ["dataset.images"]
    assert image_set(document) == "own images, ci-500, limit 20"
    document["provenance"].update(overridden=["model.path", "dataset.annotations"], subset=None, limit=None)
    assert image_set(document) == "own annotations"
