"""The growth bound's Jacobian norms: compiled kernel vs PyTorch (eigvalsh of J^T J), and the model's
own ``jacobian``: the same numbers to float rounding, for every shape the kernel's lanes meet (M = 3:
blocks of 16 states solved in groups of 64, S = 150 ends on a partial group and a partial block)."""

from __future__ import annotations

import pytest
import torch

from dsrecon.fast import _kernels
from dsrecon.fast.jacobian_norms import stacked_jacobian_norms, stacked_jacobians
from dsrecon.forcing import spectral_norms
from dsrecon.models.plrnn import ShPLRNN


def _needs_c():
    try:
        _kernels.c_library()
    except RuntimeError:
        pytest.skip("no C compiler")


def _stack(models):
    return [torch.stack([getattr(m, n).detach() for m in models]) for n in ("A", "W1", "W2", "h2")]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
@pytest.mark.parametrize("M,L,S", [(3, 50, 37), (3, 20, 150), (5, 20, 8), (1, 4, 3), (2, 7, 9), (12, 30, 17)])
@pytest.mark.parametrize("clipped", [True, False])
def test_kernel_equals_eigvalsh(dtype, tol, M, L, S, clipped):
    _needs_c()
    models = [ShPLRNN(min(M, 3), M, L, seed=k, dtype=dtype, clipped=clipped) for k in range(3)]
    A, W1, W2, h2 = _stack(models)
    z = torch.randn(3, S, M, generator=torch.Generator().manual_seed(M), dtype=torch.float64).to(dtype) * 2
    want = spectral_norms(stacked_jacobians(A, W1, W2, h2, clipped, z))
    got = _kernels.jacobian_norms(z.contiguous(), A.contiguous(), W1.contiguous(),
                                  W2.transpose(1, 2).contiguous(), h2.contiguous(), clipped)
    assert got.dtype == torch.float64 and got.shape == (3, S)
    torch.testing.assert_close(got, want, rtol=tol, atol=0)
    # and the dispatcher / the model's method give the kernel's numbers
    torch.testing.assert_close(stacked_jacobian_norms(A, W1, W2, h2, clipped, z), got, rtol=0, atol=0)
    torch.testing.assert_close(models[1].jacobian_norms(z[1]), got[1], rtol=0, atol=0)


def test_stacked_jacobians_equal_the_models_jacobian():
    models = [ShPLRNN(3, 4, 9, seed=k, dtype=torch.float64) for k in range(2)]
    z = torch.randn(2, 11, 4, dtype=torch.float64)
    J = stacked_jacobians(*_stack(models), True, z)
    for k, m in enumerate(models):
        torch.testing.assert_close(J[k], m.jacobian(z[k]), rtol=1e-13, atol=1e-13)


def test_degenerate_matrices():
    """Zero, diagonal and repeated-eigenvalue Jacobians (rotations that must be skipped)."""
    _needs_c()
    M, L = 4, 6
    z = torch.randn(1, 10, M, dtype=torch.float64)
    zero = [torch.zeros(1, M, dtype=torch.float64), torch.zeros(1, M, L, dtype=torch.float64),
            torch.zeros(1, M, L, dtype=torch.float64), torch.zeros(1, L, dtype=torch.float64)]
    assert _kernels.jacobian_norms(z, *zero, True).abs().max() == 0
    A = torch.tensor([[0.5, -2.0, 0.5, 1.0]], dtype=torch.float64)  # diagonal J: norm = max |A_i|
    got = _kernels.jacobian_norms(z, A, *zero[1:], True)
    assert torch.equal(got, torch.full((1, 10), 2.0, dtype=torch.float64))
    # M = 3 takes Newton's method on the characteristic polynomial: a double largest root (two equal
    # singular values) converges only linearly and to ~1e-8, a simple one to rounding
    for diag, rel in (([2.0, -2.0, 0.5], 1e-7), ([0.3, -2.0, 0.5], 1e-14), ([0.0, 0.0, 0.0], 0.0)):
        A3 = torch.tensor([diag], dtype=torch.float64)
        zero3 = [torch.zeros(1, 3, L, dtype=torch.float64), torch.zeros(1, 3, L, dtype=torch.float64),
                 torch.zeros(1, L, dtype=torch.float64)]
        got = _kernels.jacobian_norms(z[:, :, :3].contiguous(), A3, *zero3, True)
        want = max(abs(d) for d in diag)
        assert float((got - want).abs().max()) <= rel * max(want, 1e-300), diag
