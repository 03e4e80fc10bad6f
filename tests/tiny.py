"""Tiny random models of each family and word-level tokenizers, built in code (no downloads)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

WORDS = (
    "the a movie film was is good great bad awful plot acting really not very fun dull story "
    "yes no cat dog runs sat on mat park man woman sees it this that and but"
).split()


def make_tokenizer(encoder: bool):
    """Word-level tokenizer: BERT-like ([CLS] a [SEP] b [SEP]) or decoder-like (no pad token)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if encoder else ["<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[1] if encoder else "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if encoder:
        cls, sep = vocab["[CLS]"], vocab["[SEP]"]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
        return PreTrainedTokenizerFast(  # segment ids among its outputs, as BertTokenizer has
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    bos = vocab["<bos>"]
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>")


def make_config(family: str, layers: int = 4, hidden: int = 32):
    from transformers import BertConfig, GPT2Config, LlamaConfig, MistralConfig

    vocab = 64
    if family == "gpt2":
        return GPT2Config(n_layer=layers, n_embd=hidden, n_head=2, vocab_size=vocab, n_positions=64, bos_token_id=1, eos_token_id=2)
    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, vocab_size=vocab, max_position_embeddings=64)
    if family == "llama":
        return LlamaConfig(num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2, **common)
    if family == "mistral":
        return MistralConfig(num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2, sliding_window=None, **common)
    if family == "bert":
        return BertConfig(num_attention_heads=2, pad_token_id=0, **common)
    raise ValueError(family)


def make_model_folder(family: str, path: Path, layers: int = 4, hidden: int = 32, seed: int = 0) -> Path:
    """Save a random model of `family` and its tokenizer as a Hugging Face folder."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(make_config(family, layers, hidden))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    make_tokenizer(family == "bert").save_pretrained(path)
    return path


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS[:20]) for _ in range(n))


def make_glue(root: Path, n_train: int = 96, n_dev: int = 40, seed: int = 0) -> Path:
    """A GLUE folder (SST-2 and RTE, original layout) with a learnable signal."""
    rng = random.Random(seed)
    sst, rte = root / "SST-2", root / "RTE"
    sst.mkdir(parents=True, exist_ok=True)
    rte.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            word = "great" if label else "awful"
            rows.append(f"{_sentence(rng, rng.randint(2, 8))} {word} {_sentence(rng, rng.randint(0, 4))}\t{label}")
        (sst / f"{split}.tsv").write_text("\n".join(rows) + "\n")
        rows = ["index\tsentence1\tsentence2\tlabel"]
        for i in range(n):
            label = rng.randint(0, 1)
            rows.append(f"{i}\t{_sentence(rng, rng.randint(3, 9))}\t{'yes' if label == 0 else 'no'} {_sentence(rng, 3)}\t"
                        f"{'entailment' if label == 0 else 'not_entailment'}")
        (rte / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root
