"""Precision policy: frozen weights in any dtype, trainable parameters always fp32.

As PEFT does (its `autocast_adapter_dtype`), the PEFT modules and the head keep fp32 master
weights whatever `--dtype` the frozen base model has, and autocast picks the matmul dtype
(the frozen weights' dtype, or the launcher's mixed precision). Two faults this avoids:
- bf16 parameters lose AdamW updates smaller than their spacing (2^-8 relative): at lr 1e-4
  about half the values of a tiny adapter never moved in 20 steps;
- fp16 parameters cannot train at all: AdamW's eps (1e-8) is 0 in fp16, so the first step
  divides by zero wherever a gradient is 0.
fp16 autocast also needs loss scaling (activation gradients underflow below 6e-8):
`grad_scaler` gives a `torch.amp.GradScaler` that is on only then.

When training diverges, `diagnose` replays the batch with hooks on every layer and names the
cause it finds: an overflow of the frozen forward (a dtype fault: no learning rate fixes it),
or trainable values/outputs that grew until they overflowed (the learning rate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from olft.config import TrainConfig

LOW_PRECISION = (torch.float16, torch.bfloat16)
FP16_MAX = 65504.0


def frozen_dtype(stack: nn.Module) -> torch.dtype:
    """dtype of the frozen base weights (its first parameter: the embeddings)."""
    return next(stack.base.parameters()).dtype


def autocast_dtype(stack: nn.Module, dist: Any = None) -> torch.dtype | None:
    """The matmul dtype autocast uses in training and evaluation, or None (no autocast).

    The launcher's mixed precision (`Dist.mixed_precision`, bf16) wins; otherwise frozen weights
    stored in bf16/fp16 run their matmuls in that dtype while trainable weights stay fp32.
    """
    if dist is not None and dist.accelerator is not None and dist.mixed_precision != "no":
        return torch.bfloat16 if dist.mixed_precision == "bf16" else torch.float16
    dtype = frozen_dtype(stack)
    return dtype if dtype in LOW_PRECISION else None


def autocast(stack: nn.Module, dist: Any = None) -> AbstractContextManager:
    """Context for every forward of `stack` (training, evaluation, building activation caches)."""
    if dist is not None and dist.accelerator is not None and dist.mixed_precision != "no":
        return dist.autocast()
    dtype = autocast_dtype(stack)
    if dtype is None:
        return nullcontext()
    return torch.autocast(stack.head.weight.device.type, dtype=dtype)


def grad_scaler(stack: nn.Module, dist: Any = None) -> torch.amp.GradScaler:
    """Loss scaling, enabled only under fp16 autocast (bf16 has fp32's range and needs none).

    The scale starts at 2^10 rather than torch's 2^16: the frozen layers' activation gradients
    then keep 64x headroom below fp16's maximum, so the first steps are not skipped for overflow,
    and gradients down to 6e-11 (times 2^10 = fp16's smallest 6e-8) still count.
    """
    device = stack.head.weight.device.type
    return torch.amp.GradScaler(device, init_scale=2.0**10, enabled=autocast_dtype(stack, dist) == torch.float16)


def to_fp32(params: Iterable[nn.Parameter]) -> None:
    """Store trainable parameters in fp32 (in place, so module references stay valid)."""
    for p in params:
        if p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) and out else out


def _bad(t: Any) -> bool:
    return torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())


@torch.no_grad()
def _first_overflow(stack: nn.Module, run: Callable[[], torch.Tensor]) -> tuple[int | None, str]:
    """(layer, "input" | "output") where hidden states first stop being finite, replaying `run`.

    (None, "logits") when every layer's input and output is finite but the logits are not, and
    (None, "") when the replay is finite throughout (the fault was in the backward pass).
    """
    seen: list[tuple[int, str]] = []
    handles = []
    for i, layer in enumerate(stack.layers):

        def pre(_m, args, kwargs, i=i):
            hidden = args[0] if args else kwargs.get("hidden_states")
            if _bad(hidden):
                seen.append((i, "input"))

        def post(_m, _args, out, i=i):
            if _bad(_first(out)):
                seen.append((i, "output"))

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(post))
    try:
        logits = run()
    finally:
        for h in handles:
            h.remove()
    if seen:
        return seen[0]
    return (None, "logits") if _bad(logits) else (None, "")


def diagnose(
    stack: nn.Module, params: list[nn.Parameter], run: Callable[[], torch.Tensor], what: str, step: int,
    frozen_below: int, lr: float, rate_from: str | None = None,
) -> str:  # fmt: skip
    """One line saying that training diverged, the cause found, and the fix for that cause.

    `run` replays the failing batch's forward (under the training autocast). Causes, in order:
    trainable values that are no longer finite (updates too large: the learning rate); hidden
    states that overflow below the lowest tuned layer, or anywhere at step 1 before any update
    (the frozen model's forward overflows its dtype: the learning rate is not the cause); else
    outputs of the tuned layers that grew until they overflowed (the learning rate). `rate_from`:
    the strategy whose --strategy-lr entry set `lr` (`TrainConfig.rate_from`; None: --lr did), which
    the fix then names instead of --lr.
    """
    head = f"Training diverged: the {what} became NaN or infinite at step {step}."
    # A tenth of the rate, but never above olft's default: from an absurd rate (1e30) a tenth is as absurd.
    default = TrainConfig.lr
    if rate_from is None:
        lower = f"Lower the learning rate (now {lr:g}, try --lr {min(lr / 10, default):g}" + (
            ", olft's default)" if lr / 10 > default else ")"
        )
    else:  # --lr is not the rate that diverged
        lower = f"Lower {rate_from}'s rate in --strategy-lr (now {lr:g}, try {rate_from}={min(lr / 10, default):g} there" + (
            ", the default --lr)" if lr / 10 > default else ")"
        )
    dtype = frozen_dtype(stack)
    name = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype).removeprefix("torch."))
    if any(_bad(p) for p in params):
        return f"{head} Trainable values became non-finite: the updates are too large. {lower}."
    layer, where = _first_overflow(stack, run)
    if layer is not None and (layer < frozen_below or (layer == frozen_below and where == "input") or step == 1):
        at = f"in the hidden states entering layer {layer}" if where == "input" else f"at layer {layer}'s output"
        cause = (
            f"The frozen model's forward overflows {name} {at}"
            + (" before any update" if step == 1 else ", below the tuned layers")
            + (f" (fp16 holds at most {FP16_MAX:g})" if dtype == torch.float16 else "")
            + ": the learning rate is not the cause."
        )
        fix = "Load the weights in bf16 or fp32 (--dtype bf16 or --dtype fp32)."
        return f"{head} {cause} {fix}"
    if layer is not None:
        cause = f"The hidden states of layer {layer} ({where}) grew past what {name} holds as training moved them."
    elif where == "logits":
        cause = "The logits overflowed."
    else:
        cause = "The forward is finite; the backward pass overflowed."
    fix = f"{lower}, or train in fp32 (--dtype fp32)." if dtype in LOW_PRECISION else f"{lower}."
    return f"{head} {cause} {fix}"
