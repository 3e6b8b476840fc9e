"""The command line: bad input gives one clear line and exit 2, with nothing partial left behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ssd_eval.cli import main

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
    model = fixed_detector(tmp_path / "model.onnx", [[10 / 120, 10 / 80, 60 / 120, 50 / 80]], [2], [0.8])
    config = tmp_path / "config.yaml"
    config.write_text(
        f"variant: tiny\nmodel:\n  path: {model}\ndataset:\n  annotations: {annotations}\n  images: {images}\n"
        f"output:\n  dir: {tmp_path / 'out'}\npipeline:\n  workers: 1\n")
    return {"root": tmp_path, "config": config, "annotations": annotations, "images": images, "model": model,
            "out": tmp_path / "out"}


def assert_clean_failure(result: subprocess.CompletedProcess, *needles: str, out: Path | None = None) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
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
    model = fixed_detector(small_set["root"] / "nan.onnx", [[float("nan")] * 4], [2], [0.8])
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
    from ssd_eval import results

    full_disk(monkeypatch, results)
    line = eval_in_process(small_set, capsys)
    assert f"{small_set['out'] / 'detections.json'}: cannot write: No space left on device" in line
    assert not list(small_set["out"].glob(".*.tmp"))
