"""A baseline's YAML text in the documented layout (baselines/README.md), keeping an existing file's comment header
and each key line's trailing comment, so that `baseline --update` rewrites only the values."""

from __future__ import annotations

import json
import re
from itertools import takewhile

from ssd_eval.loaders import load_yaml
from ssd_eval.reports.baseline import Baseline

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
    header = list(takewhile(lambda line: not line.strip() or line.lstrip().startswith("#"), text.splitlines()))
    while header and not header[-1].strip():
        header.pop()
    return header


_KEY = re.compile(r"\s*[A-Za-z0-9_]+:")
# A YAML line's content: quoted strings, other characters but `#`, and `#` after a non-blank (not a comment).
_CONTENT = re.compile(r"""(?:"(?:\\.|[^"\\])*"|'[^']*'|[^"'#]|(?<=[^ \t])#)*""")


def _split_comment(line: str) -> tuple[str, str]:
    """(content, comment) of a YAML line; the comment keeps the spaces before its `#`."""
    content = _CONTENT.match(line)[0]
    if not line.startswith("#", len(content)):  # no comment, or a quote left open
        return line, ""
    content = content.rstrip()
    return content, line[len(content):]


def inline_comments(text: str) -> dict[str, str]:
    """Each key line's trailing comment ("" for none) in a baseline file's text, keyed by the
    indented key (`protocol:`, `  mAP:`, `  max_drop_pct:`, ...)."""
    return {match.group(0): _split_comment(line)[1] for line in text.splitlines() if (match := _KEY.match(line))}


def render_baseline(baseline: Baseline, header: list[str] | None = None,
                    comments: dict[str, str] | None = None) -> str:
    """The YAML text of a baseline, in the documented layout, starting with `header` (else a generated one);
    `comments` (an existing file's `inline_comments`) replace the generated trailing comments of their keys."""
    lines = list(header or [
        f"# mAP regression baseline for {baseline.variant}; format: baselines/README.md.",
        "# Refresh with `ssd-eval baseline --update` (keeps tolerances and metric selection).",
    ])
    lines += [
        f"variant: {_yaml_string(baseline.variant)}",
        f"protocol: {_yaml_string(baseline.protocol)}   # applies only to results with this protocol",
        f"images: {baseline.images}   # ...and this image count",
    ]
    optional = (  # (key, value as YAML or nothing, trailing comment): lines written only for a value
        ("subset", baseline.subset and _yaml_string(baseline.subset),
         f"...on this image subset (subsets/{baseline.subset}.json)"),
        ("annotations_sha256", baseline.annotations_sha256, "...and this annotation file"),
        ("model_sha256", baseline.model_sha256, "the model measured (another one is gated on mAP, with a note)"),
        ("require_model_sha256", baseline.require_model_sha256 and "true", "...and only this model passes"),
        ("quantization", baseline.quantization, "a model of another quantization format fails"),
        ("int8_path", baseline.int8_path, "CPU int8 kernel class the numbers were measured on"),
        ("detections", baseline.detections and _yaml_string(baseline.detections),
         "the detections the numbers were measured from (tolerance: ci95 pairs with them)"),
    )
    lines += [f"{key}: {value}   # {comment}" for key, value, comment in optional if value]
    lines.append("metrics:   # allowed = max(abs_tol, rel_tol * expected); fails when got < expected - allowed")
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
    for number, line in enumerate(lines):
        match = _KEY.match(line)
        if match and comments and match.group(0) in comments:
            lines[number] = _split_comment(line)[0] + comments[match.group(0)]
    return "\n".join(lines) + "\n"
