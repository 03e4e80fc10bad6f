"""The GLUE task registry: one `Task` record per task, the `Example` every reader returns, and
label parsing shared by the readers.

Everything task-specific lives in one `Task` record, so the rest of the package never branches
on a task name.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from olft.errors import LabelError, OlftError

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
    score_range: tuple[float, float] | None = None  # a regression label's valid (lowest, highest)

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
        return _SPLIT_FILES[check_split(self, split)]


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
    # GLUE's STS-B gold scores run from 0 (unrelated) to 5 (same meaning).
    "stsb": _pair("stsb", "STS-B", "STS-B", None, ("pearson", "spearman"), label_column="score",
                  score_range=(0.0, 5.0)),
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


class Line(NamedTuple):
    """A line of a data file, as `Example.source` holds it: the file and the line number, kept
    apart so that several lines of one file can be named together ("d.tsv, lines 3, 8"). It
    reads as every data error names one line: "d.tsv, line 3"."""

    path: str
    number: int

    def __str__(self) -> str:
        return f"{self.path}, line {self.number}"


def at_line(path: Any, line: int) -> Line:
    """Line `line` of the file at `path` (a str or os.PathLike, named as given)."""
    return Line(str(path), line)


@dataclass(frozen=True)
class Example:
    """One labelled input: one or two texts and a class index (or a float score).

    `source` says where it came from (a file's `Line`, which reads "path, line N"; "<dataset>
    <config>/<split>, row N" for `datasets`), so a later stage (tokenization) can name the line to fix. It is provenance,
    not content: two examples with the same texts and label compare equal wherever they came from.
    """

    texts: tuple[str, ...]
    label: int | float
    source: Line | str | None = field(default=None, compare=False)


def check_split(task: Task, split: str) -> str:
    """Map "dev"-style names to the task's split names; reject splits without labels."""
    key = _SPLIT_ALIASES.get(split, split) if isinstance(split, str) else split
    if key in task.splits:
        return key
    why = " Test splits have no labels." if str(split).startswith("test") else ""
    raise OlftError(f"{task.display_name} has no split {split!r}.{why} "
                    f"Use one of: {', '.join(task.splits)}.")


@functools.cache
def _label_lookup(task: Task) -> dict[str, int]:
    """Accepted spellings of each class: its name and its index as text."""
    names = task.labels or ()
    return {**{name: i for i, name in enumerate(names)}, **{str(i): i for i in range(len(names))}}


def allowed_labels(task: Task) -> str:
    assert task.labels is not None
    return ", ".join(f"{i} ({name})" for i, name in enumerate(task.labels))


def parse_label(task: Task, raw: Any, where: Line | str) -> int | float:
    """Turn a raw label (name, index, or score) into the task's label value: a class index, or a
    float score for a regression task. Raises OlftError for an empty label, and its subclass
    LabelError for one that is not the task's (unknown name or index, a score not a number or
    out of the task's range), each naming `where` and the labels allowed."""
    if raw is None or isinstance(raw, str) and not raw.strip():  # JSON null: no label either
        allowed = allowed_labels(task) if task.labels is not None else "a similarity score such as 3.8"
        raise OlftError(f"{where}: the label is empty. Fill it in ({allowed}) or drop the row.")
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
        shown = str(raw).lower() if isinstance(raw, bool) else repr(raw)  # a JSON true as the file spells it
        raise LabelError(f"{where}: label {shown} is not a {task.display_name} label. "
                        f"Allowed: {allowed_labels(task)}; give the name or the index.")
    return index


def _parse_score(task: Task, raw: Any, where: Line | str) -> float:
    """Parse a regression label: a finite number inside the task's score range.

    The one check of a score, used by every reader (training, evaluation and prediction files,
    GLUE files, the hub), so a score out of range is refused the same way wherever it is read.
    """
    low, high = task.score_range or (-math.inf, math.inf)
    scale = f" ({low:g} to {high:g})" if task.score_range else ""
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or not math.isfinite(value):
        raise LabelError(f"{where}: label {raw!r} is not a number. {task.display_name} labels "
                        f"are similarity scores such as 3.8{scale}.")
    if not low <= value <= high:
        raise LabelError(f"{where}: label {raw!r} is out of range: {task.display_name} similarity scores "
                        f"run from {low:g} to {high:g}. Fix that label or remove the row.")
    return value
