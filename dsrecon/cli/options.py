"""Argument types and checks shared by the subcommands: each rejects a bad value with a message
naming the option, what came and what is accepted (argparse then exits with status 2)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, counts, steps)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, intervals)."""
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (noise levels, durations)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1] (forcing strengths)."""
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1 (the held-out fraction)."""
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def check_output_folder(path, option: str = "--out") -> Path:
    """``path`` as a folder to write into: refuse an existing file there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is an existing file, not a folder; give a folder path "
                         "(it is created if missing)")
    return path


def check_array_output(path, force: bool, option: str = "--out") -> Path:
    """``path`` as a new ``.npy`` file to write: refuse another suffix, a folder, and an existing
    file unless ``force`` (a user's results are never overwritten by accident)."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"{option} must name a .npy file (read it with numpy.load), got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name ending in .npy")
    if path.exists() and not force:
        raise ValueError(f"{option} {path} already exists; choose another file name, or pass --force to "
                         "overwrite it")
    return path


def write_array(path: Path, array) -> Path:
    """Write ``array`` as ``.npy`` atomically (the previous file, if any, stays whole until the swap)."""
    import numpy as np

    from dsrecon.checkpoint import atomic_write

    data = np.ascontiguousarray(array)
    return atomic_write(path, lambda f: np.save(f, data))


def read_samples(source: str, dataset: str | None, option: str):
    """The samples of a file as a float64 array ``(T, N)``, for a short window of data (a forecast's
    context, a start): read as ``dsrecon.load`` reads the format, without its checks for a series to
    fit (a window may be one row, or hold a channel that happens to be flat); the caller checks
    width, length and finiteness against the model."""
    import numpy as np

    from dsrecon.loaders import read_file, split_key

    path_text, key = split_key(source)
    if dataset is not None and key is not None and dataset != key:
        raise ValueError(f"{option} {source!r}: key {key!r} in the path conflicts with --dataset {dataset!r}")
    raw = read_file(Path(path_text), dataset if dataset is not None else key)
    try:
        x = np.asarray(raw.x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{option} {source!r} holds non-numeric values; give numeric columns") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{option} {source!r} must hold samples (T, N) with time along axis 0, got shape {x.shape}")
    return x


def budget(text: str) -> float | None:
    """A training-time budget: ``none``, or a duration such as ``90s``, ``10m``, ``1.5h`` (seconds)."""
    if text.strip().lower() == "none":
        return None
    from dsrecon.budget import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def run_checkpoint(run_dir):
    """The checkpoint of a run folder from ``dsrecon fit`` (``checkpoints/last.pt``, or an older
    run's ``checkpoint.pt``), or ``run_dir`` itself when it is a checkpoint file."""
    from pathlib import Path

    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir} does not exist; give a run folder from `dsrecon fit` or a checkpoint .pt")
    for candidate in (run_dir / "checkpoints" / "last.pt", run_dir / "checkpoint.pt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no checkpoint in {run_dir}: expected checkpoints/last.pt (written by `dsrecon fit`) "
                            "or checkpoint.pt")
