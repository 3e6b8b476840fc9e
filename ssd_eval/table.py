"""Comparison table of evaluation results: TABLE.md, table.csv and a terminal view.

Every row names its protocol. Quantized variants are compared with their fp32
parent only like with like; a blank comparison cell always says why it is blank.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

from ssd_eval.compare import (
    drop_ratio_pct,
    find_parent_result,
    provenance_value,
    short_provider_names,
    speed_mismatch,
)
from ssd_eval.errors import UserError
from ssd_eval.metrics import STAT_NAMES
from ssd_eval.results import align_columns, atomic_write_text, load_results

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
    limit = provenance_value(result, "limit")
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
    parent_speed = provenance_value(parent, "images_per_s")
    if parent_speed <= 0:
        return f"n/a: {parent['variant']} images/s is 0"
    return f"{provenance_value(result, 'images_per_s') / parent_speed:.2f}x"


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
        images_per_s = provenance_value(result, "images_per_s")
        rows.append({
            "variant": result["variant"],
            "protocol": result["protocol"],
            "images": str(provenance_value(result, "images")),
            "map": f"{result['mAP']:.4f}",
            "published_map": "" if published is None else f"{published:.4f}",
            "delta": _delta_cell(result),
            "drop_pct": _drop_cell(result, parent, reason),
            "images_per_s": "" if images_per_s is None else f"{images_per_s:.2f}",
            "speedup": _speedup_cell(result, parent, reason),
            "provider": short_provider_names(provenance_value(result, "runtime.providers", [])),
            "int8_path": int8_path(result),
            "date": str(provenance_value(result, "date", ""))[:10],
            "model_sha256": str(provenance_value(result, "model.sha256", ""))[:12],
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
