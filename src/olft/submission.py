"""GLUE test-set submissions: which test files a task has, how their ids are read, and the
label format and file names the GLUE server (gluebenchmark.com) expects.

`olft predict --split test` writes one `<TASK>.tsv` per test file (`index<TAB>prediction`) and
`submission.zip` packing every such file of its folder.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from olft import tasks
from olft.atomic import atomic_path
from olft.errors import OlftError

log = logging.getLogger(__name__)

# Submission file names and label formats of the GLUE server (gluebenchmark.com): class names for
# the NLI tasks, class indices for the others, scores for STS-B; AX is scored with the MNLI model.
SUBMISSIONS: dict[str, list[tuple[str, str]]] = {
    "cola": [("CoLA/test.tsv", "CoLA.tsv")],
    "sst2": [("SST-2/test.tsv", "SST-2.tsv")],
    "mrpc": [("MRPC/test.tsv", "MRPC.tsv")],
    "qqp": [("QQP/test.tsv", "QQP.tsv")],
    "stsb": [("STS-B/test.tsv", "STS-B.tsv")],
    "qnli": [("QNLI/test.tsv", "QNLI.tsv")],
    "rte": [("RTE/test.tsv", "RTE.tsv")],
    "wnli": [("WNLI/test.tsv", "WNLI.tsv")],
    "mnli": [("MNLI/test_matched.tsv", "MNLI-m.tsv"), ("MNLI/test_mismatched.tsv", "MNLI-mm.tsv"),
             ("diagnostic/diagnostic.tsv", "AX.tsv")],
}
SUBMISSIONS["mnli-mm"] = SUBMISSIONS["mnli"]
NAMED_LABELS = {"mnli", "mnli-mm", "rte", "qnli"}  # the server wants these as label names
OPTIONAL = {"AX.tsv"}  # the diagnostic set is not part of every GLUE download
SUBMISSION_NAMES = {name for files in SUBMISSIONS.values() for _, name in files}
ZIP_NAME = "submission.zip"


def submission_files(task: tasks.Task, glue_dir: str | None) -> list[tuple[Path, str]]:
    """(GLUE test file, submission file name) pairs for the task; missing files are an error
    (except the optional diagnostic set)."""
    if not glue_dir:
        raise OlftError("--split test reads the GLUE test files: pass --glue-dir or set $GLUE_DIR.")
    out = []
    for rel, name in SUBMISSIONS[task.name]:
        path = Path(glue_dir) / rel
        if path.is_file():
            out.append((path, name))
        elif name not in OPTIONAL:
            raise OlftError(f"GLUE test file not found: {path}. Point --glue-dir at a GLUE folder with {rel}.")
    return out


def read_test_file(task: tasks.Task, path: Path) -> tuple[list[str], list[tasks.Example]]:
    """(id column, unlabelled examples) of a GLUE test TSV: its `index` column (QQP's test file
    names it `id`) plus the text columns. The submission writes these ids under `index`."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = [h.strip() for h in f.readline().split("\t")]
    except OSError:
        header = []  # read_file says what is wrong with the file
    column = next((c for c in tasks.ID_COLUMNS if c in header), tasks.ID_COLUMNS[0])
    loaded = tasks.read_file(task, path, labels_required=False, keep=(column,), user_columns=False)  # GLUE's own columns
    return loaded.kept[column], loaded.examples


def submission_label(task: tasks.Task, raw_row: np.ndarray) -> str:
    """One prediction as the GLUE server reads it. `raw_row`: the head's output for one example,
    shape (num_labels,) (logits; STS-B: (1,), the score). STS-B: the score to 3 decimals; MNLI,
    RTE, QNLI: the class name; the other tasks: the class index."""
    if task.is_regression:
        return f"{float(raw_row[0]):.3f}"
    p = int(raw_row.argmax())
    return task.labels[p] if task.name in NAMED_LABELS else str(p)


def zip_submission(out_dir: Path) -> Path:
    """Pack every GLUE submission file in `out_dir` into `out_dir/submission.zip` (flat), atomically.

    Raises OlftError where there is none to pack, or where the zip cannot be written: then any
    old submission.zip is removed too (it would not match the folder's files), and the message says so.
    """
    found = sorted(p for p in out_dir.iterdir() if p.name in SUBMISSION_NAMES)
    if not found:
        raise OlftError(f"No GLUE submission files in {out_dir} to zip (looked for {', '.join(sorted(SUBMISSION_NAMES))}).")
    target = out_dir / ZIP_NAME
    try:
        with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for p in found:
                z.write(p, arcname=p.name)
    except OSError as exc:
        try:
            target.unlink(missing_ok=True)
            left = f"{out_dir} has no {ZIP_NAME} now, so none disagrees with its files"
        except OSError:
            left = f"the old {target} is still there and may not match the folder's files: delete it"
        raise OlftError(f"Cannot write {target} ({exc.strerror or exc}); {left}. "
                        "Make room or fix the folder's permissions and rerun with --zip.") from None
    # The server scores a submission holding every task's file: say what this zip still lacks, so a
    # partial one is not uploaded unknowingly (each `--split test` into the folder rebuilds it).
    missing = sorted(SUBMISSION_NAMES - OPTIONAL - {p.name for p in found})
    if missing:
        log.warning("%s holds %d of the GLUE server's %d task files; missing: %s. Predict those tasks' runs into %s "
                    "(each --split test rebuilds the zip) before uploading it.", target, len(found),
                    len(SUBMISSION_NAMES - OPTIONAL), ", ".join(missing), out_dir)
    return target
