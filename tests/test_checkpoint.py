"""Checkpoints: safe round trip, exact resume, atomic writes that survive a killed writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import dsrecon
from dsrecon.models.plrnn import ShPLRNN
from dsrecon.training import train


def _series(n=1500):
    t = np.arange(n) * 0.05
    return np.stack([np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t) * np.cos(t)], 1)


CFG = dict(batches_per_epoch=5, batch_size=4, seq_len=30, checkpoint_every=1, noise_std=0.05)


def test_round_trip_rebuilds_the_model_and_loads_safely(tmp_path):
    model = ShPLRNN(3, 5, 12, observation="affine", seed=4)
    opt = torch.optim.RAdam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(9)
    forcing = dsrecon.AdaptiveGTF(alpha0=0.7)
    path = dsrecon.save_checkpoint(tmp_path / "c.pt", model, optimizer=opt, forcing=forcing, generator=gen,
                                   epoch=3, history=[{"epoch": 1, "loss": 0.5}])
    torch.load(path, weights_only=True)  # only tensors and primitive containers inside
    loaded, state = dsrecon.load_checkpoint(path)
    assert type(loaded) is ShPLRNN and loaded.config() == model.config()
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert state["epoch"] == 3 and state["history"] == [{"epoch": 1, "loss": 0.5}]
    assert state["config"]["forcing"] == forcing.config() and state["forcing"]["alpha"] == 0.7
    g2 = torch.Generator()
    g2.set_state(state["generator"])
    assert torch.equal(torch.rand(4, generator=g2), torch.rand(4, generator=gen))
    assert not list(tmp_path.glob(".tmp-*"))


def test_resume_equals_an_uninterrupted_run(tmp_path):
    x = _series()
    cfg = dsrecon.TrainConfig(epochs=4, **CFG)
    straight = ShPLRNN(3, 4, 10, seed=1)
    ref = train(straight, x, cfg, dsrecon.AdaptiveGTF(every=2), run_dir=tmp_path / "a", progress=False)

    first = ShPLRNN(3, 4, 10, seed=1)
    part = train(first, x, cfg, dsrecon.AdaptiveGTF(every=2), run_dir=tmp_path / "b", progress=False,
                         callback=lambda epoch, record, model: epoch == 2)  # "killed" after epoch 2
    assert part.epochs == 2 and not part.finished
    fresh = ShPLRNN(3, 4, 10, seed=99)  # parameters come from the checkpoint, not from this seed
    res = train(fresh, x, cfg, dsrecon.AdaptiveGTF(every=2), run_dir=tmp_path / "b", resume=True,
                        progress=False)
    assert res.finished and res.n_updates == ref.n_updates == 20
    for (k, a), b in zip(straight.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in res.history] == [r["loss"] for r in ref.history]
    assert [r["alpha"] for r in res.history] == [r["alpha"] for r in ref.history]
    assert (tmp_path / "b" / "history.csv").read_text().count("\n") == 5  # header + 4 epochs
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model"]["name"] == "shplrnn"


def test_a_run_folder_is_never_clobbered(tmp_path):
    x = _series()
    cfg = dsrecon.TrainConfig(epochs=1, **CFG)
    train(ShPLRNN(3, 3, 5), x, cfg, dsrecon.GTF(0.1), run_dir=tmp_path, progress=False)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(RuntimeError, match="already holds a run.*resume"):
        train(ShPLRNN(3, 3, 5), x, cfg, dsrecon.GTF(0.1), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="settings differ"):
        train(ShPLRNN(3, 3, 5), x, cfg, dsrecon.GTF(0.3), run_dir=tmp_path, resume=True, progress=False)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_save_failing_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = ShPLRNN(3, 3, 5, seed=0)
    path = dsrecon.save_checkpoint(tmp_path / "c.pt", model, epoch=1)
    real_save = torch.save

    def broken_save(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a zip")  # some bytes reach the file, then the writer dies
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        dsrecon.save_checkpoint(path, ShPLRNN(3, 3, 5, seed=1), epoch=2)
    monkeypatch.setattr(torch, "save", real_save)
    loaded, state = dsrecon.load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(loaded.W1, model.W1)
    assert not list(tmp_path.glob(".tmp-*"))  # the failed temp file is removed


def test_writer_killed_mid_write_leaves_the_previous_checkpoint(tmp_path):
    # A real kill (SIGKILL: no cleanup code runs) after half of the new checkpoint is written.
    script = textwrap.dedent(f"""
        import os, signal, torch
        import dsrecon
        from dsrecon.models.plrnn import ShPLRNN
        path = {str(tmp_path / "c.pt")!r}
        dsrecon.save_checkpoint(path, ShPLRNN(3, 3, 5, seed=0), epoch=1)
        real = torch.save
        def dying_save(obj, f, *a, **kw):
            real(obj, f, *a, **kw)
            f.flush()
            f.truncate(f.tell() // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        dsrecon.save_checkpoint(path, ShPLRNN(3, 3, 5, seed=1), epoch=2)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert list(tmp_path.glob(".tmp-c.pt.*")), "the half-written temp file should be left behind"
    loaded, state = dsrecon.load_checkpoint(tmp_path / "c.pt")
    assert state["epoch"] == 1
    assert torch.equal(loaded.W1, ShPLRNN(3, 3, 5, seed=0).W1)
    dsrecon.save_checkpoint(tmp_path / "c.pt", loaded, epoch=3)  # the next write cleans up
    assert not list(tmp_path.glob(".tmp-*"))


def test_missing_or_foreign_checkpoint_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        dsrecon.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match="not a dsrecon checkpoint"):
        dsrecon.load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "trunc.pt").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="cannot read checkpoint"):
        dsrecon.load_checkpoint(tmp_path / "trunc.pt")
    assert os.path.exists(tmp_path / "trunc.pt")
