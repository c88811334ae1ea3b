"""``TrialSet``: a data set made of several trajectories (trials, subjects, sessions, recordings in pieces).

A recording that comes in pieces is not one continuous series: the last step of one trial is not
followed by the first step of the next. A ``TrialSet`` keeps the trials apart as
:class:`~dsrecon.trajectory.Trajectory` objects of possibly different lengths ``T_i`` sharing the
observed dimension ``N`` and the sampling interval ``dt``, and offers what training and evaluation
need from them:

* ``x``: the trials end to end, ``(T_total, N)``, for pooled statistics (mean, std, histograms)
  and as the one array the training loops cut windows from;
* :meth:`TrialSet.window_starts`: the starts in ``x`` of the windows of ``seq_len + 1`` steps that
  lie inside one trial (trial ``i`` contributes ``offset_i + 0 .. offset_i + T_i - seq_len - 1``),
  so that no training window crosses a boundary;
* :func:`standardize_trials`: z-scoring with the mean and std pooled over the (training) trials;
* :func:`split_trials`: a test part of held-out trials or of held-out tails of every trial.

``dsrecon.load`` returns a ``TrialSet`` for a list of arrays, a 3-d array ``(trials, T, N)``, an
npz archive or HDF5 group with several series, or a folder of files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from dsrecon.trajectory import Trajectory

__all__ = ["TrialSet", "standardize_trials", "split_trials", "continuous_series", "TRIAL_META"]

# meta entries of a trial set that describe its standardization (copied onto every trial)
TRIAL_META = ("mean", "std", "standardized")


@dataclass(frozen=True)
class TrialSet:
    """Several trajectories of one system: same ``N``, same ``dt``, lengths ``T_i`` may differ.

    Attributes
    ----------
    trials : tuple of Trajectory
        The trials, each ``(T_i, N)``, in order (``trials[i].name`` names trial ``i``).
    dt : float
        Sampling interval shared by every trial.
    name : str
        Name of the data set (folder, file stem, ...).
    meta : dict
        Provenance (``source``) and, once standardized, the pooled ``mean``/``std`` (lists of
        length N, original units) that :meth:`unstandardize` and ``dsrecon.fit``'s data transform use.
    """

    trials: tuple
    dt: float = 1.0
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        trials = tuple(self.trials)
        if not trials:
            raise ValueError("a TrialSet needs at least one trial, got none; pass a non-empty list of (T, N) arrays")
        if not all(isinstance(t, Trajectory) for t in trials):
            bad = next(type(t).__name__ for t in trials if not isinstance(t, Trajectory))
            raise ValueError(f"TrialSet.trials must be Trajectory objects, got a {bad}; build it with "
                             "dsrecon.load([...]) from arrays")
        n = trials[0].n_dims
        for i, t in enumerate(trials):
            if t.n_dims != n:
                raise ValueError(f"trial {i} ({t.name!r}) has N = {t.n_dims} channels but trial 0 ({trials[0].name!r}) "
                                 f"has {n}; every trial must observe the same channels")
        object.__setattr__(self, "trials", trials)
        object.__setattr__(self, "dt", float(self.dt))

    # ------------------------------------------------------------------ shape
    @property
    def n_trials(self) -> int:
        return len(self.trials)

    @property
    def lengths(self) -> list[int]:
        """``T_i`` of every trial."""
        return [t.n_steps for t in self.trials]

    @property
    def n_steps(self) -> int:
        """``T_total = sum_i T_i``, the number of observations over all trials."""
        return int(sum(self.lengths))

    @property
    def n_dims(self) -> int:
        """N, the observed dimension."""
        return self.trials[0].n_dims

    @property
    def offsets(self) -> np.ndarray:
        """Start of each trial in :attr:`x`, ``(n_trials + 1,)``: trial i is ``x[offsets[i]:offsets[i + 1]]``."""
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    @property
    def x(self) -> np.ndarray:
        """The trials end to end, ``(T_total, N)``: for pooled statistics and window cutting, never
        read as one continuous series across a boundary."""
        return np.concatenate([t.x for t in self.trials], axis=0)

    @property
    def longest(self) -> Trajectory:
        """The longest trial (the first of equal ones): what a statistic of one continuous series is estimated on."""
        return self.trials[int(np.argmax(self.lengths))]

    @property
    def is_standardized(self) -> bool:
        return "mean" in self.meta and "std" in self.meta

    # ------------------------------------------------------------------ windows
    def window_starts(self, seq_len: int) -> np.ndarray:
        """Every start ``s`` in :attr:`x` of a window ``x[s : s + seq_len + 1]`` inside one trial, ``(n_valid,)`` int64.

        Trial ``i`` (rows ``o_i .. o_i + T_i - 1`` of ``x``) contributes ``o_i .. o_i + T_i - seq_len - 1``,
        ``T_i - seq_len`` starts; for one trial the table is ``0 .. T - seq_len - 1``, the starts
        ``dsrecon.data.window_starts`` draws from a plain series. A trial shorter than ``seq_len + 1``
        holds no window and is an error (naming the trial): drop it or use a shorter ``seq_len``.
        """
        short = [(i, t) for i, t in enumerate(self.trials) if t.n_steps < seq_len + 1]
        if short:
            names = ", ".join(f"{i} ({t.name!r}, T = {t.n_steps})" for i, t in short[:5])
            raise ValueError(f"trial {names} {'is' if len(short) == 1 else 'are'} shorter than seq_len + 1 = "
                             f"{seq_len + 1} steps and cannot give a training window; drop "
                             f"{'it' if len(short) == 1 else 'them'} from the data set or use a smaller seq_len "
                             f"(CLI: --seq-len)")
        offsets = self.offsets
        return np.concatenate([np.arange(o, o + t.n_steps - seq_len, dtype=np.int64)
                               for o, t in zip(offsets, self.trials)])

    # ------------------------------------------------------------------ units
    def unstandardize(self, x=None):
        """Map standardized values back to the original units with the pooled ``x * std + mean``
        (``x`` default: :attr:`x`); see :meth:`dsrecon.Trajectory.unstandardize`."""
        if not self.is_standardized:
            raise ValueError(f"trial set {self.name!r} has no standardization mean/std in meta; standardize it "
                             "with dsrecon.trials.standardize_trials first")
        ref = Trajectory(self.trials[0].x[:1], self.dt, self.name, {k: self.meta[k] for k in ("mean", "std")})
        return ref.unstandardize(self.x if x is None else x)

    def map_trials(self, func, **changes) -> "TrialSet":
        """A trial set of ``func(trial)`` for every trial (e.g. a delay embedding), other fields replaced by ``changes``."""
        return replace(self, trials=tuple(func(t) for t in self.trials), **changes)

    def __repr__(self) -> str:
        lengths = self.lengths
        span = f"{min(lengths)}" if min(lengths) == max(lengths) else f"{min(lengths)}..{max(lengths)}"
        return (f"TrialSet({self.name!r}: {self.n_trials} trials of T = {span} steps, N = {self.n_dims}, "
                f"dt = {self.dt:g})")


def continuous_series(data):
    """The one continuous series of ``data`` that a time-series statistic, a plot or a free run from
    its start needs: a TrialSet's longest trial (its trials end to end are not one series); anything
    else (a Trajectory, an array) as it is."""
    return data.longest if isinstance(data, TrialSet) else data


def standardize_trials(trials: TrialSet, mean=None, std=None) -> TrialSet:
    """Z-score every trial with one mean and std per channel: ``(x - mean) / std``.

    Without ``mean``/``std`` they are pooled over all observations of ``trials`` (``ddof = 0``, in
    float64): the statistics of :attr:`TrialSet.x`, so a long trial weighs more than a short one.
    Give the training trials' ``mean``/``std`` to standardize a test set with them (no test
    statistic leaks into training). Standardizing an already standardized set composes the maps,
    as :func:`dsrecon.data.standardize` does, so the stored ``mean``/``std`` stay in the original units.

    Returns
    -------
    TrialSet with ``meta["mean"]``, ``meta["std"]`` (original units, lists of length N) on the set
    and on every trial.
    """
    if mean is None or std is None:
        pooled = trials.x
        mean = pooled.mean(axis=0, dtype=np.float64)  # (N,)
        std = pooled.std(axis=0, dtype=np.float64)  # (N,)
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if mean.shape != (trials.n_dims,) or std.shape != (trials.n_dims,):
        raise ValueError(f"mean and std must have N = {trials.n_dims} entries, got {mean.shape} and {std.shape}")
    if np.any(std == 0):
        raise ValueError(f"cannot standardize {trials.name!r}: channel {int(np.flatnonzero(std == 0)[0])} is constant "
                         "over the trials (std 0); drop it first")
    out_mean, out_std = mean, std
    if trials.is_standardized:  # compose: original = (x * std + mean) * std0 + mean0
        std0, mean0 = np.asarray(trials.meta["std"]), np.asarray(trials.meta["mean"])
        out_mean, out_std = mean * std0 + mean0, std * std0
    stats = {"mean": out_mean.tolist(), "std": out_std.tolist(), "standardized": True}

    def one(t: Trajectory) -> Trajectory:
        dtype = np.promote_types(t.x.dtype, np.float32)
        return replace(t, x=((t.x - mean) / std).astype(dtype, copy=False), meta={**t.meta, **stats})

    return trials.map_trials(one, meta={**trials.meta, **stats})


def split_trials(trials: TrialSet, *, test_trials=None, test_fraction: float | None = None
                 ) -> tuple[TrialSet, TrialSet]:
    """Split a trial set into a training and a test set.

    Parameters
    ----------
    test_trials : int or sequence of int, optional
        Held-out trials: an int k holds out the last k trials; a sequence gives their indices.
        The training set is the other trials, whole.
    test_fraction : float, optional
        Held-out tails: the last ``test_fraction`` of every trial's steps tests, the first part
        trains (chronological within each trial, as :func:`dsrecon.data.train_test_split`).

    Exactly one of the two. ``meta["split"]`` says which part; each trial's ``meta["trial"]``
    (its index in ``trials``) and ``meta["start"]`` (first step in that trial) say where it came from.
    One series (anything but a TrialSet) is refused with a ValueError that says how to give trials:
    this is the one check behind ``fit(test_trials=...)`` and a comparison grid's ``test_trials``.
    """
    if (test_trials is None) == (test_fraction is None):
        raise ValueError("split_trials needs exactly one of test_trials (held-out trials) or test_fraction "
                         "(held-out tail of every trial)")
    if not isinstance(trials, TrialSet):
        raise ValueError(f"test_trials (--test-trials) holds out whole trials, but {getattr(trials, 'name', '')!r} is one "
                         "series; give trials (a list of arrays, a 3-d array, a folder, an npz or h5 group with several "
                         "series) or hold out its tail with test_fraction")
    n = trials.n_trials
    if test_trials is not None:
        if isinstance(test_trials, (int, np.integer)):
            if not 0 < test_trials < n:
                raise ValueError(f"test_trials = {test_trials} must hold out between 1 and {n - 1} of the {n} trials "
                                 "(the rest train)")
            held = list(range(n - int(test_trials), n))
        else:
            held = sorted({int(i) for i in test_trials})
            if not held or held[0] < 0 or held[-1] >= n or len(held) >= n:
                raise ValueError(f"test_trials {list(test_trials)} must name 1 to {n - 1} distinct trial indices in "
                                 f"0 .. {n - 1} (the rest train)")
        parts = ([i for i in range(n) if i not in held], held)
        train, test = ([replace(trials.trials[i], meta={**trials.trials[i].meta, "trial": i, "start": 0})
                        for i in idx] for idx in parts)
        how = {"test_trials": held}
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        train, test = [], []
        for i, t in enumerate(trials.trials):
            n_test = int(round(t.n_steps * test_fraction))
            n_train = t.n_steps - n_test
            if n_test < 2 or n_train < 2:
                raise ValueError(f"cannot split trial {i} ({t.name!r}, T = {t.n_steps}) with test_fraction = "
                                 f"{test_fraction}: each part needs >= 2 steps; use another fraction, or hold out "
                                 "whole trials (test_trials)")
            train.append(replace(t, x=t.x[:n_train], meta={**t.meta, "trial": i, "start": 0}))
            test.append(replace(t, x=t.x[n_train:], meta={**t.meta, "trial": i, "start": n_train}))
        how = {"test_fraction": float(test_fraction)}
    return (replace(trials, trials=tuple(train), meta={**trials.meta, "split": "train", **how}),
            replace(trials, trials=tuple(test), meta={**trials.meta, "split": "test", **how}))
