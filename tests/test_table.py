"""Tests for ssd_eval.table: like-with-like comparisons, rendering, atomic files."""

from __future__ import annotations

import copy
import csv
import io

import pytest

from ssd_eval.errors import UserError
from ssd_eval.results import load_results
from ssd_eval.table import (
    build_rows,
    render_csv,
    render_markdown,
    render_terminal,
    write_table,
)

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


def test_no_published_map_says_so():
    data = int8()
    data["published_map"] = None
    row = row_of(build_rows([data]), "ssd-12-int8")
    assert row["published_map"] == ""
    assert row["delta"] == "n/a: no published mAP"


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
    assert row_of(build_rows([limited]), "ssd-12-int8")["delta"] == "n/a: no published mAP"


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
    assert list(records[0]) == ["variant", "protocol", "images", "map", "published_map", "delta",
                                "drop_pct", "images_per_s", "speedup", "provider", "int8_path", "date",
                                "model_sha256"]
    assert records[0]["variant"] == "ssd-12" and records[0]["map"] == "0.1898"
    assert records[1]["drop_pct"] == "n/a: protocol inc vs coco"
    assert records[1]["images_per_s"] == "6.98"


def test_markdown_content():
    text = render_markdown(build_rows([fp32(**REFERENCE_FULL), int8(**REFERENCE_FULL)]))
    lines = text.splitlines()
    assert lines[0].startswith("| variant | protocol | images | mAP | published mAP | delta |")
    assert set(lines[1]) <= {"|", "-"}
    assert lines[3].startswith("| ssd-12-int8 | inc | 4952 | 0.1892 | 0.1892 | +0.0000 | 0.32 |")
    assert "3.49x" in lines[3]
    assert len(lines) == 4


def test_markdown_escapes_pipes():
    data = fp32(protocol="custom(a|b)")
    assert "custom(a\\|b)" in render_markdown(build_rows([data]))


def test_hostile_variant_names_stay_on_one_row_and_are_not_formulas():
    """Issue 13, item 15: a newline cannot break TABLE.md; =cmd does not run as a formula in table.csv."""
    rows = build_rows([metrics_document("evil\n| x |\n=cmd", mAP=0.2), metrics_document("=HYPERLINK(1)", mAP=0.1),
                       metrics_document("-x", mAP=0.3, published=0.4, protocol="inc", images=4952)])
    lines = render_markdown(rows).splitlines()
    assert len(lines) == 5 and lines[2].startswith("| evil \\| x \\| =cmd | coco |")
    records = list(csv.reader(io.StringIO(render_csv(rows))))
    assert [r[0] for r in records[1:]] == ["evil | x | =cmd", "'=HYPERLINK(1)", "'-x"]
    assert records[3][5] == "-0.1000"  # numbers keep their sign
    assert len(render_terminal(rows).splitlines()) == 5


def test_terminal_table_is_aligned():
    text = render_terminal(build_rows([fp32(), int8()]))
    lines = text.splitlines()
    assert lines[0].startswith("variant")
    start = lines[0].index("protocol")
    assert all(line[start:].startswith(("protocol", "coco", "-")) for line in lines)


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
    assert "ssd-12-int8" in out and "3.49x" in out


def test_write_table_quiet_prints_nothing(tmp_path, capsys):
    write_metrics(tmp_path, fp32())
    write_table(tmp_path, quiet=True)
    assert capsys.readouterr().out == ""


def test_table_links_report_pictures_beside_it(tmp_path):
    write_metrics(tmp_path, fp32())
    for name in ("pr_iou50.png", "pr_iou75.png", "ap_delta_ssd-12-int8.png"):
        (tmp_path / name).write_bytes(b"\x89PNG")
    write_table(tmp_path, quiet=True)
    table_md = (tmp_path / "TABLE.md").read_text()
    for name in ("pr_iou50.png", "pr_iou75.png", "ap_delta_ssd-12-int8.png"):
        assert f"]({name})" in table_md


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
