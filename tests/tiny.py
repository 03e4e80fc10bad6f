"""Tiny random models of each family and word-level tokenizers, built in code (no downloads)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

WORDS = (
    "the a movie film was is good great bad awful plot acting really not very fun dull story "
    "yes no cat dog runs sat on mat park man woman sees it this that and but"
).split()


def make_tokenizer(encoder: bool, newline: bool = False):
    """Word-level tokenizer: BERT-like ([CLS] a [SEP] b [SEP]) or decoder-like (no pad token).

    `newline`: "\\n" is a token, as in real decoders' tokenizers (GPT-2's, Llama's), so a pair joined
    by a newline and the tokenizer's own pair encoding (`tokenizer(a, b)`) are different inputs.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if encoder else ["<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS + (["\n"] if newline else []))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[1] if encoder else "<unk>"))
    # Whitespace() is the split on \w+|[^\w\s]+; the newline variant keeps "\n" as a piece of its own.
    tok.pre_tokenizer = (pre_tokenizers.Split(Regex(r"\w+|[^\w\s]+|\n"), behavior="removed", invert=True) if newline
                         else pre_tokenizers.Whitespace())  # fmt: skip
    if encoder:
        cls, sep = vocab["[CLS]"], vocab["[SEP]"]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # as BERT's tokenizer
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


def make_model_folder(family: str, path: Path, layers: int = 4, hidden: int = 32, seed: int = 0,
                      newline: bool = False) -> Path:
    """Save a random model of `family` and its tokenizer (`make_tokenizer`) as a Hugging Face folder."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(make_config(family, layers, hidden))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    make_tokenizer(family == "bert", newline).save_pretrained(path)
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


# -- the architecture matrix -----------------------------------------------------------------------
# Tiny random models of every architecture olft is tested on, built from transformers' own config
# classes (2-4 layers, hidden 32). Each entry returns (config, tokenizer); `build_model` makes the
# headless base model. Chosen to cover each structural variant: grouped-query attention,
# sliding-window layers, alternating local/global layers, parallel attention/MLP blocks,
# mixture-of-experts MLPs, fused q/k/v projections, pre-norm and post-norm encoders.
_V = 64  # vocabulary size (the word-level tokenizers use fewer ids)


def _decoder(**kw) -> dict:
    base = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, vocab_size=_V,
                max_position_embeddings=64, bos_token_id=1, eos_token_id=2)  # fmt: skip
    return {**base, **kw}


def _encoder(**kw) -> dict:
    base = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, vocab_size=_V,
                max_position_embeddings=64, pad_token_id=0)  # fmt: skip
    return {**base, **kw}


def _configs() -> dict:
    import transformers as T

    return {
        "gpt2": lambda: make_config("gpt2"),
        "llama": lambda: make_config("llama"),
        "mistral": lambda: make_config("mistral"),
        "bert": lambda: make_config("bert", layers=3),
        # Qwen2 with sliding-window attention on layers 1..3 (layer_types mixed).
        "qwen2": lambda: T.Qwen2Config(**_decoder(num_key_value_heads=2, use_sliding_window=True, sliding_window=3, max_window_layers=1)),
        # Gemma 2 / 3: alternating sliding (local) and full (global) layers; Gemma 3 also uses
        # a different rotary base per kind and q/k norms; Gemma 2 soft-caps attention logits.
        "gemma2": lambda: T.Gemma2Config(**_decoder(num_key_value_heads=2, head_dim=8, sliding_window=3)),
        "gemma3": lambda: T.Gemma3TextConfig(**_decoder(num_key_value_heads=2, head_dim=8, sliding_window=3, sliding_window_pattern=2)),
        "qwen3": lambda: T.Qwen3Config(**_decoder(num_key_value_heads=2, head_dim=8)),
        "phi3": lambda: T.Phi3Config(**_decoder(num_key_value_heads=2, pad_token_id=None)),  # fused qkv_proj
        "olmo2": lambda: T.Olmo2Config(**_decoder(num_key_value_heads=2, pad_token_id=None)),  # norms after blocks
        "gpt_neox": lambda: T.GPTNeoXConfig(**_decoder(num_hidden_layers=3)),  # parallel attention + MLP
        "falcon": lambda: T.FalconConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, vocab_size=_V,
                                         bos_token_id=1, eos_token_id=2),  # parallel, multi-query  # fmt: skip
        "opt": lambda: T.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=3, num_attention_heads=4, vocab_size=_V,
                                   max_position_embeddings=64, word_embed_proj_dim=32, bos_token_id=1, eos_token_id=2,
                                   pad_token_id=None),  # fmt: skip
        "mixtral": lambda: T.MixtralConfig(**_decoder(num_hidden_layers=3, num_key_value_heads=2, num_local_experts=4,
                                                      num_experts_per_tok=2)),  # fmt: skip
        "qwen2_moe": lambda: T.Qwen2MoeConfig(**_decoder(num_hidden_layers=3, num_key_value_heads=2, num_experts=4,
                                                         num_experts_per_tok=2, moe_intermediate_size=16,
                                                         shared_expert_intermediate_size=32)),  # fmt: skip
        "roberta": lambda: T.RobertaConfig(**_encoder(max_position_embeddings=66)),
        "deberta_v2": lambda: T.DebertaV2Config(**_encoder(relative_attention=True, pos_att_type=["p2c", "c2p"],
                                                           position_buckets=8, max_relative_positions=16)),  # fmt: skip
        "electra": lambda: T.ElectraConfig(**_encoder(embedding_size=16)),  # embeddings projected up
        "distilbert": lambda: T.DistilBertConfig(dim=32, hidden_dim=64, n_layers=3, n_heads=4, vocab_size=_V,
                                                 max_position_embeddings=64, pad_token_id=0),  # fmt: skip
    }


def mixed_moe_config(kind: str):
    """Config of a tiny model whose layers mix dense MLPs and mixture-of-experts blocks (outside
    the matrix: its layers differ in size). `kind`: "qwen2_moe_sparse_step" (decoder_sparse_step=2:
    layers 1, 3 experts), "qwen2_moe_mlp_only" (mlp_only_layers: layers 1, 3 dense) or
    "deepseek_v3" (first_k_dense_replace=1: layer 0 dense; multi-head latent attention)."""
    import transformers as T

    qwen = dict(num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                shared_expert_intermediate_size=32)  # fmt: skip
    if kind == "qwen2_moe_sparse_step":
        return T.Qwen2MoeConfig(**_decoder(decoder_sparse_step=2, **qwen))
    if kind == "qwen2_moe_mlp_only":
        return T.Qwen2MoeConfig(**_decoder(mlp_only_layers=[1, 3], **qwen))
    if kind == "deepseek_v3":
        return T.DeepseekV3Config(**_decoder(
            num_key_value_heads=4, moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
            topk_group=1, first_k_dense_replace=1, n_shared_experts=1, kv_lora_rank=16, q_lora_rank=None,
            qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8))  # fmt: skip
    raise ValueError(kind)


ENCODERS = ("bert", "roberta", "deberta_v2", "electra", "distilbert")
# Tokenizers of these checkpoints return no segment ids (RoBERTa has a single segment embedding).
NO_SEGMENTS = ("roberta",)


def _builder(name: str):
    def build():
        config = _configs()[name]()
        encoder = name in ENCODERS
        tok = make_tokenizer(encoder)
        # BERT-style tokenizers return segment ids; RoBERTa's do not (one segment embedding).
        names = ["input_ids", "token_type_ids", "attention_mask"] if encoder and name not in NO_SEGMENTS else None
        tok.model_input_names = names or ["input_ids", "attention_mask"]
        return config, tok

    return build


ARCHITECTURES = {name: _builder(name) for name in _configs()}


def prefix_refused() -> tuple[str, ...]:
    """Architectures whose attention bypasses transformers' attention interface in the installed
    transformers, so prefix tuning is refused there: DeBERTa-v2 always; Falcon before 5.25 (its
    FalconAttention calls the interface from transformers 5.25 on)."""
    from packaging.version import Version
    from transformers import __version__

    return ("deberta_v2",) + (("falcon",) if Version(__version__) < Version("5.25") else ())


def build_model(name: str, seed: int = 0, attn: str = "sdpa"):
    """(headless random base model in eval mode, tokenizer) of architecture `name`."""
    from transformers import AutoModel

    config, tok = ARCHITECTURES[name]()
    torch.manual_seed(seed)
    try:
        model = AutoModel.from_config(config, attn_implementation=attn)
    except ValueError:  # no SDPA for this architecture (Gemma 2): its eager kernel
        torch.manual_seed(seed)
        model = AutoModel.from_config(config, attn_implementation="eager")
    return model.eval(), tok


def make_architecture_folder(name: str, path: Path, seed: int = 0) -> Path:
    """Save a random model of architecture `name` (see ARCHITECTURES) and its tokenizer as a Hugging Face folder."""
    model, tok = build_model(name, seed)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


_FROZEN: dict[str, tuple] = {}


def frozen_stack(name: str):
    """(a fresh copy of architecture `name`'s frozen olft Stack, its tokenizer); built and discovered once."""
    import copy

    from olft.backbone import Stack

    if name not in _FROZEN:
        base, tok = build_model(name)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
            base.config.pad_token_id = tok.pad_token_id
        stack = Stack(base, None, 2)
        stack.set_model_inputs(tok)
        stack.freeze_base()
        _FROZEN[name] = (stack, tok)
    stack, tok = _FROZEN[name]
    return copy.deepcopy(stack).eval(), tok


def assert_cached_matches_plain(stack, run, cache, **tol) -> None:
    """`run(cache)` -> (logits, grads) through the activation cache equals the plain forward's
    (pooled-token shortcut off there, so the whole model's own path is the reference)."""
    import torch

    stack.pooled_shortcut = "off"
    plain = run(None)
    stack.pooled_shortcut = "auto"
    cached = run(cache)
    torch.testing.assert_close(cached[0], plain[0], **tol)
    for got, want in zip(cached[1], plain[1], strict=True):
        torch.testing.assert_close(got, want, **tol)
