"""Small helpers every layer shares: hashing, dotted keys, atomic writes, file sha256, versions, clock, and checks of
plain JSON/YAML values."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import secrets
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from ssd_eval.errors import UserError, quote


def is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for a finite int or float (not a bool, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_non_finite(value: Any) -> bool:
    """True for a float NaN or infinity."""
    return isinstance(value, float) and not math.isfinite(value)


def _is_interval(value: Any) -> bool:
    """An uncertainty.Interval as metrics.json holds it (as_dict), or null (no interval for that metric)."""
    return value is None or (isinstance(value, dict)
                             and all(is_number(value.get(k)) for k in ("low", "high", "level", "estimate"))
                             and all(is_int(value.get(k)) for k in ("replicates", "seed")))


def _number_list(value: Any) -> bool:
    return isinstance(value, list) and all(is_number(v) for v in value)


KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str) and v != ""),  # non-empty
    "number": ("a finite number", is_number),
    "int": ("an integer", is_int),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "dict": ("a mapping", lambda v: isinstance(v, dict)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "str_list": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "number_list": ("a list of finite numbers", _number_list),
    "number_map": ("a mapping of names to finite numbers",
                   lambda v: isinstance(v, dict) and all(is_number(x) for x in v.values())),
    "number_list_map": ("a mapping of names to lists of finite numbers",
                        lambda v: isinstance(v, dict) and all(_number_list(x) for x in v.values())),
    "interval_map": ("a mapping of metric names to intervals (low, high, level, estimate: finite numbers; "
                     "replicates, seed: integers)",
                     lambda v: isinstance(v, dict) and all(_is_interval(x) for x in v.values())),
}
"""The kinds ``check_keys`` checks: how its errors name each, and the test of a value."""


def check_keys(data: dict, source: str, required: tuple[tuple[str, str], ...],
               optional: tuple[tuple[str, str], ...] = ()) -> None:
    """Check dotted keys of ``data``: each of ``required`` present and of its kind, each of
    ``optional`` missing, null or of its kind; UserError naming ``source`` and the key."""
    for keys, needed in ((required, True), (optional, False)):
        for key, kind in keys:
            try:
                value = get_dotted(data, key)
            except KeyError:
                if needed:
                    raise UserError(f"{source}: missing key {key}") from None
                continue
            description, test = KINDS[kind]
            if (needed or value is not None) and not test(value):
                or_null = "" if needed else " or null"
                raise UserError(f"{source}: {key}: expected {description}{or_null}, got {quote(value)}")


def flatten_dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def get_dotted(data: dict[str, Any], dotted_key: str) -> Any:
    """The value at ``a.b.c`` in nested mappings; KeyError naming the key when a part is missing."""
    node: Any = data
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted_key)
        node = node[part]
    return node


def hash_data(data: Any) -> str:
    """sha256 of the canonical JSON form of ``data``."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; on success it is synced and renamed to ``path``
    (with the usual permissions), on failure removed. A write error naming no file (a full disk) is a UserError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the usual permissions (umask applied)
    try:
        yield temp
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError) and exc.filename is None:
            raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[TextIO]:
    """A text file handle whose content appears at ``path`` only when the block completes (atomic_path)."""
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8") as handle:
        yield handle


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a partial file."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """``atomic_write_text`` of ``data`` as JSON (indented by 2)."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


CHUNK_SIZE = 1 << 20


def sha256_of(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    """Return the hex sha256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def now() -> str:
    """The current UTC time in ISO 8601, to the second (provenance ``date``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
