"""Loading, validation, standardization, splitting and window sampling."""

from __future__ import annotations

import importlib.util

import h5py
import numpy as np
import pytest
import torch

import dsrecon
from dsrecon.data import Trajectory, load, sample_windows, standardize, train_test_split


@pytest.fixture
def series():
    rng = np.random.default_rng(0)
    return rng.standard_normal((50, 3)).cumsum(axis=0)  # (T, N), non-constant


# --------------------------------------------------------------------------- round trips
def test_npy_round_trip(tmp_path, series):
    np.save(tmp_path / "a.npy", series)
    traj = load(tmp_path / "a.npy")
    np.testing.assert_array_equal(traj.x, series)
    assert traj.name == "a" and traj.dt == 1.0 and traj.meta["source"].endswith("a.npy")


def test_1d_becomes_column(tmp_path, series):
    np.save(tmp_path / "a.npy", series[:, 0])
    assert load(tmp_path / "a.npy").x.shape == (50, 1)


def test_npz_round_trip_by_key_and_single(tmp_path, series):
    np.savez(tmp_path / "one.npz", data=series)
    np.testing.assert_array_equal(load(tmp_path / "one.npz").x, series)
    np.savez(tmp_path / "two.npz", a=series, b=series[:, :2] * 2)
    np.testing.assert_array_equal(load(f"{tmp_path}/two.npz:b").x, series[:, :2] * 2)
    np.testing.assert_array_equal(load(tmp_path / "two.npz", dataset="a").x, series)
    with pytest.raises(ValueError, match=r"two.npz' holds 2 arrays \(a, b\); name one"):
        load(tmp_path / "two.npz")
    with pytest.raises(ValueError, match="has no array 'c'; available: a, b"):
        load(f"{tmp_path}/two.npz:c")


@pytest.mark.parametrize("delimiter", [",", " ", "\t"])
def test_csv_and_txt_round_trip_with_header(tmp_path, series, delimiter):
    path = tmp_path / ("a.csv" if delimiter == "," else "a.txt")
    np.savetxt(path, series, delimiter=delimiter, header=delimiter.join(["u", "v", "w"]), comments="")
    traj = load(path)
    np.testing.assert_allclose(traj.x, series, rtol=1e-15)
    assert traj.meta["columns"] == ["u", "v", "w"]
    np.savetxt(path, series, delimiter=delimiter)  # no header
    np.testing.assert_allclose(load(path).x, series, rtol=1e-15)


def test_h5_round_trip_with_dataset_path(tmp_path, series):
    with h5py.File(tmp_path / "a.h5", "w") as h5:
        h5.create_dataset("group/x", data=series)
        h5.create_dataset("other", data=series[:, :1])
    np.testing.assert_array_equal(load(f"{tmp_path}/a.h5:/group/x").x, series)
    np.testing.assert_array_equal(load(tmp_path / "a.h5", dataset="other").x, series[:, :1])
    with pytest.raises(ValueError, match=r"has no dataset '/nope'; available datasets: /group/x, /other"):
        load(f"{tmp_path}/a.h5:/nope")
    with pytest.raises(ValueError, match="holds 2 datasets"):
        load(tmp_path / "a.h5")


def test_trajectory_save_load_keeps_dt_name_meta(tmp_path, series):
    traj = standardize(Trajectory(series, dt=0.25, name="walk", meta={"source": "test"}))
    traj.save(tmp_path / "t.hdf5")
    back = load(tmp_path / "t.hdf5")
    np.testing.assert_array_equal(back.x, traj.x)
    assert back.dt == 0.25 and back.name == "walk"
    np.testing.assert_allclose(back.unstandardize(), series)


def test_array_and_tensor_inputs(series):
    np.testing.assert_array_equal(load(series).x, series)
    t = load(torch.tensor(series, dtype=torch.float32), name="t", dt=0.1)
    assert t.x.dtype == np.float32 and t.name == "t" and t.dt == 0.1
    assert load(np.arange(10)).x.dtype == np.float64  # integers become float


def test_registered_names_and_unknown_name():
    names = "santafe, lorenz63, rossler, lorenz96"
    with pytest.raises(ValueError, match=f"unknown data source 'lorenz'.*registered names: {names}"):
        load("lorenz")


def test_load_benchmark_name_simulates(tmp_path, monkeypatch):
    calls = {}

    def fake_simulate(name, **kwargs):
        calls[name] = kwargs
        return Trajectory(np.arange(20.0).reshape(10, 2), dt=0.01, name=name)

    monkeypatch.setattr("dsrecon.systems.simulate", fake_simulate)
    traj = load("Lorenz63")
    assert calls == {"lorenz63": {}} and traj.name == "lorenz63"


# --------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="file not found: .*nope.npy"):
        load(tmp_path / "nope.npy")


def test_unsupported_suffix(tmp_path):
    (tmp_path / "a.xlsx").write_text("x")
    with pytest.raises(ValueError, match=r"unsupported file type '.xlsx'; supported: .npy, .npz"):
        load(tmp_path / "a.xlsx")


def test_nan_and_inf_name_the_first_bad_row(tmp_path, series):
    bad = series.copy()
    bad[17, 1], bad[30, 0] = np.nan, np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"bad.npy'.*non-finite value nan at row 17, column 1 \(2 rows"):
        load(tmp_path / "bad.npy")


def test_wrong_rank(series):
    # a 3-d array is a stack of trials (dsrecon.trials.TrialSet, tests/test_trials.py); rank 4 is no data set
    with pytest.raises(ValueError, match=r"array input: expected shape \(T, N\) or \(T,\), got \(2, 2, 50, 3\)"):
        load(np.stack([np.stack([series, series])] * 2))


def test_too_few_points(series):
    with pytest.raises(ValueError, match="need at least 100 time steps, got T = 50 \\(50 more needed\\)"):
        load(series, min_steps=100)


def test_constant_column_named(tmp_path, series):
    series[:, 2] = 4.0
    np.savetxt(tmp_path / "c.csv", series, delimiter=",", header="a,b,c", comments="")
    with pytest.raises(ValueError, match=r"c.csv'.*column 2 \('c'\) is constant"):
        load(tmp_path / "c.csv")


def test_truncated_npy(tmp_path, series):
    np.save(tmp_path / "t.npy", series)
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"could not read .*t.npy' as a .npy file.*truncated"):
        load(tmp_path / "t.npy")


def test_h5_that_is_not_hdf5(tmp_path):
    (tmp_path / "fake.h5").write_text("hello")
    with pytest.raises(ValueError, match=r"could not open .*fake.h5' as HDF5"):
        load(tmp_path / "fake.h5")


def test_corrupt_npz_and_bad_csv(tmp_path):
    (tmp_path / "z.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="could not read .*z.npz' as a .npz archive"):
        load(tmp_path / "z.npz")
    (tmp_path / "b.csv").write_text("1,2\n3,x\n")
    with pytest.raises(ValueError, match=r"b.csv', line 2: non-numeric value"):
        load(tmp_path / "b.csv")
    (tmp_path / "r.csv").write_text("1,2\n3,4,5\n")
    with pytest.raises(ValueError, match="line 2: 3 columns, but the first data line has 2"):
        load(tmp_path / "r.csv")


# --------------------------------------------------------------------------- santafe
@pytest.mark.skipif(importlib.util.find_spec("reservoirpy") is None, reason="reservoirpy not installed")
def test_santafe_loads_offline():
    traj = load("santafe")
    # Santa Fe data set A with continuation: 10,093 points, 8-bit intensities; the series begins
    # 86, 141, 95, 41, 22 (Weigend & Gershenfeld 1994, file A.dat)
    assert traj.x.shape == (10_093, 1) and traj.dt == 1.0
    assert traj.x[:5, 0].tolist() == [86, 141, 95, 41, 22]
    assert traj.x.min() >= 0 and traj.x.max() <= 255
    assert load("santafe", dt=0.5, standardize=True).dt == 0.5


def test_santafe_without_reservoirpy_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"pip install dsrecon\[real\]"):
        load("santafe")


# --------------------------------------------------------------------------- transforms
def test_standardize_and_unstandardize(series):
    traj = load(series, standardize=True)
    np.testing.assert_allclose(traj.x.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(traj.x.std(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(traj.unstandardize(), series, atol=1e-12)
    twice = standardize(Trajectory(traj.x[:25] * 3.0 + 1.0, meta={"mean": [0.0] * 3, "std": [1.0] * 3}))
    np.testing.assert_allclose(twice.unstandardize(), traj.x[:25] * 3.0 + 1.0, atol=1e-12)
    out = traj.unstandardize(torch.tensor(traj.x[:4], dtype=torch.float32))
    assert isinstance(out, torch.Tensor)
    assert torch.allclose(out, torch.tensor(series[:4], dtype=torch.float32), atol=1e-4)
    with pytest.raises(ValueError, match="has no standardization mean/std"):
        load(series).unstandardize()


def test_train_test_split_is_chronological(series):
    train, test = train_test_split(load(series), test_fraction=0.2)
    assert train.n_steps == 40 and test.n_steps == 10
    np.testing.assert_array_equal(np.concatenate([train.x, test.x]), series)
    assert test.meta["start"] == 40 and test.meta["split"] == "test"
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        train_test_split(series, test_fraction=1.0)


def test_public_names_resolve():
    assert dsrecon.load is load and dsrecon.standardize is standardize
    assert dsrecon.train_test_split is train_test_split and dsrecon.Trajectory is Trajectory


# --------------------------------------------------------------------------- windows
def test_sample_windows_shape_contiguity_and_reproducibility():
    x = torch.arange(100.0).reshape(50, 2)  # row t = (2t, 2t + 1)
    w = sample_windows(x, 8, 10, torch.Generator().manual_seed(0))
    assert w.shape == (8, 11, 2)
    assert torch.all(w[:, 1:, 0] - w[:, :-1, 0] == 2)  # consecutive steps
    w2 = sample_windows(x, 8, 10, torch.Generator().manual_seed(0))
    assert torch.equal(w, w2)


def test_sample_windows_starts_are_uniform():
    # all T - seq_len = 10 start indices occur, each with frequency 1/10 (+- 4 sigma of binomial)
    x = torch.arange(20.0)[:, None]
    starts = sample_windows(x, 20_000, 10, torch.Generator().manual_seed(1))[:, 0, 0]
    freq = torch.bincount(starts.long(), minlength=10).double() / 20_000
    assert freq.shape == (10,) and torch.all((freq - 0.1).abs() < 4 * (0.1 * 0.9 / 20_000) ** 0.5)


def test_sample_windows_too_short():
    with pytest.raises(ValueError, match=r"need T >= seq_len \+ 1 = 201 steps to cut a window, got T = 150"):
        sample_windows(torch.zeros(150, 3), 16, 200, torch.Generator())
