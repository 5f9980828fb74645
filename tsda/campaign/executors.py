"""Executors: how a campaign's runs are run. Each takes the jobs to run and `on_result`,
called in this process with every finished run's results row (see `tsda.campaign.store`).

    local   each run a process (`run_job`), `workers` at a time
    ray     each run a Ray task with its CPU/GPU request

A new executor is one more `Executor` value, one function `(jobs, on_result, options)` and
its entry in `EXECUTORS`; `run_campaign` and the command find it there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tsda.campaign.spec import RunJob
from tsda.campaign.store import finished_metrics, result_row
from tsda.runs import write_json_atomic

Executor = Literal["local", "ray"]
#: receives each finished run's results row, in the campaign's process
OnResult = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ExecutorOptions:
    """Executor settings: `workers` (local: concurrent run processes); `address`, `num_cpus`,
    `num_gpus` (ray: the cluster and each run's request)."""

    workers: int = 1
    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0


# -- one run as a process ---------------------------------------------------------------------
def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the run process is killed when the thread that started it dies (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _log_tail(path: Path, chars: int = 2000) -> str:
    """The last `chars` characters of a run's log, stripped ("" when there is none)."""
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace")[-chars:]
    return text.strip()


def run_job(job: RunJob, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one job as `python -m tsda.cli fit ARGS` in a fresh run directory; its results row.

    The run directory is wiped first (a retry starts clean), then holds `run_spec.json`,
    the run's outputs and `run.log` (its stdout and stderr).
    """
    run_dir = Path(job.run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    write_json_atomic(run_dir / "run_spec.json", {"condition": job.condition, "seed": job.seed,
                                                  "args": list(job.args), "cwd": job.cwd})
    cwd = job.cwd if Path(job.cwd).is_dir() else None
    command = [sys.executable, "-m", "tsda.cli", "fit", *job.args]
    started = time.perf_counter()
    with open(run_dir / "run.log", "w") as log:
        proc = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})},
                              preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    seconds = time.perf_counter() - started
    metrics = finished_metrics(job) if proc.returncode == 0 else None
    error = None
    if metrics is None:
        error = f"exit code {proc.returncode}: {_log_tail(run_dir / 'run.log')}"
    return result_row(job, metrics, seconds, proc.returncode, error)


# -- executors --------------------------------------------------------------------------------
def execute_local(jobs: Sequence[RunJob], on_result: OnResult, workers: int = 1) -> None:
    """Run `jobs` as processes, `workers` at a time; `on_result(row)` in this process."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    env = {}
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores between concurrent runs
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    if workers == 1:
        for job in jobs:
            on_result(run_job(job, env))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_job, job, env) for job in jobs]
        for future in as_completed(futures):
            on_result(future.result())


def execute_ray(jobs: Sequence[RunJob], on_result: OnResult,
                address: str | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0) -> None:
    """Each job a Ray task requesting `num_cpus` / `num_gpus`; rows come back to this process.

    Joins the running Ray instance when one is initialised, else `ray.init(address)`
    (None = start a local one, `auto` = the running cluster, `ray://host:10001` = a client).
    """
    try:
        import ray
    except ImportError as err:
        raise ImportError("the ray executor needs Ray: pip install 'tsda[ray]'") from err
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False) if address is None else ray.init(address=address)
    try:
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_calls=1, max_retries=0)(run_job)
        pending = {task.remote(job): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - a lost worker fails the run, not the campaign
                    row = result_row(job, None, 0.0, None, f"ray task failed: {err}")
                on_result(row)
    finally:
        if started_here:
            ray.shutdown()


def _local(jobs: Sequence[RunJob], on_result: OnResult, options: ExecutorOptions) -> None:
    execute_local(jobs, on_result, options.workers)


def _ray(jobs: Sequence[RunJob], on_result: OnResult, options: ExecutorOptions) -> None:
    execute_ray(jobs, on_result, options.address, options.num_cpus, options.num_gpus)


#: every executor by name: runs `jobs`, calling `on_result(row)` once per job
EXECUTORS: dict[Executor, Callable[[Sequence[RunJob], OnResult, ExecutorOptions], None]] = {
    "local": _local,
    "ray": _ray,
}


def executor_for(name: str) -> Callable[[Sequence[RunJob], OnResult, ExecutorOptions], None]:
    """The executor called `name` (an `Executor` value); ValueError for any other name."""
    if name not in EXECUTORS:
        raise ValueError(f"--executor must be {' or '.join(EXECUTORS)}, got {name!r}")
    return EXECUTORS[name]  # type: ignore[index]
