"""Synthetic SSD-shaped ONNX detectors and COCO sets: one factory for the sample, bench and tests.

Every detector here has the zoo models' I/O contract: input ``image`` float32 (B, 3, H, W);
outputs boxes (B, N, 4) normalized xyxy, labels (B, N) int64 contiguous 1..80, scores (B, N).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ssd_eval.data.coco import COCO_CATEGORIES
from ssd_eval.inference.postprocess import COCO_80_IDS

COCO_CATEGORY_IDS = COCO_80_IDS


def ssd_model(nodes: list, initializers: list, *, name: str, input_hw: Sequence[int], detections: int,
              output_names: Sequence[str] = ("bboxes", "labels", "scores"), input_name: str = "image",
              batch: int | str = 1, opset: int = 12, ir_version: int = 7, producer_name: str = "ssd_eval",
              producer_version: str = "", doc_string: str = "") -> "onnx.ModelProto":  # noqa: F821
    """A checked ONNX model of ``nodes`` with the SSD I/O contract (float image in; boxes, labels,
    scores out, named by ``output_names``); ``batch`` may be a symbolic dimension name."""
    import onnx
    from onnx import TensorProto, helper

    boxes_name, labels_name, scores_name = output_names
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, *input_hw])],
        outputs=[
            helper.make_tensor_value_info(boxes_name, TensorProto.FLOAT, [batch, detections, 4]),
            helper.make_tensor_value_info(labels_name, TensorProto.INT64, [batch, detections]),
            helper.make_tensor_value_info(scores_name, TensorProto.FLOAT, [batch, detections]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer_name,
                              producer_version=producer_version, doc_string=doc_string)
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def write_model(model: "onnx.ModelProto", path: str | Path) -> Path:  # noqa: F821
    """Check an ONNX model and write it to ``path`` (one file, no external data); returns the path."""
    import onnx

    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def fixed_detector(path: Path, boxes: Sequence[Sequence[float]], labels: Sequence[int], scores: Sequence[float],
                   *, input_hw: tuple[int, int] = (1200, 1200),
                   output_names: tuple[str, str, str] = ("bboxes", "labels", "scores")) -> Path:
    """An SSD-shaped ONNX model that returns the same detections for every image."""
    from onnx import helper, numpy_helper

    count = len(scores)
    box_name, label_name, score_name = output_names
    init = [
        numpy_helper.from_array(np.asarray(boxes, dtype=np.float32).reshape(1, count, 4), "const_boxes"),
        numpy_helper.from_array(np.asarray(labels, dtype=np.int64).reshape(1, count), "const_labels"),
        numpy_helper.from_array(np.asarray(scores, dtype=np.float32).reshape(1, count), "const_scores"),
        numpy_helper.from_array(np.zeros((1, 1, 1), dtype=np.float32), "zero"),
    ]
    nodes = [
        # A data dependency on the input (times zero) keeps the graph honest: it reads the image.
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean"], ["mean3"], axes=[1, 2]),
        helper.make_node("Mul", ["mean3", "zero"], ["nothing"]),
        helper.make_node("Add", ["const_boxes", "nothing"], [box_name]),
        helper.make_node("Identity", ["const_labels"], [label_name]),
        helper.make_node("Squeeze", ["nothing"], ["nothing2"], axes=[2]),
        helper.make_node("Add", ["const_scores", "nothing2"], [score_name]),
    ]
    return write_model(ssd_model(nodes, init, name="fixed_detector", input_hw=input_hw, detections=count,
                                 output_names=output_names), path)


def lookup_detector(path: Path, fingerprints: Sequence[float], boxes: np.ndarray, labels: np.ndarray,
                    scores: np.ndarray, *, input_hw: tuple[int, int],
                    output_names: tuple[str, str, str] = ("bboxes", "labels", "scores")) -> Path:
    """An SSD-shaped ONNX model that recognizes each image by the mean of its input tensor and
    returns that image's row of ``boxes`` (I, N, 4), ``labels`` (I, N) and ``scores`` (I, N).

    ``fingerprints[i]`` is the input mean of image i under the preprocessing the run will use.
    """
    from onnx import helper, numpy_helper

    count = boxes.shape[1]
    init = [
        numpy_helper.from_array(np.asarray(fingerprints, dtype=np.float32), "fingerprints"),
        numpy_helper.from_array(np.asarray(boxes, dtype=np.float32), "table_boxes"),
        numpy_helper.from_array(np.asarray(labels, dtype=np.int64), "table_labels"),
        numpy_helper.from_array(np.asarray(scores, dtype=np.float32), "table_scores"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),  # (1,)
        helper.make_node("Sub", ["fingerprints", "mean"], ["difference"]),
        helper.make_node("Abs", ["difference"], ["distance"]),
        helper.make_node("ArgMin", ["distance"], ["row"], axis=0, keepdims=1),  # (1,)
        helper.make_node("Gather", ["table_boxes", "row"], [output_names[0]], axis=0),
        helper.make_node("Gather", ["table_labels", "row"], [output_names[1]], axis=0),
        helper.make_node("Gather", ["table_scores", "row"], [output_names[2]], axis=0),
    ]
    return write_model(ssd_model(nodes, init, name="lookup_detector", input_hw=input_hw, detections=count,
                                 output_names=output_names), path)


# The preprocessing probe's fingerprint of an input tensor, per channel R, G, B: the mean, and the logs of
# the mean absolute difference between horizontal and between vertical neighbours. The means see the
# normalization (mean, std, channel order); the neighbour differences see the resampling filter (bicubic's
# overshoot and nearest's steps make them larger than bilinear's; antialiasing makes them smaller) and std.
PROBE_FINGERPRINT_SIZE = 9


def probe_fingerprint(tensor: np.ndarray) -> np.ndarray:
    """float64 (..., 9) fingerprint of (..., 3, H, W) input tensors, as ``preprocessing_probe`` computes it:
    per-channel means, then log mean |x[:, :, 1:] - x[:, :, :-1]|, then log mean |x[:, 1:, :] - x[:, :-1, :]|."""
    values = np.asarray(tensor, dtype=np.float64)
    means = values.mean(axis=(-2, -1))
    across = np.log(np.abs(np.diff(values, axis=-1)).mean(axis=(-2, -1)))
    down = np.log(np.abs(np.diff(values, axis=-2)).mean(axis=(-2, -1)))
    return np.concatenate([means, across, down], axis=-1)


def ground_truth_tables(annotations: dict[str, Any], image_ids: Sequence[int],
                        score: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's non-crowd ground truth as detector output rows: boxes (I, N, 4) normalized xyxy,
    contiguous labels (I, N) (label k: the k-th of the 80 COCO ids, postprocess.COCO_80_IDS; objects of
    other categories are left out: no label can name them), scores (I, N).

    Real rows score ``score`` minus 0.001 per row; rows past an image's objects are padding: a
    zero-size box at the image's corner, label 1, score 0 (last in every ranking, so never costing AP).
    """
    contiguous = {cat_id: k for k, cat_id in enumerate(COCO_80_IDS, 1)}
    sizes = {entry["id"]: (entry["width"], entry["height"]) for entry in annotations["images"]}
    objects: dict[int, list[dict]] = {image_id: [] for image_id in image_ids}
    for ann in annotations["annotations"]:
        if ann["image_id"] in objects and not ann.get("iscrowd", 0) and ann["category_id"] in contiguous:
            objects[ann["image_id"]].append(ann)
    count = max([1, *(len(rows) for rows in objects.values())])
    boxes = np.zeros((len(image_ids), count, 4), dtype=np.float32)
    labels = np.ones((len(image_ids), count), dtype=np.int64)
    scores = np.zeros((len(image_ids), count), dtype=np.float32)
    for i, image_id in enumerate(image_ids):
        width, height = sizes[image_id]
        for j, ann in enumerate(objects[image_id]):
            x, y, w, h = ann["bbox"]
            boxes[i, j] = (x / width, y / height, (x + w) / width, (y + h) / height)
            labels[i, j] = contiguous[ann["category_id"]]
            scores[i, j] = score - 0.001 * j
    return boxes, labels, scores


def preprocessing_probe(path: Path, fingerprints: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                        scores: np.ndarray, *, input_hw: tuple[int, int], gain: float = 1.0,
                        batch: int | str = "batch",
                        output_names: tuple[str, str, str] = ("bboxes", "labels", "scores")) -> Path:
    """An SSD-shaped ONNX model whose detections degrade smoothly as its input strays from the
    preprocessing it expects: it sees resampling filters and normalization errors, however mild.

    ``fingerprints[i]`` is ``probe_fingerprint`` of image i's input tensor under the right
    preprocessing (worked out by the caller, independently of the harness). For each input the model
    computes the same fingerprint (in float32, reducing rows first so that it agrees to about 1e-6),
    takes the image i whose expected fingerprint is nearest (Euclidean) and calls that distance the
    severity s. It returns image i's row of ``boxes`` (I, N, 4), ``labels`` (I, N) and ``scores``
    (I, N), each box moved right and down by t * k times its own width and height and each score
    multiplied by exp(-t) (so ``-log(score / table score)`` reads t back), where t = min(gain * s, 4)
    and k runs over 0.5..1.5 across the table's boxes, so that the mAP falls smoothly, not in one step.

    With ground-truth boxes (``ground_truth_tables``) the mAP is 1 at the right preprocessing. A box
    moved by a fraction u of its size keeps an IoU of (1 - u)^2 / (1 + 2u - u^2) with its ground
    truth: COCO's IoU thresholds 0.95 ... 0.5 are lost one by one as u passes about 0.013 ... 0.18.
    Severities on the sample at 1200x1200 (gain 1): about 1e-6 at the right preprocessing; 0.036 for a
    reversed std; 0.04 to 0.09 for OpenCV's bilinear resize instead of PIL's; 0.08 to 0.39 for bicubic
    or nearest instead of bilinear; 0.4 or more for a reversed mean or BGR order (enough to pick
    another image's row at times, which only lowers the mAP further: sample images lie 0.45 or more
    apart). The batch dimension is symbolic by default; each image of a batch is looked up on its own.
    """
    from onnx import helper, numpy_helper

    fingerprints = np.asarray(fingerprints, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    images, count = boxes.shape[:2]
    if fingerprints.shape != (images, PROBE_FINGERPRINT_SIZE):
        raise ValueError(f"fingerprints must be ({images}, {PROBE_FINGERPRINT_SIZE}), got {fingerprints.shape}")
    height, width = input_hw
    # Each box's share of the translation: golden-ratio steps over 0.5..1.5, in table order.
    share = 0.5 + np.mod(np.arange(images * count) * 0.6180339887, 1.0).reshape(images, count, 1)
    extent = np.concatenate([boxes[..., 2:] - boxes[..., :2]] * 2, axis=-1)
    shift = (share * extent).astype(np.float32)
    init = [
        numpy_helper.from_array(fingerprints, "expected_fingerprints"),
        numpy_helper.from_array(boxes, "table_boxes"),
        numpy_helper.from_array(shift, "table_shift"),
        numpy_helper.from_array(np.asarray(labels, dtype=np.int64), "table_labels"),
        numpy_helper.from_array(np.asarray(scores, dtype=np.float32), "table_scores"),
        numpy_helper.from_array(np.asarray(gain, dtype=np.float32), "gain"),
        numpy_helper.from_array(np.asarray(4.0, dtype=np.float32), "most"),
        numpy_helper.from_array(np.asarray(-1.0, dtype=np.float32), "minus_one"),
    ]
    # Means of rows, then the mean of those: float32 sums of 1.4 M values at once drift by 1e-3 relative.
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["row_means"], axes=[3], keepdims=0),
        helper.make_node("ReduceMean", ["row_means"], ["means"], axes=[2], keepdims=0),  # (B, 3)
    ]
    logs = []
    for axis, length, name in ((3, width, "across"), (2, height, "down")):
        # Neighbour differences along one axis: x[1:] - x[:-1].
        init += [numpy_helper.from_array(np.asarray([axis], dtype=np.int64), f"{name}_axis"),
                 numpy_helper.from_array(np.asarray([1], dtype=np.int64), f"{name}_start"),
                 numpy_helper.from_array(np.asarray([0], dtype=np.int64), f"{name}_zero"),
                 numpy_helper.from_array(np.asarray([length], dtype=np.int64), f"{name}_end"),
                 numpy_helper.from_array(np.asarray([length - 1], dtype=np.int64), f"{name}_last")]
        nodes += [
            helper.make_node("Slice", ["image", f"{name}_start", f"{name}_end", f"{name}_axis"], [f"{name}_next"]),
            helper.make_node("Slice", ["image", f"{name}_zero", f"{name}_last", f"{name}_axis"], [f"{name}_this"]),
            helper.make_node("Sub", [f"{name}_next", f"{name}_this"], [f"{name}_step"]),
            helper.make_node("Abs", [f"{name}_step"], [f"{name}_size"]),
            helper.make_node("ReduceMean", [f"{name}_size"], [f"{name}_rows"], axes=[3], keepdims=0),
            helper.make_node("ReduceMean", [f"{name}_rows"], [f"{name}_mean"], axes=[2], keepdims=0),
            helper.make_node("Log", [f"{name}_mean"], [f"{name}_log"]),
        ]
        logs.append(f"{name}_log")
    nodes += [
        helper.make_node("Concat", ["means", *logs], ["fingerprint"], axis=1),  # (B, 9)
        helper.make_node("Unsqueeze", ["fingerprint"], ["fingerprint3"], axes=[1]),  # (B, 1, 9)
        helper.make_node("Sub", ["fingerprint3", "expected_fingerprints"], ["offset"]),  # (B, I, 9)
        helper.make_node("Mul", ["offset", "offset"], ["offset2"]),
        helper.make_node("ReduceSum", ["offset2"], ["distance2"], axes=[2], keepdims=0),  # (B, I)
        helper.make_node("Sqrt", ["distance2"], ["distance"]),
        helper.make_node("ArgMin", ["distance"], ["row"], axis=1, keepdims=0),  # (B,)
        helper.make_node("ReduceMin", ["distance"], ["severity"], axes=[1], keepdims=1),  # (B, 1)
        helper.make_node("Mul", ["severity", "gain"], ["scaled"]),
        helper.make_node("Min", ["scaled", "most"], ["t"]),  # (B, 1)
        helper.make_node("Unsqueeze", ["t"], ["t3"], axes=[2]),  # (B, 1, 1)
        helper.make_node("Gather", ["table_boxes", "row"], ["picked_boxes"], axis=0),  # (B, N, 4)
        helper.make_node("Gather", ["table_shift", "row"], ["picked_shift"], axis=0),
        helper.make_node("Mul", ["picked_shift", "t3"], ["moved"]),
        helper.make_node("Add", ["picked_boxes", "moved"], [output_names[0]]),
        helper.make_node("Gather", ["table_labels", "row"], [output_names[1]], axis=0),
        helper.make_node("Gather", ["table_scores", "row"], ["picked_scores"], axis=0),  # (B, N)
        helper.make_node("Mul", ["t", "minus_one"], ["minus_t"]),
        helper.make_node("Exp", ["minus_t"], ["fade"]),
        helper.make_node("Mul", ["picked_scores", "fade"], [output_names[2]]),
    ]
    return write_model(ssd_model(nodes, init, name="preprocessing_probe", input_hw=input_hw, detections=count,
                                 output_names=output_names, batch=batch), path)


@dataclass(frozen=True)
class DetectorSpec:
    """Shape and cost of a synthetic SSD-shaped detector.

    The backbone is one stride-2 3x3 conv per entry of ``channels``, each followed by
    ``extra_convs[i]`` stride-1 3x3 convs of the same width; every cell of the last
    feature map is an anchor.
    """

    input_size: tuple[int, int] = (1200, 1200)
    channels: tuple[int, ...] = (8, 8, 8, 8, 8)
    extra_convs: tuple[int, ...] = (0, 0, 0, 0, 0)
    detections: int = 100
    seed: int = 0
    output_names: tuple[str, str, str] = ("bboxes", "labels", "scores")


# A model that takes a few tenths of a second per image on a 2-core machine: the
# harness's overhead shows against a realistic cost, not against a free model.
COSTLY_DETECTOR = DetectorSpec(channels=(16, 48, 96, 128, 128), extra_convs=(0, 0, 24, 6, 2))
# About the real SSD-ResNet34's 433 GFLOPs per image (see synthetic_gflops): full mode uses
# it so the harness's overhead is measured against the cost it will really sit beside.
SSD_LIKE_DETECTOR = DetectorSpec(channels=(16, 48, 96, 128, 128), extra_convs=(0, 0, 96, 24, 8))
# Nearly free to run: throughput and memory are the harness's own.
CHEAP_DETECTOR = DetectorSpec()


def synthetic_gflops(spec: DetectorSpec) -> float:
    """Convolution GFLOPs (2 x multiply-adds) of one image through a synthetic detector."""
    height, width = spec.input_size
    channels_in, total = 3, 0.0
    for channels, extra in zip(spec.channels, spec.extra_convs):
        height, width = -(-height // 2), -(-width // 2)
        total += height * width * 9 * 2 * (channels_in * channels + extra * channels * channels)
        channels_in = channels
    return total / 1e9


def build_synthetic_detector(spec: DetectorSpec = CHEAP_DETECTOR):
    """A deterministic SSD-shaped ONNX model (opset 12) built in memory.

    Input ``image`` float32 [1, 3, H, W]; outputs boxes float32 [1, N, 4] (normalized
    x_min <= x_max, y_min <= y_max in [0, 1]), labels int64 [1, N] in 1..80 and scores
    float32 [1, N] sorted descending, all depending on the pixels.
    """
    from onnx import helper, numpy_helper

    if len(spec.channels) != len(spec.extra_convs) or not spec.channels:
        raise ValueError("channels and extra_convs must be non-empty and of the same length")
    height, width = spec.input_size
    for _ in spec.channels:
        height, width = (height + 1) // 2, (width + 1) // 2
    anchors = height * width
    if not 1 <= spec.detections <= anchors:
        raise ValueError(f"detections must be between 1 and the {anchors} anchors of the last feature map")
    rng = np.random.default_rng(spec.seed)
    boxes_name, labels_name, scores_name = spec.output_names
    classes = len(COCO_CATEGORY_IDS)
    initializers = []
    nodes = []

    def constant(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def conv(source: str, c_in: int, c_out: int, stride: int, kernel: int, name: str, relu: bool = True) -> str:
        fan_in = c_in * kernel * kernel
        weight = (rng.standard_normal((c_out, c_in, kernel, kernel)) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        bias = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
        pad = kernel // 2
        nodes.append(helper.make_node(
            "Conv", [source, constant(f"{name}_w", weight), constant(f"{name}_b", bias)], [f"{name}_out"],
            name=name, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4))
        if not relu:
            return f"{name}_out"
        nodes.append(helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"{name}_relu"))
        return f"{name}_relu"

    features, c_in = "image", 3
    for stage, (c_out, extra) in enumerate(zip(spec.channels, spec.extra_convs)):
        features = conv(features, c_in, c_out, 2, 3, f"down{stage}")
        for repeat in range(extra):
            features = conv(features, c_out, c_out, 1, 3, f"stage{stage}_conv{repeat}")
        c_in = c_out
    # Each channel normalized over the cells, so anchors differ by what they see, not by a shared offset.
    nodes.append(helper.make_node(
        "InstanceNormalization",
        [features, constant("norm_scale", np.ones(c_in, dtype=np.float32)),
         constant("norm_bias", np.zeros(c_in, dtype=np.float32))], ["head_features"], name="head_norm"))
    logits_map = conv("head_features", c_in, classes, 1, 1, "class_head", relu=False)
    deltas_map = conv("head_features", c_in, 4, 1, 1, "box_head", relu=False)

    # Anchor centres of the last feature map's cells, in (x, y) order.
    ys, xs = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")
    centres = np.stack([xs.ravel(), ys.ravel()], axis=-1)[np.newaxis].astype(np.float32)
    constant("anchor_centres", centres)
    constant("per_anchor_shape", np.asarray([1, -1, anchors], dtype=np.int64))
    constant("half_size_scale", np.asarray(0.2, dtype=np.float32))
    constant("half_size_floor", np.asarray(0.005, dtype=np.float32))
    constant("box_min", np.asarray(0.0, dtype=np.float32))
    constant("box_max", np.asarray(1.0, dtype=np.float32))
    constant("label_shift", np.asarray(1, dtype=np.int64))
    constant("detections_k", np.asarray([spec.detections], dtype=np.int64))
    constant("size_start", np.asarray([0], dtype=np.int64))
    constant("size_end", np.asarray([2], dtype=np.int64))
    constant("last_axis", np.asarray([2], dtype=np.int64))
    nodes += [
        helper.make_node("Reshape", [logits_map, "per_anchor_shape"], ["logits_nca"], name="flatten_logits"),
        helper.make_node("Transpose", ["logits_nca"], ["logits"], name="logits_last", perm=[0, 2, 1]),
        helper.make_node("Softmax", ["logits"], ["probs"], name="class_softmax", axis=2),
        helper.make_node("ReduceMax", ["probs"], ["anchor_scores"], name="best_score", axes=[2], keepdims=0),
        helper.make_node("ArgMax", ["probs"], ["label_index"], name="best_label", axis=2, keepdims=0),
        helper.make_node("Add", ["label_index", "label_shift"], ["anchor_labels"], name="contiguous_label"),
        helper.make_node("Reshape", [deltas_map, "per_anchor_shape"], ["deltas_nca"], name="flatten_deltas"),
        helper.make_node("Transpose", ["deltas_nca"], ["deltas"], name="deltas_last", perm=[0, 2, 1]),
        helper.make_node("Slice", ["deltas", "size_start", "size_end", "last_axis"], ["size_deltas"],
                         name="size_deltas"),
        helper.make_node("Sigmoid", ["size_deltas"], ["size_gate"], name="size_gate"),
        helper.make_node("Mul", ["size_gate", "half_size_scale"], ["half_scaled"], name="half_scaled"),
        helper.make_node("Add", ["half_scaled", "half_size_floor"], ["half_size"], name="half_size"),
        helper.make_node("Sub", ["anchor_centres", "half_size"], ["corner_min"], name="corner_min"),
        helper.make_node("Add", ["anchor_centres", "half_size"], ["corner_max"], name="corner_max"),
        helper.make_node("Concat", ["corner_min", "corner_max"], ["anchor_boxes"], name="corners", axis=2),
        helper.make_node("Clip", ["anchor_boxes", "box_min", "box_max"], ["anchor_boxes_clipped"], name="clip"),
        helper.make_node("TopK", ["anchor_scores", "detections_k"], [scores_name, "top_indices"],
                         name="sort_by_score", axis=1, largest=1, sorted=1),
        helper.make_node("GatherElements", ["anchor_labels", "top_indices"], [labels_name], name="gather_labels",
                         axis=1),
        helper.make_node("Unsqueeze", ["top_indices"], ["top_indices_nd"], name="indices_nd", axes=[2]),
        helper.make_node("GatherND", ["anchor_boxes_clipped", "top_indices_nd"], [boxes_name], name="gather_boxes",
                         batch_dims=1),
    ]
    return ssd_model(nodes, initializers, name="ssd_eval_bench_detector", input_hw=spec.input_size,
                     detections=spec.detections, output_names=spec.output_names, producer_name="ssd_eval.engine.bench")


def write_synthetic_detector(path: str | Path, spec: DetectorSpec = CHEAP_DETECTOR) -> Path:
    """``build_synthetic_detector(spec)`` saved to ``path``."""
    return write_model(build_synthetic_detector(spec), path)


def coco_categories() -> list[dict[str, Any]]:
    """The 80 COCO 2017 category ids (1..90 with the usual gaps), with placeholder names."""
    return [{"id": i, "name": name, "supercategory": group} for i, name, group in sorted(COCO_CATEGORIES)]


def write_synthetic_coco(directory: str | Path, images: int, *, seed: int = 0,
                         size_range: tuple[int, int] = (240, 480)) -> tuple[Path, Path]:
    """A COCO-format set of ``images`` small JPEGs with coloured boxes and their annotations.

    Returns (annotation json, image folder). About one image in twenty has no annotation.
    """
    from PIL import Image, ImageDraw

    directory = Path(directory)
    image_dir = directory / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries, annotations = [], []
    for index in range(images):
        image_id = 1000 + 7 * index
        width, height = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        base = rng.integers(90, 170, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        picture = Image.fromarray(base).resize((width, height), Image.BILINEAR)
        draw = ImageDraw.Draw(picture)
        objects = 0 if rng.random() < 0.05 else int(rng.integers(1, 7))
        for _ in range(objects):
            w = int(rng.integers(8, width // 2))
            h = int(rng.integers(8, height // 2))
            x = int(rng.integers(0, width - w))
            y = int(rng.integers(0, height - h))
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colour)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": int(rng.choice(COCO_CATEGORY_IDS)),
                "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0,
            })
        file_name = f"{image_id:012d}.jpg"
        picture.save(image_dir / file_name, format="JPEG", quality=85)
        entries.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    annotation_path = directory / "annotations.json"
    annotation_path.write_text(json.dumps({
        "info": {"description": "ssd_eval bench synthetic set", "seed": seed},
        "images": entries, "annotations": annotations, "categories": coco_categories(),
    }))
    return annotation_path, image_dir


def synthetic_scoring_case(images: int, detections_per_image: int = 100, *,
                           seed: int = 0) -> tuple[dict[str, Any], list[dict], list[int]]:
    """Synthetic ground truth, detections and image ids for timing the scorers.

    Each image has 1..12 boxes (a few crowd regions, all COCO area ranges); its
    detections mix jittered copies of the truth (right and wrong class) with random boxes.
    """
    rng = np.random.default_rng(seed)
    category_ids = np.asarray(COCO_CATEGORY_IDS)
    image_entries, annotations, detections = [], [], []
    for index in range(images):
        image_id = index + 1
        width, height = 640, int(rng.choice([360, 427, 480, 512]))
        image_entries.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width,
                              "height": height})
        count = int(rng.integers(1, 13))
        sizes = rng.choice([12.0, 48.0, 160.0], size=count) * rng.uniform(0.6, 1.6, size=(2, count))
        w = np.minimum(sizes[0], width - 2)
        h = np.minimum(sizes[1], height - 2)
        x = rng.uniform(0, width - w)
        y = rng.uniform(0, height - h)
        cats = rng.choice(category_ids, size=count)
        crowd = rng.random(count) < 0.01
        for k in range(count):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(cats[k]),
                "bbox": [float(x[k]), float(y[k]), float(w[k]), float(h[k])],
                "area": float(w[k] * h[k]), "iscrowd": int(crowd[k]),
            })
        source = rng.integers(0, count, size=detections_per_image)
        near_truth = rng.random(detections_per_image) < 0.5
        jitter = rng.normal(0.0, 0.12, size=(4, detections_per_image))
        dw = np.where(near_truth, w[source] * np.exp(jitter[2]), rng.uniform(4, width / 2, detections_per_image))
        dh = np.where(near_truth, h[source] * np.exp(jitter[3]), rng.uniform(4, height / 2, detections_per_image))
        dx = np.where(near_truth, x[source] + jitter[0] * w[source], rng.uniform(0, width, detections_per_image))
        dy = np.where(near_truth, y[source] + jitter[1] * h[source], rng.uniform(0, height, detections_per_image))
        dx = np.clip(dx, 0, width - 1)
        dy = np.clip(dy, 0, height - 1)
        dw = np.minimum(dw, width - dx)
        dh = np.minimum(dh, height - dy)
        right_class = near_truth & (rng.random(detections_per_image) < 0.7)
        dcat = np.where(right_class, cats[source], rng.choice(category_ids, size=detections_per_image))
        score = np.where(right_class, rng.uniform(0.3, 1.0, detections_per_image),
                         rng.uniform(0.0, 0.6, detections_per_image))
        for k in np.argsort(-score, kind="stable"):
            detections.append({
                "image_id": image_id, "category_id": int(dcat[k]),
                "bbox": [round(float(dx[k]), 2), round(float(dy[k]), 2), round(float(dw[k]), 2),
                         round(float(dh[k]), 2)],
                "score": round(float(score[k]), 5),
            })
    gt = {"images": image_entries, "annotations": annotations, "categories": coco_categories()}
    return gt, detections, [e["id"] for e in image_entries]


def noisy_detections(gt: dict[str, Any], *, seed: int = 0, false_positives: int = 30) -> list[dict]:
    """COCO results of a noisy detector on any ground truth: per image (ascending id), 80 % of its boxes
    found with jitter (15 % of those with a random class), then ``false_positives`` random boxes;
    continuous scores. Seeded (PCG64): the same detections on every machine."""
    rng = np.random.Generator(np.random.PCG64(seed))
    categories = sorted(c["id"] for c in gt["categories"])
    sizes = {i["id"]: (i["width"], i["height"]) for i in gt["images"]}
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    detections = []
    for image_id in sorted(sizes):
        width, height = sizes[image_id]
        for ann in by_image.get(image_id, []):
            if rng.random() < 0.2:
                continue
            x, y, w, h = ann["bbox"]
            j = rng.normal(0, 0.1, 4)
            category = ann["category_id"] if rng.random() < 0.85 else int(rng.choice(categories))
            detections.append({"image_id": image_id, "category_id": category,
                               "bbox": [x + j[0] * w, y + j[1] * h, w * np.exp(j[2]), h * np.exp(j[3])],
                               "score": float(rng.uniform(0.2, 1.0))})
        for _ in range(false_positives):
            w, h = rng.uniform(8, width / 2), rng.uniform(8, height / 2)
            detections.append({"image_id": image_id, "category_id": int(rng.choice(categories)),
                               "bbox": [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h],
                               "score": float(rng.uniform(0.0, 0.7))})
    return detections
