"""Trajectory, the one data type every loader returns, and the data verbs around it.

``load`` reads any supported source into a validated ``Trajectory``; ``standardize`` z-scores it
(and ``Trajectory.unstandardize`` inverts that); ``train_test_split`` cuts it chronologically; and
``sample_windows`` draws the training windows of SPEC section 1 ("Training samples").
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from dsrecon.loaders import SUFFIXES, read_file, split_key, write_h5

# names `load` resolves without a file: recordings shipped by packages, and benchmark systems
RECORDINGS = ("santafe",)
BENCHMARK_SYSTEMS = ("lorenz63", "rossler", "lorenz96")
SANTAFE_LENGTH = 10_093  # Santa Fe series A with its continuation (Weigend & Gershenfeld 1994)


@dataclass(frozen=True)
class Trajectory:
    """One multivariate time series.

    Attributes
    ----------
    x : np.ndarray
        Observations, shape ``(T, N)``, float, finite. A 1-D array is stored as ``(T, 1)``.
    dt : float
        Sampling interval in the system's time unit (1.0 for recordings counted in samples).
    name : str
        Short name (system, file stem or dataset name).
    meta : dict
        Provenance: ``source``, standardization ``mean``/``std`` (lists, length N) when
        standardized, ``delays`` when delay-embedded, simulation parameters, ...
    """

    x: np.ndarray
    dt: float = 1.0
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        x = np.asarray(self.x)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise ValueError(f"Trajectory.x must have shape (T, N) or (T,), got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
        try:
            ok = np.isfinite(float(self.dt)) and float(self.dt) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"Trajectory.dt must be a positive number, got {self.dt!r}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "dt", float(self.dt))

    @property
    def n_steps(self) -> int:
        """T, the number of time steps."""
        return self.x.shape[0]

    @property
    def n_dims(self) -> int:
        """N, the observed dimension."""
        return self.x.shape[1]

    @property
    def is_standardized(self) -> bool:
        """True if ``meta`` holds the ``mean``/``std`` that ``unstandardize`` needs."""
        return "mean" in self.meta and "std" in self.meta

    def unstandardize(self, x=None):
        """Map standardized values back to the original units: ``x * std + mean``.

        Parameters
        ----------
        x : array or tensor, shape ``(..., N)``, optional
            Values in this trajectory's standardized coordinates, e.g. a model's generated
            series (default: ``self.x``).

        Returns
        -------
        np.ndarray, or torch.Tensor (same device and dtype) if ``x`` is a tensor.
        """
        if not self.is_standardized:
            raise ValueError(
                f"trajectory {self.name!r} has no standardization mean/std in meta; only "
                "trajectories from standardize(), load(..., standardize=True) or simulate() can "
                "be unstandardized"
            )
        x = self.x if x is None else x
        if isinstance(x, torch.Tensor):
            mean = torch.as_tensor(self.meta["mean"], dtype=x.dtype, device=x.device)
            std = torch.as_tensor(self.meta["std"], dtype=x.dtype, device=x.device)
            return x * std + mean
        return np.asarray(x) * np.asarray(self.meta["std"]) + np.asarray(self.meta["mean"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write to HDF5 (dataset ``x``, attributes ``dt``, ``name``, ``meta`` as JSON and each
        scalar meta entry), atomically; ``load(path)`` reads it back with its ``dt`` and meta."""
        import json

        scalar = (int, float, str, bool)
        flat = {k: v for k, v in self.meta.items() if isinstance(v, scalar)}
        for key, sub in self.meta.items():  # one level of nesting, e.g. params -> param_F
            if isinstance(sub, dict):
                flat.update({f"{key}_{k}": v for k, v in sub.items() if isinstance(v, scalar)})
        attrs = {**flat, "dt": self.dt, "name": self.name, "meta": json.dumps(self.meta)}
        return write_h5(path, {"x": self.x}, attrs)


# --------------------------------------------------------------------------- validation
def validate(x: np.ndarray, where: str, *, min_steps: int = 2, columns=None) -> np.ndarray:
    """Check an array once at the entry point and return it as ``(T, N)`` float.

    Raises ``ValueError`` naming ``where``, what was wrong and how to fix it: rank not 1 or 2,
    non-numeric values, fewer than ``min_steps`` points, NaN/inf (with the first bad row) or a
    constant column (which cannot be standardized and carries no dynamics).
    """
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{where}: expected numeric values, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(
            f"{where}: expected shape (T, N) or (T,), got {x.shape} (rank {x.ndim}); "
            "reshape it or select one series, e.g. x[0] for a batch of trajectories"
        )
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
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
def load(
    source,
    *,
    name: str | None = None,
    standardize: bool = False,
    dataset: str | None = None,
    dt: float | None = None,
    min_steps: int = 2,
) -> Trajectory:
    """Load a time series from a file, an array or a registered name into a ``Trajectory``.

    Parameters
    ----------
    source : str, path, np.ndarray or torch.Tensor
        * a file: ``.npy``; ``.npz`` (one array, or ``"file.npz:key"``); ``.csv``/``.txt``
          (numeric columns separated by commas or whitespace, optional header line, ``#``
          comments); ``.h5``/``.hdf5`` (``"file.h5:/group/x"``; without a path the dataset
          ``x`` or the only dataset is read; ``dt``/``name``/``meta`` attributes are honoured);
        * an array or tensor of shape ``(T, N)`` or ``(T,)``;
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
    Trajectory with ``x`` of shape ``(T, N)``.

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
        if path.suffix.lower() not in SUFFIXES and not path.exists():
            raise ValueError(
                f"unknown data source {text!r}: not a registered name and not a file with a "
                f"supported suffix; registered names: {', '.join(RECORDINGS + BENCHMARK_SYSTEMS)}; "
                f"file types: {', '.join(SUFFIXES)}"
            )
        if dataset is not None and file_key is not None and dataset != file_key:
            raise ValueError(f"{text!r}: key {file_key!r} in the path conflicts with dataset={dataset!r}")
        raw = read_file(path, dataset if dataset is not None else file_key)
        x, columns, where = raw.x, raw.columns, f"file {str(path)!r}"
        default_name = raw.name or path.stem
        dt = dt if dt is not None else raw.dt
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


def _finish(traj: Trajectory, name, standardize_: bool, min_steps: int) -> Trajectory:
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

    Parameters
    ----------
    traj : Trajectory or array ``(T, N)`` / ``(T,)``

    Returns
    -------
    Trajectory
    """
    if not isinstance(traj, Trajectory):
        traj = load(traj)
    mean = traj.x.mean(axis=0)  # (N,)
    std = traj.x.std(axis=0)  # (N,)
    if np.any(std == 0):
        raise ValueError(
            f"cannot standardize {traj.name!r}: column {int(np.flatnonzero(std == 0)[0])} is "
            "constant (std 0); drop it first"
        )
    x = (traj.x - mean) / std
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

    Returns
    -------
    (train, test) : tuple of Trajectory
    """
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


def sample_windows(x, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
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
    return gather_windows(x, window_starts(n_steps, batch_size, seq_len, generator), seq_len)


def window_starts(n_steps: int, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """The start indices :func:`sample_windows` draws: ``(B,)`` uniform on ``0 .. n_steps - seq_len - 1``."""
    return torch.randint(0, n_steps - seq_len, (batch_size,), generator=generator)  # (B,)


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


__all__ = ["Trajectory", "load", "standardize", "train_test_split", "sample_windows", "validate"]
