"""Preprocessing fidelity (issue 15): the tensors the harness feeds the model, against answers worked out here.

The sample model cannot see mild preprocessing errors (its mAP is identical to 7 digits under bicubic
resampling or a reversed std), so these tests look at the tensors themselves: every sample image through
the same path the pool workers take (``PreprocessParams.from_config`` -> ``load_and_preprocess``) against
an independent PIL / OpenCV / numpy preprocessing, and a resize known-answer worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd_eval.config import load_config
from ssd_eval.data import load_annotations
from ssd_eval.pipeline import PreprocessParams, load_and_preprocess
from ssd_eval.preprocess import resize

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
ZOO_MEAN = (0.485, 0.456, 0.406)
ZOO_STD = (0.229, 0.224, 0.225)


def independent_tensor(path: Path, size_hw: tuple[int, int], backend: str) -> np.ndarray:
    """The zoo preprocessing written out here: RGB, bilinear resize (PIL's antialiased filter or
    cv2 INTER_LINEAR on uint8), /255, minus the per-channel mean, over the per-channel std, CHW."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    height, width = size_hw
    if backend == "pil":
        pixels = np.asarray(rgb.resize((width, height), Image.Resampling.BILINEAR))
    else:
        import cv2

        pixels = cv2.resize(np.asarray(rgb), (width, height), interpolation=cv2.INTER_LINEAR)
    normalized = (pixels.astype(np.float64) / 255.0 - np.array(ZOO_MEAN)) / np.array(ZOO_STD)
    return normalized.transpose(2, 0, 1)


@pytest.mark.parametrize("size_hw", [None, (200, 300)], ids=["config-size", "non-square"])
@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_harness_tensors_equal_an_independent_preprocessing_of_the_sample(backend, size_hw):
    """Every sample image (RGB, grey, CMYK; smaller and larger than the input) as the workers make it."""
    if backend == "opencv":
        pytest.importorskip("cv2")
    overrides = [("preprocess.resize_backend", backend)]
    if size_hw is not None:
        overrides.append(("preprocess.input_size", list(size_hw)))
    config = load_config(REPO / "configs" / "sample.yaml", overrides)
    assert tuple(config.preprocess.mean) == ZOO_MEAN and tuple(config.preprocess.std) == ZOO_STD
    expected_hw = size_hw or (1200, 1200)
    params = PreprocessParams.from_config(config)
    dataset = load_annotations(SAMPLE / "annotations.json", SAMPLE / "images")
    assert len(dataset.images) == len(json.loads((SAMPLE / "annotations.json").read_text())["images"]) >= 8
    for record in dataset.images.values():
        tensor = load_and_preprocess(record, params)
        assert tensor.dtype == np.float32 and tensor.shape == (3, *expected_hw), record.file_name
        expected = independent_tensor(record.path, expected_hw, backend)
        np.testing.assert_allclose(tensor, expected, rtol=0, atol=1e-5, err_msg=str(record.path))


# A grey ramp along one axis: 0, 0, 100, 200. Worked out by hand (PIL: triangle filter of support
# 1 x scale on pixel centres, renormalized at the border; OpenCV INTER_LINEAR: source x = (x + 0.5) * scale
# - 0.5, clamped, no antialiasing):
#  - down to 2, PIL bilinear: (0*.75 + 0*.75 + 100*.25) / 1.75 = 14.29 -> 14 and (0*.25 + 100*.75 + 200*.75) / 1.75
#    = 128.57 -> 129; bicubic gives 5, 138; nearest 0, 200.
#  - down to 2, OpenCV linear: source 0.5 -> (0 + 0) / 2 = 0, source 2.5 -> (100 + 200) / 2 = 150; nearest 0, 100.
# The ramp 0, 200 up to 4 (both backends, linear): source 0.25 -> 0 (clamped), 0.75 -> 50, 1.25 -> 150, 1.75 -> 200;
# bicubic gives 0, 41, 159, 218 (PIL) or 0, 45, 155, 221 (OpenCV); nearest 0, 0, 200, 200.
DOWN_RAMP, UP_RAMP = [0, 0, 100, 200], [0, 200]
EXPECTED = {
    ("pil", "down"): [14, 129],
    ("opencv", "down"): [0, 150],
    ("pil", "up"): [0, 50, 150, 200],
    ("opencv", "up"): [0, 50, 150, 200],
}


def ramp_image(values: list[int], axis: str) -> Image.Image:
    """A grey RGB image that is ``values`` along ``axis`` (x: one row, y: one column)."""
    line = np.asarray(values, dtype=np.uint8)
    grey = line[np.newaxis, :] if axis == "x" else line[:, np.newaxis]
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


@pytest.mark.parametrize("axis", ["x", "y"])
@pytest.mark.parametrize("direction", ["down", "up"])
@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_resize_known_answer_tells_bilinear_from_bicubic_and_nearest(backend, direction, axis):
    if backend == "opencv":
        pytest.importorskip("cv2")
    values = DOWN_RAMP if direction == "down" else UP_RAMP
    expected = EXPECTED[(backend, direction)]
    size_hw = (1, len(expected)) if axis == "x" else (len(expected), 1)
    pixels = resize(ramp_image(values, axis), size_hw, backend)
    assert pixels.dtype == np.uint8 and pixels.shape == (*size_hw, 3)
    got = pixels[0, :, :] if axis == "x" else pixels[:, 0, :]
    for channel in range(3):
        assert got[:, channel].tolist() == expected, (backend, direction, axis, channel)
