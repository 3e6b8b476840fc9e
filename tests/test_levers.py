"""Issue 26's speed levers change no detection.

Each lever (onnxruntime spinning, decode workers and mode, the OpenCV lookup in normalize) is checked
against an independent route: the zoo preprocessing written out here (PIL RGB, the protocol's resize,
float64 (x / 255 - mean) / std rounded once to float32, CHW), one onnxruntime session, the harness's
own postprocessing. detections.json must be byte-identical, on the sample and on real val2017 images,
under coco, inc and mlperf-ssd.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from ssd_eval.config.load import load_config
from ssd_eval.data import coco as data
from ssd_eval.data import subsets
from ssd_eval.engine import pipeline
from ssd_eval.inference import postprocess, preprocess
from ssd_eval.results.result import write_detections

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
PROTOCOLS = ("coco", "inc", "mlperf-ssd")
REAL_IMAGES = 24  # of the 200 real images: enough JPEGs of every shape, quick enough for three protocols
OTHER_SETTINGS = [("runtime.allow_spinning", False), ("pipeline.workers", 2), ("runtime.intra_op_threads", 1),
              ("pipeline.normalize", "numpy-take")]


def independent_tensor(path: Path, size_hw: tuple[int, int], backend: str, mean, std, scale) -> np.ndarray:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    height, width = size_hw
    if backend == "pil":
        pixels = np.asarray(rgb.resize((width, height), Image.Resampling.BILINEAR))
    else:
        import cv2

        pixels = cv2.resize(np.asarray(rgb), (width, height), interpolation=cv2.INTER_LINEAR)
    normalized = (pixels.astype(np.float64) * scale - np.asarray(mean)) / np.asarray(std)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1).astype(np.float32))


def independent_detections(config, out: Path) -> bytes:
    """detections.json for ``config`` without the harness's pipeline: tensors made here, one plain
    session (onnxruntime defaults), ``postprocess.to_coco_results`` with the protocol's switches."""
    dataset = data.load_annotations(config.dataset.annotations, config.dataset.images)
    switches = config.switches()
    ids = subsets.select_image_ids(dataset, limit=config.dataset.limit,
                                skip_images_without_annotations=switches["skip_images_without_annotations"])
    categories = postprocess.label_map(dataset.category_ids, config.postprocess.label_map)
    session = ort.InferenceSession(str(config.model.path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    pre, post = config.preprocess, config.postprocess
    detections = []
    for image_id in ids:
        record = dataset.images[image_id]
        tensor = independent_tensor(record.path, tuple(pre.input_size), switches["resize_backend"], pre.mean,
                                    pre.std, pre.scale)
        outputs = dict(zip(names, session.run(None, {"image": tensor[np.newaxis]})))
        detections += postprocess.to_coco_results(
            outputs["bboxes"][0], outputs["labels"][0].astype(np.int64), outputs["scores"][0], image_id=image_id,
            width=record.width, height=record.height, categories=categories,
            max_detections=post.max_detections, score_threshold=post.score_threshold, clip_boxes=post.clip_boxes)
    write_detections(out, detections)
    return out.read_bytes()


def config_for(out: Path, protocol: str, annotations: Path, images: Path, *overrides):
    return load_config(REPO / "configs" / "sample.yaml",
                       [("dataset.annotations", str(annotations)), ("dataset.images", str(images)),
                        ("model.path", str(SAMPLE / "models" / "sample.onnx")), ("output.dir", str(out)),
                        ("protocol", protocol), ("metrics.bootstrap.replicates", 0),
                        ("metrics.error_breakdown", False), *overrides])


def check_byte_identical(tmp_path: Path, protocol: str, annotations: Path, images: Path, *extra) -> None:
    on = config_for(tmp_path / "on", protocol, annotations, images, *extra)
    off = config_for(tmp_path / "off", protocol, annotations, images, *extra, *OTHER_SETTINGS)
    pipeline.evaluate(on, progress=False)
    pipeline.evaluate(off, progress=False)
    with_levers = (tmp_path / "on" / "detections.json").read_bytes()
    assert with_levers.count(b"image_id") > 0
    assert with_levers == (tmp_path / "off" / "detections.json").read_bytes()
    assert with_levers == independent_detections(on, tmp_path / "independent.json")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_levers_leave_the_sample_detections_byte_identical(tmp_path, protocol):
    check_byte_identical(tmp_path, protocol, SAMPLE / "annotations.json", SAMPLE / "images")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_levers_leave_real_val2017_detections_byte_identical(tmp_path, protocol, coco_subset):
    check_byte_identical(tmp_path, protocol, coco_subset / "annotations.json", coco_subset / "images",
                         ("dataset.limit", REAL_IMAGES))


@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_both_normalize_routes_equal_float64_rounded_once_on_real_images(backend, coco_subset, monkeypatch):
    """OpenCV's LUT and numpy's take give the bits of (x * scale - mean) / std in float64, rounded once."""
    mean, std, scale = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255
    paths = sorted((coco_subset / "images").glob("*.jpg"))[:6] + [coco_subset / "extras" / "000000431848.jpg"]
    for path in paths:
        with Image.open(path) as image:
            pixels = preprocess.resize(image.convert("RGB"), (300, 200), backend)
        expected = ((pixels.astype(np.float64) * scale - np.asarray(mean)) / np.asarray(std)).astype(np.float32)
        expected = expected.transpose(2, 0, 1)
        assert preprocess.normalize_route() == "opencv-lut"
        buffer = np.full((3, 300, 200), np.nan, dtype=np.float32)
        lut = preprocess.normalize(pixels, mean, std, scale, out=buffer)
        assert lut is buffer and np.array_equal(lut.view(np.uint32), expected.view(np.uint32))
        with monkeypatch.context() as patch:
            patch.setattr(preprocess, "_opencv_or_none", lambda: None)
            assert preprocess.normalize_route() == "numpy-take"
            taken = preprocess.normalize(pixels, mean, std, scale)
        assert np.array_equal(taken.view(np.uint32), expected.view(np.uint32))


def test_the_normalize_route_and_spinning_are_recorded(tmp_path):
    import json

    config = config_for(tmp_path / "run", "coco", SAMPLE / "annotations.json", SAMPLE / "images")
    pipeline.evaluate(config, progress=False)
    provenance = json.loads((tmp_path / "run" / "metrics.json").read_text())["provenance"]
    assert provenance["pipeline"]["normalize"] == preprocess.normalize_route()
    assert provenance["runtime"]["spinning"] == {}  # onnxruntime's default
    off = config_for(tmp_path / "off", "coco", SAMPLE / "annotations.json", SAMPLE / "images",
                     ("runtime.allow_spinning", False))
    pipeline.evaluate(off, progress=False)
    provenance = json.loads((tmp_path / "off" / "metrics.json").read_text())["provenance"]
    assert provenance["runtime"]["spinning"] == {"session.intra_op.allow_spinning": "0",
                                                 "session.inter_op.allow_spinning": "0"}


def test_pipeline_normalize_picks_the_route_and_keeps_the_cache(tmp_path, monkeypatch):
    """pipeline.normalize (the before/after lever of bench-harness) reaches the workers and is recorded;
    it is not in the cache key, since every route gives the same bits."""
    import json

    used = []
    real = preprocess.normalize

    def recording(*args, route=None, **kwargs):
        used.append(route)
        return real(*args, route=route, **kwargs)

    monkeypatch.setattr(preprocess, "normalize", recording)
    config = config_for(tmp_path / "run", "coco", SAMPLE / "annotations.json", SAMPLE / "images",
                        ("pipeline.normalize", "numpy-take"))
    pipeline.evaluate(config, progress=False)
    assert used and set(used) == {"numpy-take"}
    provenance = json.loads((tmp_path / "run" / "metrics.json").read_text())["provenance"]
    assert provenance["pipeline"]["normalize"] == "numpy-take"
    again = config_for(tmp_path / "run", "coco", SAMPLE / "annotations.json", SAMPLE / "images",
                       ("pipeline.normalize", "opencv-lut"))
    used.clear()
    result = pipeline.evaluate(again, progress=False)
    assert used == [] and result.provenance["resumed_images"] == result.provenance["images"]


@pytest.mark.parametrize("allow, expected", [(None, None), (False, "0"), (True, "1")])
def test_allow_spinning_reaches_the_session(allow, expected):
    from ssd_eval.config.schema import RuntimeConfig
    from ssd_eval.inference.runner import SPINNING_KEYS, create_session

    session = create_session(SAMPLE / "models" / "sample.onnx", RuntimeConfig(allow_spinning=allow))
    options = session.get_session_options()
    for key in SPINNING_KEYS:
        if expected is None:
            with pytest.raises(RuntimeError, match="does not have configuration"):  # onnxruntime's default
                options.get_session_config_entry(key)
        else:
            assert options.get_session_config_entry(key) == expected
