"""The long-run guard on the GTF paper's ECG (slow): a small ensemble must not collapse onto fixed points.

A change to the training path redraws every long-run outcome, so the guard judges the distribution
over seeds, not one run (issue 21). This is the cheap form of ``benchmarks/ecg_gtf.py --check``:
8 fresh seeds of shPLRNN + GTF (the paper's ECG setting, alpha = 0.3) in one ensemble at a reduced
budget, the best-validated checkpoint of each run (validation on the last 12,500 training points),
evaluated by the paper's protocol on the first 20,000 test points. The bound on the collapsed share
and the median D_stsp are stated below with the figures they were set from
(``benchmarks/results/ecg_guard_*.md``).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SEEDS = list(range(2000, 2008))
EPOCHS = 300
MAX_COLLAPSED = 2  # of 8
MAX_MEDIAN_D_STSP = 8.0


def test_small_ecg_ensemble_keeps_the_heartbeat_cycle(gtf_data_dir):
    import torch

    from dsrecon.evaluation import EvalConfig, evaluate
    from dsrecon.fast import train_ensemble
    from dsrecon.forcing import make_forcing
    from dsrecon.models import make_model
    from dsrecon.training import TrainConfig

    train_x = np.load(gtf_data_dir / "ECG_pecuzal_5d_train.npy")
    test_x = np.load(gtf_data_dir / "ECG_pecuzal_5d_test.npy")[:20_000]
    models = [make_model("shplrnn", obs_dim=5, latent_dim=5, hidden_dim=250, observation="affine", seed=s)
              for s in SEEDS]
    cfg = TrainConfig(epochs=EPOCHS, reg_weight=0.0, val_every=25, select="best_val")
    torch.set_num_threads(1)
    train_ensemble(models, train_x, cfg, make_forcing("gtf", alpha=0.3), seeds=SEEDS, val_data=train_x[-12_500:])
    reports = [evaluate(m, test_x, EvalConfig(lyapunov=False)) for m in models]
    collapsed = sum(r.collapsed for r in reports)
    median = float(np.median([r.d_stsp for r in reports]))
    summary = ", ".join(f"{s}: {r.d_stsp:.2f}{' (collapsed)' if r.collapsed else ''}" for s, r in zip(SEEDS, reports))
    assert collapsed <= MAX_COLLAPSED, f"{collapsed} of {len(SEEDS)} collapsed; D_stsp per seed {summary}"
    assert median <= MAX_MEDIAN_D_STSP, f"median D_stsp {median:.2f}; per seed {summary}"
