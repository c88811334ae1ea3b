"""``dsrecon evaluate RUN_DIR [--data TEST]``: score a trained run on test data, write report and plots.

The model comes from the run's checkpoint (``RUN_DIR/checkpoints/last.pt`` as written by
``dsrecon fit``, else ``RUN_DIR/checkpoint.pt``; RUN_DIR may also be a ``.pt`` file).

Test data and coordinates: the model works in the coordinates it was trained in.
* Without ``--data`` the run's own test split is rebuilt from the data spec that ``dsrecon fit``
  stored in the checkpoint (``extra.data``), exactly as fit made it.
* With ``--data`` (a file or a registered name, read by ``dsrecon.load``) the series is used as
  stored (``--standardize none``, right for files that are already z-scored like the GTF paper's);
  ``--standardize run`` applies the training mean/std recorded in the run (``extra.data_meta``
  with ``mean``/``std``); ``--standardize self`` z-scores the test data with its own statistics
  (an approximation when no training statistics were recorded). ``auto`` (default) is ``run``
  when the run recorded them, else ``none``. ``run`` also applies the run's delay embedding
  (``extra.data_meta.delays``), so a raw scalar file meets a model fitted on its embedding.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained run on test data (D_stsp, D_H, PE, Lyapunov spectrum); write report and plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder from `dsrecon fit` (or a checkpoint .pt file)")
    p.add_argument("--data", metavar="TEST", help="test data: file (.npy/.npz/.csv/.h5) or registered name; "
                                                   "default: the run's own test split")
    p.add_argument("--dataset", help="array key (.npz) or dataset path (.h5) inside TEST")
    p.add_argument("--dt", type=float, help="sampling interval of TEST (default: from the file or 1)")
    p.add_argument("--standardize", choices=("auto", "none", "run", "self"), default="auto",
                   help="how TEST is brought into the model's coordinates (see above; default auto)")
    p.add_argument("--out", metavar="DIR", help="where report.json and the plots go (default: RUN_DIR)")
    p.add_argument("--no-lyapunov", action="store_true", help="skip the model's Lyapunov spectrum")
    p.add_argument("--lyapunov-steps", type=int, default=10_000, help="QR steps (default 10000)")
    p.add_argument("--lambda-data", action="store_true",
                   help="also estimate lambda_max of data and generated series (Rosenstein)")
    p.add_argument("--no-plots", action="store_true", help="write report.json only")
    p.add_argument("--device", default=None, help="torch device for model and metrics (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the GMM D_stsp samples (N >= 6)")
    return p


def _checkpoint_path(run_dir: Path) -> Path:
    if run_dir.is_file():
        return run_dir
    for candidate in (run_dir / "checkpoints" / "last.pt", run_dir / "checkpoint.pt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no checkpoint in {run_dir}: expected checkpoints/last.pt (written by `dsrecon fit`) or checkpoint.pt"
    )


def _run_test_split(spec: dict):
    """The run's test trajectory, rebuilt from the data spec `dsrecon fit` stored."""
    if spec.get("kind") == "system":
        from dsrecon.systems import simulate_batch

        return simulate_batch(spec["source"], 2, spec["n_steps"], seed=spec["seed"], noise=spec["noise"])[1]
    if spec.get("kind") == "file":
        from dsrecon.preparation import file_split

        return file_split(spec)[1]
    raise ValueError(f"the run's data spec {spec!r} is not one `dsrecon fit` writes; pass --data TEST")


def _test_data(args, extra: dict):
    from dsrecon.data import load, standardize

    if args.data is None:
        if "data" not in extra:
            raise ValueError("the run recorded no data spec; pass --data TEST")
        return _run_test_split(extra["data"]), "the run's own test split"
    test = load(args.data, dataset=args.dataset, dt=args.dt)
    meta = extra.get("data_meta") or {}
    mode = args.standardize
    if mode == "auto":
        mode = "run" if "mean" in meta and "std" in meta else "none"
    if mode == "run":
        if "mean" not in meta or "std" not in meta:
            raise ValueError("--standardize run: the run recorded no training mean/std (extra.data_meta); "
                             "use --standardize self or none")
        from dsrecon.preparation import to_model_coordinates

        test = to_model_coordinates(test, meta)
        how = "standardized with the run's training mean/std"
        return test, how + (f", delays {meta['delays']}" if len(meta.get("delays", [0])) > 1 else "")
    if mode == "self":
        return standardize(test), "standardized with its own mean/std"
    return test, "used as stored"


def run(args) -> int:
    from dsrecon.checkpoint import load_checkpoint
    from dsrecon.evaluation import EvalConfig, evaluate

    run_dir = Path(args.run_dir)
    ckpt = _checkpoint_path(run_dir)
    model, state = load_checkpoint(ckpt, device=args.device)
    extra = (state.get("config") or {}).get("extra") or {}
    test, how = _test_data(args, extra)
    if test.n_dims != model.obs_dim:
        raise ValueError(f"the test data has N = {test.n_dims} dimensions, the model observes {model.obs_dim}")
    out = Path(args.out) if args.out else (run_dir if run_dir.is_dir() else run_dir.parent)
    print(f"dsrecon evaluate: {model.name} from {ckpt} on {test.name or args.data} {test.x.shape} ({how})")

    config = EvalConfig(lyapunov=not args.no_lyapunov, lyapunov_steps=args.lyapunov_steps,
                        lambda_max_data=args.lambda_data, seed=args.seed, device=args.device)
    report = evaluate(model, test, config)
    path = report.save(out / "report.json")
    print(report)
    written = [path.name]
    if not args.no_plots:
        written += _plots(report, test, out)
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def _plots(report, test, out: Path) -> list[str]:
    try:
        from dsrecon import plotting

        import matplotlib  # noqa: F401
    except ImportError as err:
        print(f"plots skipped: {err}")
        return []
    n = min(test.n_steps, 20_000)
    jobs = [("attractor.png", plotting.plot_attractor, (test.x[:n], report.generated[:n])),
            ("spectra.png", plotting.plot_spectra, (test.x, report.generated)),
            ("report.png", plotting.plot_report, (report, test.x))]
    if report.lyapunov is not None:
        jobs.append(("lyapunov.png", plotting.plot_lyapunov_convergence, (report.lyapunov,)))
    made = []
    for name, func, fargs in jobs:
        kwargs = {"dt": test.dt} if func is plotting.plot_spectra else {}
        try:
            func(*fargs, out / name, **kwargs)
            made.append(name)
        except (ValueError, RuntimeError) as err:  # one failed plot must not hide the report
            print(f"{name} not written: {err}")
    return made
