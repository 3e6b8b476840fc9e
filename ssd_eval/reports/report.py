"""Pictures of finished results (`make report`): precision-recall curves, per-category AP changes and the
TIDE-style error breakdown of each variant against its parent, one set per comparison group under
``<results>/report/<group>/``.

Colours are Okabe-Ito (safe with colour-vision deficiencies), and every series also differs by line style,
marker or hatching, for grayscale prints. matplotlib is imported only to draw, and used without pyplot.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from ssd_eval import extras
from ssd_eval.errors import UserError
from ssd_eval.reports.table import REPORT_DIR, write_table
from ssd_eval.results.compare import find_parent_result
from ssd_eval.results.index import comparison_groups, image_set, load_results
from ssd_eval.scoring.breakdown import ERROR_TYPES, breakdown_change
from ssd_eval.utils import atomic_path, is_number

log = logging.getLogger(__name__)

MAX_CATEGORY_BARS = 30
"""An AP-change chart shows at most this many categories (the biggest changes)."""

PR_POINTS = 101

# Okabe & Ito (2008), "Color Universal Design": blue, vermillion, bluish green, reddish purple,
# orange, sky blue, black.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LOSS_COLOUR, GAIN_COLOUR = "#D55E00", "#0072B2"  # vermillion, blue
PARENT_HATCH, VARIANT_HATCH = "", "///"
ERROR_NAMES = [name for name, _ in ERROR_TYPES]

MIN_AXIS_WIDTH = 0.01
"""A bar chart's value axis spans at least this much (an all-zero chart would otherwise get a 1e-5 scale)."""

ZERO_CHANGE = 0.0005
"""AP changes smaller than this (0.000 at the charts' three decimals) are left out of the AP-change chart."""


def series_style(index: int) -> dict:
    """Colour, line style and marker of the index-th curve: all three differ between neighbours."""
    return {"color": OKABE_ITO[index % len(OKABE_ITO)], "linestyle": LINE_STYLES[index % len(LINE_STYLES)],
            "marker": MARKERS[index % len(MARKERS)]}


def _figure_class():
    """matplotlib's Figure, or UserError when matplotlib is not installed."""
    extras.require(extras.REPORT)
    from matplotlib.figure import Figure

    return Figure


def _save_png(figure, path: Path) -> Path:
    """Save `figure` as PNG at `path`, atomically (utils.atomic_path)."""
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=110, bbox_inches="tight")
    log.info("wrote %s", path)
    return path


def _source(result: dict) -> str:
    """Where errors say a result came from: its metrics.json, else its variant."""
    return result.get("_source", result["variant"])


def _curve(result: dict, key: str) -> list[float]:
    """``pr_curves[key]`` as PR_POINTS floats (a missing recall: evenly spaced), or UserError naming the file."""
    curves = result.get("pr_curves")
    if not isinstance(curves, dict):
        raise UserError(f"{_source(result)}: missing key pr_curves")
    if key == "recall" and key not in curves:
        return [i / (PR_POINTS - 1) for i in range(PR_POINTS)]
    values = curves.get(key)  # read_metrics_file checked the numbers, not how many
    if not isinstance(values, list) or len(values) != PR_POINTS:
        raise UserError(f"{_source(result)}: pr_curves.{key}: expected a list of {PR_POINTS} numbers")
    return [float(v) for v in values]


def pr_figure(results: list[dict], iou_key: str, title: str, figure_class):
    """A Figure with one precision-recall line per result, labelled with the variant and its AP at that IoU."""
    figure = figure_class(figsize=(7, 5))
    axes = figure.add_subplot()
    ap_key = "AP" + iou_key.removeprefix("iou")
    for index, result in enumerate(results):
        recall = _curve(result, "recall")
        # COCOeval marks "no data" with -1; leave those points out of the line.
        precision = [p if p >= 0 else math.nan for p in _curve(result, iou_key)]
        ap = result.get(ap_key)
        ap_text = f": {ap_key} {ap:.3f}" if is_number(ap) else ""
        axes.plot(recall, precision, label=f"{result['variant']}{ap_text}",
                  markevery=(index * 2, 10), markersize=5, linewidth=1.6, **series_style(index))
    axes.set(xlabel="recall", ylabel="precision (mean over categories)", xlim=(0, 1), ylim=(0, 1.02))
    axes.grid(True, alpha=0.3)
    axes.set_title(title, fontsize="medium")
    axes.legend(loc="upper right", fontsize="small")
    return figure


def group_label(result: dict) -> str:
    """How a figure's title names ``result``'s comparison group: protocol, image set, images, annotation file."""
    provenance = result.get("provenance") or {}
    annotations = Path(str((provenance.get("annotations") or {}).get("path") or "?"))
    short = "/".join(annotations.parts[-2:])
    return f"{result['protocol']}, {image_set(result)}, {provenance.get('images', '?')} images of {short}"


def group_folder(result: dict) -> str:
    """The report folder name of ``result``'s comparison group: protocol, image set and the first 8 hex
    digits of the annotation file's sha256, e.g. ``coco_full-set_e99a2aff`` or ``inc_ci-500_1a2b3c4d``."""
    provenance = result.get("provenance") or {}
    sha = str((provenance.get("annotations") or {}).get("sha256") or "")[:8]
    return _safe_name(f"{result['protocol']}_{image_set(result).replace(', ', '_').replace(' ', '-')}_{sha}")


def category_ap_changes(result: dict, parent: dict, limit: int | None = MAX_CATEGORY_BARS,
                        min_change: float = ZERO_CHANGE) -> list[tuple[str, float]]:
    """(category, AP - parent AP) of the `limit` (None: all) biggest changes of at least `min_change` among
    categories with AP in both, largest losses first."""
    ours, theirs = result.get("per_category_ap"), parent.get("per_category_ap")
    for data, side in ((ours, result), (theirs, parent)):
        if not isinstance(data, dict):
            raise UserError(f"{_source(side)}: missing key per_category_ap")
    # AP -1: no ground truth for the category; read_metrics_file checked that every AP is a number
    both = [(name, float(ap), float(theirs[name])) for name, ap in ours.items()
            if ap >= 0 and theirs.get(name, -1) >= 0]
    changes = [(name, ap - parent_ap) for name, ap, parent_ap in both if abs(ap - parent_ap) >= min_change]
    biggest = sorted(changes, key=lambda item: (-abs(item[1]), item[0]))[:limit]
    return sorted(biggest, key=lambda item: (item[1], item[0]))


def _labelled_bars(axes, positions, values: list[float], spec: str, **options) -> None:
    """Horizontal bars of `values`, each labelled with its value formatted by `spec`."""
    bars = axes.barh(positions, values, **options)
    axes.bar_label(bars, labels=[format(v, spec) for v in values], padding=2, fontsize="x-small")


def _bar_axes(axes, values: list[float], labels: list[str], xlabel: str, *, zero_line: bool = True) -> None:
    """A horizontal bar chart's axes: room for the value labels, first label on top, a line at 0, a grid."""
    span = max([abs(v) for v in values] + [1e-3])
    low, high = min(values + [0.0]), max(values + [0.0])
    left, right = low - (0.3 if low < 0 else 0.02) * span, high + (0.3 if high > 0 else 0.02) * span
    if right - left < MIN_AXIS_WIDTH:  # every value (about) 0: a readable axis, not ticks of 1e-5 and an offset
        if low < 0:
            right = left + MIN_AXIS_WIDTH
        else:
            right = right if high > 0 else 0.9 * MIN_AXIS_WIDTH
            left = right - MIN_AXIS_WIDTH
    axes.set_xlim(left, right)
    axes.set_yticks(range(len(labels)), labels=labels, fontsize="small")
    axes.invert_yaxis()
    if zero_line:
        axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel(xlabel)
    axes.grid(True, axis="x", alpha=0.3)


def ap_delta_figure(result: dict, parent: dict, changes: list[tuple[str, float]],
                    compared: int, figure_class):
    """A Figure of per-category AP change vs the parent, losses on top; `compared`: categories with AP in both."""
    figure = figure_class(figsize=(7, 1.5 + 0.25 * max(len(changes), 1)))
    axes = figure.add_subplot()
    values = [value for _, value in changes]
    _labelled_bars(axes, range(len(changes)), values, "+.3f",
                   color=[LOSS_COLOUR if v < 0 else GAIN_COLOUR for v in values])
    _bar_axes(axes, values, [name for name, _ in changes],
              f"AP change vs {parent['variant']} (AP@[0.50:0.95]; loss left, gain right)")
    axes.set_title(f"{result['variant']} vs {parent['variant']}: per-category AP change\n"
                   f"{group_label(result)}\n({len(changes)} of {compared} "
                   f"categories: the biggest changes, none under {ZERO_CHANGE})", fontsize="medium")
    return figure


def _checked_breakdown(result: dict) -> dict:
    """`result`'s error_breakdown, or UserError naming its file when a number the chart needs is missing."""
    breakdown = result.get("error_breakdown")
    number = (int, float)
    if not (isinstance(breakdown, dict) and isinstance(breakdown.get("ap50"), number)
            and all(isinstance(breakdown.get(part), dict) and isinstance(breakdown[part].get(name), number)
                    for part in ("dAP", "counts") for name in ERROR_NAMES)):
        raise UserError(f"{_source(result)}: error_breakdown: expected ap50 and dAP and "
                        f"counts of {', '.join(ERROR_NAMES)}")
    return breakdown


def error_breakdown_figure(result: dict, parent: dict | None, figure_class):
    """A Figure of `result`'s TIDE error breakdown (the AP50 each error type would recover if fixed) beside its
    parent's, and a panel of the change (right: the variant loses more AP to it); without one, its bars alone."""
    counts = _checked_breakdown(result)["counts"]
    if parent is not None and isinstance(parent.get("error_breakdown"), dict):
        _checked_breakdown(parent)
    change = breakdown_change(result, parent) if parent is not None else None
    figure = figure_class(figsize=(11 if change else 6.5, 3.8))
    axes = figure.add_subplot(1, 2 if change else 1, 1)
    series = [(parent, GAIN_COLOUR, PARENT_HATCH)] if change else []
    series.append((result, LOSS_COLOUR, VARIANT_HATCH))
    height = 0.8 / len(series)
    values_shown = []
    for number, (side, colour, hatch) in enumerate(series):
        values = [float(side["error_breakdown"]["dAP"][name]) for name in ERROR_NAMES]
        values_shown += values
        offsets = [p - 0.4 + height * (number + 0.5) for p in range(len(ERROR_NAMES))]
        _labelled_bars(axes, offsets, values, ".3f", height=height, color=colour, hatch=hatch, edgecolor="black",
                       linewidth=0.5, label=f"{side['variant']} (AP50 {side['error_breakdown']['ap50']:.3f})")
    if change:
        parent_counts = parent["error_breakdown"]["counts"]
        labels = [f"{name} ({parent_counts[name]} -> {counts[name]})" for name in ERROR_NAMES]
    else:
        labels = [f"{name} ({counts[name]})" for name in ERROR_NAMES]
    _bar_axes(axes, values_shown, labels, "AP50 recovered if fixed (dAP)", zero_line=False)
    axes.legend(loc="best", fontsize="x-small")
    axes.set_title(f"{result['variant']}: where AP50 is lost (TIDE; error counts in brackets)\n{group_label(result)}",
                   fontsize="medium")
    if change:
        from matplotlib.ticker import MaxNLocator  # matplotlib is there: it gave the figure class

        delta_axes = figure.add_subplot(1, 2, 2)
        values = [change[name] for name in ERROR_NAMES]
        _labelled_bars(delta_axes, range(len(ERROR_NAMES)), values, "+.3f", hatch=VARIANT_HATCH, edgecolor="black",
                       linewidth=0.5, color=[LOSS_COLOUR if v > 0 else GAIN_COLOUR for v in values])
        delta_axes.xaxis.set_major_locator(MaxNLocator(nbins=5))  # signed 3-decimal ticks: fewer, so none overlap
        _bar_axes(delta_axes, values, ERROR_NAMES,
                  f"dAP change vs {parent['variant']} (right: lost more to this error)")
        delta_axes.set_title(f"{result['variant']} vs {parent['variant']}", fontsize="medium")
    figure.tight_layout()
    return figure


def report_figures(results: list[dict], only: dict | None = None) -> list[tuple[str, object]]:
    """(PNG file name, Figure) of each picture of `results` (one comparison group): the PR curves, and per
    result (only `only`'s when given) its AP-change chart and error breakdown where it has them."""
    figure_class = _figure_class()
    label = group_label(results[0]) if results else ""
    figures = [(f"pr_{key}.png", pr_figure(results, key, f"Precision-recall at IoU {iou}\n{label}", figure_class))
               for key, iou in (("iou50", "0.50"), ("iou75", "0.75"))]
    taken = {name for name, _ in figures}
    for result in results if only is None else [only]:
        parent, reason = find_parent_result(result, results)
        changes = category_ap_changes(result, parent) if parent is not None else []
        if changes:
            compared = len(category_ap_changes(result, parent, limit=None, min_change=0.0))
            figure = ap_delta_figure(result, parent, changes, compared, figure_class)
            figures.append((_unique_name("ap_delta", result, taken), figure))
        elif result.get("parent"):
            log.info("no AP-change chart for %s: %s", result["variant"],
                     reason or f"no category's AP changed by {ZERO_CHANGE} or more")
        if isinstance(result.get("error_breakdown"), dict):
            figure = error_breakdown_figure(result, parent, figure_class)
            figures.append((_unique_name("errors", result, taken), figure))
    return figures


def _unique_name(prefix: str, result: dict, taken: set[str]) -> str:
    """<prefix>_<variant>.png, with the result's folder added when that name is taken (another protocol)."""
    name = f"{prefix}_{_safe_name(result['variant'])}.png"
    if name in taken:
        folder = Path(result.get("_source", "x/x")).parent.name
        name = f"{prefix}_{_safe_name(result['variant'])}-{_safe_name(folder)}.png"
    taken.add(name)
    return name


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def run_pictures(document: dict, out: Path) -> list[Path]:
    """One run's report pictures (a metrics.json document with ``_source``), beside its parent's, drawn into
    ``out``; none without matplotlib."""
    try:
        _figure_class()
    except UserError:
        log.info("no report pictures for tracking: matplotlib is not installed (pip install -e '.[report]')")
        return []
    source = Path(document["_source"]).resolve()
    try:
        others = [r for r in load_results(source.parent.parent) if Path(r["_source"]).resolve() != source]
    except UserError as exc:  # a malformed neighbour: draw this run alone
        log.info("tracking pictures without the other results: %s", exc)
        others = []
    parent, _ = find_parent_result(document, [document, *others])
    results = [document] + ([parent] if parent is not None else [])
    return [_save_png(figure, out / name) for name, figure in report_figures(results, only=document)]


def write_report(results_dir: Path) -> list[Path]:
    """Draw the report pictures into `results_dir/report/<group_folder>/`, remove stale ones of an earlier
    report and refresh TABLE.md, which links them; return the written paths."""
    extras.require(extras.REPORT)
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    if not results:
        raise UserError(f"{results_dir}: no */metrics.json found; run `make eval` first")
    report_dir = results_dir / REPORT_DIR
    written: list[Path] = []
    folders: dict[str, tuple] = {}
    for group in comparison_groups(results):
        folder = group_folder(group[0])
        if folder in folders:  # same protocol, image set label and annotations, other image ids
            folder += "_" + _safe_name(str(group[0]["provenance"].get("image_ids_sha256", ""))[:8])
        folders[folder] = tuple(r["variant"] for r in group)
        log.info("report group %s: %s", folder, ", ".join(folders[folder]))
        (report_dir / folder).mkdir(parents=True, exist_ok=True)
        written += [_save_png(figure, report_dir / folder / name) for name, figure in report_figures(group)]

    old_layout = [p for pattern in ("pr_iou50.png", "pr_iou75.png", "ap_delta_*.png", "errors_*.png")
                  for p in results_dir.glob(pattern)]
    for stale in sorted([*report_dir.glob("*/*.png"), *old_layout]):
        if stale not in written:
            log.info("removing stale %s", stale)
            stale.unlink()
    for folder in sorted(p for p in report_dir.iterdir() if p.is_dir() and not any(p.iterdir())):
        folder.rmdir()

    write_table(results_dir, quiet=True)
    return written
