"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) on chosen layers.

Written here rather than taken from a library: `peft` has no bottleneck adapter, and the
`adapters` package replaces model classes wholesale, which would hide the layer stack we run
piece by piece. Houlsby puts an adapter after the attention block's output projection and one
after the MLP's; Pfeiffer only after the MLP. Each adapter is x + up(act(down(x))) with the up
projection zero-initialised, so the model is unchanged until training moves it.
"""

from __future__ import annotations

from torch import nn

from olft.backbone import Stack, get_submodule, set_submodule
from olft.methods.base import Applied

PLACEMENTS = {"houlsby": ("attn_out", "mlp_out"), "pfeiffer": ("mlp_out",)}


class BottleneckAdapter(nn.Module):
    """Residual bottleneck: d -> d/r -> d, identity at initialisation."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.ReLU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return x + self.up(self.act(self.down(x)))


class AdaptedOutput(nn.Module):
    """A projection followed by its adapter; stands in the projection's place."""

    def __init__(self, base_layer: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    def forward(self, *args, **kwargs):
        return self.adapter(self.base_layer(*args, **kwargs))


def apply_adapter(stack: Stack, layers: list[int], reduction_factor: int = 16, placement: str = "houlsby") -> Applied:
    dim = stack.hidden_size
    bottleneck = max(1, dim // reduction_factor)
    ref = next(stack.base.parameters())
    paths: list[str] = []
    for i in layers:
        for role in PLACEMENTS[placement]:
            path = f"{stack.layer_path(i)}.{getattr(stack.family, role)}"
            original = get_submodule(stack.base, path)
            adapter = BottleneckAdapter(dim, bottleneck).to(device=ref.device, dtype=ref.dtype)
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
