"""Almost-linear RNN (AL-RNN): a linear map plus ReLU on only the last P of M latent units.

Reference: Brenner, Hemmer, Monfared, Durstewitz. Almost-Linear RNNs Yield Highly Interpretable
Symbolic Codes in Dynamical Systems Reconstruction. NeurIPS 2024. The step::

    z_t = A z_{t-1} + W phi(z_{t-1}) + h,
    phi(z) = (z_1, ..., z_{M-P}, relu(z_{M-P+1}), ..., relu(z_M))

``A`` diagonal (stored as a vector), ``W`` a full ``(M, M)`` matrix (its diagonal is trained too,
so a unit's self-coupling is ``A_i + W_ii``), ``h`` a bias. With P ReLU units the map is
piecewise linear with at most ``2^P`` linear regions, whose sign pattern of the last P units is
the model's symbolic code; P = 0 is a linear map, P = M a PLRNN ``A z + W relu(z) + h``.

The step, the initialization and the identity observation were checked against the authors'
published definitions (DurstewitzLab/ALRNN-DSR, read for the definition only; GPL-3, no code taken).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dsrecon.models.base import Model, resolve_generator
from dsrecon.models.latent_observation import LatentObservation, check_observation
from dsrecon.models.baselines import resolve_dtype


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class ALRNN(LatentObservation, Model):
    r"""Almost-linear RNN on a latent state ``z`` of size ``M`` with ReLU on its last ``P`` units.

    ``z_t = A * z_{t-1} + W phi(z_{t-1}) + h`` with ``phi`` the identity on units ``1..M-P`` and a
    ReLU on units ``M-P+1..M``; ``A (M,)``, ``W (M, M)``, ``h (M,)``.

    Parameters
    ----------
    obs_dim : int
        N, the observed dimension.
    latent_dim : int
        M, the latent dimension. The identity observation needs ``M >= N``. Paper's Lorenz-63
        preset: M = 20.
    n_relu : int
        P, the number of ReLU ("piecewise-linear") units, the last P of the M; ``0 <= P <= M``.
        Paper's Lorenz-63 preset: P = 2.
    observation : {"identity", "affine"}
        *identity* (the paper's): ``x_hat = z[:, :N]``, so the read-out units are the first N and
        the ReLU units the last P; forcing sets the first N coordinates; when ``M > N`` the initial
        unobserved coordinates are a learned linear map ``C x0`` (``C (M-N, N)``,
        ``U(+-1/sqrt(N))``). *affine*: ``x_hat = B z`` with ``B (N, M)`` Kaiming-normal; the
        initial state is ``B^+ x0`` and forcing uses ``state_from_obs(x, z) = z + B^+ (x - B z)``
        with ``B`` detached (the shPLRNN's affine observation, :mod:`dsrecon.models.plrnn`).
    generator : torch.Generator, optional
        Source of all initial values. ``seed`` is a shortcut that makes one; neither means seed 0
        (:func:`dsrecon.models.base.resolve_generator`; torch's global generator is never read).
    seed : int, optional
        Seed for a fresh local generator.
    dtype : torch.dtype or str
        Parameter dtype (float32 default; float64 for exact Jacobian checks).

    Notes
    -----
    Initialization (paper): ``A = diag(K)`` with ``K = (R^T R / M + I) / lambda_max(R^T R / M + I)``,
    ``R`` standard normal ``(M, M)``, so ``0 < A_i <= 1`` (as the shPLRNN); ``W ~ N(0, 0.01^2)``
    entrywise, so the model starts close to the linear map ``diag(A)``; ``h = 0``.

    No regularizer (``regularization() = 0``, so ``TrainConfig.reg_weight`` has no effect): the
    authors' Lorenz-63 setting trains with a latent-model penalty weight of 0.

    Parameter count: ``M + M^2 + M`` plus ``(M - N) N`` (identity, M > N) or ``N M`` (affine);
    the Lorenz-63 preset (N = 3, M = 20, identity) has 20 + 400 + 20 + 51 = 491.
    """

    name = "alrnn"
    affine_forcing = True  # state_from_obs: identity selector or z + B^+ (x - B z), B^+ detached

    def __init__(self, obs_dim: int, latent_dim: int, n_relu: int, *, observation: str = "identity",
                 generator: torch.Generator | None = None, seed: int | None = None, dtype=torch.float32):
        super().__init__()
        N = _positive_int("obs_dim", obs_dim)
        M = _positive_int("latent_dim", latent_dim)
        P = _positive_int("n_relu", n_relu, minimum=0)
        if P > M:
            raise ValueError(f"n_relu P = {P} exceeds latent_dim M = {M}: the ReLU units are the last P of "
                             f"the M latent units; choose n_relu <= latent_dim")
        check_observation(observation, N, M)
        gen = resolve_generator(generator, seed)
        dt = resolve_dtype(dtype)
        self.obs_dim, self.state_dim, self.n_relu, self.observation = N, M, P, observation

        R = torch.randn(M, M, generator=gen, dtype=torch.float64)
        K = R.T @ R / M + torch.eye(M, dtype=torch.float64)
        K = K / torch.linalg.eigvalsh(K).max()
        self.A = nn.Parameter(torch.diagonal(K).clone().to(dt))  # (M,)
        self.W = nn.Parameter((0.01 * torch.randn(M, M, generator=gen, dtype=torch.float64)).to(dt))  # (M, M)
        self.h = nn.Parameter(torch.zeros(M, dtype=dt))  # (M,)
        if observation == "affine":
            B = torch.empty(N, M, dtype=torch.float64)
            nn.init.kaiming_normal_(B, generator=gen)  # std sqrt(2 / M)
            self.B = nn.Parameter(B.to(dt))  # (N, M)
        elif M > N:
            bound = 1 / math.sqrt(N)
            C = (torch.rand(M - N, N, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            self.C = nn.Parameter(C.to(dt))  # (M-N, N)
        # phi(z) = max(z, floor) unit by unit: floor -inf on the linear units, 0 on the ReLU units.
        # One elementwise op instead of slicing and concatenating; a buffer, so it follows the
        # model's device and dtype, and not persistent: it is a function of (M, P), not a state.
        floor = torch.full((M,), -math.inf, dtype=dt)
        floor[M - P:] = 0.0
        self.register_buffer("relu_floor", floor, persistent=False)  # (M,)

    # ----------------------------------------------------------------- the contract
    def _phi(self, z: torch.Tensor) -> torch.Tensor:
        """Identity on the first ``M - P`` units, ReLU on the last ``P``, ``(B, M) -> (B, M)``.

        ``where(z <= floor, floor, z)``: a NaN state stays NaN (so divergence is seen), and the
        derivative at a ReLU unit's kink ``z = 0`` is 0, as ``torch.relu``'s.
        """
        return torch.where(z <= self.relu_floor, self.relu_floor, z)  # (B, M)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        return self.A * z + self._phi(z) @ self.W.T + self.h  # (B, M)

    # observe, state_from_obs, initial_state: LatentObservation

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """Analytic Jacobian ``diag(A) + W diag(phi'(z))``, ``(B, M) -> (B, M, M)``.

        ``phi'`` is 1 on the linear units and ``1[z_i > 0]`` on the ReLU units (the derivative
        taken as 0 at 0, as autograd does).
        """
        d = (z > self.relu_floor).to(z.dtype)  # (B, M): phi'(z)
        J = self.W * d.unsqueeze(-2)  # (M, M) * (B, 1, M) -> (B, M, M): column j scaled by d_j
        return J + torch.diag_embed(self.A.expand_as(z))  # (B, M, M)

    # ----------------------------------------------------------------- extras
    def parameter_bound(self) -> torch.Tensor:
        """Upper bound on ``||J(z)||_2`` for every ``z``: ``max|A_i| + ||W||_2`` (scalar).

        Holds because ``0 <= phi'(z_i) <= 1``, so ``||W diag(phi')||_2 <= ||W||_2``; used by the
        adaptive-GTF estimator ``"parameter_bound"`` (:mod:`dsrecon.forcing`).
        """
        with torch.no_grad():
            return self.A.abs().max() + torch.linalg.matrix_norm(self.W, ord=2)

    def linear_region(self, z: torch.Tensor) -> torch.Tensor:
        """Symbolic code of each state: the sign pattern of its ReLU units, ``(B, M) -> (B, P)`` bool.

        States with the same code lie in the same linear subregion, where the map is the affine
        ``z -> (diag(A) + W D) z + h`` with ``D = diag(phi'(z))`` (Brenner et al. 2024).
        """
        return z[..., self.state_dim - self.n_relu:] > 0  # (B, P)

    def config(self) -> dict:
        return {"obs_dim": self.obs_dim, "latent_dim": self.state_dim, "n_relu": self.n_relu,
                "observation": self.observation, "dtype": str(self._dtype()).replace("torch.", "")}


__all__ = ["ALRNN"]
