"""The frozen-prefix cache, and the last layer computed at the pooled token only.

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

The second half of this module is the pooled-token shortcut used by `Stack.forward`: the last
layer's output is needed only at the pooled token, so its keys and values are computed for every
position but its query, attention output, residual and MLP for that one token.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from olft.backbone import LayerInputs, Stack, get_submodule
from olft.data import Encoded, collate
from olft.errors import OlftError

log = logging.getLogger(__name__)

GB = 1024**3
DEFAULT_MEMORY_GB = 4.0  # budget when psutil is missing and OLFT_CACHE_MEMORY_GB is unset
MEMORY_FRACTION = 0.5  # of the RAM available when the cache is planned
DISK_FRACTION = 0.9  # of the free disk a cache may take (the rest stays free for the run)
MAX_PADDING = 0.1  # a build batch is closed before padding would exceed this share of its real tokens


class CacheUnavailable(OlftError):
    """No room for a prefix cache (memory budget and free disk both too small)."""


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
    folder = Path(tempfile.mkdtemp(prefix="olft-prefix-", dir=directory))
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


class PrefixCache:
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
                raise CacheUnavailable(f"No room for the frozen-prefix cache: it {reason}.")
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
                hidden = self.gather(idx, ids.shape[1]) if from_cache else None
                out = stack.hidden_entering(ids, mask, target, hidden=hidden, start=self.layer if from_cache else 0)
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
) -> dict[str, PrefixCache]:
    """A cache at `layer` for each split that has room; a split without one runs the plain forward.

    The memory budget is shared by the splits in order (train first, as the caller lists them);
    a split that fits neither memory nor disk is left out with the reason logged.
    """
    if layer <= 0:
        return {}
    budget = memory_budget_bytes() if memory_budget is None else memory_budget
    dtype = next(stack.base.parameters()).dtype
    caches: dict[str, PrefixCache] = {}
    for name, enc in encs.items():
        storage, reason = plan_cache(sum(enc.lengths), stack.hidden_size, dtype, memory_budget=budget, directory=directory)
        if storage is None:
            log.warning("no frozen-prefix cache for '%s' (plain forward, same result, slower): it %s", name, reason)
            continue
        log.info("frozen-prefix cache for '%s' at layer %d: %s", name, layer, reason)
        try:
            caches[name] = PrefixCache(stack, enc, layer, batch_size, storage=storage, directory=directory)
        except (OSError, RuntimeError, CacheUnavailable) as exc:  # allocation failed after all
            log.warning("no frozen-prefix cache for '%s' (plain forward, same result, slower): %s", name, exc)
            continue
        if storage == "memory":
            budget -= caches[name].nbytes
    return caches


# -- the last layer at the pooled token only -----------------------------------------------------
_ATTENTION = ("eager", "sdpa", "olft_prefix")  # implementations with an explicit mask we can slice


def _dropout_active(layer: nn.Module) -> bool:
    """Whether the layer would draw random numbers (then the shortcut draws different ones)."""
    for m in layer.modules():
        if m.training and isinstance(m, nn.Dropout) and m.p > 0:
            return True
        if m.training and float(getattr(m, "attention_dropout", 0.0) or 0.0) > 0:
            return True
    return False


def _layer_arguments(layer: nn.Module, hidden: torch.Tensor, inputs: LayerInputs) -> dict[str, Any]:
    """The layer's call arguments by name (families pass the mask positionally or by keyword)."""
    return inspect.signature(layer.forward).bind_partial(hidden, *inputs.args, **inputs.kwargs).arguments


def _rows(t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """t[b, pos[b]] kept as a length-1 sequence: (batch, 1, ...); t may have batch 1 (shared)."""
    t = t.expand(pos.shape[0], *t.shape[1:]) if t.shape[0] == 1 else t
    return t[torch.arange(pos.shape[0], device=pos.device), pos].unsqueeze(1)


def _mask_rows(mask: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor | None:
    """The 4D mask's row of each pooled query: (batch, heads, 1, kv)."""
    if mask is None or mask.shape[-2] == 1:
        return mask
    mask = mask.expand(pos.shape[0], *mask.shape[1:]) if mask.shape[0] == 1 else mask
    return mask[torch.arange(pos.shape[0], device=pos.device), :, pos].unsqueeze(2)


def _attend(attn: nn.Module, q, k, v, mask, dropout: float) -> torch.Tensor:
    """The module's own attention function (its config names it: eager, sdpa or olft_prefix)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = sys.modules[type(attn).__module__].eager_attention_forward
    fn = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager)
    out, _ = fn(attn, q, k, v, mask, dropout=dropout, scaling=attn.scaling)
    return out.reshape(q.shape[0], 1, -1).contiguous()


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x.view(*x.shape[:2], -1, head_dim).transpose(1, 2)


def _rotary_layer(layer: nn.Module, h: torch.Tensor, pos: torch.Tensor, mask, args: dict) -> torch.Tensor:
    """Llama, Mistral, Qwen2: pre-norm, separate q/k/v projections, rotary positions."""
    attn = layer.self_attn
    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    x = layer.input_layernorm(h)
    q = _heads(attn.q_proj(_rows(x, pos)), attn.head_dim)
    k, v = _heads(attn.k_proj(x), attn.head_dim), _heads(attn.v_proj(x), attn.head_dim)
    cos, sin = args["position_embeddings"]
    q, _ = rope(q, q, _rows(cos, pos), _rows(sin, pos))
    _, k = rope(k, k, cos, sin)
    out = _attend(attn, q, k, v, mask, attn.attention_dropout if attn.training else 0.0)
    h1 = _rows(h, pos) + attn.o_proj(out)
    return h1 + layer.mlp(layer.post_attention_layernorm(h1))


def _gpt2_layer(layer: nn.Module, h: torch.Tensor, pos: torch.Tensor, mask, args: dict) -> torch.Tensor:
    """GPT-2: pre-norm, one fused q/k/v projection (LoRA may wrap it, so it runs on every position)."""
    attn = layer.attn
    q, k, v = attn.c_attn(layer.ln_1(h)).split(attn.split_size, dim=2)
    q, k, v = _heads(_rows(q, pos), attn.head_dim), _heads(k, attn.head_dim), _heads(v, attn.head_dim)
    if attn.config._attn_implementation == "eager" and attn.reorder_and_upcast_attn:
        out, _ = attn._upcast_and_reordered_attn(q, k, v, mask)
        out = out.reshape(q.shape[0], 1, -1).contiguous()
    else:
        out = _attend(attn, q, k, v, mask, attn.attn_dropout.p if attn.training else 0.0)
    h1 = attn.resid_dropout(attn.c_proj(out)) + _rows(h, pos)
    return h1 + layer.mlp(layer.ln_2(h1))


def _bert_layer(layer: nn.Module, h: torch.Tensor, pos: torch.Tensor, mask, args: dict) -> torch.Tensor:
    """BERT: post-norm; everything after self-attention is per token."""
    sa = layer.attention.self
    d = sa.attention_head_size
    q = _heads(sa.query(_rows(h, pos)), d)
    out = _attend(sa, q, _heads(sa.key(h), d), _heads(sa.value(h), d), mask, sa.dropout.p if sa.training else 0.0)
    return layer.feed_forward_chunk(layer.attention.output(out, _rows(h, pos)))


_LAYERS: dict[str, Callable[..., torch.Tensor]] = {
    "llama": _rotary_layer,
    "mistral": _rotary_layer,
    "qwen2": _rotary_layer,
    "gpt2": _gpt2_layer,
    "bert": _bert_layer,
}


def shortcut_available(stack: Stack) -> str | None:
    """None when the last layer can run at the pooled token only and stay exact, else why not."""
    mode = getattr(stack, "pooled_shortcut", "auto")
    if mode == "off":
        return "switched off (Stack.pooled_shortcut = 'off')"
    if stack.family.name not in _LAYERS:
        return f"no pooled-token implementation for family '{stack.family.name}'"
    layer = stack.layers[-1]
    if getattr(layer, "crossattention", None) is not None or getattr(layer, "is_decoder", False):
        return "the last layer has cross-attention"
    attn = get_submodule(layer, stack.family.attn)
    if attn.config._attn_implementation not in _ATTENTION:
        return f"attention implementation '{attn.config._attn_implementation}' (needs eager or sdpa)"
    if mode != "always" and _dropout_active(layer):
        return "dropout is active in the last layer (set Stack.pooled_shortcut = 'always' to use it anyway)"
    return None


def pooled_last_layer(stack: Stack, hidden: torch.Tensor, inputs: LayerInputs, attention_mask: torch.Tensor) -> torch.Tensor | None:
    """Output of the last layer at the pooled token, (batch, 1, hidden); None if not available.

    `hidden` enters the last layer. Equal to running the whole layer and taking the pooled row,
    up to float rounding, with every PEFT module in the layer (they are called, not bypassed).
    """
    if shortcut_available(stack) is not None:
        return None
    layer = stack.layers[-1]
    args = _layer_arguments(layer, hidden, inputs)
    mask = args.get("attention_mask")
    if mask is not None and (not torch.is_tensor(mask) or mask.dim() != 4):
        return None
    # The layer's own call would move its inputs to its device (a model spread over devices).
    device = next(layer.parameters()).device
    hidden, mask = hidden.to(device), None if mask is None else mask.to(device)
    if args.get("position_embeddings") is not None:
        args["position_embeddings"] = tuple(t.to(device) for t in args["position_embeddings"])
    if stack.family.pooling == "first":
        pos = torch.zeros(hidden.shape[0], dtype=torch.long, device=device)
    else:
        pos = attention_mask.long().sum(dim=1).clamp(min=1).to(device) - 1
    return _LAYERS[stack.family.name](layer, hidden, pos, _mask_rows(mask, pos), args)
