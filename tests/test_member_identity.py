"""One seed, one model: an ensemble member is bit-identical to its separate ``train`` run.

A chaotic training run turns a 1-ulp difference into another model within a few thousand updates
(issue 21: seed 7 of the ECG benchmark reached D_stsp 4.8 alone and 16.9, a fixed point, as the
third member of ten). So the member must not merely agree to a tolerance: every parameter and every
history entry must be equal, ``torch.equal``, for float32 and float64, at position 0 and beyond, for
ensembles of 1, 2 and 10 members and one or two kernel threads, over a few hundred updates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsrecon.fast import kernel_threads, set_kernel_threads
from dsrecon.ensemble import Ensemble
from dsrecon.forcing import make_forcing
from dsrecon.models.plrnn import ShPLRNN
from dsrecon.training import TrainConfig, train

SEED = 7
# 4 epochs x 50 batches = 200 updates
CONFIG = TrainConfig(epochs=4, batches_per_epoch=50, batch_size=4, seq_len=30, lr_start=3e-3, lr_end=1e-4,
                     noise_std=0.01)


def _series() -> np.ndarray:
    """A Lorenz-63 trajectory (Euler, dt = 0.01), z-scored, (1500, 3)."""
    z, out = np.array([1.0, 1.0, 20.0]), []
    for _ in range(1700):
        x, y, w = z
        z = z + 0.01 * np.array([10 * (y - x), x * (28 - w) - y, x * y - 8 / 3 * w])
        out.append(z)
    x = np.array(out[200:])
    return (x - x.mean(0)) / x.std(0)


def _model(seed, dtype, observation, M):
    return ShPLRNN(3, M, 16, seed=seed, dtype=dtype, observation=observation)


def _assert_same_run(member, member_result, alone, alone_result):
    for (name, p), q in zip(alone.named_parameters(), member.parameters()):
        assert torch.equal(p, q), f"{name} differs by {float((p - q).abs().max().detach()):.3g}"
    for key in ("loss", "mse", "alpha", "grad_norm", "G"):
        got = [h[key] for h in member_result.history]
        want = [h[key] for h in alone_result.history]
        assert np.array_equal(got, want, equal_nan=True), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("observation,M,forcing", [("affine", 5, "gtf"), ("identity", 3, "agtf"),
                                                   ("identity", 5, "gtf")])
def test_member_equals_separate_run_bit_for_bit(dtype, observation, M, forcing):
    series = _series().astype(np.float32 if dtype == torch.float32 else np.float64)
    def policy():  # a policy's state (adaptive alpha) is trained in place: a fresh one per run
        return make_forcing(forcing, **({"alpha": 0.3} if forcing == "gtf" else {}))

    alone = _model(SEED, dtype, observation, M)
    ref = train(alone, series, TrainConfig(**{**CONFIG.__dict__, "seed": SEED}), policy(), progress=False)
    threads_before = kernel_threads()
    try:
        for K, position, threads in [(1, 0, 1), (2, 0, 2), (2, 1, 2), (10, 6, 2), (10, 9, 1)]:
            set_kernel_threads(threads)
            seeds = [100 + k for k in range(K)]
            seeds[position] = SEED
            models = [_model(s, dtype, observation, M) for s in seeds]
            results = train(Ensemble(models, seeds=seeds), series, CONFIG, policy(), progress=False).members
            assert ref.n_updates == results[position].n_updates == 200
            _assert_same_run(models[position], results[position], alone, ref)
    finally:
        set_kernel_threads(threads_before)


GENERIC = {"lstm": dict(hidden_dim=6), "gru": dict(hidden_dim=6), "rnn": dict(hidden_dim=6), "lem": dict(hidden_dim=6),
           "alrnn": dict(latent_dim=6, n_relu=2)}


# the GRU's batched backward differs in the last bit between one member and several (its loss does not):
# some batched kernel under vmap sums in another order for K = 1 than for K >= 2; not yet traced
GRU_NOT_YET = pytest.mark.xfail(strict=True, reason="GRU gradients under vmap depend on the member count")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("family", [pytest.param(f, marks=GRU_NOT_YET) if f == "gru" else f for f in sorted(GENERIC)])
def test_generic_member_equals_separate_run_bit_for_bit(family, dtype):
    """The families without a kernel: a model trained alone (backend "auto": a one-member generic
    stack) equals its member of an ensemble of 1, 2 or 5, at the first position and beyond."""
    from dsrecon.models import make_model

    series = _series().astype(np.float32 if dtype == "float32" else np.float64)
    config = TrainConfig(**{**CONFIG.__dict__, "epochs": 2, "batches_per_epoch": 10, "seq_len": 20})
    kw = dict(obs_dim=3, dtype=dtype, **GENERIC[family])
    alone = make_model(family, seed=SEED, **kw)
    ref = train(alone, series, TrainConfig(**{**config.__dict__, "seed": SEED}), make_forcing("gtf", alpha=0.2),
                progress=False)
    for K, position in [(1, 0), (2, 1), (5, 3)]:
        seeds = [100 + k for k in range(K)]
        seeds[position] = SEED
        ens = Ensemble(family, k=K, seeds=seeds, **kw)
        results = train(ens, series, config, make_forcing("gtf", alpha=0.2), progress=False).members
        assert ref.n_updates == results[position].n_updates == 20
        _assert_same_run(ens.members[position], results[position], alone, ref)
