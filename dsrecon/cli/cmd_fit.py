"""``dsrecon fit DATA``: train a model on a time series, evaluate it, save everything in a run folder.

The command parses its options and calls :func:`dsrecon.fit` (``dsrecon.fitting``), the same
function with the same defaults (:mod:`dsrecon.defaults`) as in Python.

The run folder (default ``runs/<name>-<timestamp>``) holds ``config.json`` (model, forcing,
training settings and the data source), ``history.csv`` (per-epoch diagnostics),
``checkpoints/last.pt`` (load with ``dsrecon.load_checkpoint``), ``metrics.json`` (evaluation on
held-out data), ``reconstruction.pt`` (the model with its data transform: load with
``dsrecon.load_reconstruction``; ``dsrecon generate`` and ``dsrecon forecast`` read it) and plots
when matplotlib is installed. ``dsrecon fit --resume RUN_DIR`` continues an
interrupted run exactly where its last checkpoint stopped.

Before training it looks at the data (``dsrecon.inspection``: T, N, dt, time scales, lambda_max,
noise), prints what it found and the choices made from it (``dsrecon.preparation``: delay
embedding of a scalar or two-channel series, the latent size of many channels), and writes them to
``data_summary.json``. A file is split first and z-scored with its training part's statistics.
Lyapunov exponents are per time unit when ``dt`` is known (``--dt``, an h5 ``dt`` attribute, a csv
``t``/``time`` column, a benchmark system), else per step, and labelled so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dsrecon import defaults
from dsrecon.cli.options import (budget, check_output_folder, nonnegative_float, open_fraction, positive_float,
                                 positive_int, unit_interval)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit", help="train a model (default: clipped shPLRNN with GTF, alpha 0.1) on a time series",
        description="Train a DSR model on DATA, evaluate it on held-out data and save the run folder. "
                    "DATA is a benchmark system (lorenz63, rossler, lorenz96: simulated train and an "
                    "independent test trajectory) or anything dsrecon.load accepts (file path, santafe: "
                    "z-scored, split chronologically; a folder of files, or an npz/h5 with several series: "
                    "trials, windows drawn inside each, statistics pooled over the training trials).")
    p.add_argument("data", nargs="?", metavar="DATA", help="system name, data file or folder of trial files (omit with --resume)")
    g = p.add_argument_group("data")
    g.add_argument("--n-steps", type=positive_int, default=100_000, help="steps simulated for a system (default 100000)")
    g.add_argument("--noise", type=nonnegative_float, default=0.0, help="observation noise of a simulated system, fraction of std")
    g.add_argument("--test-fraction", type=open_fraction, default=0.2,
                   help="held-out final part of a file, or of every trial (default 0.2)")
    g.add_argument("--test-trials", type=positive_int, metavar="K",
                   help="data in trials (a folder of files, an npz or h5 with several series): hold out the last "
                        "K trials whole instead of every trial's final part")
    g.add_argument("--dt", type=positive_float,
                   help="sampling interval of a file in its time unit (default: the file's h5 'dt' attribute or "
                        "csv 't'/'time' column, else unknown: exponents per step)")
    g.add_argument("--embed", default="auto", metavar="auto|none|D:TAU",
                   help="delay embedding of a file: auto (default: series with N < 3 channels, delay by mutual "
                        "information, dimension by Cao's method), none, or D delays of TAU samples per channel")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="shplrnn", help="registered model name (default shplrnn)")
    g.add_argument("--latent-dim", type=positive_int,
                   help=f"shPLRNN latent dimension M (default max(N, {defaults.LATENT_DIM}): extra unobserved "
                        f"coordinates reached a far better Lorenz-63 attractor in a short run than M = N; for "
                        f"N > 16 channels the principal components explaining 90%% of the variance, in [10, 32], "
                        f"with an affine observation)")
    g.add_argument("--hidden-dim", type=positive_int, default=defaults.HIDDEN_DIM,
                   help=f"hidden width L (default {defaults.HIDDEN_DIM})")
    g.add_argument("--unclipped", action="store_true", help="plain instead of clipped shPLRNN")
    g.add_argument("--observation", choices=("identity", "affine"),
                   help="shPLRNN observation (default identity; affine when M < N)")
    g = p.add_argument_group("forcing")
    g.add_argument("--forcing", choices=("gtf", "agtf", "stf", "tf", "none"), default=defaults.FORCING,
                   help="fixed GTF (default), adaptive GTF, sparse TF, teacher forcing, none")
    g.add_argument("--alpha", type=unit_interval,
                   help=f"GTF alpha (gtf, default {defaults.ALPHA}) or starting alpha (agtf, default 1)")
    g.add_argument("--tau", type=positive_int, help="STF interval in steps (default: ln2 / lambda_max of the data)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int, default=defaults.EPOCHS, help=f"epochs (default {defaults.EPOCHS})")
    g.add_argument("--budget", type=budget, default=defaults.BUDGET_S, metavar="DURATION|none",
                   help=f"training-time budget, e.g. 90s, 10m, 1.5h (default {defaults.BUDGET_S / 60:g}m): the time "
                        "per epoch is measured first and fewer epochs are trained, with a warning, when the "
                        "requested ones would take longer; none: no budget")
    g.add_argument("--batches-per-epoch", type=positive_int, default=50)
    g.add_argument("--batch-size", type=positive_int, default=16)
    g.add_argument("--seq-len", type=positive_int, default=200)
    g.add_argument("--lr", type=positive_float, default=defaults.LR_START,
                   help=f"initial learning rate (default {defaults.LR_START:g}; the paper's 1e-3 suits its "
                        "5000-epoch runs)")
    g.add_argument("--lr-end", type=positive_float, default=defaults.LR_END,
                   help=f"final learning rate of the exponential decay (default {defaults.LR_END:g}; paper 1e-6)")
    g.add_argument("--seed", type=int, default=defaults.SEED, help="seed of model initialization, windows, test data")
    g.add_argument("--device", default="cpu")
    g.add_argument("--val-every", type=positive_int, default=25, help="epochs between D_stsp/D_H validations")
    g.add_argument("--select", choices=("last", "best_val"), default=defaults.SELECT,
                   help="keep the parameters of the best validation (best_val, default: validated on the tail of "
                        "the training part, never on the test part) or the last ones")
    g.add_argument("--val-starts", type=positive_int, default=defaults.VAL_STARTS,
                   help=f"free runs per validation (default {defaults.VAL_STARTS})")
    g.add_argument("--noise-std", type=nonnegative_float, default=0.0,
                   help="Gaussian noise (standardized units) added to the inputs of the forcing (default 0)")
    g.add_argument("--backend", choices=("auto", "plain", "fused", "affine"), default="auto",
                   help="training path: auto (fused for the shPLRNN, affine for the others), plain "
                        "(autograd reference), fused, affine (same gradients, see TrainConfig)")
    g.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1: fastest for these small models, see TrainConfig)")
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/<name>-<timestamp>)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    import torch

    from dsrecon._device import check_device
    from dsrecon.fitting import SYSTEM_NAMES, fit, new_run_dir
    from dsrecon.loaders import split_key

    check_device(args.device, "--device")
    torch.set_num_threads(args.threads)  # also for the evaluation after training
    common = {"device": args.device, "threads": args.threads, "progress": not args.no_progress}
    if args.resume:
        if args.data or args.out:
            raise ValueError("--resume RUN_DIR continues the stored run: give no DATA and no --out")
        check_output_folder(args.resume, "--resume")
        rec = fit(resume=args.resume, **common)
    else:
        if not args.data:
            raise ValueError("give DATA (a system name such as lorenz63, or a data file), or --resume RUN_DIR")
        if args.out:
            check_output_folder(args.out, "--out")
        key = args.data.lower()
        name = key if key in SYSTEM_NAMES else Path(split_key(args.data)[0]).stem
        rec = fit(args.data, model=args.model, latent_dim=args.latent_dim, hidden_dim=args.hidden_dim,
                  clipped=not args.unclipped, observation=args.observation, forcing=args.forcing, alpha=args.alpha,
                  tau=args.tau, epochs=args.epochs, batches_per_epoch=args.batches_per_epoch,
                  batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, lr_end=args.lr_end, seed=args.seed,
                  val_every=args.val_every, select=args.select, val_starts=args.val_starts,
                  noise_std=args.noise_std, backend=args.backend, n_steps=args.n_steps, noise=args.noise,
                  test_fraction=args.test_fraction, test_trials=args.test_trials, dt=args.dt, embed=args.embed, budget=args.budget,
                  run_dir=Path(args.out) if args.out else new_run_dir(name), **common)
    if rec.diverged is not None:
        cfg = rec.settings["train"]
        raise RuntimeError(f"the trained model diverged: {rec.diverged}; its files are kept in the run folder. "
                           f"Retrain in a new folder with a smaller --lr (this run: {cfg['lr_start']:g}) or stronger "
                           "forcing (--forcing gtf --alpha 0.3)")
    return 0
