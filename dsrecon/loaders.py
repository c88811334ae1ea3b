"""File readers and the HDF5 writer behind ``dsrecon.load`` and ``Trajectory.save``.

Each reader takes a path (and, where the format holds several arrays, a key) and returns the raw
array plus what the file says about itself (column names, ``dt``, metadata). Every failure is a
``ValueError`` or ``FileNotFoundError`` whose message names the file, what was wrong and how to
fix it; validation of the values (rank, finiteness, length) is done once, in ``dsrecon.data``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# file suffix -> reader name; the order is the one shown in error messages
SUFFIXES = (".npy", ".npz", ".csv", ".txt", ".h5", ".hdf5")


@dataclass
class RawData:
    """What a reader found: the array and what the file says about it."""

    x: np.ndarray
    columns: list[str] | None = None
    dt: object = None  # as the file stores it; file_dt() checks it
    name: str | None = None
    meta: dict = field(default_factory=dict)


def split_key(source: str) -> tuple[str, str | None]:
    """Split ``"file.npz:key"`` / ``"file.h5:/group/x"`` into path and key (None if absent).

    A string that names an existing file is never split, so paths containing ``:`` still work.
    """
    if os.path.exists(source):
        return source, None
    for suffix in (".npz", ".h5", ".hdf5"):
        marker = suffix + ":"
        pos = source.lower().rfind(marker)
        if pos >= 0:
            return source[: pos + len(suffix)], source[pos + len(marker):]
    return source, None


def read_file(path: Path, key: str | None) -> RawData:
    """Read one of the supported formats (``SUFFIXES``); ``key`` picks an array in npz/HDF5."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot load {str(path)!r}: unsupported file type {suffix or '(none)'!r}; "
            f"supported: {', '.join(SUFFIXES)} (or a NumPy array / torch tensor)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {str(path)!r}; check the path")
    if key is not None and suffix not in (".npz", ".h5", ".hdf5"):
        raise ValueError(f"{str(path)!r}: a key ({key!r}) is only meaningful for .npz and .h5 files")
    if suffix == ".npy":
        return _read_npy(path)
    if suffix == ".npz":
        return _read_npz(path, key)
    if suffix in (".csv", ".txt"):
        return _read_text(path)
    return _read_h5(path, key)


ALL_SERIES = "*"  # the key that loads every series of an npz / HDF5 file as trials


def natural_key(name: str) -> list:
    """Sort key that puts ``trial2`` before ``trial10`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def read_several(path: Path, key: str | None) -> list[RawData] | None:
    """The series of a file that holds several, one ``RawData`` each (named by its key), or None
    when the file holds one series (then :func:`read_file` reads it as always).

    Several series, only where asked for: ``key = "*"`` (every array of an ``.npz`` archive, in
    archive order; every dataset of an HDF5 file) or an HDF5 ``key`` that names a group (its
    datasets); HDF5 datasets in natural name order, ``trial2`` before ``trial10``. A file with
    several arrays and no key stays an error (:func:`read_file`): its arrays may be a training and
    a test series, or a series and its time axis, not trials.
    """
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in (".npz", ".h5", ".hdf5"):
        return None
    if suffix == ".npz":
        if key != ALL_SERIES:
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                return [RawData(archive[k], name=k) for k in archive.files]
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ValueError(f"could not read {str(path)!r} as a .npz archive ({type(err).__name__}: {err}); the "
                             "file is truncated or corrupt: re-save it with numpy.savez") from err
    import h5py

    if key is None:
        return None
    try:
        h5 = h5py.File(path, "r")
    except OSError:
        return None  # read_file reports the damage
    with h5:
        if key == ALL_SERIES:
            names = _h5_datasets(h5)
        else:
            node = h5.get(key)
            if not isinstance(node, h5py.Group):
                return None
            names = [f"{node.name.rstrip('/')}/{n}" for n in node.keys() if isinstance(node[n], h5py.Dataset)]
            if not names:
                raise ValueError(f"{str(path)!r}: group {key!r} holds no datasets; name a group whose datasets are "
                                 "the trials, or one dataset")
        names = sorted(names, key=natural_key)
        out = []
        for n in names:
            node = h5[n]
            attrs = {k: _attr_value(v) for k, v in node.attrs.items()}
            attrs = {**{k: _attr_value(v) for k, v in h5.attrs.items()}, **attrs}
            out.append(RawData(np.asarray(node[()]), dt=attrs.get("dt"), name=n.lstrip("/")))
        return out


def _read_npy(path: Path) -> RawData:
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises ValueError/OSError/EOFError for bad files
        raise ValueError(
            f"could not read {str(path)!r} as a .npy file ({type(err).__name__}: {err}); the file "
            "is truncated, corrupt or not a NumPy array file: re-save it with numpy.save"
        ) from err
    return RawData(x)


def _read_npz(path: Path, key: str | None) -> RawData:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if key is None:
                if len(keys) != 1:
                    raise ValueError(
                        f"{str(path)!r} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
                        f"name one as '{path}:KEY' or with dataset='KEY', or load them all as trials: '{path}:*'"
                    )
                key = keys[0]
            if key not in keys:
                raise ValueError(
                    f"{str(path)!r} has no array {key!r}; available: {', '.join(keys) or 'none'}"
                )
            x = archive[key]
    except ValueError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(
            f"could not read {str(path)!r} as a .npz archive ({type(err).__name__}: {err}); the "
            "file is truncated or corrupt: re-save it with numpy.savez"
        ) from err
    return RawData(x, name=f"{path.stem}:{key}" if len(keys) > 1 else None)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_text(path: Path) -> RawData:
    """Numeric columns separated by commas or whitespace, with an optional header line."""
    try:  # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first value
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{str(path)!r} is not a text file ({err}); save the data as CSV text") from err
    rows = [(i, ln) for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        raise ValueError(f"{str(path)!r} holds no data lines; expected numeric columns")
    delimiter = "," if "," in rows[0][1] else None
    columns = None
    first_tokens = [t.strip() for t in rows[0][1].split(delimiter)]
    if not all(_is_number(t) for t in first_tokens):
        columns = first_tokens  # a header line
        rows = rows[1:]
    values = []
    for line_no, line in rows:
        tokens = [t.strip() for t in line.split(delimiter)]
        try:
            values.append([float(t) for t in tokens])
        except ValueError as err:
            raise ValueError(
                f"{str(path)!r}, line {line_no + 1}: non-numeric value ({err}); every line after "
                "the optional header must hold numbers separated by commas or whitespace"
            ) from None
        if len(values[-1]) != len(values[0]):
            raise ValueError(
                f"{str(path)!r}, line {line_no + 1}: {len(values[-1])} columns, but the first data "
                f"line has {len(values[0])}; every line needs the same number of columns"
            )
    if not values:
        raise ValueError(f"{str(path)!r} has a header but no data lines")
    x = np.asarray(values, dtype=np.float64)
    if columns is not None and len(columns) != x.shape[1]:
        columns = None  # header does not match the data: do not guess names
    return _split_time_column(RawData(x, columns=columns), path)


TIME_COLUMNS = ("t", "time")  # header names of a time column (case-insensitive)


def _split_time_column(raw: RawData, path: Path) -> RawData:
    """Take a column named ``t``/``time`` out of the data and read ``dt`` from it.

    Time is not a state variable, so the column never reaches the model; its spacing is the
    sampling interval. The steps must be uniform (the models step at a fixed ``dt``): within
    1e-6 of their median, relative, which tolerates the rounding of printed times.
    """
    names = [c.strip().lower() for c in raw.columns or []]
    hits = [j for j, c in enumerate(names) if c in TIME_COLUMNS]
    if not hits:
        return raw
    j = hits[0]
    t = raw.x[:, j]  # (T,)
    steps = np.diff(t)
    dt = float(np.median(steps)) if steps.size else float("nan")
    if not steps.size or not dt > 0 or np.max(np.abs(steps - dt)) > 1e-6 * dt + 1e-12 * np.max(np.abs(t)):
        raise ValueError(
            f"{str(path)!r}: column {raw.columns[j]!r} is read as time, but its steps are not uniform and "
            f"increasing (median {dt:g}, range {steps.min() if steps.size else float('nan'):g} .. "
            f"{steps.max() if steps.size else float('nan'):g}); resample the series to a fixed interval, or "
            "rename the column if it is not time")
    keep = [k for k in range(raw.x.shape[1]) if k != j]
    return RawData(raw.x[:, keep], columns=[raw.columns[k] for k in keep], dt=dt, name=raw.name,
                   meta={**raw.meta, "time_column": raw.columns[j], "t0": float(t[0])})


def _h5_datasets(h5file) -> list[str]:
    import h5py

    names = []
    h5file.visititems(lambda n, obj: names.append("/" + n) if isinstance(obj, h5py.Dataset) else None)
    return names


def _read_h5(path: Path, key: str | None) -> RawData:
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"could not open {str(path)!r} as HDF5 ({err}); the file is not HDF5 or is corrupt"
        ) from err
    with h5:
        available = _h5_datasets(h5)
        if key is None:
            if "x" in h5 and isinstance(h5["x"], h5py.Dataset):
                key = "/x"
            elif len(available) == 1:
                key = available[0]
            else:
                raise ValueError(
                    f"{str(path)!r} holds {len(available)} datasets "
                    f"({', '.join(available) or 'none'}); name one as '{path}:/path/to/x' or with "
                    f"dataset='/path/to/x', or load several as trials: '{path}:/group' (a group's datasets) or "
                    f"'{path}:*' (all)"
                )
        node = h5.get(key)
        if not isinstance(node, h5py.Dataset):
            raise ValueError(
                f"{str(path)!r} has no dataset {key!r}; available datasets: "
                f"{', '.join(available) or 'none'}"
            )
        try:
            x = node[()]
        except OSError as err:
            raise ValueError(f"could not read dataset {key!r} of {str(path)!r}: {err}") from err
        attrs = {k: _attr_value(v) for k, v in node.attrs.items()}
        attrs.update({k: _attr_value(v) for k, v in h5.attrs.items()})
    # dt stays as stored: load() checks it with file_dt() unless the caller overrides it
    return RawData(np.asarray(x), dt=attrs.get("dt"), name=_h5_name(attrs.get("name")),
                   meta=_h5_meta(path, attrs.get("meta")))


def file_dt(path: Path, value) -> float | None:
    """A file's ``dt`` attribute as a positive finite float (None when absent)."""
    if value is None:
        return None
    try:
        dt = float(value)
    except (TypeError, ValueError):
        dt = None
    if dt is None or not np.isfinite(dt) or dt <= 0:
        raise ValueError(
            f"{str(path)!r}: attribute 'dt' = {value!r} is not a positive number; fix the attribute "
            "(h5py: f['x'].attrs['dt'] = 0.01) or override it: load(..., dt=0.01), `dsrecon evaluate --dt 0.01`, or "
            "dt = 0.01 in a compare grid's dataset"
        )
    return dt


def _h5_name(value) -> str | None:
    return str(value) if value is not None and not isinstance(value, np.ndarray) and str(value) else None


def _h5_meta(path: Path, value) -> dict:
    """The ``meta`` attribute (a JSON object written by ``Trajectory.save``), or {} when absent."""
    if value is None:
        return {}
    try:
        meta = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{str(path)!r}: attribute 'meta' is not valid JSON ({err}); delete the attribute or rewrite "
            "it as a JSON object (Trajectory.save writes it)"
        ) from None
    if not isinstance(meta, dict):
        raise ValueError(
            f"{str(path)!r}: attribute 'meta' must be a JSON object (a string like '{{\"key\": 1}}'), got "
            f"{value!r}; delete the attribute or rewrite it"
        )
    return meta


def _attr_value(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def file_mode() -> int:
    """The permission bits a newly created file gets under the user's umask (``0o666 & ~umask``).

    ``tempfile.mkstemp`` creates its files with mode 0600 whatever the umask, so a file written
    atomically through it would end up readable by its owner only; atomic writers apply this mode.
    """
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def write_h5(path: str | os.PathLike, datasets: dict, attrs: dict) -> Path:
    """Write ``datasets`` (name -> array) and ``attrs`` to an HDF5 file atomically.

    The file is written to a temporary name in the same folder and moved into place with
    ``os.replace``, so a reader never sees a half-written file. Attribute values that HDF5 cannot
    store natively (dicts, ``None``) are stored as JSON strings.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())  # mkstemp's 0600 would outlive the rename
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as h5:
            for key, value in datasets.items():
                h5.create_dataset(key, data=np.asarray(value))
            for key, value in attrs.items():
                if value is None or isinstance(value, dict) or (
                    isinstance(value, (list, tuple)) and not all(isinstance(v, (int, float)) for v in value)
                ):
                    value = json.dumps(value)
                h5.attrs[key] = value
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
