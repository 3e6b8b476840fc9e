"""Download one file, verified and resumable: http(s) with Range resume and retries, ``file://`` or
local copies, size and sha256 checks, and an atomic move into place. Also the pieces the other fetch
modules share: one-line reasons, sha256 and source checks, folders, progress bars and durable renames."""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from tqdm import tqdm

from ssd_eval.errors import UserError
from ssd_eval.utils import CHUNK_SIZE, atomic_write_text, sha256_of

log = logging.getLogger(__name__)

USER_AGENT = "ssd_eval-fetch/0.1"


def _key_note(config_key: str | None) -> str:
    return f" ({config_key})" if config_key else ""


def _reason(exc: BaseException) -> str:
    """A short human reason for a network or file error, on one line."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return _reason(exc.reason)
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = exc.reason
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(str(text).split())


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


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first_byte, total)`` from a Content-Range header; unknown parts are None."""
    m = re.fullmatch(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", value.strip(), re.IGNORECASE) if value else None
    if not m:
        return None, None
    return (int(m[1]) if m[1] else None), (None if m[3] == "*" else int(m[3]))


def _cannot_download(url: str, dest: Path, reason: str, config_key: str | None) -> str:
    tail = f", or point {config_key} at an existing copy." if config_key else "."
    return f"cannot download {dest.name} from {url} ({reason}). Download it by hand and save it as {dest}{tail}"


def _interrupted(url: str, dest: Path, got: int, total: int | None, reason: str) -> str:
    of = f" of {total}" if total is not None else ""
    return (f"download of {dest.name} from {url} was interrupted after {got}{of} bytes ({reason}); run the same "
            f"command again to resume from {dest.name}.part, or download it by hand and save it as {dest}.")


def _write_part(read: Callable[[int], bytes], part: Path, *, offset: int, total: int | None, desc: str,
                progress: bool, read_error: Callable[[int, int | None, str], str]) -> int:
    """Write the chunks ``read`` returns to ``part`` (appending after ``offset`` bytes, if any) until it returns
    none; return the bytes written. A failed read raises UserError(``read_error(bytes in part, total, reason)``);
    a failed write says that ``part`` cannot be written."""
    written = 0
    try:
        with open(part, "ab" if offset else "wb") as f, _progress_bar(total, offset, desc, progress) as bar:
            while True:
                try:  # an http read1: returns what has arrived, so a stall loses nothing
                    chunk = read(CHUNK_SIZE)
                except (OSError, http.client.HTTPException) as e:
                    raise UserError(read_error(offset + written, total, _reason(e))) from e
                if not chunk:
                    return written
                f.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except OSError as e:  # writing failed (disk full, permissions)
        raise UserError(f"cannot write {part} ({_reason(e)})") from e


def _fetch_http(url: str, part: Path, *, dest: Path, size: int | None, config_key: str | None,
                progress: bool, timeout: float, sha256_known: bool) -> None:
    """Bring ``part`` to a complete copy of ``url``, resuming an existing ``part``; UserError when that fails.

    The file's total length comes from ``size``, Content-Range or offset + Content-Length; a transfer that
    ends short of it raises and keeps ``part`` to resume. With no length known and no chunked framing, a
    connection that closes early looks like the end of the file: only a sha256 can tell, so without
    ``sha256_known`` the download is refused before it starts. The content is not verified here.
    """
    name = dest.name
    for _attempt in range(3):
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            log.info("%s is larger than the expected %d bytes; starting over", part, size)
            part.unlink()
            offset = 0
        if offset and offset == size:
            log.info("%s already holds %d bytes; verifying it", part, offset)
            return
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        if offset:
            log.info("resuming %s at byte %d", name, offset)
            request.add_header("Range", f"bytes={offset}-")
        else:
            log.info("downloading %s from %s", name, url)
        try:
            resp = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code != 416 or not offset:
                raise UserError(_cannot_download(url, dest, _reason(e), config_key)) from e
            _, total = _parse_content_range(e.headers.get("Content-Range"))
            _check_total(total, size, url=url, part=part, config_key=config_key)
            if total == offset:
                log.info("server says %s is complete; verifying it", part)
                return
            if total is None:  # no length to compare with: never trust the part
                log.info("server refused to resume %s without saying its length; starting over", name)
            else:
                log.info("server has %d bytes but %s holds %d; starting over", total, part, offset)
            part.unlink()
            continue
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            raise UserError(_cannot_download(url, dest, _reason(e), config_key)) from e

        with resp:
            if resp.status == 206:
                start, total = _parse_content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    log.info("server answered the Range request for %s from byte %s, not %d; "
                             "starting over", name, start, offset)
                    part.unlink(missing_ok=True)
                    continue
            else:
                if offset:
                    log.info("server ignored the Range request (HTTP %d); restarting %s from zero",
                             resp.status, name)
                offset, total = 0, None
            if total is None:
                with contextlib.suppress(TypeError, ValueError):  # Content-Length absent, or not a number
                    total = offset + int(resp.headers["Content-Length"])
            _check_total(total, size, url=url, part=part, config_key=config_key)
            total = size if total is None else total
            if total is None and not getattr(resp, "chunked", False):  # chunked framing shows a cut by itself
                if not sha256_known:
                    raise UserError(
                        f"{url}: the server does not say how long {name} is and no size or sha256 is "
                        f"configured{_key_note(config_key)}, so a download cut short could not be told "
                        f"from a complete one; download it by hand and save it as {dest}")
                log.warning("%s: the server does not say how long %s is; the sha256 check will "
                            "catch a connection that closes early", url, name)
            received = _write_part(resp.read1, part, offset=offset, total=total, desc=name, progress=progress,
                                   read_error=functools.partial(_interrupted, url, dest))
        got = offset + received
        if total is not None and got > total:
            part.unlink(missing_ok=True)
            raise UserError(f"{url}: server sent {got} bytes but announced {total}; the download was deleted, "
                            f"run again to retry, or download it by hand and save it as {dest}")
        if total is not None and got < total:
            raise UserError(_interrupted(url, dest, got, total, "connection closed early"))
        return
    raise UserError(_cannot_download(url, dest, "the server does not resume consistently", config_key))


def _check_total(total: int | None, size: int | None, *, url: str, part: Path, config_key: str | None) -> None:
    """Raise (deleting ``part``) when the server's stated length contradicts ``size``."""
    if size is not None and total is not None and total != size:
        part.unlink(missing_ok=True)
        raise UserError(f"{url}: server reports {total} bytes but {size} are expected{_key_note(config_key)}; "
                        "is the URL right?")


def download(url: str, dest: Path, *, size: int | None = None, sha256: str | None = None,
             config_key: str | None = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Make ``dest`` a verified copy of ``url`` (http(s), ``file://`` or a local path); return ``dest``.

    An existing ``dest`` matching ``size`` and ``sha256`` is kept; an interrupted transfer resumes from
    ``<dest>.part`` on the next call; a file that fails verification is deleted. With ``sha256=None`` only
    the size is checked, and the digest is logged and written to ``<dest>.sha256`` for pinning. Failures
    raise a one-line UserError naming ``url``, ``dest`` and ``config_key``.
    """
    dest = Path(dest)
    want = _normalize_sha256(sha256, config_key)
    if dest.is_dir():
        raise UserError(f"{dest} is a directory, expected a file{_key_note(config_key)}")
    if dest.exists():
        if (dest.is_file() and (size is None or dest.stat().st_size == size)
                and (want is None or sha256_of(dest) == want)):
            log.debug("%s is present and verified", dest)
            return dest
        log.warning("%s does not match the expected size/sha256; downloading it again", dest)

    source = _local_source(url)
    _mkdir(dest.parent)
    part = dest.with_name(dest.name + ".part")
    if source is None:
        _fetch_http(url, part, dest=dest, size=size, config_key=config_key,
                    progress=progress, timeout=timeout, sha256_known=want is not None)
    else:  # a local copy, from scratch
        try:
            total = source.stat().st_size
            fin = open(source, "rb")
        except OSError as e:
            raise UserError(_cannot_download(url, dest, _reason(e), config_key)) from e
        with fin:
            _write_part(fin.read, part, offset=0, total=total, desc=dest.name, progress=progress,
                        read_error=lambda _got, _total, reason: (f"cannot read {source} ({reason}); "
                                                                 f"fix the source {url}{_key_note(config_key)}"))
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink(missing_ok=True)
        raise UserError(f"{url}: size {got_size} bytes does not match expected {size}{_key_note(config_key)}; "
                        "the corrupt download was deleted")
    digest = sha256_of(part)
    if want is not None and digest != want:
        part.unlink(missing_ok=True)
        raise UserError(f"{url}: sha256 {digest} does not match expected {want}{_key_note(config_key)}; "
                        "the corrupt download was deleted")
    try:
        with open(part, "ab") as f:  # writable: Windows cannot commit a read-only handle
            os.fsync(f.fileno())  # a power loss after the rename must not leave a short dest
        _replace_durably(part, dest)
    except OSError as e:
        raise UserError(f"cannot move {part} to {dest} ({_reason(e)})") from e
    if want is None:  # <dest>.sha256 in sha256sum format, for pinning
        side = dest.with_name(dest.name + ".sha256")
        try:
            atomic_write_text(side, f"{digest}  {dest.name}\n")
        except (OSError, UserError) as e:
            raise UserError(f"cannot write {side} ({_reason(e) if isinstance(e, OSError) else e}); "
                            f"{dest} itself is complete") from e
        log.info("%s: sha256 %s (not pinned; written to %s; pin it in the config%s)",
                 dest, digest, side, _key_note(config_key))
    log.info("saved %s", dest)
    return dest
