"""Model selection by validation (``TrainConfig.select``, :mod:`dsrecon.selection`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsrecon.ensemble import Ensemble
from dsrecon.forcing import make_forcing
from dsrecon.models.plrnn import ShPLRNN
from dsrecon.selection import BestByValidation, validation_score
from dsrecon.training import TrainConfig, train

CONFIG = TrainConfig(epochs=6, batches_per_epoch=8, batch_size=4, seq_len=30, lr_start=1e-2, lr_end=1e-3,
                     val_every=1, val_steps=400)


def _series(n=1500) -> np.ndarray:
    t = np.arange(n) * 0.1
    x = np.stack([np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t) * np.cos(t)], 1)
    return x + 0.01 * np.random.default_rng(0).standard_normal(x.shape)


def _best_epoch_of(history) -> int:
    """The epoch of the best finite validation score (the first of equals), None if there is none."""
    scored = [(validation_score(h), h["epoch"]) for h in history if "d_stsp" in h]
    score, epoch = min(scored)
    return None if math.isinf(score[0]) else epoch


def test_validation_score_ranks_and_rejects_non_finite():
    assert validation_score({"d_stsp": 2.0, "d_h": 0.3}) == (2.0, 0.3)
    assert validation_score({"d_stsp": 2.0, "d_h": float("nan")}) == (math.inf, math.inf)  # constant output
    assert validation_score({"d_stsp": float("inf"), "d_h": 0.1}) == (math.inf, math.inf)
    assert validation_score({}) == (math.inf, math.inf)
    best, model = BestByValidation(), ShPLRNN(3, 3, 8, seed=0)
    assert not best.offer(1, {"d_stsp": float("nan"), "d_h": 0.2}, model) and best.state is None
    assert best.offer(2, {"d_stsp": 3.0, "d_h": 0.2}, model) and best.epoch == 2
    assert not best.offer(3, {"d_stsp": 3.5, "d_h": 0.1}, model) and best.epoch == 2
    assert best.offer(4, {"d_stsp": 3.0, "d_h": 0.1}, model) and best.epoch == 4  # D_H breaks the tie


@pytest.mark.parametrize("select", ["last", "best_val"])
def test_train_keeps_the_selected_parameters(select):
    x = _series()
    model = ShPLRNN(3, 3, 16, seed=1)
    res = train(model, x[:1000], TrainConfig(**{**CONFIG.__dict__, "select": select}), make_forcing("gtf", alpha=0.2),
                val_data=x[1000:], progress=False)
    assert res.best_epoch is not None and res.best_epoch == _best_epoch_of(res.history)
    last = ShPLRNN(3, 3, 16, seed=1)
    train(last, x[:1000], CONFIG, make_forcing("gtf", alpha=0.2), val_data=x[1000:], progress=False)
    held = res.best_state if select == "best_val" else last.state_dict()
    for name, p in model.state_dict().items():
        assert torch.equal(p, held[name]), name
    if res.best_epoch != CONFIG.epochs:  # otherwise the two coincide and say nothing
        assert not torch.equal(res.best_state["W1"], last.W1.detach())


def test_best_val_needs_validation_data():
    with pytest.raises(ValueError, match="needs val_data"):
        train(ShPLRNN(3, 3, 8), _series()[:500], TrainConfig(**{**CONFIG.__dict__, "select": "best_val"}),
              progress=False)
    with pytest.raises(ValueError, match="unknown TrainConfig.select"):
        TrainConfig(select="best")


def test_ensemble_selects_each_members_best_as_its_separate_run(tmp_path):
    x = _series()
    cfg = TrainConfig(**{**CONFIG.__dict__, "select": "best_val"})
    seeds = [4, 5, 6]
    together = [ShPLRNN(3, 3, 16, seed=s) for s in seeds]
    results = train(Ensemble(together, seeds=seeds), x[:1000], cfg, make_forcing("gtf", alpha=0.2),
                    val_data=x[1000:], run_dir=tmp_path / "ens", progress=False).members
    assert any(r.best_epoch is not None for r in results)  # else the test compares nothing
    for k, s in enumerate(seeds):
        alone = ShPLRNN(3, 3, 16, seed=s)
        ref = train(alone, x[:1000], TrainConfig(**{**cfg.__dict__, "seed": s}), make_forcing("gtf", alpha=0.2),
                    val_data=x[1000:], progress=False)
        assert results[k].best_epoch == ref.best_epoch == _best_epoch_of(ref.history)
        for (name, p), q in zip(alone.named_parameters(), together[k].parameters()):
            assert torch.equal(p, q), name


def test_resumed_run_keeps_the_best_of_its_first_part(tmp_path):
    x = _series()
    cfg = TrainConfig(**{**CONFIG.__dict__, "select": "best_val", "checkpoint_every": 1})
    whole = ShPLRNN(3, 3, 16, seed=2)
    ref = train(whole, x[:1000], cfg, make_forcing("gtf", alpha=0.2), val_data=x[1000:], progress=False)
    part = ShPLRNN(3, 3, 16, seed=2)
    train(part, x[:1000], cfg, make_forcing("gtf", alpha=0.2), val_data=x[1000:], progress=False,
          run_dir=tmp_path / "run", callback=lambda epoch, record, model: epoch == 3)
    part = ShPLRNN(3, 3, 16, seed=2)
    res = train(part, x[:1000], cfg, make_forcing("gtf", alpha=0.2), val_data=x[1000:], progress=False,
                run_dir=tmp_path / "run", resume=True)
    assert res.best_epoch == ref.best_epoch
    for name, p in whole.state_dict().items():
        assert torch.equal(p, part.state_dict()[name]), name


def test_validation_with_several_starts_reports_means_and_collapsed_runs():
    """val_starts = 3: means over free runs from the validation series' first, middle and last points."""
    from dsrecon.metrics import hellinger_distance, state_space_divergence
    from dsrecon.rollout import generate

    x = _series()
    cfg = TrainConfig(**{**CONFIG.__dict__, "epochs": 2, "val_starts": 3, "val_every": 2})
    model = ShPLRNN(3, 3, 16, seed=3)
    res = train(model, x[:1000], cfg, make_forcing("gtf", alpha=0.2), val_data=x[1000:], progress=False)
    record = res.history[-1]
    val = torch.as_tensor(x[1000:], dtype=torch.float32)
    n = cfg.val_steps
    runs = generate(model, val[[0, 250, 499]], n + n // 4)[:, n // 4:]  # 500 points: 0, 249.5 -> 250 (half to even), 499
    d_stsp = [float(state_space_divergence(val[:n], r)) for r in runs]
    d_h = []
    for r in runs:
        try:
            d_h.append(float(hellinger_distance(val[:n], r)))
        except ValueError:
            d_h.append(float("nan"))
    d_h = [1.0 if bool(torch.all(r == r[-1])) and math.isnan(h) else h for r, h in zip(runs, d_h)]
    assert record["d_stsp"] == pytest.approx(np.mean(d_stsp), rel=1e-12)
    assert record["d_h"] == pytest.approx(np.mean(d_h), rel=1e-12, nan_ok=True)
    assert 0 <= record["val_collapsed"] <= 3
    one = train(ShPLRNN(3, 3, 16, seed=3), x[:1000], TrainConfig(**{**cfg.__dict__, "val_starts": 1}),
                make_forcing("gtf", alpha=0.2), val_data=x[1000:], progress=False).history[-1]
    assert "val_collapsed" not in one and one["d_stsp"] == pytest.approx(d_stsp[0], rel=1e-12)
