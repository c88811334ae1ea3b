"""The reconstruction zoo's plumbing (benchmarks/zoo.py, benchmarks/zoo_systems.py), not its results:
every zoo system simulates finite series of the documented shape, the Benettin estimate returns a
linear system's known exponents, and the 'reconstructed' rule judges constructed cases as issue 16
defines it (lambda_max of the data's sign and within 30 %, D_H within 2x its floor).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # zoo.py imports its sibling modules by name
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def systems():
    return _load("zoo_systems")


@pytest.fixture(scope="module")
def zoo():
    return _load("zoo")


def test_every_system_simulates_finite_series_of_its_dimension(systems):
    assert len(systems.ZOO_SYSTEMS) >= 10  # issue 16: at least 10 simulated systems
    for name, system in systems.ZOO_SYSTEMS.items():
        short = replace(system, transient=2.0 if system.rhs is not None else 100.0)
        x = systems.simulate_zoo(short, 0, 60)
        assert x.shape == (60, system.dim), name
        assert np.all(np.isfinite(x)), name
        assert x.std(axis=0).min() > 0, name  # moving, not stuck at a fixed point


def test_independent_trajectories_differ_and_noise_is_the_stated_fraction(systems):
    clean = replace(systems.ZOO_SYSTEMS["lorenz63"], transient=1.0)
    a, b = systems.simulate_zoo(clean, 0, 200), systems.simulate_zoo(clean, 1, 200)
    assert not np.allclose(a, b)
    noisy = replace(clean, noise=0.1)
    residual = systems.simulate_zoo(noisy, 0, 200) - a  # same start and solver: only the added noise
    assert residual.std(axis=0) == pytest.approx(0.1 * a.std(axis=0), rel=0.25)  # 200 draws: ~5 % sampling error


def test_vector_fields_vanish_at_their_known_fixed_points(systems):
    assert np.allclose(systems.lorenz63(np.zeros(3)), 0.0)
    assert np.allclose(systems.lorenz96(np.full(20, 8.0)), 0.0)  # x_i = F
    b = 0.208186
    assert np.allclose(systems.thomas(np.zeros(3), b=b), 0.0)
    # Chua: origin; Lorenz-63 at (sqrt(b(r-1)), sqrt(b(r-1)), r-1)
    assert np.allclose(systems.chua(np.zeros(3)), 0.0)
    c = math.sqrt(8.0 / 3.0 * 27.0)
    assert np.allclose(systems.lorenz63(np.array([c, c, 27.0])), 0.0)


def test_benettin_gives_a_linear_systems_eigenvalues(systems):
    # x' = A x with A = diag(-0.1, -1, -3): the Lyapunov exponents are the eigenvalues
    rates = np.array([-0.1, -1.0, -3.0])
    exps = systems.benettin_exponents(lambda x: x * rates, np.ones(3), n_time=100.0, h=0.05, k=2, transient=0.0)
    assert exps == pytest.approx([-0.1, -1.0], abs=1e-3)


def test_mackey_glass_stays_on_its_attractor_range(systems):
    x, lam = systems.mackey_glass(500, dt=1.0, transient=300.0)
    assert x.shape == (500,) and lam is None
    assert 0.2 < x.min() and x.max() < 1.5  # tau = 17 attractor lies within about [0.4, 1.35]


@pytest.mark.parametrize("lam_model, lam_data, d_h, floor, ok", [
    (0.85, 0.9, 0.05, 0.04, True),    # within 30 % and 1.25x floor
    (0.65, 0.9, 0.05, 0.04, True),    # lambda 27.8 % low: still within 30 %
    (0.6, 0.9, 0.05, 0.04, False),    # lambda 33 % low
    (1.2, 0.9, 0.05, 0.04, False),    # lambda 33 % high
    (-0.01, 0.07, 0.02, 0.02, False),  # a periodic orbit's slightly negative exponent: wrong sign
    (0.9, 0.9, 0.09, 0.04, False),    # D_H 2.25x floor
    (0.9, 0.9, 0.08, 0.04, True),     # D_H exactly 2x floor
    (-0.5, -0.45, 0.01, 0.04, True),  # both negative (a stable system), within 30 %
    (None, 0.9, 0.01, 0.04, False),   # exponent not computed
    (0.9, None, 0.01, 0.04, False),   # data exponent not estimated
    (0.9, 0.9, float("nan"), 0.04, False),  # D_H undefined (collapsed free run)
    (0.9, 0.9, 0.01, None, False),    # no floor
])
def test_reconstructed_rule(zoo, lam_model, lam_data, d_h, floor, ok):
    got, why = zoo.reconstructed(lam_model, lam_data, d_h, floor)
    assert got is ok
    assert (why == "") is ok


def test_reconstructed_rule_names_every_failed_condition(zoo):
    ok, why = zoo.reconstructed(-0.01, 0.07, 0.2, 0.02)
    assert not ok and "wrong sign" in why and "10.0x floor" in why


def _row(name, seed, ok, d_h, floor=0.1):
    return {"name": name, "seed": seed, "reconstructed": ok, "d_h": d_h, "floor_d_h": floor}


def test_headline_counts_a_data_set_reconstructed_by_the_majority_of_its_seeds(zoo):
    rows = [_row("a", 0, True, 0.1), _row("a", 1, True, 0.3), _row("a", 2, False, 0.5),
            _row("b", 0, True, 0.1), _row("b", 1, False, float("nan")), _row("b", 2, False, float("nan")),
            _row("c", 1, False, 0.2)]
    text = zoo.headline(rows)
    # a: 2 of 3 (median ratio 3); b: 1 of 3 (median inf); c: 0 of 1 (ratio 2): median over sets 3
    assert text.startswith("reconstructed: 1 of 3 (33%) by a majority of their seeds (3 of 7 fits)")
    assert "median D_H / floor: 3.00 (over 3 data sets, 1 with D_H undefined counted as worst)" in text
    # one seed per data set reads as before, and a row without a seed is the default seed's
    single = zoo.headline([{k: v for k, v in _row("a", 0, True, 0.1).items() if k != "seed"}, _row("b", 0, False, 0.4)])
    assert single.startswith("reconstructed: 1 of 2 (50%); median D_H / floor: 2.50")
    assert zoo.seed_of({"name": "a"}) == 0
