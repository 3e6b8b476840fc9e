"""The comparison table's rows as text: the columns, the views (default, ``--all``) with their numbered notes,
the terminal table, Markdown and CSV. A view shows a cell without a number empty and moves why (``n/a: ...``) or
what qualifies it (``(cached)``) to the row's note; table.csv keeps the reasons in ``*_note`` columns."""

from __future__ import annotations

import csv
import io
import re

from ssd_eval.results.summary import align_columns

COLUMNS = (
    ("variant", "variant"), ("protocol", "protocol"), ("image_set", "image set"), ("images", "images"),
    ("subset", "subset"), ("map", "mAP"), ("map_ci", "mAP ± ci"), ("published_map", "published mAP"),
    ("delta", "delta"), ("drop_pct", "drop %"), ("drop_ci", "drop ± ci"),
    ("ap50", "AP50"), ("ap75", "AP75"), ("aps", "APs"), ("apm", "APm"), ("apl", "APl"),
    ("images_per_s", "images/s"), ("speedup", "speedup"), ("provider", "provider"), ("int8_path", "int8 path"),
    ("date", "date"), ("model_sha256", "model sha256"),
)
"""(row key, display header) for every table column, in order: table.csv and the ``--all`` view."""

DEFAULT_COLUMNS = (
    ("variant", "variant"), ("protocol", "protocol"), ("image_set", "image set"), ("images", "images"),
    ("map_interval", "mAP (95% ci)"), ("published_map", "published"), ("delta", "delta"), ("drop_pct", "drop %"),
    ("images_per_s", "images/s"), ("model_sha", "sha256"),
)
"""(row key, display header) of the default terminal and TABLE.md view: the columns a reader compares,
at most ~120 characters wide with real values (``--all``: COLUMNS)."""

QUALIFIED = ("delta", "images_per_s")
"""Columns whose cell may carry a qualifier in brackets (``6.98 (cached)``), which the views move to the note."""

QUALIFIER_NOTES = {"cached": "from the resume cache, as measured when its images were inferred"}
"""The note a view gives a qualifier that is too short to explain itself."""

CSV_NUMERIC = ("images", "map", "map_ci", "published_map", "delta", "drop_pct", "drop_ci", "ap50", "ap75", "aps",
               "apm", "apl", "images_per_s", "speedup")
"""table.csv columns that hold only a number or nothing (a "± ci" column: the interval's half width)."""

CSV_NOTES = {"map_ci": "map_ci_note", "delta": "delta_note", "drop_pct": "drop_note", "drop_ci": "drop_ci_note",
             "apl": "area_note", "images_per_s": "images_per_s_note", "speedup": "speedup_note"}
"""The note column table.csv adds after a numeric column (``area_note``, after apl: for APs, APm and APl)."""

CSV_COLUMNS = tuple(name for key, _ in COLUMNS for name in (key, CSV_NOTES.get(key)) if name)
"""table.csv's header: the COLUMNS keys, each with a CSV_NOTES column after it."""


def _one_line(cell) -> str:
    """A cell on one line: a name holding a newline must not break a table."""
    return " ".join(str(cell).split())


def _view_cell(row: dict, key: str) -> tuple[str, str]:
    """What a view shows in a cell, and the reason (of an ``n/a`` cell, shown empty) or the qualifier (of a
    QUALIFIED cell) it moves to the row's note."""
    cell = _one_line(row[key])
    if cell.startswith("n/a"):
        reason = cell.removeprefix("n/a").removeprefix(":").strip()
        if not reason and key in ("aps", "apm", "apl"):
            reason = _one_line(row.get("area_note", "")).removeprefix("n/a: ")
        return "", reason or "not available"
    if key in QUALIFIED:
        match = re.fullmatch(r"(\S+) \((.+)\)", cell)
        if match:
            return match[1], QUALIFIER_NOTES.get(match[2], match[2])
    return cell, ""


def table_view(rows: list[dict], *, all_columns: bool = False) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, cell rows, notes) of the default view or, with ``all_columns``, of every column; a ``note``
    column, when some row has one, numbers each reason once, listed in ``notes`` as "<columns>: <reason>"."""
    columns = COLUMNS if all_columns else DEFAULT_COLUMNS
    notes: dict[str, int] = {}
    grid = []
    for row in rows:
        cells, reasons = [], {}
        for key, header in columns:
            cell, reason = _view_cell(row, key)
            cells.append(cell)
            if reason:
                reasons.setdefault(reason, []).append(header)
        numbers = [notes.setdefault(f"{', '.join(headers)}: {reason}", len(notes) + 1)
                   for reason, headers in reasons.items()]
        grid.append(cells + [",".join(str(n) for n in numbers)])
    headers = [header for _, header in columns] + ["note"]
    if not notes:  # no row has a note: no note column
        headers, grid = headers[:-1], [cells[:-1] for cells in grid]
    return headers, grid, [f"{number}. {text}" for text, number in notes.items()]


_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?(e[+-]?\d+)?%?x?")


def _csv_safe(cell: str) -> str:
    """A cell a spreadsheet will not run as a formula (text starting with = + - @ gets a leading ')."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@") and not _NUMBER.fullmatch(cell) else cell


def render_markdown(rows: list[dict], *, all_columns: bool = False) -> str:
    """build_rows' rows as a GitHub-flavoured Markdown table (table_view), then its numbered notes."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    headers, grid, notes = table_view(rows, all_columns=all_columns)
    out = [line(headers), "|" + "---|" * len(headers)]
    out += [line(cells) for cells in grid]
    if notes:
        out += ["", "Notes:", ""] + [text.replace("|", "\\|") for text in notes]
    return "\n".join(out) + "\n"


_CELL = re.compile(r"(?P<number>[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?:%|x)?(?: ± (?P<half>\d+(?:\.\d+)?))?"
                   r"(?: (?P<bounds>\[(?P<low>[+-]?\d+(?:\.(?P<decimals>\d+))?), (?P<high>[+-]?\d+(?:\.\d+)?)\]))?"
                   r"(?: \((?P<note>.*)\))?")


def _split_cell(key: str, cell: str) -> tuple[str, str]:
    """A numeric column's display cell as (number or "", note): ``0.98x`` -> 0.98; ``+0.0012 (int8 on
    ...)`` -> +0.0012 and the note; ``0.5316 ± 0.0100`` -> 0.0100 (the half width); ``0.5316 [0.4000, 0.6200]``
    -> 0.1100 (the half width) and the interval in the note; ``n/a: ...`` -> the note."""
    match = _CELL.fullmatch(cell)
    if match is None:
        return "", cell
    note = match["note"] or ""
    if key.endswith("_ci") and match["bounds"]:
        half = (float(match["high"]) - float(match["low"])) / 2
        return f"{half:.{len(match['decimals'] or '')}f}", "; ".join(filter(None, [match["bounds"], note]))
    number = match["half"] if key.endswith("_ci") and match["half"] else match["number"]
    return number, note


def render_csv(rows: list[dict]) -> str:
    """build_rows' rows as CSV under CSV_COLUMNS: numeric columns (CSV_NUMERIC) hold a number or nothing, and
    why a number is missing or what qualifies it goes to the column's note column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        record = []
        for key, _ in COLUMNS:
            cell, note = _one_line(row[key]), ""
            if key in CSV_NUMERIC:
                cell, note = _split_cell(key, cell)
            if key == "apl":  # one note for the three area columns
                note = _one_line(row["area_note"])
            record += [cell, note] if key in CSV_NOTES else [cell]
        writer.writerow([_csv_safe(cell) for cell in record])
    return buffer.getvalue()


def render_terminal(rows: list[dict], *, all_columns: bool = False) -> str:
    """build_rows' rows as aligned plain text under a header line (table_view), then the numbered notes."""
    headers, grid, notes = table_view(rows, all_columns=all_columns)
    return align_columns(headers, grid) + "\n" + "".join(f"{text}\n" for text in notes)
