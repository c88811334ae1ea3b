"""Forcing policies for training: how strongly, and at which steps, the data pulls the latent state.

Every policy gives per-step strengths ``alphas(n) -> Tensor (n,)`` for one window; the mechanics
(``z~ = z + alpha * (state_from_obs(x, z) - z)``) live in ``dsrecon.rollout.forced_rollout``, so one
rollout serves all policies and all models:

=========================  ===========================================  ====================
name (``make_forcing``)     policy                                      alphas
=========================  ===========================================  ====================
``"gtf"``                   generalized teacher forcing, fixed alpha     alpha at every step
``"agtf"``                  adaptive GTF (alpha from the Jacobians)      alpha at every step
``"stf"``                   sparse teacher forcing every tau steps       1 every tau, else 0
``"tf"``                    classical teacher forcing                    1
``"none"``                  free running from a data-inferred start      0
=========================  ===========================================  ====================

References: Hess et al., ICML 2023 (GTF, aGTF); Mikhaeil et al., NeurIPS 2022 (STF, the choice
``tau ~ ln 2 / lambda_max``, and why chaotic free-running BPTT has exploding gradients).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dsrecon import defaults
from dsrecon.models.base import Model

GROWTH_ESTIMATORS = ("geometric_mean", "mean_jacobian", "batch_max", "parameter_bound")


def spectral_norms(J: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each matrix, ``(S, M, M) -> (S,)`` in float64.

    Computed as the square root of the largest eigenvalue of ``J^T J`` (symmetric eigensolver):
    the same number as ``torch.linalg.matrix_norm(J, ord=2)`` to float64 rounding (the largest
    singular value loses no relative precision this way), and faster for the small matrices here
    (M = 3..18, a few thousand per call), which matters because adaptive GTF evaluates it every
    few updates.
    """
    Jd = J.double()
    return torch.linalg.eigvalsh(Jd.transpose(-1, -2) @ Jd)[..., -1].clamp_min(0).sqrt()


def growth_bound(model: Model, z_hat: torch.Tensor, estimator: str = "geometric_mean") -> float:
    r"""Per-step growth bound ``G`` of Jacobian products along data-inferred states.

    Parameters
    ----------
    model : Model
        Any model; its ``jacobian`` is evaluated (analytic for the shPLRNN).
    z_hat : torch.Tensor, shape ``(B, T, M)``
        Data-inferred states ``state_from_obs(x_t, z_t)`` of a batch of windows.
    estimator : str
        ``"geometric_mean"`` (default, docs/method.md section 3):
        ``G = max_b exp(mean_t log ||J(z_hat_bt)||_2)``; ``"mean_jacobian"``: ``||mean_bt J||_2``;
        ``"batch_max"``: ``max_bt ||J||_2``; ``"parameter_bound"``: ``max|A_i| + ||W1|| ||W2||``
        (shPLRNN only; a bound over the whole state space, so the most conservative).

    Returns
    -------
    float
        G >= 0. Forcing with ``alpha >= 1 - 1/G`` keeps Jacobian products of the forced recursion,
        ``prod_t (1 - alpha) J_t``, bounded over any window length.
    """
    if estimator not in GROWTH_ESTIMATORS:
        raise ValueError(f"unknown growth estimator {estimator!r}; valid: {', '.join(GROWTH_ESTIMATORS)}")
    if estimator == "parameter_bound":
        if not hasattr(model, "parameter_bound"):
            raise ValueError(f"estimator 'parameter_bound' needs a model with parameter_bound() "
                             f"(the shPLRNN), got {type(model).__name__}; use 'geometric_mean'")
        return float(model.parameter_bound())
    if z_hat.ndim != 3 or z_hat.shape[-1] != model.state_dim:
        raise ValueError(f"z_hat must have shape (B, T, M) with M = {model.state_dim}, got {tuple(z_hat.shape)}")
    with torch.no_grad():
        B, T, M = z_hat.shape
        z = z_hat.detach().reshape(B * T, M)
        if estimator == "mean_jacobian":
            return float(torch.linalg.matrix_norm(model.jacobian(z).mean(0), ord=2))
        if hasattr(model, "jacobian_norms"):  # the shPLRNN: a compiled kernel on the CPU
            norms = model.jacobian_norms(z)
        else:
            norms = spectral_norms(model.jacobian(z))  # (B*T,)
        return float(reduce_norms(norms.reshape(B, T), estimator))


def reduce_norms(norms: torch.Tensor, estimator: str = "geometric_mean") -> torch.Tensor:
    """The reduction of :func:`growth_bound` over the Jacobians' spectral norms, with any leading axes.

    Parameters
    ----------
    norms : torch.Tensor, shape ``(..., B, T)``
        ``||J||_2`` at the data-inferred states of B windows of T steps (an ensemble puts its K
        models in the leading axis).
    estimator : {"geometric_mean", "batch_max"}

    Returns
    -------
    torch.Tensor, shape ``(...)``, float64
    """
    norms = norms.double()
    if estimator == "batch_max":
        return norms.amax((-2, -1))
    if estimator != "geometric_mean":
        raise ValueError(f"estimator {estimator!r} is not a reduction of Jacobian norms; valid: geometric_mean, "
                         "batch_max")
    # geometric mean over time per sequence, worst sequence; a zero norm gives G = 0 for it
    if norms.device.type == "cpu":  # NumPy's SIMD log: 17 vs 62 us for K = 10 x 3216 norms (same to ~1 ulp)
        with np.errstate(divide="ignore"):  # log(0) = -inf, as torch
            return torch.as_tensor(np.asarray(np.exp(np.log(norms.detach().numpy()).mean(-1)).max(-1)))
    return torch.exp(torch.log(norms).mean(-1)).amax(-1)


class Forcing:
    """Base class: a forcing policy. Subclasses set ``name`` and implement ``alphas``."""

    name: str = ""

    @property
    def alpha(self) -> float:
        """Current scalar strength for logs (NaN where one number does not describe the policy)."""
        return float("nan")

    def alphas(self, seq_len: int) -> torch.Tensor:
        """Per-step forcing strengths ``(seq_len,)``, float64 in [0, 1]; step 0 is the first window step."""
        raise NotImplementedError

    def update(self, model: Model, z_hat: torch.Tensor, n_updates: int) -> None:
        """Adapt to the model after ``n_updates`` parameter updates (no-op for fixed policies)."""

    @property
    def adapts(self) -> bool:
        """True when the policy overrides :meth:`update`: its alphas may change during training, so
        trainers ask for them every update (a fixed policy's once)."""
        return type(self).update is not Forcing.update

    def config(self) -> dict:
        """``make_forcing(**config())`` rebuilds the policy (JSON-serializable)."""
        return {"name": self.name}

    def state_dict(self) -> dict:
        """Mutable state (restored on resume)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _check_alpha(alpha, what="alpha") -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{what} must lie in [0, 1] (0: free running, 1: teacher forcing), got {alpha}")
    return alpha


def _check_len(seq_len) -> int:
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    return seq_len


class GTF(Forcing):
    """Generalized teacher forcing with a constant ``alpha`` in [0, 1] (Hess et al. 2023)."""

    name = "gtf"

    def __init__(self, alpha: float = defaults.ALPHA):
        self._alpha = _check_alpha(alpha)

    @property
    def alpha(self) -> float:
        return self._alpha

    def alphas(self, seq_len: int) -> torch.Tensor:
        return torch.full((_check_len(seq_len),), self._alpha, dtype=torch.float64)

    def config(self) -> dict:
        return {"name": self.name, "alpha": self._alpha}


class TeacherForcing(GTF):
    """Classical teacher forcing: the forced coordinates are replaced by the data at every step."""

    name = "tf"

    def __init__(self):
        super().__init__(1.0)

    def config(self) -> dict:
        return {"name": self.name}


class NoForcing(GTF):
    """Free running from the data-inferred initial state (plain BPTT over the window)."""

    name = "none"

    def __init__(self):
        super().__init__(0.0)

    def config(self) -> dict:
        return {"name": self.name}


class AdaptiveGTF(GTF):
    r"""Adaptive GTF: alpha follows the Jacobians' growth at the data (docs/method.md section 3, "aGTF").

    Every ``every`` parameter updates: ``G = growth_bound(model, z_hat, estimator)``,
    ``alpha_est = max(0, 1 - 1/G)``; if ``alpha_est > alpha``, jump to it, else
    ``alpha <- decay * alpha + (1 - decay) * alpha_est``. Starts at ``alpha0`` (1 = teacher forcing).

    Parameters
    ----------
    estimator : str
        See :func:`growth_bound` (default ``"geometric_mean"``).
    every : int
        Update period in parameter updates (paper: 5).
    alpha0 : float
        Starting alpha (paper: 1).
    decay : float
        Weight of the old alpha when it decays (paper: 0.999): alpha may only fall slowly, so one
        benign batch cannot switch forcing off.
    """

    name = "agtf"

    def __init__(self, estimator: str = "geometric_mean", every: int = 5, alpha0: float = 1.0,
                 decay: float = 0.999):
        if estimator not in GROWTH_ESTIMATORS:
            raise ValueError(f"unknown growth estimator {estimator!r}; valid: {', '.join(GROWTH_ESTIMATORS)}")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer (updates between alpha updates), got {every!r}")
        super().__init__(_check_alpha(alpha0, "alpha0"))
        self.estimator, self.every, self.alpha0 = estimator, every, float(alpha0)
        self.decay = _check_alpha(decay, "decay")
        self.last_G = float("nan")

    def update(self, model: Model, z_hat: torch.Tensor, n_updates: int) -> None:
        if n_updates % self.every:
            return
        self.apply_estimate(growth_bound(model, z_hat, self.estimator))

    def apply_estimate(self, G: float) -> float:
        """The update rule for a given growth bound ``G`` (kept as ``last_G``); returns the new alpha.

        ``update`` computes G from one model; an ensemble computes its K bounds at once and hands
        each policy its own here.
        """
        G = float(G)
        self.last_G = G
        alpha_est = max(0.0, 1.0 - 1.0 / G) if G > 0 else 0.0
        if not math.isfinite(alpha_est):
            return self._alpha  # a non-finite G (broken model) is handled by the trainer, not here
        if alpha_est > self._alpha:
            self._alpha = alpha_est
        else:
            self._alpha = self.decay * self._alpha + (1.0 - self.decay) * alpha_est
        return self._alpha

    def config(self) -> dict:
        return {"name": self.name, "estimator": self.estimator, "every": self.every,
                "alpha0": self.alpha0, "decay": self.decay}

    def state_dict(self) -> dict:
        return {"alpha": self._alpha, "last_G": self.last_G}

    def load_state_dict(self, state: dict) -> None:
        self._alpha = float(state["alpha"])
        self.last_G = float(state.get("last_G", float("nan")))


def choose_tau(lambda_max: float, dt: float = 1.0) -> int:
    r"""Sparse-forcing interval ``tau = round(ln 2 / (lambda_max dt))`` steps, at least 1.

    The time for a small error to double under the largest Lyapunov exponent (Mikhaeil et al.
    2022). ``lambda_max`` is per time unit and ``dt`` the sampling interval (use ``dt = 1`` for an
    exponent per step). Example: Lorenz-63, lambda_max = 0.906, dt = 0.01 -> tau = 77 steps.
    """
    lam = float(lambda_max) * float(dt)
    if not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"choose_tau needs a positive, finite lambda_max * dt (a chaotic system), got {lam}")
    return max(1, round(math.log(2.0) / lam))


class SparseTF(Forcing):
    """Sparse teacher forcing: full forcing every ``tau`` steps (steps 0, tau, 2 tau, ...), none between."""

    name = "stf"

    def __init__(self, tau: int = 25):
        if not isinstance(tau, int) or isinstance(tau, bool) or tau < 1:
            raise ValueError(f"tau must be a positive integer number of steps, got {tau!r}; "
                             f"see dsrecon.forcing.choose_tau(lambda_max, dt)")
        self.tau = tau

    @classmethod
    def from_lyapunov(cls, lambda_max: float, dt: float = 1.0) -> "SparseTF":
        """STF with ``tau = choose_tau(lambda_max, dt)``."""
        return cls(choose_tau(lambda_max, dt))

    def alphas(self, seq_len: int) -> torch.Tensor:
        a = torch.zeros(_check_len(seq_len), dtype=torch.float64)
        a[:: self.tau] = 1.0
        return a

    def config(self) -> dict:
        return {"name": self.name, "tau": self.tau}


FORCINGS: dict[str, type[Forcing]] = {
    "gtf": GTF, "agtf": AdaptiveGTF, "stf": SparseTF, "tf": TeacherForcing, "none": NoForcing,
}


def default_forcing() -> Forcing:
    """The forcing every entry point uses when none is given: GTF with ``alpha = dsrecon.defaults.ALPHA``
    (0.1; see :mod:`dsrecon.defaults` for why not adaptive GTF from alpha = 1, the paper's choice)."""
    return make_forcing(defaults.FORCING, alpha=defaults.ALPHA)


def make_forcing(name: str, **kwargs) -> Forcing:
    """Build the forcing policy registered under ``name`` (gtf, agtf, stf, tf, none) with ``kwargs``."""
    key = str(name).lower()
    if key not in FORCINGS:
        raise ValueError(f"unknown forcing {name!r}; valid names: {', '.join(FORCINGS)}")
    try:
        return FORCINGS[key](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for forcing {key!r}: {err}") from None


__all__ = ["GTF", "AdaptiveGTF", "SparseTF", "NoForcing", "TeacherForcing", "Forcing", "make_forcing", "default_forcing",
           "growth_bound", "choose_tau", "FORCINGS", "GROWTH_ESTIMATORS"]
