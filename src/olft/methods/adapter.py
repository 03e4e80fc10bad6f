"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) on chosen layers.

Written here rather than taken from a library: `peft` has no bottleneck adapter, and the
`adapters` package replaces model classes wholesale, which would hide the layer stack we run
piece by piece. Houlsby puts an adapter after the attention block's output projection and one
after the MLP's; Pfeiffer only after the MLP. Each adapter is x + up(act(down(x))) with the up
projection zero-initialised, so the model is unchanged until training moves it.

Placement is by module path, so it is the same on every family: the stack's family names the
module that ends the attention block (`attn_out`: Llama's o_proj, GPT-2's Conv1D c_proj, BERT's
attention.output.dense, GPT-NeoX's and Falcon's dense) and the MLP block (`mlp_out`: the MLP's
output projection, or for a mixture-of-experts layer the whole expert block, so the adapter sees
the mixed expert output; where dense and expert layers mix, the whole MLP block on every layer).
In parallel blocks (GPT-NeoX, Falcon, Phi-1: x + attn(x) + mlp(x)) each adapter sits on its own
branch, before the shared residual sum; in post-norm encoders (BERT) before the residual add and
LayerNorm, as in Houlsby et al.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from olft.backbone import Stack, get_submodule, set_submodule
from olft.errors import OlftError
from olft.methods.base import Applied

log = logging.getLogger("olft")
SANE_REDUCTION = (2, 64)  # the reduction factors adapter papers use; Houlsby's default is 16

PLACEMENTS = {"houlsby": ("attn_out", "mlp_out"), "pfeiffer": ("mlp_out",)}


class BottleneckAdapter(nn.Module):
    """Residual bottleneck x + up(relu(down(x))): d -> d/r -> d, identity at initialisation.

    Input and output (..., dim) in the caller's dtype; the adapter computes in its own (fp32)
    dtype unless autocast chooses another, as PEFT's LoRA layers do. 2*d*b + b + d parameters.
    """

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.ReLU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x.to(self.down.weight.dtype))
        return x + self.up(self.act(h)).to(x.dtype)


class AdaptedOutput(nn.Module):
    """A module followed by its adapter; stands in the module's place.

    A module returning a tuple (some expert blocks return (hidden, router_logits)) gets the
    adapter on its first element only.
    """

    def __init__(self, base_layer: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    def forward(self, *args, **kwargs):
        out = self.base_layer(*args, **kwargs)
        if isinstance(out, tuple):
            return (self.adapter(out[0]), *out[1:])
        return self.adapter(out)


def bottleneck_size(dim: int, reduction_factor: int, warn: bool = False) -> int:
    """The adapter bottleneck, dim // reduction_factor. Raises OlftError when that is under one
    unit (a factor above the width: nothing to tune); with `warn`, logs one line for a factor
    outside SANE_REDUCTION, naming the bottleneck it gives."""
    low, high = SANE_REDUCTION
    bottleneck = dim // reduction_factor
    sane = f"use {low}-{high} (Houlsby's 16 gives {max(1, dim // 16)} units here)"
    if bottleneck < 1:
        raise OlftError(f"--reduction-factor {reduction_factor} leaves the {dim}-wide model's adapter a bottleneck of "
                        f"{dim}/{reduction_factor} < 1 unit; {sane}.")
    if warn and not low <= reduction_factor <= high:
        log.warning("--reduction-factor %d gives the %d-wide model's adapter a bottleneck of %d units, outside the usual "
                    "range of factors: %s.", reduction_factor, dim, bottleneck, sane)
    return bottleneck


def check_placement(family, placement: str) -> None:
    """OlftError when the family names no module for one of the placement's adapters (a layer
    without an MLP block, or layers whose MLP blocks are different children), naming what fits."""
    for role in PLACEMENTS[placement]:
        if not getattr(family, role, None):
            raise OlftError(f"The {family.name} layers have no {role} module for the {placement} adapter; "
                            "use --method lora or prefix.")


def apply_adapter(stack: Stack, layers: list[int], reduction_factor: int = 16, placement: str = "houlsby") -> Applied:
    """Adapters of bottleneck hidden_size // reduction_factor on `layers` (Houlsby: 2 per layer).

    Parameters are fp32 on the layer's device. Raises OlftError when the family names no module
    for a placement (e.g. a layer without an MLP block).
    """
    dim = stack.hidden_size
    bottleneck = bottleneck_size(dim, reduction_factor)
    check_placement(stack.family, placement)
    paths: list[str] = []
    for i in layers:
        for role in PLACEMENTS[placement]:
            path = f"{stack.layer_path(i)}.{getattr(stack.family, role)}"
            original = get_submodule(stack.base, path)
            device = next(original.parameters(), next(stack.base.parameters())).device
            adapter = BottleneckAdapter(dim, bottleneck).to(device=device)
            set_submodule(stack.base, path, AdaptedOutput(original, adapter))
            paths.append(path)
    params = {
        f"{path}.adapter.{name}": p
        for path in paths
        for name, p in get_submodule(stack.base, path).adapter.named_parameters()
    }
    for p in params.values():
        p.requires_grad_(True)

    def remove() -> None:
        for path in paths:
            set_submodule(stack.base, path, get_submodule(stack.base, path).base_layer)

    return Applied("adapter", list(layers), paths, params, remove)
