"""Image -> model input tensor: resize, scale, normalize, HWC -> CHW."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ssd_eval import extras
from ssd_eval.errors import UserError

RESIZE_BACKENDS = ("pil", "opencv")


def resize(image: Image.Image, size_hw: Sequence[int], backend: str) -> np.ndarray:
    """Bilinear resize of an RGB image to ``(height, width)``; returns uint8 HWC. ``pil``: antialiased when
    shrinking, as the Model Zoo README does; ``opencv``: not, as the Intel Neural Compressor and MLPerf scripts."""
    height, width = int(size_hw[0]), int(size_hw[1])
    if backend == "pil":
        return np.asarray(image.resize((width, height), Image.BILINEAR))
    if backend == "opencv":
        cv2 = import_opencv()
        return cv2.resize(np.asarray(image), (width, height), interpolation=cv2.INTER_LINEAR)
    raise UserError(f"resize backend {backend!r} is not one of {', '.join(RESIZE_BACKENDS)}")


def import_opencv():
    """The cv2 module, or a UserError saying how to install it."""
    extras.require(extras.RESIZE_OPENCV)
    import cv2

    return cv2


NORMALIZE_ROUTES = ("opencv-lut", "numpy-take")


def normalize(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float], scale: float,
              out: np.ndarray | None = None, route: str | None = None) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW: ``(pixels * scale - mean) / std`` per channel, into ``out`` (a float32
    (3, H, W) buffer) or a new array. ``route``: one of NORMALIZE_ROUTES (default ``normalize_route()``);
    every route gives the same bits."""
    # A 256-entry table per channel: one gather per pixel instead of a cast and two arithmetic passes (7.8 vs
    # 16 ms at 1200x1200); cv2.LUT halves that again without the GIL (docs/PERFORMANCE.md).
    table = normalization_table(mean, std, scale)
    if out is None:
        out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
    if route not in (None, *NORMALIZE_ROUTES):
        raise ValueError(f"normalize route {route!r} is not one of {', '.join(NORMALIZE_ROUTES)}")
    cv2 = _opencv_or_none() if route != "numpy-take" else None
    if route == "opencv-lut" and cv2 is None:
        raise UserError("normalize route opencv-lut needs OpenCV: pip install -e '.[opencv]'")
    if cv2 is not None and pixels.dtype == np.uint8 and pixels.ndim == 3 and out.flags.c_contiguous:
        for channel, plane in enumerate(cv2.split(pixels)):
            written = cv2.LUT(plane, table[channel], dst=out[channel])
            if written is not None and not np.shares_memory(written, out[channel]):  # never expected: be safe
                out[channel] = written
        return out
    for channel in range(3):
        np.take(table[channel], pixels[:, :, channel], out=out[channel], mode="clip")  # uint8: always in range
    return out


def normalize_route() -> str:
    """Which lookup ``normalize`` uses here: ``"opencv-lut"`` where OpenCV is installed, else ``"numpy-take"``."""
    return "opencv-lut" if _opencv_or_none() is not None else "numpy-take"


def _opencv_or_none():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def normalization_table(mean: Sequence[float], std: Sequence[float], scale: float) -> np.ndarray:
    """float32 (3, 256): the normalized value of every uint8 level in each channel."""
    levels = np.arange(256, dtype=np.float64) * scale
    mean64 = np.asarray(mean, dtype=np.float64).reshape(3, 1)
    std64 = np.asarray(std, dtype=np.float64).reshape(3, 1)
    return ((levels[None, :] - mean64) / std64).astype(np.float32)


def preprocess(image: Image.Image, *, size_hw: Sequence[int], mean: Sequence[float], std: Sequence[float],
               scale: float, backend: str, out: np.ndarray | None = None, route: str | None = None) -> np.ndarray:
    """An RGB image as the model's float32 (3, H, W) input (``out`` and ``route``: as ``normalize``'s)."""
    return normalize(resize(image, size_hw, backend), mean, std, scale, out=out, route=route)
