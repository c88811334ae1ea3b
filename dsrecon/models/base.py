"""The one-step-map contract every dsrecon model follows.

A model is a discrete-time map on a latent state ``z`` of size ``M`` with an observation model
from ``z`` to the ``N`` observed coordinates. Unrolling, forcing, Lyapunov exponents and training
are functions over this contract (``dsrecon.rollout``, ``dsrecon.forcing``, ``dsrecon.lyapunov``,
``dsrecon.train``), so every model gets them for free and a comparison changes one thing at a time.

Symbols (docs/method.md section 2): ``B`` batch, ``N`` observed dimension, ``M`` latent (state) dimension.

Forcing convention
------------------
Generalized teacher forcing mixes the model's state with a data-inferred one,
``z~ = z + alpha * (state_from_obs(x, z) - z)``. ``state_from_obs`` replaces only the coordinates
the data determines and returns the others from ``z`` unchanged, so this one rule is GTF on the
forced coordinates for every model: alpha = 0 is free running, alpha = 1 (identity observation) is
classical teacher forcing.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from dsrecon import defaults


def resolve_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    """The generator a model draws its initial parameters from (the seed rule of :mod:`dsrecon.defaults`).

    ``generator`` if given; else a new CPU generator seeded with ``seed``, or with
    ``dsrecon.defaults.SEED`` (0) when neither is given. Torch's global generator is never read
    or reseeded, so the same call builds the same model for every model family.
    """
    if generator is not None and seed is not None:
        raise ValueError("give either generator= or seed=, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}; "
                             "or pass seed=<int>")
        return generator
    if seed is None:
        seed = defaults.SEED
    if isinstance(seed, bool) or not hasattr(type(seed), "__index__"):  # int or a NumPy integer
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


class Model(nn.Module, abc.ABC):
    """Abstract one-step map ``z_t = step(z_{t-1})`` with an observation model.

    Subclasses set ``obs_dim`` (N) and ``state_dim`` (M) and implement the abstract methods.
    Constructors store and initialize; all randomness goes through a ``torch.Generator`` passed
    as ``generator=`` (or made from ``seed=``; neither means seed 0: :func:`resolve_generator`),
    so that the same seed gives the same model.

    Attributes
    ----------
    name : str
        Registry name (class attribute), e.g. ``"shplrnn"``.
    obs_dim : int
        N, the observed dimension.
    state_dim : int
        M, the size of the state vector ``z`` that ``step`` maps.
    affine_forcing : bool
        Class attribute: True declares that ``state_from_obs(x, z) = c(x) + z Q`` with ``c`` and
        ``Q`` independent of ``z`` and detached from the gradient (true of every dsrecon model).
        Training then folds the forcing into one product per step
        (:mod:`dsrecon.fast.affine_forcing`); False (the default for a new model) keeps the plain loop.
    """

    name: str = ""
    affine_forcing: bool = False
    obs_dim: int
    state_dim: int

    # ----------------------------------------------------------------- the contract
    @abc.abstractmethod
    def initial_state(self, x0: torch.Tensor) -> torch.Tensor:
        """Latent state inferred from the first observation, ``(B, N) -> (B, M)``."""

    @abc.abstractmethod
    def step(self, z: torch.Tensor) -> torch.Tensor:
        """One step of the map, ``(B, M) -> (B, M)``."""

    @abc.abstractmethod
    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """Observation model, ``(B, M) -> (B, N)``."""

    @abc.abstractmethod
    def state_from_obs(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Data-inferred state used for forcing, ``(B, N), (B, M) -> (B, M)``.

        Coordinates the observation determines come from ``x``; all others are copied from ``z``.
        Parameters of the observation inverse (e.g. a pseudo-inverse) are used detached: the
        forcing signal is outside the gradient (docs/method.md section 3, step 1).
        """

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """Jacobian of ``step`` at each state, ``(B, M) -> (B, M, M)``, ``J[b, i, j] = d step_i / d z_j``.

        Default: ``torch.func.jacrev`` vmapped over the batch. Models with an analytic Jacobian
        override this, and the contract test checks the two agree.
        """
        def single(zb):  # (M,) -> (M,)
            return self.step(zb.unsqueeze(0)).squeeze(0)

        return torch.func.vmap(torch.func.jacrev(single))(z)

    # ----------------------------------------------------------------- optional hooks
    def regularization(self) -> torch.Tensor:
        """Penalty added to the training loss before its weight ``lambda`` (scalar tensor).

        Default: zero. The shPLRNN returns ``||1 - A||^2 + ||W1||^2 + ||W2||^2 + ||h1||^2 + ||h2||^2``.
        """
        return torch.zeros((), device=self._device(), dtype=self._dtype())

    def config(self) -> dict:
        """JSON-serializable constructor arguments; ``make_model(name, **config())`` rebuilds it."""
        raise NotImplementedError(f"{type(self).__name__} must implement config()")

    @property
    def n_params(self) -> int:
        """Number of trainable scalar parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ----------------------------------------------------------------- helpers
    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _dtype(self) -> torch.dtype:
        p = next(self.parameters(), None)
        return p.dtype if p is not None else torch.get_default_dtype()

    def extra_repr(self) -> str:
        return f"N={self.obs_dim}, M={self.state_dim}, params={self.n_params}"
