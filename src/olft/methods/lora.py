"""LoRA on chosen layers, through the `peft` library.

`inject_adapter_in_model` puts LoRA layers into the model in place (no wrapper class), and
`layers_to_transform` restricts them to the chosen layer indices, so the stack keeps its shape.
The target modules are the stack's (`family.lora_targets`): q/v projections, or the fused qkv
projection where a family has one (GPT-2's Conv1D `c_attn`, GPT-NeoX's and Falcon's
`query_key_value`). peft keeps the LoRA weights in their own dtype (fp32 here, see
`olft.methods.apply_method`) and casts the input to it and the result back.
"""

from __future__ import annotations

import warnings

from torch import nn

from olft.backbone import Stack, set_submodule
from olft.errors import OlftError
from olft.methods.base import Applied


def apply_lora(stack: Stack, layers: list[int], rank: int = 8, alpha: int = 16, dropout: float = 0.0) -> Applied:
    """LoRA of `rank` on the family's target projections of `layers`: r x (in + out) per target.

    Raises OlftError when none of the targets exists in the chosen layers.
    """
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
        try:
            inject_adapter_in_model(config, stack.base)
        except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
            raise OlftError(
                f"LoRA found none of its target modules {', '.join(config.target_modules)} in layers {layers} "
                f"of this {stack.base.config.model_type} model ({str(exc).splitlines()[0]})"
            ) from exc
    paths = [name for name, m in stack.base.named_modules() if isinstance(m, LoraLayer)]
    params: dict[str, nn.Parameter] = {n: p for n, p in stack.base.named_parameters() if "lora_" in n}
    for p in params.values():
        p.requires_grad_(True)

    def remove() -> None:
        for path in paths:
            set_submodule(stack.base, path, stack.base.get_submodule(path).get_base_layer())

    return Applied("lora", list(layers), paths, params, remove)
