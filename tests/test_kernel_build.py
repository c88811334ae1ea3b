"""The compiled kernel's cache (:mod:`dsrecon.fast._build`) survives damage, hung compilers and killed builds.

A truncated library must never reach ``dlopen`` (that is SIGBUS, not an exception), so those
loads run in a subprocess. Most tests use a fake compiler that copies this session's real library
into place (milliseconds instead of a build); each uses its own cache folder.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dsrecon.fast import _build, _kernels

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_library() -> Path:
    try:
        return Path(_kernels.c_library()._name)
    except RuntimeError as err:
        pytest.skip(str(err))


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_cc(tmp_path, monkeypatch, real_library):
    """A 'compiler' that copies the real library to its -o argument and counts its runs; the cache
    goes to a folder of this test."""
    cc = _script(tmp_path / "fake-cc", 'echo run >> "$FAKE_CC_COUNT"\n'
                 'while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done\n'
                 'cp "$FAKE_CC_LIBRARY" "$out"\n')
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("FAKE_CC_COUNT", str(tmp_path / "count"))
    monkeypatch.setenv("FAKE_CC_LIBRARY", str(real_library))
    monkeypatch.setenv("DSRECON_CACHE_DIR", str(tmp_path / "cache"))
    return cc


def _runs(tmp_path) -> int:
    count = tmp_path / "count"
    return len(count.read_text().split()) if count.exists() else 0


def _target() -> Path:
    return _build.library_path(_build.c_source(), _build.find_compiler(), _build.cache_folder())


def _cache_build() -> Path:
    """Build into the cache without loading: this process must not map a file the test then damages
    (and a second dlopen of a path already loaded returns the first handle)."""
    target = _target()
    _build.compile_library(_build.find_compiler(), _build.c_source(), target)
    return target


def _answers(lib) -> bool:
    """A call into the loaded library returns (zero models: nothing is read or written)."""
    return lib.stacked_sumsq_f64(0, 0, None, None, None, None) is None


def _load_in_subprocess() -> subprocess.CompletedProcess:
    code = ("from dsrecon.fast import _build; lib = _build.build_library(); "
            "lib.stacked_sumsq_f64(0, 0, None, None, None, None); print(0)")  # a call into the library
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # the timeout only guards against a hang: a real build on a loaded machine can take minutes
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)


def test_kernel_source_files_are_shipped_as_package_data():
    """The C source is ordinary files in the package, each listed in the build order and in pyproject."""
    assert sorted(p.name for p in _build.CSRC.glob("*.[ch]")) == sorted(_build.SOURCES)
    assert 'csrc/*.c' in (ROOT / "pyproject.toml").read_text()


def test_build_writes_library_and_checksum(tmp_path, fake_cc):
    lib = _build.build_library()
    target = _target()
    assert _answers(lib) and _runs(tmp_path) == 1
    digest, name = _build.checksum_path(target).read_text().split()
    assert name == target.name and _build.verified(target)
    _build.build_library()  # cached and intact: no second build
    assert _runs(tmp_path) == 1
    assert not [p for p in target.parent.iterdir() if p.is_dir()]  # no build folder left behind


def test_library_without_checksum_is_rebuilt(tmp_path, fake_cc):
    """A library the cache cannot vouch for (no checksum: an older dsrecon, or a build killed between
    the two renames) is rebuilt before it is loaded."""
    _cache_build()
    _build.checksum_path(_target()).unlink()
    _build.build_library()
    assert _runs(tmp_path) == 2 and _build.verified(_target())


def test_truncated_library_is_rebuilt_not_loaded(tmp_path, fake_cc):
    """A truncated cached library (a full disk, a killed copy) used to kill every later process with
    SIGBUS inside dlopen; now its checksum fails and it is rebuilt, with a warning."""
    target = _cache_build()
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    proc = _load_in_subprocess()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "does not match its checksum" in proc.stderr
    assert _runs(tmp_path) == 2 and _build.verified(target)


def test_garbage_library_is_rebuilt(tmp_path, fake_cc):
    target = _cache_build()
    target.write_bytes(os.urandom(target.stat().st_size))
    with pytest.warns(RuntimeWarning, match="does not match its checksum"):
        lib = _build.build_library()
    assert _answers(lib) and _runs(tmp_path) == 2 and _build.verified(target)


def test_hung_compiler_times_out_and_falls_back(tmp_path, monkeypatch):
    """A compiler that hangs (uses no CPU) is stopped after COMPILE_STALL_S, with its children (the
    script's `sleep`), its build folder removed; the kernel is then unavailable, said in one warning."""
    monkeypatch.setenv("CC", str(_script(tmp_path / "hung-cc", "sleep 60\n")))
    monkeypatch.setenv("DSRECON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_build, "COMPILE_STALL_S", 0.5)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"made no progress \(no CPU time\) for 0.5 s"):
        _build.build_library()
    assert time.monotonic() - start < 10
    assert not list(_build.cache_folder().glob("build-*"))
    monkeypatch.setattr(_kernels, "_LIB", None)
    monkeypatch.setattr(_kernels, "_WARNED_FALLBACK", False)
    with pytest.warns(RuntimeWarning, match="no progress.*generic autograd paths instead"):
        assert not _kernels.available()


def test_runaway_compiler_is_stopped_by_its_cpu_time(tmp_path, monkeypatch):
    """A compiler that spins is stopped once its CPU time passes COMPILE_CPU_LIMIT_S (a build that
    is merely slow because the machine is busy uses CPU steadily and is left to finish)."""
    monkeypatch.setenv("CC", str(_script(tmp_path / "spin-cc", "while :; do :; done\n")))
    monkeypatch.setenv("DSRECON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_build, "COMPILE_CPU_LIMIT_S", 0.3)
    monkeypatch.setattr(_build, "COMPILE_STALL_S", 30.0)
    with pytest.raises(RuntimeError, match=r"used more than 0.3 s of CPU"):
        _build.build_library()
    assert _build._group_cpu_s(os.getpgid(0)) > 0  # reads this process's own group


def test_failed_compile_gives_one_line_and_a_log(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(_script(tmp_path / "bad-cc", "echo 'shplrnn.c:1: first error' >&2\n"
                                         "echo 'shplrnn.c:2: last error' >&2\nexit 1\n")))
    monkeypatch.setenv("DSRECON_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError) as err:
        _build.build_library()
    message = str(err.value)
    assert "\n" not in message and "exit status 1" in message and "last error" in message
    log = _target().with_suffix(".log")
    assert str(log) in message and "first error" in log.read_text()
    assert not _target().exists()


def test_stale_build_folders_are_pruned(tmp_path):
    """Build folders left by killed builds go (their process gone, or from another host and old);
    a young one, or one whose process still runs here, stays."""
    host = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    old = time.time() - 3600
    folders = {name: tmp_path / name for name in (
        f"build-{host}-{dead.pid}-old", f"build-{host}-{dead.pid}-young", f"build-{host}-{os.getpid()}-alive",
        f"build-elsewhere.example-{os.getpid()}-old", "tmpk2j3_old", "results")}
    for name, folder in folders.items():
        folder.mkdir()
        (folder / "shplrnn.c").write_text("")
        if "young" not in name:
            os.utime(folder, (old, old))
    gone = _build.prune_stale_build_dirs(tmp_path)
    assert sorted(p.name for p in gone) == sorted([f"build-{host}-{dead.pid}-old",
                                                   f"build-elsewhere.example-{os.getpid()}-old", "tmpk2j3_old"])
    assert all(folders[n].exists() for n in (f"build-{host}-{dead.pid}-young", f"build-{host}-{os.getpid()}-alive",
                                             "results"))


def test_stale_build_folder_is_pruned_on_load(tmp_path, fake_cc):
    folder = _build.cache_folder()
    stale = folder / f"build-{socket.gethostname()}-999999999-x"
    stale.mkdir(parents=True)
    os.utime(stale, (time.time() - 3600,) * 2)
    _build.build_library()
    assert not stale.exists()


def test_truncated_library_is_rebuilt_with_the_real_compiler(tmp_path, monkeypatch):
    """End to end with the system compiler: a truncated cached library is compiled afresh and loads."""
    monkeypatch.setenv("DSRECON_CACHE_DIR", str(tmp_path / "cache"))
    target = _target()
    target.parent.mkdir(parents=True)
    if _build.find_compiler() is None:
        pytest.skip("no C compiler")
    target.write_bytes(b"\x7fELF" + bytes(4092))  # the first page of a library, the rest cut off
    _build.checksum_path(target).write_text(f"{'0' * 64}  {target.name}\n")
    proc = _load_in_subprocess()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "does not match its checksum" in proc.stderr and _build.verified(target)


def _kernel_inputs(dtype=torch.float32):
    K, B, T, M, L, N = 2, 3, 5, 3, 4, 3
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g).to(dtype)  # noqa: E731
    args = {"z1": r(K, B, M), "A": r(K, M), "W1": r(K, M, L), "W2t": r(K, M, L), "h1": r(K, M), "h2": r(K, L),
            "alpha": r(K, T), "Q": r(K, M, M), "c": r(K, B, T + 1, M)}
    return args, r(K, B, T + 1, N)


def _call(kernel: str, args: dict, X):
    a = args
    if kernel == "forward":
        return _kernels.forward(a["z1"], a["A"], a["W1"], a["W2t"], a["h1"], a["h2"], True, a["alpha"], a["Q"], a["c"])
    if kernel == "identity_step":
        return _kernels.identity_step(a["z1"], a["A"], a["W1"], a["W2t"], a["h1"], a["h2"], True, a["alpha"], a["Q"],
                                      a["c"], X, 0.5)
    if kernel == "jacobian_norms":
        return _kernels.jacobian_norms(a["z1"], a["A"], a["W1"], a["W2t"], a["h2"], True)
    G = torch.zeros(a["c"].shape[0], a["c"].shape[1], a["alpha"].shape[1], a["c"].shape[3], dtype=a["c"].dtype)
    return _kernels.backward(G, G.clone(), a["A"], a["W1"], a["W2t"], a["h1"], a["h2"], True, a["alpha"], a["Q"])


@pytest.mark.parametrize("kernel", ["forward", "backward", "identity_step", "jacobian_norms"])
@pytest.mark.parametrize("name,damage,message", [
    ("W1", lambda t: t.double(), "W1 must be a contiguous CPU torch.float32 tensor of shape (2, 3, 4), got cpu "
                                 "torch.float64"),
    ("A", lambda t: t[:, :2], "A must be a contiguous CPU torch.float32 tensor of shape (2, 3), got"),
    ("W2t", lambda t: t.transpose(1, 2).contiguous().transpose(1, 2), "W2t must be a contiguous CPU torch.float32 "
                                                                       "tensor of shape (2, 3, 4), got a non-contiguous"),
    ("h2", lambda t: t.numpy(), "h2 must be a torch.Tensor, got ndarray"),
])
def test_kernel_arguments_are_checked_before_the_call(real_library, kernel, name, damage, message):
    """A wrong array never reaches the C code (which would read or write out of bounds): ValueError
    naming the kernel, the argument and what was expected."""
    args, X = _kernel_inputs()
    _call(kernel, args, X)  # the intact call runs
    args[name] = damage(args[name])
    with pytest.raises(ValueError, match=re.escape(f"{kernel}: {message}")):
        _call(kernel, args, X)


def test_generate_without_compiler_warns_once_at_the_callers_line(monkeypatch):
    """dsrecon.generate of a shPLRNN falls back to the eager loop without a compiler: one warning,
    naming the line that called generate."""
    from dsrecon.models.plrnn import ShPLRNN
    from dsrecon.rollout import generate

    monkeypatch.setattr(_kernels, "_LIB", "no C compiler found (set CC or install gcc)")
    monkeypatch.setattr(_kernels, "_WARNED_FALLBACK", False)
    model = ShPLRNN(3, 3, 8, seed=0)
    with pytest.warns(RuntimeWarning, match="no C compiler found") as seen:
        generate(model, torch.zeros(3), 5)
        generate(model, torch.zeros(3), 5)
    assert len(seen) == 1 and seen[0].filename == __file__
