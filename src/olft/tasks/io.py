"""Readers: the original GLUE TSV layout, the `datasets` library, and a user's CSV/TSV/JSONL
(`read_file`: labelled training data, or files to predict on whose labels are optional).

All return the same `Example` list, each example knowing its file and line (`Example.source`).
No reader loses or merges rows silently: every record is checked against the file it came from
(field counts against the header, quoted fields that run over several lines against what those
lines hold), and every problem surfaces as one `OlftError` that names the line and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olft.errors import OlftError
from olft.tasks.registry import Example, Line, Task, allowed_labels, at_line, check_split, parse_label
from olft.tasks.rowchecks import Row, check_no_merged_rows, check_no_swallowed_rows, check_row_shape, check_unique_header

HF_DATASET = "nyu-mll/glue"


# -------------------------------------------------------------------------- text and tables

def _read_text(path: Path, fix: str) -> str:
    """Read a whole file as UTF-8 text (BOM stripped), naming the fix for any failure."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OlftError(f"Cannot read {path}: {exc.strerror or exc}. {fix}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise OlftError(f"{path} is UTF-16 text; re-save it as UTF-8.")
    if b"\x00" in data:
        raise OlftError(f"{path} looks like a binary file (NUL byte at byte offset "
                        f"{data.index(0)}), not text. {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)  # 1-based, in bytes
        raise OlftError(f"{at_line(path, line)}: not valid UTF-8 (bad byte at byte {column} of the line, "
                        f"byte {exc.start} of the file). Re-save the file as UTF-8.") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise OlftError(f"{path} is empty. {fix}")
    return text


def _parse_rows(text: str, path: Path, delimiter: str, quoted: bool) -> list[Row]:
    """Split text into records, skipping blank lines.

    GLUE TSVs contain stray quote characters, so they are read with quoting off (one record per
    line); real CSV files need quoting on (fields with commas are quoted) and may span lines.
    Quoted reading is strict: a quote that does not close a field cleanly is an error naming
    the line where that record starts, not a field that silently eats the rows after it.
    """
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=quoted)
    rows, start = [], 1
    try:
        for fields in reader:
            if fields:
                rows.append(Row(start, reader.line_num, fields))
            start = reader.line_num + 1
    except csv.Error as exc:  # an unclosed or stray quote; or a field over the csv size limit
        hint = (" Check the quotes from that line on: a quote inside a quoted field must be "
                "doubled (\"\"), and a quoted field must end at a delimiter.") if quoted else ""
        raise OlftError(f"{at_line(path, start)}: cannot be parsed ({exc}).{hint} "
                        "Fix or remove that line.") from None
    if not rows:
        raise OlftError(f"{path} is empty (no data rows).")
    return rows


def _find_columns(header: list[str], options: Sequence[tuple[str, ...]], path: Path,
                  delimiter: str, fix: str, flags: _ColumnFlags | None = None) -> list[int]:
    """Indices of the first option whose columns are all present, else OlftError naming the
    missing column, the columns found and the fix (with `flags`: the option naming the file's own
    columns, --text-columns or --label-column)."""
    position: dict[str, int] = {}
    for i, name in enumerate(header):
        position.setdefault(name.strip(), i)
    for wanted in options:
        if all(name in position for name in wanted):
            return [position[name] for name in wanted]
    missing = [name for name in options[0] if name not in position]
    found = ", ".join(repr(h) for h in header[:20])
    hint = ""  # a single header cell holding the other delimiter means the wrong format
    if len(header) == 1 and "\t" in header[0] and delimiter == ",":
        hint = " The file looks tab-separated; rename it to .tsv."
    elif len(header) == 1 and "," in header[0] and delimiter == "\t":
        hint = " The file looks comma-separated; rename it to .csv."
    raise OlftError(f"{path} has no column {missing[0]!r} (columns found: {found}).{hint} {fix}"
                    f"{flags.hint(missing[0]) if flags else ''}")


@dataclass(frozen=True)
class _ColumnFlags:
    """For an error on a column a user's file lacks: the option that names the file's own. Its
    texts are named with --text-columns, its label (`label`; None when labels are optional) with --label-column."""

    label: str | None

    def hint(self, missing: str) -> str:
        """' Pass ...': the option that names the file's own column in place of `missing`."""
        if missing == self.label:
            return " Pass the file's own label column with --label-column."
        both = ("; they name the columns of --train-file and --validation-file both, so the two files must share those names"
                if self.label is not None else "")  # labels required: a run's training data; optional: predict's --input
        return f" Pass the file's own text columns with --text-columns (comma-separated, in the task's order{both})."


def _examples_from_table(task: Task, path: Path, text: str, header: list[str], rows: list[Row],
                         text_idx: list[int], label_idx: int | None, delimiter: str,
                         labels_required: bool = True, also: Sequence[int] = ()) -> tuple[list[Example], list[bool]]:
    """(examples, which of them have a label) from parsed rows: texts at `text_idx`, the label
    at `label_idx` (every row must also reach the columns `also`).

    `labels_required=False`: the label column may be absent (None) and a row's label blank
    (see `_optional_labels`). Rows merged by an unbalanced quote are found by their labels when
    every row has one, else by their field counts (`check_no_merged_rows`).
    """
    if not rows:
        raise OlftError(f"{path} has a header but no data rows (empty split). "
                        "Add data rows below the header.")
    need = max([*text_idx, *also, *([label_idx] if labels_required and label_idx is not None else [])]) + 1
    raw = [row.fields[label_idx] if label_idx is not None and label_idx < len(row.fields) else "" for row in rows]
    by_label = labels_required or (label_idx is not None and all(r.strip() for r in raw))
    lines = io.StringIO(text, newline="").readlines()  # the physical lines csv counted
    examples = []
    for row in rows:
        check_row_shape(path, header, row, need, delimiter)
        if row.last > row.line and by_label:
            check_no_swallowed_rows(task, path, row, lines, max(need, label_idx + 1), label_idx, delimiter)
        elif row.last > row.line:
            check_no_merged_rows(path, row, lines, need, len(header), delimiter)
        placeholder = 0.0 if task.is_regression else 0
        label = parse_label(task, row.fields[label_idx], at_line(path, row.line)) if labels_required else placeholder
        examples.append(Example(tuple(row.fields[i] for i in text_idx), label, at_line(path, row.line)))
    if labels_required:
        return examples, [True] * len(examples)
    return _optional_labels(task, examples, raw, [at_line(path, row.line) for row in rows])


def _optional_labels(task: Task, examples: list[Example], raw: list[Any],
                     where: list[Line]) -> tuple[list[Example], list[bool]]:
    """The examples with the label of each row that has one, and which rows have one.

    A row whose label is empty or missing keeps its placeholder label (0, or 0.0 for a
    regression task), so a partly labelled file is scored on its labelled rows. Every label
    given must be valid: a typo such as `maybe` is refused, naming its line, whether or not
    another row lacks a label.
    """
    parsed = [parse_label(task, r, w) if r is not None and str(r).strip() != "" else None
              for r, w in zip(raw, where, strict=True)]
    examples = [ex if label is None else Example(ex.texts, label, ex.source) for ex, label in zip(examples, parsed, strict=True)]
    return examples, [label is not None for label in parsed]


# ------------------------------------------------------------------------------ GLUE files

def _glue_path(task: Task, split: str, glue_dir: str | os.PathLike[str] | None) -> Path:
    """Locate the GLUE file for a split, or explain how to point at the data."""
    if glue_dir is None or str(glue_dir) == "":
        glue_dir = os.environ.get("GLUE_DIR") or None
    if glue_dir is None:
        raise OlftError("No GLUE data folder given. Pass --glue-dir or set $GLUE_DIR to a "
                        "folder in the original GLUE layout (RTE/train.tsv, RTE/dev.tsv, ...).")
    root = Path(glue_dir).expanduser()
    files = ", ".join(f"{task.glue_folder}/{task.glue_file(s)}" for s in task.splits)
    fix = (f"Point --glue-dir (or $GLUE_DIR) at a folder in the original GLUE layout "
           f"({files}).")
    if not root.is_dir():
        raise OlftError(f"GLUE folder not found: {root}. {fix}")
    folder = root / task.glue_folder
    if not folder.is_dir():
        raise OlftError(f"{task.display_name} folder not found: {folder}. {fix}")
    path = folder / task.glue_file(split)
    if not path.is_file():
        raise OlftError(f"{task.display_name} {split} file not found: {path}. {fix}")
    return path


def load_glue(task: Task, split: str, glue_dir: str | os.PathLike[str] | None = None) -> list[Example]:
    """Load a labelled split from the original GLUE TSV files.

    `glue_dir` defaults to $GLUE_DIR. Only the task's text and label columns are read, so
    extra or empty columns (MNLI, QQP) do not matter; a row with more fields than the header
    (a tab inside a text) is an error, as is any other row that cannot be read.
    """
    split = check_split(task, split)
    path, text, header, rows, fix = _glue_table(task, split, glue_dir)
    wanted = (*task.tsv_text_columns, task.tsv_label_column)
    if split != "train":
        fix += " (Test files have no labels and cannot be used for evaluation.)"
    columns = _find_columns(header, [wanted], path, "\t", fix)
    return _examples_from_table(task, path, text, header, rows, columns[:-1], columns[-1], "\t")[0]


ID_COLUMNS = ("index", "id")  # row ids in GLUE's files: `index`, as in the test files; QQP's dev file has `id`


def glue_ids(task: Task, split: str, glue_dir: str | os.PathLike[str] | None = None) -> list[str] | None:
    """Each row's id in a GLUE split's file, in the order of `load_glue`'s examples: the file's
    `index` column (QQP: `id`); None where it has neither (CoLA, SST-2 and MRPC dev files) or
    where a row's id is empty (a QQP dev file rebuilt from the `datasets` copy has no ids)."""
    _, _, header, rows, _ = _glue_table(task, split, glue_dir)
    names = [h.strip() for h in header]
    column = next((names.index(c) for c in ID_COLUMNS if c in names), None)
    ids = [row.fields[column].strip() if column is not None and column < len(row.fields) else "" for row in rows]
    return ids if all(ids) else None


def _glue_table(task: Task, split: str, glue_dir: str | os.PathLike[str] | None) -> tuple[Path, str, list[str], list[Row], str]:
    """(path, text, header, data rows, fix) of a GLUE split's TSV; CoLA's headerless files get their fixed header."""
    split = check_split(task, split)
    path = _glue_path(task, split, glue_dir)
    fix = f"Replace it with the original GLUE {task.glue_folder}/{path.name}."
    text = _read_text(path, fix)
    rows = _parse_rows(text, path, "\t", quoted=False)
    header = list(task.tsv_fixed_header or rows[0].fields)
    return path, text, header, rows if task.tsv_fixed_header else rows[1:], fix


# ------------------------------------------------------------------------------ datasets

def load_hf(task: Task, split: str) -> list[Example]:
    """Load a labelled split of GLUE from the Hugging Face dataset hub (or its local cache)."""
    split = check_split(task, split)
    try:
        import datasets  # imported here: it is slow to import and only this path needs it
    except ImportError:
        raise OlftError("Loading GLUE from the Hugging Face hub needs the 'datasets' package "
                        "(pip install datasets); or use local files with --glue-dir.") from None
    try:
        dataset = datasets.load_dataset(HF_DATASET, task.hf_config, split=split)
    except Exception as exc:  # noqa: BLE001 - the hub fails in many ways (network, cache, auth)
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise OlftError(f"Could not load {HF_DATASET} {task.hf_config}/{split} from the Hugging "
                        f"Face dataset hub ({type(exc).__name__}: {detail}). If this machine is "
                        "offline, use local GLUE files with --glue-dir (or $GLUE_DIR).") from None
    return _examples_from_hf(task, split, dataset)


def _examples_from_hf(task: Task, split: str, dataset: Any) -> list[Example]:
    """Convert a Hugging Face GLUE split, remapping its class order to ours by name.

    Every row becomes one example or an error naming the row: a text that is not a string
    (None, a number) is refused rather than turned into the text "None".
    """
    where = f"{HF_DATASET} {task.hf_config}/{split}"
    missing = [c for c in (*task.text_fields, "label") if c not in dataset.column_names]
    if missing:
        raise OlftError(f"{where} has no column {missing[0]!r} (columns: "
                        f"{', '.join(dataset.column_names)}). Use local files with --glue-dir.")
    remap: dict[int, int] | None = None
    names = getattr(dataset.features.get("label"), "names", None)
    if task.labels is not None and names:
        unknown = [n for n in names if n not in task.labels]
        if unknown:
            raise OlftError(f"{where} has label {unknown[0]!r}, not a {task.display_name} label "
                            f"({allowed_labels(task)}). Use local files with --glue-dir.")
        remap = {i: task.labels.index(n) for i, n in enumerate(names)}
    texts = [list(dataset[c]) for c in task.text_fields]
    labels = list(dataset["label"])
    if any(len(col) != len(labels) for col in texts) or len(labels) != len(dataset):
        raise OlftError(f"{where}: its columns have different lengths ({len(labels)} labels, "
                        f"{', '.join(str(len(c)) for c in texts)} texts). Use local files with --glue-dir.")
    examples = []
    for row, raw in enumerate(labels):
        if task.labels is not None and raw == -1:
            raise OlftError(f"{where}, row {row}: no label (-1); test splits cannot be used. "
                            f"Use one of: {', '.join(task.splits)}.")
        raw = remap.get(raw, raw) if remap is not None else raw
        label = parse_label(task, raw, f"{where}, row {row}")
        for name, col in zip(task.text_fields, texts, strict=True):
            if not isinstance(col[row], str):
                raise OlftError(f"{where}, row {row}: {name} is {col[row]!r}, not a text. "
                                "Use local files with --glue-dir.")
        examples.append(Example(tuple(col[row] for col in texts), label, f"{where}, row {row}"))
    return examples


# ------------------------------------------------------------------------------ user files

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
            ".ndjson": "jsonl"}


@dataclass(frozen=True)
class LoadedFile:
    """What `read_file` read from a user's file.

    `examples` in file order; `text_columns`: the columns (JSON keys) their texts came from;
    `has_label`: per example, whether its label is the file's (else it is the placeholder 0, or
    0.0 for a regression task: the row's label was empty or missing); `labelled`: whether every
    example has its label; `kept`: each `keep` column's values, one per example. `columns`: every
    column of the file in its order (CSV/TSV: the header; JSONL: each key where first seen), and
    `records`: each example's row as it was read, by column (a short row or a JSON object
    without a key lacks it), so predictions can carry ids and other columns through.
    `label_column`: the column (JSON key) the labels were read from; None where none was (labels
    optional and no such column, or `label_column=None`).
    """

    examples: list[Example]
    text_columns: tuple[str, ...]
    has_label: list[bool]
    kept: dict[str, list[str]] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    records: list[dict[str, Any]] = field(default_factory=list)
    label_column: str | None = None

    @property
    def labelled(self) -> bool:
        """Whether every example has the file's label (none is a placeholder)."""
        return all(self.has_label)


def read_file(task: Task, path: str | os.PathLike[str], text_columns: Sequence[str] | None = None,
              label_column: str | None = "label", labels_required: bool = True, keep: Sequence[str] = (),
              user_columns: bool = True) -> LoadedFile:
    """Read examples from a CSV, TSV or JSON Lines file (format by extension; a .json file may also
    hold one array of objects), labels required or optional.

    Text columns default to the task's canonical names (e.g. premise/hypothesis), falling back
    to the GLUE TSV names (sentence1/sentence2) so original GLUE files also load. Labels may be
    class names or indices. TSV is read like GLUE (quoting off); CSV uses standard quoting.
    Every non-blank line (CSV: every record) becomes an example, or the error names the line:
    field counts are checked against the header, and a quoted field running over several lines
    must not hold lines that read as rows of their own (merged by an unbalanced quote).
    `labels_required=False` (prediction): the label column may be missing and a row's label
    empty; the labels given are used (see `LoadedFile.has_label`). `label_column=None` (with
    `labels_required=False`): no column is read as labels, so every row has none and a column
    named `label` goes through as any other (`olft predict --no-labels`). `keep`: further columns every
    row must have, returned as text (e.g. the GLUE test files' `index`). `user_columns`: the
    columns can be named with --text-columns and --label-column (a user's file, not GLUE's own),
    and an error on a missing column says so.
    Raises OlftError naming the file, the line and the fix.
    """
    path = Path(path)
    if path.is_dir():  # before its name: a folder "data.csv" was "not found", a folder "data" "unsupported"
        inside = sorted(e.name for e in path.iterdir() if e.suffix.lower() in _FORMATS and e.is_file())[:3]
        named = f" (it holds {', '.join(inside)})" if inside else ""
        raise OlftError(f"{path} is a folder, not a data file: give the path of one .csv, .tsv or .jsonl file{named}.")
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OlftError(f"Unsupported data file {path}: use .csv, .tsv or .jsonl.")
    if not path.is_file():
        raise OlftError(f"Data file not found: {path}. Check the path.")
    if label_column is None and labels_required:
        raise ValueError("read_file: label_column=None reads no labels, so it needs labels_required=False.")
    options = _column_options(task, text_columns, label_column)
    names, label = ", ".join((*keep, *options[0][:-1])), options[0][-1]
    kind = "JSON" if path.suffix.lower() == ".json" else fmt.upper()  # a .json file may hold JSON Lines or one array
    fix = f"Expected a {kind} file with columns {names}, {label}." if labels_required else \
        f"Expected a {kind} file with columns {names}" + (f" (a {label} column is optional)." if label else ".")
    text = _read_text(path, fix)
    flags = _ColumnFlags(label if labels_required else None) if user_columns else None
    if fmt == "jsonl":
        return _read_jsonl(task, path, text, options, labels_required, tuple(keep), flags)
    delimiter = "," if fmt == "csv" else "\t"
    rows = _parse_rows(text, path, delimiter, quoted=fmt == "csv")
    header = rows[0].fields
    check_unique_header(header, path, rows[0].line)
    if labels_required:
        columns = _find_columns(header, [(*keep, *o) for o in options], path, delimiter, fix, flags)
        label_idx, columns = columns[-1], columns[:-1]
    else:
        columns = _find_columns(header, list(dict.fromkeys((*keep, *o[:-1]) for o in options)), path, delimiter, fix, flags)
        stripped = [h.strip() for h in header]
        label_idx = next((stripped.index(o[-1]) for o in options if o[-1] is not None and o[-1] in stripped), None)
    keep_idx, text_idx = columns[: len(keep)], columns[len(keep) :]
    examples, has_label = _examples_from_table(task, path, text, header, rows[1:], text_idx, label_idx, delimiter,
                                               labels_required, keep_idx)  # fmt: skip
    kept = {name: [row.fields[i] for row in rows[1:]] for name, i in zip(keep, keep_idx, strict=True)}
    names = tuple(h.strip() for h in header)
    records = [dict(zip(names, row.fields, strict=False)) for row in rows[1:]]  # a short row lacks its last columns
    return LoadedFile(examples, tuple(names[i] for i in text_idx), has_label, kept, names, records,
                      names[label_idx] if label_idx is not None else None)


def load_file(task: Task, path: str | os.PathLike[str], text_columns: Sequence[str] | None = None,
              label_column: str = "label") -> list[Example]:
    """Labelled examples from a CSV, TSV or JSON Lines file: `read_file` with labels required."""
    return read_file(task, path, text_columns, label_column).examples


def _column_options(task: Task, text_columns: Sequence[str] | None,
                    label_column: str | None) -> list[tuple[str | None, ...]]:
    """Column sets to try in order: what was asked for, then (by default) the GLUE names; each
    ends with its label column, None where no labels are read."""
    if text_columns is not None and isinstance(text_columns, str):
        text_columns = [text_columns]
    if text_columns is not None and len(text_columns) != len(task.text_fields):
        raise OlftError(f"{task.display_name} takes {len(task.text_fields)} text column(s) "
                        f"({', '.join(task.text_fields)}); got {len(text_columns)}: "
                        f"{', '.join(text_columns)}.")
    texts = tuple(text_columns) if text_columns is not None else task.text_fields
    twice = next((c for i, c in enumerate(texts) if c in texts[:i]), None)
    if twice is not None:  # a pair task fed one text twice would train on a task it is not
        raise OlftError(f"--text-columns names {twice!r} twice ({', '.join(texts)}): name each of "
                        f"{task.display_name}'s {len(texts)} text columns once, in the task's order.")
    if text_columns is not None and label_column in texts:  # the model would read the answer it is scored on
        raise OlftError(f"--label-column {label_column!r} is also one of --text-columns ({', '.join(texts)}): the model "
                        "would read the label it is to predict. Name the texts' own columns in --text-columns, or "
                        "another --label-column.")
    options = [(*texts, label_column)]
    if text_columns is None or label_column == "label":
        glue_texts = texts if text_columns is not None else task.tsv_text_columns
        glue_label = task.tsv_label_column if label_column == "label" else label_column  # None stays None
        if (*glue_texts, glue_label) not in options:
            options.append((*glue_texts, glue_label))
    return options


def _read_jsonl(task: Task, path: Path, text: str, options: list[tuple[str, ...]], labels_required: bool,
                keep: tuple[str, ...], flags: _ColumnFlags | None = None) -> LoadedFile:
    """`read_file` for JSON Lines: one JSON object per non-blank line, each key once.

    The keys are those of the first option the first object has (texts, and the label when
    labels are required; an optional label is the first option's label key that any object has).
    """
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        records = _json_array(path, text)  # a .json file may hold one array of objects, as `datasets` reads it
    else:
        records = _json_lines(task, path, text, options)
    first = records[0][1]  # _read_text guarantees a non-blank line
    first = first if isinstance(first, dict) else {}
    width = len(options[0]) if labels_required else len(options[0]) - 1
    wanted = next((o[:width] for o in options if all(k in first for k in o[:width])), options[0][:width])
    label_key = wanted[-1] if labels_required else \
        next((o[-1] for o in options if o[-1] is not None and any(isinstance(r, dict) and o[-1] in r for _, r in records)), None)
    texts = wanted[:-1] if labels_required else wanted
    examples, raw, where = [], [], []
    for number, record in records:
        where.append(at_line(path, number))
        values = _json_fields(record, texts, (*keep, *texts, *([label_key] if labels_required else [])), where[-1], flags)
        label: int | float = 0.0 if task.is_regression else 0
        if labels_required:
            label = parse_label(task, record[label_key], where[-1])
        else:
            raw.append(record.get(label_key) if label_key is not None else None)
        examples.append(Example(tuple(values), label, at_line(path, number)))
    kept = {name: [str(record[name]) for _, record in records] for name in keep}
    has_label = [True] * len(examples)
    if not labels_required:
        examples, has_label = _optional_labels(task, examples, raw, where)
    columns = tuple(dict.fromkeys(key for _, record in records for key in record))
    return LoadedFile(examples, tuple(texts), has_label, kept, columns, [record for _, record in records], label_key)


def _json_example(task: Task, columns: tuple[str, ...]) -> str:
    """One JSON Lines object of `columns` (texts, then the label), as the task's file would hold it."""
    label = 3.5 if task.is_regression else task.labels[0] if task.labels else 0
    return json.dumps({**{name: "..." for name in columns[:-1]}, columns[-1]: label})


def _json_lines(task: Task, path: Path, text: str, options: list[tuple[str, ...]]) -> list[tuple[int, Any]]:
    """The objects of a JSON Lines file, one per non-blank line, each with its line number.
    OlftError naming the line, with an object of the task's fields, for a line that is not JSON."""
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                records.append((number, json.loads(line, object_pairs_hook=_unique_keys)))
            except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or type(exc).__name__
                raise OlftError(f"{at_line(path, number)}: not valid JSON ({reason}). Each line "
                                f"must be one JSON object such as {_json_example(task, options[0])} "
                                "(JSON Lines, not one JSON array).") from None
    return records


_JSON_SPACE = re.compile(r"[ \t\r\n]*")  # the whitespace JSON allows between values


def _json_array(path: Path, text: str) -> list[tuple[int, Any]]:
    """The objects of a .json file holding one JSON array, each with the line it starts on (so
    every message names a line, as for JSON Lines). OlftError, naming the line, for invalid JSON
    or an empty array. One pass: lines are counted from the last object on, not from the start."""
    decoder = json.JSONDecoder(object_pairs_hook=_unique_keys)
    records: list[tuple[int, Any]] = []
    counted, line = 0, 1  # `line` is the line at offset `counted`

    def line_at(i: int) -> int:
        nonlocal counted, line
        line, counted = line + text.count("\n", counted, i), i
        return line

    def skip(i: int) -> int:
        return _JSON_SPACE.match(text, i).end()

    def bad(i: int, why: str) -> OlftError:
        return OlftError(f"{at_line(path, line_at(i))}: not valid JSON ({why}). A .json file holds one "
                         "array of objects, [{...}, {...}], or one object a line (JSON Lines).")

    at = skip(text.index("[") + 1)
    if at < len(text) and text[at] == "]":
        raise OlftError(f"{path}: the JSON array is empty: it holds no examples.")
    while True:
        try:
            record, end = decoder.raw_decode(text, at)
        except (ValueError, RecursionError) as exc:
            raise bad(at, exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or type(exc).__name__) from None
        records.append((line_at(at), record))
        at = skip(end)
        if at < len(text) and text[at] == ",":
            at = skip(at + 1)
            continue
        if at < len(text) and text[at] == "]":
            if text[skip(at + 1):].strip():
                raise bad(skip(at + 1), "text after the array's end")
            return records
        raise bad(at, "expected ',' or ']' after an object")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a key given twice is an error (json keeps the last silently)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {key!r} appears twice")
        seen[key] = value
    return seen


def _json_fields(record: Any, strings: tuple[str, ...], needed: tuple[str, ...], where: str,
                 flags: _ColumnFlags | None = None) -> list[str]:
    """The `strings` fields of one JSON object, which must hold every `needed` key; strings must be
    strings. OlftError otherwise (a missing key: with `flags`, naming the option that names the file's own)."""
    if not isinstance(record, dict):
        raise OlftError(f"{where}: expected a JSON object, got {type(record).__name__}. "
                        "Write one object per line.")
    missing = [key for key in needed if key not in record]
    if missing:
        found = ", ".join(repr(k) for k in list(record)[:20])
        raise OlftError(f"{where}: no field {missing[0]!r} (fields found: {found}). "
                        f"Every object needs {', '.join(needed)}.{flags.hint(missing[0]) if flags else ''}")
    for key in strings:
        if not isinstance(record[key], str):
            raise OlftError(f"{where}: field {key!r} must be a string, got "
                            f"{type(record[key]).__name__}.")
    return [record[key] for key in strings]
