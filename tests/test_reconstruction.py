"""``dsrecon.fit`` returns a ``Reconstruction`` that generates and forecasts in the data's units, saves
and loads bit for bit, safely, with a versioned format (issue 17, item 1).

Mechanics are checked on reconstructions built by hand around models whose orbits are known in
closed form (a translation ``z -> z + c``); the pipeline on one tiny fit shared by the module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import dsrecon
from dsrecon.reconstruction import FORMAT_NAME, FORMAT_VERSION, READABLE_VERSIONS, Reconstruction

TINY = dict(epochs=1, batches_per_epoch=2, seq_len=20, hidden_dim=8, progress=False, verbose=False,
            eval_config=dsrecon.EvalConfig(lyapunov=False))
SCALE, OFFSET = np.array([2.0, 3.0, 1.0]), np.array([10.0, -5.0, 30.0])


def _translation(shift, n: int = 3) -> dsrecon.ShPLRNN:
    """A shPLRNN whose step is ``z -> z + shift`` (A = 1, W1 = 0, h1 = shift), float64, M = N."""
    m = dsrecon.ShPLRNN(n, n, 4, dtype=torch.float64)
    with torch.no_grad():
        m.A.fill_(1.0)
        m.W1.zero_()
        m.h1.copy_(torch.as_tensor(shift, dtype=torch.float64))
    return m


def _by_hand(shift=(0.0, 0.0, 0.0), delays=(0,), n: int = 3) -> Reconstruction:
    """Data units: channel i = model coordinate * std_i + mean_i (std 2, 3, 1; mean 10, -5, 30)."""
    transform = dsrecon.DataTransform(OFFSET[:n], SCALE[:n], delays, dt=0.01)
    model = _translation(np.resize(np.asarray(shift, dtype=float), n * len(delays)), n * len(delays))
    return Reconstruction(model, transform, anchors=torch.zeros(2, n * len(delays), dtype=torch.float64))


@pytest.fixture(scope="module")
def lorenz_raw():
    """Lorenz-63 (RK4, dt = 0.01, 3000 steps) in made-up units: x * (2, 3, 1) + (10, -5, 30)."""
    x = dsrecon.simulate("lorenz63", 3_000, method="rk4", cache=False, progress=False).x
    return x * SCALE + OFFSET


@pytest.fixture(scope="module")
def fitted(lorenz_raw):
    return dsrecon.fit(lorenz_raw, dt=0.01, **TINY)


# --------------------------------------------------------------------------- the fit
def test_fit_reports_the_flags_of_its_evaluation(fitted):
    """``reports["test"]["flags"]``: the ways the reconstruction is unlike the data (issue 16)."""
    from dsrecon.metrics import is_collapsed

    flags = fitted.reports["test"]["flags"]
    assert isinstance(flags, dict) and set(flags) <= {"diverged", "collapsed", "not_chaotic"}
    assert ("collapsed" in flags) == is_collapsed(fitted.reports["test"]["std_ratio"])


def test_fit_keeps_the_training_statistics_defaults_and_reports(fitted, lorenz_raw):
    t = fitted.transform
    head = lorenz_raw[:2400]  # test_fraction 0.2: the first 80 % train
    np.testing.assert_allclose(t.mean, head.mean(0), rtol=1e-12)
    np.testing.assert_allclose(t.std, head.std(0), rtol=1e-12)
    assert t.delays == (0,) and t.dt == 0.01 and t.dt_known and t.channels == ("x0", "x1", "x2")
    assert fitted.settings["forcing"] == {"name": "gtf", "alpha": 0.1}
    assert fitted.settings["train"]["lr_start"] == dsrecon.defaults.LR_START
    assert fitted.settings["model"]["config"]["latent_dim"] == 10 and len(fitted.history) == 1
    assert fitted.reports["test"]["n_steps"] == 600 and fitted.reports["data"]["dt_known"]
    assert fitted.diverged is None
    # the anchors are training observations in model coordinates
    np.testing.assert_allclose(fitted.anchors[0].double().numpy(), (lorenz_raw[0] - t.mean) / t.std, rtol=1e-5)


def test_generate_starts_at_the_first_training_observation_in_data_units(fitted, lorenz_raw):
    x = fitted.generate(50)
    assert x.shape == (50, 3) and x.dtype == torch.float64
    np.testing.assert_allclose(x[0].numpy(), lorenz_raw[0], rtol=1e-5)  # float32 model, read back in data units
    y = fitted.generate(20, x0=lorenz_raw[1000])
    np.testing.assert_allclose(y[0].numpy(), lorenz_raw[1000], rtol=1e-5)
    assert torch.equal(fitted.generate(20, x0=torch.as_tensor(lorenz_raw[1000])), y)


def test_evaluate_takes_raw_data_and_equals_evaluating_its_standardized_form(fitted, lorenz_raw):
    cfg = dsrecon.EvalConfig(lyapunov=False)
    report = fitted.evaluate(lorenz_raw[2400:], cfg)
    t = fitted.transform
    direct = dsrecon.evaluate(fitted.model, (lorenz_raw[2400:] - t.mean) / t.std, cfg)
    assert report.d_stsp == direct.d_stsp and report.pe == direct.pe and report.obs_dim == 3
    with pytest.raises(ValueError, match="fitted on 3 channel"):
        fitted.evaluate(lorenz_raw[2400:, :2], cfg)


def test_lyapunov_from_the_anchors_per_time_unit(fitted):
    result = fitted.lyapunov(200, transient=50)
    assert result.exponents.shape == (10,) and result.dt == 0.01
    np.testing.assert_allclose(result.exponents_per_time, result.exponents / 0.01)


def test_fit_with_a_separate_test_series(lorenz_raw):
    rec = dsrecon.fit(lorenz_raw[:2000], test=lorenz_raw[2000:], **TINY)
    np.testing.assert_allclose(rec.transform.mean, lorenz_raw[:2000].mean(0), rtol=1e-12)
    assert rec.reports["test"]["n_steps"] == 1000 and not rec.transform.dt_known
    assert rec.reports["test"]["lyapunov_units"] == "per step"


# --------------------------------------------------------------------------- save and load
def _same_json(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN-aware, exact floats


def test_round_trip_is_bit_for_bit(fitted, tmp_path, lorenz_raw):
    path = fitted.save(tmp_path / "rec.pt")
    back = dsrecon.load_reconstruction(path)
    for (key, a), b in zip(fitted.model.state_dict().items(), back.model.state_dict().values()):
        assert torch.equal(a, b), key
    assert torch.equal(back.anchors, fitted.anchors)
    assert back.transform.to_dict() == fitted.transform.to_dict()
    assert _same_json(back.settings, fitted.settings) and _same_json(back.history, fitted.history)
    assert _same_json(back.reports, fitted.reports)
    assert torch.equal(back.generate(2_000), fitted.generate(2_000))
    assert torch.equal(back.generate(300, x0=lorenz_raw[7]), fitted.generate(300, x0=lorenz_raw[7]))
    assert torch.equal(back.forecast(lorenz_raw[:300], 50), fitted.forecast(lorenz_raw[:300], 50))
    # a run folder holding the file loads too, and saving again gives the same contents
    (tmp_path / "run").mkdir()
    back.save(tmp_path / "run" / "reconstruction.pt")
    again = dsrecon.load_reconstruction(tmp_path / "run")
    assert torch.equal(again.generate(100), fitted.generate(100))


def test_nan_in_the_reports_survives_the_round_trip(tmp_path):
    rec = _by_hand()
    rec.reports = {"test": {"d_stsp": math.nan, "d_h": math.inf}}
    back = dsrecon.load_reconstruction(rec.save(tmp_path / "r.pt"))
    assert math.isnan(back.reports["test"]["d_stsp"]) and back.reports["test"]["d_h"] == math.inf


def _rewrite(path: Path, **changes) -> Path:
    state = torch.load(path, weights_only=True)
    state.update(changes)
    torch.save(state, path)
    return path


def test_a_newer_format_version_is_refused_naming_both_versions(tmp_path):
    path = _rewrite(_by_hand().save(tmp_path / "r.pt"), version=FORMAT_VERSION + 1, dsrecon_version="9.9")
    with pytest.raises(ValueError, match=rf"format version {FORMAT_VERSION + 1}, written by dsrecon 9.9.*reads "
                                         rf"versions {READABLE_VERSIONS[0]}.*upgrade dsrecon"):
        dsrecon.load_reconstruction(path)


@pytest.mark.parametrize("version", [0, "1", None, True])
def test_an_unknown_format_version_is_refused(tmp_path, version):
    path = _rewrite(_by_hand().save(tmp_path / "r.pt"), version=version)
    with pytest.raises(ValueError, match=rf"unknown reconstruction format version {version!r}"):
        dsrecon.load_reconstruction(path)


def test_loading_runs_no_code_from_the_file(tmp_path):
    """A pickled object whose unpickling would write a file: the safe load refuses it, nothing runs."""
    marker = tmp_path / "ran.txt"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "code from the file ran"))

    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT_NAME, "version": FORMAT_VERSION, "payload": Payload()}, path)
    with pytest.raises(ValueError, match="safe load refuses"):
        dsrecon.load_reconstruction(path)
    assert not marker.exists()


def test_files_that_are_not_reconstructions(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        dsrecon.load_reconstruction(tmp_path / "absent.pt")
    with pytest.raises(FileNotFoundError, match="no reconstruction.pt in"):
        dsrecon.load_reconstruction(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        dsrecon.load_reconstruction(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="not a torch archive"):
        dsrecon.load_reconstruction(tmp_path / "text.pt")
    ckpt = dsrecon.save_checkpoint(tmp_path / "last.pt", dsrecon.ShPLRNN(3, 3, 4))
    with pytest.raises(ValueError, match="training checkpoint.*load_checkpoint"):
        dsrecon.load_reconstruction(ckpt)
    path = _by_hand().save(tmp_path / "r.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated, damaged"):
        dsrecon.load_reconstruction(tmp_path / "cut.pt")
    damaged = _rewrite(_by_hand().save(tmp_path / "d.pt"), json="{}")
    with pytest.raises(ValueError, match="format version 1, but its contents are damaged"):
        dsrecon.load_reconstruction(damaged)


# --------------------------------------------------------------------------- forecast and generate mechanics
def test_forecast_of_a_translation_is_exact_in_data_units():
    """z -> z + c in model coordinates is x -> x + c * std in data units: the forecast j + 1 steps
    after the context's last sample x_T is x_T + (j + 1) c std, whatever came before."""
    c = np.array([0.1, -0.2, 0.05])
    rec = _by_hand(shift=c)
    context = np.random.default_rng(0).normal(size=(30, 3)) * SCALE + OFFSET
    y = rec.forecast(context, 4)
    assert y.shape == (4, 3) and y.dtype == torch.float64
    expected = context[-1] + np.arange(1, 5)[:, None] * c * SCALE
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-12)
    batch = np.stack([context, context[::-1]])  # (2, 30, 3)
    yb = rec.forecast(batch, 4)
    assert yb.shape == (2, 4, 3)
    np.testing.assert_allclose(yb[1].numpy(), context[0] + np.arange(1, 5)[:, None] * c * SCALE, atol=1e-12)
    np.testing.assert_allclose(rec.forecast(context[-1:], 2).numpy(), expected[:2], atol=1e-12)  # T = 1


def test_forecast_reads_the_newest_block_of_a_delay_embedding():
    """Delays (0, 2): a model vector holds (x[t], x[t + 2]); the prediction after the context must come
    from the x[t + 2] block, the context's last sample moved on by the translation."""
    rec = _by_hand(shift=0.5, delays=(0, 2), n=1)
    context = np.array([[1.0], [4.0], [9.0], [16.0]])
    y = rec.forecast(context, 3)
    np.testing.assert_allclose(y[:, 0].numpy(), 16.0 + 0.5 * 2.0 * np.arange(1, 4), atol=1e-12)
    # generate reads the delay-0 block: the start is x0's first sample
    g = rec.generate(3, x0=context[:3])
    np.testing.assert_allclose(g[:, 0].numpy(), 1.0 + 0.5 * 2.0 * np.arange(3), atol=1e-12)


def test_forcing_strength_while_reading_the_context():
    """With alpha = 0 the context only gives the start: a translation from its first sample."""
    c = np.array([0.1, 0.1, 0.1])
    rec = _by_hand(shift=c)
    context = np.random.default_rng(1).normal(size=(10, 3)) * SCALE + OFFSET
    free = rec.forecast(context, 1, alpha=0.0)
    np.testing.assert_allclose(free[0].numpy(), context[0] + 10 * c * SCALE, atol=1e-12)


def test_generate_x0_handling():
    rec = _by_hand(shift=(0.1, 0.0, 0.0))
    np.testing.assert_allclose(rec.generate(3)[0].numpy(), OFFSET, atol=1e-12)  # anchor 0 = model origin
    x = rec.generate(3, x0=[1.0, 2.0, 3.0])
    np.testing.assert_allclose(x.numpy(), [[1.0, 2.0, 3.0], [1.2, 2.0, 3.0], [1.4, 2.0, 3.0]], atol=1e-12)
    with pytest.raises(ValueError, match=r"x0 must have shape \(3,\)"):
        rec.generate(3, x0=[1.0, 2.0])
    embedded = _by_hand(delays=(0, 2), n=1)
    with pytest.raises(ValueError, match=r"x0 must have shape \(3, 1\) \(the 3 samples one model vector spans\)"):
        embedded.generate(3, x0=[1.0])


@pytest.mark.parametrize("call, pattern", [
    (lambda r: r.forecast(np.zeros((10, 2)), 3), r"shape \(10, 2\), but the reconstruction was fitted on 3 channel"),
    (lambda r: r.forecast(np.zeros((0, 3)), 3), r"T = 0 time steps"),
    (lambda r: r.forecast(np.full((5, 3), np.nan), 3), r"non-finite"),
    (lambda r: r.forecast(np.zeros((5, 3)), 0), r"horizon must be a positive integer"),
    (lambda r: r.forecast(np.zeros((5, 3)), 2.5), r"horizon must be a positive integer"),
    (lambda r: r.forecast(np.zeros((5, 3)), 2, alpha=1.5), r"alpha must lie in \[0, 1\]"),
    (lambda r: r.forecast(np.zeros((1, 2, 5, 3)), 2), r"\(T, N\) or \(B, T, N\)"),
    (lambda r: r.generate(0), r"n_steps must be a positive integer"),
])
def test_bad_inputs_are_refused_with_a_clear_message(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(_by_hand())


def test_an_embedded_context_must_cover_the_delays():
    with pytest.raises(ValueError, match=r"T = 2 time steps; the embedding's delays \[0, 2\] need T >= 3"):
        _by_hand(delays=(0, 2), n=1).forecast(np.ones((2, 1)), 3)


def test_cycles_gives_the_fixed_point_in_data_units():
    """z -> 0.5 z + c has the one fixed point z* = 2 c; in data units z* std + mean."""
    rec = _by_hand()
    c = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    with torch.no_grad():
        rec.model.A.fill_(0.5)
        rec.model.h1.copy_(c)
    points = rec.cycles(1, n_outer=20, n_inner=10)
    assert len(points) == 1
    np.testing.assert_allclose(points[0].latent[0], 2 * c.numpy(), atol=1e-12)
    np.testing.assert_allclose(points[0].data[0], 2 * c.numpy() * SCALE + OFFSET, atol=1e-12)
    assert points[0].stability == "stable"
