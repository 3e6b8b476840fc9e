"""The sample's quantized models give the same results on every CPU.

They are built (ssd_eval/testing/sample.py) so that nothing is ever rounded at or near a
.5 tie and no integer sum can saturate. Checked here on the 8 sample images,
preprocessed the way the harness does: onnxruntime and onnx's reference
evaluator agree (same detections, same COCO stats), the quantized block map is
exactly the one computed in float64, and every rounding point keeps its margin.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
reference = pytest.importorskip("onnx.reference")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference.op_run import OpRun  # noqa: E402

from ssd_eval.inference.postprocess import label_map, to_coco_results  # noqa: E402
from ssd_eval.inference.preprocess import preprocess  # noqa: E402
from ssd_eval.scoring.metrics import score_detections  # noqa: E402
from ssd_eval.testing import sample  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "data" / "sample"
VARIANTS = ("int8", "qdq")
OUTPUTS = ["bboxes", "labels", "scores"]
# Boxes and scores come out of the fp32 part of the graph: float32 noise only
# (about 4e-7 measured); far below what moves a pycocotools statistic.
TOLERANCE = 1e-5
WEIGHT_RANGE = (-64, 63)  # u8 x s8 pair sums of such weights never saturate int16


class DequantizeLinear(OpRun):
    """Opset-10/13 DequantizeLinear for onnx.reference, which implements it only from opset 19.

    ``(x - zero_point) * scale`` with a per-tensor scale, as the opset 10 spec says:
    the integer difference is exact, then one float32 rounding.
    """

    op_domain = ""

    def _run(self, x, x_scale, x_zero_point=None, **_attributes):
        zero_point = 0 if x_zero_point is None else x_zero_point.astype(np.int32)
        return ((x.astype(np.int32) - zero_point).astype(np.float32) * x_scale.astype(np.float32),)


def model_path(variant: str) -> Path:
    return SAMPLE_DIR / "models" / sample.MODEL_FILES[variant]


def with_outputs(model: "onnx.ModelProto", *names: str) -> bytes:
    """The model with intermediate uint8 tensors added to its outputs."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.UINT8, None) for name in names)
    return model.SerializeToString()


def ort_session(model: bytes | str, optimization: str = "ORT_ENABLE_ALL") -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def reference_evaluator(model: bytes | str) -> "reference.ReferenceEvaluator":
    return reference.ReferenceEvaluator(model, new_ops=[DequantizeLinear])


@pytest.fixture(scope="module")
def ground_truth() -> dict:
    return json.loads((SAMPLE_DIR / "annotations.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def images(ground_truth: dict) -> list[tuple[dict, np.ndarray]]:
    """(image entry, model input) per sample image: PIL resize, configs/base.yaml's mean and std."""
    config = yaml.safe_load((ROOT / "configs" / "base.yaml").read_text(encoding="utf-8"))["preprocess"]
    loaded = []
    for entry in sorted(ground_truth["images"], key=lambda image: image["id"]):
        with Image.open(SAMPLE_DIR / "images" / entry["file_name"]) as image:
            pixels = preprocess(
                image.convert("RGB"), size_hw=config["input_size"], mean=config["mean"], std=config["std"],
                scale=config.get("scale", 1.0 / 255.0), backend="pil",
            )
        loaded.append((entry, pixels[np.newaxis]))
    return loaded


def detect(run, images: list) -> list[list[np.ndarray]]:
    return [run(OUTPUTS, {"image": pixels}) for _, pixels in images]


def coco_stats(outputs: list, images: list, ground_truth: dict) -> list[float]:
    categories = label_map([category["id"] for category in ground_truth["categories"]])
    results = []
    for (entry, _), (boxes, labels, scores) in zip(images, outputs):
        results += to_coco_results(boxes[0], labels[0], scores[0], image_id=entry["id"], width=entry["width"],
                                   height=entry["height"], categories=categories)
    return score_detections(ground_truth, results, [entry["id"] for entry, _ in images]).stats


def expected_block_map(pixels: np.ndarray, params: "sample.QuantParams") -> tuple[np.ndarray, dict]:
    """The quantized block map computed in float64, and the values at each rounding point."""
    scaled = pixels.astype(np.float64) / params.input_scale
    centred = np.rint(scaled)  # quantized input minus its zero point
    accumulator = centred.reshape(1, 3, 24, sample.BLOCK, 24, sample.BLOCK).sum(axis=(3, 5))
    steps = accumulator / params.output_steps
    block_map = np.rint(steps) + params.output_zero_point
    rounding = {"input": scaled, "input_quantized": centred + params.input_zero_point,
                "accumulator": accumulator, "output": steps, "output_quantized": block_map}
    return block_map.astype(np.uint8), rounding


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize("variant", VARIANTS)
def test_models_use_standard_operators_and_small_weights(variant: str) -> None:
    model = onnx.load(str(model_path(variant)))
    assert {entry.domain for entry in model.opset_import} <= {"", "ai.onnx"}
    assert {node.domain for node in model.graph.node} == {""}
    op_types = {node.op_type for node in model.graph.node}
    assert "AveragePool" in op_types  # the fp32 part (cells and side strips) is unchanged
    expected = {"QuantizeLinear", "QLinearConv", "DequantizeLinear"} if variant == "int8" else \
        {"QuantizeLinear", "Conv", "DequantizeLinear"}
    assert expected <= op_types
    int8_weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.INT8]
    assert int8_weights
    for weights in int8_weights:
        assert WEIGHT_RANGE[0] <= weights.min() and weights.max() <= WEIGHT_RANGE[1]
    assert model_path(variant).read_bytes() == sample.build_quantized_detector(variant).SerializeToString()


@pytest.mark.parametrize("variant", VARIANTS)
def test_scales_make_the_arithmetic_exact(variant: str) -> None:
    params = sample.quantization_params(variant)
    for scale in (params.input_scale, params.weight_scale):
        assert math.frexp(scale)[0] == 0.5, f"{scale} is not a power of two"
    assert params.output_steps % 2 == 1
    assert np.float32(params.output_scale) == params.input_scale * params.weight_scale * params.output_steps
    # Every normalized level any image can produce (both ways of computing it) keeps the margin.
    levels = sample.normalized_levels().astype(np.float64) / params.input_scale
    assert sample.tie_distance(levels).min() >= sample.MIN_INPUT_TIE_MARGIN
    lowest, highest = np.rint(levels).min(), np.rint(levels).max()
    assert 0 <= lowest + params.input_zero_point and highest + params.input_zero_point <= 255
    # Block sums of any uint8 input fit the uint8 output without clamping.
    pixels = sample.BLOCK * sample.BLOCK
    for extreme in (0, 255):
        output = round(pixels * (extreme - params.input_zero_point) / params.output_steps) + params.output_zero_point
        assert 0 <= output <= 255


@pytest.mark.parametrize("variant", VARIANTS)
def test_tie_margins_on_the_sample_images(variant: str, images: list) -> None:
    """At each rounding point the value is far from a .5 tie, in float64 and as float32 computes it."""
    params = sample.quantization_params(variant)
    output_margin = 1.0 / (2 * params.output_steps)  # what N odd guarantees, in output steps
    multiplier = np.float32(np.float32(params.input_scale * params.weight_scale) / np.float32(params.output_scale))
    for entry, pixels in images:
        _, rounding = expected_block_map(pixels, params)
        input_margin = sample.tie_distance(rounding["input"]).min()
        assert input_margin >= sample.MIN_INPUT_TIE_MARGIN, (entry["id"], input_margin)
        assert rounding["input_quantized"].min() >= 0 and rounding["input_quantized"].max() <= 255
        # x / s is exact in float32 (s a power of two): division or reciprocal, no error.
        np.testing.assert_array_equal(pixels / np.float32(params.input_scale), rounding["input"])
        np.testing.assert_array_equal(pixels * np.float32(1 / params.input_scale), rounding["input"])

        accumulator = rounding["accumulator"]
        assert np.abs(accumulator).max() < 2**24  # exact in float32, and in a float Conv's partial sums
        assert sample.tie_distance(rounding["output"]).min() >= output_margin * (1 - 1e-9), entry["id"]
        # onnxruntime requantizes as float32(acc) * float32(x_scale * w_scale / y_scale): its error
        # is a small fraction of the margin, so it rounds the same way.
        requantized = accumulator.astype(np.float32) * multiplier
        assert np.abs(requantized.astype(np.float64) - rounding["output"]).max() < output_margin / 10
        np.testing.assert_array_equal(np.rint(requantized), np.rint(rounding["output"]))
        assert rounding["output_quantized"].min() >= 0 and rounding["output_quantized"].max() <= 255


# --------------------------------------------------------------------------- runtimes agree


@pytest.mark.parametrize("variant", VARIANTS)
def test_block_map_is_exact_in_every_runtime(variant: str, images: list) -> None:
    params = sample.quantization_params(variant)
    model = with_outputs(onnx.load(str(model_path(variant))), "block_sums_quantized")
    runs = {
        "onnxruntime": ort_session(model).run,
        "onnxruntime, no graph optimization": ort_session(model, "ORT_DISABLE_ALL").run,
        "onnx.reference": reference_evaluator(model).run,
    }
    for entry, pixels in images[:3]:
        expected, _ = expected_block_map(pixels, params)
        for name, run in runs.items():
            (block_map,) = run(["block_sums_quantized"], {"image": pixels})
            np.testing.assert_array_equal(block_map, expected, err_msg=f"{name}, image {entry['id']}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnxruntime_and_reference_give_the_same_detections(variant: str, images: list, ground_truth: dict) -> None:
    path = str(model_path(variant))
    by_runtime = {
        "onnxruntime": detect(ort_session(path).run, images),
        "onnxruntime, no graph optimization": detect(ort_session(path, "ORT_DISABLE_ALL").run, images),
        "onnx.reference": detect(reference_evaluator(path).run, images),
    }
    expected = by_runtime.pop("onnxruntime")
    expected_stats = coco_stats(expected, images, ground_truth)
    for name, outputs in by_runtime.items():
        for (entry, _), got, want in zip(images, outputs, expected):
            (boxes, labels, scores), (want_boxes, want_labels, want_scores) = got, want
            message = f"{name}, image {entry['id']}"
            np.testing.assert_array_equal(labels, want_labels, err_msg=message)
            np.testing.assert_allclose(boxes, want_boxes, rtol=0, atol=TOLERANCE, err_msg=message)
            np.testing.assert_allclose(scores, want_scores, rtol=0, atol=TOLERANCE, err_msg=message)
        assert coco_stats(outputs, images, ground_truth) == expected_stats, name


def test_qoperator_and_qdq_with_the_same_steps_are_the_same_model(images: list) -> None:
    """The two formats differ only in their output step N; with one N they agree exactly."""
    steps = sample.QUANT_OUTPUT_STEPS["qdq"]
    sessions = [ort_session(sample.build_quantized_detector(variant, steps).SerializeToString())
                for variant in VARIANTS]
    for _, pixels in images:
        first, second = (session.run(OUTPUTS, {"image": pixels}) for session in sessions)
        for left, right in zip(first, second):
            np.testing.assert_array_equal(left, right)
