"""Tests for ssd_eval.cache: the append-only resume cache and its recovery rules."""

from __future__ import annotations

import json
import logging

import pytest

from ssd_eval.cache import CACHE_FORMAT, DetectionCache, describe_difference
from ssd_eval.errors import UserError

KEY = {"model_sha256": "a" * 64, "preprocess_sha256": "b" * 64, "postprocess_sha256": "c" * 64}
DET_1 = [{"image_id": 1, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9}]
DET_2 = [{"image_id": 2, "category_id": 18, "bbox": [0.5, 0.5, 10.0, 20.0], "score": 0.25},
         {"image_id": 2, "category_id": 1, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.125}]
DET_3 = [{"image_id": 3, "category_id": 11, "bbox": [5.0, 5.0, 5.0, 5.0], "score": 0.5}]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "out" / "cache.jsonl"


def filled(path):
    """A closed cache file holding images 1 and 2."""
    with DetectionCache(path, KEY) as cache:
        cache.add(1, DET_1)
        cache.add(2, DET_2)
    return path


def lines(path):
    return path.read_text().splitlines()


def test_new_cache_writes_header(path):
    with DetectionCache(path, KEY) as cache:
        assert dict(cache.items()) == {}
    [header] = lines(path)
    assert json.loads(header) == {"format": CACHE_FORMAT, "key": KEY}


def test_add_writes_one_line_per_image(path):
    filled(path)
    rows = [json.loads(line) for line in lines(path)[1:]]
    assert rows == [{"image_id": 1, "detections": DET_1}, {"image_id": 2, "detections": DET_2}]


def test_add_is_visible_before_close(path):
    with DetectionCache(path, KEY) as cache:
        cache.add(7, DET_1)
        assert len(lines(path)) == 2  # flushed, not buffered until close
        assert dict(cache.items()) == {7: DET_1}


def test_reopen_with_same_key_recovers_entries(path):
    filled(path)
    with DetectionCache(path, KEY) as cache:
        assert dict(cache.items()) == {1: DET_1, 2: DET_2}
        cache.add(3, DET_3)
    with DetectionCache(path, KEY) as cache:
        assert dict(cache.items()) == {1: DET_1, 2: DET_2, 3: DET_3}
    assert len(lines(path)) == 4  # one header, three images


def test_image_with_no_detections_is_recorded(path):
    with DetectionCache(path, KEY) as cache:
        cache.add(9, [])
    with DetectionCache(path, KEY) as cache:
        assert dict(cache.items()) == {9: []}


def test_different_key_is_refused_naming_field_and_fresh(path):
    filled(path)
    other = dict(KEY, preprocess_sha256="d" * 64)
    with pytest.raises(UserError) as info:
        DetectionCache(path, other)
    message = str(info.value)
    assert str(path) in message
    assert "--fresh" in message
    assert "preprocess_sha256 bbbbbbbbbbbb vs now dddddddddddd" in message
    assert "model_sha256" not in message
    assert len(lines(path)) == 3  # the refused cache is left alone


def test_fresh_discards_existing_entries(path):
    filled(path)
    with DetectionCache(path, KEY, fresh=True) as cache:
        assert dict(cache.items()) == {}
    assert len(lines(path)) == 1


def test_fresh_allows_a_different_key(path):
    filled(path)
    other = dict(KEY, model_sha256="e" * 64)
    with DetectionCache(path, other, fresh=True) as cache:
        assert dict(cache.items()) == {}
    assert json.loads(lines(path)[0])["key"] == other


def test_fresh_on_missing_file_creates_it(path):
    with DetectionCache(path, KEY, fresh=True):
        pass
    assert len(lines(path)) == 1


def test_truncated_last_line_is_dropped_and_file_repaired(path, caplog):
    filled(path)
    good_size = path.stat().st_size
    half = json.dumps({"image_id": 3, "detections": DET_3})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(half[: len(half) // 2])  # a kill mid-write: no newline
    with caplog.at_level(logging.WARNING, logger="ssd_eval.cache"):
        with DetectionCache(path, KEY) as cache:
            assert dict(cache.items()) == {1: DET_1, 2: DET_2}
            assert path.stat().st_size == good_size  # truncated to the last good line
            cache.add(3, DET_3)
    assert "truncated" in caplog.text
    rows = [json.loads(line) for line in lines(path)]  # every line is valid JSON again
    assert [r.get("image_id") for r in rows] == [None, 1, 2, 3]
    with DetectionCache(path, KEY) as cache:
        assert dict(cache.items()) == {1: DET_1, 2: DET_2, 3: DET_3}


def test_complete_json_without_newline_is_dropped(path):
    filled(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"image_id": 3, "detections": DET_3}))
    with DetectionCache(path, KEY) as cache:
        assert set(dict(cache.items())) == {1, 2}
        cache.add(3, DET_3)
    with DetectionCache(path, KEY) as cache:
        assert dict(cache.items())[3] == DET_3


def test_corrupt_middle_line_is_user_error(path):
    filled(path)
    header, first, second = lines(path)
    path.write_text("\n".join([header, first, "{not json", second]) + "\n")
    with pytest.raises(UserError) as info:
        DetectionCache(path, KEY)
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message
    assert "--fresh" in message


def test_line_missing_fields_is_corrupt(path):
    filled(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"image": 3}) + "\n")
    with pytest.raises(UserError, match="line 4 is corrupt"):
        DetectionCache(path, KEY)


def test_file_that_is_not_a_cache_is_refused(path):
    path.parent.mkdir(parents=True)
    path.write_text('{"something": "else"}\n')
    with pytest.raises(UserError) as info:
        DetectionCache(path, KEY)
    assert "--fresh" in str(info.value)
    assert str(path) in str(info.value)


def test_later_line_for_same_image_wins(path):
    with DetectionCache(path, KEY) as cache:
        cache.add(1, DET_1)
        cache.add(1, DET_3)
    with DetectionCache(path, KEY) as cache:
        assert dict(cache.items()) == {1: DET_3}


def test_describe_difference():
    old = {"model_sha256": "a" * 64, "batch": 1}
    new = {"model_sha256": "f" * 64, "batch": 1, "extra": "x"}
    assert describe_difference(old, new) == "extra None vs now x; model_sha256 aaaaaaaaaaaa vs now ffffffffffff"
    assert describe_difference(old, old) == "unknown difference"


def test_a_second_run_on_the_same_cache_is_refused(tmp_path):
    path = tmp_path / "cache.jsonl"
    with DetectionCache(path, KEY):
        with pytest.raises(UserError, match="another run is using"):
            DetectionCache(path, KEY)
    with DetectionCache(path, KEY):  # free again once the first run closed it
        pass


def test_header_cut_by_a_kill_starts_a_new_cache(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(b'{"format": "ssd_eval det')
    with DetectionCache(path, KEY) as cache:
        cache.add(1, DET_1)
    with DetectionCache(path, KEY) as cache:
        assert dict(cache.items()) == {1: DET_1}
