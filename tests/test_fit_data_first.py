"""``dsrecon fit FILE`` looks at the data first: summary, embedding, latent size, units, and
standardization with the training part's statistics only (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dsrecon
from dsrecon.cli import main
from dsrecon.preparation import choose_latent, split_standardize, to_model_coordinates

TINY = ["--epochs", "1", "--batches-per-epoch", "2", "--seq-len", "20", "--hidden-dim", "8", "--no-progress"]


@pytest.fixture(scope="module")
def lorenz():
    """Lorenz-63 at dt = 0.01, 3000 steps (RK4), z-scored, (3000, 3)."""
    return dsrecon.simulate("lorenz63", 3_000, method="rk4", cache=False, progress=False).x


def test_split_standardize_uses_training_statistics_only():
    raw = np.linspace(0.0, 10.0, 100)[:, None] + np.sin(np.arange(100))[:, None]  # a trend: parts differ
    train, test = split_standardize(dsrecon.load(raw), 0.2)
    head = raw[:80]
    np.testing.assert_allclose(train.meta["mean"], head.mean(0)) and np.testing.assert_allclose(train.meta["std"], head.std(0))
    assert test.meta["mean"] == train.meta["mean"] and test.meta["std"] == train.meta["std"]
    np.testing.assert_allclose(test.x, (raw[80:] - head.mean(0)) / head.std(0))
    assert abs(train.meta["mean"][0] - raw.mean()) > 0.5  # not the whole series' mean
    np.testing.assert_allclose(test.unstandardize(), raw[80:])


def test_fit_file_stores_training_statistics_and_summary(tmp_path, lorenz, capsys):
    """Standardize after the split: the run's mean/std are the first 80 %'s, not the file's; the
    summary is printed and saved; `evaluate --data RAW` maps the raw file with them; dt from --dt
    makes every exponent per time unit."""
    raw = lorenz * [2.0, 3.0, 1.0] + np.linspace(0, 1, len(lorenz))[:, None]  # drifting: parts differ
    data = tmp_path / "drift.npy"
    np.save(data, raw)
    run = tmp_path / "run"
    assert main(["fit", str(data), "--dt", "0.01", "--out", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "data: T = 2,400 steps, N = 3, dt = 0.01" in out and "used as observed" in out
    assert "per time unit (model)" in out
    _, state = dsrecon.load_checkpoint(run / "checkpoints" / "last.pt")
    stored = state["config"]["extra"]["data_meta"]
    np.testing.assert_allclose(stored["mean"], raw[:2400].mean(0), rtol=1e-10)
    np.testing.assert_allclose(stored["std"], raw[:2400].std(0), rtol=1e-10)
    assert not np.allclose(stored["mean"], raw.mean(0), rtol=1e-2)
    summary = json.loads((run / "data_summary.json").read_text())
    assert summary["data"]["dt_known"] and summary["data"]["lambda_max_units"] == "per time unit"
    assert summary["standardization"]["mean"] == stored["mean"] and summary["latent"]["latent_dim"] == 10
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["lyapunov_units"] == "per time unit" and metrics["dt"] == 0.01
    # the flags judge the model's exponent against the data's estimate, in the same units
    lam_data, lam_model = summary["data"]["lambda_max"], metrics["lambda_max_model"]
    chaotic_data = lam_data is not None and lam_data > 0 and lam_model is not None
    assert ("not_chaotic" in metrics["flags"]) == (chaotic_data and lam_model < 0.25 * lam_data)
    assert (run / "lyapunov.png").is_file()
    # the raw file through the run's statistics: its test part equals the run's own test split
    mapped = to_model_coordinates(dsrecon.load(data), stored)
    np.testing.assert_allclose(mapped.x[2400:], (raw[2400:] - raw[:2400].mean(0)) / raw[:2400].std(0), rtol=1e-9)


def test_fit_scalar_file_is_delay_embedded_and_in_steps(tmp_path, lorenz, capsys):
    """A scalar recording without dt: embedded by the rule (delay 17, dimension 3 for Lorenz x),
    stored with the run, exponents per step; evaluate maps the raw scalar file into the embedding."""
    data = tmp_path / "scalar.npy"
    np.save(data, 5.0 * lorenz[:, 0] + 1.0)
    run = tmp_path / "run"
    assert main(["fit", str(data), "--out", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "dt unknown" in out and "embedding: a scalar series" in out and "per step (model)" in out
    model, state = dsrecon.load_checkpoint(run / "checkpoints" / "last.pt")
    delays = state["config"]["extra"]["data"]["delays"]
    assert len(delays) == model.obs_dim and 3 <= model.obs_dim <= 4 and delays[:2] == [0, 17]
    assert state["config"]["extra"]["data_meta"]["delays"] == delays
    summary = json.loads((run / "data_summary.json").read_text())
    assert summary["embedding"]["delays"] == delays and summary["data"]["lambda_max_units"] == "per step"
    assert json.loads((run / "metrics.json").read_text())["lyapunov_units"] == "per step"
    assert main(["evaluate", str(run), "--data", str(data), "--no-lyapunov", "--no-plots", "--out",
                 str(tmp_path / "ev")]) == 0
    assert "delays" in capsys.readouterr().out
    # --embed none / D:TAU override the rule
    assert main(["fit", str(data), "--embed", "2:5", "--out", str(tmp_path / "r2"), *TINY]) == 0
    assert dsrecon.load_checkpoint(tmp_path / "r2" / "checkpoints" / "last.pt")[0].obs_dim == 2
    assert main(["fit", str(data), "--embed", "3", "--out", str(tmp_path / "r3"), *TINY]) == 1
    assert "D:TAU" in capsys.readouterr().err


def test_many_channels_get_a_latent_size_from_the_variance():
    """25 channels: 12 principal directions of variance 1 and 13 of variance 0.05 (total 12.65).
    11 components explain 87 %, 12 explain 95 %: the 90 % rule gives M = 12, with an affine
    observation, not M = N = 25."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((25, 25)))[0]  # orthonormal directions
    scales = np.r_[np.ones(12), np.full(13, np.sqrt(0.05))]
    x = (rng.standard_normal((5000, 25)) * scales) @ basis.T  # (5000, 25)
    choice = choose_latent(x)
    assert choice.latent_dim == 12 and choice.observation == "affine" and "90%" in choice.reason
    assert choose_latent(x[:, :3] @ rng.standard_normal((3, 40))).latent_dim == 10  # rank 3: clipped up to 10
    assert choose_latent(rng.standard_normal((2000, 64))).latent_dim == 32  # white: clipped down to 32
    assert choose_latent(x[:, :5]).latent_dim == 10 and choose_latent(x[:, :5]).observation == "identity"
    assert choose_latent(x, requested=8).observation == "affine"  # M < N needs the affine observation


def test_best_val_selection_validates_on_the_training_tail_only(tmp_path, lorenz, capsys):
    """``--select best_val`` chooses the kept parameters on the tail of the training part: the run's
    validation records are those of that tail (not of the test part), the kept parameters are the
    best-scoring epoch's, and the settings carry select, val_starts and noise_std."""
    run = tmp_path / "run"
    assert main(["fit", str(_save(tmp_path, lorenz)), "--dt", "0.01", "--out", str(run), "--epochs", "3",
                 "--batches-per-epoch", "2", "--seq-len", "20", "--hidden-dim", "8", "--no-progress",
                 "--val-every", "1", "--select", "best_val", "--val-starts", "2", "--noise-std", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "not measured" not in out and "kept the parameters of epoch" in out  # the budget probe ran
    rec = dsrecon.load_reconstruction(run / "reconstruction.pt")
    cfg = rec.settings["train"]
    assert (cfg["select"], cfg["val_starts"], cfg["noise_std"]) == ("best_val", 2, 0.01)
    from dsrecon.fitting import VALIDATION_FRACTION, validation_series
    from dsrecon.train_config import TrainConfig

    train_part = lorenz[:2400]
    tail = validation_series(dsrecon.load(train_part), None, TrainConfig(select="best_val"))
    np.testing.assert_array_equal(tail, train_part[-int(2400 * VALIDATION_FRACTION):])
    test_part = dsrecon.load(lorenz[2400:])
    assert validation_series(dsrecon.load(train_part), test_part, TrainConfig()) is test_part
    import math

    scored = [(r["d_stsp"], r["d_h"], r["epoch"]) for r in rec.history
              if r.get("d_stsp") is not None and math.isfinite(r["d_stsp"]) and math.isfinite(r["d_h"])]
    assert [r["epoch"] for r in rec.history if "d_stsp" in r] == [1, 2, 3]
    assert rec.settings["selection"]["epoch"] == (min(scored)[2] if scored else None)


def _save(tmp_path, x):
    path = tmp_path / "lorenz.npy"
    np.save(path, x)
    return path
