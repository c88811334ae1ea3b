"""``Trajectory``, the one data type every loader and simulator returns.

Its own module so that the simulators (:mod:`dsrecon.systems`) can build one while
:func:`dsrecon.data.load` simulates a benchmark system by name: ``data`` imports ``systems``, both
import this. Public as ``dsrecon.Trajectory`` and ``dsrecon.data.Trajectory``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsrecon.loaders import write_h5


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
        if np.iscomplexobj(x):
            raise ValueError(f"Trajectory.x must be real, got complex dtype {x.dtype}; keep the real part "
                             "(x.real), the modulus (abs(x)) or both as separate columns")
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
