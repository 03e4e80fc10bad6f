"""Prefix tuning (Li & Liang 2021) on chosen layers.

Each chosen layer's attention gets `length` trainable key and value vectors that every query
attends to, placed in front of the real keys. They are sized by key/value heads (grouped-query
attention shares them across the query heads of a group, as it does real keys), so a layer holds
2 x length x kv_heads x head_dim parameters. They are added after rotary embeddings are applied
to the real keys, so the prefix carries no position, and they are always visible: under the
causal mask and whatever the padding.

How they get in. transformers' attention modules compute q/k/v, apply rotary embeddings, then
call `ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager)(self, q, k,
v, mask, ...)`. We register one attention function, `olft_prefix`, and give only the chosen
attention modules a view of their config whose `_attn_implementation` names it; everything else
the view reads from the real config. That function prepends the prefix to k/v, adds `length`
always-visible columns to the mask, and calls the real eager or SDPA function. The model's
config is never changed, so the masks transformers builds for every layer stay as they were,
and the other layers and modules are untouched. `remove()` puts the original config object back
and deletes the prefix module; the registered function stays (process-wide, unused until a
prefix is applied again).

Optional reparameterisation (`reparam=True`): a small MLP produces the prefix while training,
which steadies optimisation; the saved weights are the plain vectors it produces (folded), so a
saved prefix is the same whichever way it was trained.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from olft.backbone import Stack, get_submodule
from olft.errors import OlftError
from olft.methods.base import Applied

INTERFACE = "olft_prefix"
SUPPORTED = ("eager", "sdpa")  # implementations that take an explicit 4D mask we can extend
INIT_STD = 0.02


class PrefixKV(nn.Module):
    """The key and value prefix of one attention module.

    Plain mode holds `key` and `value`, each (kv_heads, length, head_dim). Reparameterised mode
    holds `embedding` (length, hidden_size) and `mlp` (hidden_size -> hidden -> 2*kv_heads*head_dim,
    tanh between) and computes key and value from them on every call. `fold()` gives the plain
    vectors in either mode; `load_folded` makes a reparameterised prefix use fixed vectors instead
    of its MLP (to evaluate saved weights).
    """

    def __init__(
        self, length: int, kv_heads: int, head_dim: int, hidden_size: int, reparam: bool = False, hidden: int = 512
    ):
        super().__init__()
        self.length, self.kv_heads, self.head_dim, self.reparam = length, kv_heads, head_dim, reparam
        self.fixed: tuple[torch.Tensor, torch.Tensor] | None = None
        shape = (kv_heads, length, head_dim)
        if reparam:
            # PEFT's prefix encoder conventions: N(0, 1) embedding, default Linear init.
            self.embedding = nn.Parameter(torch.randn(length, hidden_size))
            self.mlp = nn.Sequential(
                nn.Linear(hidden_size, hidden), nn.Tanh(), nn.Linear(hidden, 2 * kv_heads * head_dim)
            )
        else:
            self.key = nn.Parameter(torch.randn(shape) * INIT_STD)
            self.value = nn.Parameter(torch.randn(shape) * INIT_STD)

    @property
    def folded_numel(self) -> int:
        """Parameters of the plain (saved) prefix: 2 x length x kv_heads x head_dim."""
        return 2 * self.length * self.kv_heads * self.head_dim

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(key, value), each (kv_heads, length, head_dim)."""
        if self.fixed is not None:
            return self.fixed
        if not self.reparam:
            return self.key, self.value
        out = self.mlp(self.embedding).view(self.length, 2, self.kv_heads, self.head_dim)
        return out[:, 0].transpose(0, 1), out[:, 1].transpose(0, 1)

    def fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain key and value as they are now, detached (what is saved)."""
        with torch.no_grad():
            key, value = self()
        return key.detach().clone().contiguous(), value.detach().clone().contiguous()

    def load_folded(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """Take saved plain vectors: copied into `key`/`value`, or fixed in front of the MLP."""
        shape = (self.kv_heads, self.length, self.head_dim)
        if tuple(key.shape) != shape or tuple(value.shape) != shape:
            raise OlftError(f"Saved prefix has shape {tuple(key.shape)}, this model's layer needs {shape}.")
        with torch.no_grad():
            if self.reparam:
                ref = self.embedding
                self.fixed = (key.to(ref.device, ref.dtype).clone(), value.to(ref.device, ref.dtype).clone())
            else:
                self.key.copy_(key)
                self.value.copy_(value)


class _ConfigView:
    """The attention module's config, except that it routes attention through the prefix.

    Only `_attn_implementation` differs; every other attribute is read from the real config,
    so later changes to it (including the implementation) are seen.
    """

    def __init__(self, config: Any):
        self._config = config

    @property
    def _attn_implementation(self) -> str:
        return INTERFACE

    @property
    def inner_implementation(self) -> str:
        return self._config._attn_implementation or "eager"

    def __getattr__(self, name: str) -> Any:
        if name == "_config":  # not yet set (copy / unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self._config, name)


def _inner_function(module: nn.Module, name: str) -> Callable:
    """The attention function the module would have used without the prefix."""
    if name == "eager":
        # Each modeling file has its own eager function (scaling, dtype handling differ).
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if eager is None:
            raise OlftError(f"{type(module).__name__} has no eager attention function; use attn_implementation='sdpa'.")
        return eager
    if name not in SUPPORTED:
        raise OlftError(f"Prefix tuning supports attn_implementation {' or '.join(SUPPORTED)}, not '{name}'.")
    return ALL_ATTENTION_FUNCTIONS[name]


def extend_mask(
    mask: torch.Tensor | None, length: int, q_len: int, kv_len: int, causal: bool, sdpa: bool, device: torch.device
) -> torch.Tensor | None:
    """The attention mask with `length` always-visible columns in front (the prefix).

    Boolean masks (True = attend) get True columns, additive float masks get zeros. No mask means
    no masking for eager, and for SDPA `is_causal` when the module is causal; `is_causal` would
    align the triangle with the prefix columns, so an explicit causal mask is built instead.
    """
    if mask is None:
        if not (sdpa and causal and q_len > 1):
            return None
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=device).tril().view(1, 1, q_len, kv_len)
    fill = True if mask.dtype == torch.bool else 0.0
    cols = torch.full((*mask.shape[:-1], length), fill, dtype=mask.dtype, device=mask.device)
    return torch.cat([cols, mask], dim=-1)


def prefix_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention with the module's prefix in front of `key`/`value` (batch, kv_heads, seq, head_dim)."""
    name = module.config.inner_implementation
    inner = _inner_function(module, name)
    prefix: PrefixKV = module.prefix
    if prefix.length == 0:  # nothing to add: the unchanged call, bit for bit
        return inner(module, query, key, value, attention_mask, **kwargs)
    if key.shape[1] != prefix.kv_heads or key.shape[-1] != prefix.head_dim:
        raise OlftError(
            f"Prefix sized ({prefix.kv_heads} heads, {prefix.head_dim} dims) but keys are {tuple(key.shape)}."
        )
    batch, kv_len = key.shape[0], key.shape[2]
    pk, pv = (t.to(key.dtype).unsqueeze(0).expand(batch, -1, -1, -1) for t in prefix())
    key, value = torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    mask = extend_mask(attention_mask, prefix.length, query.shape[2], kv_len, causal, name == "sdpa", query.device)
    if name == "eager" and getattr(module, "reorder_and_upcast_attn", False):
        return module._upcast_and_reordered_attn(query, key, value, mask)  # GPT-2's own eager variant
    return inner(module, query, key, value, mask, **kwargs)


AttentionInterface.register(INTERFACE, prefix_attention)


def attention_shape(attn: nn.Module, config: Any) -> tuple[int, int]:
    """(kv_heads, head_dim) of an attention module, from its attributes or the model config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = (
        getattr(attn, "head_dim", None)
        or getattr(attn, "attention_head_size", None)  # BERT
        or getattr(attn, "head_size", None)  # GPT-NeoX
        or getattr(config, "head_dim", None)
        or config.hidden_size // heads
    )
    return int(kv_heads), int(head_dim)


def _check_widths(attn: nn.Module, config: Any) -> None:
    """OlftError when the module's keys or values are not `attention_shape`'s head_dim wide.

    Multi-head latent attention (DeepSeek-V2/V3, MiniCPM3, Kimi) builds keys of qk_nope_head_dim +
    qk_rope_head_dim and values of v_head_dim, while its config's head_dim is the rotary part
    alone: a prefix sized from it fails at its first forward, after selection.
    """
    _, head_dim = attention_shape(attn, config)
    key, value = getattr(attn, "qk_head_dim", None) or head_dim, getattr(attn, "v_head_dim", None) or head_dim
    if key != head_dim or value != head_dim:
        raise OlftError(
            f"Prefix tuning sizes its keys and values by the heads' width ({head_dim} here), but {type(attn).__name__} "
            f"({config.model_type}) builds keys {key} wide and values {value} wide (multi-head latent attention). "
            "Use --method adapter or --method lora for this model."
        )


def _calls_interface(module: nn.Module) -> bool:
    """Whether the module's forward picks its attention function from transformers' interface."""
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source and hasattr(module, "config")


def attention_module(stack: Stack, index: int) -> tuple[str, nn.Module]:
    """(path in the base model, module) of layer `index`'s attention that calls the interface.

    The family's `attn` module or, when that is a wrapper (BERT's `attention` holds `self` and
    `output`), its first submodule that does. Raises OlftError when the family computes attention
    itself (Bloom, MPT, DeBERTa; Falcon before transformers 5.25): a prefix cannot get in there.
    Decided from the installed transformers' code, so a family that moves onto the interface is
    taken as soon as it does.
    """
    root = f"{stack.layer_path(index)}.{stack.family.attn}"
    attn = get_submodule(stack.base, root)
    for name, module in attn.named_modules() if getattr(stack.family, "attention_interface", True) else ():
        if _calls_interface(module):
            return (f"{root}.{name}" if name else root), module
    raise OlftError(
        f"Prefix tuning needs attention that goes through transformers' attention interface; "
        f"{type(attn).__name__} ({stack.base.config.model_type}) computes attention itself. "
        "Use --method adapter or --method lora for this model."
    )


@dataclass
class PrefixApplied(Applied):
    """`Applied` whose saved weights are the plain prefix vectors in both modes.

    `params` is what trains: `<layer>.<attn>.prefix.key`/`.value` in plain mode; in reparam mode
    `<layer>.<attn>.prefix.embedding` and `.mlp.*`. `state_dict()` always holds the folded
    `.prefix.key`/`.prefix.value` (kv_heads, length, head_dim), and `num_params` counts them;
    `train_only_params` counts the embedding and MLP used while training (0 in plain mode).
    """

    prefixes: dict[str, PrefixKV] = field(default_factory=dict, repr=False)  # attention path -> prefix

    @property
    def num_params(self) -> int:
        return sum(p.folded_numel for p in self.prefixes.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for path, prefix in self.prefixes.items():
            out[f"{path}.prefix.key"], out[f"{path}.prefix.value"] = prefix.fold()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load folded key/value vectors (what `state_dict` saves) into either mode."""
        names = [f"{path}.prefix.{kind}" for path in self.prefixes for kind in ("key", "value")]
        missing = [n for n in names if n not in state]
        if missing:
            raise KeyError(f"saved weights lack {missing[:3]}")
        for path, prefix in self.prefixes.items():
            prefix.load_folded(state[f"{path}.prefix.key"], state[f"{path}.prefix.value"])


def check_prefix(stack: Stack, layers: list[int], length: int = 5) -> None:
    """Refuse a prefix the model cannot take, touching nothing: OlftError for a negative length,
    attention in `layers` that bypasses transformers' interface, keys or values of another width
    than the prefix's, or an unsupported attention implementation. A run calls it before it writes its folder (`olft.methods.check_method`)."""
    if length < 0:
        raise OlftError(f"Prefix length cannot be negative (got {length}).")
    attns = [attention_module(stack, i)[1] for i in layers]
    for attn in attns:
        _check_widths(attn, attn.config)
    if attns:  # every layer's attention is of one class
        _inner_function(attns[0], stack.base.config._attn_implementation or "eager")


def apply_prefix(
    stack: Stack, layers: list[int], length: int = 5, reparam: bool = False, hidden: int = 512
) -> PrefixApplied:
    """Put a trainable key/value prefix of `length` positions into the attention of `layers`."""
    check_prefix(stack, layers, length)  # before any layer is changed
    prefixes: dict[str, PrefixKV] = {}
    originals: dict[str, Any] = {}
    for i in layers:
        path, attn = attention_module(stack, i)
        if "prefix" in attn._modules or hasattr(attn, "prefix"):
            raise OlftError(f"Layer {i} already has a prefix; remove it before applying another.")
        kv_heads, head_dim = attention_shape(attn, attn.config)
        device = next(attn.parameters(), next(stack.base.parameters())).device
        # fp32 whatever the frozen dtype (olft.precision); cast to the keys' dtype when used.
        prefix = PrefixKV(length, kv_heads, head_dim, stack.hidden_size, reparam, hidden).to(device)
        attn.prefix = prefix
        originals[path] = attn.config
        attn.config = _ConfigView(attn.config)
        prefixes[path] = prefix
    params = {f"{path}.prefix.{name}": p for path, m in prefixes.items() for name, p in m.named_parameters()}
    for p in params.values():
        p.requires_grad_(True)

    def remove() -> None:
        for path, original in originals.items():
            attn = get_submodule(stack.base, path)
            attn.config = original
            del attn.prefix

    train_only = sum(p.numel() for p in params.values()) if reparam else 0
    return PrefixApplied("prefix", list(layers), list(prefixes), params, remove, train_only, prefixes)
