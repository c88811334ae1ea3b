"""Every example script runs top to bottom with --quick (smoke test, in a subprocess).

Each runs in a temporary working folder, so outputs never land in the repository; the --quick
versions are meant to take well under 30 s each on two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))
TIMEOUT_S = 180  # generous: the CI machine may be loaded; the --quick runs aim at < 30 s


def test_examples_exist():
    assert EXAMPLES, "no examples/*.py found"


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_with_quick(script, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, f"{script.name} failed after {elapsed:.0f} s:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
