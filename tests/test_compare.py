"""dsrecon.compare: a tiny grid runs end to end, finished runs are skipped, failures are recorded,
bad names fail before anything runs; the table's statistics; the CLI; the Ray executor."""

from __future__ import annotations

import csv
import io
import json
import math
import sys

import numpy as np
import pytest

import dsrecon
from dsrecon.cli import main as cli_main
from dsrecon.comparison import RunSpec, load_grid
from dsrecon.comparison.table import aggregate

BUDGET = {"epochs": 1, "batches_per_epoch": 2, "batch_size": 4, "seq_len": 20}
EVAL = {"lyapunov_steps": 200, "lyapunov_transient": 50, "lyapunov_initial": 2}  # fast, not accurate


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    """A noisy 2-d limit cycle: 400 training and 300 test steps, as .npy files."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    t = np.arange(700) * 0.2
    x = np.stack([np.sin(t), np.cos(t)], axis=1) + 0.05 * rng.standard_normal((700, 2))
    np.save(folder / "train.npy", x[:400])
    np.save(folder / "test.npy", x[400:])
    return folder


def tiny_grid(data_files, models=None, forcings=None, seeds=(0, 1)):
    return {
        "seeds": list(seeds),
        "budget": dict(BUDGET),
        "eval": dict(EVAL),
        "models": models or [{"name": "rnn", "hidden_dim": 4}, {"name": "lstm", "hidden_dim": 3, "label": "LSTM"}],
        "forcings": forcings or [{"name": "gtf", "alpha": 0.2}],
        "datasets": [{"label": "cycle", "train": str(data_files / "train.npy"),
                      "test": str(data_files / "test.npy"), "lambda_max": 0.0, "dt": 0.1}],  # a limit cycle
    }


def read_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_tiny_grid_runs_in_worker_processes_and_is_not_rerun(data_files, tmp_path):
    out = tmp_path / "out"
    result = dsrecon.compare(tiny_grid(data_files), out_dir=out, executor="process", workers=2, progress=False)
    assert (result.n_executed, result.n_skipped, result.n_failed) == (4, 0, 0)
    assert [(r["model"], r["forcing"], r["dataset"]) for r in result.rows] == [
        ("rnn(hidden_dim=4)", "gtf(alpha=0.2)", "cycle"), ("LSTM", "gtf(alpha=0.2)", "cycle")]
    for row in result.rows:
        assert row["n_done"] == 2 and row["n_failed"] == 0
        # barely trained models may sit on a fixed point (D_H undefined, NaN); these are always defined:
        for key in ("d_stsp_mean", "pe_mean", "lambda_max_error_mean", "train_time_s_mean"):
            assert math.isfinite(row[key]) and row[key] >= 0, key
    # parameter counts are the models' own: RNN H^2 + H + HN + N, LSTM 4H^2 + 4H + HN + N
    assert [r["n_params"] for r in result.rows] == [16 + 4 + 8 + 2, 36 + 12 + 6 + 2]
    rows = read_csv((out / "results.csv").read_text())
    assert len(rows) == 2 and rows[1]["model"] == "LSTM" and rows[1]["n_done"] == "2"
    assert len(read_csv((out / "runs.csv").read_text())) == 4
    md = (out / "results.md").read_text()
    assert "| LSTM | gtf(alpha=0.2) | cycle | 2/0 |" in md and "D_stsp" in md
    results = sorted((out / "runs").glob("*/result.json"))
    assert len(results) == 4
    stamps = {p: p.stat().st_mtime_ns for p in results}
    checkpoints = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/train/checkpoints/last.pt")}

    again = dsrecon.compare(tiny_grid(data_files), out_dir=out, executor="serial", progress=False)
    assert (again.n_executed, again.n_skipped) == (0, 4)
    assert {p: p.stat().st_mtime_ns for p in results} == stamps  # nothing was re-trained
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints
    assert again.to_csv() == result.to_csv()  # same table (NaN-safe comparison)


def test_run_stopped_after_training_resumes_from_its_checkpoint(data_files, tmp_path):
    """No result.json but a finished checkpoint (stopped during evaluation): the run is executed
    again, the trainer resumes at its last epoch, so nothing is re-trained."""
    grid = tiny_grid(data_files, models=[{"name": "lem", "hidden_dim": 3}], seeds=[0])
    first = dsrecon.compare(grid, out_dir=tmp_path, executor="serial", progress=False, figure=False)
    (run_dir,) = tmp_path.glob("runs/*")
    checkpoint = run_dir / "train" / "checkpoints" / "last.pt"
    stamp = checkpoint.stat().st_mtime_ns
    (run_dir / "result.json").unlink()
    again = dsrecon.compare(grid, out_dir=tmp_path, executor="serial", progress=False, figure=False)
    assert again.n_executed == 1 and again.n_failed == 0
    assert checkpoint.stat().st_mtime_ns == stamp
    assert again.runs[0]["d_stsp"] == first.runs[0]["d_stsp"]  # same parameters, same evaluation


def test_failing_run_is_recorded_and_the_others_finish(data_files, tmp_path):
    grid = tiny_grid(data_files, models=[{"name": "rnn", "hidden_dim": 4}, {"name": "gru", "hidden_dim": 0}],
                     seeds=[0])
    with pytest.warns(RuntimeWarning, match="1 of 2 runs failed"):
        result = dsrecon.compare(grid, out_dir=tmp_path, executor="serial", progress=False, figure=False)
    ok, bad = result.rows
    assert (ok["n_done"], ok["n_failed"], bad["n_done"], bad["n_failed"]) == (1, 0, 0, 1)
    (failed,) = result.failed
    assert "hidden_dim must be a positive integer" in failed["error"]
    error = json.loads(next(tmp_path.glob("runs/gru*/error.json")).read_text())
    assert error["stage"] == "model" and "Traceback" in error["traceback"]
    assert "Failed runs:" in result.to_markdown()


@pytest.mark.parametrize("change,match", [
    (lambda g: g["models"].append({"name": "lsmt", "hidden_dim": 3}), "unknown model 'lsmt'; valid names: alrnn, gru, lem"),
    (lambda g: g["forcings"].append({"name": "gtff"}), "unknown forcing 'gtff'; valid names:"),
    (lambda g: g["budget"].update(epoch=3), r"\[budget\] unknown field\(s\) \['epoch'\]"),
    (lambda g: g["budget"].pop("epochs"), "need a \\[budget\\] table with at least epochs"),
    (lambda g: g["models"][0].update(obs_dim=3), "fills in from the data"),
    (lambda g: g.update(seeds=[0, 0]), "duplicates"),
    (lambda g: g.update(modles=[]), "unknown key"),
])
def test_bad_grid_fails_before_anything_runs(data_files, tmp_path, change, match):
    grid = tiny_grid(data_files)
    change(grid)
    with pytest.raises(ValueError, match=match):
        dsrecon.compare(grid, out_dir=tmp_path / "out", executor="serial", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_data_file_fails_before_anything_runs(data_files, tmp_path):
    grid = tiny_grid(data_files)
    grid["datasets"][0]["test"] = str(tmp_path / "nope.npy")
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        dsrecon.compare(grid, out_dir=tmp_path / "out", executor="serial", progress=False)


def test_run_identity_is_stable_and_ignores_labels(data_files):
    a = load_grid(tiny_grid(data_files)).runs()
    b = load_grid(tiny_grid(data_files)).runs()
    assert [r.key for r in a] == [r.key for r in b] and len({r.key for r in a}) == 4
    relabelled = tiny_grid(data_files)
    relabelled["models"][1]["label"] = "an LSTM"
    assert [r.key for r in load_grid(relabelled).runs()] == [r.key for r in a]
    longer = tiny_grid(data_files)
    longer["budget"]["epochs"] = 2
    assert not {r.key for r in load_grid(longer).runs()} & {r.key for r in a}
    assert isinstance(a[0], RunSpec) and a[0].folder_name.endswith(a[0].key)


def test_aggregate_mean_sem_median_over_seeds():
    """mean, std(ddof=1)/sqrt(n), median; a NaN metric is excluded and counted."""
    base = {"model": "m", "forcing": "f", "dataset": "d", "status": "done", "n_params": 10, "d_h": 0.1,
            "pe": 0.0, "lambda_max_error": 0.0, "train_time_s": 1.0}
    runs = [dict(base, d_stsp=v) for v in (1.0, 2.0, 6.0)] + [dict(base, d_stsp=float("nan"), collapsed=True)]
    runs.append(dict(base, status="failed", error="x"))
    (row,) = aggregate(runs)
    assert (row["n_runs"], row["n_done"], row["n_failed"], row["n_nonfinite"]) == (5, 4, 1, 1)
    assert row["n_collapsed"] == 1
    assert row["d_stsp_mean"] == pytest.approx(3.0)
    assert row["d_stsp_sem"] == pytest.approx(np.std([1, 2, 6], ddof=1) / math.sqrt(3))
    assert row["d_stsp_median"] == 2.0
    assert row["pe_sem"] == 0.0 and row["d_h_median"] == pytest.approx(0.1)


def test_cli_runs_a_toml_grid(data_files, tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(f"""
seeds = 1

[budget]
epochs = 1
batches_per_epoch = 2
batch_size = 4
seq_len = 20

[[models]]
name = "lem"
hidden_dim = 3

[[forcings]]
name = "tf"

[[datasets]]
label = "cycle"
train = "{data_files / 'train.npy'}"
test = "{data_files / 'test.npy'}"
lambda_max = 0.0
dt = 0.1
""" + ("\n[eval]\n" + "".join(f"{k} = {v!r}\n" for k, v in EVAL.items()) if EVAL else ""))
    rc = cli_main(["compare", str(grid), "--out", str(tmp_path / "out"), "--executor", "serial",
                   "--no-progress", "--no-figure"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "| lem(hidden_dim=3) | tf | cycle | 1/0 |" in text and "1 run(s) executed" in text
    assert cli_main(["compare", str(tmp_path / "missing.toml")]) == 1


def test_a_dead_worker_is_recorded_as_a_failed_run(data_files, tmp_path):
    from dsrecon.comparison.executors import _lost
    from dsrecon.comparison.table import run_record

    (spec,) = load_grid(tiny_grid(data_files, models=[{"name": "rnn", "hidden_dim": 2}], seeds=[0])).runs()
    (summary,) = _lost(([spec.to_dict()], [str(tmp_path / "run")], str(tmp_path)), RuntimeError("killed (OOM)"))
    assert summary["status"] == "failed"
    record = run_record(spec, tmp_path / "run")
    assert record["status"] == "failed" and "killed (OOM)" in record["error"]


def test_ray_executor_needs_ray_with_a_clear_message(monkeypatch, data_files, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"pip install dsrecon\[ray\]"):
        dsrecon.compare(tiny_grid(data_files), out_dir=tmp_path, executor="ray")


def test_ray_executor_on_a_local_instance(data_files, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        grid = tiny_grid(data_files, models=[{"name": "gru", "hidden_dim": 3}])
        result = dsrecon.compare(grid, out_dir=tmp_path, executor="ray", workers=2, progress=False, figure=False)
    finally:
        ray.shutdown()
    assert (result.n_executed, result.n_failed) == (2, 0)
    assert result.rows[0]["n_done"] == 2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_figure_draws_fixed_points_and_diverged_runs(tmp_path):
    """A sample constant in one coordinate (fixed point) or non-finite gets no spectrum, not an error."""
    pytest.importorskip("matplotlib")
    from dsrecon.comparison import CompareResult
    from dsrecon.comparison.runner import SAMPLE
    from dsrecon.comparison.table import plot_comparison

    t = np.arange(2000) * 0.05
    wave = np.stack([np.sin(t), np.cos(0.7 * t), np.sin(1.3 * t)], axis=1)  # (T, 3)
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "test.npy", wave)
    (tmp_path / "data" / "meta.json").write_text(json.dumps({"label": "toy", "dt": 0.05}))  # as prepare_dataset writes
    samples = {"ok": wave + 0.01, "fixed_point": np.column_stack([wave[:, :2], np.ones(2000)]),
               "diverged": np.full((2000, 3), np.nan)}
    runs = []
    for name, x in samples.items():
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / SAMPLE, x)
        runs.append({"dataset": "toy", "status": "done", "model": name, "forcing": "gtf",
                     "run_dir": str(tmp_path / name)})
    written = plot_comparison(CompareResult(runs=runs, title="toy"), {"toy": tmp_path / "data"},
                              tmp_path / "figure.png")
    assert written == [tmp_path / "figure.png"] and written[0].stat().st_size > 0


def test_shplrnn_seeds_train_as_one_ensemble_with_the_same_results(data_files, tmp_path):
    """The default groups the shPLRNN seeds into one ensemble task: the same numbers as one task per
    seed (an Ensemble's members equal separate runs), result.json says so, and a rerun re-trains nothing."""
    grid = tiny_grid(data_files, models=[{"name": "shplrnn", "latent_dim": 3, "hidden_dim": 8}], seeds=[0, 1, 2])
    grouped = dsrecon.compare(grid, out_dir=tmp_path / "g", executor="serial", progress=False, figure=False)
    alone = dsrecon.compare(grid, out_dir=tmp_path / "a", executor="serial", progress=False, figure=False,
                            ensembles=False)
    assert grouped.n_failed == 0 and alone.n_failed == 0
    for g, a in zip(grouped.runs, alone.runs):
        assert g["seed"] == a["seed"]
        for key in ("d_stsp", "pe"):
            assert g[key] == pytest.approx(a[key], rel=1e-3, abs=1e-6), key
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "g" / "runs").glob("*/result.json"))]
    assert [r["ensemble_size"] for r in results] == [3, 3, 3]
    assert all("ensemble_size" not in json.loads(p.read_text())
               for p in (tmp_path / "a" / "runs").glob("*/result.json"))
    assert all((p.parent / "train" / "history.csv").is_file() for p in (tmp_path / "g" / "runs").glob("*/result.json"))
    again = dsrecon.compare(grid, out_dir=tmp_path / "g", executor="serial", progress=False, figure=False)
    assert (again.n_executed, again.n_skipped) == (0, 3)


def test_lambda_max_reference_without_dt_warns(data_files, tmp_path):
    """A per-time-unit reference with dt unknown (npy files) would compare per-step exponents: say so."""
    grid = tiny_grid(data_files, models=[{"name": "rnn", "hidden_dim": 2}], seeds=[0])
    del grid["datasets"][0]["dt"]
    with pytest.warns(RuntimeWarning, match="no dt"):
        dsrecon.compare(grid, out_dir=tmp_path, executor="serial", progress=False, figure=False)
