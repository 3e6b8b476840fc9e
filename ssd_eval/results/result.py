"""What a run leaves behind: metrics.json, detections.json, written atomically."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ssd_eval.errors import UserError, quote
from ssd_eval.loaders import load_json
from ssd_eval.scoring.cocoeval import STAT_NAMES, Scores
from ssd_eval.utils import atomic_open, atomic_write_json, check_keys, is_int, is_number

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULT_FILES = ("metrics.json", "detections.json", "shard.json")
"""What a run (or a shard) leaves in its output folder, besides the resume cache."""


@dataclass(repr=False)
class EvalResult:
    """A finished evaluation: the scores plus everything needed to trust them; the one reader
    (``from_document``) and writer (``to_document``) of the metrics.json document."""

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
    # Bootstrap intervals of mAP, AP50, AP75 (Interval.as_dict() each), or None (metrics.bootstrap off).
    intervals: dict[str, dict[str, Any]] | None = None
    # A subset run's intervals extrapolated to the full annotation file (scoring.bootstrap), or None.
    full_set_intervals: dict[str, dict[str, Any]] | None = None
    # TIDE-style error breakdown (ssd_eval.scoring.breakdown), or None (metrics.error_breakdown off).
    error_breakdown: dict[str, Any] | None = None
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def map(self) -> float:
        """COCO mAP @[.50:.95]."""
        return self.scores.stats[0]

    def __repr__(self) -> str:
        images = self.provenance.get("images") if isinstance(self.provenance, dict) else None
        out_dir = None if self.out_dir is None else str(self.out_dir)
        return (f"EvalResult(variant={self.variant!r}, protocol={self.protocol!r}, images={images}, "
                f"mAP={float(self.map):.4f}, out_dir={out_dir!r})")

    @classmethod
    def from_document(cls, document: dict[str, Any], *, out_dir: str | Path | None = None) -> "EvalResult":
        """The EvalResult of a metrics.json document (``to_document``, or ``read_metrics_file``'s dict);
        ``out_dir`` (default: the folder of its ``_source``) and ``files`` say where it lies."""
        source = document.get("_source")
        if out_dir is None and source:
            out_dir = Path(source).parent
        stats = document.get("stats")
        if not isinstance(stats, list) or len(stats) != len(STAT_NAMES):
            stats = [document.get(name, -1.0) for name in STAT_NAMES]  # older documents: the named stats
        scores = Scores(stats=list(stats), per_category_ap=dict(document.get("per_category_ap") or {}),
                        pr_curves=dict(document.get("pr_curves") or {}), warnings=list(document.get("warnings") or []),
                        categories_averaged=list(document.get("categories_averaged") or []),
                        per_category_gt=dict(document.get("per_category_gt") or {}))
        optional = ("parent", "published_map", "published_protocol", "source_map", "published_int8_path",
                    "intervals", "full_set_intervals", "error_breakdown")
        result = cls(variant=document["variant"], protocol=document["protocol"],
                     protocol_switches=dict(document.get("protocol_switches") or {}), scores=scores,
                     provenance=document.get("provenance") or {}, **{key: document.get(key) for key in optional})
        if out_dir is not None:
            result.out_dir = Path(out_dir)
            result.files = {name: result.out_dir / f"{name}.json" for name in ("metrics", "detections")}
        return result

    def to_document(self) -> dict[str, Any]:
        """The metrics.json document (see docs/FORMATS.md)."""
        scores = self.scores
        document: dict[str, Any] = {
            "schema": SCHEMA_VERSION, "variant": self.variant, "parent": self.parent,
            "published_map": self.published_map, "published_protocol": self.published_protocol,
            "source_map": self.source_map, "published_int8_path": self.published_int8_path,
            "protocol": self.protocol, "protocol_switches": self.protocol_switches,
            "categories_averaged": scores.categories_averaged, "stats": scores.stats, **scores.named(),
            "per_category_ap": scores.per_category_ap, "per_category_gt": scores.per_category_gt or None,
            "pr_curves": scores.pr_curves, "warnings": scores.warnings, "intervals": self.intervals,
            "full_set_intervals": self.full_set_intervals, "error_breakdown": self.error_breakdown,
            "provenance": self.provenance,
        }
        left_out_when_empty = ("per_category_gt", "full_set_intervals", "error_breakdown")  # intervals: null
        return {key: value for key, value in document.items() if value is not None or key not in left_out_when_empty}


def tidy_output_dir(out_dir: str | Path, *, discard_results: bool) -> None:
    """Remove a killed run's temporary files from ``out_dir`` and, with ``discard_results``, an earlier run's
    results (so a failure cannot leave them for the gate); only while holding the folder's lock."""
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


def is_detection(detection: Any) -> bool:
    """Whether ``detection`` is a COCO result: image_id, category_id, bbox of 4 finite numbers, finite score."""
    return (isinstance(detection, dict) and is_int(detection.get("image_id"))
            and is_int(detection.get("category_id")) and is_number(detection.get("score"))
            and isinstance(detection.get("bbox"), list) and len(detection["bbox"]) == 4
            and all(is_number(v) for v in detection["bbox"]))


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


def iter_detections(path: str | Path) -> Iterator[Any]:
    """The entries of a detections.json, streamed where ``write_detections`` laid it out, else read whole."""
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"[":
            handle.seek(0)
            entries = json.loads(handle.read())
            yield from entries if isinstance(entries, list) else [entries]
            return
        for line in handle:
            text = line.strip().rstrip(b",")
            if text and text != b"]":
                yield json.loads(text)


def prepare_out_dir(out_dir: Path, *, create: bool = True) -> Path:
    """Create the output directory, or say in one line why it cannot be; with ``create=False`` only check
    that it exists as a folder or could be created (before a run's slow steps)."""
    if not create:
        existing = Path(out_dir)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            raise UserError(f"{out_dir}: output directory is a file (or lies under one); choose another --out")
        if existing.is_dir() and existing != Path(out_dir) and not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"{out_dir}: cannot create the output directory: Permission denied")
        return out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{out_dir}: output directory is a file (or lies under one); choose another --out") from None
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create the output directory: {exc.strerror or exc}") from None
    return out_dir


def result_for(config: "Config", scores: Scores, provenance: dict[str, Any]) -> EvalResult:  # noqa: F821
    """The EvalResult of a run of ``config`` (protocol, parent and published numbers from it)."""
    model = config.model
    return EvalResult(variant=config.variant, protocol=config.protocol_label(), protocol_switches=config.switches(),
                      scores=scores, provenance=provenance, parent=model.parent, published_map=model.published_map,
                      published_protocol=model.published_protocol, source_map=model.source_map,
                      published_int8_path=model.published_int8_path)


def write_result(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write metrics.json into ``out_dir`` (beside its detections.json); returns both paths."""
    out_dir = Path(out_dir)
    metrics = atomic_write_json(out_dir / "metrics.json", result.to_document())
    result.out_dir = out_dir
    result.files = {"detections": out_dir / "detections.json", "metrics": metrics}
    return result.files


_REQUIRED_KEYS: tuple[tuple[str, str], ...] = (  # (dotted key, kind), one section a line
    ("variant", "str"), ("protocol", "str"), ("mAP", "number"),
    ("provenance.images", "int"), ("provenance.image_ids_sha256", "str"), ("provenance.annotations.sha256", "str"),
    ("provenance.model.sha256", "str"), ("provenance.runtime.providers", "str_list"),
    ("provenance.host.cpu", "str"), ("provenance.host.cores", "int"), ("provenance.date", "str"),
)

_OPTIONAL_KEYS: tuple[tuple[str, str], ...] = (  # may be missing or null
    ("parent", "str"), ("published_map", "number"), ("published_protocol", "str"), ("source_map", "number"),
    ("published_int8_path", "str"),
    ("provenance.images_per_s", "number"), ("provenance.runtime.intra_op_threads", "int"),
    ("provenance.runtime.inter_op_threads", "int"), ("provenance.runtime.batch_size", "int"),
    ("provenance.resumed_images", "int"), ("provenance.limit", "int"), ("provenance.subset.name", "str"),
    # What the table, the gate, the report and `show` read besides: a wrong type is one line, exit 2.
    ("stats", "number_list"), ("protocol_switches", "dict"), ("categories_averaged", "list"),
    ("per_category_ap", "number_map"), ("per_category_gt", "number_map"), ("pr_curves", "number_list_map"),
    ("warnings", "list"), ("intervals", "interval_map"), ("full_set_intervals", "interval_map"),
    ("error_breakdown", "dict"),
    ("provenance.model.path", "str"), ("provenance.model.quantization", "str"),
    ("provenance.annotations.path", "str"), ("provenance.images_dir", "str"), ("provenance.detections", "int"),
    ("provenance.skipped_images", "list"), ("provenance.partial", "list"), ("provenance.subset", "dict"),
    ("provenance.speed_from_cache", "bool"), ("provenance.parallel_jobs", "int"),
    ("provenance.harness_commit", "str"), ("provenance.metrics_backend", "str"),
    ("provenance.config", "dict"), ("provenance.config.preprocess", "dict"), ("provenance.config.postprocess", "dict"),
    ("provenance.config.pipeline", "dict"), ("provenance.config.runtime", "dict"),
    ("provenance.bootstrap", "dict"), ("provenance.bootstrap.replicates", "int"), ("provenance.bootstrap.seed", "int"),
    ("provenance.runtime.onnxruntime", "str"), ("provenance.runtime.session_config", "dict"),
    ("provenance.int8", "dict"), ("provenance.int8.cpu", "dict"), ("provenance.int8.cpu.kernel_class", "str"),
)


def read_metrics_file(path: Path) -> dict:
    """One metrics.json (docs/FORMATS.md, schema 1), read and checked, plus `_source` (its path as a string).
    Raises UserError naming the file and key when it is unreadable, not JSON, or lacks a key a reader needs."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    try:
        data = load_json(text, str(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise UserError(f"{path}: not a metrics file: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object at top level")
    if data.get("schema") != SCHEMA_VERSION:
        raise UserError(f"{path}: schema: expected {SCHEMA_VERSION}, got {quote(data.get('schema'))}")
    check_keys(data, str(path), _REQUIRED_KEYS, _OPTIONAL_KEYS)
    for name in STAT_NAMES:
        if name in data and not is_number(data[name]):
            raise UserError(f"{path}: {name}: expected a finite number, got {quote(data[name])}")
    if not re.match(r"\d{4}-\d{2}-\d{2}", data["provenance"]["date"]):
        raise UserError(f"{path}: provenance.date: expected an ISO 8601 date, "
                        f"got {quote(data['provenance']['date'])}")
    data["_source"] = str(path)
    return data
