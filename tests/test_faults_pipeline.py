"""The pipeline where modules join (issue 15): the resume cache key, batching, and merging shards.

Each test states what the run must do when one thing changes (a key field, the batch size, a shard's
image list) and checks it against the unchanged run or a refusal, on the sample's input-dependent model.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssd_eval.config.load import load_config
from ssd_eval.engine import cache as cache_module
from ssd_eval.engine import pipeline, prefetch
from ssd_eval.engine import progress as progress_module
from ssd_eval.engine.cache import DetectionCache
from ssd_eval.engine.pipeline import evaluate
from ssd_eval.engine.shards import merge_shards
from ssd_eval.errors import UserError
from ssd_eval.inference.runner import ModelIO
from ssd_eval.utils import sha256_of

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SAMPLE_IDS = sorted(i["id"] for i in json.loads((SAMPLE / "annotations.json").read_text())["images"])


def sample_config(out: Path, *overrides):
    return load_config(REPO / "configs" / "sample.yaml", [
        ("dataset.annotations", str(SAMPLE / "annotations.json")), ("dataset.images", str(SAMPLE / "images")),
        ("model.path", str(SAMPLE / "models" / "sample.onnx")), ("output.dir", str(out)),
        ("pipeline.workers", 1), *overrides])


# ------------------------------------------------------------------------------ the resume cache key


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """An output folder holding a finished sample run (and its cache)."""
    out = tmp_path_factory.mktemp("cached") / "out"
    evaluate(sample_config(out), progress=False)
    return out


def _swapped_label_map() -> list[int]:
    ids = sorted(c["id"] for c in json.loads((SAMPLE / "annotations.json").read_text())["categories"])
    ids[0], ids[1] = ids[1], ids[0]
    return ids


def _other_annotation_file(tmp_path: Path) -> str:
    """The sample's annotations with one more top-level key: the same images, other bytes."""
    data = json.loads((SAMPLE / "annotations.json").read_text())
    data["info"] = {"description": "a copy"}
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return str(path)


# The coco protocol's switches but inc's name: only the resize backend (opencv) comes from the protocol.
INC_WITH_COCO_SWITCHES = [("protocol", "inc"), ("dataset.skip_images_without_annotations", False),
                          ("metrics.crowd_as_ground_truth", False), ("postprocess.max_detections", 100),
                          ("postprocess.score_threshold", 0.0), ("postprocess.clip_boxes", True),
                          ("metrics.exclude_categories", [])]

KEY_CHANGES = {
    # name: (overrides (a function of tmp_path), key field that must be named, needs OpenCV)
    "model": (lambda t: [("model.path", str(SAMPLE / "models" / "sample-int8.onnx"))], "model_sha256", False),
    "annotation-file": (lambda t: [("dataset.annotations", _other_annotation_file(t))], "annotations_sha256", False),
    "preprocess-mean": (lambda t: [("preprocess.mean", [0.5, 0.5, 0.5])], "preprocess_sha256", False),
    "resize-backend": (lambda t: [("preprocess.resize_backend", "opencv")], "preprocess_sha256", True),
    "protocol-implied-resize-backend": (lambda t: INC_WITH_COCO_SWITCHES, "preprocess_sha256", True),
    "label-map": (lambda t: [("postprocess.label_map", _swapped_label_map())], "postprocess_sha256", False),
    "top-k": (lambda t: [("postprocess.max_detections", 20)], "postprocess_sha256", False),
    "score-threshold": (lambda t: [("postprocess.score_threshold", 0.05)], "postprocess_sha256", False),
    "clip-boxes": (lambda t: [("postprocess.clip_boxes", False)], "postprocess_sha256", False),
    "graph-optimization": (lambda t: [("runtime.graph_optimization", "basic")], "execution", False),
    "providers": (lambda t: [], "execution", False),  # the session's providers, changed below
}


@pytest.mark.parametrize("change", sorted(KEY_CHANGES))
def test_a_cache_is_refused_after_each_key_field_changes(finished_run, tmp_path, monkeypatch, change):
    overrides, field, needs_opencv = KEY_CHANGES[change]
    if needs_opencv:
        pytest.importorskip("cv2")
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    if change == "providers":
        monkeypatch.setattr(pipeline.Detector, "providers",
                            property(lambda self: ["AzureExecutionProvider", "CPUExecutionProvider"]))
    with pytest.raises(UserError, match="--fresh") as refused:
        evaluate(sample_config(out, *overrides(tmp_path)), progress=False)
    assert re.search(rf"\b{field}\b", str(refused.value))  # the field by its name, not a longer one


def test_the_cache_key_holds_the_cache_files_field_names(tmp_path):
    """A cache file's header holds this key, so its field names (and the parts hashed into ``execution``)
    are the file format: renaming one refuses every cache written before. Composed here field by field."""
    import dataclasses

    from ssd_eval.data import coco as data
    from ssd_eval.inference import postprocess
    from ssd_eval.utils import hash_data

    config = sample_config(tmp_path / "out")
    dataset = data.load_annotations(config.dataset.annotations, config.dataset.images)
    categories = postprocess.label_map(dataset.category_ids, config.postprocess.label_map)
    io = ModelIO("image", (1, 3, 64, 64), "bboxes", "labels", "scores")
    key = cache_module.cache_key(config, "ab" * 32, categories, dataset, ["CPUExecutionProvider"], {"x.y": "1"}, io)
    annotations = json.loads((SAMPLE / "annotations.json").read_text())
    label_map = sorted(c["id"] for c in annotations["categories"])  # class k (1..N) -> the k-th category id
    assert key == {
        "model_sha256": "ab" * 32,
        "model_io": "image -> bboxes, labels, scores",
        "annotations_sha256": sha256_of(SAMPLE / "annotations.json"),
        "images_dir": str((SAMPLE / "images").resolve()),
        "preprocess_sha256": hash_data(dataclasses.asdict(config.preprocess)),
        "postprocess_sha256": hash_data(dict(dataclasses.asdict(config.postprocess), label_map=label_map)),
        "execution": hash_data({"providers": ["CPUExecutionProvider"], "session_config": {"x.y": "1"},
                                "graph_optimization": config.runtime.graph_optimization}),
    }


def timed_cache(path: Path, timings: dict[int, tuple[float, float] | None]) -> DetectionCache:
    """A DetectionCache holding each image with its (loop_s, inference_s), or without times (None)."""
    cache = DetectionCache(path, {"test": 1})
    for image_id, timing in timings.items():
        loop_s, inference_s = timing if timing is not None else (None, None)
        cache.add(image_id, [], loop_s=loop_s, inference_s=inference_s)
    return cache


@pytest.mark.parametrize("timings, evaluated, todo, skipped, expected", [
    # inferred now (image 2 skipped as unreadable): the loop time of the images run, no inference time
    ({1: (1.0, 0.5), 3: (1.5, 0.25)}, [1, 3], [1, 2, 3], [2],
     {"images": 2, "loop_s": 2.5, "inference_s": None, "from_cache": False}),
    # every image from the cache: the times stored when they were inferred, inference time too
    ({1: (1.0, 0.5), 3: (0.5, 0.0)}, [1, 3], [], [],
     {"images": 2, "loop_s": 1.5, "inference_s": 0.5, "from_cache": True}),
    # a short loop (under a second) still counts; an inference time of 0 is a time
    ({1: (0.25, 0.0)}, [1], [1], [], {"images": 1, "loop_s": 0.25, "inference_s": None, "from_cache": False}),
    # cache lines without times (an older cache), or times of 0: no speed, nothing claimed from the cache
    ({1: None, 3: None}, [1, 3], [], [], {"images": 0, "loop_s": 0.0, "inference_s": None, "from_cache": False}),
    ({1: (0.0, 0.0), 3: (0.0, 0.0)}, [1, 3], [], [], {"images": 0, "loop_s": 0.0, "inference_s": None,
                                                       "from_cache": False}),
    ({1: (0.0, 0.0)}, [1], [1, 2], [2], {"images": 1, "loop_s": 0.0, "inference_s": None, "from_cache": False}),
    ({}, [], [], [], {"images": 0, "loop_s": 0.0, "inference_s": None, "from_cache": False}),  # an empty shard
], ids=["inferred-one-skipped", "all-from-cache", "short-loop", "untimed-cache", "zero-times", "zero-inferred",
        "no-images"])
def test_the_speed_is_timed_from_the_images_inferred_else_from_the_cache(tmp_path, timings, evaluated, todo,
                                                                          skipped, expected):
    skipped_records = [{"image_id": i, "file": f"{i}.jpg", "reason": "unreadable"} for i in skipped]
    with timed_cache(tmp_path / "cache.jsonl", timings) as cache:
        assert pipeline._speed(cache, evaluated, todo, skipped_records) == expected


class Failed(Exception):
    pass


class BegunCache:
    """What _RunFolder reads of a DetectionCache: its file, whether this run began it, images recorded."""

    def __init__(self, path: Path, *, started_afresh: bool = True, offsets: dict | None = None):
        self.path, self.started_afresh, self.offsets = path, started_afresh, offsets or {}


def test_a_run_folder_stays_after_a_run_that_succeeded_even_without_images(tmp_path):
    out = tmp_path / "a" / "b"
    with pipeline._RunFolder(out) as folder:
        assert out.is_dir() and folder.created == [out, tmp_path / "a"]  # deepest first
    assert out.is_dir()


def test_a_run_that_fails_before_any_image_removes_what_it_created_and_nothing_else(tmp_path):
    kept = tmp_path / "empty-before"  # an empty folder that existed before the run: not the run's to remove
    kept.mkdir()
    out = kept / "a" / "b"
    with pytest.raises(Failed):
        with pipeline._RunFolder(out) as folder:
            folder.cache = BegunCache(out / "cache.jsonl")
            (out / "cache.jsonl").write_text("header\n")
            raise Failed
    assert kept.is_dir() and not (kept / "a").exists()


def test_a_failed_run_whose_cache_file_was_never_written_still_removes_its_folders(tmp_path):
    out = tmp_path / "a"
    with pytest.raises(Failed):
        with pipeline._RunFolder(out) as folder:
            folder.cache = BegunCache(out / "cache.jsonl")  # begun, but its file not there (yet)
            raise Failed
    assert not out.exists()


@pytest.mark.parametrize("cache", ["recorded-an-image", "resumed-an-old-cache"])
def test_a_failed_run_keeps_the_folder_of_a_cache_it_did_not_begin_or_that_holds_images(tmp_path, cache):
    out = tmp_path / "a"
    with pytest.raises(Failed):
        with pipeline._RunFolder(out) as folder:
            (out / "cache.jsonl").write_text("header\n")
            folder.cache = BegunCache(out / "cache.jsonl", offsets={1: 7}) if cache == "recorded-an-image" else \
                BegunCache(out / "cache.jsonl", started_afresh=False)
            raise Failed
    assert (out / "cache.jsonl").is_file()


def test_a_failed_run_reports_its_own_error_when_its_folder_cannot_be_removed(tmp_path):
    out = tmp_path / "a"
    with pytest.raises(Failed):  # not the OSError of removing a folder someone wrote into meanwhile
        with pipeline._RunFolder(out):
            (out / "notes.txt").write_text("not the run's")
            raise Failed
    assert (out / "notes.txt").is_file()


def test_a_run_refused_before_it_starts_creates_no_output_folder(tmp_path):
    out = tmp_path / "results" / "run"
    with pytest.raises(UserError, match="missing.onnx"):
        evaluate(sample_config(out, ("model.path", str(tmp_path / "missing.onnx"))), progress=False)
    assert not (tmp_path / "results").exists()


def test_a_subset_run_says_why_it_gives_no_full_set_interval(tmp_path):
    """sample-4 was chosen by a rule, not at random: the bootstrap record says so (confidence.run_bootstrap
    gets the run's subset record)."""
    result = evaluate(sample_config(tmp_path / "out", ("dataset.subset", "sample-4")), progress=False)
    assert result.provenance["bootstrap"]["full_set_off"].startswith("subset sample-4 was chosen by ")
    assert result.full_set_intervals is None


def test_an_unchanged_run_reuses_the_cache(finished_run, tmp_path):
    """The control for the test above: the same settings resume every image from the copied cache."""
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    again = evaluate(sample_config(out), progress=False)
    assert again.provenance["resumed_images"] == again.provenance["images"] == len(SAMPLE_IDS)


def test_a_cache_file_changed_while_in_use_is_refused(tmp_path):
    path = tmp_path / "cache.jsonl"
    detection = {"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}
    with DetectionCache(path, {"model_sha256": "m"}) as cache:
        cache.add(1, [detection])
        cache.add(2, [dict(detection, image_id=2)])
        assert list(cache.detections([2, 1])) == [dict(detection, image_id=2), detection]
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(lines[0] + lines[2] + lines[1])  # another process rewrote it: the offsets are stale
        with pytest.raises(UserError, match="changed while in use"):
            list(cache.detections([1]))


# ------------------------------------------------------------------------------ batching


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory) -> Path:
    """The sample detector with a symbolic batch dimension: its detections follow each image's pixels."""
    pytest.importorskip("onnx")
    from ssd_eval.testing.sample import build_detector
    from ssd_eval.testing.synthetic import write_model

    return write_model(build_detector(dynamic_batch=True), tmp_path_factory.mktemp("model") / "dynamic.onnx")


@pytest.mark.parametrize("limit, batch", [(7, 2), (None, 3)], ids=["7-images-batch-2", "8-images-batch-3"])
def test_a_last_partial_batch_gives_the_same_detections_as_batch_1(tmp_path, dynamic_model, limit, batch):
    one = evaluate(sample_config(tmp_path / "one", ("model.path", str(dynamic_model)), ("dataset.limit", limit)),
                   progress=False)
    many = evaluate(sample_config(tmp_path / "many", ("model.path", str(dynamic_model)), ("dataset.limit", limit),
                                  ("runtime.batch_size", batch)), progress=False)
    count = limit or len(SAMPLE_IDS)
    assert count % batch != 0
    assert one.provenance["images"] == many.provenance["images"] == count
    detections = json.loads((tmp_path / "many" / "detections.json").read_text())
    assert {d["image_id"] for d in detections} == set(SAMPLE_IDS[:count])  # every image found something
    assert (tmp_path / "many" / "detections.json").read_bytes() == (tmp_path / "one" / "detections.json").read_bytes()
    assert many.scores.stats == one.scores.stats


# ------------------------------------------------------------------------------ merging shards


def test_each_image_gets_its_share_of_the_loop_and_inference_time(tmp_path, dynamic_model, created_detectors):
    """Cache lines time each image: a batch's inference time split over its images (the shares add up to the
    session's total), and the loop's wall time split the same way (the shares add up to at most the run's)."""
    import time

    out = tmp_path / "out"
    started = time.perf_counter()
    evaluate(sample_config(out, ("model.path", str(dynamic_model)), ("runtime.batch_size", 2),
                           ("dataset.limit", 7)), progress=False)
    elapsed = time.perf_counter() - started
    lines = [json.loads(line) for line in (out / "cache.jsonl").read_text().splitlines()[1:]]
    assert len(lines) == 7
    [detector] = created_detectors
    assert sum(line["inference_s"] for line in lines) == pytest.approx(detector.inference_seconds, abs=1e-5)
    # Not a speed check: the shares split the time from the loop's start to its last image, which lies inside
    # the evaluate call, so they cannot add up to more than it took.
    assert all(line["loop_s"] > 0 for line in lines) and sum(line["loop_s"] for line in lines) <= elapsed
    # the two images of a batch share its times equally (the last batch holds one image)
    for first, second in zip(lines[0:6:2], lines[1:6:2]):
        assert (first["loop_s"], first["inference_s"]) == (second["loop_s"], second["inference_s"])


def sample_records_and_params(size_hw=(24, 40)):
    from ssd_eval.data import coco as data

    dataset = data.load_annotations(SAMPLE / "annotations.json", SAMPLE / "images")
    params = prefetch.PreprocessParams(size_hw=size_hw, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                       scale=1 / 255, backend="pil")
    return [dataset.images[i] for i in sorted(dataset.images)], params


@pytest.mark.parametrize("reuse_buffers", [None, True], ids=["default", "reuse"])
def test_inputs_are_fresh_arrays_unless_buffers_are_reused_then_a_ring_of_depth_plus_one(reuse_buffers):
    records, params = sample_records_and_params()
    options = {} if reuse_buffers is None else {"reuse_buffers": reuse_buffers}
    arrays = [a for _, a in pipeline.prefetch_images(records, params, workers=1, mode="thread", depth=2, **options)]
    assert len(arrays) == len(records) > 4
    shared = [(i, j) for i in range(len(arrays)) for j in range(i + 1, len(arrays))
              if np.shares_memory(arrays[i], arrays[j])]
    if reuse_buffers is None:
        assert shared == []  # each its own array: the caller may keep it
    else:
        assert shared == [(i, j) for i in range(len(arrays)) for j in range(i + 1, len(arrays)) if (j - i) % 3 == 0]


def test_detections_are_recorded_from_one_thread_in_image_order(tmp_path, monkeypatch):
    """Postprocessing runs beside inference on one writer thread: the cache (not thread-safe) is added to
    from that thread only, in the order the images were run."""
    import threading

    added = []
    real_add = DetectionCache.add

    def add(self, image_id, detections, **kwargs):
        added.append((threading.get_ident(), image_id))
        return real_add(self, image_id, detections, **kwargs)

    monkeypatch.setattr(DetectionCache, "add", add)
    evaluate(sample_config(tmp_path / "out", ("pipeline.workers", 2)), progress=False)
    assert len({thread for thread, _ in added}) == 1 and threading.get_ident() not in {t for t, _ in added}
    assert [image_id for _, image_id in added] == SAMPLE_IDS


@pytest.mark.parametrize("reuse_buffers", [False, True])
def test_a_prefetch_depth_of_one_works_and_zero_is_refused(reuse_buffers):
    records, params = sample_records_and_params()
    expected = [prefetch.load_and_preprocess(r, params) for r in records]
    got = [(record, array.copy()) for record, array in pipeline.prefetch_images(
        records, params, workers=1, mode="thread", depth=1, reuse_buffers=reuse_buffers)]
    assert [r for r, _ in got] == records
    assert all(np.array_equal(a, e) for (_, a), e in zip(got, expected))
    with pytest.raises(ValueError, match="prefetch depth must be at least 1, not 0"):
        next(pipeline.prefetch_images(records, params, workers=1, mode="thread", depth=0))


def test_closing_the_prefetch_early_cancels_what_is_queued_without_waiting(monkeypatch):
    """A run that stops (an error, Ctrl-C) closes the generator: queued decodes are cancelled and the pool is
    not waited for."""
    import concurrent.futures
    import threading

    gate = threading.Event()
    shutdowns, submitted = [], []

    class Recording(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            first = not submitted

            def held(*a, **k):
                if not first:
                    gate.wait(5)  # every decode but the first stays busy or queued until the test is done
                return fn(*a, **k)
            future = super().submit(held, *args, **kwargs)
            submitted.append(future)
            return future

        def shutdown(self, wait=True, *, cancel_futures=False):
            shutdowns.append({"wait": wait, "cancel_futures": cancel_futures})
            super().shutdown(wait=wait, cancel_futures=cancel_futures)

    monkeypatch.setattr(prefetch.futures, "ThreadPoolExecutor", Recording)
    records, params = sample_records_and_params()
    images = pipeline.prefetch_images(records, params, workers=1, mode="thread", depth=4)
    next(images)
    images.close()  # the second decode is running (held), the last three are queued
    gate.set()
    assert shutdowns == [{"wait": False, "cancel_futures": True}]
    assert len(submitted) == 5 and any(f.cancelled() for f in submitted)


def test_process_workers_are_spawned_with_the_parent_watch(monkeypatch):
    """Process mode: ``workers`` spawned processes (not forked: onnxruntime's threads), each set up by
    _process_worker_setup with this process's id (they ignore Ctrl-C and exit when it dies)."""
    import concurrent.futures
    import os

    made = {}

    class Recording(concurrent.futures.ThreadPoolExecutor):  # runs in threads; records what it was asked
        def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=()):
            made.update(max_workers=max_workers, start=mp_context.get_start_method(), initializer=initializer,
                        initargs=initargs)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(prefetch.futures, "ProcessPoolExecutor", Recording)
    records, params = sample_records_and_params()
    got = list(pipeline.prefetch_images(records, params, workers=3, mode="process", depth=2, reuse_buffers=True))
    assert made == {"max_workers": 3, "start": "spawn", "initializer": prefetch._process_worker_setup,
                    "initargs": (os.getpid(),)}
    arrays = [a for _, a in got]
    assert [r for r, _ in got] == records and len(records) > 3
    assert not any(np.shares_memory(a, b) for k, a in enumerate(arrays) for b in arrays[k + 1:])  # no ring


def test_the_default_prefetch_depth_grows_with_the_batch(tmp_path, dynamic_model, monkeypatch):
    seen = {}
    real = pipeline.prefetch_images
    monkeypatch.setattr(pipeline, "prefetch_images", lambda *a, **k: seen.update(k) or real(*a, **k))
    evaluate(sample_config(tmp_path / "out", ("model.path", str(dynamic_model)), ("runtime.batch_size", 2),
                           ("pipeline.workers", 2)), progress=False)
    assert seen["depth"] == 2 * 2 * 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, list[Path]]:
    """(folder, [shard 1/2, shard 2/2]) of a sample run."""
    root = tmp_path_factory.mktemp("shards")
    for index in (1, 2):
        evaluate(sample_config(root / "split"), shard=(index, 2), progress=False)
    return root, [root / "split" / f"shard-{index}-of-2" for index in (1, 2)]


def copied_shards(shards, tmp_path: Path) -> list[Path]:
    return [Path(shutil.copytree(d, tmp_path / d.name)) for d in shards[1]]


def rewrite_shard(directory: Path, image_ids: list[int], detections: list[dict]) -> None:
    """Give a shard another image list and detections, with its manifest pinning the new detections.json."""
    manifest = json.loads((directory / "shard.json").read_text())
    (directory / "detections.json").write_text(json.dumps(detections))
    manifest["image_ids"] = image_ids
    manifest["detections_file"] = {"count": len(detections), "sha256": sha256_of(directory / "detections.json")}
    (directory / "shard.json").write_text(json.dumps(manifest))


def test_the_two_shards_merge(shards, tmp_path):
    first, second = copied_shards(shards, tmp_path)
    merged = merge_shards([first, second], tmp_path / "merged")
    assert merged.provenance["images"] == len(SAMPLE_IDS)


def test_merge_refuses_an_image_in_two_shards(shards, tmp_path):
    first, second = copied_shards(shards, tmp_path)
    ids = json.loads((first / "shard.json").read_text())["image_ids"]
    borrowed = json.loads((second / "shard.json").read_text())["image_ids"][0]
    rewrite_shard(first, ids + [borrowed], json.loads((first / "detections.json").read_text()))
    with pytest.raises(UserError, match=rf"image {borrowed} is in both"):
        merge_shards([first, second], tmp_path / "merged")
    assert not (tmp_path / "merged" / "metrics.json").exists()


def test_merge_refuses_shards_that_do_not_cover_the_image_set(shards, tmp_path):
    first, second = copied_shards(shards, tmp_path)
    ids = json.loads((second / "shard.json").read_text())["image_ids"]
    dropped = ids[-1]
    kept = [d for d in json.loads((second / "detections.json").read_text()) if d["image_id"] != dropped]
    rewrite_shard(second, ids[:-1], kept)
    with pytest.raises(UserError, match=rf"do not cover the image set \(e\.g\. image {dropped} is missing\)"):
        merge_shards([first, second], tmp_path / "merged")
    assert not (tmp_path / "merged" / "metrics.json").exists()


@pytest.mark.parametrize("pick, message", [
    (lambda first, second: [first], r"shard 2/2 is missing"),
    (lambda first, second: [first, first, second], r"shard 1/2 is given more than once"),
], ids=["missing-shard", "shard-twice"])
def test_merge_refuses_missing_or_repeated_shard_ids(shards, tmp_path, pick, message):
    first, second = copied_shards(shards, tmp_path)
    with pytest.raises(UserError, match=message):
        merge_shards(pick(first, second), tmp_path / "merged")


def test_merge_refuses_shards_run_with_other_runtime_settings(tmp_path):
    """Graph optimization changes detections (it is in the cache key): shards that differ in it must not merge."""
    evaluate(load_config("configs/sample-int8.yaml", [("output.dir", str(tmp_path / "run")),
                                                      ("runtime.graph_optimization", "disable")]),
             shard=(1, 2), progress=False)
    evaluate(load_config("configs/sample-int8.yaml", [("output.dir", str(tmp_path / "run"))]), shard=(2, 2),
             progress=False)
    with pytest.raises(UserError, match=r"different model, annotation file or config.*graph_optimization"):
        merge_shards([tmp_path / "run" / "shard-1-of-2", tmp_path / "run" / "shard-2-of-2"], tmp_path / "merged")


# ------------------------------------------------------------------------------ found by mutation testing
# The pipeline's own helpers: progress lines for logs, and the setup of process-pool workers (which run in
# the workers, out of sight of a test in this process: here they are called with their effects recorded).


class Clock:
    """A monotonic clock that starts far from 0, as time.monotonic does."""

    def __init__(self, start: float = 5000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def progress_lines(total: int, clock: Clock, **options):
    import io

    out = io.StringIO()
    return progress_module.ProgressLines(total, "v", clock=clock, stream=out, **options), out


def test_progress_lines_time_from_the_start_not_from_clock_zero():
    clock = Clock()
    progress, out = progress_lines(100, clock)
    clock.now += 1.0
    progress.update(1)  # 1 s, 1 %: not yet
    clock.now += 9.0
    progress.update(1)  # 10 s after the start: the first line. 2 / 10 s = 0.2 img/s, 98 left: 490 s
    assert out.getvalue().splitlines() == ["v: 2/100 images (2 %), 0.20 img/s, about 8m10s left"]


def test_progress_lines_defaults_first_after_2_s_then_every_120_s(capsys):
    clock = Clock(4096.0)  # steps exact in binary: "exactly 2 s" is exact
    progress = progress_module.ProgressLines(40, "v", clock=clock)  # stream: stderr
    clock.now += 1.5
    progress.update(10)  # 25 % but under 2 s: nothing
    clock.now += 0.5
    progress.update(1)  # exactly 2 s: due (5 % was reached). 11 / 2 s = 5.5 img/s, 29 left: 5.3 s
    clock.now += 119.5
    progress.update(1)
    clock.now += 0.5
    progress.update(1)  # exactly 120 s after the last line. 13 / 122 s, 27 left: 27 * 122 / 13 = 253.4 s
    assert capsys.readouterr().err.splitlines() == [
        "v: 11/40 images (28 %), 5.50 img/s, about 0m05s left",
        "v: 13/40 images (32 %), 0.11 img/s, about 4m13s left"]


def test_each_progress_line_is_flushed_as_it_is_printed():
    """A log reader (CI, ``tail -f``) sees each line when it is printed, not when a buffer fills."""
    import io

    class Stream(io.StringIO):
        def flush(self):
            self.flushed = self.getvalue()

    clock, out = Clock(), Stream()
    progress = progress_module.ProgressLines(10, "v", clock=clock, stream=out, min_first_s=0.0)
    clock.now += 1.0
    progress.update(5)
    assert out.getvalue() and out.flushed == out.getvalue()


@pytest.mark.parametrize("output_dir, overrides, expected", [
    ("{run}", [("dataset.limit", 3)], "partial run (limit 3): results go to {out}/, not to {canonical}/"),
    ("{run}", [("model.path", str(SAMPLE / "models" / "sample-int8.onnx"))],
     "partial run (model {int8}): results go to {out}/, not to {canonical}/"),
    ("folder", [("dataset.limit", 3)], "partial run (limit 3): its metrics are for testing"),
    ("folder", [("model.path", str(SAMPLE / "models" / "sample-int8.onnx"))], None),  # --out named it
    ("{run}", [("dataset.limit", 3), ("model.path", str(SAMPLE / "models" / "sample-int8.onnx"))],
     "partial run (limit 3, model {int8}): results go to {out}/, not to {canonical}/"),
    ("{run}", [("dataset.subset", "sample-4"), ("model.path", str(SAMPLE / "models" / "sample-int8.onnx"))],
     "partial run (model {int8}): results go to {out}/, not to {canonical}@sample-4/"),
    ("{run}", [], None),  # a full run
], ids=["limit", "other-model", "limit-in-named-folder", "other-model-in-named-folder", "two-parts", "subset",
        "full"])
def test_a_partial_run_warns_where_its_results_go(tmp_path, caplog, output_dir, overrides, expected):
    # sample_config overrides model.path (a partial run by that alone), so configs come from the file here.
    config = load_config(REPO / "configs" / "sample.yaml",
                         [("output.dir", str(tmp_path / output_dir)), *overrides])
    with caplog.at_level("WARNING", logger="ssd_eval.engine.pipeline"):
        pipeline._warn_if_partial(config)
    warnings = [r.getMessage() for r in caplog.records]
    if expected is None:
        assert warnings == []
    else:
        canonical = tmp_path / "sample"
        text = expected.format(out=config.out_dir, canonical=canonical,
                               int8=SAMPLE / "models" / "sample-int8.onnx")
        assert len(warnings) == 1 and warnings[0].startswith(text), warnings


def test_progress_line_rate_over_a_fraction_of_a_second_and_of_a_single_image():
    clock = Clock()
    progress, out = progress_lines(1, clock, min_first_s=0.0)
    clock.now += 0.5
    progress.update(1)
    assert out.getvalue() == "v: 1/1 images (100 %), 2.00 img/s, about 0m00s left\n"


def test_progress_line_without_any_image_done_says_the_time_left_is_unknown():
    clock = Clock()
    progress, out = progress_lines(10, clock)
    clock.now += 10.0
    progress.update(0)
    assert out.getvalue() == "v: 0/10 images (0 %), 0.00 img/s, about ? left\n"


@pytest.mark.parametrize("seconds, text", [(0, "0m00s"), (59.4, "0m59s"), (61, "1m01s"), (3599, "59m59s"),
                                           (3600, "1h00m"), (7200, "2h00m"), (7322, "2h02m")])
def test_durations_in_progress_lines(seconds, text):
    assert progress_module._duration(seconds) == text


def test_a_process_worker_ignores_ctrl_c_and_watches_its_parent(monkeypatch):
    import signal
    import threading

    handlers, threads = [], []

    class Recorded:
        def __init__(self, **kwargs):
            threads.append(kwargs)

        def start(self):
            threads[-1]["started"] = True

    monkeypatch.setattr(signal, "signal", lambda *args: handlers.append(args))
    monkeypatch.setattr(threading, "Thread", Recorded)
    prefetch._process_worker_setup(4242)
    assert handlers == [(signal.SIGINT, signal.SIG_IGN)]
    assert threads == [{"target": prefetch._exit_with_parent, "args": (4242,), "name": "exit-with-parent",
                        "daemon": True, "started": True}]


def test_a_process_worker_exits_once_its_parent_is_gone(monkeypatch):
    parents = iter([77, 77, 1])  # the parent dies after two checks: the worker is re-parented
    naps, exits = [], []

    class Exited(Exception):
        pass

    def exit_now(code):
        exits.append(code)
        raise Exited

    monkeypatch.setattr(prefetch.os, "getppid", lambda: next(parents))
    monkeypatch.setattr(prefetch.time, "sleep", naps.append)
    monkeypatch.setattr(prefetch.os, "_exit", exit_now)
    with pytest.raises(Exited):
        prefetch._exit_with_parent(77)
    assert naps == [0.5, 0.5] and exits == [1]
