"""Trajectory, the one data type every loader returns. (Loaders: foundation issue, in progress.)"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Trajectory:
    """One multivariate time series.

    Attributes
    ----------
    x : np.ndarray
        Observations, shape ``(T, N)``, float, finite.
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

    @property
    def n_steps(self) -> int:
        """T, the number of time steps."""
        return self.x.shape[0]

    @property
    def n_dims(self) -> int:
        """N, the observed dimension."""
        return self.x.shape[1]
