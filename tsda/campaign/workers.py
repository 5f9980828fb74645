"""Warm worker processes: how the local executor and the search run their jobs.

A `WorkerPool` keeps `workers` long-lived processes, each running one job after another in
itself (`tsda.campaign.executors.run_job`: `tsda fit` in-process). A campaign then pays once
per worker, not once per run, for what a run does before its first step: importing torch
and Lightning, reading and curating its data (`FlowDataModule` keeps curated tables per
process) and, with `--compile true`, compiling the training step (dynamo's cache lives in
the process). `runs_per_worker` replaces a worker after that many jobs (1: a fresh process
per run, as isolated as a separate `tsda fit`; 0: never).

Why not `concurrent.futures.ProcessPoolExecutor` or `multiprocessing.Pool`: when a worker
dies mid-job (killed for memory, a crash in native code) the first fails every pending job
(`BrokenProcessPool`) and the second never returns the lost job. A campaign must record
that one run as failed and go on with the next in a new worker, which needs each job's
worker watched by itself: one pipe and one process sentinel per worker.

Workers are spawned (not forked: the parent may hold threads and torch state) and exit when
the pool closes, or at once when the process that owns the pool dies.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Generic, TypeVar

Job = TypeVar("Job")


class WorkerDied(RuntimeError):
    """The worker running a job exited before returning its result.

    Attributes:
        exitcode: the worker's exit code (negative: killed by that signal).
        seconds: wall seconds from handing the job over to the death.
    """

    def __init__(self, exitcode: int | None, seconds: float) -> None:
        super().__init__(f"worker process died with exit code {exitcode} after {seconds:.0f} s")
        self.exitcode = exitcode
        self.seconds = seconds


def _exit_with_parent() -> None:  # pragma: no cover - runs in the worker
    """Block until the pool's process ends, then end this one (no orphaned runs)."""
    parent = mp.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)


def _serve(conn: Connection, fn: Callable[[Any], Any], env: dict[str, str]) -> None:  # pragma: no cover - worker
    """A worker's life: `fn(job)` for every job received, its result sent back; None ends it."""
    os.environ.update(env)
    threads = env.get("OMP_NUM_THREADS")
    if threads:  # torch may be imported already (by `fn`'s module): size its pool explicitly
        import torch

        torch.set_num_threads(int(threads))
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(fn(job))


class _Worker:
    """One worker process and its pipe, started on first use and after each death or
    `runs_per_worker` jobs."""

    def __init__(self, fn: Callable[[Any], Any], env: dict[str, str], runs_per_worker: int) -> None:
        self.fn, self.env, self.runs_per_worker = fn, env, runs_per_worker
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.runs = 0

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, self.fn, self.env), daemon=True)
        self.process.start()
        child.close()
        self.runs = 0

    def run(self, job: Any) -> Any:
        """`fn(job)` in this worker's process; `WorkerDied` if the process ends first."""
        if self.process is None or not self.process.is_alive():
            self._start()
        assert self.conn is not None and self.process is not None
        started = time.perf_counter()
        try:
            self.conn.send(job)
            ready = wait([self.conn, self.process.sentinel])
            result = self.conn.recv() if self.conn in ready else None
        except (EOFError, BrokenPipeError, ConnectionResetError):
            ready = []
        if self.conn not in ready:
            self.process.join()
            died = WorkerDied(self.process.exitcode, time.perf_counter() - started)
            self.close()
            raise died
        self.runs += 1
        if self.runs_per_worker and self.runs >= self.runs_per_worker:
            self.close()
        return result

    def close(self) -> None:
        """End the process (after its current job; there is none when the pool calls this)."""
        if self.process is not None and self.conn is not None:
            if self.process.is_alive():
                try:
                    self.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
                self.process.join(timeout=30)
                if self.process.is_alive():
                    self.process.kill()
                    self.process.join()
            self.conn.close()
        self.process, self.conn = None, None


class WorkerPool(Generic[Job]):
    """`workers` processes running `fn(job)`; `run(job)` blocks until a worker is free and
    returns the result, from any number of threads (the executor's and Optuna's).

    Args:
        fn: a module-level function (it is pickled by reference into each worker).
        workers: concurrent processes (>= 1).
        env: environment set in each worker before its first job (`OMP_NUM_THREADS` also
            sizes torch's thread pool).
        runs_per_worker: jobs a worker runs before it is replaced (0: no limit).
    """

    def __init__(
        self, fn: Callable[[Job], Any], workers: int, env: dict[str, str] | None = None, runs_per_worker: int = 0
    ) -> None:
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        if runs_per_worker < 0:
            raise ValueError(f"--runs_per_worker must be >= 0, got {runs_per_worker}")
        self._all = [_Worker(fn, dict(env or {}), runs_per_worker) for _ in range(workers)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for worker in self._all:
            self._idle.put(worker)

    def run(self, job: Job) -> Any:
        """`fn(job)` in a free worker; `WorkerDied` when that worker dies first (the next
        job gets a new process)."""
        worker = self._idle.get()
        try:
            return worker.run(job)
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """End every worker (call when no job is running)."""
        for worker in self._all:
            worker.close()

    def __enter__(self) -> WorkerPool[Job]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
