"""Evaluate a trained model on a test trajectory by the GTF paper's protocol (docs/method.md section 4).

``evaluate(model, test)`` generates a free-running trajectory from the state inferred from the
first test observation, drops a warm-up, and scores the rest against the test data (D_stsp, D_H),
plus PE(n) over all test points, the model's Lyapunov spectrum and, optionally, lambda_max of the
data and of the generated series by Rosenstein's method. The result is a :class:`Report`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from dsrecon._device import check_device
from dsrecon._version import __version__
from dsrecon.checkpoint import finite_or_none
from dsrecon.data import Trajectory
from dsrecon.lyapunov import LyapunovResult, lyapunov_spectrum
from dsrecon.metrics import COLLAPSE_RATIO, hellinger_distance, is_collapsed, prediction_error, state_space_divergence
from dsrecon.models.base import Model
from dsrecon.rollout import generate
from dsrecon.rosenstein import rosenstein_lambda_max
from dsrecon.trials import TrialSet

__all__ = ["EvalConfig", "NOT_CHAOTIC_FRACTION", "Report", "evaluate"]


@dataclass(frozen=True)
class EvalConfig:
    """Settings of :func:`evaluate`; the defaults are the GTF paper's protocol.

    Attributes
    ----------
    n_bins, smoothing, dstsp_method
        D_stsp: bins per dimension (30), Laplace pseudo-count (1e-5), "auto" (bins for N < 6,
        GMM for N >= 6), "bins" or "gmm".
    sigma : float
        D_H: Gaussian smoothing of the power spectra in frequency bins (20).
    pe_steps : int
        Horizon n of PE(n) (20).
    warmup_fraction : float
        Generate ``(1 + warmup_fraction) T`` steps and drop the first ``warmup_fraction T`` (0.25).
    lyapunov : bool
        Compute the model's Lyapunov spectrum (Benettin/QR).
    lyapunov_steps, lyapunov_transient, lyapunov_initial, qr_every
        Steps averaged (10,000), transient discarded (1,000), number of initial conditions
        (inferred from evenly spaced test points, 8), steps between QR decompositions (1).
    lambda_max_data : bool
        Also estimate lambda_max of the test data and of the generated series by Rosenstein's
        method (off by default: the fit window must sit in the linear region of the divergence
        curve, which depends on the system and dt; the defaults below suit Lorenz-63 at dt = 0.01).
    rosenstein_points, rosenstein_emb_dim, rosenstein_trajectory_len, rosenstein_fit_offset
        Rosenstein settings: points used (first 20,000); delay-embedding dimension applied to
        every observed coordinate (1: the observed vectors, already a state-space
        reconstruction, are the orbit); steps followed (250) and leading steps left out of the
        line fit (50), i.e. a fit over 0.5-2.5 time units at dt = 0.01; min_tsep (and lag) are
        chosen as in nolds (mean period, autocorrelation).
    seed : int
        Seed of the GMM Monte-Carlo samples (local generator).
    device : str, optional
        Where the metrics run (default: the model's device). The model itself is not moved.
    """

    n_bins: int = 30
    smoothing: float = 1e-5
    dstsp_method: str = "auto"
    sigma: float = 20
    pe_steps: int = 20
    warmup_fraction: float = 0.25
    lyapunov: bool = True
    lyapunov_steps: int = 10_000
    lyapunov_transient: int = 1_000
    lyapunov_initial: int = 8
    qr_every: int = 1
    lambda_max_data: bool = False
    rosenstein_points: int = 20_000
    rosenstein_emb_dim: int = 1
    rosenstein_trajectory_len: int = 250
    rosenstein_fit_offset: int = 50
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        if not 0 <= self.warmup_fraction:
            raise ValueError(f"warmup_fraction must be >= 0, got {self.warmup_fraction}")
        if self.pe_steps < 1 or self.lyapunov_steps < 1 or self.lyapunov_initial < 1:
            raise ValueError("pe_steps, lyapunov_steps and lyapunov_initial must be >= 1")
        if self.device is not None:
            check_device(self.device, "EvalConfig.device (CLI: --device)")


# a model whose lambda_max is below this fraction of chaotic data's is flagged "not_chaotic": the
# QR estimate of a periodic orbit is about 0 and of a fixed point negative, while a chaotic
# reconstruction's estimate lies within tens of per cent of the data's Rosenstein estimate
NOT_CHAOTIC_FRACTION = 0.25

# fields that are always computed (JSON null means NaN) vs. optional ones (null means not computed)
_ALWAYS = ("d_stsp", "d_h", "pe")


@dataclass
class Report:
    """Scores of one model on one test trajectory, from :func:`evaluate`.

    Attributes
    ----------
    d_stsp, d_h, pe : float
        State-space divergence, power-spectrum Hellinger distance, PE(pe_steps); NaN when
        undefined (e.g. a diverged generated series).
    lyapunov_spectrum : list of float or None
        Model exponents, per time unit if ``dt`` is known, else per step (``lyapunov_units``).
    lambda_max_model, kaplan_yorke : float or None
    lambda_max_data, lambda_max_generated : float or None
        Rosenstein estimates on the test data and on the generated series (same settings).
    n_steps, obs_dim, dt, data_name, data_sha256
        The test data: T, N, sampling interval, name, SHA-256 of its C-contiguous array bytes.
    model_name, n_params, dsrecon_version, config, eval_time_s
    trials : list of dict or None
        For a :class:`~dsrecon.trials.TrialSet` test set, one entry per test trial (``name``,
        ``n_steps``, ``d_stsp``, ``d_h``, ``pe``, ``std_ratio``: that trial against the free run
        from its first observation); the scores above are then pooled (see :func:`evaluate`).
    std_ratio : list of float or None
        Per observed dimension, the standard deviation of the generated series over that of the
        test data: ~1 for a reconstruction of the attractor's extent, near 0 when the model's orbit
        collapsed onto a fixed point or a small cycle (:attr:`collapsed`), NaN if it diverged.
    generated : np.ndarray or None
        The compared generated series ``(T, N)`` (after the warm-up), for plots; not saved.
    lyapunov : LyapunovResult or None
        Full spectrum result with its convergence history, for plots; not saved.
    """

    d_stsp: float
    d_h: float
    pe: float
    pe_steps: int
    lyapunov_spectrum: list | None
    lyapunov_units: str
    lambda_max_model: float | None
    kaplan_yorke: float | None
    lambda_max_data: float | None
    lambda_max_generated: float | None
    n_steps: int
    obs_dim: int
    dt: float | None
    data_name: str
    data_sha256: str
    model_name: str
    n_params: int
    dsrecon_version: str
    config: dict
    eval_time_s: float
    std_ratio: list | None = None
    trials: list | None = None
    generated: np.ndarray | None = field(default=None, repr=False, compare=False)
    lyapunov: LyapunovResult | None = field(default=None, repr=False, compare=False)

    _NOT_SAVED = ("generated", "lyapunov")
    _OPTIONAL = ("std_ratio", "trials")  # absent from reports written before they existed
    COLLAPSE_RATIO = COLLAPSE_RATIO

    @property
    def collapsed(self) -> bool:
        """True when the generated orbit has collapsed (:func:`is_collapsed` of :attr:`std_ratio`)."""
        return is_collapsed(self.std_ratio)

    @property
    def diverged(self) -> bool:
        """True when the generated series left the finite range (its std ratios are not finite)."""
        return self.std_ratio is not None and not all(math.isfinite(v) for v in self.std_ratio)

    def flags(self, lambda_max_data: float | None = None) -> dict[str, str]:
        """The ways the reconstruction is unlike the data, ``{flag: explanation}`` (empty if none).

        ``"diverged"``: the free run left the finite range. ``"collapsed"``: it fell onto a fixed
        point or a small orbit (:attr:`collapsed`). ``"not_chaotic"``: the data are chaotic
        (``lambda_max_data > 0``; default: this report's Rosenstein estimate on the test data, if
        computed) and the model's largest exponent is below :data:`NOT_CHAOTIC_FRACTION` of it, so
        its attractor is a fixed point, a periodic or quasi-periodic orbit, or far less chaotic.
        ``lambda_max_data`` must be in this report's :attr:`lyapunov_units`.
        """
        out = {}
        if self.diverged:
            out["diverged"] = "the model's free run diverged (non-finite values): no attractor to compare"
        elif self.collapsed:
            low = sum(v < self.COLLAPSE_RATIO for v in self.std_ratio)
            out["collapsed"] = (f"the free run collapsed onto a fixed point or a small orbit (std below "
                                f"{self.COLLAPSE_RATIO:g} of the data's in {low} of {len(self.std_ratio)} dimensions)")
        ref = self.lambda_max_data if lambda_max_data is None else lambda_max_data
        lam = self.lambda_max_model
        if (ref is not None and lam is not None and math.isfinite(ref) and ref > 0 and math.isfinite(lam)
                and lam < NOT_CHAOTIC_FRACTION * ref):
            out["not_chaotic"] = (f"the model's lambda_max {lam:.3g} is below {NOT_CHAOTIC_FRACTION:g} of the data's "
                                  f"{ref:.3g} {self.lyapunov_units}: a fixed point or a periodic orbit where the "
                                  "data are chaotic")
        return out

    def to_dict(self) -> dict:
        """JSON-ready dict of every saved field (NaN stays NaN here; :meth:`save` writes null)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._NOT_SAVED}

    def save(self, path) -> Path:
        """Write the report as JSON (NaN and infinities as null); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(finite_or_none(self.to_dict()), indent=2, allow_nan=False) + "\n")
        return path

    @classmethod
    def load(cls, path) -> "Report":
        """Read a report written by :meth:`save` (null scores come back as NaN)."""
        data = json.loads(Path(path).read_text())
        names = {f.name for f in fields(cls)} - set(cls._NOT_SAVED)
        missing = names - set(data) - set(cls._OPTIONAL)
        if missing:
            raise ValueError(f"{path} is not a dsrecon report: missing fields {sorted(missing)}")
        for key in _ALWAYS:
            if data[key] is None:
                data[key] = math.nan
        return cls(**{k: data[k] for k in names if k in data})

    def __str__(self) -> str:
        def num(v, fmt=".4g"):  # None: not computed, or NaN written as null by save()
            return "n/a" if v is None else ("nan" if math.isnan(v) else format(v, fmt))

        dt = "" if self.dt is None else f", dt={self.dt:g}"
        lines = [
            f"dsrecon evaluation: {self.model_name} ({self.n_params:,} parameters) on "
            f"{self.data_name or 'test data'} (T={self.n_steps:,}, N={self.obs_dim}{dt})",
            f"  D_stsp        {num(self.d_stsp)}   state-space KL divergence (lower is better)",
            f"  D_H           {num(self.d_h)}   power-spectrum Hellinger distance, in [0, 1]",
            f"  PE({self.pe_steps})        {num(self.pe)}   {self.pe_steps}-step prediction MSE",
        ]
        if self.lyapunov_spectrum is not None:
            spec = ", ".join(num(v) for v in self.lyapunov_spectrum[:6])
            more = ", ..." if len(self.lyapunov_spectrum) > 6 else ""
            lines += [
                f"  lambda_max    {num(self.lambda_max_model)} {self.lyapunov_units} (model, QR)",
                f"  spectrum      [{spec}{more}]",
                f"  Kaplan-Yorke  {num(self.kaplan_yorke)}",
            ]
        if self.lambda_max_data is not None:
            lines.append(
                f"  Rosenstein    data {num(self.lambda_max_data)}, generated "
                f"{num(self.lambda_max_generated)} {self.lyapunov_units}"
            )
        if self.trials:
            lines.append(f"  pooled over {len(self.trials)} test trials; per trial:")
            lines += [f"    {t['name']:<16} T={t['n_steps']:<7,} D_stsp {num(t['d_stsp'])}  D_H {num(t['d_h'])}  "
                      f"PE {num(t['pe'])}" for t in self.trials]
        lines += [f"  flag {name}: {text}" for name, text in self.flags().items()]
        lines.append(f"  ({self.eval_time_s:.1f} s, dsrecon {self.dsrecon_version}, data sha256 {self.data_sha256[:12]})")
        return "\n".join(lines)


def _evaluate_trials(model: Model, test: TrialSet, config: EvalConfig) -> Report:
    """:func:`evaluate` of a trial set: per trial, then pooled (see there)."""
    start = time.perf_counter()
    per_trial = []
    for i, trial in enumerate(test.trials):
        try:
            per_trial.append(evaluate(model, trial, replace(config, lyapunov=False)))
        except ValueError as err:
            raise ValueError(f"test trial {i} ({trial.name!r}, T = {trial.n_steps}): {err}; drop the trial or hold out "
                             "longer tails (test_fraction) or whole trials (test_trials)") from None
    dt = per_trial[0].dt
    x = test.x  # (T_total, N)
    device = torch.device(config.device) if config.device else model._device()
    x_true = torch.as_tensor(np.ascontiguousarray(x), device=device, dtype=torch.float64)  # (T_total, N)
    x_gen = torch.as_tensor(np.concatenate([r.generated for r in per_trial]), device=device,
                            dtype=torch.float64)  # (T_total, N), the trials' free runs after their warm-ups
    if bool(torch.isfinite(x_gen).all()):
        d_stsp = state_space_divergence(x_true, x_gen, n_bins=config.n_bins, method=config.dstsp_method,
                                        smoothing=config.smoothing, seed=config.seed)
    else:
        d_stsp = math.nan
    lengths = np.asarray(test.lengths, dtype=np.float64)
    d_h = float(np.average([r.d_h for r in per_trial], weights=lengths))
    pe = float(np.average([r.pe for r in per_trial], weights=lengths - config.pe_steps))
    std_ratio = (x_gen.std(dim=0) / x_true.std(dim=0)).tolist()  # (N,)
    lyap, lyap_failed = None, False
    if config.lyapunov:
        was_training = model.training
        model.eval()
        try:
            lyap = lyapunov_spectrum(model, x, n_steps=config.lyapunov_steps, transient=config.lyapunov_transient,
                                     qr_every=config.qr_every, dt=dt, n_initial=min(config.lyapunov_initial, x.shape[0]))
        except RuntimeError as err:
            warnings.warn(f"Lyapunov spectrum failed ({err}); reported as NaN", RuntimeWarning, stacklevel=3)
            lyap_failed = True
        finally:
            model.train(was_training)
    spectrum = None
    if lyap is not None:
        spectrum = lyap.exponents_per_time if lyap.exponents_per_time is not None else lyap.exponents
    elif lyap_failed:
        spectrum = [math.nan] * model.state_dim
    longest = per_trial[int(np.argmax(lengths))]
    nan_if_failed = math.nan if lyap_failed else None
    return replace(
        longest, d_stsp=d_stsp, d_h=d_h, pe=pe,
        lyapunov_spectrum=None if spectrum is None else [float(v) for v in spectrum],
        lambda_max_model=lyap.lambda_max if lyap is not None else nan_if_failed,
        kaplan_yorke=lyap.kaplan_yorke if lyap is not None else nan_if_failed,
        n_steps=int(x.shape[0]), data_name=test.name,
        data_sha256=hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(), config=asdict(config),
        eval_time_s=time.perf_counter() - start, std_ratio=[float(v) for v in std_ratio],
        trials=[{"name": t.name, "n_steps": t.n_steps, "d_stsp": r.d_stsp, "d_h": r.d_h, "pe": r.pe,
                 "std_ratio": r.std_ratio} for t, r in zip(test.trials, per_trial)],
        generated=x_gen.cpu().numpy(), lyapunov=lyap)


def _test_array(test) -> tuple[np.ndarray, float | None, str]:
    if isinstance(test, Trajectory):  # dt_known False: dt = 1 only counts samples (dsrecon.load)
        return np.asarray(test.x), float(test.dt) if test.meta.get("dt_known", True) else None, test.name
    if isinstance(test, torch.Tensor):
        test = test.detach().cpu().numpy()
    return np.asarray(test), None, ""


def evaluate(model: Model, test, config: EvalConfig | None = None) -> Report:
    """Score a model against a test trajectory by the GTF paper's protocol.

    1. ``x_gen = generate(model, x_1, (1 + w) T)`` from the state inferred from the first test
       observation; drop the first ``w T`` steps (``w = warmup_fraction``, 0.25).
    2. D_stsp and D_H of the remaining T steps against the T test points, in the test data's
       coordinates (the generated series is never re-standardized).
    3. PE(n) from every test point, the model's Lyapunov spectrum from ``lyapunov_initial``
       evenly spaced test points, and optionally Rosenstein's lambda_max of data and generated
       series.

    Parameters
    ----------
    model : Model
        Trained model; its ``obs_dim`` must equal the test data's N.
    test : Trajectory or array, shape ``(T, N)``, or TrialSet
        Test observations in the coordinates the model was trained in (standardized with the
        *training* statistics if the training data was). A :class:`~dsrecon.trials.TrialSet` is
        scored per trial and pooled: each trial ``i`` against a free run of ``(1 + w) T_i`` steps
        from its own first observation (warm-up dropped), in ``Report.trials``; the pooled D_stsp
        compares all test trials' observations with all these free runs together, the pooled D_H
        and PE are the per-trial values averaged with weights ``T_i`` (D_H: the spectra of
        different lengths have different frequency bins) and ``T_i - n`` (PE: its number of
        forecasts); the Lyapunov spectrum starts from test points spread over all trials, and
        Rosenstein's estimates (when asked for) are the longest trial's. With a ``Trajectory`` its ``dt`` gives
        exponents per time unit, unless ``meta["dt_known"]`` is False (a file without a sampling
        interval); then, as with a bare array, they are per step.
    config : EvalConfig, optional

    Returns
    -------
    Report
        Scores, settings and provenance; ``report.generated`` holds the compared generated
        series and ``report.lyapunov`` the spectrum's convergence history (neither is saved).
    """
    config = config or EvalConfig()
    if isinstance(test, TrialSet):
        return _evaluate_trials(model, test, config)
    x, dt, name = _test_array(test)
    if x.ndim != 2 or x.shape[1] != model.obs_dim:
        raise ValueError(f"test data must have shape (T, {model.obs_dim}) for this model, got {x.shape}")
    n_warm = int(round(config.warmup_fraction * x.shape[0]))
    min_len = max(2 * int(4 * config.sigma + 0.5) + 2, config.pe_steps + 1)
    if x.shape[0] < min_len or not np.all(np.isfinite(x)):
        raise ValueError(f"test data must be finite with T >= {min_len} for these settings, got T = {x.shape[0]}")
    start = time.perf_counter()
    device = torch.device(config.device) if config.device else model._device()
    x_true = torch.as_tensor(np.ascontiguousarray(x), device=device, dtype=torch.float64)  # (T, N)

    was_training = model.training
    model.eval()
    try:
        x_gen = generate(model, x[0], x.shape[0] + n_warm, out_device=device)[n_warm:]  # (T, N)
        x_gen = x_gen.to(torch.float64)
        if bool(torch.isfinite(x_gen).all()):
            d_stsp = state_space_divergence(
                x_true, x_gen, n_bins=config.n_bins, method=config.dstsp_method,
                smoothing=config.smoothing, seed=config.seed,
            )
            d_h = hellinger_distance(x_true, x_gen, sigma=config.sigma)
        else:
            warnings.warn("the generated series is not finite (the model diverged); D_stsp and D_H are NaN",
                          RuntimeWarning, stacklevel=2)
            d_stsp = d_h = math.nan
        pe = prediction_error(model, x, n=config.pe_steps)
        std_ratio = (x_gen.std(dim=0) / x_true.std(dim=0)).tolist()  # (N,); NaN for a diverged orbit

        lyap, lyap_failed = None, False
        if config.lyapunov:
            try:
                lyap = lyapunov_spectrum(
                    model, x, n_steps=config.lyapunov_steps, transient=config.lyapunov_transient,
                    qr_every=config.qr_every, dt=dt, n_initial=min(config.lyapunov_initial, x.shape[0]),
                )
            except RuntimeError as err:  # diverged orbit: report NaN, keep the other scores
                warnings.warn(f"Lyapunov spectrum failed ({err}); reported as NaN", RuntimeWarning, stacklevel=2)
                lyap_failed = True
    finally:
        model.train(was_training)

    lam_data = lam_gen = None
    if config.lambda_max_data:
        kw = dict(emb_dim=config.rosenstein_emb_dim, trajectory_len=config.rosenstein_trajectory_len,
                  fit_offset=config.rosenstein_fit_offset, tau=dt or 1.0)
        # centred by the data's mean (distances do not change; nolds' automatic lag/min_tsep
        # use the raw autocorrelation, which a large mean would dominate)
        mean = x_true.mean(dim=0)
        lam_data = rosenstein_lambda_max(x_true[: config.rosenstein_points] - mean, **kw)
        if bool(torch.isfinite(x_gen).all()):
            lam_gen = rosenstein_lambda_max(x_gen[: config.rosenstein_points] - mean, **kw)
        else:
            lam_gen = math.nan

    spectrum = None
    if lyap is not None:
        spectrum = lyap.exponents_per_time if lyap.exponents_per_time is not None else lyap.exponents
    elif lyap_failed:
        spectrum = [math.nan] * model.state_dim
    return Report(
        d_stsp=d_stsp,
        d_h=d_h,
        pe=pe,
        pe_steps=config.pe_steps,
        lyapunov_spectrum=None if spectrum is None else [float(v) for v in spectrum],
        lyapunov_units="per time unit" if dt is not None else "per step",
        lambda_max_model=lyap.lambda_max if lyap is not None else (math.nan if lyap_failed else None),
        kaplan_yorke=lyap.kaplan_yorke if lyap is not None else (math.nan if lyap_failed else None),
        lambda_max_data=lam_data,
        lambda_max_generated=lam_gen,
        n_steps=int(x.shape[0]),
        obs_dim=int(x.shape[1]),
        dt=dt,
        data_name=name,
        data_sha256=hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(),
        model_name=model.name or type(model).__name__,
        n_params=int(model.n_params),
        dsrecon_version=__version__,
        config=asdict(config),
        eval_time_s=time.perf_counter() - start,
        std_ratio=[float(v) for v in std_ratio],
        generated=x_gen.cpu().numpy(),
        lyapunov=lyap,
    )
