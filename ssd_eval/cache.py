"""Resume cache: finished images' detections, appended and flushed one image at a time."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from ssd_eval.errors import UserError

log = logging.getLogger(__name__)

CACHE_FORMAT = "ssd_eval detection cache v1"


class DetectionCache:
    """A JSONL file: a header line with the cache key, then one line per finished image.

    The key holds everything that determines an image's detections (model sha256,
    preprocessing, postprocessing). A cache written under another key is refused.
    Only each image's line offset is kept in memory; detections are read back from
    the file when needed, so memory does not grow with the number of images.
    """

    def __init__(self, path: str | Path, key: dict[str, Any], *, fresh: bool = False):
        self.path = Path(path)
        self.key = key
        self.offsets: dict[int, int] = {}  # image id -> byte offset of its line
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._handle = open(self.path, "ab")
        except OSError as exc:
            raise UserError(f"{self.path}: cannot open the resume cache: {exc.strerror or exc}") from None
        try:
            # Two runs appending to one cache would interleave their lines: one at a time.
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._handle.close()
            raise UserError(f"{self.path}: another run is using this output directory; wait for it to finish "
                            "or choose another --out") from None
        try:
            if fresh and self._handle.tell() > 0:
                log.info("--fresh: discarding %s", self.path)
            elif self._handle.tell() > 0 and self._load():
                return
            self._handle.truncate(0)
            self._handle.write(json.dumps({"format": CACHE_FORMAT, "key": key}, sort_keys=True).encode() + b"\n")
            self._handle.flush()
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
            except json.JSONDecodeError:
                header = None
            if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
                raise UserError(f"{self.path}: not a detection cache of this version; pass --fresh to discard it")
            if header.get("key") != self.key:
                difference = describe_difference(header.get("key") or {}, self.key)
                raise UserError(f"{self.path}: was written for a different run ({difference}); it is not reused: "
                                "pass --fresh to discard it, or choose another --out")
            good_end = len(first)
            for number, line in enumerate(handle, start=2):
                if not line.endswith(b"\n"):
                    # A kill during the last write leaves a cut line: drop it, that image runs again.
                    log.warning("%s: dropping a truncated last line (that image will be evaluated again)", self.path)
                    break
                try:
                    entry = json.loads(line)
                    if not isinstance(entry["detections"], list):
                        raise TypeError("detections is not a list")
                    self.offsets[int(entry["image_id"])] = good_end
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    raise UserError(f"{self.path}: line {number} is corrupt; pass --fresh to discard the cache") from None
                good_end += len(line)
        if good_end < os.path.getsize(self.path):
            self._handle.truncate(good_end)
        log.info("%s: %d finished images found", self.path, len(self.offsets))
        return True

    def __contains__(self, image_id: int) -> bool:
        return image_id in self.offsets

    def add(self, image_id: int, detections: list[dict]) -> None:
        """Record one finished image (flushed to the OS before returning)."""
        line = json.dumps({"image_id": int(image_id), "detections": detections}).encode() + b"\n"
        self.offsets[int(image_id)] = self._handle.tell()
        self._handle.write(line)
        self._handle.flush()

    def detections(self, image_ids: Iterable[int]) -> Iterator[dict]:
        """The cached detections of ``image_ids`` (all finished), in the order given."""
        if not self._handle.closed:
            self._handle.flush()
        with open(self.path, "rb") as reader:
            for image_id in image_ids:
                reader.seek(self.offsets[image_id])
                entry = json.loads(reader.readline())
                if entry["image_id"] != image_id:
                    raise UserError(f"{self.path}: changed while in use (expected image {image_id} at byte "
                                    f"{self.offsets[image_id]}); pass --fresh to start over")
                yield from entry["detections"]

    def items(self) -> Iterator[tuple[int, list[dict]]]:
        """Every finished image and its detections, in ascending image id order."""
        for image_id in sorted(self.offsets):
            yield image_id, list(self.detections([image_id]))

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> "DetectionCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Which key fields differ between two cache keys, in words."""
    names = sorted(set(old) | set(new))
    differing = [n for n in names if old.get(n) != new.get(n)]
    parts = []
    for name in differing:
        before, after = old.get(name), new.get(name)
        if isinstance(before, str) and isinstance(after, str) and len(before) == 64:
            before, after = before[:12], after[:12]
        parts.append(f"{name} {before} vs now {after}")
    return "; ".join(parts) or "unknown difference"
