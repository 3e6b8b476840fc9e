"""Tests for the embedded offline sample (data/sample) and its generator."""

from __future__ import annotations

import builtins
import contextlib
import copy
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from ssd_eval.errors import UserError  # noqa: E402
from ssd_eval.testing import (  # noqa: E402
    sample,  # noqa: E402
    synthetic,  # noqa: E402
)

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"
MODEL_NAMES = ("sample.onnx", "sample-int8.onnx", "sample-qdq.onnx", "sample-offbyone.onnx")
FP32_MAP_RANGE = (0.3, 0.9)


def load_input(path: Path) -> np.ndarray:
    """The zoo preprocessing, written out here independently of the harness."""
    with Image.open(path) as image:
        rgb = image.convert("RGB").resize((1200, 1200), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb, dtype=np.float32) / 255.0
    pixels = (pixels - np.array([0.485, 0.456, 0.406], dtype=np.float32)) / np.array(
        [0.229, 0.224, 0.225], dtype=np.float32
    )
    return pixels.transpose(2, 0, 1)[np.newaxis].astype(np.float32)


def annotations() -> dict:
    return json.loads((SAMPLE_DIR / "annotations.json").read_text(encoding="utf-8"))


def image_paths() -> list[Path]:
    ordered = sorted(annotations()["images"], key=lambda i: i["id"])
    return [SAMPLE_DIR / "images" / image["file_name"] for image in ordered]


@pytest.fixture(scope="module")
def sessions() -> dict:
    return {
        name: ort.InferenceSession(str(SAMPLE_DIR / "models" / name), providers=["CPUExecutionProvider"])
        for name in MODEL_NAMES
    }


@pytest.fixture(scope="module")
def inputs() -> dict:
    return {path.name: load_input(path) for path in image_paths()}


def run_named(session, image: np.ndarray) -> dict[str, np.ndarray]:
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": image})))


def coco_map(annotation_dict: dict, session, inputs: dict) -> float:
    """Standard protocol: all images, crowd = ignore, pycocotools bbox mAP."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    category_ids = sorted(category["id"] for category in annotation_dict["categories"])
    results = []
    for image in annotation_dict["images"]:
        out = run_named(session, inputs[image["file_name"]])
        width, height = image["width"], image["height"]
        for box, label, score in zip(out["bboxes"][0], out["labels"][0], out["scores"][0]):
            x0, y0, x1, y1 = (box * [width, height, width, height]).tolist()
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": category_ids[int(label) - 1],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = copy.deepcopy(annotation_dict)
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


# --------------------------------------------------------------------------- determinism


def test_regeneration_is_byte_identical_to_committed_sample(tmp_path: Path) -> None:
    committed = json.loads((SAMPLE_DIR / "MANIFEST.json").read_text(encoding="utf-8"))
    installed = sample._package_versions()
    mismatched = {
        package: (committed["versions"].get(package), version)
        for package, version in installed.items()
        if committed["versions"].get(package) != version
    }
    if mismatched:
        details = ", ".join(f"{name} {old} (manifest) != {new} (installed)" for name, (old, new) in mismatched.items())
        pytest.skip(f"sample was generated with other package versions: {details}")

    regenerated = sample.generate(tmp_path)

    assert regenerated["files"] == committed["files"]
    assert (tmp_path / "MANIFEST.json").read_bytes() == (SAMPLE_DIR / "MANIFEST.json").read_bytes()
    for relative, entry in committed["files"].items():
        data = (SAMPLE_DIR / relative).read_bytes()
        assert len(data) == entry["size"], relative
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], relative


def test_committed_sample_is_small() -> None:
    total = sum(path.stat().st_size for path in SAMPLE_DIR.rglob("*") if path.is_file())
    assert total < 1.5 * 1024 * 1024


# --------------------------------------------------------------------------- model contract


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_model_meets_io_contract(model_name: str, sessions: dict, inputs: dict) -> None:
    session = sessions[model_name]
    (model_input,) = session.get_inputs()
    assert model_input.name == "image"
    assert model_input.type == "tensor(float)"
    assert model_input.shape == [1, 3, 1200, 1200]
    assert {output.name for output in session.get_outputs()} == {"bboxes", "labels", "scores"}
    opsets = {entry.domain: entry.version for entry in onnx.load(str(SAMPLE_DIR / "models" / model_name)).opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == 12

    for image_name in sorted(inputs)[:3]:
        out = run_named(session, inputs[image_name])
        boxes, labels, scores = out["bboxes"], out["labels"], out["scores"]
        count = scores.shape[1]
        assert 20 <= count <= 200
        assert boxes.dtype == np.float32 and boxes.shape == (1, count, 4)
        assert labels.dtype == np.int64 and labels.shape == (1, count)
        assert scores.dtype == np.float32 and scores.shape == (1, count)
        assert np.all(np.diff(scores[0]) <= 0), "scores must be sorted descending"
        assert np.all((scores >= 0) & (scores <= 1))
        assert np.all((boxes >= 0) & (boxes <= 1))
        assert np.all(boxes[..., 2] >= boxes[..., 0]) and np.all(boxes[..., 3] >= boxes[..., 1])
        assert np.all((labels >= 1) & (labels <= 80))


def test_detections_depend_on_pixels(sessions: dict, inputs: dict) -> None:
    first, second = sorted(inputs)[:2]
    out_first = run_named(sessions["sample.onnx"], inputs[first])
    out_second = run_named(sessions["sample.onnx"], inputs[second])
    assert not np.array_equal(out_first["scores"], out_second["scores"])
    assert not np.array_equal(out_first["bboxes"], out_second["bboxes"])


def test_offbyone_labels_are_shifted(sessions: dict, inputs: dict) -> None:
    for image_name in sorted(inputs):
        good = run_named(sessions["sample.onnx"], inputs[image_name])
        broken = run_named(sessions["sample-offbyone.onnx"], inputs[image_name])
        np.testing.assert_array_equal(broken["labels"], np.minimum(good["labels"] + 1, 80))
        np.testing.assert_array_equal(broken["scores"], good["scores"])
        np.testing.assert_array_equal(broken["bboxes"], good["bboxes"])


def test_dynamic_batch_matches_single_images(inputs: dict) -> None:
    model = sample.build_detector(
        output_names=("detection_bboxes", "detection_classes", "detection_scores"), dynamic_batch=True
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    names = ["detection_bboxes", "detection_classes", "detection_scores"]
    first, second = (inputs[name] for name in sorted(inputs)[:2])
    batched = session.run(names, {"image": np.concatenate([first, second])})
    assert [array.shape[0] for array in batched] == [2, 2, 2]
    for index, single_input in enumerate((first, second)):
        single = session.run(names, {"image": single_input})
        for batched_output, single_output in zip(batched, single):
            np.testing.assert_allclose(batched_output[index], single_output[0], rtol=0, atol=1e-6)


def test_built_detector_equals_committed_fp32_model() -> None:
    assert sample.build_detector().SerializeToString() == (SAMPLE_DIR / "models" / "sample.onnx").read_bytes()


def test_write_model_round_trips(tmp_path: Path) -> None:
    model = sample.build_detector(label_offset=1)
    target = tmp_path / "nested" / "model.onnx"
    assert synthetic.write_model(model, target) == target
    assert target.read_bytes() == (SAMPLE_DIR / "models" / "sample-offbyone.onnx").read_bytes()


def test_missing_onnx_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def import_without_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", import_without_onnx)
    with pytest.raises(UserError, match=r"pip install -e \.\[dev\]"):
        sample.build_detector()


# --------------------------------------------------------------------------- annotations


def test_annotations_cover_the_awkward_cases() -> None:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(SAMPLE_DIR / "annotations.json"))
    data = annotations()

    categories = data["categories"]
    assert len(categories) == 80
    assert [c["id"] for c in categories] == sorted(c["id"] for c in categories)
    assert categories[-1] == {"id": 90, "name": "toothbrush", "supercategory": "indoor"}
    assert {c["id"] for c in categories}.isdisjoint({12, 26, 29, 30, 45, 66, 68, 69, 71, 83})

    image_ids = sorted(coco.getImgIds())
    assert image_ids != list(range(image_ids[0], image_ids[0] + len(image_ids))), "ids should have gaps"
    modes = {}
    for image in data["images"]:
        path = SAMPLE_DIR / "images" / image["file_name"]
        assert image["file_name"] == f"{image['id']:012d}.jpg"
        with Image.open(path) as opened:
            assert opened.format == "JPEG"
            assert opened.size == (image["width"], image["height"])
            assert (image["width"], image["height"]) != (1200, 1200)
            modes[image["id"]] = opened.mode
    assert "L" in modes.values()
    assert "CMYK" in modes.values()

    assert any(not coco.getAnnIds(imgIds=[image_id]) for image_id in image_ids), "an image without annotations"
    crowd = [a for a in data["annotations"] if a["iscrowd"] == 1]
    assert crowd and all(a["segmentation"] for a in crowd)
    used_categories = {a["category_id"] for a in data["annotations"]}
    assert len(used_categories) >= 5
    # Categories after the id gaps, so a missing label map shows.
    assert {13, 27, 44, 62} <= used_categories
    for annotation in data["annotations"]:
        x, y, width, height = annotation["bbox"]
        image = coco.imgs[annotation["image_id"]]
        assert 0 <= x and 0 <= y and x + width <= image["width"] and y + height <= image["height"]
        assert annotation["area"] > 0


def test_fp32_map_in_target_range_and_broken_model_fails(sessions: dict, inputs: dict, tmp_path: Path) -> None:
    from ssd_eval.config.load import load_config
    from ssd_eval.engine.pipeline import evaluate

    data = annotations()
    fp32 = coco_map(data, sessions["sample.onnx"], inputs)
    assert FP32_MAP_RANGE[0] <= fp32 <= FP32_MAP_RANGE[1]
    # The independent route above is the answer the harness's own run of the sample must give.
    harness = evaluate(load_config(SAMPLE_DIR.parent.parent / "configs" / "sample.yaml", [
        ("dataset.annotations", str(SAMPLE_DIR / "annotations.json")), ("dataset.images", str(SAMPLE_DIR / "images")),
        ("model.path", str(SAMPLE_DIR / "models" / "sample.onnx")), ("output.dir", str(tmp_path / "sample"))]),
        progress=False)
    assert harness.scores.stats[0] == pytest.approx(fp32, abs=1e-6)
    for quantized in ("sample-int8.onnx", "sample-qdq.onnx"):
        assert abs(coco_map(data, sessions[quantized], inputs) - fp32) < 0.05, quantized
    assert coco_map(data, sessions["sample-offbyone.onnx"], inputs) < 0.1 * fp32
