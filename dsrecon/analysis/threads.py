"""A scoped torch intra-op thread count for the analysis' many small batched solves."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` and restore the previous count after.

    The region solves work on ``M x M`` matrices (M ~ 3-30): intra-op threads cannot speed them up,
    and on a busy machine their synchronisation makes each small operation many times slower, so
    the analysis functions default to one thread. ``None`` leaves the setting alone.
    """
    if n is None:
        yield
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer or None, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
