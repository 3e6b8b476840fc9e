"""Builders for test fixtures: tiny COCO sets on disk, fixed-output SSD-shaped models, metrics.json results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ssd_eval.scoring.cocoeval import STAT_NAMES
from ssd_eval.testing.synthetic import fixed_detector, lookup_detector  # noqa: F401  (re-exported for the tests)

# Five real COCO categories with a gap (id 12 does not exist). A model's label k is the k-th of the 80 COCO
# ids (postprocess.COCO_80_IDS), so their labels are 1, 3, 11, 12 and 17.
CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 11, "name": "fire hydrant", "supercategory": "outdoor"},
    {"id": 13, "name": "stop sign", "supercategory": "outdoor"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
]


def write_coco(root: Path, images: Sequence[dict], annotations: Sequence[dict],
               categories: Sequence[dict] = CATEGORIES) -> tuple[Path, Path]:
    """Write images (solid grey JPEGs of the given size/mode) and an annotation file.

    Each image dict: id, width, height, optional mode ("RGB", "L", "CMYK") and colour.
    Each annotation dict: image_id, category_id, bbox, optional iscrowd. Returns
    (annotation path, image dir).
    """
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for image in images:
        name = f"{image['id']:012d}.jpg"
        mode = image.get("mode", "RGB")
        colour = image.get("colour", {"RGB": (120, 130, 140), "L": 128, "CMYK": (10, 20, 30, 0)}[mode])
        Image.new(mode, (image["width"], image["height"]), colour).save(image_dir / name, quality=95)
        entries.append({"id": image["id"], "file_name": name, "width": image["width"], "height": image["height"]})
    anns = []
    for number, ann in enumerate(annotations, start=1):
        x, y, w, h = ann["bbox"]
        anns.append({
            "id": number, "image_id": ann["image_id"], "category_id": ann["category_id"],
            "bbox": [float(v) for v in ann["bbox"]], "area": float(w * h),
            "iscrowd": int(ann.get("iscrowd", 0)),
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
        })
    annotation_path = root / "annotations.json"
    annotation_path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": list(categories)}))
    return annotation_path, image_dir


# Real val2017 ids (all in the real 200-image subset) of 3 to 6 digits: sorted as strings they fall in another
# order ("10764" < "139" < ... < "802") than as numbers, which the sample's own ids (all 3 digits) cannot show.
REAL_SHAPED_IDS = [139, 802, 5001, 6818, 10764, 17627, 570448, 577539]


def real_shaped_sample(root: Path, sample: Path) -> tuple[Path, Path]:
    """The sample's 8 images and annotations (``sample``: data/sample) renumbered in order to REAL_SHAPED_IDS, each
    image file renamed as COCO names it (000000577539.jpg): the same pixels, so the sample's models give the same
    detections. Returns (annotation path, image dir) under ``root``."""
    gt = json.loads((sample / "annotations.json").read_text())
    new_id = dict(zip(sorted(image["id"] for image in gt["images"]), REAL_SHAPED_IDS, strict=True))
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    for image in gt["images"]:
        name = f"{new_id[image['id']]:012d}.jpg"
        shutil.copyfile(sample / "images" / image["file_name"], image_dir / name)
        image.update(id=new_id[image["id"]], file_name=name)
    for ann in gt["annotations"]:
        ann["image_id"] = new_id[ann["image_id"]]
    annotation_path = root / "annotations.json"
    annotation_path.write_text(json.dumps(gt))
    return annotation_path, image_dir


def config_dict(model: Path, annotations: Path, images: Path, out: Path, **sections) -> dict:
    """A plain config mapping for the Python API, with small, fast settings."""
    data = {
        "variant": "test",
        "model": {"path": str(model)},
        "dataset": {"annotations": str(annotations), "images": str(images)},
        "preprocess": {"input_size": [1200, 1200]},
        "pipeline": {"workers": 1},
        "output": {"dir": str(out)},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return data


def metrics_document(variant: str, *, mAP: float, AP50: float | None = None, parent: str | None = None,
                     published: float | None = None, protocol: str = "coco", images: int = 5000,
                     image_ids: str | None = None, annotations: str = "ann-sha",
                     providers: Sequence[str] = ("CPUExecutionProvider",), cpu: str = "Xeon Platinum 8280",
                     cores: int = 4, intra: int = 0, inter: int = 0, images_per_s: float = 10.0,
                     date: str = "2026-11-25T16:00:00+00:00", model_sha: str = "ab" * 32,
                     per_category: dict[str, float] | None = None,
                     published_protocol: str | None = None) -> dict:
    """A synthetic metrics.json dict following docs/FORMATS.md (schema 1).

    AP50 defaults to 1.8 * mAP, image_ids to "ids-<images>". The iou50 curve ends in
    COCOeval's -1 ("no data") marks.
    """
    stats = [mAP, mAP * 1.8 if AP50 is None else AP50, mAP * 1.05, 0.05, 0.2, 0.3, 0.2, 0.3, 0.32, 0.1, 0.35, 0.5]
    data = {
        "schema": 1, "variant": variant, "parent": parent, "published_map": published,
        "published_protocol": published_protocol if published_protocol or published is None else "inc",
        "protocol": protocol,
        "protocol_switches": {"resize_backend": "pil", "skip_images_without_annotations": False,
                              "crowd_as_ground_truth": False},
        "stats": stats,
        "per_category_ap": (dict(per_category) if per_category is not None
                            else {"person": 0.31, "car": 0.2, "toaster": -1.0}),
        "pr_curves": {"recall": [i / 100 for i in range(101)],
                      "iou50": [max(0.0, 1 - i / 90) if i < 95 else -1.0 for i in range(101)],
                      "iou75": [max(0.0, 0.8 - i / 110) for i in range(101)]},
        "provenance": {
            "model": {"path": f"data/models/{variant}.onnx", "sha256": model_sha, "size": 123},
            "annotations": {"path": "instances_val2017.json", "sha256": annotations},
            "images_dir": "data/coco/val2017", "config": {}, "config_sha256": "c" * 64,
            "images": images, "image_ids_sha256": f"ids-{images}" if image_ids is None else image_ids,
            "skipped_images": [], "detections": 1000, "limit": None, "shards": None,
            "runtime": {"onnxruntime": "1.20.0", "providers_requested": list(providers),
                        "providers": list(providers), "intra_op_threads": intra,
                        "inter_op_threads": inter, "batch_size": 1},
            "versions": {"python": "3.11.7"},
            "host": {"cpu": cpu, "cores": cores, "platform": "Linux"},
            "metrics_backend": "pycocotools", "wall_time_s": 100.0, "inference_time_s": 90.0,
            "images_per_s": images_per_s, "resumed_images": 0, "date": date,
        },
    }
    data.update(dict(zip(STAT_NAMES, stats)))
    return data


def write_metrics(results_dir: Path, data: dict, folder: str | None = None) -> Path:
    """Write data as <results_dir>/<folder or variant>/metrics.json; returns the path."""
    path = results_dir / (folder or data["variant"]) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def int8_conv_model(path: Path, kind: str = "qoperator", *, weight_range: tuple[int, int] = (-128, 127),
                    input_hw: tuple[int, int] = (64, 64), channels: tuple[int, int] = (3, 8), kernel: int = 3,
                    output_q: bool = True, seed: int = 0) -> Path:
    """A one-conv ONNX model: ``kind`` "qoperator" (u8s8 QLinearConv, uint8 in and out), "qdq"
    (Q/DQ around a float Conv whose int8 weight goes through DequantizeLinear; float in and out;
    ``output_q`` False drops the Q/DQ after the Conv) or "fp32" (a float Conv).

    Weights are drawn from ``weight_range`` (inclusive) and contain both its ends: (-128, 127) is
    full range, (-64, 63) what reduce_range keeps. Conv: stride 1, no padding, ``channels`` = (Cin, Cout).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cin, cout = channels
    low, high = weight_range
    rng = np.random.default_rng(seed)
    weight = rng.integers(low, high + 1, size=(cout, cin, kernel, kernel)).astype(np.int8)
    weight.flat[0], weight.flat[-1] = low, high
    height, width = input_hw
    out_shape = [1, cout, height - kernel + 1, width - kernel + 1]
    scalar = numpy_helper.from_array
    if kind == "qoperator":
        init = [scalar(np.array(0.0173, np.float32), "x_scale"), scalar(np.array(128, np.uint8), "x_zp"),
                scalar(weight, "w"), scalar(np.array(0.00931, np.float32), "w_scale"),
                scalar(np.array(0, np.int8), "w_zp"), scalar(np.array(1.37, np.float32), "y_scale"),
                scalar(np.array(128, np.uint8), "y_zp")]
        nodes = [helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"],
                                  ["y"], name="qconv")]
        in_type = out_type = TensorProto.UINT8
    elif kind == "qdq":
        init = [scalar(np.array(0.0173, np.float32), "x_scale"), scalar(np.array(128, np.uint8), "x_zp"),
                scalar(weight, "w"), scalar(np.array(0.00931, np.float32), "w_scale"),
                scalar(np.array(0, np.int8), "w_zp"), scalar(np.array(0.37, np.float32), "y_scale"),
                scalar(np.array(128, np.uint8), "y_zp")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="q_x"),
                 helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="dq_x"),
                 helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["wd"], name="dq_w"),
                 helper.make_node("Conv", ["xd", "wd"], ["conv_out" if output_q else "y"], name="conv")]
        if output_q:
            nodes += [helper.make_node("QuantizeLinear", ["conv_out", "y_scale", "y_zp"], ["yq"], name="q_y"),
                      helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zp"], ["y"], name="dq_y")]
        in_type = out_type = TensorProto.FLOAT
    elif kind == "fp32":
        init = [scalar(weight.astype(np.float32) * np.float32(0.01), "w")]
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
        in_type = out_type = TensorProto.FLOAT
    else:
        raise ValueError(f"unknown kind {kind!r}")
    graph = helper.make_graph(nodes, f"int8_conv_{kind}",
                              [helper.make_tensor_value_info("x", in_type, [1, cin, height, width])],
                              [helper.make_tensor_value_info("y", out_type, out_shape)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def plain_cocoeval(annotations: dict, results: list[dict], image_ids: Sequence[int] | None = None):
    """Plain pycocotools (no harness code): COCOeval of ``results`` against ``annotations`` over
    ``image_ids`` (default every image), evaluated, accumulated and summarized; its output swallowed."""
    import contextlib
    import copy
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = copy.deepcopy(annotations)
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(copy.deepcopy(results)), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def two_scores_detector(path: Path, boxes: Sequence[Sequence[float]], labels: Sequence[int],
                        scores: Sequence[float], scores_alt: Sequence[float], *,
                        input_hw: tuple[int, int] = (1200, 1200)) -> Path:
    """``fixed_detector`` with a fourth output, ``scores_alt``: other scores for the same boxes and labels
    (a model whose score output must be chosen with ``model.scores_output``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ssd_eval.testing.synthetic import write_model

    model = onnx.load(fixed_detector(path, boxes, labels, scores, input_hw=input_hw))
    count = len(scores_alt)
    model.graph.initializer.append(
        numpy_helper.from_array(np.asarray(scores_alt, dtype=np.float32).reshape(1, count), "const_scores_alt"))
    model.graph.node.append(helper.make_node("Add", ["const_scores_alt", "nothing2"], ["scores_alt"]))
    model.graph.output.append(helper.make_tensor_value_info("scores_alt", TensorProto.FLOAT, [1, count]))
    return write_model(model, path)
