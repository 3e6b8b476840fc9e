"""`ssd-eval baseline --update`: rewrite (or create) baselines/<variant>.yaml from the current results, printing
each file's diff; a file's comments, metric selection, tolerances and drop rule are kept."""

from __future__ import annotations

import difflib
import sys
from dataclasses import replace
from pathlib import Path

from ssd_eval.config.schema import run_name
from ssd_eval.errors import UserError, print_error
from ssd_eval.inference.onnx_graph import QUANTIZATION_FORMATS
from ssd_eval.reports.baseline import (
    CI95_METRICS,
    SHA256_HEX,
    TOLERANCES,
    Baseline,
    MetricRule,
    baseline_files,
    load_baseline,
    parse_baseline,
    tolerance_summary,
)
from ssd_eval.reports.baseline_render import header_comments, inline_comments, render_baseline
from ssd_eval.results.compare import FLOAT_SLACK, drop_ratio_pct, parent_for_drop
from ssd_eval.results.index import ResultIndex, result_subset
from ssd_eval.utils import atomic_write_text, is_number

EXPECTED_DECIMALS = 6

DEFAULT_METRICS = ("mAP", "AP50", "AP75")
"""Metrics a newly created baseline gates."""


def _updated_baseline(path: Path, existing: Baseline | None, result: dict, index: ResultIndex,
                      abs_tol: float, max_drop_pct: float, keep_detections: bool = False,
                      tolerance: str | None = None) -> tuple[Baseline, list[str]]:
    """The baseline that accepts `result`, plus `warning: ...` / `note: ...` lines; keeps an existing file's
    choices, except the metrics' tolerance when `tolerance` is given (ci95 only on CI95_METRICS)."""
    variant = result["variant"]
    messages: list[str] = []
    if existing is not None:
        template = existing.metrics
        parent, drop_limit = existing.parent, existing.max_drop_pct
        if result["protocol"] != existing.protocol:
            messages.append(f"warning: {path}: protocol changes from {existing.protocol} to "
                            f"{result['protocol']}: {result['_source']} holds a {result['protocol']} result")
    else:
        template = tuple(MetricRule(name, 0.0, abs_tol, None) for name in DEFAULT_METRICS)
        parent, drop_limit = result.get("parent"), max_drop_pct
    rules = []
    for rule in template:
        if result.get(rule.name) is None:
            raise UserError(f"{result['_source']}: missing key {rule.name} (gated by {path})")
        new_tolerance = rule.tolerance
        if tolerance is not None:
            new_tolerance = tolerance if rule.name in CI95_METRICS else "fixed"
        rules.append(replace(rule, expected=round(float(result[rule.name]), EXPECTED_DECIMALS),
                             tolerance=new_tolerance))
    if parent:
        try:
            parent_result, note = parent_for_drop(index, result, parent)
        except UserError as exc:
            if existing is None:
                messages.append(f"warning: {path}: not adding a quantized drop rule: {exc}")
                parent = drop_limit = None
            else:
                messages.append(f"warning: {path}: the gate will not be able to check the drop rule: {exc}")
        else:
            messages += [note] if note else []
            drop = drop_ratio_pct(result["mAP"], parent_result["mAP"])
            if drop > drop_limit + FLOAT_SLACK:
                messages.append(f"warning: {path}: current drop vs {parent} is {drop:.2f}%, above "
                                f"max_drop_pct {drop_limit:.2f}; the gate will fail")
    provenance = result["provenance"]
    detections = existing.detections if existing else None
    if detections is None and keep_detections:
        detections = f"{variant}.detections.json"
    quantization = provenance["model"].get("quantization")
    baseline = Baseline(str(path), variant, result["protocol"], provenance["images"], tuple(rules), parent,
                        drop_limit, _sha256_or_none((provenance.get("annotations") or {}).get("sha256")),
                        _sha256_or_none(provenance["model"]["sha256"]), existing.int8_path if existing else None,
                        result_subset(result), detections,
                        quantization if quantization in QUANTIZATION_FORMATS else None,
                        existing.require_model_sha256 if existing else False)
    return baseline, messages


def _sha256_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and SHA256_HEX.fullmatch(value) else None


def _protocol_for_new_baseline(index: ResultIndex, variant: str, path: Path) -> tuple[str, str | None]:
    """The protocol a new baseline file of `variant` is written for, plus a note when there was a choice: its
    only protocol, else coco; several protocols without coco are an error."""
    protocols = index.protocols(variant)
    if len(protocols) <= 1:
        return (protocols or ["coco"])[0], None
    listed = ", ".join(protocols)
    if "coco" not in protocols:
        raise UserError(f"{variant} has results under protocols {listed}; write {path} by hand "
                        "with the protocol to gate (format: baselines/README.md), then update it")
    return "coco", (f"note: {variant} has results under protocols {listed}; {path} is created "
                    f"for coco ({index.results_dir / run_name(variant, 'coco')}/); to gate "
                    "another protocol, start from a baseline file with that protocol")


def _report_errors(errors: list[str]) -> int:
    """Print each input error as one line; the exit code 2."""
    for message in errors:
        print_error("baseline", message)
    return 2


def update_baselines(baselines_dir: Path, results_dir: Path, *, variants: list[str] | None = None,
                     abs_tol: float = 0.002, max_drop_pct: float = 1.0, subset: str | None = None,
                     keep_detections: bool = False, tolerance: str | None = None) -> int:
    """Rewrite (or create) the baselines of `variants` (None: every variant with a result on `subset` or a
    baseline file) from their results, found as the gate finds them; return 0, or 2 on input errors (then
    nothing is written). New files gate DEFAULT_METRICS with `abs_tol` (and `max_drop_pct` against a
    comparable parent) on `subset`; `keep_detections` keeps a copy of each result's detections.json beside
    its file; `tolerance` is written on every metric (None: each file's own)."""
    baselines_dir, results_dir = Path(baselines_dir), Path(results_dir)
    errors: list[str] = []
    for name, value in (("abs_tol", abs_tol), ("max_drop_pct", max_drop_pct)):
        if not is_number(value) or value < 0:
            errors.append(f"{name} must be a number >= 0, got {value!r}")
    if tolerance is not None and tolerance not in TOLERANCES:
        errors.append(f"tolerance must be one of {', '.join(TOLERANCES)}, got {tolerance!r}")
    if not results_dir.is_dir():
        errors.append(f"{results_dir}: results directory not found; run `make eval` first")
    if errors:
        return _report_errors(errors)

    try:
        existing_files = baseline_files(baselines_dir) if baselines_dir.is_dir() else {}
    except UserError as exc:
        return _report_errors([str(exc)])
    index = ResultIndex(results_dir)
    if variants is None:
        errors += [str(exc) for exc in index.errors()]
        names = list(dict.fromkeys(r["variant"] for r in index.results() if result_subset(r) == subset))
        names += [v for v in existing_files if v not in names]
    else:
        names = list(dict.fromkeys(variants))
    if errors:
        return _report_errors(errors)
    if not names:
        return _report_errors([f"{results_dir}: no */metrics.json found; run `make eval` first"])

    planned: list[tuple[Path, str, str, Baseline]] = []  # (path, old text, new text, as it loads back)
    copies: list[tuple[Path, Path]] = []  # (result's detections.json, the baseline's kept copy)
    for variant in names:
        path = existing_files.get(variant, baselines_dir / f"{variant}.yaml")
        try:
            existing = load_baseline(path) if path.exists() else None
            old_text = path.read_text(encoding="utf-8") if existing else ""
            protocol, protocol_note = ((existing.protocol, None) if existing
                                       else _protocol_for_new_baseline(index, variant, path))
            result, find_note = index.find(variant, protocol, f"variant {variant} for {path}",
                                           existing.subset if existing else subset)
            baseline, messages = _updated_baseline(path, existing, result, index, abs_tol, max_drop_pct,
                                                   keep_detections, tolerance)
            new_text = render_baseline(baseline, header_comments(old_text), inline_comments(old_text))
            written = parse_baseline(new_text, str(path))  # what we write must load back
        except UserError as exc:
            errors.append(str(exc))
            continue
        for message in filter(None, [protocol_note, find_note, *messages]):
            print(f"ssd-eval baseline: {message}", file=sys.stderr)
        planned.append((path, old_text, new_text, written))
        if baseline.detections_path is not None:
            copies.append((Path(result["_source"]).parent / "detections.json", baseline.detections_path))
    if errors:
        return _report_errors(errors)

    errors += [f"{source}: not found; {target} keeps the detections of the result it is updated from"
               for source, target in copies if not source.is_file()]
    if errors:
        return _report_errors(errors)

    baselines_dir.mkdir(parents=True, exist_ok=True)
    for source, target in copies:
        content = source.read_bytes()
        if not target.is_file() or target.read_bytes() != content:
            atomic_write_text(target, content.decode("utf-8"))
            print(f"baseline: copied {source} to {target}")
    for path, old_text, new_text, _ in planned:
        if old_text != new_text:
            diff = difflib.unified_diff(old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
                                        fromfile=str(path) if old_text else "/dev/null", tofile=str(path))
            print("".join(diff), end="")
            atomic_write_text(path, new_text)
    for path, _, _, written in planned:
        print(f"baseline: {path}: {tolerance_summary(written)}")
    changed = sum(old_text != new_text for _, old_text, new_text, _ in planned)
    print(f"baseline: {changed} file(s) changed, {len(planned) - changed} unchanged")
    return 0
