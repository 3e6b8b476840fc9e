"""mAP regression gate: compare results/<variant>/metrics.json with baselines/<variant>.yaml.

Exit codes: 0 every check holds, 1 a metric regressed or a quantized drop rule
broke, 2 the gate could not run as asked (input or usage error). The baseline
format is documented in baselines/README.md.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ssd_eval.errors import UserError
from ssd_eval.results import atomic_write_text
from ssd_eval.table import METRIC_NAMES, accuracy_mismatch, drop_ratio_pct, read_metrics_file

log = logging.getLogger(__name__)

FLOAT_SLACK = 1e-6
"""Comparisons forgive this much: `baseline --update` writes values rounded to 6 decimals."""

EXPECTED_DECIMALS = 6

DEFAULT_METRICS = ("mAP", "AP50", "AP75")
"""Metrics a newly created baseline gates."""

JUNIT_SUITE = "ssd-eval-gate"


# --------------------------------------------------------------------------- baseline model

@dataclass(frozen=True)
class MetricRule:
    """One gated metric: fails when got < expected - allowed."""

    name: str
    expected: float
    abs_tol: float | None
    rel_tol: float | None

    @property
    def allowed(self) -> float:
        """max(abs_tol, rel_tol * |expected|), a missing tolerance counting as 0."""
        return max(self.abs_tol or 0.0, (self.rel_tol or 0.0) * abs(self.expected))


@dataclass(frozen=True)
class Baseline:
    """A parsed baselines/<variant>.yaml."""

    source: str
    variant: str
    protocol: str
    images: int
    metrics: tuple[MetricRule, ...]
    parent: str | None = None
    max_drop_pct: float | None = None


_TOP_KEYS = ("variant", "protocol", "images", "metrics", "quantized")
_METRIC_KEYS = ("expected", "abs_tol", "rel_tol")
_QUANTIZED_KEYS = ("parent", "max_drop_pct")


def _number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def parse_baseline(text: str, source: str) -> Baseline:
    """Parse and check baseline YAML text; UserError names `source` and the key at fault."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{source}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with keys {', '.join(_TOP_KEYS)}")
    for key in data:
        if key not in _TOP_KEYS:
            raise UserError(f"{source}: unknown key {key!r} (allowed: {', '.join(_TOP_KEYS)})")
    for key in ("variant", "protocol"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise UserError(f"{source}: {key}: expected a non-empty string, got {data.get(key)!r}")
    images = data.get("images")
    if not isinstance(images, int) or isinstance(images, bool) or images <= 0:
        raise UserError(f"{source}: images: expected a positive integer, got {images!r}")
    stem = Path(source).stem
    if data["variant"] != stem:
        raise UserError(f"{source}: variant: {data['variant']!r} does not match the file name "
                        f"(expected {stem!r})")

    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise UserError(f"{source}: metrics: expected a non-empty mapping of metric names")
    rules = []
    for name, spec in metrics.items():
        key = f"metrics.{name}"
        if name not in METRIC_NAMES:
            raise UserError(f"{source}: {key}: unknown metric (allowed: {', '.join(METRIC_NAMES)})")
        if not isinstance(spec, dict):
            raise UserError(f"{source}: {key}: expected a mapping with expected, abs_tol, rel_tol")
        for sub in spec:
            if sub not in _METRIC_KEYS:
                raise UserError(f"{source}: {key}.{sub}: unknown key "
                                f"(allowed: {', '.join(_METRIC_KEYS)})")
        if not _number(spec.get("expected")):
            raise UserError(f"{source}: {key}.expected: expected a number, "
                            f"got {spec.get('expected')!r}")
        for tol in ("abs_tol", "rel_tol"):
            value = spec.get(tol)
            if value is not None and (not _number(value) or value < 0):
                raise UserError(f"{source}: {key}.{tol}: expected a number >= 0 or null, "
                                f"got {value!r}")
        if spec.get("abs_tol") is None and spec.get("rel_tol") is None:
            raise UserError(f"{source}: {key}: give abs_tol or rel_tol (or both)")
        rules.append(MetricRule(name, float(spec["expected"]),
                                None if spec.get("abs_tol") is None else float(spec["abs_tol"]),
                                None if spec.get("rel_tol") is None else float(spec["rel_tol"])))

    parent = max_drop = None
    quantized = data.get("quantized")
    if quantized is not None:
        if not isinstance(quantized, dict):
            raise UserError(f"{source}: quantized: expected a mapping with parent, max_drop_pct")
        for sub in quantized:
            if sub not in _QUANTIZED_KEYS:
                raise UserError(f"{source}: quantized.{sub}: unknown key "
                                f"(allowed: {', '.join(_QUANTIZED_KEYS)})")
        parent = quantized.get("parent")
        if not isinstance(parent, str) or not parent:
            raise UserError(f"{source}: quantized.parent: expected a variant name, got {parent!r}")
        max_drop = quantized.get("max_drop_pct")
        if not _number(max_drop) or max_drop < 0:
            raise UserError(f"{source}: quantized.max_drop_pct: expected a number >= 0, "
                            f"got {max_drop!r}")
        max_drop = float(max_drop)
    return Baseline(source, data["variant"], data["protocol"], images, tuple(rules),
                    parent, max_drop)


def load_baseline(path: Path) -> Baseline:
    """Read and check one baseline file; UserError names the file and key at fault."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    return parse_baseline(text, str(path))


def _baseline_files(baselines_dir: Path) -> dict[str, Path]:
    files = sorted(list(baselines_dir.glob("*.yaml")) + list(baselines_dir.glob("*.yml")),
                   key=lambda p: (p.stem, p.suffix))
    return {p.stem: p for p in files if p.is_file()}


# --------------------------------------------------------------------------- YAML output

_PLAIN_SCALAR = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")


def _yaml_string(value: str) -> str:
    if _PLAIN_SCALAR.fullmatch(value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


def _yaml_float(value: float | None) -> str:
    if value is None:
        return "null"
    text = repr(float(value))
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:  # PyYAML (YAML 1.1) reads 1e-05 as a string
        text = f"{mantissa}.0e{exponent}"
    return text


def render_baseline(baseline: Baseline) -> str:
    """The YAML text of a baseline, in the documented layout."""
    lines = [
        f"# mAP regression baseline for {baseline.variant}; format: baselines/README.md.",
        "# Refresh with `ssd-eval baseline --update` (keeps tolerances and metric selection).",
        f"variant: {_yaml_string(baseline.variant)}",
        f"protocol: {_yaml_string(baseline.protocol)}   # applies only to results with this protocol",
        f"images: {baseline.images}   # ...and this image count",
        "metrics:   # allowed = max(abs_tol, rel_tol * expected); fails when got < expected - allowed",
    ]
    for rule in baseline.metrics:
        lines.append(f"  {rule.name}: {{expected: {_yaml_float(rule.expected)}, "
                     f"abs_tol: {_yaml_float(rule.abs_tol)}, rel_tol: {_yaml_float(rule.rel_tol)}}}")
    if baseline.parent:
        lines += [
            "quantized:",
            f"  parent: {_yaml_string(baseline.parent)}",
            f"  max_drop_pct: {_yaml_float(baseline.max_drop_pct)}"
            "   # (parent mAP - mAP) / parent mAP x 100, same protocol and images",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- checking

@dataclass(frozen=True)
class Check:
    """The outcome of one gate check: status is PASS, FAIL or ERROR."""

    variant: str
    name: str
    status: str
    message: str
    notes: tuple[str, ...] = field(default=())


def _fmt(value: float) -> str:
    """4 decimals, or 6 when 4 would hide a difference."""
    return f"{value:.4f}" if abs(round(value, 4) - value) < 1e-12 else f"{value:.6f}"


def _read_variant_result(results_dir: Path, variant: str, role: str, protocol: str | None = None) -> dict:
    """The result of `variant` in `results_dir`: under `protocol` when one is given and exists
    (e.g. results/ssd-12-reference/), else results/<variant>/metrics.json."""
    default_path = results_dir / variant / "metrics.json"
    candidates = []
    for path in sorted(results_dir.glob("*/metrics.json")):
        try:
            result = read_metrics_file(path)
        except UserError:
            if path == default_path:
                raise
            continue  # someone else's broken file: reported when its own variant is gated
        if result["variant"] == variant:
            candidates.append(result)
    if not candidates:
        raise UserError(f"{default_path}: missing ({role} {variant}); run `make eval MODEL={variant}` first")
    if protocol is not None:
        matching = [c for c in candidates if c["protocol"] == protocol]
        if matching:
            candidates = matching
    in_default = [c for c in candidates if Path(c["_source"]) == default_path]
    return (in_default or candidates)[0]


def check_metric(variant: str, rule: MetricRule, got: float) -> Check:
    """PASS unless got < expected - allowed; an improvement beyond tolerance adds a note."""
    allowed = rule.allowed
    regressed = got < rule.expected - allowed - FLOAT_SLACK
    status = "FAIL" if regressed else "PASS"
    message = (f"{status} {variant} {rule.name}: expected {_fmt(rule.expected)}, "
               f"got {_fmt(got)}, allowed {_fmt(allowed)}")
    if regressed:
        message += f" (regressed by {_fmt(rule.expected - got)})"
    notes: tuple[str, ...] = ()
    if got > rule.expected + allowed + FLOAT_SLACK:
        notes = (f"note: {variant} {rule.name} improved beyond tolerance "
                 f"({_fmt(got)} > {_fmt(rule.expected)} + {_fmt(allowed)}); consider "
                 f"`ssd-eval baseline --update --variant {variant}`",)
    return Check(variant, rule.name, status, message, notes)


def check_drop(variant: str, parent: str, max_drop_pct: float,
               map_value: float, parent_map: float) -> Check:
    """PASS when the drop ratio vs the parent is at most max_drop_pct."""
    drop = drop_ratio_pct(map_value, parent_map)
    broken = drop > max_drop_pct + FLOAT_SLACK
    status = "FAIL" if broken else "PASS"
    message = (f"{status} {variant} drop_pct vs {parent}: expected <= {max_drop_pct:.2f}%, "
               f"got {drop:.2f}% (mAP {_fmt(map_value)} vs {_fmt(parent_map)})")
    return Check(variant, f"drop_pct vs {parent}", status, message)


def _parent_for_drop(results_dir: Path, result: dict, parent: str) -> dict:
    parent_result = _read_variant_result(results_dir, parent, "parent of", result["protocol"])
    reason = accuracy_mismatch(result, parent_result)
    if reason:
        raise UserError(f"{parent_result['_source']} is not comparable with "
                        f"{result['_source']} ({reason.removeprefix('n/a: ')})")
    if parent_result["mAP"] <= 0:
        raise UserError(f"{parent_result['_source']}: mAP is {parent_result['mAP']}; "
                        "cannot compute a drop ratio")
    return parent_result


def check_variant(baseline: Baseline, results_dir: Path) -> list[Check]:
    """All checks of one baseline against its result; input problems become ERROR checks."""
    variant = baseline.variant
    try:
        result = _read_variant_result(results_dir, variant, "baselined variant", baseline.protocol)
        if result["protocol"] != baseline.protocol:
            raise UserError(f"{result['_source']}: protocol {result['protocol']!r} but "
                            f"{baseline.source} applies to protocol {baseline.protocol!r}")
        images = result["provenance"]["images"]
        if images != baseline.images:
            raise UserError(f"{result['_source']}: {images} images but {baseline.source} "
                            f"applies to {baseline.images} images")
    except UserError as exc:
        return [Check(variant, "results", "ERROR", str(exc))]

    checks = []
    for rule in baseline.metrics:
        got = result.get(rule.name)
        if got is None:
            checks.append(Check(variant, rule.name, "ERROR",
                                f"{result['_source']}: missing key {rule.name}"))
            continue
        checks.append(check_metric(variant, rule, got))
    if baseline.parent:
        try:
            parent_result = _parent_for_drop(results_dir, result, baseline.parent)
        except UserError as exc:
            checks.append(Check(variant, f"drop_pct vs {baseline.parent}", "ERROR", str(exc)))
        else:
            checks.append(check_drop(variant, baseline.parent, baseline.max_drop_pct,
                                     result["mAP"], parent_result["mAP"]))
    return checks


def render_junit(checks: list[Check]) -> str:
    """JUnit XML: one testsuite `ssd-eval-gate`, one testcase per check."""
    suite = ET.Element("testsuite", {
        "name": JUNIT_SUITE,
        "tests": str(len(checks)),
        "failures": str(sum(c.status == "FAIL" for c in checks)),
        "errors": str(sum(c.status == "ERROR" for c in checks)),
        "skipped": "0",
    })
    for check in checks:
        case = ET.SubElement(suite, "testcase", {
            "classname": f"{JUNIT_SUITE}.{check.variant}", "name": check.name, "time": "0"})
        if check.status == "FAIL":
            ET.SubElement(case, "failure", {"message": check.message, "type": "regression"}).text = check.message
        elif check.status == "ERROR":
            ET.SubElement(case, "error", {"message": check.message, "type": "input"}).text = check.message
        if check.notes:
            ET.SubElement(case, "system-out").text = "\n".join(check.notes)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def _error(command: str, message: str) -> None:
    print(f"ssd-eval {command}: error: {message}", file=sys.stderr)


def run_gate(baselines_dir: Path, results_dir: Path, *, variants: list[str] | None = None,
             junit: Path | None = None) -> int:
    """Check results against baselines; print one line per check; return the exit code.

    0: every check holds. 1: a metric regressed or a quantized drop rule broke.
    2: input or usage error (no baselines, unknown variant, malformed baseline,
    missing results or metrics.json, protocol or image-count mismatch,
    incomparable parent); reported on stderr as `ssd-eval gate: error: ...`.
    With `junit`, also writes a JUnit XML report there (atomically).
    """
    baselines_dir, results_dir = Path(baselines_dir), Path(results_dir)
    checks: list[Check] = []
    if not baselines_dir.is_dir():
        checks.append(Check("gate", "baselines", "ERROR",
                            f"{baselines_dir}: baselines directory not found"))
    elif not results_dir.is_dir():
        checks.append(Check("gate", "results", "ERROR",
                            f"{results_dir}: results directory not found; run `make eval` first"))
    else:
        files = _baseline_files(baselines_dir)
        selected = list(files) if variants is None else list(dict.fromkeys(variants))
        if not files:
            checks.append(Check("gate", "baselines", "ERROR",
                                f"{baselines_dir}: no baselines (*.yaml) found; "
                                "create them with `ssd-eval baseline --update`"))
        elif not selected:
            checks.append(Check("gate", "baselines", "ERROR", "no variants selected"))
        for variant in selected if files else []:
            if variant not in files:
                checks.append(Check(variant, "baseline", "ERROR",
                                    f"{baselines_dir}: no baseline for variant {variant!r} "
                                    f"(have: {', '.join(files) or 'none'})"))
                continue
            try:
                baseline = load_baseline(files[variant])
            except UserError as exc:
                checks.append(Check(variant, "baseline", "ERROR", str(exc)))
                continue
            checks += check_variant(baseline, results_dir)

    for check in checks:
        if check.status == "ERROR":
            _error("gate", check.message)
        else:
            print(check.message)
        for note in check.notes:
            print(note)
    counts = {s: sum(c.status == s for c in checks) for s in ("PASS", "FAIL", "ERROR")}
    print(f"gate: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['ERROR']} errors")
    if junit is not None:
        atomic_write_text(Path(junit), render_junit(checks))
    if counts["ERROR"] or not checks:
        return 2
    return 1 if counts["FAIL"] else 0


# --------------------------------------------------------------------------- updating

def _updated_baseline(path: Path, result: dict, results_dir: Path,
                      abs_tol: float, max_drop_pct: float) -> tuple[Baseline, list[str]]:
    """The baseline that accepts `result`, plus warnings; keeps an existing file's choices."""
    variant = result["variant"]
    warnings: list[str] = []
    existing = load_baseline(path) if path.exists() else None
    if existing is not None:
        names = [(r.name, r.abs_tol, r.rel_tol) for r in existing.metrics]
        parent, drop_limit = existing.parent, existing.max_drop_pct
    else:
        names = [(name, abs_tol, None) for name in DEFAULT_METRICS]
        parent, drop_limit = result.get("parent"), max_drop_pct
    rules = []
    for name, rule_abs, rule_rel in names:
        if result.get(name) is None:
            raise UserError(f"{result['_source']}: missing key {name} (gated by {path})")
        rules.append(MetricRule(name, round(float(result[name]), EXPECTED_DECIMALS),
                                rule_abs, rule_rel))
    if parent:
        try:
            parent_result = _parent_for_drop(results_dir, result, parent)
        except UserError as exc:
            if existing is None:
                warnings.append(f"{path}: not adding a quantized drop rule: {exc}")
                parent = drop_limit = None
            else:
                warnings.append(f"{path}: the gate will not be able to check the drop rule: {exc}")
        else:
            drop = drop_ratio_pct(result["mAP"], parent_result["mAP"])
            if drop > drop_limit + FLOAT_SLACK:
                warnings.append(f"{path}: current drop vs {parent} is {drop:.2f}%, above "
                                f"max_drop_pct {drop_limit:.2f}; the gate will fail")
    baseline = Baseline(str(path), variant, result["protocol"], result["provenance"]["images"],
                        tuple(rules), parent, drop_limit)
    return baseline, warnings


def update_baselines(baselines_dir: Path, results_dir: Path, *, variants: list[str] | None = None,
                     abs_tol: float = 0.002, max_drop_pct: float = 1.0) -> int:
    """Rewrite (or create) baselines/<variant>.yaml from the current results; return the exit code.

    Existing files keep their metric selection, tolerances and drop rule; new
    files gate mAP, AP50 and AP75 with `abs_tol`, and quantized variants with a
    comparable parent result get `max_drop_pct`. Prints a unified diff of each
    changed file. Returns 0, or 2 on input errors (nothing is written then);
    errors go to stderr as `ssd-eval baseline: error: ...`.
    """
    baselines_dir, results_dir = Path(baselines_dir), Path(results_dir)
    errors: list[str] = []
    if not _number(abs_tol) or abs_tol < 0:
        errors.append(f"abs_tol must be a number >= 0, got {abs_tol!r}")
    if not _number(max_drop_pct) or max_drop_pct < 0:
        errors.append(f"max_drop_pct must be a number >= 0, got {max_drop_pct!r}")
    if not results_dir.is_dir():
        errors.append(f"{results_dir}: results directory not found; run `make eval` first")
    if errors:
        for message in errors:
            _error("baseline", message)
        return 2

    existing_files = _baseline_files(baselines_dir) if baselines_dir.is_dir() else {}
    if variants is None:
        names = []
        for metrics_path in sorted(results_dir.glob("*/metrics.json")):
            try:
                found = read_metrics_file(metrics_path)["variant"]
            except UserError as exc:
                errors.append(str(exc))
                continue
            if found != metrics_path.parent.name:
                print(f"ssd-eval baseline: warning: skipping {metrics_path}: its variant "
                      f"{found!r} differs from its directory name, so the gate cannot find it",
                      file=sys.stderr)
                continue
            names.append(found)
        names += [v for v in existing_files if v not in names]
    else:
        names = list(dict.fromkeys(variants))
    if errors:
        for message in errors:
            _error("baseline", message)
        return 2
    if not names:
        _error("baseline", f"{results_dir}: no */metrics.json found; run `make eval` first")
        return 2

    planned: list[tuple[Path, str, str]] = []  # (path, old text, new text)
    for variant in names:
        path = existing_files.get(variant, baselines_dir / f"{variant}.yaml")
        try:
            result = _read_variant_result(results_dir, variant, "variant")
            baseline, warnings = _updated_baseline(path, result, results_dir, abs_tol, max_drop_pct)
            new_text = render_baseline(baseline)
            parse_baseline(new_text, str(path))  # what we write must load back
        except UserError as exc:
            errors.append(str(exc))
            continue
        for warning in warnings:
            print(f"ssd-eval baseline: warning: {warning}", file=sys.stderr)
        old_text = path.read_text(encoding="utf-8") if path.exists() else ""
        planned.append((path, old_text, new_text))
    if errors:
        for message in errors:
            _error("baseline", message)
        return 2

    baselines_dir.mkdir(parents=True, exist_ok=True)
    changed = 0
    for path, old_text, new_text in planned:
        if old_text == new_text:
            continue
        diff = difflib.unified_diff(old_text.splitlines(keepends=True),
                                    new_text.splitlines(keepends=True),
                                    fromfile=str(path) if old_text else "/dev/null",
                                    tofile=str(path))
        print("".join(diff), end="")
        atomic_write_text(path, new_text)
        changed += 1
    print(f"baseline: {changed} file(s) changed, {len(planned) - changed} unchanged")
    return 0
