"""One training loop for every strategy, and evaluation.

Nothing here knows which strategy is running: a strategy is only "which layers carry the PEFT
module". The loop trains the module's parameters and the head; when an activation cache is given,
each step starts from the cached hidden states and runs only the layers above it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from olft.atomic import atomic_path
from olft.backbone import Stack
from olft.cache import ActivationCache
from olft.data import Batch, Encoded, collate, eval_order, iterate, train_order
from olft.distributed import Dist, GlobalBatchDropout, data_parallel, shard_batch
from olft.errors import OlftError
from olft.precision import autocast, diagnose, grad_scaler, to_fp32
from olft.runfolder import fault_point

log = logging.getLogger(__name__)


class NonFiniteLoss(OlftError):
    """Training diverged: the loss or a gradient stopped being finite."""


@dataclass
class FitResult:
    """What `fit` did. `seconds` (wall) and `cpu_seconds` (this process's CPU time, all its
    threads) are the training's whole time: after a resume from a checkpoint, the earlier
    processes' time up to that checkpoint (saved in it) plus this process's. `seconds_before_resume`
    is that earlier part (0.0 when trained from the start), or None when the checkpoint was written
    by an olft that did not record it: `seconds` then counts only the steps after it."""

    seconds: float
    steps: int
    final_loss: float
    resumed_at: int = 0  # step a checkpoint resumed from (0 = trained from the start)
    cpu_seconds: float = 0.0
    seconds_before_resume: float | None = 0.0


def logits_for(stack: Stack, batch: Batch, cache: ActivationCache | None, model: nn.Module | None = None) -> torch.Tensor:
    """Logits of `batch`, from the cached activations when there is a cache; `model` (default: the
    stack, else the stack wrapped in DDP) is what runs the forward. The batch's other model inputs
    (`batch.extra`, e.g. token_type_ids) reach the base model either way."""
    model = stack if model is None else model
    device = stack.head.weight.device
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
    extra = {k: v.to(device) for k, v in batch.extra.items()}
    if cache is None:
        return model(ids, mask, **extra)
    hidden = cache.gather(batch.indices.tolist(), ids.shape[1])
    return model(ids, mask, start=cache.layer, hidden=hidden, **extra)


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
    cache: ActivationCache | None = None,
    desc: str = "train",
    quiet: bool = False,
    checkpoint: Path | None = None,
    checkpoint_every: int | None = None,
    dist: Dist | None = None,
    grad_accum: int = 1,
    on_step: Callable[[dict[str, float]], None] | None = None,
    rate_from: str | None = None,
) -> FitResult:
    """Train `params` (PEFT module + head) on `enc`; everything else stays frozen.

    With `checkpoint` and `checkpoint_every`, the whole training state (parameters, optimizer,
    scheduler, RNG, position in the data) is saved every `checkpoint_every` steps, and a run
    that finds the file resumes from it and ends with the same weights as one never stopped.

    `batch_size` is the effective batch of one optimizer step. With `dist` over several
    processes (data-parallel) or `grad_accum` > 1, each batch runs as micro-batches that together
    hold exactly its examples (`distributed.shard_batch`), and the step is the one a single
    process takes on the whole batch, up to float rounding.

    `on_step`, if given, is called after every optimizer step with {"step" (1-based), "loss"
    (the batch's mean loss), "lr" (the learning rate that step used), "grad_norm" (before clipping)}.
    """
    from transformers import get_linear_schedule_with_warmup

    dist = dist or Dist()
    to_fp32(params)  # trainable values in fp32 whatever the frozen dtype (olft.precision)
    steps_per_epoch = math.ceil(len(enc) / batch_size)
    total = max_steps or max(1, math.ceil(epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total), total)
    scaler = grad_scaler(stack, dist)  # on only under fp16 autocast (see olft.precision)
    torch.manual_seed(seed)
    state, before = _load_checkpoint(checkpoint, params, optimizer, scheduler, dist, scaler)
    step, epoch, skip, loss_value = state
    wall_before, cpu_before = before or (0.0, 0.0)
    stack.set_mode(True, frozen_below)
    start, cpu_start = time.perf_counter(), time.process_time()
    # The bar is closed however the loop ends: a divergence's error line must not join its line.
    bar = tqdm(total=total, initial=step, desc=desc, disable=quiet, leave=False, unit="step")
    with bar, data_parallel(stack, dist, grad_accum) as (model, dropout):
        while step < total:
            for position, idx in enumerate(train_order(enc.lengths, batch_size, seed + epoch)):
                if position < skip:
                    continue
                loss_value = _forward_backward(stack, model, dropout, optimizer, enc, idx, cache, dist, grad_accum, scaler)
                if not math.isfinite(loss_value):
                    raise NonFiniteLoss(_diverged(stack, params, enc, idx, cache, dist, "loss", step + 1, frozen_below, lr,
                                                      rate_from))
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
                # Under fp16 loss scaling an overflowing gradient only lowers the scale and skips
                # the step; it is divergence once even a scale below 1 overflows.
                if not torch.isfinite(norm) and (not scaler.is_enabled() or scaler.get_scale() < 1):
                    raise NonFiniteLoss(_diverged(stack, params, enc, idx, cache, dist, "gradient", step + 1, frozen_below, lr,
                                                      rate_from))
                lr_used = scheduler.get_last_lr()[0]
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                if on_step is not None:
                    on_step({"step": step, "loss": loss_value, "lr": lr_used, "grad_norm": float(norm)})
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
                fault_point(f"{desc}:step{step}")
                if step >= total:
                    break
                if checkpoint and checkpoint_every and step % checkpoint_every == 0:
                    at = (step, epoch, position + 1, loss_value)
                    spent = (wall_before + time.perf_counter() - start, cpu_before + time.process_time() - cpu_start)
                    _save_checkpoint(checkpoint, params, optimizer, scheduler, at, dist, scaler, spent)
            epoch, skip = epoch + 1, 0
    stack.set_mode(False, 0)
    return FitResult(seconds=wall_before + time.perf_counter() - start, steps=step, final_loss=loss_value,
                     resumed_at=state[0], cpu_seconds=cpu_before + time.process_time() - cpu_start,
                     seconds_before_resume=None if before is None else wall_before)


def _forward_backward(
    stack: Stack, model: nn.Module, dropout: GlobalBatchDropout | None, optimizer, enc: Encoded, idx: list[int],
    cache: ActivationCache | None, dist: Dist, grad_accum: int, scaler: torch.amp.GradScaler,
) -> float:  # fmt: skip
    """Leave the gradient of the mean loss over global batch `idx` in `.grad`; return that loss.

    Without `dropout` to steer (one process, no accumulation) this is the plain step. Otherwise
    each micro-batch's loss is weighted by its share of the global batch and DDP averages over
    processes, so the gradient and the returned loss (summed over processes) are the batch's.
    The forward runs under the precision policy's autocast; `scaler` scales the backward (fp16).
    """
    device = stack.head.weight.device
    regression = stack.num_labels == 1
    if dropout is None:
        batch = collate(enc, idx, regression)
        with autocast(stack, dist):
            loss = loss_fn(logits_for(stack, batch, cache), batch.labels.to(device))
        loss_value = loss.item()
        if math.isfinite(loss_value):
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
        return loss_value
    optimizer.zero_grad(set_to_none=True)
    parts = shard_batch(idx, dist.world_size, dist.rank, grad_accum)
    total = 0.0
    for k, part in enumerate(parts):
        dropout.rows(len(idx), part.start, fresh=k == 0)
        batch = collate(enc, part.indices, regression)
        with dist.no_sync(model, skip=k < len(parts) - 1):
            with autocast(stack, dist):
                loss = loss_fn(logits_for(stack, batch, cache, model), batch.labels.to(device)) * part.weight
            dist.backward(scaler.scale(loss * dist.world_size))  # DDP divides by the number of processes
        total += loss.item()
    return dist.sum(total)


def _save_checkpoint(path: Path, params, optimizer, scheduler, position: tuple, dist: Dist | None = None, scaler=None,
                     spent: tuple[float, float] = (0.0, 0.0)) -> None:
    """Write the training state (rank 0 only); every process's RNG state goes in with it, and
    `spent`: (wall, CPU) seconds the training took up to this step, over every process that ran it."""
    dist = dist or Dist()
    rng = dist.gather(torch.get_rng_state())
    cuda_rng = dist.gather(torch.cuda.get_rng_state(dist.device)) if dist.device.type == "cuda" else None
    if not dist.is_main:
        return
    state = {
        "params": [p.detach().clone() for p in params],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng[0],
        "position": position,
        "spent": spent,
    }
    if len(rng) > 1:
        state["rng_per_process"] = rng
    if scaler is not None and scaler.is_enabled():  # fp16 loss scale: resumes where it was
        state["scaler"] = scaler.state_dict()
    if cuda_rng is not None:  # dropout on a GPU draws from the device's generator
        state["cuda_rng_per_process"] = cuda_rng
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _read_checkpoint(path: Path, map_location: str | None = None) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=False, map_location=map_location)
    except Exception as exc:  # a damaged checkpoint is not worth a crash: start the piece again
        log.warning("ignoring unreadable checkpoint %s (%s); training this piece from the start", path, exc)
        return None


def checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint was saved at (where a rerun resumes), without reading its tensors;
    None when there is none or it cannot be read (a rerun then starts the piece afresh)."""
    if not path.is_file():
        return None
    try:
        return int(torch.load(path, weights_only=False, map_location="cpu", mmap=True)["position"][0])
    except Exception:  # noqa: BLE001 - a damaged checkpoint: `_read_checkpoint` warns when a run meets it
        return None


def _load_checkpoint(path: Path | None, params, optimizer, scheduler, dist: Dist | None = None,
                     scaler=None) -> tuple[tuple[int, int, int, float], tuple[float, float] | None]:
    """Restore a checkpoint if there is one: ((step, epoch, batches to skip, last loss), the (wall,
    CPU) seconds spent up to it). Without a checkpoint: ((0, 0, 0, nan), (0.0, 0.0)); the seconds
    are None for a checkpoint written before olft saved them.

    With several processes rank 0 reads the file and sends it to the others, so every process
    resumes from the same state even when only rank 0 sees the run folder.
    """
    dist = dist or Dist()
    fresh = ((0, 0, 0, float("nan")), (0.0, 0.0))
    if path is None:
        return fresh
    if dist.world_size == 1:
        state = _read_checkpoint(path)
    else:
        state = dist.broadcast(_read_checkpoint(path, "cpu") if dist.is_main else None)
    if state is None:
        return fresh
    with torch.no_grad():
        for p, saved in zip(params, state["params"], strict=True):
            p.copy_(saved)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and scaler.is_enabled() and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    rngs = state.get("rng_per_process")
    torch.set_rng_state(rngs[dist.rank] if rngs and len(rngs) == dist.world_size else state["rng"])
    cuda_rngs = state.get("cuda_rng_per_process")
    if cuda_rngs and dist.device.type == "cuda":
        torch.cuda.set_rng_state(cuda_rngs[dist.rank if len(cuda_rngs) == dist.world_size else 0], dist.device)
    log.info("resuming %s from step %d", path.stem, state["position"][0])
    spent = state.get("spent")
    return tuple(state["position"]), (tuple(map(float, spent)) if spent is not None else None)


def _diverged(stack: Stack, params, enc: Encoded, idx: list[int], cache, dist: Dist, what: str, step: int,
              frozen_below: int, lr: float, rate_from: str | None) -> str:  # fmt: skip
    """The divergence message, naming the cause `olft.precision.diagnose` finds on this batch."""

    def replay() -> torch.Tensor:
        batch = collate(enc, idx, stack.num_labels == 1)
        with autocast(stack, dist):
            return logits_for(stack, batch, cache)

    return diagnose(stack, params, replay, what, step, frozen_below, lr, rate_from)


@torch.no_grad()
def predict(
    stack: Stack,
    enc: Encoded,
    batch_size: int,
    cache: ActivationCache | None = None,
    desc: str = "eval",
    quiet: bool = False,
    dist: Dist | None = None,
    logits: bool = False,
) -> np.ndarray:
    """Predictions in example order: class indices, or floats for regression (`logits`: the raw
    (n, num_labels) outputs instead, e.g. to compute a held-out loss).

    With several processes each scores every W-th batch and the (indices, predictions) pairs of
    all processes are gathered once; filling the output by index places each example exactly
    once (no example dropped or counted twice at the end of an uneven split). A progress bar
    (`desc`, on stderr) is drawn unless `quiet` or there is only one batch.
    """
    stack.eval()
    regression = stack.num_labels == 1
    shape = (len(enc), stack.num_labels) if logits else (len(enc),)
    out: np.ndarray = np.zeros(shape, dtype=np.float64 if regression or logits else np.int64)
    world, rank = (dist.world_size, dist.rank) if dist else (1, 0)
    batches = eval_order(enc.lengths, batch_size)[rank::world]
    pairs = []
    # One batch (`olft predict --text`, a small file) is over before a bar could say anything: none is drawn.
    bar = tqdm(iterate(enc, batches, regression), total=len(batches), desc=desc, disable=quiet or len(batches) <= 1,
               leave=False)
    with autocast(stack, dist), bar:
        for batch in bar:
            raw = logits_for(stack, batch, cache).float()
            values = raw if logits else raw.squeeze(-1) if regression else raw.argmax(-1)
            pairs.append((batch.indices.numpy(), values.cpu().numpy()))
    if world > 1:
        pairs = [pair for part in dist.gather(pairs) for pair in part]
    seen = np.zeros(len(enc), dtype=bool)
    for indices, values in pairs:
        out[indices] = values
        seen[indices] = True
    if not seen.all():
        raise RuntimeError(f"{int((~seen).sum())} of {len(enc)} examples got no prediction")
    return out
