"""COCO-format annotations and images: load once, select image ids, decode images."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ssd_eval.errors import UserError, quote
from ssd_eval.utils import is_int, is_non_finite, is_number, sha256_of

_CATEGORIES_BY_SUPERCATEGORY: dict[str, dict[int, str]] = {
    "person": {1: "person"},
    "vehicle": {2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck", 9: "boat"},
    "outdoor": {10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench"},
    "animal": {16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
               24: "zebra", 25: "giraffe"},
    "accessory": {27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase"},
    "sports": {34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
               40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket"},
    "kitchen": {44: "bottle", 46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl"},
    "food": {52: "banana", 53: "apple", 54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog",
             59: "pizza", 60: "donut", 61: "cake"},
    "furniture": {62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet"},
    "electronic": {72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone"},
    "appliance": {78: "microwave", 79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator"},
    "indoor": {84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear", 89: "hair drier",
               90: "toothbrush"},
}

COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = tuple(
    (category_id, name, supercategory)
    for supercategory, members in _CATEGORIES_BY_SUPERCATEGORY.items() for category_id, name in members.items())
"""The real COCO 2017 instance categories, ascending id: (id, name, supercategory)."""


_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # Each list's required fields, and those that must be integers ("139" and 139 are two ids to pycocotools).
    "images": (("id", "file_name", "width", "height"), ("id", "width", "height")),
    "annotations": (("id", "image_id", "category_id", "bbox"), ("id", "image_id", "category_id")),
    "categories": (("id", "name"), ("id",)),
}


class BadImageError(UserError):
    """An image file that is missing, unreadable, or not the size its annotation says."""


@dataclass(frozen=True)
class ImageRecord:
    """One image entry of the annotation file, with its resolved path."""

    id: int
    file_name: str
    width: int
    height: int
    path: Path


@dataclass
class CocoDataset:
    """A parsed COCO annotation file (kept as plain data for scoring) and its images."""

    annotations_path: Path
    images_dir: Path
    gt: dict[str, Any]
    images: dict[int, ImageRecord]
    category_ids: list[int]
    annotated_image_ids: frozenset[int]
    sha256: str


def load_annotations(annotations_path: str | Path, images_dir: str | Path) -> CocoDataset:
    """Read and check a COCO instances file; image paths are resolved under ``images_dir``."""
    path = Path(annotations_path)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found (dataset.annotations)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read annotation file: {exc.strerror or exc}") from None
    try:
        gt = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a COCO annotation file: invalid JSON ({exc})") from None
    except RecursionError:
        raise UserError(f"{path}: not a COCO annotation file: JSON nested too deeply") from None
    _check_coco_structure(gt, path)
    _check_coco_values(gt, path)
    images_dir = Path(images_dir)
    images = {}
    for entry in gt["images"]:
        record = ImageRecord(id=entry["id"], file_name=entry["file_name"], width=entry["width"],
                             height=entry["height"], path=images_dir / entry["file_name"])
        if record.id in images:
            raise UserError(f"{path}: image id {record.id} appears twice in 'images'")
        images[record.id] = record
    category_ids = sorted(c["id"] for c in gt["categories"])
    if len(set(category_ids)) != len(category_ids):
        raise UserError(f"{path}: a category id appears twice in 'categories'")
    annotated = frozenset(a["image_id"] for a in gt["annotations"])
    unknown = annotated - images.keys()
    if unknown:
        raise UserError(f"{path}: annotations refer to image id {min(unknown)}, which is not in 'images'")
    return CocoDataset(annotations_path=path, images_dir=images_dir, gt=gt, images=images, category_ids=category_ids,
                       annotated_image_ids=annotated, sha256=hashlib.sha256(raw).hexdigest())


def _check_coco_structure(gt: Any, path: Path) -> None:
    if not isinstance(gt, dict):
        raise UserError(f"{path}: not a COCO annotation file: top level is not an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise UserError(f"{path}: not a COCO annotation file: missing list {key!r}")
    if not gt["categories"]:
        raise UserError(f"{path}: not a COCO annotation file: 'categories' is empty")
    for key, (fields, _) in _FIELDS.items():
        for index, entry in enumerate(gt[key]):
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise UserError(f"{path}: not a COCO annotation file: {key}[{index}] lacks {missing[0]!r}")
    for key, (_, integers) in _FIELDS.items():
        for index, entry in enumerate(gt[key]):
            for name in integers:
                if not is_int(entry[name]):
                    raise UserError(f"{path}: not a COCO annotation file: {key}[{index}].{name} must be an "
                                    f"integer, got {quote(entry[name])}")
    for index, entry in enumerate(gt["images"]):
        if not isinstance(entry["file_name"], str):
            raise UserError(f"{path}: images[{index}].file_name must be a string")
    for index, ann in enumerate(gt["annotations"]):
        bbox = ann["bbox"]
        # Finiteness is checked after the shape, with its own message (_check_coco_values).
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) or is_non_finite(v) for v in bbox)):
            raise UserError(f"{path}: annotations[{index}] bbox must be [x, y, width, height]")


def _check_coco_values(gt: dict[str, Any], path: Path) -> None:
    """Refuse what pycocotools would score wrongly or crash on after the whole inference."""
    for index, entry in enumerate(gt["images"]):
        where = f"{path}: images[{index}] (id {entry['id']})"
        if entry["width"] <= 0 or entry["height"] <= 0:
            raise UserError(f"{where}: width and height must be positive")
        name = entry["file_name"]
        if not name or os.path.isabs(name) or ".." in Path(name).parts:
            raise UserError(f"{where}: file_name {quote(name)} must be a relative path inside the image folder")
    names: dict[str, int] = {}
    for index, category in enumerate(gt["categories"]):
        name = category["name"]
        if not isinstance(name, str):
            raise UserError(f"{path}: categories[{index}].name must be a string, got {quote(name)}")
        if name in names:
            raise UserError(f"{path}: categories[{index}]: name {quote(name)} appears twice (also categories"
                            f"[{names[name]}]); per-category AP would lose one of them")
        names[name] = index
    category_ids = {c["id"] for c in gt["categories"]}
    seen: dict[int, int] = {}
    for index, ann in enumerate(gt["annotations"]):
        where = f"{path}: annotations[{index}] (id {ann['id']})"
        if ann["id"] in seen:
            raise UserError(f"{where}: annotation id appears twice (also annotations[{seen[ann['id']]}]); "
                            "pycocotools would keep only one of them")
        seen[ann["id"]] = index
        if ann["category_id"] not in category_ids:
            raise UserError(f"{where}: category_id {ann['category_id']} is not in 'categories'")
        bbox = ann["bbox"]
        if not all(math.isfinite(v) for v in bbox):
            raise UserError(f"{where}: bbox {quote(bbox)} holds NaN or Infinity")
        if bbox[2] < 0 or bbox[3] < 0:
            raise UserError(f"{where}: bbox {quote(bbox)} has a negative width or height")
        if "area" in ann and not (is_number(ann["area"]) and ann["area"] >= 0):
            raise UserError(f"{where}: area must be a finite number >= 0, got {quote(ann['area'])}")
        if "iscrowd" in ann and not (is_int(ann["iscrowd"]) and ann["iscrowd"] in (0, 1)):
            raise UserError(f"{where}: iscrowd must be 0 or 1, got {quote(ann['iscrowd'])}")


def image_fingerprint(path: str | Path) -> str:
    """``<size>:<sha256>`` of an image file's bytes: what a cached result of this image depends on."""
    return f"{os.path.getsize(path)}:{sha256_of(Path(path))}"


def read_image(record: ImageRecord) -> Image.Image:
    """Decode an image as RGB in stored-pixel orientation (no EXIF rotation); 16-bit grey is scaled to 8 bits
    (value / 257), 32-bit integer and float images are refused (their value range is unknown)."""
    try:
        if not stat.S_ISREG(os.stat(record.path).st_mode):  # a FIFO or device would block or never end
            raise BadImageError(f"{record.path}: not a regular file (image id {record.id})")
        with Image.open(record.path) as image:
            image.load()
            rgb = _to_rgb(image, record)
    except FileNotFoundError:
        raise BadImageError(f"{record.path}: image file not found (image id {record.id})") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImageError(f"{record.path}: cannot decode image (image id {record.id}): {exc}") from None
    if rgb.size != (record.width, record.height):
        raise BadImageError(f"{record.path}: image is {rgb.size[0]}x{rgb.size[1]} but the annotation file says "
                            f"{record.width}x{record.height} (image id {record.id})")
    return rgb


def _to_rgb(image: Image.Image, record: ImageRecord) -> Image.Image:
    if image.mode.startswith("I;16"):
        wide = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("I", "F"):
        raise BadImageError(f"{record.path}: {image.mode} ({'32-bit integer' if image.mode == 'I' else 'float'}) "
                            f"pixels are not supported; save it as 8-bit (image id {record.id})")
    return image.convert("RGB")
