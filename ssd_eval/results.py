"""What a run leaves behind: metrics.json, detections.json, written atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from ssd_eval.config import run_name
from ssd_eval.errors import UserError, quote
from ssd_eval.metrics import STAT_NAMES, Scores
from ssd_eval.schema import check_keys, is_int, is_number

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
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; on success it is synced and renamed
    to ``path`` (with the usual permissions), on failure removed: never a partial file at ``path``.

    A write error that names no file (a full disk) is raised as a UserError naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(temp)
        os.chmod(temp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError) and exc.filename is None:
            raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[TextIO]:
    """A text file handle whose content appears at ``path`` only when the block completes (atomic_path)."""
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8") as handle:
        yield handle


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


# --------------------------------------------------------------------------- reading metrics.json

_REQUIRED_KEYS: tuple[tuple[str, str], ...] = (
    # (dotted key, kind)
    ("variant", "str"),
    ("protocol", "str"),
    ("mAP", "number"),
    ("provenance.images", "int"),
    ("provenance.image_ids_sha256", "str"),
    ("provenance.annotations.sha256", "str"),
    ("provenance.model.sha256", "str"),
    ("provenance.runtime.providers", "str_list"),
    ("provenance.host.cpu", "str"),
    ("provenance.host.cores", "int"),
    ("provenance.date", "str"),
)

_OPTIONAL_KEYS: tuple[tuple[str, str], ...] = (
    # may be missing or null
    ("parent", "str"),
    ("published_map", "number"),
    ("published_protocol", "str"),
    ("source_map", "number"),
    ("published_int8_path", "str"),
    ("provenance.images_per_s", "number"),
    ("provenance.runtime.intra_op_threads", "int"),
    ("provenance.runtime.inter_op_threads", "int"),
    ("provenance.runtime.batch_size", "int"),
    ("provenance.resumed_images", "int"),
    ("provenance.limit", "int"),
)

def read_metrics_file(path: Path) -> dict:
    """Read and check one metrics.json (docs/FORMATS.md, schema 1).

    Returns the parsed dict with one extra key, `_source` (the file's path as a
    string). Raises UserError naming the file and key when it is unreadable,
    not JSON, or lacks a key the table, gate or report needs.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
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


def load_results(results_dir: Path) -> list[dict]:
    """Read every `results_dir/*/metrics.json`, sorted by path.

    Each dict is the file's content plus `_source` (its path). A malformed file
    raises UserError naming it. A missing directory gives an empty list.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    return [read_metrics_file(p) for p in sorted(results_dir.glob("*/metrics.json"))]


class ResultIndex:
    """Every `results_dir/*/metrics.json`, read and checked once, and the lookup the gate
    and `baseline --update` share (see `find`)."""

    def __init__(self, results_dir: Path):
        self.results_dir = Path(results_dir)
        self.entries: dict[Path, dict | UserError] = {}
        for path in sorted(self.results_dir.glob("*/metrics.json")):
            try:
                self.entries[path] = read_metrics_file(path)
            except UserError as exc:
                self.entries[path] = exc  # raised only when this file is the one asked for

    def results(self) -> list[dict]:
        """The readable results, in path order."""
        return [e for e in self.entries.values() if isinstance(e, dict)]

    def errors(self) -> list[UserError]:
        """The unreadable or malformed files, in path order."""
        return [e for e in self.entries.values() if isinstance(e, UserError)]

    def protocols(self, variant: str) -> list[str]:
        """The protocols `variant` has results under, in order of first appearance."""
        return list(dict.fromkeys(r["protocol"] for r in self.results() if r["variant"] == variant))

    def find(self, variant: str, protocol: str, role: str) -> tuple[dict, str | None]:
        """The result of `variant` under `protocol`, plus a note when it is not in its canonical folder.

        The canonical folder (`config.run_name`) wins whenever it has a metrics.json: its
        content is returned as it is (the caller checks its protocol) unless it is malformed
        or holds another variant (UserError). Without it, exactly one other result of that
        variant and protocol is used, with a note naming it; several are an error naming
        them, none an error naming the missing file. `role` (e.g. "baselined variant
        ssd-12") says in errors what the result was wanted for.
        """
        path = self.results_dir / run_name(variant, protocol) / "metrics.json"
        entry = self.entries.get(path)
        if isinstance(entry, UserError):
            raise entry
        if entry is not None:
            if entry["variant"] != variant:
                raise UserError(f"{path}: holds variant {entry['variant']!r}, not {variant!r} "
                                f"({role})")
            return entry, None
        others = [r for r in self.results() if r["variant"] == variant and r["protocol"] == protocol]
        if len(others) > 1:
            raise UserError(f"{path}: missing, and {len(others)} other results of {variant} under "
                            f"protocol {protocol} exist: {', '.join(r['_source'] for r in others)}; "
                            f"move the one to use to {path.parent}/ ({role})")
        if others:
            return others[0], (f"note: {variant} (protocol {protocol}): {path.parent}/ missing; "
                               f"using {others[0]['_source']}")
        hint = f"make eval MODEL={variant}" + ("" if protocol == "coco" else f" PROTOCOL={protocol}")
        raise UserError(f"{path}: missing ({role}, protocol {protocol}); run `{hint}` first")
