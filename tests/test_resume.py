"""Runs you can trust: kill and resume, refused config changes, determinism, numerical faults."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from olft import plots, report, selectionmd
from olft.cli import main
from olft.errors import OlftError
from olft.evaluate import evaluate_run
from olft.ownership import foreign_entries
from olft.runtiming import CPU_SCOPE, compare_timing
from olft.select import finished_selection

TIMING = {"seconds", "cpu_seconds", "train_seconds", "train_cpu_seconds", "cache_seconds", "resumed_at", "seconds_before_resume", "timed_by", "timing"}  # differ between any two runs


def _args(model, glue, out, *extra):
    return ["run", "--model", str(model), "--task", "sst2", "--glue-dir", str(glue), "--out", str(out), "--epochs", "2",
            "--batch-size", "8", "--selection-train-samples", "32", "--selection-eval-samples", "16",
            "--checkpoint-every", "3", "--selector", "exhaustive", "-q", *extra]  # candidates train: resumable pieces


def _strip(obj):
    """results.json without wall-clock fields (they differ between any two runs) and the commit
    (one may land while the suite runs; the code under test is the same)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING and k not in ("status", "git_commit")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _cli(args, kill_at=None):
    env = dict(os.environ, OLFT_KILL_AT=kill_at or "")
    return subprocess.run([sys.executable, "-m", "olft.cli", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(model_dirs, tiny_glue, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(_args(model_dirs["gpt2"], tiny_glue, out)) == 0
    return out


def _results(out):
    return json.loads((out / "results.json").read_text())


def _snapshot(folder):
    """Every file under `folder` with its size and modification time: equal snapshots, nothing touched."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_same_seed_same_results(reference, model_dirs, tiny_glue, tmp_path):
    assert main(_args(model_dirs["gpt2"], tiny_glue, tmp_path / "again")) == 0
    assert _strip(_results(tmp_path / "again")) == _strip(_results(reference))
    for name in ("olft", "final", "full"):
        a = load_file(str(reference / "weights" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "again" / "weights" / f"{name}.safetensors"))
        assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("kill_at", ["candidate2", "olft:step5", "full:step4"])
def test_killed_run_resumes_to_the_same_result(reference, model_dirs, tiny_glue, tmp_path, kill_at, capsys):
    out = tmp_path / "run"
    args = _args(model_dirs["gpt2"], tiny_glue, out)
    killed = _cli(args, kill_at)
    assert killed.returncode == -9, killed.stderr
    partial = _results(out)
    assert partial["complete"] is False
    # table.md shows what finished before the kill, marked unfinished, and names what did not finish
    unfinished_table = (out / "table.md").read_text()
    assert "**UNFINISHED:** written while a run was working on this folder" in unfinished_table, unfinished_table
    if kill_at == "candidate2":  # no layer is claimed before the selection has chosen one
        assert "Not finished: the selection, olft, final, full." in unfinished_table and "selected layer" not in unfinished_table
    else:
        assert f"Not finished: {kill_at.split(':')[0]}" in unfinished_table
    pieces = {p.name: p.stat().st_mtime_ns for p in (out / "pieces").iterdir()}
    assert pieces  # something finished before the kill
    if kill_at == "candidate2":  # a reader sees the dead run for what it is
        dead = json.loads((out / "olft.lock.json").read_text())["pid"]
        assert partial["status"] == "running" and dead != os.getpid()
        # and its results.json the candidates finished before the kill, under a selection marked unfinished
        sel = partial["selection"]
        assert sel["status"] == "unfinished" and sel["selected_layer"] is None and sel["confidence"] is None
        assert [c["layer"] for c in sel["candidates"]] == [c["layer"] for c in _results(reference)["selection"]["candidates"]
                                                           if c["layer"] < 2]
        assert main(["evaluate", "--run", str(out), "-q"]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert "INTERRUPTED" in first and f"process {dead} " in first, first
    if kill_at == "full:step4":  # evaluate says the rerun will pick the strategy up from its checkpoint
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["full.pt"]  # olft's and final's went as each finished
        assert main(["evaluate", "--run", str(out), "-q"]) == 0
        assert "  full: not finished; its checkpoint at step 3 is resumed when the run continues" in capsys.readouterr().out
    resumed = _cli(args)
    assert resumed.returncode == 0, resumed.stderr
    assert "stopped without finishing" in resumed.stderr  # the rerun says it took the dead run over
    final = _results(out)
    assert final["complete"] is True and "UNFINISHED" not in (out / "table.md").read_text()
    assert _strip(final) == _strip(_results(reference))
    for name, mtime in pieces.items():  # finished pieces were not redone
        assert (out / "pieces" / name).stat().st_mtime_ns == mtime
    for name in ("olft", "final", "full"):
        a = load_file(str(reference / "weights" / f"{name}.safetensors"))
        b = load_file(str(out / "weights" / f"{name}.safetensors"))
        assert all((a[k] == b[k]).all() for k in a), name
        assert (reference / "weights" / f"{name}.safetensors").read_bytes() == (out / "weights" / f"{name}.safetensors").read_bytes()
    for curve in (reference / "curves").glob("*.csv"):  # each curve holds each step once, as the uninterrupted run's
        steps = [row.split(",")[0] for row in (out / "curves" / curve.name).read_text().splitlines()]
        assert steps == [row.split(",")[0] for row in curve.read_text().splitlines()], curve.name
    table = (out / "table.md").read_text()
    if kill_at.endswith("step5") or kill_at.endswith("step4"):
        strategy = kill_at.split(":")[0]
        entry = final["strategies"][strategy]
        assert entry["resumed_at"] == 3  # picked up from the step-3 checkpoint
        # its time adds the killed run's 3 steps (saved in the checkpoint) to the continued run's
        assert 0 < entry["seconds_before_resume"] < entry["train_seconds"]
        timing = final["timing"]["strategies"]
        assert timing["comparable"] is False and timing["resumed_mid_training"] == [strategy] and timing["partial_time"] == []
        assert f"{strategy} resumed from a checkpoint, so its time adds the spans of the runs before and after it" in table
        # killed in olft's training, olft, final and full all ran after the kill, but the selection before it:
        # the whole-run line adds the two, so Table 2 compares it too
        assert timing["differs_in"] == ["run"] and "selection" in timing["runs"][0]["pieces"]
        assert "Timings do not compare" in table.split("Selection")[0]
    else:  # layer 1's first round was timed before the kill; table.md shows only the retraining (24 steps), all after
        # it, but the selection's total sums both: it is marked with both runs, beside the candidates and in Table 2
        candidates, strategies = final["timing"]["candidates"], final["timing"]["strategies"]
        assert [(r["label"], r["pieces"]) for r in candidates["runs"]] == [
            ("first run", ["selection"]), ("continued run", ["1-24", "2-24", "selection"])]
        assert [(r["label"], r["pieces"]) for r in strategies["runs"]] == [
            ("first run", ["selection"]), ("continued run", ["olft", "final", "full", "selection"])]
        assert not candidates["comparable"] and not strategies["comparable"] and not strategies["resumed_mid_training"]
        assert re.search(r"min wall, [\d.]+ min CPU \(first run \+ continued run\) \(not included", table), table
        assert re.search(r"OLFT's whole run \(selection [\d.]+ min \(first run \+ continued run\) \+ its training "
                         r"[\d.]+ min \(continued run\)", table), table
        assert table.count("**Timings do not compare:**") == 2


def test_a_curve_resumed_from_a_checkpoint_drops_the_steps_after_it(tmp_path):
    """Killed at step 5 with a checkpoint at 3 (the last row cut short by the kill), the rerun's
    curve goes on from step 4: the file holds each step once, the rerun's rows past the checkpoint."""
    from olft.curves import Curves, read_curve

    def row(step, loss):
        return {"step": step, "loss": loss, "lr": 0.1, "grad_norm": 1.0}

    first = Curves(tmp_path)
    on_step = first.for_piece("full")
    for step in range(1, 6):
        on_step(row(step, 9.0))
    first.finish()
    path = tmp_path / "curves" / "full.csv"
    path.write_text(path.read_text() + "6,9.")  # a row the kill cut short
    again = Curves(tmp_path)
    on_step = again.for_piece("full")
    for step in range(4, 8):
        on_step(row(step, 1.0))
    again.finish()
    rows = path.read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "9.0"], ["2", "9.0"], ["3", "9.0"], ["4", "1.0"], ["5", "1.0"],
                                                   ["6", "1.0"], ["7", "1.0"]], rows
    assert read_curve(path)["step"] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("kill_at, left", [("final:saved", ["final.pt"]), ("full:step1", [])])
def test_a_strategys_checkpoint_goes_once_its_weights_and_piece_are_saved(reference, model_dirs, tiny_glue, tmp_path, kill_at,
                                                                          left):  # fmt: skip
    """A finished strategy's mid-training state (an all-layer one is as large as the trainable model and
    its optimizer) is deleted as soon as its weights and piece are saved, not at the run's end: a kill
    after that leaves only the unfinished strategy's checkpoint, a kill between the piece and the deletion
    leaves that one too, and either way the rerun skips what finished, drops what is left and ends with
    the weights of a run never stopped."""
    out = tmp_path / "run"
    args = _args(model_dirs["gpt2"], tiny_glue, out)  # --checkpoint-every 3: olft and final each saved state
    assert _cli(args, kill_at).returncode == -9
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == left
    assert (out / "pieces" / "strategy-final.json").is_file() and (out / "weights" / "final.safetensors").is_file()
    resumed = _cli(args)
    assert resumed.returncode == 0, resumed.stderr
    assert _strip(_results(out)) == _strip(_results(reference)) and not (out / "checkpoints").exists()
    for name in ("olft", "final", "full"):
        assert (out / "weights" / f"{name}.safetensors").read_bytes() == (reference / "weights" / f"{name}.safetensors").read_bytes()


def test_changed_config_is_refused_and_overwrite_starts_clean(reference, model_dirs, tiny_glue, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "final")) == 0
    assert main(_args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "final", "--lr", "0.01")) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "final's learning rate: 0.001 in the folder" in err and "--overwrite" in err
    assert main(_args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "final", "--lr", "0.01", "--overwrite")) == 0
    assert json.loads((out / "config.json").read_text())["train"]["lr"] == 0.01


def test_non_finite_loss_fails_one_piece_and_the_rest_goes_on(model_dirs, tiny_glue, tmp_path, monkeypatch, caplog):
    """The other strategies still train, and the command exits 1 (it exited 0, so `olft run ... && next`
    went on past a failed strategy), its error line naming the failed strategy."""
    import olft.pipeline as pipeline
    from olft.train import NonFiniteLoss

    real_fit = pipeline.fit

    def fit(stack, params, enc, **kw):
        if kw["frozen_below"] == stack.num_layers - 1:  # the final-layer strategy diverges
            raise NonFiniteLoss("Training diverged: the loss became NaN or infinite at step 3. Lower the learning rate")
        return real_fit(stack, params, enc, **kw)

    monkeypatch.setattr(pipeline, "fit", fit)
    out = tmp_path / "run"
    with caplog.at_level("ERROR", logger="olft"):
        assert main(_args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "final,full")) == 1
    r = _results(out)
    assert "final" in r["failed"] and "step 3" in r["failed"]["final"]["error"]
    assert "full" in r["strategies"] and "final" not in r["strategies"]
    assert r["complete"] is False and r["status"] == "finished with failures"
    assert caplog.records[-1].getMessage() == "final failed (full finished); table.md's Failed list says why"
    # An add-on to the folder finishes what it was asked, but the folder still holds final's failure: exit 1.
    with caplog.at_level("ERROR", logger="olft"):
        assert main(["train", *_args(model_dirs["gpt2"], tiny_glue, out)[1:], "--layers", "1"]) == 1
    assert _results(out)["status"] == "finished with failures"
    assert caplog.records[-1].getMessage().startswith("final failed (")


def test_real_divergence_is_caught_and_a_run_where_everything_failed_exits_1(model_dirs, tiny_glue, tmp_path):
    out = tmp_path / "run"
    assert main(_args(model_dirs["llama"], tiny_glue, out, "--strategies", "final", "--lr", "1e30", "--max-grad-norm", "0")) == 1
    r = _results(out)
    assert "final" in r["failed"] and "--lr" in r["failed"]["final"]["error"]
    assert r["status"] == "failed" and r["complete"] is False
    assert "| final | 3 | failed |" in (out / "table.md").read_text()


def test_a_strategy_that_failed_beside_one_that_finished_exits_1_naming_its_strategy_lr(model_dirs, tiny_glue, tmp_path,
                                                                                        caplog):  # fmt: skip
    """Every selection candidate diverged at olft's --strategy-lr rate while final finished: the run is
    "finished with failures" and `olft run` exits 1 (it exited 0, so `olft run ... && next-step` went on),
    its last error line naming olft. The fixes name olft's rate in --strategy-lr, not --lr (which is
    0.001 already: "try --lr 0.001, olft's default" and "Try a lower --lr" pointed at the wrong option)."""
    out = tmp_path / "run"
    args = _args(model_dirs["llama"], tiny_glue, out, "--strategies", "olft,final", "--candidates", "1,2",
                 "--selection-adaptive", "0", "--strategy-lr", "olft=1e30,final=1e-3", "--max-grad-norm", "0")
    with caplog.at_level("ERROR", logger="olft"):
        assert main(args) == 1
    r = _results(out)
    assert r["status"] == "finished with failures" and list(r["strategies"]) == ["final"] and list(r["failed"]) == ["olft"]
    assert caplog.records[-1].getMessage() == "olft failed (final finished); table.md's Failed list says why"
    errors = [c["error"] for c in r["selection"]["candidates"]]
    assert len(errors) == 2 and all("Lower olft's rate in --strategy-lr (now 1e+30, try olft=0.001 there" in e for e in errors), errors
    assert r["failed"]["olft"]["error"].endswith("in table.md). Lower olft's rate in --strategy-lr."), r["failed"]["olft"]
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "--lr 0.001" not in logged and "lower --lr" not in logged, logged
    assert "lower --lr" not in (out / "table.md").read_text()  # "fix what its error says (a lower learning rate)"


def test_a_diverged_candidate_is_reported_once(model_dirs, tiny_glue, tmp_path, caplog):
    args = _args(model_dirs["llama"], tiny_glue, tmp_path / "run", "--strategies", "olft", "--selector", "exhaustive",
                 "--candidates", "1,2", "--lr", "1e30", "--max-grad-norm", "0", "--selection-adaptive", "0")  # one alone trains none
    with caplog.at_level("INFO", logger="olft"):
        assert main(args) == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("candidate layer")]
    assert len(lines) == 2 and [line.split(" failed: Training diverged")[0] for line in lines] == [
        "candidate layer 1", "candidate layer 2"], lines


def test_a_selection_whose_every_candidate_diverged_is_reported_failed_with_its_reasons(model_dirs, tiny_glue, tmp_path,
                                                                                        capsys, monkeypatch):  # fmt: skip
    """Every candidate diverged (a real NaN at --lr 1e30): table.md says the selection failed, gives each
    candidate's and each failed strategy's error as results.json records it (the step it failed at, the
    fix), claims no budget as the failed step, and gives no advice to continue the folder (that keeps
    the failures, and a divergence repeats at the same settings). The table printed is the file's."""
    out = tmp_path / "run"
    args = _args(model_dirs["llama"], tiny_glue, out, "--strategies", "olft,final", "--candidates", "1,2", "--lr", "1e30",
                 "--max-grad-norm", "0", "--selection-adaptive", "0")  # fmt: skip
    real_table, folders = report.table_md, []
    monkeypatch.setattr(report, "table_md", lambda res, folder=None: folders.append(folder) or real_table(res, folder))
    capsys.readouterr()
    assert main(args) == 1
    r, table = _results(out), (out / "table.md").read_text()
    assert folders[-1] == out  # the table the CLI printed quotes the folder's path, not RUN_FOLDER
    assert r["status"] == "failed" and [c["score"] for c in r["selection"]["candidates"]] == [None, None]
    assert r["selection"]["status"] == "failed" and finished_selection(r) is None  # no reader takes it for a choice
    assert ("Selection failed (exhaustive selector, train-holdout): every candidate failed to train, so no layer was "
            "selected:") in table, table
    for c in r["selection"]["candidates"]:
        assert f"- layer {c['layer']}: {c['error']}" in table and "at step" in c["error"] and "--lr" in c["error"]
    assert f"- final: {r['failed']['final']['error']}" in table
    assert "- olft: its selection failed (below: every candidate failed to train)." in table
    assert "steps)" not in table.split("Selection failed")[1]  # a failed candidate's budget is not where it failed
    assert "continues it" not in table and "keeping them" not in table and selectionmd.REPEATS in table
    assert capsys.readouterr().out == table + "\n" and "RUN_FOLDER" not in table  # print adds a newline


def test_a_failed_selection_is_recorded_failed_and_every_reader_says_so(model_dirs, tiny_glue, tmp_path):
    """Every candidate diverges where the selection ranks them (--selection-adaptive's default asks for a
    ranking inside the selector, which raises): results.json's selection says "failed" (not "unfinished"),
    and olft evaluate and olft predict say the run failed, with the errors and no advice to continue it."""
    from olft.evaluate import evaluate_run
    from olft.predict import open_run

    out = tmp_path / "run"
    assert main(_args(model_dirs["llama"], tiny_glue, out, "--strategies", "olft,final", "--candidates", "1,2",
                      "--lr", "1e30", "--max-grad-norm", "0")) == 1  # fmt: skip
    r = _results(out)
    assert r["status"] == "failed" and r["selection"]["status"] == "failed" and r["selection"]["selected_layer"] is None
    assert finished_selection(r) is None
    text = evaluate_run(out, quiet=True)
    assert "selection: failed: every candidate trained for it failed to train; layer 1: Training diverged" in text, text
    assert "final: failed: Training diverged" in text and "continue it" not in text and "fails the same way" in text
    with pytest.raises(OlftError, match="failed: every strategy it ran failed to train"):
        open_run(out)


def _interrupt_the_second_candidate(monkeypatch) -> list[int]:
    """Ctrl-C as the selection starts its second candidate; the layers it started, as it goes."""
    import olft.pipeline as pipeline

    real, tried = pipeline.Session._candidate, []

    def second_is_interrupted(self, layer, *a, **kw):
        tried.append(layer)
        if len(tried) == 2:
            raise KeyboardInterrupt
        return real(self, layer, *a, **kw)

    monkeypatch.setattr(pipeline.Session, "_candidate", second_is_interrupted)
    return tried


def test_a_selection_stopped_part_way_shows_its_finished_candidates_and_claims_no_choice(reference, model_dirs, tiny_glue,
                                                                                         tmp_path, monkeypatch):
    """Ctrl-C after one candidate: results.json's selection is marked unfinished and holds that candidate
    with the score it measured (the reference run's), and no selected layer, ranking or confidence;
    table.md renders no chosen layer from it. The rerun finishes it and the full selection replaces it."""
    import olft.pipeline as pipeline

    out = tmp_path / "run"
    args = _args(model_dirs["gpt2"], tiny_glue, out)
    real, tried = pipeline.Session._candidate, _interrupt_the_second_candidate(monkeypatch)
    assert main(args) == 130
    r = _results(out)
    ref = _results(reference)["selection"]
    once = ref["rounds"][0]  # the reference's first round (--selection-adaptive may retrain the layer later)
    first = {"layer": tried[0], "steps": once["steps"], "score": once["scores"][str(tried[0])]}
    sel = r["selection"]
    assert r["status"] == "interrupted" and sel["status"] == "unfinished", sel
    assert [(c["layer"], c["steps"], c["score"], c["metrics"]["loss"]) for c in sel["candidates"]] == [
        (first["layer"], first["steps"], first["score"], once["losses"][str(tried[0])])]
    assert "example_losses" not in sel["candidates"][0]
    assert all(sel[k] is None for k in ("selected_layer", "ranking", "confidence", "equivalent"))
    assert not {"gaps", "flat", "rounds", "no_signal"} & set(sel)  # nothing measured only by a finished selection
    assert (sel["selector"], sel["protocol"], sel["metric"]) == (ref["selector"], ref["protocol"], ref["metric"])
    table = report.table_md(r, out)
    assert (out / "table.md").read_text() == table  # written on the way out of Ctrl-C
    assert "**UNFINISHED:** its run was interrupted (Ctrl-C or SIGTERM)" in table
    assert "Not finished: the selection, olft, final, full." in table
    assert "Selection unfinished (exhaustive selector, train-holdout): no layer is selected yet." in table, table
    assert f"layer {tried[0]} {100 * first['score']:.1f} ({first['steps']} steps)" in table and "selected layer" not in table
    # One command continues it, the banner's: `olft run` (the whole run), not `olft select` (its selection only).
    assert f"`olft run --config {out}/config.json --out {out}` continues it" in table and "olft select" not in table, table
    assert plots.layers_figure(r) is None  # no layer chosen to star
    monkeypatch.setattr(pipeline.Session, "_candidate", real)
    assert main(args) == 0
    final = _results(out)
    assert final["selection"]["status"] == "finished" and _strip(final["selection"]) == _strip(ref)


def test_an_error_or_interrupt_mid_run_never_leaves_it_running(model_dirs, tiny_glue, tmp_path, monkeypatch, capsys, caplog):
    import olft.pipeline as pipeline

    real_fit = pipeline.fit
    out = tmp_path / "run"
    args = _args(model_dirs["llama"], tiny_glue, out, "--strategies", "final")

    def fail(*a, **kw):
        raise OlftError("a piece could not run")

    monkeypatch.setattr(pipeline, "fit", fail)
    assert main(args) == 2
    r = _results(out)
    assert r["status"] == "stopped by an error" and "could not run" in r["error"] and r["complete"] is False

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "fit", interrupt)
    capsys.readouterr()
    assert main(args) == 130
    assert _results(out)["status"] == "interrupted"
    said = capsys.readouterr().err

    def terminate(*a, **kw):  # what a scheduler sends: the run stops as on Ctrl-C, exit 128 + 15
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(pipeline, "fit", terminate)
    before = signal.getsignal(signal.SIGTERM)
    assert main(args) == 143
    assert _results(out)["status"] == "interrupted"
    assert capsys.readouterr().err == said == "olft: interrupted.\n"  # the run's own line says the rest, once
    stopped = f"interrupted: {out} is incomplete; rerun the same command to continue"
    assert [r.getMessage() for r in caplog.records].count(stopped) == 2  # Ctrl-C, then SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # the run's handler is gone with it

    def pipe_closed(*a, **kw):  # `olft run | tee log` with the group killed: tee goes first, olft's next line fails
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(pipeline, "fit", pipe_closed)
    assert main(args) == 141  # 128 + SIGPIPE, as a shell reports a pipe's writer stopped by it
    r = _results(out)
    assert r["status"] == "interrupted" and "error" not in r, r  # a stop from outside, not the run's error
    monkeypatch.setattr(pipeline, "fit", real_fit)
    assert main(args) == 0  # each stop let go of the folder's lock
    assert _results(out)["status"] == "complete"


def test_a_run_whose_output_pipe_closes_is_interrupted_and_continues(model_dirs, tiny_glue, tmp_path):
    """A real pipe whose reader stops once training has begun (`olft run ... 2>&1 | reader`): olft
    meets the closed pipe on its next progress line, records the run as interrupted (not "stopped
    by an error: BrokenPipeError"), exits 141 with nothing more said, and the same command then
    finishes the folder."""
    out = tmp_path / "run"
    args = [a for a in _args(model_dirs["llama"], tiny_glue, out, "--strategies", "final") if a != "-q"]
    args[args.index("--epochs") + 1] = "40"  # training outlasts the reader's exit: the pipe closes mid-run
    cmd = " ".join(map(shlex.quote, [sys.executable, "-m", "olft.cli", *args]))
    reader = tmp_path / "reader.py"  # reads until training has begun, then exits, closing the pipe
    reader.write_text("import sys\nfor line in sys.stdin:\n    if 'activation cache for' in line:\n        break\n")
    done = subprocess.run(["bash", "-c", f"{cmd} 2>&1 | {shlex.quote(sys.executable)} {shlex.quote(str(reader))}; "
                           "echo ${PIPESTATUS[0]}"], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "141" and not done.stderr, (done.stdout, done.stderr)
    r = _results(out)
    assert r["status"] == "interrupted" and "error" not in r, r
    assert main(args) == 0 and _results(out)["status"] == "complete"


def test_table_mds_python_advice_continues_the_folder_from_another_directory(model_dirs, tiny_glue, tmp_path, monkeypatch,
                                                                            caplog):
    """The banner's Python call, pasted as it stands in another working directory, continues the
    folder: config.json keeps `out` as typed ("F1", relative), so a call that did not name the
    folder would begin a new F1 there; and it warns of no option (config.json records them all)."""
    import olft.pipeline as pipeline

    real_fit, fits = pipeline.fit, []

    def second_is_interrupted(*a, **kw):
        fits.append(1)
        if len(fits) == 2:
            raise KeyboardInterrupt
        return real_fit(*a, **kw)

    (tmp_path / "began").mkdir(), (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "began")
    monkeypatch.setattr(pipeline, "fit", second_is_interrupted)
    assert main(_args(model_dirs["gpt2"], tiny_glue, "F1", "--strategies", "final,full")) == 130
    folder = tmp_path / "began" / "F1"
    assert json.loads((folder / "config.json").read_text())["out"] == "F1"
    call = re.search(r"from Python, `([^`]+)` does the same", (folder / "table.md").read_text())
    assert call, (folder / "table.md").read_text()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setattr(pipeline, "fit", real_fit)
    caplog.clear()
    exec(call.group(1), {})
    assert "is ignored" not in caplog.text  # not the selection options config.json records
    assert _results(folder)["status"] == "complete" and set(_results(folder)["strategies"]) == {"final", "full"}
    assert not list((tmp_path / "elsewhere").iterdir())  # no new folder begun here


def test_an_add_on_stopped_in_a_finished_folder_keeps_its_report(reference, model_dirs, tiny_glue, tmp_path, monkeypatch):
    """`olft train` into a finished folder, stopped by SIGTERM, then killed outright: table.md still
    lists every finished strategy and the selection (marked unfinished, naming the add-on), and
    layers.png and loss.png stay."""
    import olft.pipeline as pipeline

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = (out / "table.md").read_text()
    assert "UNFINISHED" not in before and "| olft |" in before

    def terminate(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(pipeline, "fit", terminate)
    add_on = ["train", "--config", str(out / "config.json"), "--out", str(out), "--layers", "3", "-q"]
    assert main(add_on) == 143
    table = (out / "table.md").read_text()
    assert "**UNFINISHED:** its run was interrupted (Ctrl-C or SIGTERM)" in table and "Not finished: layers=3." in table
    for row in ("| olft |", "| final |", "| full |", "selected layer"):
        assert row in table, row
    assert table.split("Table 1")[1] == before.split("Table 1")[1]  # the finished work, as the finished run showed it
    assert (out / "layers.png").stat().st_size > 0 and (out / "loss.png").stat().st_size > 0
    monkeypatch.undo()
    assert _cli(add_on, "layers=3:step2").returncode == -9  # nothing runs after kill -9: what it left must hold
    table = (out / "table.md").read_text()
    assert "**UNFINISHED:** written while a run was working on this folder" in table and "Not finished: layers=3." in table
    assert table.split("Table 1")[1] == before.split("Table 1")[1]
    assert (out / "layers.png").stat().st_size > 0 and (out / "loss.png").stat().st_size > 0
    # config.json, whole after the kill, holds the add-on's options (README: the latest command's), so
    # `olft train --config` of it continues the add-on; it then finishes beside the earlier strategies.
    config = json.loads((out / "config.json").read_text())
    assert config["strategies"] == "layers=3", config["strategies"]
    assert main(["train", "--config", str(out / "config.json"), "-q"]) == 0
    table = (out / "table.md").read_text()
    assert "UNFINISHED" not in table and "| layers=3 |" in table
    for row in ("| olft |", "| final |", "| full |"):
        assert row in table, row
    assert json.loads((out / "results.json").read_text())["complete"] is True


def test_add_ons_take_their_place_in_one_strategy_order_whatever_order_they_ran(reference, tmp_path):
    """`olft train --layers N` into a finished folder: results.json's strategies and Tables 1 and 2
    list olft, final, full, then explicit layers by layer, not in the order the add-ons ran."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    for layer in ("2", "1"):
        assert main(["train", "--config", str(out / "config.json"), "--out", str(out), "--layers", layer, "-q"]) == 0
    order = ["olft", "final", "full", "layers=1", "layers=2"]
    r = _results(out)
    assert list(r["strategies"]) == order and r["strategy_names"][0] == "layers=1"  # the names: this run's first
    table = (out / "table.md").read_text()
    for which in ("Table 1:", "Table 2:"):
        rows = table.split(which)[1].split("\n\n", 2)[1].splitlines()[2:]
        assert [row.split("|")[1].strip() for row in rows] == order, which


def _loss_lines(fig):
    """{legend label: (x data, line style)} of loss.png's loss panel."""
    return {line.get_label(): (list(line.get_xdata()), line.get_linestyle()) for line in fig.axes[0].get_lines()}


def test_loss_png_marks_the_curve_of_a_piece_that_did_not_finish(tmp_path):
    """curves_figure: a finished piece's curve (its results entry trained that many steps) is solid
    under its own name; one the run stopped in, or that failed, is dashed and says where it ends; a
    resumed strategy's file (the steps after its checkpoint written twice) is drawn once per step."""
    from olft.curves import COLUMNS, curves_figure

    def write(name, steps):
        rows = [",".join(COLUMNS)] + [f"{s},{1 / s},0.001,1.0" for s in steps]
        (tmp_path / "curves" / f"{name}.csv").write_text("\n".join(rows) + "\n")

    (tmp_path / "curves").mkdir()
    write("olft", [1, 2, 3, 4, 5, 3, 4, 5, 6])  # stopped at 5, resumed from its checkpoint at 2, finished at 6
    write("final", [1, 2, 3])  # the run stopped in it
    write("layers-0_3", [1, 2])  # diverged at step 3
    write("candidate-1", [1, 2, 3, 4])
    write("candidate-2", [1, 2])  # halving's second round at 4 steps, stopped at 2 (the first round trained 2)
    write("candidate-3", [1])
    results = {"strategies": {"olft": {"steps": 6}}, "failed": {"layers=0+3": {"error": "Training diverged"}},
               "selection": {"status": "unfinished", "candidates": [{"layer": 1, "steps": 4}, {"layer": 2, "steps": 2},
                                                                     {"layer": 3, "steps": 4, "error": "diverged"}]}}
    lines = _loss_lines(curves_figure(tmp_path, results))
    assert lines == {"olft": ([1, 2, 3, 4, 5, 6], "-"), "candidate-1": ([1, 2, 3, 4], "-"),
                     "candidate-2": ([1, 2], "-"),  # equal to its finished round's budget: nothing says it is not that one
                     "final (stopped at step 3, unfinished)": ([1, 2, 3], "--"),
                     "layers-0_3 (failed after step 2)": ([1, 2], "--"),
                     "candidate-3 (failed after step 1)": ([1], "--")}, lines
    write("candidate-2", [1, 2, 3])
    lines = _loss_lines(curves_figure(tmp_path, results))
    assert lines["candidate-2 (stopped at step 3, unfinished)"] == ([1, 2, 3], "--"), lines
    results["strategies"]["final"] = {"steps": 3}
    del results["failed"]["layers=0+3"]
    results["strategies"]["layers=0+3"] = {"steps": 2}
    results["selection"]["candidates"][1:] = [{"layer": 2, "steps": 3}, {"layer": 3, "steps": 1}]
    fig = curves_figure(tmp_path, results)
    assert all(style == "-" for _, style in _loss_lines(fig).values()) and "unfinished" not in fig.axes[0].get_title()


def test_loss_png_draws_each_strategys_lr_in_its_loss_colour_with_a_legend(tmp_path):
    """curves_figure's learning-rate panel: each strategy's lr line has the colour (and label) of its
    loss line, though the candidates' loss lines took colours from the cycle first; no candidate's lr."""
    from olft.curves import COLUMNS, curves_figure

    (tmp_path / "curves").mkdir()
    for name in ("candidate-1", "candidate-2", "olft", "final"):
        rows = [",".join(COLUMNS)] + [f"{s},{1 / s},0.001,1.0" for s in (1, 2)]
        (tmp_path / "curves" / f"{name}.csv").write_text("\n".join(rows) + "\n")
    results = {"strategies": {"olft": {"steps": 2}, "final": {"steps": 2}},
               "selection": {"candidates": [{"layer": 1, "steps": 2}, {"layer": 2, "steps": 2}]}}
    fig = curves_figure(tmp_path, results)
    loss = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
    lr = {line.get_label(): line.get_color() for line in fig.axes[1].get_lines()}
    assert set(lr) == {"olft", "final"} and lr == {name: loss[name] for name in lr}, (loss, lr)
    assert len(set(loss.values())) == len(loss)  # no lr line reads as a candidate's
    legend = fig.axes[1].get_legend()
    assert legend is not None and sorted(t.get_text() for t in legend.get_texts()) == ["final", "olft"]


def test_a_strategy_stopped_mid_training_is_dashed_in_loss_png_until_a_rerun_finishes_it(reference, model_dirs, tiny_glue,
                                                                                        tmp_path, monkeypatch):
    """Ctrl-C at `full`'s step 5 (checkpoint at 3): loss.png draws full's 5 steps dashed, labelled
    stopped and unfinished, and olft's and final's solid; layers.png has no line for full, and says it
    is not finished. The rerun resumes full from its checkpoint, and its curve is then one solid line,
    step by step the reference run's (never stopped)."""
    import olft.train as train
    from olft.curves import curves_figure

    out = tmp_path / "run"
    args = _args(model_dirs["gpt2"], tiny_glue, out)
    real = train.fault_point

    def interrupt(name):
        if name == "full:step5":
            raise KeyboardInterrupt
        real(name)

    monkeypatch.setattr(train, "fault_point", interrupt)
    assert main(args) == 130
    r = _results(out)
    assert r["status"] == "interrupted" and "full" not in r["strategies"]
    fig = curves_figure(out, r)
    lines = _loss_lines(fig)
    assert lines["full (stopped at step 5, unfinished)"] == ([1, 2, 3, 4, 5], "--"), lines
    assert lines["olft"][1] == lines["final"][1] == "-" and "dashed: unfinished" in fig.axes[0].get_title()
    assert all(style == "-" for label, (_, style) in lines.items() if label.startswith("candidate")), lines
    # layers.png draws finished numbers only: olft's and final's lines, none for full, which its legend names
    legend = [t.get_text() for t in plots.layers_figure(r).axes[0].get_legend().get_texts()]
    assert "not finished, no score yet: all layers" in legend and not any(t.startswith("all layers") for t in legend), legend
    assert any(t.startswith("OLFT, layer") for t in legend) and any(t.startswith("final layer") for t in legend), legend
    monkeypatch.undo()
    assert main(args) == 0
    r = _results(out)
    assert r["strategies"]["full"]["resumed_at"] == 3
    fig, ref = curves_figure(out, r), curves_figure(reference, _results(reference))
    lines = _loss_lines(fig)
    assert lines["full"] == ([*range(1, r["strategies"]["full"]["steps"] + 1)], "-"), lines
    assert all(style == "-" for _, style in lines.values()) and "unfinished" not in fig.axes[0].get_title()
    full, ref_full = ([ln for ln in f.axes[0].get_lines() if ln.get_label() == "full"][0] for f in (fig, ref))
    assert list(full.get_ydata()) == pytest.approx(list(ref_full.get_ydata()), rel=1e-4)
    legend = [t.get_text() for t in plots.layers_figure(r).axes[0].get_legend().get_texts()]
    assert not any(t.startswith("not finished") for t in legend) and any(t.startswith("all layers") for t in legend), legend


# -- run folders: what may be deleted, who may write ----------------------------------------------------


@pytest.mark.parametrize("step, stop, code", [("olft.plots.plot_layers", OSError(28, "No space left on device"), 2),
                                               ("olft.curves.plot_curves", KeyboardInterrupt(), 130)])
def test_a_run_stopped_while_finishing_is_not_complete_and_a_rerun_finishes_it(model_dirs, tiny_glue, tmp_path, monkeypatch,
                                                                              capsys, step, stop, code):
    """results.json says "complete" only once the table and plots are written and the checkpoints
    gone: a run stopped between its last score and that (a full disk, Ctrl-C, kill -9) is not
    complete, and the same command then finishes the folder."""
    out = tmp_path / "run"
    # A selection (for layers.png) of one candidate; --checkpoint-every 3 saves olft.pt, dropped as olft finished.
    args = _args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "olft", "--candidates", "1")

    def stopped(*a, **kw):
        raise stop

    monkeypatch.setattr(step, stopped)
    assert main(args) == code  # a full disk: one line naming the fix, exit 2 (`api._recorded`)
    r = _results(out)
    assert r["complete"] is False and r["status"] == ("stopped by an error" if code == 2 else "interrupted"), r["status"]
    assert "olft" in r["strategies"] and not (out / "checkpoints" / "olft.pt").exists()  # only the finishing was missing
    monkeypatch.undo()
    assert main(args) == 0
    r = _results(out)
    assert r["complete"] is True and r["status"] == "complete"
    assert all((out / name).is_file() for name in ("table.md", "layers.png", "loss.png"))
    assert not (out / "checkpoints").exists()


def _sigterm_in_the_first_plot(monkeypatch) -> None:
    """A SIGTERM inside the process's first plot, which stands for its first `import matplotlib`:
    cut short, that import leaves a half-imported module, so every later plot of the process fails."""
    real, imported = plots.plot_layers, []

    def first_import_then_plot(*a, **kw):
        if not imported:
            imported.append(False)
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before os.kill returns
            imported[0] = True
        if not imported[0]:
            raise AttributeError("module 'matplotlib' has no attribute 'get_data_path'")
        return real(*a, **kw)

    monkeypatch.setattr(plots, "plot_layers", first_import_then_plot)


def test_a_sigterm_while_the_plots_are_drawn_waits_for_them(model_dirs, tiny_glue, tmp_path, monkeypatch, caplog):
    """The review's SIGTERM landed in the first `import matplotlib` of `finish`: the half-imported
    module then failed every plot of `write_stopped` too ("module 'matplotlib' has no attribute
    'get_data_path'"), and loss.png was never drawn. Here the first plot stands for that import: a
    stop before it ends breaks every later plot of the process. The signal now waits for the
    finishing step, then stops the run as any stop does, its folder whole and consistent."""
    out = tmp_path / "run"
    args = _args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "olft", "--candidates", "1")
    _sigterm_in_the_first_plot(monkeypatch)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert main(args) == 143
    assert {s: signal.getsignal(s) for s in before} == before
    assert "could not update the report" not in caplog.text, caplog.text
    r = _results(out)
    assert r["status"] == "interrupted" and r["complete"] is False and "olft" in r["strategies"]
    assert all((out / name).is_file() for name in ("table.md", "layers.png", "loss.png"))
    assert "**UNFINISHED:** its run was interrupted" in (out / "table.md").read_text()  # the table says what results.json says
    assert not (out / "checkpoints").exists()  # the finishing step ran whole
    monkeypatch.undo()
    assert main(args) == 0 and _results(out)["complete"] is True


def test_a_second_stop_while_a_stopped_run_draws_its_plots_is_dropped(model_dirs, tiny_glue, tmp_path, monkeypatch, caplog):
    """A run stopped by Ctrl-C draws what it finished (`write_stopped`); a SIGTERM landing in its
    first `import matplotlib` (the first plot stands for it, as above) would leave every plot
    undrawn: the run is stopping already, so it is dropped and the plots are drawn."""
    from olft import api

    out = tmp_path / "run"
    args = _args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "olft", "--candidates", "1")
    def ctrl_c(*a, **kw):
        raise KeyboardInterrupt

    _sigterm_in_the_first_plot(monkeypatch)
    monkeypatch.setattr(api, "_end", ctrl_c)  # the first stop: every piece trained, the folder not finished
    assert main(args) == 130  # Ctrl-C's, the stop being reported
    assert "could not update the report" not in caplog.text, caplog.text
    assert _results(out)["status"] == "interrupted"
    assert all((out / name).is_file() for name in ("table.md", "layers.png", "loss.png"))


def test_overwrite_deletes_only_a_folder_olft_made(reference, model_dirs, tiny_glue, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(_args(model_dirs["gpt2"], tiny_glue, mine, "--strategies", "final", "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "Nothing was deleted" in err and "notes.txt" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"

    run = tmp_path / "run"  # an olft run folder that also holds a user's file
    shutil.copytree(reference, run)
    (run / "weights" / "mine.bin").write_text("keep me")
    before = _snapshot(run)
    assert main(_args(model_dirs["gpt2"], tiny_glue, run, "--overwrite")) == 2
    assert "weights/mine.bin" in capsys.readouterr().err
    assert _snapshot(run) == before

    model = tmp_path / "model"  # --out pointing at a model folder: its config.json is not olft's
    shutil.copytree(model_dirs["gpt2"], model)
    before = _snapshot(model)
    for extra, phrase in (([], "not an olft run folder"), (["--overwrite"], "Nothing was deleted")):
        assert main(_args(model_dirs["gpt2"], tiny_glue, model, "--strategies", "final", *extra)) == 2
        assert phrase in capsys.readouterr().err
    assert _snapshot(model) == before


def test_a_folder_holding_the_users_files_is_refused_before_the_model_loads(model_dirs, tiny_glue, tmp_path, capsys, monkeypatch):
    import olft.api

    def no_model(*a, **k):
        raise AssertionError("the model loaded before the --out folder was checked")

    monkeypatch.setattr(olft.api, "Session", no_model)
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "keep.txt").write_text("keep me")
    before = _snapshot(mine)
    for command in (["--strategies", "final"], ["--strategies", "olft"]):
        assert main(_args(model_dirs["gpt2"], tiny_glue, mine, *command)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "olft did not write (keep.txt, sub)" in err and "empty or new --out" in err, err
    assert main(["select", *_args(model_dirs["gpt2"], tiny_glue, mine)[1:]]) == 2
    assert "keep.txt" in capsys.readouterr().err
    assert _snapshot(mine) == before


def test_overwrite_names_the_users_files_in_a_run_folder(reference, model_dirs, tiny_glue, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "notes.txt").write_text("keep me")
    before = _snapshot(run)
    assert main(_args(model_dirs["gpt2"], tiny_glue, run, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "is an olft run folder" in err and "is not" not in err and "(notes.txt)" in err, err
    assert "--overwrite will not delete" in err and "move them" in err, err
    assert _snapshot(run) == before
    (run / "notes.txt").unlink()
    assert main(_args(model_dirs["gpt2"], tiny_glue, run, "--strategies", "final", "--overwrite")) == 0  # once moved


def test_what_olft_counts_as_its_own_files(tmp_path):
    own = ["config.json", "results.json", ".results.tmp123.json", "table.md", "layers.png", ".layers.tmp7.png",
           "olft.lock", "olft.lock.json", ".write-test", "pieces/strategy-final.json", "pieces/.candidate-1.tmp7.json",
           "weights/final.safetensors", "checkpoints/full.pt", "checkpoints/.full.tmp9.pt", "curves/olft.csv", "loss.png"]
    foreign = ["notes.tmp", ".notes.tmp", "model.safetensors", "pieces/notes.txt", "weights/mine.bin", "checkpoints/x.pt.bak",
               "data/train.tsv", ".results.json.tmp"]
    for name in own + foreign:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "pieces" / "link.json").symlink_to(tmp_path / "config.json")  # never followed, never deleted
    expected = ["data", "pieces/link.json", *(name for name in foreign if not name.startswith("data/"))]
    assert sorted(foreign_entries(tmp_path)) == sorted(expected)


def test_desktop_metadata_neither_blocks_a_folder_nor_is_deleted(reference, tmp_path):
    from olft.runfolder import RunFolder

    config = json.loads((reference / "config.json").read_text())
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in (".DS_Store", "._config.json", "Thumbs.db"):
        (fresh / name).write_text("x")
    assert foreign_entries(fresh) == []
    with RunFolder(fresh, config) as f:  # a new --out that Finder or Explorer has shown
        f.start()
    (fresh / ".notes").write_text("mine")  # any other dotfile is still the user's
    assert foreign_entries(fresh) == [".notes"]

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / ".DS_Store").write_text("x")
    (run / "weights" / ".DS_Store").write_text("x")
    assert foreign_entries(run) == []
    with RunFolder(run, config, overwrite=True) as f:
        f.start()
    assert (run / ".DS_Store").exists() and (run / "weights" / ".DS_Store").exists()  # not olft's to delete
    assert [p.name for p in (run / "weights").iterdir()] == [".DS_Store"]


@pytest.mark.parametrize("tracker, folder", [("tensorboard", "tensorboard"), ("mlflow", "mlruns"), ("wandb", "wandb")])
def test_overwrite_clears_the_tracker_folder_only_when_config_names_that_tracker(reference, tmp_path, tracker, folder):
    from olft.runfolder import RunFolder

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    for name in ("tensorboard", "mlruns", "wandb"):
        (run / name / "run-1").mkdir(parents=True)
        (run / name / "run-1" / "events").write_text("x")
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["report_to"] is None
    assert foreign_entries(run) == ["mlruns", "tensorboard", "wandb"]  # no tracker recorded: the user's folders
    before = _snapshot(run)
    with pytest.raises(OlftError, match="Nothing was deleted"):
        RunFolder(run, config, overwrite=True)
    assert _snapshot(run) == before

    config["train"]["report_to"] = tracker
    (run / "config.json").write_text(json.dumps(config))
    others = sorted({"tensorboard", "mlruns", "wandb"} - {folder})
    assert foreign_entries(run) == others  # only the recorded tracker's folder is olft's
    for name in others:
        shutil.rmtree(run / name)
    assert foreign_entries(run) == []
    with RunFolder(run, config, overwrite=True) as f:
        f.start()
    assert not (run / folder).exists() and not list((run / "weights").iterdir())


@pytest.mark.parametrize("bad", [["--candidates", "2-9"], ["--task", "mrpc"]])
def test_overwrite_validates_every_input_before_deleting(reference, model_dirs, tiny_glue, tmp_path, bad):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = _snapshot(run)
    assert main(_args(model_dirs["gpt2"], tiny_glue, run, "--overwrite", *bad)) == 2
    assert _snapshot(run) == before


HOLD = "import sys, time; from olft.runlock import RunLock; lock = RunLock(sys.argv[1], 'now'); lock.acquire(); print('held', flush=True); time.sleep(300)"


def test_a_held_folder_is_refused_and_a_dead_holder_taken_over(reference, model_dirs, tiny_glue, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    args = _args(model_dirs["gpt2"], tiny_glue, run, "--strategies", "final")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _snapshot(run)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"in use by process {holder.pid} " in err and "another --out" in err
        assert main([*args, "--overwrite"]) == 2  # not even --overwrite takes a live run's folder
        assert _snapshot(run) == before
        assert main(["evaluate", "--run", str(run), "-q"]) == 0
        assert f"RUNNING in process {holder.pid} " in capsys.readouterr().out
    finally:
        holder.kill()  # SIGKILL: the holder never lets go itself
        holder.wait()
    assert main(args) == 0
    assert _results(run)["status"] == "complete" and set(_results(run)["strategies"]) == {"olft", "final", "full"}


# -- timings: Table 2 never mixes them silently -----------------------------------------------------------


def test_timing_comparison_truth_table():
    a = {"pid": 1, "host": "h", "started": "t1", "device": "cpu", "torch_threads": 1, "world_size": 1}
    assert compare_timing({"final": a, "full": a})["comparable"] is True
    assert compare_timing({})["comparable"] is True
    other_run = {**a, "started": "t2"}
    assert compare_timing({"final": a, "full": other_run})["differs_in"] == ["run"]
    assert compare_timing({"final": a, "full": {**other_run, "host": "g", "device": "cuda:0"}})["differs_in"] == [
        "run", "host", "device"]
    old = compare_timing({"final": a, "full": None})
    assert old["comparable"] is False and old["unrecorded"] == ["full"] and old["differs_in"] == []
    resumed = compare_timing({"final": a}, ["final"])
    assert resumed["comparable"] is False and resumed["resumed_mid_training"] == ["final"] and resumed["partial_time"] == []
    assert compare_timing({"final": a}, ["final"], ["final"])["partial_time"] == ["final"]
    # A piece from an olft whose CPU seconds counted other work (no cpu_scope stamp) never compares unflagged.
    scoped = {**a, "cpu_scope": CPU_SCOPE}
    assert compare_timing({"final": scoped, "full": {**a, "started": "t2"}})["differs_in"] == ["run", "cpu_scope"]


def test_pieces_timed_in_different_runs_are_flagged(model_dirs, tiny_glue, tmp_path):
    out = tmp_path / "run"
    assert main(_args(model_dirs["llama"], tiny_glue, out, "--strategies", "final")) == 0
    assert _results(out)["timing"]["strategies"]["comparable"] is True
    assert "Timings do not compare" not in (out / "table.md").read_text()
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        assert main(_args(model_dirs["llama"], tiny_glue, out, "--strategies", "final,full")) == 0
    finally:
        torch.set_num_threads(threads)
    r = _results(out)
    timing = r["timing"]["strategies"]
    assert timing["comparable"] is False and timing["differs_in"] == ["run", "torch_threads"]
    assert [(t["label"], t["pieces"], t["torch_threads"]) for t in timing["runs"]] == [
        ("first run", ["final"], threads), ("continued run", ["full"], threads + 1)]
    assert r["strategies"]["full"]["timed_by"]["pid"] == os.getpid()
    assert r["strategies"]["full"]["timed_by"]["cpu_scope"] == CPU_SCOPE  # what its train_cpu_seconds count
    table = (out / "table.md").read_text()
    assert re.search(r"\| final \| [\d.]+ \(first run\) \|", table) and re.search(r"\| full \| [\d.]+ \(continued run\) \|", table)
    assert "Timings do not compare" in table and "torch_threads" in table


def test_each_strategy_trains_at_its_own_learning_rate(model_dirs, tiny_glue, tmp_path):
    out = tmp_path / "run"
    args = _args(model_dirs["gpt2"], tiny_glue, out, "--lr", "1e-4", "--strategies", "olft,final",
                 "--strategy-lr", "olft=5e-3,final=2e-3")
    assert main(args) == 0
    r = _results(out)
    assert r["strategies"]["olft"]["lr"] == 5e-3 and r["strategies"]["final"]["lr"] == 2e-3
    assert r["strategies"]["final"]["train_cpu_seconds"] > 0
    assert len(r["strategies"]["final"]["timed_by"]["load_average"]) == 3
    # Every step's learning rate, from the curves: the peak is the strategy's, and selection's
    # trained candidates run at olft's rate (they stand in for the OLFT tuning of the winner).
    def peak(piece):
        rows = (out / "curves" / f"{piece}.csv").read_text().splitlines()
        col = rows[0].split(",").index("lr")
        return max(float(row.split(",")[col]) for row in rows[1:])
    assert peak("final") == pytest.approx(2e-3) and peak("olft") == pytest.approx(5e-3)
    candidates = [p.stem for p in (out / "curves").glob("candidate*.csv")]
    assert candidates and all(peak(c) == pytest.approx(5e-3) for c in candidates)
    # ... and table.md and `olft evaluate` say which rate each trained at.
    assert "\nLearning rates: olft 0.005, final 0.002.\n" in (out / "table.md").read_text()
    assert evaluate_run(out, quiet=True).endswith("\n  learning rates: olft 0.005, final 0.002")
    # The folder's config.json, rerun with fewer --strategies: olft's rate is ignored, not refused.
    assert main(["run", "--config", str(out / "config.json"), "--out", str(out), "--strategies", "final", "-q"]) == 0
    assert _results(out)["strategies"]["final"]["lr"] == 2e-3


@pytest.mark.parametrize("bad", ["fnal=1e-3", "final=", "full=-1", "final=abc"])
def test_a_malformed_strategy_lr_is_refused_before_anything_loads(model_dirs, tiny_glue, tmp_path, bad, capsys):
    assert main(_args(model_dirs["gpt2"], tiny_glue, tmp_path / "run", "--strategy-lr", bad)) == 2
    assert "--strategy-lr" in capsys.readouterr().err and not (tmp_path / "run").exists()


def _no_model(monkeypatch):
    import olft.api

    def no_model(*a, **k):
        raise AssertionError("the model loaded before --strategy-lr was checked")

    monkeypatch.setattr(olft.api, "Session", no_model)


@pytest.mark.parametrize("command, extra, message", [
    ("run", ["--strategies", "olft,final", "--strategy-lr", "full=5e-3"], "which --strategies olft,final does not run"),
    ("run", ["--strategies", "final", "--strategy-lr", "olft=1e-3,full=2e-3"], "names full, olft, which --strategies final"),
    ("run", ["--strategy-lr", "olft=1e-3,olft=2e-3"], "olft is given twice"),
    ("train", ["--layers", "1", "--strategy-lr", "olft=1e-2"], "names olft, which this run (layers=1) does not run: explicit "
     "layers (olft train --layers, --strategies layers=...) train at --lr, so use --lr instead"),
    ("select", ["--strategy-lr", "final=1e-2"], "which olft select (its candidates, where its selector trains any, train at olft's rate) does not run: drop "
     "it, or give olft's rate (--strategy-lr olft=...), the one its candidates train at."),
])
def test_a_strategy_lr_that_applies_to_nothing_is_refused(model_dirs, tiny_glue, tmp_path, command, extra, message, capsys, monkeypatch):
    _no_model(monkeypatch)
    args = [command, *_args(model_dirs["gpt2"], tiny_glue, tmp_path / "run")[1:], *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and not (tmp_path / "run").exists()
    # named both ways, as the rates may come from the flag, a config file or Python's train.strategy_lr
    assert "given twice" in message or "--strategy-lr (train.strategy_lr) names" in err, err


@pytest.mark.parametrize("command, extra, unused", [
    ("run", ["--strategies", "final", "--strategy-lr", "olft=5e-3,final=2e-3,full=1e-3"], "full, olft"),
    ("select", ["--strategy-lr", "olft=5e-3,final=2e-3"], "final"),
])
def test_rates_of_strategies_that_do_not_run_are_ignored_with_a_warning(model_dirs, tiny_glue, tmp_path, command, extra, unused,
                                                                      caplog, monkeypatch):
    _no_model(monkeypatch)  # the warning comes before the model loads (which here stops the command)
    with pytest.raises(AssertionError, match="the model loaded"):
        main([command, *_args(model_dirs["gpt2"], tiny_glue, tmp_path / "run")[1:], *extra])
    warnings = [r.getMessage() for r in caplog.records if "--strategy-lr" in r.getMessage()]
    assert len(warnings) == 1 and f"--strategy-lr (train.strategy_lr): ignoring the rate of {unused}, which" in warnings[0], warnings


@pytest.mark.parametrize("command, extra, words", [
    ("run", ["--strategies", "olft,final"], "rate of full is not used: --strategies olft,final does not run it."),
    ("select", [], "rate of final, full is not used: olft select (its candidates, where its selector trains any, train at olft's rate) "
     "does not run them."),
])
def test_a_config_files_unused_rates_are_named_with_the_file(model_dirs, tiny_glue, tmp_path, command, extra, words,
                                                            caplog, monkeypatch):
    """Rates a config file sets for strategies the command does not run: one warning, naming the file."""
    _no_model(monkeypatch)
    mine = tmp_path / "mine.yaml"
    mine.write_text("train:\n  strategy_lr: {olft: 5e-3, final: 2e-3, full: 1e-3}\n" if command == "select"
                    else "train:\n  strategy_lr: {olft: 5e-3, full: 1e-3}\n")
    with pytest.raises(AssertionError, match="the model loaded"):
        main([command, *_args(model_dirs["gpt2"], tiny_glue, tmp_path / "run")[1:], "--config", str(mine), *extra])
    warnings = [r.getMessage() for r in caplog.records if "strategy_lr" in r.getMessage()]
    assert warnings == [f"{mine}: its strategy_lr {words}"], warnings


def test_strategies_that_tune_the_same_layers_are_warned_of(model_dirs, tiny_glue, tmp_path, caplog, monkeypatch):
    """final and layers=<last> (or final and full on one layer) train one layer set twice: said before anything loads."""
    import json as _json

    _no_model(monkeypatch)
    last = _json.loads((model_dirs["gpt2"] / "config.json").read_text())["n_layer"] - 1
    for strategies, words in ((f"final,layers={last},full", f"final and layers={last} tune the same layer ({last})"),
                              ("final,full,layers=0", None)):
        caplog.clear()
        with pytest.raises(AssertionError, match="the model loaded"):
            main([*_args(model_dirs["gpt2"], tiny_glue, tmp_path / "run"), "--strategies", strategies])
        same = [r.getMessage() for r in caplog.records if "tune the same" in r.getMessage()]
        assert same == ([f"{words} on this {last + 1}-layer model: the run trains it 2 times; drop all but one"] if words else []), same


def test_a_folder_whose_run_never_started_is_taken_over_by_another_config(tmp_path, caplog):
    """A run that stopped right after `start` (config.json, the lock, empty subfolders) finished
    nothing: a run with another config takes its folder over. Anything more and it is refused."""
    from olft.config import RunConfig
    from olft.runfiles import read_run
    from olft.runfolder import RunFolder

    old, new = RunConfig(), RunConfig()
    old.method.method, new.method.method = "prefix", "adapter"
    run = tmp_path / "run"
    with RunFolder(run, old.to_dict()) as f:
        f.start()  # and stopped there, as a run refused after its folder was made
    with pytest.raises(OlftError, match="holds olft's config.json but no results.json: its run stopped before any work"):
        read_run(run)  # what `olft evaluate --run` and `olft predict --run` say of it
    with caplog.at_level("WARNING", logger="olft.runfolder"), RunFolder(run, new.to_dict()) as f:
        f.start()
    assert json.loads((run / "config.json").read_text())["method"]["method"] == "adapter"
    assert [r.message for r in caplog.records] == [f"{run}: its run with another config stopped before any work "
                                                   "(no results.json, no pieces); this run takes the folder over"]
    for work in ("results.json", "pieces/candidate-1-4.json", "weights/final.safetensors", "checkpoints/final.pt", "notes.txt"):
        kept = tmp_path / work.replace("/", "-")
        shutil.copytree(run, kept)
        (kept / work).write_text("{}")
        before = _snapshot(kept)
        with pytest.raises(OlftError, match="holds a run with a different config .method.method: 'adapter'"):
            RunFolder(kept, old.to_dict())
        assert _snapshot(kept) == before


def test_a_folder_with_work_but_no_results_json_reads_as_interrupted_with_its_command(tmp_path, capsys):
    """A run writes results.json before any work, so a folder of config.json and pieces with none
    (results.json removed, a copy made without it) holds finished work: readers say it was
    interrupted and give the command that continues it, not "stopped before any work". A
    temporary file a kill left mid-write is no work."""
    from olft.config import RunConfig
    from olft.runfiles import read_run
    from olft.runfolder import RunFolder

    run = tmp_path / "run"
    with RunFolder(run, RunConfig().to_dict()) as f:
        f.start()
    (run / "checkpoints" / ".final.tmp9.pt").write_bytes(b"half")
    with pytest.raises(OlftError, match="its run stopped before any work"):
        read_run(run)
    with RunFolder(run, RunConfig().to_dict()) as f:
        f.start()
        f.save_piece("candidate", "1-4", {"layer": 1, "steps": 4, "score": 0.5})
        f.save_piece("candidate", "2-4", {"layer": 2, "steps": 4, "score": 0.6})
    (run / "checkpoints" / "final.pt").write_bytes(b"state")
    typed = json.loads((run / "olft.lock.json").read_text())["command"]
    assert main(["evaluate", "--run", str(run), "-q"]) == 2  # as olft evaluate, predict and olft.load read it
    err = " ".join(capsys.readouterr().err.split())
    assert "(2 finished pieces, 1 mid-training checkpoint) but no results.json: its run was INTERRUPTED" in err, err
    assert "stopped before any work" not in err
    assert f"`{typed}` (in {os.getcwd()}), or from any directory `{report.continue_command(run)}`" in err, err


def test_the_holder_record_names_a_command_one_can_paste_and_where_it_ran(monkeypatch, tmp_path):
    from olft import runlock

    monkeypatch.chdir(tmp_path)
    for argv0 in ("/venv/lib/python3.12/site-packages/olft/__main__.py", "/venv/bin/olft"):  # python -m olft; the script
        monkeypatch.setattr("sys.argv", [argv0, "run", "--out", "runs/a b"])
        record = runlock.this_process("t")
        assert record["command"] == "olft run --out 'runs/a b'" and record["cwd"] == str(tmp_path)
        assert runlock.describe(record).endswith(f"(started t in {tmp_path}: olft run --out 'runs/a b')")
    monkeypatch.setattr("sys.argv", ["bench.py", "--x"])  # another program that runs olft keeps its own name
    assert runlock.this_process("t")["command"] == "bench.py --x"


def test_a_released_lock_file_stays_so_a_waiter_and_a_newcomer_lock_one_file(tmp_path):
    """olft.lock outlives its run on purpose: flock locks the file's inode, so deleting it on release
    would let a run that opened it before (and waits) lock the deleted inode while a newcomer
    creates and locks a new olft.lock: two writers in one folder. Kept, both contend for one lock."""
    import fcntl

    from filelock import FileLock

    from olft.runlock import LOCK_FILE, RunLock

    plain = FileLock(str(tmp_path / "plain.lock"))
    plain.acquire()
    plain.release()
    if not (tmp_path / "plain.lock").exists():
        pytest.skip("this filelock deletes its file on release itself (while holding it; its takers re-check)")
    first = RunLock(tmp_path, "t1")
    first.acquire()
    with open(tmp_path / LOCK_FILE, "rb") as waiter:  # a second run has opened the file and waits
        first.release()
        assert (tmp_path / LOCK_FILE).exists()
        newcomer = RunLock(tmp_path, "t2")
        newcomer.acquire()
        try:
            with pytest.raises(BlockingIOError):  # the waiter's file is the newcomer's: it must wait on
                fcntl.flock(waiter, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            newcomer.release()


def test_a_listing_names_what_one_more_entry_would_hide():
    from olft.runfolder import _listing

    assert _listing(["a", "b", "c", "d"]) == "a, b, c, d"
    assert _listing(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"
    assert _listing([f"k{i}" for i in range(10)], 8, "; ", "; and") == "; ".join(f"k{i}" for i in range(8)) + "; and 2 more"


def _flip_labels(path):
    """Every label of an SST-2 file (sentence<TAB>label) flipped: the same texts, other answers."""
    head, *rows = path.read_text().splitlines()
    flipped = [f"{text}\t{1 - int(label)}" for text, label in (row.rsplit("\t", 1) for row in rows)]
    path.write_text("\n".join([head, *flipped]) + "\n")


def _contents(folder):
    """Every file under `folder` (the lock file aside: the refused run takes and frees it) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "olft.lock"}


def test_a_folder_continued_on_edited_data_is_refused_and_left_as_it_was(model_dirs, tiny_glue, tmp_path, capsys):
    data, out = tmp_path / "data2", tmp_path / "dchg"
    data.mkdir()
    for name in ("train", "dev"):
        shutil.copy(tiny_glue / "SST-2" / f"{name}.tsv", data / f"{name}.tsv")

    def train(layer, *extra):
        return main(["train", "--model", str(model_dirs["gpt2"]), "--task", "sst2", "--data-source", "file", "--train-file",
                     str(data / "train.tsv"), "--validation-file", str(data / "dev.tsv"), "--max-steps", "4",
                     "--batch-size", "8", "--layers", str(layer), "--out", str(out), "-q", *extra])

    assert train(3) == 0
    recorded = _results(out)["data_sha256"]
    assert set(recorded) == {"train", "validation"} and all(re.fullmatch(r"[0-9a-f]{64}", v) for v in recorded.values())
    assert train(2) == 0 and _results(out)["data_sha256"] == recorded  # the same data: the folder grows
    capsys.readouterr()
    before = _contents(out)
    _flip_labels(data / "train.tsv")
    assert train(1) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"the examples of the train ({data / 'train.tsv'}) split" in err and "validation" not in err, err
    assert "--out" in err and "--overwrite" in err, err
    assert _contents(out) == before  # nothing written or dropped: layers=3 and layers=2 are still there, as they were
    _flip_labels(data / "dev.tsv")
    assert train(1) == 2
    assert f"train ({data / 'train.tsv'}) and validation ({data / 'dev.tsv'}) splits" in capsys.readouterr().err
    # A folder from before fingerprints (results.json records none) continues unchecked, and records them from then on.
    results = _results(out)
    del results["data_sha256"]
    (out / "results.json").write_text(json.dumps(results))
    assert train(1) == 0
    r = _results(out)
    assert set(r["strategies"]) == {"layers=3", "layers=2", "layers=1"} and r["data_sha256"]["train"] != recorded["train"]
    _flip_labels(data / "train.tsv")  # back to the data of layers=3 and 2, but not of layers=1 (now the folder's record)
    assert train(0) == 2
    assert train(0, "--overwrite") == 0 and set(_results(out)["strategies"]) == {"layers=0"}


def test_checkpoint_every_may_change_when_a_run_continues(reference, model_dirs, tiny_glue, tmp_path):
    """How often the state is saved changes nothing a run computes: a run killed mid-training continues with
    another --checkpoint-every (or none), resumes from the checkpoint it left, and ends with the weights of a run
    never stopped; config.json then records this run's value, so the folder's continue command keeps it."""
    out = tmp_path / "run"
    args = _args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "final")  # --checkpoint-every 3
    assert _cli(args, "final:step5").returncode == -9
    every = args.index("--checkpoint-every") + 1
    again = [*args[:every], "2", *args[every + 1:]]
    resumed = _cli(again)
    assert resumed.returncode == 0, resumed.stderr
    final = _results(out)["strategies"]["final"]
    assert final["resumed_at"] == 3  # from the first run's checkpoint
    assert (out / "weights" / "final.safetensors").read_bytes() == (reference / "weights" / "final.safetensors").read_bytes()
    assert json.loads((out / "config.json").read_text())["train"]["checkpoint_every"] == 2


def _probe_halving(model, glue, out):
    return ["select", "--model", str(model), "--task", "rte", "--glue-dir", str(glue), "--candidates", "all",
            "--selection-train-samples", "32", "--selection-eval-samples", "24", "--selector", "probe-halving",
            "--selection-steps", "4", "--selection-adaptive", "0", "-q", "--out", str(out)]  # fmt: skip


def test_a_selection_stopped_after_the_probe_shows_its_scores_and_continues_from_them(model_dirs, tiny_glue, tmp_path,
                                                                                     monkeypatch):
    """probe-halving stopped (Ctrl-C) while its finalists train: the probe stage's piece puts every
    candidate's probe score (and its ranking and finalists) in the unfinished selection and in table.md,
    beside the finalist that finished; the continued run takes the probe from that piece (no probing
    again) and ends with the selection an uninterrupted run makes. Each candidate piece is read once
    per refresh."""
    import olft.pipeline as pipeline
    import olft.stages as stages
    from olft.runfolder import RunFolder

    assert main(_probe_halving(model_dirs["llama"], tiny_glue, tmp_path / "ref")) == 0
    ref = _results(tmp_path / "ref")
    probe, trained_round = ref["selection"]["rounds"]
    assert probe["stage"] == "probe" and len(probe["layers"]) == 4 and len(trained_round["layers"]) == 2

    out = tmp_path / "run"
    real, tried = pipeline.Session._candidate, _interrupt_the_second_candidate(monkeypatch)
    assert main(_probe_halving(model_dirs["llama"], tiny_glue, out)) == 130
    sel = _results(out)["selection"]
    assert sel["status"] == "unfinished" and sel["selected_layer"] is None and sel["ranking"] is None, sel
    probed = [c for c in sel["candidates"] if c["steps"] == 0]
    assert {c["layer"]: c["score"] for c in probed} == {int(k): v for k, v in probe["scores"].items()}  # every candidate
    assert {c["layer"]: c["metrics"]["loss"] for c in probed} == {int(k): v for k, v in probe["losses"].items()}
    assert sel["probe"] == {"ranking": probe["ranking"], "finalists": trained_round["layers"]}
    trained = [c for c in sel["candidates"] if c["steps"]]
    assert [(c["layer"], c["steps"], c["score"]) for c in trained] == [(tried[0], 4, trained_round["scores"][str(tried[0])])]
    assert trained[0]["probe"]["score"] == probe["scores"][str(tried[0])]
    assert not any("example_losses" in c for c in sel["candidates"])
    table = (out / "table.md").read_text()
    assert "Selection unfinished (probe-halving selector, train-holdout): no layer is selected yet." in table, table
    probe_text = "; ".join(f"layer {layer} {100 * probe['scores'][str(layer)]:.1f}" for layer in probe["layers"])
    assert f"The probe scored 4 candidates (probe score (-held-out loss x100), probe scores, not the task metric): {probe_text}." in table, table
    passed = ", ".join(map(str, trained_round["layers"]))
    assert (f"It passed layers {passed} on to training; 1 trained candidate finished (accuracy x100): layer {tried[0]} "
            f"{100 * trained_round['scores'][str(tried[0])]:.1f} (4 steps).") in table, table
    assert "selected layer" not in table

    reads = []  # one read of each candidate piece per refresh (its unfinished entry and its timing)
    real_read = RunFolder.read_piece
    monkeypatch.setattr(RunFolder, "read_piece", lambda self, kind, name: reads.append((kind, name)) or real_read(self, kind, name))
    folder = RunFolder(out, json.loads((out / "config.json").read_text()))
    folder.refresh(results := {})
    assert sorted(n for kind, n in reads if kind == "candidate") == folder.piece_names("candidate") == [f"{tried[0]}-4"]
    assert results["selection"] == sel

    monkeypatch.setattr(pipeline.Session, "_candidate", real)
    probed_again = []

    def counted(real_fn):
        return lambda *a, **kw: probed_again.append(real_fn.__name__) or real_fn(*a, **kw)

    for fn in ("probe_scores", "layer_features"):
        monkeypatch.setattr(stages, fn, counted(getattr(stages, fn)))
    kept = (out / "pieces" / "probe.json").stat().st_mtime_ns
    assert main(_probe_halving(model_dirs["llama"], tiny_glue, out)) == 0
    assert probed_again == [] and (out / "pieces" / "probe.json").stat().st_mtime_ns == kept  # the piece, not a new probe
    final = _results(out)
    assert final["selection"]["status"] == "finished" and "probe" not in final["selection"]
    assert json.dumps(_strip(final["selection"])) == json.dumps(_strip(ref["selection"]))
    assert _strip(final) == _strip(ref)


def test_an_olft_train_stopped_in_its_end_says_what_is_left(model_dirs, tiny_glue, tmp_path, monkeypatch):
    """`olft train` stopped by SIGTERM after its one piece finished, while drawing layers.png (the
    run's end): its banner names what is left (the run's end), not an empty "not finished", and a
    rerun of the command ends it."""
    import olft.runfolder as runfolder

    real_plot, out = runfolder.plots.plot_layers, tmp_path / "run"
    calls = []

    def terminate_once(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_plot(*a, **kw)

    monkeypatch.setattr(runfolder.plots, "plot_layers", terminate_once)
    args = ["train", "--model", str(model_dirs["gpt2"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--out",
            str(out), "--epochs", "1", "--batch-size", "8", "--layers", "0", "-q"]
    assert main(args) == 143
    r, table = _results(out), (out / "table.md").read_text()
    assert r["status"] == "interrupted" and list(r["strategies"]) == ["layers=0"]
    assert "**UNFINISHED:** its run was interrupted (Ctrl-C or SIGTERM)" in table
    assert f"{report.ENDING_STOPPED} `olft run --config {out}/config.json --out {out}` ends it, keeping every piece; from Python, `import json" in table
    assert f"cfg.out = {str(out)!r}; olft.run(cfg, given=())` does the same" in table
    monkeypatch.undo()
    assert main(args) == 0 and _results(out)["status"] == "complete"
    assert "UNFINISHED" not in (out / "table.md").read_text()


def test_config_differences_skip_only_options_neither_run_reads():
    """A folder is "a different config" only for an option this run reads: under --selector auto neither
    --probe-keep is read, an adapter run reads no LoRA rank, and a run that selects no layer (`olft train`,
    --strategies without olft) reads no selection option; config.json keeps the folder's values of them."""
    from olft.config import RunConfig
    from olft.ownership import config_differences, kept_config

    def cfg(**sections):
        d = RunConfig().to_dict()
        for key, value in sections.items():
            section, name = key.split("__")
            d[section][name] = value
        return d

    folder = cfg(selection__probe_keep=3, method__lora_rank=4, selection__selector="probe")
    assert config_differences(folder, cfg(selection__selector="probe")) == []  # probe_keep, lora_rank unread by both
    assert kept_config(folder, cfg(selection__selector="probe"))["selection"]["probe_keep"] == 3
    assert kept_config(folder, cfg(selection__selector="probe"))["method"]["lora_rank"] == 4
    assert config_differences(folder, cfg()) == ["selection.selector: 'probe' in the folder, 'auto' now"]
    assert config_differences(folder, cfg(), selects=False) == []  # olft train: no selection option is read
    # a task an older olft kept as typed ("SST-2") is the one the canonical name now names; another task is not
    assert config_differences(cfg(data__task="SST-2"), cfg(data__task="sst2")) == []
    assert config_differences(cfg(data__task="SST-2"), cfg(data__task="cola")) == ["data.task: 'SST-2' in the folder, 'cola' now"]
    assert kept_config(folder, cfg(), selects=False)["selection"] == folder["selection"]
    rated = cfg(train__strategy_lr="final=0.003")  # explicit layers alone (no rates) train at --lr
    assert config_differences(rated, cfg(), rates=()) == []
    assert kept_config(rated, cfg(), trains=())["train"]["strategy_lr"] == "final=0.003"
    assert config_differences(rated, cfg()) == ["final's learning rate: 0.003 in the folder, which its final work trained at, "
                                                "0.001 now"]
    # Epochs beside a step count in both configs are never read (the warning says drop one): no difference.
    stepped = cfg(train__max_steps=2, train__epochs=1.0, selection__selection_steps=5, selection__selection_epochs=1.0)
    assert config_differences(stepped, cfg(train__max_steps=2, selection__selection_steps=5)) == []
    assert kept_config(stepped, cfg(train__max_steps=2, selection__selection_steps=5))["train"]["epochs"] == 1.0
    assert config_differences(stepped, cfg(selection__selection_steps=5)) == [  # steps on one side only: epochs read
        "train.epochs: 1.0 in the folder, 3.0 now", "train.max_steps: 2 in the folder, None now"]
    # Read on either side: refused as before.
    halving = cfg(selection__selector="probe-halving", selection__probe_keep=3)
    assert config_differences(halving, cfg(selection__selector="probe-halving")) == [
        "selection.probe_keep: 3 in the folder, None now"]
    lora = cfg(method__method="lora", method__lora_rank=4)
    assert config_differences(lora, cfg(method__method="lora")) == ["method.lora_rank: 4 in the folder, 8 now"]
    assert config_differences(lora, cfg()) == ["method.lora_rank: 4 in the folder, 8 now",
                                               "method.method: 'lora' in the folder, 'adapter' now"]
    # What every run reads is refused whether or not it selects.
    assert config_differences(folder, cfg(selection__selector="probe", train__lr=0.01), selects=False) == [
        "train.lr: 0.001 in the folder, 0.01 now"]


def test_selection_parallel_is_recorded_only_where_the_run_reads_it():
    """--selection-parallel may differ when a folder continues; config.json records this run's value
    only where the run reads it (olft in --strategies, a trained selector in either config); under
    probe or gradient in both, or a run that selects nothing, it keeps the folder's (an `APPLIES` key),
    as the README says (it said config.json records this run's value, always)."""
    from pathlib import Path

    from olft.config import RunConfig
    from olft.ownership import config_differences, kept_config

    def cfg(selector: str, parallel: str) -> dict:
        c = RunConfig()
        c.selection.selector, c.selection.selection_parallel = selector, parallel
        return c.to_dict()

    def recorded(old: str, new: str, selects: bool = True) -> str:
        if old == new:  # it may differ, read or not
            assert config_differences(cfg(old, "candidates"), cfg(new, "data"), selects) == []
        return kept_config(cfg(old, "candidates"), cfg(new, "data"), selects)["selection"]["selection_parallel"]

    assert [recorded(s, s) for s in ("exhaustive", "halving", "probe-halving", "auto")] == ["data"] * 4
    assert recorded("probe", "exhaustive") == recorded("exhaustive", "probe") == "data"  # read by one side
    assert recorded("probe", "probe") == recorded("gradient", "gradient") == "candidates"
    assert recorded("exhaustive", "exhaustive", selects=False) == "candidates"
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert ("`--selection-parallel` (config.json then records this run's values, `--selection-parallel`'s only where this "
            "run reads it: olft in `--strategies`, a trained selector in either config)") in readme
    assert "`--selection-parallel` under probe or gradient" in readme


def test_olft_train_adds_to_a_folder_whose_selection_options_differ(model_dirs, tiny_glue, tmp_path, capsys):
    """`olft train` selects no layer, so the folder's --selector probe does not make it "a different
    config" (it was refused, though train warns it ignores --selector); config.json keeps the folder's
    selection, so the run's own command still continues the folder. A real difference is still refused."""
    import olft
    from olft.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    out = tmp_path / "run"
    common = ["--model", str(model_dirs["bert"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--max-steps", "3",
              "--out", str(out), "-q"]
    first = ["run", *common, "--selector", "probe", "--strategies", "olft", "--selection-train-samples", "32",
             "--selection-eval-samples", "16"]
    assert main(first) == 0
    saved = json.loads((out / "config.json").read_text())
    assert main(["train", *common, "--layers", "1"]) == 0, capsys.readouterr().err
    now = json.loads((out / "config.json").read_text())
    assert {**now, "strategies": saved["strategies"]} == saved  # the folder's config is kept (strategies: this run's, as ever)
    assert set(_results(out)["strategies"]) == {"olft", "layers=1"}
    assert _results(out)["selection"]["selector"] == "probe"
    cfg = RunConfig(model=ModelConfig(model=str(model_dirs["bert"])), data=DataConfig(task="sst2", glue_dir=str(tiny_glue)),
                    train=TrainConfig(max_steps=3), strategies="layers=2", out=str(out))
    assert olft.run(cfg, quiet=True)["status"] == "complete"  # the Python API alike
    assert main(first) == 0  # the folder's own command continues it: nothing differs
    assert set(_results(out)["strategies"]) == {"olft", "layers=1", "layers=2"}
    capsys.readouterr()
    assert main(["train", *common, "--layers", "1", "--lr", "0.01"]) == 2  # what train reads still counts
    err = capsys.readouterr().err
    assert "different config (train.lr: 0.001 in the folder, 0.01 now)" in err
    assert main(["run", *common, "--strategies", "olft", "--selector", "exhaustive"]) == 2  # a run that selects reads it
    assert "selection.selector: 'probe' in the folder, 'exhaustive' now" in capsys.readouterr().err


def test_olft_train_adds_to_a_folder_whose_run_set_strategy_lr(model_dirs, tiny_glue, tmp_path, capsys, caplog):
    """Explicit layers train at --lr, so a run with none of olft, final, full reads no --strategy-lr: the
    folder's own config.json (or --out alone) with `strategy_lr` was refused ("--strategy-lr names final,
    which --strategies layers=1 does not run"; with `--strategy-lr ""`, "a different config"). Now the
    add-on runs and config.json keeps the folder's rates, so its own command still continues it.
    A --strategy-lr the user types for explicit layers is still refused: it would do nothing."""
    out = tmp_path / "run"
    common = ["--model", str(model_dirs["llama"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--max-steps", "2", "-q"]
    first = ["run", *common, "--out", str(out), "--strategies", "final", "--strategy-lr", "final=3e-3"]
    assert main(first) == 0
    saved = json.loads((out / "config.json").read_text())
    config = str(out / "config.json")
    assert main(["train", "--config", config, "--layers", "1", "-q"]) == 0, capsys.readouterr().err
    assert main(["train", *common, "--out", str(out), "--layers", "2"]) == 0, capsys.readouterr().err
    assert main(["run", "--config", config, "--strategies", "layers=0", "-q"]) == 0, capsys.readouterr().err
    now = json.loads((out / "config.json").read_text())
    assert {**now, "strategies": saved["strategies"]} == saved  # strategy_lr: 'final=3e-3' still
    r = _results(out)
    assert {k: v["lr"] for k, v in r["strategies"].items()} == {"final": 3e-3, "layers=1": 1e-3, "layers=2": 1e-3,
                                                                "layers=0": 1e-3}
    assert main(first) == 0, capsys.readouterr().err  # the folder's own command continues it: nothing differs
    assert _results(out)["status"] == "complete" and len(_results(out)["strategies"]) == 4
    select = ["select", "--config", config, "--selector", "probe", "--selection-train-samples", "32",
              "--selection-eval-samples", "16", "-q"]  # its candidates would train at olft's rate, which it has not
    assert main(select) == 0, capsys.readouterr().err
    fresh = tmp_path / "fresh"  # a new folder records no rate its run ignored, as it records no selection options
    assert main(["train", "--config", config, "--out", str(fresh), "--layers", "1", "-q"]) == 0
    assert json.loads((fresh / "config.json").read_text())["train"]["strategy_lr"] is None
    capsys.readouterr()
    mine = tmp_path / "mine.yaml"
    mine.write_text("train:\n  strategy_lr: {final: 1e-2}\n")
    # A typed rate would do nothing: refused.
    assert main(["train", "--config", config, "--strategy-lr", "final=1e-2", "--layers", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "explicit layers (olft train --layers, --strategies layers=...) train at --lr, so use --lr instead" in err
    assert "add the strategy" not in err, err  # no fix for olft train
    # A config file's, shared with `olft run`: unused, as its other options another command reads; said, not refused.
    assert main(["train", "--config", config, "--config", str(mine), "--layers", "1", "-q"]) == 0, capsys.readouterr().err
    assert f"{mine}: its strategy_lr (final=0.01) is not used: olft train's --layers train at --lr." in caplog.text


def test_a_run_with_strategy_lr_adds_to_a_folder_of_explicit_layers(model_dirs, tiny_glue, tmp_path, capsys):
    """The other order of the test above: `olft train --layers 1` first, then `olft run --strategy-lr`.
    The folder's only piece (layers=1) trained at --lr and reads no --strategy-lr, so the run was refused
    ("a different config (train.strategy_lr: None in the folder, ...)") where the reverse order was not.
    Now it adds its strategies and config.json records its rates; once the folder holds work trained at
    them, another --strategy-lr (or none) is refused as before."""
    out = tmp_path / "run"
    common = ["--model", str(model_dirs["llama"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--max-steps", "2",
              "--out", str(out), "-q"]
    assert main(["train", *common, "--layers", "1"]) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["train"]["strategy_lr"] is None
    rated = ["run", *common, "--strategies", "olft,final", "--selector", "probe", "--selection-train-samples", "32",
             "--selection-eval-samples", "16", "--strategy-lr", "olft=3e-3,final=2e-3"]
    assert main(rated) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["train"]["strategy_lr"] == "olft=3e-3,final=2e-3"
    r = _results(out)
    assert r["status"] == "complete"
    assert {k: v["lr"] for k, v in r["strategies"].items()} == {"olft": 3e-3, "final": 2e-3, "layers=1": 1e-3}
    assert main(rated) == 0, capsys.readouterr().err  # its own command continues it
    capsys.readouterr()
    for other, changed in ((["--strategy-lr", "olft=1e-2,final=2e-3"], "olft's learning rate: 0.003 in the folder, which "
                            "its olft work trained at, 0.01 now)"),  # final and olft now hold work at these rates
                           ([], "olft's learning rate: 0.003 in the folder, which its olft work trained at, 0.001 now; "
                                "final's learning rate: 0.002 in the folder, which its final work trained at, 0.001 now")):
        assert main([*rated[:-2], *other]) == 2
        assert f"different config ({changed}" in capsys.readouterr().err


def _rate_runs(model, glue, out):
    """(`olft run --strategies final`, `olft run --strategies olft --strategy-lr olft=3e-3`) into `out`."""
    common = ["--model", str(model), "--task", "sst2", "--glue-dir", str(glue), "--max-steps", "2", "--out", str(out), "-q"]
    return (["run", *common, "--strategies", "final"],
            ["run", *common, "--strategies", "olft", "--selector", "probe", "--selection-train-samples", "32",
             "--selection-eval-samples", "16", "--strategy-lr", "olft=3e-3"])


def _rates_hold(out, expected):
    """results.json's strategies trained at `expected` ({strategy: lr}), and config.json (the folder's
    config, as a third run, `olft evaluate` and `olft report` read it) resolves each to the same rate."""
    from olft.runfiles import read_run

    results, cfg = read_run(out)
    assert {k: v["lr"] for k, v in results["strategies"].items()} == expected
    assert {k: cfg.train.lr_for(k) for k in results["strategies"]} == expected


def _refused(args, message, capsys):
    capsys.readouterr()
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err, err
    return err


@pytest.mark.parametrize("first", ["final", "olft"])
def test_strategy_lr_is_compared_per_strategy_the_folder_holds(model_dirs, tiny_glue, tmp_path, capsys, first):
    """`olft run --strategies final` then `olft run --strategies olft --strategy-lr olft=3e-3` into the same
    folder (or the other order) was refused as "a different config (train.strategy_lr: ...)" although
    final's rate (--lr) was the same in both and the folder held no olft work: --strategy-lr was compared as
    a whole. Now each strategy the run trains is compared, at its effective rate, with the work the folder
    holds of it; config.json records the rate each held strategy trained at, so both commands (and the folder's
    own config.json) continue it without training again. A rate that differs for held work is refused, naming
    the strategy, both rates and the --strategy-lr that resumes."""
    out = tmp_path / "run"
    final, olft = _rate_runs(model_dirs["llama"], tiny_glue, out)
    runs = [final, olft] if first == "final" else [olft, final]
    for args in runs:
        assert main(args) == 0, capsys.readouterr().err
    _rates_hold(out, {"olft": 3e-3, "final": 1e-3})
    assert _results(out)["status"] == "complete" and _results(out)["selection"]["selected_layer"] is not None
    weights = _snapshot(out / "weights")
    for args in (*runs, ["run", "--config", str(out / "config.json"), "--strategies", "olft,final", "-q"]):
        assert main(args) == 0, capsys.readouterr().err  # each resumes: nothing differs, nothing trains again
    assert _snapshot(out / "weights") == weights
    _rates_hold(out, {"olft": 3e-3, "final": 1e-3})
    err = _refused([*final, "--strategy-lr", "final=3e-3"], "different config (final's learning rate: 0.001 in the folder, "
                   "which its final work trained at, 0.003 now)", capsys)
    assert ("Use another --out, give final the folder's rate to resume (--strategy-lr final=0.001), or pass --overwrite "
            "to start afresh.") in err
    _refused([*olft[:-1], "olft=1e-2"], "different config (olft's learning rate: 0.003 in the folder, which its olft "
             "work trained at, 0.01 now). Use another --out, give olft the folder's rate to resume (--strategy-lr "
             "olft=0.003), or pass --overwrite", capsys)
    _refused(olft[:-2], "olft's learning rate: 0.003 in the folder, which its olft work trained at, 0.001 now", capsys)
    # --lr is compared through the strategies that train at it (the folder holds no explicit layers' work):
    # a changed --lr names final, which trained at the old one, and the --strategy-lr that keeps its rate.
    for other in ([], ["--strategy-lr", "final=2e-3"]):
        _refused([*final, "--lr", "2e-3", *other], "different config (final's learning rate: 0.001 in the folder, which its "
                 "final work trained at, 0.002 now). Use another --out, give final the folder's rate to resume "
                 "(--strategy-lr final=0.001), or pass --overwrite", capsys)
    # Every held strategy at its folder's rate, whatever --lr is: each continues, and nothing trains again.
    for args in ([*final, "--lr", "2e-3", "--strategy-lr", "final=1e-3"], [*olft, "--lr", "5e-3"]):
        assert main(args) == 0, capsys.readouterr().err
        _rates_hold(out, {"olft": 3e-3, "final": 1e-3})
    assert main(["run", "--config", str(out / "config.json"), "--strategies", "olft,final", "-q"]) == 0
    _rates_hold(out, {"olft": 3e-3, "final": 1e-3})
    assert _snapshot(out / "weights") == weights and _results(out)["status"] == "complete"


@pytest.mark.parametrize("rate", ["full=2e-3", "all=2e-3"])
def test_strategies_all_keeps_full_s_rate_in_the_folder(model_dirs, tiny_glue, tmp_path, capsys, rate):
    """`--strategies all` is full: its --strategy-lr rate was lost from config.json (the run's rated
    strategies were read without mapping all to full), so the folder's own config.json repeated full at
    --lr, and a rerun at another --lr kept the full piece trained at the old rate without a word."""
    out = tmp_path / "run"
    common = ["run", "--model", str(model_dirs["llama"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--max-steps", "2",
              "--out", str(out), "-q", "--strategies", "all"]
    assert main([*common, "--strategy-lr", rate]) == 0, capsys.readouterr().err
    _rates_hold(out, {"full": 2e-3})
    _refused([*common, "--lr", "5e-3"], "different config (full's learning rate: 0.002 in the folder, which its full work "
             "trained at, 0.005 now)", capsys)
    _refused([*common[:-1], "full,final"], "full's learning rate: 0.002 in the folder", capsys)
    assert main(["run", "--config", str(out / "config.json"), "-q"]) == 0, capsys.readouterr().err  # resumes: nothing trains
    _rates_hold(out, {"full": 2e-3})


def test_a_probe_selection_continues_at_another_olft_rate(model_dirs, tiny_glue, tmp_path, capsys):
    """`olft select --selector probe` trains no candidate, so no work in its folder trained at olft's
    rate: `olft run --strategy-lr olft=3e-3` then tunes the layer it chose (was refused: "olft's
    learning rate: 0.001 in the folder, which its olft work trained at"). A trained selection is not."""
    out, trained = tmp_path / "run", tmp_path / "trained"
    common = ["--model", str(model_dirs["llama"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--max-steps", "2",
              "--selection-train-samples", "32", "--selection-eval-samples", "16", "-q"]
    assert main(["select", *common, "--out", str(out), "--selector", "probe"]) == 0, capsys.readouterr().err
    chosen, probe = _results(out)["selection"]["selected_layer"], (out / "pieces" / "probe.json").read_bytes()
    # Another option differing: the refusal names the flags, with the folder's values, that continue it.
    _refused(["run", *common, "--out", str(out), "--strategies", "olft", "--no-cache"], "different config (selection.selector: "
             "'probe' in the folder, 'auto' now; train.cache: True in the folder, False now). Use another --out, rerun with "
             "the same options to resume (the folder's --selector probe --cache), or pass --overwrite", capsys)
    assert main(["run", *common, "--out", str(out), "--selector", "probe", "--strategies", "olft",
                 "--strategy-lr", "olft=3e-3"]) == 0, capsys.readouterr().err
    assert _results(out)["strategies"]["olft"]["layers"] == [chosen] and _results(out)["strategies"]["olft"]["lr"] == 3e-3
    assert (out / "pieces" / "probe.json").read_bytes() == probe  # the selection was kept, not redone
    args = [*common, "--out", str(trained), "--selector", "exhaustive", "--selection-steps", "2"]
    assert main(["select", *args]) == 0, capsys.readouterr().err
    _refused(["run", *args, "--strategies", "olft", "--strategy-lr", "olft=3e-3"],
             "olft's learning rate: 0.001 in the folder, which its olft work trained at, 0.003 now", capsys)


def test_strategy_lr_of_a_strategy_a_run_does_not_train_keeps_the_folders():
    """The rates config.json records once a run adds to a folder (`kept_config`): this run's for the
    strategies it trains, the folder's for the others (which it neither reads nor may change); and a
    rate is "a different config" only for a strategy the run trains that the folder holds work of."""
    from olft.config import RunConfig
    from olft.ownership import config_differences, kept_config

    def cfg(strategy_lr=None, lr=1e-3):
        c = RunConfig()
        c.train.strategy_lr, c.train.lr = strategy_lr, lr
        return c.to_dict()

    def kept(old, new, trains):
        return kept_config(old, new, trains=trains)["train"]["strategy_lr"]

    assert kept(cfg(), cfg("olft=3e-3"), {"olft"}) == "olft=3e-3"  # as typed, where nothing else is kept
    assert kept(cfg("olft=3e-3"), cfg(), {"final"}) == "olft=3e-3"  # the folder's, as typed
    assert kept(cfg("olft=3e-3,full=1e-4"), cfg("final=2e-3,full=5e-4"), {"final"}) == "olft=0.003,final=0.002,full=0.0001"
    assert kept(cfg("olft=3e-3"), cfg(), {"olft", "final"}) is None  # olft trains at --lr now
    assert kept(cfg("final=3e-3"), cfg("olft=1e-2"), ()) == "final=3e-3"  # olft train: the folder's, all of it
    assert config_differences(cfg(), cfg("olft=3e-3"), rates={"final"}) == []  # final: 0.001 in both
    assert config_differences(cfg("olft=3e-3"), cfg(), rates={"final"}) == []
    assert config_differences(cfg(), cfg("final=1e-3"), rates={"final"}) == []  # the same rate, however set
    assert config_differences(cfg(lr=2e-3), cfg("final=2e-3"), rates={"final"}) == ["train.lr: 0.002 in the folder, 0.001 now"]
    assert config_differences(cfg(lr=2e-3), cfg(), rates={"final"}) == ["train.lr: 0.002 in the folder, 0.001 now"]  # --lr's
    assert config_differences(cfg(), cfg("final=3e-3"), rates={"final"}) == [
        "final's learning rate: 0.001 in the folder, which its final work trained at, 0.003 now"]
    assert config_differences(cfg("olft=3e-3"), cfg(), rates={"olft", "final"}) == [
        "olft's learning rate: 0.003 in the folder, which its olft work trained at, 0.001 now"]
    # No explicit layers' work held (`whole_lr` False): --lr is compared through the strategies at it, and
    # config.json pins the folder's rate of each held strategy this run does not train where --lr changes.
    assert config_differences(cfg(lr=2e-3), cfg("final=2e-3"), rates={"final"}, whole_lr=False) == []
    assert config_differences(cfg("olft=3e-3"), cfg("olft=3e-3", lr=5e-3), rates={"olft"}, whole_lr=False) == []
    assert config_differences(cfg(lr=2e-3), cfg(), rates={"final"}, whole_lr=False) == [
        "final's learning rate: 0.002 in the folder, which its final work trained at, 0.001 now"]
    assert kept_config(cfg(lr=2e-3), cfg("olft=3e-3"), trains={"olft"}, held={"olft", "final"})["train"]["strategy_lr"] == (
        "olft=0.003,final=0.002")
    assert kept(cfg(lr=2e-3), cfg(), {"olft"}) is None  # final not held: nothing trained at the folder's --lr
    # The folder's olft entry and its final at --lr 1e-3, kept beside this run's final=1e-3 under --lr 2e-3
    # (was the folder's text alone, "olft=3e-3", which put final at 2e-3).
    assert kept_config(cfg("olft=3e-3"), cfg("final=1e-3", lr=2e-3), trains={"final"}, held={"olft", "final"})[
        "train"]["strategy_lr"] == "olft=0.003,final=0.001"


@pytest.mark.parametrize("files, held", [
    ({"pieces/strategy-final.json": "{}"}, {"final"}),
    ({"pieces/failed-full.json": "{}"}, {"full"}),
    ({"checkpoints/full.pt": ""}, {"full"}),
    ({"pieces/candidate-1-4.json": "{}"}, {"olft"}),  # selection's candidates train at olft's rate
    ({"pieces/probe.json": "{}", "checkpoints/olft.pt": ""}, {"olft"}),
    ({"pieces/strategy-layers-1.json": "{}", "checkpoints/layers-0_3.pt": ""}, set()),  # at --lr
    ({"results.json": json.dumps({"selection": {"status": "unfinished"}, "strategy_names": ["layers=1"]})}, set()),
    ({"pieces/probe.json": "{}", "pieces/selection.json": "{}"}, set()),  # a proxy's selection trained nothing
    ({"pieces/selection.json": "{}", "pieces/candidate-2-8.json": "{}"}, {"olft"}),
    ({"results.json": json.dumps({"strategies": {"final": {}}, "strategy_names": ["full", "layers=2"]})}, {"final", "full"}),
    ({"pieces/.strategy-final.tmp12.json": "{", "checkpoints/.olft.tmp3.pt": ""}, set()),  # a kill mid-write: no work
])
def test_rated_work_names_the_strategies_whose_rate_a_folders_work_trained_at(tmp_path, files, held):
    from olft.ownership import folder_work

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    work = folder_work(tmp_path)
    assert work.rated == held
    assert work.layers == ("layers" in json.dumps(files))  # explicit layers' work: --lr compared whole


def test_an_option_the_method_ignores_may_differ_when_a_run_continues(model_dirs, tiny_glue, tmp_path, capsys):
    """--lora-rank under --method adapter is unused (olft warns so): a folder made with it continues without
    it, keeping its config.json; under --method lora it is read, and a different rank is refused."""
    out = tmp_path / "run"
    base = ["run", "--model", str(model_dirs["bert"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--max-steps", "2",
            "-q", "--strategies", "final"]
    assert main([*base, "--out", str(out), "--lora-rank", "4"]) == 0
    assert main([*base, "--out", str(out), "--strategies", "final,full"]) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["method"]["lora_rank"] == 4
    assert _results(out)["method_config"]["lora_rank"] == 4  # results.json says what config.json says
    assert set(_results(out)["strategies"]) == {"final", "full"}
    lora = tmp_path / "lora"
    assert main([*base, "--out", str(lora), "--method", "lora", "--lora-rank", "4"]) == 0
    capsys.readouterr()
    assert main([*base, "--out", str(lora), "--method", "lora"]) == 2
    assert "method.lora_rank: 4 in the folder, 8 now" in capsys.readouterr().err


def test_selection_options_may_change_in_a_folder_that_never_selected(tmp_path):
    """`olft train --layers 2 --out F` then `olft run --selector probe --out F` was refused as "a
    different config (selection.selector: 'auto' in the folder, 'probe' now)" though nothing in F
    was selected; and `olft train --selector probe` wrote the selector it ignored into config.json."""
    from olft.config import RunConfig
    from olft.runfolder import RunFolder

    def cfg(selector: str, strategies: str) -> dict:
        c = RunConfig()
        c.selection.selector, c.strategies = selector, strategies
        return c.to_dict()

    new = tmp_path / "new"
    with RunFolder(new, cfg("probe", "layers=2"), selects=False) as f:  # olft train --selector probe
        f.start()
    assert json.loads((new / "config.json").read_text())["selection"]["selector"] == RunConfig().selection.selector

    def folder(name: str, **files: str):
        path = tmp_path / name
        (path / "pieces").mkdir(parents=True)
        (path / "config.json").write_text(json.dumps(cfg("auto", "layers=2")))
        for file, text in files.items():
            (path / file.replace("__", "/")).write_text(text)
        return path

    results = json.dumps({"strategies": {"layers=2": {}}, "strategy_names": ["layers=2"]})
    fixed = folder("fixed", **{"results.json": results, "pieces__strategy-layers=2.json": "{}"})
    with RunFolder(fixed, cfg("probe", "olft,layers=2")) as f:  # olft run --selector probe: nothing selected yet
        assert f.config["selection"]["selector"] == "probe"
    with RunFolder(fixed, cfg("exhaustive", "layers=2"), selects=False) as f:  # a later train keeps the folder's
        assert f.config["selection"]["selector"] == "auto"
    # Selection work in the folder: its options still must match.
    selected = json.dumps({"strategies": {}, "strategy_names": ["olft"], "selection": {"selected_layer": 1}})
    for path in (folder("candidate", **{"results.json": results, "pieces__candidate-1-4.json": "{}"}),
                 folder("selected", **{"results.json": selected})):
        with pytest.raises(OlftError, match="selection.selector: 'auto' in the folder, 'probe' now"):
            RunFolder(path, cfg("probe", "olft,layers=2"))


@pytest.mark.parametrize("sub, temp", [("pieces", ".strategy-final.tmp123.json"), ("checkpoints", ".final.tmp9.pt")])
def test_a_temp_file_a_killed_write_left_is_no_selection_work(tmp_path, sub, temp):
    """`.strategy-final.tmp123.json` in pieces/ or `.final.tmp9.pt` in checkpoints/ (a kill mid
    atomic write) is no finished work, so it does not make a folder that never selected refuse
    `olft run --strategies olft --selector probe` as a different config."""
    from olft.config import RunConfig
    from olft.runfolder import RunFolder

    def cfg(selector: str, strategies: str) -> dict:
        c = RunConfig()
        c.selection.selector, c.strategies = selector, strategies
        return c.to_dict()

    results = json.dumps({"strategies": {"final": {}}, "strategy_names": ["final"]})
    (tmp_path / sub).mkdir()
    (tmp_path / "config.json").write_text(json.dumps(cfg("auto", "final")))
    (tmp_path / "results.json").write_text(results)
    (tmp_path / sub / temp).write_text("{")
    with RunFolder(tmp_path, cfg("probe", "olft")) as f:
        assert f.config["selection"]["selector"] == "probe"


def test_the_interrupted_line_into_a_closed_pipe_is_dropped_not_raised(monkeypatch):
    """Killed as a group with its `| tee`, olft's SIGTERM arrives with stderr's reader gone: its
    last line cannot be written, and the exit code is still the signal's, not a traceback's 1."""
    from olft.errors import Terminated, interrupted

    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            raise ValueError("no descriptor")  # as a test's capture: nothing to point at os.devnull

    monkeypatch.setattr(sys, "stderr", Closed())
    assert interrupted(Terminated()) == 143 and interrupted(KeyboardInterrupt()) == 130
    assert interrupted(BrokenPipeError(32, "Broken pipe")) == 141


def test_fit_resumed_from_a_checkpoint_counts_the_earlier_runs_time(tmp_path):
    """A checkpoint carries the (wall, CPU) seconds spent up to it, so a resumed fit's time is the
    whole training's; one written before olft saved them gives seconds_before_resume None (its time
    then counts only the steps after it, and reports say so)."""
    import torch

    from olft.config import MethodConfig
    from olft.data import encode
    from olft.methods import apply_method
    from olft.train import FitResult, fit
    from tiny import frozen_stack

    stack, tok = frozen_stack("gpt2")
    texts = [("the movie was good",), ("a bad plot",), ("really fun",), ("dull story",)] * 4
    from olft.tasks import Example

    enc = encode(tok, [Example(t, i % 2) for i, t in enumerate(texts)], 16)
    applied = apply_method(stack, [1], MethodConfig(method="adapter"))
    params = list(applied.params.values()) + list(stack.head.parameters())
    path = tmp_path / "ck.pt"
    kw = dict(epochs=1, max_steps=6, lr=1e-3, batch_size=4, seed=0, frozen_below=1, quiet=True, checkpoint=path,
              checkpoint_every=3)
    first = fit(stack, params, enc, **{**kw, "max_steps": 6})
    assert first.resumed_at == 0 and first.seconds_before_resume == 0.0
    saved = torch.load(path, weights_only=False)
    assert saved["position"][0] == 3 and 0 < saved["spent"][0] <= first.seconds
    saved["spent"] = (1000.0, 900.0)  # as if the earlier run had been slow: the resumed fit adds exactly this
    torch.save(saved, path)
    again = fit(stack, params, enc, **kw)
    assert again.resumed_at == 3 and again.seconds_before_resume == 1000.0
    assert 1000.0 < again.seconds < 1000.0 + first.seconds + 60 and again.cpu_seconds > 900.0
    del saved["spent"]  # a checkpoint from an olft that did not save its time
    torch.save(saved, path)
    old = fit(stack, params, enc, **kw)
    assert isinstance(old, FitResult) and old.resumed_at == 3 and old.seconds_before_resume is None and old.seconds < 60
