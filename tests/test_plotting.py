"""Plots are written for every input shape they accept, and fail clearly where they cannot."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from dsrecon import plotting  # noqa: E402
from dsrecon.lyapunov import LyapunovResult  # noqa: E402


def _png_ok(path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


@pytest.fixture(scope="module")
def series(lorenz63_paper_test):
    return lorenz63_paper_test[:4000], lorenz63_paper_test[50_000:54_000]


@pytest.mark.parametrize("n_dims", [1, 2, 3, 5])
def test_plot_attractor_for_any_dimension(tmp_path, series, n_dims):
    xt, xg = series
    if n_dims == 5:  # N > 3: the first three coordinates are shown
        xt, xg = np.hstack([xt, xt[:, :2]]), np.hstack([xg, xg[:, :2]])
    path = plotting.plot_attractor(xt[:, :n_dims], xg[:, :n_dims], tmp_path / "a.png")
    assert _png_ok(path)


def test_plot_spectra_and_report_and_lyapunov(tmp_path, series):
    xt, xg = series
    assert _png_ok(plotting.plot_spectra(xt, xg, tmp_path / "s.png", dt=0.01))
    hist = np.array([[1.2, -0.5, -12.0], [0.95, -0.1, -14.0], [0.91, 0.0, -14.5]])
    res = LyapunovResult(exponents=hist[-1] * 0.01, per_initial=hist[-1:] * 0.01, exponents_per_time=hist[-1],
                         kaplan_yorke=2.063, history=hist * 0.01, history_steps=np.array([100, 1000, 10000]),
                         dt=0.01, n_steps=10000, transient=1000, qr_every=1)
    assert _png_ok(plotting.plot_lyapunov_convergence(res, tmp_path / "l.png"))


def test_plot_training_curves_plots_what_is_present(tmp_path):
    history = [{"epoch": e, "loss": 1 / e, "alpha": 0.5, "d_stsp": 0.3 if e % 5 == 0 else None}
               for e in range(1, 41)]
    assert _png_ok(plotting.plot_training_curves(history, tmp_path / "t.png"))
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_training_curves([], tmp_path / "t.png")
    with pytest.raises(ValueError, match="none of the keys"):
        plotting.plot_training_curves([{"epoch": 1, "foo": 2.0}], tmp_path / "t.png")


def test_plot_report_needs_the_generated_series(tmp_path, series):
    from dsrecon.evaluation import Report

    xt, xg = series
    report = Report(d_stsp=0.2, d_h=0.07, pe=0.01, pe_steps=20, lyapunov_spectrum=None, lyapunov_units="per step",
                    lambda_max_model=None, kaplan_yorke=None, lambda_max_data=None, lambda_max_generated=None,
                    n_steps=4000, obs_dim=3, dt=0.01, data_name="lorenz", data_sha256="0" * 64, model_name="m",
                    n_params=10, dsrecon_version="x", config={}, eval_time_s=1.0, generated=xg)
    assert _png_ok(plotting.plot_report(report, xt, tmp_path / "r.png"))
    report.generated = None
    with pytest.raises(ValueError, match="generated"):
        plotting.plot_report(report, xt, tmp_path / "r.png")


def test_missing_matplotlib_says_how_to_install(monkeypatch, tmp_path, series):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r"pip install dsrecon\[plot\]"):
        plotting.plot_attractor(*series, tmp_path / "a.png")
