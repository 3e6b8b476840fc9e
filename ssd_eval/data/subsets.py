"""Named, versioned, deterministic image subsets (``subsets/<name>.json``, docs/FORMATS.md) for CI-sized runs.

The stratified rule (``stratified_subset``, recorded as ``ALGORITHM`` in every subset file):

* Strata: each category with at least one annotation (crowd regions included), plus "no annotations" when the
  file has unannotated images; an image belongs to the stratum of every category it has an annotation of.
* Target of stratum s: ``size * n_s / N`` images (``n_s`` of the file's ``N`` images are in s), at least 1 so
  every category appears when ``size`` allows; exact integer arithmetic, scaled by ``N``.
* ``size`` times: take the stratum with the largest relative deficit ``(target - chosen) / target`` among those
  with unchosen images (ties: the rarer stratum, then the lower category id, "no annotations" last); among its
  unchosen images take the one whose addition most reduces ``sum_s |target_s - chosen_s|``; ties go to the
  lowest ``sha256("ssd-eval-subset:<seed>:<image id>")``.

Nothing depends on set or dict order, ``hash()`` or floating point: the same file, size and seed give the same
ids on every machine. ``random_subset`` (``--algorithm random``) draws a seeded simple random sample instead: the
stratified rule favours images with many categories, so only a random subset's mAP is a fair draw of the full set's.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ssd_eval.data.coco import CocoDataset, load_annotations
from ssd_eval.errors import UserError
from ssd_eval.loaders import load_json
from ssd_eval.utils import atomic_write_text, is_int

# The rules by name and version, as subset files record them; ALGORITHMS: by their ``--algorithm`` choice.
ALGORITHM = "stratified-greedy-l1/v1"  # stratified_subset
RANDOM_ALGORITHM = "random-sha256/v1"  # random_subset
ALGORITHMS = {"stratified": ALGORITHM, "random": RANDOM_ALGORITHM}

SUBSETS_DIR = Path(__file__).resolve().parents[2] / "subsets"  # at the repository root

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FIELDS = ("name", "annotations_sha256", "image_ids", "ids_sha256", "algorithm", "seed")


@dataclass(frozen=True)
class Subset:
    """One named image subset of one annotation file, as stored in ``subsets/<name>.json``."""

    name: str
    annotations_sha256: str
    image_ids: list[int]  # ascending, unique
    ids_sha256: str
    algorithm: str = ALGORITHM
    seed: int = 0
    path: Path | None = field(default=None, compare=False, repr=False)  # the file it was read from; not in it

    def to_json(self) -> dict[str, Any]:
        """The subset file's JSON object."""
        return {field: getattr(self, field) for field in _FIELDS}


def ids_sha256(image_ids: Sequence[int]) -> str:
    """sha256 of the ids in ascending order written as decimal integers joined by commas (e.g. "139,285")."""
    return hashlib.sha256(",".join(str(int(i)) for i in sorted(image_ids)).encode("ascii")).hexdigest()


def stratified_subset(dataset_gt: dict, size: int, *, seed: int = 0) -> list[int]:
    """``size`` image ids (ascending) of a COCO annotation dict, every category represented in proportion."""
    image_ids = _image_ids(dataset_gt, size)
    total = len(image_ids)
    row = {image_id: r for r, image_id in enumerate(image_ids)}
    category_ids = sorted({int(ann["category_id"]) for ann in dataset_gt["annotations"]})
    column = {category_id: c for c, category_id in enumerate(category_ids)}
    membership = np.zeros((total, len(category_ids) + 1), dtype=np.int64)  # last column: no annotations
    for ann in dataset_gt["annotations"]:
        membership[row[int(ann["image_id"])], column[int(ann["category_id"])]] = 1
    membership[:, -1] = membership[:, :-1].sum(axis=1) == 0
    if not membership[:, -1].any():
        membership = membership[:, :-1]
    strata = membership.shape[1]
    # Scaled by N: target_s * N = max(size * n_s, N); chosen_s * N; all exact integers.
    target = np.maximum(size * membership.sum(axis=0), total)
    chosen = np.zeros(strata, dtype=np.int64)
    tiebreak = np.array([_seeded_hash(seed, image_id) for image_id in image_ids], dtype=np.uint64)
    free = np.ones(total, dtype=bool)
    for _ in range(size):
        deficit = target - chosen * total
        has_free = (membership[free] > 0).any(axis=0)
        stratum = min((s for s in range(strata) if has_free[s]),
                      key=lambda s: (-Fraction(int(deficit[s]), int(target[s])), int(target[s]), s))
        candidates = np.flatnonzero(free & (membership[:, stratum] > 0))
        # Reduction of sum |deficit| if a candidate is added (each of its strata gains N).
        gain_per_stratum = np.abs(deficit) - np.abs(deficit - total)
        gains = membership[candidates] @ gain_per_stratum
        best = candidates[gains == gains.max()]
        choice = int(best[np.argmin(tiebreak[best])])
        free[choice] = False
        chosen += membership[choice]
    return [image_ids[i] for i in np.flatnonzero(~free)]


def random_subset(dataset_gt: dict, size: int, *, seed: int = 0) -> list[int]:
    """``size`` image ids (ascending) drawn at random without replacement: the images with the lowest
    ``sha256("ssd-eval-subset:<seed>:<image id>")``. A rare category may be missing."""
    drawn = sorted(_image_ids(dataset_gt, size), key=lambda image_id: (_seeded_hash(seed, image_id), image_id))
    return sorted(drawn[:size])


def make_subset(annotations_path: str | Path, size: int, *, name: str, seed: int = 0,
                algorithm: str = "stratified") -> Subset:
    """The ``algorithm`` ("stratified" or "random", see ALGORITHMS) subset of ``size`` images of an annotation
    file, named and hashed, ready to write."""
    _check_name(name)
    if algorithm not in ALGORITHMS:
        raise UserError(f"subset algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    dataset = load_annotations(annotations_path, Path("."))
    choose = stratified_subset if algorithm == "stratified" else random_subset
    ids = choose(dataset.gt, size, seed=seed)
    return Subset(name=name, annotations_sha256=dataset.sha256, image_ids=ids,
                  ids_sha256=ids_sha256(ids), algorithm=ALGORITHMS[algorithm], seed=seed)


def subset_path(name: str) -> Path:
    """The file of the named subset: ``subsets/<name>.json`` at the repository root."""
    _check_name(name)
    return SUBSETS_DIR / f"{name}.json"


def write_subset(path: str | Path, subset: Subset) -> Path:
    """Write a subset file atomically (temporary file, then rename); returns its path."""
    path = Path(path)
    if ids_sha256(subset.image_ids) != subset.ids_sha256 or list(subset.image_ids) != sorted(set(subset.image_ids)):
        raise ValueError("subset.image_ids must be ascending, unique and match subset.ids_sha256")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(subset.to_json(), indent=1) + "\n")


def read_subset(path: str | Path) -> Subset:
    """A subset file, checked for its fields, ascending unique integer ids and their sha256."""
    path = Path(path)
    try:
        data = load_json(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: subset file not found (dataset.subset)") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read subset file: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a subset file: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a subset file: top level is not an object")
    missing = [field for field in _FIELDS if field not in data]
    if missing:
        raise UserError(f"{path}: not a subset file: lacks {missing[0]!r}")
    ids = data["image_ids"]
    if not isinstance(ids, list) or not ids or not all(is_int(i) for i in ids):
        raise UserError(f"{path}: image_ids must be a non-empty list of integers")
    repeated = next((i for i, n in collections.Counter(ids).items() if n > 1), None)
    if repeated is not None:
        raise UserError(f"{path}: image id {repeated} appears more than once in image_ids (it would be inferred "
                        "and scored twice); each image must be listed once")
    if any(b < a for a, b in zip(ids, ids[1:])):
        raise UserError(f"{path}: image_ids must be ascending")
    if ids_sha256(ids) != data["ids_sha256"]:
        raise UserError(f"{path}: the image ids do not match ids_sha256 {data['ids_sha256']!r} "
                        f"(they hash to {ids_sha256(ids)}): the list was edited or truncated")
    return Subset(name=str(data["name"]), annotations_sha256=str(data["annotations_sha256"]), image_ids=ids,
                  ids_sha256=str(data["ids_sha256"]), algorithm=str(data["algorithm"]), seed=data["seed"], path=path)


def check_made_from(path: str | Path, subset: Subset, annotations_sha256: str) -> None:
    """Refuse a subset made from another annotation file than the one with ``annotations_sha256``."""
    if subset.annotations_sha256 != annotations_sha256:
        raise UserError(f"{path}: subset {subset.name!r} was made from an annotation file with sha256 "
                        f"{subset.annotations_sha256[:12]}…, not this one ({annotations_sha256[:12]}…); "
                        "use the annotation file it names or make a subset of this one "
                        "(python -m ssd_eval.data.subsets)")


def subset_file(spec: str) -> Path:
    """The file ``dataset.subset`` names: ``subsets/<spec>.json`` for a plain name (e.g. ``ci-500``), else the
    path itself (anything with a ``/`` or ending in ``.json``)."""
    if not isinstance(spec, str) or not spec:
        raise UserError(f"dataset.subset must be a subset name (e.g. ci-500) or a subset file, got {spec!r}")
    return Path(spec) if "/" in spec or spec.endswith(".json") else subset_path(spec)


def subset_run_name(spec: str) -> str:
    """The subset's name as run folders and baselines use it: the name itself, or a subset file's stem."""
    return Path(spec).stem if "/" in spec or spec.endswith(".json") else spec


def open_subset(spec: str, annotations_sha256: str) -> Subset:
    """The subset ``dataset.subset`` names, refused unless its ids hash right, it was made from these annotations
    and its ``name`` (what results and baselines record) equals its file's stem."""
    path = subset_file(spec)
    subset = read_subset(path)  # read once a run: select_image_ids and the run's subset record take this
    check_made_from(path, subset, annotations_sha256)
    if subset.name != path.stem:
        raise UserError(f"{path}: holds subset {subset.name!r}, but a subset file must be named after its subset "
                        f"({subset.name}.json)")
    return subset


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssd_eval.data.subsets --annotations FILE --size N --name NAME``: write ``subsets/NAME.json``."""
    parser = argparse.ArgumentParser(prog="python -m ssd_eval.data.subsets",
                                     description="Write a named, stratified, deterministic image subset file.")
    parser.add_argument("--annotations", required=True, help="COCO instances file (e.g. instances_val2017.json)")
    parser.add_argument("--size", required=True, type=int, help="number of images")
    parser.add_argument("--name", required=True, help="subset name, e.g. ci-500")
    parser.add_argument("--seed", type=int, default=0, help="tie-break (stratified) or draw (random) seed (default 0)")
    parser.add_argument("--algorithm", choices=list(ALGORITHMS), default="stratified",
                        help="stratified (default: every category in proportion) or random (a simple random "
                             "sample: ssd-eval show can then estimate the full set's mAP)")
    parser.add_argument("--out", help="output file (default subsets/NAME.json at the repository root)")
    parser.add_argument("--force", action="store_true", help="replace an existing file with different ids")
    args = parser.parse_args(argv)
    try:
        subset = make_subset(args.annotations, args.size, name=args.name, seed=args.seed, algorithm=args.algorithm)
        out = Path(args.out) if args.out else subset_path(args.name)
        if out.exists() and not args.force:
            existing = read_subset(out)
            if existing.to_json() != subset.to_json():
                raise UserError(f"{out}: a different subset {existing.name!r} already has this file; a named subset "
                                "is a version that baselines refer to: choose a new name, or pass --force")
        write_subset(out, subset)
    except UserError as exc:
        print(f"ssd_eval.data.subsets: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: {len(subset.image_ids)} images, ids sha256 {subset.ids_sha256[:12]}, "
          f"annotations sha256 {subset.annotations_sha256[:12]}, {subset.algorithm}, seed {subset.seed}")
    return 0


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"subset name {name!r} must be letters, digits, '.', '_' or '-' (e.g. ci-500)")


def _seeded_hash(seed: int, image_id: int) -> int:
    digest = hashlib.sha256(f"ssd-eval-subset:{seed}:{image_id}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big")


def _image_ids(dataset_gt: dict, size: int) -> list[int]:
    """The file's image ids, ascending, once ``size`` is checked to be between 1 and their number."""
    image_ids = sorted(int(image["id"]) for image in dataset_gt["images"])
    if not 1 <= size <= len(image_ids):
        raise UserError(f"subset size must be between 1 and the {len(image_ids)} images of the annotation file, "
                        f"got {size}")
    return image_ids


def select_image_ids(dataset: CocoDataset, *, limit: int | None = None, skip_images_without_annotations: bool = False,
                     shard: tuple[int, int] | None = None, subset: str | Subset | None = None) -> list[int]:
    """The image ids to evaluate, ascending: exactly the ``subset``'s (``dataset.subset``, or the ``Subset``
    ``open_subset`` read), else all; ``limit`` keeps the first N; ``shard=(i, n)`` (1-based) then keeps the
    i-th of n contiguous slices."""
    ids = sorted(dataset.images)
    if subset is not None:
        if isinstance(subset, str):
            subset = open_subset(subset, dataset.sha256)
        unknown = [i for i in subset.image_ids if i not in dataset.images]
        if unknown:
            raise UserError(f"{subset.path}: image id {unknown[0]} is not in {dataset.annotations_path}")
        ids = list(subset.image_ids)
    if skip_images_without_annotations:
        ids = [i for i in ids if i in dataset.annotated_image_ids]
    if limit is not None:
        ids = ids[:limit]
    if shard is not None:
        index, count = shard
        ids = ids[(index - 1) * len(ids) // count : index * len(ids) // count]
    return ids


if __name__ == "__main__":
    sys.exit(main())
