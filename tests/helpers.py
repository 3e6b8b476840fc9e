"""Builders for test fixtures: tiny COCO sets on disk and fixed-output SSD-shaped models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

# Five real COCO categories with a gap (id 12 does not exist): label k -> k-th smallest id.
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


def fixed_detector(path: Path, boxes: Sequence[Sequence[float]], labels: Sequence[int], scores: Sequence[float],
                   *, input_hw: tuple[int, int] = (1200, 1200),
                   output_names: tuple[str, str, str] = ("bboxes", "labels", "scores")) -> Path:
    """An SSD-shaped ONNX model that returns the same detections for every image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

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
    graph = helper.make_graph(
        nodes, "fixed_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, *input_hw])],
        [helper.make_tensor_value_info(box_name, TensorProto.FLOAT, [1, count, 4]),
         helper.make_tensor_value_info(label_name, TensorProto.INT64, [1, count]),
         helper.make_tensor_value_info(score_name, TensorProto.FLOAT, [1, count])],
        init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


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
