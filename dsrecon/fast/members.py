"""Member-wise helpers of K-stacked parameters: products evaluated per member (so an ensemble member
computes what a one-model run computes), and per-member gradient norms and finiteness checks."""

from __future__ import annotations

import math

import numpy as np
import torch

from dsrecon.fast import _kernels


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


def per_member_grad_norms(params: list, K: int) -> torch.Tensor:
    """``(K,)`` float64 Euclidean norm of each member's gradient over the K-stacked ``params``.

    One C pass over the tensors where the kernel is loaded, else torch (same values to rounding:
    tests/test_ensemble.py). A member without any gradient gets 0.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(K, dtype=torch.float64, device=params[0].device)
    fast = _kernels.stacked_sumsq(grads, K)
    if fast is not None:
        return torch.from_numpy(np.sqrt(fast[0]))
    return torch.linalg.vector_norm(torch.cat([g.reshape(K, -1) for g in grads], dim=1).double(), dim=1)


def per_member_params_finite(params: list, K: int) -> np.ndarray:
    """``(K,)`` bool: every parameter of member k is finite (one pass over the K-stacked ``params``)."""
    fast = _kernels.stacked_sumsq(params, K)  # reads the values only
    if fast is not None:
        return fast[1]
    return torch.isfinite(torch.cat([p.detach().reshape(K, -1) for p in params], dim=1)).all(1).cpu().numpy()


def model_grad_norm(model) -> float:
    """Euclidean norm of all of a model's gradients (NaN when none has one: the loss was not finite);
    one C pass in double once the kernel is loaded."""
    grads = [p.grad.reshape(1, -1) for p in model.parameters() if p.grad is not None]
    if not grads:
        return float("nan")
    fast = _kernels.stacked_sumsq(grads, 1)
    if fast is not None:
        return math.sqrt(fast[0][0])
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def model_params_finite(model) -> bool:
    """Whether every parameter of a model is finite (one C pass once the kernel is loaded)."""
    params = [p.detach().reshape(1, -1) for p in model.parameters()]
    fast = _kernels.stacked_sumsq(params, 1)
    if fast is not None:
        return bool(fast[1][0])
    return all(bool(torch.all(torch.isfinite(p))) for p in params)
