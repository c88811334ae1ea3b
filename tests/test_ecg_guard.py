"""The long-run guard on the GTF paper's ECG (slow, ~15 minutes on 2 cores).

A change to the training path redraws every long-run outcome, so the guard judges the distribution
over seeds, not one run (issue 21). This is a small form of ``benchmarks/ecg_gtf.py --check``: 8
fresh seeds of shPLRNN + GTF (the paper's ECG setting, alpha = 0.3, 1400 epochs) trained as one
ensemble, the checkpoint selected by validation from 8 starts (``TrainConfig.val_starts``) on the
last 12,500 training points, evaluated by the paper's protocol on the test file. The bounds are
set from the 20-seed run of the same protocol in ``benchmarks/results/ecg_gtf_2026-12-07_analysis.md``
(see MAX_FAILED): they fail a change that brings back the collapse rates seen before it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SEEDS = list(range(2000, 2008))
# 20 seeds of this protocol (1000-1019): 3 missed the cycle (D_stsp > 10, all collapsed), median
# D_stsp 2.77. With a failure share of 15 %, 4 or more of 8 happen in 3 % of draws; at the 30 % of
# the last-model protocol, in 19 %.
MAX_FAILED = 3
MAX_MEDIAN_D_STSP = 4.5


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
    cfg = TrainConfig(epochs=1400, reg_weight=0.0, val_every=25, val_starts=8, select="best_val")
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
