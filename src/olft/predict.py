"""Use a finished run: classify new text, and write GLUE test-set submission files.

A run folder is reopened from its own `config.json`, so tokenization, truncation, pooling and
the evaluation batch size are those the run was trained and scored with, and `--split validation`
scores the sample the run scored (its --max-eval-samples cap): its metrics are exactly those in
results.json (and `olft evaluate`), and a note says so when today's examples are not those the run
scored (edited data, another --glue-dir); `--whole-split` scores every example instead.

    olft predict --run DIR --input new.csv --output preds.csv      # one row per input row
    olft predict --run DIR --text "a premise" "a hypothesis"       # one example, printed
    olft predict --run DIR --split test --output submission/ --zip  # GLUE server files
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from olft import tasks
from olft.atomic import atomic_write
from olft.config import RunConfig, strategy_name
from olft.data import EmptyTextError
from olft.errors import LabelError, OlftError, stop_on_sigterm
from olft.outputs import FORMATS, check_folder_output, check_output, check_tsv_rows, removed_if_left_empty, write_rows, writing
from olft.report import continue_command, made_by
from olft.runfiles import data_note, describe_status, read_run, weights_file
from olft.select import finished_selection
from olft.submission import ZIP_NAME, read_test_file, submission_files, submission_label, zip_submission

log = logging.getLogger(__name__)


@dataclass
class RunInfo:
    """A finished strategy of a run folder: its config, results, layers and weights file."""

    folder: Path
    cfg: RunConfig
    results: dict
    strategy: str
    layers: list[int]
    weights: Path


def open_run(folder: str | Path, strategy: str | None = None) -> RunInfo:
    """Check a run folder and one of its strategies; OlftError naming what is there otherwise.

    No `strategy`: olft, or the folder's only strategy where olft is not one (`olft train`'s
    `layers=3`), said in a log line.
    """
    folder = Path(folder)
    results, cfg = read_run(folder)
    finished = [n for n, s in results.get("strategies", {}).items()
                if weights_file(folder, n).is_file() and "layers" in s]
    default = strategy is None
    if strategy is not None and not isinstance(strategy, str):
        raise OlftError(f"strategy takes a strategy's name (olft, final, full, layers=2+3), not {strategy!r}; "
                        f"finished in {folder}: {', '.join(finished) or 'none'}.")
    why_unread = ""  # what --strategies would say of a name it cannot read (layers=x, layers=1+1)
    if strategy is not None and strategy not in finished:
        # named as --strategies names it (OLFT, all, ` full`, `layers=3+2`, `layers=2-3` or `layers=2,3`
        # for the run's `layers=2+3`); a name it cannot read is looked up as typed, and is then not there
        typed, strategy = strategy, strategy_name(strategy, strict=False)
        if strategy not in finished:
            try:
                strategy_name(typed)
            except OlftError as exc:
                why_unread = f" {exc}"
    if default:
        there = list(dict.fromkeys([*results.get("strategy_names", []), *finished]))
        strategy = there[0] if len(there) == 1 else "olft"
        if strategy != "olft":
            log.info("using strategy %s, the only one in %s", strategy, folder)
    if strategy not in finished:
        status = describe_status(folder)  # as `olft evaluate` says it: a killed run is not "running"
        if not finished and finished_selection(results) and not results.get("strategy_names"):
            layer = results["selection"].get("selected_layer")
            raise OlftError(f"Run folder {folder} holds a selection only (`olft select`): no layer was tuned. "
                            f"`{continue_command(folder)}` continues it, tuning the selected layer {layer} (and the "
                            "baselines its config asks for).")  # fmt: skip
        if not finished and results.get("status") == "failed":  # a rerun would fail the same way: no continue advice
            raise OlftError(f"Run folder {folder} failed: every strategy it ran failed to train, so it holds no weights. "
                            f"Its errors are in its table.md (and `olft evaluate --run {folder}`); fix what they say (a "
                            "lower learning rate), then rerun with another --out or with --overwrite.")
        if not finished:
            raise OlftError(f"Run folder {folder} is unfinished ({status}): no strategy has saved weights yet. Finish it "
                            f"by rerunning the `{made_by(results)}` command that made it, or `{continue_command(folder)}`.")
        planned = results.get("strategy_names", [])
        why = ("failed to train (its error is in table.md and `olft evaluate`), so it saved no weights"
               if strategy in (results.get("failed") or {})
               else "has not finished" if strategy in planned else "is not in this run")
        close = difflib.get_close_matches(strategy, finished, n=1) if why == "is not in this run" and not why_unread else []
        if why == "has not finished":  # as `olft evaluate` says it: the command that finishes it
            why += f" (`{continue_command(folder)}` finishes it)"
        raise OlftError(f"Strategy {strategy!r}{' (the default)' if default else ''} {why} ({folder}: {status}).{why_unread} "
                        + (f"Did you mean {close[0]!r}? " if close else "")
                        + f"Finished: {', '.join(finished)}; pass one of them (--strategy, or olft.load's strategy=).")
    entry = results["strategies"][strategy]
    return RunInfo(folder, cfg, results, strategy, list(entry["layers"]), weights_file(folder, strategy))


def load_weights(path: Path) -> dict:
    """A strategy's saved tensors (PEFT module, and the head under `head.`), by name.

    Raises OlftError (one line: delete the file and continue the run, `report.continue_command`,
    which re-tunes it whether `olft run` or `olft train` made the folder) for a damaged file, which
    safetensors reports as e.g. `header too small`.
    """
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # a damaged file
        raise OlftError(f"{path} is unreadable ({exc}). Re-tune the strategy: delete it and run "
                        f"`{continue_command(path.parent.parent)}`.") from exc


def tuned_session(info: RunInfo, quiet: bool = False):
    """A Session (model and tokenizer only) with the strategy's module and head put back.

    Returns (session, applied); `applied.remove()` takes the module out again.
    """
    from olft.methods import apply_method
    from olft.pipeline import Session

    weights = load_weights(info.weights)  # a damaged file fails before the model loads
    session = Session(info.cfg, quiet=quiet, data=False)
    applied = apply_method(session.stack, info.layers, info.cfg.method)
    applied.load_state_dict({k: v for k, v in weights.items() if not k.startswith("head.")})
    session.stack.head.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("head.")})
    session.stack.eval()
    return session, applied


@contextmanager
def tuned(info: RunInfo, quiet: bool = False) -> Iterator:
    session, applied = tuned_session(info, quiet)
    try:
        yield session
    finally:
        applied.remove()


def logits(session, examples: Sequence[tasks.Example], batch_size: int | None = None, desc: str = "predict") -> np.ndarray:
    """(n, num_labels) raw outputs in example order, computed exactly as `olft evaluate` does
    (the run's tokenization, truncation, autocast and evaluation batch size)."""
    from olft.train import predict

    enc = session.encode(list(examples))
    bs = batch_size or session.cfg.train.eval_batch_size
    return predict(session.stack, enc, bs, None, desc, session.quiet, session.dist, logits=True)


def label_columns(task: tasks.Task) -> list[str]:
    """The columns `rows_for` writes. A regression's is `prediction` too, not `score`: STS-B's
    gold column is named score, and an input's columns are kept beside the predictions."""
    return ["prediction"] if task.is_regression else ["prediction", *(f"prob_{name}" for name in task.labels)]


def rows_for(task: tasks.Task, raw: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Output rows (label name and one probability per label, or the predicted score) and the
    predictions as the task's metrics take them (class indices or scores)."""
    import torch

    if task.is_regression:
        scores = raw[:, 0]
        return [{"prediction": float(s)} for s in scores], scores
    probs = torch.softmax(torch.as_tensor(raw, dtype=torch.float64), dim=-1).numpy()
    preds = raw.argmax(axis=1)
    rows = [{"prediction": task.labels[p], **{f"prob_{n}": float(q) for n, q in zip(task.labels, pr, strict=True)}}
            for p, pr in zip(preds, probs, strict=True)]
    return rows, preds


# -- input files (the output files: `olft.outputs`) ---------------------------------------------


def read_inputs(task: tasks.Task, cfg: RunConfig, path: Path, labels: bool = True) -> tasks.LoadedFile:
    """A CSV/TSV/JSONL file read as `tasks.LoadedFile` (labels optional): its examples, each one's
    input row (`records`: every column, by name, in file order: ids, the gold label and other
    columns go through to the output), its `columns`, and which rows have a label (`has_label`:
    the others' labels are placeholders; a blank label is none).

    Read by `tasks.read_file` with the run's --text-columns and --label-column, so a prediction
    file passes the same checks as training data; `labels=False` (--no-labels) reads no column as
    gold labels. Raises OlftError naming the line and the fix,
    or naming an input column that the predictions would overwrite (`prediction`, `prob_<label>`)
    or a column name the header gives twice.
    """
    label_column = cfg.data.label_column if labels else None
    loaded = tasks.read_file(task, path, cfg.data.text_column_list(), label_column, labels_required=False)
    twice = next((c for i, c in enumerate(loaded.columns) if c in loaded.columns[:i]), None)
    if twice is not None:
        raise OlftError(f"{path} has two columns named {twice!r}; the output keeps every input column by name: rename one.")
    clash = next((c for c in loaded.columns if c in label_columns(task)), None)
    if clash is not None:
        raise OlftError(f"{path} has a column {clash!r}, which the output's own {clash!r} column would overwrite "
                        "(a previous predictions file?): rename or drop that column.")
    return loaded


# -- GLUE test submission --------------------------------------------------------------------------


def write_submission(session, out_dir: Path, batch_size: int | None, make_zip: bool = False) -> list[Path]:
    """Write the task's GLUE submission files into `out_dir`, and its submission.zip with
    `make_zip` or where the folder already has one; returns the paths written.

    The zip packs every submission file of the folder, so one made before would disagree with
    the files written now: it is removed before the first file is replaced (a run stopped
    half-way leaves none) and rebuilt from the folder's files at the end.
    """
    task = session.task
    files = submission_files(task, session.cfg.data.glue_dir)
    with removed_if_left_empty(out_dir):
        with writing(out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
        return _write_submission(session, task, files, out_dir, batch_size, make_zip)


def _write_submission(session, task, files, out_dir: Path, batch_size: int | None, make_zip: bool) -> list[Path]:
    old_zip = out_dir / ZIP_NAME
    make_zip = make_zip or old_zip.exists()
    with writing(old_zip):
        old_zip.unlink(missing_ok=True)
    written = []
    for src, name in files:
        index, examples = read_test_file(task, src)
        raw = logits(session, examples, batch_size, desc=name)
        lines = ["index\tprediction", *(f"{i}\t{submission_label(task, r)}" for i, r in zip(index, raw, strict=True))]
        with writing(out_dir / name):
            atomic_write(out_dir / name, "\n".join(lines) + "\n")
        written.append(out_dir / name)
    return [*written, zip_submission(out_dir)] if make_zip else written


# -- the command ------------------------------------------------------------------------------------


def add_predict_options(p) -> None:
    p.add_argument("--run", required=True, help="Run folder written by `olft run` or `olft train`.")
    p.add_argument("--strategy", default=None, help="Which tuned model: olft, final, full, or a strategy name such as layers=0+2 "
                   "(default: olft, or the run's only strategy).")
    p.add_argument("--input", default=None, help="CSV/TSV/JSONL file (or .json: JSON Lines or one array of objects) with the task's text columns (a label column is optional: metrics on the rows that have one). "
                   "The output keeps every input column, then prediction (and prob_<label> per class).")
    p.add_argument("--text-columns", default=None, help="With --input: its text column names, comma-separated, in the task's order "
                   "(default: the run's --text-columns, else the task's own, e.g. sentence1,sentence2).")
    p.add_argument("--label-column", default=None, help="With --input: its gold label column, if any (default: the run's --label-column, label).")
    p.add_argument("--no-labels", action="store_true", help="With --input: read no gold label column (predictions only, no "
                   "metrics), for a file whose label column holds something else; it still goes through to the output.")
    p.add_argument("--text", nargs="+", default=None, help="One example: its text (two texts for pair tasks).")
    p.add_argument("--split", default=None, help="A GLUE split of the run's data: test (writes the GLUE server's submission files) or validation "
                   "(the examples the run scored: its --max-eval-samples cap, as `olft evaluate`; see --whole-split; a run trained "
                   "from files: its --validation-file, every column as written). Needs --output.")
    p.add_argument("--output", default=None, help="Output file (.csv, .tsv, .jsonl; not the --input file), or with --split test a folder.")
    p.add_argument("--glue-dir", default=None, help="GLUE folder to read --split files from (default: the run's).")
    p.add_argument("--zip", action="store_true", help="With --split test: pack every submission file in --output into submission.zip.")
    p.add_argument("--whole-split", action="store_true",
                   help="With --split validation: score every example of the split, not only the run's scored sample "
                        "(by default the run's --max-eval-samples cap and --seed apply, as in `olft evaluate`).")
    p.add_argument("--batch-size", type=int | None, default=None, help="Batch size (default: the run's --eval-batch-size, which makes the numbers match `olft evaluate`).")


def predict_command(args) -> int:
    """`olft predict`; OlftError for bad input. SIGTERM stops it as Ctrl-C does (`Terminated`), so
    the temporary file of a file being written is removed, not left beside the output."""
    with stop_on_sigterm():
        return _predict(args)


def _predict(args) -> int:
    sources = [x for x in (args.input, args.text, args.split) if x]
    if len(sources) != 1:
        raise OlftError("Give exactly one of --input FILE, --text TEXT [TEXT], --split test|validation.")
    if args.batch_size is not None and args.batch_size <= 0:
        raise OlftError(f"--batch-size must be a positive number, got {args.batch_size}.")
    named = [f"--{n.replace('_', '-')}" for n in ("text_columns", "label_column", "no_labels") if getattr(args, n, None) not in (None, False)]
    if getattr(args, "no_labels", False) and args.label_column is not None:
        raise OlftError("--no-labels reads no label column and --label-column names one: give one of them.")
    if named and not args.input:
        raise OlftError(f"{named[0]} names columns of an --input file; give --input FILE (--text and --split take none).")
    info = open_run(args.run, args.strategy)
    if args.glue_dir:
        info.cfg.data.glue_dir = args.glue_dir
    if args.text_columns is not None:  # this input's names; the run's own are for its training files
        info.cfg.data.text_columns = args.text_columns
    if args.label_column is not None:
        info.cfg.data.label_column = args.label_column
    task = tasks.get_task(info.cfg.data.task)
    if args.split == "test":
        if info.cfg.data.data_source == "file":  # GLUE's test set is not this run's data
            raise OlftError("--split test writes GLUE's test submission files, and this run was trained from your own files "
                            "(--data-source file): predict your test file with --input FILE --output FILE instead.")
        if args.whole_split:  # the test split has no labels and is always written whole
            raise OlftError("--whole-split applies to --split validation; --split test always writes every test example.")
        if not args.output:
            raise OlftError("--split test needs --output FOLDER for the submission files.")
        if Path(args.output).suffix.lower() in FORMATS:  # a file name: the folder would be named like one
            raise OlftError(f"--split test writes a folder of submission files: pass a folder, not {args.output}.")
        submission_files(task, info.cfg.data.glue_dir)  # fail before loading the model
        check_folder_output(Path(args.output))
        with tuned(info, args.quiet) as session:
            for path in write_submission(session, Path(args.output), args.batch_size, args.zip):
                why = " (rebuilt, as one was there: from the folder's files as now written, which it may not have held)"
                print(f"wrote {path}{why if path.name == ZIP_NAME and not args.zip else ''}")
        return 0
    if args.zip:
        raise OlftError("--zip packs GLUE submission files: use it with --split test.")
    if args.whole_split and not args.split:
        raise OlftError("--whole-split scores a whole --split validation: use it with --split.")
    output = Path(args.output) if args.output else None
    if output is None and not args.text:
        raise OlftError("--input and --split need --output FILE (.csv, .tsv or .jsonl).")
    if output is not None:
        check_output(output, Path(args.input) if args.input else None)
    examples, inputs, has_label = _examples(args, info.cfg, task, info.results)
    if output is not None:  # before the model loads: a .tsv output cannot hold a tab or line break
        check_tsv_rows(output, [{k: k for k in inputs[0]} if inputs else {}, *inputs])
    with tuned(info, args.quiet) as session:
        try:
            raw = logits(session, examples, args.batch_size)
        except EmptyTextError as exc:
            if not args.text:  # a file's rows: the message names their lines
                raise
            raise _empty_text(args.text, exc.empty) from None
    rows, preds = rows_for(task, raw)
    rows = [{**front, **row} for front, row in zip(inputs, rows, strict=True)]
    if output is not None:
        # the input's columns first, in its order, whichever row first has each (a short first row
        # would otherwise put its missing column after the predictions)
        write_rows(output, rows, columns=list(dict.fromkeys(k for front in inputs for k in front)))
        print(f"wrote {len(rows)} prediction{'s' if len(rows) != 1 else ''} to {output}", file=sys.stderr)
    else:
        print(json.dumps(rows[0]))
    scored = [i for i, has in enumerate(has_label) if has]
    if scored:  # a partly labelled file is scored on the rows that have a label
        scores = tasks.score(task, preds[scored], [examples[i].label for i in scored])
        which = "" if len(scored) == len(examples) else f" (on the {len(scored)} of {len(examples)} rows that have a label)"
        print(scores.text() + which)
    return 0


def _examples(args, cfg: RunConfig, task: tasks.Task, results: dict) -> tuple[list[tasks.Example], list[dict], list[bool]]:
    """(examples, the columns each output row starts with, which have a label) of --text, --input or --split.

    An --input row keeps all its columns (ids, its own gold label column), so the output joins
    back to the input, and so does a --split validation row of a run trained from files (its
    --validation-file's row); a GLUE or `datasets` --split validation row, read by the task's loader,
    gets its id (`index`, as the test split's files), its texts and the gold `label` beside the
    prediction, to be compared row by row.
    """
    if args.input:
        try:
            loaded = read_inputs(task, cfg, Path(args.input), labels=not getattr(args, "no_labels", False))
        except LabelError as exc:  # a label column in another vocabulary (pos/neg): the labels can be left unread
            # not naming a column: where --label-column is left at `label`, a GLUE file's own (STS-B's score) is read
            raise LabelError(f"{exc} Or, to predict without metrics, add --no-labels (no column is then read as "
                             "gold labels).") from None
        named = getattr(args, "label_column", None)
        if named is not None and named not in loaded.columns:  # asked for by name: its absence is a typo
            raise OlftError(f"{args.input} has no column {named!r} for --label-column (columns found: "
                            f"{', '.join(loaded.columns)}). Name its gold label column, or pass --no-labels "
                            "to predict without metrics.")
        if loaded.label_column is not None and loaded.examples and not any(loaded.has_label):
            # a column read as gold labels with none in it: no metrics, said rather than left out unexplained
            log.warning(f"{args.input}: its label column {loaded.label_column!r} is blank in every row, so no metrics are "
                        "computed; the predictions are written.")
        return loaded.examples, loaded.records, loaded.has_label
    if args.text:
        fields = cfg.data.text_column_list() or list(task.text_fields)  # named as the run read them (--text-columns)
        if len(args.text) != len(fields):
            raise OlftError(f"{task.display_name} takes {len(fields)} text(s) ({', '.join(fields)}); got {len(args.text)}.")
        _check_utf8(args.text)
        empty = next((name for name, text in zip(fields, args.text, strict=True) if not text.strip()), None)
        if empty is not None:
            raise OlftError(f"--text: the {empty} text is empty; give every text some words.")
        return [tasks.Example(tuple(args.text), 0.0 if task.is_regression else 0)], [dict(zip(fields, args.text, strict=True))], [False]
    examples, inputs = _split_examples(cfg, task, args.split, args.whole_split, results)
    return examples, inputs, [True] * len(examples)


def _check_utf8(texts: list[str]) -> None:
    """OlftError naming the first --text value that is not valid UTF-8, before any model loads.

    Python hands command-line bytes that are not UTF-8 over as lone surrogates (surrogateescape),
    which the tokenizer cannot take (it fails with a TypeError, not a message).
    """
    for j, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")  # the bytes as typed
            offset = len(text[: exc.start].encode("utf-8", "surrogateescape"))
            which = f"text {j + 1} of {len(texts)}" if len(texts) > 1 else "the text"
            raise OlftError(f"--text: {which} (\"{shown}\") is not valid UTF-8: bad byte at byte offset {offset}. "
                            "Pass the text as UTF-8 (set the terminal or script to UTF-8).") from None


def _empty_text(texts: list[str], empty: list[tuple[int, int]]) -> OlftError:
    """The error for --text texts that tokenize to zero tokens (`empty`: (0, text index) pairs)."""
    which = [f"text {j + 1} of {len(texts)} ({json.dumps(texts[j])})" if len(texts) > 1 else f"the text ({json.dumps(texts[j])})"
             for _, j in empty]
    one = len(which) == 1
    return OlftError(f"--text: {' and '.join(which)} {'is' if one else 'are'} empty after tokenization: the run's tokenizer "
                     f"keeps none of {'its' if one else 'their'} characters. Give words it knows; if ordinary words come out "
                     'empty too, the tokenizer is probably broken: check tokenizer("the movie was good")["input_ids"].')


def _label_text(task: tasks.Task, label: float) -> str | float:
    """A gold label as the output file writes it: the class name (e.g. "entailment"), or the score."""
    return float(label) if task.is_regression else task.labels[int(label)]


def _split_examples(cfg: RunConfig, task: tasks.Task, split: str, whole: bool, results: dict) -> tuple[list[tasks.Example], list[dict]]:
    """The examples of a labelled evaluation split (`validation` = the task's headline split;
    a run trained from files: its --validation-file) that the run scored (its --max-eval-samples
    cap and --seed, through `pipeline.eval_sample`, so the metrics are `olft evaluate`'s), or
    with `whole` all of them, and the columns each one's output row starts with (`_split_rows`);
    says on stderr which, and, as `olft evaluate`, when the sample the run scored is not what
    results.json's `data_sha256` records (`runfiles.data_note`). With `whole` that sample is
    still what is compared, not the whole split: scoring more examples is no change to the data."""
    from olft.data import fingerprint
    from olft.pipeline import eval_sample, load_split

    name = task.eval_splits[0] if split == "validation" else split
    if name not in task.eval_splits:
        offered = " or ".join(dict.fromkeys(("test", "validation", *task.eval_splits)))
        if split == "train":  # scoring the examples a model was tuned on says nothing about held-out data
            raise OlftError(f"--split train is not offered: the run was tuned on it. Use --split {offered}, "
                            "or pass the file as --input FILE to get its predictions.")
        raise OlftError(f"Unknown --split {split!r} for {task.display_name}: use --split {offered}.")
    every = load_split(cfg, task, "validation" if cfg.data.data_source == "file" else name)
    sampled = eval_sample(cfg, list(range(len(every))))  # the positions `eval_sample(cfg, every)` keeps: what the run scored
    chosen = list(range(len(every))) if whole else sampled
    examples = [every[i] for i in chosen]
    rows = _split_rows(cfg, task, name, every)
    cap = cfg.data.max_eval_samples
    why = ("--whole-split" if whole else f"the run's --max-eval-samples {cap}, as `olft evaluate`; --whole-split scores all"
           if len(examples) < len(every) else "every example, as `olft evaluate`" if cap is None
           else f"the run's --max-eval-samples {cap} keeps all, as `olft evaluate`")
    where = f" of {cfg.data.validation_file}" if cfg.data.data_source == "file" else ""
    print(f"scoring {len(examples)} of {len(every)} {split} examples{where} ({why})", file=sys.stderr)
    key = "validation" if cfg.data.data_source == "file" else name  # the split's name in `data_sha256` (`pipeline.load_examples`)
    if note := data_note(results, {key: fingerprint([every[i] for i in sampled])}):
        print(note, file=sys.stderr)
    return examples, [rows[i] for i in chosen]


def _split_rows(cfg: RunConfig, task: tasks.Task, split: str, every: list[tasks.Example]) -> list[dict]:
    """The columns each example of an evaluation split starts its output row with, in split order.

    A run trained from files: its --validation-file's row, every column as written (ids, the
    label as the file gives it), as an --input row is kept (`read_inputs`, whose checks it
    passes: no column the predictions would overwrite). GLUE and `datasets`: the example's id
    (`index`, as the test files' rows; see `_split_ids`), its texts and its gold `label`.
    """
    if cfg.data.data_source == "file":
        return read_inputs(task, cfg, Path(cfg.data.validation_file)).records
    ids = _split_ids(cfg, task, split) or list(range(len(every)))
    return [{"index": i, **dict(zip(task.text_fields, ex.texts, strict=True)), "label": _label_text(task, ex.label)}
            for i, ex in zip(ids, every, strict=True)]


def _split_ids(cfg: RunConfig, task: tasks.Task, split: str) -> list | None:
    """Each example's id in a GLUE evaluation split, as `load_split` reads it, for the `index`
    column that `--split test` files have too: the GLUE file's `index` (QQP: `id`) column; None
    where there is none, or a row's is empty (CoLA, SST-2 and MRPC dev files; the `datasets`
    library, whose `idx` is the row position), and then the caller uses the 0-based row position
    in the split. Whole-number ids are given as numbers, as positions are.
    """
    if cfg.data.data_source == "datasets":
        return None
    ids = tasks.glue_ids(task, split, cfg.data.glue_dir)
    return None if ids is None else [int(i) if isinstance(i, str) and re.fullmatch(r"0|[1-9][0-9]*", i) else i for i in ids]
