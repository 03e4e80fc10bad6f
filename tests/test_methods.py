"""PEFT methods: exact parameter counts, placement on the chosen layers only, identity at init,
frozen base after training, removal restores the model."""

import re

import numpy as np
import pytest
import torch
from transformers import AutoModel

from olft.backbone import Stack
from olft.config import MethodConfig
from olft.data import collate, encode
from olft.errors import OlftError
from olft.loading import load_stack
from olft.methods import apply_method
from olft.train import fit
from tiny import ARCHITECTURES, frozen_stack, make_config, prefix_refused

FAMS = ("gpt2", "llama", "mistral", "bert")
METHODS = ("adapter", "lora")


class Ex:
    def __init__(self, texts, label=0):
        self.texts, self.label = texts, label


DATA = [Ex((f"the movie was {w} really", "yes it is"), int(w == "good")) for w in ("good", "bad", "dull", "good fun")] * 4


def _stack(family, **kw):
    base = AutoModel.from_config(make_config(family, **kw))
    stack = Stack(base, num_labels=2)
    stack.freeze_base()
    return stack


def test_houlsby_count_on_gpt2_large_width():
    from transformers import GPT2Config

    base = AutoModel.from_config(GPT2Config(n_layer=2, n_embd=1280, n_head=20, vocab_size=16, n_positions=16))
    stack = Stack(base, num_labels=2)
    applied = apply_method(stack, [0], MethodConfig(method="adapter"))
    assert applied.num_params == 412_320
    applied.remove()
    applied = apply_method(stack, [1], MethodConfig(method="adapter", placement="pfeiffer"))
    assert applied.num_params == 206_160


@pytest.mark.parametrize("family", FAMS)
def test_lora_count(family):
    stack = _stack(family)
    applied = apply_method(stack, [1], MethodConfig(method="lora", lora_rank=4))
    expected = 0
    for path in applied.modules:
        base = stack.base.get_submodule(path).get_base_layer()
        w = base.weight
        expected += 4 * (w.shape[0] + w.shape[1])
    assert applied.num_params == expected > 0


@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layers", [[0], [2], [0, 3]])
def test_only_chosen_layers_hold_peft_params(family, method, layers):
    stack = _stack(family)
    prefix = stack.family.layers
    applied = apply_method(stack, layers, MethodConfig(method=method))
    trainable = [n for n, p in stack.base.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(applied.params)
    found = {int(re.search(rf"{re.escape(prefix)}\.(\d+)\.", n).group(1)) for n in trainable}
    assert found == set(layers)
    assert all(m.startswith(f"{prefix}.") for m in applied.modules)


@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("method", METHODS)
def test_identity_at_init_and_removal(model_dirs, family, method):
    stack, tok = load_stack(str(model_dirs[family]), 2)
    stack.eval()
    b = collate(encode(tok, DATA[:4], 32), [0, 1, 2, 3], regression=False)
    with torch.no_grad():
        before = stack(b.input_ids, b.attention_mask)
        applied = apply_method(stack, [1, 2], MethodConfig(method=method))
        at_init = stack(b.input_ids, b.attention_mask)
        applied.remove()
        after = stack(b.input_ids, b.attention_mask)
    assert torch.equal(before, at_init)
    assert torch.equal(before, after)
    assert not any("lora" in n or "adapter" in n for n, _ in stack.base.named_parameters())


@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("method", METHODS)
def test_training_moves_only_the_module(model_dirs, family, method):
    stack, tok = load_stack(str(model_dirs[family]), 2)
    base_before = {n: p.detach().clone() for n, p in stack.base.named_parameters()}
    applied = apply_method(stack, [2], MethodConfig(method=method))
    peft_before = applied.state_dict()
    enc = encode(tok, DATA, 32)
    params = list(applied.params.values()) + list(stack.head.parameters())
    fit(stack, params, enc, epochs=2, max_steps=None, lr=1e-2, batch_size=4, seed=0, frozen_below=2, quiet=True)
    peft_after = applied.state_dict()
    assert any(not torch.equal(peft_before[k], peft_after[k]) for k in peft_before)
    applied.remove()
    for n, p in stack.base.named_parameters():
        assert torch.equal(p, base_before[n]), n


# -- every method on every architecture of the matrix (tests/tiny.py) ------------------------------
ARCHS = tuple(ARCHITECTURES)
NO_PREFIX = prefix_refused()  # attention computed outside transformers' attention interface
# LoRA targets per architecture: peft's defaults (query and value, or the fused q/k/v projection).
LORA_TARGETS = {"gpt2": ("c_attn",), "phi3": ("qkv_proj",), "gpt_neox": ("query_key_value",),
                "falcon": ("query_key_value",), "bert": ("query", "value"), "roberta": ("query", "value"),
                "electra": ("query", "value"), "deberta_v2": ("query_proj", "value_proj"),
                "distilbert": ("q_lin", "v_lin")}  # fmt: skip


_arch = frozen_stack  # a fresh copy of the architecture's frozen stack, built and discovered once


def _expected_count(stack: Stack, method: str, layer: int) -> int:
    """Parameters of the method on one layer, from the model's shapes alone (not olft's modules)."""
    h, config = stack.hidden_size, stack.base.config
    if method == "adapter":  # Houlsby rf 16: two adapters d -> d/16 -> d with biases
        b = h // 16
        return 2 * (h * b + b + b * h + h)
    if method == "prefix":  # 5 key and 5 value vectors per key/value head
        heads = config.num_attention_heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        return 2 * 5 * kv * (getattr(config, "head_dim", None) or h // heads)
    targets = LORA_TARGETS.get(stack.base.config.model_type.replace("-", "_"), ("q_proj", "v_proj"))
    modules = [m for n, m in stack.layers[layer].named_modules() if n.rsplit(".", 1)[-1] in targets]
    assert len(modules) == len(targets)
    return sum(8 * sum(m.weight.shape) for m in modules)  # r x (in + out), Linear or Conv1D


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("method", ["adapter", "lora", "prefix"])
def test_matrix_counts_and_placement_on_one_layer(name, method):
    stack, _ = _arch(name)
    layer = stack.num_layers // 2
    if method == "prefix" and name in NO_PREFIX:
        with pytest.raises(OlftError, match="computes attention itself. Use --method adapter or --method lora"):
            apply_method(stack, [layer], MethodConfig(method=method))
        assert not any(p.requires_grad for p in stack.base.parameters())
        return
    applied = apply_method(stack, [layer], MethodConfig(method=method))
    trainable = [n for n, p in stack.base.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(applied.params)
    where = {int(re.search(rf"{re.escape(stack.family.layers)}\.(\d+)\.", n).group(1)) for n in trainable}
    assert where == {layer}
    assert applied.num_params == _expected_count(stack, method, layer)
    applied.remove()
    assert not any(p.requires_grad for p in stack.base.parameters())


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_matrix_identity_at_init(name, method):
    stack, tok = _arch(name)
    enc = encode(tok, DATA[:4], 32, model_inputs=stack.model_inputs)
    b = collate(enc, [0, 1, 2, 3], regression=False)
    with torch.no_grad():
        before = stack(b.input_ids, b.attention_mask, **b.extra)
        applied = apply_method(stack, [0, stack.num_layers - 1], MethodConfig(method=method))
        at_init = stack(b.input_ids, b.attention_mask, **b.extra)
        applied.remove()
        after = stack(b.input_ids, b.attention_mask, **b.extra)
    assert torch.equal(before, at_init) and torch.equal(before, after)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("method", ["adapter", "lora", "prefix"])
def test_matrix_short_fit_moves_only_the_module(name, method):
    if method == "prefix" and name in NO_PREFIX:
        pytest.skip("prefix tuning is refused here (test_matrix_counts_and_placement_on_one_layer)")
    stack, tok = _arch(name)
    layer = stack.num_layers // 2
    base_before = {n: p.detach().clone() for n, p in stack.base.named_parameters()}
    # Bottleneck 16, not 2: with 2 ReLU units both can be inactive on every token of this data.
    applied = apply_method(stack, [layer], MethodConfig(method=method, reduction_factor=2))
    peft_before = applied.state_dict()
    enc = encode(tok, DATA[:8], 32, model_inputs=stack.model_inputs)
    params = list(applied.params.values()) + list(stack.head.parameters())
    result = fit(stack, params, enc, epochs=1, max_steps=3, lr=1e-2, batch_size=4, seed=0, frozen_below=layer, quiet=True)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    peft_after = applied.state_dict()
    # The tensors whose gradient is non-zero from the first step (the others start moving once
    # the zero-initialised adapter up / LoRA B projection has moved).
    first = [k for k in peft_before if re.search(r"(\.up\.|lora_B|prefix\.key|prefix\.value)", k)]
    assert first and all(not torch.equal(peft_before[k], peft_after[k]) for k in first), first
    applied.remove()
    for n, p in stack.base.named_parameters():
        assert torch.equal(p, base_before[n]), n


def test_adapter_bottleneck_below_one_unit_is_refused_and_an_odd_factor_named(caplog):
    """--reduction-factor 1000 on a 384-wide model used to give a silent bottleneck of 1 (clamped)."""
    from olft.methods import check_method
    from olft.methods.adapter import bottleneck_size

    assert [bottleneck_size(384, f) for f in (1, 16, 64, 384)] == [384, 24, 6, 1]
    with pytest.raises(OlftError, match=r"--reduction-factor 1000 .* 384-wide .*< 1 unit; use 2-64 \(Houlsby's 16 gives 24 units here\)"):
        bottleneck_size(384, 1000)
    caplog.clear()
    bottleneck_size(384, 100, warn=True)
    assert "--reduction-factor 100 gives the 384-wide model's adapter a bottleneck of 3 units" in caplog.text
    caplog.clear()
    bottleneck_size(384, 16, warn=True)
    assert not caplog.text
    stack = _stack("llama")  # hidden 32: the check runs before a run writes its folder
    with pytest.raises(OlftError, match="bottleneck of 32/64 < 1 unit"):
        check_method(stack, MethodConfig(method="adapter", reduction_factor=64))
    with pytest.raises(OlftError, match="< 1 unit"):
        apply_method(stack, [1], MethodConfig(method="adapter", reduction_factor=64))
    check_method(stack, MethodConfig(method="lora", reduction_factor=64))  # not the adapter's: no bottleneck
    caplog.clear()
    check_method(stack, MethodConfig(method="lora", lora_rank=32))  # the width: no warning
    assert not caplog.text
    check_method(stack, MethodConfig(method="lora", lora_rank=33))  # above it: adds parameters, not rank
    assert "--lora-rank 33 is above the 32-wide model's width" in caplog.text
