"""The bad-input corpus, end to end: exit code 2, one clear line, no traceback, nothing that
looks complete. Loader-level cases (rows, columns, encodings, fuzzing) live in test_tasks.py."""

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from olft.cli import main
from olft.errors import OlftError

FAST = ["--epochs", "1", "--selection-train-samples", "16", "--selection-eval-samples", "8", "-q"]


def _fails(capsys, args, *phrases):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("olft: error:") and err.count("\n") == 1, err
    for phrase in phrases:
        assert phrase.lower() in err.lower(), err
    return err


@pytest.fixture
def rte_dir(tmp_path):
    d = tmp_path / "glue" / "RTE"
    d.mkdir(parents=True)
    (d / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tthe cat\tyes\tentailment\n1\ta dog\tno\tnot_entailment\n")
    return d


def _run(model_dirs, glue, out, *extra):
    return ["run", "--model", str(model_dirs["gpt2"]), "--task", "rte", "--glue-dir", str(glue), "--out", str(out), *FAST, *extra]


@pytest.mark.parametrize(
    "content, phrase",
    [
        (b"", "empty"),
        (b"index\tsentence1\tsentence2\tlabel\n", "empty"),
        (b"index\tsentence1\tlabel\n0\ta\tentailment\n", "sentence2"),
        (b"index,sentence1,sentence2,label\n0,a,b,entailment\n", "looks comma-separated; rename it to .csv"),
        (b"index\tsentence1\tsentence2\tlabel\n0\ta\xff\xfe\tb\tentailment\n", "utf-8"),
        (bytes(range(256)) * 4, "looks like a binary file (NUL byte at byte offset 0)"),
        (b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tperhaps\n", "perhaps"),
    ],
    ids=["empty", "header-only", "missing-column", "wrong-delimiter", "invalid-utf8", "binary", "bad-label"],
)
def test_bad_train_file(model_dirs, rte_dir, tmp_path, capsys, content, phrase):
    (rte_dir / "train.tsv").write_bytes(content)
    out = tmp_path / "out"
    _fails(capsys, _run(model_dirs, rte_dir.parent, out), phrase)
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("command", [["train", "--layers", "0"], ["run"], ["select"]])
def test_a_relative_data_file_is_named_as_typed(model_dirs, rte_dir, tmp_path, capsys, monkeypatch, command):
    """config.json records --train-file absolute (the run continues from anywhere), but an error
    in the file names it as the user typed it, as `olft predict` names its --input."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.tsv").write_text("sentence1\tsentence2\tlabel\na\tb\tentailment\nc\td\tperhaps\n")
    (tmp_path / "data" / "dev.tsv").write_text("sentence1\tsentence2\tlabel\na\tb\tentailment\n")
    monkeypatch.chdir(tmp_path)
    args = [*command, "--model", str(model_dirs["gpt2"]), "--task", "rte", "--data-source", "file", "--train-file",
            "data/train.tsv", "--validation-file", "data/dev.tsv", "--out", "out", *FAST]
    err = _fails(capsys, args, "olft: error: data/train.tsv, line 3: label 'perhaps' is not a RTE label")
    assert str(tmp_path) not in err, err
    assert not (tmp_path / "out" / "results.json").exists()  # test_cli: config.json records the file absolute


def test_extra_columns_are_fine(model_dirs, rte_dir, tmp_path):
    rows = "index\tsentence1\tsentence2\tlabel\textra\n" + "".join(
        f"{i}\tthe cat sat\t{'yes' if i % 2 else 'no'}\t{'entailment' if i % 2 else 'not_entailment'}\tx\n" for i in range(12)
    )
    (rte_dir / "train.tsv").write_text(rows)
    assert main(_run(model_dirs, rte_dir.parent, tmp_path / "out", "--strategies", "final")) == 0


def test_regression_label_not_a_number(model_dirs, tmp_path, capsys):
    d = tmp_path / "glue" / "STS-B"
    d.mkdir(parents=True)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    (d / "train.tsv").write_text(header + "0\tg\tf\t2012\t0\ts\ts\ta cat\ta dog\tfour\n")
    (d / "dev.tsv").write_text(header + "0\tg\tf\t2012\t0\ts\ts\ta cat\ta dog\t4.0\n")
    args = ["run", "--model", str(model_dirs["bert"]), "--task", "stsb", "--glue-dir", str(tmp_path / "glue"), "--out", str(tmp_path / "o"), *FAST]
    _fails(capsys, args, "four")


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_overlong_sentence_is_truncated_and_counted(model_dirs, rte_dir, tmp_path, family):
    long = " ".join(["the cat sat on the mat"] * 40)  # ~240 words, the model has 64 positions
    rows = "index\tsentence1\tsentence2\tlabel\n" + "".join(
        f"{i}\t{long if i == 0 else 'a dog'}\tyes\t{'entailment' if i % 2 else 'not_entailment'}\n" for i in range(10)
    )
    (rte_dir / "train.tsv").write_text(rows)
    out = tmp_path / "out"
    args = ["run", "--model", str(model_dirs[family]), "--task", "rte", "--glue-dir", str(rte_dir.parent), "--out", str(out),
            *FAST, "--strategies", "final"]  # fmt: skip
    assert main(args) == 0  # default max length: 128, capped at the model's 64 positions
    r = json.loads((out / "results.json").read_text())
    assert r["max_length"] == 64
    assert r["truncated"] == {"train": {"examples": 1, "text_a": 1, "text_b": 0},
                              "validation": {"examples": 0, "text_a": 0, "text_b": 0}}


@pytest.mark.parametrize(
    "family, value, phrase",
    [
        ("gpt2", "512", "--max-length 512 is more than this model can take (max_position_embeddings / tokenizer "
                        "model_max_length: 64). use --max-length 64 or less."),
        ("bert", "65", "use --max-length 64 or less"),
        # BERT pairs: [CLS] a [SEP] b [SEP] needs 3 special tokens + 1 token per text.
        ("bert", "4", "--max-length 4 leaves no room for the text: the special tokens and one token for each of the 2 "
                      "text(s) need 5. use --max-length 5 or more."),
        # The tiny decoder adds <bos>; its whitespace pre-tokenizer drops the joining newline: 1 + 0 + 2.
        ("gpt2", "2", "use --max-length 3 or more"),
    ],
)
def test_max_length_the_model_cannot_honour_is_refused(model_dirs, rte_dir, tmp_path, capsys, family, value, phrase):
    (rte_dir / "train.tsv").write_text((rte_dir / "dev.tsv").read_text())
    out = tmp_path / "out"
    args = ["run", "--model", str(model_dirs[family]), "--task", "rte", "--glue-dir", str(rte_dir.parent), "--out", str(out),
            *FAST, "--max-length", value]  # fmt: skip
    _fails(capsys, args, phrase)
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_text_with_zero_tokens_is_refused_naming_file_and_line(model_dirs, rte_dir, tmp_path, capsys, family):
    (rte_dir / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tthe cat\tyes\tentailment\n"
                                       "1\ta dog\t \tnot_entailment\n")
    out = tmp_path / "out"
    args = ["run", "--model", str(model_dirs[family]), "--task", "rte", "--glue-dir", str(rte_dir.parent), "--out", str(out), *FAST]
    _fails(capsys, args, f"{rte_dir / 'train.tsv'}, line 3: text_b (text 2 of 2) is empty after tokenization")
    assert not (out / "results.json").exists()


def test_corrupt_model_files(model_dirs, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(model_dirs["llama"], folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    _fails(capsys, ["info", "--model", str(folder)], "corrupt")
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"not a gguf file at all")
    _fails(capsys, ["info", "--model", str(gguf)], "gguf")
    (folder / "config.json").write_text("{not json")
    _fails(capsys, ["info", "--model", str(folder)], "config")



# -- a local model folder that is incomplete: refused before training, naming what it lacks --------------


def _without(model_dirs, tmp_path, family, *prefixes) -> Path:
    """A copy of the tiny `family` model folder without the files whose names start with `prefixes`."""
    folder = tmp_path / f"{family}-incomplete"
    shutil.copytree(model_dirs[family], folder)
    for path in folder.iterdir():
        if path.name.startswith(prefixes):
            path.unlink()
    return folder


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_model_folder_without_tokenizer_files_is_refused(model_dirs, rte_dir, tmp_path, capsys, family):
    # transformers builds BERT's and GPT-2's tokenizers from such a folder with their special
    # tokens alone and no warning (every word [UNK]); Llama's fails to build with a ValueError.
    (rte_dir / "train.tsv").write_text((rte_dir / "dev.tsv").read_text())
    folder = _without(model_dirs, tmp_path, family, "tokenizer", "vocab", "merges", "special_tokens")
    out = tmp_path / "out"
    err = _fails(capsys, ["train", "--model", str(folder), "--task", "rte", "--glue-dir", str(rte_dir.parent), "--layers", "2",
                          "--out", str(out), *FAST], f"Model folder {folder} has no tokenizer files",  # fmt: skip
                 f"tokenizer.save_pretrained('{folder}')", "point --model at a folder that has one")
    assert "weights" not in err, err  # not blamed on the weights, as the catch-all for load errors would
    assert not out.exists()


def test_a_tokenizer_far_smaller_than_the_models_vocabulary_is_refused(model_dirs):
    from transformers import AutoConfig

    from olft.loading import read_tokenizer

    folder = str(model_dirs["bert"])
    config = AutoConfig.from_pretrained(folder)
    assert len(read_tokenizer(folder, folder, None, config)) == 39  # the tiny tokenizer, of vocab_size 64
    config.vocab_size = 3901  # 39 tokens is just under 1% of it
    with pytest.raises(OlftError, match="has tokenizer files .* but no vocabulary in them: its vocabulary holds 39 of "
                                        "the model's 3901 token ids"):
        read_tokenizer(folder, folder, None, config)


@pytest.mark.parametrize("damage, phrases", [
    ("weights", ["has no weights file (model.safetensors or pytorch_model.bin)", "save the model into it with save_pretrained"]),
    ("config", ["could not read the config of model folder", "is not a valid JSON file", "restore the file"]),
])  # fmt: skip
def test_incomplete_local_model_folder_gets_advice_for_the_folder(model_dirs, rte_dir, tmp_path, capsys, damage, phrases):
    """A local folder's load error says what the folder lacks, not that the model hub is off."""
    (rte_dir / "train.tsv").write_text((rte_dir / "dev.tsv").read_text())
    folder = _without(model_dirs, tmp_path, "bert", *(["model.safetensors"] if damage == "weights" else []))
    if damage == "config":
        (folder / "config.json").write_bytes((folder / "config.json").read_bytes()[:20])  # truncated
    args = ["run", "--model", str(folder), "--task", "rte", "--glue-dir", str(rte_dir.parent), "--out", str(tmp_path / "out"), *FAST]
    err = _fails(capsys, args, *phrases)
    assert "hub" not in err and "alias" not in err and "download" not in err.lower(), err


def test_output_folder_problems(model_dirs, rte_dir, tmp_path, capsys):
    (rte_dir / "train.tsv").write_text((rte_dir / "dev.tsv").read_text())
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _fails(capsys, _run(model_dirs, rte_dir.parent, a_file), "is a file")
    _fails(capsys, _run(model_dirs, rte_dir.parent, a_file / "sub"), "is a file")


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--lr", "-1"), ("--max-train-samples", "0"),
                                         ("--selection-train-samples", "-5"), ("--reduction-factor", "0"), ("--max-length", "0")])
def test_zero_or_negative_sizes(model_dirs, rte_dir, tmp_path, capsys, flag, value):
    _fails(capsys, _run(model_dirs, rte_dir.parent, tmp_path / "o", flag, value), flag)


def test_debug_shows_traceback(model_dirs, tmp_path):
    with pytest.raises(OlftError, match="Unknown task 'nope'. Known tasks: cola"):
        main(["run", "--model", str(model_dirs["gpt2"]), "--task", "nope", "--out", str(tmp_path / "o"), "--debug"])


# -- a model name nothing can resolve: olft's one line, not the hub's request log ------------------------


@pytest.fixture
def unreachable_hub(monkeypatch, capfd):
    """The hub as a machine without network sees it (a closed port), retrying without waiting, and
    logging at its own default level (WARNING, on stderr through its own handler)."""
    import logging
    import sys
    import types

    import huggingface_hub.constants as hub
    import huggingface_hub.utils._http as http

    endpoint = "http://127.0.0.1:9"  # discard port: refused at once
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "ENDPOINT", endpoint)
    monkeypatch.setattr(hub, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub_logger = logging.getLogger("huggingface_hub")
    monkeypatch.setattr(hub_logger, "level", logging.WARNING)
    now = types.SimpleNamespace(write=lambda text: sys.stderr.write(text), flush=lambda: sys.stderr.flush())
    for handler in hub_logger.handlers:  # made at import, on the stderr of that moment: on the test's instead
        monkeypatch.setattr(handler, "stream", now)
    return hub_logger


def test_unresolvable_model_name_raises_without_the_hubs_log_lines(unreachable_hub, capfd):
    from olft.loading import read_config

    with pytest.raises(OlftError, match="Could not load model 'nosuchmodel'.*--model FOLDER, or check the hub id and network"):
        read_config("nosuchmodel")
    err = capfd.readouterr().err
    assert "thrown while requesting" not in err and "Retry" not in err, err
    unreachable_hub.warning("after the lookup")  # the hub's own handler is back
    assert "after the lookup" in capfd.readouterr().err


@pytest.mark.parametrize("offline", [True, False])
def test_unresolvable_model_name_is_one_line(unreachable_hub, capfd, monkeypatch, offline, tmp_path):
    import huggingface_hub.constants as hub

    if offline:
        monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["run", "--model", "nosuchmodel", "--task", "rte", "--glue-dir", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    err = capfd.readouterr().err
    assert err.startswith("olft: error: Could not load model 'nosuchmodel'") and err.count("\n") == 1, err
    assert "alias (minilm-l6, smollm2-135m)" in err and "--model FOLDER" in err
    assert ("switched off (HF_HUB_OFFLINE=1)" in err) == offline


# -- layers the model does not have: refused from its config, before data or weights load ----------------


@pytest.mark.parametrize("args, phrase", [
    # Quoted as typed: `olft train` has no layers= (the strategy it runs is named so).
    (["train", "--layers", "9"], "layer 9 in '--layers 9' is out of range: this model has 4 layers, numbered 0 to 3"),
    (["train", "--layers", "2-5"], "layer 4 in '--layers 2-5' is out of range: this model has 4 layers, numbered 0 to 3"),
    (["train", "--layers", "1+5"], "layer 5 in '--layers 1+5' is out of range"),  # '+' as in layers=1+5: read, not refused
    (["run", "--strategies", "final,layers=2-4"], "layer 4 in 'layers=2-4' is out of range"),
    (["run", "--strategies", "final,layers=1+4"], "layer 4 in 'layers=1+4' is out of range"),
    (["run", "--candidates", "2-9"], "layer 4 in '--candidates 2-9' is out of range: this model has 4 layers, numbered 0 to 3"),
    (["select", "--candidates", "7"], "layer 7 in '--candidates 7' is out of range"),
    (["select", "--candidates", "2-3,X"], "cannot read '--candidates 2-3,X': use middle, all, a range like 4-9"),
    # A layer given twice would train once under a name config.json does not record (layers=2 vs 2+2).
    # One check, one message for both ways of writing layers.
    (["train", "--layers", "2,2"], "layer 2 appears twice in '--layers 2,2': give each layer once, e.g. --layers 2."),
    (["train", "--layers", "1,3,01"], "layer 1 appears twice in '--layers 1,3,01': give each layer once, e.g. --layers 1,3."),
    (["run", "--strategies", "final,layers=3+1+3"], "layer 3 appears twice in 'layers=3+1+3': give each layer once, e.g. layers=1+3."),
])
def test_bad_layers_are_refused_before_data_or_weights_load(model_dirs, tmp_path, capsys, monkeypatch, args, phrase):
    import olft.pipeline

    def never(*_, **__):
        raise AssertionError("loaded before the layers were checked")

    monkeypatch.setattr(olft.pipeline, "load_examples", never)
    monkeypatch.setattr(olft.pipeline, "load_stack", never)
    out = tmp_path / "out"
    missing = str(tmp_path / "no-glue")  # reading data would fail on this first
    _fails(capsys, [*args, "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", missing, "--out", str(out), "-q"], phrase)
    assert not out.exists()


# -- a method the model cannot take: refused once the model is loaded, before the folder is written ------


@pytest.fixture(scope="module")
def deberta_dir(tmp_path_factory):
    from tiny import make_architecture_folder

    return make_architecture_folder("deberta_v2", tmp_path_factory.mktemp("models") / "deberta_v2")


@pytest.mark.parametrize("command", [["train", "--layers", "1"], ["run", "--strategies", "final"], ["select"]])
def test_prefix_on_attention_it_cannot_reach_leaves_no_folder(deberta_dir, tiny_glue, tmp_path, capsys, command):
    """DeBERTa-v2 computes attention itself: the refusal comes before the run folder is made, so
    the advice it gives (another --method, same --out) then works."""
    out = tmp_path / "out"
    args = [*command, "--model", str(deberta_dir), "--task", "sst2", "--glue-dir", str(tiny_glue), "--out", str(out), *FAST]
    _fails(capsys, [*args, "--method", "prefix"], "DisentangledSelfAttention (deberta-v2) computes attention itself",
           "use --method adapter or --method lora")
    assert not out.exists()
    if command[0] == "train":
        assert main([*args, "--method", "adapter", "--max-train-samples", "16"]) == 0
        assert json.loads((out / "results.json").read_text())["status"] == "complete"


def test_prefix_on_latent_attention_is_refused_before_the_run(tiny_glue, tmp_path, capsys):
    """DeepSeek-V3's multi-head latent attention builds keys wider than its config's head_dim (the
    rotary part): the prefix failed only after selection ("Prefix sized (4 heads, 4 dims) but keys
    are ..."); now refused before the run folder is made, naming what fits."""
    from transformers import AutoModel

    from tiny import make_tokenizer, mixed_moe_config

    folder = tmp_path / "deepseek_v3"
    AutoModel.from_config(mixed_moe_config("deepseek_v3")).save_pretrained(folder)
    make_tokenizer(False).save_pretrained(folder)
    out = tmp_path / "out"
    args = ["run", "--model", str(folder), "--task", "rte", "--glue-dir", str(tiny_glue), "--out", str(out), *FAST]
    capsys.readouterr()
    _fails(capsys, [*args, "--method", "prefix"], "DeepseekV3Attention (deepseek_v3) builds keys 8 wide and values 8 wide",
           "use --method adapter or --method lora")
    assert not out.exists()


def test_training_data_of_one_class_is_refused(model_dirs, tmp_path, capsys):
    # A classifier trained on one class learns only to answer it: refused before the model loads.
    (tmp_path / "train.csv").write_text("sentence,label\n" + "".join(f"film {i} was fine,positive\n" for i in range(12)))
    (tmp_path / "dev.csv").write_text("sentence,label\nit was good,1\nit was bad,0\n")
    out = tmp_path / "out"
    args = ["train", "--layers", "0", "--model", str(model_dirs["gpt2"]), "--task", "sst2", "--data-source", "file",
            "--train-file", str(tmp_path / "train.csv"), "--validation-file", str(tmp_path / "dev.csv"), "--out", str(out), *FAST]
    _fails(capsys, args, f"olft: error: {tmp_path / 'train.csv'}: every one of its 12 examples has label 'positive'",
           "add examples of another class (negative)")
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("name", ["glue-sst2", "data.csv"])
def test_a_folder_given_as_a_data_file_is_named_a_folder(model_dirs, tmp_path, capsys, name):
    # It said "Data file not found: data.csv" (the folder is there) or "Unsupported data file glue-sst2".
    folder = tmp_path / name
    folder.mkdir()
    (folder / "train.csv").write_text("sentence,label\nit was good,1\nit was bad,0\n")
    (tmp_path / "dev.csv").write_text("sentence,label\nit was good,1\nit was bad,0\n")
    args = ["train", "--layers", "0", "--model", str(model_dirs["gpt2"]), "--task", "sst2", "--data-source", "file",
            "--train-file", str(folder), "--validation-file", str(tmp_path / "dev.csv"), "--out", str(tmp_path / "out"), *FAST]
    _fails(capsys, args, f"olft: error: {folder} is a folder, not a data file: give the path of one .csv, .tsv or .jsonl "
           "file (it holds train.csv).")


def test_validation_file_that_is_the_training_file_and_a_one_class_draw_are_warned_once(tmp_path, caplog):
    import logging

    from olft.config import DataConfig, RunConfig, TrainConfig
    from olft.pipeline import load_examples
    from olft.tasks import TASKS

    rows = "sentence,label\n" + "".join(f"film {i} was {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(20))
    (tmp_path / "train.csv").write_text(rows)
    (tmp_path / "dev.csv").write_text("sentence,label\nit was good,1\nit was bad,0\n")

    def warnings(validation: str, seed: int = 0, **data) -> list[str]:
        caplog.clear()
        cfg = RunConfig(data=DataConfig(data_source="file", train_file=str(tmp_path / "train.csv"),
                                        validation_file=str(tmp_path / validation), **data), train=TrainConfig(seed=seed))
        with caplog.at_level(logging.WARNING, logger="olft"):
            load_examples(cfg, TASKS["sst2"])
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    assert warnings("dev.csv") == []
    same = warnings("train.csv")
    assert len(same) == 1 and same[0].startswith("validation: every one of its 20 examples is also a training example "
                                                 "(is --validation-file the training data?)"), same
    assert "Pass examples held out of --train-file as --validation-file" in same[0]
    assert warnings("dev.csv", max_train_samples=2) == []  # seed 0 draws one of each class
    # Two examples drawn of 20: with seed 1 both are of one class (the split has both).
    one = warnings("dev.csv", seed=1, max_train_samples=2)
    assert len(one) == 1 and "the 2 examples --max-train-samples 2 drew all have label" in one[0], one
    assert "Raise --max-train-samples" in one[0]


def test_a_validation_label_no_training_example_has_is_warned_of(tmp_path, caplog):
    """An own file of two of MNLI's three classes: the head never learns the third, and the
    validation examples that have it are errors with no sign why in the scores."""
    import logging

    from olft.config import DataConfig, RunConfig, TrainConfig
    from olft.pipeline import load_examples
    from olft.tasks import TASKS

    labels = ["entailment", "neutral", "contradiction"]
    (tmp_path / "train.csv").write_text("premise,hypothesis,label\n" + "".join(
        f"p{i},h{i},{labels[i % 2]}\n" for i in range(20)))  # no contradiction
    (tmp_path / "dev.csv").write_text("premise,hypothesis,label\n" + "".join(
        f"q{i},g{i},{labels[i % 3]}\n" for i in range(9)))

    def warnings(**train) -> list[str]:
        caplog.clear()
        cfg = RunConfig(data=DataConfig(data_source="file", train_file=str(tmp_path / "train.csv"),
                                        validation_file=str(tmp_path / "dev.csv"), **train), train=TrainConfig(seed=0))
        with caplog.at_level(logging.WARNING, logger="olft"):
            load_examples(cfg, TASKS["mnli"])
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    said = warnings()
    assert said == [f"validation: 3 of its 9 examples have a label no training example has ('contradiction': 3): the "
                    "classifier is never taught to answer it, so it almost never predicts it and scores them as errors. "
                    f"Add training examples with that label to {tmp_path / 'train.csv'}."], said
    (tmp_path / "train.csv").write_text("premise,hypothesis,label\n" + "".join(
        f"p{i},h{i},{labels[i % 3]}\n" for i in range(30)))
    assert warnings() == []  # every class taught
    # A draw that missed a class the split has: raise --max-train-samples instead.
    drew = None
    for seed in range(50):
        caplog.clear()
        cfg = RunConfig(data=DataConfig(data_source="file", train_file=str(tmp_path / "train.csv"),
                                        validation_file=str(tmp_path / "dev.csv"), max_train_samples=3),
                        train=TrainConfig(seed=seed))
        with caplog.at_level(logging.WARNING, logger="olft"):
            train, _ = load_examples(cfg, TASKS["mnli"])
        if len({ex.label for ex in train}) == 2:
            drew = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            break
    assert drew and len(drew) == 1 and "Raise --max-train-samples (the whole training split has it)" in drew[0], drew


@pytest.mark.parametrize(
    "extra, phrases",
    [
        (["--max-train-samples", "3"], ["--max-train-samples 3 leaves 3 training examples", "2 to fit the candidates on and 1 to "
                                        "score them on", "raise --max-train-samples to 6 or more at the current --selection-train-samples 1000 and "
                                        "--selection-eval-samples 400 (or to 4 with --selection-train-samples 2 "
                                        "--selection-eval-samples 2)", "--selection-data validation"]),
        (["--max-train-samples", "1"], ["--max-train-samples 1 leaves 1 training example, too few to split",
                                        "raise --max-train-samples to 6 or more"]),
        (["--selection-eval-samples", "1"], ["1 to score them on", "raise --selection-eval-samples 1 to 16;"]),
    ],
    ids=["three", "one", "one-scoring-example"],
)
def test_selection_on_too_few_examples_is_refused_before_anything_trains(model_dirs, tiny_glue, tmp_path, capsys, extra, phrases):
    # A pick among candidates scored on one example reads as a finding (every one 100.0); a single example
    # cannot even be split. Refused before the baselines train (--strategies final would train one first).
    out = tmp_path / "out"
    args = ["run", "--model", str(model_dirs["gpt2"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--out", str(out),
            "--candidates", "all", "--selector", "exhaustive", "--selection-steps", "2", "--max-steps", "2",
            "--strategies", "final,olft", "-q", *extra]
    _fails(capsys, args, "olft: error: selection:", "no difference between the 4 candidates can be measured", *phrases)
    assert not out.exists()
    select = ["select", *args[1:-len(extra) - 3], "-q", *extra]  # `olft select` always selects
    _fails(capsys, select, "no difference between the 4 candidates can be measured")
    if extra == ["--max-train-samples", "3"]:  # one candidate has nothing to select: it runs
        assert main([*args, "--candidates", "1"]) == 0



@pytest.mark.parametrize("command", ["run", "select"])
@pytest.mark.parametrize("data", ["train", "validation"])
def test_a_probe_fit_set_of_one_class_is_refused_before_anything_trains(model_dirs, tiny_glue, tmp_path, capsys, command,
                                                                        data):
    """The probe's fit set is drawn with --seed: 2 examples can be one class (seed 7 on the tiny sst2), and
    the probe cannot rank then. Refused up front, naming the fixes, not mid-run (olft failed after the
    baseline trained and `olft run` exited 0); a seed that draws both classes runs."""
    out = tmp_path / "out"
    args = [command, "--model", str(model_dirs["gpt2"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--out", str(out),
            "--candidates", "all", "--selector", "probe", "--selection-data", data, "--selection-train-samples", "2",
            "--selection-eval-samples", "2", "--max-steps", "2", "-q"]
    if command == "run":
        args += ["--strategies", "final,olft"]  # final would train first
    _fails(capsys, [*args, "--seed", "7"], "olft: error: selection: the probe's fit set (2 training examples drawn with "
           "--seed 7) holds one class only (every one is '", "raise --selection-train-samples (now 2)", "or use another --seed",
           "--candidates")
    assert not out.exists()
    assert main([*args, "--seed", "1"]) == 0

def test_too_few_training_examples_for_the_gradient_or_the_probes_fit_set_name_max_train_samples(model_dirs, tiny_glue,
                                                                                                  tmp_path, capsys):
    """--max-train-samples 1 leaves the gradient selector nothing to split: refused before anything runs,
    naming it, as the other selectors are. Under --selection-data validation the probe fits on the
    training examples: one example is one class, and what limits it is --max-train-samples, not
    --selection-train-samples (1,000 already)."""
    base = ["select", "--model", str(model_dirs["gpt2"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "-q",
            "--max-train-samples", "1"]
    err = _fails(capsys, [*base, "--selector", "gradient", "--out", str(tmp_path / "g")],
                 "--max-train-samples 1 leaves 1 training example, too few for the gradient selector",
                 "raise --max-train-samples to 2 or more", "--candidates")
    assert "disjoint" not in err
    err = _fails(capsys, [*base, "--selector", "probe", "--selection-data", "validation", "--out", str(tmp_path / "p")],
                 "selection (--selection-data validation): --max-train-samples 1 leaves the candidates 1 training example "
                 "to fit on", "Raise --max-train-samples 1 to 2 or more")
    assert "raise --selection-train-samples" not in err and "--max-eval-samples" not in err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("command", ["run", "select"])
def test_validation_selection_on_one_validation_example_is_refused_before_anything_trains(model_dirs, tiny_glue, tmp_path,
                                                                                          capsys, command):
    """Under --selection-data validation the candidates are scored on the validation split: with one
    example there (--max-eval-samples 1) the pick is a guess, refused up front as --selection-data train's
    is (it used to run, train the baselines, and report a 'No signal' choice)."""
    out = tmp_path / "out"
    args = [command, "--model", str(model_dirs["gpt2"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--out", str(out),
            "--candidates", "all", "--selection-data", "validation", "--max-eval-samples", "1", "--max-steps", "2", "-q"]
    if command == "run":
        args += ["--strategies", "final,olft"]
    _fails(capsys, args, "olft: error: selection (--selection-data validation): --max-eval-samples 1 leaves 1 validation "
           "example to score them on", "no difference between the 4 candidates can be measured",
           "Raise --max-eval-samples to 2 or more; or use --selection-data train", "--candidates")
    assert not out.exists()
    assert main([*args, "--max-eval-samples", "2"]) == 0  # two scoring examples: it runs (the later flag wins)


def test_the_small_scoring_set_warning_names_the_tasks_metric(caplog):
    """Accuracy moves 100/n points an example; a correlation has no per-example unit: named, not counted."""
    from olft.stages import _warn_small_scoring_set

    with caplog.at_level(logging.WARNING, logger="olft"):
        _warn_small_scoring_set(17, "--max-train-samples", "pearson")
        _warn_small_scoring_set(10, "--selection-eval-samples (now 10)")
    pearson, accuracy = (r.getMessage() for r in caplog.records)
    assert "one example can swing their pearson widely" in pearson and "points" not in pearson, pearson
    assert "one example moves their accuracy by 10.0 points" in accuracy


def test_selection_set_sizes_truth_table():
    from olft.config import SelectionConfig
    from olft.stages import selection_set_sizes

    s = SelectionConfig()  # 1,000 to fit, 400 to score, shrunk in proportion
    table = {1: (1, 0), 2: (1, 1), 3: (2, 1), 5: (4, 1), 6: (4, 2), 1400: (1000, 400), 5000: (1000, 400)}
    assert {n: selection_set_sizes(n, s) for n in table} == table


def test_a_folder_an_older_olft_wrote_with_gradient_and_loss_is_read_while_a_new_selection_is_refused(model_dirs, tiny_glue,
                                                                                                      tmp_path, capsys):
    """Older olft accepted --selector gradient --selection-metric loss (it trained final and full, and
    failed olft only): such a folder's config.json must still read for evaluate, predict and export.
    A selection asked for with the pair is refused before anything trains (no held-out loss to rank)."""
    out = tmp_path / "old"
    base = ["--model", str(model_dirs["gpt2"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--max-steps", "1", "-q"]
    assert main(["run", *base, "--strategies", "final", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    config["selection"].update(selector="gradient", selection_metric="loss")
    (out / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", "--run", str(out), "-q"]) == 0
    capsys.readouterr()
    refused = "olft: error: --selection-metric loss cannot rank under --selector gradient"
    for command in (["run", *base, "--out", str(tmp_path / "new")], ["select", *base, "--out", str(tmp_path / "new")]):
        _fails(capsys, [*command, "--selector", "gradient", "--selection-metric", "loss"], refused, "--selection-metric score")
        assert not (tmp_path / "new").exists()
    # Without olft among the strategies nothing ranks: the pair is not read, so not refused.
    assert main(["run", *base, "--strategies", "final", "--selector", "gradient", "--selection-metric", "loss",
                 "--out", str(tmp_path / "final")]) == 0


def test_candidates_are_range_checked_only_where_olft_selects(model_dirs, tiny_glue, tmp_path, capsys, caplog):
    """`olft train`, and `olft run` without olft among its strategies, read no --candidates: it warned that
    --candidates 9 was ignored, then refused it as out of range. Where olft selects it is still refused."""
    base = ["--model", str(model_dirs["gpt2"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--max-steps", "1", "-q",
            "--candidates", "9"]
    with caplog.at_level(logging.WARNING, logger="olft"):
        assert main(["train", *base, "--layers", "1", "--out", str(tmp_path / "train")]) == 0
    assert any("--candidates is ignored by `olft train`" in r.getMessage() for r in caplog.records), caplog.text
    assert main(["run", *base, "--strategies", "final", "--out", str(tmp_path / "final")]) == 0
    capsys.readouterr()
    for command in (["run", *base, "--strategies", "final,olft"], ["select", *base]):
        _fails(capsys, [*command, "--out", str(tmp_path / "olft")], "Layer 9 in '--candidates 9' is out of range")
        assert not (tmp_path / "olft").exists()


def _refusal(n_train: int, cap: int | None, **selection) -> str:
    from olft.config import SelectionConfig
    from olft.stages import check_selection_data

    with pytest.raises(OlftError) as exc:
        check_selection_data(SelectionConfig(**selection), n_train, 4, cap)
    return str(exc.value)


def _accepted(n_train: int, cap: int | None, **selection) -> None:
    from olft.config import SelectionConfig
    from olft.stages import check_selection_data

    check_selection_data(SelectionConfig(**selection), n_train, 4, cap)


def test_a_training_split_smaller_than_max_train_samples_is_named_in_the_fix_not_the_cap():
    """A cap of 500 above a 3-example split limits nothing: the fix names the split, as the problem does
    (it said 'Raise --max-train-samples to 6', and the cap is 500 already)."""
    msg = _refusal(3, 500)
    assert "the training split holds 3 examples" in msg and "Use a training split of 6 examples or more at the current --selection-train-samples 1000 and --selection-eval-samples 400 (or of 4 with" in msg, msg
    assert "--max-train-samples" not in msg, msg
    msg = _refusal(1, 500, selector="gradient")
    assert "the training split holds 1 example" in msg and "Use a training split of 2 examples or more" in msg, msg
    assert "--max-train-samples" not in msg, msg
    msg = _refusal(1, 1, selector="gradient")  # the cap does limit it
    assert "Raise --max-train-samples to 2 or more" in msg, msg


def test_a_selection_set_fix_is_one_that_gives_both_sets_two_examples():
    """'Raise X' only where raising X, the other limits as they are, gives both selection sets 2 examples;
    otherwise the fix names what does limit them (--max-train-samples, or the split), with X if needed."""
    # 96 examples of 1,000 + 2 shrink to 95 + 1 (it said 'raise --selection-eval-samples 1 to 2 or more'):
    # 16 is the fewest that leaves 2 to score on.
    msg = _refusal(96, None, selection_eval_samples=1)
    assert "Raise --selection-eval-samples 1 to 16;" in msg and "to 2" not in msg, msg
    _refusal(96, None, selection_eval_samples=15)
    _accepted(96, None, selection_eval_samples=16)
    # 3 examples give 2 and 1 whatever --selection-eval-samples says: the cap must rise with it.
    msg = _refusal(3, 3, selection_eval_samples=1)
    assert "Raise --selection-eval-samples" not in msg, msg
    assert ("Raise --max-train-samples to 752 or more and --selection-eval-samples 1 to 2 at the current "
            "--selection-train-samples 1000 (or to 4 with --selection-train-samples 2 --selection-eval-samples 2)") in msg, msg
    _refusal(751, None, selection_eval_samples=2)
    _accepted(752, None, selection_eval_samples=2)
    _accepted(4, None, selection_train_samples=2, selection_eval_samples=2)
    msg = _refusal(3, None, selection_train_samples=1, selection_eval_samples=1)
    assert ("Use a training split of 4 examples or more and raise --selection-train-samples 1 and "
            "--selection-eval-samples 1 to 2;") in msg, msg
    # Under --selection-data validation the fit set is min(--selection-train-samples, the training examples).
    msg = _refusal(1, 1, selection_data="validation", selection_train_samples=1)
    assert ("--selection-train-samples 1 and --max-train-samples 1 leave the candidates 1 training example to fit on"
            in msg and "Raise --selection-train-samples 1 and --max-train-samples 1 to 2 or more;" in msg), msg
    msg = _refusal(1, None, selection_data="validation", selection_train_samples=1)
    assert ("Raise --selection-train-samples 1 to 2 or more and use a training split of 2 examples or more;" in msg), msg
    msg = _refusal(5, None, selection_data="validation", selection_train_samples=1)
    assert "--selection-train-samples 1 leaves" in msg and "Raise --selection-train-samples 1 to 2 or more;" in msg, msg
    msg = _refusal(1, 1, selection_data="validation")
    assert "--max-train-samples 1 leaves" in msg and "Raise --max-train-samples 1 to 2 or more;" in msg, msg
    assert "--selection-train-samples" not in msg, msg


def test_regression_training_data_of_one_value_is_refused_and_an_undefined_correlation_is_marked(model_dirs, tmp_path, capsys):
    # As a one-class classification split: a regression trained on one value learns only to predict it.
    rows = ["a man,a dog", "the cat,a cat", "the plot,good film", "a bird,a song"]
    (tmp_path / "const.csv").write_text("sentence1,sentence2,label\n" + "".join(f"{r},3\n" for r in rows))
    (tmp_path / "vary.csv").write_text("sentence1,sentence2,label\n" + "".join(f"{r},{i}.5\n" for i, r in enumerate(rows)))
    out = tmp_path / "out"
    args = ["run", "--model", str(model_dirs["bert"]), "--task", "stsb", "--data-source", "file", "--validation-file",
            str(tmp_path / "const.csv"), "--max-steps", "2", "--strategies", "olft,final", "--candidates", "1", "-q"]
    _fails(capsys, [*args, "--train-file", str(tmp_path / "const.csv"), "--out", str(out)],
           f"olft: error: {tmp_path / 'const.csv'}: every one of its 4 examples has the score 3:",
           "add examples with scores other than 3")
    assert not out.exists()
    # Constant validation labels: Pearson is undefined there, and table.md says so, as `olft evaluate` does.
    assert main([*args, "--train-file", str(tmp_path / "vary.csv"), "--out", str(out)]) == 0
    text = (out / "table.md").read_text()
    assert "| olft | 1 | undefined § l-1 |" in text and "| final | 3 | undefined § |" in text, text
    assert ("§ pearson on validation is undefined: all 4 labelled rows have the label 3 (a correlation needs different "
            "scores) (results.json's number for it is a stand-in") in text, text
    assert text.count("undefined §") == 4  # Table 2's score column too
    assert "0.0" not in text.split("Table 2")[0].split("Learning rate")[0]  # no stand-in shown as a score
    # Candidates scored on those constant labels: each one's Pearson is undefined, marked so (not its stand-in 0.0)
    sel_out = tmp_path / "sel"
    assert main(["select", *args[1:9], "--max-steps", "2", "-q", "--train-file", str(tmp_path / "vary.csv"), "--out", str(sel_out), "--candidates",
                 "0,1", "--selector", "exhaustive", "--selection-data", "validation", "--selection-steps", "2"]) == 0
    sel = json.loads((sel_out / "results.json").read_text())["selection"]
    assert all(c["undefined"] for c in sel["candidates"]), sel["candidates"]
    table = (sel_out / "selection.md").read_text() if (sel_out / "selection.md").exists() else (sel_out / "table.md").read_text()
    assert "| 0 | undefined § |" in table and "| 1 | undefined § |" in table, table
    assert "§ pearson on the selection's scoring set is undefined" in table and "(0.0)" not in table, table


def test_a_max_train_samples_draw_of_one_value_is_warned_about_as_one_class_is(caplog):
    """A regression's --max-train-samples draw of one score, from a split whose scores vary: warned,
    as a classification draw of one class is (the whole split of one value is refused)."""
    from types import SimpleNamespace

    from olft import tasks
    from olft.pipeline import check_splits

    cfg = SimpleNamespace(data=SimpleNamespace(train_file=None, data_source="glue", max_train_samples=2))
    every = [tasks.Example(("a", "b"), float(v)) for v in (3, 3, 1.5)]
    with caplog.at_level(logging.WARNING, logger="olft"):
        check_splits(cfg, tasks.get_task("stsb"), every, every[:2], {})
        check_splits(cfg, tasks.get_task("stsb"), every, every[1:], {})
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("train: the 2 examples --max-train-samples 2 drew all have the score 3 (STS-B's training "
                           "split has scores that vary): a regression trained on one value"), said
    assert "Raise --max-train-samples" in said


def test_a_full_disk_mid_run_is_one_line_and_the_same_command_continues(model_dirs, tiny_glue, tmp_path, capsys, monkeypatch):
    """ENOSPC while saving a strategy's weights, and again while recording the stop: one line naming the
    fix, exit 2 (not two tracebacks and exit 1); once space is back the same command finishes."""
    import errno

    from olft import report, runfolder

    out = tmp_path / "r"
    args = _run(model_dirs, tiny_glue, out, "--strategies", "final")
    full = OSError(errno.ENOSPC, "No space left on device")

    write_json, hit = runfolder.report.write_json, []

    def no_space(*a, **k):
        hit.append(a)
        raise full

    def then_none(*a, **k):  # the stop's own record fails the same way, once the disk is full
        return no_space(*a) if hit else write_json(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(report, "save_weights", no_space)
        m.setattr(runfolder.report, "write_json", then_none)
        _fails(capsys, args, "no space left on the device", "rerun the same command")
    assert len(hit) == 2  # the weights, then results.json's record of the stop
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["status"] == "complete"


def test_a_disk_full_from_the_start_leaves_no_write_probe(model_dirs, tiny_glue, tmp_path, capsys, monkeypatch):
    """The writability probe is created, then its write fails (a full disk): refused in one line, and the
    probe file is not left in the folder for a later run to trip over."""
    import errno
    from pathlib import Path

    write_text = Path.write_text

    def full(self, *a, **k):
        if self.name != ".write-test":
            return write_text(self, *a, **k)
        self.touch()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "r"
    _fails(capsys, _run(model_dirs, tiny_glue, out), "cannot write to output folder", "no space left")
    assert not list(out.rglob(".write-test"))


@pytest.mark.parametrize("config, phrase", [
    ("mamba", "MambaBlock, the repeated block of this mamba model, has no attention module: olft tunes transformer layers"),
    ("t5", "T5Model is an encoder-decoder model: olft tunes one stack of layers"),
    ("bert", "has no tokenizer files"),  # a family olft runs: the tokenizer is what is missing first
])  # fmt: skip
def test_a_config_only_folder_of_a_model_olft_cannot_tune_is_refused_for_that_first(tmp_path, capsys, config, phrase):
    """A folder with neither tokenizer nor weights, of a model that is no transformer olft tunes: the
    family decides, so it is named first (from the config alone), not the tokenizer, whose fix would
    only lead to the family's refusal."""
    from transformers import BertConfig, MambaConfig, T5Config

    folder = tmp_path / config
    {"mamba": MambaConfig(hidden_size=16, num_hidden_layers=2, vocab_size=32, state_size=4),
     "t5": T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=32, d_kv=8),
     "bert": BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=32),
     }[config].save_pretrained(folder)
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    err = _fails(capsys, ["info", "--model", str(folder)], phrase)
    assert config == "bert" or "tokenizer" not in err, err


def test_the_python_api_refuses_a_config_it_cannot_read_naming_the_fix(tmp_path):
    """RunConfig.from_dict names an unknown group or option (with the closest name) and a group that
    is no mapping, as OlftError; olft.run and friends take a mapping too, and name how to make a
    RunConfig from anything else (a path) instead of failing on an attribute."""
    import olft

    for data, phrase in (({"train": {"lrr": 1}}, "Unknown option train.lrr. Did you mean train.lr?"),
                         ({"trian": {"lr": 1}}, "Unknown config group or option 'trian'. Did you mean 'train'?"),
                         ({"train": 5}, "Config group 'train' must be a mapping of its options"),
                         ([1], "A config is a mapping of groups")):
        with pytest.raises(olft.OlftError, match=re.escape(phrase)):
            olft.RunConfig.from_dict(data)
    assert olft.RunConfig.from_dict({"train": {"lr": 2e-3}, "out": "x"}).train.lr == 2e-3
    # each value typed as the CLI types a config file's, before anything loads: a seed of "x" failed
    # mid-run (a raw ValueError, the folder left unfinished), 2.5 steps and `epochs: true` ran
    for data, phrase in (({"train": {"seed": "x"}}, "train.seed expects a whole number, got 'x'."),
                         ({"train": {"max_steps": 2.5}}, "train.max_steps expects a whole number (or null), got 2.5."),
                         ({"train": {"epochs": True}}, "train.epochs expects a number, got True."),
                         ({"train": {"cache": "no"}}, "train.cache expects true or false, got 'no'."),
                         ({"model": {"dtype": 16}}, "model.dtype expects a string, got 16."),
                         # a value outside an option's choices ran (selector 'random' to the end) or failed late
                         ({"selection": {"selector": "probe-halvin"}}, "selection.selector expects one of "
                          "exhaustive, halving, probe, gradient, probe-halving, auto, got 'probe-halvin'. Did you mean 'probe-halving'?"),
                         ({"method": {"placement": "middle"}}, "expects one of houlsby, pfeiffer, got 'middle'."),
                         ({"model": {"attn_implementation": "flash"}}, "expects one of sdpa, eager, got 'flash'."),
                         ({"out": 3}, "out expects a string (or null), got 3."),
                         # names no model can have, refused as the config is made rather than when the run starts
                         ({"data": {"task": "sst3"}}, "Unknown task 'sst3'. Known tasks: cola, mnli, mnli-mm, mrpc, qnli, "
                          "qqp, rte, sst2, stsb, wnli. Did you mean 'sst2'?"),
                         ({"strategies": "olft,fnal"}, "Unknown strategy 'fnal': use olft, final, full or layers=I+J"),
                         ({"strategies": ["olft", "layers=x"]}, "Cannot read 'layers=x'"),
                         ({"selection": {"candidates": "2-4,9-"}}, "Cannot read '--candidates 2-4,9-'")):
        with pytest.raises(olft.OlftError, match=re.escape(phrase)):
            olft.RunConfig.from_dict(data)
    # what PyYAML's safe_load gives for `lr: 1e-3` (a string), a JSON 4.0 for steps, a pathlib.Path,
    # a list of strategy names (as olft.run takes them)
    for given, phrase in (("train.lr", "given takes the grouped keys of the options set, e.g. given=['train.lr']"),
                          (["train.lrr"], "given names 'train.lrr', which is no option of RunConfig. Did you mean 'train.lr'?"),
                          (5, "given takes the grouped keys of the options set (e.g. given=['train.lr']), or None, not 5.")):
        with pytest.raises(olft.OlftError, match=re.escape(phrase)):
            olft.run({"out": str(tmp_path / "never")}, given=given)
    assert not (tmp_path / "never").exists()
    assert olft.TrainConfig(strategy_lr="OLFT=3e-3,all=1e-3").lr_by_strategy() == {"olft": 3e-3, "full": 1e-3}  # as --strategies reads names
    # a task by any spelling is kept by its canonical name: one task, one config and one default folder name
    assert [olft.RunConfig.from_dict({"data": {"task": t}}).data.task for t in ("SST-2", " sst_2", "MNLI-MM")] == ["sst2", "sst2", "mnli-mm"]
    cfg = olft.RunConfig.from_dict({"train": {"lr": "1e-3", "max_steps": 4.0}, "out": tmp_path, "strategies": ["olft", "final"]})
    assert (cfg.train.lr, cfg.train.max_steps, cfg.out, cfg.strategies) == (1e-3, 4, str(tmp_path), "olft,final")
    assert type(cfg.train.max_steps) is int
    # the dataclasses themselves, as the README's Python example builds them: a seed of "1" failed mid-run
    # (a str plus an int), a rank of 2.5 in torch, a Path for out in json, each leaving a folder behind
    with pytest.raises(olft.OlftError, match=re.escape("method.lora_rank expects a whole number, got 2.5.")):
        olft.MethodConfig("lora", lora_rank=2.5)
    with pytest.raises(olft.OlftError, match=re.escape("data.max_train_samples expects a whole number")):
        olft.DataConfig(max_train_samples=2.5)
    assert olft.TrainConfig(seed="1").seed == 1 and olft.RunConfig(out=tmp_path).out == str(tmp_path)
    assert olft.RunConfig(train={"lr": 2e-3}).train == olft.TrainConfig(lr=2e-3)
    with pytest.raises(olft.OlftError, match=re.escape("Unknown option train.lrr. Did you mean train.lr?")):
        olft.RunConfig(train={"lrr": 2e-3})
    with pytest.raises(olft.OlftError, match=re.escape("RunConfig's train must be a TrainConfig (or a mapping of its options)")):
        olft.RunConfig(train=5)
    # YAML reads `candidates: 3` as a number and `[3, 5]` as a list: the layers they name
    assert [olft.SelectionConfig(candidates=c).candidates for c in (3, [3, 5], "2-4")] == ["3", "3,5", "2-4"]
    # set after the config was made: olft.run checks it again before anything loads (it crashed after
    # the selection, with a TypeError, leaving a folder that said to continue it)
    late = olft.RunConfig(out=str(tmp_path / "late"))
    late.train.lr = "abc"
    with pytest.raises(olft.OlftError, match=re.escape("train.lr expects a number, got 'abc'.")):
        olft.run(late)
    assert not (tmp_path / "late").exists()
    for call in (olft.run, olft.select_layer, olft.info):
        with pytest.raises(olft.OlftError, match=re.escape("takes a RunConfig (olft.RunConfig(...), or olft.RunConfig.from_dict")):
            call(str(tmp_path / "config.json"))
    with pytest.raises(olft.OlftError, match=re.escape("Unknown method 'lorra': use one of adapter, lora, prefix. Did you mean 'lora'?")):
        olft.MethodConfig("lorra")  # refused where it is made, not after the data loads
    with pytest.raises(olft.OlftError, match="Unknown option model.nam"):
        olft.info({"model": {"nam": "x"}})


def test_a_max_steps_of_many_epochs_is_warned_of(caplog):
    """--max-steps replaces --epochs: a million steps on 64 examples just runs, for every strategy."""
    import logging

    from olft.config import RunConfig, TrainConfig
    from olft.pipeline import check_max_steps

    def warnings(**train) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="olft"):
            check_max_steps(RunConfig(train=TrainConfig(**train)), 64)
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    said = warnings(max_steps=1_000_000, batch_size=16)
    assert said == ["--max-steps 1000000 at --batch-size 16 is 250000 passes over the 64 training examples, for every "
                    "strategy (60000 warmup steps alone at --warmup-ratio 0.06). If that is not meant, lower --max-steps "
                    "or leave it out to train for --epochs (now 3)."], said
    assert warnings(max_steps=400, batch_size=16) == []  # 100 passes: a long run, not a slip
    assert warnings(max_steps=401, batch_size=16) != []
    assert warnings() == []  # --epochs alone
