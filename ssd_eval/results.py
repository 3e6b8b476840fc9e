"""What a run leaves behind: metrics.json, detections.json, written atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from ssd_eval.errors import UserError
from ssd_eval.metrics import Scores

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULT_FILES = ("metrics.json", "detections.json", "shard.json")
"""What a run (or a shard) leaves in its output folder, besides the resume cache."""


@dataclass
class EvalResult:
    """A finished evaluation: the scores plus everything needed to trust them."""

    variant: str
    protocol: str
    protocol_switches: dict[str, Any]
    scores: Scores
    provenance: dict[str, Any]
    parent: str | None = None
    published_map: float | None = None
    published_protocol: str | None = None
    source_map: float | None = None
    published_int8_path: str | None = None
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def map(self) -> float:
        """COCO mAP @[.50:.95]."""
        return self.scores.stats[0]

    def to_document(self) -> dict[str, Any]:
        """The metrics.json document (see docs/FORMATS.md)."""
        document: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "variant": self.variant,
            "parent": self.parent,
            "published_map": self.published_map,
            "published_protocol": self.published_protocol,
            "source_map": self.source_map,
            "published_int8_path": self.published_int8_path,
            "protocol": self.protocol,
            "protocol_switches": self.protocol_switches,
            "categories_averaged": self.scores.categories_averaged,
            "stats": self.scores.stats,
        }
        document.update(self.scores.named())
        document["per_category_ap"] = self.scores.per_category_ap
        document["pr_curves"] = self.scores.pr_curves
        document["warnings"] = self.scores.warnings
        document["provenance"] = self.provenance
        return document


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[TextIO]:
    """A text file handle whose content appears at ``path`` only when the block completes.

    A write error that names no file (a full disk) is raised as a UserError naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError) and exc.filename is None:
            raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None
        raise


def tidy_output_dir(out_dir: str | Path, *, discard_results: bool) -> None:
    """Remove temporary files a killed run left in ``out_dir`` and, with ``discard_results``
    (a run starting afresh), the results of an earlier run, so a failure cannot leave them
    standing for the gate. Call it only while holding the folder's resume-cache lock."""
    out_dir = Path(out_dir)
    stale = [p for name in RESULT_FILES for p in out_dir.glob(f".{name}.*.tmp")]
    if discard_results:
        stale += [out_dir / name for name in RESULT_FILES if (out_dir / name).is_file()]
    for path in stale:
        log.info("removing %s", path)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise UserError(f"{path}: cannot remove the stale file: {exc.strerror or exc}") from None


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a partial file."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def _current_umask() -> int:
    # Read, not set-and-restore: os.umask() would briefly change it for every thread.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> Path:
    """``atomic_write_text`` of ``data`` as JSON."""
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_detection(detection: Any) -> bool:
    """Whether ``detection`` is a COCO result: image_id, category_id, bbox of 4 finite numbers, finite score."""
    return (isinstance(detection, dict) and is_int(detection.get("image_id"))
            and is_int(detection.get("category_id")) and _is_finite_number(detection.get("score"))
            and isinstance(detection.get("bbox"), list) and len(detection["bbox"]) == 4
            and all(_is_finite_number(v) for v in detection["bbox"]))


def write_detections(path: str | Path, detections: Iterable[dict]) -> int:
    """Write detections.json atomically, one result per line (streamed); returns the count."""
    count = 0
    with atomic_open(path) as handle:
        handle.write("[")
        for detection in detections:
            handle.write(",\n" if count else "\n")
            handle.write(json.dumps(detection, separators=(", ", ": ")))
            count += 1
        handle.write("\n]\n" if count else "]\n")
    return count


def prepare_out_dir(out_dir: Path) -> Path:
    """Create the output directory, or say in one line why it cannot be."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{out_dir}: output directory is a file (or lies under one); choose another --out") from None
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create the output directory: {exc.strerror or exc}") from None
    return out_dir


def result_for(config: "Config", scores: Scores, provenance: dict[str, Any]) -> EvalResult:  # noqa: F821
    """The EvalResult of a run of ``config`` (protocol, parent and published numbers from it)."""
    return EvalResult(
        variant=config.variant,
        protocol=config.protocol_label(),
        protocol_switches=config.switches(),
        scores=scores,
        provenance=provenance,
        parent=config.model.parent,
        published_map=config.model.published_map,
        published_protocol=config.model.published_protocol,
        source_map=config.model.source_map,
        published_int8_path=config.model.published_int8_path,
    )


def write_result(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write metrics.json into ``out_dir`` (beside its detections.json); returns both paths."""
    out_dir = Path(out_dir)
    files = {
        "detections": out_dir / "detections.json",
        "metrics": atomic_write_json(out_dir / "metrics.json", result.to_document()),
    }
    result.out_dir = out_dir
    result.files = files
    return files


def summary_line(result: EvalResult) -> dict[str, Any]:
    """The short table row printed after a run."""
    named = result.scores.named()
    return {
        "model": result.variant,
        "protocol": result.protocol,
        "images": result.provenance.get("images"),
        "mAP": named["mAP"],
        "AP50": named["AP50"],
        "AP75": named["AP75"],
        "images/s": result.provenance.get("images_per_s"),
    }


def align_columns(headers: list[str], rows: list[list[str]]) -> str:
    """Plain text table: a header line, a dashed rule, then one line per row, columns aligned."""
    table = [headers] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_summary(rows: list[dict[str, Any]]) -> str:
    """Plain aligned text table of summary rows."""
    headers = list(rows[0])
    return align_columns(headers, [[_format(row[h], h) for h in headers] for row in rows])


def _format(value: Any, header: str) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if header == "images/s" else f"{value:.4f}"
    return "-" if value is None else str(value)
