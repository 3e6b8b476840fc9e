"""The command line: bad input gives one clear line and exit 2, with nothing partial left behind."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ssd_eval.cli import main
from ssd_eval.scoring.cocoeval import STAT_NAMES

from conftest import run_cli
from faults import full_disk
from helpers import fixed_detector, write_coco

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_set(tmp_path):
    """A two-image COCO set, a working fixed-output model and a config that uses them."""
    annotations, images = write_coco(
        tmp_path / "set",
        [{"id": 1, "width": 120, "height": 80}, {"id": 2, "width": 90, "height": 90, "mode": "L"}],
        [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 40]}])
    model = fixed_detector(tmp_path / "model.onnx", [[10 / 120, 10 / 80, 60 / 120, 50 / 80]], [3], [0.8])
    config = tmp_path / "config.yaml"
    config.write_text(
        f"variant: tiny\nmodel:\n  path: {model}\ndataset:\n  annotations: {annotations}\n  images: {images}\n"
        f"output:\n  dir: {tmp_path / 'out'}\npipeline:\n  workers: 1\n")
    return {"root": tmp_path, "config": config, "annotations": annotations, "images": images, "model": model,
            "out": tmp_path / "out"}


def assert_clean_failure(result: subprocess.CompletedProcess, *needles: str, out: Path | None = None) -> None:
    assert result.returncode == 2, result.stderr
    # Progress lines ("tiny: 2 images to run, ...") and a partial run's warning may come first (both once
    # the inputs are checked); the failure itself is one line.
    lines = [line for line in result.stderr.strip().splitlines()
             if line.startswith("ssd-eval:") and not line.startswith("ssd-eval: WARNING: partial run (")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ssd-eval: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
    if out is not None:
        assert not (out / "metrics.json").exists()
        assert not (out / "detections.json").exists()
        assert not list(out.glob(".*.tmp")) if out.exists() else True


def test_eval_succeeds_and_prints_the_table(small_set):
    result = run_cli("eval", "--config", str(small_set["config"]))
    assert result.returncode == 0, result.stderr
    assert "mAP" in result.stdout and "tiny" in result.stdout
    assert (small_set["out"] / "metrics.json").is_file()


def test_malformed_yaml(small_set):
    small_set["config"].write_text("variant: [unclosed\nmodel: {path: x}\n")
    result = run_cli("eval", "--config", str(small_set["config"]))
    assert_clean_failure(result, str(small_set["config"]), "malformed YAML", "line")


def test_unknown_key(small_set):
    text = small_set["config"].read_text().replace("  workers: 1", "  wrokers: 1")
    small_set["config"].write_text(text)
    result = run_cli("eval", "--config", str(small_set["config"]))
    assert_clean_failure(result, str(small_set["config"]), "pipeline.wrokers", "workers", out=small_set["out"])


def test_unknown_key_in_set_option(small_set):
    result = run_cli("eval", "--config", str(small_set["config"]), "--set", "runtime.thread=2")
    assert_clean_failure(result, "runtime.thread", out=small_set["out"])


def test_missing_model(small_set):
    result = run_cli("eval", "--config", str(small_set["config"]), "--model", str(small_set["root"] / "nope.onnx"))
    assert_clean_failure(result, "nope.onnx", "model.path", out=small_set["out"])


def test_model_with_wrong_outputs(small_set):
    model = fixed_detector(small_set["root"] / "odd.onnx", [[0, 0, 1, 1]], [1], [0.5],
                           output_names=("b", "c", "d"))
    result = run_cli("eval", "--config", str(small_set["config"]), "--model", str(model))
    assert_clean_failure(result, "odd.onnx", "['b', 'c', 'd']", "model.boxes_output", out=small_set["out"])


def test_not_an_onnx_file(small_set):
    bogus = small_set["root"] / "bogus.onnx"
    bogus.write_bytes(b"this is not a model")
    result = run_cli("eval", "--config", str(small_set["config"]), "--model", str(bogus))
    assert_clean_failure(result, "bogus.onnx", out=small_set["out"])


def test_missing_image(small_set):
    (small_set["images"] / "000000000002.jpg").unlink()
    result = run_cli("eval", "--config", str(small_set["config"]))
    assert_clean_failure(result, "000000000002.jpg", "not found", out=small_set["out"])


def test_corrupt_jpeg(small_set):
    image = small_set["images"] / "000000000001.jpg"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 3])
    result = run_cli("eval", "--config", str(small_set["config"]))
    assert_clean_failure(result, "000000000001.jpg", out=small_set["out"])


def test_corrupt_jpeg_can_be_skipped_and_is_counted(small_set):
    image = small_set["images"] / "000000000002.jpg"
    image.write_bytes(b"\xff\xd8 garbage")
    result = run_cli("eval", "--config", str(small_set["config"]), "--set", "dataset.on_bad_image=skip")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((small_set["out"] / "metrics.json").read_text())
    assert metrics["provenance"]["images"] == 1
    assert [s["image_id"] for s in metrics["provenance"]["skipped_images"]] == [2]


def test_annotation_file_that_is_not_coco(small_set):
    small_set["annotations"].write_text('{"images": [], "licenses": []}')
    result = run_cli("eval", "--config", str(small_set["config"]))
    assert_clean_failure(result, str(small_set["annotations"]), "not a COCO annotation file", out=small_set["out"])


def test_missing_config_file(tmp_path):
    result = run_cli("eval", "--config", str(tmp_path / "none.yaml"))
    assert_clean_failure(result, "none.yaml", "not found")


def test_wrong_type(small_set):
    result = run_cli("eval", "--config", str(small_set["config"]), "--set", "runtime.batch_size=two")
    assert_clean_failure(result, "runtime.batch_size", "integer", out=small_set["out"])


def test_real_variant_offline_says_what_to_download(tmp_path):
    # No data/models here: the error names the file, the URL and the make target.
    result = run_cli("eval", "--config", str(REPO / "configs" / "ssd-12-int8.yaml"),
                     "--set", f"model.path={tmp_path / 'ssd-12-int8.onnx'}", "--out", str(tmp_path / "out"))
    assert_clean_failure(result, "ssd-12-int8.onnx", "https://github.com/onnx/models", "make models")


def test_main_returns_exit_code_in_process(small_set, capsys):
    assert main(["eval", "--config", str(small_set["config"]), "--no-progress"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["eval", "--config", str(small_set["root"] / "missing.yaml")]) == 2


# ---------------------------------------------------------------- issue 13: one line and exit 2, before inference

def eval_in_process(small_set, capsys, *args: str) -> str:
    """Run `ssd-eval eval` on the small set in this process; assert exit 2 and one error line; return it."""
    status = main(["eval", "--config", str(small_set["config"]), "--no-progress", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert len(err) == 1 and err[0].startswith("ssd-eval: error: "), err
    return err[0]


@pytest.mark.parametrize("key, value, needle", [
    ("area", None, "area must be a finite number >= 0, got None"),
    ("area", "big", "area must be a finite number >= 0, got 'big'"),
    ("iscrowd", None, "iscrowd must be 0 or 1, got None"),
    ("category_id", 2, "category_id 2 is not in 'categories'"),
])
def test_bad_annotation_values_fail_before_inference(small_set, capsys, key, value, needle):
    """Items 5 and 13: pycocotools used to raise these only after the whole inference."""
    data = json.loads(small_set["annotations"].read_text())
    data["annotations"][0][key] = value
    small_set["annotations"].write_text(json.dumps(data))
    line = eval_in_process(small_set, capsys)
    assert str(small_set["annotations"]) in line and needle in line
    assert not small_set["out"].exists() or not (small_set["out"] / "cache.jsonl").exists()


def test_deeply_nested_annotations_are_one_line(small_set, capsys):
    small_set["annotations"].write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "nested too deeply" in eval_in_process(small_set, capsys)


def test_model_with_nan_boxes_is_refused(small_set, capsys):
    """Item 2: NaN boxes used to match every ground truth box (mAP 0.75 on a 4-image set)."""
    model = fixed_detector(small_set["root"] / "nan.onnx", [[float("nan")] * 4], [3], [0.8])
    line = eval_in_process(small_set, capsys, "--model", str(model))
    assert f"{model}: output 'bboxes' holds NaN or Inf" in line
    assert not (small_set["out"] / "metrics.json").exists()


def test_absurd_thread_count_is_refused(small_set, capsys):
    line = eval_in_process(small_set, capsys, "--set", "runtime.intra_op_threads=100000")
    assert "runtime.intra_op_threads: 100000 must be between 0" in line


def test_fifo_named_like_an_image_does_not_hang(small_set, capsys):
    """Item 14: the pool would block for ever opening a FIFO."""
    image = small_set["images"] / "000000000002.jpg"
    image.unlink()
    os.mkfifo(image)
    assert f"{image}: not a regular file (image id 2)" in eval_in_process(small_set, capsys)


def test_disk_full_names_the_file(small_set, capsys, monkeypatch):
    """Item 15: ENOSPC while writing the results names the path, and leaves no temp file."""
    from ssd_eval import utils

    full_disk(monkeypatch, utils)
    line = eval_in_process(small_set, capsys)
    assert f"{small_set['out'] / 'detections.json'}: cannot write: No space left on device" in line
    assert not list(small_set["out"].glob(".*.tmp"))


# ---------------------------------------------------------------- issue 11: partial runs, failed runs, summaries

def sample_config_into(tmp_path: Path, variant: str = "sample") -> Path:
    """A config extending configs/<variant>.yaml that writes to tmp_path/results/{run} (as `make eval` would
    write to results/{run}); the sample's data paths stay relative to the repository (run_cli's cwd)."""
    config = tmp_path / f"{variant}.yaml"
    parent = REPO / "configs" / f"{variant}.yaml"
    config.write_text(f"extends: {parent}\noutput:\n  dir: {tmp_path / 'results'}/{{run}}\n")
    return config


def test_limit_and_model_runs_never_replace_the_full_result(tmp_path):
    """Issue 11: `eval --limit 3` overwrote results/sample/ (the 8-image result) and broke the table and gate."""
    config, results = sample_config_into(tmp_path), tmp_path / "results"
    full = run_cli("eval", "--config", str(config))
    assert full.returncode == 0, full.stderr
    canonical = (results / "sample" / "metrics.json").read_bytes()

    limited = run_cli("eval", "--config", str(config), "--limit", "3")
    assert limited.returncode == 0, limited.stderr
    [warning] = [line for line in limited.stderr.splitlines() if "partial run" in line]
    assert warning.startswith("ssd-eval: WARNING: partial run (limit 3): results go to ")
    assert f"{results / 'sample@limit3'}/" in warning and f"not to {results / 'sample'}/" in warning
    assert (results / "sample" / "metrics.json").read_bytes() == canonical
    partial = json.loads((results / "sample@limit3" / "metrics.json").read_text())
    assert partial["provenance"]["images"] == 3 and partial["provenance"]["partial"] == ["limit3"]

    other_model = REPO / "data" / "sample" / "models" / "sample-int8.onnx"
    swapped = run_cli("eval", "--config", str(config), "--model", str(other_model))
    assert swapped.returncode == 0, swapped.stderr
    folder = results / f"sample@model-{hashlib.sha256(other_model.read_bytes()).hexdigest()[:12]}"
    assert json.loads((folder / "metrics.json").read_text())["provenance"]["model"]["path"] == str(other_model)
    assert (results / "sample" / "metrics.json").read_bytes() == canonical

    # --out still wins, and the same model named another way is no override.
    mine = run_cli("eval", "--config", str(config), "--limit", "2", "--out", str(tmp_path / "mine"),
                   "--model", "./data/sample/models/sample.onnx")
    assert mine.returncode == 0, mine.stderr
    assert json.loads((tmp_path / "mine" / "metrics.json").read_text())["provenance"]["partial"] == ["limit2"]
    assert sorted(p.name for p in results.iterdir()) == ["sample", "sample@limit3", folder.name]

    # The table and the gate read the full run only.
    table = run_cli("table", "--results", str(results))
    assert table.returncode == 0, table.stderr
    rows = list(csv.DictReader(io.StringIO((results / "table.csv").read_text())))
    assert [(r["variant"], r["images"]) for r in rows] == [("sample", "8")]
    gate = run_cli("gate", "--results", str(results), "--variant", "sample")
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_a_failed_run_leaves_no_empty_results_folder(tmp_path):
    """Issue 11: `make eval MODEL=ssd-12` offline left an empty results/ssd-12/ behind."""
    offline = run_cli("eval", "--config", str(REPO / "configs" / "ssd-12.yaml"), cwd=tmp_path)
    assert offline.returncode == 2 and "make models" in offline.stderr
    assert not (tmp_path / "results").exists()


def test_a_run_failing_at_its_first_image_removes_the_folder_it_made(small_set):
    model = fixed_detector(small_set["root"] / "nan.onnx", [[float("nan")] * 4], [3], [0.8])
    failed = run_cli("eval", "--config", str(small_set["config"]), "--model", str(model))
    assert_clean_failure(failed, "holds NaN or Inf")
    assert not small_set["out"].exists()


def test_a_failed_run_keeps_a_folder_that_was_there_and_finished_images(small_set):
    small_set["out"].mkdir()
    (small_set["out"] / "notes.txt").write_text("mine")
    model = fixed_detector(small_set["root"] / "nan.onnx", [[float("nan")] * 4], [3], [0.8])
    assert run_cli("eval", "--config", str(small_set["config"]), "--model", str(model)).returncode == 2
    assert sorted(p.name for p in small_set["out"].iterdir()) == ["notes.txt"]  # the header-only cache went
    shutil.rmtree(small_set["out"])
    image = small_set["images"] / "000000000002.jpg"
    image.write_bytes(image.read_bytes()[:100])  # image 1 is inferred, then image 2 fails: resume keeps image 1
    assert run_cli("eval", "--config", str(small_set["config"])).returncode == 2
    lines = (small_set["out"] / "cache.jsonl").read_text().splitlines()
    assert [json.loads(line)["image_id"] for line in lines[1:]] == [1]


def stat_lines(text: str) -> dict[str, float]:
    """The summary's stat table: {name: value} from lines like 'mAP    0.5316  AP  0.50:0.95  all  100' ('n/a': -1)."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in STAT_NAMES and parts[0] not in found:
            found[parts[0]] = -1.0 if parts[1] == "n/a" else float(parts[1])  # n/a: pycocotools' -1
    return found


def category_lines(text: str) -> list[tuple[str, float]]:
    """The summary's per-category table: [(name, AP)] from lines like '1     fire hydrant  0.4545'."""
    rows = [re.fullmatch(r"(\d+)\s+(\S.*?)\s+(\d\.\d{4})(?:\s+\d+)?", line) for line in text.splitlines()]
    return [(row[2], float(row[3])) for row in rows if row]


def test_eval_summary_shows_the_12_stats_and_per_category_ap_of_metrics_json(small_set):
    run = run_cli("eval", "--config", str(small_set["config"]))
    assert run.returncode == 0, run.stderr
    metrics = json.loads((small_set["out"] / "metrics.json").read_text())
    assert stat_lines(run.stdout) == {name: round(metrics[name], 4) for name in STAT_NAMES}
    ranked = [(name, round(ap, 4)) for name, ap in sorted(metrics["per_category_ap"].items(),
                                                          key=lambda item: (-item[1], item[0])) if ap >= 0]
    assert category_lines(run.stdout) == ranked
    no_truth = sorted(name for name, ap in metrics["per_category_ap"].items() if ap < 0)
    assert f"no ground truth in these images: {len(no_truth)} categories ({', '.join(no_truth)})" in run.stdout
    # each category's ground-truth boxes (issue 25), as metrics.json counts them
    assert metrics["per_category_gt"]["car"] == 1
    assert re.search(r"^1\s+car\s+\d\.\d{4}\s+1$", run.stdout, re.M)
    # `show` prints any result the same way, from metrics.json alone, and then its error breakdown (issue 25)
    shown = run_cli("show", str(small_set["out"] / "metrics.json"))
    assert shown.returncode == 0, shown.stderr
    summary, results_line = run.stdout.rstrip("\n").rsplit("\n", 1)
    if "error_breakdown" in metrics:
        assert shown.stdout.startswith(summary + "\n\nerror breakdown (TIDE, IoU 0.5; AP50 ")
        assert shown.stdout.endswith("\n" + results_line + "\n") and "error breakdown" not in run.stdout
    else:
        assert shown.stdout == run.stdout
    assert f"harness {metrics['provenance']['harness_commit'][:12]}" in shown.stdout
    assert run_cli("show", str(small_set["out"])).stdout == shown.stdout  # the folder works too
    # --summary line: one line
    line = run_cli("eval", "--config", str(small_set["config"]), "--summary", "line", "--no-progress")
    assert line.returncode == 0, line.stderr
    assert line.stdout == f"tiny  coco  full set  2 images  mAP {metrics['mAP']:.4f}" + line.stdout.split(
        f"{metrics['mAP']:.4f}", 1)[1] and line.stdout.count("\n") == 1
    assert line.stdout.endswith(f"-> {small_set['out'] / 'metrics.json'}\n") and "images to run" not in line.stderr


def test_table_all_shows_every_column_and_the_default_view_fits_120(small_set):
    from ssd_eval.reports.table_render import COLUMNS

    assert run_cli("eval", "--config", str(small_set["config"]), "--no-progress").returncode == 0
    results = str(small_set["out"].parent)
    default = run_cli("table", "--results", results)
    everything = run_cli("table", "--results", results, "--all")
    assert default.returncode == everything.returncode == 0, default.stderr + everything.stderr
    assert max(len(line) for line in default.stdout.splitlines()) <= 120
    assert "speedup" not in default.stdout and all(header in everything.stdout for _, header in COLUMNS)
    assert "| speedup |" in (small_set["out"].parent / "TABLE.md").read_text()  # TABLE.md: the view asked for


def test_show_of_a_missing_or_malformed_file_is_one_line(tmp_path):
    assert_clean_failure(run_cli("show", str(tmp_path / "metrics.json")), "no such file")
    (tmp_path / "metrics.json").write_text("{}")
    assert_clean_failure(run_cli("show", str(tmp_path / "metrics.json")), "schema")


def test_progress_start_and_scoring_lines_in_logs(small_set):
    run = run_cli("eval", "--config", str(small_set["config"]))  # stderr is a pipe: a log
    assert run.returncode == 0, run.stderr
    detections = json.loads((small_set["out"] / "metrics.json").read_text())["provenance"]["detections"]
    lines = run.stderr.splitlines()
    assert lines[0] == (f"tiny: 2 images to run, 0 from the cache; CPUExecutionProvider; threads intra 0 inter 0 "
                        f"(0: onnxruntime default); batch 1; decode workers 1 (thread); protocol coco; "
                        f"writing to {small_set['out']}")
    assert lines[1] == f"tiny: scoring {detections} detections of 2 images with pycocotools"
    assert re.fullmatch(r"tiny: scored in \d+\.\d\d s", lines[2])
    quiet = run_cli("eval", "--config", str(small_set["config"]), "--no-progress")
    assert "images to run" not in quiet.stderr and "scoring" not in quiet.stderr


@pytest.mark.slow
def test_a_rerun_from_the_cache_keeps_images_per_s_and_the_speedup(tmp_path):
    """Issue 11: a second `make eval` took every image from the cache and erased images/s and the speedup."""
    results = tmp_path / "results"
    configs = [sample_config_into(tmp_path, variant) for variant in ("sample", "sample-int8")]

    def make_eval() -> tuple[dict, list[dict]]:
        for config in configs:
            run = run_cli("eval", "--config", str(config))
            assert run.returncode == 0, run.stderr
        assert run_cli("table", "--results", str(results)).returncode == 0
        metrics = {v: json.loads((results / v / "metrics.json").read_text()) for v in ("sample", "sample-int8")}
        return metrics, list(csv.DictReader(io.StringIO((results / "table.csv").read_text())))

    first, first_rows = make_eval()
    second, second_rows = make_eval()
    for variant in ("sample", "sample-int8"):
        before, after = first[variant]["provenance"], second[variant]["provenance"]
        assert before["speed_from_cache"] is False and after["speed_from_cache"] is True
        assert after["resumed_images"] == after["images"] == 8
        assert after["images_per_s"] == before["images_per_s"] > 0
    speedup = second["sample-int8"]["provenance"]["images_per_s"] / second["sample"]["provenance"]["images_per_s"]
    assert [r["speedup"] for r in second_rows] == [r["speedup"] for r in first_rows] == ["", f"{speedup:.2f}"]
    assert [r["images_per_s_note"] for r in second_rows] == ["cached", "cached"]
    assert "(from the cache: measured when these images were inferred)" in run_cli(
        "show", str(results / "sample")).stdout


@pytest.mark.parametrize("path", [".ci/run", "docs/ci-example.yml"])
def test_the_documented_ci_paths_call_the_gate_cli_directly(path):
    """Issue 21: make turns every failing recipe into exit 2, so CI calls `ssd-eval gate` and reads 1 vs 2 itself."""
    from conftest import ROOT

    commands = [line.strip() for line in (ROOT / path).read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert not [line for line in commands if "make gate" in line or "make ci-gate" in line]
    assert [line for line in commands if ".venv/bin/ssd-eval gate" in line]
    assert "|| rc=$?" in "\n".join(commands) and "case $rc in" in "\n".join(commands)  # 1 and 2 told apart
