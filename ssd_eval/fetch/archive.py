"""Extract from a COCO zip, safely and atomically: members checked (encryption, compression method,
zip bombs, unsafe names) before anything is written, one file or a folder staged and renamed into place."""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import NoReturn

from ssd_eval.errors import UserError
from ssd_eval.fetch.transfer import _fsync_dir, _mkdir, _progress_bar, _reason, _replace_durably
from ssd_eval.utils import CHUNK_SIZE

log = logging.getLogger(__name__)

ZIP_MAX_TOTAL_BYTES = 4 << 30
"""Most bytes extracted from one zip (COCO val2017 images are 0.8 GB)."""
ZIP_MAX_RATIO = 100
"""Largest uncompressed / compressed size of a zip member over 1 MiB (JPEGs ~1x, the annotation JSON ~5x)."""
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _raise_corrupt_zip(zip_path: Path, *, url: str, owned: bool, config_key: str, exc: BaseException) -> NoReturn:
    """Raise the one-line error for a corrupt zip, deleting it (and its .sha256) when we downloaded it."""
    if owned:
        zip_path.unlink(missing_ok=True)
        zip_path.with_name(zip_path.name + ".sha256").unlink(missing_ok=True)
        action = "it was deleted; run again to download it anew"
    else:
        action = "replace it with a good copy"
    raise UserError(f"{zip_path} (from {url}) is not a valid zip file ({_reason(exc)}); {action}, "
                    f"or set {config_key} to an existing copy of the extracted data") from exc


def _members(zf: zipfile.ZipFile, zip_path: Path, member: str, *, url: str,
             config_key: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The members to extract with their paths inside the target: ``member`` itself, or when it ends with
    "/" every file under that folder; UserError for any unsafe one (the zip is kept: a new download is the same)."""
    if not member.endswith("/"):
        try:
            members = [(zf.getinfo(member), PurePosixPath())]
        except KeyError:
            raise UserError(f"{zip_path} (from {url}) has no {member}; "
                            f"set {config_key} to an existing copy") from None
    else:
        members = []
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(member):
                continue
            rel = PurePosixPath(info.filename[len(member):])
            if rel.is_absolute() or ".." in rel.parts or not rel.parts or ":" in rel.parts[0]:
                raise UserError(f"{zip_path} (from {url}) has an unsafe member name "
                                f"{info.filename!r}; refusing to extract it")
            members.append((info, rel))
        if not members:
            raise UserError(f"{zip_path} (from {url}) has no {member} folder; "
                            f"set {config_key} to an existing copy")

    def refuse(problem: str) -> UserError:
        return UserError(f"{zip_path} (from {url}): {problem}; nothing was extracted and the zip is kept: "
                         f"replace it with a good copy, or set {config_key} to an existing copy of the data")

    for info, _ in members:
        if info.flag_bits & 0x1:
            raise refuse(f"member {info.filename} is encrypted")
        if info.compress_type not in _ZIP_METHODS:
            raise refuse(f"member {info.filename} uses an unsupported compression method ({info.compress_type})")
        if info.file_size > (1 << 20) and info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1):
            raise refuse(f"member {info.filename} would expand {info.compress_size} bytes to {info.file_size} "
                         f"(more than {ZIP_MAX_RATIO}x)")
    total = sum(info.file_size for info, _ in members)
    if total > ZIP_MAX_TOTAL_BYTES:
        raise refuse(f"would extract {total} bytes, more than the {ZIP_MAX_TOTAL_BYTES} allowed")
    return members


def _extract(zip_path: Path, member: str, target: Path, *, url: str, owned: bool, config_key: str,
             progress: bool) -> None:
    """Extract ``member`` to the file ``target``, or the folder ``member`` (ending with "/") into the folder
    ``target``. ``owned``: we downloaded the zip, so a corrupt one is deleted."""
    folder = member.endswith("/")
    staging = target.with_name(target.name + ".extracting")
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        _raise_corrupt_zip(zip_path, url=url, owned=owned, config_key=config_key, exc=e)
    with zf:
        members = _members(zf, zip_path, member, url=url, config_key=config_key)
        _mkdir(target.parent)
        if folder:
            if staging.exists():
                log.info("removing %s left over from an interrupted extraction", staging)
                shutil.rmtree(staging)
            staging.mkdir()
        try:
            with _progress_bar(sum(info.file_size for info, _ in members), 0, target.name, progress) as bar:
                for info, rel in members:
                    out = staging.joinpath(*rel.parts)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(out, "wb") as dst:
                        while chunk := src.read(CHUNK_SIZE):
                            dst.write(chunk)
                            bar.update(len(chunk))
                        dst.flush()
                        os.fsync(dst.fileno())  # synced before it is renamed into place
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            if staging.is_dir():
                shutil.rmtree(staging, ignore_errors=True)
            else:
                staging.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise UserError(f"cannot extract {member} to {target} ({_reason(e)})") from e
            zf.close()
            _raise_corrupt_zip(zip_path, url=url, owned=owned, config_key=config_key, exc=e)
    try:
        if folder:  # the files' directory entries, deepest first, before the folder is published
            parents = {staging, *(staging.joinpath(*rel.parts).parent for _, rel in members)}
            for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
                _fsync_dir(parent)
        _replace_durably(staging, target)
    except OSError as e:
        raise UserError(f"cannot move {staging} to {target} ({_reason(e)})") from e
    if folder:
        log.info("extracted %d files into %s", len(members), target)
