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

from ssd_eval.config import protocol_base, run_name
from ssd_eval.errors import UserError, quote
from ssd_eval.metrics import STAT_NAMES, Scores
from ssd_eval.schema import check_keys, is_int, is_number

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULT_FILES = ("metrics.json", "detections.json", "shard.json")
"""What a run (or a shard) leaves in its output folder, besides the resume cache."""


@dataclass(repr=False)
class EvalResult:
    """A finished evaluation: the scores plus everything needed to trust them.

    ``to_document`` writes the metrics.json document and ``from_document`` reads one back: one
    reader and one writer of the format, both ways.
    """

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
    # A subset run's intervals for the full annotation file it was drawn from (uncertainty.full_set_intervals:
    # the small-sample bias extrapolated to the full set), or None (not a subset run, or not possible).
    full_set_intervals: dict[str, dict[str, Any]] | None = None
    # TIDE-style error breakdown (ssd_eval.errors_breakdown), or None (metrics.error_breakdown off).
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
        """The EvalResult a metrics.json document (``to_document``, or ``read_metrics_file``'s
        dict) describes; ``out_dir`` (default: the folder of its ``_source``) and ``files`` are
        where it lies."""
        source = document.get("_source")
        if out_dir is None and source:
            out_dir = Path(source).parent
        stats = document.get("stats")
        if not isinstance(stats, list) or len(stats) != len(STAT_NAMES):
            stats = [document.get(name, -1.0) for name in STAT_NAMES]  # older documents: the named stats
        scores = Scores(stats=list(stats), per_category_ap=dict(document.get("per_category_ap") or {}),
                        pr_curves=dict(document.get("pr_curves") or {}), warnings=list(document.get("warnings") or []),
                        categories_averaged=list(document.get("categories_averaged") or []))
        result = cls(variant=document["variant"], protocol=document["protocol"],
                     protocol_switches=dict(document.get("protocol_switches") or {}), scores=scores,
                     provenance=document.get("provenance") or {}, parent=document.get("parent"),
                     published_map=document.get("published_map"),
                     published_protocol=document.get("published_protocol"), source_map=document.get("source_map"),
                     published_int8_path=document.get("published_int8_path"), intervals=document.get("intervals"),
                     full_set_intervals=document.get("full_set_intervals"),
                     error_breakdown=document.get("error_breakdown"))
        if out_dir is not None:
            result.out_dir = Path(out_dir)
            result.files = {name: result.out_dir / f"{name}.json" for name in ("metrics", "detections")}
        return result

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
        document["intervals"] = self.intervals
        if self.full_set_intervals is not None:
            document["full_set_intervals"] = self.full_set_intervals
        if self.error_breakdown is not None:
            document["error_breakdown"] = self.error_breakdown
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


def iter_detections(path: str | Path) -> Iterator[Any]:
    """The entries of a detections.json one at a time where ``write_detections`` laid it out (a lone
    "[" line, then one result per line), so a reader need not hold them all; any other JSON file is
    read whole. Read and JSON errors (OSError, ValueError, RecursionError) reach the caller."""
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
    """Create the output directory, or say in one line why it cannot be; with ``create=False``
    only check that it exists as a folder or could be created (before a run's slow steps)."""
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


# What each of the 12 stats is, as pycocotools' summarize() prints it: (AP/AR, IoU, area, maxDets).
STAT_MEANINGS = {
    "mAP": ("AP", "0.50:0.95", "all", 100), "AP50": ("AP", "0.50", "all", 100),
    "AP75": ("AP", "0.75", "all", 100), "APs": ("AP", "0.50:0.95", "small", 100),
    "APm": ("AP", "0.50:0.95", "medium", 100), "APl": ("AP", "0.50:0.95", "large", 100),
    "AR1": ("AR", "0.50:0.95", "all", 1), "AR10": ("AR", "0.50:0.95", "all", 10),
    "AR100": ("AR", "0.50:0.95", "all", 100), "ARs": ("AR", "0.50:0.95", "small", 100),
    "ARm": ("AR", "0.50:0.95", "medium", 100), "ARl": ("AR", "0.50:0.95", "large", 100),
}
SUMMARY_TOP = 5
"""Categories shown at each end of the summary's per-category AP table (``ssd-eval show --all``: every one)."""


def render_result(result: EvalResult, *, top: int = SUMMARY_TOP, all_categories: bool = False) -> str:
    """The terminal summary of one result, after ``eval`` / ``merge`` and by ``ssd-eval show``: what
    was run (variant, protocol, images, speed, model, harness commit), the 12 COCO stats with
    what each measures, and the per-category AP, best first (the ``top`` best and worst, or
    every category with ``all_categories``)."""
    provenance = result.provenance if isinstance(result.provenance, dict) else {}
    model = provenance.get("model") or {}
    speed = provenance.get("images_per_s")
    speed_text = "images/s -" if speed is None else f"{speed:.2f} images/s"
    if speed is not None and provenance.get("speed_from_cache"):
        speed_text += " (from the cache: measured when these images were inferred)"
    lines = [f"{result.variant}  protocol {result.protocol}  {provenance.get('images', '?')} images  "
             f"{provenance.get('detections', '?')} detections  {speed_text}"]
    if provenance.get("partial"):
        lines.append(f"partial run ({', '.join(provenance['partial'])}): for testing, not the variant's result")
    stages = stages_text(provenance.get("stages"))
    if stages:
        lines.append(stages)
    lines.append(f"model {model.get('path', '?')} (sha256 {str(model.get('sha256', '?'))[:12]})  "
                 f"backend {provenance.get('metrics_backend', '?')}  harness {_short_commit(provenance)}"
                 f"  date {provenance.get('date', '?')}")
    intervals = result.intervals if isinstance(result.intervals, dict) else {}
    rows = []
    for name, value in result.scores.named().items():
        kind, iou, area, max_dets = STAT_MEANINGS[name]
        interval = intervals.get(name) or {}
        bounds = (f"[{interval['low']:.4f}, {interval['high']:.4f}]"
                  if is_number(interval.get("low")) and is_number(interval.get("high")) else "")
        rows.append([name, f"{value:.4f}", kind, iou, area, str(max_dets), bounds])
    headers = ["stat", "value", "", "IoU", "area", "maxDets"]
    if any(row[-1] for row in rows):
        level = next((i.get("level") for i in intervals.values() if isinstance(i, dict) and i.get("level")), 0.95)
        headers.append(f"{100 * level:g} % interval")
    else:
        rows = [row[:-1] for row in rows]
    lines += ["", align_columns(headers, rows)]
    full_set = (result.full_set_intervals or {}).get("mAP") if isinstance(result.full_set_intervals, dict) else None
    if isinstance(full_set, dict) and all(is_number(full_set.get(k)) for k in ("estimate", "low", "high")):
        lines.append(f"full set ({full_set.get('full_set_images', '?')} images), estimated from this subset: mAP "
                     f"{full_set['estimate']:.4f} [{full_set['low']:.4f}, {full_set['high']:.4f}] "
                     f"({100 * full_set.get('level', 0.95):g} %; the subset's upward bias extrapolated)")
    if protocol_base(result.protocol) == "inc":
        lines.append("APs/APm/APl: INC computes areas from normalized boxes, so its own are not comparable with these")
    lines += ["", *_category_table(result.scores.per_category_ap, top=top, all_categories=all_categories)]
    return "\n".join(lines)


STAGE_LABELS = (("decode_preprocess", "decode+preprocess"), ("inference", "inference"),
                ("postprocess", "postprocess"), ("scoring", "scoring"))


def stages_text(stages: Any) -> str | None:
    """provenance.stages in one line: each stage's CPU / wall ms per image and session.run's idle share;
    None when the run has no stage times (older results, merges)."""
    if not isinstance(stages, dict):
        return None
    parts = []
    for key, label in STAGE_LABELS:
        stage = stages.get(key)
        if isinstance(stage, dict) and is_number(stage.get("cpu_ms")) and is_number(stage.get("wall_ms")):
            parts.append(f"{label} {stage['cpu_ms']:.1f}/{stage['wall_ms']:.1f}")
    if not parts:
        return None
    idle = stages.get("idle_share")
    idle_text = (f"; session.run idle {100 * idle:.1f} % of the image loop (waiting for input)"
                 if is_number(idle) else "")
    return "ms per image, CPU/wall: " + ", ".join(parts) + idle_text


def _short_commit(provenance: dict[str, Any]) -> str:
    """provenance.harness_commit as 12 hex digits (plus "+dirty"), or "?" where unknown."""
    commit = provenance.get("harness_commit")
    if not isinstance(commit, str) or not commit:
        return "?"
    head, dirty, _ = commit.partition("+")
    return head[:12] + (f"+{_}" if dirty else "")


def _category_table(per_category: dict[str, float], *, top: int, all_categories: bool) -> list[str]:
    """Per-category AP lines, best first; categories without ground truth (AP -1) listed apart."""
    scored = sorted(((name, ap) for name, ap in per_category.items() if ap >= 0), key=lambda item: (-item[1], item[0]))
    absent = sorted(name for name, ap in per_category.items() if ap < 0)
    ranked = [[str(rank), name, f"{ap:.4f}"] for rank, (name, ap) in enumerate(scored, start=1)]
    if all_categories or len(ranked) <= 2 * top:
        title = f"per-category AP, {len(ranked)} categories, best first:"
        shown = ranked
    else:
        title = (f"per-category AP, the {top} best and {top} worst of {len(ranked)} categories "
                 "(ssd-eval show METRICS.json --all: every one):")
        shown = ranked[:top] + [["...", f"({len(ranked) - 2 * top} more)", ""]] + ranked[-top:]
    lines = [title, align_columns(["rank", "category", "AP"], shown)] if shown else [title, "(none)"]
    if absent:
        names = absent if all_categories or len(absent) <= 2 * top else absent[:top] + ["..."]
        lines.append(f"no ground truth in these images: {len(absent)} categories ({', '.join(names)})")
    return lines


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
    ("provenance.subset.name", "str"),
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


def load_results(results_dir: Path, *, include_partial: bool = False) -> list[dict]:
    """Read every `results_dir/*/metrics.json`, sorted by path, except partial runs (`is_partial`)
    outside their variant's canonical folder (e.g. `results/sample@limit3/`) unless `include_partial`.

    Each dict is the file's content plus `_source` (its path). A malformed file
    raises UserError naming it. A missing directory gives an empty list.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    results = [read_metrics_file(p) for p in sorted(results_dir.glob("*/metrics.json"))]
    partial = [r for r in results if is_partial(r) and Path(r["_source"]).parent.name
               != run_name(r["variant"], r["protocol"], result_subset(r))]
    if partial and not include_partial:
        log.info("leaving out %d partial runs (not the variants' results): %s", len(partial),
                 ", ".join(r["_source"] for r in partial))
        results = [r for r in results if all(r is not p for p in partial)]
    return results


def is_partial(result: dict) -> bool:
    """Whether a result (metrics.json dict) is of a partial run (`provenance.partial`: a `--limit`,
    another model, annotation file or image folder than its config file's): the table, the gate
    and `baseline --update` never take it for the variant's result."""
    return bool((result.get("provenance") or {}).get("partial"))


def result_subset(result: dict) -> str | None:
    """The name of the image subset a result was evaluated on (`provenance.subset.name`), None for the full set."""
    subset = (result.get("provenance") or {}).get("subset")
    return subset.get("name") if isinstance(subset, dict) else None


def describe_image_set(subset: str | None) -> str:
    """`subset ci-500` or `full set`: how messages name an image set."""
    return "full set" if subset is None else f"subset {subset}"


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
        """The readable results of full runs (not `is_partial`), in path order: `find` takes a partial
        run only from the canonical folder, where only an explicit `--out` can put it."""
        return [e for e in self.entries.values() if isinstance(e, dict) and not is_partial(e)]

    def errors(self) -> list[UserError]:
        """The unreadable or malformed files, in path order."""
        return [e for e in self.entries.values() if isinstance(e, UserError)]

    def protocols(self, variant: str) -> list[str]:
        """The protocols `variant` has results under, in order of first appearance."""
        return list(dict.fromkeys(r["protocol"] for r in self.results() if r["variant"] == variant))

    def find(self, variant: str, protocol: str, role: str, subset: str | None = None) -> tuple[dict, str | None]:
        """The result of `variant` under `protocol` (on image subset `subset`, None: the full set), plus a
        note when it is not in its canonical folder.

        The canonical folder (`config.run_name`) wins whenever it has a metrics.json: its
        content is returned as it is (the caller checks its protocol) unless it is malformed
        or holds another variant (UserError). Without it, exactly one other result of that
        variant and protocol is used, with a note naming it; several are an error naming
        them, none an error naming the missing file. `role` (e.g. "baselined variant
        ssd-12") says in errors what the result was wanted for.
        """
        path = self.results_dir / run_name(variant, protocol, subset) / "metrics.json"
        entry = self.entries.get(path)
        if isinstance(entry, UserError):
            raise entry
        if entry is not None:
            if entry["variant"] != variant:
                raise UserError(f"{path}: holds variant {entry['variant']!r}, not {variant!r} "
                                f"({role})")
            return entry, None
        others = [r for r in self.results() if r["variant"] == variant and r["protocol"] == protocol
                  and result_subset(r) == subset]
        if len(others) > 1:
            raise UserError(f"{path}: missing, and {len(others)} other results of {variant} under "
                            f"protocol {protocol} exist: {', '.join(r['_source'] for r in others)}; "
                            f"move the one to use to {path.parent}/ ({role})")
        if others:
            return others[0], (f"note: {variant} (protocol {protocol}): {path.parent}/ missing; "
                               f"using {others[0]['_source']}")
        hint = f"make eval MODEL={variant}" + ("" if protocol == "coco" else f" PROTOCOL={protocol}")
        hint += "" if subset is None else f" ARGS='--subset {subset}'"
        raise UserError(f"{path}: missing ({role}, protocol {protocol}); run `{hint}` first")
