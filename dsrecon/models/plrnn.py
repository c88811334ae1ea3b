"""Shallow piecewise-linear RNN (shPLRNN), clipped or not, with an identity or affine observation.

Reference: Hess, Monfared, Brenner, Durstewitz. Generalized Teacher Forcing for Learning Chaotic
Dynamics. ICML 2023 (equations, initialization and parameter counts below follow its section 3 and
its public code's conventions as summarised in docs/method.md section 2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dsrecon.models.base import Model, resolve_generator
from dsrecon.models.latent_observation import LatentObservation, check_observation

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.replace("torch.", "") in _DTYPES:
        return _DTYPES[dtype.replace("torch.", "")]
    raise ValueError(f"dtype must be torch.float32/float64 or 'float32'/'float64', got {dtype!r}")


def _uniform(shape, bound: float, generator: torch.Generator, dtype) -> torch.Tensor:
    """U(-bound, bound) from a local generator."""
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1).mul_(bound).to(dtype)


class ShPLRNN(LatentObservation, Model):
    r"""Shallow PLRNN, a one-step map on a latent state ``z`` of size ``M`` with hidden width ``L``.

    Clipped (default; orbits stay bounded when ``max|A_i| < 1``)::

        z_t = A * z_{t-1} + W1 [relu(W2 z_{t-1} + h2) - relu(W2 z_{t-1})] + h1

    Unclipped::

        z_t = A * z_{t-1} + W1 relu(W2 z_{t-1} + h2) + h1

    ``A`` is the diagonal of a matrix stored as a vector ``(M,)``, ``W1 (M, L)``, ``W2 (L, M)``,
    ``h1 (M,)``, ``h2 (L,)``.

    Parameters
    ----------
    obs_dim : int
        N, the observed dimension.
    latent_dim : int
        M, the latent dimension. The identity observation needs ``M >= N``.
    hidden_dim : int
        L, the width of the hidden ReLU layer (paper: 50-100 for Lorenz-63, 250 for the ECG).
    clipped : bool
        Clipped form (default) or the plain shPLRNN.
    observation : {"identity", "affine"}
        *identity*: ``x_hat = z[:, :N]``; forcing sets the first N coordinates; when ``M > N`` the
        initial unobserved coordinates are a learned linear map ``C x0`` (``C (M-N, N)``, initialised
        U(+-1/sqrt(N)) like ``nn.Linear``). *affine*: ``x_hat = B z`` with ``B (N, M)``
        initialised semi-orthogonal (Notes); the initial state is ``B^+ x0`` and forcing uses
        ``state_from_obs(x, z) = z + B^+ (x - B z)`` with ``B`` detached (for ``M = N``: ``B^-1 x``).
    generator : torch.Generator, optional
        Source of all initial values. ``seed`` is a shortcut that makes one.
    seed : int, optional
        Seed for a fresh local generator (0 when neither is given, the seed rule of every model:
        :func:`dsrecon.models.base.resolve_generator`).
    dtype : torch.dtype or str
        Parameter dtype (float32 default; float64 for exact Jacobian checks).

    Notes
    -----
    Initialization (paper): ``A = diag(K)`` with ``K = (R^T R / M + I) / lambda_max(R^T R / M + I)``,
    ``R`` standard normal ``(M, M)``, so ``0 < A_i <= 1``; ``W1 ~ U(+-1/sqrt(L))``,
    ``W2 ~ U(+-1/sqrt(M))``; ``h1 = 0``; ``h2 = 0`` (unclipped) or ``U(+-1/sqrt(L))`` (clipped).
    The affine observation's ``B`` is a random semi-orthogonal matrix (``torch.nn.init.orthogonal_``)
    scaled to the mean Frobenius norm of a Kaiming-normal one: GTF forces the latent states with
    ``B^+ x``, and a Gaussian ``B`` is often nearly singular (for 5 x 5, 4 % of draws have a condition
    number above 200), which multiplies the data and its noise by ``1 / sigma_min(B)`` and can keep the
    training from ever leaving a fixed point; equal singular values make ``B^+`` a scaled ``B^T``.
    Parameter count: ``M + 2 M L + M + L`` plus ``N M`` (affine) or ``(M - N) N`` (identity, M > N);
    the GTF paper's ECG model (M=5, L=250, affine 5->5, clipped) has 2785.
    """

    name = "shplrnn"
    affine_forcing = True  # state_from_obs: identity selector or z + B^+ (x - B z), B^+ detached

    def __init__(self, obs_dim: int, latent_dim: int, hidden_dim: int, *, clipped: bool = True,
                 observation: str = "identity", generator: torch.Generator | None = None,
                 seed: int | None = None, dtype=torch.float32):
        super().__init__()
        for arg, value in (("obs_dim", obs_dim), ("latent_dim", latent_dim), ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        check_observation(observation, obs_dim, latent_dim)
        generator = resolve_generator(generator, seed)
        dtype = _resolve_dtype(dtype)
        self.obs_dim, self.state_dim, self.hidden_dim = obs_dim, latent_dim, hidden_dim
        self.clipped, self.observation = bool(clipped), observation
        M, L, N = latent_dim, hidden_dim, obs_dim

        R = torch.randn(M, M, generator=generator, dtype=torch.float64)
        K = R.T @ R / M + torch.eye(M, dtype=torch.float64)
        K = K / torch.linalg.eigvalsh(K).max()
        self.A = nn.Parameter(torch.diagonal(K).clone().to(dtype))  # (M,)
        self.W1 = nn.Parameter(_uniform((M, L), 1 / math.sqrt(L), generator, dtype))  # (M, L)
        self.W2 = nn.Parameter(_uniform((L, M), 1 / math.sqrt(M), generator, dtype))  # (L, M)
        self.h1 = nn.Parameter(torch.zeros(M, dtype=dtype))  # (M,)
        h2 = _uniform((L,), 1 / math.sqrt(L), generator, dtype) if clipped else torch.zeros(L, dtype=dtype)
        self.h2 = nn.Parameter(h2)  # (L,)
        if observation == "affine":
            # equal singular values sqrt(2 N / min(N, M)): the Frobenius norm Kaiming's normal init
            # (std sqrt(2 / M)) has on average, without its near-singular draws (Notes)
            B = torch.empty(N, M, dtype=torch.float64)
            nn.init.orthogonal_(B, gain=math.sqrt(2 * N / min(N, M)), generator=generator)
            self.B = nn.Parameter(B.to(dtype))  # (N, M)
        elif M > N:
            self.C = nn.Parameter(_uniform((M - N, N), 1 / math.sqrt(N), generator, dtype))  # (M-N, N)
        self._pinv_cache: tuple | None = None

    # ----------------------------------------------------------------- the contract
    def _hidden(self, z: torch.Tensor) -> torch.Tensor:
        """Hidden-layer output, ``(B, M) -> (B, L)``."""
        u = z @ self.W2.T  # (B, L)
        if self.clipped:
            return torch.relu(u + self.h2) - torch.relu(u)
        return torch.relu(u + self.h2)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        return self.A * z + self._hidden(z) @ self.W1.T + self.h1  # (B, M)

    # observe, state_from_obs, initial_state: LatentObservation

    def _pinv(self) -> torch.Tensor:
        """Detached pseudo-inverse ``B^+ (M, N)``, recomputed only when ``B`` changed in place."""
        key = (self.B.data_ptr(), self.B._version, self.B.device, self.B.dtype)
        if self._pinv_cache is None or self._pinv_cache[0] != key:
            self._pinv_cache = (key, torch.linalg.pinv(self.B.detach()))
        return self._pinv_cache[1]

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """Analytic Jacobian ``diag(A) + W1 diag(m) W2``, ``(B, M) -> (B, M, M)``.

        ``m = 1[W2 z + h2 > 0]``, minus ``1[W2 z > 0]`` when clipped (ReLU derivative taken as 0
        at 0, as autograd does).
        """
        u = z @ self.W2.T  # (B, L)
        m = (u + self.h2 > 0).to(z.dtype)  # (B, L)
        if self.clipped:
            m = m - (u > 0).to(z.dtype)
        J = (self.W1 * m.unsqueeze(1)) @ self.W2  # (B, M, L) @ (L, M) -> (B, M, M)
        return J + torch.diag_embed(self.A.expand_as(z))  # (B, M, M)

    def jacobian_norms(self, z: torch.Tensor) -> torch.Tensor:
        """``||J(z)||_2`` per state, ``(S, M) -> (S,)`` float64: the growth bound's inner loop, in a
        compiled kernel on the CPU (:mod:`dsrecon.fast.jacobian_norms`)."""
        from dsrecon.fast.jacobian_norms import stacked_jacobian_norms

        return stacked_jacobian_norms(self.A[None], self.W1[None], self.W2[None], self.h2[None], self.clipped,
                                      z[None])[0]

    # ----------------------------------------------------------------- extras
    def regularization(self) -> torch.Tensor:
        """``||1 - A||^2 + ||W1||^2 + ||W2||^2 + ||h1||^2 + ||h2||^2`` (A pulled towards 1)."""
        return ((1 - self.A) ** 2).sum() + sum((p ** 2).sum() for p in (self.W1, self.W2, self.h1, self.h2))

    def parameter_bound(self) -> torch.Tensor:
        """Upper bound on ``||J(z)||_2`` for every ``z``: ``max|A_i| + ||W1||_2 ||W2||_2`` (scalar)."""
        with torch.no_grad():
            return (self.A.abs().max()
                    + torch.linalg.matrix_norm(self.W1, ord=2) * torch.linalg.matrix_norm(self.W2, ord=2))

    def config(self) -> dict:
        return {"obs_dim": self.obs_dim, "latent_dim": self.state_dim, "hidden_dim": self.hidden_dim,
                "clipped": self.clipped, "observation": self.observation,
                "dtype": str(self._dtype()).replace("torch.", "")}
