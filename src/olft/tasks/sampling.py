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
    the sizes ask for more than there is, they shrink proportionally to use every example
    (`shrink_sizes`), each keeping at least one.
    """
    sizes = list(sizes)
    if not sizes or any(s < 1 for s in sizes):
        raise OlftError(f"Subset sizes must all be at least 1, got {sizes}.")
    if len(examples) < max(2, len(sizes)):
        raise OlftError(f"Need at least {max(2, len(sizes))} examples to make "
                        f"{len(sizes)} disjoint subsets, got {len(examples)}. Use a larger split.")
    if sum(sizes) > len(examples):
        sizes = shrink_sizes(sizes, len(examples))
    order = random.Random(seed).sample(range(len(examples)), sum(sizes))
    subsets, start = [], 0
    for size in sizes:
        subsets.append([examples[i] for i in sorted(order[start:start + size])])
        start += size
    return subsets


def shrink_sizes(sizes: Sequence[int], n: int) -> list[int]:
    """`sizes` scaled to add up to `n` exactly (largest remainder: rounding every part down
    would drop up to one example per part, e.g. 1,000 + 400 of 200 gave 142 + 57), each at
    least 1. `n` must be at least len(sizes); sizes positive."""
    total = sum(sizes)
    out = [s * n // total for s in sizes]
    # The examples rounding down left over go to the parts with the largest fractions (the first on a tie).
    for i in sorted(range(len(sizes)), key=lambda i: -(sizes[i] * n % total))[: n - sum(out)]:
        out[i] += 1
    out = [max(1, s) for s in out]
    while sum(out) > n:  # raising a part to 1 can overshoot; trim the largest
        out[out.index(max(out))] -= 1
    return out
