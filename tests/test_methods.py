"""PEFT methods: exact parameter counts, placement on the chosen layers only, identity at init,
frozen base after training, removal restores the model."""

import re

import pytest
import torch
from transformers import AutoModel

from olft.backbone import Stack
from olft.config import MethodConfig
from olft.data import collate, encode
from olft.loading import load_stack
from olft.methods import apply_method
from olft.train import fit
from tiny import make_config

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
