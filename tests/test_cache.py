"""Tests for ssd_eval.engine.cache: the append-only resume cache and its recovery rules."""

from __future__ import annotations

import json
import logging

import pytest

from ssd_eval.engine.cache import CACHE_FORMAT, DetectionCache, describe_difference
from ssd_eval.errors import UserError

from faults import cut_last_line, full_disk, swap_bytes

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
    with caplog.at_level(logging.WARNING, logger="ssd_eval.engine.cache"):
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
    later = [dict(DET_1[0], score=0.5)]
    with DetectionCache(path, KEY) as cache:
        cache.add(1, DET_1)
        cache.add(1, later)
    with DetectionCache(path, KEY) as cache:
        assert dict(cache.items()) == {1: later}


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


# ---------------------------------------------------------------- issue 13: cut lines, foreign lines, changed images

def test_cut_last_line_then_resume_twice_gives_identical_detections(path):
    """Item 12: after a cut last line, the append position and every offset stay right."""
    filled(path)
    with DetectionCache(path, KEY) as cache:
        cache.add(3, DET_3)
    clean = path.read_bytes()
    cut_last_line(path)  # killed while writing image 3's line
    with DetectionCache(path, KEY) as cache:
        assert 3 not in cache
        cache.add(3, DET_3)
        assert list(cache.detections([3, 1, 2])) == DET_3 + DET_1 + DET_2  # read back in the same run
    with DetectionCache(path, KEY) as cache:
        assert dict(cache.items()) == {1: DET_1, 2: DET_2, 3: DET_3}
    assert path.read_bytes() == clean


def test_line_holding_another_images_detections_is_refused(path):
    """Item 4: a line's detections must be of the line's image."""
    filled(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"image_id": 3, "detections": DET_2}) + "\n")
    with pytest.raises(UserError, match="line 4 holds detections of image 2 under image 3.*--fresh"):
        DetectionCache(path, KEY)


@pytest.mark.parametrize("line", [
    b"\xff\xfe not utf-8\n",
    b'{"image_id": "3", "detections": []}\n',
    b'{"image_id": 3, "detections": [17]}\n',
    b'{"image_id": 3, "detections": [{"image_id": 3, "category_id": 1, "bbox": [NaN, 0, 1, 1], "score": 1}]}\n',
    b'{"image_id": 3, "detections": [{"image_id": 3, "category_id": 1, "bbox": [0, 1], "score": 1}]}\n',
    b'{"image_id": 3, "fingerprint": 5, "detections": []}\n',
    b"[" * 100_000 + b"]" * 100_000 + b"\n",
], ids=["utf8", "id-type", "det-type", "nan", "bbox", "fingerprint", "nested"])
def test_malformed_lines_are_one_line_errors(path, line):
    """Item 13: no TypeError, KeyError, UnicodeDecodeError or RecursionError escapes."""
    filled(path)
    with open(path, "ab") as handle:
        handle.write(line)
    with pytest.raises(UserError, match="line 4 is corrupt; pass --fresh"):
        DetectionCache(path, KEY)


def test_overwritten_image_is_evaluated_again(tmp_path, path):
    """Item 3 (b): a cached image whose file changed since (same size and mtime) is dropped."""
    images = {i: tmp_path / f"{i}.jpg" for i in (1, 2)}
    for number, image in images.items():
        image.write_bytes(bytes([number]) * 100)
    with DetectionCache(path, KEY, images=images) as cache:
        cache.add(1, DET_1)
        cache.add(2, DET_2)
    assert all("fingerprint" in json.loads(line) for line in lines(path)[1:])
    swap_bytes(images[2], b"\x09" * 100)
    with DetectionCache(path, KEY, images=images) as cache:
        assert 1 in cache and 2 not in cache
        cache.add(2, DET_2)
    with DetectionCache(path, KEY, images=images) as cache:
        assert dict(cache.items()) == {1: DET_1, 2: DET_2}
    with DetectionCache(path, KEY, images={1: images[1]}) as cache:  # images of other runs are left alone
        assert set(dict(cache.items())) == {1, 2}


def test_line_without_fingerprint_is_evaluated_again(tmp_path, path):
    filled(path)  # written without images: no fingerprints
    image = tmp_path / "1.jpg"
    image.write_bytes(b"x")
    with DetectionCache(path, KEY, images={1: image}) as cache:
        assert 1 not in cache and 2 in cache


def test_started_afresh(path):
    with DetectionCache(path, KEY) as cache:
        assert cache.started_afresh
        cache.add(1, DET_1)
    with DetectionCache(path, KEY) as cache:
        assert not cache.started_afresh
    with DetectionCache(path, KEY, fresh=True) as cache:
        assert cache.started_afresh


def test_disk_full_names_the_cache(path, monkeypatch):
    from ssd_eval.engine import cache as cache_module

    DetectionCache(path, KEY).close()
    full_disk(monkeypatch, cache_module)
    with DetectionCache(path, KEY) as cache:
        with pytest.raises(UserError, match=f"{path}: cannot write the resume cache: No space left on device"):
            cache.add(1, DET_1)
        assert 1 not in cache


# ---------------------------------------------------------------- issue 11: the speed measured at inference


def test_timing_is_kept_per_image_and_summed_in_the_order_given(path):
    with DetectionCache(path, KEY) as cache:
        cache.add(1, DET_1, loop_s=0.25, inference_s=0.2)
        cache.add(2, DET_2, loop_s=0.5000004, inference_s=0.125)
    entries = [json.loads(line) for line in lines(path)[1:]]
    assert [(e["loop_s"], e["inference_s"]) for e in entries] == [(0.25, 0.2), (0.5, 0.125)]  # rounded to 1 us
    with DetectionCache(path, KEY) as cache:
        assert cache.stored_seconds([1, 2]) == (0.75, 0.325)
        assert cache.count([1, 2]) == 3 and cache.count([2]) == 2
        cache.add(3, DET_3)  # no timing: the speed of a run including it cannot come from the cache
        assert cache.stored_seconds([1, 2, 3]) is None and cache.stored_seconds([]) is None


def test_lines_of_an_older_cache_without_timing_stay_readable(path):
    filled(path)  # written without timing, as before issue 11
    with DetectionCache(path, KEY) as cache:
        assert list(cache.detections([1, 2])) == DET_1 + DET_2
        assert cache.stored_seconds([1, 2]) is None


@pytest.mark.parametrize("timing", ['"loop_s": -1, "inference_s": 0', '"loop_s": "fast", "inference_s": 0',
                                    '"loop_s": NaN, "inference_s": 0'])
def test_a_malformed_timing_is_a_corrupt_line(path, timing):
    filled(path)
    text = path.read_text().replace('{"image_id": 2, ', '{"image_id": 2, ' + timing + ", ", 1)  # the line's own
    path.write_text(text)
    with pytest.raises(UserError, match="line 3 is corrupt"):
        DetectionCache(path, KEY)


# ---------------------------------------------------------------- issue 15: gaps found by mutation testing


@pytest.mark.parametrize("first_line", [b'{"something": "else"}\n', b"not json at all\n", b"[1, 2]\n", b"null\n",
                                        b"\n"], ids=["dict-without-format", "not-json", "list", "null", "empty-line"])
def test_a_first_line_that_is_not_this_header_is_not_a_cache(path, first_line):
    """Not "written for a different run" (that is a cache of this version): not a cache of this version."""
    path.parent.mkdir(parents=True)
    path.write_bytes(first_line)
    with pytest.raises(UserError, match=r"not a detection cache of this version; pass --fresh to discard it"):
        DetectionCache(path, KEY)
    assert path.read_bytes() == first_line  # left alone


@pytest.mark.parametrize("timing", ['"loop_s": 0, "inference_s": -1', '"loop_s": Infinity, "inference_s": 0',
                                    '"loop_s": true, "inference_s": 0', '"loop_s": 0, "inference_s": "x"'],
                         ids=["negative-inference", "infinite-loop", "bool-loop", "string-inference"])
def test_a_malformed_timing_of_either_kind_is_a_corrupt_line(path, timing):
    filled(path)
    text = path.read_text().replace('{"image_id": 2, ', '{"image_id": 2, ' + timing + ", ", 1)
    path.write_text(text)
    with pytest.raises(UserError, match="line 3 is corrupt"):
        DetectionCache(path, KEY)


@pytest.mark.parametrize("timing", ['"loop_s": 0.5', '"inference_s": 0.25'], ids=["loop-only", "inference-only"])
def test_a_line_with_half_a_timing_is_read_without_timing(path, timing):
    """Both times or none: a line with one of them still gives its detections, but no stored speed."""
    filled(path)
    path.write_text(path.read_text().replace('{"image_id": 2, ', '{"image_id": 2, ' + timing + ", ", 1))
    with DetectionCache(path, KEY) as cache:
        assert list(cache.detections([2])) == DET_2
        assert cache.stored_seconds([2]) is None


def test_detections_are_readable_after_close(path):
    cache = DetectionCache(path, KEY)
    cache.add(1, DET_1)
    cache.add(2, DET_2)
    cache.close()
    assert list(cache.detections([2, 1])) == DET_2 + DET_1


def test_resume_warnings_name_the_cache_and_what_is_evaluated_again(tmp_path, path, caplog):
    images = {i: tmp_path / f"{i}.jpg" for i in (1, 2, 3)}
    for number, image in images.items():
        image.write_bytes(bytes([number]) * 10)
    with DetectionCache(path, KEY, images=images) as cache:
        for image_id, dets in ((1, DET_1), (2, DET_2), (3, DET_3)):
            cache.add(image_id, dets)
    swap_bytes(images[3], b"\x07" * 10)
    swap_bytes(images[2], b"\x08" * 10)
    with open(path, "ab") as handle:
        handle.write(b'{"image_id": 4, "detec')  # a kill while writing image 4
    with caplog.at_level(logging.INFO, logger="ssd_eval.engine.cache"):
        DetectionCache(path, KEY, images=images).close()
    assert caplog.messages == [
        f"{path}: dropping a truncated last line (that image will be evaluated again)",
        f"{path}: 2 cached images changed on disk since they were evaluated (e.g. image 2); evaluating them again",
        f"{path}: 1 finished images found",
    ]


@pytest.mark.parametrize("content, logged", [(None, False), (b"", False), (b"x", True), (b"x\n", True)],
                         ids=["no-file", "empty", "one-byte", "a-line"])
def test_fresh_says_it_discards_only_a_file_with_content(path, caplog, content, logged):
    if content is not None:
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    with caplog.at_level(logging.INFO, logger="ssd_eval.engine.cache"):
        DetectionCache(path, KEY, fresh=True).close()
    assert caplog.messages == ([f"--fresh: discarding {path}"] if logged else [])
    assert len(lines(path)) == 1


def test_the_cache_folder_is_created_with_its_parents(tmp_path):
    path = tmp_path / "a" / "b" / "c" / "cache.jsonl"
    with DetectionCache(path, KEY) as cache:
        cache.add(1, DET_1)
    assert len(lines(path)) == 2


def test_a_cache_path_that_cannot_be_opened_is_one_line_naming_it(path):
    path.mkdir(parents=True)  # a folder where the file should be
    with pytest.raises(UserError) as info:
        DetectionCache(path, KEY)
    assert str(info.value) == f"{path}: cannot open the resume cache: Is a directory"


def test_an_image_gone_before_its_line_is_written_is_one_line_naming_it(tmp_path, path):
    gone = tmp_path / "gone.jpg"
    with DetectionCache(path, KEY, images={5: gone}) as cache:
        with pytest.raises(UserError) as info:
            cache.add(5, [])
    assert str(info.value) == f"{gone}: cannot read image 5 again: No such file or directory"


def test_timing_is_recorded_only_with_both_times_and_is_known_before_reopening(path):
    with DetectionCache(path, KEY) as cache:
        cache.add(1, DET_1, loop_s=0.5)  # half a timing: none recorded
        cache.add(2, DET_2, inference_s=0.5)
        cache.add(3, DET_3, loop_s=0.0000014, inference_s=0.1250004)  # rounded to 1 us: 1e-06 and 0.125
        assert cache.stored_seconds([1]) is None and cache.stored_seconds([2]) is None
        assert cache.stored_seconds([3]) == (0.000001, 0.125)  # in this run, not only after reopening
    entries = [json.loads(line) for line in lines(path)[1:]]
    assert [sorted(e) for e in entries[:2]] == [["detections", "image_id"]] * 2
    assert (entries[2]["loop_s"], entries[2]["inference_s"]) == (0.000001, 0.125)


def test_detection_counts_are_known_in_the_run_that_adds_them(path):
    with DetectionCache(path, KEY) as cache:
        cache.add(1, DET_1)
        cache.add(2, DET_2)
        cache.add(3, [])
        assert cache.count([1, 2, 3]) == 3 and cache.count([2]) == 2


def test_a_cache_file_changed_while_in_use_is_refused_naming_the_image_and_byte(path):
    with DetectionCache(path, KEY) as cache:
        cache.add(1, DET_1)
        cache.add(2, DET_2)
        header, first, second = lines(path)
        path.write_text("\n".join([header, second, first]) + "\n")  # the lines swapped by another program
        with pytest.raises(UserError) as info:
            list(cache.detections([1]))
    assert str(info.value) == (f"{path}: changed while in use (expected image 1 at byte {len(header) + 1}); "
                               "pass --fresh to start over")
