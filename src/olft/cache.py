"""The frozen-prefix cache: hidden states entering a layer, computed once per example.

Layers below the lowest tuned layer are frozen and (with dropout off there) deterministic, so
their output for an example never changes across steps and epochs. The cache keeps, for every
example of a split, the hidden states entering layer `layer`, stored without padding (one flat
tensor plus offsets); a training step then runs only layers `layer..N-1`.

One cache serves all OLFT candidates: it is built at the lowest candidate and advanced one layer
at a time (running just that layer), instead of recomputing from the embeddings per candidate.
Real tokens do not attend to right padding, so the states of real tokens do not depend on how
examples were batched: the cache can be built at one batch size and sliced at any other.
"""

from __future__ import annotations

import logging

import torch

from olft.backbone import Stack
from olft.data import Encoded, collate, eval_order

log = logging.getLogger(__name__)


class PrefixCache:
    """Hidden states entering `layer` for every example of `enc` (unpadded, flat)."""

    def __init__(self, stack: Stack, enc: Encoded, layer: int, batch_size: int = 64):
        self.enc = enc
        self.layer = 0
        lengths = torch.tensor(enc.lengths, dtype=torch.long)
        self.lengths = lengths
        self.offsets = torch.zeros(len(enc) + 1, dtype=torch.long)
        self.offsets[1:] = torch.cumsum(lengths, 0)
        ref = next(stack.base.parameters())
        self.flat = torch.empty((int(self.offsets[-1]), stack.hidden_size), dtype=ref.dtype, device=ref.device)
        self.batch_size = batch_size
        self._fill(stack, target=layer, from_cache=False)

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def _fill(self, stack: Stack, target: int, from_cache: bool) -> None:
        was_training = stack.training
        stack.eval()
        device = self.flat.device
        with torch.inference_mode():
            for idx in eval_order(self.enc.lengths, self.batch_size):
                batch = collate(self.enc, idx, regression=False)
                ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
                hidden = self.gather(idx, ids.shape[1]) if from_cache else None
                out = stack.hidden_entering(ids, mask, target, hidden=hidden, start=self.layer if from_cache else 0)
                for row, i in enumerate(idx):
                    n = int(self.lengths[i])
                    self.flat[self.offsets[i] : self.offsets[i] + n] = out[row, :n]
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
            i = int(i)
            n = int(self.lengths[i])
            out[row, :n] = self.flat[self.offsets[i] : self.offsets[i] + n]
        return out
