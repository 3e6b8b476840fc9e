"""Resume cache: finished images' detections, appended and flushed one image at a time."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ssd_eval.config.schema import Config
from ssd_eval.data import coco as data
from ssd_eval.engine.folder_lock import lock_file
from ssd_eval.errors import UserError
from ssd_eval.inference.postprocess import add_counts
from ssd_eval.inference.runner import ModelIO
from ssd_eval.results.result import is_detection
from ssd_eval.utils import hash_data, is_int, is_number

log = logging.getLogger(__name__)

CACHE_FORMAT = "ssd_eval detection cache v1"


class DetectionCache:
    """A JSONL file: a header line with the cache key (another key is refused), then one line per image,
    of which only the offset, counts and times are kept in memory. With ``images`` (image id -> file), an image
    whose file changed since its line was written is evaluated again. ``started_afresh``: begun empty."""

    def __init__(self, path: str | Path, key: dict[str, Any], *, fresh: bool = False,
                 images: Mapping[int, Path] | None = None):
        self.path = Path(path)
        self.key = key
        self.images = images
        self.offsets: dict[int, int] = {}  # image id -> byte offset of its line
        self.counts: dict[int, int] = {}  # image id -> number of detections on its line
        self.timings: dict[int, tuple[float, float] | None] = {}  # image id -> (loop_s, inference_s) or None
        self.output_counts: dict[int, dict[str, int] | None] = {}  # image id -> postprocess.output_counts or None
        self.started_afresh = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._handle = open(self.path, "ab")
        except OSError as exc:
            raise UserError(f"{self.path}: cannot open the resume cache: {exc.strerror or exc}") from None
        lock_file(self._handle, self.path)
        try:
            if fresh and self._handle.tell() > 0:
                log.info("--fresh: discarding %s", self.path)
            elif self._handle.tell() > 0 and self._load():
                return
            self.started_afresh = True
            self._truncate(0)
            self._write(json.dumps({"format": CACHE_FORMAT, "key": key}, sort_keys=True).encode() + b"\n")
        except BaseException:
            self._handle.close()  # releases the lock
            raise

    def _load(self) -> bool:
        """Index the finished images; False when the file holds no complete header (start anew)."""
        with open(self.path, "rb") as handle:
            first = handle.readline()
            if not first.endswith(b"\n"):
                return False  # killed while writing the header: nothing was cached yet
            try:
                header = json.loads(first)
            except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                header = None
            if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
                raise UserError(f"{self.path}: not a detection cache of this version; pass --fresh to discard it")
            if header.get("key") != self.key:
                difference = describe_difference(header.get("key") or {}, self.key)
                raise UserError(f"{self.path}: was written for a different run ({difference}); it is not reused: "
                                "pass --fresh to discard it, or choose another --out")
            good_end = len(first)
            fingerprints: dict[int, str | None] = {}
            for number, line in enumerate(handle, start=2):
                if not line.endswith(b"\n"):
                    # A kill during the last write leaves a cut line: drop it, that image runs again.
                    log.warning("%s: dropping a truncated last line (that image will be evaluated again)", self.path)
                    break
                entry = self._check_line(line, number)
                fingerprints[entry["image_id"]] = entry.get("fingerprint")
                self._remember(good_end, entry)
                good_end += len(line)
        if good_end < os.path.getsize(self.path):
            self._truncate(good_end)
        self._verify_images(fingerprints)
        log.info("%s: %d finished images found", self.path, len(self.offsets))
        return True

    def _check_line(self, line: bytes, number: int) -> dict[str, Any]:
        """One cache line's entry, checked to hold that image's detections."""
        try:
            entry = json.loads(line)
            image_id = entry["image_id"]
            if not (is_int(image_id) and isinstance(entry["detections"], list)
                    and isinstance(entry.get("fingerprint", ""), str)):
                raise TypeError("image_id, detections or fingerprint of the wrong type")
            if not all(is_number(entry.get(k, 0.0)) and entry.get(k, 0.0) >= 0 for k in ("loop_s", "inference_s")):
                raise TypeError("loop_s or inference_s not a number >= 0")
            counts = entry.get("output_counts")
            if counts is not None and not (isinstance(counts, dict) and all(
                    isinstance(k, str) and is_int(v) and v >= 0 for k, v in counts.items())):
                raise TypeError("output_counts not a mapping of counts")
            if not all(is_detection(detection) for detection in entry["detections"]):
                raise TypeError("malformed detection")
        except (ValueError, KeyError, TypeError, RecursionError):
            raise UserError(f"{self.path}: line {number} is corrupt; pass --fresh to discard the cache") from None
        foreign = next((d["image_id"] for d in entry["detections"] if d["image_id"] != image_id), None)
        if foreign is not None:
            raise UserError(f"{self.path}: line {number} holds detections of image {foreign} under image {image_id}; "
                            "the cache was edited or mixed up: pass --fresh to discard it")
        return entry

    def _remember(self, offset: int, entry: dict[str, Any]) -> None:
        """Index one image's line (at byte ``offset``) from its entry."""
        image_id = entry["image_id"]
        self.offsets[image_id] = offset
        self.counts[image_id] = len(entry["detections"])
        self.timings[image_id] = ((float(entry["loop_s"]), float(entry["inference_s"]))
                                  if "loop_s" in entry and "inference_s" in entry else None)
        self.output_counts[image_id] = entry.get("output_counts")

    def _verify_images(self, fingerprints: dict[int, str | None]) -> None:
        """Forget cached images whose file is gone or changed since (they are evaluated again)."""
        if self.images is None:
            return
        changed = [i for i in self.offsets if i in self.images
                   and (fingerprints[i] is None or fingerprints[i] != _fingerprint_or_none(self.images[i]))]
        for image_id in changed:
            del self.offsets[image_id], self.counts[image_id], self.timings[image_id], self.output_counts[image_id]
        if changed:
            log.warning("%s: %d cached images changed on disk since they were evaluated (e.g. image %d); "
                        "evaluating them again", self.path, len(changed), min(changed))

    def _truncate(self, size: int) -> None:
        # Appends go to the end whatever the position, but tell() (a line's offset) must be the end too.
        self._handle.truncate(size)
        self._handle.seek(0, os.SEEK_END)

    def _write(self, data: bytes) -> None:
        try:
            self._handle.write(data)
            self._handle.flush()
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write the resume cache: {exc.strerror or exc}") from None

    def __contains__(self, image_id: int) -> bool:
        return image_id in self.offsets

    def add(self, image_id: int, detections: list[dict], *, loop_s: float | None = None,
            inference_s: float | None = None, output_counts: dict[str, int] | None = None) -> None:
        """Record one finished image, flushed to the OS before returning, with its shares of the image loop's
        and of ``session.run``'s seconds and its ``postprocess.output_counts``."""
        entry: dict[str, Any] = {"image_id": int(image_id)}
        if self.images is not None:
            try:
                entry["fingerprint"] = data.image_fingerprint(self.images[image_id])
            except OSError as exc:
                raise UserError(f"{self.images[image_id]}: cannot read image {image_id} again: "
                                f"{exc.strerror or exc}") from None
        if loop_s is not None and inference_s is not None:
            entry["loop_s"], entry["inference_s"] = round(float(loop_s), 6), round(float(inference_s), 6)
        if output_counts is not None:
            entry["output_counts"] = {key: int(value) for key, value in output_counts.items()}
        entry["detections"] = detections
        offset = self._handle.tell()
        self._write(json.dumps(entry).encode() + b"\n")
        self._remember(offset, entry)

    def count(self, image_ids: Iterable[int]) -> int:
        """How many detections the finished images ``image_ids`` hold."""
        return sum(self.counts[i] for i in image_ids)

    def stored_seconds(self, image_ids: Sequence[int]) -> tuple[float, float] | None:
        """The summed (loop_s, inference_s) of ``image_ids``; None when there are none or any has no timing."""
        timings = [self.timings.get(i) for i in image_ids]
        if not timings or any(t is None for t in timings):
            return None
        return sum(t[0] for t in timings), sum(t[1] for t in timings)

    def stored_output_counts(self, image_ids: Iterable[int]) -> dict[str, int] | None:
        """The output counts recorded for ``image_ids``, summed key by key; None when none has any."""
        return functools.reduce(add_counts, (self.output_counts.get(i) for i in image_ids), None)

    def detections(self, image_ids: Iterable[int]) -> Iterator[dict]:
        """The cached detections of ``image_ids`` (all finished), in the order given."""
        with open(self.path, "rb") as reader:
            for image_id in image_ids:
                reader.seek(self.offsets[image_id])
                try:
                    entry = json.loads(reader.readline())
                    found = entry["image_id"]
                except (ValueError, KeyError, TypeError):
                    found = None
                if found != image_id:
                    raise UserError(f"{self.path}: changed while in use (expected image {image_id} at byte "
                                    f"{self.offsets[image_id]}); pass --fresh to start over")
                yield from entry["detections"]

    def items(self) -> Iterator[tuple[int, list[dict]]]:
        """Every finished image and its detections, in ascending image id order."""
        return ((image_id, list(self.detections([image_id]))) for image_id in sorted(self.offsets))

    def close(self) -> None:
        """Close the file (and release its lock)."""
        self._handle.close()

    def __enter__(self) -> "DetectionCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fingerprint_or_none(path: Path) -> str | None:
    try:
        return data.image_fingerprint(path)
    except OSError:
        return None


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Which key fields differ between two cache keys, in words (sha256 values shortened)."""
    parts = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if isinstance(before, str) and isinstance(after, str) and len(before) == 64:
            before, after = before[:12], after[:12]
        parts.append(f"{name} {before} vs now {after}")
    return "; ".join(parts) or "unknown difference"


# Every config field (dotted key) that can change an image's detections, and what of cache_key covers it:
# "config" where cache_key reads the field itself, else the argument that carries what the field resolves to.
CACHE_KEY_FIELDS: dict[str, str] = {
    "model.path": "model_sha256",
    **{f"model.{name}": "io" for name in ("input_name", "boxes_output", "labels_output", "scores_output")},
    **{f"dataset.{name}": "dataset" for name in ("annotations", "images")},  # also image sizes and categories
    **{f"preprocess.{name}": "config" for name in ("input_size", "mean", "std", "scale", "resize_backend")},
    **{f"postprocess.{name}": "config" for name in ("max_detections", "score_threshold", "clip_boxes",
                                                    "keep_inverted_boxes", "box_format", "box_scale")},
    "postprocess.label_map": "categories",
    "runtime.providers": "providers",
    "runtime.graph_optimization": "config",
    "runtime.session_config": "session_config",
    "runtime.exact_int8": "session_config",  # it adds session.x64quantprecision where int8 can saturate
}


# Every other config field, with why it cannot change an image's detections (so it stays out of the key).
# tests/test_pipeline.py walks every field of Config: a new one must be put in one of the two lists.
NOT_IN_CACHE_KEY: dict[str, str] = {
    **{name: "the run's name, and what it was named from (the results folder's name)"
       for name in ("variant", "named_by", "overridden")},
    "protocol": "a name; its switches are resolved into the fields they set (config.resolve_protocol)",
    "source": "where the config was read from",
    **{f"model.{name}": "where to download the model, or a check of it; its bytes are keyed"
       for name in ("url", "size", "sha256")},
    **{f"model.{name}": "documentation of the model, or what its result is compared with"
       for name in ("opset", "published_map", "published_protocol", "source_map", "published_int8_path", "parent")},
    "dataset.annotations_url": "where to download; the annotation file's bytes are keyed",
    "dataset.images_url": "where to download; the image folder is keyed",
    "dataset.downloads_dir": "where downloads go",
    **{f"dataset.{name}_zip_{check}": "a check of a download"
       for name in ("annotations", "images") for check in ("size", "sha256")},
    **{f"dataset.{name}": "which images run, not what one image gives"
       for name in ("limit", "skip_images_without_annotations", "subset")},
    "dataset.on_bad_image": "whether an unreadable image stops the run; such an image is never cached",
    **{f"runtime.{name}": "speed only" for name in ("intra_op_threads", "inter_op_threads", "allow_spinning")},
    "runtime.optimized_model_cache": "where the optimized graph is kept; graph_optimization is keyed",
    "runtime.batch_size": "images per session.run; each image's outputs are its own",
    "pipeline.normalize": "which lookup normalizes; every route gives the same float32 bits (tests/test_levers.py)",
    **{f"pipeline.{name}": "decoding ahead of inference (speed only)"
       for name in ("workers", "mode", "prefetch", "progress_interval_s")},
    **{f"metrics.{name}": "scoring, done afresh from the cached detections each run"
       for name in ("backend", "crowd_as_ground_truth", "exclude_categories", "streaming", "error_breakdown",
                    "bootstrap.replicates", "bootstrap.seed", "bootstrap.level", "bootstrap.max_images")},
    **{f"tracking.{name}": "where a finished result is sent" for name in ("log", "uri", "experiment",
                                                                           "tensorboard_dir")},
    "output.dir": "where the results go (the cache lies in it)",
    "output.resume": "whether the cache is used at all",
}


def cache_key(config: Config, model_sha256: str, categories: np.ndarray, dataset: data.CocoDataset,
              providers: Sequence[str], session_config: dict[str, str] | None, io: ModelIO) -> dict[str, Any]:
    """What determines one image's detections (CACHE_KEY_FIELDS says which config field goes where)."""
    pre = dataclasses.asdict(config.preprocess)
    post = dict(dataclasses.asdict(config.postprocess), label_map=[int(c) for c in categories[1:]])
    return {
        "model_sha256": model_sha256,
        "model_io": f"{io.input_name} -> {io.boxes}, {io.labels}, {io.scores}",
        "annotations_sha256": dataset.sha256,
        "images_dir": str(dataset.images_dir.resolve()),
        "preprocess_sha256": hash_data(pre),
        "postprocess_sha256": hash_data(post),
        "execution": hash_data({"providers": list(providers),
                                "graph_optimization": config.runtime.graph_optimization,
                                "session_config": dict(session_config or {})}),
    }
