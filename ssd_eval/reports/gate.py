"""mAP regression gate: each variant's metrics.json against baselines/<variant>.yaml (format and rule:
baselines/README.md). A gate is never looser than its written tolerance; `tolerance: ci95` adds a
non-inferiority test on a paired bootstrap interval. Exit codes: VERDICTS."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path

from ssd_eval.config.load import load_config
from ssd_eval.errors import UserError, print_error
from ssd_eval.reports.baseline import Baseline, MetricRule, baseline_files, load_baseline
from ssd_eval.results.compare import FLOAT_SLACK, comparable_parent, drop_ratio_pct, parent_for_drop
from ssd_eval.results.index import ResultIndex, describe_image_set, result_subset
from ssd_eval.results.paired import (
    NoPairing,
    ResultMatches,
    bootstrap_off_reason,
    comparison_settings,
    format_interval,
    paired_drop,
    result_interval,
)
from ssd_eval.scoring.bootstrap import Interval
from ssd_eval.utils import atomic_write_text

JUNIT_SUITE = "ssd-eval-gate"


@dataclass(frozen=True)
class Check:
    """The outcome of one gate check: status is PASS, FAIL or ERROR."""

    variant: str
    name: str
    status: str
    message: str
    notes: tuple[str, ...] = ()


def _verdict(variant: str, name: str, *, failed: bool, text: str, notes: tuple[str, ...] = ()) -> Check:
    """A FAIL (``failed``) or PASS check whose line reads ``<status> <variant> <name>: <text>``."""
    status = "FAIL" if failed else "PASS"
    return Check(variant, name, status, f"{status} {variant} {name}: {text}", notes)


def _fmt(value: float) -> str:
    """4 decimals, or 6 when 4 would hide a difference."""
    return f"{value:.4f}" if abs(round(value, 4) - value) < 1e-12 else f"{value:.6f}"


def check_metric(variant: str, rule: MetricRule, got: float, interval: str = "") -> Check:
    """The written tolerance: FAIL when the drop ``expected - got`` exceeds ``rule.allowed``; ``interval``
    (the run's own interval, or why ci95 fell back) ends the line."""
    regressed = got < rule.expected - rule.allowed - FLOAT_SLACK
    text = (f"expected {_fmt(rule.expected)}, got {_fmt(got)}, allowed {_fmt(rule.allowed)} "
            + (f"(regressed by {_fmt(rule.expected - got)}, beyond the margin)" if regressed else "(within the margin)")
            + (f"; {interval}" if interval else ""))
    return _verdict(variant, rule.name, failed=regressed, text=text, notes=_improved_note(variant, rule, got))


def _improved_note(variant: str, rule: MetricRule, got: float) -> tuple[str, ...]:
    if got > rule.expected + rule.allowed + FLOAT_SLACK:
        return (f"note: {variant} {rule.name} improved beyond tolerance "
                f"({_fmt(got)} > {_fmt(rule.expected)} + {_fmt(rule.allowed)}); consider "
                f"`ssd-eval baseline --update --variant {variant}`",)
    return ()


def images_needed(images: int, estimate: float, low: float, allowed: float) -> int | None:
    """About how many images would lift a paired interval's lower end to ``-allowed`` (the width scaling as
    1/sqrt(n)), rounded up to two significant digits; None when the estimate is at the margin or beyond it."""
    room = estimate + allowed
    if room <= FLOAT_SLACK:
        return None
    needed = images * ((estimate - low) / room) ** 2
    scale = 10 ** max(len(str(math.ceil(needed))) - 2, 0)
    return int(math.ceil(needed / scale) * scale)


def check_metric_ci95(variant: str, rule: MetricRule, got: float, difference: Interval, expected_difference: float,
                      against: str, images: int) -> Check:
    """``tolerance: ci95``: the written tolerance, then PASS only when the paired difference's interval, less
    ``expected_difference``, has its lower end within ``-allowed`` (else FAIL, inconclusive or regressed)."""
    allowed = rule.allowed
    point, low = difference.estimate - expected_difference, difference.low - expected_difference
    fixed_drop = rule.expected - got
    text = (f"expected {_fmt(rule.expected)}, got {_fmt(got)}, allowed {_fmt(allowed)}; ci95 vs {against}: "
            f"difference {difference.estimate:+.4f} (expected {expected_difference:+.4f}), "
            f"{format_interval(difference, signed=True)}, {difference.replicates} replicates, seed {difference.seed}")
    if fixed_drop > allowed + FLOAT_SLACK or -point > allowed + FLOAT_SLACK:
        failed = True
        text += (f" (regressed by {_fmt(max(fixed_drop, -point))}, beyond the margin {_fmt(allowed)}, "
                 "whatever the interval says)")
    elif low < -allowed - FLOAT_SLACK:
        failed = True
        needed = images_needed(images, point, low, allowed)
        settle = (f"about {needed} images instead of {images} would narrow it enough, the width shrinking about as "
                  "1/sqrt(images)" if needed is not None else "the point drop is at the margin itself: no number of "
                  "images would settle it")
        text += (f" (inconclusive: the drop {max(-point, 0.0):.4f} is within the margin {_fmt(allowed)} but the "
                 f"interval's lower end {low:+.4f} is below -{_fmt(allowed)}; {settle})")
    else:
        failed = False
        text += f" (non-inferior: the interval's lower end {low:+.4f} is within the margin -{_fmt(allowed)})"
    notes = _improved_note(variant, rule, got)
    if difference.low > expected_difference + FLOAT_SLACK:
        why = " (or the parent regressed)" if against.startswith("parent") else ""
        notes += (f"note: {variant} {rule.name} lies above the baseline beyond the interval vs {against}{why}; "
                  f"if that is the new normal, `ssd-eval baseline --update --variant {variant}`",)
    return _verdict(variant, rule.name, failed=failed, text=text, notes=notes)


def check_drop(variant: str, parent: str, max_drop_pct: float,
               map_value: float, parent_map: float, interval: str = "", notes: tuple[str, ...] = ()) -> Check:
    """PASS when the drop ratio vs the parent is at most max_drop_pct; ``interval`` ends the line."""
    drop = drop_ratio_pct(map_value, parent_map)
    broken = drop > max_drop_pct + FLOAT_SLACK
    text = (f"expected <= {max_drop_pct:.2f}%, got {drop:.2f}% (mAP {_fmt(map_value)} vs {_fmt(parent_map)}), "
            f"{'above' if broken else 'within'} the limit" + (f"; {interval}" if interval else ""))
    return _verdict(variant, f"drop_pct vs {parent}", failed=broken, text=text, notes=notes)


def own_interval_text(result: dict, metric: str) -> str:
    """The run's own bootstrap interval of ``metric`` from its metrics.json, as the gate prints it."""
    interval = result_interval(result, metric)
    if interval is None:
        return f"no interval ({bootstrap_off_reason(result)})"
    return f"{format_interval(interval)} of this run over its {interval.replicates} replicates"


def _ci95_check(baseline: Baseline, rule: MetricRule, result: dict, parent_result: dict | None,
                parent_problem: str | None, parent_baseline: Baseline | None, matcher: ResultMatches) -> Check:
    """A ``tolerance: ci95`` metric: paired against the baseline's kept detections, else against the parent's
    result (expected gap from the two baselines), else abs/rel tolerance with the reason on the line."""
    variant, got = baseline.variant, result[rule.name]
    images = result["provenance"]["images"]
    replicates, seed = comparison_settings(result)
    try:
        if baseline.detections_path is not None:
            expected = {r.name: r.expected for r in baseline.metrics}
            reference = matcher.detections_matches(baseline.detections_path, result, expected)
            difference = matcher.paired((result["_source"], str(baseline.detections_path)), matcher.matches(result),
                                        reference, replicates=replicates, seed=seed)
            return check_metric_ci95(variant, rule, got, difference[rule.name], 0.0,
                                     f"baseline detections {baseline.detections_path}", images)
        if baseline.parent is None:
            raise NoPairing(f"{baseline.source} keeps no detections and {variant} has no parent")
        if parent_result is None:
            raise NoPairing(parent_problem or f"no result of the parent {baseline.parent}")
        parent_rules = {r.name: r for r in parent_baseline.metrics} if parent_baseline is not None else {}
        if rule.name not in parent_rules:
            raise NoPairing(f"no baseline of the parent {baseline.parent} with {rule.name} beside {baseline.source}")
        difference = matcher.paired((result["_source"], parent_result["_source"]), matcher.matches(result),
                                    matcher.matches(parent_result), replicates=replicates, seed=seed)
        return check_metric_ci95(variant, rule, got, difference[rule.name],
                                 rule.expected - parent_rules[rule.name].expected,
                                 f"parent {baseline.parent} ({parent_result['_source']})", images)
    except NoPairing as exc:
        return check_metric(variant, rule, got, f"ci95 not possible ({exc}): abs/rel tolerance used; "
                                                + own_interval_text(result, rule.name))
    except UserError as exc:
        return Check(variant, rule.name, "ERROR", f"{variant} {rule.name} (tolerance ci95): {exc}")


def _drop_interval_text(baseline: Baseline, result: dict, parent_result: dict, matcher: ResultMatches) -> str:
    """The drop ratio's paired interval (when a metric uses ci95 or both runs have intervals), or why none."""
    wanted = any(r.tolerance == "ci95" for r in baseline.metrics) or (
        result_interval(result, "mAP") is not None and result_interval(parent_result, "mAP") is not None)
    if not wanted:
        return "no interval (the runs have no bootstrap intervals and no metric uses ci95)"
    replicates, seed = comparison_settings(result)
    try:
        drop = paired_drop(matcher.matches(result), matcher.matches(parent_result), replicates=replicates, seed=seed)
    except NoPairing as exc:
        return f"no interval ({exc})"
    return f"paired {format_interval(drop, digits=2, unit='%')}"


def check_model(baseline: Baseline, result: dict, parent_result: dict | None,
                configs_dir: Path | None, require_model_sha256: bool = False) -> Check:
    """Which model was gated: FAIL when not of the variant's kind (quantization, the parent's model) or, where
    required, not the one pinned by `configs_dir`/<variant>.yaml or the baseline; another model passes with a note."""
    variant = baseline.variant
    model = result["provenance"]["model"]
    got = model["sha256"]
    gated = f"gated {got[:12]} ({model.get('path')})"
    quantization = model.get("quantization")
    if baseline.quantization is not None and quantization != baseline.quantization:
        return _verdict(variant, "model", failed=True,
                        text=f"{gated} has quantization {quantization or 'unrecorded'} but {baseline.source} "
                        f"quantization {baseline.quantization}: not a model of {variant}'s kind")
    if parent_result is not None and parent_result["provenance"]["model"]["sha256"] == got:
        return _verdict(variant, "model", failed=True, text=f"{gated} is the model of its parent {baseline.parent} "
                        f"({parent_result['_source']})")
    pins: list[tuple[str, str]] = []  # (sha256, where it is pinned)
    unpinned: list[str] = []
    if configs_dir is not None:
        config_path = Path(configs_dir) / f"{variant}.yaml"
        pinned = load_config(config_path).model.sha256 if config_path.is_file() else None
        if pinned:
            pins.append((pinned.lower(), f"{config_path} model.sha256"))
        else:
            unpinned.append(f"{config_path} pins no model.sha256" if config_path.is_file() else f"no {config_path}")
    if baseline.model_sha256:
        pins.append((baseline.model_sha256, f"{baseline.source} model_sha256"))
    else:
        unpinned.append(f"{baseline.source} has no model_sha256")
    changed = [(pinned, where) for pinned, where in pins if pinned != got]
    if changed and (require_model_sha256 or baseline.require_model_sha256):
        pinned, where = changed[0]
        why = f"{baseline.source} require_model_sha256" if baseline.require_model_sha256 else "--require-model-sha256"
        return _verdict(variant, "model", failed=True,
                        text=f"{gated}, expected {pinned[:12]} ({where}; {why}): this result is not of {variant}'s "
                        "pinned model")
    kind = "" if quantization is None and baseline.quantization is None else \
        f"quantization {quantization}" + (" as the baseline's, " if baseline.quantization else ", ")
    metrics = ", ".join(r.name for r in baseline.metrics)
    notes = tuple(f"note: {variant} model changed since "
                  f"{'the baseline' if where.startswith(baseline.source) else where}"
                  f": {pinned[:12]}… -> {got[:12]}…; gated on {metrics}" for pinned, where in changed)
    if changed:
        status = "a new model of the variant (see the note)"
    elif pins:
        status = f"pinned by {', '.join(where for _, where in pins)}"
    else:
        status = f"not pinned ({'; '.join(unpinned)})"
    return _verdict(variant, "model", failed=False, text=f"{gated}, {kind}{status}", notes=notes)


def int8_path_note(baseline: Baseline, result: dict) -> str | None:
    """A note when a quantized result ran on another CPU int8 kernel class than the baseline's numbers
    (``int8_path``): onnxruntime's int8 kernels differ between classes, so a gap may be the CPU's."""
    provenance = result.get("provenance", {})
    quantization = (provenance.get("model") or {}).get("quantization")
    capability = (provenance.get("int8") or {}).get("cpu") or {}
    here = capability.get("kernel_class")
    if not baseline.int8_path or quantization in (None, "none") or here == baseline.int8_path:
        return None
    exact = (provenance.get("runtime") or {}).get("session_config", {}).get("session.x64quantprecision") == "1"
    how = ("u8s8 products were computed exactly (session.x64quantprecision=1), other int8 kernels may still "
           "round differently" if exact else "its u8s8 kernels may saturate and other int8 kernels round "
           "differently")
    return (f"note: {baseline.variant} ran on a {here or 'unknown'} CPU ({capability.get('cpu', '?')}) but "
            f"{baseline.source} holds numbers measured on {baseline.int8_path}: {how}; see "
            "docs/QUANTIZATION.md")


def check_variant(baseline: Baseline, results: Path | ResultIndex,
                  configs_dir: Path | None = None, parent_baseline: Baseline | None = None,
                  matcher: ResultMatches | None = None, require_model_sha256: bool = False) -> list[Check]:
    """All checks of one baseline against its result (`results`: a results directory or its ResultIndex);
    input problems become ERROR checks, and notes on the result as a whole ride on the first check."""
    index = results if isinstance(results, ResultIndex) else ResultIndex(results)
    matcher = matcher or ResultMatches()
    variant = baseline.variant
    notes: list[str] = []
    try:
        result, note = index.find(variant, baseline.protocol, f"baselined variant {variant}", baseline.subset)
        notes += [note] if note else []
        if result["protocol"] != baseline.protocol:
            raise UserError(f"{result['_source']}: protocol {result['protocol']!r} but "
                            f"{baseline.source} applies to protocol {baseline.protocol!r}")
        subset = result_subset(result)
        if subset != baseline.subset:
            raise UserError(f"{result['_source']}: image set differs from {baseline.source}'s: "
                            f"{describe_image_set(subset)} vs {describe_image_set(baseline.subset)}")
        images = result["provenance"]["images"]
        if images != baseline.images:
            raise UserError(f"{result['_source']}: {images} images but {baseline.source} "
                            f"applies to {baseline.images} images")
        annotations = (result["provenance"].get("annotations") or {}).get("sha256")
        if baseline.annotations_sha256 and annotations != baseline.annotations_sha256:
            raise UserError(f"{result['_source']}: annotation file sha256 {str(annotations)[:12]} but "
                            f"{baseline.source} applies to {baseline.annotations_sha256[:12]}")
    except UserError as exc:
        return [Check(variant, "results", "ERROR", str(exc), tuple(notes))]
    checks = []
    parent_result = parent_problem = None  # for ci95: the parent's comparable result
    if baseline.parent:
        try:
            parent_result, _ = comparable_parent(index, result, baseline.parent)
        except UserError as exc:
            parent_problem = str(exc)
    for rule in baseline.metrics:
        got = result.get(rule.name)
        if got is None:
            checks.append(Check(variant, rule.name, "ERROR", f"{result['_source']}: missing key {rule.name}"))
        elif rule.tolerance == "ci95":
            checks.append(_ci95_check(baseline, rule, result, parent_result, parent_problem, parent_baseline,
                                      matcher))
        else:
            checks.append(check_metric(variant, rule, got, own_interval_text(result, rule.name)))
    if baseline.parent:
        try:
            parent_result, parent_note = parent_for_drop(index, result, baseline.parent)
            interval = _drop_interval_text(baseline, result, parent_result, matcher)
        except UserError as exc:
            checks.append(Check(variant, f"drop_pct vs {baseline.parent}", "ERROR", str(exc)))
        else:
            checks.append(check_drop(variant, baseline.parent, baseline.max_drop_pct, result["mAP"],
                                     parent_result["mAP"], interval, (parent_note,) if parent_note else ()))
    try:
        checks.insert(0, check_model(baseline, result, parent_result, configs_dir, require_model_sha256))
    except UserError as exc:
        checks.insert(0, Check(variant, "model", "ERROR", str(exc)))
    cpu_note = int8_path_note(baseline, result)
    notes += [cpu_note] if cpu_note else []
    if notes:
        checks[0] = replace(checks[0], notes=tuple(notes) + checks[0].notes)
    return checks


def render_junit(checks: list[Check]) -> str:
    """JUnit XML: one testsuite `ssd-eval-gate`, one testcase per check."""
    suite = ET.Element("testsuite", name=JUNIT_SUITE, tests=str(len(checks)),
                       failures=str(sum(c.status == "FAIL" for c in checks)),
                       errors=str(sum(c.status == "ERROR" for c in checks)), skipped="0")
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=f"{JUNIT_SUITE}.{check.variant}", name=check.name, time="0")
        if check.status == "FAIL":
            ET.SubElement(case, "failure", message=check.message, type="regression").text = check.message
        elif check.status == "ERROR":
            ET.SubElement(case, "error", message=check.message, type="input").text = check.message
        if check.notes:
            ET.SubElement(case, "system-out").text = "\n".join(check.notes)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


VERDICTS = {0: "PASS (exit 0): every check holds", 1: "FAIL (exit 1): a check failed",
            2: "ERROR (exit 2): the gate could not run as asked (input error)"}
"""The last line of a gate run, per exit code."""


def _gate_checks(baselines_dir: Path, results_dir: Path, variants: list[str] | None, configs_dir: Path | None,
                 strict: bool, require_model_sha256: bool) -> tuple[list[Check], list[str]]:
    """run_gate's checks, and the variants with results but no baseline (only when `variants` is None)."""
    if not baselines_dir.is_dir():
        return [Check("gate", "baselines", "ERROR", f"{baselines_dir}: baselines directory not found")], []
    if not results_dir.is_dir():
        return [Check("gate", "results", "ERROR",
                      f"{results_dir}: results directory not found; run `make eval` first")], []
    try:
        files = baseline_files(baselines_dir)
    except UserError as exc:
        return [Check("gate", "baselines", "ERROR", str(exc))], []
    if not files:
        return [Check("gate", "baselines", "ERROR", f"{baselines_dir}: no baselines (*.yaml) found; "
                      "create them with `ssd-eval baseline --update`")], []
    selected = list(files) if variants is None else list(dict.fromkeys(variants))
    if not selected:
        return [Check("gate", "baselines", "ERROR", "no variants selected")], []
    index = ResultIndex(results_dir)
    matcher = ResultMatches()
    checks: list[Check] = []
    for variant in selected:
        if variant not in files:
            checks.append(Check(variant, "baseline", "ERROR", f"{baselines_dir}: no baseline for variant "
                                f"{variant!r} (have: {', '.join(files)})"))
            continue
        try:
            baseline = load_baseline(files[variant])
        except UserError as exc:
            checks.append(Check(variant, "baseline", "ERROR", str(exc)))
            continue
        parent_baseline = None
        with suppress(UserError):  # reported by the parent's own checks when it is gated; ci95 falls back
            parent_baseline = load_baseline(files[baseline.parent]) if baseline.parent in files else None
        checks += check_variant(baseline, index, configs_dir, parent_baseline, matcher, require_model_sha256)
    if variants is not None:
        return checks, []
    unlisted = list(dict.fromkeys(r["variant"] for r in index.results() if r["variant"] not in files))
    if strict:
        checks += [_verdict(variant, "baseline", failed=True, text=f"it has results in {results_dir} but no baseline "
                            f"in {baselines_dir} (--strict)") for variant in unlisted]
    return checks, unlisted


def run_gate(baselines_dir: Path, results_dir: Path, *, variants: list[str] | None = None,
             junit: Path | None = None, configs_dir: Path | None = None, strict: bool = False,
             require_model_sha256: bool = False) -> int:
    """Print one line per check, a summary and the verdict (VERDICTS); return the exit code. With `strict` a
    variant with results but no baseline fails; `junit` also gets the checks as JUnit XML."""
    checks, unlisted = _gate_checks(Path(baselines_dir), Path(results_dir), variants, configs_dir, strict,
                                    require_model_sha256)
    for check in checks:
        if check.status == "ERROR":
            print_error("gate", check.message)
        else:
            print(check.message, flush=True)
        for note in check.notes:
            print(note, flush=True)
    counts = {s: sum(c.status == s for c in checks) for s in ("PASS", "FAIL", "ERROR")}
    summary = f"gate: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['ERROR']} errors"
    if unlisted:
        summary += f"; not gated: {', '.join(unlisted)}: no baseline" + ("" if strict else " (--strict: fail)")
    print(summary, flush=True)
    code = 2 if counts["ERROR"] or not checks else 1 if counts["FAIL"] else 0
    if junit is not None:
        try:
            atomic_write_text(Path(junit), render_junit(checks))
        except OSError as exc:
            print_error("gate", f"{junit}: cannot write the JUnit report: {exc.strerror or exc}")
            code = 2
    print(f"gate verdict: {VERDICTS[code]}", flush=True)
    return code
