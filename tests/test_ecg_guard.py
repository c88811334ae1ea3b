"""The long-run guard on the GTF paper's ECG (slow, ~15 minutes on 2 cores).

A change to the training path redraws every long-run outcome, so the guard judges the distribution
over seeds, not one run (issue 21). This is a small form of ``benchmarks/ecg_gtf.py --check``: 8
fresh seeds of shPLRNN + GTF (the paper's ECG setting, alpha = 0.3, 1400 epochs) trained as one
ensemble with noise of std 0.01 in the forcing signal (``TrainConfig.noise_std``), the checkpoint
selected by validation from 8 starts (``TrainConfig.val_starts``) on the last 12,500 training
points, evaluated by the paper's protocol on the test file. The bounds are set from the 40 seeds of
the same protocol in ``benchmarks/results/ecg_gtf_2026-12-07_analysis.md`` (see MAX_FAILED): they
fail a change that brings back the collapse rates seen before it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SEEDS = list(range(2000, 2008))
# 40 seeds of this protocol (1000-1039): 2 missed the cycle (D_stsp > 10, both collapsed), median
# D_stsp 3.07. Drawing 8 of those 40 outcomes, more than 2 failed happen in 0.6 % of draws and a
# median above 4.0 in 2 %; without the noise (20 seeds: 15 % failed) more than 2 of 8 happen in 11 %,
# at the 30 % failure share of the last model without noise in 45 %.
NOISE_STD = 0.01
MAX_FAILED = 2
MAX_MEDIAN_D_STSP = 4.0


def test_small_ecg_ensemble_keeps_the_heartbeat_cycle(gtf_data_dir):
    import torch

    from dsrecon.evaluation import EvalConfig, evaluate
    from dsrecon.ensemble import Ensemble
    from dsrecon.forcing import make_forcing
    from dsrecon.models import make_model
    from dsrecon.training import TrainConfig, train

    train_x = np.load(gtf_data_dir / "ECG_pecuzal_5d_train.npy")
    test_x = np.load(gtf_data_dir / "ECG_pecuzal_5d_test.npy")
    models = [make_model("shplrnn", obs_dim=5, latent_dim=5, hidden_dim=250, observation="affine", seed=s)
              for s in SEEDS]
    cfg = TrainConfig(epochs=1400, lr_start=1e-3, lr_end=1e-6, reg_weight=0.0, val_every=25, val_starts=8,
                      select="best_val", noise_std=NOISE_STD, seed=SEEDS[0])  # the benchmark's TrainConfig
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(Ensemble(models, seeds=SEEDS), train_x, cfg, make_forcing("gtf", alpha=0.3),
              val_data=train_x[-12_500:], progress=False)
    finally:
        torch.set_num_threads(threads)
    reports = [evaluate(m, test_x, EvalConfig(lyapunov=False)) for m in models]
    d_stsp = [r.d_stsp if math.isfinite(r.d_stsp) else math.inf for r in reports]  # undefined: worst
    failed = sum(d > 10 or r.collapsed for d, r in zip(d_stsp, reports))
    summary = ", ".join(f"{s}: {d:.2f}{' (collapsed)' if r.collapsed else ''}" for s, d, r in zip(SEEDS, d_stsp, reports))
    assert failed <= MAX_FAILED, f"{failed} of {len(SEEDS)} runs missed the heartbeat cycle; D_stsp per seed {summary}"
    assert float(np.median(d_stsp)) <= MAX_MEDIAN_D_STSP, f"median D_stsp too high; per seed {summary}"
