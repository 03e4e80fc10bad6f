"""Deterministic sampling: seeded subsets that keep the examples' original order."""

from __future__ import annotations

import random
from collections.abc import Sequence

from olft.errors import OlftError
from olft.tasks.registry import Example


def sample_split(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A deterministic random subset of `n` examples, kept in their original order.

    Returns all examples when n is None or at least their count.
    """
    if n is None or n >= len(examples):
        return list(examples)
    if n < 1:
        raise OlftError(f"Sample size must be at least 1, got {n}.")
    chosen = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in chosen]


def disjoint_subsets(examples: list[Example], sizes: Sequence[int], seed: int) -> list[list[Example]]:
    """Deterministic, pairwise disjoint random subsets of the given sizes, each in original order.

    Used to train a selection candidate on one part of train and score it on another. When
    the sizes ask for more than there is, they shrink proportionally, each keeping at least one.
    """
    sizes = list(sizes)
    if not sizes or any(s < 1 for s in sizes):
        raise OlftError(f"Subset sizes must all be at least 1, got {sizes}.")
    if len(examples) < max(2, len(sizes)):
        raise OlftError(f"Need at least {max(2, len(sizes))} examples to make "
                        f"{len(sizes)} disjoint subsets, got {len(examples)}. Use a larger split.")
    total = sum(sizes)
    if total > len(examples):
        sizes = [max(1, s * len(examples) // total) for s in sizes]
        while sum(sizes) > len(examples):  # rounding up to 1 can overshoot; trim the largest
            sizes[sizes.index(max(sizes))] -= 1
    order = random.Random(seed).sample(range(len(examples)), sum(sizes))
    subsets, start = [], 0
    for size in sizes:
        subsets.append([examples[i] for i in sorted(order[start:start + size])])
        start += size
    return subsets
