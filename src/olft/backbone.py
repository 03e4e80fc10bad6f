"""Models as a stack: embed -> layer[0..N-1] -> final norm -> pool -> classification head.

Everything outside this module talks to `Stack`, never to an architecture family. The facts that
differ between families (where the layer list lives, which Linear ends attention and MLP, the
final norm, how to pool) sit in one table, `FAMILIES`; a family that transformers supports and
that follows one of these shapes needs only a new row.

The stack can start at any layer from hidden states computed earlier (suffix execution). The
arguments each layer is called with (attention mask, rotary position embeddings, position ids)
are taken from the model's own forward: `prepare` runs it with a hook on layer 0 that records
those arguments and stops the forward, so masks and positions are always built by transformers'
own code, for every family and attention implementation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from olft.errors import OlftError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """Where the pieces of one architecture family live, relative to the base (headless) model."""

    name: str
    model_types: tuple[str, ...]  # values of `config.model_type`
    layers: str  # dotted path of the nn.ModuleList of transformer layers
    embeddings: tuple[str, ...]  # modules before layer 0 (kept in eval mode: frozen, deterministic)
    final_norm: str | None  # applied after the last layer, before pooling
    pooler: str | None  # module applied to the pooled token (BERT's dense+tanh), frozen
    pooling: str  # "last": last non-pad token (decoders); "first": [CLS] (encoders)
    attn: str  # attention submodule of a layer (prefix tuning attaches here)
    attn_out: str  # Linear that ends the attention block (Houlsby adapter after it)
    mlp_out: str  # Linear that ends the MLP block (Houlsby and Pfeiffer adapter after it)
    lora_targets: tuple[str, ...]  # module names LoRA adapts (the `peft` defaults per family)
    layers_pattern: str  # last component of `layers`, as `peft` wants it


_LLAMA_LIKE = dict(
    layers="layers",
    embeddings=("embed_tokens",),
    final_norm="norm",
    pooler=None,
    pooling="last",
    attn="self_attn",
    attn_out="self_attn.o_proj",
    mlp_out="mlp.down_proj",
    lora_targets=("q_proj", "v_proj"),
    layers_pattern="layers",
)

FAMILIES: dict[str, Family] = {
    "gpt2": Family(
        name="gpt2",
        model_types=("gpt2",),
        layers="h",
        embeddings=("wte", "wpe", "drop"),
        final_norm="ln_f",
        pooler=None,
        pooling="last",
        attn="attn",
        attn_out="attn.c_proj",
        mlp_out="mlp.c_proj",
        lora_targets=("c_attn",),
        layers_pattern="h",
    ),
    "llama": Family(name="llama", model_types=("llama",), **_LLAMA_LIKE),
    "mistral": Family(name="mistral", model_types=("mistral",), **_LLAMA_LIKE),
    "qwen2": Family(name="qwen2", model_types=("qwen2",), **_LLAMA_LIKE),
    "bert": Family(
        name="bert",
        model_types=("bert",),
        layers="encoder.layer",
        embeddings=("embeddings",),
        final_norm=None,
        pooler="pooler",
        pooling="first",
        attn="attention.self",
        attn_out="attention.output.dense",
        mlp_out="output.dense",
        lora_targets=("query", "value"),
        layers_pattern="layer",
    ),
}


def family_for(model_type: str) -> Family:
    """The table row for a `config.model_type`, or a clear error naming the known families."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = ", ".join(sorted(t for f in FAMILIES.values() for t in f.model_types))
    raise OlftError(
        f"Model family '{model_type}' is not in olft's backbone table (known: {known}). "
        "Add a row to olft.backbone.FAMILIES naming its layer list, attention and MLP output "
        "projections, final norm and pooling."
    )


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(get_submodule(root, parent), name, module)


class _StopForward(Exception):
    """Raised by the layer-0 hook once the layer's call arguments are recorded."""


@dataclass
class LayerInputs:
    """Hidden states entering layer 0 and the extra arguments every layer is called with."""

    hidden: torch.Tensor
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Stack(nn.Module):
    """A headless transformer plus our pooling and classification head.

    The head is ours (dropout + Linear) for every family so that pooling is uniform: decoders
    pool the last non-pad token found from the attention mask (not from `pad_token_id`, which
    breaks when pad equals eos), encoders pool [CLS] through their frozen pooler.
    """

    # The last layer at the pooled token only (olft.cache.pooled_last_layer): "auto" when exact
    # (no dropout drawing in that layer), "always" (also under dropout: same distribution, other
    # random draws), "off" (run the whole last layer).
    pooled_shortcut: str = "auto"

    def __init__(self, base: nn.Module, family: Family, num_labels: int, head_dropout: float = 0.1):
        super().__init__()
        self.base = base
        self.family = family
        self.num_labels = num_labels
        hidden = base.config.hidden_size
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(hidden, num_labels)
        base.config.use_cache = False  # transformers 5 builds a KV cache by default

    # -- structure -----------------------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        return get_submodule(self.base, self.family.layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.base.config.hidden_size

    def layer_path(self, index: int) -> str:
        """Dotted path of layer `index` inside `base` (used to name and locate PEFT modules)."""
        return f"{self.family.layers}.{index}"

    def check_layers(self, layers: list[int]) -> list[int]:
        """Validate layer indices against this model; index 0 is a layer, negatives are not."""
        n = self.num_layers
        bad = [i for i in layers if not isinstance(i, int) or i < 0 or i >= n]
        if bad:
            raise OlftError(
                f"Layer index {bad[0]} is out of range: this model has {n} layers, numbered 0 to "
                f"{n - 1}. Pick layers in that range (see `olft info`)."
            )
        if not layers:
            raise OlftError("No layers given: name at least one layer index (0 to {n - 1}).")
        return sorted(set(layers))

    def freeze_base(self) -> None:
        """Base weights never train; PEFT modules re-enable their own parameters."""
        for p in self.base.parameters():
            p.requires_grad_(False)

    def set_mode(self, training: bool, frozen_below: int) -> None:
        """Train mode for the tuned part; eval mode (dropout off) for everything below it.

        The frozen layers below the lowest tuned layer must be deterministic for their outputs
        to be cacheable, and they have no trainable weight that dropout could regularise.
        """
        self.train(training)
        if training:
            for path in self.family.embeddings:
                get_submodule(self.base, path).eval()
            for i in range(frozen_below):
                self.layers[i].eval()

    # -- forward -------------------------------------------------------------------------------
    def prepare(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> LayerInputs:
        """Run the model's own forward up to layer 0 and capture what the layers receive."""
        captured: dict[str, Any] = {}

        def hook(_module, args, kwargs):
            captured["args"], captured["kwargs"] = args, kwargs
            raise _StopForward

        handle = self.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        args = captured["args"]
        return LayerInputs(hidden=args[0], args=tuple(args[1:]), kwargs=dict(captured["kwargs"]))

    def run_layers(self, hidden: torch.Tensor, inputs: LayerInputs, start: int, stop: int) -> torch.Tensor:
        for layer in self.layers[start:stop]:
            out = layer(hidden, *inputs.args, **inputs.kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.family.final_norm:
            hidden = get_submodule(self.base, self.family.final_norm)(hidden)
        if self.family.pooling == "first":
            pooled = hidden[:, 0]
        else:  # right padding: the last real token sits at length - 1
            last = attention_mask.long().sum(dim=1).clamp(min=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        if self.family.pooler:
            # BERT's pooler takes the whole sequence and reads position 0 itself.
            pooled = get_submodule(self.base, self.family.pooler)(pooled.unsqueeze(1))
        return pooled

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_dropout(pooled))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        start: int = 0,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits. With `hidden`, layers below `start` are skipped: `hidden` enters layer `start`."""
        inputs = self.prepare(input_ids, attention_mask)
        h = inputs.hidden if hidden is None else hidden
        last = self.num_layers - 1
        h = self.run_layers(h, inputs, start, last)
        pooled = self.pooled_last_layer(h, inputs, attention_mask) if start <= last else None
        if pooled is None:
            h = self.run_layers(h, inputs, max(start, last), self.num_layers)
            pooled = self.pool(h, attention_mask)
        return self.classify(pooled)

    def pooled_last_layer(self, hidden: torch.Tensor, inputs: LayerInputs, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Pooled output of the last layer computed at the pooled token only, or None.

        Keys and values need every position, but query, attention output, residual and MLP only
        the pooled token: exact up to float rounding, with PEFT modules in the layer. None when
        the family has no such path or dropout would draw differently (see `pooled_shortcut`).
        """
        from olft.cache import pooled_last_layer

        out = pooled_last_layer(self, hidden, inputs, attention_mask)
        if out is None:
            return None
        return self.pool(out, torch.ones(out.shape[:2], dtype=torch.long, device=out.device))

    @torch.inference_mode()
    def hidden_entering(self, input_ids, attention_mask, layer: int, hidden=None, start: int = 0):
        """Hidden states entering `layer` (the frozen prefix), without building a graph."""
        inputs = self.prepare(input_ids, attention_mask)
        h = inputs.hidden if hidden is None else hidden
        return self.run_layers(h, inputs, start, layer)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
