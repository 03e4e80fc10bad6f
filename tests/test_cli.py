"""End to end through the `olft` command: artifacts, result keys, exact counts, bad input."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from olft.cli import main

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


def test_evaluate_reproduces_results(llama_run, capsys):
    assert main(["evaluate", "--run", str(llama_run), "-q"]) == 0
    out = capsys.readouterr().out
    assert "complete" in out
    for line in out.splitlines()[1:]:
        now, saved = line.split("accuracy=")[1].split(" (results.json: ")
        assert abs(float(now) - float(saved.rstrip(")"))) < 1e-9


def test_train_and_select_subcommands(model_dirs, tiny_glue, tmp_path):
    base = ["--model", str(model_dirs["bert"]), "--task", "sst2", "--glue-dir", str(tiny_glue), *FAST]
    assert main(["train", "--layers", "0,2", "--out", str(tmp_path / "t"), "--method", "lora", *base]) == 0
    r = json.loads((tmp_path / "t" / "results.json").read_text())
    assert list(r["strategies"]) == ["layers=0+2"] and r["strategies"]["layers=0+2"]["layers"] == [0, 2]
    assert main(["select", "--out", str(tmp_path / "s"), "--candidates", "all", *base]) == 0
    r = json.loads((tmp_path / "s" / "results.json").read_text())
    assert [c["layer"] for c in r["selection"]["candidates"]] == [0, 1, 2, 3]


def test_paper_protocol_is_recorded(model_dirs, tiny_glue, tmp_path):
    args = ["run", "--model", str(model_dirs["gpt2"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--strategies", "olft",
            "--selection-data", "validation", "--out", str(tmp_path / "p"), *FAST]
    assert main(args) == 0
    r = json.loads((tmp_path / "p" / "results.json").read_text())
    assert r["selection"]["protocol"] == "validation"
    assert r["selection"]["score_examples"] == r["eval_examples"]["validation"]


def test_info(model_dirs, capsys):
    assert main(["info", "--model", str(model_dirs["mistral"])]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "mistral" and info["num_layers"] == 4 and info["middle_bucket"] == [1, 2]
    assert info["peft_params_one_layer"] == 324 and info["peft_params_all_layers"] == 4 * 324


def test_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "olft.cli", "run", "--help"], capture_output=True, text=True).stdout
    for flag in ("--model", "--task", "--glue-dir", "--method", "--strategies", "--out", "--epochs", "--max-steps", "--lr",
                 "--batch-size", "--max-length", "--seed", "--candidates", "--selection-data", "--reduction-factor",
                 "--lora-rank", "--max-train-samples", "--max-eval-samples", "--selection-train-samples"):
        assert flag in out, flag


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
    _fails(capsys, ["train", *m, "--task", "rte", *g, "--layers", "-1", *o, *FAST], "", out)
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
    _fails(capsys, ["info", "--model", str(folder)], "encoder-decoder model")


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
    for line in capsys.readouterr().out.splitlines()[1:]:
        now, saved = line.split("accuracy=")[1].split(" (results.json: ")
        assert abs(float(now) - float(saved.rstrip(")"))) < 1e-9
