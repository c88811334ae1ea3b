"""Unrolling a model: free-running generation (and, with forcing, the training rollout).

Mechanics only: which coordinates are forced and how strongly is policy, in ``dsrecon.forcing``.
"""

from __future__ import annotations

import numpy as np
import torch

from dsrecon.models.base import Model


def _as_tensor(x, model: Model) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.to(device=model._device(), dtype=model._dtype())


@torch.no_grad()
def generate(model: Model, x0, n_steps: int, *, chunk: int = 10_000, out_device=None) -> torch.Tensor:
    """Free-running trajectory of observations from the state inferred from ``x0``.

    Parameters
    ----------
    model : Model
        Any model following the one-step contract.
    x0 : array or tensor, shape ``(N,)`` or ``(B, N)``
        First observation(s); the state is ``model.initial_state(x0)``.
    n_steps : int
        Number of observations returned, the first being ``observe(initial_state(x0))``.
    chunk : int
        Steps kept on the model's device at once; finished chunks move to ``out_device`` so any
        length fits in memory.
    out_device : torch.device, optional
        Where the result lives (default: the model's device).

    Returns
    -------
    torch.Tensor, shape ``(n_steps, N)`` if ``x0`` was 1-D, else ``(B, n_steps, N)``.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    x0 = _as_tensor(x0, model)
    squeeze = x0.ndim == 1
    if squeeze:
        x0 = x0.unsqueeze(0)
    if x0.ndim != 2 or x0.shape[1] != model.obs_dim:
        raise ValueError(f"x0 must have shape (N,) or (B, N) with N = {model.obs_dim}, got {tuple(x0.shape)}")
    out_device = torch.device(out_device) if out_device is not None else x0.device
    z = model.initial_state(x0)  # (B, M)
    chunks, buf = [], []
    for t in range(n_steps):
        if t > 0:
            z = model.step(z)
        buf.append(model.observe(z))  # (B, N)
        if len(buf) == chunk:
            chunks.append(torch.stack(buf, dim=1).to(out_device))
            buf = []
    if buf:
        chunks.append(torch.stack(buf, dim=1).to(out_device))
    x = torch.cat(chunks, dim=1)  # (B, n_steps, N)
    return x.squeeze(0) if squeeze else x
