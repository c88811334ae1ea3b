"""``dsrecon simulate NAME --steps N --out FILE.h5``: write a benchmark trajectory to HDF5."""

from __future__ import annotations

import argparse
import time

from dsrecon.cli.options import positive_int


def _param(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        if not sep or not key:
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER (e.g. F=8), got {text!r}") from None


def add_parser(subparsers):
    from dsrecon.systems import SYSTEMS

    p = subparsers.add_parser(
        "simulate",
        help="simulate a benchmark system and write it to HDF5",
        description="Simulate a benchmark system (protocol of docs/method.md section 1: random initial condition, "
        "50-unit transient, dopri5 at rtol=atol=1e-9, z-scored) and write dataset 'x' (T, N) "
        "with every setting as an attribute. Results are cached (DSRECON_CACHE_DIR).",
    )
    p.add_argument("name", help=f"system: {', '.join(SYSTEMS)}")
    p.add_argument("--steps", type=positive_int, default=100_000, help="time steps T (default 100000)")
    p.add_argument("--out", required=True, help="output file (.h5)")
    p.add_argument("--seed", type=int, default=0, help="initial-condition and noise seed (default 0)")
    p.add_argument("--dt", type=float, default=None, help="sampling interval (default: the system's)")
    p.add_argument("--noise", type=float, default=0.0, help="observation noise, fraction of std")
    p.add_argument("--transient", type=float, default=50.0, help="discarded time units (default 50)")
    p.add_argument("--no-standardize", action="store_true", help="keep raw system coordinates")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="K=V",
                   help="parameter override, repeatable (e.g. --param N=10 --param F=8)")
    p.add_argument("--method", default="dopri5", help="torchdiffeq solver (default dopri5)")
    p.add_argument("--rtol", type=float, default=1e-9)
    p.add_argument("--atol", type=float, default=1e-9)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from dsrecon._device import check_device
    from dsrecon.systems import simulate

    check_device(args.device, "--device")
    if not args.out.lower().endswith((".h5", ".hdf5")):
        raise ValueError(f"--out must name an .h5 or .hdf5 file, got {args.out!r}")
    start = time.perf_counter()
    traj = simulate(
        args.name, args.steps, dt=args.dt, seed=args.seed, transient=args.transient,
        standardize=not args.no_standardize, noise=args.noise, params=dict(args.param) or None,
        device=args.device, method=args.method, rtol=args.rtol, atol=args.atol,
        cache=not args.no_cache, progress=False if args.quiet else None,
    )
    path = traj.save(args.out)
    params = ", ".join(f"{k}={v:g}" for k, v in traj.meta["params"].items())
    print(f"wrote {path}")
    print(
        f"{traj.name} ({params}): T={traj.n_steps} x N={traj.n_dims}, dt={traj.dt:g}, "
        f"seed={args.seed}, {'z-scored' if traj.is_standardized else 'raw'}, noise={args.noise:g}, "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0
