"""``dsrecon generate`` and ``dsrecon forecast`` read a run's reconstruction and write data units
(issue 17, item 2); ``dsrecon fit`` leaves the reconstruction beside its other files, and
``dsrecon evaluate RUN`` keeps working on the same folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dsrecon
from dsrecon.cli import main

TINY = ["--epochs", "1", "--batches-per-epoch", "2", "--seq-len", "20", "--hidden-dim", "8", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A `dsrecon fit` run on a Lorenz-63 file in made-up units, (2000, 3)."""
    folder = tmp_path_factory.mktemp("cli")
    x = dsrecon.simulate("lorenz63", 2_000, method="rk4", cache=False, progress=False).x * [2.0, 3.0, 1.0] + [10, -5, 30]
    np.save(folder / "raw.npy", x)
    np.save(folder / "context.npy", x[1000:1200])
    assert main(["fit", str(folder / "raw.npy"), "--dt", "0.01", "--out", str(folder / "run"), *TINY]) == 0
    return folder


def _cli(argv, capsys):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr()


def test_fit_leaves_the_reconstruction_beside_the_run_files(run, capsys):
    names = {p.name for p in (run / "run").iterdir()}
    assert {"config.json", "history.csv", "metrics.json", "data_summary.json", "reconstruction.pt",
            "checkpoints"} <= names
    rec = dsrecon.load_reconstruction(run / "run")
    model, _ = dsrecon.load_checkpoint(run / "run" / "checkpoints" / "last.pt")
    for a, b in zip(rec.model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    metrics = json.loads((run / "run" / "metrics.json").read_text())
    assert rec.reports["test"]["d_stsp"] == metrics["d_stsp"]
    rc, out = _cli(["evaluate", run / "run", "--no-lyapunov", "--no-plots"], capsys)
    assert rc == 0 and (run / "run" / "eval-test-split" / "report.json").is_file()


def test_generate_writes_data_units_and_equals_the_python_call(run, capsys):
    out = run / "gen.npy"
    rc, printed = _cli(["generate", run / "run", "--steps", "300", "--out", out], capsys)
    assert rc == 0 and "wrote" in printed.out
    x = np.load(out)
    rec = dsrecon.load_reconstruction(run / "run")
    assert x.shape == (300, 3) and x.dtype == np.float64
    np.testing.assert_array_equal(x, rec.generate(300).numpy())
    np.testing.assert_allclose(x[0], np.load(run / "raw.npy")[0], rtol=1e-5)  # data units, not z-scores
    rc, printed = _cli(["generate", run / "run", "--steps", "5", "--out", run / "gen2.npy", "--x0",
                        run / "context.npy"], capsys)
    assert rc == 0
    np.testing.assert_allclose(np.load(run / "gen2.npy")[0], np.load(run / "context.npy")[0], rtol=1e-5)


def test_forecast_writes_data_units_and_equals_the_python_call(run, capsys):
    out = run / "fc.npy"
    rc, printed = _cli(["forecast", run / "run", "--context", run / "context.npy", "--horizon", "25", "--out", out],
                       capsys)
    assert rc == 0, printed.err
    y = np.load(out)
    rec = dsrecon.load_reconstruction(run / "run")
    assert y.shape == (25, 3)
    np.testing.assert_array_equal(y, rec.forecast(np.load(run / "context.npy"), 25).numpy())


def test_an_existing_out_is_never_overwritten_without_force(run, capsys):
    out = run / "mine.npy"
    np.save(out, np.arange(3.0))
    for cmd in (["generate", run / "run", "--steps", "10"],
                ["forecast", run / "run", "--context", run / "context.npy", "--horizon", "5"]):
        rc, printed = _cli([*cmd, "--out", out], capsys)
        assert rc == 1 and "already exists" in printed.err and "--force" in printed.err
        np.testing.assert_array_equal(np.load(out), np.arange(3.0))
    rc, _ = _cli(["generate", run / "run", "--steps", "10", "--out", out, "--force"], capsys)
    assert rc == 0 and np.load(out).shape == (10, 3)


@pytest.mark.parametrize("argv, pattern", [
    (["generate", "{missing}", "--steps", "5", "--out", "{tmp}/a.npy"], "no such file or folder"),
    (["generate", "{empty}", "--steps", "5", "--out", "{tmp}/a.npy"], "no reconstruction.pt in"),
    (["generate", "{run}", "--steps", "5", "--out", "{tmp}/a.txt"], "--out must name a .npy file"),
    (["forecast", "{run}", "--context", "{narrow}", "--horizon", "5", "--out", "{tmp}/a.npy"],
     "has N = 2 column\\(s\\), but the run was fitted on 3 channel"),
    (["forecast", "{run}", "--context", "{tmp}/nothing.npy", "--horizon", "5", "--out", "{tmp}/a.npy"],
     "file not found"),
])
def test_clear_errors(run, tmp_path, capsys, argv, pattern):
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "narrow.npy", np.zeros((50, 2)))
    fill = {"missing": tmp_path / "absent", "empty": tmp_path / "empty", "run": run / "run", "tmp": tmp_path,
            "narrow": tmp_path / "narrow.npy"}
    rc, printed = _cli([a.format(**fill) for a in argv], capsys)
    assert rc == 1 and pytest.importorskip("re").search(pattern, printed.err), printed.err
    assert not (tmp_path / "a.npy").exists()


def test_bad_options_exit_2(run, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["forecast", str(run / "run"), "--context", str(run / "context.npy"), "--horizon", "0", "--out", "x.npy"])
    assert exc.value.code == 2 and "--horizon: must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["generate", str(run / "run"), "--out", "x.npy"])
    assert exc.value.code == 2 and "--steps" in capsys.readouterr().err
