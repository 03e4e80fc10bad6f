"""GLUE tasks: the registry, data loading, metrics and deterministic sampling.

Everything task-specific lives in one `Task` record, so the rest of the package never branches
on a task name. Data comes from the original GLUE TSV layout (`load_glue`), the Hugging Face
dataset hub (`load_hf`) or a user's own CSV/TSV/JSONL file (`load_file`); all three return the
same `Example` list. Every input problem surfaces as one `OlftError` that names the fix.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
import math
import os
import random
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olft.errors import OlftError

HF_DATASET = "nyu-mll/glue"

# Original GLUE file for each split; MNLI has two dev files instead of one.
_SPLIT_FILES = {
    "train": "train.tsv",
    "validation": "dev.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
}
_SPLIT_ALIASES = {"dev": "validation", "val": "validation", "dev_matched": "validation_matched",
                  "dev_mismatched": "validation_mismatched"}


@dataclass(frozen=True)
class Task:
    """Everything the package needs to know about one GLUE task."""

    name: str  # registry key, e.g. "rte"
    display_name: str  # how messages name it, e.g. "RTE", "MNLI-mm"
    glue_folder: str  # folder in the original GLUE layout
    text_fields: tuple[str, ...]  # canonical text names (= Hugging Face columns)
    labels: tuple[str, ...] | None  # class names in index order; None = regression
    metric: str  # headline metric key
    metrics: tuple[str, ...]  # every reported metric, headline first
    eval_splits: tuple[str, ...]  # first one is the headline split
    hf_config: str  # config name in the Hugging Face GLUE dataset
    tsv_text_columns: tuple[str, ...]  # header names of the texts in the GLUE TSV
    tsv_label_column: str  # header name of the label in the GLUE TSV
    tsv_fixed_header: tuple[str, ...] | None = None  # column names of a headerless TSV (CoLA)

    @property
    def num_labels(self) -> int:
        """Output size of the model head: class count, or 1 for regression."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        """True for STS-B, whose label is a similarity score, not a class."""
        return self.labels is None

    @property
    def splits(self) -> tuple[str, ...]:
        """Every labelled split this task can load."""
        return ("train", *self.eval_splits)

    def glue_file(self, split: str) -> str:
        """The original GLUE file name of `split`, e.g. "dev_matched.tsv"."""
        return _SPLIT_FILES[_check_split(self, split)]


def _pair(name: str, display: str, folder: str, labels: tuple[str, ...] | None,
          metrics: tuple[str, ...], **tsv: Any) -> Task:
    """Build a Task; unless told otherwise: sentence1/sentence2 texts, GLUE TSV columns named
    like them, a "label" column, one validation split, and the task name as HF config."""
    fields = tsv.pop("fields", ("sentence1", "sentence2"))
    return Task(name=name, display_name=display, glue_folder=folder, text_fields=fields,
                labels=labels, metric=metrics[0], metrics=metrics,
                eval_splits=tsv.pop("eval_splits", ("validation",)),
                hf_config=tsv.pop("hf_config", name),
                tsv_text_columns=tsv.pop("text_columns", fields),
                tsv_label_column=tsv.pop("label_column", "label"), **tsv)


_NLI3 = ("entailment", "neutral", "contradiction")
_MNLI: dict[str, Any] = {"fields": ("premise", "hypothesis"), "hf_config": "mnli",
                         "text_columns": ("sentence1", "sentence2"), "label_column": "gold_label"}

# Label names and their order are those of the Hugging Face GLUE dataset, so hub labels map 1:1.
TASKS: dict[str, Task] = {
    "cola": _pair("cola", "CoLA", "CoLA", ("unacceptable", "acceptable"), ("mcc", "accuracy"),
                  fields=("sentence",),
                  tsv_fixed_header=("source", "label", "original_label", "sentence")),
    "sst2": _pair("sst2", "SST-2", "SST-2", ("negative", "positive"), ("accuracy",),
                  fields=("sentence",)),
    "mrpc": _pair("mrpc", "MRPC", "MRPC", ("not_equivalent", "equivalent"), ("f1", "accuracy"),
                  text_columns=("#1 String", "#2 String"), label_column="Quality"),
    "qqp": _pair("qqp", "QQP", "QQP", ("not_duplicate", "duplicate"), ("f1", "accuracy"),
                 fields=("question1", "question2"), label_column="is_duplicate"),
    "mnli": _pair("mnli", "MNLI", "MNLI", _NLI3, ("accuracy",),
                  eval_splits=("validation_matched", "validation_mismatched"), **_MNLI),
    "mnli-mm": _pair("mnli-mm", "MNLI-mm", "MNLI", _NLI3, ("accuracy",),
                     eval_splits=("validation_mismatched", "validation_matched"), **_MNLI),
    "qnli": _pair("qnli", "QNLI", "QNLI", ("entailment", "not_entailment"), ("accuracy",),
                  fields=("question", "sentence")),
    "rte": _pair("rte", "RTE", "RTE", ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": _pair("wnli", "WNLI", "WNLI", ("not_entailment", "entailment"), ("accuracy",)),
    "stsb": _pair("stsb", "STS-B", "STS-B", None, ("pearson", "spearman"), label_column="score"),
}

# Normalized spellings (see `_norm`) that differ from a task's own normalized name.
_TASK_ALIASES = {"mnlim": "mnli", "mnlimatched": "mnli", "mnlimismatched": "mnlimm",
                 "sts": "stsb", "sst": "sst2"}


def _norm(name: str) -> str:
    """Lower-case and drop punctuation, so "SST-2", "sst_2" and "sst2" compare equal."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def get_task(name: str) -> Task:
    """Look a task up by any common spelling ("SST-2", "MNLI-m", "mnli_mismatched")."""
    key = _norm(name) if isinstance(name, str) else ""
    key = _TASK_ALIASES.get(key, key)
    for task in TASKS.values():
        if _norm(task.name) == key:
            return task
    known = ", ".join(sorted(TASKS))
    close = difflib.get_close_matches(str(name).lower(), list(TASKS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise OlftError(f"Unknown task {name!r}. Known tasks: {known}.{hint}")


@dataclass(frozen=True)
class Example:
    """One labelled input: one or two texts and a class index (or a float score)."""

    texts: tuple[str, ...]
    label: int | float


def _check_split(task: Task, split: str) -> str:
    """Map "dev"-style names to the task's split names; reject splits without labels."""
    key = _SPLIT_ALIASES.get(split, split) if isinstance(split, str) else split
    if key in task.splits:
        return key
    why = " Test splits have no labels." if str(split).startswith("test") else ""
    raise OlftError(f"{task.display_name} has no split {split!r}.{why} "
                    f"Use one of: {', '.join(task.splits)}.")


# ----------------------------------------------------------------------------------- labels

@functools.cache
def _label_lookup(task: Task) -> dict[str, int]:
    """Accepted spellings of each class: its name and its index as text."""
    names = task.labels or ()
    return {**{name: i for i, name in enumerate(names)}, **{str(i): i for i in range(len(names))}}


def _allowed_labels(task: Task) -> str:
    assert task.labels is not None
    return ", ".join(f"{i} ({name})" for i, name in enumerate(task.labels))


def _parse_label(task: Task, raw: Any, where: str) -> int | float:
    """Turn a raw label (name, index, or score) into the task's label value."""
    if task.labels is None:
        return _parse_score(task, raw, where)
    index: int | None = None
    if isinstance(raw, str):
        text = raw.strip()
        index = _label_lookup(task).get(text.lower())
        if index is None and re.fullmatch(r"\d+\.0*", text):  # "1.0" as written by pandas
            index = _label_lookup(task).get(str(int(float(text))))
    elif isinstance(raw, int) and not isinstance(raw, bool):
        index = raw if 0 <= raw < len(task.labels) else None
    elif isinstance(raw, float) and raw.is_integer() and 0 <= raw < len(task.labels):
        index = int(raw)
    if index is None:
        raise OlftError(f"{where}: label {raw!r} is not a {task.display_name} label. "
                        f"Allowed: {_allowed_labels(task)}; give the name or the index.")
    return index


def _parse_score(task: Task, raw: Any, where: str) -> float:
    """Parse a regression label; it must be a finite number."""
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or not math.isfinite(value):
        raise OlftError(f"{where}: label {raw!r} is not a number. {task.display_name} labels "
                        "are similarity scores such as 3.8 (0 to 5).")
    return value


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
        raise OlftError(f"{path} is not valid UTF-8: bad byte at byte offset {exc.start} "
                        f"(line {line}). Re-save the file as UTF-8.") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise OlftError(f"{path} is empty. {fix}")
    return text


def _parse_rows(text: str, path: Path, delimiter: str, quoted: bool) -> list[tuple[int, list[str]]]:
    """Split text into (line number, fields) pairs, skipping blank lines.

    GLUE TSVs contain stray quote characters, so they are read with quoting off; real CSV
    files need quoting on (fields with commas are quoted) and may span lines.
    """
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        rows = [(reader.line_num, fields) for fields in reader if fields]
    except csv.Error as exc:  # in practice: a field over the csv module's size limit
        raise OlftError(f"{path}, line {reader.line_num}: cannot be parsed ({exc}). "
                        "Fix or remove that line.") from None
    if not rows:
        raise OlftError(f"{path} is empty (no data rows).")
    return rows


def _find_columns(header: list[str], options: Sequence[tuple[str, ...]], path: Path,
                  delimiter: str, fix: str) -> list[int]:
    """Indices of the first option whose columns are all present, else a clear error."""
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
    raise OlftError(f"{path} has no column {missing[0]!r} (columns found: {found}).{hint} {fix}")


def _examples_from_table(task: Task, path: Path, header: list[str],
                         rows: list[tuple[int, list[str]]], columns: list[int]) -> list[Example]:
    """Build examples from parsed rows; `columns` holds the text indices, then the label's."""
    if not rows:
        raise OlftError(f"{path} has a header but no data rows (empty split). "
                        "Add data rows below the header.")
    need = max(columns) + 1
    text_idx, label_idx = columns[:-1], columns[-1]
    examples = []
    for line, fields in rows:
        if len(fields) < need:
            names = ", ".join(header[:need])
            raise OlftError(f"{path}, line {line}: {len(fields)} field(s), but rows need at "
                            f"least {need} ({names}). Check the line is complete and "
                            "delimited like the header.")
        label = _parse_label(task, fields[label_idx], f"{path}, line {line}")
        examples.append(Example(tuple(fields[i] for i in text_idx), label))
    return examples


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
    extra or empty columns (MNLI, QQP) do not matter.
    """
    split = _check_split(task, split)
    path = _glue_path(task, split, glue_dir)
    fix = f"Replace it with the original GLUE {task.glue_folder}/{path.name}."
    rows = _parse_rows(_read_text(path, fix), path, "\t", quoted=False)
    header = list(task.tsv_fixed_header or rows[0][1])
    rows = rows if task.tsv_fixed_header else rows[1:]
    wanted = (*task.tsv_text_columns, task.tsv_label_column)
    if split != "train":
        fix += " (Test files have no labels and cannot be used for evaluation.)"
    columns = _find_columns(header, [wanted], path, "\t", fix)
    return _examples_from_table(task, path, header, rows, columns)


# ----------------------------------------------------------------------------- Hugging Face

def load_hf(task: Task, split: str) -> list[Example]:
    """Load a labelled split of GLUE from the Hugging Face dataset hub (or its local cache)."""
    split = _check_split(task, split)
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
    """Convert a Hugging Face GLUE split, remapping its class order to ours by name."""
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
                            f"({_allowed_labels(task)}). Use local files with --glue-dir.")
        remap = {i: task.labels.index(n) for i, n in enumerate(names)}
    texts = [list(dataset[c]) for c in task.text_fields]
    examples = []
    for row, raw in enumerate(dataset["label"]):
        if task.labels is not None and raw == -1:
            raise OlftError(f"{where}, row {row}: no label (-1); test splits cannot be used. "
                            f"Use one of: {', '.join(task.splits)}.")
        raw = remap.get(raw, raw) if remap is not None else raw
        label = _parse_label(task, raw, f"{where}, row {row}")
        examples.append(Example(tuple(str(col[row]) for col in texts), label))
    return examples


# ------------------------------------------------------------------------------ user files

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
            ".ndjson": "jsonl"}


def load_file(task: Task, path: str | os.PathLike[str], text_columns: Sequence[str] | None = None,
              label_column: str = "label") -> list[Example]:
    """Load labelled examples from a CSV, TSV or JSON Lines file.

    Text columns default to the task's canonical names (e.g. premise/hypothesis), falling back
    to the GLUE TSV names (sentence1/sentence2) so original GLUE files also load. Labels may be
    class names or indices. TSV is read like GLUE (quoting off); CSV uses standard quoting.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OlftError(f"Unsupported data file {path}: use .csv, .tsv or .jsonl.")
    if not path.is_file():
        raise OlftError(f"Data file not found: {path}. Check the path.")
    options = _column_options(task, text_columns, label_column)
    cols = ", ".join(options[0])
    fix = f"Expected a {fmt.upper()} file with columns {cols}."
    text = _read_text(path, fix)
    if fmt == "jsonl":
        return _load_jsonl(task, path, text, options)
    delimiter = "," if fmt == "csv" else "\t"
    rows = _parse_rows(text, path, delimiter, quoted=fmt == "csv")
    columns = _find_columns(rows[0][1], options, path, delimiter, fix)
    return _examples_from_table(task, path, rows[0][1], rows[1:], columns)


def _column_options(task: Task, text_columns: Sequence[str] | None,
                    label_column: str) -> list[tuple[str, ...]]:
    """Column sets to try in order: what was asked for, then (by default) the GLUE names."""
    if text_columns is not None and isinstance(text_columns, str):
        text_columns = [text_columns]
    if text_columns is not None and len(text_columns) != len(task.text_fields):
        raise OlftError(f"{task.display_name} takes {len(task.text_fields)} text column(s) "
                        f"({', '.join(task.text_fields)}); got {len(text_columns)}: "
                        f"{', '.join(text_columns)}.")
    texts = tuple(text_columns) if text_columns is not None else task.text_fields
    options = [(*texts, label_column)]
    if text_columns is None or label_column == "label":
        glue_texts = texts if text_columns is not None else task.tsv_text_columns
        glue_label = task.tsv_label_column if label_column == "label" else label_column
        if (*glue_texts, glue_label) not in options:
            options.append((*glue_texts, glue_label))
    return options


def _load_jsonl(task: Task, path: Path, text: str, options: list[tuple[str, ...]]) -> list[Example]:
    """Examples from JSON Lines: one JSON object per non-blank line."""
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                raise OlftError(f"{path}, line {number}: not valid JSON ({reason}). Each line "
                                "must be one JSON object such as {\"sentence\": \"...\", "
                                "\"label\": 1} (JSON Lines, not one JSON array).") from None
    first = records[0][1]  # _read_text guarantees a non-blank line
    wanted = next((w for w in options if isinstance(first, dict) and all(k in first for k in w)),
                  options[0])
    return [_json_example(task, record, wanted, f"{path}, line {number}")
            for number, record in records]


def _json_example(task: Task, record: Any, wanted: tuple[str, ...], where: str) -> Example:
    """One JSON object to an Example: texts must be strings, the label a name/index/score."""
    if not isinstance(record, dict):
        raise OlftError(f"{where}: expected a JSON object, got {type(record).__name__}. "
                        "Write one object per line.")
    missing = [key for key in wanted if key not in record]
    if missing:
        found = ", ".join(repr(k) for k in list(record)[:20])
        raise OlftError(f"{where}: no field {missing[0]!r} (fields found: {found}). "
                        f"Every object needs {', '.join(wanted)}.")
    texts = []
    for key in wanted[:-1]:
        if not isinstance(record[key], str):
            raise OlftError(f"{where}: field {key!r} must be a string, got "
                            f"{type(record[key]).__name__}.")
        texts.append(record[key])
    return Example(tuple(texts), _parse_label(task, record[wanted[-1]], where))


# -------------------------------------------------------------------------------- metrics

def compute_metrics(task: Task, predictions: Any, labels: Any) -> dict[str, float]:
    """All of the task's GLUE metrics as plain floats, keyed as in `task.metrics`.

    Classification predictions may be class indices or (n, num_labels) logits. Undefined
    scores (constant predictions for Pearson/Spearman, no positives for F1) count as 0.0,
    so a degenerate model ranks last instead of crashing a run.
    """
    import numpy as np

    preds, golds = np.asarray(predictions), np.asarray(labels)
    if preds.ndim == 2 and (preds.shape[1] == 1 or not task.is_regression):
        preds = preds[:, 0] if task.is_regression else preds.argmax(axis=1)
    if preds.ndim != 1 or golds.ndim != 1 or len(preds) != len(golds) or len(golds) == 0:
        raise OlftError(f"Cannot score {task.display_name}: need equally long, non-empty 1-D "
                        f"predictions and labels, got shapes {preds.shape} and {golds.shape}.")
    preds, golds = _checked(task, preds, "predictions"), _checked(task, golds, "labels")
    if not task.is_regression:
        return _classification_metrics(task, preds, golds)
    from scipy.stats import pearsonr, spearmanr

    return {"pearson": _correlation(pearsonr, preds, golds),
            "spearman": _correlation(spearmanr, preds, golds)}


def _checked(task: Task, values: Any, what: str) -> Any:
    """Values as floats (regression) or as int class indices of this task, else an error."""
    import numpy as np

    try:
        numbers = values.astype(np.float64)
    except (TypeError, ValueError):
        numbers = None
    if task.is_regression and numbers is not None:
        return numbers
    if numbers is None or not np.all(np.isin(numbers, np.arange(task.num_labels))):
        kind = "numbers" if task.is_regression else f"class indices 0..{task.num_labels - 1}"
        raise OlftError(f"Cannot score {task.display_name}: {what} must be {kind}.")
    return numbers.astype(np.int64)


def _classification_metrics(task: Task, preds: Any, golds: Any) -> dict[str, float]:
    """Accuracy, plus F1 (positive class 1) and Matthews correlation where the task uses them."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    with warnings.catch_warnings():  # single-class inputs warn; the 0.0 they yield is intended
        warnings.simplefilter("ignore")
        found = {"accuracy": float(accuracy_score(golds, preds))}
        if "f1" in task.metrics:
            found["f1"] = float(f1_score(golds, preds, pos_label=1, average="binary",
                                         zero_division=0))
        if "mcc" in task.metrics:
            found["mcc"] = float(matthews_corrcoef(golds, preds))
    return {name: found[name] for name in task.metrics}


def _correlation(fn: Any, a: Any, b: Any) -> float:
    """A correlation statistic, 0.0 where it is undefined (constant or non-finite input)."""
    import numpy as np

    finite = bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)))
    if len(a) < 2 or not finite or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(a, b).statistic)
    return value if math.isfinite(value) else 0.0


def headline(task: Task, metrics: dict[str, float]) -> float:
    """The task's headline score (the paper's metric) from a `compute_metrics` result."""
    if task.metric not in metrics:
        raise OlftError(f"No {task.metric!r} score for {task.display_name} among: "
                        f"{', '.join(metrics) or 'none'}.")
    return float(metrics[task.metric])


# ------------------------------------------------------------------------------- sampling

def sample_split(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A deterministic random subset of `n` examples, kept in their original order.

    Returns all examples when n is None or at least their count.
    """
    if n is None or n >= len(examples):
        return list(examples)
    if n < 1:
        raise OlftError(f"Sample size must be at least 1, got {n}.")
    chosen = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in chosen]


def disjoint_subsets(examples: list[Example], sizes: Sequence[int], seed: int) -> list[list[Example]]:
    """Deterministic, pairwise disjoint random subsets of the given sizes, each in original order.

    Used to train a selection candidate on one part of train and score it on another. When
    the sizes ask for more than there is, they shrink proportionally, each keeping at least one.
    """
    sizes = list(sizes)
    if not sizes or any(s < 1 for s in sizes):
        raise OlftError(f"Subset sizes must all be at least 1, got {sizes}.")
    if len(examples) < max(2, len(sizes)):
        raise OlftError(f"Need at least {max(2, len(sizes))} examples to make "
                        f"{len(sizes)} disjoint subsets, got {len(examples)}. Use a larger split.")
    total = sum(sizes)
    if total > len(examples):
        sizes = [max(1, s * len(examples) // total) for s in sizes]
        while sum(sizes) > len(examples):  # rounding up to 1 can overshoot; trim the largest
            sizes[sizes.index(max(sizes))] -= 1
    order = random.Random(seed).sample(range(len(examples)), sum(sizes))
    subsets, start = [], 0
    for size in sizes:
        subsets.append([examples[i] for i in sorted(order[start:start + size])])
        start += size
    return subsets
