"""``dsrecon forecast RUN --context FILE --horizon H --out y.npy``: predict what follows a stretch of data.

The fitted model is forced with the whole context (teacher forcing: its latent state synchronizes
with the data), then runs freely for H steps (``Reconstruction.forecast``). The context file holds
``(T, N)`` samples in the units of the fitted data and the channels in the order it was fitted on;
row ``j`` of the output, ``(H, N)`` float64 in the same units, predicts the sample ``j + 1`` steps
after the context's last. An existing ``--out`` is never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse

from dsrecon.cli.options import check_array_output, positive_int, read_samples, unit_interval, write_array


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("forecast", help="forecast H steps after a context window, in the data's units (.npy)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run folder of `dsrecon fit` (or its reconstruction.pt)")
    p.add_argument("--context", required=True, metavar="FILE",
                   help="the context window (T, N): .npy, .npz, .csv/.txt or .h5 (as dsrecon.load reads)")
    p.add_argument("--dataset", help="array key (.npz) or dataset path (.h5) inside the context file")
    p.add_argument("--horizon", type=positive_int, required=True, help="number of steps to predict")
    p.add_argument("--out", required=True, help="output .npy file, shape (horizon, N)")
    p.add_argument("--alpha", type=unit_interval, default=1.0,
                   help="forcing strength while reading the context (default 1: teacher forcing)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    return p


def run(args) -> int:
    from dsrecon.reconstruction import load_reconstruction

    out = check_array_output(args.out, args.force)
    rec = load_reconstruction(args.run)
    context = read_samples(args.context, args.dataset, "--context")  # (T, N)
    t = rec.transform
    if context.shape[1] != t.n_channels:
        raise ValueError(f"--context {args.context} has N = {context.shape[1]} column(s), but the run was fitted "
                         f"on {t.describe_channels()}; give a context with those columns, in that order")
    if context.shape[0] < t.span:
        raise ValueError(f"--context {args.context} has T = {context.shape[0]} samples; the run's delay embedding "
                         f"{list(t.delays)} needs at least {t.span}")
    y = rec.forecast(context, args.horizon, alpha=args.alpha)
    write_array(out, y.numpy())
    print(f"wrote {out}: {y.shape[0]} steps x {y.shape[1]} channel(s) after a context of {context.shape[0]} "
          f"samples, data units; {rec!r}")
    return 0
