"""``dsrecon generate RUN --steps N --out x.npy``: a free-running series of a fitted run, in the data's units.

RUN is a run folder of ``dsrecon fit`` (its ``reconstruction.pt``) or a reconstruction file. The
series starts from the first training observation the run kept, or from the first samples of
``--x0 FILE``; it is written as an ``(N_steps, N)`` float64 ``.npy`` file in the units of the
fitted data (z-scored coordinates for a simulated benchmark system). An existing ``--out`` is
never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse

from dsrecon.cli.options import check_array_output, positive_int, read_samples, write_array


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("generate", help="free-running series of a fitted run, in the data's units (.npy)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run folder of `dsrecon fit` (or its reconstruction.pt)")
    p.add_argument("--steps", type=positive_int, required=True, help="number of time steps to generate")
    p.add_argument("--out", required=True, help="output .npy file, shape (steps, N)")
    p.add_argument("--x0", metavar="FILE", help="start from the first sample(s) of this file (data units; "
                   "a delay-embedded run needs max(delays) + 1 samples)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    return p


def run(args) -> int:
    from dsrecon.reconstruction import load_reconstruction

    out = check_array_output(args.out, args.force)
    rec = load_reconstruction(args.run)
    x0 = None
    if args.x0 is not None:
        start = read_samples(args.x0, None, "--x0")  # (T, N)
        span = rec.transform.span
        if start.shape[1] != rec.transform.n_channels or start.shape[0] < span:
            raise ValueError(f"--x0 {args.x0} has shape {start.shape}; the run was fitted on "
                             f"{rec.transform.describe_channels()} and starts from {span} sample(s)")
        x0 = start[:span] if span > 1 else start[0]
    x = rec.generate(args.steps, x0)
    write_array(out, x.numpy())
    print(f"wrote {out}: {x.shape[0]} steps x {x.shape[1]} channel(s) ({', '.join(rec.transform.channels)}), "
          f"data units, from {'--x0 ' + args.x0 if args.x0 else 'the first training observation'}; {rec!r}")
    return 0
