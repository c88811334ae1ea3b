"""``dsrecon fit DATA``: train a model on a time series, evaluate it, save everything in a run folder.

The run folder (default ``runs/<name>-<timestamp>``) holds ``config.json`` (model, forcing,
training settings and the data source), ``history.csv`` (per-epoch diagnostics),
``checkpoints/last.pt`` (load with ``dsrecon.load_checkpoint``), ``metrics.json`` (evaluation on
held-out data) and plots when matplotlib is installed. ``dsrecon fit --resume RUN_DIR`` continues an
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
import json
import math
import time
from importlib import import_module
from pathlib import Path

from dsrecon.cli.options import (check_output_folder, nonnegative_float, open_fraction, positive_float, positive_int,
                                 unit_interval)

# Default epochs of the CLI: the paper trains up to 5000. With the fused training path (backend
# "auto", ~2-3 ms CPU per update for M=10, L=50, B=16, T=200) 600 epochs x 50 updates take about
# 3 minutes on a 2-core CPU; measured 2026-11-23: 172 s of training, then D_stsp 0.102, D_H 0.048,
# PE(20) 0.002 on an independent 100,000-step test trajectory. A run this short needs the faster
# learning-rate schedule set below (3e-3 -> 1e-5).
DEFAULT_EPOCHS = 600
# Defaults chosen by short Lorenz-63 runs (100 epochs, lr 3e-3 -> 1e-5, L = 50; full 100k-step test):
# M = 3 with aGTF or GTF(0.1) ended on limit cycles or coexisting fixed points (D_stsp 6-16), while
# M = 10 with GTF(0.1) reached D_stsp 1.5, D_H 0.15. alpha = 0.1 is ~1 - 1/G for the G ~ 1.1-1.3
# measured along Lorenz-63 data; adaptive GTF starts at 1 and decays too slowly for a short run.
DEFAULT_LATENT = 10
DEFAULT_ALPHA = 0.1
SYSTEM_NAMES = ("lorenz63", "rossler", "lorenz96")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit", help="train a model (default: clipped shPLRNN with adaptive GTF) on a time series",
        description="Train a DSR model on DATA, evaluate it on held-out data and save the run folder. "
                    "DATA is a benchmark system (lorenz63, rossler, lorenz96: simulated train and an "
                    "independent test trajectory) or anything dsrecon.load accepts (file path, santafe: "
                    "z-scored, split chronologically).")
    p.add_argument("data", nargs="?", metavar="DATA", help="system name or data file (omit with --resume)")
    g = p.add_argument_group("data")
    g.add_argument("--n-steps", type=positive_int, default=100_000, help="steps simulated for a system (default 100000)")
    g.add_argument("--noise", type=nonnegative_float, default=0.0, help="observation noise of a simulated system, fraction of std")
    g.add_argument("--test-fraction", type=open_fraction, default=0.2, help="held-out final part of a file (default 0.2)")
    g.add_argument("--dt", type=positive_float,
                   help="sampling interval of a file in its time unit (default: the file's h5 'dt' attribute or "
                        "csv 't'/'time' column, else unknown: exponents per step)")
    g.add_argument("--embed", default="auto", metavar="auto|none|D:TAU",
                   help="delay embedding of a file: auto (default: series with N < 3 channels, delay by mutual "
                        "information, dimension by Cao's method), none, or D delays of TAU samples per channel")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="shplrnn", help="registered model name (default shplrnn)")
    g.add_argument("--latent-dim", type=positive_int,
                   help=f"shPLRNN latent dimension M (default max(N, {DEFAULT_LATENT}): extra unobserved "
                        f"coordinates reached a far better Lorenz-63 attractor in a short run than M = N; for "
                        f"N > 16 channels the principal components explaining 90%% of the variance, in [10, 32], "
                        f"with an affine observation)")
    g.add_argument("--hidden-dim", type=positive_int, default=50, help="hidden width L (default 50)")
    g.add_argument("--unclipped", action="store_true", help="plain instead of clipped shPLRNN")
    g.add_argument("--observation", choices=("identity", "affine"),
                   help="shPLRNN observation (default identity; affine when M < N)")
    g = p.add_argument_group("forcing")
    g.add_argument("--forcing", choices=("gtf", "agtf", "stf", "tf", "none"), default="gtf",
                   help="fixed GTF (default), adaptive GTF, sparse TF, teacher forcing, none")
    g.add_argument("--alpha", type=unit_interval,
                   help=f"GTF alpha (gtf, default {DEFAULT_ALPHA}) or starting alpha (agtf, default 1)")
    g.add_argument("--tau", type=positive_int, help="STF interval in steps (default: ln2 / lambda_max of the data)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS, help=f"epochs (default {DEFAULT_EPOCHS})")
    g.add_argument("--batches-per-epoch", type=positive_int, default=50)
    g.add_argument("--batch-size", type=positive_int, default=16)
    g.add_argument("--seq-len", type=positive_int, default=200)
    g.add_argument("--lr", type=positive_float, default=3e-3,
                   help="initial learning rate (default 3e-3; the paper's 1e-3 suits its 5000-epoch runs)")
    g.add_argument("--lr-end", type=positive_float, default=1e-5,
                   help="final learning rate of the exponential decay (default 1e-5; paper 1e-6)")
    g.add_argument("--seed", type=int, default=0, help="seed of model initialization, windows, test data")
    g.add_argument("--device", default="cpu")
    g.add_argument("--val-every", type=positive_int, default=25, help="epochs between D_stsp/D_H validations")
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


def _load_data(spec: dict):
    """(train, test) Trajectories for a data spec stored in config.json."""
    if spec["kind"] == "system":
        from dsrecon.systems import simulate_batch

        train, test = simulate_batch(spec["source"], 2, spec["n_steps"], seed=spec["seed"], noise=spec["noise"])
        return train, test
    from dsrecon.preparation import file_split

    return file_split(spec)


def _run_meta(data_spec: dict, train) -> dict:
    """What the run records about its data: the spec that reloads it and, for a file, the training
    part's mean/std (original channels) and the delays, so that ``dsrecon evaluate RUN_DIR --data
    RAW_FILE`` maps a raw test file into the model's coordinates (a registered system is simulated
    already z-scored: nothing to map). ``train`` is the training part before delay embedding."""
    meta = {"data": data_spec}
    if data_spec["kind"] == "file" and "mean" in train.meta:
        meta["data_meta"] = {"mean": train.meta["mean"], "std": train.meta["std"],
                             "delays": list(data_spec.get("delays", [0]))}
    return meta


def _prepare(args, data_spec: dict):
    """Look at the data, decide embedding and latent size, print both; returns
    ``(train, test, unembedded train, summary dict, LatentChoice or None)``."""
    from dsrecon.inspection import inspect_data
    from dsrecon.preparation import apply_embedding, choose_embedding, choose_latent, parse_embed

    train, test = _load_data(data_spec)
    dt_known = train.meta.get("dt_known", True)
    summary = inspect_data(train.x, train.dt if dt_known else None)
    part = (f"training part, first {1 - data_spec['test_fraction']:.0%} of the file" if data_spec["kind"] == "file"
            else "training trajectory")
    print(f"{summary}\n  (estimated on the {part})")
    out = {"data": summary.to_dict(), "estimated_on": part}
    raw_train = train
    if data_spec["kind"] == "file":
        emb = choose_embedding(train, parse_embed(args.embed))
        data_spec["delays"] = list(emb.delays)
        train, test = apply_embedding(train, emb.delays), apply_embedding(test, emb.delays)
        print(f"embedding: {emb.reason}; model sees N = {train.n_dims}")
        out["embedding"] = emb.to_dict()
    elif args.embed != "auto":
        raise ValueError(f"--embed applies to data files; a benchmark system ({data_spec['source']}) is fully observed")
    latent = None
    if args.model == "shplrnn":
        latent = choose_latent(train, args.latent_dim, args.observation, DEFAULT_LATENT)
        print(f"latent: M = {latent.latent_dim}, {latent.observation} observation ({latent.reason})")
        out["latent"] = latent.to_dict()
    if data_spec["kind"] == "file":
        out["standardization"] = {"mean": raw_train.meta["mean"], "std": raw_train.meta["std"],
                                  "from": "training part only"}
    return train, test, raw_train, out, latent


def _model_kwargs(args, n: int, latent=None) -> dict:
    kw = {"obs_dim": n, "hidden_dim": args.hidden_dim, "seed": args.seed}
    if args.model == "shplrnn":
        kw.update(latent_dim=latent.latent_dim, clipped=not args.unclipped, observation=latent.observation)
    elif args.latent_dim is not None or args.unclipped or args.observation is not None:
        raise ValueError(f"--latent-dim, --unclipped and --observation apply to the shplrnn only, not {args.model!r}")
    return kw


def _forcing(args, train):
    from dsrecon.forcing import make_forcing

    kw = {}
    if args.alpha is not None:
        if args.forcing not in ("gtf", "agtf"):
            raise ValueError(f"--alpha applies to --forcing gtf or agtf, not {args.forcing}")
        kw = {"alpha": args.alpha} if args.forcing == "gtf" else {"alpha0": args.alpha}
    elif args.forcing == "gtf":
        kw = {"alpha": DEFAULT_ALPHA}
    if args.tau is not None and args.forcing != "stf":
        raise ValueError(f"--tau applies to --forcing stf, not {args.forcing}")
    if args.forcing == "stf":
        kw = {"tau": args.tau if args.tau is not None else _tau_from_data(train)}
    return make_forcing(args.forcing, **kw)


def _tau_from_data(train) -> int:
    """STF interval from the data's largest Lyapunov exponent per step (Rosenstein on coordinate 0)."""
    from dsrecon.forcing import choose_tau
    from dsrecon.rosenstein import rosenstein_lambda_max

    lam = rosenstein_lambda_max(train.x[:10_000, 0])  # per step
    if not lam > 0:
        raise ValueError(f"the data's lambda_max estimate is {lam:.3g} per step, not positive; pass --tau")
    tau = choose_tau(lam, 1.0)
    print(f"STF: lambda_max of the data ~ {lam:.4f} per step -> tau = {tau} steps")
    return tau


def _new_run_dir(name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = Path("runs") / f"{name}-{stamp}", 1
    while path.exists():
        path, k = Path("runs") / f"{name}-{stamp}-{k}", k + 1
    return path


def _evaluate(model, test, run_dir: Path):
    """Final metrics on the test trajectory: dsrecon.evaluate, or D_stsp / D_H where it cannot run;
    returns them with the Lyapunov result (None when not computed) for the plot."""
    from dsrecon.checkpoint import write_json

    try:
        from dsrecon.evaluation import evaluate

        report = evaluate(model, test)
    except (ImportError, ValueError) as err:  # missing module, or a model whose output it rejects
        out = {"note": f"dsrecon.evaluate failed ({type(err).__name__}: {err}); D_stsp and D_H only"}
        out.update(_basic_metrics(model, test))
        write_json(run_dir / "metrics.json", out)
        return out, None
    report.save(run_dir / "metrics.json")
    return report.to_dict(), report.lyapunov


def _basic_metrics(model, test) -> dict:
    """D_stsp and D_H by the paper's protocol; NaN for a metric undefined on the generated series."""
    from dsrecon.metrics import hellinger_distance, state_space_divergence
    from dsrecon.rollout import generate

    n = test.n_steps
    x_gen = generate(model, test.x[0], n + n // 4)[n // 4:].numpy()
    out = {}
    for key, metric in (("d_stsp", state_space_divergence), ("d_h", hellinger_distance)):
        try:
            out[key] = float(metric(test.x, x_gen))
        except ValueError:  # e.g. D_H of a model that collapsed to a fixed point
            out[key] = float("nan")
    return out


def _plots(model, test, history, run_dir: Path, lyapunov=None) -> list[str]:
    try:
        plotting = import_module("dsrecon.plotting")
        import matplotlib  # noqa: F401
    except ImportError as err:
        return [f"plots skipped ({err})"]
    from dsrecon.rollout import generate

    n = min(test.n_steps, 20_000)
    x_gen = generate(model, test.x[0], n + n // 4)[n // 4:].numpy()
    made = []
    jobs = [("plot_training_curves", "training.png", (history,)),
            ("plot_attractor", "attractor.png", (test.x[:n], x_gen)),
            ("plot_spectra", "spectra.png", (test.x[:n], x_gen))]
    if lyapunov is not None:  # labelled per time unit or per step by its own dt
        jobs.append(("plot_lyapunov_convergence", "lyapunov.png", (lyapunov,)))
    for func, name, args in jobs:
        try:
            getattr(plotting, func)(*args, run_dir / name)
            made.append(name)
        except Exception as err:  # a plot must never lose a finished run's results
            made.append(f"{name} failed ({type(err).__name__}: {err})")
    return made


def _stored_config(run_dir: Path) -> dict:
    """The settings of the run to resume: its checkpoint's, or config.json's when it has no checkpoint yet."""
    from dsrecon.checkpoint import check_resumable, read_checkpoint

    if not run_dir.is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no such run folder")
    ckpt = run_dir / "checkpoints" / "last.pt"
    if ckpt.exists():
        state = read_checkpoint(ckpt)
        check_resumable(state, ckpt)
        stored = state["config"]
    elif (run_dir / "config.json").is_file():
        try:
            stored = json.loads((run_dir / "config.json").read_text())
        except ValueError as err:
            raise ValueError(f"--resume {run_dir}: config.json is not valid JSON ({err}); start a new run "
                             "with --out") from None
    else:
        raise FileNotFoundError(f"--resume {run_dir}: no run there (no checkpoints/last.pt, no config.json); "
                                f"start one with `dsrecon fit DATA --out {run_dir}`")
    if not all(isinstance(stored.get(k) if isinstance(stored, dict) else None, dict) for k in ("model", "forcing", "train")):
        raise ValueError(f"--resume {run_dir}: the stored run config lacks its model, forcing or training settings; "
                         "start a new run with --out")
    if not isinstance(stored.get("extra"), dict) or "data" not in stored["extra"]:
        raise ValueError(f"--resume {run_dir}: the run records no data source (it was not started by `dsrecon "
                         "fit`); continue it from Python with dsrecon.train(..., run_dir=..., resume=True)")
    return stored


def _check_new_run_folder(run_dir: Path) -> None:
    """``--out`` must be new, empty, or a run folder whose run never reached a checkpoint (started over)."""
    from dsrecon.checkpoint import LOCK_NAME

    check_output_folder(run_dir, "--out")
    if not run_dir.exists():
        return
    if (run_dir / "checkpoints" / "last.pt").exists():
        raise ValueError(f"--out {run_dir} already holds a run; continue it with `dsrecon fit --resume {run_dir}`, "
                         "or choose a new --out folder")
    if (run_dir / "config.json").is_file():
        print(f"{run_dir} holds a run that stopped before its first checkpoint: starting it over")
        return
    others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise ValueError(f"--out {run_dir} exists and holds files that are not a dsrecon run ({shown}); fit would "
                         "write config.json, history.csv, metrics.json and plots there: choose a new or empty folder")


def _diverged(metrics: dict, result) -> str | None:
    """Why a finished run counts as diverged (None if it does not): non-finite loss, or a generated series
    on which neither D_stsp nor D_H is defined."""
    if not math.isfinite(result.final_loss):
        return f"its final training loss is {result.final_loss}"
    values = [metrics.get(k) for k in ("d_stsp", "d_h")]
    if all(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        return "its generated series is not finite (D_stsp and D_H are NaN)"
    return None


def run(args) -> int:
    from dsrecon.checkpoint import run_lock, write_json
    from dsrecon.forcing import make_forcing
    from dsrecon.models import make_model
    import torch

    from dsrecon.training import TrainConfig, train

    from dsrecon._device import check_device

    check_device(args.device, "--device")
    torch.set_num_threads(args.threads)  # also for the evaluation after training
    if args.resume:
        if args.data or args.out:
            raise ValueError("--resume RUN_DIR continues the stored run: give no DATA and no --out")
        run_dir = check_output_folder(args.resume, "--resume")
        stored = _stored_config(run_dir)
        data_spec = stored["extra"]["data"]
        train_data, test_data = _load_data(data_spec)
        raw_train = None
        model = make_model(stored["model"]["name"], **stored["model"]["config"])
        forcing = make_forcing(**stored["forcing"])
        cfg = TrainConfig.from_dict({**stored["train"], "device": args.device, "threads": args.threads})
    else:
        if not args.data:
            raise ValueError("give DATA (a system name such as lorenz63, or a data file), or --resume RUN_DIR")
        if args.out:
            _check_new_run_folder(Path(args.out))
        key = args.data.lower()
        if key in SYSTEM_NAMES:
            data_spec = {"kind": "system", "source": key, "n_steps": args.n_steps, "seed": args.seed,
                         "noise": args.noise}
            if args.dt is not None:
                raise ValueError(f"--dt applies to data files; {key} is simulated at its own dt")
        else:
            data_spec = {"kind": "file", "source": args.data, "test_fraction": args.test_fraction,
                         "standardize": "train"}
            if args.dt is not None:
                data_spec["dt"] = args.dt
        train_data, test_data, raw_train, summary, latent = _prepare(args, data_spec)
        model = make_model(args.model, **_model_kwargs(args, train_data.n_dims, latent))
        forcing = _forcing(args, train_data)
        cfg = TrainConfig(epochs=args.epochs, batches_per_epoch=args.batches_per_epoch,
                          batch_size=args.batch_size, seq_len=args.seq_len, lr_start=args.lr,
                          lr_end=min(args.lr_end, args.lr), seed=args.seed, device=args.device,
                          val_every=args.val_every, backend=args.backend, threads=args.threads)
        run_dir = Path(args.out) if args.out else _new_run_dir(train_data.name or Path(args.data).stem)
        if not ((run_dir / "config.json").exists() or (run_dir / "checkpoints" / "last.pt").exists()):
            write_json(run_dir / "data_summary.json", summary)  # an existing run is refused by train()
    print(f"dsrecon fit: {model.name} ({model.n_params} parameters) on {train_data.name} "
          f"{train_data.x.shape}, forcing {forcing!r}, {cfg.epochs} epochs -> {run_dir}")
    with run_lock(run_dir):  # one writer per run folder, from training to the last plot
        result = train(model, train_data, cfg, forcing, val_data=test_data, run_dir=run_dir,
                       resume=bool(args.resume), progress=not args.no_progress,
                       run_meta=stored["extra"] if args.resume else _run_meta(data_spec, raw_train))
        model.cpu()
        print(f"trained {result.epochs} epochs ({result.n_updates} updates) in {result.train_time_s:.0f} s; "
              f"final loss {result.final_loss:.4g}")
        t0 = time.perf_counter()
        metrics, lyapunov = _evaluate(model, test_data, run_dir)
        plots = _plots(model, test_data, result.history, run_dir, lyapunov)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else str(v)  # noqa: E731
    print(f"test ({test_data.n_steps} steps, {time.perf_counter() - t0:.0f} s): "
          f"D_stsp {fmt(metrics.get('d_stsp'))}, D_H {fmt(metrics.get('d_h'))}"
          + (f", PE(20) {fmt(metrics.get('pe'))}" if "pe" in metrics else "")
          + (f", lambda_max {fmt(metrics.get('lambda_max_model'))} {metrics.get('lyapunov_units')} (model)"
             if metrics.get("lambda_max_model") is not None else ""))
    print(f"files in {run_dir}: config.json, history.csv, checkpoints/last.pt, metrics.json"
          + (", " + ", ".join(plots) if plots else ""))
    reason = _diverged(metrics, result)
    if reason is not None:
        raise RuntimeError(f"the trained model diverged: {reason}; its files are kept in {run_dir}. Retrain in "
                           f"a new folder with a smaller --lr (this run: {cfg.lr_start:g}) or stronger forcing "
                           "(--forcing gtf --alpha 0.3)")
    return 0
