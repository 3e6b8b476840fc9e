"""The entry points: make sure a model file or the COCO val2017 annotations and images are in place,
downloading what is missing when asked, or saying in one line what to do."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ssd_eval.errors import UserError
from ssd_eval.fetch.archive import _extract
from ssd_eval.fetch.transfer import _local_source, _normalize_sha256, download
from ssd_eval.utils import sha256_of

ANNOTATIONS_MEMBER = "annotations/instances_val2017.json"
IMAGES_PREFIX = "val2017/"


def ensure_model(path: Path, *, url: str | None, size: int | None, sha256: str | None,
                 download_missing: bool, config_key: str = "model.path",
                 progress: bool = True, variant: str | None = None) -> Path:
    """Return ``path`` once it is a model file matching ``size`` and ``sha256``.

    A missing file is downloaded from ``url`` when ``download_missing`` is set; otherwise, or when the
    existing file does not match, a one-line UserError says what to do. ``variant`` (e.g. ``ssd-12``) names
    the variant for the ``make models MODEL=...`` hint; without it the hint says where to save the file.
    """
    path = Path(path)
    want = _normalize_sha256(sha256, config_key)
    if path.exists():
        if not path.is_file():
            raise UserError(f"model file {path} is not a file; fix {config_key}")
        got_size = path.stat().st_size
        if size is not None and got_size != size:
            raise UserError(f"model file {path} is {got_size} bytes, expected {size}; delete it to "
                            f"re-download it, or fix {config_key} (and the pinned size)")
        if want is not None and (digest := sha256_of(path)) != want:
            raise UserError(f"model file {path} has sha256 {digest}, expected {want}; delete it to "
                            f"re-download it, or fix {config_key} (and the pinned sha256)")
        return path

    if not url:
        raise UserError(f"model file {path} not found and no download URL is configured; "
                        f"set {config_key} to an existing copy")
    if download_missing:
        return download(url, path, size=size, sha256=want, config_key=config_key, progress=progress)
    how = (f"run 'make models MODEL={variant}' to download it from {url}" if variant
           else f"download it from {url} and save it as {path}")
    raise UserError(f"model file {path} not found; {how}, or set {config_key} to an existing copy")


def _missing_coco_message(what: str, target: Path, url: str | None, extract: str,
                          config_key: str) -> str:
    source = f"get {url} and {extract} (or run 'make data')" if url else "no download URL is configured"
    return f"COCO {what} {target} not found; {source}, or set {config_key} to an existing copy"


def _extract_from(url: str, member: str, target: Path, *, downloads_dir: Path, config_key: str, progress: bool,
                  pinned: tuple[int | None, str | None]) -> None:
    """Extract ``member`` of the zip at ``url`` to ``target``: a local zip is read in place, any other is
    downloaded into ``downloads_dir`` first (checked against ``pinned``, its (size, sha256))."""
    zip_path = _local_source(url)
    owned = zip_path is None
    if owned:
        name = PurePosixPath(urlsplit(url).path).name or "download.zip"
        zip_path = download(url, Path(downloads_dir) / name, size=pinned[0], sha256=pinned[1],
                            config_key=config_key, progress=progress)
    elif not zip_path.is_file():
        raise UserError(f"COCO zip {zip_path} not found; fix the URL for {config_key}")
    _extract(zip_path, member, target, url=url, owned=owned, config_key=config_key, progress=progress)


def ensure_coco(annotations: Path, images_dir: Path, *, annotations_url: str | None,
                images_url: str | None, download_missing: bool, downloads_dir: Path,
                progress: bool = True, annotations_zip: tuple[int | None, str | None] = (None, None),
                images_zip: tuple[int | None, str | None] = (None, None)) -> None:
    """Make sure the COCO val2017 annotation file and image folder exist.

    With ``download_missing``, what is missing is extracted from its zip (a local one read in place, any other
    downloaded into ``downloads_dir``, checked against ``annotations_zip`` / ``images_zip``: (size, sha256),
    None where unknown); otherwise a one-line UserError says what is missing and where to get it.
    """
    annotations, images_dir = Path(annotations), Path(images_dir)
    if annotations.is_dir():
        raise UserError(f"COCO annotations {annotations} is a directory, expected the json file "
                        "(dataset.annotations)")
    if images_dir.exists() and not images_dir.is_dir():
        raise UserError(f"COCO images {images_dir} is not a directory (dataset.images)")

    need_ann = not annotations.is_file()
    need_img = not images_dir.is_dir()
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
        _extract_from(annotations_url, ANNOTATIONS_MEMBER, annotations, downloads_dir=downloads_dir,
                      config_key="dataset.annotations", progress=progress, pinned=annotations_zip)
    if need_img:
        _extract_from(images_url, IMAGES_PREFIX, images_dir, downloads_dir=downloads_dir,
                      config_key="dataset.images", progress=progress, pinned=images_zip)
