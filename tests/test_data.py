"""Tests for ssd_eval.data.coco: annotation loading, image selection and sharding, image decoding."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd_eval.cli.commands import parse_shard
from ssd_eval.data.coco import BadImageError, ImageRecord, image_fingerprint, load_annotations, read_image
from ssd_eval.data.subsets import select_image_ids
from ssd_eval.errors import UserError

from faults import swap_bytes
from helpers import CATEGORIES, write_coco

IMAGES = [
    {"id": 7, "width": 40, "height": 30},
    {"id": 2, "width": 20, "height": 10, "mode": "L"},
    {"id": 5, "width": 16, "height": 24, "mode": "CMYK"},
    {"id": 11, "width": 8, "height": 8},
]
ANNOTATIONS = [
    {"image_id": 7, "category_id": 1, "bbox": [1, 2, 10, 5]},
    {"image_id": 7, "category_id": 13, "bbox": [3, 3, 4, 4]},
    {"image_id": 5, "category_id": 18, "bbox": [0, 0, 5, 5], "iscrowd": 1},
]


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path, IMAGES, ANNOTATIONS)


@pytest.fixture
def dataset(coco):
    annotations, images = coco
    return load_annotations(annotations, images)


def make_dataset(tmp_path, ids, annotated=()):
    images = [{"id": i, "width": 4, "height": 4} for i in ids]
    anns = [{"image_id": i, "category_id": 1, "bbox": [0, 0, 1, 1]} for i in annotated]
    annotations, image_dir = write_coco(tmp_path, images, anns)
    return load_annotations(annotations, image_dir)


# ---------------------------------------------------------------- load_annotations


def test_load_annotations_images_and_categories(dataset, coco):
    annotations, image_dir = coco
    assert sorted(dataset.images) == [2, 5, 7, 11]
    record = dataset.images[7]
    assert (record.id, record.width, record.height) == (7, 40, 30)
    assert record.file_name == "000000000007.jpg"
    assert record.path == image_dir / "000000000007.jpg"
    assert dataset.category_ids == [1, 3, 11, 13, 18]
    assert dataset.annotated_image_ids == frozenset({5, 7})
    assert dataset.annotations_path == annotations
    assert dataset.sha256 == hashlib.sha256(annotations.read_bytes()).hexdigest()
    assert len(dataset.gt["annotations"]) == 3


def test_categories_sorted_by_id_whatever_the_file_order(tmp_path):
    shuffled = [CATEGORIES[3], CATEGORIES[0], CATEGORIES[4], CATEGORIES[2], CATEGORIES[1]]
    annotations, image_dir = write_coco(tmp_path, [{"id": 1, "width": 4, "height": 4}], [], categories=shuffled)
    assert load_annotations(annotations, image_dir).category_ids == [1, 3, 11, 13, 18]


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def valid_gt():
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}],
        "categories": [{"id": 1, "name": "person"}],
    }


def assert_user_error_naming(path: Path, match: str | None = None) -> None:
    with pytest.raises(UserError) as info:
        load_annotations(path, path.parent)
    assert str(path) in str(info.value)
    if match:
        assert match in str(info.value)


def test_valid_minimal_gt_loads(tmp_path):
    dataset = load_annotations(write_json(tmp_path / "ok.json", valid_gt()), tmp_path)
    assert list(dataset.images) == [1]


def test_top_level_list_is_rejected(tmp_path):
    assert_user_error_naming(write_json(tmp_path / "list.json", [valid_gt()]), "not a COCO annotation file")


def test_missing_images_is_rejected(tmp_path):
    gt = valid_gt()
    del gt["images"]
    assert_user_error_naming(write_json(tmp_path / "noimages.json", gt), "'images'")


def test_annotation_without_bbox_is_rejected(tmp_path):
    gt = valid_gt()
    del gt["annotations"][0]["bbox"]
    assert_user_error_naming(write_json(tmp_path / "nobbox.json", gt), "'bbox'")


def test_bbox_with_wrong_length_is_rejected(tmp_path):
    gt = valid_gt()
    gt["annotations"][0]["bbox"] = [0, 0, 1]
    assert_user_error_naming(write_json(tmp_path / "bbox3.json", gt), "bbox")


def test_empty_categories_is_rejected(tmp_path):
    gt = valid_gt()
    gt["categories"] = []
    assert_user_error_naming(write_json(tmp_path / "nocats.json", gt), "categories")


def test_invalid_json_is_rejected(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    assert_user_error_naming(path, "invalid JSON")


def test_missing_annotation_file(tmp_path):
    assert_user_error_naming(tmp_path / "missing.json", "not found")


def test_duplicate_image_id_is_rejected(tmp_path):
    gt = valid_gt()
    gt["images"].append(dict(gt["images"][0], file_name="b.jpg"))
    assert_user_error_naming(write_json(tmp_path / "dup.json", gt), "appears twice")


def test_annotation_for_unknown_image_is_rejected(tmp_path):
    gt = valid_gt()
    gt["annotations"][0]["image_id"] = 99
    assert_user_error_naming(write_json(tmp_path / "orphan.json", gt), "99")


# ---------------------------------------------------------------- select_image_ids


def test_select_returns_sorted_ids(dataset):
    assert select_image_ids(dataset) == [2, 5, 7, 11]


def test_limit_takes_first_n_in_id_order(dataset):
    assert select_image_ids(dataset, limit=2) == [2, 5]
    assert select_image_ids(dataset, limit=100) == [2, 5, 7, 11]


def test_skip_images_without_annotations(dataset):
    assert select_image_ids(dataset, skip_images_without_annotations=True) == [5, 7]


def test_skip_then_limit(dataset):
    assert select_image_ids(dataset, skip_images_without_annotations=True, limit=1) == [5]


def test_shards_partition_ids_exactly(tmp_path):
    ids = [3, 1, 40, 8, 15, 9, 22, 100, 51, 6]
    dataset = make_dataset(tmp_path, ids)
    shards = [select_image_ids(dataset, shard=(i, 3)) for i in (1, 2, 3)]
    assert shards == [[1, 3, 6], [8, 9, 15], [22, 40, 51, 100]]
    assert sum(shards, []) == sorted(ids)


def test_shards_partition_with_limit(tmp_path):
    dataset = make_dataset(tmp_path, range(1, 21))
    shards = [select_image_ids(dataset, limit=7, shard=(i, 3)) for i in (1, 2, 3)]
    assert sum(shards, []) == [1, 2, 3, 4, 5, 6, 7]
    assert [len(s) for s in shards] == [2, 2, 3]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_shards_partition_for_any_count(tmp_path, count):
    dataset = make_dataset(tmp_path, range(10, 15))  # 5 images; count 7 leaves empty shards
    shards = [select_image_ids(dataset, shard=(i, count)) for i in range(1, count + 1)]
    assert sum(shards, []) == [10, 11, 12, 13, 14]


def test_parse_shard():
    assert parse_shard("2/3") == (2, 3)
    assert parse_shard("1/1") == (1, 1)


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "1/2/3", "a/b", ""])
def test_parse_shard_errors(text):
    with pytest.raises(UserError, match="--shard"):
        parse_shard(text)


# ---------------------------------------------------------------- read_image


def test_read_image_rgb(dataset):
    image = read_image(dataset.images[7])
    assert image.mode == "RGB"
    assert image.size == (40, 30)
    assert np.abs(np.asarray(image).astype(int) - [120, 130, 140]).max() <= 3


def test_read_image_converts_grayscale_to_rgb(dataset):
    image = read_image(dataset.images[2])
    assert image.mode == "RGB"
    assert image.size == (20, 10)
    pixels = np.asarray(image).astype(int)
    assert pixels.shape == (10, 20, 3)
    assert np.abs(pixels - 128).max() <= 2


def test_read_image_converts_cmyk_to_rgb(dataset):
    image = read_image(dataset.images[5])
    assert image.mode == "RGB"
    assert image.size == (16, 24)
    assert np.asarray(image).shape == (24, 16, 3)


def test_read_image_converts_palette_png(tmp_path):
    path = tmp_path / "p.png"
    Image.new("RGB", (6, 5), (255, 0, 0)).convert("P").save(path)
    image = read_image(ImageRecord(1, "p.png", 6, 5, path))
    assert image.mode == "RGB"
    assert tuple(np.asarray(image)[0, 0]) == (255, 0, 0)


def test_size_mismatch_names_file(dataset):
    record = dataset.images[7]
    wrong = ImageRecord(record.id, record.file_name, 30, 40, record.path)
    with pytest.raises(BadImageError) as info:
        read_image(wrong)
    assert str(record.path) in str(info.value)
    assert "40x30" in str(info.value)


def test_missing_image_file(tmp_path):
    path = tmp_path / "gone.jpg"
    with pytest.raises(BadImageError) as info:
        read_image(ImageRecord(3, "gone.jpg", 4, 4, path))
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_bad_image_error_is_a_user_error():
    assert issubclass(BadImageError, UserError)


def noisy_jpeg(path: Path, size=(64, 48)) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def test_truncated_jpeg_names_file(tmp_path):
    path = noisy_jpeg(tmp_path / "cut.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError) as info:
        read_image(ImageRecord(4, "cut.jpg", 64, 48, path))
    assert str(path) in str(info.value)
    assert "cannot decode" in str(info.value)


def test_truncated_solid_jpeg_names_file(dataset):
    record = dataset.images[7]
    data = record.path.read_bytes()
    record.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match=str(record.path)):
        read_image(record)


@pytest.mark.parametrize("content", [b"this is not an image at all" * 10, b"", b"\xff\xd8\xff\xe0garbage"])
def test_garbage_bytes_name_file(tmp_path, content):
    path = tmp_path / "junk.jpg"
    path.write_bytes(content)
    with pytest.raises(BadImageError) as info:
        read_image(ImageRecord(5, "junk.jpg", 4, 4, path))
    assert str(path) in str(info.value)


def test_exif_orientation_is_not_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW when displayed
    Image.new("RGB", (40, 20), (10, 200, 30)).save(path, exif=exif)
    with Image.open(path) as check:
        assert check.getexif().get(0x0112) == 6  # the tag really is in the file
    image = read_image(ImageRecord(6, "rotated.jpg", 40, 20, path))
    assert image.size == (40, 20)


@pytest.mark.parametrize("section, field, value", [
    ("images", "id", "139"),
    ("images", "width", "abc"),
    ("annotations", "image_id", "1"),
    ("categories", "id", "x"),
    ("annotations", "category_id", True),
])
def test_ids_and_sizes_must_be_integers(tmp_path, section, field, value):
    annotations, images = write_coco(tmp_path, [{"id": 1, "width": 20, "height": 10}],
                                     [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]}])
    data = json.loads(annotations.read_text())
    data[section][0][field] = value
    annotations.write_text(json.dumps(data))
    with pytest.raises(UserError, match=rf"{section}\[0\]\.{field} must be an integer"):
        load_annotations(annotations, images)


def test_unreadable_annotation_file_is_a_user_error(tmp_path, monkeypatch):
    annotations, images = write_coco(tmp_path, [{"id": 1, "width": 20, "height": 10}], [])

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(annotations), "read_bytes", refuse)
    with pytest.raises(UserError, match="cannot read annotation file: Permission denied"):
        load_annotations(annotations, images)


# ---------------------------------------------------------------- issue 13: what pycocotools would score wrongly

def gt_with(change) -> dict:
    gt = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1.0, "iscrowd": 0},
                        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2], "area": 4.0, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    change(gt)
    return gt


def _set(section, index, key, value):
    return lambda gt: gt[section][index].__setitem__(key, value)


@pytest.mark.parametrize("change, match", [
    (_set("annotations", 1, "id", 1), r"annotations\[1\] \(id 1\): annotation id appears twice"),
    (_set("annotations", 1, "category_id", 2), r"annotations\[1\] \(id 2\): category_id 2 is not in 'categories'"),
    (_set("annotations", 0, "bbox", [0, 0, -1, 1]), r"annotations\[0\] \(id 1\): bbox .* negative width or height"),
    (_set("annotations", 0, "bbox", [0, 0, 1, float("nan")]), r"annotations\[0\] \(id 1\): bbox .* NaN or Infinity"),
    (_set("annotations", 0, "bbox", [float("inf"), 0, 1, 1]), r"annotations\[0\] \(id 1\): bbox .* NaN or Infinity"),
    (_set("annotations", 0, "area", None), r"annotations\[0\] \(id 1\): area must be a finite number >= 0, got None"),
    (_set("annotations", 0, "area", "12"), r"area must be a finite number >= 0, got '12'"),
    (_set("annotations", 0, "iscrowd", None), r"annotations\[0\] \(id 1\): iscrowd must be 0 or 1, got None"),
    (_set("annotations", 0, "iscrowd", 2), r"iscrowd must be 0 or 1, got 2"),
    (_set("categories", 1, "name", "person"), r"categories\[1\]: name 'person' appears twice"),
    (_set("images", 0, "file_name", "../../../../etc/passwd"), r"images\[0\] \(id 1\): file_name '\.\./.*inside"),
    (_set("images", 0, "file_name", "/etc/passwd"), r"file_name '/etc/passwd' must be a relative path"),
    (_set("images", 0, "width", 0), r"images\[0\] \(id 1\): width and height must be positive"),
], ids=["dup-ann-id", "unknown-category", "negative-size", "nan-bbox", "inf-bbox", "area-null", "area-string",
        "iscrowd-null", "iscrowd-2", "dup-category-name", "dotdot-path", "absolute-path", "zero-width"])
def test_annotations_pycocotools_would_misscore_are_refused(tmp_path, change, match):
    """Item 5 and 13: refused when loading, i.e. before any inference, naming the file and entry."""
    path = write_json(tmp_path / "gt.json", gt_with(change))
    with pytest.raises(UserError, match=match) as info:
        load_annotations(path, tmp_path)
    assert str(info.value).startswith(f"{path}: ")


def test_valid_annotations_with_a_missing_area_and_iscrowd_still_load(tmp_path):
    def drop(gt):
        del gt["annotations"][0]["area"], gt["annotations"][0]["iscrowd"]
    assert len(load_annotations(write_json(tmp_path / "gt.json", gt_with(drop)), tmp_path).gt["annotations"]) == 2


def test_deeply_nested_annotation_json_is_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert_user_error_naming(path, "nested too deeply")


def test_long_values_are_quoted_short(tmp_path):
    gt = gt_with(_set("annotations", 0, "area", "x" * 100_000))
    with pytest.raises(UserError) as info:
        load_annotations(write_json(tmp_path / "gt.json", gt), tmp_path)
    assert len(str(info.value)) < 400


def test_fifo_is_refused_without_blocking(tmp_path):
    """Item 14: opening a FIFO for reading would block for ever."""
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(BadImageError, match=f"{fifo}: not a regular file"):
        read_image(ImageRecord(1, "x.jpg", 4, 4, fifo))


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    """Item 15: mode I;16 is scaled to 8 bits (value / 257), not clipped to white."""
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=np.uint16)).save(path)
    with Image.open(path) as check:
        assert check.mode == "I;16"
    image = read_image(ImageRecord(1, "deep.png", 4, 1, path))
    assert image.mode == "RGB"
    assert np.asarray(image)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_32_bit_image_is_refused(tmp_path):
    path = tmp_path / "wide.tif"
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I").save(path)
    with pytest.raises(BadImageError, match="32-bit integer"):
        read_image(ImageRecord(1, "wide.tif", 2, 1, path))


def test_image_fingerprint_follows_content_not_timestamps(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"one")
    before = image_fingerprint(path)
    os.utime(path, ns=(1, 1))
    assert image_fingerprint(path) == before == f"3:{hashlib.sha256(b'one').hexdigest()}"
    swap_bytes(path, b"two")
    assert image_fingerprint(path) != before


# ---------------------------------------------------------------- issue 15: gaps found by mutation testing


def test_dataset_records_the_image_folder(dataset, coco):
    assert dataset.images_dir == coco[1]


@pytest.mark.parametrize("change, match", [
    (_set("images", 0, "file_name", 5), r"images\[0\]\.file_name must be a string"),
    (_set("categories", 0, "name", 5), r"categories\[0\]\.name must be a string, got 5$"),
    (lambda gt: (_set("categories", 1, "id", 1)(gt), _set("annotations", 1, "category_id", 1)(gt)),
     r"a category id appears twice in 'categories'"),
    (_set("images", 0, "id", "139"), r"images\[0\]\.id must be an integer, got '139'$"),
], ids=["file-name-type", "category-name-type", "dup-category-id", "id-value-quoted"])
def test_type_errors_name_the_entry_and_the_value(tmp_path, change, match):
    path = write_json(tmp_path / "gt.json", gt_with(change))
    with pytest.raises(UserError, match=match) as info:
        load_annotations(path, tmp_path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("change, match", [
    (_set("annotations", 1, "id", 1), r"\(also annotations\[0\]\); pycocotools would keep only one of them$"),
    (_set("categories", 1, "name", "person"), r"\(also categories\[0\]\)"),
    (_set("annotations", 0, "bbox", [0, 0, -1, 1]), r"bbox \[0, 0, -1, 1\] has a negative"),
    (_set("annotations", 0, "bbox", [0, 0, 1, float("nan")]), r"bbox \[0, 0, 1, nan\] holds NaN"),
    (_set("images", 0, "height", 0), r"images\[0\] \(id 1\): width and height must be positive"),
], ids=["dup-ann-id", "dup-category-name", "negative-bbox", "nan-bbox", "zero-height"])
def test_refusals_name_the_earlier_entry_and_the_bad_value(tmp_path, change, match):
    """Which earlier entry a duplicate repeats, and the offending bbox itself, are in the message."""
    with pytest.raises(UserError, match=match):
        load_annotations(write_json(tmp_path / "gt.json", gt_with(change)), tmp_path)


def test_degenerate_but_valid_values_load(tmp_path):
    """The limits are inclusive: a 1x1 image, zero-width and zero-height boxes and area 0 are valid COCO."""
    def degenerate(gt):
        gt["images"][0].update(width=1, height=1)
        gt["annotations"][0].update(bbox=[0, 0, 0, 1], area=0.0)
        gt["annotations"][1].update(bbox=[0, 0, 1, 0], area=0)
    dataset = load_annotations(write_json(tmp_path / "gt.json", gt_with(degenerate)), tmp_path)
    assert (dataset.images[1].width, dataset.images[1].height) == (1, 1)
    assert [a["bbox"] for a in dataset.gt["annotations"]] == [[0, 0, 0, 1], [0, 0, 1, 0]]


def test_16_bit_values_round_to_the_nearest_8_bit_level(tmp_path):
    """v / 257 rounded: 32768 / 257 = 127.502 -> 128 and 65407 / 257 = 254.502 -> 255 (just above a half)."""
    path = tmp_path / "half.png"
    Image.fromarray(np.array([[32768, 65407, 32639]], dtype=np.uint16)).save(path)  # 32639 / 257 = 127.0
    image = read_image(ImageRecord(1, "half.png", 3, 1, path))
    assert np.asarray(image)[0, :, 0].tolist() == [128, 255, 127]


def test_float_and_32_bit_images_are_refused_naming_the_kind(tmp_path):
    floats = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32), mode="F").save(floats)
    with pytest.raises(BadImageError, match=r": F \(float\) pixels are not supported.*\(image id 1\)"):
        read_image(ImageRecord(1, "float.tif", 2, 1, floats))
    wide = tmp_path / "wide.tif"
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I").save(wide)
    with pytest.raises(BadImageError, match=r": I \(32-bit integer\) pixels are not supported"):
        read_image(ImageRecord(2, "wide.tif", 2, 1, wide))


def test_image_fingerprint_counts_every_byte_of_a_file_over_one_chunk(tmp_path):
    """The file is read in 1 MiB chunks; the size is the whole file's, not the last chunk's."""
    content = bytes(range(256)) * 4096 + b"end"  # 1 MiB + 3 bytes
    path = tmp_path / "big.jpg"
    path.write_bytes(content)
    assert image_fingerprint(path) == f"{(1 << 20) + 3}:{hashlib.sha256(content).hexdigest()}"


def write_subset_file(path: Path, dataset, ids) -> Path:
    from ssd_eval.data.subsets import Subset, ids_sha256, write_subset

    return write_subset(path, Subset(name=path.stem, annotations_sha256=dataset.sha256, image_ids=list(ids),
                                     ids_sha256=ids_sha256(ids), algorithm="test", seed=0))


def test_subset_keeps_exactly_its_ids_then_skip_and_limit_apply(tmp_path):
    dataset = make_dataset(tmp_path, [1, 2, 3, 4, 5, 6], annotated=[2, 3, 5])
    subset = str(write_subset_file(tmp_path / "subsets" / "pick.json", dataset, [2, 4, 5, 6]))
    assert select_image_ids(dataset, subset=subset) == [2, 4, 5, 6]
    assert select_image_ids(dataset, subset=subset, skip_images_without_annotations=True) == [2, 5]
    assert select_image_ids(dataset, subset=subset, limit=3) == [2, 4, 5]
    assert select_image_ids(dataset, subset=subset, shard=(2, 2)) == [5, 6]


def test_subset_of_another_annotation_file_is_refused(tmp_path):
    dataset = make_dataset(tmp_path / "a", [1, 2, 3])
    other = make_dataset(tmp_path / "b", [1, 2, 3, 4])
    subset = str(write_subset_file(tmp_path / "pick.json", other, [1, 2]))
    with pytest.raises(UserError, match=r"pick\.json: subset 'pick' was made from an annotation file"):
        select_image_ids(dataset, subset=subset)


def test_subset_naming_images_not_in_the_file_is_refused_naming_the_first(tmp_path):
    dataset = make_dataset(tmp_path, [1, 2, 3])
    subset = write_subset_file(tmp_path / "pick.json", dataset, [2, 7, 9])
    with pytest.raises(UserError) as info:
        select_image_ids(dataset, subset=str(subset))
    assert str(info.value) == f"{subset}: image id 7 is not in {dataset.annotations_path}"
