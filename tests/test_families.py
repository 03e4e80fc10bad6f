"""Every architecture of the matrix (tests/tiny.py) runs through olft exactly as through transformers.

For each: the discovered structure is right (LoRA targets agree with peft's per-family defaults
where peft has them), olft's logits equal the family's own `...ForSequenceClassification` with the
same weights on padded sentence-pair batches (where transformers' head differs from ours, the
pooled representation its head reads is compared instead), the activation cache and the
pooled-token last layer equal the plain forward in logits and gradients, and per-layer parameter
counts add up.
"""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch

from olft import families, pooledlayer
from olft.backbone import Stack, last_token_positions
from olft.cache import ActivationCache
from olft.data import collate, encode
from olft.errors import OlftError
from olft.loading import checkpoint_pooling
from olft.stages import cache_layer
from olft.train import logits_for
from tiny import ARCHITECTURES, ENCODERS, assert_cached_matches_plain, frozen_stack, make_config

ARCHS = tuple(ARCHITECTURES)
TOL = dict(rtol=1e-5, atol=1e-5)
# Where transformers' classifier is not dropout + Linear on the pooled vector, the module whose
# input is the pooled representation (first token of its input when that is a sequence).
HEAD_INPUT = {"roberta": "classifier", "electra": "classifier", "distilbert": "pre_classifier", "deberta_v2": "pooler"}


class Ex:
    def __init__(self, texts, label=0):
        self.texts, self.label = texts, label


PAIRS = [
    Ex(("the movie was good", "yes it is")),
    Ex(("bad", "no")),
    Ex(("the cat sat on the mat and the dog runs", "no the dog sat")),
    Ex(("a man sees a woman", "it is fun")),
]



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_stack = frozen_stack  # a fresh copy of the architecture's stack, discovered once


def _batch(stack, tok, idx=(0, 1, 2, 3)):
    enc = encode(tok, PAIRS, 32, model_inputs=stack.model_inputs)
    return enc, collate(enc, list(idx), regression=False)


@pytest.mark.parametrize("name", ARCHS)
def test_structure_is_discovered(name):
    stack, _ = _stack(name)
    fam = stack.family
    layer = stack.layers[0]
    for path in (fam.attn, fam.attn_out, fam.mlp_out, fam.mlp, fam.mlp_in):
        layer.get_submodule(path)
    for path in (*fam.embeddings, *fam.after, *([fam.pooler] if fam.pooler else [])):
        stack.base.get_submodule(path)
    assert fam.pooling == ("cls" if name in ENCODERS else "last")
    assert fam.moe == (name in ("mixtral", "qwen2_moe"))
    assert fam.parallel_block == (name in ("gpt_neox", "falcon"))
    attn_block = fam.attn.split(".")[0]
    assert fam.attn_out.startswith(attn_block + ".") and not fam.mlp_out.startswith(attn_block + ".")
    names = {n.rsplit(".", 1)[-1] for n, _ in layer.named_modules()}
    assert fam.lora_targets and set(fam.lora_targets) <= names


@pytest.mark.parametrize("name", ARCHS)
def test_lora_targets_agree_with_peft(name):
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT

    stack, _ = _stack(name)
    if stack.family.name not in PEFT:
        pytest.skip(f"peft has no default LoRA targets for {stack.family.name}")
    assert set(stack.family.lora_targets) == set(PEFT[stack.family.name])


def _own_classifier(name: str, stack: Stack):
    """transformers' sequence classifier holding the same base weights and (where ours) head weights."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(stack.base.config)
    config.num_labels = 2
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation=config._attn_implementation)
    inner = model.get_submodule(model.base_model_prefix)
    missing, unexpected = inner.load_state_dict(stack.base.state_dict(), strict=False)
    assert all("pooler" in k for k in missing + unexpected), (missing, unexpected)  # RoBERTa's head has none
    if name not in HEAD_INPUT:
        head = model.score if hasattr(model, "score") else model.classifier
        with torch.no_grad():
            stack.head.weight.copy_(head.weight)
            if head.bias is not None:
                stack.head.bias.copy_(head.bias)
            else:
                stack.head.bias.zero_()
    return model.eval()


@pytest.mark.parametrize("name", ARCHS)
def test_logits_equal_transformers_classifier(name):
    """Padded pair batches, fp32: olft == AutoModelForSequenceClassification (or its head's input)."""
    stack, tok = _stack(name)
    model = _own_classifier(name, stack)
    enc, batch = _batch(stack, tok)
    assert batch.attention_mask.min() == 0  # the batch is padded
    if name in ("bert", "electra"):  # DistilBERT's forward takes no segment ids
        assert "token_type_ids" in enc.extra and batch.extra["token_type_ids"].max() == 1
    if name == "deberta_v2":  # type_vocab_size 0 (as DeBERTa-v3): no segment embedding to give ids to
        assert stack.base.config.type_vocab_size == 0 and "token_type_ids" not in enc.extra
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **batch.extra)
    seen = {}
    with torch.no_grad():
        if name in HEAD_INPUT:
            hook = model.get_submodule(HEAD_INPUT[name]).register_forward_pre_hook(
                lambda _m, args: seen.setdefault("theirs", args[0])
            )
            model(**{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", *stack.model_inputs)})
            hook.remove()
            theirs = seen["theirs"][:, 0] if seen["theirs"].dim() == 3 else seen["theirs"]
            ours_hook = stack.head.register_forward_pre_hook(lambda _m, args: seen.setdefault("ours", args[0]))
            stack(**inputs)
            ours_hook.remove()
            torch.testing.assert_close(seen["ours"], theirs, **TOL)
        else:
            theirs = model(**{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", *stack.model_inputs)}).logits
            torch.testing.assert_close(stack(**inputs), theirs, **TOL)


def test_segment_ids_matter():
    """Dropping token_type_ids changes BERT's output: the comparison above would catch a lost input."""
    stack, tok = _stack("bert")
    _, batch = _batch(stack, tok)
    with torch.no_grad():
        with_ids = stack(batch.input_ids, batch.attention_mask, **batch.extra)
        without = stack(batch.input_ids, batch.attention_mask)
    assert (with_ids - without).abs().max() > 1e-4  # 100x the comparison tolerance
    with torch.no_grad():  # the training and evaluation path passes them too
        torch.testing.assert_close(logits_for(stack, batch, None), with_ids, rtol=0, atol=0)


def _grads(stack, batch, cache, params):
    for p in params:
        p.grad = None
    logits = logits_for(stack, batch, cache)
    logits.square().sum().backward()
    return logits.detach(), [p.grad.clone() for p in params]


@pytest.mark.parametrize("name", ARCHS)
def test_cached_equals_plain(name):
    """Activation cache + pooled-token last layer vs the plain whole forward, middle and last layer."""
    stack, tok = _stack(name)
    enc, _ = _batch(stack, tok)
    n = stack.num_layers
    for layer in (n // 2, n - 1):
        tuned = stack.layers[layer]
        params = [p for path in (stack.family.attn_out, stack.family.mlp_out) for p in tuned.get_submodule(path).parameters()]
        params += list(stack.head.parameters())
        for p in params:
            p.requires_grad_(True)
        cache = ActivationCache(stack, enc, layer, batch_size=3)
        for idx in ([0, 1, 2, 3], [1, 3]):
            batch = collate(enc, idx, regression=False)
            assert_cached_matches_plain(stack, lambda c, b=batch, ps=params: _grads(stack, b, c, ps), cache, **TOL)
        for p in params[:-2]:
            p.requires_grad_(False)


# The families whose pooled-token path must stay on (the speed-up is measured on them).
SHORTCUT_ON = ("gpt2", "llama", "mistral", "qwen2", "bert", "roberta", "electra", "qwen3", "gemma3", "mixtral", "gpt_neox")


@pytest.mark.parametrize("name", SHORTCUT_ON)
def test_pooled_shortcut_is_verified_and_used(name):
    stack, tok = _stack(name)
    _, batch = _batch(stack, tok)
    with torch.no_grad():
        stack(batch.input_ids, batch.attention_mask, **batch.extra)
    assert stack.shortcut_unavailable() is None


@pytest.mark.parametrize("method", ["adapter", "prefix"])
def test_pooled_fallback_is_logged_once(caplog, method):
    """OPT's pooled-token path does not fit (its MLP reads (batch*seq, hidden)): the fallback is
    logged once, though the frozen layer and the layer with its PEFT module are checked apart."""
    from olft.config import MethodConfig
    from olft.methods import apply_method

    stack, tok = _stack("opt")
    _, batch = _batch(stack, tok)
    with caplog.at_level(logging.DEBUG, logger="olft.backbone"), torch.no_grad():
        stack(batch.input_ids, batch.attention_mask, **batch.extra)
        apply_method(stack, [stack.num_layers - 1], MethodConfig(method=method))
        stack(batch.input_ids, batch.attention_mask, **batch.extra)
    assert len(stack._pooled_checked) == 2 and caplog.text.count("switched off") == 1, caplog.text
    # A layer the path does not fit is a known limit the user can do nothing about (the whole layer
    # is exact): a debug line (-v), in words, not an info line or warning quoting an internal error.
    assert [r.levelname for r in caplog.records] == ["DEBUG"], caplog.text
    assert ("does not fit the layer code of OPTDecoderLayer (it merges the batch and sequence dimensions before its MLP"
            in caplog.text and "RuntimeError" not in caplog.text), caplog.text


def test_wrong_pooled_path_is_switched_off(monkeypatch, caplog):
    """A pooled-token path that is wrong for the model is caught on the first batch, logged, bypassed."""
    stack, tok = _stack("llama")
    _, batch = _batch(stack, tok)
    with torch.no_grad():
        stack.pooled_shortcut = "off"
        plain = stack(batch.input_ids, batch.attention_mask)
        stack.pooled_shortcut = "auto"
        monkeypatch.setitem(pooledlayer.POOLED_LAYERS, "rotary", lambda layer, h, pos, mask, args: pooledlayer.rows(h, pos))
        with caplog.at_level(logging.WARNING, logger="olft.backbone"):
            got = stack(batch.input_ids, batch.attention_mask)
    assert "switched off" in caplog.text and "differs from the whole last layer" in stack.shortcut_unavailable()
    torch.testing.assert_close(got, plain, rtol=0, atol=0)


def test_each_layer_gets_its_own_arguments():
    """Qwen2 with sliding layers and Gemma 3 (local/global rotary): recorded calls differ per layer,
    and replaying layer 0's arguments everywhere (the old behaviour) would not match the model."""
    for name in ("qwen2", "gemma3"):
        stack, tok = _stack(name)
        _, batch = _batch(stack, tok)
        inputs = stack.prepare(batch.input_ids, batch.attention_mask)
        kinds = stack.base.config.layer_types
        assert len(set(kinds)) == 2
        full, sliding = kinds.index("full_attention"), kinds.index("sliding_attention")
        a, b = inputs.calls[full][1], inputs.calls[sliding][1]
        differs = [k for k in a if torch.is_tensor(a[k]) and not torch.equal(a[k], b[k])]
        differs += [k for k in a if isinstance(a[k], tuple) and not all(torch.equal(x, y) for x, y in zip(a[k], b[k], strict=True))]
        assert differs
        stack.check()  # the replay equals the model's own forward
        inputs.calls = [inputs.calls[0]] * len(inputs.calls)
        with torch.no_grad():
            wrong = stack.run_layers(inputs.hidden, inputs, 0, stack.num_layers)
            own = stack.base(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        real = batch.attention_mask.bool()
        assert (stack.finish(wrong)[real] - own[real]).abs().max() > 1e-3


def test_check_refuses_code_between_layers():
    """DeBERTa-v2 with a convolution after layer 0 (conv_kernel_size > 0): refused, not run wrongly."""
    from transformers import AutoModel

    config, _ = ARCHITECTURES["deberta_v2"]()
    config.conv_kernel_size = 3
    torch.manual_seed(0)
    base = AutoModel.from_config(config).eval()
    with pytest.raises(OlftError, match="differs from the model's own forward"):
        Stack(base, None, 2).check()


def test_a_model_that_pads_its_inputs_inside_its_forward_is_refused_at_load():
    """Longformer pads every input to a multiple of its attention window in its own forward; its
    layers alone refuse other lengths. The check's prime length finds that at load (and in
    `olft info`), not as a transformers assertion in the middle of selection."""
    from transformers import LongformerConfig, LongformerModel

    config = LongformerConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                              attention_window=4, vocab_size=100, max_position_embeddings=80, pad_token_id=1)  # fmt: skip
    torch.manual_seed(0)
    with pytest.raises(OlftError) as err:
        Stack(LongformerModel(config).eval(), None, 2).check()
    message = str(err.value)
    assert message.startswith("LongformerModel gives layer 0 12 positions for an input of 11 tokens")
    assert "pads them to a multiple of an attention window" in message and "\n" not in message


def test_layers_that_fail_where_the_models_forward_runs_are_refused_at_load(monkeypatch):
    """A layer that raises on what the layer-by-layer run gives it: one line naming the layer, not
    a traceback from inside the family's code."""
    from transformers import AutoModel

    torch.manual_seed(0)
    stack = Stack(AutoModel.from_config(make_config("llama")).eval(), None, 2)
    real = stack.run_layers

    def fails_at_layer_1(h, inputs, start, end):
        if start == 1:
            raise AssertionError("Sequence length should be multiple of 4. Given 11")
        return real(h, inputs, start, end)

    monkeypatch.setattr(stack, "run_layers", fails_at_layer_1)
    with pytest.raises(OlftError, match=r"fails at layer 1 on an input of 11 tokens that the model's own forward takes "
                                        r"\(AssertionError: Sequence length should be multiple of 4. Given 11\)"):
        stack.check()


def test_shared_layer_weights_are_refused_with_the_reason():
    """ALBERT reuses one layer's weights for every layer: nothing per layer to tune, said so."""
    from transformers import AlbertConfig, AlbertModel

    config = AlbertConfig(hidden_size=32, embedding_size=16, intermediate_size=64, num_hidden_layers=4,
                          num_attention_heads=4, vocab_size=100, max_position_embeddings=64)
    with pytest.raises(OlftError, match="reuses 1 set.* of layer weights for all 4 layers"):
        families.find_layers(AlbertModel(config))


def test_a_layer_discovery_cannot_read_names_the_family_and_what_to_do():
    """MobileBERT's layer first calls its bottleneck projection, outside any attention module:
    refused as a family discovery does not support, with where the supported ones are listed."""
    from transformers import MobileBertConfig, MobileBertModel

    config = MobileBertConfig(hidden_size=32, embedding_size=16, intermediate_size=32, intra_bottleneck_size=16,
                              true_hidden_size=16, num_hidden_layers=2, num_attention_heads=2, vocab_size=64,
                              max_position_embeddings=64, num_feedforward_networks=1)  # fmt: skip
    torch.manual_seed(0)
    with pytest.raises(OlftError) as err:
        families.discover(MobileBertModel(config).eval())
    message = str(err.value)
    assert message.startswith("Could not find the attention module of MobileBertLayer") and "\n" not in message
    assert "layer discovery does not support this model family (mobilebert)" in message
    assert "the README lists as tested" in message and "open an issue" in message


# Known answers: Llama (hidden 32, MLP 64, 4 heads, 2 KV heads of 8): q,o 32x32; k,v 32x16;
# gate/up/down 32x64; two RMSNorms. BERT (hidden 32, MLP 64): q,k,v,o 32x32+bias; two LayerNorms;
# intermediate 32x64+64; output 64x32+32.
PER_LAYER = {"llama": 2 * 1024 + 2 * 512 + 3 * 2048 + 2 * 32, "bert": 4 * (1024 + 32) + 2 * 64 + (2048 + 64) + (2048 + 32)}


@pytest.mark.parametrize("name", ARCHS)
def test_parameter_counts_per_layer(name):
    """Every layer's parameters lie in the discovered list (none in a second per-layer list outside)."""
    import re

    stack, _ = _stack(name)
    per_layer = [sum(p.numel() for p in layer.parameters()) for layer in stack.layers]
    assert len(set(per_layer)) == 1 and per_layer[0] > 0
    if name in PER_LAYER:
        assert per_layer[0] == PER_LAYER[name]
    outside = [n for n, _ in stack.base.named_parameters() if not n.startswith(stack.family.layers + ".")]
    assert not [n for n in outside if re.search(r"\.\d+\.", n)], outside


def test_last_token_found_by_position():
    """The last real token is the rightmost 1 of the mask: right or left padding, pad == eos."""
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]])
    assert last_token_positions(mask).tolist() == [2, 4, 4, 1]
    stack, tok = _stack("llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    left = torch.tensor([[tok.pad_token_id, tok.pad_token_id, 5, 6]])
    with torch.no_grad():
        alone = stack(torch.tensor([[5, 6]]), torch.ones(1, 2, dtype=torch.long))
        padded = stack(left, torch.tensor([[0, 0, 1, 1]]))
        stack(ids, torch.ones_like(ids))
    # Left padding shifts positions (rotary), so values move slightly; the pooled token is the same one.
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-4)


def test_mean_pooling_ignores_padding():
    stack, tok = _stack("bert")
    stack.pooling = "mean"
    enc, batch = _batch(stack, tok)
    with torch.no_grad():
        together = stack(batch.input_ids, batch.attention_mask, **batch.extra)
        alone = torch.cat([stack(**_one(enc, i)) for i in range(4)])
    torch.testing.assert_close(together, alone, **TOL)
    assert "mean pooling" in stack.shortcut_unavailable()


def _one(enc, i):
    b = collate(enc, [i], regression=False)
    return dict(input_ids=b.input_ids, attention_mask=b.attention_mask, **b.extra)


def test_checkpoint_pooling(tmp_path):
    """auto reads a sentence-transformers folder's pooling config (as all-MiniLM-L6-v2 ships it)."""
    assert checkpoint_pooling(str(tmp_path)) == (None, "family")
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))  # fmt: skip
    (tmp_path / "1_Pooling").mkdir()
    config = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(config))
    assert checkpoint_pooling(str(tmp_path)) == ("mean", "checkpoint (1_Pooling/config.json)")
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(config))
    assert checkpoint_pooling(str(tmp_path))[0] == "cls"
    config.update(pooling_mode_max_tokens=True)  # a mode olft does not offer: the family's rule
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(config))
    assert checkpoint_pooling(str(tmp_path)) == (None, "family")


@pytest.mark.parametrize("candidates, layer", [([0, 1, 2], 1), ([2, 3], 2), ([0], 0), ([0, 4, 5], 4)])
def test_selection_cache_skips_layer_zero(candidates, layer):
    assert cache_layer(candidates) == layer


@pytest.mark.parametrize("kind", ["qwen2_moe_sparse_step", "qwen2_moe_mlp_only", "deepseek_v3"])
def test_adapters_fit_models_mixing_dense_and_expert_layers(kind):
    """Qwen2-MoE with decoder_sparse_step or mlp_only_layers and DeepSeek-V3 (first_k_dense_replace)
    mix dense and expert MLPs: layer 0's output projection (a dense mlp.down_proj) is not in an
    expert block, so every layer's adapter follows its whole MLP block. Adapters go on every layer,
    see the block's output (a dense block's is its down_proj's), and at initialisation leave the
    logits those of transformers' own classifier."""
    from transformers import AutoModel

    from olft.config import MethodConfig
    from olft.methods import apply_method
    from olft.methods.adapter import AdaptedOutput
    from tiny import make_tokenizer, mixed_moe_config

    torch.manual_seed(0)
    base = AutoModel.from_config(mixed_moe_config(kind), attn_implementation="sdpa").eval()
    tok = make_tokenizer(False)
    tok.pad_token = tok.eos_token
    base.config.pad_token_id = tok.pad_token_id
    stack = Stack(base, None, 2)
    stack.set_model_inputs(tok)
    stack.freeze_base()
    stack.eval()
    experts = [hasattr(layer.mlp, "experts") for layer in stack.layers]
    assert True in experts and False in experts  # the layers do mix
    model = _own_classifier(kind, stack)
    _, batch = _batch(stack, tok)

    applied = apply_method(stack, list(range(stack.num_layers)), MethodConfig(method="adapter", placement="houlsby"))
    assert len(applied.modules) == 2 * stack.num_layers
    assert stack.family.moe and stack.family.mlp_out == stack.family.mlp == "mlp"
    for layer in stack.layers:
        assert isinstance(layer.mlp, AdaptedOutput)
    with torch.no_grad():
        theirs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        torch.testing.assert_close(stack(batch.input_ids, batch.attention_mask), theirs, **TOL)

    # A dense layer's adapter reads its down_proj's output; an expert layer's the expert block's.
    dense, sparse = experts.index(False), experts.index(True)
    seen: dict[str, list] = {"dense": [], "adapter": [], "block": []}
    layers = stack.layers
    hooks = [layers[dense].mlp.base_layer.down_proj.register_forward_hook(lambda _m, _a, out: seen["dense"].append(out)),
             layers[dense].mlp.adapter.register_forward_pre_hook(lambda _m, a: seen["adapter"].append(a[0])),
             layers[sparse].mlp.base_layer.register_forward_hook(lambda _m, _a, out: seen["block"].append(out)),
             layers[sparse].mlp.adapter.register_forward_pre_hook(lambda _m, a: seen["adapter"].append(a[0]))]  # fmt: skip
    with torch.no_grad():
        stack(batch.input_ids, batch.attention_mask)
    for h in hooks:
        h.remove()
    block = seen["block"][0][0] if isinstance(seen["block"][0], tuple) else seen["block"][0]
    order = (0, 1) if dense < sparse else (1, 0)
    assert torch.equal(seen["adapter"][order[0]], seen["dense"][0]) and torch.equal(seen["adapter"][order[1]], block)
    applied.remove()
    assert not any(isinstance(m, AdaptedOutput) for m in stack.modules())


def test_mixed_mlps_truth_table():
    """Layers whose MLPs differ: the whole block where it is one child in every layer, else no
    mlp_out (the adapter refused before a run, naming the methods that fit); alike layers keep
    layer 0's fields."""
    from dataclasses import replace

    from torch import nn

    from olft.config import MethodConfig
    from olft.methods import check_method

    def layer(mlp_name: str, experts: bool) -> nn.Module:
        out = nn.Module()
        out.self_attn = nn.ModuleDict({"q_proj": nn.Linear(2, 2), "o_proj": nn.Linear(2, 2)})
        block = nn.ModuleDict({"experts": nn.ModuleList([nn.Linear(2, 2)])} if experts else
                              {"up_proj": nn.Linear(2, 2), "down_proj": nn.Linear(2, 2)})  # fmt: skip
        out.add_module(mlp_name, block)
        return out

    def called(mlp_name: str, experts: bool) -> list[str]:
        own = [f"{mlp_name}.experts.0"] if experts else [f"{mlp_name}.up_proj", f"{mlp_name}.down_proj"]
        return ["self_attn.q_proj", "self_attn.o_proj", *own]

    inside = {"attn": "self_attn", "mlp": "mlp", "mlp_in": "mlp", "mlp_out": "mlp.down_proj", "moe": False}
    kinds = {"dense": ("mlp", False), "moe": ("mlp", True), "other": ("moe_block", True), "none": ("mlp", False)}
    cases = {("dense", "dense"): {}, ("dense", "moe"): {"mlp_out": "mlp", "mlp": "mlp", "mlp_in": "mlp", "moe": True},
             ("dense", "other"): {"mlp_out": "", "mlp": "mlp", "mlp_in": "mlp", "moe": True},
             ("dense", "none"): {"mlp_out": "", "mlp": "mlp", "mlp_in": "mlp", "moe": False}}  # fmt: skip
    for case, expected in cases.items():
        layers = nn.ModuleList([layer(*kinds[k]) for k in case])
        # "none": a layer whose MLP calls no projection and holds no experts (not found there)
        calls = [called(*kinds[k]) if k != "none" else called(*kinds[k])[:2] for k in case]
        assert families._mixed_mlps(layers, calls, inside, "x") == expected, case
    stack, _ = _stack("llama")
    stack.family = replace(stack.family, mlp_out="")
    with pytest.raises(OlftError, match="no mlp_out module for the houlsby adapter; use --method lora or prefix"):
        check_method(stack, MethodConfig(method="adapter"))
    check_method(stack, MethodConfig(method="lora"))


def test_parallel_blocks_are_found_from_the_layer_itself():
    """Phi, CodeGen, Cohere and GPT-J run attention and MLP side by side (x + attn(x) + mlp(x)) with
    no config flag saying so; StableLM says it with use_parallel_residual. Found by noise on the
    attention output not reaching the MLP's input (the matrix checks GPT-NeoX, Falcon and the rest)."""
    import transformers as T
    from transformers import AutoModel

    from tiny import _decoder

    small = dict(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=64, rotary_dim=4, bos_token_id=1, eos_token_id=2)
    stablelm = _decoder(num_hidden_layers=2, num_key_value_heads=4)
    configs = {
        "phi": (T.PhiConfig(**_decoder(num_hidden_layers=2)), True),
        "codegen": (T.CodeGenConfig(**small), True),
        "gptj": (T.GPTJConfig(**small), True),
        "cohere": (T.CohereConfig(**_decoder(num_hidden_layers=2)), True),
        "stablelm_parallel": (T.StableLmConfig(**stablelm, use_parallel_residual=True), True),
        "stablelm": (T.StableLmConfig(**stablelm), False),
        "llama": (make_config("llama", layers=2), False),
    }
    got = {}
    for name, (config, _) in configs.items():
        torch.manual_seed(0)
        got[name] = families.discover(AutoModel.from_config(config).eval()).parallel_block
    assert got == {name: parallel for name, (_, parallel) in configs.items()}


def test_a_checkpoint_saved_with_a_task_head_loads_without_transformers_load_report(tmp_path, capsys, caplog):
    """A checkpoint saved from a classification class holds its head (`score.weight`), which the
    headless base olft loads has no place for: transformers printed a LOAD REPORT table ("UNEXPECTED
    ... not ok if you expect identical arch") on every run and load. Expected, as olft trains a head of
    its own: a debug line. Weights the checkpoint lacks (a BERT saved without its pooler) start at
    random values: a warning that names them."""
    import logging

    from transformers import AutoModelForSequenceClassification, BertModel, RobertaModel

    from olft.loading import load_stack
    from tiny import _configs, make_config, make_tokenizer

    builds = {"llama": lambda: AutoModelForSequenceClassification.from_config(make_config("llama")),
              "bert": lambda: AutoModelForSequenceClassification.from_config(make_config("bert")),
              "bert-no-pooler": lambda: BertModel(make_config("bert"), add_pooling_layer=False),
              # saved from RobertaForSequenceClassification, which has no pooler: nor does olft run one
              "roberta-no-pooler": lambda: RobertaModel(_configs()["roberta"](), add_pooling_layer=False)}
    for name, build in builds.items():
        folder = tmp_path / name
        torch.manual_seed(0)
        build().save_pretrained(folder)
        make_tokenizer(name.startswith("bert")).save_pretrained(folder)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="olft"):
            load_stack(str(folder), 2)
        err = capsys.readouterr().err
        assert "LOAD REPORT" not in err and "UNEXPECTED" not in err and "MISSING" not in err, err
        said = {r.levelno: r.getMessage() for r in caplog.records if r.name.startswith("olft")
                and ("checkpoint weights that" in r.getMessage() or "not in the checkpoint" in r.getMessage())
                and not r.getMessage().startswith("transformers")}  # its own report, forwarded to --verbose
        if name == "roberta-no-pooler":
            assert list(said) == [logging.DEBUG] and "its pooler (pooler.dense.bias, pooler.dense.weight) is not in the " \
                "checkpoint and is not used" in said[logging.DEBUG], said
        elif name == "bert-no-pooler":
            assert logging.DEBUG not in said and "2 weights of BertModel are not in the checkpoint and start at random " \
                "values, frozen (pooler.dense.bias, pooler.dense.weight)" in said[logging.WARNING], said
        else:
            head = "score.weight" if name == "llama" else "classifier.bias, classifier.weight"
            assert "checkpoint weights that" in said[logging.DEBUG] and head in said[logging.DEBUG], said
            assert logging.WARNING not in said, said
