"""Unrolling a model: free-running generation (and, with forcing, the training rollout).

Mechanics only: which coordinates are forced and how strongly is policy, in ``dsrecon.forcing``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dsrecon.models.base import Model


def _as_tensor(x, model: Model) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.to(device=model._device(), dtype=model._dtype())


def _kernel_runs(model: Model, x0: torch.Tensor) -> bool:
    """Whether ``model`` is a shPLRNN whose free run the C kernel takes (CPU, float32/float64,
    M <= 64) and the kernel builds here (no compiler: False, and one warning per process)."""
    from dsrecon.fast import _kernels
    from dsrecon.fast.free_run import is_fusable

    # stacklevel 4 names generate's caller (past this function, generate and torch.no_grad's wrapper)
    return is_fusable(model) and _kernels.usable(x0.device, x0.dtype, model.state_dim, stacklevel=4)


@torch.no_grad()
def generate(model: Model, x0, n_steps: int, *, chunk: int = 10_000, out_device=None,
             fast: bool = True) -> torch.Tensor:
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
    fast : bool
        For a shPLRNN on the CPU, run the time loop in the C kernel
        (:func:`dsrecon.fast.free_run.fused_generate`: the same map; float rounding differs, so a
        chaotic orbit parts from the eager one after a few hundred steps while its statistics
        agree). False keeps the eager loop, which also runs where the kernel cannot (no C
        compiler, M > 64, another device).

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
    if fast and out_device.type == "cpu" and _kernel_runs(model, x0):
        from dsrecon.fast.free_run import fused_generate

        x = fused_generate(model, x0, n_steps)  # (B, n_steps, N)
        return x.squeeze(0) if squeeze else x
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


@dataclass
class ForcedRollout:
    """Result of :func:`forced_rollout` for a batch of windows of ``T + 1`` steps.

    Attributes
    ----------
    x_pred : torch.Tensor, shape ``(B, T, N)``
        Unforced predictions ``observe(z_t)`` for t = 2 .. T+1 (compare with ``x[:, 1:]``).
    z : torch.Tensor, shape ``(B, T, M)``
        The unforced states ``z_t = step(z~_{t-1})`` for t = 2 .. T+1.
    z_hat : torch.Tensor, shape ``(B, T + 1, M)``
        Data-inferred states ``state_from_obs(x_t, z_t)`` for t = 1 .. T+1, detached (for the
        adaptive-alpha estimate and diagnostics).
    """

    x_pred: torch.Tensor
    z: torch.Tensor
    z_hat: torch.Tensor


def check_windows(model: Model, x: torch.Tensor) -> None:
    """Raise a ValueError unless ``x`` is a batch of windows ``(B, T + 1, N)`` with T >= 1 for ``model``."""
    if x.ndim != 3 or x.shape[-1] != model.obs_dim or x.shape[1] < 2:
        raise ValueError(f"x must have shape (B, T + 1, N) with T >= 1 and N = {model.obs_dim}, "
                         f"got {tuple(x.shape)}")


def forced_rollout(model: Model, x: torch.Tensor, alphas) -> ForcedRollout:
    r"""Unroll ``model`` over windows while forcing it towards the data (generalized teacher forcing).

    With ``z_1 = initial_state(x_1)``, for t = 1 .. T+1 (docs/method.md section 3)::

        z_t  = step(z~_{t-1})                                   (t >= 2)
        z~_t = z_t + alpha_t * (state_from_obs(x_t, z_t) - z_t)

    ``alpha_t = 0`` is free running, ``alpha_t = 1`` replaces the forced coordinates by the data
    (classical teacher forcing for the identity observation). The Jacobian of the forced recursion
    is ``(1 - alpha_t) J_t`` on the forced coordinates, which is what bounds the gradients.
    Differentiable (use inside autograd); the forcing policy (``dsrecon.forcing``) only supplies
    ``alphas``.

    Parameters
    ----------
    model : Model
        Any model following the one-step contract.
    x : torch.Tensor, shape ``(B, T + 1, N)``
        Windows of observations on the model's device and dtype.
    alphas : float or sequence or torch.Tensor of shape ``(T + 1,)``
        Forcing strength per window step; ``alphas[k]`` acts on the state at step k (k = 0 is the
        inferred initial state, where forcing changes nothing; ``alphas[T]`` acts after the last
        prediction and so changes nothing either). A float is used at every step.

    Returns
    -------
    ForcedRollout
        Predictions ``(B, T, N)``, unforced states ``(B, T, M)``, detached data-inferred states
        ``(B, T + 1, M)``.
    """
    check_windows(model, x)
    n = x.shape[1]
    if isinstance(alphas, (int, float)):
        alphas = [float(alphas)] * n
    else:
        alphas = [float(a) for a in (alphas.tolist() if isinstance(alphas, torch.Tensor) else alphas)]
    if len(alphas) != n:
        raise ValueError(f"alphas must have one value per window step, T + 1 = {n}, got {len(alphas)}")
    z = model.initial_state(x[:, 0])  # (B, M)
    preds, states, z_hats = [], [], []
    z_tilde = z  # forced state of the previous step, set at the end of each iteration
    for t in range(n):
        if t > 0:
            z = model.step(z_tilde)  # (B, M)
            states.append(z)
            preds.append(model.observe(z))  # (B, N)
        z_hat = model.state_from_obs(x[:, t], z)  # (B, M)
        z_hats.append(z_hat.detach())
        a = alphas[t]
        # exact shortcuts keep alpha = 0 / 1 bit-identical to free running / teacher forcing
        z_tilde = z if a == 0.0 else z_hat if a == 1.0 else z + a * (z_hat - z)  # (B, M)
    return ForcedRollout(torch.stack(preds, 1), torch.stack(states, 1), torch.stack(z_hats, 1))
