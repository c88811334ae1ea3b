"""Shared fixtures: the GTF paper's benchmark files (by path, never copied) and device markers."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gtf_icml2023"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA; no GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def gtf_data_dir() -> Path:
    """Folder with the GTF paper's files; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def lorenz63_paper_test(gtf_data_dir) -> np.ndarray:
    """The GTF paper's clean z-scored Lorenz-63 test trajectory, (100000, 3) float32."""
    return np.load(gtf_data_dir / "lorenz63_test.npy")


_CACHE_ENV: dict = {}


def pytest_configure(config):
    """Simulation and kernel caches of the test session go to a temp folder, not the user's cache.

    Set here, before collection: test modules build the C kernel at import (``kernel_marks.KERNEL_BUILDS``),
    which a session fixture would only redirect after the fact."""
    _CACHE_ENV["old"] = os.environ.get("DSRECON_CACHE_DIR")
    _CACHE_ENV["dir"] = tempfile.mkdtemp(prefix="dsrecon_test_cache_")
    os.environ["DSRECON_CACHE_DIR"] = _CACHE_ENV["dir"]


def pytest_unconfigure(config):
    if "dir" not in _CACHE_ENV:
        return
    if _CACHE_ENV["old"] is None:
        os.environ.pop("DSRECON_CACHE_DIR", None)
    else:
        os.environ["DSRECON_CACHE_DIR"] = _CACHE_ENV["old"]
    shutil.rmtree(_CACHE_ENV["dir"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)  # tests only: library code never touches the global seed
    # One thread: the tensors in these tests are tiny, and on a shared 2-core machine a second
    # thread made small per-step operations up to 10x slower (measured while writing the suite).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
