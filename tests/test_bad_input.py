"""Bad-input corpus: every malformed file, option and checkpoint gets a clear error, never garbage.

Each case builds one bad input in ``tmp_path`` and asserts that the error names what is wrong
(the file, the option or the attribute) and how to fix it. The CLI cases check that
``dsrecon`` prints ``dsrecon <command>: error: ...`` on stderr, exits non-zero and shows no
traceback.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

import dsrecon
from dsrecon.cli import main
from dsrecon.data import load, standardize


def _series(t: int = 400, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((t, n)).cumsum(axis=0)  # (T, N), non-constant


# --------------------------------------------------------------------------- data files
def _npy(arr):
    return lambda d: (np.save(d / "x.npy", arr), d / "x.npy")[1]


def _text(name: str, content: str, encoding: str = "utf-8"):
    def make(d):
        (d / name).write_text(content, encoding=encoding)
        return d / name
    return make


def _bytes(name: str, content: bytes):
    def make(d):
        (d / name).write_bytes(content)
        return d / name
    return make


def _truncated_npy(d):
    np.save(d / "t.npy", _series())
    data = (d / "t.npy").read_bytes()
    (d / "t.npy").write_bytes(data[: len(data) // 2])
    return d / "t.npy"


def _npz(**arrays):
    def make(d):
        np.savez(d / "x.npz", **arrays)
        return d / "x.npz"
    return make


def _h5(attrs: dict | None = None, path: str = "x", data=None):
    def make(d):
        with h5py.File(d / "x.h5", "w") as h5:
            ds = h5.create_dataset(path, data=_series() if data is None else data)
            for k, v in (attrs or {}).items():
                ds.attrs[k] = v
        return d / "x.h5"
    return make


def _nan_at(row, col, value=np.nan):
    x = _series()
    x[row, col] = value
    return x


def _constant_column():
    x = _series()
    x[:, 1] = 2.5
    return x


BAD_FILES = {
    # case id: (maker(tmp_path) -> source, load kwargs, pattern the message must match)
    "nan": (_npy(_nan_at(17, 1)), {}, r"x.npy'.*non-finite value nan at row 17, column 1"),
    "inf": (_npy(_nan_at(3, 2, np.inf)), {}, r"x.npy'.*non-finite value inf at row 3, column 2"),
    "rank-4": (_npy(np.zeros((2, 2, 50, 3))), {}, r"x.npy'.*expected shape \(T, N\) or \(T,\), got \(2, 2, 50, 3\)"),
    "empty-array": (_npy(np.zeros((0, 3))), {}, r"x.npy'.*need at least 2 time steps, got T = 0"),
    "one-row": (_npy(np.ones((1, 3))), {}, r"x.npy'.*need at least 2 time steps, got T = 1"),
    "constant-column": (_npy(_constant_column()), {}, r"x.npy'.*column 1 is constant.*drop it"),
    "complex": (_npy(_series() + 1j), {}, r"x.npy'.*complex dtype complex128.*x.real"),
    "string-array": (_npy(np.array([["a", "b"], ["c", "d"]])), {}, r"x.npy'.*expected numeric values"),
    "corrupt-npy": (_bytes("c.npy", b"\x93NUMPY garbage"), {}, r"c.npy' as a .npy file.*re-save"),
    "truncated-npy": (_truncated_npy, {}, r"t.npy' as a .npy file.*truncated"),
    "empty-file-npy": (_bytes("e.npy", b""), {}, r"e.npy' as a .npy file"),
    "npz-missing-key": (_npz(a=_series()), {"dataset": "b"}, r"x.npz' has no array 'b'; available: a"),
    "npz-two-arrays": (_npz(a=_series(), b=_series()), {}, r"x.npz' holds 2 arrays \(a, b\); name one"),
    "corrupt-npz": (_bytes("z.npz", b"PK\x03\x04garbage"), {}, r"z.npz' as a .npz archive"),
    "csv-text-value": (_text("b.csv", "1,2\n3,4\n5,x\n"), {}, r"b.csv', line 3: non-numeric value"),
    "csv-ragged": (_text("r.csv", "1,2\n3,4,5\n"), {}, r"r.csv', line 2: 3 columns"),
    "csv-empty": (_text("e.csv", ""), {}, r"e.csv' holds no data lines"),
    "csv-header-only": (_text("h.csv", "a,b,c\n"), {}, r"h.csv' has a header but no data lines"),
    "csv-binary": (_bytes("bin.csv", b"\xff\xfe\x00\x81\x82"), {}, r"bin.csv' is not a text file"),
    "h5-not-hdf5": (_text("f.h5", "hello"), {}, r"could not open .*f.h5' as HDF5"),
    "h5-bad-path": (_h5(path="group/y"), {"dataset": "/nope"}, r"x.h5' has no dataset '/nope'; available datasets: /group/y"),
    "h5-dt-text": (_h5({"dt": "fast"}), {}, r"x.h5': attribute 'dt' = 'fast' is not a positive number.*evaluate --dt"),
    "h5-dt-negative": (_h5({"dt": -0.01}), {}, r"x.h5': attribute 'dt' = -0.01 is not a positive number"),
    "h5-meta-not-json": (_h5({"meta": "{oops"}), {}, r"x.h5': attribute 'meta' is not valid JSON"),
    "h5-meta-not-object": (_h5({"meta": "[1, 2]"}), {}, r"x.h5': attribute 'meta' must be a JSON object"),
    "unsupported-suffix": (_text("a.xlsx", "x"), {}, r"unsupported file type '.xlsx'"),
    "missing-file": (lambda d: d / "absent.npy", {}, r"file not found: .*absent.npy'"),
    "unknown-name": (lambda d: "lorenz64", {}, r"unknown data source 'lorenz64'.*registered names"),
    "dt-zero": (_npy(_series()), {"dt": 0.0}, r"dt must be a positive number.*got 0.0"),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_is_rejected_with_a_message_naming_it(tmp_path, case):
    make, kwargs, pattern = BAD_FILES[case]
    source = make(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=pattern):
        load(source, **kwargs)


def test_float16_file_is_standardized_in_float64(tmp_path):
    """Float16 sums overflow past 65504: the statistics must come out as for the float64 series."""
    x = np.random.default_rng(1).standard_normal((5_000, 3)) * 3_000 + 10_000  # a float16 sum of these is inf
    np.save(tmp_path / "h.npy", x.astype(np.float16))
    traj = load(tmp_path / "h.npy", standardize=True)
    assert traj.x.dtype == np.float32
    np.testing.assert_allclose(traj.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(traj.x.std(axis=0, dtype=np.float64), 1.0, rtol=1e-5)
    np.testing.assert_allclose(traj.meta["mean"], x.astype(np.float16).astype(np.float64).mean(axis=0),
                               rtol=1e-12)


def test_float16_trajectory_is_standardized_in_float64():
    x = (np.random.default_rng(1).standard_normal((5_000, 3)) * 3_000 + 10_000).astype(np.float16)
    out = standardize(dsrecon.Trajectory(x))
    assert np.isfinite(out.x).all() and out.x.dtype == np.float32
    np.testing.assert_allclose(out.x.std(axis=0, dtype=np.float64), 1.0, rtol=1e-5)


def test_complex_trajectory_is_rejected():
    with pytest.raises(ValueError, match="must be real, got complex dtype"):
        dsrecon.Trajectory(np.ones((10, 2)) * 1j)


def test_csv_with_byte_order_mark_keeps_its_first_row(tmp_path):
    x = _series(5, 2)
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in x)
    (tmp_path / "bom.csv").write_text(text, encoding="utf-8-sig")
    traj = load(tmp_path / "bom.csv")
    assert traj.x.shape == (5, 2)
    np.testing.assert_array_equal(traj.x, x)
    (tmp_path / "bomh.csv").write_text("u,v\n" + text, encoding="utf-8-sig")
    assert load(tmp_path / "bomh.csv").meta["columns"] == ["u", "v"]


def test_h5_dt_override_wins_over_a_bad_attribute(tmp_path):
    source = _h5({"dt": "fast"})(tmp_path)
    assert load(source, dt=0.01).dt == 0.01


# --------------------------------------------------------------------------- CLI options
def _cli(argv, capsys) -> tuple[int, str]:
    """Run ``dsrecon ARGV`` in this process: (exit status, stderr). Argparse errors exit with 2."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


BAD_OPTIONS = {
    "latent-dim-0": (["fit", "lorenz63", "--latent-dim", "0"], r"--latent-dim: must be a positive integer.*got 0"),
    "hidden-dim-negative": (["fit", "lorenz63", "--hidden-dim", "-3"], r"--hidden-dim: must be a positive integer"),
    "epochs-0": (["fit", "lorenz63", "--epochs", "0"], r"--epochs: must be a positive integer"),
    "seq-len-text": (["fit", "lorenz63", "--seq-len", "long"], r"--seq-len: expected a positive integer, got 'long'"),
    "lr-0": (["fit", "lorenz63", "--lr", "0"], r"--lr: must be a positive number, got 0"),
    "lr-nan": (["fit", "lorenz63", "--lr", "nan"], r"--lr: expected a finite number, got 'nan'"),
    "test-fraction-1.5": (["fit", "x.npy", "--test-fraction", "1.5"], r"--test-fraction: must lie strictly between 0 and 1"),
    "alpha-2": (["fit", "lorenz63", "--alpha", "2"], r"--alpha: must lie in \[0, 1\], got 2"),
    "threads-0": (["fit", "lorenz63", "--threads", "0"], r"--threads: must be a positive integer"),
    "noise-negative": (["fit", "lorenz63", "--noise", "-0.1"], r"--noise: must be >= 0"),
    "evaluate-dt-0": (["evaluate", "run", "--dt", "0"], r"--dt: must be a positive number"),
    "evaluate-lyapunov-steps-0": (["evaluate", "run", "--lyapunov-steps", "0"], r"--lyapunov-steps: must be a positive"),
    "simulate-steps-0": (["simulate", "lorenz63", "--steps", "0", "--out", "x.h5"], r"--steps: must be a positive"),
    "backend-numpy": (["fit", "lorenz63", "--backend", "numpy"], r"--backend: invalid choice: 'numpy'"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS), ids=list(BAD_OPTIONS))
def test_bad_option_is_rejected_before_any_work(case, capsys):
    argv, pattern = BAD_OPTIONS[case]
    rc, err = _cli(argv, capsys)
    assert rc == 2
    assert pytest.importorskip("re").search(pattern, err), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", [["fit", "DATA"], ["simulate", "lorenz63", "--out", "s.h5"],
                                     ["evaluate", "RUN"]])
def test_cuda_device_on_a_cpu_machine(command, tmp_path, capsys):
    data, run = _tiny_data(tmp_path), _tiny_run(tmp_path)
    argv = [{"DATA": data, "RUN": run}.get(a, a) for a in command] + ["--device", "cuda"]
    rc, err = _cli(argv, capsys)
    assert rc == 1
    assert "--device 'cuda'" in err and "use cpu" in err, err


# --------------------------------------------------------------------------- fit and evaluate
TINY = ["--epochs", "2", "--batches-per-epoch", "2", "--seq-len", "20", "--hidden-dim", "5", "--latent-dim", "3",
        "--val-every", "1", "--no-progress"]


def _tiny_data(tmp_path, n: int = 3):
    path = tmp_path / f"series{n}.npy"
    if not path.exists():
        t = np.arange(1500) * 0.05
        cols = [np.sin(t * (1 + 0.3 * k)) + 0.1 * np.cos(3.1 * t + k) for k in range(n)]
        np.save(path, np.stack(cols, axis=1))  # (1500, n)
    return path


def _tiny_run(tmp_path):
    """A run folder with a complete model-only checkpoint of a 3-d shPLRNN."""
    run = tmp_path / "run"
    if not run.exists():
        model = dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=5)
        dsrecon.save_checkpoint(run / "checkpoints" / "last.pt", model,
                                extra={"data": {"kind": "file", "source": str(_tiny_data(tmp_path)),
                                                "test_fraction": 0.2}})
    return run


def test_fit_out_is_a_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    rc, err = _cli(["fit", _tiny_data(tmp_path), "--out", tmp_path / "notes.txt", *TINY], capsys)
    assert rc == 1 and "--out" in err and "notes.txt is an existing file, not a folder" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_fit_out_into_a_folder_of_user_files_is_refused(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("metrics.json", "history.csv", "training.png"):
        (out / name).write_text(f"user's {name}")
    rc, err = _cli(["fit", _tiny_data(tmp_path), "--out", out, *TINY], capsys)
    assert rc == 1 and "holds files that are not a dsrecon run (history.csv, metrics.json, training.png)" in err
    for name in ("metrics.json", "history.csv", "training.png"):
        assert (out / name).read_text() == f"user's {name}"
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "metrics.json", "training.png"]


def test_train_refuses_a_folder_with_a_foreign_history(tmp_path):
    (tmp_path / "history.csv").write_text("mine")
    model = dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=5)
    with pytest.raises(RuntimeError, match="holds a history.csv but no dsrecon run.*choose a new or empty folder"):
        dsrecon.train(model, np.load(_tiny_data(tmp_path)), dsrecon.TrainConfig(epochs=1, seq_len=20),
                      run_dir=tmp_path, progress=False)
    assert (tmp_path / "history.csv").read_text() == "mine"


def test_fit_out_into_a_checkpointed_run_points_to_resume(tmp_path, capsys):
    run = _tiny_run(tmp_path)
    rc, err = _cli(["fit", _tiny_data(tmp_path), "--out", run, *TINY], capsys)
    assert rc == 1 and f"already holds a run; continue it with `dsrecon fit --resume {run}`" in err


def test_fit_resume_of_a_folder_without_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, err = _cli(["fit", "--resume", tmp_path / "empty"], capsys)
    assert rc == 1 and "no run there (no checkpoints/last.pt, no config.json)" in err
    rc, err = _cli(["fit", "--resume", tmp_path / "absent"], capsys)
    assert rc == 1 and "no such run folder" in err


def test_fit_resume_of_a_checkpoint_without_training_state(tmp_path, capsys):
    """A model-only checkpoint (no optimizer entry) can be evaluated but not resumed."""
    run = _tiny_run(tmp_path)
    rc, err = _cli(["fit", "--resume", run], capsys)
    assert rc == 1
    assert "cannot resume from" in err and "no optimizer, scheduler, generator state" in err, err


def test_evaluate_wrong_width_is_refused_before_standardizing(tmp_path, capsys):
    """A 1-column file against a 3-d model was broadcast to 3 columns and scored; nothing may be written."""
    run = _tiny_run(tmp_path)
    ckpt = run / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    config = json.loads(state["config_json"])
    config["extra"]["data_meta"] = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    dsrecon.save_checkpoint(ckpt, dsrecon.load_checkpoint(ckpt)[0], extra=config["extra"])
    (run / "report.json").write_text("earlier report")
    before = sorted(p.name for p in run.rglob("*"))
    rc, err = _cli(["evaluate", run, "--data", _tiny_data(tmp_path, n=1), "--no-lyapunov"], capsys)
    assert rc == 1
    assert "has N = 1 column(s), but the model observes N = 3" in err, err
    assert (run / "report.json").read_text() == "earlier report"
    assert sorted(p.name for p in run.rglob("*")) == before


def test_evaluate_never_overwrites(tmp_path, capsys):
    run = _tiny_run(tmp_path)
    data = _tiny_data(tmp_path)
    for _ in range(2):
        assert _cli(["evaluate", run, "--data", data, "--no-lyapunov", "--no-plots"], capsys)[0] == 0
    assert (run / "eval-series3" / "report.json").is_file() and (run / "eval-series3-2" / "report.json").is_file()
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("mine")
    rc, err = _cli(["evaluate", run, "--data", data, "--no-lyapunov", "--no-plots", "--out", out], capsys)
    assert rc == 1 and "already holds report.json; evaluate never overwrites" in err
    assert (out / "report.json").read_text() == "mine"


# --------------------------------------------------------------------------- checkpoints
def _ckpt_bytes(tmp_path) -> bytes:
    model = dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=5)
    return dsrecon.save_checkpoint(tmp_path / "good.pt", model).read_bytes()


def _torch_file(obj):
    def make(tmp_path):
        torch.save(obj, tmp_path / "c.pt")
        return tmp_path / "c.pt"
    return make


BAD_CHECKPOINTS = {
    "zero-bytes": (lambda d: _bytes("c.pt", b"")(d), r"c.pt: the file is empty \(0 bytes\)"),
    "text": (lambda d: _text("c.pt", "epoch 3, loss 0.1\n")(d), r"c.pt: not a torch checkpoint file"),
    "truncated": (lambda d: _bytes("c.pt", _ckpt_bytes(d)[:1500])(d), r"c.pt: the file is truncated, corrupt"),
    "foreign-dict": (_torch_file({"weights": torch.zeros(2)}), r"c.pt is not a dsrecon checkpoint"),
    "list": (_torch_file([1, 2, 3]), r"c.pt is not a dsrecon checkpoint"),
    "bad-config-json": (_torch_file({"config_json": "{oops"}), r"c.pt: the embedded config is damaged"),
    "no-model": (_torch_file({"config_json": json.dumps({"model": {"name": "shplrnn", "config": {}}})}),
                 r"c.pt holds no single-model dsrecon checkpoint"),
    "ensemble": (_torch_file({"kind": "ensemble", "config_json": json.dumps({"models": []})}),
                 r"c.pt holds no single-model .*it is an ensemble checkpoint"),
    "unknown-model": (_torch_file({"config_json": json.dumps({"model": {"name": "transformer", "config": {}}}),
                                   "model": {}}), r"c.pt: cannot rebuild its model 'transformer'"),
    "folder": (lambda d: (d / "c.pt").mkdir() or d / "c.pt", r"c.pt is a folder, not a checkpoint file"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS), ids=list(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_named_with_what_is_wrong(tmp_path, case, capsys):
    make, pattern = BAD_CHECKPOINTS[case]
    path = make(tmp_path)
    with pytest.raises(RuntimeError, match=pattern):
        dsrecon.load_checkpoint(path)
    if case in ("zero-bytes", "text", "truncated"):  # and the CLI says the same on one line
        rc, err = _cli(["evaluate", path, "--data", _tiny_data(tmp_path)], capsys)
        assert rc == 1 and err.startswith("dsrecon evaluate: error: ") and err.count("\n") == 1, err


def test_train_resume_from_a_model_only_checkpoint(tmp_path):
    model = dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=5)
    dsrecon.save_checkpoint(tmp_path / "checkpoints" / "last.pt", model)
    with pytest.raises(RuntimeError, match=r"cannot resume from .*last.pt: it has no optimizer"):
        dsrecon.train(model, np.load(_tiny_data(tmp_path)), dsrecon.TrainConfig(epochs=1, seq_len=20),
                      run_dir=tmp_path, resume=True, progress=False)


# --------------------------------------------------------------------------- simulation cache
def test_unwritable_cache_warns_and_keeps_the_simulation(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("DSRECON_CACHE_DIR", str(tmp_path / "file" / "cache"))
    with pytest.warns(RuntimeWarning, match=r"could not write the simulation cache file .*DSRECON_CACHE_DIR"):
        traj = dsrecon.simulate("lorenz63", n_steps=200, seed=3, progress=False)
    assert traj.x.shape == (200, 3) and np.isfinite(traj.x).all()


def test_unwritable_cache_cli_simulate_still_writes_the_output(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("DSRECON_CACHE_DIR", str(tmp_path / "file" / "cache"))
    with pytest.warns(RuntimeWarning, match="could not write the simulation cache"):
        rc, _ = _cli(["simulate", "lorenz63", "--steps", "200", "--seed", "4", "--out", tmp_path / "s.h5",
                      "--quiet"], capsys)
    assert rc == 0 and load(tmp_path / "s.h5").x.shape == (200, 3)


def test_corrupt_cache_file_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("DSRECON_CACHE_DIR", str(tmp_path))
    first = dsrecon.simulate("lorenz63", n_steps=200, seed=5, progress=False)
    (cached,) = tmp_path.glob("lorenz63-*.h5")
    cached.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ignoring corrupt simulation cache file"):
        again = dsrecon.simulate("lorenz63", n_steps=200, seed=5, progress=False)
    np.testing.assert_array_equal(first.x, again.x)


def test_written_files_follow_the_umask(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the final files must get the usual 0644."""
    import os

    old = os.umask(0o022)
    try:
        model = dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=5)
        ckpt = dsrecon.save_checkpoint(tmp_path / "c.pt", model)
        h5 = dsrecon.Trajectory(_series()).save(tmp_path / "x.h5")
    finally:
        os.umask(old)
    assert ckpt.stat().st_mode & 0o777 == 0o644
    assert h5.stat().st_mode & 0o777 == 0o644
