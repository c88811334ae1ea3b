"""Building, caching and loading the C kernel of :mod:`dsrecon.fast._kernels`.

The source lives in ``dsrecon/fast/csrc/`` (shipped as package data): the files of
:data:`SOURCES` concatenated in that order are one translation unit, written to ``shplrnn.c`` and
compiled with the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) and
:data:`CFLAGS` into the per-user cache ``dsrecon._cache.cache_dir() / "kernels"``
(``$DSRECON_CACHE_DIR/kernels``, default ``~/.cache/dsrecon/kernels``), once per source, flags,
compiler and CPU (``shplrnn_<key>.so``, ``key`` a hash of the four).

The cache is protected against damage, since ``dlopen`` of a truncated library kills the process
with SIGBUS instead of raising:

- a build goes into a fresh folder ``build-<host>-<pid>-*`` in the cache folder and is moved into
  place with :func:`os.replace` (atomic: no process sees a half-written library);
- next to each library, ``shplrnn_<key>.so.sha256`` (``sha256sum`` format) is written after a
  successful build; a library is loaded only when its SHA-256 matches, otherwise it is rebuilt
  (with a warning when a checksum existed, i.e. the file was damaged);
- the compiler runs in its own process group, killed as a whole when it stops using CPU for
  :data:`COMPILE_STALL_S` (hung) or passes :data:`COMPILE_CPU_LIMIT_S` of CPU time (runaway);
- build folders left by a killed process (its PID gone on this host, or older than
  :data:`STALE_BUILD_S` for another host) are deleted before each load; libraries of other keys
  not modified for a week are deleted after each build.

Failures raise ``RuntimeError`` with a one-line message (the compiler's full output goes to
``shplrnn_<key>.log`` in the cache folder); :func:`dsrecon.fast._kernels.c_library` turns that into
the fallback paths.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

from dsrecon._process import pid_alive

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("common.h", "pool.c", "rollout.c", "jacobian_norms.c", "radam.c", "stacked_sumsq.c")
CFLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-ffp-contract=fast", "-pthread", "-std=c99",
          "-shared", "-fPIC"]
COMPILE_STALL_S = 120.0  # a compiler that uses no CPU for this long (hung) is stopped and the build fails
COMPILE_CPU_LIMIT_S = 600.0  # ... as is one that has used this much CPU time (runaway)
STALE_BUILD_S = 600.0  # build folders older than this whose process is gone are deleted
PRUNE_AGE_S = 7 * 24 * 3600  # libraries of other keys not modified for this long are deleted


def c_source() -> str:
    """The kernel's source text as the compiler sees it: the :data:`SOURCES` files concatenated."""
    return "".join((CSRC / name).read_text(encoding="utf-8") for name in SOURCES)


def cache_folder() -> Path:
    from dsrecon._cache import cache_dir

    return cache_dir() / "kernels"


def find_compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def cpu_signature() -> str:
    """CPU model and feature flags: a library built with -march=native must not move machines."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


def library_path(source: str, cc: str, folder: Path) -> Path:
    key = hashlib.sha1("\n".join([source, " ".join(CFLAGS), cc, cpu_signature()]).encode()).hexdigest()[:16]
    return folder / f"shplrnn_{key}.so"


def checksum_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verified(library: Path) -> bool:
    """Whether ``library`` exists and its SHA-256 equals the one written after its build."""
    try:
        expected = checksum_path(library).read_text().split()[0]
        return _sha256(library) == expected
    except (OSError, IndexError):
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:  # already gone
        pass


def _group_cpu_s(pgid: int) -> float | None:
    """CPU seconds (user + system, with reaped children) of the processes in process group ``pgid``,
    from ``/proc/<pid>/stat`` (fields 5 pgrp, 14-17 utime, stime, cutime, cstime); None without /proc."""
    try:
        entries = os.listdir("/proc")
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    ticks = 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2:].split()  # from field 3 (state) on
            if int(fields[2]) == pgid:
                ticks += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError, IndexError):
            continue
    return ticks / tick


def _run_compiler(cmd: list, stall_s: float, cpu_limit_s: float) -> tuple[int, str]:
    """Run ``cmd`` in a new process group; ``(returncode, stderr)``.

    The group (a compiler driver's children, a wrapper script's) is killed and ``RuntimeError``
    raised when it uses no CPU for ``stall_s`` seconds (a hung compiler) or more than
    ``cpu_limit_s`` CPU seconds (a runaway one). CPU time, not wall time, so that a build slowed
    down by other processes on a busy machine still finishes. Without ``/proc`` the limit is
    ``stall_s`` of wall time."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", start_new_session=True)
    poll = min(1.0, max(0.05, stall_s / 4))
    start = last_progress = time.monotonic()
    last_cpu = -1.0
    try:
        while True:
            try:
                _, err = proc.communicate(timeout=poll)  # retrying after a timeout loses no output
                return proc.returncode, err
            except subprocess.TimeoutExpired:
                pass
            now, cpu = time.monotonic(), _group_cpu_s(proc.pid)
            if cpu is None:
                stalled, runaway = now - start > stall_s, False
            else:
                if cpu > last_cpu:
                    last_cpu, last_progress = cpu, now
                stalled, runaway = now - last_progress > stall_s, cpu > cpu_limit_s
            if stalled or runaway:
                _kill_group(proc)
                proc.communicate()
                why = (f"used more than {cpu_limit_s:g} s of CPU" if runaway
                       else f"made no progress (no CPU time) for {stall_s:g} s")
                raise RuntimeError(f"the C compiler {cmd[0]} {why} and was stopped "
                                   "(limits: dsrecon.fast._build.COMPILE_STALL_S, COMPILE_CPU_LIMIT_S)")
    except BaseException:  # KeyboardInterrupt, or the error above: leave no compiler behind
        _kill_group(proc)
        raise


def _build_dir_owner(name: str) -> tuple[str, int] | None:
    """``(host, pid)`` from a build folder's name ``build-<host>-<pid>-<random>``, else None."""
    try:
        head, pid, _ = name.rsplit("-", 2)
        return head[len("build-"):], int(pid)
    except ValueError:
        return None


def prune_stale_build_dirs(folder: Path, min_age_s: float = STALE_BUILD_S) -> list[Path]:
    """Delete build folders of ``folder`` left by killed builds; returns the deleted paths.

    A folder ``build-<host>-<pid>-*`` (or ``tmp*``, the name older versions used) is stale when it
    is older than ``min_age_s`` (longer than a hung build may stall, :data:`COMPILE_STALL_S`) and, if it
    was made on this host, its process no longer runs. Folders that cannot be deleted are left."""
    gone = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return gone
    host, now = socket.gethostname(), time.time()
    for entry in entries:
        if not entry.name.startswith(("build-", "tmp")):
            continue
        try:
            if not entry.is_dir() or now - entry.stat().st_mtime < min_age_s:
                continue
        except OSError:
            continue
        owner = _build_dir_owner(entry.name) if entry.name.startswith("build-") else None
        if owner is not None and owner[0] == host and pid_alive(owner[1]):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            gone.append(entry)
    return gone


def prune_old_builds(keep: Path, max_age_s: float = PRUNE_AGE_S) -> list[Path]:
    """Delete the other kernel builds in ``keep``'s folder not modified for ``max_age_s`` (default
    a week), with their checksum and log files: every new dsrecon version or compiler flag leaves a
    library behind. A build another machine sharing the folder still uses is younger (its mtime is
    its build time, so a pruned one is rebuilt on its next use there); a library already loaded
    stays valid after its file is deleted. Returns the deleted libraries; files that cannot be
    deleted are left alone."""
    gone = []
    for old in keep.parent.glob("shplrnn_*.so"):
        try:
            if old != keep and time.time() - old.stat().st_mtime > max_age_s:
                old.unlink()
                gone.append(old)
                for extra in (checksum_path(old), old.with_suffix(".log")):
                    extra.unlink(missing_ok=True)
        except OSError:
            pass
    return gone


def compile_library(cc: str, source: str, target: Path) -> None:
    """Compile ``source`` into ``target`` and write its checksum file, both atomically.

    Raises ``RuntimeError`` (one line) when the compiler fails (its full output is then in
    ``target.with_suffix(".log")``) or hangs (:data:`COMPILE_STALL_S`, :data:`COMPILE_CPU_LIMIT_S`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"build-{socket.gethostname()}-{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=target.parent) as tmp:
        src = Path(tmp) / "shplrnn.c"
        src.write_text(source, encoding="utf-8")
        out = Path(tmp) / "shplrnn.so"
        try:
            code, err = _run_compiler([cc, *CFLAGS, str(src), "-o", str(out)], COMPILE_STALL_S, COMPILE_CPU_LIMIT_S)
        except OSError as exc:  # not executable, not found
            raise RuntimeError(f"cannot run the C compiler {cc}: {exc}") from None
        if code != 0 or not out.is_file():
            log = target.with_suffix(".log")
            try:
                log.write_text(err)
            except OSError:
                log = None
            last = next((ln.strip() for ln in reversed(err.splitlines()) if ln.strip()), "no output")
            where = f"; full output in {log}" if log else ""
            raise RuntimeError(f"compiling the C kernel with {cc} failed (exit status {code}): {last}{where}")
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        os.replace(out, target)  # atomic: concurrent builders never see a half-written file
        tmp_sum = Path(tmp) / "shplrnn.so.sha256"
        tmp_sum.write_text(f"{digest}  {target.name}\n")
        os.replace(tmp_sum, checksum_path(target))


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and return types of every entry point (a missing symbol raises AttributeError)."""
    ptr = ctypes.c_void_p
    for name in ("forward_f32", "forward_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 8 + [ptr] * 11
        getattr(lib, name).restype = ctypes.c_int
    for name in ("backward_f32", "backward_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 7 + [ptr] * 14
        getattr(lib, name).restype = ctypes.c_int
    for name, real in (("identity_step_f32", ctypes.c_float), ("identity_step_f64", ctypes.c_double)):
        getattr(lib, name).argtypes = [ctypes.c_int] * 9 + [real] + [ptr] * 19
        getattr(lib, name).restype = ctypes.c_int
    for name in ("radam_f32", "radam_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] + [ptr] * 6 + [ctypes.c_int] + [ctypes.c_double] * 4
        getattr(lib, name).restype = None
    for name in ("jacobian_norms_f32", "jacobian_norms_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 6 + [ptr] * 6
        getattr(lib, name).restype = ctypes.c_int
    for name in ("stacked_sumsq_f32", "stacked_sumsq_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 2 + [ptr] * 4
        getattr(lib, name).restype = None


def build_library() -> ctypes.CDLL:
    """The kernel library from the cache, verified, or built now; ``RuntimeError`` (one line) if it cannot be.

    A cached library whose checksum is missing or wrong is rebuilt before anything loads it; one
    that is intact but fails to load (or lacks an entry point) is rebuilt once."""
    cc = find_compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC or install gcc)")
    source = c_source()
    folder = cache_folder()
    target = library_path(source, cc, folder)
    prune_stale_build_dirs(folder)
    for attempt in range(2):
        if attempt or not verified(target):
            if attempt == 0 and checksum_path(target).exists():
                warnings.warn(f"the cached C kernel {target} does not match its checksum (damaged); rebuilding it",
                              RuntimeWarning, stacklevel=2)
            compile_library(cc, source, target)
            prune_old_builds(target)
        try:
            lib = ctypes.CDLL(str(target))
            _declare(lib)
            return lib
        except (OSError, AttributeError) as err:
            if attempt:
                raise RuntimeError(f"the C kernel {target} does not load: {err}") from None
    raise AssertionError("unreachable")
