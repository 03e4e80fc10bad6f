"""PEFT methods, each applicable to any set of layers of a `Stack`.

A plain mapping from name to apply function: three methods need no plugin system.
`apply_method` turns a `MethodConfig` into the arguments each module takes, so the modules
themselves know nothing of configs.
"""

from __future__ import annotations

import logging

from olft.backbone import Stack
from olft.config import MethodConfig
from olft.errors import OlftError
from olft.methods.adapter import apply_adapter
from olft.methods.base import Applied
from olft.methods.lora import apply_lora
from olft.precision import to_fp32

log = logging.getLogger(__name__)

METHODS = ("adapter", "lora", "prefix")


def _unknown(name: str) -> OlftError:
    return OlftError(f"Unknown method '{name}': use one of {', '.join(METHODS)}.")


def apply_method(stack: Stack, layers: list[int], cfg: MethodConfig) -> Applied:
    """Put the configured PEFT module into `layers` of `stack` (base stays frozen).

    The module's parameters are fp32 whatever the frozen weights' dtype (`olft.precision`):
    each module casts its input to its own dtype and its output back, as PEFT's layers do.
    Raises OlftError for an unknown method or one the model's family cannot take.
    """
    layers = stack.check_layers(list(layers))
    if cfg.name == "adapter":
        applied = apply_adapter(stack, layers, cfg.reduction_factor, cfg.placement)
    elif cfg.name == "lora":
        applied = apply_lora(stack, layers, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
    elif cfg.name == "prefix":
        from olft.methods.prefix import apply_prefix

        applied = apply_prefix(stack, layers, cfg.prefix_length, cfg.prefix_reparam, cfg.prefix_hidden)
    else:
        raise _unknown(cfg.name)
    to_fp32(applied.params.values())
    return applied


def check_method(stack: Stack, cfg: MethodConfig) -> None:
    """Refuse a method the model's family cannot take (prefix tuning on attention that bypasses
    transformers' interface: Bloom, DeBERTa-v2, Falcon before transformers 5.25), touching nothing; OlftError naming the
    methods that do fit, or an adapter reduction factor wider than the model (warning of an unusual
    one, and of a LoRA rank above the model's width). Called once the model is loaded and before a run writes its folder, so a
    refused method leaves no folder behind. LoRA fits every layer discovery accepts."""
    if cfg.name == "adapter":
        from olft.methods.adapter import bottleneck_size, check_placement

        bottleneck_size(stack.hidden_size, cfg.reduction_factor, warn=True)
        check_placement(stack.family, cfg.placement)
    elif cfg.name == "lora" and cfg.lora_rank > stack.hidden_size:
        # B @ A of a projection from or to the hidden size has rank at most that width: a higher
        # rank trains more parameters (rank x (in + out) per target) and adds no expressiveness.
        log.warning("--lora-rank %d is above the %d-wide model's width, which bounds the rank of every LoRA update "
                    "(B @ A) of its projections: the extra rank adds parameters, not expressiveness; LoRA's usual ranks "
                    "are 4-64.", cfg.lora_rank, stack.hidden_size)
    elif cfg.name == "prefix":
        from olft.methods.prefix import check_prefix

        check_prefix(stack, list(range(stack.num_layers)), cfg.prefix_length)
    elif cfg.name not in METHODS:
        raise _unknown(cfg.name)


__all__ = ["METHODS", "Applied", "apply_method", "check_method"]
