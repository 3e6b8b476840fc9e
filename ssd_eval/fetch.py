"""Fetch the model files and the COCO val2017 data, verified and resumable.

Downloads go to ``<dest>.part`` and only a verified file is moved into place, so
a killed run never leaves a file that looks complete; the next run resumes the
``.part`` with an HTTP Range request. Sources may be http(s) URLs, ``file://``
URLs or plain local paths (mirrors, local copies). Every failure the user can fix
is a one-line :class:`~ssd_eval.errors.UserError`.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import socket
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tqdm import tqdm

from ssd_eval.errors import UserError
from ssd_eval.utils import CHUNK_SIZE, atomic_write_text, sha256_of

log = logging.getLogger(__name__)

USER_AGENT = "ssd_eval-fetch/0.1"
ANNOTATIONS_MEMBER = "annotations/instances_val2017.json"
IMAGES_PREFIX = "val2017/"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)
ZIP_MAX_TOTAL_BYTES = 4 << 30
"""Most bytes extracted from one zip (COCO val2017 images are 0.8 GB)."""
ZIP_MAX_RATIO = 100
"""Largest uncompressed / compressed size of a zip member over 1 MiB (JPEGs ~1x, the annotation JSON ~5x)."""
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


# --------------------------------------------------------------------------- helpers


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
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return _one_line(exc.strerror)
    return _one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _normalize_sha256(sha256: str | None, config_key: str | None) -> str | None:
    """Lower-case and validate an expected sha256; ``None`` stays ``None``."""
    if sha256 is None:
        return None
    want = str(sha256).strip().lower()
    if not _SHA256_RE.fullmatch(want):
        raise UserError(
            f"invalid sha256 {sha256!r}{_key_note(config_key)}: expected 64 hexadecimal digits"
        )
    return want


def _local_source(url: str) -> Path | None:
    """The local path a ``file://`` URL or plain path names; ``None`` for http(s).

    Raises UserError for any other URL scheme.
    """
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


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create directory {path} ({_reason(e)})") from e


def _progress_bar(total: int | None, initial: int, desc: str, progress: bool) -> tqdm:
    return tqdm(
        total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
        unit_divisor=1024, file=sys.stderr, disable=not progress, leave=False,
    )


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


def _fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk, so a rename after it never exposes a truncated file."""
    with open(path, "ab") as f:  # writable: Windows cannot commit a read-only handle
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Best effort: make a rename inside ``path`` durable (not possible on every OS)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_durably(src: Path, dst: Path) -> None:
    """``os.replace`` then sync the folder; ``src``'s data must already be synced."""
    os.replace(src, dst)
    _fsync_dir(dst.parent)


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


def ensure_model(path: Path, *, url: str | None, size: int | None, sha256: str | None,
                 download_missing: bool, config_key: str = "model.path",
                 progress: bool = True, variant: str | None = None) -> Path:
    """Return ``path`` once it is a model file matching ``size`` and ``sha256``.

    A missing file is downloaded from ``url`` when ``download_missing`` is set;
    otherwise, or when the existing file does not match, a one-line UserError
    says what to do. ``variant`` (e.g. ``ssd-12``) names the model zoo variant
    for the ``make models MODEL=...`` hint; without it the hint says where to
    save a manual download (``path`` may be any file name).
    """
    path = Path(path)
    want = _normalize_sha256(sha256, config_key)
    if path.exists():
        if not path.is_file():
            raise UserError(f"model file {path} is not a file; fix {config_key}")
        got_size = path.stat().st_size
        if size is not None and got_size != size:
            raise UserError(
                f"model file {path} is {got_size} bytes, expected {size}; delete it to "
                f"re-download it, or fix {config_key} (and the pinned size)"
            )
        if want is not None:
            digest = sha256_of(path)
            if digest != want:
                raise UserError(
                    f"model file {path} has sha256 {digest}, expected {want}; delete it to "
                    f"re-download it, or fix {config_key} (and the pinned sha256)"
                )
        return path

    if download_missing and url:
        return download(url, path, size=size, sha256=want, config_key=config_key,
                        progress=progress)
    if url and variant:
        raise UserError(
            f"model file {path} not found; run 'make models MODEL={variant}' to download it "
            f"from {url}, or set {config_key} to an existing copy"
        )
    if url:
        raise UserError(
            f"model file {path} not found; download it from {url} and save it as {path}, "
            f"or set {config_key} to an existing copy"
        )
    raise UserError(
        f"model file {path} not found and no download URL is configured; "
        f"set {config_key} to an existing copy"
    )


def _missing_coco_message(what: str, target: Path, url: str | None, extract: str,
                          config_key: str) -> str:
    source = f"get {url} and {extract} (or run 'make data')" if url else \
        "no download URL is configured"
    return f"COCO {what} {target} not found; {source}, or set {config_key} to an existing copy"


def _open_zip(zip_path: Path, *, url: str, owned: bool, config_key: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        _raise_corrupt_zip(zip_path, url=url, owned=owned, config_key=config_key, exc=e)


def _raise_corrupt_zip(zip_path: Path, *, url: str, owned: bool, config_key: str,
                       exc: BaseException):
    if owned:
        zip_path.unlink(missing_ok=True)
        zip_path.with_name(zip_path.name + ".sha256").unlink(missing_ok=True)
        action = "it was deleted; run again to download it anew"
    else:
        action = "replace it with a good copy"
    raise UserError(
        f"{zip_path} (from {url}) is not a valid zip file ({_reason(exc)}); {action}, "
        f"or set {config_key} to an existing copy of the extracted data"
    ) from exc


def _check_members(zip_path: Path, infos: list[zipfile.ZipInfo], *, url: str, config_key: str) -> None:
    """Refuse encrypted members, unknown compression methods and zip bombs before extracting.

    The zip is kept (downloading it again would give the same file).
    """
    def refuse(problem: str) -> UserError:
        return UserError(f"{zip_path} (from {url}): {problem}; nothing was extracted and the zip is kept: "
                         f"replace it with a good copy, or set {config_key} to an existing copy of the data")

    for info in infos:
        if info.flag_bits & 0x1:
            raise refuse(f"member {info.filename} is encrypted")
        if info.compress_type not in _ZIP_METHODS:
            raise refuse(f"member {info.filename} uses an unsupported compression method ({info.compress_type})")
        if info.file_size > (1 << 20) and info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1):
            raise refuse(f"member {info.filename} would expand {info.compress_size} bytes to {info.file_size} "
                         f"(more than {ZIP_MAX_RATIO}x)")
    total = sum(info.file_size for info in infos)
    if total > ZIP_MAX_TOTAL_BYTES:
        raise refuse(f"would extract {total} bytes, more than the {ZIP_MAX_TOTAL_BYTES} allowed")


def _safe_relative(name: str) -> PurePosixPath | None:
    """A zip member name as a relative path, or None if it would escape the target."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or ":" in rel.parts[0]:
        return None
    return rel


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path, bar: tqdm) -> None:
    """Write one member to ``out`` and sync it to disk (it is renamed into place later)."""
    with zf.open(info) as src, open(out, "wb") as dst:
        while chunk := src.read(CHUNK_SIZE):
            dst.write(chunk)
            bar.update(len(chunk))
        dst.flush()
        os.fsync(dst.fileno())


def _extract_file(zip_path: Path, member: str, target: Path, *, url: str, owned: bool,
                  config_key: str, progress: bool) -> None:
    """Extract one zip member to ``target`` via a temporary file and os.replace."""
    staging = target.with_name(target.name + ".extracting")
    with _open_zip(zip_path, url=url, owned=owned, config_key=config_key) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise UserError(f"{zip_path} (from {url}) has no {member}; "
                            f"set {config_key} to an existing copy") from None
        _check_members(zip_path, [info], url=url, config_key=config_key)
        _mkdir(target.parent)
        try:
            with _progress_bar(info.file_size, 0, target.name, progress) as bar:
                _copy_member(zf, info, staging, bar)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            staging.unlink(missing_ok=True)
            zf.close()
            _raise_corrupt_zip(zip_path, url=url, owned=owned, config_key=config_key, exc=e)
        except OSError as e:
            staging.unlink(missing_ok=True)
            raise UserError(f"cannot extract {member} to {target} ({_reason(e)})") from e
    try:
        _replace_durably(staging, target)
    except OSError as e:
        raise UserError(f"cannot move {staging} to {target} ({_reason(e)})") from e


def _extract_tree(zip_path: Path, prefix: str, target: Path, *, url: str, owned: bool,
                  config_key: str, progress: bool) -> None:
    """Extract the members under ``prefix`` into the folder ``target``, atomically.

    Files go to a staging folder next to ``target`` that is renamed into place
    only once everything is extracted.
    """
    staging = target.with_name(target.name + ".extracting")
    with _open_zip(zip_path, url=url, owned=owned, config_key=config_key) as zf:
        members = []
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            rel = _safe_relative(info.filename[len(prefix):])
            if rel is None:
                raise UserError(f"{zip_path} (from {url}) has an unsafe member name "
                                f"{info.filename!r}; refusing to extract it")
            members.append((info, rel))
        if not members:
            raise UserError(f"{zip_path} (from {url}) has no {prefix} folder; "
                            f"set {config_key} to an existing copy")
        _check_members(zip_path, [info for info, _ in members], url=url, config_key=config_key)
        _mkdir(target.parent)
        if staging.exists():
            log.info("removing %s left over from an interrupted extraction", staging)
            shutil.rmtree(staging)
        staging.mkdir()
        total = sum(info.file_size for info, _ in members)
        outs: list[Path] = []
        try:
            with _progress_bar(total, 0, target.name, progress) as bar:
                for info, rel in members:
                    out = staging.joinpath(*rel.parts)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    _copy_member(zf, info, out, bar)
                    outs.append(out)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            shutil.rmtree(staging, ignore_errors=True)
            zf.close()
            _raise_corrupt_zip(zip_path, url=url, owned=owned, config_key=config_key, exc=e)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise UserError(f"cannot extract {prefix} to {target} ({_reason(e)})") from e
    try:
        folders = {staging, *(out.parent for out in outs)}
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            _fsync_dir(folder)  # the files' directory entries, before the folder is published
        _replace_durably(staging, target)
    except OSError as e:
        raise UserError(f"cannot move {staging} to {target} ({_reason(e)})") from e
    log.info("extracted %d files into %s", len(members), target)


def _zip_for(url: str, downloads_dir: Path, *, config_key: str, progress: bool, size: int | None = None,
             sha256: str | None = None) -> tuple[Path, bool]:
    """The local zip for ``url``: ``(path, owned)``; ``owned`` means we downloaded it (checked against
    ``size`` and ``sha256`` when given)."""
    local = _local_source(url)
    if local is not None:
        if not local.is_file():
            raise UserError(f"COCO zip {local} not found; fix the URL for {config_key}")
        return local, False
    name = PurePosixPath(urlsplit(url).path).name or "download.zip"
    return download(url, Path(downloads_dir) / name, size=size, sha256=sha256, config_key=config_key,
                    progress=progress), True


def ensure_coco(annotations: Path, images_dir: Path, *, annotations_url: str | None,
                images_url: str | None, download_missing: bool, downloads_dir: Path,
                progress: bool = True, annotations_zip: tuple[int | None, str | None] = (None, None),
                images_zip: tuple[int | None, str | None] = (None, None)) -> None:
    """Make sure the COCO val2017 annotation file and image folder exist.

    When missing and ``download_missing`` is set, the zips are fetched into
    ``downloads_dir`` (resumable; local paths and ``file://`` zips are read in
    place) and only the needed part is extracted, atomically. Otherwise a
    one-line UserError says what is missing, where to get it and which config
    key (``dataset.annotations``, ``dataset.images``) can point at a copy.
    ``annotations_zip`` and ``images_zip`` are each zip's expected (size, sha256), None where unknown.
    """
    annotations, images_dir = Path(annotations), Path(images_dir)
    if annotations.is_dir():
        raise UserError(f"COCO annotations {annotations} is a directory, expected the json file "
                        "(dataset.annotations)")
    if images_dir.exists() and not images_dir.is_dir():
        raise UserError(f"COCO images {images_dir} is not a directory (dataset.images)")

    need_ann = not annotations.is_file()
    need_img = not images_dir.is_dir()
    if not (need_ann or need_img):
        return

    problems = []
    if need_ann and not (download_missing and annotations_url):
        problems.append(_missing_coco_message(
            "annotations file", annotations, annotations_url,
            f"extract {ANNOTATIONS_MEMBER} from it to {annotations}", "dataset.annotations"))
    if need_img and not (download_missing and images_url):
        problems.append(_missing_coco_message(
            "images folder", images_dir, images_url,
            f"extract its {IMAGES_PREFIX} folder as {images_dir}", "dataset.images"))
    if problems:
        raise UserError("; ".join(problems))

    if need_ann:
        zip_path, owned = _zip_for(annotations_url, downloads_dir, config_key="dataset.annotations",
                                   progress=progress, size=annotations_zip[0], sha256=annotations_zip[1])
        _extract_file(zip_path, ANNOTATIONS_MEMBER, annotations, url=annotations_url, owned=owned,
                      config_key="dataset.annotations", progress=progress)
    if need_img:
        zip_path, owned = _zip_for(images_url, downloads_dir, config_key="dataset.images",
                                   progress=progress, size=images_zip[0], sha256=images_zip[1])
        _extract_tree(zip_path, IMAGES_PREFIX, images_dir, url=images_url, owned=owned,
                      config_key="dataset.images", progress=progress)
