"""Trajectory (defined in :mod:`dsrecon.trajectory`), the one data type every loader returns, and the data verbs around it.

``load`` reads any supported source into a validated ``Trajectory`` (several series: a
:class:`~dsrecon.trials.TrialSet`); ``standardize`` z-scores it
(and ``Trajectory.unstandardize`` inverts that); ``train_test_split`` cuts it chronologically; and
``sample_windows`` draws the training windows of docs/method.md section 1 ("Training samples").
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dsrecon.loaders import SUFFIXES, file_dt, natural_key, read_file, read_several, split_key
from dsrecon.trajectory import Trajectory
from dsrecon.trials import TrialSet, split_trials, standardize_trials

# names `load` resolves without a file: recordings shipped by packages, and benchmark systems
RECORDINGS = ("santafe",)
BENCHMARK_SYSTEMS = ("lorenz63", "rossler", "lorenz96")
SANTAFE_LENGTH = 10_093  # Santa Fe series A with its continuation (Weigend & Gershenfeld 1994)


# --------------------------------------------------------------------------- validation
def validate(x: np.ndarray, where: str, *, min_steps: int = 2, columns=None) -> np.ndarray:
    """Check an array once at the entry point and return it as ``(T, N)`` float.

    Raises ``ValueError`` naming ``where``, what was wrong and how to fix it: rank not 1 or 2,
    non-numeric or complex values, fewer than ``min_steps`` points, NaN/inf (with the first bad
    row) or a constant column (which cannot be standardized and carries no dynamics).

    Half-precision input is widened to float32: its range ends at 65504, so sums, means and
    variances taken in float16 overflow or lose most digits.
    """
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{where}: expected numeric values, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise ValueError(
            f"{where}: expected real values, got complex dtype {x.dtype}; dsrecon models real series: "
            "save the real part (x.real), the modulus (abs(x)), or real and imaginary parts as columns"
        )
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(
            f"{where}: expected shape (T, N) or (T,), got {x.shape} (rank {x.ndim}); "
            "reshape it or select one series; trials load as a 3-d array (trials, T, N) or a list of (T, N) arrays"
        )
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    elif x.dtype.itemsize < 4:
        x = x.astype(np.float32)
    if x.shape[0] < min_steps:
        raise ValueError(
            f"{where}: need at least {min_steps} time steps, got T = {x.shape[0]} "
            f"({min_steps - x.shape[0]} more needed); time must run along axis 0"
        )
    finite = np.isfinite(x)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        n_bad = int((~finite.all(axis=1)).sum())
        raise ValueError(
            f"{where}: non-finite value {x[row, col]} at row {row}, column {col} ({n_bad} rows "
            "affected); remove or interpolate NaN/inf values before loading"
        )
    constant = np.flatnonzero(np.ptp(x, axis=0) == 0)
    if constant.size:
        names = [f"{j} ({columns[j]!r})" if columns else str(j) for j in constant]
        raise ValueError(
            f"{where}: column {', '.join(names)} is constant (value {x[0, constant[0]]}); a "
            "constant series carries no dynamics and cannot be standardized: drop it"
        )
    return x


# --------------------------------------------------------------------------- load
def as_series(data, model, what: str, min_len: int) -> np.ndarray:
    """Check and return the observations of ``data`` (a Trajectory, tensor or array) as an array
    ``(T, N)`` for ``model`` (``N = model.obs_dim``; a 1-D series when it is 1), finite, numeric,
    with ``T >= min_len``; ``what`` names the argument in the errors.

    A :class:`~dsrecon.trials.TrialSet` gives its trials end to end, ``(T_total, N)``, each trial
    with ``T_i >= min_len`` (an error names a shorter one); cut windows from it only at the starts
    of :func:`window_table`."""
    if isinstance(data, TrialSet):
        short = [(i, t) for i, t in enumerate(data.trials) if t.n_steps < min_len]
        if short:
            i, t = short[0]
            raise ValueError(f"{what}: trial {i} ({t.name!r}) is too short: need T >= {min_len}, got T = {t.n_steps} "
                             f"({len(short)} of {data.n_trials} trials too short); drop it or use a smaller seq_len")
        x = data.x
    elif isinstance(data, Trajectory):
        x = data.x
    elif isinstance(data, torch.Tensor):
        x = data.detach().cpu().numpy()
    else:
        x = np.asarray(data)
    if x.ndim == 1 and model.obs_dim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{what} must be a Trajectory or an array of shape (T, N), got shape {x.shape}")
    if x.shape[1] != model.obs_dim:
        raise ValueError(f"{what} has N = {x.shape[1]} dimensions but the model expects obs_dim = "
                         f"{model.obs_dim}; build the model with obs_dim={x.shape[1]}")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{what} must be numeric, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contains {int(np.sum(~np.isfinite(x)))} non-finite values; "
                         f"remove or interpolate them first")
    if x.shape[0] < min_len:
        raise ValueError(f"{what} is too short: need T >= {min_len}, got T = {x.shape[0]}; "
                         f"use a longer series or a smaller seq_len")
    return x


def load(
    source,
    *,
    name: str | None = None,
    standardize: bool = False,
    dataset: str | None = None,
    dt: float | None = None,
    min_steps: int = 2,
) -> Trajectory | TrialSet:
    """Load a time series from a file, an array or a registered name into a ``Trajectory``, or
    a data set of several series (trials) into a :class:`~dsrecon.trials.TrialSet`.

    Parameters
    ----------
    source : str, path, np.ndarray or torch.Tensor
        * a file: ``.npy``; ``.npz`` (one array, or ``"file.npz:key"``); ``.csv``/``.txt``
          (numeric columns separated by commas or whitespace, optional header line, ``#``
          comments); ``.h5``/``.hdf5`` (``"file.h5:/group/x"``; without a path the dataset
          ``x`` or the only dataset is read; ``dt``/``name``/``meta`` attributes are honoured);
        * an array or tensor of shape ``(T, N)`` or ``(T,)``;
        * trials, returned as a ``TrialSet`` (trajectories of possibly different lengths, same N
          and dt): a list or tuple of arrays, tensors, Trajectories or files (a list of numbers
          or of rows is one series, as before); a 3-d array
          ``(trials, T, N)`` (in memory or a ``.npy`` file); every array of an ``.npz`` or dataset
          of an HDF5 file with the key ``"*"`` (``"file.npz:*"``; a file with several arrays and
          no key stays an error: they need not be trials); ``"file.h5:/group"`` naming a group (its
          datasets in natural name order); a folder (its files of the supported types, in natural
          name order, one series each). A file that holds one series still gives a ``Trajectory``;
        * a registered name: ``"santafe"`` (Santa Fe laser series A, shipped in the
          ``reservoirpy`` wheel, 10,093 points, ``dt = 1`` sample) or a benchmark system
          ``"lorenz63"``, ``"rossler"``, ``"lorenz96"`` (``dsrecon.simulate`` with its defaults:
          100,000 standardized steps, cached after the first call).
    name : str, optional
        Name of the result (default: dataset name or file stem).
    standardize : bool
        Z-score each column (``standardize``); mean and std go to ``meta``.
    dataset : str, optional
        Array key (npz) or dataset path (HDF5); same as the ``file:key`` suffix.
    dt : float, optional
        Sampling interval (default: from the file's attributes, the system, or 1.0 with
        ``meta["dt_known"] = False``: time in samples, rates per step).
    min_steps : int
        Fewest time steps accepted (default 2).

    Returns
    -------
    Trajectory with ``x`` of shape ``(T, N)``, or TrialSet for trials (``standardize=True`` then
    z-scores with the statistics pooled over all trials).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Unknown name or file type; unreadable/corrupt file; missing array key or HDF5 dataset
        (the message lists those available); wrong rank; fewer than ``min_steps`` points;
        NaN/inf (first bad row given); a constant column.
    ImportError
        ``"santafe"`` without reservoirpy installed.
    """
    meta: dict = {}
    columns = None
    if dt is not None and not (isinstance(dt, (int, float, np.number)) and np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number (the sampling interval), got {dt!r}")
    if isinstance(source, (list, tuple)) and (not source or isinstance(source[0], TRIAL_ITEMS)):
        return _finish(_load_trials(source, dt, min_steps), name, standardize, 0)
    if isinstance(source, (torch.Tensor, np.ndarray)) and source.ndim == 3:
        where = f"{type(source).__name__} of shape {tuple(source.shape)} (trials, T, N)"
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().numpy()
        trials = [validate(source[i], f"{where}, trial {i}", min_steps=min_steps) for i in range(source.shape[0])]
        return _finish(_trial_set(trials, [f"trial{i}" for i in range(len(trials))], dt, {"source": "array"},
                                  "trials"), name, standardize, 0)
    if isinstance(source, torch.Tensor):
        x, default_name, meta["source"] = source.detach().cpu().numpy(), "tensor", "tensor"
        where = "tensor input"
    elif isinstance(source, np.ndarray):
        x, default_name, meta["source"] = source, "array", "array"
        where = "array input"
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        key = text.lower()
        if key in BENCHMARK_SYSTEMS:
            from dsrecon.systems import simulate

            traj = simulate(key, dt=dt) if dt is not None else simulate(key)
            return _finish(traj, name, standardize, min_steps)
        if key in RECORDINGS:
            traj = _load_santafe()
            if dt is not None:
                traj = replace(traj, dt=dt, meta={**traj.meta, "dt_known": True})
            return _finish(traj, name, standardize, min_steps)
        path_text, file_key = split_key(text)
        path = Path(path_text)
        if path.is_dir():
            return _finish(_load_folder(path, dt, min_steps), name, standardize, 0)
        if path.suffix.lower() not in SUFFIXES and not path.exists():
            raise ValueError(
                f"unknown data source {text!r}: not a registered name and not a file with a "
                f"supported suffix; registered names: {', '.join(RECORDINGS + BENCHMARK_SYSTEMS)}; "
                f"file types: {', '.join(SUFFIXES)}"
            )
        if dataset is not None and file_key is not None and dataset != file_key:
            raise ValueError(f"{text!r}: key {file_key!r} in the path conflicts with dataset={dataset!r}")
        several = read_several(path, dataset if dataset is not None else file_key)
        if several is not None:  # an npz archive or an HDF5 group with several series: trials
            trials = [validate(r.x, f"file {str(path)!r}, series {r.name!r}", min_steps=min_steps, columns=r.columns)
                      for r in several]
            dts = {file_dt(path, r.dt) for r in several}
            if dt is None and len(dts) > 1:
                raise ValueError(f"file {str(path)!r}: its series have different dt attributes ({sorted(dts, key=str)}); "
                                 "trials must share one sampling interval: resample them or pass dt=")
            file_dt_value = dt if dt is not None else dts.pop()
            meta = {"source": str(path), **({"columns": several[0].columns} if several[0].columns else {})}
            return _finish(_trial_set(trials, [r.name for r in several], file_dt_value, meta, path.stem),
                           name, standardize, 0)
        raw = read_file(path, dataset if dataset is not None else file_key)
        if np.ndim(raw.x) == 3:  # (trials, T, N) in one array
            where = f"file {str(path)!r} of shape {raw.x.shape} (trials, T, N)"
            trials = [validate(raw.x[i], f"{where}, trial {i}", min_steps=min_steps) for i in range(raw.x.shape[0])]
            dt = dt if dt is not None else file_dt(path, raw.dt)
            return _finish(_trial_set(trials, [f"trial{i}" for i in range(len(trials))], dt, {"source": str(path)},
                                      path.stem), name, standardize, 0)
        x, columns, where = raw.x, raw.columns, f"file {str(path)!r}"
        default_name = raw.name or path.stem
        dt = dt if dt is not None else file_dt(path, raw.dt)
        meta = {**raw.meta, "source": str(path)}
        if columns:
            meta["columns"] = columns
    else:
        try:
            x = np.asarray(source)
        except Exception as err:
            raise ValueError(f"cannot load an object of type {type(source).__name__}: {err}") from err
        default_name, meta["source"], where = "array", "array", "array input"
    x = validate(x, where, min_steps=min_steps, columns=columns)
    if dt is None:  # time counted in samples: rates derived from it are per step
        meta["dt_known"] = False
    traj = Trajectory(x, dt=dt if dt is not None else 1.0, name=default_name, meta=meta)
    return _finish(traj, name, standardize, 0)


# what a list of trials holds (a list of numbers or of rows is one series, read by np.asarray as before)
TRIAL_ITEMS = (np.ndarray, torch.Tensor, Trajectory, str, os.PathLike)


def _trial_set(arrays: list, names: list, dt, meta: dict, name: str) -> TrialSet:
    """A TrialSet of validated ``(T_i, N)`` arrays; ``dt`` None: time in samples (``dt_known`` False)."""
    if dt is None:
        meta = {**meta, "dt_known": False}
    trials = [Trajectory(x, dt=dt if dt is not None else 1.0, name=str(n), meta={**meta, "trial": i})
              for i, (x, n) in enumerate(zip(arrays, names))]
    return TrialSet(tuple(trials), dt=dt if dt is not None else 1.0, name=name, meta=meta)


def _load_trials(items, dt, min_steps: int) -> TrialSet:
    """A list of arrays, tensors, Trajectories or files as trials: each loaded by :func:`load`."""
    if len(items) == 0:
        raise ValueError("load() got an empty list; give at least one trial, e.g. load([x0, x1]) with arrays (T_i, N)")
    trials = []
    for i, item in enumerate(items):
        if isinstance(item, (list, tuple, TrialSet)) or (isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim > 2):
            raise ValueError(f"trial {i} of the list is itself a collection ({type(item).__name__}); each entry must "
                             "be one series (T, N): flatten the list")
        try:
            traj = item if isinstance(item, Trajectory) else load(item, dt=dt, min_steps=min_steps)
        except ValueError as err:
            raise ValueError(f"trial {i} of the list: {err}") from None
        if isinstance(traj, TrialSet):
            raise ValueError(f"trial {i} of the list ({item!r}) holds several series; give its series one by one")
        if isinstance(item, Trajectory):
            validate(traj.x, f"trial {i} ({traj.name!r})", min_steps=min_steps)
            if dt is not None:
                traj = replace(traj, dt=dt, meta={**traj.meta, "dt_known": True})
        if isinstance(item, (np.ndarray, torch.Tensor)) or not traj.name or traj.name in ("array", "tensor"):
            traj = replace(traj, name=f"trial{i}")
        trials.append(traj)
    return _same_dt(trials, "the list")


def _same_dt(trials: list, where: str) -> TrialSet:
    dts = sorted({t.dt for t in trials})
    if len(dts) > 1:
        first = next(t for t in trials if t.dt != trials[0].dt)
        raise ValueError(f"the trials of {where} have different sampling intervals: trial {trials[0].name!r} dt = "
                         f"{trials[0].dt:g}, trial {first.name!r} dt = {first.dt:g}; resample them to one dt, or pass "
                         "dt= if the files' attributes are wrong")
    known = all(t.meta.get("dt_known", True) for t in trials)
    meta = {"source": where} if known else {"source": where, "dt_known": False}
    return TrialSet(tuple(trials), dt=dts[0], name="trials", meta=meta)


def _load_folder(folder: Path, dt, min_steps: int) -> TrialSet:
    """Every file of a supported type in ``folder`` (not its subfolders) as one trial, in natural name order."""
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise ValueError(f"folder {str(folder)!r} holds no data files ({', '.join(SUFFIXES)}); put one file per trial in it")
    trials = []
    for path in files:
        traj = load(path, dt=dt, min_steps=min_steps)
        if isinstance(traj, TrialSet):
            raise ValueError(f"{str(path)!r} in folder {str(folder)!r} holds several series; a folder of trials needs "
                             "one series per file (or load that file by itself)")
        trials.append(replace(traj, name=path.stem))
    out = _same_dt(trials, str(folder))
    return replace(out, name=folder.name)


def _finish(traj, name, standardize_: bool, min_steps: int):
    if isinstance(traj, TrialSet):
        if name is not None:
            traj = replace(traj, name=name)
        return standardize_trials(traj) if standardize_ else traj
    if traj.n_steps < min_steps:
        validate(traj.x, f"dataset {traj.name!r}", min_steps=min_steps)
    if name is not None:
        traj = replace(traj, name=name)
    return standardize(traj) if standardize_ else traj


def _santafe_path() -> Path:
    # find_spec locates the package without importing it (importing reservoirpy takes seconds)
    spec = importlib.util.find_spec("reservoirpy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "load('santafe') reads the Santa Fe laser series shipped inside the reservoirpy "
            "package, which is not installed; fix: pip install dsrecon[real]"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "santafe_laser.npy"
    if not path.is_file():
        raise FileNotFoundError(
            f"the installed reservoirpy has no {path.name} at {path}; fix: "
            "pip install --upgrade 'reservoirpy>=0.3.11'"
        )
    return path


def _load_santafe() -> Trajectory:
    path = _santafe_path()
    x = validate(np.load(path, allow_pickle=False), f"file {str(path)!r}", min_steps=2)
    meta = {
        "source": str(path),
        "description": "Santa Fe competition data set A: far-infrared NH3 laser intensity, "
        "chaotic regime, 8-bit values (Weigend & Gershenfeld 1994)",
        "licence": "distributed with reservoirpy (MIT)",
        "dt_known": False,  # one sample; the physical interval is not part of the data set
    }
    return Trajectory(x, dt=1.0, name="santafe", meta=meta)


# --------------------------------------------------------------------------- transforms
def standardize(traj) -> Trajectory:
    """Z-score each column: ``(x - mean) / std`` (population std, ``ddof=0``).

    The mean and std (in the original units) are stored in ``meta`` so that
    ``Trajectory.unstandardize`` maps model output back. Standardizing an already standardized
    trajectory composes the two maps, so ``unstandardize`` still returns the original units.
    The statistics are computed in float64 whatever the data's dtype (float16 sums overflow past
    65504); the result keeps float32 or float64, half precision comes back as float32.

    Parameters
    ----------
    traj : Trajectory or array ``(T, N)`` / ``(T,)``; a TrialSet is z-scored with its pooled
        statistics (:func:`dsrecon.trials.standardize_trials`)

    Returns
    -------
    Trajectory (TrialSet for a TrialSet)
    """
    if isinstance(traj, TrialSet):
        return standardize_trials(traj)
    if not isinstance(traj, Trajectory):
        traj = load(traj)
    mean = traj.x.mean(axis=0, dtype=np.float64)  # (N,)
    std = traj.x.std(axis=0, dtype=np.float64)  # (N,)
    if np.any(std == 0):
        raise ValueError(
            f"cannot standardize {traj.name!r}: column {int(np.flatnonzero(std == 0)[0])} is "
            "constant (std 0); drop it first"
        )
    out_dtype = np.promote_types(traj.x.dtype, np.float32)
    x = ((traj.x - mean) / std).astype(out_dtype, copy=False)
    if traj.is_standardized:  # compose: original = (x * std + mean) * std0 + mean0
        std0, mean0 = np.asarray(traj.meta["std"]), np.asarray(traj.meta["mean"])
        mean, std = mean * std0 + mean0, std * std0
    meta = {**traj.meta, "mean": mean.tolist(), "std": std.tolist(), "standardized": True}
    return replace(traj, x=x, meta=meta)


def train_test_split(traj, test_fraction: float = 0.2) -> tuple[Trajectory, Trajectory]:
    """Split chronologically: the first ``1 - test_fraction`` of the steps train, the rest test.

    No shuffling: the test part is the continuation of the training part, as DSR evaluation on
    held-out dynamics requires. ``meta["split"]`` and ``meta["start"]`` (first index in the
    original series) record where each part came from.

    A :class:`~dsrecon.trials.TrialSet` is split into held-out tails of every trial
    (:func:`dsrecon.trials.split_trials`; whole held-out trials: ``split_trials(..., test_trials=k)``).

    Returns
    -------
    (train, test) : tuple of Trajectory (of TrialSet for a TrialSet)
    """
    if isinstance(traj, TrialSet):
        return split_trials(traj, test_fraction=test_fraction)
    if not isinstance(traj, Trajectory):
        traj = load(traj)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = int(round(traj.n_steps * test_fraction))
    n_train = traj.n_steps - n_test
    if n_test < 2 or n_train < 2:
        raise ValueError(
            f"cannot split {traj.n_steps} steps with test_fraction={test_fraction}: each part needs "
            f">= 2 steps (got train {n_train}, test {n_test}); use a longer series or another fraction"
        )
    train = replace(traj, x=traj.x[:n_train], meta={**traj.meta, "split": "train", "start": 0})
    test = replace(traj, x=traj.x[n_train:], meta={**traj.meta, "split": "test", "start": n_train})
    return train, test


def sample_windows(x, batch_size: int, seq_len: int, generator: torch.Generator,
                   valid_starts: torch.Tensor | None = None) -> torch.Tensor:
    """Draw ``batch_size`` windows of ``seq_len + 1`` consecutive steps with uniform starts.

    Parameters
    ----------
    x : torch.Tensor, np.ndarray or Trajectory, shape ``(T, N)``
        The training series (tensors keep their device and dtype; arrays become float32).
    batch_size : int
        B, the number of windows.
    seq_len : int
        T_seq; each window has ``seq_len + 1`` steps (inputs and the next-step targets).
    generator : torch.Generator
        Local generator (CPU) that draws the start indices, uniform on ``0 .. T - seq_len - 1``.
    valid_starts : torch.Tensor, optional
        ``(n_valid,)`` the only starts allowed (:func:`window_table` of a TrialSet: the windows
        inside one trial of the trials laid end to end in ``x``); drawn uniformly among them.
        None: every start of one continuous series.

    Returns
    -------
    torch.Tensor, shape ``(B, seq_len + 1, N)``, on ``x``'s device.
    """
    if isinstance(x, Trajectory):
        x = x.x
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"sample_windows needs x of shape (T, N), got {tuple(x.shape)}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
    n_steps = x.shape[0]
    if n_steps < seq_len + 1:
        raise ValueError(
            f"need T >= seq_len + 1 = {seq_len + 1} steps to cut a window, got T = {n_steps}; "
            "use a shorter seq_len or a longer series"
        )
    return gather_windows(x, window_starts(n_steps, batch_size, seq_len, generator, valid_starts), seq_len)


def window_starts(n_steps: int, batch_size: int, seq_len: int, generator: torch.Generator,
                  valid_starts: torch.Tensor | None = None) -> torch.Tensor:
    """The start indices :func:`sample_windows` draws: ``(B,)`` uniform on ``0 .. n_steps - seq_len - 1``.

    With ``valid_starts`` (``(n_valid,)``, from :func:`window_table`) the draw is
    ``valid_starts[randint(0, n_valid)]``: uniform over the windows inside the trials. For one
    trial the table is ``0 .. n_steps - seq_len - 1`` and the starts are the same numbers as without it.
    """
    if valid_starts is None:
        return torch.randint(0, n_steps - seq_len, (batch_size,), generator=generator)  # (B,)
    pick = torch.randint(0, valid_starts.shape[0], (batch_size,), generator=generator)  # (B,)
    return valid_starts[pick]  # (B,)


def window_table(data, seq_len: int) -> torch.Tensor | None:
    """The window starts a training loop may draw from ``data``: for a :class:`~dsrecon.trials.TrialSet`
    the starts (in its trials laid end to end, :func:`as_series`) of the windows of ``seq_len + 1``
    steps inside one trial, ``(n_valid,)`` int64 (CPU, like the generator); None for one continuous
    series, where every start is valid and the loops draw exactly as without trials."""
    if not isinstance(data, TrialSet):
        return None
    return torch.as_tensor(data.window_starts(seq_len))  # (n_valid,)


def gather_windows(x: torch.Tensor, starts: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Windows ``x[s : s + seq_len + 1]`` for every start in ``starts`` (any shape ``S``): ``(*S, seq_len + 1, N)``.

    One indexing operation for all windows (an ensemble gathers the K models' batches at once), on
    a strided view whose row s is the window starting at s: a copy of whole windows, about 20x
    faster than indexing every time step.
    """
    x = x.contiguous()
    n_windows = x.shape[0] - seq_len
    if n_windows < 1:
        raise ValueError(f"need at least seq_len + 1 = {seq_len + 1} steps to cut a window, got {x.shape[0]}")
    windows = x.as_strided((n_windows, seq_len + 1, x.shape[1]), (x.stride(0), x.stride(0), x.stride(1)))
    flat = windows.index_select(0, starts.reshape(-1).to(x.device))  # (S, seq_len + 1, N)
    return flat.reshape(*starts.shape, seq_len + 1, x.shape[1])  # (*S, seq_len + 1, N)


__all__ = ["Trajectory", "TrialSet", "as_series", "load", "standardize", "train_test_split", "sample_windows",
           "window_table", "validate"]
