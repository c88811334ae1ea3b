"""Free running of a shPLRNN in the C kernel: ``fused_generate``, and ``is_fusable``.

The kernel side of :func:`dsrecon.rollout.generate` (``fast=True``), which imports this module; so
it imports nothing of the rollout or training code, only the kernels and the model. Where the
kernel cannot run (no C compiler, a model off the CPU, M > 64) ``generate`` keeps its eager loop.
"""

from __future__ import annotations

import torch

from dsrecon.fast import _kernels
from dsrecon.models.base import Model


def is_fusable(model) -> bool:
    """True for models the fused path handles: the shPLRNN (clipped or not, identity or affine)."""
    from dsrecon.models.plrnn import ShPLRNN

    return isinstance(model, ShPLRNN)


@torch.no_grad()
def fused_generate(model: Model, x0, n_steps: int, *, chunk: int = 100_000) -> torch.Tensor:
    """Free-running shPLRNN trajectory through the fused kernel; same result as :func:`dsrecon.rollout.generate`.

    The time loop runs in the C kernel (the forward recursion of :mod:`dsrecon.fast._kernels` with
    alpha = 0; a CPU model, float32/float64, M <= 64, a C compiler), in chunks of ``chunk`` steps whose states are carried over, so memory stays
    O(chunk) however long the run.

    Parameters
    ----------
    model : ShPLRNN
    x0 : array or tensor, shape ``(N,)`` or ``(B, N)``
        First observation(s); the state is ``model.initial_state(x0)``.
    n_steps : int
        Observations returned, the first being ``observe(initial_state(x0))``.
    chunk : int
        Steps per kernel call.

    Returns
    -------
    torch.Tensor, shape ``(n_steps, N)`` for 1-D ``x0``, else ``(B, n_steps, N)``.
    """
    if not is_fusable(model):
        raise ValueError(f"fused_generate handles ShPLRNN models only, got {type(model).__name__}; "
                         "use dsrecon.rollout.generate")
    if n_steps < 1 or chunk < 1:
        raise ValueError(f"n_steps and chunk must be >= 1, got {n_steps} and {chunk}")
    x0 = torch.as_tensor(x0).to(device=model._device(), dtype=model._dtype())
    squeeze = x0.ndim == 1
    x0 = x0.unsqueeze(0) if squeeze else x0
    if x0.ndim != 2 or x0.shape[1] != model.obs_dim:
        raise ValueError(f"x0 must have shape (N,) or (B, N) with N = {model.obs_dim}, got {tuple(x0.shape)}")
    why = _kernels.unsupported(x0.device, x0.dtype, model.state_dim)
    if why is not None:
        raise ValueError(f"fused_generate runs in the C kernel only: {why}; use dsrecon.rollout.generate")
    Bsz, M = x0.shape[0], model.state_dim
    weights = [t.detach().unsqueeze(0).contiguous() for t in (model.A, model.W1, model.W2.T, model.h1, model.h2)]
    Q = torch.zeros(1, M, M, dtype=x0.dtype, device=x0.device)
    z = model.initial_state(x0).unsqueeze(0).contiguous()  # (1, B, M)
    out = [model.observe(z[0]).unsqueeze(1)]  # (B, 1, N)
    done = 1
    while done < n_steps:
        n = min(chunk, n_steps - done)
        alpha = torch.zeros(1, n, dtype=x0.dtype, device=x0.device)
        c = torch.zeros(1, Bsz, n, M, dtype=x0.dtype, device=x0.device)
        _, Z = _kernels.forward(z, *weights, model.clipped, alpha, Q, c)  # (1, B, n, M)
        out.append(model.observe(Z[0].reshape(Bsz * n, M)).reshape(Bsz, n, -1))
        z = Z[:, :, -1].contiguous()
        done += n
    x = torch.cat(out, dim=1)  # (B, n_steps, N)
    return x[0] if squeeze else x


__all__ = ["fused_generate", "is_fusable"]
