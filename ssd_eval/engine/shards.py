"""Shards: one evaluation split over several runs (``eval --shard i/n``), checked and merged."""

from __future__ import annotations

import collections
import contextlib
import heapq
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ssd_eval import extras, utils
from ssd_eval.config.load import config_from_dict
from ssd_eval.config.schema import Config
from ssd_eval.data import coco as data
from ssd_eval.data import subsets
from ssd_eval.engine.finish import score_run, subset_record, write_run_result
from ssd_eval.engine.folder_lock import folder_lock
from ssd_eval.engine.progress import progress_log
from ssd_eval.errors import UserError
from ssd_eval.inference import postprocess
from ssd_eval.results.result import (
    EvalResult,
    is_detection,
    is_int,
    iter_detections,
    prepare_out_dir,
    tidy_output_dir,
    write_detections,
)
from ssd_eval.utils import atomic_write_json, flatten_dotted, hash_data, now

SHARD_FILE = "shard.json"
CACHE_FILE = "cache.jsonl"  # a run's resume cache (engine.cache), in each shard folder too
SHARD_FOLDER = re.compile(r"shard-(\d+)-of-(\d+)")


def shard_dir(out_dir: Path, shard: tuple[int, int]) -> Path:
    """Where shard i of n writes its detections."""
    return out_dir / f"shard-{shard[0]}-of-{shard[1]}"


class CacheTail:
    """A shard's progress as its run writes its resume cache: the complete lines appended since the last ``read``
    (``lines``: how many were read since the file was last started afresh)."""

    def __init__(self, path: Path, offset: int = 0):
        self.path, self.offset, self.lines = path, offset, 0

    @property
    def images(self) -> int:
        """Images in the lines read so far (a cache's first line is its header)."""
        return max(0, self.lines - 1)

    def read(self) -> dict[str, Any]:
        """``lines``: the new complete lines; ``reset``: the file was started afresh (they are its start);
        empty when there is neither, or the file cannot be read (yet)."""
        try:
            size = self.path.stat().st_size
            start = 0 if size < self.offset else self.offset  # shorter than what was read: started afresh
            with open(self.path, "rb") as handle:
                handle.seek(start)
                chunk = handle.read(size - start)
        except OSError:
            return {}
        reset = start < self.offset
        end = chunk.rfind(b"\n") + 1  # a line being written is read once complete
        self.offset = start + end
        self.lines = (0 if reset else self.lines) + chunk.count(b"\n", 0, end)
        return {"lines": chunk[:end], "reset": reset} if end or reset else {}


def expand_shard_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """The shard folders ``merge`` is given: a shard's output (it holds SHARD_FILE) as it is; another folder,
    such as the ``--out DIR`` of ``eval --shard i/n``, stands for the ``shard-i-of-n`` folders of its one split."""
    expanded: list[Path] = []
    for path in map(Path, paths):
        if (path / SHARD_FILE).is_file() or not path.is_dir():
            expanded.append(path)  # a missing one: read_shard says so
            continue
        splits: dict[int, list[Path]] = {}
        for child in path.iterdir():
            match = SHARD_FOLDER.fullmatch(child.name)
            if match and child.is_dir():
                splits.setdefault(int(match.group(2)), []).append(child)
        if not splits:
            raise UserError(f"merge: {path} is neither a shard's output (no {SHARD_FILE}) nor a folder of shard-i-of-n "
                            "folders; name the folders 'ssd-eval eval --shard i/n' wrote (its --out DIR/shard-i-of-n)")
        if len(splits) > 1:
            named = "; ".join(f"{len(dirs)} of {n} ({path}/shard-*-of-{n})" for n, dirs in sorted(splits.items()))
            raise UserError(f"merge: {path} holds shards of {len(splits)} splits: {named}; name the folders of one "
                            "split, and remove the other's")
        [(_, dirs)] = splits.items()
        expanded += sorted(dirs, key=lambda d: int(SHARD_FOLDER.fullmatch(d.name).group(1)))
    return expanded


def write_shard_manifest(out_dir: Path, config: Config, shard: tuple[int, int], image_ids: list[int],
                          provenance: dict[str, Any]) -> None:
    """Write shard.json last: it names the shard's images, pins its detections.json (count, sha256) and holds the
    identity every shard of one evaluation must share to be merged: model and annotation bytes, and the settings
    that shape detections or select images (as the resume cache key: not paths, threads, batch size or outputs)."""
    settings = config.to_dict()
    runtime = settings.pop("runtime")
    for volatile in ("output", "pipeline", "metrics", "tracking"):
        settings.pop(volatile)
    settings["runtime"] = {"graph_optimization": runtime["graph_optimization"],
                           "session_config": provenance["runtime"].get("session_config", {}),
                           "providers": provenance["runtime"]["providers"]}
    for key in ("path", "url", "size", "sha256"):  # the model's bytes are pinned by its sha256
        settings["model"].pop(key)
    for key in ("annotations", "images", "annotations_url", "images_url", "downloads_dir", "annotations_zip_size",
                "annotations_zip_sha256", "images_zip_size", "images_zip_sha256"):
        settings["dataset"].pop(key)
    settings["switches"] = config.switches()
    atomic_write_json(out_dir / SHARD_FILE, {
        "variant": config.variant,
        "shard": list(shard),
        "image_ids": image_ids,
        "detections_file": {"count": provenance["detections"],
                            "sha256": utils.sha256_of(out_dir / "detections.json")},
        "identity": {"model_sha256": provenance["model"]["sha256"],
                     "annotations_sha256": provenance["annotations"]["sha256"],
                     "settings": flatten_dotted(settings)},
        "provenance": provenance,
    })


def read_shard(directory: Path) -> tuple[dict[str, Any], Callable[[], Iterator[dict]]]:
    """A shard's manifest, checked with the detections.json it pins, and a function that streams those detections
    afresh each call (a merge never holds every detection)."""
    manifest_path, detections_path = directory / SHARD_FILE, directory / "detections.json"
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: not found; is {directory} the output of 'ssd-eval eval --shard'?") from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8
        raise UserError(f"{directory}: unreadable shard output ({exc})") from None
    if not _is_shard_manifest(manifest):
        raise UserError(f"{manifest_path}: not a shard manifest written by 'ssd-eval eval --shard'")
    pinned = manifest["detections_file"]
    rerun = f"run 'ssd-eval eval --shard {manifest['shard'][0]}/{manifest['shard'][1]}' again"
    try:
        digest = utils.sha256_of(detections_path)
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: not found; is {directory} the output of 'ssd-eval eval --shard'?") from None
    except OSError as exc:
        raise UserError(f"{directory}: unreadable shard output ({exc})") from None
    if digest != pinned["sha256"]:
        raise UserError(f"{detections_path}: is not the file {manifest_path} was written with (sha256 differs); "
                        f"it was changed or replaced: {rerun}")
    image_ids = set(manifest["image_ids"])
    count, last_image, foreign, unordered = 0, None, None, False
    for detection in _detection_lines(detections_path, directory):
        if not is_detection(detection):
            raise UserError(f"{detections_path}: not a list of COCO results (image_id, category_id, bbox, score)")
        if foreign is None and detection["image_id"] not in image_ids:
            foreign = detection["image_id"]
        unordered = unordered or (last_image is not None and detection["image_id"] < last_image)
        count, last_image = count + 1, detection["image_id"]
    if count != pinned["count"]:
        raise UserError(f"{detections_path}: holds {count} detections but {manifest_path} records "
                        f"{pinned['count']}: {rerun}")
    if foreign is not None:
        raise UserError(f"{detections_path}: holds detections of image {foreign}, which is not one of the images "
                        f"of {manifest_path}: {rerun}")
    if unordered:  # the merge reads the shards side by side in image order
        raise UserError(f"{detections_path}: detections are not in ascending image order: {rerun}")
    return manifest, lambda: _detection_lines(detections_path, directory)


def _detection_lines(path: Path, directory: Path) -> Iterator[Any]:
    """``results.iter_detections`` of a shard's detections.json, a read error as one line naming the shard."""
    try:
        yield from iter_detections(path)
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8
        raise UserError(f"{directory}: unreadable shard output ({exc})") from None


def _is_shard_manifest(manifest: Any) -> bool:
    """Whether ``manifest`` has every field ``merge_shards`` reads, of the right type."""
    if not isinstance(manifest, dict):
        return False
    shard, pinned = manifest.get("shard"), manifest.get("detections_file")
    identity, provenance = manifest.get("identity"), manifest.get("provenance")
    if not (isinstance(shard, list) and len(shard) == 2 and all(is_int(v) for v in shard)
            and 1 <= shard[0] <= shard[1]
            and isinstance(manifest.get("image_ids"), list) and all(is_int(i) for i in manifest["image_ids"])
            and isinstance(pinned, dict) and is_int(pinned.get("count")) and isinstance(pinned.get("sha256"), str)
            and isinstance(identity, dict) and isinstance(identity.get("annotations_sha256"), str)
            and isinstance(provenance, dict)):
        return False
    skipped = provenance.get("skipped_images")
    return (isinstance(provenance.get("config"), dict) and isinstance(provenance.get("images_dir"), str)
            and isinstance(provenance.get("annotations"), dict)
            and isinstance(provenance["annotations"].get("path"), str)
            and isinstance(skipped, list) and all(isinstance(s, dict) and is_int(s.get("image_id")) for s in skipped)
            and all(isinstance(provenance.get(k), (int, float)) and not isinstance(provenance.get(k), bool)
                    for k in ("resumed_images", "inference_time_s", "wall_time_s")))


def run_image_ids(config: Config, dataset: data.CocoDataset, shard: tuple[int, int] | None = None
                  ) -> tuple[list[int], subsets.Subset | None]:
    """The image ids a run of ``config`` evaluates (of ``shard`` i/n, None: all), and its opened subset file."""
    opened = subsets.open_subset(config.dataset.subset, dataset.sha256) if config.dataset.subset else None
    image_ids = subsets.select_image_ids(
        dataset, limit=config.dataset.limit, subset=opened,
        skip_images_without_annotations=config.switches()["skip_images_without_annotations"], shard=shard)
    return image_ids, opened


def shard_config(directory: Path, manifest: dict[str, Any]) -> Config:
    """The config a shard was run with (``directory``'s manifest), as its merge runs it: partial and named as
    the shards were, tracking off (a merge is tracked by its caller's ``on_result``)."""
    provenance = manifest["provenance"]
    config = config_from_dict(provenance["config"], default_origin=str(directory / SHARD_FILE))
    config.overridden = tuple(provenance.get("overridden") or ())
    config.named_by = (provenance.get("name") or {}).get("from")
    config.tracking.log = []
    return config


def merge_out_dir(shard_dirs: Sequence[str | Path], out_dir: str | Path | None = None) -> Path | None:
    """The folder ``merge_shards(shard_dirs, out_dir)`` writes to (None when no shard is named)."""
    if out_dir:
        return Path(out_dir)
    if not shard_dirs:
        return None
    first_dir = expand_shard_dirs(shard_dirs)[0]
    return shard_config(first_dir, read_shard(first_dir)[0]).out_dir


def merge_shards(shard_dirs: Sequence[str | Path], out_dir: str | Path | None = None, *,
                 launch: dict[str, Any] | None = None, on_result: Callable[[EvalResult], Any] | None = None,
                 locked: bool = False, strict: bool = False) -> EvalResult:
    """Score shard outputs together after checking they cover the image set exactly once. ``launch``: provenance
    entries of ``eval --jobs`` over the merged ones; ``strict``, ``on_result`` as ``pipeline.evaluate``'s;
    ``locked``: the caller holds the output folder's lock (else it is held here until ``on_result`` has run)."""
    if not shard_dirs:
        raise UserError("merge: name the shard directories to merge")
    shards = [(d, *read_shard(d)) for d in expand_shard_dirs(shard_dirs)]
    first_dir, first, _ = shards[0]
    total = first["shard"][1]
    for directory, manifest, _ in shards[1:]:
        if manifest["identity"] != first["identity"]:
            raise UserError(f"{directory}: shard was made with a different model, annotation file or config than "
                            f"{first_dir} ({_identity_difference(first['identity'], manifest['identity'])})")
        if manifest["shard"][1] != total:
            raise UserError(f"{directory}: shard {manifest['shard'][0]}/{manifest['shard'][1]} does not belong to a "
                            f"split into {total} like {first_dir}")
    indices = collections.Counter(m["shard"][0] for _, m, _ in shards)
    duplicated = sorted(i for i, n in indices.items() if n > 1)
    if duplicated:
        raise UserError(f"merge: shard {duplicated[0]}/{total} is given more than once")
    seen: dict[int, Path] = {}
    for directory, manifest, _ in shards:
        for image_id in manifest["image_ids"]:
            if image_id in seen:
                raise UserError(f"merge: image {image_id} is in both {seen[image_id]} and {directory}")
            seen[image_id] = directory
    missing = sorted(set(range(1, total + 1)) - set(indices))
    if missing:
        raise UserError(f"merge: shard {missing[0]}/{total} is missing (got {sorted(indices)})")

    provenance = first["provenance"]
    config = shard_config(first_dir, first)
    extras.check(config.needed_extras())
    dataset = data.load_annotations(provenance["annotations"]["path"], provenance["images_dir"])
    if dataset.sha256 != first["identity"]["annotations_sha256"]:
        raise UserError(f"{dataset.annotations_path}: changed since the shards were made (sha256 differs)")
    expected, opened = run_image_ids(config, dataset)
    skipped = [s for _, m, _ in shards for s in m["provenance"]["skipped_images"]]
    covered = set(seen) | {s["image_id"] for s in skipped}
    if covered != set(expected):
        absent = sorted(set(expected) - covered)
        raise UserError(f"merge: the shards do not cover the image set (e.g. image {absent[0] if absent else '?'} "
                        "is missing)")
    image_ids = sorted(seen)
    target = Path(out_dir) if out_dir else config.out_dir
    if any(target.resolve() == d.resolve() for d, _, _ in shards) or (target / SHARD_FILE).is_file():
        raise UserError(f"{target}: is a shard folder (it holds {SHARD_FILE}); merging into it would replace the "
                        "shard's own output: choose another --out")
    subset = subset_record(config, dataset, opened)
    if subset is not None and subset["ids_sha256"] != (provenance.get("subset") or {}).get("ids_sha256"):
        raise UserError(f"{first_dir / SHARD_FILE}: was made from another version of subset {subset['name']} "
                        "than the one in subsets/ now: run the shards again")

    categories = postprocess.label_map(dataset.category_ids, config.postprocess.label_map)
    label_notes = postprocess.label_space_notes(categories, dataset.gt["categories"],
                                                explicit=config.postprocess.label_map is not None)
    output_counts = None
    for _, manifest, _ in shards:
        output_counts = postprocess.add_counts(output_counts, manifest["provenance"].get("output_counts"))
    output_warnings = postprocess.checked_outputs(output_counts, config.switches()["score_threshold"], strict=strict)

    def detections() -> Iterator[dict]:  # in ascending image order, as a single run lists them
        return heapq.merge(*(read() for _, _, read in shards), key=lambda d: d["image_id"])

    count = sum(m["detections_file"]["count"] for _, m, _ in shards)
    scores, intervals, full_set, bootstrap = score_run(
        config, dataset.gt, detections, image_ids, count=count, source="merged shards", subset=subset,
        warnings=[*label_notes, *output_warnings], say=progress_log.info)
    merged = {
        **provenance,
        "images": len(image_ids),
        "image_ids_sha256": hash_data(image_ids),
        "skipped_images": skipped,
        "detections": count,
        "shards": [f"{index}/{total}" for index in range(1, total + 1)],  # each exactly once, checked above
        "resumed_images": sum(m["provenance"]["resumed_images"] for _, m, _ in shards),
        "inference_time_s": round(sum(m["provenance"]["inference_time_s"] for _, m, _ in shards), 3),
        "wall_time_s": round(sum(m["provenance"]["wall_time_s"] for _, m, _ in shards), 3),
        "images_per_s": None,  # shards ran in parallel or apart: no meaningful single rate
        "stages": None,  # each shard's own are in its shard.json
        "speed_from_cache": False,
        "merged_from": [str(d) for d, _, _ in shards],
        "bootstrap": bootstrap,
        "subset": subset,
        "output_counts": output_counts,
        "date": now(),
        **(launch or {}),
    }
    out_dir = prepare_out_dir(target)
    with contextlib.ExitStack() as held:
        if not locked:
            held.enter_context(folder_lock(out_dir))
        tidy_output_dir(out_dir, discard_results=True)  # a failure below cannot leave an old metrics.json standing
        write_detections(out_dir / "detections.json", detections())
        return write_run_result(config, scores, merged, intervals, full_set, dataset.gt, out_dir, image_ids,
                                on_result=on_result)


def _identity_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    differing = [f"{k} {str(a.get(k))[:12]} vs {str(b.get(k))[:12]}" for k in ("model_sha256", "annotations_sha256")
                 if a.get(k) != b.get(k)]
    settings_a, settings_b = a.get("settings", {}), b.get("settings", {})
    differing += [f"{k} {settings_a.get(k)!r} vs {settings_b.get(k)!r}"
                  for k in sorted(set(settings_a) | set(settings_b)) if settings_a.get(k) != settings_b.get(k)]
    return ", ".join(differing)
