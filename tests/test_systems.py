"""Benchmark systems: equations, simulate protocol, batching, caching and reference data."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import dsrecon
from dsrecon.systems import (
    SYSTEMS, Lorenz63, Lorenz96, initial_conditions, integrate, simulate, simulate_batch,
)

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
CATALOG = json.loads((DATASETS / "catalog.json").read_text())["datasets"]


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DSRECON_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def reference_runs():
    """Each system re-simulated with its reference settings from the catalog (about 10 s)."""
    torch.set_num_threads(1)
    return {
        name: simulate(name, **CATALOG[name]["reference"]["settings"], cache=False, progress=False)
        for name in SYSTEMS
    }


# --------------------------------------------------------------------------- equations
def test_lorenz63_vanishes_at_its_fixed_points():
    s, r, b = 10.0, 28.0, 8.0 / 3.0
    c = math.sqrt(b * (r - 1))  # fixed points (+-c, +-c, r - 1) and the origin (Lorenz 1963)
    y = torch.tensor([[0.0, 0.0, 0.0], [c, c, r - 1], [-c, -c, r - 1]], dtype=torch.float64)
    assert torch.allclose(Lorenz63(s, r, b)(0.0, y), torch.zeros_like(y), atol=1e-12)
    assert Lorenz63()(0.0, torch.tensor([[1.0, 2.0, 3.0]])).abs().sum() > 0


def test_lorenz96_equilibrium_and_divergence():
    # x_i = F is an equilibrium; the divergence of the vector field is -N (SPEC section 1)
    f = Lorenz96(N=10, F=8.0)
    y = torch.full((1, 10), 8.0, dtype=torch.float64)
    assert torch.allclose(f(0.0, y), torch.zeros_like(y), atol=1e-12)
    z = torch.randn(10, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: f(0.0, v[None])[0], z)
    assert torch.trace(jac).item() == pytest.approx(-10.0, abs=1e-12)


# --------------------------------------------------------------------------- simulate
def test_simulate_returns_standardized_trajectory_with_meta():
    traj = simulate("lorenz63", 500, transient=5.0, progress=False)
    assert isinstance(traj, dsrecon.Trajectory)
    assert traj.x.shape == (500, 3) and traj.dt == 0.01 and traj.name == "lorenz63"
    np.testing.assert_allclose(traj.x.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(traj.x.std(axis=0), 1.0, atol=1e-10)
    raw = simulate("lorenz63", 500, transient=5.0, standardize=False, progress=False)
    np.testing.assert_allclose(traj.unstandardize(), raw.x, atol=1e-9)
    assert traj.meta["seed"] == 0 and traj.meta["params"]["r"] == 28.0


def test_simulate_noise_is_a_fraction_of_the_std():
    clean = simulate("lorenz63", 2000, transient=1.0, progress=False)
    noisy = simulate("lorenz63", 2000, transient=1.0, noise=0.05, progress=False)
    # z-scored data: the added noise has std 0.05 in every dimension; the sample std of 2000
    # draws scatters by 1/sqrt(2 * 2000) = 1.6%, so rtol 0.08 is 5 sigma
    np.testing.assert_allclose((noisy.x - clean.x).std(axis=0), 0.05, rtol=0.08)


def test_param_overrides_and_dimension():
    traj = simulate("lorenz96", 50, transient=1.0, params={"N": 10}, progress=False)
    assert traj.x.shape == (50, 10) and traj.meta["params"] == {"N": 10, "F": 8.0}
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) G for lorenz96; valid: N"):
        simulate("lorenz96", 10, params={"G": 1.0})
    with pytest.raises(ValueError, match="unknown system 'lorenz'; valid names: lorenz63, rossler, lorenz96"):
        simulate("lorenz", 10)
    with pytest.raises(ValueError, match="transient must be >= 0"):
        simulate("lorenz63", 10, transient=-1.0)
    with pytest.raises(ValueError, match="unknown method 'rk45'"):
        simulate("lorenz63", 10, method="rk45")


def test_initial_conditions_do_not_depend_on_batch_size():
    one = initial_conditions("lorenz63", 1, seed=3)
    four = initial_conditions("lorenz63", 4, seed=3)
    np.testing.assert_array_equal(one[0], four[0])
    assert not np.allclose(four[0], four[1])


def test_batched_integration_equals_one_by_one():
    """One batched solver call equals separate calls up to solver tolerance.

    Over 2 time units (about 2 Lyapunov times of Lorenz-63) the rtol = atol = 1e-9 error can grow
    to about 1e-8; 1e-6 leaves room while catching any mix-up between batch members.
    """
    y0 = initial_conditions("lorenz63", 3, seed=1)  # (3, 3)
    batched = integrate("lorenz63", y0, 200)  # (3, 200, 3)
    for k in range(3):
        alone = integrate("lorenz63", y0[k:k + 1], 200)[0]
        np.testing.assert_allclose(batched[k], alone, atol=1e-6)
    trajs = simulate_batch("lorenz63", 3, 200, seed=1, transient=0.0, standardize=False, progress=False)
    np.testing.assert_allclose(np.stack([t.x for t in trajs]), batched, atol=1e-12)


def test_integration_matches_fixed_grid_rk4_on_short_run():
    # an independent solver at a fine step agrees with dopri5 before chaos amplifies the error
    y0 = initial_conditions("rossler", 1, seed=0)
    adaptive = integrate("rossler", y0, 41)[0]  # 2 time units
    fine = integrate("rossler", y0, 401, dt=0.005, method="rk4")[0, ::10]
    np.testing.assert_allclose(adaptive, fine, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_simulate_on_cuda_matches_cpu():
    cpu = integrate("lorenz63", initial_conditions("lorenz63", 2), 100)
    gpu = integrate("lorenz63", initial_conditions("lorenz63", 2), 100, device="cuda")
    np.testing.assert_allclose(cpu, gpu, atol=1e-8)


# --------------------------------------------------------------------------- cache
def test_cache_hits_when_nothing_changes_and_misses_on_any_change(tmp_path):
    base = dict(n_steps=30, seed=0, transient=1.0, progress=False)
    simulate("lorenz63", **base)
    files = sorted((tmp_path / "cache").glob("lorenz63-*.h5"))
    assert len(files) == 1
    with h5py.File(files[0]) as h5:
        assert h5.attrs["seed"] == 0 and h5.attrs["param_r"] == 28.0 and h5.attrs["method"] == "dopri5"
    again = simulate("lorenz63", **base)
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 1
    np.testing.assert_array_equal(again.x, simulate("lorenz63", **base, cache=False).x)
    changes = [
        {"n_steps": 31}, {"seed": 1}, {"transient": 2.0}, {"dt": 0.02}, {"noise": 0.1},
        {"standardize": False}, {"params": {"r": 29.0}}, {"method": "dopri8"}, {"rtol": 1e-8},
        {"atol": 1e-8},
    ]
    for i, change in enumerate(changes, start=2):
        simulate("lorenz63", **{**base, **change})
        assert len(list((tmp_path / "cache").glob("*.h5"))) == i, f"cache hit despite {change}"


def test_corrupt_cache_file_is_recomputed_with_warning(tmp_path):
    base = dict(n_steps=30, transient=1.0, progress=False)
    good = simulate("rossler", **base)
    (path,) = (tmp_path / "cache").glob("rossler-*.h5")
    path.write_bytes(b"not an hdf5 file")
    with pytest.warns(UserWarning, match="corrupt simulation cache file"):
        again = simulate("rossler", **base)
    np.testing.assert_array_equal(again.x, good.x)
    with h5py.File(path) as h5:  # rewritten
        assert h5["x"].shape == (1, 30, 3)


def test_cache_dir_defaults(monkeypatch, tmp_path):
    from dsrecon._cache import cache_dir

    monkeypatch.delenv("DSRECON_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "dsrecon"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "dsrecon"


# --------------------------------------------------------------------------- reference data
# Fingerprints of the seeded reference runs (seed 0, 50-unit transient, 2000 steps, raw
# coordinates, dopri5 at 1e-9): mean and std of the first three coordinates, printed once with
# np.round(x.mean(0)[:3], 4) / np.round(x.std(0)[:3], 4) when the references were generated
# (torch 2.13 CPU). A change means the equations, initial conditions or solver changed.
FINGERPRINTS = {
    "lorenz63": ([2.0408, 2.0108, 23.3436], [7.5812, 8.7671, 8.7290]),
    "rossler": ([0.2252, -0.8279, 0.8255], [5.1277, 4.8149, 2.4912]),
    "lorenz96": ([2.2964, 1.7552, 2.2494], [3.8508, 3.5340, 3.3355]),
}


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_fingerprint_of_seeded_trajectory(name, reference_runs):
    x = reference_runs[name].x
    mean, std = FINGERPRINTS[name]
    np.testing.assert_allclose(x.mean(axis=0)[:3], mean, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=0)[:3], std, atol=1e-4)


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_reference_file_matches_catalog_and_current_simulate(name, reference_runs):
    """Benchmark data cannot drift silently: rerun datasets/make_reference.py if a change is meant.

    On another CPU or torch build the last bits of the solver can differ and chaos amplifies them
    over the 50-unit transient; a failure there (with matching checksums) means regenerate, not a
    bug.
    """
    entry = CATALOG[name]["reference"]
    path = DATASETS / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    stored = np.load(path)
    assert list(stored.shape) == entry["shape"]
    np.testing.assert_allclose(reference_runs[name].x, stored, rtol=1e-7, atol=1e-7)


def test_catalog_lists_every_dataset_with_provenance(gtf_data_dir):
    required = {"description", "source", "licence", "sampling_interval", "how_to_obtain"}
    for key in [*SYSTEMS, "santafe", "gtf_lorenz63_train", "gtf_lorenz63_test", "gtf_ecg_train", "gtf_ecg_test"]:
        assert required <= set(CATALOG[key]), key
    for key, entry in CATALOG.items():
        if key.startswith("gtf_"):
            digest = hashlib.sha256((gtf_data_dir / entry["file"]).read_bytes()).hexdigest()
            assert digest == entry["sha256"], entry["file"]


# --------------------------------------------------------------------------- CLI
def test_cli_simulate_writes_loadable_h5(tmp_path, capsys):
    from dsrecon.cli import main

    out = tmp_path / "l96.h5"
    argv = ["simulate", "lorenz96", "--steps", "40", "--transient", "1", "--param", "N=6",
            "--seed", "2", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "T=40 x N=6" in printed
    traj = dsrecon.load(out)
    assert traj.x.shape == (40, 6) and traj.dt == 0.01 and traj.name == "lorenz96"
    with h5py.File(out) as h5:
        assert h5.attrs["seed"] == 2 and h5.attrs["params_N"] == 6 and h5.attrs["params_F"] == 8.0
    expected = simulate("lorenz96", 40, transient=1.0, params={"N": 6}, seed=2, progress=False)
    np.testing.assert_array_equal(traj.x, expected.x)
    assert main(["simulate", "nope", "--out", str(out)]) == 1
    assert "unknown system 'nope'; valid names" in capsys.readouterr().err
