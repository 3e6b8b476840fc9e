"""Deterministic generator for the embedded offline sample (``data/sample``).

The sample lets the harness run end to end without downloads: a handful of
synthetic COCO-style images, a COCO instances annotation file with the real 80
categories, and a tiny SSD-shaped ONNX detector (fp32, int8 QOperator, int8
QDQ, and a deliberately broken off-by-one variant) that follows the SSD-ResNet34
I/O contract described in the project's reference notes.

Objects are solid coloured rectangles laid out on coarse grids of the image
(with some deliberately off the grid, too small, occluded or unannotated).
The detector average-pools the image into 2x2, 3x3, 4x4 and 6x6 cells (the
anchors) and turns each cell's mean colour into class probabilities (nearest
colour prototype, softmax). A cell scores high for a class when it has that
class's colour and the strips on its four sides do not, i.e. when an object
fits the cell. Boxes are the cells shrunk by a per-class shape prior; per-class
non-maximum suppression and a top-N over (class, anchor) pairs finish it, as
in SSD. Its detections therefore depend on the pixels, and its mAP on the
sample is well away from both 0 and 1 (about 0.53 with pycocotools).

The int8 variants quantize the first block average by hand, with standard ONNX
operators and scales chosen so that no value is ever rounded at a tie: they
give the same detections on every CPU (see "quantization" below).

Run ``python -m ssd_eval.testing.sample --out data/sample`` to regenerate. The output is
byte-for-byte deterministic for fixed versions of numpy, pillow and onnx
(recorded in ``MANIFEST.json``, with onnxruntime's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ssd_eval.data.coco import COCO_CATEGORIES
from ssd_eval.errors import UserError
from ssd_eval.testing.synthetic import ssd_model, write_model

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx

# --------------------------------------------------------------------------- constants

INPUT_SIZE = 1200
INPUT_NAME = "image"
DEFAULT_OUTPUT_NAMES = ("bboxes", "labels", "scores")
NORMALIZE_MEAN = (0.485, 0.456, 0.406)
NORMALIZE_STD = (0.229, 0.224, 0.225)
OPSET = 12
IR_VERSION = 7  # the IR version that goes with opset 12
NUM_CLASSES = 81  # background + 80 contiguous labels
MAX_LABEL = 80
GRIDS = (2, 3, 4, 6)  # anchor grids; 1200 is divisible by each cell count
NUM_ANCHORS = sum(g * g for g in GRIDS)
NUM_DETECTIONS = 40
JPEG_QUALITY = 90
SEED = 20240611
SOFTMAX_TEMPERATURE = 1.0
BACKGROUND_RGB = (125, 125, 125)
SIDE_BACKGROUND_PENALTY = 2.0
BLOCK = 50  # pixels per side of the blocks the detector first averages over
BLOCK_MAP_PAD = INPUT_SIZE // min(GRIDS) // BLOCK // 2  # widest side strip, in blocks
NMS_IOU_THRESHOLD = 0.5
NMS_MIN_SCORE = 0.001

MODEL_FILES = MappingProxyType(
    {
        "fp32": "sample.onnx",
        "int8": "sample-int8.onnx",
        "qdq": "sample-qdq.onnx",
        "offbyone": "sample-offbyone.onnx",
    }
)



@dataclass(frozen=True)
class ObjectClass:
    """A category the sample detector recognises, by colour and box shape."""

    name: str
    rgb: tuple[int, int, int]
    # Shape prior: how far each box edge sits inside its grid cell, as a
    # fraction of the cell size: (left, top, right, bottom), positive = inwards.
    inset: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


# Colours sit near the corners of the RGB cube, the background at its centre,
# so a cell that is mostly object is never closest to another class.
OBJECT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("person", (200, 40, 190), (0.15, 0.0, 0.15, 0.0)),
    ObjectClass("car", (35, 60, 210), (0.0, 0.15, 0.0, 0.15)),
    ObjectClass("stop sign", (215, 30, 30)),
    ObjectClass("dog", (30, 190, 200), (0.0, 0.1, 0.0, 0.0)),
    ObjectClass("backpack", (30, 160, 50)),
    ObjectClass("bottle", (240, 240, 240), (0.15, 0.0, 0.15, 0.0)),
    ObjectClass("chair", (230, 210, 30)),
    ObjectClass("tv", (15, 15, 15), (0.0, 0.1, 0.0, 0.1)),
)


@dataclass(frozen=True)
class Placement:
    """A rectangle placed on the image's ``grid`` x ``grid`` cell layout.

    It covers cells [col, col+cols) x [row, row+rows), moved by ``shift``
    (fractions of a cell), shrunk by the class's inset, and jittered by a few
    pixels.
    """

    name: str
    grid: int
    col: int
    row: int
    cols: int = 1
    rows: int = 1
    shift: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class SampleImage:
    """One synthetic image: id, size, stored JPEG mode and its content."""

    image_id: int
    width: int
    height: int
    mode: str  # "RGB", "L" (grayscale) or "CMYK"
    objects: tuple[Placement, ...] = ()  # drawn and annotated
    clutter: tuple[Placement, ...] = ()  # drawn, not annotated
    crowd: Placement | None = None  # a dense group of persons, annotated iscrowd=1


# Sorted by id, the evaluation order. What each image is for:
#   139: several classes, one object shifted off its cell (poor IoU)
#   285: portrait; a shifted chair
#   632: grayscale JPEG (mode L); two bottles close together (one suppresses the other)
#   724: tall and narrow; a two-cell-wide dog no anchor fits
#   776: CMYK JPEG; an occluding stop sign off the grid
#   785: an iscrowd=1 group of persons (detections there are ignored)
#   802: no annotations, but objects in it: false positives
#   872: small image; off-grid and tiny objects
SAMPLE_IMAGES: tuple[SampleImage, ...] = (
    SampleImage(
        139, 480, 324, "RGB",
        objects=(
            Placement("stop sign", 4, 1, 1),
            Placement("chair", 4, 3, 2),
            Placement("person", 2, 0, 1),
            Placement("backpack", 6, 4, 0),
            Placement("bottle", 4, 2, 0, shift=(0.35, 0.0)),
        ),
    ),
    SampleImage(
        285, 240, 360, "RGB",
        objects=(
            Placement("dog", 2, 0, 0),
            Placement("bottle", 4, 3, 2),
            Placement("stop sign", 6, 1, 4),
            Placement("chair", 3, 2, 2, shift=(0.0, 0.3)),
        ),
    ),
    SampleImage(
        632, 384, 288, "L",
        objects=(
            Placement("bottle", 4, 0, 1),
            Placement("bottle", 4, 1, 1),
            Placement("tv", 2, 1, 0),
            Placement("tv", 6, 1, 5),
        ),
    ),
    SampleImage(
        724, 192, 456, "RGB",
        objects=(
            Placement("person", 3, 1, 0),
            Placement("person", 4, 0, 3),
            Placement("backpack", 4, 2, 2),
            Placement("dog", 6, 4, 5, cols=2),
        ),
    ),
    SampleImage(
        776, 456, 228, "CMYK",
        objects=(
            Placement("car", 2, 0, 0),
            Placement("car", 4, 2, 2, cols=2),
            Placement("backpack", 4, 3, 0),
            Placement("stop sign", 3, 2, 1, shift=(-0.25, 0.2)),
        ),
    ),
    SampleImage(
        785, 324, 240, "RGB",
        objects=(
            Placement("backpack", 4, 3, 0),
            Placement("chair", 4, 3, 3),
            Placement("person", 6, 3, 1),
        ),
        crowd=Placement("person", 2, 0, 1),
    ),
    SampleImage(
        802, 360, 264, "RGB",
        clutter=(
            Placement("stop sign", 4, 1, 1),
            Placement("chair", 3, 2, 0),
            Placement("car", 4, 0, 3, cols=2),
        ),
    ),
    SampleImage(
        872, 168, 216, "RGB",
        objects=(
            Placement("chair", 2, 1, 1),
            Placement("tv", 4, 0, 0, shift=(0.2, 0.2)),
            Placement("stop sign", 6, 0, 4),
            Placement("backpack", 6, 4, 1, shift=(0.3, 0.0)),
        ),
    ),
)


# --------------------------------------------------------------------------- helpers


def _require_onnx() -> Any:
    try:
        import onnx  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UserError(
            "building the sample models needs the 'onnx' package: pip install -e .[dev]"
        ) from exc
    return onnx


def _category_id_by_name() -> dict[str, int]:
    return {name: cat_id for cat_id, name, _ in COCO_CATEGORIES}


def _contiguous_label_by_name() -> dict[str, int]:
    """Contiguous label k (1..80) is the k-th of the 80 COCO ids (postprocess.COCO_80_IDS: the same order)."""
    ordered = sorted(COCO_CATEGORIES)
    return {name: index + 1 for index, (_, name, _) in enumerate(ordered)}


def _class_by_name() -> dict[str, ObjectClass]:
    return {cls.name: cls for cls in OBJECT_CLASSES}


def _normalize_rgb(rgb: Sequence[float]) -> np.ndarray:
    """Map 0..255 RGB to the model's normalized input space."""
    values = np.asarray(rgb, dtype=np.float64) / 255.0
    return (values - np.asarray(NORMALIZE_MEAN)) / np.asarray(NORMALIZE_STD)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- images


def _placement_rect(
    placement: Placement, width: int, height: int, rng: np.random.Generator, apply_inset: bool
) -> tuple[int, int, int, int]:
    """Pixel rectangle (x0, y0, x1, y1), x1/y1 exclusive, of a placement."""
    cell_w = width / placement.grid
    cell_h = height / placement.grid
    x0 = (placement.col + placement.shift[0]) * cell_w
    y0 = (placement.row + placement.shift[1]) * cell_h
    x1 = x0 + placement.cols * cell_w
    y1 = y0 + placement.rows * cell_h
    if apply_inset:
        left, top, right, bottom = _class_by_name()[placement.name].inset
        x0 += left * cell_w
        x1 -= right * cell_w
        y0 += top * cell_h
        y1 -= bottom * cell_h
    jitter = max(1, round(0.04 * min(cell_w, cell_h)))
    dx0, dy0, dx1, dy1 = (int(v) for v in rng.integers(-jitter, jitter + 1, size=4))
    rect = (
        min(max(round(x0) + dx0, 0), width - 2),
        min(max(round(y0) + dy0, 0), height - 2),
        min(max(round(x1) + dx1, 2), width),
        min(max(round(y1) + dy1, 2), height),
    )
    return rect


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Grey, low-frequency textured background with mild pixel noise (uint8 HxWx3)."""
    coarse = rng.integers(100, 151, size=(height // 16 + 2, width // 16 + 2), dtype=np.uint8)
    smooth = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
    base = np.asarray(smooth, dtype=np.int16)[:, :, np.newaxis]
    tint = rng.integers(-4, 5, size=(1, 1, 3), dtype=np.int16)
    noise = rng.integers(-6, 7, size=(height, width, 3), dtype=np.int16)
    return np.clip(base + tint + noise, 0, 255).astype(np.uint8)


def _shade(rgb: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    """The class colour with a small random variation, like real objects."""
    delta = rng.integers(-12, 13, size=3)
    return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(rgb, delta))  # type: ignore[return-value]


def _draw_crowd(
    draw: ImageDraw.ImageDraw, rect: tuple[int, int, int, int], rng: np.random.Generator
) -> None:
    """Fill a region densely with person-coloured blobs separated by thin gaps."""
    x0, y0, x1, y1 = rect
    person_rgb = _class_by_name()["person"].rgb
    columns = 5
    blob_w = (x1 - x0) / columns
    head_r = blob_w * 0.3
    for index in range(columns):
        bx0 = x0 + index * blob_w + 1
        bx1 = x0 + (index + 1) * blob_w - 2
        top = y0 + math.ceil(head_r) + int(rng.integers(0, max(1, (y1 - y0) // 8)))
        draw.rectangle([round(bx0), top, round(bx1), y1 - 1], fill=_shade(person_rgb, rng))
        cx = (bx0 + bx1) / 2
        draw.ellipse([cx - head_r, top - head_r, cx + head_r, top + head_r], fill=_shade(person_rgb, rng))


def _render_image(spec: SampleImage, rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """Draw one sample image; return it (in its stored mode) and its annotations."""
    image = Image.fromarray(_background(spec.width, spec.height, rng))
    draw = ImageDraw.Draw(image)
    classes = _class_by_name()
    annotations: list[dict] = []

    for placement in spec.clutter:
        rect = _placement_rect(placement, spec.width, spec.height, rng, apply_inset=True)
        draw.rectangle([rect[0], rect[1], rect[2] - 1, rect[3] - 1], fill=_shade(classes[placement.name].rgb, rng))

    if spec.crowd is not None:
        rect = _placement_rect(spec.crowd, spec.width, spec.height, rng, apply_inset=False)
        _draw_crowd(draw, rect, rng)
        annotations.append({"name": spec.crowd.name, "rect": rect, "iscrowd": 1})

    for placement in spec.objects:
        rect = _placement_rect(placement, spec.width, spec.height, rng, apply_inset=True)
        draw.rectangle([rect[0], rect[1], rect[2] - 1, rect[3] - 1], fill=_shade(classes[placement.name].rgb, rng))
        annotations.append({"name": placement.name, "rect": rect, "iscrowd": 0})

    if spec.mode != "RGB":
        image = image.convert(spec.mode)
    return image, annotations


def _write_jpeg(image: Image.Image, path: Path) -> None:
    image.save(path, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)


def _coco_annotations(rendered: list[tuple[SampleImage, list[dict]]]) -> dict:
    """Build the COCO instances dictionary for the rendered images."""
    category_ids = _category_id_by_name()
    images = []
    annotations = []
    next_annotation_id = 1
    for spec, objects in rendered:
        images.append(
            {
                "id": spec.image_id,
                "file_name": f"{spec.image_id:012d}.jpg",
                "width": spec.width,
                "height": spec.height,
                "license": 0,
            }
        )
        for obj in objects:
            x0, y0, x1, y1 = obj["rect"]
            w, h = x1 - x0, y1 - y0
            annotations.append(
                {
                    "id": next_annotation_id,
                    "image_id": spec.image_id,
                    "category_id": category_ids[obj["name"]],
                    "bbox": [float(x0), float(y0), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": obj["iscrowd"],
                    "segmentation": [[float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]],
                }
            )
            next_annotation_id += 1
    return {
        "info": {
            "description": "ssd_eval embedded offline sample (synthetic images)",
            "version": "1.0",
            "year": 2024,
            "contributor": "ssd_eval.sample",
        },
        "licenses": [{"id": 0, "name": "CC0 1.0 (synthetic data)", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": cat_id, "name": name, "supercategory": supercategory}
            for cat_id, name, supercategory in COCO_CATEGORIES
        ],
    }


# --------------------------------------------------------------------------- detector


def _class_weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights of the colour -> class logits layer and the class -> box-inset table.

    Logit of class c is -|x - p_c|^2 / T up to a term shared by all classes,
    i.e. (2 x.p_c - |p_c|^2) / T: a linear layer. Classes without a colour
    prototype get a constant, very low logit.
    """
    labels = _contiguous_label_by_name()
    weight = np.zeros((3, NUM_CLASSES), dtype=np.float64)
    bias = np.full((NUM_CLASSES,), -30.0, dtype=np.float64)
    insets = np.zeros((NUM_CLASSES, 4), dtype=np.float64)
    prototypes = [(0, _normalize_rgb(BACKGROUND_RGB))]
    for cls in OBJECT_CLASSES:
        label = labels[cls.name]
        prototypes.append((label, _normalize_rgb(cls.rgb)))
        left, top, right, bottom = cls.inset
        insets[label] = (left, top, -right, -bottom)
    for label, prototype in prototypes:
        weight[:, label] = 2.0 * prototype / SOFTMAX_TEMPERATURE
        bias[label] = -float(prototype @ prototype) / SOFTMAX_TEMPERATURE
    return weight.astype(np.float32), bias.astype(np.float32), insets.astype(np.float32)


def _anchor_tables() -> tuple[np.ndarray, np.ndarray]:
    """Anchor boxes [1, A, 4] (x0, y0, x1, y1, normalized) and their sizes (w, h, w, h)."""
    boxes = []
    sizes = []
    for grid in GRIDS:
        for row in range(grid):
            for col in range(grid):
                boxes.append((col / grid, row / grid, (col + 1) / grid, (row + 1) / grid))
                sizes.append((1 / grid, 1 / grid, 1 / grid, 1 / grid))
    return (
        np.asarray(boxes, dtype=np.float32)[np.newaxis],
        np.asarray(sizes, dtype=np.float32)[np.newaxis],
    )


def _region_pool_nodes(helper: Any, numpy_helper: Any, grid: int) -> tuple[list, list, dict[str, str]]:
    """Nodes (and their constants) giving, for every cell of one grid, the mean
    colour of the cell and of the half-cell-wide strips on its four sides,
    each as [B, 3, grid*grid].

    They read the padded block map: the image averaged over BLOCK x BLOCK
    pixel blocks, zero-padded by BLOCK_MAP_PAD blocks. Zero is the dataset mean
    colour, a neutral grey that reads as background.
    """
    n = INPUT_SIZE // grid // BLOCK  # cell size in blocks
    h = n // 2  # strip width in blocks
    # region: (first row, window height, first column, window width) in blocks
    regions = {
        "cell": (0, n, 0, n),
        "left": (0, n, -h, h),
        "right": (0, n, n, h),
        "above": (-h, h, 0, n),
        "below": (n, h, 0, n),
    }
    nodes = []
    initializers = []
    outputs = {}
    for region, (row0, height, col0, width) in regions.items():
        prefix = f"{region}_{grid}"
        starts = [BLOCK_MAP_PAD + row0, BLOCK_MAP_PAD + col0]
        ends = [start + (grid - 1) * n + size for start, size in zip(starts, (height, width))]
        initializers += [
            numpy_helper.from_array(np.asarray(starts, dtype=np.int64), f"{prefix}_starts"),
            numpy_helper.from_array(np.asarray(ends, dtype=np.int64), f"{prefix}_ends"),
        ]
        nodes += [
            helper.make_node(
                "Slice", ["padded_blocks", f"{prefix}_starts", f"{prefix}_ends", "spatial_axes"],
                [f"{prefix}_area"], name=f"{prefix}_area",
            ),
            helper.make_node(
                "AveragePool", [f"{prefix}_area"], [f"{prefix}_pool"], name=f"{prefix}_pool",
                kernel_shape=[height, width], strides=[n, n],
            ),
            helper.make_node("Reshape", [f"{prefix}_pool", "flat_cells_shape"], [f"{prefix}_flat"],
                             name=f"{prefix}_flat"),
        ]
        outputs[region] = f"{prefix}_flat"
    return nodes, initializers, outputs


def build_detector(
    output_names: Sequence[str] = DEFAULT_OUTPUT_NAMES,
    dynamic_batch: bool = False,
    label_offset: int = 0,
) -> "onnx.ModelProto":
    """Build the tiny SSD-shaped sample detector as an opset-12 ONNX model.

    Input ``image`` float32 [B, 3, 1200, 1200] (normalized); outputs, named by
    ``output_names`` in the order boxes, labels, scores: boxes float32
    [B, N, 4] (normalized x_min, y_min, x_max, y_max), labels int64 [B, N]
    (contiguous 1..80) and scores float32 [B, N], sorted by descending score,
    N = NUM_DETECTIONS. B is 1, or symbolic ("batch") with ``dynamic_batch``.
    ``label_offset`` shifts every label (clipped to 1..80): a broken model
    for regression tests.
    """
    _require_onnx()
    from onnx import helper, numpy_helper  # noqa: PLC0415

    if len(output_names) != 3 or len(set(output_names)) != 3:
        raise ValueError(f"output_names must be three distinct names, got {output_names!r}")
    boxes_name, labels_name, scores_name = output_names
    batch: int | str = "batch" if dynamic_batch else 1

    class_weight, class_bias, class_insets = _class_weights()
    # The strips beside a cell count as "object" already when a minority of
    # them has the object's colour: their background logit is lowered.
    side_bias = class_bias.copy()
    side_bias[0] -= SIDE_BACKGROUND_PENALTY
    anchor_boxes, anchor_sizes = _anchor_tables()

    def const(name: str, value: Any, dtype: Any) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    initializers = [
        const("class_weight", class_weight, np.float32),
        const("cell_class_bias", class_bias, np.float32),
        const("side_class_bias", side_bias, np.float32),
        const("class_box_insets", class_insets, np.float32),
        const("anchor_boxes", anchor_boxes, np.float32),
        const("anchor_sizes", anchor_sizes, np.float32),
        const("flat_cells_shape", [0, 3, -1], np.int64),
        const("sides_shape", [0, 4, NUM_ANCHORS, NUM_CLASSES], np.int64),
        const("flat_scores_shape", [0, -1], np.int64),
        const("anchor_count", [NUM_ANCHORS], np.int64),
        const("region_count", [5 * NUM_ANCHORS], np.int64),
        const("anchor_count_scalar", NUM_ANCHORS, np.int64),
        const("foreground_start", [1], np.int64),
        const("foreground_end", [NUM_CLASSES], np.int64),
        const("one", 1.0, np.float32),
        const("box_min", 0.0, np.float32),
        const("box_max", 1.0, np.float32),
        const("nms_max_per_class", [NUM_ANCHORS], np.int64),
        const("nms_iou", [NMS_IOU_THRESHOLD], np.float32),
        const("nms_min_score", [NMS_MIN_SCORE], np.float32),
        const("detections_k", [NUM_DETECTIONS], np.int64),
        const("label_shift", 1 + label_offset, np.int64),
        const("label_min", 1, np.int64),
        const("label_max", MAX_LABEL, np.int64),
    ]
    initializers += [const(f"axis_{v}", [v], np.int64) for v in (1, 2)]
    initializers += [
        const("start_0", [0], np.int64),
        const("spatial_axes", [2, 3], np.int64),
        const("block_map_pads", [0, 0, BLOCK_MAP_PAD, BLOCK_MAP_PAD, 0, 0, BLOCK_MAP_PAD, BLOCK_MAP_PAD], np.int64),
    ]

    nodes = [
        helper.make_node(
            "AveragePool", [INPUT_NAME], ["block_colours"], name="block_colours",
            kernel_shape=[BLOCK, BLOCK], strides=[BLOCK, BLOCK],
        ),
        helper.make_node("Pad", ["block_colours", "block_map_pads"], ["padded_blocks"], name="pad_blocks",
                         mode="constant"),
    ]
    region_inputs: dict[str, list[str]] = {region: [] for region in ("cell", "left", "right", "above", "below")}
    for grid in GRIDS:
        grid_nodes, grid_initializers, grid_outputs = _region_pool_nodes(helper, numpy_helper, grid)
        nodes += grid_nodes
        initializers += grid_initializers
        for region, name in grid_outputs.items():
            region_inputs[region].append(name)
    nodes += [
        helper.make_node("Concat", names, [f"{region}_colours"], name=f"concat_{region}", axis=2)
        for region, names in region_inputs.items()
    ]
    nodes += [
        helper.make_node(
            "Concat", [f"{region}_colours" for region in region_inputs], ["region_colours_nca"],
            name="concat_regions", axis=2,
        ),
        helper.make_node("Transpose", ["region_colours_nca"], ["region_colours"], name="colours_last", perm=[0, 2, 1]),
        # Nearest colour prototype as a linear layer + softmax.
        helper.make_node("MatMul", ["region_colours", "class_weight"], ["class_scores"], name="colour_to_class"),
        helper.make_node(
            "Slice", ["class_scores", "start_0", "anchor_count", "axis_1"], ["cell_class_scores"], name="cell_scores"
        ),
        helper.make_node(
            "Slice", ["class_scores", "anchor_count", "region_count", "axis_1"], ["side_class_scores"],
            name="side_scores",
        ),
        helper.make_node("Add", ["cell_class_scores", "cell_class_bias"], ["cell_logits"], name="cell_bias_add"),
        helper.make_node("Add", ["side_class_scores", "side_class_bias"], ["side_logits"], name="side_bias_add"),
        helper.make_node("Softmax", ["cell_logits"], ["class_probs"], name="cell_softmax", axis=2),
        helper.make_node("Softmax", ["side_logits"], ["side_probs_flat"], name="side_softmax", axis=2),
        helper.make_node("Reshape", ["side_probs_flat", "sides_shape"], ["side_probs"], name="sides_apart"),
        # An object that fills its cell and stops at all four sides is detected
        # there; the cells inside or at the edge of a larger object are not.
        helper.make_node("Sub", ["one", "side_probs"], ["side_absence"], name="side_absence"),
        helper.make_node(
            "ReduceProd", ["side_absence"], ["object_ends_here"], name="all_sides_absent", axes=[1], keepdims=0
        ),
        helper.make_node("Mul", ["class_probs", "object_ends_here"], ["anchor_class_scores"], name="anchor_scores"),
        helper.make_node(
            "Slice", ["anchor_class_scores", "foreground_start", "foreground_end", "axis_2"],
            ["foreground_scores"], name="drop_background",
        ),
        helper.make_node("Transpose", ["foreground_scores"], ["class_anchor_scores"], name="classes_first",
                         perm=[0, 2, 1]),
        # Class-agnostic box refinement: the cell, shrunk by the expected class's shape prior.
        helper.make_node("MatMul", ["class_probs", "class_box_insets"], ["anchor_insets"], name="class_to_inset"),
        helper.make_node("Mul", ["anchor_insets", "anchor_sizes"], ["anchor_offsets"], name="scale_inset"),
        helper.make_node("Add", ["anchor_boxes", "anchor_offsets"], ["anchor_boxes_moved"], name="move_boxes"),
        helper.make_node("Clip", ["anchor_boxes_moved", "box_min", "box_max"], ["anchor_boxes_clipped"],
                         name="clip_boxes"),
        # Per-class non-maximum suppression, then the best N (class, anchor) pairs.
        helper.make_node(
            "NonMaxSuppression",
            ["anchor_boxes_clipped", "class_anchor_scores", "nms_max_per_class", "nms_iou", "nms_min_score"],
            ["nms_selected"], name="nms", center_point_box=0,
        ),
        helper.make_node("GatherND", ["class_anchor_scores", "nms_selected"], ["nms_selected_scores"],
                         name="nms_scores"),
        helper.make_node("Shape", ["class_anchor_scores"], ["class_anchor_shape"], name="score_shape"),
        helper.make_node(
            "ConstantOfShape", ["class_anchor_shape"], ["no_scores"], name="zero_scores",
            value=numpy_helper.from_array(np.zeros((1,), dtype=np.float32)),
        ),
        helper.make_node(
            "ScatterND", ["no_scores", "nms_selected", "nms_selected_scores"], ["kept_scores"], name="keep_selected"
        ),
        helper.make_node("Reshape", ["kept_scores", "flat_scores_shape"], ["flat_kept_scores"], name="flatten_scores"),
        helper.make_node(
            "TopK", ["flat_kept_scores", "detections_k"], [scores_name, "top_flat_indices"],
            name="sort_by_score", axis=1, largest=1, sorted=1,
        ),
        helper.make_node("Div", ["top_flat_indices", "anchor_count_scalar"], ["top_label_index"], name="label_of_pair"),
        helper.make_node("Mod", ["top_flat_indices", "anchor_count_scalar"], ["top_anchor"], name="anchor_of_pair"),
        helper.make_node("Add", ["top_label_index", "label_shift"], ["labels_raw"], name="label_from_index"),
        helper.make_node("Max", ["labels_raw", "label_min"], ["labels_low"], name="label_clip_low"),
        helper.make_node("Min", ["labels_low", "label_max"], [labels_name], name="label_clip_high"),
        helper.make_node("Unsqueeze", ["top_anchor"], ["top_anchor_nd"], name="indices_for_boxes", axes=[2]),
        helper.make_node(
            "GatherND", ["anchor_boxes_clipped", "top_anchor_nd"], [boxes_name], name="gather_boxes", batch_dims=1
        ),
    ]

    return ssd_model(nodes, initializers, name="ssd_eval_sample_detector", input_name=INPUT_NAME,
                     input_hw=(INPUT_SIZE, INPUT_SIZE), detections=NUM_DETECTIONS, output_names=output_names,
                     batch=batch, opset=OPSET, ir_version=IR_VERSION, producer_name="ssd_eval.sample",
                     producer_version="1",
                     doc_string="Tiny synthetic SSD-shaped detector for the ssd_eval offline sample.")


# --------------------------------------------------------------------------- quantization
#
# The quantized variants are built by hand from standard ONNX operators, so that
# every CPU onnxruntime runs on (and onnx's reference evaluator) gives the same
# detections. They quantize the detector's first node, the BLOCK x BLOCK average
# of the normalized image; the rest of the graph is the fp32 detector's:
#
#   image -> QuantizeLinear (uint8, scale s, a power of two)
#         -> depthwise 50x50 / stride 50 convolution, int8 weights all 1 (scale 2^-11)
#         -> requantize to uint8 with scale s * 2^-11 * N, N odd
#         -> DequantizeLinear -> Mul (2^11 / 2500) -> block_colours
#
# QOperator writes the convolution as QLinearConv; QDQ as QuantizeLinear /
# DequantizeLinear pairs around a float Conv (onnxruntime fuses it into QLinearConv
# at graph optimization "all"). Where CPU instruction sets could disagree, they cannot:
# - input rounding: s is a power of two, so x / s is exact in float32 whether it is
#   computed by division or by multiplying with 1/s; and no normalized input value
#   (all 256 levels of each channel, computed in float64 or in float32) lies within
#   MIN_INPUT_TIE_MARGIN of a .5 rounding tie;
# - accumulation: weight 1 keeps u8 x s8 pair sums at most 510 (no int16
#   saturation on CPUs without VNNI); a float Conv over dequantized values is exact,
#   since every partial sum is an integer multiple of s * 2^-11 below 2^24 of them;
# - requantization: the accumulator is an integer and N odd, so acc / N is never
#   closer than 1 / (2N) to a tie, about 20 times float32's error on acc * (1 / N).
# onnxruntime's own quantize_static used com.microsoft contrib operators whose
# rounding differs between AVX2, AVX-512 and VNNI kernels; these models use none.

QUANT_WEIGHT_SCALE = 2.0**-11  # an int8 weight of 1 stands for 2^-11, about 1 / (BLOCK * BLOCK)
MIN_INPUT_TIE_MARGIN = 1e-3  # least distance of x / s from a .5 tie, in quantized units
# N per variant: the requantized block sum's step, in accumulator units (the block
# mean's step is N / 2500 input steps). Odd, so that no block sum is a rounding tie.
# Chosen for a small, visible drop that differs between the two: on the sample,
# 8501 costs 1.6 % of the fp32 mAP and 5001 0.5 % (finer N, e.g. 2501, cost nothing).
QUANT_OUTPUT_STEPS = MappingProxyType({"int8": 8501, "qdq": 5001})
QUANT_FORMATS = MappingProxyType({"int8": "QOperator", "qdq": "QDQ"})


@dataclass(frozen=True)
class QuantParams:
    """The quantized sample detectors' parameters (all float32-exact)."""

    input_scale: float
    input_zero_point: int  # uint8
    input_tie_margin: float  # least distance of any normalized level / input_scale from a .5 tie
    weight_scale: float
    output_steps: int  # N (odd): output_scale = input_scale * weight_scale * N
    output_scale: float
    output_zero_point: int  # uint8
    mean_factor: float  # float Mul after DequantizeLinear: 1 / (BLOCK * BLOCK * weight_scale)


def normalized_levels() -> np.ndarray:
    """Every float32 value a normalized input pixel can take, sorted and unique.

    The 3 x 256 levels computed in float64 and rounded once to float32 (the
    harness's lookup table) and computed in float32 arithmetic (the zoo README's
    NumPy preprocessing); the two differ in the last bit for some levels.
    """
    levels = np.arange(256, dtype=np.float64)
    mean = np.asarray(NORMALIZE_MEAN, dtype=np.float64)[:, np.newaxis]
    std = np.asarray(NORMALIZE_STD, dtype=np.float64)[:, np.newaxis]
    table = ((levels / 255.0 - mean) / std).astype(np.float32)
    levels32 = levels.astype(np.float32) / np.float32(255.0)
    arithmetic = (levels32 - mean.astype(np.float32)) / std.astype(np.float32)
    return np.unique(np.concatenate([table.ravel(), arithmetic.astype(np.float32).ravel()]))


def tie_distance(values: np.ndarray) -> np.ndarray:
    """Distance (float64) of each value from the nearest .5 rounding tie."""
    values = np.asarray(values, dtype=np.float64)
    return np.abs(values - np.floor(values) - 0.5)


def _input_quantization(levels: np.ndarray) -> tuple[float, int, float]:
    """(scale, zero point, tie margin) of the uint8 input quantization.

    A small deterministic search over scales m * 2^-e (m odd, smallest m first,
    then the finest scale): the first whose range fits uint8 and that keeps every
    level at least MIN_INPUT_TIE_MARGIN from a tie. m = 1, a power of two, wins
    for the sample's mean and std; m > 1 would keep float Conv sums exact (m
    small) but make x / s inexact, which the margin still covers.
    """
    values = np.asarray(levels, dtype=np.float64)
    for m in range(1, 16, 2):
        for e in range(16, 0, -1):
            scale = m * 2.0**-e
            quantized = np.rint(values / scale)
            if quantized.max() - quantized.min() > 255:
                continue
            margin = float(tie_distance(values / scale).min())
            if margin >= MIN_INPUT_TIE_MARGIN:
                return scale, int(-quantized.min()), margin
            break  # coarser scales of this m: the next m first
    raise ValueError("no input scale keeps the normalized levels away from rounding ties")


def quantization_params(variant: str, output_steps: int | None = None) -> QuantParams:
    """Parameters of the ``int8`` or ``qdq`` sample detector (``output_steps``: another N)."""
    steps = QUANT_OUTPUT_STEPS[variant] if output_steps is None else output_steps
    if steps % 2 != 1:
        raise ValueError(f"output steps must be odd, got {steps}")
    scale, zero_point, margin = _input_quantization(normalized_levels())
    # Block sums of any image, in accumulator units; the output keeps all of them.
    pixels = BLOCK * BLOCK
    lowest, highest = pixels * (0 - zero_point), pixels * (255 - zero_point)
    out_low, out_high = round(lowest / steps), round(highest / steps)
    if out_high - out_low > 255:
        raise ValueError(f"output steps {steps} too fine for uint8")
    output_zero_point = -out_low
    # A float Conv over dequantized values is exact while every partial sum is an
    # integer below 2^24 in units of 2^-e * 2^-11 (the scale is m * 2^-e, m odd).
    if max(abs(lowest), abs(highest)) * Fraction(scale).numerator >= 2**24:
        raise ValueError(f"input scale {scale} leaves float Conv sums inexact")
    return QuantParams(
        input_scale=scale,
        input_zero_point=zero_point,
        input_tie_margin=margin,
        weight_scale=QUANT_WEIGHT_SCALE,
        output_steps=steps,
        output_scale=scale * QUANT_WEIGHT_SCALE * steps,
        output_zero_point=output_zero_point,
        mean_factor=1.0 / (pixels * QUANT_WEIGHT_SCALE),
    )


def build_quantized_detector(variant: str, output_steps: int | None = None) -> "onnx.ModelProto":
    """The fp32 detector with its block average quantized: ``int8`` (QOperator) or ``qdq``.

    ``output_steps`` replaces the variant's N (tests build both formats with one N).
    """
    onnx = _require_onnx()
    from onnx import helper, numpy_helper  # noqa: PLC0415

    params = quantization_params(variant, output_steps)
    quant_format = QUANT_FORMATS[variant]
    model = build_detector()
    graph = model.graph
    (position,) = [index for index, node in enumerate(graph.node) if node.name == "block_colours"]
    del graph.node[position]

    def const(name: str, value: Any, dtype: Any) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    initializers = [
        const("image_scale", params.input_scale, np.float32),
        const("image_zero_point", params.input_zero_point, np.uint8),
        const("block_weight_quantized", np.ones((3, 1, BLOCK, BLOCK)), np.int8),
        const("block_weight_scale", params.weight_scale, np.float32),
        const("block_weight_zero_point", 0, np.int8),
        const("block_sum_scale", params.output_scale, np.float32),
        const("block_sum_zero_point", params.output_zero_point, np.uint8),
        const("block_mean_factor", params.mean_factor, np.float32),
    ]
    conv = {"kernel_shape": [BLOCK, BLOCK], "strides": [BLOCK, BLOCK], "group": 3}
    nodes = [
        helper.make_node(
            "QuantizeLinear", [INPUT_NAME, "image_scale", "image_zero_point"], ["image_quantized"],
            name="quantize_image",
        ),
    ]
    if quant_format == "QOperator":
        nodes.append(
            helper.make_node(
                "QLinearConv",
                ["image_quantized", "image_scale", "image_zero_point",
                 "block_weight_quantized", "block_weight_scale", "block_weight_zero_point",
                 "block_sum_scale", "block_sum_zero_point"],
                ["block_sums_quantized"], name="block_sums", **conv,
            )
        )
    else:
        nodes += [
            helper.make_node(
                "DequantizeLinear", ["image_quantized", "image_scale", "image_zero_point"], ["image_dequantized"],
                name="dequantize_image",
            ),
            helper.make_node(
                "DequantizeLinear",
                ["block_weight_quantized", "block_weight_scale", "block_weight_zero_point"], ["block_weight"],
                name="dequantize_block_weight",
            ),
            helper.make_node("Conv", ["image_dequantized", "block_weight"], ["block_sums"], name="block_sums", **conv),
            helper.make_node(
                "QuantizeLinear", ["block_sums", "block_sum_scale", "block_sum_zero_point"], ["block_sums_quantized"],
                name="quantize_block_sums",
            ),
        ]
    nodes += [
        helper.make_node(
            "DequantizeLinear", ["block_sums_quantized", "block_sum_scale", "block_sum_zero_point"],
            ["block_sums_dequantized"], name="dequantize_block_sums",
        ),
        helper.make_node(
            "Mul", ["block_sums_dequantized", "block_mean_factor"], ["block_colours"], name="block_colours",
        ),
    ]
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    graph.initializer.extend(initializers)
    model.doc_string = (
        f"Tiny synthetic SSD-shaped detector for the ssd_eval offline sample; block average quantized "
        f"({quant_format}, uint8 activations, int8 weights, standard ONNX operators only)."
    )
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- generation


# Strings written into the sample (its generator's name) stay as the sample was made, so it regenerates
# byte-identical: its models' sha256 are in every sample result and baseline.


def _package_versions() -> dict[str, str]:
    import onnxruntime  # noqa: PLC0415
    import PIL  # noqa: PLC0415

    onnx = _require_onnx()
    return {
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def generate(out_dir: Path) -> dict:
    """Write the offline sample (images, annotations, four models, manifest) to ``out_dir``.

    Returns the manifest: sha256 and size of every generated file (paths
    relative to ``out_dir``) and the package versions that produced them.
    """
    out_dir = Path(out_dir)
    versions = _package_versions()  # fails early, with a UserError, if onnx is missing
    images_dir = out_dir / "images"
    models_dir = out_dir / "models"
    images_dir.mkdir(parents=True, exist_ok=True)
    models_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.Generator(np.random.PCG64(SEED))
    rendered = []
    image_paths = []
    for spec in sorted(SAMPLE_IMAGES, key=lambda s: s.image_id):
        image, objects = _render_image(spec, rng)
        path = images_dir / f"{spec.image_id:012d}.jpg"
        _write_jpeg(image, path)
        image_paths.append(path)
        rendered.append((spec, objects))

    annotations_path = out_dir / "annotations.json"
    annotations_path.write_text(json.dumps(_coco_annotations(rendered), indent=1) + "\n", encoding="utf-8")

    write_model(build_detector(), models_dir / MODEL_FILES["fp32"])
    write_model(build_detector(label_offset=1), models_dir / MODEL_FILES["offbyone"])
    for variant in QUANT_FORMATS:
        write_model(build_quantized_detector(variant), models_dir / MODEL_FILES[variant])

    generated = [*image_paths, annotations_path, *(models_dir / name for name in MODEL_FILES.values())]
    manifest = {
        "generator": "python -m ssd_eval.sample",
        "seed": SEED,
        "versions": versions,
        "files": {
            path.relative_to(out_dir).as_posix(): {"sha256": _sha256(path), "size": path.stat().st_size}
            for path in sorted(generated)
        },
    }
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m ssd_eval.testing.sample --out DIR``."""
    parser = argparse.ArgumentParser(prog="python -m ssd_eval.testing.sample", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/sample"), help="output folder (default: data/sample)")
    args = parser.parse_args(argv)
    try:
        manifest = generate(args.out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = sum(entry["size"] for entry in manifest["files"].values())
    print(f"wrote {len(manifest['files'])} files ({total} bytes) and MANIFEST.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
