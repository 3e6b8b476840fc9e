"""A finished result as terminal text: the run line, the 12 stats, per-category AP with each category's
ground-truth boxes, the error breakdown (``show``), or all of it in one line (``eval --summary line``)."""

from __future__ import annotations

from typing import Any

from ssd_eval.config.protocols import protocol_base
from ssd_eval.results.index import image_set
from ssd_eval.results.result import EvalResult
from ssd_eval.scoring.breakdown import ERROR_TYPES
from ssd_eval.utils import is_number


def align_columns(headers: list[str], rows: list[list[str]]) -> str:
    """Plain text table: a header line, a dashed rule, then one line per row, columns aligned."""
    table = [headers] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# What each of the 12 stats is, as pycocotools' summarize() prints it: (AP/AR, IoU, area, maxDets).
STAT_MEANINGS = {
    "mAP": ("AP", "0.50:0.95", "all", "100"), "AP50": ("AP", "0.50", "all", "100"),
    "AP75": ("AP", "0.75", "all", "100"), "APs": ("AP", "0.50:0.95", "small", "100"),
    "APm": ("AP", "0.50:0.95", "medium", "100"), "APl": ("AP", "0.50:0.95", "large", "100"),
    "AR1": ("AR", "0.50:0.95", "all", "1"), "AR10": ("AR", "0.50:0.95", "all", "10"),
    "AR100": ("AR", "0.50:0.95", "all", "100"), "ARs": ("AR", "0.50:0.95", "small", "100"),
    "ARm": ("AR", "0.50:0.95", "medium", "100"), "ARl": ("AR", "0.50:0.95", "large", "100"),
}


def stat_text(value: float) -> str:
    """A stat to 4 decimals; pycocotools' -1 ("no ground truth" for that area, category or set) as n/a."""
    return "n/a" if value < 0 else f"{value:.4f}"


def render_result(result: EvalResult, *, top: int = 5, all_categories: bool = False,
                  error_breakdown: bool = False) -> str:
    """The terminal summary of one result (module docstring); per-category AP shows the ``top`` best and
    worst unless ``all_categories``."""
    provenance = result.provenance if isinstance(result.provenance, dict) else {}
    model = provenance.get("model") or {}
    speed = provenance.get("images_per_s")
    speed_text = "images/s -" if speed is None else f"{speed:.2f} images/s"
    if speed is not None and provenance.get("speed_from_cache"):
        speed_text += " (from the cache: measured when these images were inferred)"
    lines = [f"{result.variant}  protocol {result.protocol}  {provenance.get('images', '?')} images  "
             f"{provenance.get('detections', '?')} detections  {speed_text}"]
    named = provenance.get("name")
    if isinstance(named, dict) and isinstance(named.get("overridden"), dict):
        overrides = ", ".join(f"{key} {value}" for key, value in named["overridden"].items())
        lines.append(f"named by {named.get('from')} from {named.get('config_file')}"
                     + (f" over {overrides}" if overrides else ""))
    if provenance.get("partial"):
        lines.append(f"partial run ({', '.join(provenance['partial'])}): for testing, not the variant's result")
    stages = stages_text(provenance.get("stages"))
    if stages:
        lines.append(stages)
    lines += [f"warning: {warning}" for warning in result.scores.warnings]
    lines.append(f"model {model.get('path', '?')} (sha256 {str(model.get('sha256', '?'))[:12]})  "
                 f"backend {provenance.get('metrics_backend', '?')}  {_harness(provenance)}"
                 f"  date {provenance.get('date', '?')}")
    intervals = result.intervals if isinstance(result.intervals, dict) else {}
    rows = []
    for name, value in result.scores.named().items():
        interval = intervals.get(name) or {}
        bounds = (f"[{interval['low']:.4f}, {interval['high']:.4f}]"
                  if is_number(interval.get("low")) and is_number(interval.get("high")) else "")
        rows.append([name, stat_text(value), *STAT_MEANINGS[name], bounds if value >= 0 else ""])
    headers = ["stat", "value", "", "IoU", "area", "maxDets"]
    if any(row[-1] for row in rows):
        level = next((i.get("level") for i in intervals.values() if isinstance(i, dict) and i.get("level")), 0.95)
        headers.append(f"{100 * level:g} % interval")
    else:
        rows = [row[:-1] for row in rows]
    lines += ["", align_columns(headers, rows)]
    full_set = (result.full_set_intervals or {}).get("mAP")
    if isinstance(full_set, dict) and all(is_number(full_set.get(k)) for k in ("estimate", "low", "high")):
        lines.append(f"full set ({full_set.get('full_set_images', '?')} images), estimated from this subset: mAP "
                     f"{full_set['estimate']:.4f} [{full_set['low']:.4f}, {full_set['high']:.4f}] "
                     f"({100 * full_set.get('level', 0.95):g} %; the subset's upward bias extrapolated)")
    if protocol_base(result.protocol) == "inc":
        lines.append("APs/APm/APl: INC computes areas from normalized boxes, so its own are not comparable with these")
    lines += ["", *_category_table(result.scores.per_category_ap, result.scores.per_category_gt, top=top,
                                   all_categories=all_categories)]
    if error_breakdown and isinstance(result.error_breakdown, dict):
        lines += ["", *render_error_breakdown(result.error_breakdown)]
    return "\n".join(lines)


def render_error_breakdown(breakdown: dict[str, Any]) -> list[str]:
    """metrics.json's ``error_breakdown`` as lines: each error type's dAP50 and count, then the two oracles."""
    def number(part: str, name: str, digits: int | None = 4) -> str:
        values = breakdown.get(part)
        value = values.get(name) if isinstance(values, dict) else None
        if not is_number(value):
            return "?"
        return f"{value:.{digits}f}" if digits else str(int(value))

    ap50 = breakdown.get("ap50")
    head = f"error breakdown (TIDE, IoU {breakdown.get('iou', '?')}"
    head += f"; AP50 {ap50:.4f})" if is_number(ap50) else ")"
    rows = [[name, number("dAP", name), number("counts", name, None)] for name, _ in ERROR_TYPES]
    lines = [head + ": AP50 recovered if each error were fixed", align_columns(["error", "dAP50", "count"], rows)]
    return lines + [f"dAP50 with no false positive at all {number('oracles', 'all_false_positives')}, with no "
                    f"missed box {number('oracles', 'all_false_negatives')}"]


def render_result_line(result: EvalResult) -> str:
    """One line for a finished run (``eval --summary line``, ``make ci-gate``)."""
    provenance = result.provenance if isinstance(result.provenance, dict) else {}
    interval = (result.intervals or {}).get("mAP")
    text = f"{result.variant}  {result.protocol}  {image_set({'provenance': provenance})}  " \
           f"{provenance.get('images', '?')} images  mAP {stat_text(result.map)}"
    if isinstance(interval, dict) and is_number(interval.get("low")) and is_number(interval.get("high")):
        text += f" [{interval['low']:.4f}, {interval['high']:.4f}]"
    speed = provenance.get("images_per_s")
    text += f"  {speed:.2f} images/s" if is_number(speed) else ""
    warnings = len(result.scores.warnings)
    text += f"  {warnings} warning{'s' if warnings > 1 else ''} (ssd-eval show)" if warnings else ""
    return text + (f"  -> {result.files['metrics']}" if result.files.get("metrics") else "")


STAGE_LABELS = (("decode_preprocess", "decode+preprocess"), ("inference", "inference"),
                ("postprocess", "postprocess"), ("scoring", "scoring"))


def stages_text(stages: Any) -> str | None:
    """provenance.stages in one line (CPU / wall ms per image, session.run's idle share), or None without it."""
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


def _harness(provenance: dict[str, Any]) -> str:
    """``harness <commit>`` (12 hex digits, plus "+dirty"), or ``harness: not a git checkout``."""
    commit = provenance.get("harness_commit")
    if not isinstance(commit, str) or not commit:
        return "harness: not a git checkout"
    head, plus, suffix = commit.partition("+")
    return "harness " + head[:12] + plus + suffix


def _category_table(per_category: dict[str, float], ground_truth: dict[str, int], *, top: int,
                    all_categories: bool) -> list[str]:
    """Per-category AP lines, best first, with ground-truth boxes where known; AP -1 (no ground truth) apart."""
    scored = sorted(((name, ap) for name, ap in per_category.items() if ap >= 0), key=lambda item: (-item[1], item[0]))
    absent = sorted(name for name, ap in per_category.items() if ap < 0)
    ranked = [[str(rank), name, f"{ap:.4f}"] for rank, (name, ap) in enumerate(scored, start=1)]
    headers = ["rank", "category", "AP"]
    if ground_truth:
        headers.append("gt boxes")
        ranked = [row + [str(ground_truth.get(row[1], "?"))] for row in ranked]
    if all_categories or len(ranked) <= 2 * top:
        title = f"per-category AP, {len(ranked)} categories, best first:"
        shown = ranked
    else:
        title = (f"per-category AP, the {top} best and {top} worst of {len(ranked)} categories "
                 "(ssd-eval show METRICS.json --all: every one):")
        shown = ranked[:top] + [["...", f"({len(ranked) - 2 * top} more)"] + [""] * (len(headers) - 2)] + ranked[-top:]
    lines = [title, align_columns(headers, shown)] if shown else [title, "(none)"]
    if absent:
        names = absent if all_categories or len(absent) <= 2 * top else absent[:top] + ["..."]
        lines.append(f"no ground truth in these images: {len(absent)} categories ({', '.join(names)})")
    return lines
