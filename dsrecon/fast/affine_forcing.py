r"""Forced rollout for any model whose forcing is affine in the state: the ``"affine"`` training backend.

Every dsrecon model infers its forced state by an affine map with detached coefficients,
``state_from_obs(x, z) = c(x) + z Q`` (row vectors): ``Q`` keeps the coordinates the observation
does not determine (``I - B^T B^{+T}`` on ``h`` for a readout ``x = B h + c``, a coordinate
selector for the identity observation), ``c(x)`` writes the data into the others. Models declare it
with the class attribute ``affine_forcing = True`` (:class:`dsrecon.models.base.Model`). The GTF
step ``z~_t = z_t + alpha_t (state_from_obs(x_t, z_t) - z_t)`` is then one small product::

    z~_t = z_t F_t + alpha_t c(x_t),     F_t = (1 - alpha_t) I + alpha_t Q      (M, M)

with ``F_t`` and ``alpha_t c(x_t)`` computed for all steps at once, before the loop, and the
readout of the unforced states applied to all steps at once, after it. The loop keeps only
``model.step`` and one ``addmm`` per step, where the plain loop (:func:`dsrecon.rollout.forced_rollout`)
also runs ``state_from_obs``, the mixing and ``observe`` (about half of its operations for an LSTM).
Gradients are the plain loop's (the same function; autograd through ``step``; tests: 1e-5
relative for every model and forcing option): the forcing terms are detached there too.

Measured (M = 2H state, H = 9, B = 16, T = 200, N = 3, one core, ``benchmarks/train_speed.py``
section 6): 1.3x (input-fed LSTM) to 3.6x (tanh RNN) fewer milliseconds per update than the plain
loop. The shPLRNN has a faster path still (:mod:`dsrecon.fast.fused_plrnn`), which reuses
:func:`forcing_terms` from here.
"""

from __future__ import annotations

import torch

from dsrecon.loss import loss_and_grads as plain_loss_and_grads
from dsrecon.loss import loss_from_rollout
from dsrecon.models.base import Model
from dsrecon.rollout import ForcedRollout, check_windows


def has_affine_forcing(model) -> bool:
    """True when ``model`` declares ``state_from_obs(x, z) = c(x) + z Q`` (``affine_forcing = True``)."""
    return bool(getattr(model, "affine_forcing", False))


def check_alphas(alphas, n: int) -> torch.Tensor:
    """Forcing strengths as a float64 CPU tensor of shape ``(n,)`` (a float is used at every step)."""
    if isinstance(alphas, (int, float)):
        return torch.full((n,), float(alphas), dtype=torch.float64)
    a = torch.as_tensor(alphas, dtype=torch.float64).detach().cpu().reshape(-1)
    if a.numel() != n:
        raise ValueError(f"alphas must have one value per window step, T + 1 = {n}, got {a.numel()}")
    return a


def forcing_terms(model: Model, x: torch.Tensor, alphas: torch.Tensor, with_ac: bool = True):
    """Detached affine form of the model's forcing over a batch of windows.

    Reads ``state_from_obs`` (affine in ``(x, z)`` with detached coefficients) as ``c(x) + z Q`` by
    evaluating it at ``z = 0`` and at the unit vectors.

    Parameters
    ----------
    x : (B, T + 1, N); alphas : (T + 1,)
    with_ac : bool
        Also form ``ac`` (the step-major product the affine-forcing loop reads; the C kernel reads
        ``a`` and ``c`` and needs none: None is returned in its place).

    Returns
    -------
    Q : (M, M), c : (B, T + 1, M), a : (T,), ac : (T, B, M) = a_t c_t or None
        for window steps 1..T (the last step's forcing acts after the last prediction).
    """
    Bsz, n, N = x.shape
    M = model.state_dim
    dtype, device = x.dtype, x.device
    with torch.no_grad():
        c0 = model.state_from_obs(torch.zeros(1, N, dtype=dtype, device=device),
                                  torch.zeros(1, M, dtype=dtype, device=device))  # (1, M)
        Q = model.state_from_obs(torch.zeros(M, N, dtype=dtype, device=device),
                                 torch.eye(M, dtype=dtype, device=device)) - c0  # (M, M)
        c = model.state_from_obs(x.reshape(-1, N), torch.zeros(Bsz * n, M, dtype=dtype, device=device))
        c = c.reshape(Bsz, n, M)  # (B, T + 1, M)
        a = alphas[:-1].to(dtype=dtype, device=device)  # (T,)
        ac = a[:, None, None] * c[:, :-1].transpose(0, 1) if with_ac else None  # (T, B, M)
    return Q, c, a, ac


def affine_forced_rollout(model: Model, x: torch.Tensor, alphas) -> ForcedRollout:
    """:func:`dsrecon.rollout.forced_rollout` for a model with ``affine_forcing``; same result.

    Parameters
    ----------
    model : Model
        A model with ``affine_forcing = True`` (every dsrecon model).
    x : torch.Tensor, shape ``(B, T + 1, N)``
        Windows on the model's device and dtype.
    alphas : float or sequence or tensor of shape ``(T + 1,)``
        Forcing strength per window step (``alphas[k]`` acts on the state at step k).

    Returns
    -------
    ForcedRollout
        ``x_pred (B, T, N)`` and ``z (B, T, M)`` (differentiable), ``z_hat (B, T + 1, M)`` detached.
    """
    if not has_affine_forcing(model):
        raise ValueError(f"{type(model).__name__} does not declare affine_forcing = True; use "
                         "dsrecon.rollout.forced_rollout")
    check_windows(model, x)
    Bsz, n, N = x.shape
    M = model.state_dim
    Q, c, a, ac = forcing_terms(model, x, check_alphas(alphas, n))
    eye = torch.eye(M, dtype=x.dtype, device=x.device)
    F = (1 - a)[:, None, None] * eye + a[:, None, None] * Q  # (T, M, M)
    a_list = a.tolist()
    z1 = model.initial_state(x[:, 0])  # (B, M)
    z, states = z1, []
    for t in range(n - 1):
        z_tilde = z if a_list[t] == 0.0 else torch.addmm(ac[t], z, F[t])  # (B, M)
        z = model.step(z_tilde)
        states.append(z)
    Z = torch.stack(states, dim=1)  # (B, T, M)
    x_pred = model.observe(Z.reshape(-1, M)).reshape(Bsz, n - 1, N)  # (B, T, N)
    with torch.no_grad():
        z_all = torch.cat([z1.detach().unsqueeze(1), Z.detach()], dim=1)  # (B, T + 1, M)
        z_hat = c + z_all @ Q  # (B, T + 1, M)
    return ForcedRollout(x_pred, Z, z_hat)


def loss_and_grads(model: Model, x: torch.Tensor, alphas, reg_weight: float, target: torch.Tensor | None = None):
    """The ``"affine"`` training backend: :func:`dsrecon.loss.loss_and_grads` through
    :func:`affine_forced_rollout`; same signature, result and ``.grad``. Models without
    ``affine_forcing`` run the plain path."""
    if not has_affine_forcing(model):
        return plain_loss_and_grads(model, x, alphas, reg_weight, target=target)
    return loss_from_rollout(model, affine_forced_rollout(model, x, alphas), x, reg_weight, target)
