"""The protocol table: switches, presets (coco, inc, mlperf-ssd), labels and aliases."""

from __future__ import annotations

from typing import Any

# The 9 classes Intel Neural Compressor's label-space detour drops: their contiguous label
# (12, 26, 29, 30, 45, 66, 68, 69, 71) is not a COCO category id (docs/PROTOCOLS.md).
INC_DROPPED_CATEGORIES = ("stop sign", "umbrella", "suitcase", "frisbee", "spoon", "remote", "cell phone",
                          "microwave", "toaster")


# Every protocol switch: its short name -> the config key that holds it. A switch left
# unset (null) in a config takes the value of the config's protocol.
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


SWITCHED_MARK = "+"


# What each named protocol sets every switch to; sources per cell in docs/PROTOCOLS.md.
PROTOCOL_PRESETS: dict[str, dict[str, Any]] = {
    # The official COCO detection rules.
    "coco": {
        "resize_backend": "pil",
        "skip_images_without_annotations": False,
        "crowd_as_ground_truth": False,
        "max_detections": 100,
        "score_threshold": 0.0,
        "clip_boxes": True,
        "keep_inverted_boxes": False,
        "exclude_categories": [],
    },
    # Intel Neural Compressor's ONNX Runtime SSD example: ssd-12, ssd-12-int8, ssd-12-qdq.
    "inc": {
        "resize_backend": "opencv",
        "skip_images_without_annotations": True,
        "crowd_as_ground_truth": True,
        "max_detections": "all",
        "score_threshold": 0.0,
        "clip_boxes": False,
        "keep_inverted_boxes": True,
        "exclude_categories": list(INC_DROPPED_CATEGORIES),
    },
    # BowenBao/inference's ONNX export of the MLPerf SSD-ResNet34 reference: ssd-10.
    "mlperf-ssd": {
        "resize_backend": "pil",
        "skip_images_without_annotations": True,
        "crowd_as_ground_truth": False,
        "max_detections": "all",
        "score_threshold": 0.0,
        "clip_boxes": False,
        "keep_inverted_boxes": True,
        "exclude_categories": [],
    },
}


# Old protocol names and what they mean now.
PROTOCOL_ALIASES = {"reference": "inc"}


# ``protocol: published`` means the protocol named by the variant's model.published_protocol.
PUBLISHED = "published"


def protocol_base(label: str) -> str:
    """The protocol a protocol label (Config.protocol_label) starts from: ``inc`` for ``inc`` and
    ``inc+resize_backend=pil``."""
    return label.split(SWITCHED_MARK, 1)[0]


def _label_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ";".join(str(v) for v in value) + "]"
    return str(value)
