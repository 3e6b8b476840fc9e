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

from ssd_eval.config.protocols import protocol_base
from ssd_eval.errors import UserError
from ssd_eval.results.compare import (
    drop_ratio_pct,
    find_parent_result,
    provenance_value,
    short_provider_names,
    speed_mismatch,
)
from ssd_eval.results.index import load_results, result_subset
from ssd_eval.results.paired import ResultMatches, comparison_settings, paired_drop, result_interval
from ssd_eval.results.summary import align_columns
from ssd_eval.scoring.cocoeval import STAT_NAMES
from ssd_eval.utils import atomic_write_text

log = logging.getLogger(__name__)

METRIC_NAMES = tuple(STAT_NAMES)
"""The 12 readable COCOeval.stats names, in pycocotools order."""

COLUMNS = (
    ("variant", "variant"),
    ("protocol", "protocol"),
    ("images", "images"),
    ("subset", "subset"),
    ("map", "mAP"),
    ("map_ci", "mAP ± ci"),
    ("published_map", "published mAP"),
    ("delta", "delta"),
    ("drop_pct", "drop %"),
    ("drop_ci", "drop ± ci"),
    ("ap50", "AP50"),
    ("ap75", "AP75"),
    ("aps", "APs"),
    ("apm", "APm"),
    ("apl", "APl"),
    ("images_per_s", "images/s"),
    ("speedup", "speedup"),
    ("provider", "provider"),
    ("int8_path", "int8 path"),
    ("date", "date"),
    ("model_sha256", "model sha256"),
)
"""(row key, display header) for every table column, in order."""

TERMINAL_LEFT_OUT = ("aps", "apm", "apl")
"""Columns TABLE.md and table.csv hold but the terminal view leaves out (its width)."""

CSV_NUMERIC = ("images", "map", "map_ci", "published_map", "delta", "drop_pct", "drop_ci", "ap50", "ap75", "aps",
               "apm", "apl", "images_per_s", "speedup")
"""table.csv columns that hold only a number or nothing (speedup without its "x"; a "± ci" column
the interval's half width)."""

CSV_NOTES = {"map_ci": "map_ci_note", "delta": "delta_note", "drop_pct": "drop_note", "drop_ci": "drop_ci_note",
             "apl": "area_note", "images_per_s": "images_per_s_note", "speedup": "speedup_note"}
"""The note column table.csv adds after a numeric column: why the number is missing (``n/a: ...``) or
what qualifies it. ``area_note`` (after apl) is for APs, APm and APl together."""

AREA_NOT_COMPARABLE = "n/a: inc computes areas from normalized boxes"
"""Why APs/APm/APl are left out under the inc protocol."""

REPORT_IMAGE_PATTERNS = ("pr_iou50.png", "pr_iou75.png", "ap_delta_*.png", "errors_*.png")
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
    subset = result_subset(result)
    if subset is not None:
        return f"n/a: subset {subset}; published over the full set"
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


def _level_suffix(level: float) -> str:
    return "" if abs(level - 0.95) < 1e-12 else f" ({level * 100:g}%)"


def interval_cell(point: float, low: float, high: float, level: float, digits: int) -> str:
    """``point ± half width`` when [low, high] is centred on the point (as printed to ``digits``), else
    ``point [low, high]``: a ± never suggests a symmetry a bootstrap interval does not have."""
    centre, shown = f"{(low + high) / 2:.{digits}f}", f"{point:.{digits}f}"
    if centre == shown:
        return f"{shown} ± {(high - low) / 2:.{digits}f}{_level_suffix(level)}"
    return f"{shown} [{low:.{digits}f}, {high:.{digits}f}]{_level_suffix(level)}"


def _map_ci_cell(result: dict) -> str:
    """mAP and the run's own bootstrap interval (metrics.json ``intervals``), as interval_cell writes it."""
    interval = result_interval(result, "mAP")
    if interval is None:
        record = provenance_value(result, "bootstrap")
        return "n/a: bootstrap off" if isinstance(record, dict) else "n/a: no intervals"
    return interval_cell(result["mAP"], interval.low, interval.high, interval.level, 4)


def _drop_ci_cell(result: dict, parent: dict | None, reason: str | None, matcher: ResultMatches) -> str:
    """The drop % ± half the width of its paired bootstrap interval (both runs' detections on the same
    resampled images); computed only when both runs have intervals (both small enough for the bootstrap)."""
    if not result.get("parent"):
        return ""
    if parent is None:
        return reason or "n/a"
    if result_interval(result, "mAP") is None or result_interval(parent, "mAP") is None:
        return "n/a: a run without bootstrap"
    if "_source" not in result or "_source" not in parent:
        return "n/a: no detections.json"
    replicates, seed = comparison_settings(result)
    try:
        drop = paired_drop(matcher.matches(result), matcher.matches(parent), replicates=replicates, seed=seed)
    except UserError as exc:
        log.warning("drop ± ci of %s: %s", result["_source"], exc)
        return f"n/a: {exc}"
    return interval_cell(drop.estimate, drop.low, drop.high, drop.level, 2)


def _ap_cells(result: dict) -> dict[str, str]:
    """AP50 and AP75, and APs/APm/APl where the protocol makes them comparable: not under inc, whose
    areas come from normalized boxes ("n/a"; the reason in ``area_note``, for table.csv)."""
    cells = {key: _stat_text(result.get(name)) for key, name in (("ap50", "AP50"), ("ap75", "AP75"))}
    inc = protocol_base(str(result["protocol"])) == "inc"
    for key, name in (("aps", "APs"), ("apm", "APm"), ("apl", "APl")):
        cells[key] = "n/a" if inc else _stat_text(result.get(name))
    cells["area_note"] = AREA_NOT_COMPARABLE if inc else ""
    return cells


def _stat_text(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def build_rows(results: list[dict]) -> list[dict]:
    """One display row (all cells strings) per result, keyed by the COLUMNS keys.

    Delta (measured - published) is filled only for runs under the variant's published
    protocol without `--limit`, the way the published numbers were measured.
    Drop % and speedup are filled only for quantized variants (those with a
    `parent`) against a like-with-like parent result (see accuracy_mismatch and
    speed_mismatch); otherwise the cell says why it is blank (`n/a: ...`).
    fp32 rows leave both cells empty. mAP ± ci is the run's own bootstrap interval (metrics.json
    ``intervals``); drop ± ci the paired interval of the drop, from both runs' detections.json.
    """
    rows = []
    matcher = ResultMatches()
    for result in results:
        parent, reason = find_parent_result(result, results)
        published = result.get("published_map")
        images_per_s = provenance_value(result, "images_per_s")
        rows.append({
            "variant": result["variant"],
            "protocol": result["protocol"],
            "images": str(provenance_value(result, "images")),
            "subset": result_subset(result) or "",
            "map": f"{result['mAP']:.4f}",
            "map_ci": _map_ci_cell(result),
            "published_map": "" if published is None else f"{published:.4f}",
            "delta": _delta_cell(result),
            "drop_pct": _drop_cell(result, parent, reason),
            "drop_ci": _drop_ci_cell(result, parent, reason, matcher),
            **_ap_cells(result),
            "images_per_s": "" if images_per_s is None else f"{images_per_s:.2f}"
                            + (" (cached)" if provenance_value(result, "speed_from_cache") else ""),
            "speedup": _speedup_cell(result, parent, reason),
            "provider": short_provider_names(provenance_value(result, "runtime.providers", [])),
            "int8_path": int8_path(result),
            "date": str(provenance_value(result, "date", ""))[:10],
            "model_sha256": str(provenance_value(result, "model.sha256", ""))[:12],
        })
    return rows


# --------------------------------------------------------------------------- rendering

def _cells(row: dict) -> list[str]:
    """A row's cells (a row of build_rows: every COLUMNS key), each on one line: a name holding a newline
    must not break a table."""
    return [" ".join(str(row[key]).split()) for key, _ in COLUMNS]


_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?(e[+-]?\d+)?%?x?")


def _csv_safe(cell: str) -> str:
    """A cell a spreadsheet will not run as a formula (text starting with = + - @ gets a leading ')."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@") and not _NUMBER.fullmatch(cell) else cell


def render_markdown(rows: list[dict]) -> str:
    """build_rows' rows as a GitHub-flavoured Markdown table (display headers)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line([header for _, header in COLUMNS]), "|" + "---|" * len(COLUMNS)]
    out += [line(_cells(row)) for row in rows]
    return "\n".join(out) + "\n"


def csv_columns() -> list[str]:
    """table.csv's header: the COLUMNS keys, each numeric one followed by its note column (CSV_NOTES)."""
    columns = []
    for key, _ in COLUMNS:
        columns.append(key)
        if key in CSV_NOTES:
            columns.append(CSV_NOTES[key])
    return columns


_CELL = re.compile(r"(?P<number>[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?:%|x)?(?: ± (?P<half>\d+(?:\.\d+)?))?"
                   r"(?: (?P<bounds>\[(?P<low>[+-]?\d+(?:\.(?P<decimals>\d+))?), (?P<high>[+-]?\d+(?:\.\d+)?)\]))?"
                   r"(?: \((?P<note>.*)\))?")


def _split_cell(key: str, cell: str) -> tuple[str, str]:
    """A numeric column's display cell as (number or "", note): ``0.98x`` -> 0.98; ``+0.0012 (int8 on
    ...)`` -> +0.0012 and the note; ``0.5316 ± 0.0100`` -> 0.0100 (the half width); ``0.5316 [0.4000, 0.6200]``
    -> 0.1100 (the half width) and the interval in the note; ``n/a: ...`` -> the note."""
    match = _CELL.fullmatch(cell)
    if match is None:
        return "", cell
    note = match["note"] or ""
    if key.endswith("_ci") and match["bounds"]:
        half = (float(match["high"]) - float(match["low"])) / 2
        return f"{half:.{len(match['decimals'] or '')}f}", "; ".join(filter(None, [match["bounds"], note]))
    number = match["half"] if key.endswith("_ci") and match["half"] else match["number"]
    return number, note


def render_csv(rows: list[dict]) -> str:
    """build_rows' rows as CSV under a header of row keys (csv_columns): numeric columns (CSV_NUMERIC) hold
    a number or nothing, and the reason a number is missing or what qualifies it goes to its note
    column, so a CSV reader gets numeric columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns())
    for row in rows:
        record = {}
        for key, cell in zip((key for key, _ in COLUMNS), _cells(row)):
            if key in CSV_NUMERIC:
                cell, note = _split_cell(key, cell)
                if key == "apl":  # one note for the three area columns
                    note = " ".join(row["area_note"].split())
                if key in CSV_NOTES:
                    record[CSV_NOTES[key]] = note
            record[key] = cell
        writer.writerow([_csv_safe(record[column]) for column in csv_columns()])
    return buffer.getvalue()


def render_terminal(rows: list[dict]) -> str:
    """build_rows' rows as aligned plain text, one line each under a header line (without TERMINAL_LEFT_OUT)."""
    shown = [i for i, (key, _) in enumerate(COLUMNS) if key not in TERMINAL_LEFT_OUT]
    return align_columns([COLUMNS[i][1] for i in shown],
                         [[cells[i] for i in shown] for cells in (_cells(row) for row in rows)]) + "\n"


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
- **subset**: the named image subset (`subsets/<name>.json`) a run evaluated; blank for every image.
  Runs on different image sets are never compared.
- **mAP ± ci**: the run's 95 % bootstrap interval over its images (`metrics.bootstrap`), as
  `mAP [low, high]`, or `mAP ± half width` when it is centred on the mAP; it measures how much the
  mAP moves with the choice of images, not how far a subset's mAP lies from the full set's (on a
  subset it is biased upward: README, "CI on a budget").
- **drop ± ci**: the drop % and its paired 95 % bootstrap interval (parent and quantized run scored
  on the same resampled images), written as for mAP, when both runs have intervals.
- **AP50**, **AP75**: AP at IoU 0.50 and 0.75; **APs**, **APm**, **APl**: AP of small, medium
  and large objects, "n/a" under the `inc` protocol: INC computes areas from normalized boxes,
  so its APs/APm/APl are not comparable with anyone's.
- **speedup**: images/s over the parent's images/s, only when additionally provider list,
  host cpu/cores, thread settings and batch size match.
- A blank comparison reads `n/a: <reason>`. In table.csv numeric columns hold only numbers (or
  nothing) and the reasons go to the `*_note` columns beside them (docs/FORMATS.md).
- **images/s**: images run through the model / time of the image loop (decode, preprocess,
  inference, postprocess; not model loading or scoring); "(cached)": every image came from the
  resume cache, and the speed is the one measured when they were inferred (per-image times kept
  in the cache); **model sha256**: first 12 hex digits.
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
