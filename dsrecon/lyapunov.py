"""Lyapunov exponents: the spectrum of a model (Benettin/QR) and lambda_max of data (Rosenstein).

The model spectrum uses only the one-step contract (``initial_state``, ``step``, ``jacobian``), so
every model gets it. lambda_max of a measured series is in :mod:`dsrecon.rosenstein` and the
correlation dimension in :mod:`dsrecon.dimension`; both are re-exported here.

References
----------
Benettin, Galgani, Giorgilli, Strelcyn. Lyapunov characteristic exponents for smooth dynamical
systems and for Hamiltonian systems; a method for computing all of them. Meccanica 15, 1980.
Kaplan, Yorke. Chaotic behavior of multidimensional difference equations. Lecture Notes in
Mathematics 730, 1979.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dsrecon.dimension import correlation_dimension
from dsrecon.models.base import Model
from dsrecon.rosenstein import rosenstein_lambda_max

__all__ = [
    "LyapunovResult",
    "lyapunov_spectrum",
    "kaplan_yorke_dimension",
    "rosenstein_lambda_max",
    "correlation_dimension",
]


@dataclass(frozen=True)
class LyapunovResult:
    """Lyapunov spectrum of a model, from :func:`lyapunov_spectrum`.

    Attributes
    ----------
    exponents : np.ndarray, shape ``(M,)``
        Exponents per step (natural log per map iteration), descending, mean over initial
        conditions.
    per_initial : np.ndarray, shape ``(B, M)``
        Exponents per step for each initial condition (their spread measures convergence).
    exponents_per_time : np.ndarray or None, shape ``(M,)``
        ``exponents / dt`` (per time unit) when ``dt`` was given, else None.
    kaplan_yorke : float
        Kaplan-Yorke dimension of ``exponents``.
    history : np.ndarray, shape ``(R, M)``
        Running estimate (mean over initial conditions, per step) after each recorded QR step.
    history_steps : np.ndarray, shape ``(R,)``
        Number of steps after the transient at which each ``history`` row was recorded.
    dt, n_steps, transient, qr_every
        The settings used.
    """

    exponents: np.ndarray
    per_initial: np.ndarray
    exponents_per_time: np.ndarray | None
    kaplan_yorke: float
    history: np.ndarray
    history_steps: np.ndarray
    dt: float | None
    n_steps: int
    transient: int
    qr_every: int

    @property
    def lambda_max(self) -> float:
        """Largest exponent, per time unit if ``dt`` was given, else per step."""
        e = self.exponents_per_time if self.exponents_per_time is not None else self.exponents
        return float(e[0])


def kaplan_yorke_dimension(spectrum) -> float:
    r"""Kaplan-Yorke (Lyapunov) dimension of a spectrum.

    With exponents sorted descending and ``j`` the largest index with
    :math:`\sum_{i \le j} \lambda_i \ge 0`: :math:`D_{KY} = j + \sum_{i \le j} \lambda_i /
    |\lambda_{j+1}|`. It is 0 if :math:`\lambda_1 < 0` and M if all partial sums are >= 0. Units
    cancel, so per-step and per-time-unit spectra give the same value (Lorenz-63: 2.062).

    Parameters
    ----------
    spectrum : array, shape ``(M,)``

    Returns
    -------
    float
    """
    lam = np.sort(np.asarray(spectrum, dtype=np.float64).ravel())[::-1]
    if lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError(f"spectrum must be a non-empty finite vector, got {spectrum!r}")
    partial = np.cumsum(lam)  # (M,)
    nonneg = np.nonzero(partial >= 0)[0]
    if nonneg.size == 0:
        return 0.0
    j = int(nonneg[-1]) + 1  # number of exponents in the non-negative partial sum
    if j == lam.size:
        return float(lam.size)
    return float(j + partial[j - 1] / abs(lam[j]))


def _initial_states(model: Model, x0, z0, n_initial: int | None) -> torch.Tensor:
    device, dtype = model._device(), model._dtype()
    if (x0 is None) == (z0 is None):
        raise ValueError("give exactly one of x0 (observations) or z0 (latent states)")
    src = x0 if z0 is None else z0
    t = torch.as_tensor(src if isinstance(src, torch.Tensor) else np.asarray(src))
    t = t.to(device=device, dtype=dtype)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    width = model.obs_dim if z0 is None else model.state_dim
    if t.ndim != 2 or t.shape[1] != width:
        name = "x0" if z0 is None else "z0"
        raise ValueError(f"{name} must have shape ({width},) or (B, {width}), got {tuple(t.shape)}")
    if n_initial is not None:
        if n_initial < 1 or n_initial > t.shape[0]:
            raise ValueError(f"n_initial must be in 1..{t.shape[0]} (rows given), got {n_initial}")
        rows = np.linspace(0, t.shape[0] - 1, n_initial).round().astype(int)
        t = t[torch.as_tensor(rows, device=device)]
    return model.initial_state(t) if z0 is None else t  # (B, M)


@torch.no_grad()
def lyapunov_spectrum(
    model: Model,
    x0=None,
    n_steps: int = 10_000,
    *,
    z0=None,
    transient: int = 1000,
    qr_every: int = 1,
    dt: float | None = None,
    n_initial: int | None = None,
    n_history: int = 500,
) -> LyapunovResult:
    """Full Lyapunov spectrum of a model by the Benettin/QR method, batched over initial conditions.

    From each initial state, ``transient`` steps are discarded; then an orthonormal basis is
    propagated with the model's Jacobian, ``Q <- J(z_t) Q``, ``z_{t+1} = step(z_t)``, and
    re-orthonormalized by ``Q, R = qr(Q)`` every ``qr_every`` steps; ``log|diag R|`` is
    accumulated in float64 and divided by the number of steps. ``Q`` is kept in float64 whatever
    the model's dtype. A final QR closes a run whose length is not a multiple of ``qr_every``.

    Parameters
    ----------
    model : Model
    x0 : array or tensor, shape ``(N,)`` or ``(B, N)``
        Observations the initial states are inferred from (``model.initial_state``).
    n_steps : int
        Steps averaged after the transient (Lorenz-63 at dt = 0.01 needs ~1e5 steps for
        lambda_1 to +-0.01 from one initial condition; averaging B initial conditions helps).
    z0 : array or tensor, shape ``(M,)`` or ``(B, M)``, optional
        Latent initial states instead of ``x0``.
    transient : int
        Steps discarded first (docs/method.md section 4: at least 1,000).
    qr_every : int
        Steps between re-orthonormalizations (1..10 is safe for float64 ``Q``).
    dt : float, optional
        Sampling interval; when given, exponents are also reported per time unit.
    n_initial : int, optional
        Use ``n_initial`` evenly spaced rows of ``x0``/``z0`` (e.g. pass a whole test series).
    n_history : int
        At most this many running estimates are recorded for convergence plots.

    Returns
    -------
    LyapunovResult
    """
    if n_steps < 1 or transient < 0:
        raise ValueError(f"need n_steps >= 1 and transient >= 0, got {n_steps}, {transient}")
    if not 1 <= qr_every <= n_steps:
        raise ValueError(f"qr_every must be in 1..n_steps, got {qr_every}")
    if dt is not None and not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    z = _initial_states(model, x0, z0, n_initial)  # (B, M)
    for _ in range(transient):
        z = model.step(z)
    n_init, m = z.shape
    q = torch.eye(m, dtype=torch.float64, device=z.device).expand(n_init, m, m).clone()  # (B, M, M)
    log_sum = torch.zeros(n_init, m, dtype=torch.float64, device=z.device)  # (B, M)
    record_every = max(1, (n_steps // qr_every) // n_history) * qr_every
    history, history_steps = [], []
    for t in range(1, n_steps + 1):
        q = model.jacobian(z).double() @ q  # (B, M, M)
        z = model.step(z)
        if t % qr_every == 0 or t == n_steps:
            q, r = torch.linalg.qr(q)
            log_sum += torch.log(torch.diagonal(r, dim1=-2, dim2=-1).abs())  # (B, M)
            if t % record_every == 0 or t == n_steps:
                history.append((log_sum / t).mean(dim=0).cpu())
                history_steps.append(t)
    if not bool(torch.isfinite(log_sum).all()):
        raise RuntimeError(
            "the Lyapunov sums are not finite: the orbit diverged or a Jacobian is singular; "
            "check that the model's orbit stays bounded from these initial states"
        )
    per_init = (log_sum / n_steps).cpu().numpy()  # (B, M), descending per row by QR ordering
    per_init = -np.sort(-per_init, axis=1)
    exponents = per_init.mean(axis=0)
    return LyapunovResult(
        exponents=exponents,
        per_initial=per_init,
        exponents_per_time=None if dt is None else exponents / dt,
        kaplan_yorke=kaplan_yorke_dimension(exponents),
        history=-np.sort(-torch.stack(history).numpy(), axis=1),
        history_steps=np.asarray(history_steps),
        dt=dt,
        n_steps=n_steps,
        transient=transient,
        qr_every=qr_every,
    )
