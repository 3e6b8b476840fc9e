"""End to end on the embedded sample: every variant, resume after kill -9, shards, cache keys, providers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ssd_eval
from ssd_eval.config.load import load_config
from ssd_eval.engine.pipeline import evaluate
from ssd_eval.engine.shards import merge_shards
from ssd_eval.errors import UserError
from ssd_eval.scoring.cocoeval import STAT_NAMES
from ssd_eval.utils import sha256_of

from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SAMPLE_CONFIGS = ["sample", "sample-int8", "sample-qdq"]


def sample_config(name: str, out: Path, *overrides):
    return load_config(REPO / "configs" / f"{name}.yaml",
                       [("dataset.annotations", str(SAMPLE / "annotations.json")),
                        ("dataset.images", str(SAMPLE / "images")),
                        ("model.path", str(SAMPLE / "models" / f"{name}.onnx")),
                        ("output.dir", str(out)), *overrides])


@pytest.mark.parametrize("name", SAMPLE_CONFIGS)
def test_cli_eval_on_each_sample_variant(tmp_path, name):
    out = tmp_path / name
    result = run_cli("eval", "--config", f"configs/{name}.yaml", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert name in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["variant"] == name
    assert metrics["protocol"] == "coco"
    assert len(metrics["stats"]) == 12
    assert [metrics[n] for n in STAT_NAMES] == metrics["stats"]
    assert 0.0 < metrics["mAP"] < 1.0
    annotations = json.loads((SAMPLE / "annotations.json").read_text())
    assert set(metrics["per_category_ap"]) == {c["name"] for c in annotations["categories"]}
    provenance = metrics["provenance"]
    model = SAMPLE / "models" / f"{name}.onnx"
    assert provenance["model"]["sha256"] == sha256_of(model)
    assert provenance["annotations"]["sha256"] == sha256_of(SAMPLE / "annotations.json")
    assert provenance["images"] == len(annotations["images"])
    assert provenance["config"]["variant"] == name
    assert len(provenance["config_sha256"]) == 64
    assert provenance["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert provenance["runtime"]["onnxruntime"]
    assert provenance["versions"]["pycocotools"]
    assert provenance["wall_time_s"] > 0 and provenance["images_per_s"] > 0
    assert provenance["date"].startswith("20")
    detections = json.loads((out / "detections.json").read_text())
    assert provenance["detections"] == len(detections)
    assert metrics["parent"] == (None if name == "sample" else "sample")

    # Anyone can re-score detections.json with plain pycocotools and get the same numbers.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco = COCO(str(SAMPLE / "annotations.json"))
    evaluator = COCOeval(coco, coco.loadRes(str(out / "detections.json")), "bbox")
    evaluator.params.imgIds = sorted(coco.getImgIds())
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert metrics["stats"] == pytest.approx(list(evaluator.stats), abs=1e-12)


def test_label_map_matters_on_the_sample(tmp_path):
    good = evaluate(sample_config("sample", tmp_path / "good"), progress=False)
    detections = json.loads((tmp_path / "good" / "detections.json").read_text())
    assert any(d["category_id"] > 12 for d in detections)  # ids past the first gap (12 does not exist)
    assert good.map > 0.2


def test_python_api_accepts_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    result = ssd_eval.evaluate(sample_config("sample", tmp_path / "api"))
    assert result.files["metrics"].is_file()
    assert result.map == json.loads(result.files["metrics"].read_text())["mAP"]


def test_python_api_accepts_a_dict_that_extends_a_config_file(tmp_path, monkeypatch):
    """Issue 11: `evaluate({'extends': ...})` failed with `unknown key 'extends'`; repr was 9 kB of np.float64."""
    monkeypatch.chdir(REPO)
    result = ssd_eval.evaluate({"extends": "configs/sample.yaml", "output": {"dir": str(tmp_path / "{run}")},
                                "pipeline": {"workers": 1}})
    metrics = json.loads((tmp_path / "sample" / "metrics.json").read_text())
    assert result.map == metrics["mAP"] and metrics["provenance"]["config_file"] == "configs/sample.yaml"
    assert metrics["provenance"]["partial"] == [] and metrics["provenance"]["images"] == 8
    text = repr(result)
    assert len(text) < 300
    assert text == (f"EvalResult(variant='sample', protocol='coco', images=8, mAP={metrics['mAP']:.4f}, "
                    f"out_dir='{tmp_path / 'sample'}')")
    with pytest.raises(UserError, match="extends 'configs/none.yaml': config file not found"):
        ssd_eval.evaluate({"extends": "configs/none.yaml"})


def comparable(metrics: dict) -> dict:
    """metrics.json without the fields that legitimately differ between two runs."""
    provenance = metrics["provenance"]
    return {
        "scores": [metrics[n] for n in ("stats", "per_category_ap", "pr_curves")],
        "model": provenance["model"]["sha256"],
        "images": provenance["images"],
        "ids": provenance["image_ids_sha256"],
        "detections": provenance["detections"],
    }


def bigger_set(root: Path, copies: int) -> tuple[Path, Path]:
    """The sample's images repeated under new ids, for runs long enough to interrupt."""
    source = json.loads((SAMPLE / "annotations.json").read_text())
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for copy_index in range(copies):
        for image in source["images"]:
            new_id = copy_index * 100000 + image["id"]
            name = f"{new_id:012d}.jpg"
            shutil.copy(SAMPLE / "images" / image["file_name"], images_dir / name)
            images.append(dict(image, id=new_id, file_name=name))
        for ann in source["annotations"]:
            annotations.append(dict(ann, id=copy_index * 100000 + ann["id"],
                                    image_id=copy_index * 100000 + ann["image_id"]))
    path = root / "annotations.json"
    path.write_text(json.dumps(dict(source, images=images, annotations=annotations)))
    return path, images_dir


@pytest.mark.slow
def test_kill_9_then_resume_gives_identical_results(tmp_path):
    annotations, images = bigger_set(tmp_path / "set", copies=8)
    total = len(json.loads(annotations.read_text())["images"])
    common = ["eval", "--config", "configs/sample.yaml", "--annotations", str(annotations), "--images", str(images),
              "--set", "pipeline.workers=1", "--no-progress"]
    out = tmp_path / "resumed"
    process = subprocess.Popen([sys.executable, "-m", "ssd_eval", *common, "--out", str(out)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / "cache.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if cache.exists() and cache.read_bytes().count(b"\n") >= 6:
            break
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    done_before = cache.read_bytes().count(b"\n") - 1
    assert 5 <= done_before < total, "the run must be interrupted part-way"

    resumed = run_cli(*common, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    fresh = run_cli(*common, "--out", str(tmp_path / "uninterrupted"))
    assert fresh.returncode == 0, fresh.stderr

    resumed_metrics = json.loads((out / "metrics.json").read_text())
    fresh_metrics = json.loads((tmp_path / "uninterrupted" / "metrics.json").read_text())
    assert resumed_metrics["provenance"]["resumed_images"] >= done_before
    assert comparable(resumed_metrics) == comparable(fresh_metrics)
    assert (out / "detections.json").read_bytes() == (tmp_path / "uninterrupted" / "detections.json").read_bytes()
    ids = [json.loads(line)["image_id"] for line in cache.read_text().splitlines()[1:]]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == total  # no duplicate, no missing image


def test_shards_merge_to_the_single_run(tmp_path):
    single = evaluate(sample_config("sample", tmp_path / "single"), progress=False)
    shard_dirs = []
    for index in (1, 2, 3):
        evaluate(sample_config("sample", tmp_path / "split"), shard=(index, 3), progress=False)
        shard_dirs.append(tmp_path / "split" / f"shard-{index}-of-3")
    parts = [json.loads((d / "shard.json").read_text())["image_ids"] for d in shard_dirs]
    assert all(parts) and sorted(sum(parts, [])) == sorted(set(sum(parts, [])))
    merged = merge_shards(shard_dirs, tmp_path / "merged")
    assert merged.scores.stats == single.scores.stats
    assert merged.scores.per_category_ap == single.scores.per_category_ap
    assert merged.provenance["shards"] == ["1/3", "2/3", "3/3"]
    assert (tmp_path / "merged" / "detections.json").read_bytes() == \
        (tmp_path / "single" / "detections.json").read_bytes()

    with pytest.raises(UserError, match="more than once"):
        merge_shards([shard_dirs[0], shard_dirs[0], shard_dirs[1]], tmp_path / "bad")
    with pytest.raises(UserError, match="3/3 is missing"):
        merge_shards(shard_dirs[:2], tmp_path / "bad")
    other = sample_config("sample", tmp_path / "other", ("postprocess.max_detections", 5))
    evaluate(other, shard=(3, 3), progress=False)
    with pytest.raises(UserError, match="different model, annotation file or config"):
        merge_shards(shard_dirs[:2] + [tmp_path / "other" / "shard-3-of-3"], tmp_path / "bad")
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_merge_through_the_cli(tmp_path):
    for index in (1, 2):
        result = run_cli("eval", "--config", "configs/sample.yaml", "--out", str(tmp_path / "r"), "--shard",
                         f"{index}/2")
        assert result.returncode == 0, result.stderr
    result = run_cli("merge", str(tmp_path / "r" / "shard-1-of-2"), str(tmp_path / "r" / "shard-2-of-2"),
                     "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["provenance"]["shards"] == ["1/2", "2/2"]


def test_cache_from_another_model_or_preprocessing_is_refused(tmp_path):
    out = tmp_path / "out"
    evaluate(sample_config("sample", out), progress=False)
    with pytest.raises(UserError, match="--fresh") as error:
        evaluate(sample_config("sample", out, ("model.path", str(SAMPLE / "models" / "sample-int8.onnx"))),
                 progress=False)
    assert "model_sha256" in str(error.value)
    with pytest.raises(UserError, match="preprocess_sha256"):
        evaluate(sample_config("sample", out, ("preprocess.mean", [0.5, 0.5, 0.5])), progress=False)
    again = evaluate(sample_config("sample", out, ("preprocess.mean", [0.5, 0.5, 0.5])), fresh=True,
                     progress=False)
    assert again.provenance["resumed_images"] == 0


def test_second_run_reuses_every_image(tmp_path):
    first = evaluate(sample_config("sample", tmp_path / "out"), progress=False)
    second = evaluate(sample_config("sample", tmp_path / "out"), progress=False)
    assert second.provenance["resumed_images"] == second.provenance["images"]
    assert second.scores.stats == first.scores.stats


def test_a_run_served_from_the_cache_keeps_the_speed_measured_at_inference(tmp_path):
    first = evaluate(sample_config("sample", tmp_path / "out"), progress=False)
    lines = [json.loads(line) for line in (tmp_path / "out" / "cache.jsonl").read_text().splitlines()[1:]]
    loop = sum(line["loop_s"] for line in lines)  # what the cache recorded, image by image
    assert first.provenance["images_per_s"] == round(8 / loop, 3) and first.provenance["speed_from_cache"] is False
    second = evaluate(sample_config("sample", tmp_path / "out"), progress=False)
    assert second.provenance["speed_from_cache"] is True
    assert second.provenance["images_per_s"] == first.provenance["images_per_s"]
    assert second.provenance["inference_time_s"] == round(sum(line["inference_s"] for line in lines), 3)
    # a run that infers some images and takes the others from the cache times only those it inferred
    partly = evaluate(sample_config("sample", tmp_path / "part", ("dataset.limit", 5)), progress=False)
    rest = evaluate(sample_config("sample", tmp_path / "part"), progress=False)
    assert partly.provenance["speed_from_cache"] is False and rest.provenance["speed_from_cache"] is False
    assert rest.provenance["resumed_images"] == 5


def test_missing_cuda_falls_back_to_cpu_and_says_so(tmp_path, caplog):
    config = sample_config("sample", tmp_path / "out",
                           ("runtime.providers", ["CUDAExecutionProvider", "CPUExecutionProvider"]))
    result = evaluate(config, progress=False)
    if "CUDAExecutionProvider" in result.provenance["runtime"]["providers"]:
        pytest.skip("CUDA is available here")
    assert "CUDAExecutionProvider is not available" in caplog.text
    assert result.provenance["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert result.provenance["runtime"]["providers_requested"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_batch_of_two_equals_batch_of_one_on_a_dynamic_batch_model(tmp_path):
    from ssd_eval.testing.sample import build_detector
    from ssd_eval.testing.synthetic import write_model

    model = write_model(build_detector(dynamic_batch=True), tmp_path / "dynamic.onnx")
    one = evaluate(sample_config("sample", tmp_path / "one", ("model.path", str(model))), progress=False)
    two = evaluate(sample_config("sample", tmp_path / "two", ("model.path", str(model)),
                                 ("runtime.batch_size", 2)), progress=False)
    assert two.scores.stats == one.scores.stats
    assert two.provenance["runtime"]["batch_size"] == 2


def test_batch_of_two_on_a_fixed_batch_model_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="batch dimension is fixed"):
        evaluate(sample_config("sample", tmp_path / "out", ("runtime.batch_size", 2)), progress=False)


def test_process_pool_gives_the_same_result_as_threads(tmp_path):
    threads = evaluate(sample_config("sample", tmp_path / "t"), progress=False)
    processes = evaluate(sample_config("sample", tmp_path / "p", ("pipeline.mode", "process"),
                                       ("pipeline.workers", 2)), progress=False)
    assert processes.scores.stats == threads.scores.stats


def test_inc_protocol_switches_are_recorded(tmp_path):
    result = evaluate(sample_config("sample", tmp_path / "ref", ("protocol", "inc")), progress=False)
    metrics = json.loads(result.files["metrics"].read_text())
    assert metrics["protocol"] == "inc"
    assert metrics["protocol_switches"] == {
        "resize_backend": "opencv", "skip_images_without_annotations": True, "crowd_as_ground_truth": True,
        "max_detections": "all", "score_threshold": 0.0, "clip_boxes": False, "keep_inverted_boxes": True,
        "exclude_categories": ["stop sign", "umbrella", "suitcase", "frisbee", "spoon", "remote", "cell phone",
                               "microwave", "toaster"]}
    assert len(metrics["categories_averaged"]) == 71
    assert "stop sign" not in metrics["categories_averaged"] and "stop sign" not in metrics["per_category_ap"]
    annotations = json.loads((SAMPLE / "annotations.json").read_text())
    annotated = {a["image_id"] for a in annotations["annotations"]}
    assert metrics["provenance"]["images"] == len(annotated) < len(annotations["images"])


def test_limit_takes_the_first_ids(tmp_path):
    result = evaluate(sample_config("sample", tmp_path / "lim", ("dataset.limit", 3)), progress=False)
    annotations = json.loads((SAMPLE / "annotations.json").read_text())
    first_three = sorted(i["id"] for i in annotations["images"])[:3]
    detections = json.loads((tmp_path / "lim" / "detections.json").read_text())
    assert {d["image_id"] for d in detections} <= set(first_three)
    assert result.provenance["images"] == 3


def test_resize_backend_switch_changes_the_model_input_and_is_recorded(tmp_path):
    pytest.importorskip("cv2")
    pil = evaluate(sample_config("sample", tmp_path / "pil"), progress=False)
    opencv = evaluate(sample_config("sample", tmp_path / "cv", ("preprocess.resize_backend", "opencv")),
                      progress=False)
    assert pil.protocol_switches["resize_backend"] == "pil"
    assert opencv.protocol == "coco+resize_backend=opencv"
    pil_scores = [d["score"] for d in json.loads((tmp_path / "pil" / "detections.json").read_text())]
    cv_scores = [d["score"] for d in json.loads((tmp_path / "cv" / "detections.json").read_text())]
    assert len(pil_scores) == len(cv_scores) and pil_scores != cv_scores
    assert opencv.scores.stats[0] == pytest.approx(pil.scores.stats[0], abs=0.05)  # same objects found


def test_more_shards_than_images_still_merge(tmp_path):
    single = evaluate(sample_config("sample", tmp_path / "single", ("dataset.limit", 2)), progress=False)
    dirs = []
    for index in (1, 2, 3):
        evaluate(sample_config("sample", tmp_path / "split", ("dataset.limit", 2)), shard=(index, 3), progress=False)
        dirs.append(tmp_path / "split" / f"shard-{index}-of-3")
    assert json.loads((dirs[0] / "shard.json").read_text())["image_ids"] == []  # 2 images, 3 shards
    merged = merge_shards(dirs, tmp_path / "merged")
    assert merged.scores.stats == single.scores.stats


def test_merge_accepts_the_same_model_at_another_path_and_names_real_differences(tmp_path):
    copy = tmp_path / "elsewhere.onnx"
    shutil.copy(SAMPLE / "models" / "sample.onnx", copy)
    evaluate(sample_config("sample", tmp_path / "a"), shard=(1, 2), progress=False)
    other = sample_config("sample", tmp_path / "b", ("model.path", str(copy)), ("metrics.backend", "hotcoco"))
    evaluate(other, shard=(2, 2), progress=False)
    merge_shards([tmp_path / "a" / "shard-1-of-2", tmp_path / "b" / "shard-2-of-2"], tmp_path / "m")
    evaluate(sample_config("sample", tmp_path / "c", ("postprocess.max_detections", 7)), shard=(2, 2),
             progress=False)
    with pytest.raises(UserError, match="postprocess.max_detections 100 vs 7"):
        merge_shards([tmp_path / "a" / "shard-1-of-2", tmp_path / "c" / "shard-2-of-2"], tmp_path / "m2")


def test_merge_rejects_a_malformed_manifest(tmp_path):
    evaluate(sample_config("sample", tmp_path / "a"), shard=(1, 2), progress=False)
    bad = tmp_path / "a" / "shard-1-of-2"
    (bad / "shard.json").write_text('{"shard": [1, 3]}')
    with pytest.raises(UserError, match="not a shard manifest"):
        merge_shards([bad], tmp_path / "m")


def test_output_directory_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="output directory is a file"):
        evaluate(sample_config("sample", blocker), progress=False)
    with pytest.raises(UserError, match="output directory is a file"):
        evaluate(sample_config("sample", blocker / "sub"), progress=False)


def test_cache_is_not_reused_for_other_images(tmp_path):
    out = tmp_path / "out"
    evaluate(sample_config("sample", out), progress=False)
    images = tmp_path / "images"
    shutil.copytree(SAMPLE / "images", images)
    with pytest.raises(UserError, match="images_dir"):
        evaluate(sample_config("sample", out, ("dataset.images", str(images))), progress=False)


def test_progress_lines_for_logs():
    import io

    from ssd_eval.engine.progress import ProgressLines

    now = [0.0]
    out = io.StringIO()
    with ProgressLines(100, "ssd-12", every_s=120, clock=lambda: now[0], stream=out) as progress:
        for _ in range(100):
            now[0] += 2.0  # 0.5 img/s
            progress.update(1)
    lines = out.getvalue().splitlines()
    assert lines == ["ssd-12: 5/100 images (5 %), 0.50 img/s, about 3m10s left",  # early: 10 s (and 5 %)
                     "ssd-12: 65/100 images (65 %), 0.50 img/s, about 1m10s left",  # 120 s later
                     "ssd-12: 100/100 images (100 %), 0.50 img/s, about 0m00s left"]  # the end (200 s)


@pytest.mark.parametrize("seconds_per_image, every_s, first_lines", [
    (0.5, 120, ["20/1000", "260/1000"]),  # 10 s come before 5 % (image 50 at 25 s); then every 120 s
    (0.1, 120, ["50/1000", "1000/1000"]),  # 5 % (5 s) comes before 10 s; the next is the end (100 s)
    (0.5, 30, ["20/1000", "80/1000", "140/1000"]),  # pipeline.progress_interval_s: 30
])
def test_the_first_progress_line_comes_after_10_s_or_5_percent(seconds_per_image, every_s, first_lines):
    import io

    from ssd_eval.engine.progress import ProgressLines

    now = [0.0]
    out = io.StringIO()
    progress = ProgressLines(1000, "v", every_s=every_s, clock=lambda: now[0], stream=out)
    for _ in range(1000):
        now[0] += seconds_per_image
        progress.update(1)
    done = [line.split()[1] for line in out.getvalue().splitlines()]
    assert done[:len(first_lines)] == first_lines


def test_short_runs_print_no_progress_lines():
    import io

    from ssd_eval.engine.progress import ProgressLines

    out = io.StringIO()
    with ProgressLines(3, "sample", clock=lambda: 0.0, stream=out) as progress:
        progress.update(3)
    assert out.getvalue() == ""


# ---------------------------------------------------------------- issue 13: trusting shards, stale results, workers

def two_shards(tmp_path: Path) -> list[Path]:
    for index in (1, 2):
        evaluate(sample_config("sample", tmp_path / "split"), shard=(index, 2), progress=False)
    return [tmp_path / "split" / f"shard-{index}-of-2" for index in (1, 2)]


def test_merge_refuses_a_shard_whose_detections_do_not_match_its_manifest(tmp_path):
    """Item 6: detections.json is pinned by its shard's manifest (sha256, count, image ids)."""
    first, second = two_shards(tmp_path)
    manifest = json.loads((first / "shard.json").read_text())
    assert manifest["detections_file"]["count"] == len(json.loads((first / "detections.json").read_text()))
    shutil.copy(second / "detections.json", first / "detections.json")
    with pytest.raises(UserError, match=r"shard-1-of-2/detections.json: is not the file .* \(sha256 differs\)"):
        merge_shards([first, second], tmp_path / "merged")
    copied = json.loads((first / "detections.json").read_text())
    manifest["detections_file"] = {"count": len(copied), "sha256": sha256_of(first / "detections.json")}
    (first / "shard.json").write_text(json.dumps(manifest))  # the manifest edited to match the copy
    with pytest.raises(UserError, match=rf"holds detections of image {copied[0]['image_id']}, which is not one of"):
        merge_shards([first, second], tmp_path / "merged")
    manifest["detections_file"]["count"] += 1
    (first / "shard.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=rf"holds {len(copied)} detections but .* records {len(copied) + 1}"):
        merge_shards([first, second], tmp_path / "merged")
    assert not (tmp_path / "merged" / "metrics.json").exists()


@pytest.mark.parametrize("name, content", [
    ("detections.json", b"\xff\xfe"),
    ("detections.json", b"[" * 100_000 + b"]" * 100_000),
    ("shard.json", b'{"shard": [1, 2], "image_ids": ["a"]}'),
], ids=["utf8", "nested", "types"])
def test_merge_of_malformed_shard_files_is_one_line(tmp_path, name, content):
    """Item 13: no UnicodeDecodeError, RecursionError, TypeError or KeyError escapes."""
    first, second = two_shards(tmp_path)
    (first / name).write_bytes(content)
    with pytest.raises(UserError, match=str(first)):
        merge_shards([first, second], tmp_path / "merged")


def test_a_fresh_run_removes_old_results_before_inference(tmp_path):
    """Items 9 and 15: a failed --fresh rerun leaves nothing for the gate; stale temp files go."""
    out = tmp_path / "out"
    evaluate(sample_config("sample", out), progress=False)
    (out / ".metrics.json.k9x2.tmp").write_text("{")  # left by a kill -9 during a write
    evaluate(sample_config("sample", out), progress=False)  # resumed: results stay, temp files go
    assert (out / "metrics.json").is_file() and not list(out.glob(".*.tmp"))
    images = tmp_path / "images"
    shutil.copytree(SAMPLE / "images", images)
    victim = sorted(images.iterdir())[-1]
    victim.write_bytes(victim.read_bytes()[:100])  # fails part-way through inference
    with pytest.raises(UserError, match=str(victim)):
        evaluate(sample_config("sample", out, ("dataset.images", str(images))), fresh=True, progress=False)
    assert not (out / "metrics.json").exists() and not (out / "detections.json").exists()


def test_overwritten_images_are_evaluated_again_and_scored_right(tmp_path):
    """Item 3 (b): images overwritten in place (same size, same mtime) are not served from the cache."""
    from PIL import Image, ImageOps

    from faults import swap_bytes

    images = tmp_path / "images"
    shutil.copytree(SAMPLE / "images", images)
    config = sample_config("sample", tmp_path / "out", ("dataset.images", str(images)))
    evaluate(config, progress=False)
    changed = sorted(images.iterdir())[::2]
    for path in changed:
        with Image.open(path) as image:
            ImageOps.mirror(image.convert("RGB")).save(tmp_path / "mirrored.jpg", quality=95)
        swap_bytes(path, (tmp_path / "mirrored.jpg").read_bytes())
    resumed = evaluate(config, progress=False)
    fresh = evaluate(sample_config("sample", tmp_path / "fresh", ("dataset.images", str(images))), progress=False)
    assert resumed.provenance["resumed_images"] == len(list(images.iterdir())) - len(changed)
    assert resumed.scores.stats == fresh.scores.stats
    assert (tmp_path / "out" / "detections.json").read_bytes() == (tmp_path / "fresh" / "detections.json").read_bytes()


@pytest.mark.slow
def test_process_workers_exit_when_the_parent_is_terminated(tmp_path):
    """SIGTERM to a pipeline.mode=process run leaves no worker holding the caller's stdout."""
    annotations, images = bigger_set(tmp_path / "set", copies=8)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "ssd_eval", "eval", "--config", "configs/sample.yaml", "--annotations",
         str(annotations), "--images", str(images), "--out", str(out), "--set", "pipeline.mode=process",
         "--set", "pipeline.workers=2", "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if (out / "cache.jsonl").exists() and (out / "cache.jsonl").read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.01)
        process.terminate()
        process.communicate(timeout=30)  # EOF on stdout and stderr: every worker has exited
        assert process.returncode == -signal.SIGTERM
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("pool workers outlived their parent")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


# ---------------------------------------------------------------- int8 capability and session config


def test_metrics_record_the_int8_capability_and_session_config(tmp_path):
    from ssd_eval.inference.cpu import detect_int8_capability

    result = evaluate(sample_config("sample-int8", tmp_path / "int8"), progress=False)
    provenance = json.loads(result.files["metrics"].read_text())["provenance"]
    assert provenance["int8"]["cpu"]["kernel_class"] == detect_int8_capability().kernel_class
    assert provenance["model"]["quantization"] == "QOperator"
    assert provenance["int8"]["saturation_risk"] is False  # the sample keeps int8 weights within [-64, 63]
    assert provenance["runtime"]["session_config"] == {}
    assert provenance["model"]["content_sha256"] == provenance["model"]["sha256"]  # no external data


@pytest.fixture
def avx2_risky_model(monkeypatch, tmp_path):
    """Make the run see an AVX2-only CPU and a model whose u8s8 weights use the full int8 range."""
    from ssd_eval.engine import pipeline
    from ssd_eval.inference import model_info
    from ssd_eval.inference.cpu import detect_int8_capability

    from helpers import int8_conv_model

    avx2 = detect_int8_capability("processor: 0\nmodel name: AMD EPYC\nflags: sse4_1 avx2\n", "x86_64")
    risky = model_info.inspect_model(int8_conv_model(tmp_path / "risky.onnx"), avx2)
    assert risky.can_saturate_here
    monkeypatch.setattr(pipeline.model_info, "inspect_model", lambda path, capability=None, sha256=None: risky)


def test_exact_int8_is_the_default_where_int8_can_saturate(tmp_path, avx2_risky_model, caplog):
    result = evaluate(sample_config("sample-int8", tmp_path / "exact"), progress=False)
    provenance = result.provenance
    assert provenance["runtime"]["session_config"] == {"session.x64quantprecision": "1"}
    assert provenance["int8"]["can_saturate_here"] is True and provenance["int8"]["warning"] is None
    assert "saturat" not in caplog.text


def test_native_int8_on_request_warns_and_records_it(tmp_path, avx2_risky_model, caplog):
    result = evaluate(sample_config("sample-int8", tmp_path / "native", ("runtime.exact_int8", False)),
                      progress=False)
    assert result.provenance["runtime"]["session_config"] == {}
    assert "saturat" in result.provenance["int8"]["warning"]
    assert "saturat" in caplog.text


def test_an_explicit_session_config_entry_wins(tmp_path, avx2_risky_model):
    result = evaluate(sample_config("sample-int8", tmp_path / "explicit",
                                    ("runtime.session_config", {"session.x64quantprecision": "0"})), progress=False)
    assert result.provenance["runtime"]["session_config"] == {"session.x64quantprecision": "0"}


def test_session_config_is_part_of_the_cache_key(tmp_path):
    evaluate(sample_config("sample", tmp_path / "run"), progress=False)
    with pytest.raises(UserError, match="different run"):
        evaluate(sample_config("sample", tmp_path / "run",
                               ("runtime.session_config", {"session.intra_op.allow_spinning": "0"})), progress=False)


def test_swapped_external_weights_are_not_served_from_the_cache(tmp_path):
    """The model's external data file is part of its identity: swapping it refuses the old cache."""
    import onnx
    from onnx import external_data_helper

    from helpers import fixed_detector

    def external(name, score):
        folder = tmp_path / name
        model = onnx.load(fixed_detector(folder / "inline.onnx", [[0.1, 0.1, 0.5, 0.5]], [1], [score]))
        external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True,
                                                            location="m.data", size_threshold=0)
        onnx.save(model, str(folder / "m.onnx"))
        return folder

    first, second = external("a", 0.9), external("b", 0.3)
    config = [("model.path", str(first / "m.onnx")), ("model.sha256", None)]
    evaluate(sample_config("sample", tmp_path / "out", *config), progress=False)
    (first / "m.data").write_bytes((second / "m.data").read_bytes())  # same .onnx bytes, other weights
    with pytest.raises(UserError, match="model"):
        evaluate(sample_config("sample", tmp_path / "out", *config), progress=False)
    fresh = evaluate(sample_config("sample", tmp_path / "out", *config), fresh=True, progress=False)
    assert fresh.provenance["model"]["content_sha256"] != fresh.provenance["model"]["sha256"]


# --------------------------------------------------------------------------- subsets and intervals (issue 14)

SAMPLE_4 = [285, 776, 802, 872]  # subsets/sample-4.json


def test_a_subset_run_scores_exactly_its_ids_and_records_subset_and_intervals(tmp_path):
    result = evaluate(sample_config("sample", tmp_path / "{run}", ("dataset.subset", "sample-4")), progress=False)
    assert result.out_dir == tmp_path / "sample@sample-4"
    metrics = json.loads((tmp_path / "sample@sample-4" / "metrics.json").read_text())
    provenance = metrics["provenance"]
    assert provenance["subset"] == {"name": "sample-4", "ids_sha256": json.loads(
        (REPO / "subsets" / "sample-4.json").read_text())["ids_sha256"], "images": 4,
                                     "algorithm": "stratified-greedy-l1/v1", "full_set_images": 8}
    assert provenance["images"] == 4
    assert {d["image_id"] for d in json.loads((result.out_dir / "detections.json").read_text())} <= set(SAMPLE_4)
    from ssd_eval.utils import hash_data

    assert provenance["image_ids_sha256"] == hash_data(SAMPLE_4)
    assert set(metrics["intervals"]) == {"mAP", "AP50", "AP75"}
    for name, interval in metrics["intervals"].items():
        assert interval["estimate"] == pytest.approx(metrics[name], abs=1e-12)
        assert (interval["replicates"], interval["seed"], interval["level"], interval["method"]) == \
            (1000, 0, 0.95, "percentile")
        assert interval["low"] <= interval["high"]
    assert provenance["bootstrap"]["replicates"] == 1000 and provenance["bootstrap"]["seed"] == 0
    full = evaluate(sample_config("sample", tmp_path / "{run}"), progress=False)
    assert full.out_dir == tmp_path / "sample" and full.provenance["subset"] is None
    assert full.provenance["images"] == 8


def test_bootstrap_is_off_with_zero_replicates_and_above_max_images(tmp_path):
    off = evaluate(sample_config("sample", tmp_path / "off", ("metrics.bootstrap.replicates", 0)), progress=False)
    assert off.intervals is None and "replicates is 0" in off.provenance["bootstrap"]["off"]
    assert json.loads((tmp_path / "off" / "metrics.json").read_text())["intervals"] is None
    big = evaluate(sample_config("sample", tmp_path / "big", ("metrics.bootstrap.max_images", 7)), progress=False)
    assert big.intervals is None and "8 images > metrics.bootstrap.max_images 7" in big.provenance["bootstrap"]["off"]
    seeded = evaluate(sample_config("sample", tmp_path / "seeded", ("metrics.bootstrap.seed", 3),
                                    ("metrics.bootstrap.replicates", 200), ("metrics.bootstrap.level", 0.9)),
                      progress=False)
    assert {(i["seed"], i["replicates"], i["level"]) for i in seeded.intervals.values()} == {(3, 200, 0.9)}


def test_a_run_of_exactly_max_images_gets_its_intervals(tmp_path):
    """The boundary itself (issue 23): the sample's 8 images against metrics.bootstrap.max_images 8."""
    exact = evaluate(sample_config("sample", tmp_path / "exact", ("metrics.bootstrap.max_images", 8)), progress=False)
    assert exact.provenance["images"] == 8 and "off" not in exact.provenance["bootstrap"]
    written = json.loads((tmp_path / "exact" / "metrics.json").read_text())
    assert set(written["intervals"]) == {"mAP", "AP50", "AP75"}
    assert written["intervals"]["mAP"]["estimate"] == pytest.approx(written["mAP"], abs=1e-12)


def test_shards_of_a_subset_merge_to_the_subset_run(tmp_path):
    subset = ("dataset.subset", "sample-4")
    single = evaluate(sample_config("sample", tmp_path / "single", subset), progress=False)
    shard_dirs = []
    for index in (1, 2):
        evaluate(sample_config("sample", tmp_path / "split", subset), shard=(index, 2), progress=False)
        shard_dirs.append(tmp_path / "split" / f"shard-{index}-of-2")
    parts = [json.loads((d / "shard.json").read_text())["image_ids"] for d in shard_dirs]
    assert sorted(sum(parts, [])) == SAMPLE_4
    merged = merge_shards(shard_dirs, tmp_path / "merged")
    assert merged.scores.stats == single.scores.stats
    assert merged.provenance["subset"] == single.provenance["subset"]
    assert merged.provenance["image_ids_sha256"] == single.provenance["image_ids_sha256"]
    assert merged.intervals == single.intervals


def test_subset_of_another_annotation_file_is_one_line_naming_the_subset_file(tmp_path):
    other = tmp_path / "annotations.json"
    data = json.loads((SAMPLE / "annotations.json").read_text())
    data["info"] = {"description": "edited"}
    other.write_text(json.dumps(data))
    result = run_cli("eval", "--config", "configs/sample.yaml", "--annotations", str(other), "--subset", "sample-4",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ssd-eval: error: ") and "subsets/sample-4.json" in error and "not this one" in error
    missing = run_cli("eval", "--config", "configs/sample.yaml", "--subset", "ci-nope", "--out", str(tmp_path / "o"))
    assert missing.returncode == 2 and "subsets/ci-nope.json: subset file not found" in missing.stderr
    both = run_cli("eval", "--config", "configs/sample.yaml", "--subset", "sample-4", "--limit", "2",
                   "--out", str(tmp_path / "o"))
    assert both.returncode == 2 and "dataset.limit" in both.stderr and "dataset.subset" in both.stderr


# --- how many preprocessed inputs are alive at once (issue 10): bounded by the prefetch depth and the batch

def small_input_run(tmp_path: Path, batch_size: int, prefetch: int):
    """A config with a small input size, the sample's records and a label map, for _run_images with fakes."""
    from ssd_eval.data import coco as data
    from ssd_eval.inference import postprocess

    config = sample_config("sample", tmp_path / "out", ("preprocess.input_size", [24, 40]),
                           ("runtime.batch_size", batch_size), ("pipeline.workers", 2),
                           ("pipeline.prefetch", prefetch))
    dataset = data.load_annotations(SAMPLE / "annotations.json", SAMPLE / "images")
    records = [dataset.images[i] for i in sorted(dataset.images)] * 3  # 24 images: the ring wraps around
    return config, records, postprocess.label_map(dataset.category_ids, config.postprocess.label_map)


class RecordingDetector:
    """Stands in for runner.Detector: checks every batch against ``check`` and returns no detections."""

    def __init__(self, check):
        self.check, self.inference_seconds, self.batches = check, 0.0, 0

    def run(self, batch):
        import numpy as np

        from ssd_eval.inference.runner import RawDetections

        self.check(batch)
        self.batches += 1
        return [RawDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))
                for _ in range(len(batch))]


class NullCache:
    def __init__(self):
        self.added = []

    def add(self, image_id, detections, **times):
        self.added.append(image_id)


def test_prefetch_keeps_no_reference_to_an_image_it_has_yielded():
    import weakref

    from ssd_eval.data import coco as data
    from ssd_eval.engine import pipeline, prefetch

    dataset = data.load_annotations(SAMPLE / "annotations.json", SAMPLE / "images")
    config = sample_config("sample", Path("unused"), ("preprocess.input_size", [24, 40]))
    params = prefetch.PreprocessParams.from_config(config)
    images = pipeline.prefetch_images([dataset.images[i] for i in sorted(dataset.images)], params,
                                      workers=2, mode="thread", depth=3)
    seen = 0
    for _, array in images:
        alive = weakref.ref(array)
        del array
        assert alive() is None, "the generator still holds the image it yielded"
        seen += 1
    assert seen == len(dataset.images)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_an_input_array_does_not_outlive_its_batch(tmp_path, monkeypatch, batch_size):
    """Fresh arrays per image (process mode's way): when the next image is asked for, the caller holds
    none (a batch of one has run, a larger batch has copied it into its buffer), and when a batch runs
    every earlier input is gone."""
    import weakref

    from ssd_eval.engine import pipeline

    config, records, categories = small_input_run(tmp_path, batch_size, prefetch=2)
    yielded: list[weakref.ref] = []
    ran = [0]
    original = pipeline.prefetch_images

    def fresh_arrays(*args, reuse_buffers=False, **kwargs):  # the thread pool without its ring
        for item in original(*args, **kwargs):
            yielded.append(weakref.ref(item[1]))
            yield item
            del item
            # The caller asks for the next image: it holds no input array any more.
            alive = sum(ref() is not None for ref in yielded)
            assert alive == 0, f"{alive} inputs alive while the next is awaited"

    def check(batch):
        alive = sum(ref() is not None for ref in yielded[:-len(batch)])
        assert alive == 0, f"{alive} inputs of earlier batches outlive them"
        ran[0] += len(batch)

    monkeypatch.setattr(pipeline, "prefetch_images", fresh_arrays)
    detector, cache = RecordingDetector(check), NullCache()
    skipped = pipeline._run_images(records, config, detector, categories, cache, progress=False)
    assert skipped == [] and cache.added == [r.id for r in records]
    assert detector.batches == -(-len(records) // batch_size)


@pytest.mark.parametrize("batch_size, prefetch, bad", [(1, 2, ()), (3, 2, ()), (2, 5, ()), (2, 2, (1, 5, 6, 11)),
                                                      (3, 1, (0, 2, 3, 9, 10))])
def test_thread_inputs_live_in_a_fixed_ring_and_are_never_overwritten_early(tmp_path, monkeypatch,
                                                                            batch_size, prefetch, bad):
    """Thread mode preprocesses into prefetch + 1 buffers allocated once (prefetch_images ``reuse_buffers``):
    every batch holds exactly its images' tensors, also when skipped bad images (``bad``: positions)
    fall inside a batch and slow decodes let the workers run ahead, and no other input buffer is made."""
    import dataclasses

    import numpy as np

    from ssd_eval.data import coco as data
    from ssd_eval.engine import pipeline
    from ssd_eval.engine import prefetch as prefetch_module

    config, records, categories = small_input_run(tmp_path, batch_size, prefetch)
    records = [dataclasses.replace(r) for r in records]  # each repeat its own object: bad ones by position
    config.dataset.on_bad_image = "skip"
    params = prefetch_module.PreprocessParams.from_config(config)
    expected = {r.id: prefetch_module.load_and_preprocess(r, params) for r in records}
    unreadable = {id(records[i]) for i in bad}
    buffers: set[int] = set()
    original = prefetch_module.load_and_preprocess

    def recording(record, params, out=None):
        assert out is not None, "thread mode preprocessed into a new array"
        buffers.add(out.__array_interface__["data"][0])
        if id(record) in unreadable:
            raise data.BadImageError(f"{record.path}: planted")
        return original(record, params, out)

    good = iter([r for r in records if id(r) not in unreadable])

    def check(batch):
        time.sleep(0.01)  # let the workers run ahead: an early overwrite would show in the next batch
        for tensor in batch:
            np.testing.assert_array_equal(tensor, expected[next(good).id])

    monkeypatch.setattr(prefetch_module, "load_and_preprocess", recording)
    cache = NullCache()
    skipped = pipeline._run_images(records, config, RecordingDetector(check), categories, cache, progress=False)
    assert cache.added == [r.id for r in records if id(r) not in unreadable] and len(skipped) == len(bad)
    assert len(buffers) == prefetch + 1


# ------------------------------------------------------------------------ the cache key covers every field (issue 22)


def config_fields(cls=None, prefix: str = "") -> list[str]:
    """Every field of Config, as dotted keys, walking the nested dataclasses (internal fields too)."""
    import dataclasses
    import typing

    from ssd_eval.config.schema import Config

    cls = cls or Config
    hints = typing.get_type_hints(cls)
    fields = []
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            fields += config_fields(hints[field.name], f"{prefix}{field.name}.")
        else:
            fields.append(prefix + field.name)
    return fields


def test_every_config_field_is_in_the_cache_key_or_named_as_unable_to_change_detections():
    from ssd_eval.engine.cache import CACHE_KEY_FIELDS, NOT_IN_CACHE_KEY

    fields = config_fields()
    assert len(fields) == len(set(fields)) > 60
    unclassified = [f for f in fields if f not in CACHE_KEY_FIELDS and f not in NOT_IN_CACHE_KEY]
    assert not unclassified, (f"config fields {unclassified} are neither in pipeline.CACHE_KEY_FIELDS nor in "
                              "pipeline.NOT_IN_CACHE_KEY: can they change an image's detections?")
    assert not set(CACHE_KEY_FIELDS) & set(NOT_IN_CACHE_KEY)
    assert not (set(CACHE_KEY_FIELDS) | set(NOT_IN_CACHE_KEY)) - set(fields)  # no stale entries
    assert all(reason.strip() for reason in NOT_IN_CACHE_KEY.values())


def _another(value):
    """A value other than ``value``, of its kind (the key only hashes it)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, list):
        return [*value, *value[:1]] if value else [1]
    if isinstance(value, dict):
        return {**value, "other": "1"}
    return 1  # None


def test_each_field_of_the_cache_key_changes_the_key(tmp_path):
    """CACHE_KEY_FIELDS is true: each field read from the config, and each argument that carries a
    resolved one, changes the key when it changes."""
    import copy
    import types

    from ssd_eval.data import coco as data
    from ssd_eval.engine.cache import CACHE_KEY_FIELDS, cache_key
    from ssd_eval.inference import postprocess
    from ssd_eval.inference.runner import ModelIO

    config = sample_config("sample", tmp_path / "out")
    dataset = data.load_annotations(config.dataset.annotations, config.dataset.images)
    categories = postprocess.label_map(dataset.category_ids, config.postprocess.label_map)
    io = ModelIO("image", (1, 3, 64, 64), "bboxes", "labels", "scores")
    arguments = {"model_sha256": "ab" * 32, "categories": categories, "dataset": dataset,
                 "providers": ["CPUExecutionProvider"], "session_config": {}, "io": io}
    base = cache_key(config, **arguments)
    for field, covered_by in CACHE_KEY_FIELDS.items():
        if covered_by == "config":
            changed = copy.deepcopy(config)
            section, name = field.split(".")
            setattr(getattr(changed, section), name, _another(getattr(getattr(config, section), name)))
            assert cache_key(changed, **arguments) != base, field
    swapped = categories.copy()
    swapped[[1, 2]] = swapped[[2, 1]]
    others = {
        "model_sha256": ["cd" * 32],
        "categories": [swapped],
        "dataset": [types.SimpleNamespace(sha256="ef" * 32, images_dir=dataset.images_dir),
                    types.SimpleNamespace(sha256=dataset.sha256, images_dir=tmp_path)],
        "providers": [["CUDAExecutionProvider", "CPUExecutionProvider"]],
        "session_config": [{"session.x64quantprecision": "1"}],
        "io": [ModelIO("input", io.input_shape, "bboxes", "labels", "scores"),
               ModelIO("image", io.input_shape, "boxes", "labels", "scores"),
               ModelIO("image", io.input_shape, "bboxes", "classes", "scores"),
               ModelIO("image", io.input_shape, "bboxes", "labels", "scores_alt")],
    }
    assert set(others) == set(CACHE_KEY_FIELDS.values()) - {"config"}
    for argument, values in others.items():
        for value in values:
            assert cache_key(config, **{**arguments, argument: value}) != base, (argument, value)


def two_scores_case(root: Path) -> tuple[Path, dict, dict[str, list[dict]]]:
    """A detector with two score outputs on four images, its config file, the annotations, and the COCO
    results of each score output computed by hand (known boxes times the image size): plain pycocotools
    on them is the right answer."""
    import yaml

    from helpers import config_dict, two_scores_detector, write_coco

    sizes = [(200, 100), (150, 120), (300, 240), (90, 160)]  # width, height
    boxes = [[0.1, 0.2, 0.5, 0.6], [0.6, 0.55, 0.95, 0.9], [0.3, 0.1, 0.45, 0.3]]
    labels = [1, 1, 3]  # person, person, car: the 1st and 3rd of the 80 COCO ids
    scores = {"scores": [0.9, 0.3, 0.6], "scores_alt": [0.3, 0.9, 0.2]}
    images = [{"id": i + 1, "width": w, "height": h} for i, (w, h) in enumerate(sizes)]
    truth = [{"image_id": i + 1, "category_id": 1, "bbox": [0.1 * w, 0.2 * h, 0.4 * w, 0.4 * h]}
             for i, (w, h) in enumerate(sizes)]
    truth += [{"image_id": 1, "category_id": 3, "bbox": [60.0, 10.0, 30.0, 20.0]}]
    annotations, image_dir = write_coco(root / "coco", images, truth)
    model = two_scores_detector(root / "two_scores.onnx", boxes, labels, scores["scores"], scores["scores_alt"],
                                input_hw=(64, 64))
    category = {1: 1, 3: 3}  # label k -> the k-th of the 80 COCO category ids (the default label map)
    expected = {name: [{"image_id": image["id"], "category_id": category[label], "score": score,
                        "bbox": [x1 * image["width"], y1 * image["height"], (x2 - x1) * image["width"],
                                 (y2 - y1) * image["height"]]}
                       for image in images for (x1, y1, x2, y2), label, score in zip(boxes, labels, values)]
                for name, values in scores.items()}
    config = config_dict(model, annotations, image_dir, root / "out", preprocess={"input_size": [64, 64]},
                         metrics={"bootstrap": {"replicates": 0}, "error_breakdown": False})
    path = root / "two_scores.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, json.loads(annotations.read_text()), expected


def test_another_score_output_is_not_served_from_the_cache_through_the_cli(tmp_path):
    """Issue 22 item 3: after a run reading ``scores``, a run reading ``scores_alt`` in the same folder was
    'resumed' and reported the first output's mAP. It must be refused (the key names the outputs read),
    and a fresh run must score ``scores_alt``: plain pycocotools on the known boxes says what to expect."""
    from helpers import plain_cocoeval

    config, annotations, expected = two_scores_case(tmp_path)
    right = {name: [float(s) for s in plain_cocoeval(annotations, results).stats]
             for name, results in expected.items()}
    assert right["scores"][0] != right["scores_alt"][0]  # the case tells the two outputs apart
    out = tmp_path / "out"
    first = run_cli("eval", "--config", str(config), "--no-progress")
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "metrics.json").read_text())["stats"] == pytest.approx(right["scores"], abs=1e-6)

    alt = ("--set", "model.scores_output=[scores_alt]")
    refused = run_cli("eval", "--config", str(config), *alt, "--no-progress")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    error = refused.stderr.strip().splitlines()
    assert len(error) == 1 and "model_io" in error[0] and "scores_alt" in error[0] and "--fresh" in error[0], error
    assert json.loads((out / "metrics.json").read_text())["stats"] == pytest.approx(right["scores"], abs=1e-6)

    fresh = run_cli("eval", "--config", str(config), *alt, "--fresh", "--no-progress")
    assert fresh.returncode == 0, fresh.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stats"] == pytest.approx(right["scores_alt"], abs=1e-6)
    assert metrics["provenance"]["config"]["model"]["scores_output"] == ["scores_alt"]


# --------------------------------------------------------------------------- the folder lock (issue 22 item 4)


def assert_files_match_metrics(out: Path, images: int) -> None:
    """metrics.json describes the detections.json and cache.jsonl beside it: the same images and detections."""
    metrics = json.loads((out / "metrics.json").read_text())
    detections = json.loads((out / "detections.json").read_text())
    cache_lines = (out / "cache.jsonl").read_text().splitlines()[1:]
    assert metrics["provenance"]["images"] == images == len(cache_lines)
    assert metrics["provenance"]["detections"] == len(detections) == sum(
        len(json.loads(line)["detections"]) for line in cache_lines)


def test_a_second_run_after_detections_but_before_metrics_json_is_refused(tmp_path, monkeypatch):
    """Issue 22 item 4: the lock was released once detections were written; a second run in that window
    replaced detections.json and cache.jsonl, then the first wrote a metrics.json describing other files."""
    from ssd_eval.engine import pipeline

    out = tmp_path / "out"
    second = {}
    breakdown = pipeline.finish.breakdown_for_run

    def in_the_window(*args, **kwargs):  # detections.json is written, metrics.json is not yet
        second["run"] = run_cli("eval", "--config", "configs/sample.yaml", "--out", str(out), "--limit", "1",
                                "--fresh", "--no-progress")
        return breakdown(*args, **kwargs)

    monkeypatch.setattr(pipeline.finish, "breakdown_for_run", in_the_window)
    result = evaluate(sample_config("sample", out), progress=False)
    refused = second["run"]
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"ssd-eval: error: {out}: another run is using this output directory; wait for it to finish or choose "
        "another --out")  # after the --limit warning
    assert_files_match_metrics(out, result.provenance["images"])
    assert result.provenance["images"] > 1
