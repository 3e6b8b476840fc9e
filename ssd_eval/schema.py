"""Small checks of plain JSON/YAML values shared by every reader of a file format
(annotations, metrics.json, baselines, cache lines, shard manifests)."""

from __future__ import annotations

import math
from typing import Any

from ssd_eval.config import get_dotted
from ssd_eval.errors import UserError, quote

KIND_TEXT = {
    "str": "a string",
    "number": "a finite number",
    "int": "an integer",
    "str_list": "a list of strings",
}


def is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for a finite int or float (not a bool, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_non_finite(value: Any) -> bool:
    """True for a float NaN or infinity."""
    return isinstance(value, float) and not math.isfinite(value)


def has_kind(value: Any, kind: str) -> bool:
    """Whether ``value`` is of ``kind`` (a key of KIND_TEXT): "str" must be non-empty."""
    if kind == "str":
        return isinstance(value, str) and value != ""
    if kind == "number":
        return is_number(value)
    if kind == "int":
        return is_int(value)
    if kind == "str_list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise ValueError(kind)


def check_keys(data: dict, source: str, required: tuple[tuple[str, str], ...],
               optional: tuple[tuple[str, str], ...] = ()) -> None:
    """Check dotted keys of ``data``: each of ``required`` present and of its kind, each of
    ``optional`` missing, null or of its kind; UserError naming ``source`` and the key."""
    for key, kind in required:
        try:
            value = get_dotted(data, key)
        except KeyError:
            raise UserError(f"{source}: missing key {key}") from None
        if not has_kind(value, kind):
            raise UserError(f"{source}: {key}: expected {KIND_TEXT[kind]}, got {quote(value)}")
    for key, kind in optional:
        try:
            value = get_dotted(data, key)
        except KeyError:
            continue
        if value is not None and not has_kind(value, kind):
            raise UserError(f"{source}: {key}: expected {KIND_TEXT[kind]} or null, got {quote(value)}")
