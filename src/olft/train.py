"""One training loop for every strategy, and evaluation.

Nothing here knows which strategy is running: a strategy is only "which layers carry the PEFT
module". The loop trains the module's parameters and the head; when a prefix cache is given,
each step starts from the cached hidden states and runs only the layers above it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from olft.backbone import Stack
from olft.cache import PrefixCache
from olft.data import Batch, Encoded, collate, eval_order, iterate, train_order
from olft.errors import OlftError
from olft.runfolder import fault_point

log = logging.getLogger(__name__)


class NonFiniteLoss(OlftError):
    """Training diverged: the loss or a gradient stopped being finite."""


@dataclass
class FitResult:
    seconds: float
    steps: int
    final_loss: float
    resumed_at: int = 0  # step a checkpoint resumed from (0 = trained from the start)


def logits_for(stack: Stack, batch: Batch, cache: PrefixCache | None) -> torch.Tensor:
    device = stack.head.weight.device
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
    if cache is None:
        return stack(ids, mask)
    hidden = cache.gather(batch.indices.tolist(), ids.shape[1])
    return stack(ids, mask, start=cache.layer, hidden=hidden)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[-1] == 1:  # regression (STS-B)
        return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


def fit(
    stack: Stack,
    params: list[nn.Parameter],
    enc: Encoded,
    *,
    epochs: float,
    max_steps: int | None,
    lr: float,
    batch_size: int,
    seed: int,
    frozen_below: int,
    warmup_ratio: float = 0.06,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    cache: PrefixCache | None = None,
    desc: str = "train",
    quiet: bool = False,
    checkpoint: Path | None = None,
    checkpoint_every: int | None = None,
) -> FitResult:
    """Train `params` (PEFT module + head) on `enc`; everything else stays frozen.

    With `checkpoint` and `checkpoint_every`, the whole training state (parameters, optimizer,
    scheduler, RNG, position in the data) is saved every `checkpoint_every` steps, and a run
    that finds the file resumes from it and ends with the same weights as one never stopped.
    """
    from transformers import get_linear_schedule_with_warmup

    regression = stack.num_labels == 1
    steps_per_epoch = math.ceil(len(enc) / batch_size)
    total = max_steps or max(1, math.ceil(epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total), total)
    torch.manual_seed(seed)
    state = _load_checkpoint(checkpoint, params, optimizer, scheduler)
    step, epoch, skip, loss_value = state
    stack.set_mode(True, frozen_below)
    start = time.perf_counter()
    bar = tqdm(total=total, initial=step, desc=desc, disable=quiet, leave=False, unit="step")
    while step < total:
        for position, idx in enumerate(train_order(enc.lengths, batch_size, seed + epoch)):
            if position < skip:
                continue
            batch = collate(enc, idx, regression)
            loss = loss_fn(logits_for(stack, batch, cache), batch.labels.to(stack.head.weight.device))
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise NonFiniteLoss(_diverged("loss", step + 1, lr))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
            if not torch.isfinite(norm):
                raise NonFiniteLoss(_diverged("gradient", step + 1, lr))
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            fault_point(f"{desc}:step{step}")
            if step >= total:
                break
            if checkpoint and checkpoint_every and step % checkpoint_every == 0:
                _save_checkpoint(checkpoint, params, optimizer, scheduler, (step, epoch, position + 1, loss_value))
        epoch, skip = epoch + 1, 0
    bar.close()
    stack.set_mode(False, 0)
    return FitResult(seconds=time.perf_counter() - start, steps=step, final_loss=loss_value, resumed_at=state[0])


def _save_checkpoint(path: Path, params, optimizer, scheduler, position: tuple) -> None:
    state = {
        "params": [p.detach().clone() for p in params],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "position": position,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path | None, params, optimizer, scheduler) -> tuple[int, int, int, float]:
    """Restore a checkpoint if there is one; (step, epoch, batches to skip, last loss)."""
    if path is None or not path.is_file():
        return 0, 0, 0, float("nan")
    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:  # a damaged checkpoint is not worth a crash: start the piece again
        log.warning("ignoring unreadable checkpoint %s (%s); training this piece from the start", path, exc)
        return 0, 0, 0, float("nan")
    with torch.no_grad():
        for p, saved in zip(params, state["params"], strict=True):
            p.copy_(saved)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    log.info("resuming %s from step %d", path.stem, state["position"][0])
    return state["position"]


def _diverged(what: str, step: int, lr: float) -> str:
    return (
        f"Training diverged: the {what} became NaN or infinite at step {step}. Lower the learning "
        f"rate (now {lr:g}, try --lr {lr / 10:g}) or train in fp32 (--dtype fp32)."
    )


@torch.no_grad()
def predict(
    stack: Stack, enc: Encoded, batch_size: int, cache: PrefixCache | None = None, desc: str = "eval", quiet: bool = False
) -> np.ndarray:
    """Predictions in example order: class indices, or floats for regression."""
    stack.eval()
    regression = stack.num_labels == 1
    out: np.ndarray = np.zeros(len(enc), dtype=np.float64 if regression else np.int64)
    batches = eval_order(enc.lengths, batch_size)
    for batch in tqdm(iterate(enc, batches, regression), total=len(batches), desc=desc, disable=quiet, leave=False):
        logits = logits_for(stack, batch, cache).float()
        values = logits.squeeze(-1) if regression else logits.argmax(-1)
        out[batch.indices.numpy()] = values.cpu().numpy()
    return out
