"""Smoke test of benchmarks/ecg_gtf.py --quick on a slice of the GTF paper's ECG files.

Checks the plumbing, not the science: every method trains (the shPLRNN seeds as one ensemble),
is evaluated by the paper's protocol on a test slice, and lands in the runs file and the table
next to the paper's row with the paper's parameter counts (Hess et al. 2023, Table 1: 2785 for the
shPLRNN M=5, L=250 with an affine 5->5 observation; 4872 for LEM H=31; 5920 for LSTM H=35).
"""

from __future__ import annotations

import importlib.util
import json
import re
import math
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("ecg_gtf", ROOT / "benchmarks" / "ecg_gtf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_median_mad_ignores_nan_and_counts_it():
    bench = _bench()
    med, mad, n_nan = bench.median_mad([1.0, 2.0, 4.0, float("nan")])
    assert (med, mad, n_nan) == (2.0, 1.0, 1)  # |1-2|, |2-2|, |4-2| -> median 1
    assert bench.fmt(2.4e-3, 1e-4, sci=True) == "(2.4 +- 0.1)e-3"


def test_quick_run_writes_runs_and_table(gtf_data_dir, tmp_path):
    bench = _bench()
    argv = ["--quick", "--methods", "gtf", "stf", "lem_gtf", "--n-test", "2000", "--val-every", "1",
            "--train", str(gtf_data_dir / "ECG_pecuzal_5d_train.npy"),
            "--test", str(gtf_data_dir / "ECG_pecuzal_5d_test.npy"), "--out", str(tmp_path), "--tag", "t"]
    assert bench.main(argv) == 0
    runs = [json.loads(line) for line in (tmp_path / "ecg_gtf_t_runs.jsonl").read_text().splitlines()]
    by_method = {}
    for r in runs:
        by_method.setdefault(r["method"], []).append(r)
    assert sorted(by_method) == ["gtf", "lem_gtf", "stf"]
    assert [r["seed"] for r in by_method["gtf"]] == [0, 1]  # one ensemble of two seeds
    assert {r["n_params"] for r in by_method["gtf"] + by_method["stf"]} == {2785}
    assert by_method["lem_gtf"][0]["n_params"] == 4872
    assert by_method["stf"][0]["seq_len"] == 221 and by_method["stf"][0]["forcing"] == {"name": "stf", "tau": 55}
    for r in runs:
        assert r["n_test"] == 2000 and r["n_updates"] == r["epochs"] * 3
        assert math.isfinite(r["pe"]) and r["pe"] > 0
    for r in by_method["gtf"]:  # validated: the best checkpoint is evaluated beside the last model
        assert r["best_epoch"] in (1, 2, None) and math.isfinite(r["best_pe"])
    table = (tmp_path / "ecg_gtf_t.md").read_text()
    assert "| shPLRNN + GTF (alpha = 0.3) | paper | last model | 20 | | | 5000 | 4.3 +- 0.6 | 0.34 +- 0.02 |" in table
    # "ours (d_h: 1 NaN)" where a 2-epoch model's free run is constant (no spectrum)
    assert re.search(r"\| shPLRNN \+ GTF \(alpha = 0\.3\) \| ours( \([^)]*NaN\))? \| best validation checkpoint \| 2 \|", table)
    assert "QUICK smoke run" in table and "- commit: " in table
    assert (tmp_path / "ecg_gtf_t.csv").exists()
