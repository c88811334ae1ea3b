"""Member-wise evaluation of batched products, so an ensemble member computes what a one-model run computes."""

from __future__ import annotations

import torch


def per_member(fn, *stacked: torch.Tensor):
    """``fn`` applied to each member's slice alone, the results concatenated along the member axis.

    ``fn`` takes tensors with a leading member axis of size 1 and returns one tensor (or a tuple of
    tensors) with a leading member axis. Batched BLAS and LAPACK calls over a member axis (``bmm``,
    ``@`` on 3-d tensors, ``pinv``) may sum in an order that depends on where a member sits in the
    batch, so a member's numbers would change in the last bit with its position and its
    ensemble-mates, and a chaotic training run turns a 1-ulp difference into another model. Each
    member's products are therefore computed alone, on a fresh copy of its slice: the same call, on
    the same shapes, that a one-model run makes, so a member equals its separate run bit for bit.
    Elementwise operations and sums over a member's own trailing axes need no such care.
    """
    K = stacked[0].shape[0]
    if K == 1:
        return fn(*stacked)
    outs = [fn(*(t[k:k + 1].clone() for t in stacked)) for k in range(K)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)
