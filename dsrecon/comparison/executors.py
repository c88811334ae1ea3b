"""Where the runs of a grid execute: in this process, in worker processes, or as Ray tasks.

Every executor takes the same list of tasks (``(specs, run_dirs, data_dir)`` for
``runner.execute_task``: one run, or a group of shPLRNN seeds trained as one ensemble) and reports
each finished run to ``on_done(task_index, summary)`` in the calling process, in completion order.
A worker that dies (out of memory, killed) is reported as failed runs, never as a crash of the
whole grid.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from dsrecon.comparison.runner import execute_task

EXECUTORS = ("process", "serial", "ray")


def default_workers() -> int:
    """Cores available to this process (``os.sched_getaffinity`` where the OS has it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def check_executor(executor: str, workers) -> tuple[str, int]:
    key = str(executor).lower()
    if key not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if workers is None:
        workers = 1 if key == "serial" else default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if key == "ray":
        import_ray()
    return key, workers


def import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("executor='ray' needs Ray, which is not installed; fix: pip install dsrecon[ray]") from None
    return ray


def run_tasks(tasks: list[tuple], *, executor: str, workers: int, on_done, on_start=None) -> None:
    """Execute ``execute_task(task)`` for every task; ``on_done(i, summary)`` for each of its runs.

    ``on_start(n_running)`` is called whenever the number of tasks in flight changes (for progress
    displays).
    """
    if not tasks:
        return
    if executor == "serial":
        for i, task in enumerate(tasks):
            if on_start:
                on_start(1)
            for summary in execute_task(task, threads=None):
                on_done(i, summary)
    elif executor == "process":
        _run_processes(tasks, workers, on_done, on_start)
    elif executor == "ray":
        _run_ray(tasks, workers, on_done, on_start)
    else:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")


def _lost(task, err) -> list[dict]:
    """A task whose worker died: record it in each run's error.json, as a failed run would."""
    import json
    import traceback
    from pathlib import Path

    message = f"worker: {type(err).__name__}: {err}"
    specs, run_dirs, _ = task
    for spec, run_dir in zip(specs, run_dirs):
        try:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / "error.json").write_text(json.dumps({
                "status": "failed", "stage": "worker", "error_type": type(err).__name__, "error": str(err),
                "traceback": "".join(traceback.format_exception(err)), "spec": spec}, indent=1))
        except OSError:
            pass
    return [{"status": "failed", "run_dir": str(d), "error": message} for d in run_dirs]


PARENT_POLL_S = 0.5  # how often a worker checks that the process that started it is alive


def die_with_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> None:
    """Make this worker process exit as soon as ``parent_pid`` (the ``compare`` process) is gone.

    A parent killed with SIGKILL runs no cleanup, and its workers would otherwise go on training and
    writing into the run folders, racing a rerun. On Linux the kernel delivers SIGKILL when the parent
    dies (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread also compares ``os.getppid()``
    with ``parent_pid`` every ``poll_s`` seconds (an orphan is re-parented) and ends the process.
    """
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl: the polling thread below suffices
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch():
        import time

        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)  # no cleanup: the parent is gone, and the run's checkpoint stays intact

    threading.Thread(target=watch, name="dsrecon-parent-watch", daemon=True).start()


def _run_processes(tasks, workers, on_done, on_start) -> None:
    # spawn: a fresh interpreter per worker (fork after torch has started threads can deadlock);
    # each worker runs with one torch thread, so K workers use K cores, and exits when this
    # process dies, even by SIGKILL (die_with_parent).
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx,
                               initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        pending = {pool.submit(execute_task, task, threads=1): i for i, task in enumerate(tasks)}
        while pending:
            if on_start:
                on_start(min(workers, len(pending)))
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                try:
                    summaries = future.result()
                except Exception as err:  # BrokenProcessPool: the worker died
                    summaries = _lost(tasks[i], err)
                for summary in summaries:
                    on_done(i, summary)
    except BaseException:
        # Ctrl-C or an error in a callback: drop the queued runs instead of waiting for them all
        # (the runs in progress end with their process; finished results and checkpoints stay)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_ray(tasks, workers, on_done, on_start) -> None:
    """One Ray task per run (``num_cpus=1``). Uses a running Ray instance if one is initialized
    (a cluster: the output folder must then be on a file system all nodes share), else starts a
    local one with ``workers`` CPUs and shuts it down afterwards."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(execute_task)
        pending = {remote.remote(task, threads=1): i for i, task in enumerate(tasks)}
        while pending:
            if on_start:
                on_start(min(workers, len(pending)))
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    summaries = ray.get(ref)
                except Exception as err:  # the task's worker died
                    summaries = _lost(tasks[i], err)
                for summary in summaries:
                    on_done(i, summary)
    finally:
        if started:
            ray.shutdown()


__all__ = ["EXECUTORS", "run_tasks", "check_executor", "default_workers", "import_ray"]
