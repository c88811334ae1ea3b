"""FusedRAdam: torch.optim.RAdam's update as one C loop; same results to rounding, same state."""

from __future__ import annotations

import pytest
import torch

from dsrecon.fast.radam import FusedRAdam
from kernel_marks import needs_kernel

pytestmark = needs_kernel

SHAPES = [(4, 3), (4, 3, 7), (4, 7, 3), (4, 7)]


def _pair(dtype, **kw):
    torch.manual_seed(0)
    ref = [torch.nn.Parameter(torch.randn(*s, dtype=dtype)) for s in SHAPES]
    fused = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    return ref, torch.optim.RAdam(ref, lr=1e-2, **kw), fused, FusedRAdam(fused, lr=1e-2, **kw)


def _steps(pairs, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        grads = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in pairs[0][0]]
        for params, opt, sched in pairs:
            for p, gr in zip(params, grads):
                p.grad = gr.clone()
            opt.step()
            sched.step()


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 2e-6), (torch.float64, 1e-13)])
def test_fused_radam_equals_torch_radam(dtype, rtol):
    """30 steps with a decaying learning rate, through the unrectified first steps (rho_t <= 5)
    into the rectified ones: parameters and moments agree to rounding, step counts exactly."""
    ref, o_ref, fused, o_fused = _pair(dtype)
    pairs = [(ps, o, torch.optim.lr_scheduler.ExponentialLR(o, 0.9)) for ps, o in ((ref, o_ref), (fused, o_fused))]
    _steps(pairs, 30)
    for p, q in zip(ref, fused):
        torch.testing.assert_close(q, p, rtol=rtol, atol=0)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(o_fused.state[q][key], o_ref.state[p][key], rtol=rtol, atol=0)
        assert o_fused.state[q]["step"].dtype == o_ref.state[p]["step"].dtype
        assert float(o_fused.state[q]["step"]) == float(o_ref.state[p]["step"]) == 30


def test_fused_radam_state_moves_between_the_two():
    """A checkpoint of either optimizer resumes in the other (torch's state_dict format)."""
    ref, o_ref, fused, o_fused = _pair(torch.float64)
    pairs = [(ps, o, torch.optim.lr_scheduler.ExponentialLR(o, 1.0)) for ps, o in ((ref, o_ref), (fused, o_fused))]
    _steps(pairs, 8)
    swapped_ref = torch.optim.RAdam(fused, lr=1e-2)  # torch continues the fused run ...
    swapped_ref.load_state_dict(o_fused.state_dict())
    swapped_fused = FusedRAdam(ref, lr=1e-2)  # ... and the fused optimizer the torch run
    swapped_fused.load_state_dict(o_ref.state_dict())
    pairs = [(fused, swapped_ref, torch.optim.lr_scheduler.ExponentialLR(swapped_ref, 1.0)),
             (ref, swapped_fused, torch.optim.lr_scheduler.ExponentialLR(swapped_fused, 1.0))]
    _steps(pairs, 8, seed=2)
    for p, q in zip(ref, fused):
        torch.testing.assert_close(q, p, rtol=1e-13, atol=0)


def test_fused_radam_skips_parameters_without_gradient_and_falls_back_where_it_must():
    """A parameter without a gradient is left alone (no state); options the C loop does not cover
    (weight decay, a non-contiguous parameter) run torch's own step, bit for bit."""
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = FusedRAdam([a, b], lr=0.1)
    a.grad = torch.full((3,), 0.5)
    opt.step()
    assert torch.equal(b, torch.ones(3)) and len(opt.state[b]) == 0 and not torch.equal(a, torch.ones(3))

    for make in (lambda: torch.randn(5, 4, dtype=torch.float64), lambda: torch.randn(4, 5, dtype=torch.float64).t()):
        torch.manual_seed(3)
        x = make()
        p, q = torch.nn.Parameter(x.clone()), torch.nn.Parameter(x.clone())
        wd = 0.1 if x.is_contiguous() else 0.0
        ref, fused = torch.optim.RAdam([p], lr=0.1, weight_decay=wd), FusedRAdam([q], lr=0.1, weight_decay=wd)
        for _ in range(7):
            g = torch.randn(x.shape, dtype=x.dtype)
            p.grad, q.grad = g.clone(), g.clone()
            ref.step()
            fused.step()
        assert torch.equal(p, q)


def test_fused_radam_marks_its_updates_as_in_place_changes():
    """The C loop writes through raw pointers; the step then bumps each updated tensor's version
    counter as torch's in-place update does, so caches keyed on it (the shPLRNN's pseudo-inverse of
    B) and autograd's saved-tensor check see the change."""
    ref, o_ref, fused, o_fused = _pair(torch.float32)
    for params, opt in ((ref, o_ref), (fused, o_fused)):
        before = [p._version for p in params]
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        assert all(p._version > v for p, v in zip(params, before))


def test_single_run_leaves_the_affine_shplrnn_consistent_with_its_observation_matrix():
    """After a single-model training with validation (which infers states with B's pseudo-inverse
    and so caches it), the trained model infers initial states from its final B, not the B of the
    first validation: what evaluate and forecast read."""
    import numpy as np

    from dsrecon.forcing import make_forcing
    from dsrecon.models import make_model
    from dsrecon.training import TrainConfig, train

    t = np.linspace(0, 60, 3000)
    x = np.stack([np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t) * np.cos(t)], 1)
    model = make_model("shplrnn", obs_dim=3, latent_dim=4, hidden_dim=8, observation="affine", seed=0)
    cfg = TrainConfig(epochs=3, batches_per_epoch=10, batch_size=4, seq_len=30, val_every=1, val_steps=200,
                      backend="fused", seed=0)
    train(model, x, cfg, make_forcing("gtf", alpha=0.2), val_data=x[-500:], progress=False)
    x0 = torch.as_tensor(x[:5], dtype=model.B.dtype)
    expected = x0 @ torch.linalg.pinv(model.B.detach()).T
    assert torch.equal(model.initial_state(x0), expected)
