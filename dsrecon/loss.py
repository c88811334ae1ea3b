"""The training objective of one update, shared by every training backend and trainer.

``loss_and_grads`` is the ``"plain"`` backend of :func:`dsrecon.training.train` (autograd through
:func:`dsrecon.rollout.forced_rollout`, the reference); ``loss_from_rollout`` turns any backend's
forced rollout into the loss and its gradients; ``StepResult`` is what each backend returns.
Below both the trainer and the fast paths (``dsrecon.fast``), which compute the same objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsrecon.models.base import Model
from dsrecon.rollout import forced_rollout


@dataclass
class StepResult:
    """Loss of one update (gradients are in the parameters' ``.grad``)."""

    loss: float  # MSE + reg_weight * regularization
    mse: float
    z_hat: torch.Tensor  # (B, T + 1, M), detached data-inferred states


def loss_and_grads(model: Model, x: torch.Tensor, alphas: torch.Tensor, reg_weight: float,
                   target: torch.Tensor | None = None) -> StepResult:
    """Forced-rollout loss of one batch and its gradients (the ``"plain"`` backend, the reference).

    Parameters
    ----------
    model : Model
    x : torch.Tensor, shape ``(B, T + 1, N)``
        Windows feeding the initial state and the forcing signals (possibly noisy).
    alphas : torch.Tensor, shape ``(T + 1,)``
        Per-step forcing strengths.
    reg_weight : float
        Weight of ``model.regularization()``.
    target : torch.Tensor, shape ``(B, T + 1, N)``, optional
        Clean windows for the loss (default ``x``); ``x_pred`` is compared with ``target[:, 1:]``.

    Returns
    -------
    StepResult
        Loss values; the gradients are accumulated into ``p.grad`` (not computed when the loss is
        non-finite, which the trainer then handles).
    """
    return loss_from_rollout(model, forced_rollout(model, x, alphas), x, reg_weight, target)


def loss_from_rollout(model: Model, out, x: torch.Tensor, reg_weight: float,
                      target: torch.Tensor | None = None) -> StepResult:
    """MSE of a forced rollout's unforced predictions plus the weighted regularizer, backpropagated.

    Shared by every backend, so they differ only in how ``out`` (a ``ForcedRollout``: ``x_pred``
    ``(B, T, N)``, ``z_hat`` ``(B, T + 1, M)``) and its backward pass are computed. Gradients are
    accumulated into ``p.grad`` only when the loss is finite (the trainer handles the rest).
    """
    target = x if target is None else target
    mse = torch.mean((out.x_pred - target[:, 1:]) ** 2)
    loss = mse + reg_weight * model.regularization() if reg_weight else mse
    if torch.isfinite(loss):
        loss.backward()
    return StepResult(float(loss.detach()), float(mse.detach()), out.z_hat)


__all__ = ["StepResult", "loss_and_grads", "loss_from_rollout"]
