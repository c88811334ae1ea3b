"""``dsrecon analyze RUN_DIR``: fixed points, cycles, attractors and basins of a trained shPLRNN.

The model comes from the run's checkpoint (``RUN_DIR/checkpoints/last.pt``, else
``RUN_DIR/checkpoint.pt``). Data units come from the run: a registered system's training
trajectory is rebuilt from the stored data spec (its mean/std, as ``dsrecon fit`` made it); a file
run recorded its training mean/std. Without them, results are given in the model's (z-scored) units.

What it does:
* fixed points and cycles of the periods ``--periods`` by the region search (started from the
  regions of the model's own orbit and from random ones; ``--n-outer``/``--n-inner`` trials);
* the attractors reached from ``--initial`` initial conditions (half inferred from data points,
  half uniform in 1.5 x the box that holds the model's orbit and the cycles found), i.e. whether
  the model is multistable;
* a basin map on the slice through that box's centre along latent coordinates ``--basin-axes``
  (for the identity observation model, coordinates 0..N-1 are the observed, z-scored channels);
* with ``--sweep NAME[:INDEX]=START:STOP:COUNT`` a bifurcation sweep over one parameter (an entry
  when INDEX is given, e.g. ``h1:0=-0.2:0.2:21``; else a factor on the whole tensor, e.g.
  ``W1=0.8:1.2:21``).

Output: ``analysis.json`` and the figures go to a new folder ``RUN_DIR/analysis`` (``analysis-2``,
... when it exists); ``--out DIR`` names the folder instead and is refused if it already holds any
of them. Nothing the run already has is overwritten.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dsrecon.cli.options import check_output_folder, positive_int, run_checkpoint

OUTPUTS = ("analysis.json", "cycles.png", "basins.png", "bifurcation.png")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "analyze",
        help="fixed points, cycles, attractors and basins of a trained piecewise-linear model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder from `dsrecon fit` (or a checkpoint .pt file)")
    p.add_argument("--periods", type=positive_int, nargs="+", default=[1, 2], help="cycle periods (default 1 2)")
    p.add_argument("--n-outer", type=positive_int, default=200, help="search trials per period (default 200)")
    p.add_argument("--n-inner", type=positive_int, default=50, help="region moves per trial (default 50)")
    p.add_argument("--initial", type=positive_int, default=200,
                   help="initial conditions for the attractor report (default 200)")
    p.add_argument("--basin-resolution", type=int, default=50,
                   help="grid points per side of the basin map (default 50; 0 skips it)")
    p.add_argument("--basin-axes", type=int, nargs=2, default=[0, 1], metavar=("I", "J"),
                   help="latent coordinates spanning the basin slice (default 0 1)")
    p.add_argument("--transient", type=positive_int, default=3000,
                   help="steps before an orbit is classified (default 3000)")
    p.add_argument("--sweep", metavar="NAME[:INDEX]=START:STOP:COUNT", help="bifurcation sweep (see above)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: a new RUN_DIR/analysis folder)")
    p.add_argument("--no-plots", action="store_true", help="write analysis.json only")
    p.add_argument("--seed", type=int, default=0, help="seed of the random search starts and initial conditions")
    return p


def _run_data(extra: dict):
    """``(test trajectory or None, mean or None, std or None, note)`` in the model's coordinates."""
    spec, meta = extra.get("data") or {}, extra.get("data_meta") or {}
    if spec.get("kind") == "system":
        from dsrecon.systems import simulate_batch

        train, test = simulate_batch(spec["source"], 2, spec["n_steps"], seed=spec["seed"], noise=spec["noise"])
        return test, np.asarray(train.meta["mean"]), np.asarray(train.meta["std"]), f"{spec['source']} mean/std"
    if spec.get("kind") == "file":
        from dsrecon.preparation import file_split

        test = file_split(spec)[1]
        if "mean" in meta and len(meta.get("delays", [0])) <= 1:
            return test, np.asarray(meta["mean"]), np.asarray(meta["std"]), "the run's training mean/std"
        return test, None, None, "model units (the run is delay-embedded: no per-coordinate data units)"
    return None, None, None, "model units (the run recorded no data spec)"


def _parse_sweep(text: str):
    """``NAME[:INDEX]=START:STOP:COUNT`` -> (name, index or None, values)."""
    try:
        left, right = text.split("=")
        name, _, index = left.partition(":")
        start, stop, count = right.split(":")
        values = np.linspace(float(start), float(stop), int(count))
        idx = tuple(int(i) for i in index.split(",")) if index else None
    except ValueError as err:
        raise ValueError(f"--sweep {text!r}: expected NAME[:INDEX]=START:STOP:COUNT, e.g. h1:0=-0.2:0.2:21 or "
                         "W1=0.8:1.2:21") from err
    if len(values) < 2:
        raise ValueError(f"--sweep {text!r}: COUNT must be at least 2")
    return name, idx, values


def _output_folder(args, run_dir: Path) -> Path:
    if args.out:
        out = check_output_folder(args.out, "--out")
        clash = [n for n in OUTPUTS if (out / n).exists()]
        if clash:
            raise ValueError(f"--out {out} already holds {', '.join(clash)}; analyze never overwrites files: "
                             "choose another --out folder or move those files")
        return out
    base = run_dir if run_dir.is_dir() else run_dir.parent
    if base.name == "checkpoints":
        base = base.parent
    out, k = base / "analysis", 2
    while out.exists():
        out, k = base / f"analysis-{k}", k + 1
    return out


def run(args) -> int:
    import torch

    from dsrecon.analysis.basins import basin_map, find_attractors
    from dsrecon.analysis.bifurcation import bifurcation_sweep
    from dsrecon.analysis.regions import piecewise_linear_map
    from dsrecon.analysis.search import find_cycles
    from dsrecon.checkpoint import load_checkpoint, write_json

    sweep = _parse_sweep(args.sweep) if args.sweep else None
    run_dir = Path(args.run_dir)
    ckpt = run_checkpoint(run_dir)
    model, state = load_checkpoint(ckpt)
    piecewise_linear_map(model)  # fails early, with the valid model names, for LEM/RNN/LSTM/GRU
    M = model.state_dim
    if not all(0 <= a < M for a in args.basin_axes) or args.basin_axes[0] == args.basin_axes[1]:
        raise ValueError(f"--basin-axes must be two different latent coordinates in 0..{M - 1}, got {args.basin_axes}")
    extra = (state.get("config") or {}).get("extra") or {}
    test, mean, std, units_note = _run_data(extra)
    out = _output_folder(args, run_dir)
    print(f"dsrecon analyze: {model.name} (M = {M}) from {ckpt}; data units: {units_note}")

    rng = np.random.default_rng(args.seed)
    with torch.no_grad():
        if test is not None:
            x0 = torch.as_tensor(test.x[0], dtype=next(model.parameters()).dtype)
            z = model.initial_state(x0[None])
        else:
            z = torch.zeros(1, M, dtype=next(model.parameters()).dtype)
        orbit = [z]
        for _ in range(2000 + 1999):
            orbit.append(model.step(orbit[-1]))
        orbit = torch.cat(orbit[2000:]).double()  # (2000, M), past a transient
    orbit_ok = bool(torch.isfinite(orbit).all())
    starts = orbit if orbit_ok else None

    result: dict = {"checkpoint": str(ckpt), "data_units": units_note, "cycles": {}}
    cycles = []
    for k in args.periods:
        t0 = time.perf_counter()
        found = find_cycles(model, k, n_outer=args.n_outer, n_inner=args.n_inner, starts=starts, seed=args.seed,
                            data_mean=mean, data_std=std)
        print(f"period {k}: {len(found)} found in {time.perf_counter() - t0:.2f} s")
        for c in found:
            lead = np.array2string(np.abs(c.eigenvalues[:3]), precision=4)
            print(f"  {c.kind:28s} data units {np.array2string(c.data[0], precision=3)}  |eigenvalues| {lead}")
        result["cycles"][str(k)] = [c.to_dict() for c in found]
        cycles += found

    # the box holding the orbit and every cycle found: initial conditions and the basin slice cover it
    known = [orbit.numpy()] if orbit_ok else []
    known += [c.latent for c in cycles]
    known = np.concatenate(known) if known else np.zeros((1, M))
    center = (known.max(axis=0) + known.min(axis=0)) / 2
    spread = (known.max(axis=0) - known.min(axis=0)) / 2
    spread = np.maximum(spread, 0.1 * spread.max())
    spread = np.where(spread > 1e-6, spread, 1.0)  # an orbit on a lone fixed point has no extent
    n_data = args.initial // 2 if test is not None else 0
    initial = [center + rng.uniform(-1.5, 1.5, size=(args.initial - n_data, M)) * spread]
    if n_data:
        rows = rng.choice(test.n_steps, size=n_data, replace=False)
        with torch.no_grad():
            x = torch.as_tensor(test.x[rows], dtype=next(model.parameters()).dtype)
            initial.append(model.initial_state(x).double().numpy())
    report = find_attractors(model, np.concatenate(initial), n_transient=args.transient, data_mean=mean, data_std=std)
    print(report.summary())
    result["attractors"] = report.to_dict()

    basins = None
    if args.basin_resolution:
        i, j = args.basin_axes
        t0 = time.perf_counter()
        basins = basin_map(model, center, axes=(i, j), extent=(1.5 * spread[i], 1.5 * spread[j]),
                           resolution=args.basin_resolution, n_transient=args.transient, data_mean=mean, data_std=std)
        print(f"basin map {args.basin_resolution} x {args.basin_resolution} in {time.perf_counter() - t0:.0f} s: "
              f"{len(basins.report.attractors)} attractor(s), {basins.report.n_divergent} diverged")
        result["basins"] = {"axes": [i, j], "center": center.tolist(), "a": basins.a.tolist(), "b": basins.b.tolist(),
                            "labels": basins.labels.tolist(), **basins.report.to_dict()}
    bif = None
    if sweep is not None:
        name, index, values = sweep
        bif = bifurcation_sweep(model, name, values, index=index, z0=orbit[-1].numpy() if orbit_ok else None,
                                periods=tuple(args.periods), data_mean=mean, data_std=std,
                                dt=test.dt if test is not None else None, seed=args.seed)
        result["bifurcation"] = bif.to_dict()
        print(f"bifurcation sweep over {bif.parameter}: {len(values)} values")

    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / "analysis.json", result).name]
    if not args.no_plots:
        written += _plots(model, test, mean, std, cycles, basins, bif, out)
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def _plots(model, test, mean, std, cycles, basins, bif, out: Path) -> list[str]:
    try:
        import matplotlib  # noqa: F401

        from dsrecon.analysis import figures
    except ImportError as err:
        print(f"plots skipped: {err}")
        return []
    from dsrecon.rollout import generate

    made = []
    to_data = (lambda x: x * std + mean) if mean is not None else (lambda x: x)
    jobs = []
    if test is not None:
        x_model = generate(model, test.x[0], min(test.n_steps, 20_000)).double().numpy()
        jobs.append(("cycles.png", figures.plot_cycles, (to_data(test.x[:20_000]), cycles),
                     {"x_model": to_data(x_model)}))
    if basins is not None:
        jobs.append(("basins.png", figures.plot_basins, (basins,), {"cycles": cycles}))
    if bif is not None:
        jobs.append(("bifurcation.png", figures.plot_bifurcation, (bif,), {}))
    for name, func, fargs, kwargs in jobs:
        try:
            func(*fargs, out / name, **kwargs)
            made.append(name)
        except (ValueError, RuntimeError) as err:  # one failed plot must not hide the results
            print(f"{name} not written: {err}")
    return made
