"""The trainer: it learns, it records diagnostics, it survives non-finite losses, it checks input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dsrecon
from dsrecon.models.plrnn import ShPLRNN
from dsrecon.training import train


def lorenz63(n_steps=3000, seed=0):
    """Z-scored Lorenz-63 (s=10, r=28, b=8/3, dt=0.01): dsrecon.simulate, or scipy until it lands."""
    try:
        return dsrecon.simulate("lorenz63", n_steps=n_steps, seed=seed).x
    except (ImportError, AttributeError):
        from scipy.integrate import solve_ivp

        f = lambda t, u: [10 * (u[1] - u[0]), u[0] * (28 - u[2]) - u[1], u[0] * u[1] - 8 / 3 * u[2]]  # noqa: E731
        u0 = np.random.default_rng(seed).normal(size=3) + [1, 1, 20]
        t = np.arange(5000 + n_steps) * 0.01
        x = solve_ivp(f, (0, t[-1]), u0, t_eval=t, rtol=1e-9, atol=1e-9).y.T[5000:]
        return (x - x.mean(0)) / x.std(0)


SMALL = dict(batches_per_epoch=10, batch_size=8, seq_len=50, val_every=5, progress=None)


def small_config(**kw):
    cfg = {k: v for k, v in SMALL.items() if k != "progress"}
    cfg.update(kw)
    return dsrecon.TrainConfig(**cfg)


def test_hundred_updates_at_least_halve_the_loss():
    x = lorenz63()
    model = ShPLRNN(3, 3, 30, seed=0)
    # a constant, larger learning rate than the paper's 1e-3 so that 100 updates show the trend;
    # adaptive GTF starts at alpha = 1 (teacher forcing). Measured: 0.26 -> 0.08.
    result = train(model, x, small_config(epochs=10, lr_start=1e-2, lr_end=1e-2), dsrecon.AdaptiveGTF(),
                   progress=False)
    assert result.n_updates == 100 and result.finished
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last <= 0.5 * first, (first, last)


def test_history_has_the_diagnostics_and_the_schedule():
    x = lorenz63(2000)
    cfg = small_config(epochs=6, val_every=3, val_steps=500)
    result = train(ShPLRNN(3, 3, 20), x, cfg, dsrecon.AdaptiveGTF(), val_data=lorenz63(1000, seed=1),
                           progress=False)
    h = result.history
    assert [r["epoch"] for r in h] == list(range(1, 7))
    for key in ("loss", "mse", "alpha", "grad_norm", "G", "lr", "time_s"):
        assert all(math.isfinite(r[key]) for r in h), key
    # exponential decay from lr_start to lr_end over the run (SPEC section 3)
    assert h[-1]["lr"] == pytest.approx(cfg.lr_end, rel=1e-9)
    assert h[0]["lr"] == pytest.approx(cfg.lr_start * (cfg.lr_end / cfg.lr_start) ** (1 / 6), rel=1e-9)
    pytest.importorskip("dsrecon.metrics")
    assert "d_stsp" in h[2] and "d_h" in h[5] and "d_stsp" not in h[0]
    assert result.metrics.keys() == {"d_stsp", "d_h"}


class _NaNOnce:
    """Wraps model.step so that its k-th call returns NaN (a one-off numerical blow-up)."""

    def __init__(self, model, k, times=1):
        self.step, self.k, self.calls, self.times = model.step, k, 0, times

    def __call__(self, z):
        self.calls += 1
        out = self.step(z)
        if self.k <= self.calls < self.k + self.times:
            return out * float("nan")
        return out


def test_non_finite_loss_restores_the_last_good_state_and_lowers_the_lr():
    x = lorenz63(2000)
    cfg = small_config(epochs=4, backend="plain")  # the NaN is injected through model.step, which
    clean = ShPLRNN(3, 3, 20, seed=3)              # only the plain path calls; recovery is the trainer's
    ref = train(clean, x, cfg, dsrecon.GTF(0.2), progress=False)

    model = ShPLRNN(3, 3, 20, seed=3)
    model.step = _NaNOnce(model, k=50 * 25 + 7)  # 50 steps per window; inside the 3rd epoch
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        result = train(model, x, cfg, dsrecon.GTF(0.2), progress=False)
    assert result.recoveries == 1 and result.finished
    assert "warning" in result.history[2] and "warning" not in result.history[1]
    assert all(torch.all(torch.isfinite(p)) for p in model.parameters())
    # the learning rate is halved relative to the clean run from the recovery on
    for r_ref, r in zip(ref.history[2:], result.history[2:]):
        assert r["lr"] == pytest.approx(0.5 * r_ref["lr"], rel=1e-9)
    assert math.isfinite(result.history[-1]["loss"])


def test_persistent_non_finite_loss_stops_with_an_error():
    model = ShPLRNN(3, 3, 20)
    model.step = _NaNOnce(model, k=1, times=10**9)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="training diverged"):
        train(model, lorenz63(1000), small_config(epochs=2, max_recoveries=3, backend="plain"), progress=False)


@pytest.mark.parametrize("data,match", [
    (np.zeros((500, 2)), "obs_dim = 3"),
    (np.zeros((30, 3)), r"need T >= 51, got T = 30"),
    (np.full((500, 3), np.nan), "non-finite"),
    (np.zeros((5, 100, 3)), r"shape \(T, N\)"),
])
def test_bad_data_messages(data, match):
    with pytest.raises(ValueError, match=match):
        train(ShPLRNN(3, 3, 5), data, small_config(epochs=1), progress=False)


@pytest.mark.parametrize("kw,match", [
    (dict(epochs=0), "epochs must be a positive integer"),
    (dict(lr_start=1e-6, lr_end=1e-3), "lr_end <= lr_start"),
    (dict(backend="cuda"), "valid: auto, plain, fused"),
])
def test_bad_config_messages(kw, match):
    with pytest.raises(ValueError, match=match):
        dsrecon.TrainConfig(**kw)


def test_plain_backend_matches_a_hand_written_loss():
    model = ShPLRNN(3, 3, 10, seed=0, dtype=torch.float64)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    from dsrecon.training import loss_and_grads

    res = loss_and_grads(model, x, torch.full((6,), 0.3, dtype=torch.float64), 1e-3)
    pred = dsrecon.rollout.forced_rollout(model, x, 0.3).x_pred
    expected = torch.mean((pred - x[:, 1:]) ** 2) + 1e-3 * model.regularization()
    assert res.loss == pytest.approx(float(expected.detach()), rel=1e-12)
    assert all(p.grad is not None for p in model.parameters())


def test_cli_fit_on_a_file_writes_the_run_folder_and_never_clobbers_it(tmp_path, capsys):
    from dsrecon.cli import main

    data = tmp_path / "series.npy"
    np.save(data, lorenz63(1500))
    run = tmp_path / "run"
    args = ["fit", str(data), "--epochs", "2", "--batches-per-epoch", "3", "--seq-len", "20", "--hidden-dim", "8",
            "--out", str(run), "--no-progress", "--forcing", "gtf", "--alpha", "0.2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "final loss" in out and "D_stsp" in out
    for name in ("config.json", "history.csv", "checkpoints/last.pt", "metrics.json"):
        assert (run / name).is_file(), name
    model, state = dsrecon.load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["finished"] and state["epoch"] == 2 and model.obs_dim == 3
    assert state["config"]["extra"]["data"]["kind"] == "file"
    # the training part's statistics (first 80 %: standardized after the split, issue 16), recorded
    # so that `evaluate --data RAW` can map raw data
    raw = np.load(data)[:1200]
    np.testing.assert_allclose(state["config"]["extra"]["data_meta"]["mean"], raw.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["config"]["extra"]["data_meta"]["std"], raw.std(0), rtol=1e-5)
    assert main(args) == 1  # the same --out again: refused, nothing overwritten
    assert "already holds a run" in capsys.readouterr().err
    assert main(["fit", "--resume", str(run), "--no-progress"]) == 0  # finished: re-evaluates only
    assert main(["fit", str(data), "--alpha", "0.5", "--forcing", "stf", "--out", str(tmp_path / "x")]) == 1
    assert "--alpha applies to" in capsys.readouterr().err


def test_growth_diagnostic_every_n_epochs():
    """diag_every = 2 over 3 epochs: G in epochs 2 and 3 (the last always), NaN in epoch 1."""
    from dsrecon.forcing import make_forcing
    from dsrecon.models import make_model
    from dsrecon.training import TrainConfig

    series = np.cumsum(np.random.default_rng(0).standard_normal((300, 3)), axis=0) * 0.05
    model = make_model("lstm", obs_dim=3, hidden_dim=4, seed=0)
    cfg = TrainConfig(epochs=3, batches_per_epoch=2, batch_size=4, seq_len=20, diag_every=2)
    res = train(model, series, cfg, make_forcing("gtf", alpha=0.2), progress=False)
    g = [h["G"] for h in res.history]
    assert math.isnan(g[0]) and g[1] > 0 and g[2] > 0
    with pytest.raises(ValueError, match="diag_every"):
        TrainConfig(diag_every=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_norm_and_finiteness_checks_with_and_without_the_c_pass(monkeypatch, dtype):
    """train()'s gradient norm and parameter check: one C pass where the kernel builds, torch's
    per-parameter ops without a compiler; both give the same answers."""
    from dsrecon.fast import _kernels
    from dsrecon.fast.members import model_grad_norm as _grad_norm
    from dsrecon.fast.members import model_params_finite as _params_finite

    model = ShPLRNN(3, 4, 10, seed=0, dtype=dtype)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=dtype)
    want = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()))
    try:
        _kernels.c_library()
    except RuntimeError:
        pytest.skip("no C compiler")
    assert _grad_norm(model) == pytest.approx(want, rel=1e-12)
    assert _params_finite(model)
    monkeypatch.setattr(_kernels, "available", lambda stacklevel=2: False)  # no compiler: torch's ops
    assert _kernels.stacked_sumsq([p.detach().reshape(1, -1) for p in model.parameters()], 1) is None
    assert _grad_norm(model) == pytest.approx(want, rel=1e-6)
    assert _params_finite(model)
    monkeypatch.undo()
    with torch.no_grad():
        model.W1[1, 2] = float("inf")
    assert not _params_finite(model)
    monkeypatch.setattr(_kernels, "available", lambda stacklevel=2: False)
    assert not _params_finite(model)
    for p in model.parameters():
        p.grad = None
    assert math.isnan(_grad_norm(model))
