"""Resume cache: finished images' detections, appended and flushed one image at a time."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ssd_eval.errors import UserError

log = logging.getLogger(__name__)

CACHE_FORMAT = "ssd_eval detection cache v1"


class DetectionCache:
    """A JSONL file: a header line with the cache key, then one line per finished image.

    The key holds everything that determines an image's detections (model sha256,
    preprocessing, postprocessing). A cache written under another key is refused.
    """

    def __init__(self, path: str | Path, key: dict[str, Any], *, fresh: bool = False):
        self.path = Path(path)
        self.key = key
        self.entries: dict[int, list[dict]] = {}
        if fresh and self.path.exists():
            log.info("--fresh: discarding %s", self.path)
            self.path.unlink()
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as handle:
                handle.write(json.dumps({"format": CACHE_FORMAT, "key": key}, sort_keys=True) + "\n")
        self._handle = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        with open(self.path, "rb") as handle:
            lines = handle.read().splitlines(keepends=True)
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
            raise UserError(f"{self.path}: not a detection cache of this version; pass --fresh to discard it")
        if header.get("key") != self.key:
            raise UserError(
                f"{self.path}: was written for a different run ({describe_difference(header.get('key') or {}, self.key)}); "
                "it is not reused: pass --fresh to discard it, or choose another --out")
        good_end = len(lines[0])
        for number, line in enumerate(lines[1:], start=2):
            if not line.endswith(b"\n"):
                # A kill during the last write leaves a cut line: drop it, that image runs again.
                log.warning("%s: dropping a truncated last line (that image will be evaluated again)", self.path)
                break
            try:
                entry = json.loads(line)
                self.entries[int(entry["image_id"])] = list(entry["detections"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise UserError(f"{self.path}: line {number} is corrupt; pass --fresh to discard the cache") from None
            good_end += len(line)
        if good_end < os.path.getsize(self.path):
            os.truncate(self.path, good_end)
        log.info("%s: %d finished images found", self.path, len(self.entries))

    def add(self, image_id: int, detections: list[dict]) -> None:
        """Record one finished image (flushed to the OS before returning)."""
        self.entries[int(image_id)] = detections
        self._handle.write(json.dumps({"image_id": int(image_id), "detections": detections}) + "\n")
        self._handle.flush()

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
