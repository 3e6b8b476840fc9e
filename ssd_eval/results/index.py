"""Finished results on disk: find, load and group metrics.json files by what they measured."""

from __future__ import annotations

import logging
from pathlib import Path

from ssd_eval.config.schema import run_name
from ssd_eval.errors import UserError
from ssd_eval.results.result import read_metrics_file

log = logging.getLogger(__name__)


def load_results(results_dir: Path, *, include_partial: bool = False) -> list[dict]:
    """Every `results_dir/*/metrics.json` (read_metrics_file; a missing folder: none), sorted by path, except
    partial runs (`is_partial`) outside their variant's canonical folder unless `include_partial`."""
    results = [read_metrics_file(p) for p in sorted(Path(results_dir).glob("*/metrics.json"))]
    partial = [r for r in results if is_partial(r) and Path(r["_source"]).parent.name
               != run_name(r["variant"], r["protocol"], result_subset(r))]
    if partial and not include_partial:
        log.info("leaving out %d partial runs (not the variants' results): %s", len(partial),
                 ", ".join(r["_source"] for r in partial))
        results = [r for r in results if all(r is not p for p in partial)]
    return results


def is_partial(result: dict) -> bool:
    """Whether a result is of a partial run (`provenance.partial`), never taken for the variant's result."""
    return bool((result.get("provenance") or {}).get("partial"))


def result_subset(result: dict) -> str | None:
    """The name of the image subset a result was evaluated on (`provenance.subset.name`), None for the full set."""
    subset = (result.get("provenance") or {}).get("subset")
    return subset.get("name") if isinstance(subset, dict) else None


def describe_image_set(subset: str | None) -> str:
    """`subset ci-500` or `full set`: how messages name an image set."""
    return "full set" if subset is None else f"subset {subset}"


def own_data(result: dict) -> str | None:
    """`own annotations` or `own images` when the run overrode its config file's (else None)."""
    overridden = (result.get("provenance") or {}).get("overridden") or []
    if "dataset.annotations" in overridden:
        return "own annotations"
    return "own images" if "dataset.images" in overridden else None


def image_set(result: dict) -> str:
    """Which images a result was scored on, as the table and the report name them: `full set`, the subset's
    name (`ci-500`), `limit N`, `own annotations` / `own images`, or several joined (`own annotations, limit 50`)."""
    limit = (result.get("provenance") or {}).get("limit")
    parts = [own_data(result), result_subset(result), None if limit is None else f"limit {limit}"]
    return ", ".join(part for part in parts if part) or "full set"


def table_order(result: dict) -> tuple:
    """How the table and the report order results: by variant, protocol, then image set (the full set, subsets
    by name, limits by size, runs on one's own data last)."""
    limit = (result.get("provenance") or {}).get("limit") or 0  # an int or null (read_metrics_file)
    subset = result_subset(result) or ""
    kind = 1 if subset else 2 if limit else 0
    return str(result["variant"]), str(result["protocol"]), own_data(result) or "", kind, subset, limit


def comparison_groups(results: list[dict]) -> list[list[dict]]:
    """`results` split into the runs the table would compare (same protocol, image subset, evaluated image ids
    and annotation file), all in `table_order`."""
    groups: dict[tuple, list[dict]] = {}
    for result in sorted(results, key=table_order):
        provenance = result.get("provenance") or {}
        key = (str(result["protocol"]), result_subset(result) or "", str(provenance.get("image_ids_sha256")),
               str((provenance.get("annotations") or {}).get("sha256")))
        groups.setdefault(key, []).append(result)
    return list(groups.values())


class ResultIndex:
    """Every `results_dir/*/metrics.json`, read and checked once, and the lookup (`find`) the gate and
    `baseline --update` share."""

    def __init__(self, results_dir: Path):
        self.results_dir = Path(results_dir)
        self.entries: dict[Path, dict | UserError] = {}
        for path in sorted(self.results_dir.glob("*/metrics.json")):
            try:
                self.entries[path] = read_metrics_file(path)
            except UserError as exc:
                self.entries[path] = exc  # raised only when this file is the one asked for

    def results(self) -> list[dict]:
        """The readable results of full runs (not `is_partial`), in path order."""
        return [e for e in self.entries.values() if isinstance(e, dict) and not is_partial(e)]

    def errors(self) -> list[UserError]:
        """The unreadable or malformed files, in path order."""
        return [e for e in self.entries.values() if isinstance(e, UserError)]

    def protocols(self, variant: str) -> list[str]:
        """The protocols `variant` has results under, in order of first appearance."""
        return list(dict.fromkeys(r["protocol"] for r in self.results() if r["variant"] == variant))

    def find(self, variant: str, protocol: str, role: str, subset: str | None = None) -> tuple[dict, str | None]:
        """The result of `variant` under `protocol` on `subset` (None: the full set) from its canonical folder,
        else the only other one with a note; UserError saying why not and what it was wanted for (`role`)."""
        path = self.results_dir / run_name(variant, protocol, subset) / "metrics.json"
        entry = self.entries.get(path)
        if isinstance(entry, UserError):
            raise entry
        if entry is not None:
            if entry["variant"] != variant:
                raise UserError(f"{path}: holds variant {entry['variant']!r}, not {variant!r} ({role})")
            return entry, None
        others = [r for r in self.results() if r["variant"] == variant and r["protocol"] == protocol
                  and result_subset(r) == subset]
        if len(others) > 1:
            raise UserError(f"{path}: missing, and {len(others)} other results of {variant} under "
                            f"protocol {protocol} exist: {', '.join(r['_source'] for r in others)}; "
                            f"move the one to use to {path.parent}/ ({role})")
        if others:
            return others[0], (f"note: {variant} (protocol {protocol}): {path.parent}/ missing; "
                               f"using {others[0]['_source']}")
        hint = f"make eval MODEL={variant}" + ("" if protocol == "coco" else f" PROTOCOL={protocol}")
        hint += "" if subset is None else f" ARGS='--subset {subset}'"
        raise UserError(f"{path}: missing ({role}, protocol {protocol}); run `{hint}` first")
