"""The ALRNN (Brenner et al., NeurIPS 2024): equation, Jacobian, initialization, observation models,
training under every forcing option, checkpoints. The registry-wide contract is in test_contract.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dsrecon
from dsrecon.fast.affine_forcing import forcing_terms
from dsrecon.fast.affine_forcing import loss_and_grads as affine_loss_and_grads
from dsrecon.models.alrnn import ALRNN
from dsrecon.models.base import Model
from dsrecon.training import loss_and_grads as plain_loss_and_grads
from reference_models import forcing_alphas

F64 = torch.float64


def _model(M=6, P=2, observation="identity", N=3, seed=1) -> ALRNN:
    model = ALRNN(N, M, P, observation=observation, seed=seed, dtype=F64)
    with torch.no_grad():  # move away from the near-linear initial W and h = 0, so every term counts
        gen = torch.Generator().manual_seed(seed + 100)
        model.W.normal_(0.0, 0.4, generator=gen)
        model.h.normal_(0.0, 0.3, generator=gen)
    return model


def _states(M, n=64, seed=0) -> torch.Tensor:
    return 2 * torch.randn(n, M, dtype=F64, generator=torch.Generator().manual_seed(seed))  # (n, M)


def _series(n=1500):
    t = np.arange(n) * 0.05
    return np.stack([np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t) * np.cos(t)], 1)  # (n, 3)


# ----------------------------------------------------------------- the equation
@pytest.mark.parametrize("P", [0, 1, 2, 6])
def test_step_is_the_paper_equation(P):
    # z' = A z + W phi(z) + h, phi = identity on units 1..M-P, ReLU on the last P (written out per unit)
    m = _model(M=6, P=P)
    z = _states(6, 9)
    phi = z.clone()
    for i in range(6 - P, 6):
        phi[:, i] = torch.clamp(z[:, i], min=0)
    expected = z * m.A + phi @ m.W.T + m.h
    torch.testing.assert_close(m.step(z), expected, rtol=0, atol=1e-14)


def test_without_relu_units_the_map_is_linear():
    # P = 0: step(a z1 + b z2) - h = a (step(z1) - h) + b (step(z2) - h) for any states and scalars
    m = _model(M=5, P=0)
    z1, z2 = _states(5, 4, seed=1), _states(5, 4, seed=2)
    lhs = m.step(1.7 * z1 - 0.3 * z2) - m.h
    rhs = 1.7 * (m.step(z1) - m.h) - 0.3 * (m.step(z2) - m.h)
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-12)


def test_the_map_is_affine_within_a_linear_region():
    # inside one sign pattern of the ReLU units, step(z) = (diag(A) + W D) z + h exactly
    m = _model(M=6, P=2)
    z = _states(6, 200)
    code = m.linear_region(z)  # (200, 2)
    assert code.shape == (200, 2) and code.dtype == torch.bool
    J = m.jacobian(z)  # (200, 6, 6)
    torch.testing.assert_close(m.step(z), (J @ z.unsqueeze(-1)).squeeze(-1) + m.h, rtol=0, atol=1e-12)
    same = (code == code[0]).all(dim=1)
    assert int(same.sum()) > 10  # several states share the first state's region
    torch.testing.assert_close(J[same], J[0].expand_as(J[same]), rtol=0, atol=0)


# ----------------------------------------------------------------- Jacobian
@pytest.mark.parametrize("observation,M,P", [("identity", 6, 2), ("identity", 3, 3), ("identity", 20, 2),
                                             ("affine", 4, 1), ("identity", 5, 0)])
def test_analytic_jacobian_equals_autograd(observation, M, P):
    # diag(A) + W diag(phi') is exact for a piecewise-linear map: agreement to 1e-12 in float64
    # (random states hit a ReLU kink with probability 0)
    m = _model(M=M, P=P, observation=observation)
    z = _states(M)
    torch.testing.assert_close(m.jacobian(z), Model.jacobian(m, z), rtol=0, atol=1e-12)


def test_parameter_bound_bounds_every_jacobian_norm():
    m = _model(M=8, P=3)
    with torch.no_grad():
        norms = torch.linalg.matrix_norm(m.jacobian(_states(8, 500)), ord=2)  # (500,)
    assert float(norms.max()) <= float(m.parameter_bound()) + 1e-12


# ----------------------------------------------------------------- construction
def test_initialization_follows_the_paper():
    M = 20
    m = ALRNN(3, M, 2, seed=5)
    assert torch.all(m.A > 0) and torch.all(m.A <= 1 + 1e-6)  # diag of K / lambda_max(K), K SPD
    assert torch.all(m.h == 0)
    # W ~ N(0, 0.01^2): 400 entries, sample std within 10 % of 0.01 (its relative standard error is ~3.5 %)
    W = m.W.detach()
    assert 0.009 < float(W.std()) < 0.011 and abs(float(W.mean())) < 0.002
    assert m.C.shape == (M - 3, 3) and m.C.abs().max() <= 1 / math.sqrt(3)
    # the same seed gives the same model, another seed another one; a generator equals its seed
    assert torch.equal(ALRNN(3, M, 2, seed=5).W, m.W)
    assert not torch.equal(ALRNN(3, M, 2, seed=6).W, m.W)
    assert torch.equal(ALRNN(3, M, 2, generator=torch.Generator().manual_seed(5)).W, m.W)
    # without seed or generator the seed comes from torch's global generator (as the baselines)
    torch.manual_seed(11)
    a = ALRNN(3, M, 2)
    torch.manual_seed(11)
    assert torch.equal(ALRNN(3, M, 2).W, a.W)


def test_parameter_counts():
    # M + M^2 + M, plus (M - N) N for the identity observation with M > N, or N M for the affine one
    assert ALRNN(3, 20, 2).n_params == 20 + 400 + 20 + 17 * 3 == 491  # the paper's Lorenz-63 preset
    assert ALRNN(3, 3, 2).n_params == 3 + 9 + 3
    assert ALRNN(3, 5, 2, observation="affine").n_params == 5 + 25 + 5 + 15


@pytest.mark.parametrize("kwargs,message", [
    (dict(obs_dim=3, latent_dim=4, n_relu=5), "n_relu P = 5 exceeds latent_dim M = 4"),
    (dict(obs_dim=3, latent_dim=4, n_relu=-1), "n_relu must be an integer >= 0"),
    (dict(obs_dim=3, latent_dim=2, n_relu=1), "needs latent_dim M >= obs_dim"),
    (dict(obs_dim=3, latent_dim=4, n_relu=1, observation="linear"), "unknown observation model 'linear'"),
    (dict(obs_dim=3, latent_dim=4.0, n_relu=1), "latent_dim must be an integer"),
    (dict(obs_dim=3, latent_dim=4, n_relu=1, seed=1, generator=torch.Generator()), "not both"),
])
def test_bad_arguments_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dsrecon.make_model("alrnn", **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("observation", ["identity", "affine"])
def test_outputs_keep_the_parameter_dtype(dtype, observation):
    m = ALRNN(3, 7, 2, observation=observation, seed=0, dtype=dtype)
    x = torch.randn(4, 3, dtype=dtype)
    z = m.initial_state(x)
    for out in (z, m.step(z), m.observe(z), m.state_from_obs(x, z), m.jacobian(z)):
        assert out.dtype == dtype
    assert m.config()["dtype"] == str(dtype).removeprefix("torch.")


@pytest.mark.gpu
def test_cuda_equals_cpu():
    m = _model(M=10, P=2, observation="affine")
    z = _states(10, 32)
    x = torch.randn(32, 3, dtype=F64)
    mc = _model(M=10, P=2, observation="affine").to("cuda")
    for cpu, gpu in ((m.step(z), mc.step(z.cuda())), (m.jacobian(z), mc.jacobian(z.cuda())),
                     (m.state_from_obs(x, z), mc.state_from_obs(x.cuda(), z.cuda())),
                     (m.initial_state(x), mc.initial_state(x.cuda()))):
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------- forcing and training
@pytest.mark.parametrize("observation", ["identity", "affine"])
def test_forcing_is_affine_in_the_state(observation):
    # the class declares affine_forcing: state_from_obs(x, z) = c(x) + z Q with detached c, Q
    m = _model(M=6, P=2, observation=observation)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 3, generator=gen, dtype=F64)
    z = torch.randn(12, 6, generator=gen, dtype=F64)
    Q, c, _, _ = forcing_terms(m, x, torch.zeros(6, dtype=F64))
    torch.testing.assert_close(c.reshape(-1, 6) + z @ Q, m.state_from_obs(x.reshape(-1, 3), z).detach(),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("observation", ["identity", "affine"])
@pytest.mark.parametrize("kind", ["gtf", "agtf", "stf", "tf", "none"])
def test_affine_backend_gradients_equal_plain(kind, observation):
    # the "affine" backend (the fold the generic stack also uses): same loss and gradients as autograd
    # through the plain loop, to the 1e-5 relative tolerance the other model families meet
    m = _model(M=6, P=2, observation=observation)
    x = torch.randn(4, 31, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    alphas = forcing_alphas(kind, 31, m, x)
    m.zero_grad()
    ref = plain_loss_and_grads(m, x, alphas, 1e-2)
    g_ref = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    res = affine_loss_and_grads(m, x, alphas, 1e-2)
    assert res.loss == pytest.approx(ref.loss, rel=1e-12)
    for name, p in m.named_parameters():
        rel = float((p.grad - g_ref[name]).norm() / g_ref[name].norm().clamp_min(1e-300))
        assert rel < 1e-5, (name, rel)


@pytest.mark.parametrize("kind", ["gtf", "agtf", "stf", "tf", "none"])
def test_trains_with_every_forcing(kind):
    x = _series()
    m = ALRNN(3, 8, 2, seed=0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    forcing = dsrecon.make_forcing(kind, **({"tau": 10} if kind == "stf" else {}))
    cfg = dsrecon.TrainConfig(epochs=2, batches_per_epoch=5, batch_size=4, seq_len=30, lr_start=1e-2,
                              lr_end=1e-2, val_every=10**6)
    result = dsrecon.train(m, x, cfg, forcing, progress=False)
    assert result.finished and result.n_updates == 10
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in result.history)
    for name, p in m.named_parameters():  # every parameter moved
        assert not torch.equal(p.detach(), before[name]), name


def test_training_lowers_the_loss():
    # 100 updates with teacher forcing at a constant learning rate on a smooth 3-d series: the one-step
    # loss of an ALRNN that starts near the linear map diag(A) falls at least by half
    m = ALRNN(3, 8, 2, seed=0)
    cfg = dsrecon.TrainConfig(epochs=10, batches_per_epoch=10, batch_size=8, seq_len=30, lr_start=1e-2,
                              lr_end=1e-2, val_every=10**6)
    result = dsrecon.train(m, _series(), cfg, dsrecon.make_forcing("gtf", alpha=0.5), progress=False)
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last <= 0.5 * first, (first, last)


# ----------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("observation", ["identity", "affine"])
def test_checkpoint_round_trip(tmp_path, observation):
    m = _model(M=7, P=3, observation=observation)
    path = dsrecon.save_checkpoint(tmp_path / "c.pt", m, epoch=2)
    torch.load(path, weights_only=True)  # only tensors and primitive containers inside
    loaded, state = dsrecon.load_checkpoint(path)
    assert type(loaded) is ALRNN and loaded.config() == m.config() and state["epoch"] == 2
    for (k, a), b in zip(m.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    z = _states(7, 5)
    torch.testing.assert_close(loaded.step(z), m.step(z), rtol=0, atol=0)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    x = _series()
    cfg = dsrecon.TrainConfig(epochs=4, batches_per_epoch=5, batch_size=4, seq_len=30, checkpoint_every=1,
                              noise_std=0.05)
    straight = ALRNN(3, 6, 2, seed=1)
    ref = dsrecon.train(straight, x, cfg, dsrecon.AdaptiveGTF(every=2), run_dir=tmp_path / "a", progress=False)
    first = ALRNN(3, 6, 2, seed=1)
    part = dsrecon.train(first, x, cfg, dsrecon.AdaptiveGTF(every=2), run_dir=tmp_path / "b", progress=False,
                         callback=lambda epoch, record, model: epoch == 2)  # "killed" after epoch 2
    assert part.epochs == 2 and not part.finished
    fresh = ALRNN(3, 6, 2, seed=99)  # parameters come from the checkpoint, not from this seed
    res = dsrecon.train(fresh, x, cfg, dsrecon.AdaptiveGTF(every=2), run_dir=tmp_path / "b", resume=True,
                        progress=False)
    assert res.finished and res.n_updates == ref.n_updates == 20
    for (k, a), b in zip(straight.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in res.history] == [r["loss"] for r in ref.history]


def test_a_comparison_grid_runs_the_alrnn(tmp_path):
    # dsrecon.compare builds models from the registry with the grid's arguments: nothing ALRNN-specific
    rng = np.random.default_rng(0)
    t = np.arange(700) * 0.2
    x = np.stack([np.sin(t), np.cos(t)], axis=1) + 0.05 * rng.standard_normal((700, 2))  # (700, 2) noisy cycle
    np.save(tmp_path / "train.npy", x[:400])
    np.save(tmp_path / "test.npy", x[400:])
    grid = {"seeds": [0], "budget": {"epochs": 1, "batches_per_epoch": 2, "batch_size": 4, "seq_len": 20},
            "eval": {"lyapunov_steps": 200, "lyapunov_transient": 50, "lyapunov_initial": 2},
            "models": [{"name": "alrnn", "latent_dim": 4, "n_relu": 2}],
            "forcings": [{"name": "gtf", "alpha": 0.2}],
            "datasets": [{"label": "cycle", "train": str(tmp_path / "train.npy"), "test": str(tmp_path / "test.npy"),
                          "lambda_max": 0.0, "dt": 0.1}]}
    result = dsrecon.compare(grid, out_dir=tmp_path / "out", executor="serial", progress=False)
    assert (result.n_executed, result.n_failed) == (1, 0)
    assert result.rows[0]["model"].startswith("alrnn")


@pytest.mark.slow
def test_fit_trains_an_alrnn_with_the_latent_rule(tmp_path):
    """``dsrecon.fit(model="alrnn")`` (and so ``dsrecon fit --model alrnn``) builds the ALRNN from the
    latent-size rule, P = the authors' preset, instead of passing the shPLRNN's hidden width."""
    import numpy as np

    import dsrecon
    from dsrecon.evaluation import EvalConfig
    from dsrecon.fitting import ALRNN_RELU_UNITS

    t = np.arange(1500) * 0.05
    x = np.stack([np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t + 1)], axis=1)
    rec = dsrecon.fit(x, model="alrnn", epochs=1, batches_per_epoch=2, seq_len=20, val_every=5,
                      eval_config=EvalConfig(lyapunov=False), run_dir=tmp_path / "run", progress=False,
                      verbose=False)
    assert isinstance(rec.model, dsrecon.ALRNN)
    assert rec.model.config()["n_relu"] == ALRNN_RELU_UNITS and rec.model.state_dim >= 3
    with pytest.raises(ValueError, match="unclipped"):
        dsrecon.fit(x, model="alrnn", clipped=False, epochs=1, run_dir=tmp_path / "run2", verbose=False)
