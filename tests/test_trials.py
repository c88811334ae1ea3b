"""Data in trials (``dsrecon.trials.TrialSet``): loading, windows inside trials, pooled standardization,
held-out trials or tails, per-trial and pooled evaluation, ``train`` and ``fit`` on trials."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import dsrecon
from dsrecon.data import load, sample_windows, window_starts, window_table
from dsrecon.evaluation import EvalConfig
from dsrecon.preparation import split_standardize
from dsrecon.trials import TrialSet, split_trials, standardize_trials


def _offset_trials(lengths, n=2):
    """Trial i: values 1000 i + (0 .. T_i - 1) in every column (plus a column offset), so each value
    names its trial (value // 1000) and its step (value % 1000)."""
    return [1000.0 * i + np.arange(t, dtype=np.float64)[:, None] + np.arange(n) * 0.1 for i, t in enumerate(lengths)]


def _lorenz_trials(k=3, t=400, seed=3):
    return [tr.x for tr in dsrecon.simulate_batch("lorenz63", k, t, seed=seed, standardize=False, transient=5.0,
                                                  progress=False, cache=False, method="rk4")]


# --------------------------------------------------------------------------- windows
def test_windows_never_cross_a_trial_boundary():
    lengths, seq_len = [60, 31, 95, 40], 30
    ts = load(_offset_trials(lengths))
    x = torch.as_tensor(ts.x, dtype=torch.float32)  # (T_total, N)
    table = window_table(ts, seq_len)
    g = torch.Generator().manual_seed(0)
    windows = torch.cat([sample_windows(x, 64, seq_len, g, table) for _ in range(40)])  # (2560, 31, 2)
    trial = torch.div(windows[..., 0], 1000, rounding_mode="floor")  # (B, 31)
    assert torch.all(trial == trial[:, :1]), "a window holds steps of two trials"
    steps = windows[..., 0] - 1000 * trial
    assert torch.all(steps[:, 1:] - steps[:, :-1] == 1), "a window skips steps"
    # every in-trial start is reachable and no other: trial i gives T_i - seq_len starts
    assert len(table) == sum(t - seq_len for t in lengths)
    starts = set(window_starts(x.shape[0], 20_000, seq_len, g, table).tolist())
    assert starts == set(table.tolist())
    per_trial = {int(trial[i, 0]) for i in range(len(trial))}
    assert per_trial == {0, 1, 2, 3}


def test_one_trial_draws_the_windows_of_the_plain_series():
    x = torch.as_tensor(_lorenz_trials(1, 300)[0], dtype=torch.float32)
    ts = load([x.numpy()])
    assert window_table(x, 50) is None  # a plain series keeps today's draw
    plain = sample_windows(x, 16, 50, torch.Generator().manual_seed(7))
    trial = sample_windows(torch.as_tensor(ts.x, dtype=torch.float32), 16, 50, torch.Generator().manual_seed(7),
                           window_table(ts, 50))
    assert torch.equal(plain, trial)


def test_train_on_one_trial_equals_train_on_the_series():
    x = _lorenz_trials(1, 300)[0]
    x = (x - x.mean(0)) / x.std(0)
    # the plain backend: the same window draw as the compiled paths, without their one-off build
    cfg = dsrecon.TrainConfig(epochs=2, batches_per_epoch=3, seq_len=40, batch_size=4, seed=1, backend="plain")
    a = dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=5, hidden_dim=8, seed=2)
    b = dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=5, hidden_dim=8, seed=2)
    dsrecon.train(a, x, cfg, progress=False)
    dsrecon.train(b, load([x]), cfg, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_train_single_model_and_ensemble_on_trials():
    raw = _lorenz_trials(3, 200)
    ts = standardize_trials(load(raw))
    cfg = dsrecon.TrainConfig(epochs=2, batches_per_epoch=3, seq_len=50, batch_size=4)
    model = dsrecon.make_model("lstm", obs_dim=3, hidden_dim=8)
    res = dsrecon.train(model, ts, cfg, progress=False)
    assert res.n_updates == 6 and np.isfinite(res.final_loss)
    ens = dsrecon.Ensemble([dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=5, hidden_dim=8, seed=s) for s in (0, 1)])
    res = dsrecon.train(ens, ts, cfg, progress=False)
    assert len(res.members) == 2 and all(np.isfinite(m.final_loss) for m in res.members)


def test_too_short_trial_is_named():
    ts = load(_offset_trials([300, 120, 300]))
    model = dsrecon.make_model("shplrnn", obs_dim=2, latent_dim=4, hidden_dim=8)
    with pytest.raises(ValueError, match=r"trial 1 \('trial1'\).*too short.*T >= 201, got T = 120"):
        dsrecon.train(model, ts, dsrecon.TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"trial 1 \('trial1', T = 120\).*seq_len"):
        ts.window_starts(200)


# --------------------------------------------------------------------------- loading
def test_load_list_and_3d_array():
    arrays = _offset_trials([50, 70])
    ts = load(arrays, dt=0.5)
    assert isinstance(ts, TrialSet) and ts.lengths == [50, 70] and ts.dt == 0.5 and ts.n_dims == 2
    assert [t.name for t in ts.trials] == ["trial0", "trial1"]
    np.testing.assert_array_equal(ts.x, np.concatenate(arrays))
    cube = np.stack([a[:50] for a in arrays])  # (2, 50, 2)
    ts3 = load(cube)
    assert isinstance(ts3, TrialSet) and ts3.lengths == [50, 50] and ts3.meta.get("dt_known") is False
    np.testing.assert_array_equal(ts3.trials[1].x, cube[1])
    assert isinstance(load(torch.as_tensor(cube)), TrialSet)
    assert isinstance(load(arrays[0]), dsrecon.Trajectory)  # one array stays one series
    rows = load(arrays[0].tolist())  # a list of rows (or of numbers) is one series, as before
    assert isinstance(rows, dsrecon.Trajectory) and rows.x.shape == (50, 2)
    assert isinstance(load(list(arrays[0][:, 0])), dsrecon.Trajectory)


def test_load_npz_h5_and_folder(tmp_path):
    arrays = _offset_trials([50, 70, 40])
    np.savez(tmp_path / "many.npz", a=arrays[0], b=arrays[1], c=arrays[2])
    with pytest.raises(ValueError, match=r"holds 3 arrays \(a, b, c\); name one.*as trials: '.*many.npz:\*'"):
        load(tmp_path / "many.npz")  # several arrays need not be trials: asked for with the key *
    ts = load(f"{tmp_path / 'many.npz'}:*")
    assert isinstance(ts, TrialSet) and [t.name for t in ts.trials] == ["a", "b", "c"] and ts.lengths == [50, 70, 40]
    assert isinstance(load(f"{tmp_path / 'many.npz'}:b"), dsrecon.Trajectory)  # a key picks one series
    np.savez(tmp_path / "one.npz", x=arrays[0])
    assert isinstance(load(tmp_path / "one.npz"), dsrecon.Trajectory)  # a one-series file: as before

    import h5py

    with h5py.File(tmp_path / "g.h5", "w") as h5:
        for i, a in enumerate(arrays):
            h5.create_dataset(f"trials/trial{i * 5}", data=a)  # trial0, trial5, trial10: natural order
        h5["trials"].attrs["dt"] = 0.25
        h5.create_dataset("x", data=arrays[0])
    assert isinstance(load(tmp_path / "g.h5"), dsrecon.Trajectory)  # dataset x: one series, as before
    ts = load(f"{tmp_path / 'g.h5'}:/trials", dt=0.25)
    assert [t.name for t in ts.trials] == ["trials/trial0", "trials/trial5", "trials/trial10"]
    np.testing.assert_array_equal(ts.trials[2].x, arrays[2])
    assert load(tmp_path / "g.h5", dataset="*").lengths == [50, 70, 40, 50]  # /trials/... then /x
    np.save(tmp_path / "cube.npy", np.stack([a[:40] for a in arrays]))
    assert load(tmp_path / "cube.npy").lengths == [40, 40, 40]

    folder = tmp_path / "run"
    folder.mkdir()
    for i, a in enumerate(arrays):
        np.save(folder / f"s{i * 5}.npy", a)
    (folder / "notes.md").write_text("not data")
    ts = load(folder, dt=0.1)
    assert [t.name for t in ts.trials] == ["s0", "s5", "s10"] and ts.name == "run" and ts.dt == 0.1


def test_bad_trials_get_clear_errors(tmp_path):
    a = _offset_trials([50, 60])
    with pytest.raises(ValueError, match="empty list"):
        load([])
    with pytest.raises(ValueError, match=r"trial 1 \('trial1'\) has N = 3 channels but trial 0"):
        load([a[0], np.random.default_rng(0).normal(size=(40, 3))])
    with pytest.raises(ValueError, match="trial 1 of the list.*non-finite"):
        load([a[0], np.full((40, 2), np.nan)])
    with pytest.raises(ValueError, match="different sampling intervals"):
        load([dsrecon.Trajectory(a[0], dt=0.1), dsrecon.Trajectory(a[1], dt=0.2)])
    with pytest.raises(ValueError, match="trial 1 of the list is itself a collection"):
        load([a[0], a])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no data files"):
        load(tmp_path / "empty")


# --------------------------------------------------------------------------- standardization and split
def test_pooled_standardization_uses_training_trials_only():
    raw = load([a * (i + 1) for i, a in enumerate(_offset_trials([50, 70, 40]))])
    train, test = split_standardize(raw, 0.2, test_trials=1)
    pooled = np.concatenate([t.x for t in raw.trials[:2]])
    np.testing.assert_allclose(train.meta["mean"], pooled.mean(0))
    np.testing.assert_allclose(train.meta["std"], pooled.std(0))
    np.testing.assert_allclose(train.x.mean(0), 0, atol=1e-12)  # pooled over the training trials
    np.testing.assert_allclose(test.trials[0].x, (raw.trials[2].x - pooled.mean(0)) / pooled.std(0))
    assert test.meta["mean"] == train.meta["mean"]
    np.testing.assert_allclose(test.unstandardize(), raw.trials[2].x)

    train, test = split_standardize(raw, 0.2)  # held-out tails
    assert train.lengths == [40, 56, 32] and test.lengths == [10, 14, 8]
    heads = np.concatenate([t.x[: n] for t, n in zip(raw.trials, train.lengths)])
    np.testing.assert_allclose(train.meta["mean"], heads.mean(0))
    assert [t.meta["start"] for t in test.trials] == [40, 56, 32]
    with pytest.raises(ValueError, match="exactly one"):
        split_trials(raw)
    with pytest.raises(ValueError, match="between 1 and 2"):
        split_trials(raw, test_trials=3)


# --------------------------------------------------------------------------- evaluation and fit
def test_evaluate_per_trial_and_pooled():
    raw = _lorenz_trials(3, 300)
    lengths = [300, 250, 200]
    ts = standardize_trials(load([r[:n] for r, n in zip(raw, lengths)]))
    model = dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=5, hidden_dim=8)
    dsrecon.train(model, ts, dsrecon.TrainConfig(epochs=3, batches_per_epoch=5, seq_len=50, backend="plain"),
                  progress=False)
    cfg = EvalConfig(lyapunov=False)
    report = dsrecon.evaluate(model, ts, cfg)
    singles = [dsrecon.evaluate(model, t, cfg) for t in ts.trials]
    assert [t["name"] for t in report.trials] == ["trial0", "trial1", "trial2"] and report.n_steps == 750
    np.testing.assert_array_equal([t["d_h"] for t in report.trials], [r.d_h for r in singles])
    np.testing.assert_allclose(report.d_h, np.average([r.d_h for r in singles], weights=lengths))
    np.testing.assert_allclose(report.pe, np.average([r.pe for r in singles], weights=np.array(lengths) - 20))
    gen = np.concatenate([r.generated for r in singles])
    expected = dsrecon.metrics.state_space_divergence(ts.x, gen)
    np.testing.assert_allclose(report.d_stsp, expected)
    assert "per trial" in str(report)


def test_fit_on_trials_end_to_end(tmp_path):
    raw = [r * 3.0 + 10.0 for r in _lorenz_trials(3, 400)]
    rec = dsrecon.fit(raw, test_trials=1, dt=0.01, epochs=1, batches_per_epoch=2, seq_len=50, budget=None,
                      eval_config=EvalConfig(lyapunov=False), progress=False, verbose=False)
    pooled = np.concatenate(raw[:2])
    np.testing.assert_allclose(rec.transform.mean, pooled.mean(0))
    np.testing.assert_allclose(rec.transform.std, pooled.std(0))
    assert len(rec.reports["test"]["trials"]) == 1 and rec.settings["data"]["test_trials"] == 1
    rec.save(tmp_path / "rec.pt")
    back = dsrecon.load_reconstruction(tmp_path / "rec.pt")
    np.testing.assert_array_equal(back.transform.mean, rec.transform.mean)
    assert np.array_equal(back.generate(50), rec.generate(50))


def test_cli_fit_on_a_folder(tmp_path):
    from dsrecon.cli import main

    folder = tmp_path / "trials"
    folder.mkdir()
    for i, r in enumerate(_lorenz_trials(3, 400)):
        np.save(folder / f"trial{i}.npy", r)
    out = tmp_path / "run"
    code = main(["fit", str(folder), "--dt", "0.01", "--epochs", "1", "--batches-per-epoch", "2", "--seq-len", "50",
                 "--budget", "none", "--test-trials", "1", "--hidden-dim", "8", "--out", str(out), "--no-progress"])
    assert code == 0
    rec = dsrecon.load_reconstruction(out / "reconstruction.pt")
    assert rec.settings["data"]["source"] == str(folder) and rec.settings["data"]["test_trials"] == 1
    # dsrecon evaluate rebuilds the run's held-out trial from its data spec
    assert main(["evaluate", str(out), "--no-lyapunov", "--no-plots", "--out", str(tmp_path / "ev")]) == 0
    report = dsrecon.Report.load(tmp_path / "ev" / "report.json")
    assert [t["name"] for t in report.trials] == ["trial2"]
    assert report.d_stsp == pytest.approx(rec.reports["test"]["d_stsp"])


def test_compare_prepares_trials_and_gives_them_back(tmp_path):
    from dsrecon.comparison.runner import load_part, prepare_dataset
    from dsrecon.trials import TrialSet

    folder = tmp_path / "trials"
    folder.mkdir()
    for i, a in enumerate(_offset_trials([50, 60, 70])):
        np.save(folder / f"t{i}.npy", a)
    # held-out tails of every trial, pooled standardization
    data_dir = prepare_dataset({"label": "tails", "train": str(folder), "test_fraction": 0.2, "standardize": True},
                               tmp_path / "data")
    train, test = load_part(data_dir, "train"), load_part(data_dir, "test")
    assert isinstance(train, TrialSet) and train.lengths == [40, 48, 56] and test.lengths == [10, 12, 14]
    raw = np.concatenate([a[: len(a) - n] for a, n in zip(_offset_trials([50, 60, 70]), (10, 12, 14))])
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    np.testing.assert_allclose(train.trials[1].x, (_offset_trials([50, 60, 70])[1][:48] - mean) / std)
    np.testing.assert_allclose(test.trials[2].x, (_offset_trials([50, 60, 70])[2][56:] - mean) / std)
    # whole held-out trials
    data_dir = prepare_dataset({"label": "held", "train": str(folder), "test_trials": 1}, tmp_path / "data")
    train, test = load_part(data_dir, "train"), load_part(data_dir, "test")
    assert train.lengths == [50, 60] and test.lengths == [70] and test.trials[0].x[0, 0] == 2000.0
    with pytest.raises(ValueError, match="choose the trials instead"):
        prepare_dataset({"label": "cut", "train": str(folder), "test_fraction": 0.2, "max_train_steps": 100},
                        tmp_path / "data")
    np.save(tmp_path / "one.npy", _offset_trials([80])[0])
    with pytest.raises(ValueError, match="is one series"):
        prepare_dataset({"label": "one", "train": str(tmp_path / "one.npy"), "test_trials": 1}, tmp_path / "data")


@pytest.mark.parametrize("model", [{"name": "shplrnn", "latent_dim": 4, "hidden_dim": 8}, {"name": "lstm", "hidden_dim": 6}])
def test_compare_trains_and_scores_trials(tmp_path, model):
    """A grid over trials: windows inside trials (an ensemble of seeds for the shPLRNN, one run for
    the LSTM), each held-out trial scored and the pool in the run's report."""
    folder = tmp_path / "trials"
    folder.mkdir()
    for i, a in enumerate(_lorenz_trials(4, 300)):
        np.save(folder / f"trial{i}.npy", a)
    grid = {"seeds": [0, 1], "budget": {"epochs": 1, "batches_per_epoch": 2, "batch_size": 4, "seq_len": 40},
            "eval": {"lyapunov": False}, "models": [model], "forcings": [{"name": "gtf", "alpha": 0.2}],
            "datasets": [{"label": "lorenz trials", "train": str(folder), "test_trials": [1, 3], "standardize": True,
                          "dt": 0.01}]}
    result = dsrecon.compare(grid, out_dir=tmp_path / "out", executor="serial", progress=False)
    assert (result.n_executed, result.n_failed) == (2, 0)
    for run in result.runs:
        report = dsrecon.Report.load(Path(run["run_dir"]) / "report.json")
        assert [t["name"] for t in report.trials] == ["trial1", "trial3"]
        assert all(np.isfinite(t["d_stsp"]) for t in report.trials) and np.isfinite(report.d_stsp)


def test_compare_refuses_trials_shorter_than_a_window(tmp_path):
    folder = tmp_path / "trials"
    folder.mkdir()
    for i, a in enumerate(_offset_trials([30, 35, 40])):
        np.save(folder / f"t{i}.npy", a)
    grid = {"seeds": [0], "budget": {"epochs": 1, "batches_per_epoch": 1, "seq_len": 50}, "eval": {"lyapunov": False},
            "models": [{"name": "rnn", "hidden_dim": 4}], "forcings": [{"name": "gtf", "alpha": 0.2}],
            "datasets": [{"label": "short", "train": str(folder), "test_trials": 1}]}
    with pytest.warns(RuntimeWarning, match="longest training trial has 35 steps but"):
        result = dsrecon.compare(grid, out_dir=tmp_path / "out", executor="serial", progress=False)
    assert result.n_failed == 1


def test_reconstruction_evaluates_raw_trials():
    raw = [r * 3.0 + 10.0 for r in _lorenz_trials(3, 1000)]
    rec = dsrecon.fit(raw, dt=0.01, epochs=1, batches_per_epoch=2, seq_len=50, budget=None,
                      eval_config=EvalConfig(lyapunov=False), progress=False, verbose=False)
    cfg = EvalConfig(lyapunov=False)
    report = rec.evaluate([r[800:] for r in raw], cfg)  # the held-out tails, in data units
    assert [t["n_steps"] for t in report.trials] == [200, 200, 200]
    np.testing.assert_allclose(report.d_stsp, rec.reports["test"]["d_stsp"])  # the fit's own test part
