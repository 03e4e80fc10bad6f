"""LoRA on chosen layers, through the `peft` library.

`inject_adapter_in_model` puts LoRA layers into the model in place (no wrapper class), and
`layers_to_transform` restricts them to the chosen layer indices, so the stack keeps its shape.
"""

from __future__ import annotations

import warnings

from torch import nn

from olft.backbone import Stack, set_submodule
from olft.methods.base import Applied


def apply_lora(stack: Stack, layers: list[int], rank: int = 8, alpha: int = 16, dropout: float = 0.0) -> Applied:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(stack.family.lora_targets),
        layers_to_transform=list(layers),
        layers_pattern=stack.family.layers_pattern,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPT-2's Conv1D: peft switches fan_in_fan_out itself
        inject_adapter_in_model(config, stack.base)
    paths = [name for name, m in stack.base.named_modules() if isinstance(m, LoraLayer)]
    params: dict[str, nn.Parameter] = {n: p for n, p in stack.base.named_parameters() if "lora_" in n}
    for p in params.values():
        p.requires_grad_(True)

    def remove() -> None:
        for path in paths:
            set_submodule(stack.base, path, stack.base.get_submodule(path).get_base_layer())

    return Applied("lora", list(layers), paths, params, remove)
