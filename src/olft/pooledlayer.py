"""The last layer at the pooled token only: the layer's output is needed only where the head pools.

The last layer's output is needed only at the pooled token, so its MLP (and, for the families
with their own path here, its query and output projections) run for that token only:
`pooled_layer` runs the path `Family.pooled_path` names (`olft.families` picks it), and
`pooled_unavailable` says when none may be tried. `Stack` checks every path against the whole
layer before trusting it, so a path that does not hold for a model is switched off, never wrong.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

import torch
from torch import nn

from olft.families import Family

# Each path returns the last layer's output at the pooled position, (batch, 1, hidden), given the
# layer, the hidden states entering it (batch, seq, hidden), the pooled position of each row
# (batch,), the attention mask's rows for those queries, and the layer's call arguments by name.
_ATTENTION = ("eager", "sdpa", "olft_prefix")  # implementations with an explicit mask we can slice


def rows(t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """t[b, pos[b]] kept as a length-1 sequence: (batch, 1, ...); t may have batch 1 (shared)."""
    t = t.expand(pos.shape[0], *t.shape[1:]) if t.shape[0] == 1 else t
    return t[torch.arange(pos.shape[0], device=pos.device), pos].unsqueeze(1)


def mask_rows(mask: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor | None:
    """The 4D mask's row of each pooled query: (batch, heads, 1, kv)."""
    if mask is None or mask.shape[-2] == 1:
        return mask
    mask = mask.expand(pos.shape[0], *mask.shape[1:]) if mask.shape[0] == 1 else mask
    return mask[torch.arange(pos.shape[0], device=pos.device), :, pos].unsqueeze(2)


def _attend(attn: nn.Module, q, k, v, mask, dropout: float) -> torch.Tensor:
    """The module's own attention function (its config names it: eager, sdpa or olft_prefix)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = sys.modules[type(attn).__module__].eager_attention_forward
    fn = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager)
    out, _ = fn(attn, q, k, v, mask, dropout=dropout, scaling=attn.scaling)
    return out.reshape(q.shape[0], 1, -1).contiguous()


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x.view(*x.shape[:2], -1, head_dim).transpose(1, 2)


def _rotary_layer(layer: nn.Module, h: torch.Tensor, pos: torch.Tensor, mask, args: dict) -> torch.Tensor:
    """Llama, Mistral, Qwen2: pre-norm, separate q/k/v projections, rotary positions."""
    attn = layer.self_attn
    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    x = layer.input_layernorm(h)
    q = _heads(attn.q_proj(rows(x, pos)), attn.head_dim)
    k, v = _heads(attn.k_proj(x), attn.head_dim), _heads(attn.v_proj(x), attn.head_dim)
    cos, sin = args["position_embeddings"]
    q, _ = rope(q, q, rows(cos, pos), rows(sin, pos))
    _, k = rope(k, k, cos, sin)
    out = _attend(attn, q, k, v, mask, attn.attention_dropout if attn.training else 0.0)
    h1 = rows(h, pos) + attn.o_proj(out)
    return h1 + layer.mlp(layer.post_attention_layernorm(h1))


def _gpt2_layer(layer: nn.Module, h: torch.Tensor, pos: torch.Tensor, mask, args: dict) -> torch.Tensor:
    """GPT-2: pre-norm, one fused q/k/v projection (LoRA may wrap it, so it runs on every position)."""
    attn = layer.attn
    q, k, v = attn.c_attn(layer.ln_1(h)).split(attn.split_size, dim=2)
    q, k, v = _heads(rows(q, pos), attn.head_dim), _heads(k, attn.head_dim), _heads(v, attn.head_dim)
    if attn.config._attn_implementation == "eager" and attn.reorder_and_upcast_attn:
        out, _ = attn._upcast_and_reordered_attn(q, k, v, mask)
        out = out.reshape(q.shape[0], 1, -1).contiguous()
    else:
        out = _attend(attn, q, k, v, mask, attn.attn_dropout.p if attn.training else 0.0)
    h1 = attn.resid_dropout(attn.c_proj(out)) + rows(h, pos)
    return h1 + layer.mlp(layer.ln_2(h1))


def _bert_layer(layer: nn.Module, h: torch.Tensor, pos: torch.Tensor, mask, args: dict) -> torch.Tensor:
    """BERT, RoBERTa, ELECTRA: post-norm; everything after self-attention is per token."""
    sa = layer.attention.self
    d = sa.attention_head_size
    q = _heads(sa.query(rows(h, pos)), d)
    out = _attend(sa, q, _heads(sa.key(h), d), _heads(sa.value(h), d), mask, sa.dropout.p if sa.training else 0.0)
    return layer.feed_forward_chunk(layer.attention.output(out, rows(h, pos)))


def _generic_layer(family: Family, layer: nn.Module, call: tuple[tuple, dict], pos: torch.Tensor) -> torch.Tensor:
    """Any family: the layer's own forward, with the MLP block fed the pooled rows only.

    Attention runs at every position (its keys and values need them); from the MLP block on,
    every op is per token, so the pooled row of the layer's output is exact while the MLP (most
    of a layer's work) runs once per example. Other rows of the result are meaningless.
    """
    block = layer.get_submodule(family.mlp_in)

    def slice_input(_m, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        if x.dim() == 2:  # OPT: the residual is flattened too, so no row of it can be picked out
            raise RuntimeError(f"it merges the batch and sequence dimensions before its MLP: input {tuple(x.shape)}")
        if x.dim() != 3 or x.shape[0] != pos.shape[0]:
            raise RuntimeError(f"its MLP input is {tuple(x.shape)}, not (batch, seq, hidden)")
        x = rows(x, pos)
        return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

    handle = block.register_forward_pre_hook(slice_input, with_kwargs=True)
    try:
        out = layer(*call[0], **call[1])
    finally:
        handle.remove()
    out = out[0] if isinstance(out, tuple) else out
    return rows(out, pos)


POOLED_LAYERS: dict[str, Callable[..., torch.Tensor]] = {"rotary": _rotary_layer, "gpt2": _gpt2_layer, "bert": _bert_layer}


def dropout_active(layer: nn.Module) -> bool:
    """Whether the layer would draw random numbers (then the shortcut draws different ones)."""
    for m in layer.modules():
        if m.training and isinstance(m, nn.Dropout) and m.p > 0:
            return True
        rate = getattr(m, "attention_dropout", 0.0)  # a rate, or (Falcon) the nn.Dropout caught above
        if m.training and isinstance(rate, (int, float)) and rate > 0:
            return True
    return False


def pooled_unavailable(family: Family, layer: nn.Module) -> str | None:
    """None when the layer's pooled-token path may be tried, else why not (before any check)."""
    if getattr(layer, "crossattention", None) is not None or getattr(layer, "is_decoder", False):
        return "the last layer has cross-attention"
    impl = getattr(getattr(layer.get_submodule(family.attn), "config", None), "_attn_implementation", None)
    if family.pooled_path != "generic" and impl not in _ATTENTION:
        return f"attention implementation '{impl}' (needs eager or sdpa)"
    return None


def pooled_layer(family: Family, layer: nn.Module, hidden: torch.Tensor, call: tuple[tuple, dict], pos: torch.Tensor) -> torch.Tensor:
    """Output of `layer` at each row's pooled position `pos`, (batch, 1, hidden).

    `hidden` (batch, seq, hidden) enters the layer; `call` is the layer's own (args, kwargs)
    without the hidden states. PEFT modules in the layer are called, not bypassed.
    """
    args, kwargs = call
    if family.pooled_path == "generic":
        return _generic_layer(family, layer, ((hidden, *args), kwargs), pos)
    named = inspect.signature(layer.forward).bind_partial(hidden, *args, **kwargs).arguments
    mask = named.get("attention_mask")
    if mask is not None and (not torch.is_tensor(mask) or mask.dim() != 4):
        return _generic_layer(family, layer, ((hidden, *args), kwargs), pos)
    # The layer's own call would move its inputs to its device (a model spread over devices).
    device = next(layer.parameters()).device
    hidden, mask = hidden.to(device), None if mask is None else mask.to(device)
    if named.get("position_embeddings") is not None:
        named["position_embeddings"] = tuple(t.to(device) for t in named["position_embeddings"])
    return POOLED_LAYERS[family.pooled_path](layer, hidden, pos.to(device), mask_rows(mask, pos.to(device)), named)
