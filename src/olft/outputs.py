"""predict's output files: rows written as CSV, TSV or JSON Lines (atomically), and the checks that
refuse an --output that cannot be written before any model is loaded.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from olft.atomic import atomic_write
from olft.errors import OlftError

FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None}


def write_rows(path: Path, rows: list[dict], columns: Sequence[str] = ()) -> None:
    """Write rows as CSV, TSV or JSON Lines (by the extension), atomically.

    The columns are `columns` first, in that order, then every row's other keys in order of
    appearance; a row lacking one (a JSON object without that key, a short CSV row) leaves its
    cell empty (CSV/TSV) or the key out (JSON Lines).
    Raises OlftError naming the path where the file cannot be written.
    """
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        cells = [{k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in r.items()} for r in rows]  # JSONL input's lists
        buf = io.StringIO()
        fields = list(dict.fromkeys([*columns, *(k for r in rows for k in r)]))
        # TSV is written as it is read (GLUE's layout, io.read_table): quoting off, one record a line
        tsv = {"quoting": csv.QUOTE_NONE, "quotechar": None} if suffix == ".tsv" else {}
        if tsv:
            check_tsv_rows(path, [dict(zip(fields, fields, strict=True)), *cells])
        writer = csv.DictWriter(buf, fieldnames=fields, restval="", delimiter=FORMATS[suffix], lineterminator="\n", **tsv)
        writer.writeheader()
        writer.writerows(cells)
        text = buf.getvalue()
    with writing(path), removed_if_left_empty(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)


def check_tsv_rows(path: Path, rows: list[dict]) -> None:
    """Refuse (OlftError) rows for a .tsv --output that a TSV reader would misread: TSV is written
    with quoting off, as GLUE's files are read, so a cell holding a tab or a line break cannot be
    written. Rows of other outputs pass."""
    if path.suffix.lower() != ".tsv":
        return
    for number, row in enumerate(rows, 1):
        for key, value in row.items():
            for cell, what in ((key, "column name"), (value, "value")):
                if isinstance(cell, str) and any(c in cell for c in "\t\n\r"):
                    where = f"the {what} {cell!r}" + (f" (column {key!r}, row {number - 1})" if what == "value" else "")
                    raise OlftError(f"--output {path}: {where} holds a tab or line break, which a TSV file (written "
                                    "unquoted, as GLUE's are read) cannot hold. Name the output .csv or .jsonl instead.")


@contextmanager
def removed_if_left_empty(folder: Path) -> Iterator[None]:
    """On any exception (Ctrl-C and SIGTERM too) inside, remove `folder` and the parents of it that
    did not exist on entry, where they are still empty: an output folder made for files that were
    never written is a half-written output. A folder that existed before, or that holds anything,
    is kept. Re-raises the exception."""
    made = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        made.append(path)  # deepest first, as they are removed
    try:
        yield
    except BaseException:
        for path in made:
            try:
                path.rmdir()  # fails, and so keeps the folder, unless it is empty
            except OSError:
                break
        raise


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing `path` (a full disk, a folder gone meanwhile) into OlftError."""
    try:
        yield
    except OSError as exc:
        raise OlftError(f"Cannot write {path} ({exc.strerror or exc}). Pass --output a path in a writable folder.") from None


def check_output(path: Path, input: Path | None = None) -> None:
    """Refuse an --output file that cannot be written, before any model is loaded.

    Raises OlftError for an unknown extension, an existing folder, a parent that is missing,
    a file, or not writable, and the --input file itself (it would be overwritten).
    """
    if path.is_dir():
        raise OlftError(f"--output {path} is a folder: pass a file name (.csv, .tsv or .jsonl).")
    if path.suffix.lower() not in FORMATS:
        raise OlftError(f"Unsupported output file {path}: name it .csv, .tsv or .jsonl (the format follows the extension).")
    if input is not None and (path.resolve() == input.resolve() or (path.exists() and input.exists() and path.samefile(input))):
        raise OlftError(f"--output {path} is the --input file: it would be overwritten. Pass another --output.")
    check_writable(_existing_ancestor(path.parent), path)  # missing folders are made, as export and --split test do


def check_folder_output(path: Path) -> None:
    """Refuse an output folder (created with its parents when written) that cannot be made:
    a file in its place or above it, or an unwritable folder above it. Raises OlftError."""
    if path.exists() and not path.is_dir():
        raise OlftError(f"--output {path} is a file; a folder is written there. Pass a new folder.")
    check_writable(_existing_ancestor(path), path)


def _existing_ancestor(path: Path) -> Path:
    """`path` or its nearest parent that exists (resolved)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def check_writable(folder: Path, output: Path) -> None:
    """OlftError unless a file can be created in `folder`, which `output` is written in (or under).

    Tried by creating a file: os.access says yes to root even where nothing can be created (/proc).
    """
    if not folder.is_dir():
        raise OlftError(f"{folder} is a file, not a folder, so --output {output} cannot be written. Pass another --output.")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".olft-check"):
            pass
    except OSError as exc:
        raise OlftError(f"Cannot write --output {output}: folder {folder} is not writable ({exc.strerror or exc}). "
                        "Pass another --output.") from None
