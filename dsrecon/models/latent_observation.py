"""The observation of the latent-state models (shPLRNN, ALRNN): which coordinates the data sees
and how a data point sets the state (docs/method.md sections 2-3).

*identity*: ``x_hat = z[:, :N]``; forcing replaces the first N coordinates by the data; the initial
unobserved coordinates are a learned linear map ``C x0`` (``C (M - N, N)``) when ``M > N``.
*affine*: ``x_hat = B z`` with ``B (N, M)``; the initial state is ``B^+ x0`` and forcing uses
``state_from_obs(x, z) = z + B^+ (x - B z)``, with ``B`` detached there: forcing signals are
outside the gradient (for ``M = N``: ``B^-1 x``).
"""

from __future__ import annotations

import torch

OBSERVATIONS = ("identity", "affine")


def check_observation(observation: str, obs_dim: int, latent_dim: int) -> None:
    """ValueError for an unknown observation model, or an identity observation with ``M < N``."""
    if observation not in OBSERVATIONS:
        raise ValueError(f"unknown observation model {observation!r}; valid: {', '.join(OBSERVATIONS)}")
    if observation == "identity" and latent_dim < obs_dim:
        raise ValueError(
            f"the identity observation reads x_hat = z[:, :N], so it needs latent_dim M >= obs_dim "
            f"N = {obs_dim}, got M = {latent_dim}; raise latent_dim or use observation='affine'")


class LatentObservation:
    """Mixin for a :class:`~dsrecon.models.base.Model` with attributes ``observation``
    (``"identity"`` or ``"affine"``), ``obs_dim`` N, ``state_dim`` M and the parameter ``B (N, M)``
    (affine) or ``C (M - N, N)`` (identity with ``M > N``)."""

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        if self.observation == "affine":
            return z @ self.B.T  # (B, N)
        return z[..., : self.obs_dim]  # (B, N)

    def _pinv(self) -> torch.Tensor:
        """``B^+`` (M, N), detached."""
        return torch.linalg.pinv(self.B.detach())

    def state_from_obs(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.observation == "affine":
            return z + (x - z @ self.B.detach().T) @ self._pinv().T  # (B, M)
        if self.state_dim == self.obs_dim:
            return x  # (B, M)
        return torch.cat([x, z[..., self.obs_dim:]], dim=-1)  # (B, M)

    def initial_state(self, x0: torch.Tensor) -> torch.Tensor:
        if x0.ndim != 2 or x0.shape[-1] != self.obs_dim:
            raise ValueError(f"x0 must have shape (B, N) with N = {self.obs_dim}, got {tuple(x0.shape)}")
        if self.observation == "affine":
            return x0 @ self._pinv().T  # (B, M)
        if self.state_dim == self.obs_dim:
            return x0  # (B, M)
        return torch.cat([x0, x0 @ self.C.T], dim=-1)  # (B, M)


__all__ = ["OBSERVATIONS", "LatentObservation", "check_observation"]
