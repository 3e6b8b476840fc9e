"""Tests for ssd_eval.inference.preprocess: resize backends, normalization, layout."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from ssd_eval.errors import UserError
from ssd_eval.inference.preprocess import import_opencv, normalization_table, normalize, preprocess, resize

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
COLOUR = (10, 100, 200)


def run(image, backend, size_hw=(24, 32)):
    return preprocess(image, size_hw=size_hw, mean=MEAN, std=STD, scale=1 / 255, backend=backend)


def checkerboard(size=200) -> Image.Image:
    cells = (np.indices((size, size)).sum(axis=0) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([cells] * 3, axis=-1))


@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_output_shape_and_dtype(backend):
    tensor = run(Image.new("RGB", (50, 40), COLOUR), backend, size_hw=(24, 32))
    assert tensor.shape == (3, 24, 32)
    assert tensor.dtype == np.float32


@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_solid_colour_values(backend):
    tensor = run(Image.new("RGB", (50, 40), COLOUR), backend)
    for channel in range(3):
        expected = (COLOUR[channel] / 255 - MEAN[channel]) / STD[channel]
        np.testing.assert_allclose(tensor[channel], expected, atol=1e-5)


@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_upscale_solid_colour_values(backend):
    tensor = run(Image.new("RGB", (5, 7), COLOUR), backend, size_hw=(30, 20))
    assert tensor.shape == (3, 30, 20)
    np.testing.assert_allclose(tensor[2], (200 / 255 - MEAN[2]) / STD[2], atol=1e-5)


@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_height_and_width_are_not_swapped(backend):
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[:, 30:] = 255  # right half white
    tensor = run(Image.fromarray(pixels), backend, size_hw=(10, 20))
    assert tensor.shape == (3, 10, 20)
    np.testing.assert_allclose(tensor[0, :, 0], (0 - MEAN[0]) / STD[0], atol=1e-5)
    np.testing.assert_allclose(tensor[0, :, -1], (1 - MEAN[0]) / STD[0], atol=1e-5)


@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_resize_returns_uint8_hwc(backend):
    pixels = resize(Image.new("RGB", (50, 40), COLOUR), (24, 32), backend)
    assert pixels.shape == (24, 32, 3)
    assert pixels.dtype == np.uint8
    assert tuple(pixels[5, 5]) == COLOUR


def test_same_size_is_identity_for_both_backends():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    np.testing.assert_array_equal(resize(image, (12, 16), "pil"), pixels)
    np.testing.assert_array_equal(resize(image, (12, 16), "opencv"), pixels)


def test_backends_differ_when_downscaling_high_frequency():
    image = checkerboard()
    pil = resize(image, (60, 60), "pil").astype(np.float64)
    cv = resize(image, (60, 60), "opencv").astype(np.float64)
    # PIL antialiases: the checkerboard averages to flat grey. OpenCV samples: it aliases.
    assert pil.std() < 2.0
    assert abs(pil.mean() - 127.5) < 2.0
    assert cv.std() > 20.0
    assert np.abs(pil - cv).max() > 40


def test_normalize_values_and_layout():
    pixels = np.array([[[0, 255, 51]]], dtype=np.uint8)  # 1x1 HWC
    out = normalize(pixels, mean=[0.0, 0.5, 0.1], std=[1.0, 0.5, 0.2], scale=1 / 255)
    assert out.shape == (3, 1, 1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 1.0, 0.5], atol=1e-6)


def test_normalization_table_is_one_float32_row_of_256_levels_per_channel():
    table = normalization_table(MEAN, STD, 1 / 255)
    assert table.shape == (3, 256)
    assert table.dtype == np.float32
    # Independent route: each level computed alone in Python floats, rounded to float32 once.
    for channel in range(3):
        for level in (0, 1, 128, 254, 255):
            expected = np.float32((level * (1 / 255) - MEAN[channel]) / STD[channel])
            assert table[channel, level] == expected


def test_normalize_with_unit_scale():
    pixels = np.full((2, 2, 3), 10, dtype=np.uint8)
    out = normalize(pixels, mean=[0, 0, 0], std=[2, 2, 2], scale=1.0)
    np.testing.assert_allclose(out, 5.0)


def test_missing_opencv_is_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(UserError) as missing:
        import_opencv()
    assert str(missing.value) == ("preprocess.resize_backend: opencv needs opencv-python-headless, which is not "
                                  "installed: pip install -e '.[opencv]' (or set preprocess.resize_backend: pil)")
    with pytest.raises(UserError, match=r"\.\[opencv\]"):
        run(Image.new("RGB", (8, 8), COLOUR), "opencv")


def test_pil_backend_works_without_opencv(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    assert run(Image.new("RGB", (8, 8), COLOUR), "pil").shape == (3, 24, 32)


def test_unknown_backend_is_user_error():
    with pytest.raises(UserError) as unknown:
        run(Image.new("RGB", (8, 8), COLOUR), "bicubic")
    assert str(unknown.value) == "resize backend 'bicubic' is not one of pil, opencv"


def test_preprocess_writes_into_the_buffer_it_is_given():
    """``out``: the input ring's buffer is filled and returned (no new array), with the same values."""
    image = Image.new("RGB", (40, 30), COLOUR)
    expected = preprocess(image, size_hw=(24, 32), mean=MEAN, std=STD, scale=1 / 255, backend="pil")
    buffer = np.full((3, 24, 32), np.nan, dtype=np.float32)
    got = preprocess(image, size_hw=(24, 32), mean=MEAN, std=STD, scale=1 / 255, backend="pil", out=buffer)
    assert got is buffer and np.array_equal(buffer, expected)
