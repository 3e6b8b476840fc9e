"""Baselines: the format of baselines/<variant>.yaml (parse, check, render) and `baseline --update`,
which rewrites them from current results keeping their comments (format: baselines/README.md)."""

from __future__ import annotations

import difflib
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ssd_eval.config.schema import KERNEL_CLASSES, run_name
from ssd_eval.errors import UserError, print_error, quote
from ssd_eval.inference.onnx_graph import QUANTIZATION_FORMATS
from ssd_eval.loaders import load_yaml
from ssd_eval.results.compare import FLOAT_SLACK, drop_ratio_pct, parent_for_drop
from ssd_eval.results.index import ResultIndex, result_subset
from ssd_eval.scoring.cocoeval import STAT_NAMES as METRIC_NAMES
from ssd_eval.utils import atomic_write_text, is_number

log = logging.getLogger(__name__)

EXPECTED_DECIMALS = 6

DEFAULT_METRICS = ("mAP", "AP50", "AP75")
"""Metrics a newly created baseline gates."""


# --------------------------------------------------------------------------- baseline model

TOLERANCES = ("fixed", "ci95")
"""How a metric's regression is judged: ``fixed`` (abs_tol / rel_tol), ``ci95`` (a paired 95 % bootstrap
interval against the baseline's kept detections or the parent; abs_tol / rel_tol when none is possible)."""

CI95_METRICS = ("mAP", "AP50", "AP75")
"""The metrics ``tolerance: ci95`` is available for (those ssd_eval.scoring.bootstrap resamples)."""


@dataclass(frozen=True)
class MetricRule:
    """One gated metric: fails when got < expected - allowed (``tolerance: ci95``: see gate.check_variant)."""

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
_SHA256 = re.compile(r"[0-9a-f]{64}")
_METRIC_KEYS = ("expected", "abs_tol", "rel_tol", "tolerance")
_QUANTIZED_KEYS = ("parent", "max_drop_pct")


def _check_known_keys(mapping: dict, allowed: tuple[str, ...], prefix: str, source: str) -> None:
    for sub in mapping:
        if sub not in allowed:
            raise UserError(f"{source}: {prefix}.{sub}: unknown key (allowed: {', '.join(allowed)})")


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
        if not isinstance(data.get(key), str) or not data[key]:
            raise UserError(f"{source}: {key}: expected a non-empty string, got {quote(data.get(key))}")
    images = data.get("images")
    if not isinstance(images, int) or isinstance(images, bool) or images <= 0:
        raise UserError(f"{source}: images: expected a positive integer, got {quote(images)}")
    for key in ("annotations_sha256", "model_sha256"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) and _SHA256.fullmatch(value)):
            raise UserError(f"{source}: {key}: expected 64 lower-case hex digits or null, got {quote(value)}")
    quantization = data.get("quantization")
    if quantization is not None and quantization not in QUANTIZATION_FORMATS:
        raise UserError(f"{source}: quantization: expected one of {', '.join(QUANTIZATION_FORMATS)} or null, "
                        f"got {quote(quantization)}")
    require = data.get("require_model_sha256", False)
    if not isinstance(require, bool):
        raise UserError(f"{source}: require_model_sha256: expected true or false, got {quote(require)}")
    if require and data.get("model_sha256") is None:
        raise UserError(f"{source}: require_model_sha256: true needs a model_sha256 to require")
    int8_path = data.get("int8_path")
    if int8_path is not None and int8_path not in KERNEL_CLASSES:
        raise UserError(f"{source}: int8_path: expected one of {', '.join(KERNEL_CLASSES)} or null, "
                        f"got {quote(int8_path)}")
    subset = data.get("subset")
    if subset is not None:
        from ssd_eval.data.subsets import subset_path

        try:
            subset_path(subset)
        except UserError:
            raise UserError(f"{source}: subset: expected a subset name (subsets/<name>.json, e.g. ci-500) or "
                            f"null, got {quote(subset)}") from None
    detections = data.get("detections")
    if detections is not None and not (isinstance(detections, str) and detections.strip()):
        raise UserError(f"{source}: detections: expected a file name (relative to the baseline file) or null, "
                        f"got {quote(detections)}")
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
        _check_known_keys(spec, _METRIC_KEYS, key, source)
        if not is_number(spec.get("expected")):
            raise UserError(f"{source}: {key}.expected: expected a number, "
                            f"got {quote(spec.get('expected'))}")
        for tol in ("abs_tol", "rel_tol"):
            value = spec.get(tol)
            if value is not None and (not is_number(value) or value < 0):
                raise UserError(f"{source}: {key}.{tol}: expected a number >= 0 or null, "
                                f"got {quote(value)}")
        if spec.get("abs_tol") is None and spec.get("rel_tol") is None:
            raise UserError(f"{source}: {key}: give abs_tol or rel_tol (or both)"
                            + (" (with tolerance: ci95 they apply where no paired interval is possible)"
                               if spec.get("tolerance") == "ci95" else ""))
        tolerance = spec.get("tolerance", "fixed")
        if tolerance not in TOLERANCES:
            raise UserError(f"{source}: {key}.tolerance: expected one of {', '.join(TOLERANCES)}, "
                            f"got {quote(tolerance)}")
        if tolerance == "ci95" and name not in CI95_METRICS:
            raise UserError(f"{source}: {key}.tolerance: ci95 is available for {', '.join(CI95_METRICS)} only")
        rules.append(MetricRule(name, float(spec["expected"]),
                                None if spec.get("abs_tol") is None else float(spec["abs_tol"]),
                                None if spec.get("rel_tol") is None else float(spec["rel_tol"]), tolerance))

    parent = max_drop = None
    quantized = data.get("quantized")
    if quantized is not None:
        if not isinstance(quantized, dict):
            raise UserError(f"{source}: quantized: expected a mapping with parent, max_drop_pct")
        _check_known_keys(quantized, _QUANTIZED_KEYS, "quantized", source)
        parent = quantized.get("parent")
        if not isinstance(parent, str) or not parent:
            raise UserError(f"{source}: quantized.parent: expected a variant name, got {quote(parent)}")
        max_drop = quantized.get("max_drop_pct")
        if not is_number(max_drop) or max_drop < 0:
            raise UserError(f"{source}: quantized.max_drop_pct: expected a number >= 0, "
                            f"got {quote(max_drop)}")
        max_drop = float(max_drop)
    return Baseline(source, data["variant"], data["protocol"], images, tuple(rules),
                    parent, max_drop, data.get("annotations_sha256"), data.get("model_sha256"), int8_path,
                    subset, detections, quantization, require)


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


# --------------------------------------------------------------------------- YAML output

_PLAIN_SCALAR = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")


def _yaml_string(value: str) -> str:
    if _PLAIN_SCALAR.fullmatch(value) and load_yaml(value, "<scalar>") == value:
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


def header_comments(text: str) -> list[str]:
    """The comment block (with blank lines in it) at the top of a baseline file's text."""
    header = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        header.append(line)
    while header and not header[-1].strip():
        header.pop()
    return header


_KEY = re.compile(r"\s*[A-Za-z0-9_]+:")


def _split_comment(line: str) -> tuple[str, str]:
    """(content, comment) of a YAML line; the comment keeps the spaces before its `#`."""
    quote = None
    escaped = False
    for i, char in enumerate(line):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            content = line[:i].rstrip()
            return content, line[len(content):]
    return line, ""


def inline_comments(text: str) -> dict[str, str]:
    """Each key line's trailing comment ("" for none) in a baseline file's text, keyed by the
    indented key (`protocol`, `  mAP`, `  max_drop_pct`, ...)."""
    comments = {}
    for line in text.splitlines():
        match = _KEY.match(line)
        if match and not line.lstrip().startswith("#"):
            comments[match.group(0)] = _split_comment(line)[1]
    return comments


def render_baseline(baseline: Baseline, header: list[str] | None = None,
                    comments: dict[str, str] | None = None) -> str:
    """The YAML text of a baseline, in the documented layout.

    `header`: comment lines to start with (an existing file's, kept by `--update`);
    when empty or None, a generated two-line header. `comments` (an existing file's
    `inline_comments`) replace the generated trailing comment of each key line they name.
    """
    lines = list(header or [
        f"# mAP regression baseline for {baseline.variant}; format: baselines/README.md.",
        "# Refresh with `ssd-eval baseline --update` (keeps tolerances and metric selection).",
    ])
    lines += [
        f"variant: {_yaml_string(baseline.variant)}",
        f"protocol: {_yaml_string(baseline.protocol)}   # applies only to results with this protocol",
        f"images: {baseline.images}   # ...and this image count",
    ]
    if baseline.subset:
        lines.append(f"subset: {_yaml_string(baseline.subset)}   # ...on this image subset "
                     f"(subsets/{baseline.subset}.json)")
    if baseline.annotations_sha256:
        lines.append(f"annotations_sha256: {baseline.annotations_sha256}   # ...and this annotation file")
    if baseline.model_sha256:
        lines.append(f"model_sha256: {baseline.model_sha256}   # the model measured (another one is gated on mAP, "
                     "with a note)")
    if baseline.require_model_sha256:
        lines.append("require_model_sha256: true   # ...and only this model passes")
    if baseline.quantization:
        lines.append(f"quantization: {baseline.quantization}   # a model of another quantization format fails")
    if baseline.int8_path:
        lines.append(f"int8_path: {baseline.int8_path}   # CPU int8 kernel class the numbers were measured on")
    if baseline.detections:
        lines.append(f"detections: {_yaml_string(baseline.detections)}   # the detections the numbers were "
                     "measured from (tolerance: ci95 pairs with them)")
    lines += [
        "metrics:   # allowed = max(abs_tol, rel_tol * expected); fails when got < expected - allowed",
    ]
    for rule in baseline.metrics:
        tolerance = "" if rule.tolerance == "fixed" else f", tolerance: {rule.tolerance}"
        lines.append(f"  {rule.name}: {{expected: {_yaml_float(rule.expected)}, "
                     f"abs_tol: {_yaml_float(rule.abs_tol)}, rel_tol: {_yaml_float(rule.rel_tol)}{tolerance}}}")
    if baseline.parent:
        lines += [
            "quantized:",
            f"  parent: {_yaml_string(baseline.parent)}",
            f"  max_drop_pct: {_yaml_float(baseline.max_drop_pct)}"
            "   # (parent mAP - mAP) / parent mAP x 100, same protocol and images",
        ]
    if comments:
        for number, line in enumerate(lines):
            match = _KEY.match(line)
            if match and match.group(0) in comments and not line.startswith("#"):
                lines[number] = _split_comment(line)[0] + comments[match.group(0)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- updating

def _updated_baseline(path: Path, existing: Baseline | None, result: dict, index: ResultIndex,
                      abs_tol: float, max_drop_pct: float, keep_detections: bool = False,
                      tolerance: str | None = None) -> tuple[Baseline, list[str]]:
    """The baseline that accepts `result`, plus `warning: ...` / `note: ...` lines; keeps an
    existing file's choices, except the metrics' tolerance when `tolerance` is given (ci95 only where
    CI95_METRICS allows it, fixed elsewhere)."""
    variant = result["variant"]
    messages: list[str] = []
    if existing is not None:
        names = [(r.name, r.abs_tol, r.rel_tol, r.tolerance) for r in existing.metrics]
        parent, drop_limit = existing.parent, existing.max_drop_pct
        if result["protocol"] != existing.protocol:
            messages.append(f"warning: {path}: protocol changes from {existing.protocol} to "
                            f"{result['protocol']}: {result['_source']} holds a "
                            f"{result['protocol']} result")
    else:
        names = [(name, abs_tol, None, "fixed") for name in DEFAULT_METRICS]
        parent, drop_limit = result.get("parent"), max_drop_pct
    rules = []
    for name, rule_abs, rule_rel, rule_tolerance in names:
        if result.get(name) is None:
            raise UserError(f"{result['_source']}: missing key {name} (gated by {path})")
        if tolerance is not None:
            rule_tolerance = tolerance if tolerance == "fixed" or name in CI95_METRICS else "fixed"
        rules.append(MetricRule(name, round(float(result[name]), EXPECTED_DECIMALS),
                                rule_abs, rule_rel, rule_tolerance))
    if parent:
        try:
            parent_result, note = parent_for_drop(index, result, parent)
        except UserError as exc:
            if existing is None:
                messages.append(f"warning: {path}: not adding a quantized drop rule: {exc}")
                parent = drop_limit = None
            else:
                messages.append(f"warning: {path}: the gate will not be able to check the "
                                f"drop rule: {exc}")
        else:
            messages += [note] if note else []
            drop = drop_ratio_pct(result["mAP"], parent_result["mAP"])
            if drop > drop_limit + FLOAT_SLACK:
                messages.append(f"warning: {path}: current drop vs {parent} is {drop:.2f}%, above "
                                f"max_drop_pct {drop_limit:.2f}; the gate will fail")
    annotations = (result["provenance"].get("annotations") or {}).get("sha256")
    model = result["provenance"]["model"]["sha256"]
    detections = existing.detections if existing else None
    if detections is None and keep_detections:
        detections = f"{variant}.detections.json"
    quantization = result["provenance"]["model"].get("quantization")
    baseline = Baseline(str(path), variant, result["protocol"], result["provenance"]["images"],
                        tuple(rules), parent, drop_limit, _sha256_or_none(annotations), _sha256_or_none(model),
                        existing.int8_path if existing else None, result_subset(result), detections,
                        quantization if quantization in QUANTIZATION_FORMATS else None,
                        existing.require_model_sha256 if existing else False)
    return baseline, messages


def tolerance_summary(baseline: Baseline) -> str:
    """Which tolerance each gated metric holds, e.g. ``tolerance ci95 (mAP, AP50, AP75)``."""
    groups: dict[str, list[str]] = {}
    for rule in baseline.metrics:
        groups.setdefault(rule.tolerance, []).append(rule.name)
    return "; ".join(f"tolerance {name} ({', '.join(metrics)})" for name, metrics in groups.items())


def _sha256_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and _SHA256.fullmatch(value) else None


def _protocol_for_new_baseline(index: ResultIndex, variant: str, path: Path) -> tuple[str, str | None]:
    """The protocol a new baseline file of `variant` is written for, plus a note when there was a choice.

    The only protocol `variant` has results under; among several, coco (its canonical
    folder results/<variant>/); several without coco is an error.
    """
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
    """Rewrite (or create) baselines/<variant>.yaml from the current results; return the exit code.

    Each variant's result is looked up as the gate does (ResultIndex.find): under
    an existing file's protocol, else under the variant's only protocol (coco
    when it has several). With `variants=None`, the variants are those named in
    the results' metrics.json files plus those with a baseline file.

    Existing files keep their comment header, metric selection, tolerances and
    drop rule; new files gate mAP, AP50 and AP75 with `abs_tol`, and quantized
    variants with a comparable parent result get `max_drop_pct`. New files are written for results on
    image subset `subset` (None: the full set); existing files keep theirs. A baseline that keeps its
    detections (`detections`, or every file with `keep_detections`) gets a copy of the result's
    detections.json there. `tolerance` (fixed or ci95) is written on every metric of every updated file
    (ci95 where CI95_METRICS allows it); None keeps each file's (new files: fixed). Prints a unified diff of
    each changed file and, per file, the tolerance it holds. Returns 0, or 2 on input errors (nothing is
    written then); errors go to stderr as `ssd-eval baseline: error: ...`.
    """
    baselines_dir, results_dir = Path(baselines_dir), Path(results_dir)
    errors: list[str] = []
    if not is_number(abs_tol) or abs_tol < 0:
        errors.append(f"abs_tol must be a number >= 0, got {abs_tol!r}")
    if not is_number(max_drop_pct) or max_drop_pct < 0:
        errors.append(f"max_drop_pct must be a number >= 0, got {max_drop_pct!r}")
    if tolerance is not None and tolerance not in TOLERANCES:
        errors.append(f"tolerance must be one of {', '.join(TOLERANCES)}, got {tolerance!r}")
    if not results_dir.is_dir():
        errors.append(f"{results_dir}: results directory not found; run `make eval` first")
    if errors:
        return _report_errors(errors)

    try:
        existing_files = baseline_files(baselines_dir) if baselines_dir.is_dir() else {}
    except UserError as exc:
        print_error("baseline", str(exc))
        return 2
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
        print_error("baseline", f"{results_dir}: no */metrics.json found; run `make eval` first")
        return 2

    planned: list[tuple[Path, str, str]] = []  # (path, old text, new text)
    copies: list[tuple[Path, Path]] = []  # (result's detections.json, the baseline's kept copy)
    for variant in names:
        path = existing_files.get(variant, baselines_dir / f"{variant}.yaml")
        messages: list[str] = []
        try:
            old_text = ""
            if path.exists():
                existing = load_baseline(path)
                old_text = path.read_text(encoding="utf-8")
                protocol = existing.protocol
            else:
                existing = None
                protocol, note = _protocol_for_new_baseline(index, variant, path)
                messages += [note] if note else []
            result, note = index.find(variant, protocol, f"variant {variant} for {path}",
                                      existing.subset if existing else subset)
            messages += [note] if note else []
            baseline, more = _updated_baseline(path, existing, result, index, abs_tol, max_drop_pct, keep_detections,
                                               tolerance)
            messages += more
            new_text = render_baseline(baseline, header_comments(old_text),
                                       inline_comments(old_text))
            parse_baseline(new_text, str(path))  # what we write must load back
        except UserError as exc:
            errors.append(str(exc))
            continue
        for message in messages:
            print(f"ssd-eval baseline: {message}", file=sys.stderr)
        planned.append((path, old_text, new_text))
        if baseline.detections_path is not None:
            copies.append((Path(result["_source"]).parent / "detections.json", baseline.detections_path))
    if errors:
        return _report_errors(errors)

    for source, target in copies:
        if not source.is_file():
            errors.append(f"{source}: not found; {target} keeps the detections of the result it is updated from")
    if errors:
        return _report_errors(errors)

    baselines_dir.mkdir(parents=True, exist_ok=True)
    changed = 0
    for source, target in copies:
        content = source.read_bytes()
        if not target.is_file() or target.read_bytes() != content:
            atomic_write_text(target, content.decode("utf-8"))
            print(f"baseline: copied {source} to {target}")
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
    for path, _, new_text in planned:
        print(f"baseline: {path}: {tolerance_summary(parse_baseline(new_text, str(path)))}")
    print(f"baseline: {changed} file(s) changed, {len(planned) - changed} unchanged")
    return 0
