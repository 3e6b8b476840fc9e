"""Comparison table of evaluation results: TABLE.md, table.csv and a terminal view.

Every row names its protocol. Quantized variants are compared with their fp32
parent only like with like; a blank comparison cell always says why it is blank.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from ssd_eval.errors import UserError, quote
from ssd_eval.metrics import STAT_NAMES
from ssd_eval.results import align_columns, atomic_write_text

log = logging.getLogger(__name__)

METRIC_NAMES = tuple(STAT_NAMES)
"""The 12 readable COCOeval.stats names, in pycocotools order."""

COLUMNS = (
    ("variant", "variant"),
    ("protocol", "protocol"),
    ("images", "images"),
    ("map", "mAP"),
    ("published_map", "published mAP"),
    ("delta", "delta"),
    ("drop_pct", "drop %"),
    ("images_per_s", "images/s"),
    ("speedup", "speedup"),
    ("provider", "provider"),
    ("int8_path", "int8 path"),
    ("date", "date"),
    ("model_sha256", "model sha256"),
)
"""(row key, display header) for every table column, in order."""

REPORT_IMAGE_PATTERNS = ("pr_iou50.png", "pr_iou75.png", "ap_delta_*.png")
"""Pictures written by `ssd-eval report` that TABLE.md links when present."""


# --------------------------------------------------------------------------- loading

def _lookup(data: dict, dotted_key: str) -> Any:
    node: Any = data
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted_key)
        node = node[part]
    return node


def is_number(value: Any) -> bool:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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

_KIND_TEXT = {
    "str": "a string",
    "number": "a finite number",
    "int": "an integer",
    "str_list": "a list of strings",
}


def _has_kind(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str) and value != ""
    if kind == "number":
        return is_number(value)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "str_list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise ValueError(kind)


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
    if data.get("schema") != 1:
        raise UserError(f"{path}: schema: expected 1, got {data.get('schema')!r}")
    for key, kind in _REQUIRED_KEYS:
        try:
            value = _lookup(data, key)
        except KeyError:
            raise UserError(f"{path}: missing key {key}") from None
        if not _has_kind(value, kind):
            raise UserError(f"{path}: {key}: expected {_KIND_TEXT[kind]}, got {quote(value)}")
    for key, kind in _OPTIONAL_KEYS:
        try:
            value = _lookup(data, key)
        except KeyError:
            continue
        if value is not None and not _has_kind(value, kind):
            raise UserError(f"{path}: {key}: expected {_KIND_TEXT[kind]} or null, got {quote(value)}")
    for name in METRIC_NAMES:
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


# --------------------------------------------------------------------------- comparability

def _provenance(result: dict, dotted_key: str, default: Any = None) -> Any:
    try:
        return _lookup(result.get("provenance", {}), dotted_key)
    except KeyError:
        return default


def short_provider_names(providers: list[str]) -> str:
    """'CUDAExecutionProvider','CPUExecutionProvider' -> 'CUDA+CPU'."""
    return "+".join(p.removesuffix("ExecutionProvider") for p in providers) or "none"


def accuracy_mismatch(result: dict, parent: dict) -> str | None:
    """Why the two results' accuracies cannot be compared, or None when they can.

    Comparable means: same protocol, same number of images, same image set
    (`provenance.image_ids_sha256`), same annotations (`provenance.annotations.sha256`)
    and the same pre- and postprocessing settings. The reason reads `n/a: ...`.
    """
    if result["protocol"] != parent["protocol"]:
        return f"n/a: protocol {result['protocol']} vs {parent['protocol']}"
    images, parent_images = _provenance(result, "images"), _provenance(parent, "images")
    if images != parent_images:
        return f"n/a: {images} vs {parent_images} images"
    if _provenance(result, "image_ids_sha256") != _provenance(parent, "image_ids_sha256"):
        return "n/a: different image sets"
    if _provenance(result, "annotations.sha256") != _provenance(parent, "annotations.sha256"):
        return "n/a: different annotation files"
    for section in ("preprocess", "postprocess"):
        mine, theirs = _provenance(result, f"config.{section}"), _provenance(parent, f"config.{section}")
        # resize_backend is already part of the protocol label compared above
        differing = sorted(k for k in set(mine or {}) | set(theirs or {})
                           if k != "resize_backend" and mine and theirs and mine.get(k) != theirs.get(k))
        if differing:
            return f"n/a: different {section} ({', '.join(differing)})"
    return None


def speed_mismatch(result: dict, parent: dict) -> str | None:
    """Why the two results' speeds cannot be compared, or None when they can.

    Needs accuracy comparability plus the same provider list, host cpu and core
    count, thread settings, batch size, graph optimization, decode pipeline and
    onnxruntime version, measured images/s on both sides and no resumed or
    merged (sharded) run.
    """
    reason = accuracy_mismatch(result, parent)
    if reason:
        return reason
    for side in (result, parent):
        if _provenance(side, "images_per_s") is None:
            return f"n/a: no images/s for {side['variant']}"
        if _provenance(side, "resumed_images"):
            return f"n/a: {side['variant']} run was resumed"
        if _provenance(side, "shards"):
            return f"n/a: {side['variant']} merged from shards"
    providers = _provenance(result, "runtime.providers", [])
    parent_providers = _provenance(parent, "runtime.providers", [])
    if providers != parent_providers:
        return (f"n/a: provider {short_provider_names(providers)} vs "
                f"{short_provider_names(parent_providers)}")
    if _provenance(result, "host.cpu") != _provenance(parent, "host.cpu"):
        return "n/a: different host cpu"
    cores, parent_cores = _provenance(result, "host.cores"), _provenance(parent, "host.cores")
    if cores != parent_cores:
        return f"n/a: {cores} vs {parent_cores} cores"
    threads = tuple(_provenance(result, f"runtime.{k}_op_threads") for k in ("intra", "inter"))
    parent_threads = tuple(_provenance(parent, f"runtime.{k}_op_threads") for k in ("intra", "inter"))
    if threads != parent_threads:
        return "n/a: threads intra/inter {}/{} vs {}/{}".format(*threads, *parent_threads)
    batch, parent_batch = _provenance(result, "runtime.batch_size"), _provenance(parent, "runtime.batch_size")
    if batch != parent_batch:
        return f"n/a: batch {batch} vs {parent_batch}"
    for key, label in (("runtime.onnxruntime", "onnxruntime"), ("config.runtime.graph_optimization",
                       "graph optimization"), ("config.pipeline", "decode pipeline")):
        mine, theirs = _provenance(result, key), _provenance(parent, key)
        if mine is not None and theirs is not None and mine != theirs:
            return f"n/a: different {label}"
    return None


def find_parent_result(result: dict, results: list[dict]) -> tuple[dict | None, str | None]:
    """The parent result to compare `result` with, or (None, reason).

    Returns (None, None) when `result` has no parent. Among several results of
    the parent variant, an accuracy-comparable one is chosen, preferring one
    that is also speed-comparable; when none is comparable the reason explains
    the first candidate's mismatch.
    """
    parent_name = result.get("parent")
    if not parent_name:
        return None, None
    candidates = [r for r in results if r.get("variant") == parent_name and r is not result]
    if not candidates:
        return None, f"n/a: no {parent_name} result"
    comparable = [c for c in candidates if accuracy_mismatch(result, c) is None]
    if not comparable:
        return None, accuracy_mismatch(result, candidates[0])
    for candidate in comparable:
        if speed_mismatch(result, candidate) is None:
            return candidate, None
    return comparable[0], None


def drop_ratio_pct(map_value: float, parent_map: float) -> float:
    """(parent_mAP - mAP) / parent_mAP * 100; raises ZeroDivisionError on parent 0."""
    return (parent_map - map_value) / parent_map * 100.0


# --------------------------------------------------------------------------- rows

def _delta_cell(result: dict) -> str:
    """measured - published, only where the run matches how the published value was measured:
    the variant's published protocol over the full set (no `--limit`)."""
    published = result.get("published_map")
    if published is None:
        return "n/a: no published mAP"
    protocol = result.get("published_protocol")
    if protocol is None:
        return "n/a: published protocol unknown"
    if result["protocol"] != protocol:
        return f"n/a: published under {protocol} protocol, full set"
    limit = _provenance(result, "limit")
    if limit is not None:
        return f"n/a: limited run (--limit {limit}); published over the full set"
    delta = f"{result['mAP'] - published:+.4f}"
    here, there = int8_path(result), result.get("published_int8_path")
    if here and there and here != there:
        delta += f" (int8 on {here}; published on {there})"
    return delta


def int8_path(result: dict) -> str:
    """The CPU int8 kernel class a quantized result ran on ("" for fp32 models and old results)."""
    provenance = result.get("provenance", {})
    if (provenance.get("model") or {}).get("quantization") in (None, "none"):
        return ""
    return str(((provenance.get("int8") or {}).get("cpu") or {}).get("kernel_class") or "unknown")


def _drop_cell(result: dict, parent: dict | None, reason: str | None) -> str:
    if not result.get("parent"):
        return ""
    if parent is None:
        return reason or "n/a"
    if parent["mAP"] <= 0:
        return f"n/a: {parent['variant']} mAP is 0"
    return f"{drop_ratio_pct(result['mAP'], parent['mAP']):.2f}"


def _speedup_cell(result: dict, parent: dict | None, reason: str | None) -> str:
    if not result.get("parent"):
        return ""
    if parent is None:
        return reason or "n/a"
    speed_reason = speed_mismatch(result, parent)
    if speed_reason:
        return speed_reason
    parent_speed = _provenance(parent, "images_per_s")
    if parent_speed <= 0:
        return f"n/a: {parent['variant']} images/s is 0"
    return f"{_provenance(result, 'images_per_s') / parent_speed:.2f}x"


def build_rows(results: list[dict]) -> list[dict]:
    """One display row (all cells strings) per result, keyed by the COLUMNS keys.

    Delta (measured - published) is filled only for runs under the variant's published
    protocol without `--limit`, the way the published numbers were measured.
    Drop % and speedup are filled only for quantized variants (those with a
    `parent`) against a like-with-like parent result (see accuracy_mismatch and
    speed_mismatch); otherwise the cell says why it is blank (`n/a: ...`).
    fp32 rows leave both cells empty.
    """
    rows = []
    for result in results:
        parent, reason = find_parent_result(result, results)
        published = result.get("published_map")
        images_per_s = _provenance(result, "images_per_s")
        rows.append({
            "variant": result["variant"],
            "protocol": result["protocol"],
            "images": str(_provenance(result, "images")),
            "map": f"{result['mAP']:.4f}",
            "published_map": "" if published is None else f"{published:.4f}",
            "delta": _delta_cell(result),
            "drop_pct": _drop_cell(result, parent, reason),
            "images_per_s": "" if images_per_s is None else f"{images_per_s:.2f}",
            "speedup": _speedup_cell(result, parent, reason),
            "provider": short_provider_names(_provenance(result, "runtime.providers", [])),
            "int8_path": int8_path(result),
            "date": str(_provenance(result, "date", ""))[:10],
            "model_sha256": str(_provenance(result, "model.sha256", ""))[:12],
        })
    return rows


# --------------------------------------------------------------------------- rendering

def _cells(row: dict) -> list[str]:
    """A row's cells, each on one line: a name holding a newline must not break a table."""
    return [" ".join(str(row.get(key, "")).split()) for key, _ in COLUMNS]


_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?(e[+-]?\d+)?%?x?")


def _csv_safe(cell: str) -> str:
    """A cell a spreadsheet will not run as a formula (text starting with = + - @ gets a leading ')."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@") and not _NUMBER.fullmatch(cell) else cell


def render_markdown(rows: list[dict]) -> str:
    """The rows as a GitHub-flavoured Markdown table (display headers)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line([header for _, header in COLUMNS]), "|" + "---|" * len(COLUMNS)]
    out += [line(_cells(row)) for row in rows]
    return "\n".join(out) + "\n"


def render_csv(rows: list[dict]) -> str:
    """The rows as CSV with a header line of row keys (variant, protocol, ..., model_sha256)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key for key, _ in COLUMNS])
    for row in rows:
        writer.writerow([_csv_safe(cell) for cell in _cells(row)])
    return buffer.getvalue()


def render_terminal(rows: list[dict]) -> str:
    """The rows as aligned plain text, one line per row under a header line."""
    return align_columns([header for _, header in COLUMNS], [_cells(row) for row in rows]) + "\n"


def _report_images(results_dir: Path) -> list[str]:
    names: list[str] = []
    for pattern in REPORT_IMAGE_PATTERNS:
        names += sorted(p.name for p in results_dir.glob(pattern) if p.is_file())
    return names


_TABLE_HEADER = """\
# SSD-ResNet34 evaluation results

Generated by `ssd-eval table` from `*/metrics.json`; do not edit by hand.

Each row names its **protocol**: `coco` (the official COCO rules), `inc` (Intel Neural
Compressor's evaluation, behind ssd-12, ssd-12-int8 and ssd-12-qdq's published numbers),
`mlperf-ssd` (the MLPerf SSD-ResNet34 ONNX export's evaluation, behind ssd-10's) or a mixed
label such as `inc+resize_backend=pil`. Numbers from different protocols are not comparable;
docs/PROTOCOLS.md says what each protocol does and where that was read.

- **mAP**: measured COCO mAP@[0.50:0.95]; **published mAP**: ONNX Model Zoo value;
  **delta**: measured - published, filled only for runs under the protocol the published
  value was measured with, over the full set (no `--limit`). A quantized result measured on
  another CPU int8 kernel class than the published one says so in the cell.
- **int8 path**: for quantized models, the CPU's int8 kernel class (x86-vnni, x86-avx2, ...):
  onnxruntime's int8 kernels differ between classes (README: Quantized models on different CPUs).
- **drop %**: (parent mAP - mAP) / parent mAP x 100 for a quantized variant against its fp32
  parent measured under the same protocol, image set and annotations.
- **speedup**: images/s over the parent's images/s, only when additionally provider list,
  host cpu/cores, thread settings and batch size match.
- A blank comparison reads `n/a: <reason>`.
- **images/s**: images run through the model / time of the image loop (decode, preprocess,
  inference, postprocess; not model loading or scoring); **model sha256**: first 12 hex digits.
"""


def render_table_markdown_file(rows: list[dict], image_names: list[str]) -> str:
    """The full TABLE.md text: header, table, and links to the given report pictures."""
    parts = [_TABLE_HEADER, render_markdown(rows)]
    if image_names:
        parts += ["", "## Pictures (`ssd-eval report`)", ""]
        parts += [f"![{Path(name).stem}]({name})" for name in image_names]
    return "\n".join(parts).rstrip("\n") + "\n"


def write_table(results_dir: Path, *, quiet: bool = False) -> list[dict]:
    """Write `results_dir/TABLE.md` and `results_dir/table.csv`; print the table unless quiet.

    TABLE.md links the report pictures found beside it. Returns the rows.
    Raises UserError when there is no result to tabulate or a metrics.json is malformed.
    """
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    if not results:
        raise UserError(f"{results_dir}: no */metrics.json found; run `make eval` first")
    rows = build_rows(results)
    atomic_write_text(results_dir / "TABLE.md",
                      render_table_markdown_file(rows, _report_images(results_dir)))
    atomic_write_text(results_dir / "table.csv", render_csv(rows))
    log.info("wrote %s and %s", results_dir / "TABLE.md", results_dir / "table.csv")
    if not quiet:
        print(render_terminal(rows), end="")
    return rows
