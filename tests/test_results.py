"""Tests for ssd_eval.results.result: metrics.json both ways (to_document / from_document), the terminal summary,
a short repr, and partial runs left out of the table's and the gate's lookups."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from ssd_eval.errors import UserError
from ssd_eval.results.index import ResultIndex, is_partial, load_results
from ssd_eval.results.result import EvalResult, read_metrics_file, write_result
from ssd_eval.results.summary import render_result, render_result_line
from ssd_eval.scoring.cocoeval import STAT_NAMES, Scores

from helpers import metrics_document, write_metrics

CATEGORY_NAMES = [f"class {i:02d}" for i in range(20)]


def many_categories() -> dict[str, float]:
    """20 categories with distinct APs (class 00: 0.00, ..., class 17: 0.85) and two without ground truth."""
    aps = {name: round(0.05 * i, 2) for i, name in enumerate(CATEGORY_NAMES[:18])}
    aps.update({"class 18": -1.0, "class 19": -1.0})
    return aps


def document(**kw) -> dict:
    data = metrics_document("ssd-12-int8", mAP=0.1892, parent="ssd-12", published=0.1892,
                            per_category=many_categories(), **kw)
    data.update(categories_averaged=CATEGORY_NAMES, warnings=[], intervals=None, source_map=None,
                published_int8_path=None)
    data["provenance"]["harness_commit"] = "0123456789abcdef0123456789abcdef01234567+dirty"
    return data


def test_to_document_from_document_round_trip(tmp_path):
    scores = Scores(stats=[0.5, 0.7, 0.6, 0.1, 0.4, 0.7, 0.45, 0.55, 0.58, 0.2, 0.5, 0.8],
                    per_category_ap={"person": 0.6, "car": -1.0}, pr_curves={"recall": [0.0, 1.0], "iou50": [1, 0.5],
                                                                            "iou75": [0.9, 0.1]},
                    warnings=["w"], categories_averaged=["person", "car"])
    result = EvalResult(variant="v", protocol="inc", protocol_switches={"clip_boxes": False}, scores=scores,
                        provenance={"images": 8, "date": "2026-11-25"}, parent="p", published_map=0.19,
                        published_protocol="inc", source_map=0.1958, published_int8_path="x86-vnni",
                        intervals={"mAP": {"low": 0.4, "high": 0.6, "level": 0.95}})
    first = result.to_document()
    again = EvalResult.from_document(json.loads(json.dumps(first)))
    assert again.to_document() == first
    write_result(result, tmp_path)  # the file write_result leaves reads back the same
    assert EvalResult.from_document(json.loads((tmp_path / "metrics.json").read_text())).to_document() == first


def test_from_document_of_a_read_metrics_file_keeps_every_field_and_where_it_lies(tmp_path):
    path = write_metrics(tmp_path, document())
    data = read_metrics_file(path)
    result = EvalResult.from_document(data)
    assert result.out_dir == path.parent and result.files["metrics"] == path
    rewritten = result.to_document()
    assert rewritten == {key: value for key, value in data.items() if key != "_source"}


def test_repr_is_short():
    data = document()
    result = EvalResult.from_document(data, out_dir="results/ssd-12-int8")
    text = repr(result)
    assert len(text) < 300
    assert text == ("EvalResult(variant='ssd-12-int8', protocol='coco', images=5000, mAP=0.1892, "
                    "out_dir='results/ssd-12-int8')")


def test_summary_numbers_equal_the_documents(tmp_path):
    data = document()
    text = render_result(EvalResult.from_document(data))
    for name in STAT_NAMES:
        [line] = [line for line in text.splitlines() if line.split()[:1] == [name]]
        assert float(line.split()[1]) == round(data[name], 4), name
    # the top 5 and bottom 5 categories with ground truth, best first, with their ranks
    rows = [re.fullmatch(r"(\d+)\s+(\S.*?)\s+(\d\.\d{4})", line) for line in text.splitlines()]
    shown = [(int(r[1]), r[2], float(r[3])) for r in rows if r]
    ranked = sorted(((name, ap) for name, ap in data["per_category_ap"].items() if ap >= 0),
                    key=lambda item: (-item[1], item[0]))
    expected = [(rank, name, ap) for rank, (name, ap) in enumerate(ranked, start=1)]
    assert shown == expected[:5] + expected[-5:]
    assert "(8 more)" in text
    assert "no ground truth in these images: 2 categories (class 18, class 19)" in text
    assert "harness 0123456789ab+dirty" in text
    # --all: every category
    every = render_result(EvalResult.from_document(data), all_categories=True)
    assert len([line for line in every.splitlines() if re.fullmatch(r"\d+\s+\S.*\s+\d\.\d{4}", line)]) == 18


def test_summary_says_when_speed_came_from_the_cache_and_when_a_run_was_partial():
    data = document()
    data["provenance"].update(speed_from_cache=True, images_per_s=6.98, partial=["limit3"])
    text = render_result(EvalResult.from_document(data))
    assert "6.98 images/s (from the cache: measured when these images were inferred)" in text
    assert "partial run (limit3): for testing, not the variant's result" in text


def test_summary_under_inc_says_areas_are_not_comparable():
    text = render_result(EvalResult.from_document(document(protocol="inc")))
    assert "APs/APm/APl: INC computes areas from normalized boxes" in text


def partial(document_: dict, parts: list[str]) -> dict:
    document_["provenance"]["partial"] = parts
    return document_


def test_partial_runs_are_left_out_of_the_table_but_not_a_full_run_in_any_folder(tmp_path, caplog):
    write_metrics(tmp_path, metrics_document("sample", mAP=0.5, images=8))
    write_metrics(tmp_path, partial(metrics_document("sample", mAP=0.6, images=3), ["limit3"]), "sample@limit3")
    write_metrics(tmp_path, metrics_document("sample", mAP=0.5, images=8), "mine")
    with caplog.at_level(logging.INFO):
        results = load_results(tmp_path)
    assert [r["_source"].split("/")[-2] for r in results] == ["mine", "sample"]
    assert "leaving out 1 partial runs" in caplog.text and "sample@limit3" in caplog.text
    assert len(load_results(tmp_path, include_partial=True)) == 3
    assert is_partial(load_results(tmp_path, include_partial=True)[2])


def test_a_partial_run_in_the_canonical_folder_is_kept(tmp_path):
    """Only --out can put a partial run there; the table shows it (and the gate checks it) as before."""
    write_metrics(tmp_path, partial(metrics_document("sample", mAP=0.5, images=3), ["limit3"]))
    assert len(load_results(tmp_path)) == 1


def test_the_gate_never_takes_a_partial_run_for_the_variants_result(tmp_path):
    write_metrics(tmp_path, partial(metrics_document("sample", mAP=0.6, images=3), ["limit3"]), "sample@limit3")
    index = ResultIndex(tmp_path)
    with pytest.raises(UserError, match=r"sample/metrics.json: missing"):
        index.find("sample", "coco", "baselined variant sample")
    assert index.protocols("sample") == []
    write_metrics(tmp_path, metrics_document("sample", mAP=0.5, images=8))
    found, note = ResultIndex(tmp_path).find("sample", "coco", "baselined variant sample")
    assert found["mAP"] == 0.5 and note is None


def test_a_subset_runs_full_set_intervals_round_trip_and_show(tmp_path):
    data = document()
    data["full_set_intervals"] = {"mAP": {"low": 0.2051, "high": 0.2193, "level": 0.95, "replicates": 1000, "seed": 0,
                                          "estimate": 0.2121, "method": "full-set", "bias": 0.035,
                                          "full_set_images": 5000, "alpha": 0.64}}
    result = EvalResult.from_document(read_metrics_file(write_metrics(tmp_path, data)))
    assert result.full_set_intervals == data["full_set_intervals"]
    assert result.to_document()["full_set_intervals"] == data["full_set_intervals"]
    assert ("full set (5000 images), estimated from this subset: mAP 0.2121 [0.2051, 0.2193] (95 %; the subset's "
            "upward bias extrapolated)") in render_result(result)
    plain = EvalResult.from_document(document())
    assert "full_set_intervals" not in plain.to_document() and "full set (" not in render_result(plain)


def test_iter_detections_reads_back_what_write_detections_wrote_one_at_a_time(tmp_path):
    from ssd_eval.results.result import iter_detections, write_detections

    rows = [{"image_id": i, "category_id": 1, "bbox": [1.5, 2.0, 3.0, 4.25], "score": 0.5 + i / 10} for i in range(3)]
    write_detections(tmp_path / "d.json", rows)
    read = iter_detections(tmp_path / "d.json")
    assert next(read) == rows[0] and list(read) == rows[1:]
    write_detections(tmp_path / "none.json", [])
    assert list(iter_detections(tmp_path / "none.json")) == []
    (tmp_path / "other.json").write_text(json.dumps(rows))  # another layout: read whole
    assert list(iter_detections(tmp_path / "other.json")) == rows


# --------------------------------------------------------------------------- malformed fields (issue 21)

def full_document() -> dict:
    """A metrics.json with every field the table, the gate, the report and `show` read, each of the right type."""
    data = metrics_document("sample", mAP=0.5)
    interval = {"low": 0.4, "high": 0.6, "level": 0.95, "replicates": 100, "seed": 0, "estimate": 0.5,
                "method": "percentile", "bias": 0.0}
    data.update(categories_averaged=["person", "car"], warnings=[], intervals={"mAP": interval, "AP50": None},
                per_category_gt={"person": 12, "car": 3, "toaster": 0},
                full_set_intervals={"mAP": dict(interval, full_set_images=5000, alpha=0.5)}, error_breakdown=None)
    provenance = data["provenance"]
    provenance["model"]["quantization"] = "none"
    provenance.update(partial=[], subset={"name": None}, speed_from_cache=False, parallel_jobs=1,
                      harness_commit="a" * 40, bootstrap={"replicates": 100, "seed": 0},
                      int8={"cpu": {"kernel_class": "x86-vnni", "cpu": "Xeon"}},
                      config={"preprocess": {}, "postprocess": {}, "pipeline": {}, "runtime": {}})
    provenance["runtime"]["session_config"] = {}
    return data


def _bad_value(kind: str):
    return {"str": 5, "number": "x", "int": "x", "bool": "yes", "dict": ["a"], "list": "a", "str_list": [1],
            "number_list": ["a"], "number_map": {"a": "b"}, "number_list_map": {"recall": "x"},
            "interval_map": "0.1008 ± 0.0204"}[kind]


READ_FIELDS = (
    # Every metrics.json field the gate, the table, the report or `show` reads, with its kind: written out here,
    # not taken from ssd_eval.results.result, so a field the reader stops checking still has its case.
    ("variant", "str"), ("protocol", "str"), ("mAP", "number"), ("provenance.images", "int"),
    ("provenance.image_ids_sha256", "str"), ("provenance.annotations.sha256", "str"),
    ("provenance.model.sha256", "str"), ("provenance.runtime.providers", "str_list"), ("provenance.host.cpu", "str"),
    ("provenance.host.cores", "int"), ("provenance.date", "str"), ("parent", "str"), ("published_map", "number"),
    ("published_protocol", "str"), ("source_map", "number"), ("published_int8_path", "str"),
    ("provenance.images_per_s", "number"), ("provenance.runtime.intra_op_threads", "int"),
    ("provenance.runtime.inter_op_threads", "int"), ("provenance.runtime.batch_size", "int"),
    ("provenance.resumed_images", "int"), ("provenance.limit", "int"), ("provenance.subset.name", "str"),
    ("stats", "number_list"), ("protocol_switches", "dict"), ("categories_averaged", "list"),
    ("per_category_ap", "number_map"), ("per_category_gt", "number_map"), ("pr_curves", "number_list_map"),
    ("warnings", "list"),
    ("intervals", "interval_map"), ("full_set_intervals", "interval_map"), ("error_breakdown", "dict"),
    ("provenance.model.path", "str"), ("provenance.model.quantization", "str"), ("provenance.annotations.path", "str"),
    ("provenance.images_dir", "str"), ("provenance.detections", "int"), ("provenance.skipped_images", "list"),
    ("provenance.partial", "list"), ("provenance.subset", "dict"), ("provenance.speed_from_cache", "bool"),
    ("provenance.parallel_jobs", "int"), ("provenance.harness_commit", "str"), ("provenance.metrics_backend", "str"),
    ("provenance.config", "dict"), ("provenance.config.preprocess", "dict"), ("provenance.config.postprocess", "dict"),
    ("provenance.config.pipeline", "dict"), ("provenance.config.runtime", "dict"), ("provenance.bootstrap", "dict"),
    ("provenance.bootstrap.replicates", "int"), ("provenance.bootstrap.seed", "int"),
    ("provenance.runtime.onnxruntime", "str"), ("provenance.runtime.session_config", "dict"),
    ("provenance.int8", "dict"), ("provenance.int8.cpu", "dict"), ("provenance.int8.cpu.kernel_class", "str"),
)


def _malformed_cases() -> list[tuple[str, object]]:
    cases = [(key, _bad_value(kind)) for key, kind in READ_FIELDS]
    cases += [("intervals", {"mAP": {"low": "0.4", "high": 0.6, "level": 0.95, "replicates": 100, "seed": 0,
                                     "estimate": 0.5}}),
              ("intervals", {"mAP": {"low": 0.4, "high": 0.6, "level": 0.95, "replicates": 1.5, "seed": 0,
                                     "estimate": 0.5}}),
              ("pr_curves", {"recall": [0.0, "x"]}), ("provenance.config.preprocess", ["mean", "std"]),
              ("AP50", "0.3"), ("mAP", None)]
    return cases


def test_the_readers_check_every_field_listed_here():
    """READ_FIELDS and what read_metrics_file checks are the same list (a new field needs a case here)."""
    from ssd_eval.results.result import _OPTIONAL_KEYS, _REQUIRED_KEYS

    assert sorted(_REQUIRED_KEYS + _OPTIONAL_KEYS) == sorted(READ_FIELDS)


def _set_dotted(data: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data[part]
    data[last] = value


def reader_setup(tmp_path) -> tuple[Path, dict[str, list[str]]]:
    """full_document() written as results/sample/metrics.json beside a baseline of it; each reader's command line."""
    results, baselines = tmp_path / "results", tmp_path / "baselines"
    baselines.mkdir()
    (baselines / "sample.yaml").write_text("variant: sample\nprotocol: coco\nimages: 5000\nmetrics:\n"
                                           "  mAP: {expected: 0.5, abs_tol: 0.002, rel_tol: null}\n")
    path = write_metrics(results, full_document())
    return path, {"gate": ["gate", "--baselines", str(baselines), "--results", str(results), "--configs",
                           str(tmp_path)],
                  "table": ["table", "--results", str(results)], "show": ["show", str(path)],
                  "report": ["report", "--results", str(results)]}


def test_every_reader_takes_the_full_document(tmp_path, capsys):
    from ssd_eval.cli import main

    _, commands = reader_setup(tmp_path)
    assert [main(args) for args in commands.values()] == [0, 0, 0, 0]


@pytest.mark.parametrize("command", ["gate", "table", "show", "report"])
@pytest.mark.parametrize("key, value", _malformed_cases(),
                         ids=[f"{key}={type(value).__name__}" for key, value in _malformed_cases()])
def test_each_malformed_field_a_reader_touches_is_one_line_and_exit_2(tmp_path, capsys, command, key, value):
    """Issue 21: every metrics.json field the gate, the table, the report or `show` reads, of a wrong type, gives
    exit 2 and one line naming the file and the key (not an AttributeError read by CI as "regressed")."""
    from ssd_eval.cli import main

    path, commands = reader_setup(tmp_path)
    bad = json.loads(path.read_text())
    _set_dotted(bad, key, value)
    path.write_text(json.dumps(bad))
    assert main(commands[command]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert str(path) in line and (key in line or key.split(".")[-1] in line), line


# --------------------------------------------------------------------------- issue 25: summaries

def with_breakdown(data: dict) -> dict:
    data["error_breakdown"] = {"method": "TIDE via hotcoco", "iou": 0.5, "background_iou": 0.1, "ap50": 0.3406,
                               "dAP": {"classification": 0.0012, "localization": 0.18, "both": 0.005,
                                       "duplicate": 0.0, "background": 0.05, "missed": 0.1},
                               "counts": {"classification": 6, "localization": 31, "both": 2, "duplicate": 0,
                                          "background": 179, "missed": 3},
                               "oracles": {"all_false_positives": 0.08, "all_false_negatives": 0.26}}
    return data


def test_summary_prints_pycocotools_minus_one_as_n_a_without_an_interval():
    data = document()
    data["stats"][3] = data["APs"] = -1.0  # no small ground truth
    data["intervals"] = {"APs": {"low": -1.0, "high": -1.0, "level": 0.95, "replicates": 10, "seed": 0,
                                 "estimate": -1.0}, "mAP": {"low": 0.17, "high": 0.21, "level": 0.95,
                                                            "replicates": 10, "seed": 0, "estimate": 0.1892}}
    lines = render_result(EvalResult.from_document(data)).splitlines()
    [aps] = [line for line in lines if line.startswith("APs ")]
    assert aps.split() == ["APs", "n/a", "AP", "0.50:0.95", "small", "100"]
    assert "-1.0000" not in "\n".join(lines)
    [map_line] = [line for line in lines if line.startswith("mAP ")]
    assert map_line.endswith("[0.1700, 0.2100]")


def test_the_per_category_table_gives_each_categorys_ground_truth_boxes_where_metrics_json_has_them():
    data = document()
    data["per_category_gt"] = {name: 10 + i for i, name in enumerate(CATEGORY_NAMES)}
    text = render_result(EvalResult.from_document(data), all_categories=True)
    assert "rank  category  AP      gt boxes" in text
    assert re.search(r"^1\s+class 17\s+0\.8500\s+27$", text, re.M)  # class 17: the best, 10 + 17 boxes
    assert re.search(r"^18\s+class 00\s+0\.0000\s+10$", text, re.M)
    top = render_result(EvalResult.from_document(data))  # the "(8 more)" row keeps the columns
    assert re.search(r"^\.\.\.\s+\(8 more\)$", top, re.M)
    older = render_result(EvalResult.from_document(document()), all_categories=True)  # no counts: no column
    assert "gt boxes" not in older and "rank  category  AP\n" in older


def test_show_summary_prints_the_error_breakdown_when_there_is_one():
    plain = render_result(EvalResult.from_document(with_breakdown(document())))
    assert "error breakdown" not in plain  # eval's summary: unchanged
    text = render_result(EvalResult.from_document(with_breakdown(document())), error_breakdown=True)
    tail = text.split("\n\n")[-1].splitlines()
    assert tail[0] == "error breakdown (TIDE, IoU 0.5; AP50 0.3406): AP50 recovered if each error were fixed"
    assert tail[3].split() == ["classification", "0.0012", "6"] and tail[8].split() == ["missed", "0.1000", "3"]
    assert tail[-1] == "dAP50 with no false positive at all 0.0800, with no missed box 0.2600"
    assert "error breakdown" not in render_result(EvalResult.from_document(document()), error_breakdown=True)


def test_the_one_line_summary_names_the_run_its_image_set_map_speed_and_file(tmp_path):
    data = document()
    data["provenance"]["subset"] = {"name": "ci-500", "images": 500}
    data["provenance"]["images"] = 500
    data["intervals"] = {"mAP": {"low": 0.1711, "high": 0.2085, "level": 0.95, "replicates": 10, "seed": 0,
                                 "estimate": 0.1892}}
    data["warnings"] = ["w1", "w2"]
    path = write_metrics(tmp_path, data)
    line = render_result_line(EvalResult.from_document(read_metrics_file(path)))
    assert line == (f"ssd-12-int8  coco  ci-500  500 images  mAP 0.1892 [0.1711, 0.2085]  10.00 images/s  "
                    f"2 warnings (ssd-eval show)  -> {path}")
    data.update(intervals=None, warnings=[])
    data["provenance"].update(images_per_s=None, subset=None)
    assert render_result_line(EvalResult.from_document(data)) == "ssd-12-int8  coco  full set  500 images  mAP 0.1892"
