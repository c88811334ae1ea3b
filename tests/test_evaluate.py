"""The evaluation protocol, the Report and `dsrecon evaluate`."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from dsrecon.data import Trajectory
from dsrecon.evaluation import EvalConfig, Report, evaluate
from dsrecon.rollout import generate
from reference_models import Lorenz63RK4, Scale


@pytest.fixture(scope="module")
def lorenz_data():
    """4,000 steps of the RK4 model itself from a point on the attractor, as a Trajectory."""
    model = Lorenz63RK4()
    x0 = generate(model, torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64), 1000)[-1]  # transient
    x = generate(model, x0, 4000).numpy()
    return model, Trajectory(x, dt=0.01, name="lorenz63_rk4")


FAST = EvalConfig(lyapunov_steps=1000, lyapunov_initial=4)


def test_protocol_generates_from_the_first_point_and_drops_a_quarter(lorenz_data):
    """For the true map the generated series is the data's own continuation: after dropping
    0.25 T = 1,000 steps, generated[t] = x[1000 + t] (same operations, so to rounding)."""
    model, test = lorenz_data
    report = evaluate(model, test, FAST)
    assert report.generated.shape == (4000, 3)
    np.testing.assert_allclose(report.generated[:3000], test.x[1000:], rtol=0, atol=1e-9)
    assert report.pe < 1e-20  # PE(20) of the true map on its own data
    assert report.pe_steps == 20 and report.n_steps == 4000 and report.obs_dim == 3
    assert 0 <= report.d_stsp < 1.0 and 0 <= report.d_h < 0.2
    # exponents per time unit (dt = 0.01): lambda_1 0.906 and the exact sum -13.667, loosely for 4 x 10 time units
    assert report.lyapunov_units == "per time unit"
    assert report.lambda_max_model == pytest.approx(0.906, abs=0.35)
    assert sum(report.lyapunov_spectrum) == pytest.approx(-13.667, abs=0.01)
    assert report.kaplan_yorke == pytest.approx(2.06, abs=0.05)
    assert report.data_sha256 == __import__("hashlib").sha256(test.x.tobytes()).hexdigest()
    assert "D_stsp" in str(report) and "Kaplan-Yorke" in str(report)


def test_report_json_round_trip(tmp_path, lorenz_data):
    model, test = lorenz_data
    report = evaluate(model, test, EvalConfig(lyapunov=False))
    report.d_stsp = math.nan  # NaN is written as null and read back as NaN
    path = report.save(tmp_path / "report.json")
    raw = json.loads(path.read_text())
    assert raw["d_stsp"] is None and "generated" not in raw and raw["lyapunov_spectrum"] is None
    back = Report.load(path)
    assert math.isnan(back.d_stsp)
    for key, value in report.to_dict().items():
        if key != "d_stsp":
            assert getattr(back, key) == value, key
    assert back.generated is None and back.config == report.config


def test_array_input_gives_per_step_exponents_and_rejects_wrong_dims(lorenz_data):
    model, test = lorenz_data
    report = evaluate(model, test.x, EvalConfig(lyapunov_steps=500, lyapunov_initial=2, lyapunov_transient=100))
    assert report.dt is None and report.lyapunov_units == "per step"
    assert report.lambda_max_model == pytest.approx(0.906 * 0.01, abs=0.01)
    with pytest.raises(ValueError, match=r"\(T, 3\)"):
        evaluate(model, test.x[:, :2])


def test_diverging_model_gives_nan_scores_not_an_error():
    x = np.random.default_rng(0).standard_normal((2000, 3))
    with pytest.warns(RuntimeWarning, match="not finite"):
        report = evaluate(Scale(1.5), x, EvalConfig(lyapunov_steps=200, lyapunov_transient=0))
    assert math.isnan(report.d_stsp) and math.isnan(report.d_h)
    assert report.lambda_max_model == pytest.approx(math.log(1.5))
    assert math.isfinite(report.pe)


def test_rosenstein_lambda_of_data_and_generated():
    """The true RK4 map on 20,000 raw (unstandardized) steps: Rosenstein on the observed vectors,
    line over 0.5-2.5 time units, is within 10% of lambda_1 = 0.906 (measured 0.85), for the data
    and for the generated continuation alike."""
    model = Lorenz63RK4()
    x0 = generate(model, torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64), 1000)[-1]
    test = Trajectory(generate(model, x0, 20_000).numpy(), dt=0.01, name="rk4")
    report = evaluate(model, test, EvalConfig(lyapunov=False, lambda_max_data=True))
    assert report.lambda_max_data == pytest.approx(0.906, rel=0.1)
    assert report.lambda_max_generated == pytest.approx(0.906, rel=0.1)
    assert "Rosenstein" in str(report)


def test_cli_evaluate_writes_report_and_plots(tmp_path, lorenz63_paper_test, capsys):
    checkpoint = pytest.importorskip("dsrecon.checkpoint")
    pytest.importorskip("dsrecon.models.plrnn")
    pytest.importorskip("matplotlib")
    from dsrecon.cli import main
    from dsrecon.models import make_model

    model = make_model("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=20)
    run_dir = tmp_path / "run"
    checkpoint.save_checkpoint(run_dir / "checkpoints" / "last.pt", model)
    data = tmp_path / "test.npy"
    np.save(data, lorenz63_paper_test[:3000])
    rc = main(["evaluate", str(run_dir), "--data", str(data), "--lyapunov-steps", "300"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "D_stsp" in out and "report.json" in out and str(run_dir / "eval-test") in out
    report = Report.load(run_dir / "eval-test" / "report.json")
    assert report.n_steps == 3000 and report.model_name == "shplrnn"
    for name in ("attractor.png", "spectra.png", "lyapunov.png", "report.png"):
        assert (run_dir / "eval-test" / name).stat().st_size > 10_000, name
    assert main(["evaluate", str(tmp_path / "nowhere"), "--data", str(data)]) == 1


def test_cli_evaluate_rebuilds_the_runs_test_split(tmp_path, lorenz63_paper_test, capsys):
    """Without --data the test split comes from the data spec `dsrecon fit` stored (file: a spec
    without "standardize": "train", as runs stored it before issue 16: the whole file
    standardized, last 20% as test)."""
    checkpoint = pytest.importorskip("dsrecon.checkpoint")
    pytest.importorskip("dsrecon.models.plrnn")
    from dsrecon.cli import main
    from dsrecon.models import make_model

    data = tmp_path / "series.npy"
    np.save(data, 3.0 * lorenz63_paper_test[:2500] + 1.0)
    spec = {"kind": "file", "source": str(data), "test_fraction": 0.2}
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    checkpoint.save_checkpoint(ckpt, make_model("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=10),
                               extra={"data": spec})
    assert main(["evaluate", str(tmp_path / "run"), "--no-lyapunov", "--no-plots"]) == 0
    assert "the run's own test split" in capsys.readouterr().out
    report = Report.load(tmp_path / "run" / "eval-test-split" / "report.json")
    assert report.n_steps == 500
    # --standardize self on a raw file: the series the model sees is z-scored
    out = tmp_path / "self"
    assert main(["evaluate", str(ckpt), "--data", str(data), "--standardize", "self", "--no-lyapunov",
                 "--no-plots", "--out", str(out)]) == 0
    assert Report.load(out / "report.json").n_steps == 2500



def test_report_flags_a_collapsed_orbit(lorenz_data, tmp_path):
    """z -> 0.5 z decays onto the fixed point 0: std_ratio ~0 in every dimension, collapsed, and the
    printed report says so; the true map's own orbit has std_ratio ~1 and is not flagged."""
    model, test = lorenz_data
    good = evaluate(model, test, EvalConfig(lyapunov=False))
    assert good.std_ratio == pytest.approx([1.0] * 3, abs=0.05) and not good.collapsed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # D_H of a constant series is undefined (warned elsewhere)
        bad = evaluate(Scale(0.5), test, EvalConfig(lyapunov=False))
    assert max(bad.std_ratio) < 1e-6 and bad.collapsed
    assert "collapsed onto a fixed point" in str(bad) and "collapsed" not in str(good)
    assert Report.load(bad.save(tmp_path / "r.json")).collapsed
    old = json.loads((tmp_path / "r.json").read_text())
    del old["std_ratio"]  # a report written before the field existed still loads
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert Report.load(tmp_path / "old.json").std_ratio is None


@pytest.mark.parametrize("ratios,collapsed", [
    ([0.024, 0.066, 0.03, 0.05, 0.04], True),   # issue 21: tiny ECG orbits the every-dimension rule missed
    ([0.0] * 3, True),                           # a fixed point
    ([0.05, 0.04, 0.8, 0.9, 0.03], True),        # small in most dimensions, one or two larger
    ([0.14, 0.15, 0.13, 0.13, 0.15], True),      # issue 21 again: small ECG orbits, D_stsp 7-17
    ([0.05, 0.04, 0.8, 0.9, 1.0], False),        # small in two of five: not most
    ([0.5, 0.7, 0.5, 0.5, 0.6], False),          # a smaller orbit, but of the data's order
    ([0.9, 1.1, 1.0], False),                    # the attractor's extent
    ([0.01, 0.01, float("nan")], False),         # diverged in one dimension: not a collapse
])
def test_collapsed_means_a_quarter_of_the_data_in_most_dimensions(ratios, collapsed):
    report = Report(d_stsp=1.0, d_h=0.1, pe=0.1, pe_steps=20, lyapunov_spectrum=None, lyapunov_units="per step",
                    lambda_max_model=None, kaplan_yorke=None, lambda_max_data=None, lambda_max_generated=None,
                    n_steps=100, obs_dim=len(ratios), dt=None, data_name="x", data_sha256="0" * 64,
                    model_name="m", n_params=1, dsrecon_version="0", config={}, eval_time_s=0.0, std_ratio=ratios)
    assert report.collapsed is collapsed


def _report(std_ratio, lambda_max_model=None, lambda_max_data=None):
    return Report(d_stsp=1.0, d_h=0.1, pe=0.1, pe_steps=20, lyapunov_spectrum=None, lyapunov_units="per time unit",
                  lambda_max_model=lambda_max_model, kaplan_yorke=None, lambda_max_data=lambda_max_data,
                  lambda_max_generated=None, n_steps=100, obs_dim=len(std_ratio), dt=0.01, data_name="x",
                  data_sha256="0" * 64, model_name="m", n_params=1, dsrecon_version="0", config={},
                  eval_time_s=0.0, std_ratio=std_ratio)


@pytest.mark.parametrize("kwargs,reference,expected", [
    (dict(std_ratio=[1.0, 0.9, 1.1], lambda_max_model=0.85), 0.9, set()),               # a chaotic match
    (dict(std_ratio=[1.0, 0.9, 1.1], lambda_max_model=0.01), 0.9, {"not_chaotic"}),    # issue 16: Rossler cycle
    (dict(std_ratio=[1.0, 0.9, 1.1], lambda_max_model=-0.008), 0.07, {"not_chaotic"}),
    (dict(std_ratio=[1.0, 0.9, 1.1], lambda_max_model=0.01), None, set()),             # no reference: no claim
    (dict(std_ratio=[1.0, 0.9, 1.1], lambda_max_model=-0.5), -0.2, set()),             # data not chaotic
    (dict(std_ratio=[0.0, 0.0, 0.0], lambda_max_model=-0.3), 0.9, {"collapsed", "not_chaotic"}),
    (dict(std_ratio=[0.02, 0.05, 0.03], lambda_max_model=-0.3, lambda_max_data=0.9), None,
     {"collapsed", "not_chaotic"}),                                                      # the report's own estimate
    (dict(std_ratio=[float("nan")] * 3, lambda_max_model=float("nan")), 0.9, {"diverged"}),
])
def test_flags_name_each_way_a_reconstruction_is_unlike_chaotic_data(kwargs, reference, expected):
    report = _report(**kwargs)
    flags = report.flags(lambda_max_data=reference)
    assert set(flags) == expected
    assert all(isinstance(text, str) and text for text in flags.values())
    assert report.diverged is ("diverged" in expected)


def test_printed_report_states_its_flags():
    text = str(_report([0.0, 0.0, 0.0], lambda_max_model=-0.3, lambda_max_data=0.9))
    assert "flag collapsed" in text and "flag not_chaotic" in text
    assert "flag" not in str(_report([1.0, 1.0, 1.0], lambda_max_model=0.9, lambda_max_data=0.9))
