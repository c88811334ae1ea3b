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

Output: ``report.json`` and the plots go to a new folder ``RUN_DIR/eval-<test data name>`` (with
``-2``, ``-3``, ... when it exists), so the fit's own files (``metrics.json``, ``attractor.png``,
...) and earlier evaluations are never overwritten; ``--out DIR`` names the folder instead and is
refused if it already holds a report or plot. The data width is checked against the model before
any standardization.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dsrecon.cli.options import check_output_folder, positive_float, positive_int, run_checkpoint

# what evaluate writes; none of them may exist in the output folder beforehand
OUTPUTS = ("report.json", "attractor.png", "spectra.png", "report.png", "lyapunov.png")


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
    p.add_argument("--dt", type=positive_float, help="sampling interval of TEST (default: from the file or 1)")
    p.add_argument("--standardize", choices=("auto", "none", "run", "self"), default="auto",
                   help="how TEST is brought into the model's coordinates (see above; default auto)")
    p.add_argument("--out", metavar="DIR", help="where report.json and the plots go (default: a new folder "
                   "RUN_DIR/eval-<test data name>; an existing report or plot is never overwritten)")
    p.add_argument("--no-lyapunov", action="store_true", help="skip the model's Lyapunov spectrum")
    p.add_argument("--lyapunov-steps", type=positive_int, default=10_000, help="QR steps (default 10000)")
    p.add_argument("--lambda-data", action="store_true",
                   help="also estimate lambda_max of data and generated series (Rosenstein)")
    p.add_argument("--no-plots", action="store_true", help="write report.json only")
    p.add_argument("--device", default=None, help="torch device for model and metrics (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the GMM D_stsp samples (N >= 6)")
    return p


def _run_test_split(spec: dict):
    """The run's test trajectory, rebuilt from the data spec `dsrecon fit` stored."""
    if spec.get("kind") == "system":
        from dsrecon.systems import simulate_batch

        return simulate_batch(spec["source"], 2, spec["n_steps"], seed=spec["seed"], noise=spec["noise"])[1]
    if spec.get("kind") == "file":
        from dsrecon.preparation import file_split

        return file_split(spec)[1]
    raise ValueError(f"the run's data spec {spec!r} is not one `dsrecon fit` writes; pass --data TEST")


def _test_data(args, extra: dict, obs_dim: int):
    """The test trajectory in the model's coordinates, its display name and how it was mapped.

    Every shape is checked before any transform: a series of the wrong width is rejected, never
    broadcast against the run's mean/std. With ``run`` the raw channels are checked against the
    run's training statistics, then standardized and delay-embedded as the run was
    (:func:`dsrecon.preparation.to_model_coordinates`), and the result against the model.
    """
    from dsrecon.data import load, standardize

    if args.data is None:
        if "data" not in extra:
            raise ValueError("the run recorded no data spec; pass --data TEST")
        test = _run_test_split(extra["data"])
        _check_width(test, obs_dim, "the run's own test split")
        return test, "test-split", "the run's own test split"
    test = load(args.data, dataset=args.dataset, dt=args.dt)
    name = test.name or Path(args.data).stem
    meta = extra.get("data_meta") or {}
    mode = args.standardize
    if mode == "auto":
        mode = "run" if "mean" in meta and "std" in meta else "none"
    if mode == "run":
        if "mean" not in meta or "std" not in meta:
            raise ValueError("--standardize run: the run recorded no training mean/std (extra.data_meta); "
                             "use --standardize self or none")
        from dsrecon.preparation import to_model_coordinates

        mean, std = np.asarray(meta["mean"], dtype=np.float64), np.asarray(meta["std"], dtype=np.float64)
        if mean.shape != std.shape or mean.ndim != 1 or not np.all(std > 0):
            raise ValueError(f"the run's recorded training mean/std (shapes {mean.shape}, {std.shape}) are not "
                             "one positive std per channel; use --standardize self or none")
        if len(meta.get("delays", [0])) <= 1:  # no embedding: the raw channels are the model's
            _check_width(test, obs_dim, f"--data {args.data}")
        elif test.n_dims != mean.size:
            raise ValueError(f"--data {args.data} has N = {test.n_dims} column(s), but the run was standardized on "
                             f"{mean.size}; give the raw data with the channels the run was fitted on")
        test = to_model_coordinates(test, meta)
        _check_width(test, obs_dim, f"--data {args.data} in the run's coordinates")
        how = "standardized with the run's training mean/std"
        return test, name, how + (f", delays {meta['delays']}" if len(meta.get("delays", [0])) > 1 else "")
    _check_width(test, obs_dim, f"--data {args.data}")
    if mode == "self":
        return standardize(test), name, "standardized with its own mean/std"
    return test, name, "used as stored"


def _check_width(test, obs_dim: int, what: str) -> None:
    if test.n_dims != obs_dim:
        raise ValueError(f"{what} has N = {test.n_dims} column(s), but the model observes N = {obs_dim}; give "
                         f"test data with {obs_dim} columns in the order the model was trained on")


def _output_folder(args, run_dir: Path, name: str) -> Path:
    """Where the report and plots go: ``--out`` if it holds none of them, else a new ``eval-<name>`` folder
    next to the checkpoint, so that the fit's own files and earlier evaluations are never overwritten."""
    if args.out:
        out = check_output_folder(args.out, "--out")
        clash = [n for n in OUTPUTS if (out / n).exists()]
        if clash:
            raise ValueError(f"--out {out} already holds {', '.join(clash)}; evaluate never overwrites files: "
                             "choose another --out folder or move those files")
        return out
    base = run_dir if run_dir.is_dir() else run_dir.parent
    if base.name == "checkpoints":  # RUN_DIR/checkpoints/last.pt: the evaluation belongs to the run
        base = base.parent
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "data"
    out, k = base / f"eval-{slug}", 2
    while out.exists():
        out, k = base / f"eval-{slug}-{k}", k + 1
    return out


def run(args) -> int:
    from dsrecon._device import check_device
    from dsrecon.checkpoint import load_checkpoint
    from dsrecon.evaluation import EvalConfig, evaluate

    if args.device is not None:
        check_device(args.device, "--device")
    run_dir = Path(args.run_dir)
    ckpt = run_checkpoint(run_dir)
    model, state = load_checkpoint(ckpt, device=args.device)
    extra = (state.get("config") or {}).get("extra") or {}
    test, name, how = _test_data(args, extra, model.obs_dim)
    config = EvalConfig(lyapunov=not args.no_lyapunov, lyapunov_steps=args.lyapunov_steps,
                        lambda_max_data=args.lambda_data, seed=args.seed, device=args.device)
    out = _output_folder(args, run_dir, name)
    print(f"dsrecon evaluate: {model.name} from {ckpt} on {test.name or args.data} {test.x.shape} ({how})")

    report = evaluate(model, test, config)
    out.mkdir(parents=True, exist_ok=True)
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
