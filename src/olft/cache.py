"""The activation cache: hidden states entering a layer, computed once by the frozen layers.

Layers below the lowest tuned layer are frozen and (with dropout off there) deterministic, so
their output for an example never changes across steps and epochs. The cache keeps, for every
example of a split, the hidden states entering layer `layer`, stored without padding (one flat
tensor plus offsets); a training step then runs only layers `layer..N-1`.

One cache serves all OLFT candidates: it is built at the lowest candidate and advanced one layer
at a time (running just that layer), instead of recomputing from the embeddings per candidate.
Real tokens do not attend to right padding, so the states of real tokens do not depend on how
examples were batched: the cache can be built at one batch size and sliced at any other.

Where it lives: in memory up to a budget (`OLFT_CACHE_MEMORY_GB`, else half the available RAM,
else 4 GB), beyond that in a memory-mapped file on disk (`OLFT_CACHE_DIR`, else $TMPDIR), and
beyond the free disk nowhere: `build_caches` then returns no cache and logs why, and training
runs the plain forward, which gives the same result more slowly.

This module only stores and serves activations: it runs the stack through `Stack.hidden_entering`
and knows nothing of model families (the pooled-token last layer lives in `olft.pooledlayer`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from olft.data import Encoded, collate
from olft.errors import OlftError

if TYPE_CHECKING:
    from olft.backbone import Stack

log = logging.getLogger(__name__)

GB = 1024**3
DEFAULT_MEMORY_GB = 4.0  # budget when psutil is missing and OLFT_CACHE_MEMORY_GB is unset
MEMORY_FRACTION = 0.5  # of the RAM available when the cache is planned
DISK_FRACTION = 0.9  # of the free disk a cache may take (the rest stays free for the run)
MAX_PADDING = 0.1  # a build batch is closed before padding would exceed this share of its real tokens


class CacheUnavailable(OlftError):
    """No room for an activation cache (memory budget and free disk both too small)."""


# -- where the cache lives -----------------------------------------------------------------------
def memory_budget_bytes() -> int:
    """Bytes the cache may hold in memory: `OLFT_CACHE_MEMORY_GB`, else half the available RAM."""
    env = os.environ.get("OLFT_CACHE_MEMORY_GB")
    if env:
        try:
            return int(float(env) * GB)
        except ValueError as exc:
            raise OlftError(f"OLFT_CACHE_MEMORY_GB must be a number of gigabytes, got '{env}'.") from exc
    try:
        import psutil
    except ImportError:
        return int(DEFAULT_MEMORY_GB * GB)
    return int(psutil.virtual_memory().available * MEMORY_FRACTION)


def cache_directory(directory: str | Path | None = None) -> Path:
    """Folder for disk caches: the argument, else `OLFT_CACHE_DIR`, else the system temp folder."""
    return Path(directory or os.environ.get("OLFT_CACHE_DIR") or tempfile.gettempdir())


def _disk_free(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def plan_cache(
    n_tokens: int,
    hidden: int,
    dtype: torch.dtype,
    *,
    memory_budget: int | None = None,
    directory: str | Path | None = None,
) -> tuple[str | None, str]:
    """("memory" | "disk" | None, reason) for a cache of `n_tokens` x `hidden` values of `dtype`."""
    need = n_tokens * hidden * torch.empty((), dtype=dtype).element_size()
    budget = memory_budget_bytes() if memory_budget is None else memory_budget
    if need <= budget:
        return "memory", f"{need / GB:.2f} GB fits the memory budget of {budget / GB:.2f} GB"
    folder = cache_directory(directory)
    try:
        free = _disk_free(folder)
    except OSError as exc:
        return None, f"needs {need / GB:.2f} GB, over the memory budget ({budget / GB:.2f} GB), and {folder} is unusable ({exc})"
    if need <= DISK_FRACTION * free:
        return "disk", f"{need / GB:.2f} GB is over the memory budget ({budget / GB:.2f} GB): memory-mapped file in {folder}"
    return None, (
        f"needs {need / GB:.2f} GB: over the memory budget ({budget / GB:.2f} GB, set OLFT_CACHE_MEMORY_GB) and over "
        f"{DISK_FRACTION:.0%} of the free disk in {folder} ({free / GB:.2f} GB free, set OLFT_CACHE_DIR)"
    )


def _disk_tensor(n_tokens: int, hidden: int, dtype: torch.dtype, directory: Path) -> tuple[torch.Tensor, Path]:
    """A (n_tokens, hidden) tensor backed by a memory-mapped file, space reserved up front.

    The file is unlinked as soon as it is mapped (POSIX), so it disappears whatever way the process
    ends and its space is returned when the tensor is freed; elsewhere it is removed on `close`.
    """
    nbytes = n_tokens * hidden * torch.empty((), dtype=dtype).element_size()
    folder = Path(tempfile.mkdtemp(prefix="olft-activations-", dir=directory))
    path = folder / "hidden.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if hasattr(os, "posix_fallocate"):  # reserve the blocks: a full disk fails here, not mid-write
            os.posix_fallocate(fd, 0, max(nbytes, 1))
        else:
            os.ftruncate(fd, max(nbytes, 1))
    except OSError:
        os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    os.close(fd)
    array = np.memmap(path, dtype=np.uint8, mode="r+", shape=(max(nbytes, 1),))
    flat = torch.from_numpy(array)[:nbytes].view(dtype).view(n_tokens, hidden)
    try:
        path.unlink()
        folder.rmdir()
    except OSError:  # the file is still open elsewhere (Windows): removed on close instead
        pass
    return flat, folder


def _memory_device(ref: torch.Tensor, numel: int) -> torch.device:
    """The model's device when the cache takes at most half its free memory, else the CPU.

    The memory budget is about host RAM; an accelerator keeps the cache only where it leaves
    room for training, and a batch gathered on the host is copied over each step otherwise.
    """
    if ref.device.type != "cuda":
        return ref.device
    free, _total = torch.cuda.mem_get_info(ref.device)
    return ref.device if numel * ref.element_size() <= free // 2 else torch.device("cpu")


def build_order(lengths: list[int], batch_size: int, max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Batches for building a cache: longest examples first, each batch at most `batch_size`
    examples and closed before its padded tokens would exceed (1 + `max_padding`) x its real ones.

    Fixed batches over sorted lengths pad every batch to its longest member: on SST-2's
    long-tailed lengths, 64 per batch ran 1.65x the real tokens through the frozen layers (the
    build then cost more than a plain epoch's forward, which pads 1.15x at batch 16); bounded
    batches run about 1.1x. Long examples get small batches, the bulk of similar length full ones.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        # sorted longest first: the batch's width is its first member's length
        if current and (len(current) == batch_size or lengths[current[0]] * (len(current) + 1) > (1 + max_padding) * (real + lengths[i])):
            batches.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    return batches + [current] if current else batches


class ActivationCache:
    """Hidden states entering `layer` for every example of `enc` (unpadded, flat).

    `storage` is "memory" or "disk"; left out, it is planned from the memory budget and the free
    disk (`plan_cache`), and `CacheUnavailable` says why when neither has room.
    """

    def __init__(
        self,
        stack: Stack,
        enc: Encoded,
        layer: int,
        batch_size: int = 64,
        *,
        storage: str | None = None,
        memory_budget: int | None = None,
        directory: str | Path | None = None,
    ):
        self.enc = enc
        self.layer = 0
        self.batch_size = batch_size
        lengths = torch.tensor(enc.lengths, dtype=torch.long)
        self.lengths = lengths
        self.offsets = torch.zeros(len(enc) + 1, dtype=torch.long)
        self.offsets[1:] = torch.cumsum(lengths, 0)
        self._spans = list(zip(self.offsets[:-1].tolist(), lengths.tolist(), strict=True))
        ref = next(stack.base.parameters())
        n_tokens = int(self.offsets[-1])
        if storage is None:
            storage, reason = plan_cache(n_tokens, stack.hidden_size, ref.dtype, memory_budget=memory_budget, directory=directory)
            if storage is None:
                raise CacheUnavailable(f"No room for the activation cache: it {reason}.")
        if storage not in ("memory", "disk"):
            raise ValueError(f"storage must be 'memory' or 'disk', not {storage!r}")
        self.storage = storage
        self.device = ref.device  # where `gather` delivers batches: the model's first layer
        self.folder: Path | None = None
        if storage == "disk":
            self.flat, self.folder = _disk_tensor(n_tokens, stack.hidden_size, ref.dtype, cache_directory(directory))
            self._finalizer = weakref.finalize(self, shutil.rmtree, self.folder, True)
        else:
            self.flat = torch.empty(
                (n_tokens, stack.hidden_size), dtype=ref.dtype, device=_memory_device(ref, n_tokens * stack.hidden_size)
            )
        self._fill(stack, target=layer, from_cache=False)

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def close(self) -> None:
        """Free the storage now (the disk file's space included) instead of at garbage collection."""
        self.flat = torch.empty((0, self.flat.shape[1]), dtype=self.flat.dtype)
        if self.folder is not None:
            self._finalizer()

    def _fill(self, stack: Stack, target: int, from_cache: bool) -> None:
        """Run the frozen layers (no graph, eval mode) and store their output for every example."""
        was_training = stack.training
        stack.eval()
        device = self.device
        with torch.inference_mode():
            for idx in build_order(self.enc.lengths, self.batch_size):
                batch = collate(self.enc, idx, regression=False)
                ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
                extra = {k: v.to(device) for k, v in batch.extra.items()}
                hidden = self.gather(idx, ids.shape[1]) if from_cache else None
                start = self.layer if from_cache else 0
                out = stack.hidden_entering(ids, mask, target, hidden=hidden, start=start, **extra)
                out = out.to(self.flat.device)
                for row, i in enumerate(idx):
                    offset, n = self._spans[i]
                    self.flat[offset : offset + n] = out[row, :n]
        self.layer = target
        stack.train(was_training)

    def advance(self, stack: Stack, target: int) -> None:
        """Move the cache up to `target` by running only the layers in between."""
        if target < self.layer:
            raise ValueError(f"cache is at layer {self.layer}; cannot go back to {target}")
        if target > self.layer:
            self._fill(stack, target=target, from_cache=True)

    def gather(self, indices, width: int) -> torch.Tensor:
        """Right-padded (batch, width, hidden) states for the given example indices."""
        out = torch.zeros((len(indices), width, self.flat.shape[1]), dtype=self.flat.dtype, device=self.flat.device)
        for row, i in enumerate(indices):
            offset, n = self._spans[int(i)]
            if n > width:
                raise ValueError(f"example {int(i)} has {n} cached tokens but the batch is {width} wide: wrong cache?")
            out[row, :n] = self.flat[offset : offset + n]
        return out.to(self.device, non_blocking=True)


def build_caches(
    stack: Stack,
    encs: dict[str, Encoded],
    layer: int,
    batch_size: int = 64,
    *,
    memory_budget: int | None = None,
    directory: str | Path | None = None,
) -> dict[str, ActivationCache]:
    """A cache at `layer` for each split that has room; a split without one runs the plain forward.

    The memory budget is shared by the splits in order (train first, as the caller lists them);
    a split that fits neither memory nor disk is left out with the reason logged.
    """
    if layer <= 0:
        return {}
    budget = memory_budget_bytes() if memory_budget is None else memory_budget
    dtype = next(stack.base.parameters()).dtype
    caches: dict[str, ActivationCache] = {}
    for name, enc in encs.items():
        storage, reason = plan_cache(sum(enc.lengths), stack.hidden_size, dtype, memory_budget=budget, directory=directory)
        if storage is None:
            log.warning("no activation cache for '%s' (plain forward, same result, slower): it %s", name, reason)
            continue
        log.info("activation cache for '%s' at layer %d: %s", name, layer, reason)
        try:
            caches[name] = ActivationCache(stack, enc, layer, batch_size, storage=storage, directory=directory)
        except (OSError, RuntimeError, CacheUnavailable) as exc:  # allocation failed after all
            log.warning("no activation cache for '%s' (plain forward, same result, slower): %s", name, exc)
            continue
        if storage == "memory":
            budget -= caches[name].nbytes
    return caches
