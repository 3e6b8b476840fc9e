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
    "bool": "true or false",
    "dict": "a mapping",
    "list": "a list",
    "str_list": "a list of strings",
    "number_list": "a list of finite numbers",
    "number_map": "a mapping of names to finite numbers",
    "number_list_map": "a mapping of names to lists of finite numbers",
    "interval_map": "a mapping of metric names to intervals (low, high, level, estimate: finite numbers; "
                    "replicates, seed: integers)",
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
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    if kind == "str_list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "number_list":
        return isinstance(value, list) and all(is_number(v) for v in value)
    if kind == "number_map":
        return isinstance(value, dict) and all(is_number(v) for v in value.values())
    if kind == "number_list_map":
        return isinstance(value, dict) and all(has_kind(v, "number_list") for v in value.values())
    if kind == "interval_map":
        return isinstance(value, dict) and all(_is_interval(v) for v in value.values())
    raise ValueError(kind)


def _is_interval(value: Any) -> bool:
    """An uncertainty.Interval as metrics.json holds it (as_dict), or null (no interval for that metric)."""
    if value is None:
        return True
    return (isinstance(value, dict) and all(is_number(value.get(k)) for k in ("low", "high", "level", "estimate"))
            and all(is_int(value.get(k)) for k in ("replicates", "seed")))


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
