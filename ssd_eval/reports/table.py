"""Comparison table of evaluation results: the rows (each names its protocol and image set; a quantized variant
is compared with its fp32 parent only like with like), written as TABLE.md, table.csv and a terminal view
(the columns, views and their notes: table_render.py)."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from ssd_eval.config.protocols import protocol_base
from ssd_eval.errors import UserError
from ssd_eval.reports.table_render import render_csv, render_markdown, render_terminal
from ssd_eval.results.compare import (
    drop_ratio_pct,
    find_parent_result,
    provenance_value,
    short_provider_names,
    speed_mismatch,
)
from ssd_eval.results.index import image_set, load_results, result_subset, table_order
from ssd_eval.results.paired import ResultMatches, comparison_settings, paired_drop, result_interval
from ssd_eval.utils import atomic_write_text

log = logging.getLogger(__name__)

AREA_NOT_COMPARABLE = "n/a: inc computes areas from normalized boxes"
"""Why APs/APm/APl are left out under the inc protocol."""

REPORT_IMAGE_PATTERNS = ("pr_iou50.png", "pr_iou75.png", "ap_delta_*.png", "errors_*.png")
"""Pictures written by `ssd-eval report` (into report/<group>/) that TABLE.md links when present."""

REPORT_DIR = "report"
"""The folder under the results directory that `ssd-eval report` draws into, one subfolder per group."""


def _delta_cell(result: dict) -> str:
    """measured - published mAP where the run is measured as the published value was, else why not."""
    published = result.get("published_map")
    if published is None:
        return ""  # the empty published cell says it: no note in every row
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
    if provenance_value(result, "model.quantization") in (None, "none"):
        return ""
    return str(provenance_value(result, "int8.cpu.kernel_class") or "unknown")


def _drop_cell(result: dict, parent: dict) -> str:
    if parent["mAP"] <= 0:
        return f"n/a: {parent['variant']} mAP is 0"
    return f"{drop_ratio_pct(result['mAP'], parent['mAP']):.2f}"


def _speedup_cell(result: dict, parent: dict) -> str:
    speed_reason = speed_mismatch(result, parent)
    if speed_reason:
        return speed_reason
    parent_speed = provenance_value(parent, "images_per_s")
    if parent_speed <= 0:
        return f"n/a: {parent['variant']} images/s is 0"
    return f"{provenance_value(result, 'images_per_s') / parent_speed:.2f}x"


def interval_cell(point: float, low: float, high: float, level: float, digits: int,
                  bound_digits: int | None = None) -> str:
    """``point ± half width`` when [low, high] is centred on the point (as printed to ``digits``), else
    ``point [low, high]`` (bounds to ``bound_digits``, default ``digits``); a level other than 95 % is named."""
    centre, shown = f"{(low + high) / 2:.{digits}f}", f"{point:.{digits}f}"
    level_text = "" if abs(level - 0.95) < 1e-12 else f" ({level * 100:g}%)"
    if centre == shown:
        return f"{shown} ± {(high - low) / 2:.{digits}f}{level_text}"
    bound_digits = digits if bound_digits is None else bound_digits
    return f"{shown} [{low:.{bound_digits}f}, {high:.{bound_digits}f}]{level_text}"


def _map_interval_cells(result: dict) -> dict[str, str]:
    """The mAP with the run's own bootstrap interval (metrics.json ``intervals``): ``map_ci`` (``--all``) and
    ``map_interval`` (the default view: off-centre bounds to 3 decimals, the mAP alone without an interval)."""
    interval = result_interval(result, "mAP")
    if interval is None:
        off = "bootstrap off" if isinstance(provenance_value(result, "bootstrap"), dict) else "no intervals"
        return {"map_ci": f"n/a: {off}", "map_interval": _stat_text(result["mAP"])}
    cell = partial(interval_cell, result["mAP"], interval.low, interval.high, interval.level, 4)
    return {"map_ci": cell(), "map_interval": cell(bound_digits=3)}


def _drop_ci_cell(result: dict, parent: dict, matcher: ResultMatches) -> str:
    """The drop % ± its paired bootstrap interval (same resampled images), when both runs have intervals."""
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
    """AP50 and AP75, and APs/APm/APl except under inc ("n/a", the reason in ``area_note``)."""
    inc = protocol_base(str(result["protocol"])) == "inc"
    cells = {name.lower(): "n/a" if inc and name in ("APs", "APm", "APl") else _stat_text(result.get(name))
             for name in ("AP50", "AP75", "APs", "APm", "APl")}
    cells["area_note"] = AREA_NOT_COMPARABLE if inc else ""
    return cells


def _stat_text(value) -> str:
    """A stat to 4 decimals; pycocotools' -1 ("no ground truth" for that area or set) as n/a."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    return "n/a: no ground truth" if value < 0 else f"{value:.4f}"


def build_rows(results: list[dict]) -> list[dict]:
    """One display row (all cells strings) per result, keyed by the COLUMNS keys, in `table_order`; a cell that
    does not apply says why (`n/a: ...`), and fp32 rows leave the columns against a parent empty."""
    rows = []
    matcher = ResultMatches()
    for result in sorted(results, key=table_order):
        parent, reason = find_parent_result(result, results)
        if parent is None:  # no reason: an fp32 result, whose cells against a parent stay empty
            versus = dict.fromkeys(("drop_pct", "drop_ci", "speedup"), reason or "")
        else:
            versus = {"drop_pct": _drop_cell(result, parent), "drop_ci": _drop_ci_cell(result, parent, matcher),
                      "speedup": _speedup_cell(result, parent)}
        published = result.get("published_map")
        images_per_s = provenance_value(result, "images_per_s")
        rows.append({
            "variant": result["variant"],
            "protocol": result["protocol"],
            "image_set": image_set(result),
            "images": str(provenance_value(result, "images")),
            "subset": result_subset(result) or "",
            "map": _stat_text(result["mAP"]),
            **_map_interval_cells(result),
            "published_map": "" if published is None else f"{published:.4f}",
            "delta": _delta_cell(result),
            **versus,
            **_ap_cells(result),
            "images_per_s": "" if images_per_s is None else f"{images_per_s:.2f}"
                            + (" (cached)" if provenance_value(result, "speed_from_cache") else ""),
            "provider": short_provider_names(provenance_value(result, "runtime.providers", [])),
            "int8_path": int8_path(result),
            "date": str(provenance_value(result, "date", ""))[:10],
            "model_sha256": str(provenance_value(result, "model.sha256", ""))[:12],
            "model_sha": str(provenance_value(result, "model.sha256", ""))[:8],
        })
    return rows


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
  onnxruntime's int8 kernels differ between classes (docs/QUANTIZATION.md).
- **drop %**: (parent mAP - mAP) / parent mAP x 100 for a quantized variant against its fp32
  parent measured under the same protocol, image set and annotations.
- **image set**: which images a run was scored on: `full set` (every image of its annotation file), a
  named subset (`subsets/<name>.json`), `limit N` (`--limit`), `own annotations` / `own images`
  (`--annotations` / `--images`). Runs on different image sets are never compared. Rows go by
  variant, then protocol, then image set.
- **mAP (95% ci)**: the mAP with the run's 95 % bootstrap interval over its images
  (`metrics.bootstrap`), as `mAP [low, high]` (`--all`: the **mAP** alone, and **mAP ± ci** with the bounds
  to 4 decimals), or `mAP ± half width` when it is centred on the mAP; it measures how much the
  mAP moves with the choice of images, not how far a subset's mAP lies from the full set's (on a
  subset it is biased upward: docs/STATISTICS.md).
- **drop ± ci** (`--all`): the drop % and its paired 95 % bootstrap interval (parent and quantized run
  scored on the same resampled images), written as for mAP, when both runs have intervals.
- **AP50**, **AP75** (`--all`): AP at IoU 0.50 and 0.75; **APs**, **APm**, **APl**: AP of small,
  medium and large objects, empty under the `inc` protocol (note: INC computes areas from normalized boxes),
  so its APs/APm/APl are not comparable with anyone's.
- **speedup** (`--all`): images/s over the parent's images/s, only when additionally provider list,
  host cpu/cores, thread settings and batch size match.
- **note**: a cell without a number stays empty; the note column numbers the reasons, listed under
  the table. In table.csv numeric columns hold only numbers (or nothing) and the reasons go to the
  `*_note` columns beside them (docs/FORMATS.md).
- This view shows the columns a reader compares; `ssd-eval table --all` (`make table ARGS=--all`)
  shows every column, and table.csv always holds every one.
- **images/s**: images run through the model / time of the image loop (decode, preprocess,
  inference, postprocess; not model loading or scoring); "(cached)": every image came from the
  resume cache, and the speed is the one measured when they were inferred (per-image times kept
  in the cache); **sha256**: the first 8 hex digits of the model file's sha256 (`--all`: 12).
"""


def render_table_markdown_file(rows: list[dict], results_dir: Path, *, all_columns: bool = False) -> str:
    """The full TABLE.md text: header, table (render_markdown), and links to the pictures `ssd-eval report` drew
    into results_dir/report/<group>/, under a heading per group."""
    pictures = []
    for group in sorted(p for p in (results_dir / REPORT_DIR).glob("*") if p.is_dir()):
        found = [p for pattern in REPORT_IMAGE_PATTERNS for p in sorted(group.glob(pattern)) if p.is_file()]
        if found:
            pictures += ["", f"### {group.name}", ""]
            pictures += [f"![{p.stem}]({REPORT_DIR}/{group.name}/{p.name})" for p in found]
    parts = [_TABLE_HEADER, render_markdown(rows, all_columns=all_columns)]
    if pictures:
        parts += ["", "## Pictures (`ssd-eval report`)"] + pictures
    return "\n".join(parts).rstrip("\n") + "\n"


def write_table(results_dir: Path, *, quiet: bool = False, all_columns: bool = False) -> list[dict]:
    """Write `results_dir/TABLE.md` (linking the report pictures) and `results_dir/table.csv`, print the table
    unless quiet, and return the rows; UserError when there is no result or a metrics.json is malformed."""
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    if not results:
        raise UserError(f"{results_dir}: no */metrics.json found; run `make eval` first")
    rows = build_rows(results)
    atomic_write_text(results_dir / "TABLE.md",
                      render_table_markdown_file(rows, results_dir, all_columns=all_columns))
    atomic_write_text(results_dir / "table.csv", render_csv(rows))
    log.info("wrote %s and %s", results_dir / "TABLE.md", results_dir / "table.csv")
    if not quiet:
        print(render_terminal(rows, all_columns=all_columns), end="")
    return rows
