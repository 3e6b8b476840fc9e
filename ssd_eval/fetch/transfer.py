"""Download one file, verified and resumable: http(s) with Range resume and retries, ``file://`` or
local copies, size and sha256 checks, and an atomic move into place."""

from __future__ import annotations

import http.client
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

from ssd_eval.errors import UserError
from ssd_eval.fetch.common import (
    _fsync_file,
    _key_note,
    _local_source,
    _mkdir,
    _normalize_sha256,
    _progress_bar,
    _reason,
    _replace_durably,
)
from ssd_eval.utils import CHUNK_SIZE, atomic_write_text, sha256_of

log = logging.getLogger(__name__)

USER_AGENT = "ssd_eval-fetch/0.1"
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first_byte, total)`` from a Content-Range header; unknown parts are None."""
    if not value:
        return None, None
    m = _CONTENT_RANGE_RE.fullmatch(value.strip())
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def _content_length(headers) -> int | None:
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _file_matches(path: Path, size: int | None, sha256: str | None) -> bool:
    """True when ``path`` is a file of the given size and sha256 (None = not checked)."""
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or sha256_of(path) == sha256



def _cannot_download(name: str, url: str, dest: Path, reason: str, config_key: str | None) -> str:
    tail = f", or point {config_key} at an existing copy." if config_key else "."
    return (
        f"cannot download {name} from {url} ({reason}). "
        f"Download it by hand and save it as {dest}{tail}"
    )


def _interrupted(name: str, url: str, dest: Path, got: int, total: int | None, reason: str) -> str:
    of = f" of {total}" if total is not None else ""
    return (
        f"download of {name} from {url} was interrupted after {got}{of} bytes ({reason}); "
        f"run the same command again to resume from {dest.name}.part, "
        f"or download it by hand and save it as {dest}."
    )



def _write_sha256_file(dest: Path, digest: str) -> Path:
    """Write ``<dest>.sha256`` (sha256sum format) atomically; return its path."""
    side = dest.with_name(dest.name + ".sha256")
    try:
        atomic_write_text(side, f"{digest}  {dest.name}\n")
    except (OSError, UserError) as e:
        raise UserError(f"cannot write {side} ({_reason(e) if isinstance(e, OSError) else e}); "
                        f"{dest} itself is complete") from e
    return side


# --------------------------------------------------------------------------- transfer


def _verify_part(part: Path, url: str, size: int | None, sha256: str | None,
                 config_key: str | None) -> str:
    """Check a finished transfer; delete it and raise on mismatch. Returns its sha256."""
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink(missing_ok=True)
        raise UserError(
            f"{url}: size {got_size} bytes does not match expected {size}{_key_note(config_key)}; "
            "the corrupt download was deleted"
        )
    digest = sha256_of(part)
    if sha256 is not None and digest != sha256:
        part.unlink(missing_ok=True)
        raise UserError(
            f"{url}: sha256 {digest} does not match expected {sha256}{_key_note(config_key)}; "
            "the corrupt download was deleted"
        )
    return digest


def _copy_local(src: Path, part: Path, *, url: str, dest: Path, config_key: str | None,
                progress: bool) -> None:
    """Copy a local source file into ``part`` (from scratch), streaming."""
    try:
        total = src.stat().st_size
        fin = open(src, "rb")
    except OSError as e:
        raise UserError(_cannot_download(dest.name, url, dest, _reason(e), config_key)) from e
    with fin:
        try:
            fout = open(part, "wb")
        except OSError as e:
            raise UserError(f"cannot write {part} ({_reason(e)})") from e
        with fout, _progress_bar(total, 0, dest.name, progress) as bar:
            while True:
                try:
                    chunk = fin.read(CHUNK_SIZE)
                except OSError as e:
                    raise UserError(f"cannot read {src} ({_reason(e)}); "
                                    f"fix the source {url}{_key_note(config_key)}") from e
                if not chunk:
                    break
                try:
                    fout.write(chunk)
                except OSError as e:
                    raise UserError(f"cannot write {part} ({_reason(e)})") from e
                bar.update(len(chunk))


def _open_http(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch_http(url: str, part: Path, *, dest: Path, size: int | None, config_key: str | None,
                progress: bool, timeout: float, sha256_known: bool) -> None:
    """Bring ``part`` to a complete copy of ``url``, resuming an existing ``part``.

    The file's total length comes from ``size`` or, when the server states it,
    from Content-Range or offset + Content-Length; a transfer that ends short of
    it raises (keeping ``part`` to resume). When no length is known at all and the
    body is not chunked, a connection that closes early cannot be told from the end
    of the file: only a sha256 can, so without ``sha256_known`` the download is
    refused before it starts. Does not verify the content; raises UserError when the transfer fails.
    """
    name = dest.name
    for _attempt in range(3):
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            log.info("%s is larger than the expected %d bytes; starting over", part, size)
            part.unlink()
            offset = 0
        if size is not None and offset == size and offset > 0:
            log.info("%s already holds %d bytes; verifying it", part, offset)
            return
        if offset:
            log.info("resuming %s at byte %d", name, offset)
        else:
            log.info("downloading %s from %s", name, url)

        try:
            resp = _open_http(url, offset, timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and offset:
                _, total = _parse_content_range(e.headers.get("Content-Range"))
                _check_total(total, size, url=url, part=part, config_key=config_key)
                if total == offset:
                    log.info("server says %s is complete; verifying it", part)
                    return
                if total is None:  # no length to compare with: never trust the part
                    log.info("server refused to resume %s without saying its length; "
                             "starting over", name)
                else:
                    log.info("server has %d bytes but %s holds %d; starting over",
                             total, part, offset)
                part.unlink()
                continue
            raise UserError(_cannot_download(name, url, dest, _reason(e), config_key)) from e
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            raise UserError(_cannot_download(name, url, dest, _reason(e), config_key)) from e

        with resp:
            length = _content_length(resp.headers)
            if resp.status == 206:
                start, total = _parse_content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    log.info("server answered the Range request for %s from byte %s, not %d; "
                             "starting over", name, start, offset)
                    part.unlink(missing_ok=True)
                    continue
                mode = "ab" if offset else "wb"
            else:
                if offset:
                    log.info("server ignored the Range request (HTTP %d); restarting %s from zero",
                             resp.status, name)
                offset, mode, total = 0, "wb", None
            if total is None and length is not None:
                total = offset + length
            _check_total(total, size, url=url, part=part, config_key=config_key)
            if total is None:
                total = size
            framed = getattr(resp, "chunked", False)  # chunked framing shows a cut by itself
            if total is None and not sha256_known and not framed:
                raise UserError(
                    f"{url}: the server does not say how long {name} is and no size or sha256 is "
                    f"configured{_key_note(config_key)}, so a download cut short could not be told "
                    f"from a complete one; download it by hand and save it as {dest}")
            if total is None and not framed:
                log.warning("%s: the server does not say how long %s is; the sha256 check will "
                            "catch a connection that closes early", url, name)
            received = _stream_to_part(resp, part, mode, offset, total, url=url, dest=dest,
                                       progress=progress)
        got = offset + received
        if total is not None and got > total:
            part.unlink(missing_ok=True)
            raise UserError(
                f"{url}: server sent {got} bytes but announced {total}; the download was "
                f"deleted, run again to retry, or download it by hand and save it as {dest}"
            )
        if total is not None and got < total:
            raise UserError(_interrupted(name, url, dest, got, total, "connection closed early"))
        return
    raise UserError(_cannot_download(name, url, dest, "the server does not resume consistently",
                                     config_key))


def _check_total(total: int | None, size: int | None, *, url: str, part: Path,
                 config_key: str | None) -> None:
    """Raise (deleting ``part``) when the server's stated length contradicts ``size``."""
    if size is not None and total is not None and total != size:
        part.unlink(missing_ok=True)
        raise UserError(
            f"{url}: server reports {total} bytes but {size} are expected"
            f"{_key_note(config_key)}; is the URL right?"
        )


def _stream_to_part(resp, part: Path, mode: str, offset: int, total: int | None, *,
                    url: str, dest: Path, progress: bool) -> int:
    """Append (or write) the response body to ``part``; return bytes received."""
    received = 0
    try:
        with open(part, mode) as f, _progress_bar(total, offset, dest.name, progress) as bar:
            while True:
                try:  # read1: return what has arrived, so a stall loses nothing
                    chunk = resp.read1(CHUNK_SIZE)
                except (OSError, http.client.HTTPException) as e:
                    raise UserError(_interrupted(dest.name, url, dest, offset + received, total,
                                                 _reason(e))) from e
                if not chunk:
                    break
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except OSError as e:  # writing failed (disk full, permissions)
        raise UserError(f"cannot write {part} ({_reason(e)})") from e
    return received


# --------------------------------------------------------------------------- public API


def download(url: str, dest: Path, *, size: int | None = None, sha256: str | None = None,
             config_key: str | None = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Make ``dest`` a verified copy of ``url`` (http(s), ``file://`` or a local path).

    An existing ``dest`` that matches ``size`` and ``sha256`` is kept as is. An
    interrupted transfer is resumed from ``<dest>.part`` on the next call. A
    verified file is moved into place atomically; a file that fails
    verification is deleted. With ``sha256=None`` only the size is checked and
    the computed digest is logged and written to ``<dest>.sha256`` for pinning.
    Failures raise a one-line UserError naming ``url``, ``dest`` and
    ``config_key``. Returns ``dest``.
    """
    dest = Path(dest)
    want = _normalize_sha256(sha256, config_key)
    if dest.is_dir():
        raise UserError(f"{dest} is a directory, expected a file{_key_note(config_key)}")
    if dest.exists():
        if _file_matches(dest, size, want):
            log.debug("%s is present and verified", dest)
            return dest
        log.warning("%s does not match the expected size/sha256; downloading it again", dest)

    source = _local_source(url)
    _mkdir(dest.parent)
    part = dest.with_name(dest.name + ".part")
    if source is not None:
        _copy_local(source, part, url=url, dest=dest, config_key=config_key, progress=progress)
    else:
        _fetch_http(url, part, dest=dest, size=size, config_key=config_key,
                    progress=progress, timeout=timeout, sha256_known=want is not None)
    digest = _verify_part(part, url, size, want, config_key)
    try:
        _fsync_file(part)  # a power loss after the rename must not leave a short dest
        _replace_durably(part, dest)
    except OSError as e:
        raise UserError(f"cannot move {part} to {dest} ({_reason(e)})") from e
    if want is None:
        side = _write_sha256_file(dest, digest)
        log.info("%s: sha256 %s (not pinned; written to %s; pin it in the config%s)",
                 dest, digest, side, _key_note(config_key))
    log.info("saved %s", dest)
    return dest

