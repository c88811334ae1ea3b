"""Bad-input corpus: every malformed file, option and checkpoint gets a clear error, never garbage.

Each case builds one bad input in ``tmp_path`` and asserts that the error names what is wrong
(the file, the option or the attribute) and how to fix it. The CLI cases check that
``dsrecon`` prints ``dsrecon <command>: error: ...`` on stderr, exits non-zero and shows no
traceback.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

import dsrecon
from dsrecon.cli import main
from dsrecon.data import load, standardize


def _series(t: int = 400, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((t, n)).cumsum(axis=0)  # (T, N), non-constant


# --------------------------------------------------------------------------- data files
def _npy(arr):
    return lambda d: (np.save(d / "x.npy", arr), d / "x.npy")[1]


def _text(name: str, content: str, encoding: str = "utf-8"):
    def make(d):
        (d / name).write_text(content, encoding=encoding)
        return d / name
    return make


def _bytes(name: str, content: bytes):
    def make(d):
        (d / name).write_bytes(content)
        return d / name
    return make


def _truncated_npy(d):
    np.save(d / "t.npy", _series())
    data = (d / "t.npy").read_bytes()
    (d / "t.npy").write_bytes(data[: len(data) // 2])
    return d / "t.npy"


def _npz(**arrays):
    def make(d):
        np.savez(d / "x.npz", **arrays)
        return d / "x.npz"
    return make


def _h5(attrs: dict | None = None, path: str = "x", data=None):
    def make(d):
        with h5py.File(d / "x.h5", "w") as h5:
            ds = h5.create_dataset(path, data=_series() if data is None else data)
            for k, v in (attrs or {}).items():
                ds.attrs[k] = v
        return d / "x.h5"
    return make


def _nan_at(row, col, value=np.nan):
    x = _series()
    x[row, col] = value
    return x


def _constant_column():
    x = _series()
    x[:, 1] = 2.5
    return x


BAD_FILES = {
    # case id: (maker(tmp_path) -> source, load kwargs, pattern the message must match)
    "nan": (_npy(_nan_at(17, 1)), {}, r"x.npy'.*non-finite value nan at row 17, column 1"),
    "inf": (_npy(_nan_at(3, 2, np.inf)), {}, r"x.npy'.*non-finite value inf at row 3, column 2"),
    "rank-3": (_npy(np.zeros((2, 50, 3))), {}, r"x.npy'.*expected shape \(T, N\) or \(T,\), got \(2, 50, 3\)"),
    "empty-array": (_npy(np.zeros((0, 3))), {}, r"x.npy'.*need at least 2 time steps, got T = 0"),
    "one-row": (_npy(np.ones((1, 3))), {}, r"x.npy'.*need at least 2 time steps, got T = 1"),
    "constant-column": (_npy(_constant_column()), {}, r"x.npy'.*column 1 is constant.*drop it"),
    "complex": (_npy(_series() + 1j), {}, r"x.npy'.*complex dtype complex128.*x.real"),
    "string-array": (_npy(np.array([["a", "b"], ["c", "d"]])), {}, r"x.npy'.*expected numeric values"),
    "corrupt-npy": (_bytes("c.npy", b"\x93NUMPY garbage"), {}, r"c.npy' as a .npy file.*re-save"),
    "truncated-npy": (_truncated_npy, {}, r"t.npy' as a .npy file.*truncated"),
    "empty-file-npy": (_bytes("e.npy", b""), {}, r"e.npy' as a .npy file"),
    "npz-missing-key": (_npz(a=_series()), {"dataset": "b"}, r"x.npz' has no array 'b'; available: a"),
    "npz-two-arrays": (_npz(a=_series(), b=_series()), {}, r"x.npz' holds 2 arrays \(a, b\); name one"),
    "corrupt-npz": (_bytes("z.npz", b"PK\x03\x04garbage"), {}, r"z.npz' as a .npz archive"),
    "csv-text-value": (_text("b.csv", "1,2\n3,4\n5,x\n"), {}, r"b.csv', line 3: non-numeric value"),
    "csv-ragged": (_text("r.csv", "1,2\n3,4,5\n"), {}, r"r.csv', line 2: 3 columns"),
    "csv-empty": (_text("e.csv", ""), {}, r"e.csv' holds no data lines"),
    "csv-header-only": (_text("h.csv", "a,b,c\n"), {}, r"h.csv' has a header but no data lines"),
    "csv-binary": (_bytes("bin.csv", b"\xff\xfe\x00\x81\x82"), {}, r"bin.csv' is not a text file"),
    "h5-not-hdf5": (_text("f.h5", "hello"), {}, r"could not open .*f.h5' as HDF5"),
    "h5-bad-path": (_h5(path="group/y"), {"dataset": "/nope"}, r"x.h5' has no dataset '/nope'; available datasets: /group/y"),
    "h5-dt-text": (_h5({"dt": "fast"}), {}, r"x.h5': attribute 'dt' = 'fast' is not a positive number.*--dt"),
    "h5-dt-negative": (_h5({"dt": -0.01}), {}, r"x.h5': attribute 'dt' = -0.01 is not a positive number"),
    "h5-meta-not-json": (_h5({"meta": "{oops"}), {}, r"x.h5': attribute 'meta' is not valid JSON"),
    "h5-meta-not-object": (_h5({"meta": "[1, 2]"}), {}, r"x.h5': attribute 'meta' must be a JSON object"),
    "unsupported-suffix": (_text("a.xlsx", "x"), {}, r"unsupported file type '.xlsx'"),
    "missing-file": (lambda d: d / "absent.npy", {}, r"file not found: .*absent.npy'"),
    "unknown-name": (lambda d: "lorenz64", {}, r"unknown data source 'lorenz64'.*registered names"),
    "dt-zero": (_npy(_series()), {"dt": 0.0}, r"dt must be a positive number.*got 0.0"),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_is_rejected_with_a_message_naming_it(tmp_path, case):
    make, kwargs, pattern = BAD_FILES[case]
    source = make(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=pattern):
        load(source, **kwargs)


def test_float16_file_is_standardized_in_float64(tmp_path):
    """Float16 sums overflow past 65504: the statistics must come out as for the float64 series."""
    x = np.random.default_rng(1).standard_normal((5_000, 3)) * 3_000 + 10_000  # a float16 sum of these is inf
    np.save(tmp_path / "h.npy", x.astype(np.float16))
    traj = load(tmp_path / "h.npy", standardize=True)
    assert traj.x.dtype == np.float32
    np.testing.assert_allclose(traj.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(traj.x.std(axis=0, dtype=np.float64), 1.0, rtol=1e-5)
    np.testing.assert_allclose(traj.meta["mean"], x.astype(np.float16).astype(np.float64).mean(axis=0),
                               rtol=1e-12)


def test_float16_trajectory_is_standardized_in_float64():
    x = (np.random.default_rng(1).standard_normal((5_000, 3)) * 3_000 + 10_000).astype(np.float16)
    out = standardize(dsrecon.Trajectory(x))
    assert np.isfinite(out.x).all() and out.x.dtype == np.float32
    np.testing.assert_allclose(out.x.std(axis=0, dtype=np.float64), 1.0, rtol=1e-5)


def test_complex_trajectory_is_rejected():
    with pytest.raises(ValueError, match="must be real, got complex dtype"):
        dsrecon.Trajectory(np.ones((10, 2)) * 1j)


def test_csv_with_byte_order_mark_keeps_its_first_row(tmp_path):
    x = _series(5, 2)
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in x)
    (tmp_path / "bom.csv").write_text(text, encoding="utf-8-sig")
    traj = load(tmp_path / "bom.csv")
    assert traj.x.shape == (5, 2)
    np.testing.assert_array_equal(traj.x, x)
    (tmp_path / "bomh.csv").write_text("u,v\n" + text, encoding="utf-8-sig")
    assert load(tmp_path / "bomh.csv").meta["columns"] == ["u", "v"]


def test_h5_dt_override_wins_over_a_bad_attribute(tmp_path):
    source = _h5({"dt": "fast"})(tmp_path)
    assert load(source, dt=0.01).dt == 0.01
