r"""Spectral norms of shPLRNN Jacobians at many states: the costly part of the growth bound ``G``.

Adaptive GTF evaluates ``G = max_b exp(mean_t log ||J(z_hat_bt)||_2)`` every 5 updates over every
state of the batch (B (T + 1) states, 3216 for B = 16, T = 200), and the trainers log ``G`` once
per epoch. In PyTorch that is a batched Jacobian (masks, a product) and a batched symmetric
eigensolver, which costs as much as a fused training update for small models; the C kernel (:func:`dsrecon.fast._kernels.jacobian_norms`) forms each J and finds its largest
singular value in one pass (Newton's method on the characteristic polynomial of ``J^T J`` for
M = 3, Jacobi rotations for larger M) without the per-call overhead, and is taken on the CPU when it builds;
otherwise the PyTorch computation runs. Both agree to float rounding (tests; less closely where
the two largest singular values of a 3 x 3 J coincide).

Shapes: K models stacked along the first axis (K = 1 for one model), S states each.
"""

from __future__ import annotations

import torch

from dsrecon.fast.members import per_member


@torch.no_grad()
def stacked_jacobians(A, W1, W2, h2, clipped: bool, z: torch.Tensor) -> torch.Tensor:
    """``diag(A) + W1 diag(m) W2`` per model and state: ``z (K, S, M) -> (K, S, M, M)``.

    As :meth:`dsrecon.models.plrnn.ShPLRNN.jacobian` (``m = 1[W2 z + h2 > 0]``, minus ``1[W2 z > 0]``
    when clipped; ReLU derivative 0 at 0), as one product ``m (K, S, L) @ P (K, L, M*M)`` with
    ``P[l] = W1[:, l] W2[l, :]``, so no ``(K, S, M, L)`` intermediate is formed.
    Weights ``A (K, M), W1 (K, M, L), W2 (K, L, M), h2 (K, L)``.
    """
    return per_member(lambda *t: _jacobians(*t, clipped), A, W1, W2, h2, z)


def _jacobians(A, W1, W2, h2, z, clipped: bool) -> torch.Tensor:
    """:func:`stacked_jacobians` in one batched computation (a member's numbers may depend on its place)."""
    K, S, M = z.shape
    u = torch.bmm(z, W2.transpose(1, 2))  # (K, S, L)
    m = (u + h2[:, None, :] > 0).to(z.dtype)  # (K, S, L)
    if clipped:
        m = m - (u > 0).to(z.dtype)
    P = (W1.transpose(1, 2)[:, :, :, None] * W2[:, :, None, :]).reshape(K, -1, M * M)  # (K, L, M*M)
    return torch.bmm(m, P).reshape(K, S, M, M) + torch.diag_embed(A)[:, None]  # (K, S, M, M)


@torch.no_grad()
def stacked_jacobian_norms(A, W1, W2, h2, clipped: bool, z: torch.Tensor) -> torch.Tensor:
    """``||J_k(z_ks)||_2``: ``z (K, S, M) -> (K, S)`` float64 (weights as :func:`stacked_jacobians`)."""
    from dsrecon.fast import _kernels
    from dsrecon.forcing import spectral_norms

    if _kernels.usable(z.device, z.dtype, z.shape[-1], stacklevel=3):  # else (no compiler: warned once) eigvalsh
        weights = [t.detach().to(z.dtype).contiguous() for t in (A, W1, W2.transpose(1, 2), h2)]
        return _kernels.jacobian_norms(z.detach().contiguous(), *weights, clipped)
    return per_member(lambda *t: spectral_norms(_jacobians(*t, clipped)), A, W1, W2, h2, z)
