"""Whole training runs of the generic-stack families: K-member ensemble vs one ``train()`` run.

For each family (default LSTM and LEM) and size, one ``train()`` run of one model and one
``train(Ensemble(name, k=K))`` run, each of ``--updates`` model updates (epochs of 50 updates),
timed on whole runs (windows, forcing, rollout, backward, RAdam, bookkeeping), with repetitions
interleaved so that a neighbour's load hits both alike. Reported: milliseconds per update and
model-updates per wall second; the ratio is the ensemble's model-updates per second over the
single run's (the issue's target for K = 10: >= 5x).

The growth-bound diagnostic G (``TrainConfig.diag_every``) is left out of the timed runs: it costs
one Jacobian and one spectral norm per data-inferred state and member (seconds for a 75-dimensional
state, the same per member in both runs), which would measure the eigenvalue solver instead of the
training update; the runs stop one epoch before the last, whose G is always computed.

Usage (from the repository root)::

    python benchmarks/ensemble_speed.py                          # LSTM and LEM, K = 10, 200 updates
    python benchmarks/ensemble_speed.py --families lstm --updates 100 --reps 1
    python benchmarks/ensemble_speed.py --out benchmarks/results/ensemble_speed_<date>.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402

import numpy as np
import torch

from dsrecon.ensemble import Ensemble
from dsrecon.forcing import GTF
from dsrecon.models import make_model
from dsrecon.training import TrainConfig, train

# (family, obs_dim N, model kwargs, label): Lorenz-63-sized and the GTF paper's ECG sizes
SIZES = {
    "lstm": [(3, {"hidden_dim": 20}, "Lorenz-63 size (N = 3, H = 20)"),
             (5, {"hidden_dim": 35, "input_fed": True}, "ECG size (N = 5, H = 35, input-fed)")],
    "lem": [(3, {"hidden_dim": 20}, "Lorenz-63 size (N = 3, H = 20)"),
            (5, {"hidden_dim": 31, "input_fed": True}, "ECG size (N = 5, H = 31, input-fed)")],
    "gru": [(3, {"hidden_dim": 20}, "Lorenz-63 size (N = 3, H = 20)")],
    "rnn": [(3, {"hidden_dim": 20}, "Lorenz-63 size (N = 3, H = 20)")],
}


def _series(n_obs: int) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((20_000, n_obs)).cumsum(0) * 0.05).astype(np.float32)


def _timed_run(model, x, updates: int) -> float:
    """Wall seconds of a run of ``updates`` updates (GTF alpha = 0.3, batch 16, windows of 201)."""
    epochs = updates // 50
    cfg = TrainConfig(epochs=epochs + 1, batches_per_epoch=50, val_every=10**6, diag_every=10**6)
    t0 = time.perf_counter()
    train(model, x, cfg, GTF(0.3), progress=False, callback=lambda epoch, *_: epoch == epochs)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["lstm", "lem"], choices=sorted(SIZES))
    p.add_argument("--sizes", nargs="+", type=int, default=None, help="indices into each family's sizes (default all)")
    p.add_argument("--K", type=int, default=10)
    p.add_argument("--updates", type=int, default=200, help="updates per run (a multiple of 50)")
    p.add_argument("--reps", type=int, default=1, help="interleaved repetitions (median reported)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.updates < 50 or args.updates % 50:
        raise SystemExit(f"ensemble_speed: --updates must be a positive multiple of 50, got {args.updates}")
    lines = []

    def say(line=""):
        print(line, flush=True)
        lines.append(line)

    t_all = time.perf_counter()
    say(f"# Generic-stack ensembles: K = {args.K} members vs one train() run, whole runs of {args.updates} updates")
    say()
    say(f"- command: `python benchmarks/ensemble_speed.py {' '.join(sys.argv[1:] if argv is None else argv)}`")
    say(f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, commit {provenance.commit()}")
    say(f"- machine: {platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared), torch {torch.__version__}, TrainConfig.threads = 1; load average at start "
        f"{os.getloadavg()[0]:.1f}")
    say(f"- runs: GTF alpha = 0.3, batch 16, windows of 201 steps, float32, {args.reps} interleaved repetition(s), "
        "median; growth-bound diagnostic left out (see the script's docstring)")
    say()
    say("| family | size | one run: ms / update | ensemble: ms / update (all K) | model-updates / s, one run | "
        "model-updates / s, ensemble | ratio |")
    say("|---|---|---:|---:|---:|---:|---:|")
    for family in args.families:
        for i, (n_obs, kw, label) in enumerate(SIZES[family]):
            if args.sizes is not None and i not in args.sizes:
                continue
            x = _series(n_obs)
            _timed_run(make_model(family, obs_dim=n_obs, seed=99, **kw), x, 50)  # warm-up
            one, ens = [], []
            for _ in range(args.reps):
                one.append(_timed_run(make_model(family, obs_dim=n_obs, seed=0, **kw), x, args.updates))
                ens.append(_timed_run(Ensemble(family, k=args.K, obs_dim=n_obs, **kw), x, args.updates))
            t1, tK = statistics.median(one) / args.updates, statistics.median(ens) / args.updates
            say(f"| {family} | {label} | {t1 * 1e3:.1f} | {tK * 1e3:.1f} | {1 / t1:.1f} | {args.K / tK:.1f} | "
                f"{args.K * t1 / tK:.2f}x |")
    say()
    say(f"Benchmark wall time: {time.perf_counter() - t_all:.0f} s.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
