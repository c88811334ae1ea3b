"""Run folders under failure: restarts of runs that never reached a checkpoint, one writer per
folder (lock files, stale locks taken over), workers that die with a killed ``compare``, a bad
dataset that fails only its own runs, and diverged runs that fail loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import dsrecon
from dsrecon.checkpoint import LOCK_NAME, RunLockedError, run_lock
from dsrecon.cli import main

CFG = dict(batches_per_epoch=2, batch_size=4, seq_len=20, val_every=1)
TINY = ["--epochs", "2", "--batches-per-epoch", "2", "--seq-len", "20", "--hidden-dim", "5", "--latent-dim", "3",
        "--val-every", "1", "--no-progress"]


@pytest.fixture(scope="module")
def series_file(tmp_path_factory) -> Path:
    t = np.arange(1500) * 0.05
    x = np.stack([np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t) * np.cos(t)], axis=1)  # (1500, 3)
    path = tmp_path_factory.mktemp("data") / "series.npy"
    np.save(path, x)
    return path


def _model(latent_dim=3):
    return dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=latent_dim, hidden_dim=5, seed=0)


def _stopped_before_first_checkpoint(run_dir: Path, series_file: Path) -> None:
    """A run folder as a run killed before its first checkpoint leaves it: config.json, history.csv."""
    def interrupt(epoch, record, model):
        raise KeyboardInterrupt

    spec = {"kind": "file", "source": str(series_file), "test_fraction": 0.2}
    with pytest.raises(KeyboardInterrupt):
        dsrecon.train(_model(), np.load(series_file)[:1200], dsrecon.TrainConfig(epochs=20, checkpoint_every=10, **CFG),
                      dsrecon.GTF(0.1), run_dir=run_dir, progress=False, callback=interrupt,
                      run_meta={"data": spec})
    assert (run_dir / "config.json").is_file() and not (run_dir / "checkpoints" / "last.pt").exists()
    assert not (run_dir / LOCK_NAME).exists()  # released on the way out


# --------------------------------------------------------------------------- dead-end run folders
def test_run_without_checkpoint_restarts_in_place(tmp_path, series_file):
    _stopped_before_first_checkpoint(tmp_path / "run", series_file)
    res = dsrecon.train(_model(), np.load(series_file)[:1200], dsrecon.TrainConfig(epochs=2, **CFG),
                        dsrecon.GTF(0.1), run_dir=tmp_path / "run", progress=False)
    assert res.finished and res.epochs == 2
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_resume_without_checkpoint_starts_at_epoch_0_and_equals_a_fresh_run(tmp_path, series_file):
    _stopped_before_first_checkpoint(tmp_path / "run", series_file)
    x, cfg = np.load(series_file)[:1200], dsrecon.TrainConfig(epochs=20, checkpoint_every=10, **CFG)
    with pytest.warns(RuntimeWarning, match="has no checkpoint yet.*starts at epoch 0"):
        resumed = dsrecon.train(_model(), x, cfg, dsrecon.GTF(0.1), run_dir=tmp_path / "run", resume=True,
                                progress=False)
    fresh = dsrecon.train(_model(), x, cfg, dsrecon.GTF(0.1), run_dir=tmp_path / "fresh", progress=False)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in fresh.history]
    with pytest.raises(ValueError, match="settings differ"):  # the stored settings still bind
        _stopped_before_first_checkpoint(tmp_path / "other", series_file)
        dsrecon.train(_model(), x, cfg, dsrecon.GTF(0.5), run_dir=tmp_path / "other", resume=True, progress=False)


def test_cli_fit_out_and_resume_of_a_run_without_checkpoint(tmp_path, series_file, capsys):
    _stopped_before_first_checkpoint(tmp_path / "a", series_file)
    with pytest.warns(RuntimeWarning, match="no checkpoint yet"):
        assert main(["fit", "--resume", str(tmp_path / "a"), "--no-progress"]) == 0
    assert (tmp_path / "a" / "checkpoints" / "last.pt").is_file()
    _stopped_before_first_checkpoint(tmp_path / "b", series_file)
    assert main(["fit", str(series_file), "--out", str(tmp_path / "b"), *TINY]) == 0
    assert "stopped before its first checkpoint: starting it over" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["epochs"] == 2


def test_fused_backend_beyond_the_kernels_latent_size_trains_on_the_affine_path(tmp_path, series_file):
    """The C kernel's latent-size limit (M <= 64): backend 'fused' says so once and trains on the
    affine-forcing path, as for a model without a kernel."""
    with pytest.warns(RuntimeWarning, match=r"backend 'fused' cannot run the kernel .*latent_dim <= 64, got 70\); "
                                            "using the affine-forcing path"):
        rc = main(["fit", str(series_file), "--out", str(tmp_path / "run"), *TINY[:-3], "--latent-dim", "70",
                   "--backend", "fused", "--no-progress"])
    assert rc == 0 and (tmp_path / "run" / "config.json").exists()


def test_auto_backend_trains_a_latent_size_beyond_the_fused_kernel(series_file):
    x = np.load(series_file)[:1200]
    with pytest.warns(RuntimeWarning, match="backend 'auto' uses the generic path"):
        res = dsrecon.train(_model(latent_dim=70), x, dsrecon.TrainConfig(epochs=1, **CFG), dsrecon.GTF(0.1),
                            progress=False)
    assert res.n_updates == 2 and np.isfinite(res.final_loss)


# --------------------------------------------------------------------------- one writer per folder
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path, series_file):
    import socket

    x, cfg = np.load(series_file)[:1200], dsrecon.TrainConfig(epochs=1, **CFG)
    lock = tmp_path / "run" / LOCK_NAME
    lock.parent.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunLockedError, match=rf"in use by process {sleeper.pid}.*lock file"):
            dsrecon.train(_model(), x, cfg, dsrecon.GTF(0.1), run_dir=tmp_path / "run", progress=False)
        assert not (tmp_path / "run" / "config.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))  # its holder is gone
    res = dsrecon.train(_model(), x, cfg, dsrecon.GTF(0.1), run_dir=tmp_path / "run", progress=False)
    assert res.finished and not lock.exists()


def test_run_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    with run_lock(tmp_path):
        with run_lock(tmp_path):  # nested in this process: allowed
            pass
        assert (tmp_path / LOCK_NAME).exists()  # still held by the outer block
        probe = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from dsrecon.checkpoint import run_lock, RunLockedError
            try:
                with run_lock({str(tmp_path)!r}):
                    print("taken")
            except RunLockedError as err:
                print("refused:", err)
        """)], capture_output=True, text=True, timeout=120)
        assert probe.stdout.startswith("refused:") and str(os.getpid()) in probe.stdout, probe.stdout + probe.stderr
    assert not (tmp_path / LOCK_NAME).exists()


def test_two_compares_into_one_folder(tmp_path):
    import socket

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunLockedError, match="comparison folder .* is in use"):
            dsrecon.compare(_grid(tmp_path, {"good": _cycle_file(tmp_path)}), out_dir=tmp_path, executor="serial",
                            progress=False, figure=False)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- compare
def _cycle_file(folder: Path) -> Path:
    t = np.arange(1000) * 0.2
    x = np.stack([np.sin(t), np.cos(t)], axis=1) + 0.05 * np.random.default_rng(0).standard_normal((1000, 2))
    np.save(folder / "cycle.npy", x)
    return folder / "cycle.npy"


def _grid(folder: Path, datasets: dict, epochs: int = 1) -> dict:
    return {"seeds": [0], "budget": {"epochs": epochs, "batches_per_epoch": 2, "batch_size": 4, "seq_len": 20},
            "eval": {"lyapunov": False},
            "models": [{"name": "rnn", "hidden_dim": 3}], "forcings": [{"name": "gtf", "alpha": 0.2}],
            "datasets": [{"label": label, "train": str(path), "test_fraction": 0.3}
                         for label, path in datasets.items()]}


def test_a_corrupt_dataset_fails_only_its_own_runs(tmp_path):
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY not really")
    grid = _grid(tmp_path, {"good": _cycle_file(tmp_path), "bad": tmp_path / "corrupt.npy"})
    with pytest.warns(RuntimeWarning, match="dataset 'bad' cannot be used"):
        result = dsrecon.compare(grid, out_dir=tmp_path / "out", executor="serial", progress=False, figure=False)
    status = {r["dataset"]: r["status"] for r in result.runs}
    assert status == {"good": "done", "bad": "failed"}
    (failed,) = result.failed
    assert failed["error"].startswith("data: ValueError") and "corrupt.npy" in failed["error"]
    assert "corrupt.npy" in (tmp_path / "out" / "results.md").read_text()
    rows = {r["dataset"]: r for r in result.rows}
    assert rows["bad"]["n_failed"] == 1 and rows["good"]["n_done"] == 1
    csv_text = (tmp_path / "out" / "results.csv").read_text()
    assert "bad" in csv_text and "good" in csv_text


def test_workers_die_with_a_killed_compare(tmp_path):
    """kill -9 of the compare process: its worker stops within seconds and a rerun meets no stray writer."""
    script = textwrap.dedent(f"""
        import dsrecon, numpy as np
        if __name__ == "__main__":
            t = np.arange(3000) * 0.2
            np.save({str(tmp_path / "c.npy")!r}, np.stack([np.sin(t), np.cos(t)], axis=1)
                    + 0.05 * np.random.default_rng(0).standard_normal((3000, 2)))
            grid = {_grid(tmp_path, {"c": tmp_path / "c.npy"}, epochs=100_000)!r}
            dsrecon.compare(grid, out_dir={str(tmp_path / "out")!r}, executor="process", workers=1, progress=False)
    """)
    (tmp_path / "run_compare.py").write_text(script)
    src = str(Path(dsrecon.__file__).resolve().parents[1])  # this checkout, also in the spawned workers
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    parent = subprocess.Popen([sys.executable, str(tmp_path / "run_compare.py")], cwd=tmp_path, env=env)
    worker = None
    try:
        deadline = time.monotonic() + 300  # a spawned worker imports torch first: slow on a loaded machine
        while time.monotonic() < deadline and worker is None and parent.poll() is None:
            if list((tmp_path / "out" / "runs").glob("*/spec.json")):  # written by the worker's first task
                worker = _worker_of(parent.pid)
            time.sleep(0.2)
        assert worker is not None, "the worker never started its task"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.2)
        assert not _alive(worker), "the worker outlived its compare process"
    finally:
        if parent.poll() is None:
            parent.kill()
        if worker is not None and _alive(worker):  # do not leave a stray process behind a failed test
            os.kill(worker, 9)
    # a rerun takes over the stale locks (the compare folder's, and the run's if training had begun)
    locks = [tmp_path / "out", *(p.parent for p in (tmp_path / "out" / "runs").glob(f"*/train/{LOCK_NAME}"))]
    for folder in locks:
        with run_lock(folder):
            pass
        assert not (folder / LOCK_NAME).exists()


def _worker_of(parent_pid: int) -> int | None:
    """The PID of the pool worker among the children of ``parent_pid`` (not the resource tracker)."""
    for task in Path(f"/proc/{parent_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                return int(pid)
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited; only its exit status is left


# --------------------------------------------------------------------------- divergence
def test_fit_whose_model_diverged_fails_loudly(tmp_path, series_file, capsys):
    with pytest.warns(RuntimeWarning):
        rc = main(["fit", str(series_file), "--out", str(tmp_path / "run"), *TINY, "--lr", "1e6"])
    err = capsys.readouterr().err
    assert rc == 1 and "diverged" in err and "--lr" in err, err


def test_second_resume_of_a_run_in_use_is_refused(tmp_path, series_file, capsys):
    import socket

    assert main(["fit", str(series_file), "--out", str(tmp_path / "run"), *TINY]) == 0
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run" / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        capsys.readouterr()
        assert main(["fit", "--resume", str(tmp_path / "run"), "--no-progress"]) == 1
        assert f"is in use by process {sleeper.pid}" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


def test_compare_out_is_a_file(tmp_path):
    (tmp_path / "results").write_text("mine")
    with pytest.raises(ValueError, match="output folder .*results is an existing file"):
        dsrecon.compare(_grid(tmp_path, {"good": _cycle_file(tmp_path)}), out_dir=tmp_path / "results",
                        executor="serial", progress=False)
    assert (tmp_path / "results").read_text() == "mine"
