"""Several processes (GPUs, machines) through Hugging Face `accelerate`, DDP underneath.

Start olft with `accelerate launch` or `torchrun`; a plain `olft ...` is one process and runs as
it always has (on a CPU-only machine it does not even import accelerate). The launcher starts
the processes; this module only asks accelerate who this process is and uses its collectives.

Which parallelism each stage uses, and why:
- Selection is many short, independent jobs (one per candidate, a few hundred examples each,
  seeded alone). Cutting each job's small batch across GPUs would leave slivers of work per
  device and add a gradient all-reduce to every step; giving each process whole candidates
  instead keeps every job exactly as in one process (same batches, same seed, bitwise the same
  score), needs one exchange of results per round of candidates, and scales with the number of
  candidates. `--selection-parallel data` trains every candidate data-parallel instead.
- Final tuning and the baselines are one long job each, so they run data-parallel: every process
  walks the same global batches (`data.train_order`), takes its contiguous share, weights its
  loss by that share (the last batch of an epoch splits unevenly), and DDP averages gradients, so
  each optimizer step follows the mean loss over the global batch, as one process would. The
  head's dropout mask is drawn once per step for the whole global batch (`GlobalBatchDropout`),
  so dropout matches one process too; only dropout inside the layers (GPT-2, BERT) differs.

Only DDP is supported for training: the base model is frozen and every process holds it whole,
which fits a 7B model in bf16 on one GPU; `--device-map auto` spreads a larger one over the GPUs
of a single process. FSDP and DeepSpeed configs are refused with a message saying so.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from olft.config import precision_conflict
from olft.errors import OlftError

if TYPE_CHECKING:
    from olft.backbone import Stack
    from olft.config import RunConfig

log = logging.getLogger(__name__)

_CONTEXT: dict[str, Dist] = {}


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def launched() -> bool:
    """Started by `accelerate launch` (it always sets the mixed precision) or by `torchrun`."""
    return _env_int("WORLD_SIZE", 1) > 1 or "ACCELERATE_MIXED_PRECISION" in os.environ


def is_main_process() -> bool:
    """Rank 0 (or no launcher): the process that prints and logs. Cheap: reads the environment."""
    return _env_int("RANK", 0) == 0


@dataclass(frozen=True)
class Dist:
    """This process's place in the job, and the few collectives olft needs.

    Without an accelerator it is one plain process. `solo` is a multi-process job seen by one
    process working alone (candidate-parallel selection): no collectives, no DDP, but the same
    device and autocast.
    """

    accelerator: Any = None
    mixed_precision: str = "no"
    solo: bool = False

    @property
    def world_size(self) -> int:
        return 1 if self.solo or self.accelerator is None else self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return 0 if self.solo or self.accelerator is None else self.accelerator.process_index

    @property
    def is_main(self) -> bool:
        """The one process that writes the run folder and checkpoints (rank 0 of the job)."""
        return self.accelerator is None or self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self.accelerator is None else self.accelerator.device

    def alone(self) -> Dist:
        return replace(self, solo=True)

    def autocast(self):
        if self.accelerator is None or self.mixed_precision == "no":
            return nullcontext()
        return self.accelerator.autocast()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process."""
        if self.world_size == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every process."""
        if self.world_size == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def sum(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        return float(self.accelerator.reduce(t, reduction="sum").item())

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model as DDP when there are several processes (accelerate's own wrapping)."""
        if self.world_size == 1:
            return model
        return self.accelerator.prepare_model(model, device_placement=False)

    def release(self, model: nn.Module) -> None:
        """Undo `prepare`: drop the DDP wrapper and accelerate's reference to it."""
        if self.world_size > 1:
            self.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
            self.accelerator.free_memory()

    def no_sync(self, model: nn.Module, skip: bool):
        """Accumulate without the all-reduce on all but the last micro-batch of a step."""
        return self.accelerator.no_sync(model) if skip and self.world_size > 1 else nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        if self.world_size > 1:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def barrier(self) -> None:
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()


def resolve_mixed_precision(requested: str, dtype: str = "fp32") -> str:
    """'auto' -> the launcher's `--mixed_precision` if not 'no', else bf16 on a GPU that has it,
    except over fp16 weights (`dtype`, --dtype), whose own autocast is fp16 with loss scaling
    (`precision.autocast`): bf16 would only round them to bf16. OlftError for fp16 autocast,
    and for bf16 autocast (asked for, or the launcher's) over fp16 weights (`config.precision_conflict`)."""
    value, given = requested, f"--mixed-precision {requested}"
    if requested == "auto":
        value = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
        given = f"the launcher's --mixed_precision {value}"
        if value == "no" and dtype != "fp16":
            bf16_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            value = "bf16" if bf16_gpu else "no"
    if value not in ("no", "bf16"):
        raise OlftError(
            f"Mixed precision '{value}' is not supported: use --mixed-precision bf16 or no (fp16 autocast needs "
            "loss scaling, which olft does not do; --dtype fp16 stores the weights in fp16 instead)."
        )
    if (why := precision_conflict(dtype, value, given)) is not None:
        raise OlftError(why)
    return value


def context(mixed_precision: str = "auto", dtype: str = "fp32") -> Dist:
    """This process's `Dist`, made once per process (accelerate's state is process-wide); `dtype`:
    the frozen weights' (--dtype), which `resolve_mixed_precision` weighs."""
    mp = resolve_mixed_precision(mixed_precision, dtype)
    if mp in _CONTEXT:
        return _CONTEXT[mp]
    if not (launched() or mp != "no" or torch.cuda.is_available()):
        dist = Dist()
    else:
        if _CONTEXT and any(d.accelerator is not None for d in _CONTEXT.values()):
            raise OlftError(f"This process already runs with another mixed precision; it cannot switch to {mp}.")
        dist = Dist(_make_accelerator(mp), mp)
        if not dist.is_main:
            logging.getLogger("olft").setLevel(logging.WARNING)
    _CONTEXT[mp] = dist
    return dist


def _make_accelerator(mixed_precision: str):
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    # Several processes without CUDA means CPU processes talking over gloo; accelerate only picks
    # that when told the job is CPU-only.
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true")
    cpu = use_cpu or (not torch.cuda.is_available() and _env_int("WORLD_SIZE", 1) > 1)
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision)
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        raise OlftError(
            f"olft trains data-parallel with DDP; the accelerate config asks for {accelerator.distributed_type.value}, "
            "which is not supported. The base model stays frozen, so each process holds it whole (a 7B model in "
            "bf16 fits one GPU); for a larger one run a single process with --device-map auto. Use a multi-GPU "
            "config (accelerate launch --multi_gpu) instead."
        )
    return accelerator


def shutdown() -> None:
    """Wait for every process, then close the process group (end of a CLI command)."""
    for dist in _CONTEXT.values():
        if dist.world_size > 1:
            dist.barrier()
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    _CONTEXT.clear()


# -- placing the model ------------------------------------------------------------------------------
def place(stack: Stack, dist: Dist, device_map: str | None, gradient_checkpointing: bool) -> None:
    """Move the stack to this process's device (unless `device_map` placed it) and set checkpointing."""
    if device_map and dist.world_size > 1:
        raise OlftError(
            "--device-map spreads one model over the GPUs of a single process; it cannot be combined with several "
            "processes. Drop --device-map (each process then holds the whole frozen model) or run one process."
        )
    if not device_map and dist.device.type != "cpu":
        stack.to(dist.device)
    if gradient_checkpointing:
        enable = getattr(stack.base, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            stack.base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def align_to_layers(stack: Stack, layers: list[int]) -> None:
    """Put PEFT modules on the device of the layer they sit in (models spread with --device-map)."""
    for i in layers:
        layer = stack.layers[i]
        frozen = next((p for p in layer.parameters() if not p.requires_grad), None)
        if frozen is None:
            continue
        for module in layer.modules():
            if any(p.device != frozen.device for p in module.parameters(recurse=False)):
                module.to(frozen.device)


# -- data-parallel steps ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """This process's examples for one micro-batch of a global batch."""

    indices: list[int]  # positions in the `Encoded`; one stand-in example when the share is empty
    start: int  # where they begin in the global batch (rows of the head's dropout mask)
    weight: float  # share of the global batch: the loss is the mean over it, times this


def _spans(n: int, k: int) -> list[tuple[int, int]]:
    """`n` items cut into `k` contiguous spans whose sizes differ by at most one."""
    size, extra = divmod(n, k)
    spans, start = [], 0
    for i in range(k):
        stop = start + size + (i < extra)
        spans.append((start, stop))
        start = stop
    return spans


def shard_batch(batch: list[int], world_size: int, rank: int, grad_accum: int = 1) -> list[Part]:
    """This process's part of each of the `grad_accum` micro-batches of one global batch.

    The global batch is cut into `grad_accum` micro-batches and each of those into `world_size`
    contiguous shares, so the union over processes and micro-batches is exactly the batch. A
    process whose share is empty gets a stand-in example with weight 0: DDP needs every process
    to run each forward and backward.
    """
    parts = []
    for lo, hi in _spans(len(batch), grad_accum):
        a, b = _spans(hi - lo, world_size)[rank]
        if b > a:
            parts.append(Part(batch[lo + a : lo + b], lo + a, (b - a) / len(batch)))
        else:
            parts.append(Part(batch[:1], 0, 0.0))
    return parts


class GlobalBatchDropout(nn.Module):
    """The head's dropout with one mask per optimizer step for the whole global batch.

    Each process, and each accumulation micro-batch, multiplies by its own rows of that mask, so
    the masks and the random numbers drawn are those of one process stepping on the whole batch
    (on CPU bitwise the mask `nn.Dropout` would draw).
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.total, self.start, self.fresh = 0, 0, True
        self.mask: torch.Tensor | None = None

    def rows(self, total: int, start: int, fresh: bool) -> None:
        self.total, self.start, self.fresh = total, start, fresh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.fresh or self.mask is None:
            ones = torch.ones((self.total, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.mask = nn.functional.dropout(ones, self.p, True)
            self.fresh = False
        return x * self.mask[self.start : self.start + x.shape[0]]


@contextmanager
def data_parallel(stack: Stack, dist: Dist, grad_accum: int) -> Iterator[tuple[nn.Module, GlobalBatchDropout | None]]:
    """(model to run forward through, head dropout to steer) for one training run.

    One process without accumulation gets the stack itself and no dropout to steer: the plain
    loop, unchanged. Otherwise the head's dropout draws global-batch masks and, with several
    processes, the stack is wrapped in DDP for the duration of the run.
    """
    if dist.world_size == 1 and grad_accum == 1:
        yield stack, None
        return
    original = stack.head_dropout
    dropout = GlobalBatchDropout(original.p)
    stack.head_dropout = dropout
    try:
        model = dist.prepare(stack)
        try:
            yield model, dropout
        finally:
            dist.release(model)
    finally:
        stack.head_dropout = original


def describe(dist: Dist, cfg: RunConfig) -> dict[str, Any]:
    """What results.json records about how the run was spread over processes."""
    w, t = dist.world_size, cfg.train
    selection_mode = "single-process"
    if w > 1:
        selection_mode = "candidate-parallel" if cfg.selection.selection_parallel == "candidates" else "data-parallel"
    acc = dist.accelerator
    return {
        "world_size": w,
        "distributed_type": "none" if acc is None else str(acc.distributed_type.value),
        "device": str(dist.device) if cfg.model.device_map is None else f"device_map={cfg.model.device_map}",
        "mixed_precision": dist.mixed_precision,
        "effective_batch_size": t.batch_size,
        "per_device_batch_size": math.ceil(t.batch_size / (w * t.grad_accum)),
        "grad_accum": t.grad_accum,
        "selection_mode": selection_mode,
        "training_mode": "data-parallel" if w > 1 else "single-process",
        "gradient_checkpointing": t.gradient_checkpointing,
    }
