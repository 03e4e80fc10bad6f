"""Where the bottleneck adapters sit, checked against the real modules of each architecture.

The truth table below names, from transformers' modeling code (not from olft's discovery), the
module that ends each layer's attention block and MLP block. For every architecture of the
matrix, with Houlsby adapters on one layer:
- each adapter's input is exactly the real projection's output (hooks on both);
- the adapter's output is what the block consumes: an adapter that adds a constant delta gives
  the same layer output as the un-adapted model with a hook adding delta to that projection's
  output (distinct deltas for attention and MLP, so swapping them is seen too);
- the residual comes after: where the block output joins the residual stream with nothing in
  between (pre-norm MLPs, both branches of parallel blocks), the layer output moves by exactly
  delta.
"""

from __future__ import annotations

import copy

import pytest
import torch

from olft.backbone import Stack, get_submodule
from olft.config import MethodConfig
from olft.methods import apply_method
from olft.methods.adapter import AdaptedOutput
from tiny import ARCHITECTURES, build_model

_LLAMA = ("self_attn.o_proj", "mlp.down_proj")
_BERT = ("attention.output.dense", "output.dense")
# (attention block output, MLP block output); MoE layers end in the whole expert block.
REAL_OUTPUTS = {
    "gpt2": ("attn.c_proj", "mlp.c_proj"),
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "gemma2": _LLAMA, "gemma3": _LLAMA, "qwen3": _LLAMA,
    "phi3": _LLAMA, "olmo2": _LLAMA,
    "gpt_neox": ("attention.dense", "mlp.dense_4h_to_h"),
    "falcon": ("self_attention.dense", "mlp.dense_4h_to_h"),
    "opt": ("self_attn.out_proj", "fc2"),
    "mixtral": ("self_attn.o_proj", "mlp"), "qwen2_moe": ("self_attn.o_proj", "mlp"),
    "bert": _BERT, "roberta": _BERT, "electra": _BERT, "deberta_v2": _BERT,
    "distilbert": ("attention.out_lin", "ffn.lin2"),
}  # fmt: skip
# Which block outputs join the residual stream directly (layer output moves by exactly delta):
# pre-norm MLPs; parallel blocks both; post-norm encoders and Gemma/OLMo-2 (norm after each
# block) neither.
ADDITIVE = {name: (False, True) for name in ("gpt2", "llama", "mistral", "qwen2", "qwen3", "phi3", "opt", "mixtral", "qwen2_moe")}
ADDITIVE.update({"gpt_neox": (True, True), "falcon": (True, True)})
LAYER = 1


def test_truth_table_covers_the_matrix():
    assert set(REAL_OUTPUTS) == set(ARCHITECTURES)


_BUILT: dict[str, tuple] = {}


def _setup(name: str):
    """(stack, base layer copy without adapters, input ids, mask) for architecture `name`."""
    if name not in _BUILT:
        base, tok = build_model(name)
        stack = Stack(base, None, 2)
        stack.freeze_base()
        ids = torch.randint(4, 40, (2, 6), generator=torch.Generator().manual_seed(0))
        _BUILT[name] = (stack, ids)
    stack, ids = _BUILT[name]
    return copy.deepcopy(stack).eval(), ids


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _layer_output(stack: Stack, ids: torch.Tensor, hooks=()) -> torch.Tensor:
    """Output of layer LAYER in the base model's own forward, with extra forward hooks."""
    seen = []
    handles = [stack.layers[LAYER].register_forward_hook(lambda _m, _a, out: seen.append(_first(out).clone()))]
    handles += [module.register_forward_hook(fn) for module, fn in hooks]
    try:
        with torch.no_grad():
            stack.base(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen[0]


def _add(delta):
    def hook(_m, _a, out):
        if isinstance(out, tuple):
            return (out[0] + delta, *out[1:])
        return out + delta

    return hook


@pytest.mark.parametrize("name", tuple(ARCHITECTURES))
def test_adapters_sit_on_the_real_block_outputs(name):
    stack, ids = _setup(name)
    layer = stack.layers[LAYER]
    real = [get_submodule(layer, path) for path in REAL_OUTPUTS[name]]
    base_out = _layer_output(stack, ids)
    g = torch.Generator().manual_seed(1)
    deltas = [torch.randn(stack.hidden_size, generator=g) for _ in real]
    expected = _layer_output(stack, ids, [(m, _add(d)) for m, d in zip(real, deltas, strict=True)])

    applied = apply_method(stack, [LAYER], MethodConfig(method="adapter", placement="houlsby"))
    adapters = [m for m in layer.modules() if isinstance(m, AdaptedOutput)]
    assert len(adapters) == 2 == len(applied.modules)
    # Each real module is wrapped (found where it was, or inside its wrapper), once.
    wrappers = [next(a for a in adapters if a.base_layer is m) for m in real]

    # 1. Adapter input == real projection output.
    got: dict[str, list[torch.Tensor]] = {"proj": [], "adapter": []}
    handles = []
    for m, w in zip(real, wrappers, strict=True):
        handles.append(m.register_forward_hook(lambda _m, _a, out: got["proj"].append(_first(out).clone())))
        handles.append(w.adapter.register_forward_pre_hook(lambda _m, args: got["adapter"].append(args[0].clone())))
    _layer_output(stack, ids)
    for h in handles:
        h.remove()
    assert len(got["proj"]) == len(got["adapter"]) == 2
    for p, a in zip(got["proj"], got["adapter"], strict=True):
        assert torch.equal(p, a)

    # 2. The adapter's output is what the block consumes: delta through the adapter == delta by hook.
    with torch.no_grad():
        for w, d in zip(wrappers, deltas, strict=True):
            w.adapter.up.bias.copy_(d)  # up.weight is zero at init: the adapter adds exactly d
    moved = _layer_output(stack, ids)
    torch.testing.assert_close(moved, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(moved, base_out)

    # 3. Residual after: where the block joins the residual stream directly, the output moves by delta.
    for i, additive in enumerate(ADDITIVE.get(name, (False, False))):
        if not additive:
            continue
        with torch.no_grad():
            for j, w in enumerate(wrappers):
                w.adapter.up.bias.copy_(deltas[j] if j == i else torch.zeros_like(deltas[j]))
        torch.testing.assert_close(_layer_output(stack, ids) - base_out, deltas[i].expand_as(base_out), rtol=0, atol=1e-5)
    applied.remove()
    assert not any(isinstance(m, AdaptedOutput) for m in layer.modules())


@pytest.mark.parametrize("name", ("llama", "gpt2", "bert", "gpt_neox", "mixtral"))
def test_pfeiffer_adapter_only_after_the_mlp(name):
    stack, _ = _setup(name)
    mlp_out = get_submodule(stack.layers[LAYER], REAL_OUTPUTS[name][1])
    applied = apply_method(stack, [LAYER], MethodConfig(method="adapter", placement="pfeiffer"))
    wrapped = [m.base_layer for m in stack.layers[LAYER].modules() if isinstance(m, AdaptedOutput)]
    assert len(wrapped) == 1 and wrapped[0] is mlp_out
    applied.remove()
