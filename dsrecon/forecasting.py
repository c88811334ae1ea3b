"""Forecasting with a trained model: infer the latent state from a stretch of data, then run freely.

A chaotic model's latent state holds coordinates the data does not observe (``M > N``, or the
memory of an LSTM/LEM). Reading the state from the last observation alone leaves them at a guess;
forcing the model with the whole context window (teacher forcing, ``dsrecon.rollout.forced_rollout``
with ``alpha = 1``: the observed coordinates set to the data at every step while the unobserved
ones evolve under the model) synchronizes them with the data, as a driven chaotic system
synchronizes with its driver. The forecast is then the free run from the last forced state.

All in model coordinates; :class:`dsrecon.reconstruction.Reconstruction.forecast` maps data units
in and out.
"""

from __future__ import annotations

import torch

from dsrecon.models.base import Model
from dsrecon.rollout import forced_rollout

__all__ = ["infer_state", "forecast_from_context"]


def infer_state(model: Model, context: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Latent state at the last step of a context window, from forcing the model with it.

    With ``z_1 = initial_state(x_1)`` and, for t = 2 .. T, ``z_t = step(z~_{t-1})``,
    ``z~_t = z_t + alpha (state_from_obs(x_t, z_t) - z_t)`` (:func:`dsrecon.rollout.forced_rollout`),
    the result is ``z~_T``: with ``alpha = 1`` (default) the observed coordinates equal the last
    observation and the others have been driven by the whole window; ``alpha = 0`` is a free run
    from ``x_1``.

    Parameters
    ----------
    model : Model
    context : torch.Tensor, shape ``(B, T, N)``
        Observations in model coordinates, on the model's device and dtype; ``T >= 1``
        (``T = 1``: ``initial_state(x_1)``).
    alpha : float in [0, 1]

    Returns
    -------
    torch.Tensor, shape ``(B, M)``
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if context.ndim != 3 or context.shape[-1] != model.obs_dim or context.shape[1] < 1:
        raise ValueError(f"context must have shape (B, T, N) with T >= 1 and N = {model.obs_dim}, "
                         f"got {tuple(context.shape)}")
    with torch.no_grad():
        if context.shape[1] == 1:
            return model.initial_state(context[:, 0])  # (B, M)
        roll = forced_rollout(model, context, float(alpha))
        z, z_hat = roll.z[:, -1], roll.z_hat[:, -1]  # (B, M) each: last unforced and data-inferred states
        a = float(alpha)
        return z if a == 0.0 else z_hat if a == 1.0 else z + a * (z_hat - z)  # (B, M), forced_rollout's rule


def forecast_from_context(model: Model, context: torch.Tensor, horizon: int, alpha: float = 1.0) -> torch.Tensor:
    """Predictions of the ``horizon`` observations after a context window, in model coordinates.

    ``z = infer_state(model, context, alpha)``, then ``x_pred[j] = observe(step^(j+1)(z))`` for
    j = 0 .. horizon - 1: ``x_pred[0]`` predicts the observation one step after the context's last.

    Parameters
    ----------
    context : torch.Tensor, shape ``(B, T, N)``
    horizon : int >= 1

    Returns
    -------
    torch.Tensor, shape ``(B, horizon, N)``
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be a positive integer number of steps, got {horizon!r}")
    z = infer_state(model, context, alpha)  # (B, M)
    out = []
    with torch.no_grad():
        for _ in range(horizon):
            z = model.step(z)
            out.append(model.observe(z))  # (B, N)
    return torch.stack(out, dim=1)  # (B, horizon, N)
