"""`olft predict`: files, texts, GLUE splits and test submission files, on tiny models."""

import csv
import json
import os
import re
import shutil
import signal
import zipfile

import numpy as np
import pytest

from olft import outputs, predict, tasks
from olft.cli import main
from olft.errors import OlftError
from olft.report import continue_command
from olft.submission import SUBMISSIONS, read_test_file, submission_files, submission_label

FAST = ["--epochs", "1", "--selection-train-samples", "24", "--selection-eval-samples", "16", "-q"]


@pytest.fixture(scope="module")
def runs(model_dirs, tiny_glue, tmp_path_factory):
    """A BERT LoRA run and a Llama adapter run on RTE (a pair task)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for family, method in (("bert", "lora"), ("llama", "adapter")):
        out[family] = root / family
        args = ["run", "--model", str(model_dirs[family]), "--task", "rte", "--glue-dir", str(tiny_glue), "--method", method,
                "--strategies", "olft,final", "--out", str(out[family]), *FAST]
        assert main(args) == 0
    return out


def _read(path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_validation_split_matches_evaluate(runs, tiny_glue, tmp_path, capsys, family):
    run = runs[family]
    out = tmp_path / "dev.csv"
    assert main(["predict", "--run", str(run), "--split", "validation", "--output", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((run / "results.json").read_text())["strategies"]["olft"]["metrics"]["validation"]["accuracy"]
    assert f"accuracy={saved:.4f}" in printed
    rows = _read(out)
    dev = tasks.load_glue(tasks.get_task("rte"), "validation", tiny_glue)
    assert [(r["sentence1"], r["sentence2"]) for r in rows] == [ex.texts for ex in dev]  # input order
    probs = np.array([[float(r["prob_entailment"]), float(r["prob_not_entailment"])] for r in rows])
    assert np.allclose(probs.sum(1), 1) and len(set(np.round(probs[:, 0], 6))) > 1
    names = np.array(["entailment", "not_entailment"])[probs.argmax(1)]
    assert [r["prediction"] for r in rows] == list(names)
    assert [r["label"] for r in rows] == [("entailment" if ex.label == 0 else "not_entailment") for ex in dev]  # gold beside prediction
    accuracy = np.mean([r["prediction"] == ("entailment" if ex.label == 0 else "not_entailment") for r, ex in zip(rows, dev, strict=True)])
    assert accuracy == pytest.approx(saved, abs=1e-12)


def test_input_file_and_text_agree(runs, tmp_path, capsys):
    run = runs["bert"]
    pairs = [("the movie was good", "yes the cat"), ("a dog sat on the mat", "no"), ("really bad plot", "the film is fun")]
    tsv = tmp_path / "in.tsv"
    tsv.write_text("sentence1\tsentence2\n" + "".join(f"{a}\t{b}\n" for a, b in pairs))
    jsonl = tmp_path / "out.jsonl"
    assert main(["predict", "--run", str(run), "--input", str(tsv), "--output", str(jsonl), "--batch-size", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" not in out  # no labels, no metrics
    rows = _read(jsonl)
    assert [(r["sentence1"], r["sentence2"]) for r in rows] == pairs and "label" not in rows[0]  # no placeholder labels
    for (a, b), row in zip(pairs, rows, strict=True):
        assert main(["predict", "--run", str(run), "--text", a, b, "-q"]) == 0
        one = json.loads(capsys.readouterr().out.strip().splitlines()[0])
        assert one["prediction"] == row["prediction"]
        assert one["prob_entailment"] == pytest.approx(row["prob_entailment"], abs=1e-6)


def test_a_progress_bar_only_where_there_is_more_than_one_batch(runs, tmp_path, capsys):
    """`--text` is one example, one batch, over at once: no bar is drawn on stderr; an --input of
    three batches draws one (so this test can see a bar at all)."""
    run = runs["bert"]
    assert main(["predict", "--run", str(run), "--text", "the movie was good", "yes the cat"]) == 0
    err = capsys.readouterr().err
    assert "predict:" not in err and "it/s]" not in err, err
    tsv = tmp_path / "in.tsv"
    tsv.write_text("sentence1\tsentence2\n" + "the cat\tyes\n" * 3)
    assert main(["predict", "--run", str(run), "--input", str(tsv), "--output", str(tmp_path / "o.csv"), "--batch-size", "1"]) == 0
    assert "predict:" in capsys.readouterr().err


def test_labelled_csv_prints_metrics(runs, tmp_path, capsys):
    csv_in = tmp_path / "in.csv"
    csv_in.write_text('sentence1,sentence2,label\n"a, quoted premise",yes the dog,entailment\nthe cat,no,not_entailment\n')
    out = tmp_path / "new" / "out.tsv"  # missing folders are made, as export and --split test make theirs
    assert main(["predict", "--run", str(runs["llama"]), "--input", str(csv_in), "--output", str(out), "--strategy", "final", "-q"]) == 0
    assert "accuracy=" in capsys.readouterr().out
    assert [r["label"] for r in _read(out)] == ["entailment", "not_entailment"]  # the input's labels are kept
    rows = _read(out)
    assert rows[0]["sentence1"] == "a, quoted premise" and len(rows) == 2


def test_tsv_output_is_written_as_tsv_is_read_and_refuses_a_tab_or_line_break(runs, tmp_path, capsys):
    """A .tsv output is unquoted, as GLUE's TSVs are read: stray quotes come back as they went in.
    A cell that TSV cannot hold (a tab or line break, from a CSV input) is refused, naming .csv or
    .jsonl, and no file is written."""
    run = str(runs["bert"])
    tsv_in, out = tmp_path / "in.tsv", tmp_path / "out.tsv"
    tsv_in.write_text('sentence1\tsentence2\n"was story very awful " he said\tyes\nthe cat\t"no\n')
    assert main(["predict", "--run", run, "--input", str(tsv_in), "--output", str(out), "-q"]) == 0
    lines = out.read_text().splitlines()
    assert [line.split("\t")[:2] for line in lines[1:]] == [['"was story very awful " he said', "yes"], ["the cat", '"no']], lines
    capsys.readouterr()
    csv_in, bad = tmp_path / "in.csv", tmp_path / "bad.tsv"
    for cell in ('"a\ttab"', '"a\nline break"'):
        csv_in.write_text(f"sentence1,sentence2\n{cell},yes\n")
        assert main(["predict", "--run", run, "--input", str(csv_in), "--output", str(bad), "-q"]) == 2
        err = capsys.readouterr().err
        assert "tab or line break" in err and ".csv or .jsonl" in err and "sentence1" in err, err
        assert not bad.exists()


def test_input_columns_named_on_the_command_line(runs, tmp_path, capsys):
    """An --input file whose columns are not the task's: --text-columns / --label-column name them,
    and its predictions equal those of the same rows under the task's names."""
    run = str(runs["bert"])
    rows = [("a cat sat", "yes the cat", "entailment"), ("the dog ran", "no", "not_entailment")]
    std, own = tmp_path / "std.tsv", tmp_path / "own.tsv"
    std.write_text("sentence1\tsentence2\tlabel\n" + "".join("\t".join(r) + "\n" for r in rows))
    own.write_text("gold\thypothesis\tpremise\n" + "".join(f"{c}\t{b}\t{a}\n" for a, b, c in rows))
    assert main(["predict", "--run", run, "--input", str(std), "--output", str(tmp_path / "std.csv"), "-q"]) == 0
    printed = capsys.readouterr().out
    assert main(["predict", "--run", run, "--input", str(own), "--output", str(tmp_path / "own.csv"), "-q",
                 "--text-columns", "premise,hypothesis", "--label-column", "gold"]) == 0
    assert capsys.readouterr().out == printed and "accuracy=" in printed  # scored on the gold column
    a, b = _read(tmp_path / "std.csv"), _read(tmp_path / "own.csv")
    assert list(b[0]) == ["gold", "hypothesis", "premise", "prediction", "prob_entailment", "prob_not_entailment"]
    assert [r["prob_entailment"] for r in a] == [r["prob_entailment"] for r in b]
    out = str(tmp_path / "x.csv")
    for args, phrase in ((["--input", str(own)], "has no column 'sentence1'"),
                         (["--input", str(own), "--text-columns", "premise"], "takes 2 text column(s)"),
                         (["--input", str(own), "--text-columns", "premise,premise"], "--text-columns names 'premise' twice"),
                         (["--input", str(own), "--text-columns", "premise,hypothesis", "--label-column", "nope"],
                          "has no column 'nope' for --label-column (columns found: gold, hypothesis, premise)"),
                         (["--text", "a", "b", "--text-columns", "premise,hypothesis"], "--text-columns names columns of an --input file"),
                         (["--split", "validation", "--label-column", "gold"], "--label-column names columns of an --input file")):
        assert main(["predict", "--run", run, *args, "--output", out]) == 2
        assert phrase in capsys.readouterr().err
    assert not os.path.exists(out)
    short = tmp_path / "short.tsv"  # the header names the label column; no row reaches it: no labels, as blank cells
    short.write_text("premise\thypothesis\tgold\n" + "".join(f"{a}\t{b}\n" for a, b, _ in rows))
    assert main(["predict", "--run", run, "--input", str(short), "--output", out, "-q",
                 "--text-columns", "premise,hypothesis", "--label-column", "gold"]) == 0, capsys.readouterr().err
    assert "accuracy=" not in capsys.readouterr().out and len(_read(tmp_path / "x.csv")) == 2
    # A `label` column in another vocabulary: the error names --no-labels, which predicts without metrics,
    # the column going through to the output as any other.
    other = tmp_path / "other.tsv"
    other.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"{a}\t{b}\tpos\n" for a, b, _ in rows))
    assert main(["predict", "--run", run, "--input", str(other), "--output", out]) == 2
    err = capsys.readouterr().err
    assert "label 'pos' is not a RTE label" in err and "to predict without metrics, add --no-labels" in err, err
    assert main(["predict", "--run", run, "--input", str(other), "--output", out, "-q", "--no-labels"]) == 0
    assert "accuracy=" not in capsys.readouterr().out
    assert [r["label"] for r in _read(tmp_path / "x.csv")] == ["pos", "pos"]
    assert [r["prob_entailment"] for r in _read(tmp_path / "x.csv")] == [r["prob_entailment"] for r in a]
    for args, phrase in ((["--input", str(other), "--no-labels", "--label-column", "gold"], "give one of them"),
                         (["--text", "a", "b", "--no-labels"], "--no-labels names columns of an --input file"),
                         (["--input", str(own)], "(comma-separated, in the task's order).")):  # predict's own hint: no --train-file
        assert main(["predict", "--run", run, *args, "--output", str(tmp_path / "y.csv")]) == 2
        assert phrase in capsys.readouterr().err


def _test_glue(tiny_glue, tmp_path):
    glue = tmp_path / "glue"
    shutil.copytree(tiny_glue, glue)
    lines = ["index\tsentence1\tsentence2"] + [f"{i}\tthe cat sat {'yes' if i % 2 else 'no'}\tthe dog" for i in (7, 3, 11)]
    (glue / "RTE" / "test.tsv").write_text("\n".join(lines) + "\n")
    return glue


def test_test_split_writes_submission(runs, tiny_glue, tmp_path, capsys, caplog):
    glue = _test_glue(tiny_glue, tmp_path)
    sub = tmp_path / "sub"
    assert main(["predict", "--run", str(runs["bert"]), "--split", "test", "--glue-dir", str(glue), "--output", str(sub), "--zip", "-q"]) == 0
    lines = (sub / "RTE.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction"
    assert [line.split("\t")[0] for line in lines[1:]] == ["7", "3", "11"]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"entailment", "not_entailment"}
    with zipfile.ZipFile(sub / "submission.zip") as z:
        assert z.namelist() == ["RTE.tsv"]
    # a zip of one task is said to lack the others the server scores
    assert any("holds 1 of the GLUE server's" in m and "missing: CoLA.tsv" in m for m in caplog.messages)
    # The same examples through --input give the same labels.
    out = tmp_path / "same.csv"
    assert main(["predict", "--run", str(runs["bert"]), "--input", str(glue / "RTE" / "test.tsv"), "--output", str(out), "-q"]) == 0
    assert [r["prediction"] for r in _read(out)] == [line.split("\t")[1] for line in lines[1:]]


def test_submission_labels_as_the_server_expects():
    two = np.array([0.1, 0.9])
    assert submission_label(tasks.get_task("rte"), two) == "not_entailment"
    assert submission_label(tasks.get_task("qnli"), two) == "not_entailment"
    assert submission_label(tasks.get_task("sst2"), two) == "1"
    assert submission_label(tasks.get_task("wnli"), two) == "1"  # WNLI's 1 is entailment, as in GLUE
    assert submission_label(tasks.get_task("cola"), np.array([0.7, 0.2])) == "0"
    assert submission_label(tasks.get_task("mnli"), np.array([0.1, 0.8, 0.1])) == "neutral"
    assert submission_label(tasks.get_task("stsb"), np.array([3.14159])) == "3.142"
    assert {name for _, name in SUBMISSIONS["mnli"]} == {"MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"}


def test_qqp_test_file_ids_are_read_from_its_id_column(tmp_path):
    """GLUE's QQP/test.tsv names its id column `id` (the other test files: `index`)."""
    path = tmp_path / "test.tsv"
    path.write_text("id\tquestion1\tquestion2\n5\tis it?\tis that?\n9\twhy?\twhy not?\n")
    ids, examples = read_test_file(tasks.get_task("qqp"), path)
    assert ids == ["5", "9"] and examples[1].texts == ("why?", "why not?")


def test_mnli_submission_files(tmp_path):
    (tmp_path / "MNLI").mkdir()
    for name in ("test_matched.tsv", "test_mismatched.tsv"):
        (tmp_path / "MNLI" / name).write_text("index\tsentence1\tsentence2\n0\ta\tb\n")
    task = tasks.get_task("mnli")
    assert [n for _, n in submission_files(task, str(tmp_path))] == ["MNLI-m.tsv", "MNLI-mm.tsv"]
    (tmp_path / "diagnostic").mkdir()
    (tmp_path / "diagnostic" / "diagnostic.tsv").write_text("index\tsentence1\tsentence2\n0\ta\tb\n")
    assert [n for _, n in submission_files(task, str(tmp_path))][-1] == "AX.tsv"


# -- bad input: exit 2 and one line naming the fix -----------------------------------------------------


def _fails(capsys, args, phrase):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("olft: error:") and phrase.lower() in err.lower(), err


def test_bad_predict_inputs(runs, tiny_glue, tmp_path, capsys):
    run = str(runs["bert"])
    _fails(capsys, ["predict", "--run", str(tmp_path), "--text", "a", "b"], "not an olft run folder")
    _fails(capsys, ["predict", "--run", run, "--strategy", "full", "--text", "a", "b"], "Finished: olft, final")
    _fails(capsys, ["predict", "--run", run, "--text", "only one"], "takes 2 text")
    _fails(capsys, ["predict", "--run", run, "--text", "a premise", " "], "--text: the sentence2 text is empty")
    _fails(capsys, ["predict", "--run", run, "--text", "a", "b", "--split", "test"], "exactly one of")
    _fails(capsys, ["predict", "--run", run, "--split", "validation", "--output", str(tmp_path / "x.xlsx")], ".csv, .tsv or .jsonl")
    _fails(capsys, ["predict", "--run", run, "--split", "validation", "--output", str(tmp_path / "x.csv"), "--zip"], "--split test")
    _fails(capsys, ["predict", "--run", run, "--split", "test", "--output", str(tmp_path / "s")], "RTE/test.tsv")
    _fails(capsys, ["predict", "--run", run, "--split", "train", "--output", str(tmp_path / "x.csv")], "--split train is not offered: the run was tuned on it. Use --split test or validation, or pass the file as --input")
    _fails(capsys, ["predict", "--run", run, "--split", "dev", "--output", str(tmp_path / "x.csv")], "Unknown --split 'dev' for RTE: use --split test or validation.")
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\na,b\n")
    _fails(capsys, ["predict", "--run", run, "--input", str(bad), "--output", str(tmp_path / "x.csv")], "no column 'sentence1'")
    _fails(capsys, ["predict", "--run", run, "--input", str(tmp_path / "none.csv"), "--output", str(tmp_path / "x.csv")], "not found")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(runs["bert"] / "config.json", unfinished)
    r = json.loads((runs["bert"] / "results.json").read_text())
    (unfinished / "results.json").write_text(json.dumps({**r, "strategies": {}, "status": "interrupted", "complete": False}))
    _fails(capsys, ["predict", "--run", str(unfinished), "--text", "a", "b"], "unfinished (INCOMPLETE (interrupted))")
    # A run killed mid-way (results.json still says running, no live lock) reads as `olft evaluate` says it.
    (unfinished / "results.json").write_text(json.dumps({**r, "strategies": {}, "status": "running", "complete": False}))
    _fails(capsys, ["predict", "--run", str(unfinished), "--text", "a", "b"], "unfinished (INTERRUPTED: the run by")
    _fails(capsys, ["predict", "--run", str(tmp_path / "nothere"), "--text", "a", "b"], f"Run folder {tmp_path / 'nothere'} does not exist")
    (tmp_path / "adir").mkdir()
    _fails(capsys, ["predict", "--run", run, "--split", "validation", "--output", str(tmp_path / "adir")], "is a folder: pass a file name")
    _fails(capsys, ["predict", "--run", run, "--split", "test", "--whole-split", "--output", str(tmp_path / "s")],
           "--whole-split applies to --split validation")


def test_the_only_strategy_of_a_run_is_the_default(model_dirs, tiny_glue, tmp_path, capsys, caplog):
    """`olft train` names its one strategy layers=1: predict and export take it without --strategy;
    a run of several without olft lists them."""
    import logging

    common = ["--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue), *FAST]
    run = tmp_path / "train"
    assert main(["train", "--layers", "1", "--out", str(run), *common]) == 0
    one = tmp_path / "one.tsv"
    one.write_text("sentence1\tsentence2\nthe cat sat\tyes\n")
    out = tmp_path / "out.csv"
    caplog.set_level(logging.INFO, logger="olft")
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--input", str(one), "--output", str(out)]) == 0
    assert f"wrote 1 prediction to {out}\n" in capsys.readouterr().err and len(_read(out)) == 1
    assert f"using strategy layers=1, the only one in {run}" in caplog.messages
    assert main(["export", "--run", str(run), "--format", "olft", "--output", str(tmp_path / "x"), "-q"]) == 0
    assert list(json.loads((tmp_path / "x" / "results.json").read_text())["strategies"]) == ["layers=1"]
    import olft

    assert olft.load(run).config.num_labels == 2  # the library's loader takes the only strategy too
    several = tmp_path / "several"
    assert main(["run", "--strategies", "final,layers=1", "--out", str(several), *common]) == 0
    for command in (["predict", "--text", "a", "b"], ["export", "--output", str(tmp_path / "y")]):
        _fails(capsys, [*command, "--run", str(several)], "Strategy 'olft' (the default) is not in this run")
        _fails(capsys, [*command, "--run", str(several)], "Finished: final, layers=1; pass one of them (--strategy, or olft.load's strategy=)")
    # --strategy reads layers= as --strategies does: a range names the same recorded strategy
    assert main(["predict", "--run", str(several), "--strategy", "layers=1-1", "--text", "a", "b", "-q"]) == 0
    # ... and names: FINAL, " final", Layers=1 (and all for full) are the recorded strategies
    for name in ("FINAL", " final", "Layers=1"):
        assert main(["predict", "--run", str(several), "--strategy", name, "--text", "a", "b", "-q"]) == 0, name
    _fails(capsys, ["predict", "--run", str(several), "--strategy", "all", "--text", "a", "b"], "Strategy 'full' is not in this run")
    for unreadable, why in (("layers=x", "Cannot read 'layers=x'"), ("layers=1+1", "Layer 1 appears twice in 'layers=1+1'"),
                            ("layers=1,,", "Cannot read 'layers=1,,'")):
        # looked up as typed: not there, why --strategies could not read it, and what is there
        for phrase in (f"Strategy {unreadable!r} is not in this run", why, "Finished: final, layers=1; pass one"):
            _fails(capsys, ["predict", "--run", str(several), "--strategy", unreadable, "--text", "a", "b"], phrase)
    _fails(capsys, ["predict", "--run", str(several), "--strategy", "finl", "--text", "a", "b"], "Did you mean 'final'?")
    # a strategy the run names but has not finished (a killed run): the command that finishes it
    results = json.loads((several / "results.json").read_text())
    (several / "results.json").write_text(json.dumps({**results, "strategy_names": [*results["strategy_names"], "full"]}))
    _fails(capsys, ["predict", "--run", str(several), "--strategy", "full", "--text", "a", "b"],
           f"Strategy 'full' has not finished (`{continue_command(several)}` finishes it)")
    (several / "results.json").write_text(json.dumps(results))
    from olft.config import strategy_name

    assert strategy_name("layers=2,1", strict=False) == "layers=1+2"  # one name looked up: ',' joins layers, as --layers
    with pytest.raises(olft.OlftError, match="Cannot read 'layers=2,1'"):
        strategy_name("layers=2,1")  # in --strategies ',' separates strategies
    with pytest.raises(olft.OlftError, match=r"strategy takes a strategy's name \(olft, final, full, layers=2\+3\), not 3; "
                                             r"finished in .*several: final, layers=1\."):
        olft.load(several, strategy=3)


def test_an_unfinished_folder_names_the_command_that_made_it(runs, tmp_path, capsys):
    """An `olft train` folder (its one strategy layers=...) is finished by `olft train`, not `olft run`."""
    r = json.loads((runs["bert"] / "results.json").read_text())
    for names, command in ((["layers=1"], "olft train"), (["olft", "final"], "olft run")):
        folder = tmp_path / command.replace(" ", "-")
        folder.mkdir()
        shutil.copy(runs["bert"] / "config.json", folder)
        (folder / "results.json").write_text(json.dumps({**r, "strategies": {}, "strategy_names": names,
                                                         "status": "interrupted", "complete": False}))
        _fails(capsys, ["predict", "--run", str(folder), "--text", "a", "b"], f"Finish it by rerunning the `{command}` "
               f"command that made it, or `olft run --config {folder}/config.json --out {folder}`.")


def test_a_selection_only_folder_says_how_to_tune_its_layer(model_dirs, tiny_glue, tmp_path, capsys):
    sel = tmp_path / "sel"
    assert main(["select", "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue),
                 "--out", str(sel), *FAST]) == 0  # fmt: skip
    layer = json.loads((sel / "results.json").read_text())["selection"]["selected_layer"]
    for command in (["predict", "--text", "a", "b"], ["export", "--output", str(tmp_path / "y")]):
        _fails(capsys, [*command, "--run", str(sel)], "holds a selection only (`olft select`): no layer was tuned")
        _fails(capsys, [*command, "--run", str(sel)], f"`olft run --config {sel}/config.json --out {sel}` continues it, "
               f"tuning the selected layer {layer}")


def test_rows_for_classes_and_scores():
    from olft.predict import rows_for

    rows, preds = rows_for(tasks.get_task("mnli"), np.array([[0.0, np.log(3.0), 0.0]]))
    assert rows == [{"prediction": "neutral", "prob_entailment": pytest.approx(0.2), "prob_neutral": pytest.approx(0.6),
                     "prob_contradiction": pytest.approx(0.2)}] and list(preds) == [1]
    rows, preds = rows_for(tasks.get_task("stsb"), np.array([[3.5], [-0.25]]))
    # `prediction`, as for classes: STS-B's gold column is `score`, and an input's columns are kept.
    assert rows == [{"prediction": 3.5}, {"prediction": -0.25}] and list(preds) == [3.5, -0.25]
    assert predict.label_columns(tasks.get_task("stsb")) == ["prediction"]


def test_unlabelled_input_with_a_stray_quote_is_refused_naming_the_line(runs, tmp_path, capsys):
    # The quote opened on line 3 closes on line 5: read leniently, lines 3-5 would be one
    # example and two rows would get no prediction, with exit code 0.
    bad = tmp_path / "in.csv"
    bad.write_text('sentence1,sentence2\nthe cat,yes\na dog,"stray opening\nthe man,sees it\na woman,runs"\nthe end,fine\n')
    out = tmp_path / "out.csv"
    _fails(capsys, ["predict", "--run", str(runs["bert"]), "--input", str(bad), "--output", str(out)],
           "in.csv, line 3: a quoted field opened on this line runs on to line 5, and line 4 inside it reads as a row of its own")
    assert not out.exists()


@pytest.mark.parametrize("strategy", ["olft", "final"])
def test_damaged_weights_file_is_one_line_in_evaluate_and_predict(runs, tmp_path, capsys, strategy):
    run = tmp_path / "run"
    shutil.copytree(runs["bert"], run)
    weights = run / "weights" / f"{strategy}.safetensors"
    weights.write_bytes(b"garbage")
    for argv in (["evaluate", "--run", str(run), "-q"], ["predict", "--run", str(run), "--strategy", strategy, "--text", "a", "b", "-q"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"olft: error: {weights} is unreadable") and f"delete it and run `olft run --config {run}/config.json --out {run}`" in err, err
        assert err.count("\n") == 1, err  # one line, no traceback


def test_validation_split_follows_the_runs_eval_cap(runs, tmp_path, capsys):
    """A run scored on --max-eval-samples examples: predict --split validation scores the same
    sample as evaluate (same metric, same rows); --whole-split scores the whole split."""
    run = tmp_path / "run"
    shutil.copytree(runs["bert"], run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["max_eval_samples"] = 13
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["evaluate", "--run", str(run), "-q"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("olft validation:"))
    evaluated = line.split("accuracy=")[1].split()[0]
    out = tmp_path / "dev.csv"
    assert main(["predict", "--run", str(run), "--split", "validation", "--output", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    assert f"accuracy={evaluated}" in captured.out and "scoring 13 of 40 validation examples" in captured.err, captured
    rte = tasks.get_task("rte")
    sample = tasks.sample_split(tasks.load_glue(rte, "validation", cfg["data"]["glue_dir"]), 13, cfg["train"]["seed"])
    assert [(r["sentence1"], r["sentence2"]) for r in _read(out)] == [ex.texts for ex in sample]
    assert main(["predict", "--run", str(run), "--split", "validation", "--whole-split", "--output", str(out), "-q"]) == 0
    assert len(_read(out)) == 40 and "scoring 40 of 40" in capsys.readouterr().err
    _fails(capsys, ["predict", "--run", str(run), "--text", "a", "b", "--whole-split"], "use it with --split")


def test_input_columns_pass_through_in_order(runs, tmp_path, capsys):
    """Every input column (ids, the gold label, others) is kept under its name and in input order,
    then the prediction columns, so the output joins back to the input."""
    run = str(runs["bert"])
    tsv = tmp_path / "in.tsv"
    tsv.write_text("index\tsentence1\tgenre\tsentence2\tlabel\n7\tthe cat sat\tnews\tyes\tentailment\n3\ta dog\tfiction\tno\tnot_entailment\n")
    out = tmp_path / "out.csv"
    assert main(["predict", "--run", run, "--input", str(tsv), "--output", str(out), "-q"]) == 0
    assert "accuracy=" in capsys.readouterr().out
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["index", "sentence1", "genre", "sentence2", "label", "prediction", "prob_entailment", "prob_not_entailment"]
    rows = _read(out)
    assert [(r["index"], r["genre"], r["label"]) for r in rows] == [("7", "news", "entailment"), ("3", "fiction", "not_entailment")]
    # JSON Lines: an object without a key other objects have leaves it empty (CSV) or out (JSONL).
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"id": "a1", "sentence1": "the cat", "sentence2": "yes", "filename": "x.txt"}\n'
                     '{"sentence1": "a dog", "sentence2": "no", "id": 5}\n')
    for name in ("out.tsv", "out.jsonl"):
        assert main(["predict", "--run", run, "--input", str(jsonl), "--output", str(tmp_path / name), "-q"]) == 0
    capsys.readouterr()
    rows = _read(tmp_path / "out.tsv")
    assert list(rows[0])[:4] == ["id", "sentence1", "sentence2", "filename"] and list(rows[0])[4] == "prediction"
    assert [(r["id"], r["filename"]) for r in rows] == [("a1", "x.txt"), ("5", "")]
    rows = _read(tmp_path / "out.jsonl")
    assert rows[1]["id"] == 5 and "filename" not in rows[1] and rows[0]["filename"] == "x.txt"
    # A column the predictions would overwrite (a previous output fed back) is refused by name.
    again = tmp_path / "again.csv"
    shutil.copy(out, again)
    _fails(capsys, ["predict", "--run", run, "--input", str(again), "--output", str(tmp_path / "o.csv")], "column 'prediction'")


def test_output_paths_refused_before_the_model_loads(runs, tiny_glue, tmp_path, capsys, monkeypatch):
    """--output that is the --input, a folder, under a file, under an unwritable folder,
    or a file name with --split test: one line, exit 2, before the model is loaded."""
    run = str(runs["bert"])
    glue = _test_glue(tiny_glue, tmp_path)
    lab = tmp_path / "lab.tsv"
    lab.write_text("sentence1\tsentence2\tlabel\nthe cat\tyes\tentailment\n")
    before = lab.read_text()
    os.link(lab, tmp_path / "hard.tsv")
    (tmp_path / "dir.csv").mkdir()

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(predict, "tuned_session", no_model)
    bad = [
        ([str(lab)], "is the --input file"),
        ([str(tmp_path / "sub" / ".." / "lab.tsv")], "is the --input file"),
        ([str(tmp_path / "hard.tsv")], "is the --input file"),  # another name of the same file
        ([str(lab / "p.csv")], f"{lab} is a file, not a folder"),
        ([str(lab / "deeper" / "p.csv")], f"{lab} is a file, not a folder"),
        ([str(tmp_path / "dir.csv")], "is a folder"),
    ]
    if os.path.isdir("/proc/self"):  # nothing can be created in /proc, also by root
        bad.append((["/proc/p.csv"], "folder /proc is not writable"))
    for output, phrase in bad:
        _fails(capsys, ["predict", "--run", run, "--input", str(lab), "--output", *output], phrase)
    assert lab.read_text() == before
    test = ["predict", "--run", run, "--split", "test", "--glue-dir", str(glue), "--output"]
    _fails(capsys, [*test, str(tmp_path / "pt_file.csv")], "--split test writes a folder of submission files: pass a folder")
    (tmp_path / "plain").write_text("x")
    _fails(capsys, [*test, str(tmp_path / "plain")], "is a file")
    _fails(capsys, [*test, str(lab / "sub")], f"{lab} is a file, not a folder")
    if os.path.isdir("/proc/self"):
        _fails(capsys, [*test, "/proc/gl"], "folder /proc is not writable")
    assert not (tmp_path / "pt_file.csv").exists() and (tmp_path / "plain").read_text() == "x"


def test_a_failed_write_is_one_line_naming_the_path(tmp_path):
    (tmp_path / "gone").write_text("a file where the folder was")  # e.g. replaced while the model ran
    with pytest.raises(OlftError, match=r"Cannot write .*gone.*p\.csv \("):
        outputs.write_rows(tmp_path / "gone" / "p.csv", [{"prediction": "entailment"}])


def test_invalid_label_refused_also_beside_a_missing_one(runs, tmp_path, capsys):
    """Only empty labels make a file unlabelled: `maybe` is refused naming its line, whether or not
    another row has no label."""
    for name, rows in (("badlab.tsv", "a\tb\tmaybe\nc\td\t\n"), ("only.tsv", "a\tb\tmaybe\n")):
        path = tmp_path / name
        path.write_text("sentence1\tsentence2\tlabel\n" + rows)
        _fails(capsys, ["predict", "--run", str(runs["bert"]), "--input", str(path), "--output", str(tmp_path / "o.csv")],
               f"{name}, line 2: label 'maybe' is not a RTE label")


def _sample_positions(n, cap, seed):
    return tasks.sample_split(list(range(n)), cap, seed)


def test_validation_rows_start_with_the_dev_files_index_or_position(runs, tiny_glue, tmp_path, capsys):
    """As the test split's files, --split validation rows start with `index`: the dev file's own
    index (here not the row position), or where the dev file has none the 0-based row position,
    also for the run's capped sample."""
    run = tmp_path / "run"
    shutil.copytree(runs["bert"], run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["max_eval_samples"] = 13
    (run / "config.json").write_text(json.dumps(cfg))
    glue = tmp_path / "glue"
    shutil.copytree(tiny_glue, glue)
    dev = glue / "RTE" / "dev.tsv"
    header, *rows = dev.read_text().splitlines()
    texts = [row.split("\t", 1)[1] for row in rows]
    dev.write_text("\n".join([header, *(f"{500 - 3 * n}\t{t}" for n, t in enumerate(texts))]) + "\n")
    chosen = _sample_positions(len(rows), 13, cfg["train"]["seed"])
    out = tmp_path / "dev.jsonl"
    common = ["predict", "--run", str(run), "--split", "validation", "--glue-dir", str(glue), "-q"]
    assert main([*common, "--output", str(out)]) == 0
    assert [r["index"] for r in _read(out)] == [500 - 3 * p for p in chosen]
    assert main([*common, "--whole-split", "--output", str(tmp_path / "dev.csv")]) == 0
    with open(tmp_path / "dev.csv", newline="") as f:
        assert next(csv.reader(f))[0] == "index"  # first, as in the test split's files
    assert [r["index"] for r in _read(tmp_path / "dev.csv")] == [str(500 - 3 * n) for n in range(len(rows))]
    dev.write_text("\n".join(["sentence1\tsentence2\tlabel", *texts]) + "\n")  # no index column (as SST-2, CoLA, MRPC)
    assert main([*common, "--output", str(out)]) == 0
    capsys.readouterr()
    got = _read(out)
    assert [r["index"] for r in got] == chosen != list(range(13))
    assert [r["sentence1"] for r in got] == [texts[p].split("\t")[0] for p in chosen]


def test_partly_labelled_input_is_scored_on_its_labelled_rows(runs, tmp_path, capsys):
    """Blank labels do not make a file unlabelled: every row is predicted, the metrics are those of
    the labelled rows, and the line says on how many rows."""
    pairs = [("the movie was good", "yes the cat", "entailment"), ("a dog sat on the mat", "no", ""),
             ("really bad plot", "the film is fun", "not_entailment"), ("the cat sat", "no dog", "entailment"),
             ("a man runs", "yes", "")]
    tsv = tmp_path / "in.tsv"
    tsv.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in pairs))
    out = tmp_path / "out.csv"
    assert main(["predict", "--run", str(runs["bert"]), "--input", str(tsv), "--output", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    rows = _read(out)
    assert [r["label"] for r in rows] == [c for _, _, c in pairs] and all(r["prediction"] for r in rows)
    hits = [r["prediction"] == r["label"] for r in rows if r["label"]]
    assert f"accuracy={np.mean(hits):.4f} (on the 3 of 5 rows that have a label)" in printed, printed


def test_label_column_blank_in_every_row_is_said(runs, tmp_path, capsys, caplog):
    """A label column with no label in it: predictions written, and a warning says why no metrics
    follow (before, nothing was said); a file without a label column, or --no-labels, says nothing."""
    rows = [("the movie was good", "yes the cat"), ("a dog sat on the mat", "no")]
    common = ["predict", "--run", str(runs["bert"]), "--output", str(tmp_path / "out.csv"), "-q"]
    for name, text, warned in [("blank.tsv", "sentence1\tsentence2\tlabel\n" + "".join(f"{a}\t{b}\t\n" for a, b in rows), True),
                               ("blank.jsonl", "".join(json.dumps({"sentence1": a, "sentence2": b, "label": ""}) + "\n"
                                                       for a, b in rows), True),
                               ("none.tsv", "sentence1\tsentence2\n" + "".join(f"{a}\t{b}\n" for a, b in rows), False)]:
        path = tmp_path / name
        path.write_text(text)
        caplog.clear()
        assert main([*common, "--input", str(path)]) == 0
        assert "accuracy" not in capsys.readouterr().out
        said = [r.getMessage() for r in caplog.records if "blank in every row" in r.getMessage()]
        assert said == ([f"{path}: its label column 'label' is blank in every row, so no metrics are computed; the "
                         "predictions are written."] if warned else []), (name, said)
        caplog.clear()
        assert main([*common, "--input", str(path), "--no-labels"]) == 0
        assert not [r for r in caplog.records if "blank in every row" in r.getMessage()]


def test_output_columns_follow_the_input_header_whatever_the_first_row_lacks(runs, tmp_path, capsys):
    """A first row without its last field (or a first JSON object without a key) put that column
    after the predictions: every input column comes first, in the file's order, then the predictions."""
    out = tmp_path / "out.csv"
    for name, text in [("short.tsv", "sentence1\tsentence2\tlabel\nthe cat sat\tno dog\na man runs\tyes\tentailment\n"),
                       ("short.jsonl", '{"sentence1": "the cat sat", "sentence2": "no dog"}\n'
                                       '{"sentence1": "a man runs", "sentence2": "yes", "label": "entailment", "id": 7}\n')]:
        path = tmp_path / name
        path.write_text(text)
        assert main(["predict", "--run", str(runs["bert"]), "--input", str(path), "--output", str(out), "-q"]) == 0
        capsys.readouterr()
        with open(out, newline="") as f:
            header = next(csv.reader(f))
        columns = ["sentence1", "sentence2", "label"] + (["id"] if name.endswith("jsonl") else [])
        assert header[: len(columns)] == columns and header[len(columns)] == "prediction", (name, header)
        assert _read(out)[0]["label"] == "" and _read(out)[1]["label"] == "entailment"
    main(["predict", "--run", str(runs["bert"]), "--input", str(path), "--output", str(tmp_path / "out.jsonl"), "-q"])
    assert "label" not in _read(tmp_path / "out.jsonl")[0]  # JSON Lines still leaves a missing key out


def test_blank_texts_are_refused_naming_their_lines(runs, tmp_path, capsys):
    """A blank text cannot be predicted: the whole file is refused, naming the lines (the first
    few, then how many more) and the fix, and no output is written."""
    rows = ["the cat\tyes"] * 9
    for line in (3, 5, 6, 7, 8, 9, 10):  # file lines; the header is line 1
        rows[line - 2] = "a dog\t " if line % 2 else " \tno"
    tsv = tmp_path / "in.tsv"
    tsv.write_text("sentence1\tsentence2\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out.csv"
    args = ["predict", "--run", str(runs["bert"]), "--input", str(tsv), "--output", str(out)]
    _fails(capsys, args, f"{tsv}, lines 3, 5, 6, 7, 8 and 2 more (7 rows): a text is empty after tokenization")
    _fails(capsys, args, "Fill in or remove those rows.")
    assert not out.exists()


def test_a_submission_zip_always_matches_the_folders_files(runs, tiny_glue, tmp_path, capsys, monkeypatch):
    """A rerun rebuilds a submission.zip already in the folder (with or without --zip) from the
    folder's files; a run that stops before it is rebuilt leaves none, and says so."""
    glue = _test_glue(tiny_glue, tmp_path)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "CoLA.tsv").write_text("index\tprediction\n0\t1\n")  # another task's file, from another run
    args = ["predict", "--run", str(runs["bert"]), "--split", "test", "--glue-dir", str(glue), "--output", str(sub), "-q"]

    def zipped():
        with zipfile.ZipFile(sub / "submission.zip") as z:
            return {name: z.read(name).decode() for name in z.namelist()}

    assert main(args) == 0 and not (sub / "submission.zip").exists()  # none asked for, none made
    assert main([*args, "--zip"]) == 0
    assert zipped() == {"CoLA.tsv": "index\tprediction\n0\t1\n", "RTE.tsv": (sub / "RTE.tsv").read_text()}
    (glue / "RTE" / "test.tsv").write_text("index\tsentence1\tsentence2\n5\ta new cat\tno\n")  # new test rows
    (sub / "CoLA.tsv").unlink()
    assert main(args) == 0  # no --zip: the zip there is rebuilt all the same
    assert f"wrote {sub / 'submission.zip'} (rebuilt" in capsys.readouterr().out
    assert (sub / "RTE.tsv").read_text().splitlines()[1].startswith("5\t")
    assert zipped() == {"RTE.tsv": (sub / "RTE.tsv").read_text()}
    assert sorted(p.name for p in sub.iterdir()) == ["RTE.tsv", "submission.zip"]  # no temporary file left

    def stopped(*a, **k):
        raise OlftError("stopped half-way")

    real = predict.logits
    monkeypatch.setattr(predict, "logits", stopped)  # before the new files are written: the old zip is gone
    _fails(capsys, args, "stopped half-way")
    assert sorted(p.name for p in sub.iterdir()) == ["RTE.tsv"]
    monkeypatch.setattr(predict, "logits", real)
    assert main([*args, "--zip"]) == 0 and zipped() == {"RTE.tsv": (sub / "RTE.tsv").read_text()}

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "write", full_disk)
    _fails(capsys, args, f"Cannot write {sub / 'submission.zip'} (No space left on device); {sub} has no submission.zip now")
    assert sorted(p.name for p in sub.iterdir()) == ["RTE.tsv"]


def test_a_stopped_prediction_removes_the_output_folders_it_made_and_no_other(runs, tiny_glue, tmp_path, capsys, monkeypatch):
    """The review's `timeout -s INT 20 olft predict --split test --output DIR` left an empty DIR:
    a stop (Ctrl-C, SIGTERM, an error) before its files are written removes the folders predict
    made (DIR and its missing parents), and keeps a folder that was there before, or holds anything."""
    glue = _test_glue(tiny_glue, tmp_path)

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict, "logits", stopped)
    new = tmp_path / "made" / "sub"
    args = ["predict", "--run", str(runs["bert"]), "--split", "test", "--glue-dir", str(glue), "-q", "--zip"]
    assert main([*args, "--output", str(new)]) == 130
    assert not (tmp_path / "made").exists()  # the parent it made too
    old = tmp_path / "old"
    old.mkdir()
    assert main([*args, "--output", str(old)]) == 130 and old.is_dir()  # the user's folder stays
    kept = tmp_path / "kept" / "sub"

    def another_file_lands(*a, **k):  # something else wrote into the parent meanwhile
        (tmp_path / "kept" / "theirs.txt").write_text("x")
        raise OlftError("stopped half-way")

    monkeypatch.setattr(predict, "logits", another_file_lands)
    capsys.readouterr()
    _fails(capsys, [*args, "--output", str(kept)], "stopped half-way")
    assert not kept.exists() and (tmp_path / "kept" / "theirs.txt").is_file()
    monkeypatch.setattr(predict, "logits", stopped)  # an --output file's new folder goes as well
    out_file = tmp_path / "newdir" / "preds.csv"
    assert main(["predict", "--run", str(runs["bert"]), "--split", "validation", "--output", str(out_file), "-q"]) == 130
    assert not (tmp_path / "newdir").exists()
    capsys.readouterr()


# -- STS-B: correlations, which are undefined on too few or constant rows -------------------------

STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
FEW = "(a correlation needs at least 3 with different scores)"


@pytest.fixture(scope="module")
def stsb_run(model_dirs, tmp_path_factory):
    """A BERT LoRA run (strategy final) on a small STS-B whose score counts shared words."""
    import random

    from tiny import WORDS

    rng = random.Random(0)
    glue = tmp_path_factory.mktemp("stsb-glue")
    (glue / "STS-B").mkdir()
    for split, n in (("train", 48), ("dev", 12)):
        rows = []
        for i in range(n):
            a = rng.sample(WORDS[:12], 4)
            b = a[: rng.randint(0, 4)] + rng.sample(WORDS[12:24], 2)
            rows.append(f"{i}\tg\tf\t2012\t{i}\ts\ts\t{' '.join(a)}\t{' '.join(b)}\t{(len(b) - 2) * 1.25}\n")
        (glue / "STS-B" / f"{split}.tsv").write_text(STSB_HEADER + "".join(rows))
    run = tmp_path_factory.mktemp("stsb-run") / "run"
    assert main(["run", "--model", str(model_dirs["bert"]), "--task", "stsb", "--glue-dir", str(glue), "--method", "lora",
                 "--strategies", "final", "--out", str(run), *FAST]) == 0  # fmt: skip
    return run


def test_a_correlation_on_too_few_or_constant_rows_is_said_to_be_undefined(stsb_run, tmp_path, capsys):
    """Training counts an undefined correlation as 0.0 (and 2 rows give +-1); predict shows neither number."""
    cases = [([("the movie", "a plot", "3.0")], f"pearson, spearman: undefined on 1 labelled row {FEW}"),
             ([("the movie", "a plot", "3.0"), ("a cat sat", "the dog runs", "1.0")],
              f"pearson, spearman: undefined on 2 labelled rows {FEW}"),
             ([("the movie", "a plot", "2.5"), ("a cat sat", "the dog", "2.5"), ("the man", "runs", "2.5")],
              "pearson, spearman: undefined: all 3 labelled rows have the label 2.5 (a correlation needs different scores)"),
             ([("the movie", "a plot", "2.5"), ("a cat sat", "the dog", "2.5"), ("the man", "runs", ""), ("it is", "fun", "")],
              f"pearson, spearman: undefined on 2 labelled rows {FEW} (on the 2 of 4 rows that have a label)")]
    for rows, line in cases:
        tsv = tmp_path / "in.tsv"
        tsv.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows))
        assert main(["predict", "--run", str(stsb_run), "--input", str(tsv), "--output", str(tmp_path / "o.csv"), "-q"]) == 0
        printed = capsys.readouterr().out
        assert printed == line + "\n", printed
    tsv.write_text("sentence1\tsentence2\tscore\nthe movie\ta plot\t3.0\na cat sat\tthe dog runs\t1.0\nthe man\truns\t4.5\n")
    assert main(["predict", "--run", str(stsb_run), "--input", str(tsv), "--output", str(tmp_path / "o.csv"), "-q"]) == 0
    assert re.fullmatch(r"pearson=-?\d\.\d{4} spearman=-?\d\.\d{4}\n", capsys.readouterr().out)  # 3 rows: numbers


def test_evaluate_prints_every_metric_as_predict_does(stsb_run, tmp_path, capsys):
    """STS-B has two metrics: evaluate and predict --split validation print both, with the same
    values, beside results.json's; on a split too small for a correlation evaluate says so too."""
    saved = json.loads((stsb_run / "results.json").read_text())["strategies"]["final"]["metrics"]["validation"]
    assert main(["predict", "--run", str(stsb_run), "--split", "validation", "--output", str(tmp_path / "d.csv"), "-q"]) == 0
    predicted = capsys.readouterr().out
    assert predicted == f"pearson={saved['pearson']:.4f} spearman={saved['spearman']:.4f}\n"
    assert main(["evaluate", "--run", str(stsb_run), "-q"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line == (f"  final validation: pearson={saved['pearson']:.4f} (results.json: {saved['pearson']:.4f}) "
                    f"spearman={saved['spearman']:.4f} (results.json: {saved['spearman']:.4f})")
    small = tmp_path / "small"
    shutil.copytree(stsb_run, small)
    config = json.loads((small / "config.json").read_text())
    config["data"]["max_eval_samples"] = 2
    (small / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", "--run", str(small), "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("  note: the validation examples differ")  # 2 of the run's examples: not what it scored
    line = out[2]
    assert line.startswith(f"  final validation: pearson, spearman: undefined on 2 labelled rows {FEW} (results.json: "), line


def test_a_text_the_tokenizer_drops_is_named_as_given(runs, capsys, tokenizer_drops):
    """--text examples come from the command line, not a split's rows: the message quotes the text."""
    tokenizer_drops("x")
    _fails(capsys, ["predict", "--run", str(runs["bert"]), "--text", "x", "y y y y"],
           '--text: text 1 of 2 ("x") is empty after tokenization')
    _fails(capsys, ["predict", "--run", str(runs["bert"]), "--text", "x", "y y y y"], 'check tokenizer("the movie was good")')
    _fails(capsys, ["predict", "--run", str(runs["bert"]), "--text", "x", "xx"],
           '--text: text 1 of 2 ("x") and text 2 of 2 ("xx") are empty after tokenization')



def test_split_of_a_run_trained_from_files_reads_its_own_files(model_dirs, tiny_glue, tmp_path, capsys):
    """--split validation scores the run's --validation-file (as `olft evaluate` does) and keeps its
    rows as written (its column names, its labels, its other columns); --split test, GLUE's test
    set, is not this run's data and is refused before the model loads, naming --input."""
    from olft.tasks import load_glue

    sst2 = tasks.get_task("sst2")
    train, dev = load_glue(sst2, "train", tiny_glue), load_glue(sst2, "validation", tiny_glue)[:12]
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{ex.texts[0]},{ex.label}\n" for ex in train))
    (tmp_path / "dev.csv").write_text("uid,text,label,note\n" + "".join(f"u{i},{ex.texts[0]},{ex.label},n{i}\n"
                                                                       for i, ex in enumerate(dev)))  # fmt: skip
    run = tmp_path / "run"
    assert main(["run", "--model", str(model_dirs["bert"]), "--task", "sst2", "--data-source", "file",
                 "--train-file", str(tmp_path / "train.csv"), "--validation-file", str(tmp_path / "dev.csv"),
                 "--text-columns", "text", "--strategies", "final", "--out", str(run), *FAST]) == 0  # fmt: skip
    capsys.readouterr()
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(run), "--split", "validation", "--output", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    assert f"scoring 12 of 12 validation examples of {tmp_path / 'dev.csv'}" in captured.err
    saved = json.loads((run / "results.json").read_text())["strategies"]["final"]["metrics"]["validation"]["accuracy"]
    assert f"accuracy={saved:.4f}" in captured.out
    rows = _read(out)
    assert list(rows[0])[:5] == ["uid", "text", "label", "note", "prediction"]
    assert [(r["uid"], r["text"], r["label"], r["note"]) for r in rows] == [
        (f"u{i}", ex.texts[0], str(ex.label), f"n{i}") for i, ex in enumerate(dev)]
    # One --text example is named by the run's column too, not SST-2's own field ("sentence").
    assert main(["predict", "--run", str(run), "--text", "a fine film", "-q"]) == 0
    printed = capsys.readouterr().out
    assert '"text": "a fine film"' in printed and "sentence" not in printed, printed
    _fails(capsys, ["predict", "--run", str(run), "--split", "test", "--output", str(tmp_path / "sub")],
           "--split test writes GLUE's test submission files, and this run was trained from your own files "
           "(--data-source file): predict your test file with --input FILE --output FILE instead.")
    assert not (tmp_path / "sub").exists()


def test_a_text_that_is_not_utf8_is_named_as_typed(runs, capsys):
    """Bytes that are not UTF-8 on the command line reach Python as lone surrogates (surrogateescape),
    which the tokenizer cannot take: one line naming the --text value, its bytes as typed."""
    typed = b"caf\xe9".decode("utf-8", "surrogateescape")  # what sys.argv holds for $'caf\xe9'
    _fails(capsys, ["predict", "--run", str(runs["bert"]), "--text", "a premise", typed],
           '--text: text 2 of 2 ("caf\\xe9") is not valid UTF-8: bad byte at byte offset 3')
    _fails(capsys, ["predict", "--run", str(runs["bert"]), "--text", "é " + typed, "b"], "text 1 of 2 (\"é caf\\xe9\")")


def test_sigterm_while_predictions_are_written_leaves_no_temporary_file(runs, tmp_path, capsys, monkeypatch):
    """SIGTERM stops `olft predict` as Ctrl-C does: exit 143, one line, and the file being written
    (under a temporary name beside --output) is removed, not left behind."""
    real_fsync = os.fsync

    def terminated(fd):
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise AssertionError("SIGTERM is not handled here: it would end the process, leaving the temporary file")
        os.kill(os.getpid(), signal.SIGTERM)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", terminated)
    out = tmp_path / "preds" / "p.csv"
    assert main(["predict", "--run", str(runs["bert"]), "--split", "validation", "--output", str(out), "-q"]) == 143
    assert capsys.readouterr().err.splitlines()[-1] == "olft: interrupted."  # after the line on what is scored
    assert not out.parent.exists()  # nor the folder it made for it: no half-written output


def test_validation_split_says_when_its_examples_differ_from_those_the_run_scored(runs, tmp_path, capsys, monkeypatch):
    """As `olft evaluate`: a score that moved because the data changed must not read as the weights
    scoring differently. --whole-split scores more examples than the run did on purpose: the sample
    the run scored is what is compared, so a capped run's whole split is no false note, and an edit
    to that sample is still said."""
    from dataclasses import replace

    import olft.pipeline
    from olft.data import fingerprint

    run = tmp_path / "run"
    shutil.copytree(runs["bert"], run)  # made to have scored 13 of the 40 examples (as a --max-eval-samples 13 run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["max_eval_samples"] = 13
    (run / "config.json").write_text(json.dumps(cfg))
    results = json.loads((run / "results.json").read_text())
    every = tasks.load_glue(tasks.get_task("rte"), "validation", cfg["data"]["glue_dir"])
    results["data_sha256"]["validation"] = fingerprint(tasks.sample_split(every, 13, cfg["train"]["seed"]))
    (run / "results.json").write_text(json.dumps(results))
    out = tmp_path / "dev.csv"
    note = "note: the validation examples differ from those the run scored"
    for whole in ([], ["--whole-split"]):
        assert main(["predict", "--run", str(run), "--split", "validation", *whole, "--output", str(out), "-q"]) == 0
        assert note not in capsys.readouterr().err
    load_split = olft.pipeline.load_split
    monkeypatch.setattr(olft.pipeline, "load_split", lambda c, t, s: [replace(ex, label=1 - ex.label) for ex in load_split(c, t, s)])
    for whole in ([], ["--whole-split"]):
        assert main(["predict", "--run", str(run), "--split", "validation", *whole, "--output", str(out), "-q"]) == 0
        assert note in capsys.readouterr().err


def test_a_failed_strategy_is_named_failed_and_an_export_names_the_runs_own_columns(runs, tmp_path, capsys):
    """A strategy the run records as failed is said to have failed (not to be unfinished); an
    export of a run trained with --text-columns names those columns as its input texts."""
    folder = tmp_path / "failed"
    shutil.copytree(runs["bert"], folder)
    r = json.loads((folder / "results.json").read_text())
    entry = r["strategies"].pop("final")
    r["failed"]["final"] = {"layers": entry["layers"], "error": "training diverged"}
    (folder / "results.json").write_text(json.dumps(r))
    for command in (["predict", "--text", "a", "b"], ["export", "--format", "olft", "--output", str(tmp_path / "y")]):
        _fails(capsys, [*command, "--run", str(folder), "--strategy", "final"], "Strategy 'final' failed to train")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["data"]["text_columns"] = "premise,hypothesis"
    (folder / "config.json").write_text(json.dumps(cfg))
    assert main(["export", "--run", str(folder), "--format", "olft", "--output", str(tmp_path / "x"), "-q"]) == 0
    assert "input texts `premise`, `hypothesis`." in (tmp_path / "x" / "README.md").read_text()
