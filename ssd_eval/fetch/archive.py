"""Extract from a COCO zip, safely and atomically: members checked (encryption, compression method,
zip bombs, unsafe names) before anything is written, one file or a folder staged and renamed into place."""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ssd_eval.errors import UserError
from ssd_eval.fetch.common import _fsync_dir, _mkdir, _progress_bar, _reason, _replace_durably
from ssd_eval.utils import CHUNK_SIZE

log = logging.getLogger(__name__)

ZIP_MAX_TOTAL_BYTES = 4 << 30
"""Most bytes extracted from one zip (COCO val2017 images are 0.8 GB)."""
ZIP_MAX_RATIO = 100
"""Largest uncompressed / compressed size of a zip member over 1 MiB (JPEGs ~1x, the annotation JSON ~5x)."""
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


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

