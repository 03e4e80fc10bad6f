"""Tokenized examples and length-grouped, per-batch-padded batches.

GLUE sentences are short (SST-2 averages about 13 words): padding every batch to a fixed 128
tokens would waste most of the compute, so batches are padded only to their longest member and
examples of similar length are grouped together. Padding is always on the right, so the
positions of real tokens do not depend on the batch they land in.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from olft.errors import OlftError


@dataclass
class Encoded:
    """Token ids and labels of one split, in example order."""

    input_ids: list[list[int]]
    labels: list[int | float]
    pad_id: int
    truncated: int = 0  # examples cut to max_length
    extra: dict[str, list[list[int]]] = field(default_factory=dict)  # other model inputs (token_type_ids)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


@dataclass
class Batch:
    indices: torch.Tensor  # positions of the examples in their `Encoded`
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (batch, seq) long, e.g. token_type_ids


def _join_pairs(tokenizer) -> bool:
    """Encoders have a separator token and pair encoding; decoders get the texts joined by a newline."""
    return getattr(tokenizer, "sep_token", None) is None


def encode(tokenizer, examples: Sequence, max_length: int, model_inputs: Sequence[str] = ()) -> Encoded:
    """Tokenize examples (objects with `.texts` and `.label`), truncating to `max_length`.

    `model_inputs` names other tokenizer outputs the model takes (`Stack.model_inputs`, e.g.
    token_type_ids); they are kept per example in `Encoded.extra`.
    """
    if not examples:
        raise OlftError("The split is empty: it has no examples to tokenize. Check the data file.")
    texts = [tuple(ex.texts) for ex in examples]
    if _join_pairs(tokenizer):
        firsts, seconds = ["\n".join(t) for t in texts], None
    else:
        firsts = [t[0] for t in texts]
        seconds = [t[1] for t in texts] if len(texts[0]) > 1 else None
    out = tokenizer(firsts, seconds, truncation=False, add_special_tokens=True, verbose=False)
    full, extra = out["input_ids"], {name: out[name] for name in model_inputs}
    long = [i for i, ids in enumerate(full) if len(ids) > max_length]
    if long:
        cut = tokenizer(
            [firsts[i] for i in long],
            [seconds[i] for i in long] if seconds else None,
            truncation=True,
            max_length=max_length,
        )
        for row, i in enumerate(long):
            full[i] = cut["input_ids"][row]
            for name in model_inputs:
                extra[name][i] = cut[name][row]
    labels = [ex.label for ex in examples]
    extra = {name: [list(x) for x in values] for name, values in extra.items()}
    return Encoded(input_ids=[list(x) for x in full], labels=labels, pad_id=tokenizer.pad_token_id, truncated=len(long),
                   extra=extra)  # fmt: skip


def collate(enc: Encoded, indices: Sequence[int], regression: bool) -> Batch:
    width = max(len(enc.input_ids[i]) for i in indices)
    ids = torch.full((len(indices), width), enc.pad_id, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        seq = enc.input_ids[i]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    extra = {}
    for name, values in enc.extra.items():  # padded with 0 (segment A), masked out anyway
        extra[name] = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            extra[name][row, : len(values[i])] = torch.tensor(values[i], dtype=torch.long)
    dtype = torch.float32 if regression else torch.long
    labels = torch.tensor([enc.labels[i] for i in indices], dtype=dtype)
    return Batch(torch.tensor(list(indices), dtype=torch.long), ids, mask, labels, extra)


def train_order(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within mega-batches, shuffle batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def eval_order(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic batches sorted by length (predictions are mapped back by index)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[j : j + batch_size] for j in range(0, len(order), batch_size)]


def iterate(enc: Encoded, batches: list[list[int]], regression: bool) -> Iterator[Batch]:
    for idx in batches:
        yield collate(enc, idx, regression)
