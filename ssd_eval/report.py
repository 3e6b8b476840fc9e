"""Pictures of the results (`make report`): precision-recall curves and per-category AP changes.

matplotlib is an optional extra (`pip install -e '.[report]'`); it is imported
only when a report is asked for, and drawn with the Agg canvas (no display, no
pyplot global state).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
from pathlib import Path

from ssd_eval.compare import find_parent_result
from ssd_eval.errors import UserError
from ssd_eval.results import load_results
from ssd_eval.table import write_table

log = logging.getLogger(__name__)

MAX_CATEGORY_BARS = 30
"""An AP-change chart shows at most this many categories (the biggest changes)."""

PR_POINTS = 101


def _matplotlib():
    """(Figure, FigureCanvasAgg), or UserError when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("make report needs matplotlib: pip install -e '.[report]'") from None
    return Figure, FigureCanvasAgg


def _save_png(figure, canvas_class, path: Path) -> Path:
    """Save `figure` as PNG at `path` via a temporary file beside it and os.replace."""
    canvas_class(figure)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        figure.savefig(temp, format="png", dpi=110, bbox_inches="tight")
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    log.info("wrote %s", path)
    return path


def _curve(result: dict, key: str) -> list[float]:
    source = result.get("_source", result["variant"])
    curves = result.get("pr_curves")
    if not isinstance(curves, dict):
        raise UserError(f"{source}: missing key pr_curves")
    values = curves.get(key)
    if (not isinstance(values, list) or len(values) != PR_POINTS
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise UserError(f"{source}: pr_curves.{key}: expected a list of {PR_POINTS} numbers")
    return [float(v) for v in values]


def _recall_axis(result: dict) -> list[float]:
    try:
        return _curve(result, "recall")
    except UserError:
        if isinstance(result.get("pr_curves"), dict) and "recall" not in result["pr_curves"]:
            return [i / (PR_POINTS - 1) for i in range(PR_POINTS)]
        raise


def pr_figure(results: list[dict], iou_key: str, title: str, figure_class):
    """A Figure with one precision-recall line per result, labelled variant (protocol)."""
    figure = figure_class(figsize=(7, 5))
    axes = figure.add_subplot()
    for result in results:
        recall = _recall_axis(result)
        # COCOeval marks "no data" with -1; leave those points out of the line.
        precision = [p if p >= 0 else math.nan for p in _curve(result, iou_key)]
        axes.plot(recall, precision, label=f"{result['variant']} ({result['protocol']})")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision (mean over categories)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize="small")
    return figure


def category_ap_changes(result: dict, parent: dict,
                        limit: int | None = MAX_CATEGORY_BARS) -> list[tuple[str, float]]:
    """(category, AP - parent AP) for categories with AP in both, largest losses first,
    limited to the `limit` biggest absolute changes (None: all)."""
    source = result.get("_source", result["variant"])
    ours, theirs = result.get("per_category_ap"), parent.get("per_category_ap")
    for data, src in ((ours, source), (theirs, parent.get("_source", parent["variant"]))):
        if not isinstance(data, dict):
            raise UserError(f"{src}: missing key per_category_ap")
    changes = []
    for name, ap in ours.items():
        parent_ap = theirs.get(name)
        if not isinstance(ap, (int, float)) or not isinstance(parent_ap, (int, float)):
            continue
        if ap < 0 or parent_ap < 0:  # -1: no ground truth for this category
            continue
        changes.append((name, float(ap) - float(parent_ap)))
    biggest = sorted(changes, key=lambda item: (-abs(item[1]), item[0]))[:limit]
    return sorted(biggest, key=lambda item: (item[1], item[0]))


def ap_delta_figure(result: dict, parent: dict, changes: list[tuple[str, float]],
                    compared: int, figure_class):
    """A Figure: horizontal bars of per-category AP change vs the parent, losses on top.

    `compared` is how many categories had AP in both results (the chart may show fewer).
    """
    figure = figure_class(figsize=(7, 1.5 + 0.25 * max(len(changes), 1)))
    axes = figure.add_subplot()
    names = [name for name, _ in changes]
    values = [value for _, value in changes]
    positions = list(range(len(changes)))
    axes.barh(positions, values,
              color=["#c0392b" if v < 0 else "#27ae60" for v in values])
    axes.set_yticks(positions, labels=names, fontsize="small")
    axes.invert_yaxis()  # first (largest loss) on top
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel(f"AP change vs {parent['variant']} (AP@[0.50:0.95])")
    axes.grid(True, axis="x", alpha=0.3)
    images = result.get("provenance", {}).get("images")
    axes.set_title(f"{result['variant']} vs {parent['variant']}: per-category AP change\n"
                   f"({result['protocol']}, {images} images; {len(changes)} of {compared} "
                   "categories, biggest changes)", fontsize="medium")
    return figure


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def write_report(results_dir: Path) -> list[Path]:
    """Draw the report pictures into `results_dir` and refresh TABLE.md; return written paths.

    Writes pr_iou50.png and pr_iou75.png (every result's precision-recall curve)
    and ap_delta_<variant>.png for each quantized variant with a comparable
    parent result (same rule as the table). Stale ap_delta_*.png files are
    removed. Raises UserError without matplotlib, without results, or on a
    malformed metrics.json.
    """
    figure_class, canvas_class = _matplotlib()
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    if not results:
        raise UserError(f"{results_dir}: no */metrics.json found; run `make eval` first")

    written = []
    for key, iou in (("iou50", "0.50"), ("iou75", "0.75")):
        figure = pr_figure(results, key, f"Precision-recall at IoU {iou}", figure_class)
        written.append(_save_png(figure, canvas_class, results_dir / f"pr_{key}.png"))

    for result in results:
        if not result.get("parent"):
            continue
        parent, reason = find_parent_result(result, results)
        if parent is None:
            log.info("no AP-change chart for %s: %s", result["variant"], reason)
            continue
        all_changes = category_ap_changes(result, parent, limit=None)
        changes = category_ap_changes(result, parent)
        if not changes:
            log.info("no AP-change chart for %s: no category has AP in both results",
                     result["variant"])
            continue
        path = results_dir / f"ap_delta_{_safe_name(result['variant'])}.png"
        if path in written:  # same variant under another protocol, in another directory
            folder = Path(result.get("_source", "x/x")).parent.name
            path = results_dir / f"ap_delta_{_safe_name(result['variant'])}-{_safe_name(folder)}.png"
        figure = ap_delta_figure(result, parent, changes, len(all_changes), figure_class)
        written.append(_save_png(figure, canvas_class, path))

    for stale in sorted(results_dir.glob("ap_delta_*.png")):
        if stale not in written:
            log.info("removing stale %s", stale)
            stale.unlink()

    write_table(results_dir, quiet=True)
    return written
