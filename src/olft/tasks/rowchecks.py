"""Checks of one CSV/TSV record against its file: the header names each column once, a row has
the fields the header and the columns read need, and a quoted field that runs over several lines
has not swallowed rows of its own (an unbalanced quote). Each refusal is one `OlftError` naming
the line and the fix; `olft.tasks.io` reads the tables and calls these on every record.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from olft.errors import OlftError
from olft.tasks.registry import Task, at_line, parse_label


@dataclass(frozen=True)
class Row:
    """One parsed record and the physical lines (1-based) it came from."""

    line: int  # first line of the record
    last: int  # last line: later than `line` only when a quoted field runs over several lines
    fields: list[str]


def check_unique_header(header: list[str], path: Path, line: int) -> None:
    """Refuse a header that names a column twice: only the first would be read, silently (two
    `label` columns that disagree would train on one of them unseen), as JSON Lines refuses a key
    given twice. Unnamed columns (a trailing delimiter) may repeat: nothing reads them by name."""
    seen: dict[str, int] = {}
    for i, name in enumerate(h.strip() for h in header):
        if name and name in seen:
            raise OlftError(f"{at_line(path, line)}: the header names column {name!r} twice (columns {seen[name] + 1} "
                            f"and {i + 1}). Rename or remove one of them, so each column has a name of its own.")
        seen.setdefault(name, i)


def check_row_shape(path: Path, header: list[str], row: Row, need: int, delimiter: str) -> None:
    """Refuse a row with fewer fields than the columns read need, or more than the header names."""
    if len(row.fields) < need:
        names = ", ".join(header[:need])
        raise OlftError(f"{at_line(path, row.line)}: {len(row.fields)} field(s), but rows need at "
                        f"least {need} ({names}). Check the line is complete and "
                        "delimited like the header.")
    if len(row.fields) > len(header):  # a delimiter inside a text shifts every later column
        raise OlftError(f"{at_line(path, row.line)}: {len(row.fields)} fields, but the header has "
                        f"{len(header)}. A text holding the delimiter ({delimiter!r}) must be "
                        "quoted (CSV) or have it removed (TSV); or name the extra column in "
                        "the header.")


def check_no_merged_rows(path: Path, row: Row, lines: list[str], need: int, width: int,
                          delimiter: str) -> None:
    """Refuse a multi-line quoted field holding a line that reads as a row of its own (no labels).

    Without a label to tell a merged row from a line of text, a line inside the field that
    splits into a whole row's fields (at least the columns read, at most the header's) is taken
    for a row an unbalanced quote swallowed. A text that really runs over lines fits JSON Lines.
    """
    for number in range(row.line + 1, row.last):  # the last line holds the closing quote
        fields = next(csv.reader([lines[number - 1]], delimiter=delimiter), [])
        if need <= len(fields) <= width:
            raise OlftError(f"{at_line(path, row.line)}: a quoted field opened on this line runs on to "
                            f"line {row.last}, and line {number} inside it reads as a row of its own: "
                            "an unbalanced quote? A quote inside a text must be doubled (\"\") or the "
                            "whole field quoted; a text that really spans lines can go in a .jsonl file.")


def check_no_swallowed_rows(task: Task, path: Path, row: Row, lines: list[str], need: int,
                             label_idx: int, delimiter: str) -> None:
    """Refuse a multi-line quoted field whose inner lines read as rows of their own.

    An unbalanced quote makes the csv module read on to the next quote, merging every row in
    between into one field. A real multi-line text rarely has, on a line of its own, enough
    fields and a valid label in the label column; merged rows always do.
    """
    for number in range(row.line + 1, row.last):  # the last line holds the closing quote
        fields = next(csv.reader([lines[number - 1]], delimiter=delimiter), [])
        if len(fields) < need:
            continue
        try:
            parse_label(task, fields[label_idx], "")
        except OlftError:
            continue
        raise OlftError(f"{at_line(path, row.line)}: a quoted field opened on this line runs on to "
                        f"line {row.last}, and line {number} inside it reads as a row of its own: "
                        "an unbalanced quote? A quote inside a text must be doubled (\"\") or the "
                        "whole field quoted.")
