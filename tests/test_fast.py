"""The fused shPLRNN rollout equals the plain autograd loop (values and gradients).

Reference: ``dsrecon.training.loss_and_grads`` (plain autograd through ``dsrecon.rollout.forced_rollout``).
The fused path is the same function of the same inputs computed in another order, so in float64 the
two agree to rounding (~1e-13); the issue's requirement is 1e-5 relative, which is what we assert,
per parameter (norm-wise), for every forcing option, observation model, clipping and regularization.
"""

from __future__ import annotations

import pytest
import torch

from dsrecon.fast import _kernels, fused_forced_loss, fused_forced_rollout, loss_and_grads
from dsrecon.forcing import make_forcing
from dsrecon.models.plrnn import ShPLRNN
from dsrecon.rollout import forced_rollout
from dsrecon.training import loss_and_grads as plain_loss_and_grads
from kernel_marks import KERNEL_BUILDS, needs_kernel
from reference_models import forcing_alphas

RTOL = 1e-5  # the tolerance on gradients (relative, per parameter tensor)




def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _fused_vs_plain(model, x, alphas, reg_weight, *, loss_rel, grad_rel=RTOL):
    """One fused and one plain step from zeroed gradients: losses and every gradient agree.
    Returns ``(fused result, plain result, plain gradients)``."""
    model.zero_grad()
    ref = plain_loss_and_grads(model, x, alphas, reg_weight)
    g_ref = _grads(model)
    model.zero_grad()
    res = loss_and_grads(model, x, alphas, reg_weight)
    g = _grads(model)
    assert res.loss == pytest.approx(ref.loss, rel=loss_rel)
    assert set(g) == set(g_ref)  # every parameter, the initial-state map C / observation B included
    for name in g_ref:
        assert _rel(g[name], g_ref[name]) < grad_rel, name
    return res, ref, g_ref


def _check_against_plain(observation, M, clipped, kind, reg_weight):
    model = ShPLRNN(3, M, 20, clipped=clipped, observation=observation, seed=3, dtype=torch.float64)
    x = torch.randn(5, 41, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alphas = forcing_alphas(kind, 41, model, x)
    res, ref, _ = _fused_vs_plain(model, x, alphas, reg_weight, loss_rel=1e-12)
    assert res.mse == pytest.approx(ref.mse, rel=1e-12)
    torch.testing.assert_close(res.z_hat, ref.z_hat, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("observation,M", [("identity", 3), ("identity", 5), ("affine", 4),
                                           ("identity", 10)])  # M > 8: the kernel's run-time-M loops
@pytest.mark.parametrize("clipped", [True, False])
@pytest.mark.parametrize("kind", ["gtf", "agtf", "stf", "none", "tf"])
@pytest.mark.parametrize("reg_weight", [0.0, 1e-2])
def test_fused_gradients_equal_plain(observation, M, clipped, kind, reg_weight):
    """The fused backend (the C kernel where it builds) over every option."""
    _check_against_plain(observation, M, clipped, kind, reg_weight)


@pytest.mark.parametrize("kind", ["gtf", "stf"])
def test_fused_float32_paper_configuration(kind):
    """The issue's configuration (M=3, L=50, B=16, T=200) in float32: rounding differs, 1e-5 holds."""
    model = ShPLRNN(3, 3, 50, seed=0)
    x = torch.randn(16, 201, 3, generator=torch.Generator().manual_seed(2))
    alphas = forcing_alphas(kind, 201, model, x)
    _fused_vs_plain(model, x, alphas, 1e-5, loss_rel=1e-6)


def test_target_differs_from_inputs():
    """Noisy inputs drive the forcing, clean targets the loss: as in the plain path."""
    model = ShPLRNN(3, 4, 16, seed=1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(3, 21, 3, generator=gen, dtype=torch.float64)
    noisy = target + 0.1 * torch.randn(3, 21, 3, generator=gen, dtype=torch.float64)
    alphas = torch.full((21,), 0.3)
    model.zero_grad()
    ref = plain_loss_and_grads(model, noisy, alphas, 0.0, target=target)
    g_ref = _grads(model)
    model.zero_grad()
    res = loss_and_grads(model, noisy, alphas, 0.0, target=target)
    assert res.loss == pytest.approx(ref.loss, rel=1e-12)
    for name, g in _grads(model).items():
        assert _rel(g, g_ref[name]) < RTOL, name


@needs_kernel
def test_rollout_values_and_loss_helper():
    model = ShPLRNN(3, 3, 30, seed=2, dtype=torch.float64)
    x = torch.randn(4, 51, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = forced_rollout(model, x, 0.2)
    out = fused_forced_rollout(model, x, 0.2)  # a float is used at every step, as in the plain path
    torch.testing.assert_close(out.x_pred, ref.x_pred, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.z, ref.z, rtol=1e-12, atol=1e-12)
    loss = fused_forced_loss(model, x, 0.2, 1e-3)
    expected = torch.mean((ref.x_pred - x[:, 1:]) ** 2) + 1e-3 * model.regularization()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)


@needs_kernel
def test_free_running_equals_generate():
    """alpha = 0 is free running from the inferred start: the fused states equal ``generate``."""
    from dsrecon.rollout import generate

    model = ShPLRNN(3, 3, 30, seed=4, dtype=torch.float64)
    x = torch.randn(2, 31, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = fused_forced_rollout(model, x, 0.0)
    free = generate(model, x[:, 0], 31, fast=False)[:, 1:]  # (B, 30, N), the eager loop
    torch.testing.assert_close(out.x_pred, free, rtol=1e-12, atol=1e-12)


def test_non_plrnn_falls_back_with_warning():
    from dsrecon.models import make_model

    model = make_model("rnn", obs_dim=3, hidden_dim=8)
    x = torch.randn(2, 11, 3)
    with pytest.warns(RuntimeWarning, match="affine-forcing path"):
        res = loss_and_grads(model, x, torch.full((11,), 0.1), 0.0)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert res.loss > 0


def test_input_checks():
    model = ShPLRNN(3, 3, 10)
    with pytest.raises(ValueError, match=r"\(B, T \+ 1, N\)"):
        fused_forced_rollout(model, torch.zeros(4, 3), 0.1)
    with pytest.raises(ValueError, match="one value per window step"):
        fused_forced_rollout(model, torch.zeros(2, 11, 3), torch.zeros(5))
    with pytest.raises(ValueError, match=r"C kernel only: the kernel supports latent_dim <= 64, got 65"):
        fused_forced_rollout(ShPLRNN(3, 65, 10), torch.zeros(2, 11, 3), 0.1)


def test_train_fused_backend_equals_plain():
    """Two epochs of ``train`` with backend='fused' reproduce backend='plain' (float64)."""
    from dsrecon.training import TrainConfig, train

    series = torch.randn(400, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64).cumsum(0) * 0.05
    results = {}
    for backend in ("plain", "fused"):
        model = ShPLRNN(3, 3, 20, seed=0, dtype=torch.float64)
        cfg = TrainConfig(epochs=2, batches_per_epoch=3, batch_size=4, seq_len=30, backend=backend)
        res = train(model, series.numpy(), cfg, make_forcing("agtf"), progress=False)
        results[backend] = (model, res)
    (m0, r0), (m1, r1) = results["plain"], results["fused"]
    for (name, p0), p1 in zip(m0.named_parameters(), m1.parameters()):
        torch.testing.assert_close(p1, p0, rtol=1e-9, atol=1e-12, msg=name)
    assert [h["alpha"] for h in r1.history] == pytest.approx([h["alpha"] for h in r0.history], rel=1e-9)


@needs_kernel
@pytest.mark.parametrize("flush", [False, True])
def test_c_kernel_restores_the_callers_denormal_mode(flush):
    """The kernel flushes subnormals (FTZ/DAZ) only inside the call: the caller's mode survives it."""
    model = ShPLRNN(3, 3, 10, seed=0)
    x = torch.randn(2, 11, 3)
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # subnormal in float32 (< 1.18e-38)
    try:
        torch.set_flush_denormal(flush)
        fused_forced_loss(model, x, 0.1).backward()
        halved = float((tiny * 0.5)[0])
        assert (halved == 0.0) == flush  # flushed only when the caller asked for it
    finally:
        torch.set_flush_denormal(False)


@needs_kernel
@pytest.mark.parametrize("observation,M", [("identity", 3), ("identity", 5), ("affine", 4)])
@pytest.mark.parametrize("clipped", [True, False])
def test_fused_generate_equals_generate(observation, M, clipped):
    """Free running through the kernel, in chunks, is the eager ``generate`` (float64, 300 steps), and
    ``generate``'s default (fast) path for a shPLRNN is that kernel."""
    from dsrecon.fast import fused_generate
    from dsrecon.rollout import generate

    model = ShPLRNN(3, M, 30, clipped=clipped, observation=observation, seed=2, dtype=torch.float64)
    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    eager = generate(model, x0, 300, fast=False)
    torch.testing.assert_close(fused_generate(model, x0, 300, chunk=77), eager, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(generate(model, x0, 300), eager, rtol=1e-10, atol=1e-12)
    assert fused_generate(model, x0[0], 5).shape == (5, 3)


NO_COMPILER = "no C compiler found (set CC or install gcc)"


@pytest.fixture
def no_kernel(monkeypatch):
    """The C kernel looks unbuildable (as without a compiler), and its one warning not yet given."""
    monkeypatch.setattr(_kernels, "_LIB", NO_COMPILER)
    monkeypatch.setattr(_kernels, "_WARNED_FALLBACK", False)


def _kernel_warnings(seen) -> list[str]:
    return [str(w.message) for w in seen if "C kernel is unavailable" in str(w.message)]


def test_without_compiler_one_shplrnn_trains_on_the_affine_path(no_kernel):
    """No C compiler: backend 'fused' trains a shPLRNN on the affine-forcing path (backend='affine'),
    'auto' on the generic one-member stack, which for the shPLRNN computes the same numbers, so the
    parameters are equal bit for bit; one one-line warning per process says what runs instead and
    how to get the kernel."""
    from dsrecon.training import TrainConfig, train

    series = torch.randn(400, 3, generator=torch.Generator().manual_seed(5)).cumsum(0).numpy() * 0.05
    models = {}
    with pytest.warns(RuntimeWarning) as seen:
        for backend in ("auto", "fused", "affine"):
            models[backend] = ShPLRNN(3, 3, 20, seed=0)
            cfg = TrainConfig(epochs=2, batches_per_epoch=3, batch_size=4, seq_len=30, backend=backend)
            train(models[backend], series, cfg, make_forcing("agtf"), progress=False)
    (message,) = _kernel_warnings(seen)
    assert NO_COMPILER in message and "generic" in message and "slower" in message and "$CC" in message
    assert "\n" not in message
    for backend in ("auto", "fused"):
        for (name, p), q in zip(models["affine"].named_parameters(), models[backend].parameters()):
            assert torch.equal(p, q), (backend, name)
    with pytest.raises(RuntimeError, match="C kernel is unavailable.*use dsrecon.rollout.forced_rollout"):
        fused_forced_rollout(models["auto"], torch.zeros(2, 11, 3), 0.1)


def test_without_compiler_an_ensemble_trains_on_the_generic_stack(no_kernel):
    """No C compiler: an ensemble of shPLRNNs trains through the generic member stack (VmapStack),
    exactly as backend='plain' (which always takes it) does."""
    import warnings

    from dsrecon.ensemble import Ensemble
    from dsrecon.stacking import stack_members
    from dsrecon.training import TrainConfig, train
    from dsrecon.vmap_stack import VmapStack

    series = torch.randn(400, 3, generator=torch.Generator().manual_seed(6)).cumsum(0).numpy() * 0.05
    results = {}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for backend in ("auto", "plain"):
            ens = Ensemble("shplrnn", k=2, obs_dim=3, latent_dim=3, hidden_dim=8)
            assert isinstance(stack_members(list(ens.members), backend), VmapStack)
            cfg = TrainConfig(epochs=2, batches_per_epoch=3, batch_size=4, seq_len=30, backend=backend)
            results[backend] = (ens, train(ens, series, cfg, make_forcing("gtf", alpha=0.2), progress=False))
    assert len(_kernel_warnings(seen)) == 1
    (ens_auto, res_auto), (ens_plain, res_plain) = results["auto"], results["plain"]
    assert [r.n_updates for r in res_auto.members] == [6, 6]
    assert [[h["loss"] for h in r.history] for r in res_auto.members] == \
        [[h["loss"] for h in r.history] for r in res_plain.members]
    for m_auto, m_plain in zip(ens_auto.members, ens_plain.members):
        for p, q in zip(m_auto.parameters(), m_plain.parameters()):
            assert torch.equal(p, q)


def test_members_the_kernel_cannot_take_get_the_generic_stack():
    """A latent size beyond the kernel's (M > 64): the generic stack, without building anything."""
    from dsrecon.fast.ensemble import EnsembleShPLRNN
    from dsrecon.stacking import stack_members
    from dsrecon.vmap_stack import VmapStack

    assert isinstance(stack_members([ShPLRNN(3, 65, 4, seed=s) for s in (0, 1)]), VmapStack)
    if KERNEL_BUILDS:
        assert isinstance(stack_members([ShPLRNN(3, 64, 4, seed=s) for s in (0, 1)]), EnsembleShPLRNN)


@pytest.mark.parametrize("M", [3, 65])
def test_generate_falls_back_to_the_eager_loop(M, no_kernel):
    """generate(fast=True) runs the eager loop, bit for bit, where the kernel cannot run (no compiler;
    M > 64), and warns only about the missing compiler."""
    import warnings

    from dsrecon.rollout import generate

    model = ShPLRNN(3, M, 8, seed=0, dtype=torch.float64)
    x0 = torch.randn(2, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fast = generate(model, x0, 50)
    assert torch.equal(fast, generate(model, x0, 50, fast=False))
    assert len(_kernel_warnings(seen)) == (1 if M <= 64 else 0)


def test_fused_step_follows_replaced_parameters():
    """The fused step runs as a one-model ensemble sharing the model's storage, cached per model: a
    parameter replaced (dtype change, assignment) must be seen, and gradients accumulate like autograd's."""
    model = ShPLRNN(3, 4, 16, seed=3)
    x = torch.randn(4, 21, 3, generator=torch.Generator().manual_seed(4))
    alphas = torch.full((21,), 0.2, dtype=torch.float64)
    loss_and_grads(model, x, alphas, 1e-3)  # caches the view (float32)
    model.double()  # new storage for every parameter
    with torch.no_grad():
        model.W1.add_(0.1)  # in place: the cached view must see it too
    xd = x.double()
    _, _, g_ref = _fused_vs_plain(model, xd, alphas, 1e-3, loss_rel=1e-12, grad_rel=1e-10)
    loss_and_grads(model, xd, alphas, 1e-3)  # a second call adds to .grad, as backward() does
    for name, g in _grads(model).items():
        assert _rel(g, 2 * g_ref[name]) < 1e-10, name


@pytest.mark.parametrize("M", [10, 11, 16])
def test_fused_float32_specialized_and_generic_latent_sizes(M):
    """float32 runs the kernel compiled for a fixed M (M <= 8, 10, 12, 16) or the run-time-M loops
    (11): both give the plain loop's gradients (the float64 tests only reach the run-time-M loops)."""
    model = ShPLRNN(3, M, 30, seed=1)
    x = torch.randn(16, 81, 3, generator=torch.Generator().manual_seed(M))
    alphas = torch.full((81,), 0.2, dtype=torch.float64)
    _fused_vs_plain(model, x, alphas, 1e-5, loss_rel=1e-5)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M,dtype", [(3, torch.float32), (5, torch.float32), (3, torch.float64)])
def test_identity_step_kernel(M, dtype, threads):
    """The one-call training step (forward, identity-observation loss, backward) equals the
    separate forward and backward kernels with dL/dZ = scale (Z[..., :N] - X[:, :, 1:]), zero-padded
    past N (M = N takes the contiguous SIMD loss loop), bit for bit; a model whose squared error is
    not finite gets no loss gradient and leaves the other models' results alone."""
    K, B, T, N, L = 3, 5, 9, 3, 7
    g = torch.Generator().manual_seed(M)
    r = lambda *shape: (0.3 * torch.randn(*shape, generator=g)).to(dtype)  # noqa: E731
    z1, A, W1, W2t, h1, h2 = r(K, B, M), r(K, M), r(K, M, L), r(K, M, L), r(K, M), r(K, L)
    alpha = torch.full((K, T), 0.3, dtype=dtype)
    Q, c, X = r(K, M, M), r(K, B, T + 1, M), r(K, B, T + 1, N)
    X[1, 2, 4, 0] = float("nan")  # model 1's squared error is not finite
    _kernels.set_kernel_threads(threads)
    try:
        Zt, Z, sse, *grads = _kernels.identity_step(z1, A, W1, W2t, h1, h2, True, alpha, Q, c, X, 0.25)
        Zt_ref, Z_ref = _kernels.forward(z1, A, W1, W2t, h1, h2, True, alpha, Q, c)
        resid = Z_ref[..., :N] - X[:, :, 1:]
        G = torch.cat([resid * 0.25, resid.new_zeros(K, B, T, M - N)], dim=-1)
        G[1] = 0
        ref = _kernels.backward(G.contiguous(), Zt_ref, A, W1, W2t, h1, h2, True, alpha, Q)
    finally:
        _kernels.set_kernel_threads(None)
    assert torch.equal(Zt, Zt_ref) and torch.equal(Z, Z_ref)
    torch.testing.assert_close(sse[[0, 2]], (resid[[0, 2]].double() ** 2).sum((1, 2, 3)), rtol=1e-12, atol=0)
    assert torch.isnan(sse[1])
    for got, want in zip(grads, ref):
        assert torch.equal(got, want)


def test_old_kernel_builds_are_pruned(tmp_path):
    """A new build deletes the other builds of the cache folder older than a week, and only those."""
    import os
    import time

    from dsrecon.fast._build import prune_old_builds

    new, recent, old, other = (tmp_path / n for n in ("shplrnn_new.so", "shplrnn_recent.so", "shplrnn_old.so",
                                                       "results.h5"))
    for f in (new, recent, old, other):
        f.write_bytes(b"x")
    week_ago = time.time() - 8 * 24 * 3600
    for f in (old, other, new):
        os.utime(f, (week_ago, week_ago))
    assert prune_old_builds(new) == [old]
    assert new.exists() and recent.exists() and other.exists() and not old.exists()
