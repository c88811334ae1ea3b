"""From a recorded file to the series a model is trained on: split, standardize, embed, size.

The order matters and is the same for ``dsrecon fit`` and for ``dsrecon evaluate`` rebuilding a
run's test split:

1. split chronologically into training and test parts (:func:`split_standardize`);
2. z-score both with the *training* part's mean and std (the test part's statistics must not
   leak into training, and the stored "training" statistics must be the training part's);
3. delay-embed each part separately (:func:`choose_embedding`: a scalar or two-channel series is
   embedded, delay by mutual information, dimension by Cao's method), so no training vector holds
   a test value;
4. size the latent state (:func:`choose_latent`): many channels get fewer latent units than
   channels, with an affine observation.

References
----------
Cao, L. Practical method for determining the minimum embedding dimension of a scalar time series.
Physica D 110, 43-50 (1997).
Fraser, A. M., Swinney, H. L. Phys. Rev. A 33, 1134 (1986) (delay by mutual information).
Hess, Monfared, Brenner, Durstewitz. Generalized Teacher Forcing for Learning Chaotic Dynamics.
ICML 2023 (M = 16 latent units with an affine observation for a 64-channel EEG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from dsrecon.data import Trajectory
from dsrecon.trials import TrialSet, continuous_series, split_trials, standardize_trials

__all__ = [
    "EmbeddingChoice", "LatentChoice", "split_standardize", "standardize_with_training", "choose_embedding", "parse_embed",
    "choose_latent", "apply_embedding", "to_model_coordinates", "file_split",
]

EMBED_BELOW = 3  # auto: series with fewer channels than this are delay-embedded
MANY_CHANNELS = 16  # choose_latent: more channels than this get M from the data, not M = N
PCA_VARIANCE = 0.9  # share of the variance the latent size must explain
LATENT_MIN, LATENT_MAX = 10, 32
CAO_POINTS = 20_000  # Cao's method on the first points of the training part
SEQ_LEN_MI_TIMES = 12  # seq_len="auto": training windows span this many mutual-information times
SEQ_LEN_RANGE = (20, 1000)  # ... within these bounds (steps)
# distances below NOISE_FACTOR x the noise std are noise, not geometry; clipped to the range below
NOISE_FACTOR, FLOOR_MIN, FLOOR_MAX = 2.5, 0.02, 0.15


@dataclass(frozen=True)
class EmbeddingChoice:
    """Delays applied to every channel (``(0,)``: none) and why.

    Attributes
    ----------
    delays : tuple of int
        Lags in samples, ``(0, tau, 2 tau, ..., (k - 1) tau)``; the model sees ``k N`` columns.
    dimension : int
        ``k N``, the embedded dimension.
    reason : str
        How the delays were chosen, for the printed summary.
    cao : dict or None
        Cao's statistics (``CaoResult.to_dict()``) when they decided the dimension.
    """

    delays: tuple
    dimension: int
    reason: str
    cao: dict | None = None

    @property
    def embedded(self) -> bool:
        return len(self.delays) > 1

    def to_dict(self) -> dict:
        return {"delays": list(self.delays), "dimension": self.dimension, "reason": self.reason, "cao": self.cao}


@dataclass(frozen=True)
class LatentChoice:
    """Latent size ``M`` and observation of the shPLRNN, and why."""

    latent_dim: int
    observation: str
    reason: str

    def to_dict(self) -> dict:
        return {"latent_dim": self.latent_dim, "observation": self.observation, "reason": self.reason}


def split_standardize(traj: Trajectory | TrialSet, test_fraction: float, test_trials=None):
    """Split chronologically, then z-score both parts with the training part's mean and std.

    A :class:`~dsrecon.trials.TrialSet` is split into held-out tails of every trial
    (``test_fraction``) or, with ``test_trials`` (a count of last trials or their indices), into
    held-out trials (:func:`dsrecon.trials.split_trials`); the mean and std are pooled over the
    training part of all trials.

    Parameters
    ----------
    traj : Trajectory ``(T, N)``, raw (or already standardized: the maps then compose, as in
        ``dsrecon.data.standardize``)
    test_fraction : float
        Final share of the steps held out (``dsrecon.data.train_test_split``).

    Returns
    -------
    (train, test) : both with ``meta["mean"]``, ``meta["std"]`` = the training part's statistics
    in the original units, so ``unstandardize`` maps either back.
    """
    from dsrecon.data import train_test_split

    if test_trials is not None:  # split_trials refuses one series
        return standardize_with_training(*split_trials(traj, test_trials=test_trials))
    return standardize_with_training(*train_test_split(traj, test_fraction))  # trials: tails of every trial


def standardize_with_training(raw_train: Trajectory, raw_test: Trajectory) -> tuple[Trajectory, Trajectory]:
    """Z-score a training and a test series with the training series' mean and std (per channel).

    The second half of :func:`split_standardize`, also for a test series from another file
    (``dsrecon.fit(train, test=...)``). Returns ``(train, test)`` with ``meta["mean"]``,
    ``meta["std"]`` = the training statistics in the original units.
    """
    from dsrecon.data import standardize

    if raw_test.n_dims != raw_train.n_dims:
        raise ValueError(f"the test data has N = {raw_test.n_dims} channel(s), the training data {raw_train.n_dims}; "
                         "give test data with the training data's channels")
    train = standardize(raw_train)  # a TrialSet: pooled over its trials
    mean = raw_train.x.mean(axis=0, dtype=np.float64)  # (N,)
    std = raw_train.x.std(axis=0, dtype=np.float64)  # (N,)
    if isinstance(raw_test, TrialSet):
        test = standardize_trials(replace(raw_test, meta=_unscaled(raw_test.meta)), mean, std)
        return train, test
    x_test = ((raw_test.x - mean) / std).astype(train.x.dtype, copy=False)  # (T_test, N)
    test = replace(raw_test, x=x_test, meta={**raw_test.meta, "mean": train.meta["mean"], "std": train.meta["std"],
                                            "standardized": True})
    return train, test


def _unscaled(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in ("mean", "std", "standardized")}


def parse_embed(text: str) -> tuple[int, int] | str:
    """``--embed`` value: ``"auto"``, ``"none"`` or ``"D:TAU"`` -> ``(D, TAU)``."""
    if text in ("auto", "none"):
        return text
    try:
        d, tau = (int(v) for v in text.split(":"))
    except ValueError:
        d = tau = 0
    if d < 1 or tau < 1:
        raise ValueError(f"--embed expects auto, none or D:TAU with integers D >= 1 and TAU >= 1 "
                         f"(e.g. 3:17 for delays 0, 17, 34), got {text!r}")
    return d, tau


def _noise_floor(series: np.ndarray) -> float:
    from dsrecon.inspection import noise_level

    return float(np.clip(NOISE_FACTOR * noise_level(series)[0], FLOOR_MIN, FLOOR_MAX))


def choose_embedding(x, mode="auto", *, max_dim: int = 10) -> EmbeddingChoice:
    """Decide the delay embedding of a standardized training series.

    Rule (``mode="auto"``): a series with ``N >= 3`` channels is used as observed. For ``N < 3``
    (a scalar recording, or two channels, too few for a chaotic flow) the delay ``tau`` is the
    first minimum of the mutual information of channel 0 (the rule of
    ``dsrecon.embedding.choose_delay``, falling back to the autocorrelation's 1/e time) and the dimension ``d`` is Cao's (1997) on channel 0 (first ``CAO_POINTS`` points); each
    channel then gets ``k = ceil(d / N)`` delays ``0, tau, ..., (k - 1) tau``. ``k = 1`` means
    no embedding.

    Cao's ratios are made noise-aware: distances below ``2.5 x`` the noise std
    (``dsrecon.inspection.noise_level``), clipped to ``[0.02, 0.15]`` of the series' std, are
    counted as that floor, since below the noise the nearest-neighbour ratio measures noise, not
    geometry (without it Rossler x with 5 % noise gives 7 instead of 3). The lower clip keeps
    sub-resolution distances out (a D_stsp bin is about 0.2 std wide), the upper one keeps a
    noise level overestimated on a coarsely sampled series (an upper bound there) from erasing
    the geometry. How the factor was chosen: with 5 % noise, 2.5 puts Rossler x's ``E1(3)`` at
    0.91-0.92 (dimension 3) while Lorenz-63 x's ``E1(2)`` stays at 0.86-0.89 (not 2), over three
    noise seeds and 10,000 or 20,000 points; a larger floor pushes Lorenz's ``E1(2)`` past 0.9, a
    smaller one leaves Rossler's ``E1(3)`` below it. Both margins are small: series this noisy sit
    close to the threshold, so read ``cao`` in the result (or give ``--embed D:TAU``) when the
    dimension matters.

    Parameters
    ----------
    x : array ``(T, N)``, Trajectory or TrialSet (its longest trial is used), standardized
    mode : "auto", "none" or (D, TAU)
        ``(D, TAU)``: ``D`` delays ``0, TAU, ..., (D - 1) TAU`` per channel (``D`` is the
        embedding dimension of a scalar series).
    max_dim : int
        Largest dimension Cao's method tests.

    Returns
    -------
    EmbeddingChoice
    """
    from dsrecon.cao import cao_embedding_dim
    from dsrecon.inspection import time_scales

    x = continuous_series(x)  # time scales and Cao's method need one continuous series
    data = np.asarray(getattr(x, "x", x), dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    n = data.shape[1]
    if mode == "none":
        return EmbeddingChoice((0,), n, "--embed none: used as observed")
    if isinstance(mode, tuple):
        k, tau = mode
        return EmbeddingChoice(tuple(range(0, k * tau, tau)), k * n, f"--embed {k}:{tau}: {k} delays of {tau} samples per channel")
    if mode != "auto":
        raise ValueError(f"embedding mode must be 'auto', 'none' or (D, TAU), got {mode!r}")
    if n >= EMBED_BELOW:
        return EmbeddingChoice((0,), n, f"N = {n} >= {EMBED_BELOW} channels: used as observed, no delay embedding")
    series = data[:CAO_POINTS, 0]
    mi_time, acf_time = time_scales(series)  # choose_delay's rule, computed lazily
    tau = mi_time or acf_time
    if tau is None:
        raise ValueError(
            f"no mutual-information minimum and no autocorrelation 1/e crossing up to lag {len(series) // 10} "
            f"in {len(series)} points: the series is too short or too slow for an embedding delay; give it "
            f"(--embed D:TAU) or fit the series as observed (--embed none)")
    floor = _noise_floor(series)
    cao = cao_embedding_dim(series, tau, max_dim, min_distance=floor)
    if not cao.saturated:
        raise ValueError(
            f"Cao's E1 did not saturate up to dimension {max_dim} (last E1 {cao.e1[-1]:.3f}, delay {tau}); the "
            f"series may be noise or too high-dimensional; give the embedding yourself (--embed D:TAU) or "
            f"fit it as observed (--embed none)")
    k = math.ceil(cao.dimension / n)
    what = "a scalar series" if n == 1 else f"N = {n} < {EMBED_BELOW} channels"
    how = "first mutual-information minimum" if mi_time else "autocorrelation 1/e time: no mutual-information minimum"
    reason = (f"{what}: delay {tau} samples ({how}), dimension {cao.dimension} "
              f"(Cao 1997: E1 >= 0.9, noise floor {floor:.3f} std) -> {k} delays per channel")
    if cao.looks_like_noise:
        reason += "; warning: E2 ~ 1 at every dimension, the series looks like noise"
    return EmbeddingChoice(tuple(range(0, k * tau, tau)), k * n, reason, cao.to_dict())


def apply_embedding(traj: Trajectory, delays) -> Trajectory:
    """``dsrecon.embedding.delay_embed`` for ``len(delays) > 1``, the trajectory unchanged otherwise."""
    from dsrecon.embedding import delay_embed

    delays = [int(d) for d in delays]
    if len(delays) > 1 and isinstance(traj, TrialSet):  # each trial on its own: no vector spans a boundary
        return traj.map_trials(lambda t: delay_embed(t, delays), meta={**traj.meta, "delays": delays})
    return traj if len(delays) <= 1 else delay_embed(traj, delays)


def choose_latent(x, requested: int | None = None, observation: str | None = None, default: int = LATENT_MIN) -> LatentChoice:
    """Latent size ``M`` and observation of the shPLRNN for a standardized training series ``(T, N)``.

    * ``requested`` given: that ``M``; the observation is ``observation`` or, if ``M < N``
      (where the identity observation cannot read ``N`` channels), affine.
    * ``N <= MANY_CHANNELS`` (16): ``M = max(N, default)`` with an identity observation (extra
      unobserved coordinates; see ``dsrecon.defaults``).
    * ``N > 16``: ``M`` = the number of principal components explaining ``PCA_VARIANCE`` (90 %)
      of the variance, clipped to ``[LATENT_MIN, LATENT_MAX]`` = ``[10, 32]``, with an affine
      observation ``x = B z``. Channels of a multichannel recording (EEG, an extended system)
      are strongly correlated, so ``M = N`` spends parameters and time (quadratic in ``M``) on
      redundant directions; the GTF paper used ``M = 16`` for its 64-channel EEG. 90 % keeps the
      bulk of the variance and leaves the rest to the observation noise; the cap bounds the cost.
    """
    data = np.asarray(getattr(x, "x", x), dtype=np.float64)
    n = data.shape[1]
    if requested is not None:
        obs = observation or ("affine" if requested < n else "identity")
        return LatentChoice(requested, obs, f"--latent-dim {requested}")
    if n <= MANY_CHANNELS:
        return LatentChoice(max(n, default), observation or "identity",
                            f"N = {n} <= {MANY_CHANNELS}: M = max(N, {default})")
    centred = data - data.mean(axis=0)
    sv = np.linalg.svd(centred[:: max(1, len(centred) // 20_000)], compute_uv=False)  # (min(T', N),)
    share = np.cumsum(sv**2) / np.sum(sv**2)
    k = int(np.searchsorted(share, PCA_VARIANCE) + 1)
    m = int(np.clip(k, LATENT_MIN, LATENT_MAX))
    return LatentChoice(m, observation or "affine",
                        f"N = {n} > {MANY_CHANNELS} channels: {k} principal components explain "
                        f"{PCA_VARIANCE:.0%} of the variance -> M = {m} (clipped to [{LATENT_MIN}, {LATENT_MAX}]), "
                        f"affine observation")


def choose_seq_len(mi_time, n_train: int, default: int) -> tuple[int, str]:
    """Training window length from the data's time scale: ``SEQ_LEN_MI_TIMES`` times the median first
    minimum of the mutual information (samples, :func:`dsrecon.inspection.time_scales`), within
    ``SEQ_LEN_RANGE`` and at most a quarter of the training series; ``default`` when no channel has a
    minimum. The mutual-information time is about a quarter of a dominant oscillation, so a
    window holds about three of them whatever the sampling interval: a series sampled ten times
    finer gets ten times longer windows instead of windows that see a tenth of a turn.

    Returns ``(seq_len, reason)``.
    """
    times = [t for t in (mi_time or ()) if t is not None and np.isfinite(t) and t > 0]
    if not times:
        return default, f"no mutual-information minimum found: the default {default}"
    mi = float(np.median(times))
    low, high = SEQ_LEN_RANGE
    seq_len = int(round(SEQ_LEN_MI_TIMES * mi))
    capped = min(max(seq_len, low), high, max(2, n_train // 4))
    why = f"{SEQ_LEN_MI_TIMES} x the mutual-information time {mi:g} samples"
    if capped != seq_len:
        why += f" = {seq_len}, kept within [{low}, {min(high, max(2, n_train // 4))}]"
    return capped, why


def to_model_coordinates(traj: Trajectory, data_meta: dict) -> Trajectory:
    """Map a raw series into a run's model coordinates: z-score with the run's training
    ``mean``/``std`` (original channels), then apply its ``delays`` (if any)."""
    if isinstance(traj, TrialSet):
        return traj.map_trials(lambda t: to_model_coordinates(t, data_meta),
                               meta={**traj.meta, "mean": data_meta["mean"], "std": data_meta["std"]})
    mean = np.asarray(data_meta["mean"], dtype=float)
    std = np.asarray(data_meta["std"], dtype=float)
    if traj.n_dims != mean.size:
        raise ValueError(f"the data has N = {traj.n_dims} channels, the run was standardized on {mean.size}; "
                         "pass the raw file the run was fitted on (or one with the same channels)")
    x = (traj.x - mean) / std  # (T, N)
    out = Trajectory(x, traj.dt, traj.name, {**traj.meta, "mean": mean.tolist(), "std": std.tolist()})
    return apply_embedding(out, data_meta.get("delays", (0,)))


def file_split(spec: dict) -> tuple[Trajectory, Trajectory]:
    """(train, test) of a file run from the data spec ``dsrecon fit`` stores: load (with the
    spec's ``dt``), split (or read the separate ``test_source`` file), standardize and embed (the
    spec's ``delays``) as described above.

    A spec without ``"standardize": "train"`` comes from a run made before standardization used
    the training part only; it is rebuilt as it was trained: the whole file z-scored, then split.
    """
    from dsrecon.data import load, train_test_split

    traj = load(spec["source"], dt=spec.get("dt"))
    if spec.get("test_source") is not None:  # a separate test file: no split
        train, test = standardize_with_training(traj, load(spec["test_source"], dt=spec.get("dt")))
    elif spec.get("standardize") == "train":
        train, test = split_standardize(traj, spec["test_fraction"], spec.get("test_trials"))
    else:
        from dsrecon.data import standardize

        train, test = train_test_split(standardize(traj), spec["test_fraction"])
    delays = spec.get("delays", (0,))
    return apply_embedding(train, delays), apply_embedding(test, delays)
