"""HDF5 cache of simulated trajectories: one file per system and setting.

The file name is ``<system>-<hash>.h5``, the hash being SHA-256 of every setting (system
parameters, dt, n_steps, seed, transient, noise, standardize, solver and tolerances, chunking,
package version) as canonical JSON, so any changed setting misses. Each file stores the settings
as attributes (and the full JSON under ``settings``), the data ``x`` ``(K, T, D)`` and the raw
``mean``/``std`` ``(K, D)``. Files are written atomically; an unreadable or mismatching file is
recomputed with a warning, never a crash; a cache that cannot be written is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from dsrecon.loaders import write_h5


def cache_dir() -> Path:
    """``$DSRECON_CACHE_DIR``, else ``$XDG_CACHE_HOME/dsrecon``, else ``~/.cache/dsrecon``."""
    if os.environ.get("DSRECON_CACHE_DIR"):
        return Path(os.environ["DSRECON_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dsrecon"


def _canonical(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def cache_path(settings: dict) -> Path:
    digest = hashlib.sha256(_canonical(settings).encode()).hexdigest()[:20]
    return cache_dir() / f"{settings['system']}-{digest}.h5"


def read(settings: dict) -> dict | None:
    """The stored arrays for ``settings``, or None on a miss (or a corrupt file, with a warning)."""
    import h5py

    path = cache_path(settings)
    try:
        if not path.exists():
            return None
    except OSError as err:  # e.g. a cache folder this user may not enter: a miss
        warnings.warn(f"cannot read the simulation cache {path.parent} ({err}); simulating without it",
                      RuntimeWarning, stacklevel=3)
        return None
    try:
        with h5py.File(path, "r") as h5:
            stored = h5.attrs["settings"]
            if isinstance(stored, bytes):
                stored = stored.decode()
            if stored != _canonical(settings):
                raise ValueError("stored settings differ from the requested ones")
            out = {key: np.asarray(h5[key][()]) for key in ("x", "mean", "std")}
        expected = (settings["n_trajectories"], settings["n_steps"])
        if out["x"].shape[:2] != expected or not np.isfinite(out["x"]).all():
            raise ValueError(f"x has shape {out['x'].shape}, expected {expected} + (D,), finite")
    except Exception as err:  # any damage means: recompute
        warnings.warn(
            f"ignoring corrupt simulation cache file {path} ({type(err).__name__}: {err}); "
            "recomputing and overwriting it",
            stacklevel=3,
        )
        return None
    return out


def write(settings: dict, arrays: dict) -> Path | None:
    """Store ``arrays`` (x, mean, std) for ``settings`` atomically; returns the file's path.

    A cache that cannot be written (read-only or full disk, a file where the folder should be) costs
    only the caching: a warning says why and how to fix it, and None is returned; the simulation
    the caller holds is not lost.
    """
    attrs = {k: v for k, v in settings.items() if k != "params"}
    attrs.update({f"param_{k}": v for k, v in settings["params"].items()})
    attrs["settings"] = _canonical(settings)
    path = cache_path(settings)
    try:
        return write_h5(path, arrays, attrs)
    except OSError as err:
        warnings.warn(f"could not write the simulation cache file {path} ({type(err).__name__}: {err}); continuing "
                      "without caching. Fix: make the folder writable, or set DSRECON_CACHE_DIR to a writable "
                      "folder (`dsrecon simulate --no-cache` skips the cache)", RuntimeWarning, stacklevel=2)
        return None
