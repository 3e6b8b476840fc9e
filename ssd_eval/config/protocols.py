"""The protocol table: switches, presets (coco, inc, mlperf-ssd), labels and aliases."""

from __future__ import annotations

from typing import Any

# The 9 classes Intel Neural Compressor's label-space detour drops: their contiguous label
# (12, 26, 29, 30, 45, 66, 68, 69, 71) is not a COCO category id (docs/PROTOCOLS.md).
INC_DROPPED_CATEGORIES = ("stop sign", "umbrella", "suitcase", "frisbee", "spoon", "remote", "cell phone",
                          "microwave", "toaster")

# Every protocol switch: its short name -> the config key that holds it; null there: the protocol's value.
SWITCH_KEYS: dict[str, str] = {
    "resize_backend": "preprocess.resize_backend",
    "skip_images_without_annotations": "dataset.skip_images_without_annotations",
    "crowd_as_ground_truth": "metrics.crowd_as_ground_truth",
    "max_detections": "postprocess.max_detections",
    "score_threshold": "postprocess.score_threshold",
    "clip_boxes": "postprocess.clip_boxes",
    "keep_inverted_boxes": "postprocess.keep_inverted_boxes",
    "exclude_categories": "metrics.exclude_categories",
}

SWITCHED_MARK = "+"  # joins a protocol's name and the switches a run changed: ``inc+resize_backend=pil``

# What each named protocol sets every switch to; sources per cell in docs/PROTOCOLS.md. coco: the official COCO
# detection rules; inc: Intel Neural Compressor's ONNX Runtime SSD example (ssd-12, ssd-12-int8, ssd-12-qdq);
# mlperf-ssd: BowenBao/inference's ONNX export of the MLPerf SSD-ResNet34 reference (ssd-10).
_PRESET_COLUMNS = ("coco", "inc", "mlperf-ssd")
_PRESET_ROWS: dict[str, tuple[Any, Any, Any]] = {
    "resize_backend": ("pil", "opencv", "pil"),
    "skip_images_without_annotations": (False, True, True),
    "crowd_as_ground_truth": (False, True, False),
    "max_detections": (100, "all", "all"),
    "score_threshold": (0.0, 0.0, 0.0),
    "clip_boxes": (True, False, False),
    "keep_inverted_boxes": (False, True, True),
    "exclude_categories": ([], list(INC_DROPPED_CATEGORIES), []),
}
PROTOCOL_PRESETS: dict[str, dict[str, Any]] = {
    protocol: {switch: row[column] for switch, row in _PRESET_ROWS.items()}
    for column, protocol in enumerate(_PRESET_COLUMNS)
}

PROTOCOL_ALIASES = {"reference": "inc"}  # old protocol names and what they mean now

PUBLISHED = "published"  # the protocol the variant's model.published_protocol names


def protocol_base(label: str) -> str:
    """The protocol a label (Config.protocol_label) starts from: ``inc`` for ``inc+resize_backend=pil``."""
    return label.split(SWITCHED_MARK, 1)[0]


def _label_value(value: Any) -> str:
    return "[" + ";".join(str(v) for v in value) + "]" if isinstance(value, list) else str(value)
