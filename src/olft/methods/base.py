"""What every PEFT method returns when it is put into a stack."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Applied:
    """PEFT modules placed in a stack's base model.

    `params` maps names (relative to the base model, so they contain `layers.<i>.`) to the
    trainable tensors of the method alone; `remove()` puts the original modules back, leaving
    the base model exactly as it was loaded.
    """

    method: str
    layers: list[int]
    modules: list[str]  # dotted paths of the modules that were adapted (recorded in results)
    params: dict[str, nn.Parameter]
    _remove: Callable[[], None] = field(repr=False)
    # Parameters used only while training (e.g. prefix reparameterisation); saved weights fold them.
    train_only_params: int = 0

    def remove(self) -> None:
        self._remove()

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone().contiguous() for name, p in self.params.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.params) - set(state)
        if missing:
            raise KeyError(f"saved weights lack {sorted(missing)[:3]}")
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(state[name])
