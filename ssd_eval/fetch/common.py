"""Shared pieces of fetching: one-line reasons and key notes, sha256 and source checks, folders,
progress bars and durable renames."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from ssd_eval.errors import UserError


def _one_line(text: str) -> str:
    """Collapse whitespace so a message fits on one line."""
    return " ".join(str(text).split())


def _key_note(config_key: str | None) -> str:
    return f" ({config_key})" if config_key else ""


def _reason(exc: BaseException) -> str:
    """A short human reason for a network or file error."""
    if isinstance(exc, urllib.error.HTTPError):
        return _one_line(f"HTTP {exc.code} {exc.reason}")
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        return _reason(inner) if isinstance(inner, BaseException) else _one_line(inner)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return _one_line(exc.strerror)
    return _one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _normalize_sha256(sha256: str | None, config_key: str | None) -> str | None:
    """Lower-case and validate an expected sha256; ``None`` stays ``None``."""
    if sha256 is None:
        return None
    want = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", want):
        raise UserError(f"invalid sha256 {sha256!r}{_key_note(config_key)}: expected 64 hexadecimal digits")
    return want


def _local_source(url: str) -> Path | None:
    """The local path a ``file://`` URL or plain path names; ``None`` for http(s); UserError for other schemes."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UserError(f"unsupported file URL {url}: only local files (file:///path) can be read")
        return Path(urllib.request.url2pathname(parts.path))
    if scheme == "" or len(scheme) == 1:  # plain path, or a Windows drive letter
        return Path(url).expanduser()
    raise UserError(f"unsupported URL scheme {parts.scheme!r} in {url}: use http(s)://, file:// or a local path")


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create directory {path} ({_reason(e)})") from e


def _progress_bar(total: int | None, initial: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=not progress, leave=False)


def _fsync_dir(path: Path) -> None:
    """Best effort: make a rename inside ``path`` durable (not possible on every OS)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_durably(src: Path, dst: Path) -> None:
    """``os.replace`` then sync the folder; ``src``'s data must already be synced."""
    os.replace(src, dst)
    _fsync_dir(dst.parent)
