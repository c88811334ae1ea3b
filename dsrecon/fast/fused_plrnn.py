r"""Fused forced rollout of the shPLRNN with a hand-written backward pass through time.

A drop-in replacement for :func:`dsrecon.rollout.forced_rollout` when the model is a
:class:`~dsrecon.models.plrnn.ShPLRNN`: same arguments, same :class:`~dsrecon.rollout.ForcedRollout`,
same values and the same gradients (tests: 1e-5 relative, every forcing option), but without an
autograd graph of ``~10 T`` tiny nodes: the plain loop spends a training update of these small models
on per-operation overhead, not on its few MFLOP of arithmetic (figures: docs/performance.md).

How
---
Write one step with the forcing folded in. With ``F_t = (1 - alpha_t) I + alpha_t Q`` and
``c_t = state_from_obs(x_t, 0)``, where ``state_from_obs(x, z) = c(x) + z Q`` (row vectors; ``Q``
is the detached linear part: a coordinate selector for the identity observation, ``I - B^T B^{+T}``
for the affine one), the forced state is ``z~_t = z_t F_t + alpha_t c_t``, and the clipped step
reads (unclipped: ``phi_t = relu(u_t + h2)``)::

    u_t     = z~_t W2^T,   phi_t = relu(u_t + h2) - relu(u_t)          (B, L)
    z_{t+1} = A * z~_t + phi_t W1^T + h1                               (B, M)

The data term ``c_t`` is computed for all t at once, in the windows' own (window-major) layout;
the sequential loop runs in the C kernel (:mod:`dsrecon.fast._kernels`; float32/float64 CPU
tensors, M <= 64, a C compiler: without one, :func:`fused_forced_rollout` raises and the trainers
take the generic paths). The backward pass is the adjoint recursion with the analytic
vector-Jacobian product of that step::

    gu_t  = (lam_{t+1} W1) * (1[u_t + h2 > 0] - 1[u_t > 0])           dL/du_t
    lam_t = dL/dz_t (direct) + (A * lam_{t+1} + gu_t W2) F_t^T         dL/dz_t

accumulating ``dW1 += lam_{t+1}^T phi_t``, ``dW2^T += z~_t^T gu_t``, ``dA += lam_{t+1} * z~_t``,
``dh1 += lam_{t+1}``, ``dh2 += (lam_{t+1} W1) * 1[u_t + h2 > 0]`` on the way; ``dL/dz_1`` flows on
through autograd into ``initial_state`` (the learned map ``C`` of the identity observation).
ReLU derivatives are 0 at 0, as autograd's.

Memory per update: the forced and unforced states, ``2 K T B M`` floats (u is recomputed in the
backward pass), freed after it; nothing accumulates across updates.

Reference: Hess et al. (2023), Generalized Teacher Forcing for Learning Chaotic Dynamics, ICML
(the step, forcing and loss); the adjoint recursion is textbook backpropagation through time.
"""

from __future__ import annotations

import math
import warnings
import weakref

import torch

from dsrecon.fast import _kernels
from dsrecon.fast.affine_forcing import check_alphas, forcing_terms, has_affine_forcing
from dsrecon.fast.free_run import fused_generate, is_fusable  # noqa: F401 (part of this module's API)
from dsrecon.loss import StepResult
from dsrecon.models.base import Model
from dsrecon.rollout import ForcedRollout, check_windows


class FusedShPLRNNRollout(torch.autograd.Function):
    """Forced rollout of K stacked shPLRNNs: ``(z1, A, W1, W2, h1, h2) -> Z (K, B, T, M)``.

    ``alpha (K, T)``, ``Q (K, M, M)`` and ``c (K, B, T + 1, M)`` (``state_from_obs(x_t, 0)``) are the
    detached forcing terms (steps 1..T of ``alpha`` and ``c`` are read); ``Z[:, :, t]`` is the
    unforced state ``z_{t+2}`` (the prediction for ``x_{t+2}``). Only ``z1`` and the five weights
    receive gradients.
    """

    @staticmethod
    def forward(ctx, z1, A, W1, W2, h1, h2, alpha, Q, c, clipped: bool):
        dtype = c.dtype
        weights = [t.detach().contiguous() for t in (A, W1, W2.transpose(1, 2), h1, h2)]  # W2 as W2^T
        forcing = [t.detach().to(dtype).contiguous() for t in (alpha, Q, c)]
        Zt, Z = _kernels.forward(z1.detach().contiguous(), *weights, clipped, *forcing)
        ctx.save_for_backward(Zt, *weights, *forcing[:2])
        ctx.clipped = clipped
        return Z  # (K, B, T, M)

    @staticmethod
    def backward(ctx, gZ):
        Zt, A, W1, W2t, h1, h2, alpha, Q = ctx.saved_tensors
        dz1, dA, dW1, dW2t, dh1, dh2 = _kernels.backward(gZ.contiguous(), Zt, A, W1, W2t, h1, h2, ctx.clipped,
                                                         alpha, Q)
        return dz1, dA, dW1, dW2t.transpose(1, 2), dh1, dh2, None, None, None, None


def fused_forced_rollout(model: Model, x: torch.Tensor, alphas) -> ForcedRollout:
    r"""Forced rollout of a shPLRNN with the fused kernel and hand-written backward pass.

    Same contract as :func:`dsrecon.rollout.forced_rollout` (docs/method.md section 3): with
    ``z_1 = initial_state(x_1)``, ``z_t = step(z~_{t-1})``, ``z~_t = z_t + alpha_t
    (state_from_obs(x_t, z_t) - z_t)``; gradients reach every parameter (and the initial-state map)
    exactly as through the plain loop.

    Parameters
    ----------
    model : ShPLRNN
    x : torch.Tensor, shape ``(B, T + 1, N)``
        Windows on the model's device and dtype.
    alphas : float or sequence or tensor of shape ``(T + 1,)``
        Forcing strength per window step (``alphas[k]`` acts on the state at step k).

    Returns
    -------
    ForcedRollout
        ``x_pred (B, T, N)`` (differentiable), ``z (B, T, M)``, ``z_hat (B, T + 1, M)`` detached.

    Raises
    ------
    ValueError
        Tensors the C kernel does not take (not on the CPU, not float32/float64, M > 64).
    RuntimeError
        The C kernel cannot be built (no C compiler).
    """
    if not is_fusable(model):
        raise ValueError(f"the fused rollout handles ShPLRNN models only, got {type(model).__name__}; "
                         "use dsrecon.rollout.forced_rollout for other models")
    check_windows(model, x)
    Bsz, n, N = x.shape
    why = _kernels.unsupported(x.device, x.dtype, model.state_dim)
    if why is not None:
        raise ValueError(f"the fused rollout runs in the C kernel only: {why}; use dsrecon.rollout.forced_rollout")
    try:
        _kernels.c_library()
    except RuntimeError as err:
        raise RuntimeError(f"{err}; the fused rollout needs it: use dsrecon.rollout.forced_rollout") from None
    a = check_alphas(alphas, n)
    Q, c, a, _ = forcing_terms(model, x, a, with_ac=False)
    z1 = model.initial_state(x[:, 0])  # (B, M)
    Z = FusedShPLRNNRollout.apply(
        z1.unsqueeze(0), model.A.unsqueeze(0), model.W1.unsqueeze(0), model.W2.unsqueeze(0),
        model.h1.unsqueeze(0), model.h2.unsqueeze(0), a.unsqueeze(0), Q.unsqueeze(0), c.unsqueeze(0),
        model.clipped)[0]  # (B, T, M)
    x_pred = model.observe(Z.reshape(-1, model.state_dim)).reshape(Bsz, n - 1, N)  # (B, T, N)
    with torch.no_grad():
        z_all = torch.cat([z1.detach().unsqueeze(1), Z.detach()], dim=1)  # (B, T + 1, M)
        z_hat = c + z_all @ Q  # (B, T + 1, M)
    return ForcedRollout(x_pred, Z, z_hat)


def fused_forced_loss(model: Model, x: torch.Tensor, alphas, reg_weight: float = 0.0) -> torch.Tensor:
    """``MSE(x_pred, x[:, 1:]) + reg_weight * model.regularization()`` through the fused rollout.

    Calling ``.backward()`` on the result fills the parameters' ``.grad`` as the plain autograd
    loop does. Shapes and arguments as in :func:`fused_forced_rollout`.
    """
    out = fused_forced_rollout(model, x, alphas)
    loss = torch.mean((out.x_pred - x[:, 1:]) ** 2)
    if reg_weight:
        loss = loss + reg_weight * model.regularization()
    return loss


_WARNED_FALLBACK: set = set()  # the fallback warnings given (one per model class and reason)


def loss_and_grads(model: Model, x: torch.Tensor, alphas, reg_weight: float, target: torch.Tensor | None = None):
    """The ``"fused"`` training backend: :func:`dsrecon.training.loss_and_grads` through the fused kernel.

    Same signature, result and ``.grad`` as the plain reference (``TrainConfig.backend="fused"``).
    The shPLRNN's update runs as a one-model ensemble sharing the model's parameter storage
    (:func:`dsrecon.fast.ensemble.ensemble_loss_and_grads`: kernel forward and adjoint passes, the
    loss gradient and the regularizer's written out, no autograd graph: cheaper per update than
    the autograd route through :class:`FusedShPLRNNRollout`). Where the kernel cannot run (models
    other than the shPLRNN, tensors off the CPU, M > 64, no C compiler) the affine-forcing path
    runs (:mod:`dsrecon.fast.affine_forcing`; the plain one for models without ``affine_forcing``),
    with a warning once per model class and reason (once per process without a compiler,
    :func:`dsrecon.fast._kernels.available`).

    Parameters
    ----------
    model : Model
    x : torch.Tensor, shape ``(B, T + 1, N)``
        Windows feeding the initial state and the forcing signals (possibly noisy).
    alphas : torch.Tensor, shape ``(T + 1,)``
    reg_weight : float
    target : torch.Tensor, shape ``(B, T + 1, N)``, optional
        Clean windows for the loss (default ``x``).

    Returns
    -------
    dsrecon.loss.StepResult
        Gradients are added to ``.grad`` only when the loss is finite, as the reference does.
    """
    from dsrecon.fast import affine_forcing
    from dsrecon.fast.ensemble import ensemble_loss_and_grads

    name = type(model).__name__
    if not is_fusable(model):
        why = f"has no kernel for {name}"
    else:
        why = _kernels.unsupported(x.device, x.dtype, model.state_dim)
        why = None if why is None else f"cannot run the kernel for this {name} ({why})"
    if why is not None or not _kernels.available(stacklevel=2):  # no compiler: available() has warned
        if why is not None and why not in _WARNED_FALLBACK:
            _WARNED_FALLBACK.add(why)
            path = "affine-forcing" if has_affine_forcing(model) else "plain autograd"
            warnings.warn(f"backend 'fused' {why}; using the {path} path", RuntimeWarning, stacklevel=2)
        return affine_forcing.loss_and_grads(model, x, alphas, reg_weight, target=target)
    check_windows(model, x)
    a = check_alphas(alphas, x.shape[1])
    view = _one_model_ensemble(model)
    for p in view.parameters():
        p.grad = None
    loss, mse, z_hat = ensemble_loss_and_grads(view, x.unsqueeze(0), a.unsqueeze(0), reg_weight,
                                               None if target is None else target.unsqueeze(0))
    loss, mse = float(loss[0]), float(mse[0])
    if math.isfinite(loss):
        with torch.no_grad():
            for name, p in view.named_parameters():
                q = getattr(model, name)
                if q.grad is None:
                    q.grad = p.grad[0]  # a view of this call's fresh gradient (the next call makes new ones)
                else:
                    q.grad += p.grad[0]
    return StepResult(loss, mse, z_hat[0])


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _one_model_ensemble(model) -> "EnsembleShPLRNN":  # noqa: F821
    """A cached one-model :class:`~dsrecon.fast.ensemble.EnsembleShPLRNN` sharing ``model``'s parameter
    storage (the optimizer updates the parameters in place, so it stays valid); rebuilt when a
    parameter was replaced (new storage: ``.to()``, assignment)."""
    from dsrecon.fast.ensemble import EnsembleShPLRNN

    view = _VIEWS.get(model)
    if view is None or any(p.data_ptr() != getattr(model, name).data_ptr() or p.dtype != getattr(model, name).dtype
                           for name, p in view.named_parameters()):
        view = EnsembleShPLRNN([model], share_storage=True)
        _VIEWS[model] = view
    return view
