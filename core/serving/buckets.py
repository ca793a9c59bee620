"""Shape buckets: every prefill and decode step is padded up to one of a few sizes, so graphs and compiled
code made at start cover every request and nothing is traced again while serving."""

from __future__ import annotations

import bisect

SMALLEST_KV_BUCKET = 128  # decode attends over at least this many cache columns
SMALLEST_PROMPT_BUCKET = 16


def powers_of_two_up_to(limit: int, smallest: int = 1) -> tuple[int, ...]:
    """smallest, 2*smallest, 4*smallest, ... below ``limit``, then ``limit`` itself."""
    sizes = []
    size = smallest
    while size < limit:
        sizes.append(size)
        size *= 2
    sizes.append(limit)
    return tuple(sizes)


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Decode batch sizes: 1, 2, 4, ... max_batch."""
    return powers_of_two_up_to(max_batch)


def kv_buckets(max_len: int) -> tuple[int, ...]:
    """How many cache columns a decode step attends over: 128, 256, ... max_len."""
    return powers_of_two_up_to(max_len, min(SMALLEST_KV_BUCKET, max_len))


def prompt_buckets(max_len: int) -> tuple[int, ...]:
    """Prefill lengths: powers of two and the midpoints between them (padding wastes at most a third)."""
    sizes: set[int] = set()
    size = SMALLEST_PROMPT_BUCKET
    while size < max_len:
        sizes.update((size, size + size // 2))
        size *= 2
    return (*sorted(s for s in sizes if s < max_len), max_len)


def bucket_for(n: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``n``; ValueError when none does."""
    i = bisect.bisect_left(buckets, n)
    if i == len(buckets):
        raise ValueError(f"{n} is larger than the largest bucket {buckets[-1]}")
    return buckets[i]
