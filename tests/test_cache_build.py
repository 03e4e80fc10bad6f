"""The cache's build batches: every example once, bounded padding, at most `batch_size` each."""

from __future__ import annotations

import random

import pytest

from olft.cache import build_order


def _padded(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_build_order_covers_all_and_bounds_padding(seed):
    rng = random.Random(seed)
    lengths = [max(1, int(rng.lognormvariate(3, 0.6))) for _ in range(300)]  # long-tailed, as GLUE
    batches = build_order(lengths, 64, max_padding=0.1)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert all(1 <= len(b) <= 64 for b in batches)
    for b in batches:  # each batch within its padding bound (a batch of one has none)
        assert len(b) * max(lengths[i] for i in b) <= 1.1 * sum(lengths[i] for i in b) + 1e-9
    fixed = [sorted(range(300), key=lambda i: -lengths[i])[j : j + 64] for j in range(0, 300, 64)]
    assert _padded(lengths, batches) < _padded(lengths, fixed)


def test_build_order_equal_lengths_fills_batches():
    assert [len(b) for b in build_order([7] * 10, 4)] == [4, 4, 2]
    assert build_order([], 4) == []
