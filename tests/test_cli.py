"""End to end through the `olft` command: artifacts, result keys, exact counts, bad input."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from olft.cli import main
from olft.layerspec import parse_candidates
from olft.select import unfinished_entry
from olft.verdicts import choice_caveat

FAST = ["--epochs", "1", "--selection-train-samples", "24", "--selection-eval-samples", "16", "-q"]
RESULT_KEYS = {"model", "task", "method", "selection", "strategies", "seed", "versions", "git_commit", "complete"}
STRATEGY_KEYS = {"layers", "metrics", "score", "train_seconds", "peft_params", "head_params", "total_params"}


@pytest.fixture(scope="module")
def llama_run(model_dirs, tiny_glue, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    code = main(["run", "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue), "--out", str(out), *FAST])
    assert code == 0
    return out


def test_run_folder_artifacts(llama_run):
    names = {p.name for p in llama_run.iterdir()}
    assert {"config.json", "results.json", "table.md", "layers.png", "weights"} <= names
    assert {p.name for p in (llama_run / "weights").iterdir()} == {"olft.safetensors", "final.safetensors", "full.safetensors"}


def test_results_json(llama_run):
    r = json.loads((llama_run / "results.json").read_text())
    assert RESULT_KEYS <= set(r) and r["complete"] is True
    assert set(r["strategies"]) == {"olft", "final", "full"}
    sel = r["selection"]
    assert sel["protocol"] == "train-holdout"
    assert [c["layer"] for c in sel["candidates"]] == [1, 2]  # middle third of 4 layers
    assert {"layer", "score", "seconds"} <= set(sel["candidates"][0])
    assert sel["selected_layer"] in (1, 2)
    for s in r["strategies"].values():
        assert STRATEGY_KEYS <= set(s)
        assert set(s["metrics"]) == {"validation"} and "accuracy" in s["metrics"]["validation"]
    # Houlsby, factor 16, hidden 32: 2 adapters x (32*2+2 + 2*32+32) = 324 per layer, head 32*2+2.
    assert r["strategies"]["olft"]["peft_params"] == 324
    assert r["strategies"]["final"]["peft_params"] == 324 and r["strategies"]["final"]["layers"] == [3]
    assert r["strategies"]["full"]["peft_params"] == 4 * 324 == r["all_layer_peft_params"]
    assert r["strategies"]["olft"]["head_params"] == 66
    assert r["strategies"]["olft"]["layers"] == [sel["selected_layer"]]


def test_saved_weights_hold_one_layer_and_head(llama_run):
    r = json.loads((llama_run / "results.json").read_text())
    w = load_file(str(llama_run / "weights" / "olft.safetensors"))
    layer = r["selection"]["selected_layer"]
    assert {k for k in w if not k.startswith("head.")} and all(
        k.startswith(f"layers.{layer}.") for k in w if not k.startswith("head.")
    )
    assert sum(v.numel() for k, v in w.items() if not k.startswith("head.")) == 324


def test_table_layout(llama_run):
    table = (llama_run / "table.md").read_text()
    assert "| olft |" in table and "| final |" in table and "| full |" in table
    assert "Table 2" in table and "param %" in table


def test_evaluate_reproduces_results(llama_run, capsys, monkeypatch):
    import olft.pipeline

    load_split = olft.pipeline.load_split

    def eval_splits_only(cfg, task, split):  # evaluate scores these: reading train costs time and its warnings
        assert split != "train", "evaluate read the train split"
        return load_split(cfg, task, split)

    monkeypatch.setattr(olft.pipeline, "load_split", eval_splits_only)
    assert main(["evaluate", "--run", str(llama_run), "-q"]) == 0
    out = capsys.readouterr().out
    assert "complete" in out
    sel = json.loads((llama_run / "results.json").read_text())["selection"]
    caveat = choice_caveat(sel)  # the headline's 'no signal' or tie (test_report checks its words)
    assert out.splitlines()[1] == f"  selection: layer {sel['selected_layer']} (selector {sel['selector']}{'; ' + caveat if caveat else ''})"
    assert out.splitlines()[-1] == "  learning rate 0.001 (every strategy)"
    for line in out.splitlines()[2:-1]:
        now, saved = line.split("accuracy=")[1].split(" (results.json: ")
        assert abs(float(now) - float(saved.rstrip(")"))) < 1e-9


def test_evaluate_names_a_finished_strategys_missing_weights_file(llama_run, tmp_path, capsys):
    """A finished strategy whose weights were left behind (a folder copied without weights/, as
    docs/runs' are) is said so, with its recorded score: not "not finished", which it is not."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(llama_run, copy)
    (copy / "weights" / "final.safetensors").unlink()
    assert main(["evaluate", "--run", str(copy), "-q"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((copy / "results.json").read_text())["strategies"]["final"]["metrics"]["validation"]["accuracy"]
    assert (f"  final: finished (accuracy {100 * saved:.1f} on validation in results.json), but its weights file "
            f"{copy / 'weights' / 'final.safetensors'} is missing, so it cannot be re-scored") in out, out
    assert "olft validation: " in out and "not finished" not in out


def test_evaluate_says_when_the_data_changed_since_the_run(llama_run, capsys, monkeypatch):
    """Re-scoring edited data is allowed (it is what evaluate is asked to do) but said: a score that moved
    because the labels changed must not read as the saved weights scoring differently."""
    from dataclasses import replace

    import olft.pipeline

    load_split = olft.pipeline.load_split

    def flipped(cfg, task, split):
        return [replace(ex, label=1 - ex.label) for ex in load_split(cfg, task, split)]

    assert main(["evaluate", "--run", str(llama_run), "-q"]) == 0
    assert "differ from those the run scored" not in capsys.readouterr().out
    monkeypatch.setattr(olft.pipeline, "load_split", flipped)
    assert main(["evaluate", "--run", str(llama_run), "-q"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("  note: the validation examples differ from those the run scored")


def test_train_and_select_subcommands(model_dirs, tiny_glue, tmp_path):
    base = ["--model", str(model_dirs["bert"]), "--task", "sst2", "--glue-dir", str(tiny_glue), *FAST]
    assert main(["train", "--layers", "0,2-3", "--out", str(tmp_path / "t"), "--method", "lora", *base]) == 0  # a range, as --candidates
    r = json.loads((tmp_path / "t" / "results.json").read_text())
    assert list(r["strategies"]) == ["layers=0+2+3"] and r["strategies"]["layers=0+2+3"]["layers"] == [0, 2, 3]
    assert main(["select", "--out", str(tmp_path / "s"), "--candidates", "all", *base]) == 0
    r = json.loads((tmp_path / "s" / "results.json").read_text())
    assert [c["layer"] for c in r["selection"]["candidates"]] == [0, 1, 2, 3]


def test_no_subcommand_drops_finished_results(llama_run, model_dirs, tiny_glue, tmp_path):
    """train, select and a narrower --strategies into a finished run folder keep every finished piece."""
    out = tmp_path / "r"
    shutil.copytree(llama_run, out)
    common = ["--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue), "--out", str(out), *FAST]
    before = json.loads((out / "results.json").read_text())
    pieces = {p.name: p.stat().st_mtime_ns for p in (out / "pieces").iterdir()}
    assert main(["train", "--layers", "0", *common]) == 0
    assert main(["select", *common]) == 0
    assert main(["run", "--strategies", "final", *common]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["strategy_names"][0] == "final"  # this run's first, then the rest
    assert list(r["strategies"]) == ["olft", "final", "full", "layers=0"]  # one order, whatever ran when
    for name in ("olft", "final", "full"):
        assert r["strategies"][name] == before["strategies"][name]
    assert r["selection"] == before["selection"] and r["status"] == "complete"
    assert all((out / "pieces" / name).stat().st_mtime_ns == mtime for name, mtime in pieces.items())  # none redone
    assert (out / "layers.png").is_file()
    table = (out / "table.md").read_text()
    assert all(f"| {name} |" in table for name in ("olft", "final", "full", "layers=0")) and "Selection" in table


def test_evaluate_reports_a_folder_that_never_finished(llama_run, tmp_path, capsys):
    out = tmp_path / "r"
    shutil.copytree(llama_run, out)
    r = json.loads((out / "results.json").read_text())
    (out / "results.json").write_text(json.dumps({**r, "status": "running", "complete": False}))
    assert main(["evaluate", "--run", str(out), "-q"]) == 0
    assert "INTERRUPTED" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize("recorded", ["unfinished", None])  # None: results.json from before olft recorded an unfinished one
def test_evaluate_lists_the_finished_candidates_of_an_interrupted_select(llama_run, tmp_path, capsys, recorded):
    """An `olft select` stopped after its candidates (and part of a retraining) finished: evaluate
    names them from pieces/ and prints the command that continues the folder."""
    out = tmp_path / "r"
    shutil.copytree(llama_run, out)
    shutil.rmtree(out / "weights")
    for piece in (out / "pieces").glob("strategy-*.json"):
        piece.unlink()
    (out / "pieces" / "selection.json").unlink(missing_ok=True)
    (out / "pieces" / "probe.json").unlink(missing_ok=True)  # auto's probe: this select trains its candidates
    for piece in (out / "pieces").glob("candidate-*.json"):
        piece.unlink()
    r = json.loads((out / "results.json").read_text())
    spec = json.loads((out / "config.json").read_text())["selection"]["candidates"]
    layers, steps = parse_candidates(spec, r["num_layers"]), 15
    for layer, at in [*((layer, steps) for layer in layers), (layers[0], 2 * steps)]:  # every candidate, one retrained
        (out / "pieces" / f"candidate-{layer}-{at}.json").write_text(json.dumps({"layer": layer, "steps": at}))
    (out / "pieces" / f"candidate-{layers[0]}-{2 * steps}.json").write_text(json.dumps({"layer": layers[0], "steps": 2 * steps,
                                                                                        "score": 0.625}))  # fmt: skip
    pieces = [json.loads(p.read_text()) for p in sorted((out / "pieces").glob("candidate-*.json"))]
    sel = unfinished_entry(pieces, json.loads((out / "config.json").read_text())["selection"]) if recorded else None
    (out / "results.json").write_text(json.dumps({**r, "status": "interrupted", "complete": False, "selection": sel,
                                                  "strategies": {}, "strategy_names": []}))  # fmt: skip
    assert main(["evaluate", "--run", str(out), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run {out}: INCOMPLETE (interrupted)", lines
    span = f"{layers[0]}-{layers[-1]}" if len(layers) > 2 else ",".join(map(str, layers))
    assert lines[1] == (f"  selection: not finished; candidates finished at {steps} steps: layers {span} ({len(layers)} of "
                        f"{len(layers)}); a longer round finished at {2 * steps} steps: layer {layers[0]} "
                        f"({r['metric']} x100: layer {layers[0]} 62.5)"), lines
    assert lines[2] == f"  continue it (finished pieces are kept): olft select --config {out}/config.json --out {out}", lines


@pytest.mark.parametrize("recorded", ["unfinished", None])  # None: results.json not rewritten after the probe (killed)
def test_evaluate_says_what_the_probe_did_when_a_selection_stopped_after_it(llama_run, tmp_path, capsys, recorded):
    """probe-halving stopped after its probe stage, before any finalist finished: evaluate says, in
    table.md's words, that the probe scored every candidate (probe scores, not the task metric) and
    which layers it passed on to training, then the command that continues it; once a finalist has
    finished, its score follows, counted against the finalists."""
    from olft.select import Candidate, probe_piece
    from olft.selectionmd import unfinished_lines

    out = tmp_path / "r"
    shutil.copytree(llama_run, out)
    shutil.rmtree(out / "weights")
    for piece in (out / "pieces").glob("*.json"):
        piece.unlink()
    config = json.loads((out / "config.json").read_text())
    config["selection"]["selector"] = "probe-halving"
    (out / "config.json").write_text(json.dumps(config))
    r = json.loads((out / "results.json").read_text())
    layers = parse_candidates(config["selection"]["candidates"], r["num_layers"])
    probed = [Candidate(layer, -0.5 - layer / 100, 0.1, {"loss": 0.5 + layer / 100}, steps=0, example_losses=[0.5])
              for layer in layers]  # fmt: skip
    probe = probe_piece(probed, 0.4, 0.4, layers, layers[:2])
    (out / "pieces" / "probe.json").write_text(json.dumps(probe))
    sel = unfinished_entry([], config["selection"], probe) if recorded else None
    (out / "results.json").write_text(json.dumps({**r, "status": "interrupted", "complete": False, "selection": sel,
                                                  "strategies": {}, "strategy_names": []}))  # fmt: skip
    assert main(["evaluate", "--run", str(out), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    scores = "; ".join(f"layer {layer} {-50 - layer:.1f}" for layer in layers)
    said = (f"The probe scored {len(layers)} candidates (probe score (-held-out loss x100), probe scores, not the task "
            f"metric): {scores}. It passed layers {layers[0]}, {layers[1]} on to training")
    assert lines[1] == f"  selection: not finished. {said}; no trained candidate finished yet", lines
    table = unfinished_lines(unfinished_entry([], config["selection"], probe), "accuracy", "c")[1]
    assert f"{said}; no trained candidate finished yet." in table  # table.md's words
    assert lines[2] == f"  continue it (finished pieces are kept): olft select --config {out}/config.json --out {out}", lines

    (out / "pieces" / f"candidate-{layers[1]}-4.json").write_text(json.dumps({"layer": layers[1], "steps": 4, "score": 0.5}))
    assert main(["evaluate", "--run", str(out), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (f"  selection: not finished. {said}; candidates finished at 4 steps: layer {layers[1]} (1 of 2) "
                        f"({r['metric']} x100: layer {layers[1]} 50.0)"), lines


def test_paper_protocol_is_recorded(model_dirs, tiny_glue, tmp_path):
    args = ["run", "--model", str(model_dirs["gpt2"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--strategies", "olft",
            "--selection-data", "validation", "--out", str(tmp_path / "p"), *FAST]
    assert main(args) == 0
    r = json.loads((tmp_path / "p" / "results.json").read_text())
    assert r["selection"]["protocol"] == "validation"
    assert r["selection"]["score_examples"] == r["eval_examples"]["validation"]
    # The split that chose OLFT's layer is the one its score is reported on: marked optimistic.
    assert r["optimistic_scores"] == {"olft": ["validation"]}
    olft_row = next(line for line in (tmp_path / "p" / "table.md").read_text().splitlines() if line.startswith("| olft |"))
    assert olft_row.endswith(" ‡ |"), olft_row


def test_max_eval_samples_help_says_the_subset_follows_the_seed():
    from dataclasses import fields

    from olft.config import DataConfig

    text = next(f.metadata["help"] for f in fields(DataConfig) if f.name == "max_eval_samples")
    assert "drawn with --seed, so runs with different seeds score different examples" in text


@pytest.mark.parametrize("argv, warning", [
    (["--lr", "1e-3", "--train.lr", "2e-3"], "--lr 1e-3, --train.lr 2e-3: one option set 2 times; the last, --train.lr 2e-3, is used."),
    (["--method", "lora", "--method=adapter"], "--method lora, --method adapter: one option set 2 times; the last, --method adapter, is used."),
    (["--cache", "--no-train.cache"], "--cache, --no-train.cache: one option set 2 times; the last, --no-train.cache, is used."),
    (["--seed", "1", "--seed", "1", "--lr", "1e-3"], None),  # the same value twice changes nothing
])
def test_an_option_set_twice_to_different_values_is_warned_of(argv, warning):
    from olft.cli import parse

    args = parse(["run", "--model", "minilm-l6", "--task", "rte", *argv])
    assert args.warnings == ([warning] if warning else [])


def test_info(model_dirs, capsys):
    assert main(["info", "--model", str(model_dirs["mistral"])]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "mistral" and info["num_layers"] == 4 and info["middle_bucket"] == [1, 2]
    assert info["peft_params_one_layer"] == 324 and info["peft_params_all_layers"] == 4 * 324


def test_adapter_on_a_model_mixing_dense_and_expert_layers(tiny_glue, tmp_path, capsys):
    """Qwen2-MoE with decoder_sparse_step=2 (layer 0 dense, layer 1 experts): `info` and an adapter
    run work; they crashed on layer 0's mlp.down_proj missing from the expert layers."""
    from transformers import AutoModel

    from tiny import make_tokenizer, mixed_moe_config

    folder = tmp_path / "qwen2_moe_mixed"
    AutoModel.from_config(mixed_moe_config("qwen2_moe_sparse_step")).save_pretrained(folder)
    make_tokenizer(False).save_pretrained(folder)
    capsys.readouterr()
    assert main(["info", "--model", str(folder), "--method", "adapter"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["adapter_after"] == ["layers.2.self_attn.o_proj", "layers.2.mlp"]
    assert info["peft_params_all_layers"] == 4 * info["peft_params_one_layer"] > 0
    out = tmp_path / "run"
    assert main(["run", "--model", str(folder), "--task", "rte", "--glue-dir", str(tiny_glue), "--out", str(out),
                 "--method", "adapter", "--strategies", "olft", "--max-train-samples", "48", *FAST]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["complete"] is True and r["strategies"]["olft"]["peft_params"] == info["peft_params_one_layer"]


def test_pair_task_on_a_model_with_one_segment_embedding(tiny_glue, tmp_path):
    """ELECTRA with type_vocab_size=1 and a BERT-style tokenizer (segment ids 1 on a pair's second
    text): the run passes no segment ids (the model reads segment 0, its only one); it crashed with
    IndexError building the training cache. Two segments still get them (test_families)."""
    from transformers import AutoModel

    from tiny import ARCHITECTURES

    config, tok = ARCHITECTURES["electra"]()
    config.type_vocab_size = 1
    folder = tmp_path / "electra_one_segment"
    AutoModel.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert tok("yes", "no")["token_type_ids"] == [0, 0, 0, 1, 1]
    out = tmp_path / "run"
    assert main(["train", "--layers", "1", "--model", str(folder), "--task", "rte", "--glue-dir", str(tiny_glue),
                 "--out", str(out), "--max-train-samples", "32", *FAST]) == 0  # fmt: skip
    r = json.loads((out / "results.json").read_text())
    assert r["complete"] is True and r["model_inputs"] == ["input_ids", "attention_mask"]


def test_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "olft.cli", "run", "--help"], capture_output=True, text=True).stdout
    for flag in ("--model", "--task", "--glue-dir", "--method", "--strategies", "--out", "--epochs", "--max-steps", "--lr",
                 "--batch-size", "--max-length", "--seed", "--candidates", "--selection-data", "--reduction-factor",
                 "--lora-rank", "--max-train-samples", "--max-eval-samples", "--selection-train-samples"):
        assert flag in out, flag
    usage = out.split("\n\n")[0]  # a short usage line, not argparse's ~50 dotted options
    assert usage.startswith("usage: olft run [--config FILE] [--model MODEL] [--task TASK]") and usage.count("[") < 10


CHOICES = {"--method.method": "{adapter,lora,prefix}", "--selection.selector": "{exhaustive,halving,probe,gradient,probe-halving,auto}",
           "--model.pooling": "{auto,cls,mean,last}", "--train.report_to": "{tensorboard,wandb,mlflow}"}


@pytest.mark.parametrize("command", ["run", "train", "info"])
def test_help_shows_the_choices_of_an_option(command, monkeypatch):
    from olft.cli import build_parser

    monkeypatch.setenv("COLUMNS", "1000")  # argparse breaks a long choice list at its hyphens

    sub = build_parser()._subcommands_action._name_parser_map[command]
    text = " ".join(sub.format_help().split())  # unwrapped: the formatter breaks lines by terminal width
    assert "lambda" not in text and "<function" not in text
    for flag, choices in CHOICES.items():
        if flag.startswith("--selection") and command == "train":  # train selects no layer: not listed
            assert flag not in text, flag
        elif command != "info" or flag.startswith(("--method", "--model")):
            assert f"{flag} {choices}" in text and f"(type: {choices}, default:" in text, flag


@pytest.mark.parametrize("flag, value, allowed", [("--method", "bottleneck", "'adapter', 'lora', 'prefix'"),
                                                  ("--selector", "best", "'probe'"), ("--pooling", "max", "'mean'"),
                                                  ("--report-to", "csv", "'tensorboard'")])
def test_bad_choice_names_the_value_and_the_allowed_ones(capsys, flag, value, allowed):
    assert main(["run", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("olft: error:") and err.count("\n") == 1, err
    assert "expects one of " in err and f"got '{value}'" in err and allowed.replace("'", "") in err, err


# -- bad input: exit code 2, one clear line, no results folder passed off as complete ------------------


def _fails(capsys, args, phrase, out=None):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("olft: error:") and phrase.lower() in err.lower(), err
    assert "Traceback" not in err
    if out is not None and (out / "results.json").exists():
        assert json.loads((out / "results.json").read_text())["complete"] is False


def test_bad_inputs(model_dirs, tiny_glue, tmp_path, capsys):
    m = ["--model", str(model_dirs["llama"])]
    g = ["--glue-dir", str(tiny_glue)]
    out = tmp_path / "o"
    o = ["--out", str(out)]
    _fails(capsys, ["run", *m, "--task", "nosuchtask", *g, *o], "unknown task")
    _fails(capsys, ["run", "--model", str(tmp_path / "nope"), "--task", "rte", *g, *o], "does not exist")
    _fails(capsys, ["run", *m, "--task", "rte", "--glue-dir", str(tmp_path / "noglue"), *o], "--glue-dir", out)
    _fails(capsys, ["run", *m, "--task", "mrpc", *g, *o], "not found", out)
    _fails(capsys, ["train", *m, "--task", "rte", *g, "--layers", "7", *o, *FAST], "out of range", out)
    _fails(capsys, ["train", *m, "--task", "rte", *g, "--layers", "-1", *o, *FAST], "layer -1 in '--layers -1' is out of range", out)
    _fails(capsys, ["run", *m, "--task", "rte", *g, "--candidates", "2-9", *o, *FAST], "out of range", out)
    _fails(capsys, ["run", *m, "--task", "rte", *g, "--batch-size", "0", *o], "positive")
    _fails(capsys, ["run", *m, "--task", "rte", *g, "--strategies", "best", *o, *FAST], "unknown strategy", out)
    no_config = tmp_path / "empty_model"
    no_config.mkdir()
    _fails(capsys, ["run", "--model", str(no_config), "--task", "rte", *g, *o], "config.json")
    a_file = tmp_path / "f"
    a_file.write_text("x")
    _fails(capsys, ["run", *m, "--task", "rte", *g, "--out", str(a_file)], "is a file")


def test_bad_rows_and_labels(model_dirs, tmp_path, capsys):
    glue = tmp_path / "glue" / "RTE"
    glue.mkdir(parents=True)
    (glue / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    m = ["--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tmp_path / "glue"), "--out", str(tmp_path / "o")]
    (glue / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    _fails(capsys, ["run", *m], "maybe")
    (glue / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\n")
    _fails(capsys, ["run", *m], "line")
    (glue / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    _fails(capsys, ["run", *m], "empty")


def test_unknown_family(tmp_path, capsys):
    from transformers import AutoModel, T5Config

    folder = tmp_path / "t5"
    AutoModel.from_config(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=32, d_kv=8)).save_pretrained(folder)
    capsys.readouterr()  # the save's progress bar
    _fails(capsys, ["info", "--model", str(folder)], "encoder-decoder model")
    # A T5 encoder saved alone reloads as T5Model with is_encoder_decoder off: still named for what it is.
    from transformers import T5EncoderModel

    T5EncoderModel(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=32, d_kv=8)).save_pretrained(
        tmp_path / "t5enc")
    capsys.readouterr()  # the save's progress bar
    _fails(capsys, ["info", "--model", str(tmp_path / "t5enc")],
           "encoder-decoder model (the folder was saved as T5EncoderModel; transformers loads it as T5Model)")
    # A state-space model has no attention at all: named as no transformer, not as a discovery miss.
    from transformers import MambaConfig

    from tiny import make_tokenizer

    AutoModel.from_config(MambaConfig(hidden_size=16, num_hidden_layers=2, vocab_size=32, state_size=4)).save_pretrained(
        tmp_path / "mamba")
    make_tokenizer(False).save_pretrained(tmp_path / "mamba")  # as a real checkpoint has (else refused for lacking one)
    capsys.readouterr()
    assert main(["info", "--model", str(tmp_path / "mamba")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("olft: error: MambaBlock, the repeated block of this mamba model, has no attention module: "
                          "olft tunes transformer layers"), err  # the eager-attention fallback is no news before it


@pytest.mark.parametrize("extra", [["--method", "prefix"], ["--method", "prefix", "--prefix-reparam", "--prefix-hidden", "16"], ["--method", "lora"]])
def test_every_method_runs_saves_and_reloads(model_dirs, tiny_glue, tmp_path, capsys, extra):
    out = tmp_path / "m"
    args = ["run", "--model", str(model_dirs["mistral"]), "--task", "rte", "--glue-dir", str(tiny_glue), "--out", str(out),
            "--strategies", "final,layers=1", *extra, *FAST]
    assert main(args) == 0
    r = json.loads((out / "results.json").read_text())
    entry = r["strategies"]["layers=1"]
    if extra[1] == "prefix":
        assert entry["peft_params"] == 2 * 5 * 2 * 8  # 5 positions x 2 kv heads x head_dim 8, keys and values
        assert (entry["train_only_params"] > 0) == ("--prefix-reparam" in extra)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "-q"]) == 0
    for line in capsys.readouterr().out.splitlines()[1:-1]:  # (the last names the learning rate)
        now, saved = line.split("accuracy=")[1].split(" (results.json: ")
        assert abs(float(now) - float(saved.rstrip(")"))) < 1e-9


# -- the parser: generated from the config dataclasses; config files; did-you-mean ------------------


def test_flags_short_and_grouped_names():
    from olft.cli import parse

    a = parse(["run", "--model", "m", "--method=lora", "--task", "sst2", "--no-cache", "--prefix-reparam", "--train.lr", "0.5",
               "--max-train-samples", "7", "--strategies", "final", "--out", "o"])
    cfg = a.cfg
    assert (cfg.model.model, cfg.method.method, cfg.data.task) == ("m", "lora", "sst2")
    assert cfg.train.cache is False and cfg.method.prefix_reparam is True and cfg.train.lr == 0.5
    assert cfg.data.max_train_samples == 7 and cfg.strategies == "final" and cfg.out == "o"
    assert parse(["run"]).cfg.train.cache is True and parse(["run"]).cfg.data.max_train_samples is None


def test_config_file_and_flags_override_it(tmp_path):
    from olft.cli import parse

    yml = tmp_path / "run.yaml"
    yml.write_text("model:\n  model: m\ndata:\n  task: mrpc\n  max_length: 64\ntrain:\n  lr: 0.25\n  cache: false\nstrategies: olft\n")
    cfg = parse(["run", "--lr", "0.1", "--config", str(yml)]).cfg  # a flag before --config still wins
    assert (cfg.model.model, cfg.data.task, cfg.data.max_length, cfg.train.lr) == ("m", "mrpc", 64, 0.1)
    assert cfg.train.cache is False and cfg.strategies == "olft"
    assert parse(["run", "--config", str(yml), "--cache"]).cfg.train.cache is True


def test_print_config_output_is_a_config(tmp_path, capsys):
    from olft.cli import parse

    assert _exit_code(["run", "--task", "sst2", "--lora-rank", "4", "--print_config"]) == 0
    path = tmp_path / "printed.yaml"
    path.write_text(capsys.readouterr().out)
    cfg = parse(["run", "--config", str(path)]).cfg
    assert cfg.data.task == "sst2" and cfg.method.lora_rank == 4
    # A value a run refuses is refused here too (it printed a config that no run reads); a template
    # without a required option still prints.
    assert _exit_code(["run", "--lr", "-1", "--print_config"]) == 2
    assert "--lr must be a positive number, got -1.0" in capsys.readouterr().err
    assert _exit_code(["train", "--print_config"]) == 0 and "layers: null" in capsys.readouterr().out
    # ... and the values given beside it are checked all the same (a stand-in takes --layers' place)
    assert _exit_code(["train", "--lr", "-1", "--print_config"]) == 2
    assert "--lr must be a positive number, got -1.0" in capsys.readouterr().err


def _exit_code(args) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # --help and --print_config exit from the parser
        return exc.code


def test_config_file_typos_exit_2(tmp_path, capsys):
    cases = [("data:\n  taks: rte\n", "Did you mean 'data.task'"), ("trian:\n  lr: 1\n", "unknown group 'trian' for `olft run`. Did you mean the group 'train'?"),
             ("train:\n  lr: fast\n", "lr"), ("- a\n- b\n", "mapping"), ("a: [\n", "not valid YAML"),
             ("", "is empty: write the options"), ("# nothing yet\n", "is empty"),
             ("lr: 0.001\n", "unknown option 'lr' for `olft run`. Did you mean 'train.lr'?"),
             ("train: 5\n", "train is a group of options, written as a mapping (train: then indented lines")]
    for text, phrase in cases:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        _fails(capsys, ["run", "--config", str(path)], phrase)
    _fails(capsys, ["run", "--config", str(tmp_path / "none.yaml")], "not found")
    _fails(capsys, ["run", "--tsak", "rte"], "Did you mean --task")
    _fails(capsys, ["run", "--method", "bitfit"], "--method expects one of adapter, lora, prefix, got 'bitfit'. See")
    # a value outside the choices in a file reads as from a flag or Python (jsonargparse's "Parser key" wording is gone)
    path.write_text("selection:\n  selector: probe-halvin\n")
    _fails(capsys, ["run", "--config", str(path)], f"{path}: selection.selector expects one of exhaustive, halving, probe, "
           "gradient, probe-halving, auto, got 'probe-halvin'. Did you mean 'probe-halving'? See `olft run --help`.")
    path.write_text("method: lora\n")  # the example names one of the group's own options
    _fails(capsys, ["run", "--config", str(path)], "(method: then indented lines such as `  method: lora`), not 'lora'.")


@pytest.mark.parametrize(("text", "expected"), [
    ("train:\n  learning_rate: 0.1\n", "unknown option 'train.learning_rate' for `olft run`. Did you mean 'train.lr' "
     "(olft's name for what transformers or PEFT call learning_rate)?"),  # was: Did you mean 'train.warmup_ratio'?
    ("train:\n  num_train_epochs: 2\n", "Did you mean 'train.epochs'"),
    ("train:\n  per_device_train_batch_size: 8\n", "Did you mean 'train.batch_size'"),
    ("method:\n  r: 4\n", "Did you mean 'method.lora_rank'"),
    ("learning_rate: 0.1\n", "Did you mean 'train.lr'"),  # in no group at all
])
def test_a_transformers_or_peft_name_is_answered_with_olfts(tmp_path, capsys, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    _fails(capsys, ["run", "--config", str(path)], expected)


def test_every_other_name_points_at_an_option_olft_has():
    from olft.cliconfig import _known_keys
    from olft.config import OTHER_NAMES

    assert set(OTHER_NAMES.values()) <= _known_keys("run") and not set(OTHER_NAMES) & {k.split(".")[-1] for k in _known_keys("run")}


def test_a_transformers_flag_is_answered_with_olfts(capsys):
    _fails(capsys, ["run", "--learning-rate", "0.1"], "unknown option --learning-rate for `olft run`. Did you mean --lr")
    _fails(capsys, ["train", "--num-train-epochs", "2", "--layers", "1"],
           "Did you mean --epochs (olft's name for what transformers or PEFT call num_train_epochs)?")
    # --method and --model are rewritten to --method.method and --model.model (cliconfig._short_flags):
    # answered with the short flag one types, not a near spelling (was: Did you mean --dtype?) or nothing.
    _fails(capsys, ["run", "--peft_type", "lora"], "Did you mean --method (olft's name for what transformers or PEFT call peft_type)?")
    _fails(capsys, ["run", "--model_name_or_path", "x"], "Did you mean --model (olft's name")


def test_a_json_config_is_held_to_json(tmp_path, capsys):
    """A .json file is parsed as JSON: YAML would take a trailing comma or a repeated key silently."""
    from olft.cli import parse

    path = tmp_path / "c.json"
    for text, phrase in [('{"train": {"lr": 0.001,}}', "is not valid JSON (Expecting property name"),
                         ("{'train': {'lr': 0.001}}", "is not valid JSON"),
                         ('{"train": {"lr": 0.001, "lr": 0.002}}', "'lr' is given twice in one object")]:
        path.write_text(text)
        # A file let through would fail later, on the missing model, with another message.
        _fails(capsys, ["run", "--config", str(path), "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")], phrase)
    path.write_text('{"train": {"lr": 0.002}, "data": {"task": "rte"}}')
    cfg = parse(["run", "--config", str(path)]).cfg
    assert cfg.train.lr == 0.002 and cfg.data.task == "rte"


def test_a_bad_value_names_the_config_file_that_set_it(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    for text, phrase in [("train:\n  lr: -1\n", f"{path}: train.lr must be a positive number"),
                         ("train:\n  epochs: abc\n", f"{path}: train.epochs expects a number, got abc"),
                         ("train:\n  batch_size: 2.5\n", f"{path}: train.batch_size expects a whole number"),
                         ("train:\n  lr: .nan\n", f"{path}: train.lr must be a positive number, got nan"),
                         ("train:\n  lr: .inf\n", f"{path}: train.lr must be a positive number, got inf"),
                         ("train:\n  strategy_lr: {olft: -3}\n", f"{path}: train.strategy_lr: 'olft=-3' needs a positive number")]:
        path.write_text(text)
        _fails(capsys, ["run", "--config", str(path), "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")], phrase)
    path.write_text("train:\n  lr: -1\n")
    _fails(capsys, ["run", "--config", str(path), "--lr", "-2"], "error: --lr must be a positive number, got -2.0")  # the flag's


def test_numbers_read_alike_from_a_flag_a_file_and_python(tmp_path, capsys, model_dirs):
    """A whole number written as 1e3 or 10.0 was taken from Python but refused from a flag or a file
    ("expects a whole number, got 1000.0"); --lr nan was "expects a number" on the command line but
    "must be a positive number" from a file. A seed past torch's range (2**64) passed every check and
    crashed when the final tuning began, leaving a folder that refused a valid seed."""
    from olft import RunConfig
    from olft.cli import parse
    from olft.errors import OlftError

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_steps: 1e3\n  batch_size: 1.0e1\nstrategies: [olft, final]\n")
    for args in (["--max-steps", "1e3", "--batch-size", "10.0"], ["--config", str(path)]):
        cfg = parse(["run", *args]).cfg
        assert (cfg.train.max_steps, cfg.train.batch_size) == (1000, 10)
        assert type(cfg.train.max_steps) is int and type(cfg.train.batch_size) is int
    assert parse(["run", "--config", str(path)]).cfg.strategies == "olft,final"
    assert parse(["run", "--max-steps", "null"]).cfg.train.max_steps is None
    none, out = str(tmp_path / "none"), ["--out", str(tmp_path / "o")]
    for args, phrase in [(["--max-steps", "2.5"], "error: --max-steps expects a whole number, got 2.5."),
                         (["--lr", "nan"], "error: --lr must be a positive number, got nan."),
                         (["--seed", str(2**70)], f"error: --seed must be a whole number from 0 to {2**32 - 1}"),
                         (["--seed", "-1"], "error: --seed must be a whole number from 0"),
                         (["--seed", "99999999999999999999"], "got 99999999999999999999."),  # as typed, not 1e20
                         (["--strategies", "final,final"], "error: --strategies gives final twice (final,final)"),
                         # layers are read as parse_strategies reads them, before the model is
                         (["--strategies", "layers=1+2,layers=2+1"],
                          "error: --strategies gives layers=1+2 twice (layers=1+2,layers=2+1): layers=1+2 and layers=2+1 are one"),
                         (["--strategies", "layers=1-3,LAYERS=3+1+2"], "gives layers=1+2+3 twice")]:
        _fails(capsys, ["run", "--model", none, *out, *args], phrase)
    model = str(model_dirs["llama"])  # strategies are read against the model's layer count, before data loads
    for args, phrase in [(["--strategies", "olft,final,olft"], "error: --strategies gives olft twice (olft,final,olft)"),
                         (["--strategies", "full,all"], "error: --strategies gives full twice (full,all): full and all are one"),
                         # from the model's config, before the data (here a GLUE folder that is not there)
                         (["--reduction-factor", "64", "--glue-dir", none], "--reduction-factor 64 leaves the 32-wide")]:
        _fails(capsys, ["run", "--model", model, *out, *args], phrase)
    for text, phrase in [("train:\n  max_steps: 2.5\n", "train.max_steps expects a whole number, got 2.5."),
                         ("train:\n  seed: 12345678901234567890123\n", "train.seed must be a whole number from 0"),
                         ("strategies: [1, 2]\n", "strategies expects names joined by ','"),
                         ("strategies: [final, final]\n", "strategies gives final twice (final,final)"),
                         ("strategies: [layers=2+1, layers=1+2]\n", "strategies gives layers=1+2 twice (layers=2+1,layers=1+2)")]:
        path.write_text(text)
        _fails(capsys, ["run", "--config", str(path), "--model", none, *out], f"error: {path}: {phrase}")
    with pytest.raises(OlftError, match="train.seed must be a whole number from 0"):
        RunConfig.from_dict({"train": {"seed": 2**70}})
    with pytest.raises(OlftError, match=re.escape("strategies gives final twice (final,final)")):
        RunConfig(strategies=["final", "final"])
    assert RunConfig.from_dict({"data": {"text_columns": "a, b"}}).data.text_columns == "a,b"
    for typed in ("a,", ",b", "a, ,b"):  # a column left out while typing: refused where the config is made
        _fails(capsys, ["run", "--model", none, *out, "--text-columns", typed],
               f"error: --text-columns has an empty column name ({typed!r})")
    assert not (tmp_path / "o").exists()


def test_a_bad_value_is_named_as_it_was_given(tmp_path, capsys):
    """A flag's bad value names the flag as typed, a config file's the file and key, a Python
    caller's the key: range, type and choice errors alike (a flag's range error used to name the
    flag and its type error the key; `--lr nan` was "expects a number", a file's .nan "must be positive")."""
    from olft import RunConfig, TrainConfig
    from olft.errors import OlftError

    none, out = str(tmp_path / "none"), ["--out", str(tmp_path / "o")]
    for args, phrase in [(["--lr", "nan"], "error: --lr must be a positive number, got nan."),
                         (["--train.lr=-inf"], "error: --train.lr must be a positive number, got -inf."),
                         (["--train.lr=-1"], "error: --train.lr must be a positive number, got -1.0."),
                         (["--seed", "x"], "error: --seed expects a whole number, got x."),
                         (["--selector", "probe-halvin"], "error: --selector expects one of"),
                         (["--warmup-ratio", "2"], "error: --warmup-ratio must be in [0, 1), got 2.0.")]:
        _fails(capsys, ["run", "--model", none, *out, *args], phrase)
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  warmup_ratio: 2\n")
    _fails(capsys, ["run", "--config", str(path), "--model", none, *out], f"error: {path}: train.warmup_ratio must be in [0, 1)")
    for kwargs, phrase in [({"lr": -1}, "train.lr must be a positive number, got -1"), ({"seed": "x"}, "train.seed expects a whole"),
                           ({"strategy_lr": "olft=0"}, "train.strategy_lr: 'olft=0' needs a positive number")]:
        with pytest.raises(OlftError, match=re.escape(phrase)):
            RunConfig(train=TrainConfig(**kwargs))


def test_a_float_beyond_float32_is_refused_naming_the_flag_and_the_limit(tmp_path, capsys):
    """The review's --lr 1e40 was a traceback from the optimizer ("value cannot be converted to type
    float without overflow"); each float option that reaches the optimizer is refused at parse time,
    as nan and -1 are, by flag and limit."""
    from olft.cli import parse

    none, out = str(tmp_path / "none"), tmp_path / "o"
    for args, phrase in [(["--lr", "1e40"], "--lr must be at most 3.403e+38 (the largest float32"),
                         (["--strategy-lr", "final=1e39"], "--strategy-lr: 'final=1e39': a rate must be at most 3.403e+38"),
                         (["--weight-decay", "1e39"], "--weight-decay must be at most 3.403e+38"),
                         (["--max-grad-norm", "1e39"], "--max-grad-norm must be at most 3.403e+38"),
                         (["--weight-decay", "-1"], "--weight-decay must be 0 or a positive number, got -1.0"),
                         (["--max-grad-norm", "-1"], "--max-grad-norm must be 0 or a positive number, got -1.0")]:
        _fails(capsys, ["train", "--layers", "1", "--model", none, "--out", str(out), *args], phrase)
    cfg = parse(["run", "--lr", "3e38", "--weight-decay", "0", "--max-grad-norm", "0"]).cfg  # the limit itself, and 0: off
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.max_grad_norm) == (3e38, 0, 0)


def test_strategy_lr_names_read_as_strategies_reads_them_and_entries_kept_as_written(tmp_path):
    """One reader of --strategy-lr (`config.strategy_lr_entries`): OLFT and all are olft and full,
    as in --strategies; a dropped entry is quoted as the file wrote it; entries joined by ';' are
    named as the mistake."""
    from olft.cli import parse
    from olft.config import parse_strategy_lr, strategy_lr_entries, strategy_name
    from olft.errors import OlftError

    assert [strategy_name(e) for e in (" OLFT", "All", "layers=3+1", "final")] == ["olft", "full", "layers=1+3", "final"]
    assert strategy_lr_entries("ALL=3e-3, Final=1e-3") == {"full": "ALL=3e-3", "final": "Final=1e-3"}
    assert parse_strategy_lr("ALL=3e-3, Final=1e-3") == {"full": 3e-3, "final": 1e-3}
    with pytest.raises(OlftError, match=r"full is given twice in 'all=1,full=2'"):
        parse_strategy_lr("all=1,full=2")
    with pytest.raises(OlftError, match=r"'olft=1e-3;final=2e-3' needs a positive number after '=', e.g. olft=3e-4; "
                                        r"separate entries with ','"):
        parse_strategy_lr("olft=1e-3;final=2e-3")
    with pytest.raises(OlftError, match=r"'olft=x' needs a positive number after '=', e.g. olft=3e-4\.$"):
        parse_strategy_lr("olft=x")
    path = tmp_path / "rates.yaml"
    path.write_text('train:\n  strategy_lr: "ALL=3e-3, Final=1e-3"\n')
    assert parse(["run", "--config", str(path), "--strategy-lr", "full=2e-3"]).warnings == [
        f"--strategy-lr full=2e-3 replaces {path}'s strategy_lr (ALL=3e-3,Final=1e-3) whole, so final now trains at "
        "--lr; to keep it, pass --strategy-lr full=2e-3,Final=1e-3."]
    # What config.json records is the entries read: stripped, empty ones dropped, from a flag and from Python
    from olft.config import RunConfig

    assert parse(["run", "--strategy-lr", "final=1e-3,,"]).cfg.train.strategy_lr == "final=1e-3"
    assert RunConfig.from_dict({"train": {"strategy_lr": " olft=1e-3 , ,final=2e-3,"}}).to_dict()["train"]["strategy_lr"] == \
        "olft=1e-3,final=2e-3"
    assert parse(["run", "--strategy-lr", " , "]).cfg.train.strategy_lr is None


def test_a_data_file_given_makes_the_data_source_file(tmp_path):
    """--train-file without --data-source trained and scored on GLUE while config.json named the
    file: a data file given now makes the source file (left out, it is glue); an explicit
    --data-source glue or datasets beside data options draws a warning naming what reads them."""
    from olft.cli import parse
    from olft.config import DataConfig, RunConfig, ignored_options

    assert parse(["run", "--task", "sst2", "--train-file", "a.csv", "--validation-file", "b.csv"]).cfg.data.data_source == "file"
    assert parse(["run", "--task", "sst2", "--validation-file", "b.csv"]).cfg.data.data_source == "file"
    assert parse(["run", "--task", "sst2"]).cfg.data.data_source == "glue" == RunConfig().data.data_source
    assert DataConfig(train_file="a.csv").data_source == "file" and DataConfig(train_file="a.csv", data_source="datasets").data_source == "datasets"
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  train_file: a.csv\n  validation_file: b.csv\n")
    assert parse(["run", "--config", str(path)]).cfg.data.data_source == "file"
    cfg = parse(["run", "--task", "sst2", "--data-source", "glue", "--train-file", "a.csv", "--label-column", "y"]).cfg
    assert ignored_options(cfg, {"data.train_file", "data.label_column", "data.data_source"}) == [
        "--label-column is ignored under --data-source glue: GLUE and `datasets` have the task's own columns; "
        "--data-source file reads it from --train-file and --validation-file.",
        "--train-file is ignored under --data-source glue: only --data-source file reads data files; pass --data-source "
        "file, or leave --data-source out (a data file given makes it file)."]
    file_cfg = parse(["run", "--task", "sst2", "--train-file", "a.csv", "--validation-file", "b.csv", "--label-column", "y"]).cfg
    assert ignored_options(file_cfg, {"data.train_file", "data.validation_file", "data.label_column"}) == []


def test_an_empty_strategy_lr_is_no_strategy_lr(tmp_path):
    """`strategy_lr: {}` or "" is the option left out, so the run folder's config compares equal on resume."""
    from olft.cli import parse

    path = tmp_path / "c.yaml"
    for value in ("{}", '""', "' '"):
        path.write_text(f"train:\n  strategy_lr: {value}\n")
        assert parse(["run", "--config", str(path)]).cfg.train.strategy_lr is None
    assert parse(["run", "--strategy-lr", ""]).cfg.train.strategy_lr is None


def test_config_file_strategy_lr_as_a_mapping(tmp_path, capsys):
    """`strategy_lr: {olft: 3e-3, final: 1e-3}` reads as the flag's text, checked as the flag is."""
    from olft.cli import parse
    from olft.config import RunConfig, TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  strategy_lr: {olft: 3e-3, final: 1.0e-3}\n")
    cfg = parse(["run", "--config", str(path)]).cfg
    assert cfg.train.strategy_lr == "olft=0.003,final=0.001" and cfg.train.lr_by_strategy() == {"olft": 3e-3, "final": 1e-3}
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # config.json holds the text: the run repeats
    args = parse(["run", "--config", str(path), "--strategy-lr", "full=2e-3"])
    assert args.cfg.train.strategy_lr == "full=2e-3"
    # The flag replaces the file's rates whole, as a flag replaces any option: said, with the flag that keeps them.
    assert args.warnings == [f"--strategy-lr full=2e-3 replaces {path}'s strategy_lr (olft=3e-3,final=0.001) whole, so "
                             "olft, final now train at --lr; to keep them, pass --strategy-lr full=2e-3,olft=3e-3,final=0.001."]
    assert parse(["run", "--config", str(path), "--strategy-lr=olft=1e-2"]).warnings == [
        f"--strategy-lr olft=1e-2 replaces {path}'s strategy_lr (olft=3e-3,final=0.001) whole, so final now trains at "
        "--lr; to keep it, pass --strategy-lr olft=1e-2,final=0.001."]
    assert parse(["run", "--config", str(path), "--train.strategy_lr", "olft=1,final=2"]).warnings == []  # nothing dropped
    # only a rate of a strategy the command trains is worth a word; '' clears the file's rates on purpose
    assert parse(["run", "--config", str(path), "--strategy-lr", "olft=1e-2", "--strategies", "olft"]).warnings == []
    assert parse(["run", "--config", str(path), "--strategy-lr", ""]).warnings == []
    assert parse(["select", "--config", str(path), "--strategy-lr", "olft=1e-2"]).warnings == []  # final: not run by select
    assert parse(["run", "--config", str(path), "--lr", "2e-3"]).warnings == []
    assert TrainConfig(strategy_lr={"full": 2e-3}).strategy_lr == "full=0.002"  # library callers alike
    cases = [("{olft: 3e-3, olft: 1e-3}", "'olft' is given twice in one mapping (line 2)"),
             ("{olft: -1e-3}", "'olft=-0.001' needs a positive number"), ("{olft: fast}", "'olft=fast' needs a positive number"),
             ("{olfd: 3e-3}", "unknown strategy 'olfd'"), ("3e-3", "name=rate pairs"),
             ("{'olft=1,final': 2}", "one strategy and its rate per entry")]
    for value, phrase in cases:
        path.write_text(f"train:\n  strategy_lr: {value}\n")
        # A value let through would fail later, on the missing model, with another message.
        _fails(capsys, ["run", "--config", str(path), "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")], phrase)


def test_a_run_folder_config_works_with_select_train_and_info(tmp_path, capsys, caplog):
    """config.json holds `olft run`'s options: another subcommand skips those it has not, saying so."""
    import logging

    from olft.cli import parse
    from olft.config import RunConfig, TrainConfig

    path = tmp_path / "config.json"  # as a run folder has it
    cfg = RunConfig(train=TrainConfig(lr=0.005), strategies="olft,final", out=str(tmp_path / "run"))
    path.write_text(json.dumps(cfg.to_dict(), indent=2))
    assert parse(["select", "--config", str(path)]).cfg.train.lr == 0.005
    assert parse(["train", "--config", str(path), "--layers", "3"]).cfg.train.lr == 0.005
    none, out = str(tmp_path / "none"), str(tmp_path / "o")
    caplog.set_level(logging.INFO, logger="olft")
    for command, skipped in (["select"], "strategies (an option of `olft run`, not"), \
                            (["train", "--layers", "3"], "strategies (an option of `olft run`, not"), \
                            (["info"], "data, train, selection, strategies, out (options of `olft run/select/train`, not"):
        caplog.clear()
        extra = ["--out", out] if command[0] != "info" else []
        # The parser would refuse a skipped key that reached it; past it, the missing model fails.
        _fails(capsys, [*command, "--config", str(path), "--model", none, *extra], "Model path")
        assert [r.getMessage() for r in caplog.records] == [f"{path}: skipping {skipped} of `olft {command[0]}`)."]
    data = {**cfg.to_dict(), "stratgies": "olft"}
    path.write_text(json.dumps(data))
    _fails(capsys, ["select", "--config", str(path), "--model", none, "--out", out], "unknown option 'stratgies' for `olft select`. Did you mean 'strategies'?")


def test_run_folder_config_continues_its_folder_from_anywhere(tmp_path, monkeypatch):
    """config.json stores `out` as typed (relative to where the run began): read from another
    directory, the run continues in the folder that holds the file, unless --out says otherwise."""
    from olft.cli import parse
    from olft.config import RunConfig

    folder = tmp_path / "project" / "runs" / "x"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(RunConfig(out="runs/x").to_dict(), indent=2))
    (folder / "results.json").write_text("{}")
    monkeypatch.chdir(tmp_path)  # not project/, where runs/x was typed
    for command in (["run"], ["select"], ["train", "--layers", "1"]):
        assert parse([*command, "--config", str(folder / "config.json")]).cfg.out == str(folder)
        assert parse([*command, "--config", str(folder / "config.json"), "--out", "elsewhere"]).cfg.out == "elsewhere"
    mine = tmp_path / "mine.yaml"  # a user's own file: its out is relative to the working directory, as typed
    mine.write_text("out: runs/y\n")
    assert parse(["run", "--config", str(mine)]).cfg.out == "runs/y"
    copied = tmp_path / "config.json"  # a run's config.json copied out of its folder is a user's file
    copied.write_text((folder / "config.json").read_text())
    assert parse(["run", "--config", str(copied)]).cfg.out == "runs/x"


def test_relative_paths_are_stored_absolute(model_dirs, tiny_glue, tmp_path, monkeypatch, capsys):
    """A run begun with relative --model/--glue-dir/--train-file works from any directory later;
    a folder an older olft wrote (paths as typed) still resumes from where it began."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "llama").symlink_to(model_dirs["llama"])  # kept as the user named it, not resolved
    (project / "glue").symlink_to(tiny_glue)
    for split in ("train", "dev"):
        (project / "data" / f"{split}.tsv").write_text((tiny_glue / "RTE" / f"{split}.tsv").read_text())
    monkeypatch.chdir(project)
    glue = ["--model", "llama", "--task", "rte", "--glue-dir", "glue", "--strategies", "final", "--out", "g", *FAST]
    files = ["--model", "llama", "--task", "rte", "--data-source", "file", "--train-file", "data/train.tsv",
             "--validation-file", "data/dev.tsv", "--strategies", "final", "--out", "f", *FAST]
    assert main(["run", *glue]) == 0 and main(["run", *files]) == 0
    saved = json.loads((project / "f" / "config.json").read_text())
    assert saved["model"]["model"] == str(project / "llama") and saved["data"]["train_file"] == str(project / "data" / "train.tsv")
    assert json.loads((project / "g" / "config.json").read_text())["data"]["glue_dir"] == str(project / "glue")
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # elsewhere: the folders still name their model and data
    for run in ("f", "g"):
        assert main(["evaluate", "--run", str(project / run)]) == 0, capsys.readouterr().err
        assert main(["run", "--config", str(project / run / "config.json"), "-q"]) == 0, capsys.readouterr().err
    older = {**saved, "model": {**saved["model"], "model": "llama"},
             "data": {**saved["data"], "train_file": "data/train.tsv", "validation_file": "data/dev.tsv"}}
    (project / "f" / "config.json").write_text(json.dumps(older))  # as typed, as olft wrote it before
    monkeypatch.chdir(project)
    assert main(["run", *files]) == 0, capsys.readouterr().err  # the same command resumes, no config clash
    assert json.loads((project / "f" / "config.json").read_text()) == saved


def test_run_folder_config_repeats_the_run(llama_run, tmp_path):
    out = tmp_path / "again"
    assert main(["run", "--config", str(llama_run / "config.json"), "--out", str(out), "-q"]) == 0
    first, again = (json.loads((d / "config.json").read_text()) for d in (llama_run, out))
    assert {**first, "out": None} == {**again, "out": None} and again["out"] == str(out)
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (llama_run, out))
    assert r1["selection"]["selected_layer"] == r2["selection"]["selected_layer"]
    assert {k: v["metrics"] for k, v in r1["strategies"].items()} == {k: v["metrics"] for k, v in r2["strategies"].items()}


# -- training curves and plots ---------------------------------------------------------------------


def test_curves_per_piece(llama_run):
    import csv

    r = json.loads((llama_run / "results.json").read_text())
    names = {p.stem for p in (llama_run / "curves").glob("*.csv")}
    trained = {f"candidate-{c['layer']}" for c in r["selection"]["candidates"] if c.get("steps")}  # a proxy selector trains none
    assert names == {"olft", "final", "full"} | trained
    for name, s in r["strategies"].items():
        with open(llama_run / "curves" / f"{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(x["step"]) for x in rows] == list(range(1, s["steps"] + 1))
        lrs = [float(x["lr"]) for x in rows]
        assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < lrs[0]  # no warm-up step at 6 steps; the rate each step used and all(float(x["grad_norm"]) > 0 for x in rows)
    assert (llama_run / "loss.png").stat().st_size > 0


def test_report_to(model_dirs, tiny_glue, tmp_path, capsys):
    import importlib.util

    base = ["run", "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue), "--strategies", "final", *FAST]
    if importlib.util.find_spec("wandb") is None:
        _fails(capsys, [*base, "--out", str(tmp_path / "w"), "--report-to", "wandb"], "pip install wandb")
        assert not (tmp_path / "w").exists()
    if importlib.util.find_spec("tensorboardX") or importlib.util.find_spec("tensorboard"):
        assert main([*base, "--out", str(tmp_path / "t"), "--report-to", "tensorboard"]) == 0
        assert list((tmp_path / "t" / "tensorboard").rglob("events.out.tfevents*"))
        # The tracker's folder is the run's own: --overwrite clears it with the rest, and the new run logs afresh.
        stale = tmp_path / "t" / "tensorboard" / "stale"
        stale.write_text("from the first run")
        assert main([*base, "--out", str(tmp_path / "t"), "--report-to", "tensorboard", "--overwrite"]) == 0
        assert not stale.exists() and list((tmp_path / "t" / "tensorboard").rglob("events.out.tfevents*"))


def test_every_tracker_writes_in_its_folder_of_the_run(tmp_path, monkeypatch):
    import accelerate.tracking

    from olft import curves

    made = {}

    class Fake:
        def __init__(self, run_name, *args, **kwargs):
            made.update(run=run_name, args=args, kwargs=kwargs)

        def start(self):
            pass

    monkeypatch.setattr(curves, "check_tracker", lambda name: None)
    for name, cls in (("tensorboard", "TensorBoardTracker"), ("mlflow", "MLflowTracker"), ("wandb", "WandBTracker")):
        monkeypatch.setattr(accelerate.tracking, cls, Fake)
        curves.make_tracker(name, tmp_path / "run")
        assert made["run"] == "run", made
        if name == "wandb":  # wandb makes its `wandb` folder inside `dir`
            assert made["kwargs"] == {"dir": str(tmp_path / "run")} and curves.TRACKER_FOLDERS[name] == "wandb", made
        else:
            assert str(made["args"][0]) == str(tmp_path / "run" / curves.TRACKER_FOLDERS[name]), made


def test_layer_plot_helpers(tmp_path):
    from olft.plots import plot_layers
    from olft.selectionmd import binomial_se, selection_verdict

    assert binomial_se(0.5, 100) == pytest.approx(0.05) and binomial_se(1.0, 10) == 0.0
    cands = [{"layer": 4, "score": 0.60}, {"layer": 5, "score": 0.70}, {"layer": 6, "score": 0.66}]
    sel = {"candidates": cands, "score_examples": 100, "flat": False, "selected_layer": 5, "protocol": "train-holdout"}
    assert selection_verdict(sel) == "near-tie"  # runner-up 0.04 behind, SE(0.7, n=100) = 0.046
    assert selection_verdict({**sel, "score_examples": 200}) is None  # SE(0.7, n=200) = 0.032
    assert selection_verdict({**sel, "flat": True}) == "tie"
    results = {"selection": sel, "num_layers": 12, "middle_bucket": [4, 5, 6, 7], "metric": "accuracy", "model": "m",
               "task": "rte", "method": "lora", "eval_splits": ["validation"],
               "strategies": {"final": {"score": 0.55}, "full": {"score": 0.72}}}
    assert plot_layers(results, tmp_path / "l.png") and (tmp_path / "l.png").stat().st_size > 0


def test_python_dash_m_olft_is_the_olft_command(tmp_path):
    """`python -m olft` runs cli.main: its --help, and exit 2 with one line for bad input."""
    ok = subprocess.run([sys.executable, "-m", "olft", "evaluate", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "--run" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "olft", "evaluate", "--run", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("olft: error:") and bad.stderr.count("\n") == 1, bad.stderr


def test_under_a_launcher_only_rank_0_warns(monkeypatch):
    """A warning every rank would make alike (e.g. an unused --strategy-lr rate) is logged once per job."""
    import logging

    from olft.cli import _setup_logging

    for rank, shown in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setattr(logging.getLogger(), "level", logging.NOTSET)
        monkeypatch.setattr(logging.getLogger(), "handlers", [])  # basicConfig configures only a bare root
        _setup_logging(verbose=False, quiet=False)
        assert logging.getLogger("olft.api").isEnabledFor(logging.WARNING) is shown
        assert logging.getLogger("olft.api").isEnabledFor(logging.ERROR)


def test_method_and_layer_values_are_checked_before_anything_loads(tmp_path, capsys):
    none = str(tmp_path / "none")  # a value let through would fail later, on the missing model
    out = ["--out", str(tmp_path / "o")]
    for value in ("abc", "1.5"):
        assert main(["run", "--model", none, *out, "--probe-keep", value]) == 2
        err = capsys.readouterr().err
        assert err == f"olft: error: --probe-keep expects a whole number, got {value}. See `olft run --help`.\n"
    assert main(["train", "--model", none, *out, "--layers", "3", "--probe-keep", "2"]) == 2  # a warning, then the missing model
    err = capsys.readouterr().err
    assert "--probe-keep" not in err and "does not exist" in err, err
    _fails(capsys, ["run", "--model", none, "--method", "lora", "--lora-dropout", "1.5"], "--lora-dropout must be in [0, 1), got 1.5")
    _fails(capsys, ["train", "--model", none, "--layers", "2,x"], "Cannot read '--layers 2,x': write layer numbers joined by ',', "
           "e.g. --layers 3 or --layers 3,5")
    _fails(capsys, ["train", "--model", none, "--layers", ","], "'--layers ,' has an empty entry")


# A kill while the command still imports its libraries: this process sends itself SIGTERM the
# moment the module named by argv[1] starts to import (no sleep to guess when that is).
KILL_ON_IMPORT = """
import os, signal, sys

class KillOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, KillOnImport())
from olft.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("module", ["olft.config", "jsonargparse", "torch"])
@pytest.mark.parametrize("command", ["export", "predict"])
def test_sigterm_while_the_command_imports_prints_the_line(tmp_path, command, module):
    """SIGTERM in a command's first seconds, while olft's own config, jsonargparse or torch
    imports, stops it as later on: exit 143 and "olft: interrupted.", not a silent death by the
    signal, and nothing written. The script runs the console script's entry (olft.__main__)."""
    out = tmp_path / "out"
    args = {"export": ["--format", "peft", "--output", str(out)], "predict": ["--text", "a", "b", "--output", str(out)]}
    done = subprocess.run([sys.executable, "-c", KILL_ON_IMPORT, module, command, "--run", str(tmp_path / "run"),
                           *args[command]], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 143 and done.stderr == "olft: interrupted.\n", (done.returncode, done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_the_command_enters_before_olft_imports_anything():
    """The console script and `python -m olft` enter by olft.__main__.main, and importing the
    package and that module imports no other olft module (olft.cli, olft.config) than olft.errors,
    and nothing else besides `signal` (not even contextlib): a SIGTERM then finds the handler set."""
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["olft"] == "olft.__main__:main", scripts
    code = "import signal, sys; before = set(sys.modules); import olft.__main__; print(sorted(set(sys.modules) - before))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "['olft', 'olft.__main__', 'olft.errors']", done.stdout + done.stderr


def test_one_line_and_exit_code_for_each_stop(capsys):
    """Ctrl-C exits 130 (128 + SIGINT's 2), SIGTERM 143 (128 + 15); both say the same one line."""
    from olft.errors import Terminated, interrupted

    assert interrupted(KeyboardInterrupt()) == 130 and capsys.readouterr().err == "olft: interrupted.\n"
    assert interrupted(Terminated()) == 143 and capsys.readouterr().err == "olft: interrupted.\n"


@pytest.mark.parametrize(("args", "warned"), [
    # (options, the flags named as unused): the selector, method or strategies decide
    ({"selector": "auto", "selection_adaptive": 2}, ["--selection-adaptive"]),
    ({"selector": "gradient", "selection_adaptive": 3}, ["--selection-adaptive"]),
    ({"selector": "probe", "selection_adaptive": 3}, ["--selection-adaptive"]),
    ({"selector": "exhaustive", "selection_adaptive": 2}, []),
    ({"selector": "halving", "selection_adaptive": 0}, []),
    ({"selector": "probe-halving", "selection_adaptive": 2, "probe_keep": 2}, []),
    ({"selector": "auto", "probe_keep": 2}, ["--probe-keep"]),
    ({"selector": "exhaustive", "probe_keep": 2}, ["--probe-keep"]),
    ({"selector": "probe", "selection_steps": 10, "selection_epochs": 1.0}, ["--selection-epochs", "--selection-steps"]),
    ({"selector": "gradient", "gradient_batches": 2, "selection_max_steps": 5}, ["--selection-max-steps"]),
    ({"selector": "halving", "gradient_batches": 2, "selection_steps": 10}, ["--gradient-batches"]),
    ({"selector": "auto", "selection_steps": 10}, []),
    ({"method": "lora", "reduction_factor": 8, "lora_rank": 4}, ["--reduction-factor"]),
    ({"method": "adapter", "placement": "pfeiffer", "prefix_length": 3}, ["--prefix-length"]),
    ({"method": "prefix", "prefix_length": 3, "lora_alpha": 4}, ["--lora-alpha"]),
    ({"strategies": "final,full", "selector": "probe"}, ["--selector"]),
    ({"strategies": "olft,final", "selector": "probe"}, []),
    ({"command": "train", "selector": "probe", "candidates": "all", "lora_rank": 4}, ["--candidates", "--lora-rank", "--selector"]),
    ({"command": "train", "method": "lora", "lora_rank": 4, "lr": 0.01}, []),
    # The gradient selector scores no held-out example (no gap to judge equivalence by); only a
    # trained stage spreads candidates over processes.
    ({"selector": "gradient", "equivalence_threshold": 2.0, "selection_parallel": "data"}, ["--equivalence-threshold", "--selection-parallel"]),
    ({"selector": "probe", "equivalence_threshold": 2.0, "selection_parallel": "data"}, ["--selection-parallel"]),
    ({"selector": "auto", "equivalence_threshold": 2.0, "selection_parallel": "data"}, []),
    ({"selector": "exhaustive", "equivalence_threshold": 2.0, "selection_parallel": "data"}, []),
    ({"selector": "halving", "equivalence_threshold": 2.0, "selection_parallel": "data"}, []),
    ({"selector": "probe-halving", "equivalence_threshold": 2.0, "selection_parallel": "data"}, []),
])
def test_options_the_run_does_not_use_are_named_once_each(args, warned):
    """Truth table of `ignored_options`: each given option its selector, method or strategies leave
    unused gets one line naming it, the choice that ignores it, and what would use it."""
    from olft.config import SECTIONS, RunConfig, ignored_options

    args = dict(args)
    command = args.pop("command", "run")
    sections = {s: {k: v for k, v in args.items() if k in {f.name for f in SECTIONS[s].__dataclass_fields__.values()}}
                for s in SECTIONS}
    cfg = RunConfig(**{s: SECTIONS[s](**kw) for s, kw in sections.items()}, **{k: v for k, v in args.items() if k == "strategies"})
    given = {f"{s}.{k}" for s, kw in sections.items() for k in kw}
    lines = ignored_options(cfg, given, command)
    assert sorted(line.split()[0] for line in lines) == warned, lines
    for line in lines:  # why, and what would use it
        assert " is ignored" in line and any(w in line for w in ("pass --", "--selector ", "--strategies", "`olft select`")), line


def test_unused_options_warn_once_before_anything_loads(tmp_path, capsys, caplog):
    """The reviewer's cases: an option the selector does not use is named, once, before the model
    loads (here a missing one, which then fails); a default left alone is not named."""
    none = str(tmp_path / "none")
    for selector, flag in (("auto", "--selection-adaptive"), ("gradient", "--selection-adaptive"), ("probe", "--probe-keep")):
        caplog.clear()
        assert main(["select", "--model", none, "--selector", selector, flag, "2"]) == 2
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and warnings[0].startswith(f"{flag} is ignored under --selector {selector}"), warnings
        capsys.readouterr()
    # A run folder's config.json records every option: its defaults are not the user's choices.
    config = tmp_path / "config.yaml"
    config.write_text("selection: {selector: probe, selection_adaptive: 1, gradient_batches: 8}\nmethod: {method: lora, reduction_factor: 16}\n")
    caplog.clear()
    assert main(["select", "--config", str(config), "--model", none]) == 2
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    config.write_text("selection: {selector: probe, gradient_batches: 3}\n")
    assert main(["select", "--config", str(config), "--model", none]) == 2
    # named as the file's option, as a bad value of it is
    assert f"{config}: selection.gradient_batches is ignored under --selector probe" in caplog.text, caplog.text


def test_an_option_another_one_replaces_is_named_exactly_when_it_has_no_effect(tmp_path, capsys, caplog):
    """--max-steps replaces --epochs (no cap on them: `train.fit`'s total), --selection-steps replaces
    --selection-epochs, and --selection-max-steps caps --selection-steps only below it
    (`Session.selection_steps`): each is named once when typed and unused, and not otherwise."""
    from types import SimpleNamespace

    from olft.config import RunConfig, SelectionConfig, TrainConfig, ignored_options
    from olft.pipeline import Session

    def lines(given, command="run", **kw):
        cfg = RunConfig(train=TrainConfig(**{k: v for k, v in kw.items() if k in ("epochs", "max_steps")}),
                        selection=SelectionConfig(**{k: v for k, v in kw.items() if k.startswith("selection_")}))
        return [line.split(":")[0] for line in ignored_options(cfg, given, command)]

    assert lines({"train.epochs"}, epochs=2, max_steps=5) == ["--epochs is ignored"]
    assert lines({"train.epochs"}, "train", epochs=2, max_steps=5000) == ["--epochs is ignored"]  # not a cap: still replaced
    assert lines({"train.epochs"}, epochs=2) == lines({"train.max_steps"}, max_steps=5) == []
    sel = {"selection.selection_epochs", "selection.selection_max_steps"}
    assert lines(sel, selection_epochs=2, selection_steps=5, selection_max_steps=5) == \
        ["--selection-epochs is ignored", "--selection-max-steps is ignored"]
    assert lines(sel, selection_epochs=2, selection_steps=5, selection_max_steps=4) == ["--selection-epochs is ignored"]
    assert lines(sel, selection_epochs=2, selection_max_steps=4) == []  # the epochs' steps are known only once the data is
    # The rule is the pipeline's: steps replace epochs, the cap binds only below the steps.
    count = lambda **kw: Session.selection_steps(SimpleNamespace(cfg=RunConfig(selection=SelectionConfig(**kw))), 1000)  # noqa: E731
    assert count(selection_steps=5, selection_epochs=100) == count(selection_steps=5, selection_max_steps=5) == 5
    assert count(selection_steps=5, selection_max_steps=4) == 4
    # The reviewer's command: one line, before the model loads; a run folder's config.json holding both, none.
    caplog.clear()
    _fails(capsys, ["train", "--layers", "1", "--model", str(tmp_path / "none"), "--max-steps", "5", "--epochs", "2"], "does not exist")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["--epochs is ignored: --max-steps 5 sets how long each strategy trains (it replaces --epochs); "
                        "drop one of them."], warnings


def test_train_names_the_selection_options_it_ignores(tmp_path, capsys, caplog):
    """train tunes the given --layers: its --help lists no selection option; one set anyway (a
    command line shared with run, a config file) is named as ignored, once, before anything loads."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "--selector" not in help_text and "--selection-adaptive" not in help_text and "--lr" in help_text
    none = str(tmp_path / "none")
    for flag in (["--selector", "probe"], ["--selection.selector=probe"], ["--probe-keep", "2"]):
        caplog.clear()
        _fails(capsys, ["train", "--model", none, "--layers", "2", *flag], "does not exist")
        name = flag[0].split("=")[0].replace("--selection.selector", "--selector")
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == [f"{name} is ignored by `olft train`: it tunes the given --layers and selects no layer; "
                            "`olft run` or `olft select` choose a layer."], warnings
    config = tmp_path / "c.yaml"
    config.write_text("selection: {selector: probe, selection_adaptive: 1}\ntrain: {lr: 0.01}\n")  # the default 1 is no choice
    caplog.clear()
    _fails(capsys, ["train", "--config", str(config), "--model", none, "--layers", "2"], "does not exist")
    assert [r.getMessage().split(" is ")[0] for r in caplog.records if r.levelname == "WARNING"] == [
        f"{config}: selection.selector"], caplog.text  # the file's option, named by file and key


def test_a_run_folders_own_config_warns_of_nothing_nobody_typed(tmp_path, capsys, caplog):
    """A run folder's config.json records the whole run, its selection group too after an add-on
    `olft train` (strategies layers=1): continuing or repeating from it names no option as ignored,
    where the same values in a user's own file are named, and a flag typed with it still is."""
    import dataclasses

    from olft.config import RunConfig

    cfg = RunConfig()
    cfg.model.model = str(tmp_path / "none")
    cfg.strategies = "layers=1"
    cfg.selection.candidates, cfg.selection.selector, cfg.selection.selection_steps = "all", "exhaustive", 4
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    (folder / "results.json").write_text("{}")
    for command in (["run"], ["train", "--layers", "1"]):
        caplog.clear()
        _fails(capsys, [*command, "--config", str(folder / "config.json")], "does not exist")
        assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    (tmp_path / "mine.json").write_text((folder / "config.json").read_text())
    caplog.clear()
    _fails(capsys, ["run", "--config", str(tmp_path / "mine.json")], "does not exist")
    assert f"{tmp_path / 'mine.json'}: selection.selector is ignored: --strategies layers=1 selects no layer" in caplog.text, caplog.text
    caplog.clear()
    _fails(capsys, ["run", "--config", str(folder / "config.json"), "--selection-steps", "8"], "does not exist")
    assert [r.getMessage().split()[0] for r in caplog.records if r.levelname == "WARNING"] == ["--selection-steps"], caplog.text


def _warned(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_the_python_api_names_the_options_it_will_not_use(tmp_path, caplog):
    """A Python caller's options are those that differ from RunConfig's defaults: each one the run
    or selection will not use is named once, as on the command line, before anything loads (here a
    missing model then fails); given=() names none (a config read back from a run folder)."""
    from olft import api
    from olft.config import RunConfig
    from olft.errors import OlftError

    cfg = RunConfig()
    cfg.model.model, cfg.out = str(tmp_path / "none"), str(tmp_path / "out")
    cfg.method.lora_rank, cfg.selection.gradient_batches = 16, 3  # method adapter, selector auto: neither used
    for entry in (api.run, api.select_layer):
        caplog.clear()
        with pytest.raises(OlftError, match="none"):
            entry(cfg, quiet=True)
        assert [w.split()[0] for w in _warned(caplog)] == ["--lora-rank", "--gradient-batches"], caplog.text
        assert _warned(caplog)[0] == "--lora-rank is ignored under --method adapter: pass --method lora to use it."
        caplog.clear()
        with pytest.raises(OlftError, match="none"):
            entry(cfg, quiet=True, given=())
        assert not _warned(caplog), caplog.text
    cfg.strategies = "final,full"  # select_layer selects whatever --strategies says; run then selects nothing
    caplog.clear()
    with pytest.raises(OlftError, match="none"):
        api.select_layer(cfg, quiet=True, given={"selection.selector"})
    assert not _warned(caplog), caplog.text
    cfg.strategies = ["final", "full"]  # a list, as a Python caller may write it: read as the CLI's string
    caplog.clear()
    with pytest.raises(OlftError, match="none"):
        api.run(cfg, quiet=True, given={"selection.selector"})
    assert _warned(caplog) == ["--selector is ignored: --strategies final,full selects no layer (olft does); add olft "
                               "to --strategies, or drop it."], caplog.text


def test_the_command_names_an_unused_option_once(tmp_path, capsys, caplog):
    """The CLI passes what was typed to the API, which names it: not the CLI as well."""
    none = str(tmp_path / "none")
    for command in (["run"], ["select"], ["train", "--layers", "1"]):
        caplog.clear()
        _fails(capsys, [*command, "--model", none, "--lora-rank", "16"], "does not exist")
        assert _warned(caplog) == ["--lora-rank is ignored under --method adapter: pass --method lora to use it."], caplog.text


def test_auto_on_few_candidates_names_the_training_options_it_ignores(tmp_path, capsys, caplog, monkeypatch):
    """Below 8 candidates (`auto_keep` keeps none) auto runs the probe alone: each training option
    set (steps, epochs, step cap, --selection-parallel) is named once the candidates are counted,
    from the model's config before it loads (a config with no weights: the load then fails), or
    from the loaded model when its config declares no layer count. 8 candidates train: no line."""
    from olft import api
    from olft.config import RunConfig, count_ignored_options
    from olft.errors import OlftError
    from olft.select import auto_keep
    from tiny import make_config, make_tokenizer

    model = tmp_path / "llama8"
    make_config("llama", 8, 32).save_pretrained(model)
    make_tokenizer(False).save_pretrained(model)  # weights alone missing: the load fails at them
    line = ("--selection-steps is ignored under --selector auto with 7 candidates: below 8 it runs the probe alone "
            "and trains none; --selector exhaustive, halving or probe-halving trains candidates, as auto does on 8 "
            "or more --candidates.")
    base = ["--model", str(model), "--selection-steps", "4"]
    for command in ("run", "select"):
        for candidates, warned in (("0-6", [line]), ("all", [])):
            caplog.clear()
            _fails(capsys, [command, *base, "--candidates", candidates, "--out", str(tmp_path / f"{command}{candidates}")], "has no weights file")
            assert _warned(caplog) == warned, caplog.text
        caplog.clear()  # another selector trains every candidate; run without olft selects nothing (named as such)
        _fails(capsys, [command, *base, "--candidates", "0-6", "--selector", "exhaustive", "--out", str(tmp_path / "x")], "has no weights file")
        assert _warned(caplog) == [], caplog.text
    caplog.clear()
    _fails(capsys, ["run", *base, "--candidates", "0-6", "--strategies", "final", "--out", str(tmp_path / "f")], "has no weights file")
    assert [w.split(":")[0] for w in _warned(caplog)] == ["--candidates is ignored", "--selection-steps is ignored"], caplog.text

    # A config that declares no layer count: the loaded model's tells, once.
    class Loaded:
        num_layers, stack = 7, None
        train_examples = [None] * 1400  # enough for the selection's sets (`stages.check_selection_data`)

        def __init__(self, *a, **k):
            pass

    def stop(*a, **k):
        raise OlftError("stopped after the checks")

    monkeypatch.setattr(api, "config_layers", lambda cfg, config=None: None)
    monkeypatch.setattr(api, "Session", Loaded)
    monkeypatch.setattr(api, "check_method", lambda *a: None)
    monkeypatch.setattr(api, "check_probe_classes", lambda *a: None)  # the fake holds no examples to draw
    monkeypatch.setattr(api, "_begin", stop)
    cfg = RunConfig()
    cfg.model.model, cfg.selection.candidates, cfg.selection.selection_steps = str(model), "all", 4
    for entry in (api.run, api.select_layer):
        cfg.out = str(tmp_path / entry.__name__)
        caplog.clear()
        with pytest.raises(OlftError, match="stopped"):
            entry(cfg, quiet=True)
        assert _warned(caplog) == [line], caplog.text
    # The threshold is auto's own rule, whatever it is.
    least = next(k for k in range(1, 100) if auto_keep(k))
    cfg.selection.selection_parallel = "data"
    given = {"selection.selection_parallel", "selection.selection_epochs", "method.lora_rank"}
    assert [w.split()[0] for w in count_ignored_options(cfg, given, least - 1)] == ["--selection-epochs", "--selection-parallel"]
    assert count_ignored_options(cfg, given, least) == []
    # One candidate: nothing runs, not even the probe; one line names the options (--selection-epochs
    # under --selection-steps is `ignored_options`'s already: named once).
    assert count_ignored_options(cfg, given | {"selection.selection_train_samples"}, 1) == [
        "--selection-parallel, --selection-train-samples are ignored with one candidate layer: it is the choice, "
        "and no selection runs."]


# Each selector's one-candidate line: the selection options given that it reads when it runs (those it
# never reads are `ignored_options`'s lines), since with one candidate it does not run.
ONE_CANDIDATE_NAMED = {
    "exhaustive": "--equivalence-threshold, --selection-adaptive, --selection-epochs, --selection-train-samples",
    "halving": "--equivalence-threshold, --selection-adaptive, --selection-epochs, --selection-train-samples",
    "probe-halving": "--equivalence-threshold, --probe-keep, --selection-adaptive, --selection-epochs, --selection-train-samples",
    "auto": "--equivalence-threshold, --selection-epochs, --selection-train-samples",
    "probe": "--equivalence-threshold, --selection-train-samples",
    "gradient": "--gradient-batches, --selection-train-samples",
}


@pytest.mark.parametrize("selector", sorted(ONE_CANDIDATE_NAMED))
def test_one_candidate_names_the_selection_options_it_ignores_under_every_selector(selector):
    """One candidate layer is the choice under any selector (`runselection.one_candidate`): one line
    names each selection option given that no longer does anything (not --candidates or --selector,
    which still say what is tuned and are recorded), each option once; more candidates, none
    (auto's probe-alone lines aside, which 7 candidates would give)."""
    from olft.config import RunConfig, count_ignored_options, ignored_options

    cfg = RunConfig()
    cfg.selection.selector = selector
    given = {"selection.candidates", "selection.selector", "selection.selection_epochs", "selection.selection_adaptive",
             "selection.probe_keep", "selection.gradient_batches", "selection.equivalence_threshold",
             "selection.selection_train_samples", "method.lora_rank", "train.lr"}
    line = f"{ONE_CANDIDATE_NAMED[selector]} are ignored with one candidate layer: it is the choice, and no selection runs."
    assert count_ignored_options(cfg, given, 1) == [line]
    named = set(ONE_CANDIDATE_NAMED[selector].split(", "))
    assert not named & {w.split()[0] for w in ignored_options(cfg, given, "select")}  # named once
    assert count_ignored_options(cfg, given, 8) == []
    assert count_ignored_options(cfg, {"selection.selector", "train.lr"}, 1) == []  # nothing to name: no line


def test_a_missing_required_option_is_named_as_typed(capsys):
    _fails(capsys, ["train", "--task", "sst2", "--max-train-samples", "16"], "olft train needs --layers (e.g. --layers 3, 3,5 or 2-4)")
    _fails(capsys, ["evaluate"], "olft evaluate needs --run")
    assert main(["export"]) == 2
    err = capsys.readouterr().err
    assert "olft export needs --run and --output" in err and "export.run" not in err, err


def test_another_commands_option_is_named_as_that_commands(capsys):
    """olft select --strategies: an option of olft run, said so (not "did you mean --strategy-lr?"); a
    very near option of the command itself is offered beside it (predict's --strategy)."""
    fast = ["--model", "/nonexistent/model", "--task", "rte"]
    _fails(capsys, ["select", "--strategies", "final", *fast],
           "unknown option --strategies for `olft select`: it is an option of `olft run`. See `olft select --help`.")
    _fails(capsys, ["train", "--layers", "1", "--strategies", "final", *fast], "it is an option of `olft run`. See")
    _fails(capsys, ["predict", "--run", "x", "--strategies", "final"],
           "unknown option --strategies for `olft predict`: it is an option of `olft run`; did you mean --strategy?")
    _fails(capsys, ["run", "--format", "olft", *fast], "unknown option --format for `olft run`: it is an option of `olft export`.")


def test_an_abbreviated_option_is_refused_not_guessed(capsys):
    """argparse's prefix matching took `--method.r 8` as --method.reduction_factor and `--max-train 7`
    as --max-train-samples, silently: olft names the option it has instead."""
    fast = ["--model", "/nonexistent/model", "--task", "rte"]  # a parse let through fails at once, not after a run
    _fails(capsys, ["run", "--method.r", "8", *fast], "unknown option --method.r for `olft run`. Did you mean --method.lora_rank")
    _fails(capsys, ["run", "--max-train", "7", *fast], "unknown option --max-train for `olft run`. Did you mean --max-train-samples?")
    _fails(capsys, ["train", "--max-train", "7", "--layers", "1", *fast], "Did you mean --max-train-samples?")


def test_a_dotted_transformers_flag_is_answered_with_olfts(capsys):
    _fails(capsys, ["run", "--train.learning_rate", "0.1"],
           "unknown option --train.learning_rate for `olft run`. Did you mean --train.lr (olft's name")
    _fails(capsys, ["run", "--train.per_device_train_batch_size", "4"], "Did you mean --train.batch_size")


def test_a_users_yaml_naming_layers_is_not_said_to_be_olft_trains(tmp_path):
    """`strategies: layers=2` in a user's own YAML gives `olft train --config` its --layers too; the
    note says where they came from without claiming an `olft train` wrote the file."""
    from olft.cliconfig import config_first

    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  model: minilm-l6\nstrategies: layers=2\n")
    notes: list[str] = []
    assert config_first(["train", "--config", str(path)], {}, notes)[-2:] == ["--layers", "2"]
    assert notes[-1] == (f"{path}: --layers 2, from its strategies layers=2 (as an `olft train` records its --layers); "
                         "pass --layers to tune other layers."), notes


@pytest.mark.parametrize("strategies, layers", [("layers=2+4", "2+4"), ("layers = 3", "3"), ("olft,final,full", None),
                                                ("layers=1,layers=2", None), (None, None)])
def test_olft_train_takes_its_layers_from_a_config_file_an_add_on_wrote(tmp_path, strategies, layers):
    """A folder's config.json after `olft train --layers 2,4` records `strategies: layers=2+4`:
    `olft train --config` of it repeats that add-on without --layers; a file with other strategies
    (an `olft run`'s, or several) gives none, and --layers on the command line always wins."""
    from olft.cli import parse
    from olft.cliconfig import config_first

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {"model": "minilm-l6"}, **({"strategies": strategies} if strategies else {})}))
    notes: list[str] = []
    argv = config_first(["train", "--config", str(path)], {}, notes)
    assert (argv[-2:] == ["--layers", layers]) if layers else "--layers" not in argv, argv
    said = f"{path}: --layers {layers}, from its strategies layers={layers} (as an `olft train` records its --layers); "
    assert (notes[-1] == said + "pass --layers to tune other layers.") if layers else "--layers" not in " ".join(notes), notes
    # Its strategies are read (as --layers), so no note says they are skipped; otherwise one does.
    assert any("skipping strategies" in n for n in notes) == (strategies is not None and not layers), notes
    if layers:
        assert parse(["train", "--config", str(path)]).cfg.model.model == "minilm-l6"
    assert config_first(["train", "--config", str(path), "--layers", "5"], {}, [])[-2:] == ["--layers", "5"]
    assert "--layers" not in config_first(["run", "--config", str(path)], {}, [])


def test_a_model_without_a_middle_third_is_said_to_compare_layers_with_themselves(tiny_glue, tmp_path, caplog):
    """Under 3 layers the default candidates are every layer, the final one too: OLFT can equal the
    final-layer baseline, which a table of three strategies would not show. One warning; none from 3 up."""
    from tiny import make_model_folder

    def warned(layers):
        model = make_model_folder("llama", tmp_path / f"m{layers}", layers=layers)
        caplog.clear()
        out = tmp_path / f"r{layers}"
        assert main(["run", "--model", str(model), "--task", "rte", "--glue-dir", str(tiny_glue), "--out", str(out),
                     "--strategies", "olft,final", "--selector", "gradient", "--max-steps", "1"]) == 0
        return [r.getMessage() for r in caplog.records if "middle third is every layer" in r.getMessage()]

    assert warned(2) == ["a 2-layer model's middle third is every layer (0,1), the final one too: OLFT can choose it and "
                         "then equals the final-layer baseline; the comparison needs a model of 3 layers or more"]
    assert warned(3) == []


def test_an_unused_option_from_a_config_file_is_named_by_file_and_key(tmp_path):
    """A config file's option a command leaves unused is named as the file's, as its bad values are;
    a typed one by its flag."""
    from olft.cli import parse
    from olft.config import ignored_options

    path = tmp_path / "shared.yaml"
    path.write_text("selection:\n  selection_eval_samples: 16\n")
    args = parse(["run", "--config", str(path), "--strategies", "final,full", "--selection-train-samples", "32"])
    assert ignored_options(args.cfg, args.given, "run") == [
        f"{path}: selection.selection_eval_samples is ignored: --strategies final,full selects no layer (olft does); add olft "
        "to --strategies, or drop it.",
        "--selection-train-samples is ignored: --strategies final,full selects no layer (olft does); add olft to --strategies, or drop it."]
    assert parse(["train", "--config", str(path), "--layers", "1"]).warnings == [
        f"{path}: selection.selection_eval_samples is ignored by `olft train`: it tunes the given --layers and selects no "
        "layer; `olft run` or `olft select` choose a layer."]
