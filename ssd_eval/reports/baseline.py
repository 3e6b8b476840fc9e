"""The format of baselines/<variant>.yaml (baselines/README.md), parsed and checked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ssd_eval.config.schema import KERNEL_CLASSES
from ssd_eval.data.subsets import subset_path
from ssd_eval.errors import UserError, quote
from ssd_eval.inference.onnx_graph import QUANTIZATION_FORMATS
from ssd_eval.loaders import load_yaml
from ssd_eval.scoring.cocoeval import STAT_NAMES as METRIC_NAMES
from ssd_eval.utils import is_int, is_number

TOLERANCES = ("fixed", "ci95")
"""How a metric's regression is judged: abs_tol / rel_tol, or also a paired 95 % bootstrap interval."""

CI95_METRICS = ("mAP", "AP50", "AP75")
"""The metrics ``tolerance: ci95`` is available for (those ssd_eval.scoring.bootstrap resamples)."""


@dataclass(frozen=True)
class MetricRule:
    """One gated metric: fails when got < expected - allowed (``tolerance: ci95``: see gate.check_metric_ci95)."""

    name: str
    expected: float
    abs_tol: float | None
    rel_tol: float | None
    tolerance: str = "fixed"  # one of TOLERANCES

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
    annotations_sha256: str | None = None
    model_sha256: str | None = None
    int8_path: str | None = None  # the CPU int8 kernel class the expected numbers were measured on
    subset: str | None = None  # the image subset (subsets/<name>.json) the numbers were measured on; None: full set
    detections: str | None = None  # the detections the numbers were measured from, relative to the baseline file
    quantization: str | None = None  # the model's quantization format (QUANTIZATION_FORMATS); None: not checked
    require_model_sha256: bool = False  # a result of another model than model_sha256 fails (else: a note)

    @property
    def detections_path(self) -> Path | None:
        """The kept detections file (``detections``), resolved beside the baseline file, or None."""
        return None if self.detections is None else Path(self.source).parent / self.detections


_TOP_KEYS = ("variant", "protocol", "images", "subset", "annotations_sha256", "model_sha256",
             "require_model_sha256", "quantization", "int8_path", "detections", "metrics", "quantized")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _check_known_keys(mapping: dict, allowed: tuple[str, ...], prefix: str, source: str) -> None:
    for sub in mapping:
        if sub not in allowed:
            raise UserError(f"{source}: {prefix}.{sub}: unknown key (allowed: {', '.join(allowed)})")


def _expect(ok: object, source: str, key: str, expected: str, value: object) -> None:
    """UserError ``<source>: <key>: expected <expected>, got <value>`` unless `ok`."""
    if not ok:
        raise UserError(f"{source}: {key}: expected {expected}, got {quote(value)}")


def parse_baseline(text: str, source: str) -> Baseline:
    """Parse and check baseline YAML text; UserError names `source` and the key at fault."""
    try:
        data = load_yaml(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{source}: not valid YAML{where}") from None
    except RecursionError:
        raise UserError(f"{source}: not a baseline: YAML nested too deeply") from None
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with keys {', '.join(_TOP_KEYS)}")
    for key in data:
        if key not in _TOP_KEYS:
            raise UserError(f"{source}: unknown key {key!r} (allowed: {', '.join(_TOP_KEYS)})")
    for key in ("variant", "protocol"):
        _expect(isinstance(data.get(key), str) and data[key], source, key, "a non-empty string", data.get(key))
    images = data.get("images")
    _expect(is_int(images) and images > 0, source, "images", "a positive integer", images)
    for key in ("annotations_sha256", "model_sha256"):
        value = data.get(key)
        _expect(value is None or (isinstance(value, str) and SHA256_HEX.fullmatch(value)),
                source, key, "64 lower-case hex digits or null", value)
    require = data.get("require_model_sha256", False)
    _expect(isinstance(require, bool), source, "require_model_sha256", "true or false", require)
    if require and data.get("model_sha256") is None:
        raise UserError(f"{source}: require_model_sha256: true needs a model_sha256 to require")
    for key, allowed in (("quantization", QUANTIZATION_FORMATS), ("int8_path", KERNEL_CLASSES)):
        value = data.get(key)
        _expect(value is None or value in allowed, source, key, f"one of {', '.join(allowed)} or null", value)
    subset = data.get("subset")
    if subset is not None:
        try:
            subset_path(subset)
        except UserError:
            raise UserError(f"{source}: subset: expected a subset name (subsets/<name>.json, e.g. ci-500) or "
                            f"null, got {quote(subset)}") from None
    detections = data.get("detections")
    _expect(detections is None or (isinstance(detections, str) and detections.strip()),
            source, "detections", "a file name (relative to the baseline file) or null", detections)
    stem = Path(source).stem
    if data["variant"] != stem:
        raise UserError(f"{source}: variant: {data['variant']!r} does not match the file name (expected {stem!r})")

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
        _check_known_keys(spec, ("expected", "abs_tol", "rel_tol", "tolerance"), key, source)
        _expect(is_number(spec.get("expected")), source, f"{key}.expected", "a number", spec.get("expected"))
        for tol in ("abs_tol", "rel_tol"):
            value = spec.get(tol)
            _expect(value is None or (is_number(value) and value >= 0),
                    source, f"{key}.{tol}", "a number >= 0 or null", value)
        if spec.get("abs_tol") is None and spec.get("rel_tol") is None:
            raise UserError(f"{source}: {key}: give abs_tol or rel_tol (or both)"
                            + (" (with tolerance: ci95 they apply where no paired interval is possible)"
                               if spec.get("tolerance") == "ci95" else ""))
        tolerance = spec.get("tolerance", "fixed")
        _expect(tolerance in TOLERANCES, source, f"{key}.tolerance", f"one of {', '.join(TOLERANCES)}", tolerance)
        if tolerance == "ci95" and name not in CI95_METRICS:
            raise UserError(f"{source}: {key}.tolerance: ci95 is available for {', '.join(CI95_METRICS)} only")
        abs_tol, rel_tol = (None if spec.get(tol) is None else float(spec[tol]) for tol in ("abs_tol", "rel_tol"))
        rules.append(MetricRule(name, float(spec["expected"]), abs_tol, rel_tol, tolerance))

    parent = max_drop = None
    quantized = data.get("quantized")
    if quantized is not None:
        if not isinstance(quantized, dict):
            raise UserError(f"{source}: quantized: expected a mapping with parent, max_drop_pct")
        _check_known_keys(quantized, ("parent", "max_drop_pct"), "quantized", source)
        parent = quantized.get("parent")
        _expect(isinstance(parent, str) and parent, source, "quantized.parent", "a variant name", parent)
        max_drop = quantized.get("max_drop_pct")
        _expect(is_number(max_drop) and max_drop >= 0, source, "quantized.max_drop_pct", "a number >= 0", max_drop)
        max_drop = float(max_drop)
    return Baseline(source, data["variant"], data["protocol"], images, tuple(rules),
                    parent, max_drop, data.get("annotations_sha256"), data.get("model_sha256"), data.get("int8_path"),
                    subset, detections, data.get("quantization"), require)


def load_baseline(path: Path) -> Baseline:
    """Read and check one baseline file; UserError names the file and key at fault."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    return parse_baseline(text, str(path))


def baseline_files(baselines_dir: Path) -> dict[str, Path]:
    """Each variant's baseline file; two for one variant (x.yaml beside x.yml) are an input error."""
    files: dict[str, Path] = {}
    for path in sorted(list(baselines_dir.glob("*.yaml")) + list(baselines_dir.glob("*.yml")),
                       key=lambda p: (p.stem, p.suffix)):
        if not path.is_file():
            continue
        if path.stem in files:
            raise UserError(f"{files[path.stem]} and {path}: two baselines for variant {path.stem!r}; "
                            "delete one of them")
        files[path.stem] = path
    return files


def tolerance_summary(baseline: Baseline) -> str:
    """Which tolerance each gated metric holds, e.g. ``tolerance ci95 (mAP, AP50, AP75)``."""
    groups: dict[str, list[str]] = {}
    for rule in baseline.metrics:
        groups.setdefault(rule.tolerance, []).append(rule.name)
    return "; ".join(f"tolerance {name} ({', '.join(metrics)})" for name, metrics in groups.items())

