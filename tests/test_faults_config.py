"""Config reaching the run (issue 15): postprocessing switches, onnxruntime session settings, the input size check.

Each test sets a config key, runs the harness as a user would (``ssd_eval.evaluate`` on a config mapping)
and checks what that key must change against an answer written out here, not one the harness printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest

import ssd_eval
from ssd_eval.config.load import config_from_dict
from ssd_eval.config.schema import ModelConfig, RuntimeConfig
from ssd_eval.engine import pipeline, prefetch
from ssd_eval.errors import UserError
from ssd_eval.inference.runner import Detector

from helpers import config_dict, fixed_detector, write_coco

HW = (32, 48)  # the fixed detector ignores pixels: a small input keeps runs fast
IMAGE = {"id": 42, "width": 200, "height": 100}
# helpers.CATEGORIES by COCO-80 label (label k -> the k-th of the 80 published ids, 12 not among them).
CATEGORIES_BY_LABEL = {1: 1, 3: 3, 11: 11, 12: 13, 17: 18}
# Five raw outputs, not sorted by score; the last box reaches past the right and bottom border.
BOXES = [[0.10, 0.10, 0.30, 0.50], [0.50, 0.20, 0.60, 0.40], [0.00, 0.50, 0.25, 1.00],
         [0.40, 0.40, 0.90, 0.90], [0.70, 0.60, 1.20, 1.10]]
LABELS = [3, 1, 17, 11, 12]
SCORES = [0.55, 0.90, 0.30, 0.70, 0.65]
# The same five as COCO results on the 200x100 image, worked out by hand: pixel xywh, real category id,
# the border box clipped to [140, 60, 60, 40] (coco protocol clips). Best score first.
BY_SCORE = [
    (1, [100.0, 20.0, 20.0, 20.0], 0.90),   # label 1 -> person
    (11, [80.0, 40.0, 100.0, 50.0], 0.70),  # label 11 -> fire hydrant
    (13, [140.0, 60.0, 60.0, 40.0], 0.65),  # label 12 -> stop sign, clipped
    (3, [20.0, 10.0, 40.0, 40.0], 0.55),    # label 3 -> car
    (18, [0.0, 50.0, 50.0, 50.0], 0.30),    # label 17 -> dog
]


def expected(count: int | None = None, threshold: float = 0.0) -> list[tuple]:
    kept = [d for d in BY_SCORE if d[2] >= threshold]
    return kept if count is None else kept[:count]


def run(tmp_path, **postprocess) -> list[tuple]:
    annotations, images = write_coco(tmp_path / "set", [IMAGE], [{"image_id": 42, "category_id": 1,
                                                                  "bbox": [100, 20, 20, 20]}])
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    config = config_dict(model, annotations, images, tmp_path / "out", preprocess={"input_size": list(HW)},
                         postprocess=postprocess)
    ssd_eval.evaluate(config)
    detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert all(d["image_id"] == 42 for d in detections)
    return [(d["category_id"], d["bbox"], d["score"]) for d in detections]


def same(got: list[tuple], want: list[tuple]) -> bool:
    return len(got) == len(want) and all(
        g[0] == w[0] and g[1] == pytest.approx(w[1], abs=1e-4) and g[2] == pytest.approx(w[2], abs=1e-6)
        for g, w in zip(got, want))


def test_the_hand_worked_table_follows_the_label_map():
    # Sanity of the table above: label k -> the k-th COCO-80 id, pixel boxes from the normalized ones.
    for (category, bbox, score) in BY_SCORE:
        row = SCORES.index(score)
        assert CATEGORIES_BY_LABEL[LABELS[row]] == category
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in BOXES[row])
        assert bbox == pytest.approx([x0 * 200, y0 * 100, (x1 - x0) * 200, (y1 - y0) * 100])


@pytest.mark.parametrize("postprocess, want", [
    ({}, expected(100)),  # coco: top 100, threshold 0
    ({"max_detections": 2}, expected(2)),
    ({"max_detections": "all", "score_threshold": 0.6}, expected(None, 0.6)),
    ({"max_detections": 3, "score_threshold": 0.6}, expected(3, 0.6)),
    ({"max_detections": 1, "score_threshold": 0.95}, []),
], ids=["defaults", "top-2", "threshold-0.6", "top-3-threshold-0.6", "nothing-left"])
def test_postprocess_config_reaches_the_detections(tmp_path, postprocess, want):
    got = run(tmp_path, **postprocess)
    assert same(got, want), (got, want)


def test_clip_boxes_false_keeps_the_border_box_whole(tmp_path):
    got = run(tmp_path, clip_boxes=False, max_detections=3)
    # label 12's box [0.7, 0.6, 1.2, 1.1] unclipped: x 140, y 60, w 100, h 50
    assert same(got, [BY_SCORE[0], BY_SCORE[1], (13, [140.0, 60.0, 100.0, 50.0], 0.65)]), got


# ------------------------------------------------------------------------------ runtime settings



LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_runtime_settings_reach_the_session(tmp_path, created_detectors, level):
    annotations, images = write_coco(tmp_path / "set", [IMAGE], [])
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    config = config_dict(model, annotations, images, tmp_path / "out", preprocess={"input_size": list(HW)},
                         runtime={"graph_optimization": level, "intra_op_threads": 3, "inter_op_threads": 2})
    ssd_eval.evaluate(config)
    [detector] = created_detectors
    options = detector.session.get_session_options()
    assert options.graph_optimization_level == LEVELS[level]
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 2


@pytest.mark.parametrize("input_size", [(32, 64), (32, 40), (40, 48), (16, 48)],
                         ids=["wider", "narrower", "taller", "shorter"])
def test_model_input_height_and_width_are_both_checked(tmp_path, input_size):
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    with pytest.raises(UserError, match=r"preprocess\.input_size"):
        Detector(model, ModelConfig(), RuntimeConfig(), input_size)
    Detector(model, ModelConfig(), RuntimeConfig(), HW)  # the matching size is accepted


class Stop(Exception):
    """Ends a run once the calls under test were made."""


@pytest.mark.parametrize("download, progress", [(None, None), (True, True), (False, "lines")],
                         ids=["defaults", "download-with-bar", "lines"])
def test_download_settings_reach_the_fetch_calls(tmp_path, monkeypatch, download, progress):
    """model.* and dataset.* download keys, --download and the progress mode, as evaluate hands them over."""
    calls = {}

    def ensure_model(*args, **kwargs):
        calls["model"] = (args, kwargs)
        return args[0]

    def ensure_coco(*args, **kwargs):
        calls["coco"] = (args, kwargs)
        raise Stop

    monkeypatch.setattr(pipeline.fetch, "ensure_model", ensure_model)
    monkeypatch.setattr(pipeline.fetch, "ensure_coco", ensure_coco)
    config = config_dict(tmp_path / "m.onnx", tmp_path / "a.json", tmp_path / "images", tmp_path / "out")
    config["model"].update({"url": "http://127.0.0.1:9/m.onnx", "size": 123, "sha256": "cd" * 32})
    config["dataset"].update({"annotations_url": "http://127.0.0.1:9/a.zip", "images_url": "http://127.0.0.1:9/i.zip",
                                  "downloads_dir": str(tmp_path / "dl"), "annotations_zip_size": 11,
                                  "annotations_zip_sha256": "ef" * 32, "images_zip_size": 22,
                                  "images_zip_sha256": "01" * 32})
    options = {k: v for k, v in (("download", download), ("progress", progress)) if v is not None}
    with pytest.raises(Stop):
        pipeline.evaluate(config_from_dict(config), **options)  # pipeline's own defaults, not the API's
    bar = progress in (None, True)  # a download bar only with a progress bar (the default), not with lines
    assert calls["model"] == ((tmp_path / "m.onnx",), {
        "url": "http://127.0.0.1:9/m.onnx", "size": 123, "sha256": "cd" * 32, "download_missing": bool(download),
        "progress": bar, "variant": "test"})
    assert calls["coco"] == ((tmp_path / "a.json", tmp_path / "images"), {
        "annotations_url": "http://127.0.0.1:9/a.zip", "images_url": "http://127.0.0.1:9/i.zip",
        "download_missing": bool(download), "downloads_dir": tmp_path / "dl", "progress": bar,
        "annotations_zip": (11, "ef" * 32), "images_zip": (22, "01" * 32)})


def test_a_model_without_a_url_is_fetched_without_a_variant_name(tmp_path, monkeypatch):
    seen = {}

    def ensure_model(path, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(pipeline.fetch, "ensure_model", ensure_model)
    with pytest.raises(Stop):
        pipeline.evaluate(config_from_dict(config_dict(tmp_path / "m.onnx", tmp_path / "a.json", tmp_path / "i",
                                                       tmp_path / "out")))
    assert seen["url"] is None and seen["variant"] is None


@pytest.mark.parametrize("metrics, bootstrap_on", [
    ({"backend": "pycocotools", "streaming": True, "crowd_as_ground_truth": True,
      "exclude_categories": ["dog"]}, True),
    ({"backend": "hotcoco", "streaming": False, "bootstrap": {"replicates": 0}}, False),
    ({"backend": "pycocotools", "streaming": False}, True),
], ids=["streaming-with-bootstrap", "batch-without-bootstrap", "batch-with-bootstrap"])
def test_metrics_settings_reach_scoring_and_the_bootstrap(tmp_path, monkeypatch, metrics, bootstrap_on):
    """metrics.* as score_detections and run_bootstrap receive them: the same detections, the cache file as
    their source, and the matches scoring kept handed to the bootstrap (no second matching pass)."""
    if metrics["backend"] == "hotcoco":
        pytest.importorskip("hotcoco")
    calls = {}
    real_score, real_bootstrap = pipeline.finish.score_detections, pipeline.finish.run_bootstrap

    def score_detections(gt, detections, image_ids, **kwargs):
        detections = list(detections)
        calls["score"] = (detections, list(image_ids), kwargs)
        scores = real_score(gt, detections, image_ids, **kwargs)
        calls["matches"] = scores.matches
        return scores

    def run_bootstrap(config, gt, detections, image_ids, **kwargs):
        calls["bootstrap"] = (list(detections), list(image_ids), kwargs)
        return real_bootstrap(config, gt, detections, image_ids, **kwargs)

    monkeypatch.setattr(pipeline.finish, "score_detections", score_detections)  # runs score in engine.finish
    monkeypatch.setattr(pipeline.finish, "run_bootstrap", run_bootstrap)
    annotations, images = write_coco(tmp_path / "set", [IMAGE], [{"image_id": 42, "category_id": 1,
                                                                  "bbox": [100, 20, 20, 20]}])
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    out = tmp_path / "out"
    ssd_eval.evaluate(config_dict(model, annotations, images, out, preprocess={"input_size": list(HW)},
                                  metrics=metrics))
    detections, ids, kwargs = calls["score"]
    assert ids == [42] and same([(d["category_id"], d["bbox"], d["score"]) for d in detections], BY_SCORE)
    assert kwargs == {"crowd_as_ground_truth": metrics.get("crowd_as_ground_truth", False),
                      "backend": metrics["backend"], "exclude_categories": metrics.get("exclude_categories", []),
                      "source": str(out / "cache.jsonl"), "streaming": metrics["streaming"],
                      "keep_matches": bootstrap_on}
    boot_detections, boot_ids, boot_kwargs = calls["bootstrap"]
    assert boot_ids == [42] and len(boot_detections) == len(detections)
    assert boot_kwargs["source"] == str(out / "cache.jsonl") and boot_kwargs["subset"] is None
    assert boot_kwargs["matches"] is calls["matches"]
    assert (calls["matches"] is not None) == (bootstrap_on and metrics["streaming"])
    result = json.loads((out / "metrics.json").read_text())
    assert (result.get("intervals") is not None) == bootstrap_on  # matched again from the file when not kept


@pytest.mark.parametrize("shard", [None, (0, 2)], ids=["run", "shard"])
def test_tracking_is_checked_before_the_run_and_given_its_result(tmp_path, monkeypatch, shard):
    """tracking.log: the trackers' packages are checked before any work, and the finished result goes to
    them; a shard is tracked by its merge, not by itself."""
    from ssd_eval.reports import tracking

    events = []
    monkeypatch.setattr(tracking, "check_trackers",
                        lambda settings, out_dir=None: events.append(("check", settings, out_dir)))
    monkeypatch.setattr(tracking, "track", lambda result, settings: events.append(("track", result, settings)))
    real_ensure_model = pipeline.fetch.ensure_model
    monkeypatch.setattr(pipeline.fetch, "ensure_model",
                        lambda *a, **k: events.append(("fetch",)) or real_ensure_model(*a, **k))
    annotations, images = write_coco(tmp_path / "set", [IMAGE], [])
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    config = config_from_dict(config_dict(model, annotations, images, tmp_path / "out",
                                          preprocess={"input_size": list(HW)},
                                          tracking={"log": ["mlflow"], "experiment": "x"}))
    result = ssd_eval.evaluate(config, shard=shard, progress=False)  # the API: it tracks, as the CLI does
    if shard is not None:
        assert events == [("fetch",)]
        return
    assert events == [("check", config.tracking, config.out_dir), ("fetch",), ("track", result, config.tracking)]
    assert result.variant == "test" and result.provenance["images"] == 1  # the run's own result


def test_the_int8_session_settings_reach_the_session_and_the_saturation_check(tmp_path, monkeypatch,
                                                                               created_detectors):
    """The session config evaluate derives for an int8 model (model_info.int8_session_config) is the one the
    session gets and the one the saturation warning judges, with the configured optimization level."""
    derived = {"session.intra_op.allow_spinning": "0"}
    seen = {}
    real_warning = pipeline.model_info.saturation_warning

    def int8_session_config(info, configured, *, exact_int8):
        seen["derive"] = (configured, exact_int8)
        return dict(derived)

    def saturation_warning(info, session_config, graph_optimization):
        seen["warning"] = (session_config, graph_optimization)
        return real_warning(info, session_config, graph_optimization)

    monkeypatch.setattr(pipeline.model_info, "int8_session_config", int8_session_config)
    monkeypatch.setattr(pipeline.model_info, "saturation_warning", saturation_warning)
    annotations, images = write_coco(tmp_path / "set", [IMAGE], [])
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    ssd_eval.evaluate(config_dict(model, annotations, images, tmp_path / "out", preprocess={"input_size": list(HW)},
                                  runtime={"graph_optimization": "basic", "exact_int8": True,
                                           "session_config": {"session.use_env_allocators": "1"}}))
    assert seen == {"derive": ({"session.use_env_allocators": "1"}, True), "warning": (derived, "basic")}
    [detector] = created_detectors
    assert detector.session_config == derived


def test_the_optimized_model_cache_is_keyed_by_the_models_content(tmp_path):
    """runtime.optimized_model_cache through a run: the optimized graph is saved under the model's sha256."""
    from ssd_eval.utils import sha256_of

    annotations, images = write_coco(tmp_path / "set", [IMAGE], [])
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    ssd_eval.evaluate(config_dict(model, annotations, images, tmp_path / "out", preprocess={"input_size": list(HW)},
                                  runtime={"optimized_model_cache": str(tmp_path / "optimized")}))
    [saved] = (tmp_path / "optimized").glob("*.onnx")
    assert saved.name.startswith(sha256_of(model)[:16] + "-all-")


@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_a_missing_opencv_is_reported_before_the_model_is_loaded_only_when_it_is_needed(
        tmp_path, monkeypatch, created_detectors, backend):
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV not installed
    annotations, images = write_coco(tmp_path / "set", [IMAGE], [])
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    config = config_dict(model, annotations, images, tmp_path / "out", preprocess={"input_size": list(HW),
                                                                                   "resize_backend": backend})
    if backend == "pil":
        ssd_eval.evaluate(config)
        assert len(created_detectors) == 1
        return
    with pytest.raises(UserError, match=r"needs opencv-python-headless, which is not installed: pip install"):
        ssd_eval.evaluate(config)
    assert created_detectors == [] and not (tmp_path / "out").exists()


def test_a_selection_without_images_is_refused_naming_the_annotation_file(tmp_path):
    annotations, images = write_coco(tmp_path / "set", [IMAGE], [])  # image 42 has no annotations
    config = config_dict(tmp_path / "model.onnx", annotations, images, tmp_path / "out",
                         preprocess={"input_size": list(HW)}, dataset={"skip_images_without_annotations": True})
    fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    with pytest.raises(UserError) as refused:
        ssd_eval.evaluate(config)
    assert str(refused.value) == f"{annotations}: no images to evaluate with these settings"


def test_a_run_that_fails_on_its_first_image_leaves_no_output_folder(tmp_path):
    """The run began its cache, then the first image failed to decode (dataset.on_bad_image: error): the
    header-only cache and the folders the run created are removed."""
    annotations, images = write_coco(tmp_path / "set", [IMAGE], [])
    (images / "000000000042.jpg").write_bytes(b"not a jpeg")
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    out = tmp_path / "results" / "run"
    with pytest.raises(UserError, match="000000000042.jpg"):
        ssd_eval.evaluate(config_dict(model, annotations, images, out, preprocess={"input_size": list(HW)}))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("progress", [True, "lines", False])
def test_the_progress_mode_reaches_the_image_loop(tmp_path, monkeypatch, progress):
    """progress="lines" (logs): ProgressLines over the images to run, at pipeline.progress_interval_s;
    True: a tqdm bar; False: neither."""
    made = []

    class Recording(pipeline.ProgressLines):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    bars = []
    real_tqdm = pipeline.tqdm
    monkeypatch.setattr(pipeline, "ProgressLines", Recording)
    def recording_tqdm(*args, **kwargs):
        bar = real_tqdm(*args, **kwargs)
        bars.append((kwargs, bar))
        return bar

    monkeypatch.setattr(pipeline, "tqdm", recording_tqdm)
    annotations, images = write_coco(tmp_path / "set", [IMAGE, dict(IMAGE, id=43), dict(IMAGE, id=44)], [])
    (images / "000000000043.jpg").write_bytes(b"not a jpeg")  # skipped, and counted as done
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    result = ssd_eval.evaluate(config_dict(model, annotations, images, tmp_path / "out",
                                           preprocess={"input_size": list(HW)}, dataset={"on_bad_image": "skip"},
                                           pipeline={"workers": 1, "progress_interval_s": 7.5}), progress=progress)
    [skipped] = result.provenance["skipped_images"]
    assert skipped["image_id"] == 43 and skipped["file"] == str(images / "000000000043.jpg")
    assert "000000000043.jpg" in skipped["reason"]
    if progress == "lines":
        [lines] = made
        assert (lines.total, lines.desc, lines.every_s, lines.done) == (3, "test", 7.5, 3) and bars == []
    else:
        [(options, bar)] = bars
        assert made == [] and options == {"total": 3, "desc": "test", "unit": "img", "disable": not progress,
                                          "dynamic_ncols": True}
        assert bar.n == (3 if progress else 0)  # a disabled bar does not count


@pytest.mark.parametrize("shard", [None, (1, 2)], ids=["run", "shard"])
def test_a_run_says_when_it_scores_and_a_shard_does_not_score(tmp_path, caplog, monkeypatch, shard):
    import logging

    monkeypatch.setattr(logging.getLogger("ssd_eval.progress"), "propagate", True)  # the CLI turns it off
    annotations, images = write_coco(tmp_path / "set", [IMAGE, dict(IMAGE, id=43)], [])
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    with caplog.at_level("INFO", logger="ssd_eval.progress"):
        pipeline.evaluate(config_from_dict(config_dict(model, annotations, images, tmp_path / "out",
                                                       preprocess={"input_size": list(HW)})),
                          shard=shard, progress="lines")
    # One record may reach caplog twice (its handler on the logger and on the root): count each record once.
    records = {id(r): r for r in caplog.records if r.name == "ssd_eval.progress"}.values()
    lines = [r.getMessage() for r in records]
    scoring = [line for line in lines if line.startswith("test: scor")]
    if shard is None:
        assert lines[0].startswith("test: 2 images to run, 0 from the cache; ")
        assert scoring[0] == "test: scoring 10 detections of 2 images with pycocotools"
        assert scoring[1].startswith("test: scored in ") and len(scoring) == 2
    else:
        assert lines[0].startswith("test: 1 images to run, 0 from the cache; ") and scoring == []
        manifest = json.loads((tmp_path / "out" / "shard-1-of-2" / "shard.json").read_text())
        assert manifest["shard"] == [1, 2] and manifest["provenance"]["shards"] == ["1/2"]


def test_the_wall_time_is_the_runs_own_in_milliseconds(tmp_path):
    import time

    annotations, images = write_coco(tmp_path / "set", [IMAGE], [])
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    started = time.perf_counter()
    result = ssd_eval.evaluate(config_dict(model, annotations, images, tmp_path / "out",
                                           preprocess={"input_size": list(HW)}))
    elapsed = time.perf_counter() - started
    wall = result.provenance["wall_time_s"]
    assert 0 < wall <= elapsed + 0.001 and wall == round(wall, 3)


@pytest.mark.parametrize("setting", [True, False])
def test_the_error_breakdown_covers_the_runs_images_under_its_switches(tmp_path, setting):
    """metrics.error_breakdown: the breakdown of the run's own detections.json over exactly the images it ran
    (a --limit run: not the file's other images), with its crowd and exclusion switches; off: none."""
    pytest.importorskip("hotcoco")
    from ssd_eval.scoring.breakdown import compute_breakdown

    images_list = [IMAGE, dict(IMAGE, id=43), dict(IMAGE, id=44)]
    truth = [{"image_id": i, "category_id": c, "bbox": b} for i in (42, 43, 44)
             for c, b in ((1, [100, 20, 20, 20]), (3, [20, 10, 40, 40]), (18, [0, 50, 50, 50]))]
    annotations, images = write_coco(tmp_path / "set", images_list, truth)
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    out = tmp_path / "out"
    result = ssd_eval.evaluate(config_dict(model, annotations, images, out, preprocess={"input_size": list(HW)},
                                           dataset={"limit": 2},
                                           metrics={"error_breakdown": setting, "crowd_as_ground_truth": True,
                                                    "exclude_categories": ["dog"]}))
    if not setting:
        assert result.error_breakdown is None
        return
    gt = json.loads(annotations.read_text())
    expected = compute_breakdown(gt, json.loads((out / "detections.json").read_text()), [42, 43],
                                 crowd_as_ground_truth=True, exclude_categories=["dog"], source="x")
    assert result.error_breakdown == expected
    assert result.error_breakdown != compute_breakdown(gt, json.loads((out / "detections.json").read_text()),
                                                       [42, 43, 44], crowd_as_ground_truth=True,
                                                       exclude_categories=["dog"], source="x")


@pytest.mark.parametrize("cpus, workers", [(None, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (16, 8), (17, 8),
                                           (18, 8), (64, 8)])
def test_default_decode_workers_are_half_the_cores_from_1_to_8(monkeypatch, cpus, workers):
    monkeypatch.setattr(prefetch.os, "cpu_count", lambda: cpus)
    config = config_from_dict(config_dict(Path("m.onnx"), Path("a.json"), Path("i"), Path("out"),
                                          pipeline={"workers": 0}))  # 0: the default
    assert prefetch.default_workers(config) == workers
    config.pipeline.workers = 3  # set: taken as it is
    assert prefetch.default_workers(config) == 3


@pytest.mark.parametrize("settings, depth", [({"workers": 3}, 6), ({"workers": 3, "prefetch": 5}, 5)],
                         ids=["default", "set"])
def test_the_prefetch_depth_is_twice_the_workers_unless_set(tmp_path, monkeypatch, settings, depth):
    """pipeline.prefetch: null is 2 x workers x batch images ahead (a batch of 2: tests/test_faults_pipeline.py)."""
    seen = {}
    real = pipeline.prefetch_images

    def prefetch_images(records, params, **kwargs):
        seen.update(kwargs)
        return real(records, params, **kwargs)

    monkeypatch.setattr(pipeline, "prefetch_images", prefetch_images)
    annotations, images = write_coco(tmp_path / "set", [IMAGE], [])
    model = fixed_detector(tmp_path / "model.onnx", BOXES, LABELS, SCORES, input_hw=HW)
    ssd_eval.evaluate(config_dict(model, annotations, images, tmp_path / "out", preprocess={"input_size": list(HW)},
                                  pipeline=settings))
    assert isinstance(seen.pop("clock"), pipeline.StageClock)  # per-stage times (issue 26)
    assert seen == {"workers": 3, "mode": "thread", "depth": depth, "reuse_buffers": True}
