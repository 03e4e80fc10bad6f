"""Tests for olft.data: longest-first truncation, model inputs beyond input_ids, padding, limits."""

import os
from pathlib import Path

import pytest
import torch
from transformers import BertConfig

from olft.data import collate, encode, fingerprint, longest_first, resolve_max_length
from olft.errors import OlftError
from olft.tasks import TASKS, Example, Line, load_file
from tiny import make_config, make_tokenizer


@pytest.fixture(scope="module")
def bert_tok():
    return make_tokenizer(encoder=True)


@pytest.fixture(scope="module")
def gpt_tok():
    tok = make_tokenizer(encoder=False)
    tok.pad_token = tok.eos_token
    return tok


def _pair(a: str, b: str, label: int = 0, source: Line | str | None = None) -> Example:
    return Example((a, b), label, source)


# Truth table of Hugging Face tokenizers' longest_first (tokenizers/src/utils/truncation.rs).
@pytest.mark.parametrize(
    ("lengths", "budget", "kept"),
    [
        ((3, 4), 10, (3, 4)),  # fits: nothing cut
        ((10, 3), 8, (5, 3)),  # only the longer text is cut
        ((3, 10), 8, (3, 5)),
        ((10, 10), 8, (4, 4)),  # both cut, evenly
        ((10, 9), 7, (4, 3)),  # odd budget: the longer keeps the extra token
        ((9, 10), 7, (3, 4)),
        ((5, 5), 7, (3, 4)),  # a tie: the second keeps the extra token
        ((100, 1), 2, (1, 1)),  # the smallest budget keeps one token of each
        ((1, 100), 2, (1, 1)),
        ((12,), 5, (5,)),
        ((4,), 5, (4,)),
    ],
)
def test_longest_first_truth_table(lengths, budget, kept):
    assert longest_first(lengths, budget) == kept


def test_encoder_truncation_matches_the_tokenizers_own(bert_tok):
    """The per-text counts come from `longest_first`: they must agree with what the tokenizer cut."""
    words = "the a movie film was is good great bad awful".split()
    for n1 in range(1, 9):
        for n2 in range(1, 9):
            a, b = " ".join(words[:n1]), " ".join(reversed(words[:n2]))
            for max_length in range(5, n1 + n2 + 4):
                got = bert_tok([a], [b], truncation="longest_first", max_length=max_length)
                seq = got.sequence_ids(0)
                assert (seq.count(0), seq.count(1)) == longest_first((n1, n2), max_length - 3), (n1, n2, max_length)


def test_bert_pairs_get_segment_ids_that_survive_collate(bert_tok):
    examples = [_pair("the cat sat", "a dog"), _pair("good", "bad movie really")]
    enc = encode(bert_tok, examples, 64, model_inputs=("token_type_ids",))
    # [CLS] the cat sat [SEP] | a dog [SEP]  and  [CLS] good [SEP] | bad movie really [SEP]
    assert enc.extra["token_type_ids"] == [[0] * 5 + [1] * 3, [0] * 3 + [1] * 4]
    batch = collate(enc, [0, 1], regression=False)
    assert batch.extra["token_type_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 0]]
    assert batch.attention_mask.tolist() == [[1] * 8, [1] * 7 + [0]]
    assert batch.extra["token_type_ids"].shape == batch.input_ids.shape
    # Only what the model takes is kept; without it the batch carries no extra inputs.
    assert collate(encode(bert_tok, examples, 64, model_inputs=()), [0, 1], False).extra == {}


def test_bert_pair_is_cut_longest_first_with_segments_intact(bert_tok):
    long = "the cat sat on the mat " * 5  # 30 tokens
    enc = encode(bert_tok, [_pair(long, "a dog"), _pair("yes", "no")], 12)
    assert enc.truncated == {"examples": 1, "text_a": 1, "text_b": 0}
    ids = bert_tok.convert_ids_to_tokens(enc.input_ids[0])
    assert ids == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "the", "[SEP]", "a", "dog", "[SEP]"]
    assert enc.extra["token_type_ids"][0] == [0] * 9 + [1] * 3


def test_decoder_pair_keeps_its_hypothesis(gpt_tok):
    """Decoders join the texts with a newline; cutting the end would drop the hypothesis."""
    long = "the cat sat on the mat " * 5  # 30 tokens
    examples = [_pair(long, "yes a dog runs"), _pair("a film", "good"), _pair("bad " * 20, "awful " * 20)]
    enc = encode(gpt_tok, examples, 12)
    tokens = [gpt_tok.convert_ids_to_tokens(ids) for ids in enc.input_ids]
    assert tokens[0] == ["<bos>", "the", "cat", "sat", "on", "the", "mat", "the", "yes", "a", "dog", "runs"]
    assert tokens[1] == ["<bos>", "a", "film", "good"]  # short examples are exactly as before
    assert tokens[2] == ["<bos>"] + ["bad"] * 5 + ["awful"] * 6  # both long: the budget is shared
    assert enc.truncated == {"examples": 2, "text_a": 2, "text_b": 1}
    assert all(len(ids) <= 12 for ids in enc.input_ids)


def test_single_text_truncation_counts(gpt_tok):
    enc = encode(gpt_tok, [Example(("the cat " * 10,), 1), Example(("good",), 0)], 6)
    assert enc.truncated == {"examples": 1, "text_a": 1}
    assert [len(ids) for ids in enc.input_ids] == [6, 2]


@pytest.mark.parametrize("encoder", [True, False])
def test_zero_token_text_is_refused_with_its_source(encoder, bert_tok, gpt_tok):
    tok = bert_tok if encoder else gpt_tok
    examples = [_pair("a cat", "yes", source=Line("d.tsv", 2)), _pair("a dog", "  ", source=Line("d.tsv", 3))]
    with pytest.raises(OlftError, match=r"^d\.tsv, line 3: text_b \(text 2 of 2\) is empty after tokenization"):
        encode(tok, examples, 32)
    with pytest.raises(OlftError, match=r"^example 1 of its split: its text is empty"):
        encode(tok, [Example(("",), 0)], 32)
    with pytest.raises(OlftError, match="The split is empty"):
        encode(tok, [], 32)


def test_max_length_limits(bert_tok, gpt_tok):
    config = make_config("bert")  # 64 positions
    assert resolve_max_length(None, bert_tok, 2, config) == 64  # the default 128, capped
    assert resolve_max_length(None, bert_tok, 2, BertConfig(max_position_embeddings=512)) == 128
    assert resolve_max_length(64, bert_tok, 2, config) == 64 and resolve_max_length(5, bert_tok, 2, config) == 5
    with pytest.raises(OlftError, match=r"^--max-length 65 is more than .* Use --max-length 64 or less\.$"):
        resolve_max_length(65, bert_tok, 2, config)
    with pytest.raises(OlftError, match=r"need 5\. Use --max-length 5 or more\.$"):
        resolve_max_length(4, bert_tok, 2, config)
    with pytest.raises(OlftError, match=r"need 3\. Use --max-length 3 or more\.$"):  # [CLS] text [SEP]
        resolve_max_length(2, bert_tok, 1, config)
    bert_tok_short = make_tokenizer(encoder=True)
    bert_tok_short.model_max_length = 16  # the tokenizer's own limit counts too
    with pytest.raises(OlftError, match="Use --max-length 16 or less"):
        resolve_max_length(32, bert_tok_short, 2, config)
    assert resolve_max_length(3, gpt_tok, 2, make_config("gpt2")) == 3  # <bos> a b


def test_collate_pads_right_and_keeps_labels(gpt_tok):
    enc = encode(gpt_tok, [Example(("good film",), 1), Example(("bad",), 0)], 32)
    batch = collate(enc, [1, 0], regression=False)
    pad = gpt_tok.pad_token_id
    assert batch.input_ids.tolist() == [enc.input_ids[1] + [pad], enc.input_ids[0]]
    assert batch.labels.tolist() == [0, 1] and batch.indices.tolist() == [1, 0]
    assert collate(enc, [0], regression=True).labels.dtype == torch.float32


SMOLLM2 = Path(os.environ.get("OLFT_CACHE", Path.home() / ".cache" / "olft")) / "smollm2-135m"


@pytest.mark.slow
def test_smollm2_rte_dev_never_loses_a_hypothesis():
    """The issue's case: at 128 tokens, 27 of 277 RTE dev pairs lost the hypothesis entirely."""
    from transformers import AutoTokenizer

    from conftest import glue_file
    from olft import tasks

    if not (SMOLLM2 / "tokenizer.json").is_file():
        pytest.skip("smollm2-135m is converted on first use (olft info --model smollm2-135m)")
    tok = AutoTokenizer.from_pretrained(SMOLLM2)
    tok.pad_token = tok.pad_token or tok.eos_token
    dev = tasks.load_glue(tasks.get_task("rte"), "validation", glue_file("RTE/dev.tsv").parents[1])
    enc = encode(tok, dev, 128)
    assert enc.truncated["examples"] > 0 and enc.truncated["text_b"] == 0
    for ex, ids in zip(dev, enc.input_ids, strict=True):
        hypothesis = tok(ex.texts[1], add_special_tokens=False)["input_ids"]
        assert len(ids) <= 128 and ids[-len(hypothesis) + 1 :] == hypothesis[1:]


def test_zero_token_texts_are_all_named_in_one_message(bert_tok):
    """Several blank texts: one message names the first five lines, how many more, and the fix."""
    examples = [_pair("a cat", "yes" if n not in (1, 3, 4, 6, 7, 8, 9) else " ", source=Line("d.tsv", n + 2)) for n in range(10)]
    examples[4] = _pair("", "yes", source=Line("d.tsv", 6))  # the first text blank counts too
    with pytest.raises(OlftError, match=r"^d\.tsv, lines 3, 5, 6, 8, 9 and 2 more \(7 rows\): a text is empty after "
                                        r"tokenization .*Fill in or remove those rows\.$"):
        encode(bert_tok, examples, 32)
    two = [_pair(" ", "b", source=Line("x.csv", 2)), _pair("a", " ", source=Line("y.jsonl", 4)), Example(("a", ""), 0)]
    with pytest.raises(OlftError, match=r"^x\.csv, line 2; y\.jsonl, line 4; example 3 of its split \(3 rows\): a text is empty"):
        encode(bert_tok, two, 32)


def test_data_errors_name_a_line_in_one_form(tmp_path, bert_tok):
    """A reader's error and a tokenization error name a file line the same way ("f.csv, line 3:")."""
    bad_label = tmp_path / "bad_label.csv"
    bad_label.write_text("sentence,label\na fine text,1\nanother,neg\n")
    with pytest.raises(OlftError) as read_err:
        load_file(TASKS["sst2"], bad_label)
    blank = tmp_path / "blank.csv"
    blank.write_text("sentence,label\na fine text,1\n\" \",0\n")
    with pytest.raises(OlftError) as encode_err:
        encode(bert_tok, load_file(TASKS["sst2"], blank), 32)
    assert str(read_err.value).startswith(f"{bad_label}, line 3: label 'neg' is not a SST-2 label.")
    assert str(encode_err.value).startswith(f"{blank}, line 3: its text is empty after tokenization")
    blanks = tmp_path / "odd, line 9.csv"  # a name that reads like a location is named whole
    blanks.write_text("sentence,label\n\" \",1\na fine text,1\n\" \",0\n")
    with pytest.raises(OlftError) as several:
        encode(bert_tok, load_file(TASKS["sst2"], blanks), 32)
    assert str(several.value).startswith(f"{blanks}, lines 2, 4 (2 rows): a text is empty after tokenization")


def test_roberta_positions_start_after_its_padding_index(bert_tok):
    """RoBERTa numbers positions from pad_token_id + 1: its longest input is max_position_embeddings
    less that offset, checked against the model's own forward (one token more is out of range)."""
    import torch

    from olft.data import usable_positions
    from tiny import build_model

    model, _ = build_model("roberta")  # 66 positions
    n = 66 - model.config.pad_token_id - 1
    assert usable_positions(model.config) == n < 66 and usable_positions(make_config("bert")) == 64
    assert resolve_max_length(None, bert_tok, 2, model.config) == n
    with pytest.raises(OlftError, match=rf"Use --max-length {n} or less\.$"):
        resolve_max_length(n + 1, bert_tok, 2, model.config)
    model(input_ids=torch.full((1, n), 5))  # the longest input olft lets through runs
    with pytest.raises((IndexError, RuntimeError)):
        model(input_ids=torch.full((1, n + 1), 5))


def test_the_data_fingerprint_follows_texts_labels_and_order_not_where_they_came_from():
    base = [Example(("a good film", "yes"), 1), Example(("dull", "no"), 0)]
    same = [Example(["a good film", "yes"], 1, source=Line("other.tsv", 9)), Example(("dull", "no"), 0, source="row 2")]
    assert fingerprint(base) == fingerprint(same)  # a list of texts or a tuple, from a file or `datasets`: the same data
    # Known answer: each text and the label's repr, length-prefixed. The format must not drift (folders recorded
    # with it would refuse their own data), hence a fixed value, not a recomputation.
    assert fingerprint(base) == "7a06a06ee524589548638d22c73d01e5191608f490d36f6ba3db2b1c7fa7fac3"
    others = {
        "label flipped": [Example(("a good film", "yes"), 0), base[1]],
        "text edited": [Example(("a good film!", "yes"), 1), base[1]],
        "order": base[::-1],
        "a character moved between texts": [Example(("a good fil", "myes"), 1), base[1]],
        "an example dropped": base[:1],
        "a float label": [Example(("a good film", "yes"), 1.0), base[1]],
    }
    prints = {name: fingerprint(examples) for name, examples in others.items()}
    assert fingerprint(base) not in prints.values() and len(set(prints.values())) == len(prints)
    assert fingerprint([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of nothing
