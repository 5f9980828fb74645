"""Executors: how a campaign's runs are run. Each takes the jobs to run and `on_result`,
called in this process with every finished run's results row (see `tsda.campaign.store`).

    local     `workers` warm processes (`tsda.campaign.workers.WorkerPool`), each running one
              run after another in itself (`run_job`), replaced after `runs_per_worker` runs
    ray       each run a Ray task with its CPU/GPU request (`run_job` in the task's process)
    ensemble  up to `members_per_job` runs per process (`tsda ensemble`), `workers` processes
              at a time: runs that stack train as one batched model (`tsda.classifier.ensemble`),
              the others (the joint module, Trainer options it lacks) one after another

A new executor is one more `Executor` value, one function `(jobs, on_result, options)` and
its entry in `EXECUTORS`; `run_campaign` and the command find it there.
"""

from __future__ import annotations

import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from tsda.campaign.spec import RunJob
from tsda.campaign.store import finished_metrics, result_row
from tsda.campaign.workers import WorkerDied, WorkerPool
from tsda.runs import write_json_atomic

Executor = Literal["local", "ray", "ensemble"]
#: receives each finished run's results row, in the campaign's process
OnResult = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ExecutorOptions:
    """Executor settings: `workers` (local, ensemble: concurrent processes);
    `runs_per_worker` (local: runs before a worker process is replaced, 0 = never);
    `members_per_job` (ensemble: runs per process, 0 = all); `address`, `num_cpus`,
    `num_gpus` (ray: the cluster and each run's request)."""

    workers: int = 1
    runs_per_worker: int = 0
    members_per_job: int = 0
    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        for name, least in (("workers", 1), ("runs_per_worker", 0), ("members_per_job", 0)):
            if getattr(self, name) < least:
                raise ValueError(f"--{name} must be >= {least}, got {getattr(self, name)}")


# -- one run --------------------------------------------------------------------------------
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


def _fresh_run_dir(job: RunJob) -> Path:
    """Wipe the job's run directory (a retry starts clean) and write its `run_spec.json`."""
    run_dir = Path(job.run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    write_json_atomic(
        run_dir / "run_spec.json",
        {"condition": job.condition, "seed": job.seed, "args": list(job.args), "cwd": job.cwd},
    )
    return run_dir


def _tsda(arguments: list[str], cwd: str, log_path: Path, env: dict[str, str] | None) -> int:
    """Run `python -m tsda.cli ARGUMENTS` in `cwd` (when it exists), output into `log_path`."""
    with open(log_path, "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "tsda.cli", *arguments],
            cwd=cwd if Path(cwd).is_dir() else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    return proc.returncode


@contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """This process's output into `path` for the block: file descriptors 1 and 2 (native
    code's output) and `sys.stdout`/`sys.stderr` (which a host such as pytest may have
    pointed elsewhere), the two sharing one file offset."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "w", buffering=1) as log, redirect_stdout(log), redirect_stderr(log):
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


@contextmanager
def _as_fit_command(args: Sequence[str], cwd: str) -> Iterator[None]:
    """For the block, `sys.argv` is `tsda fit ARGS` and the working directory `cwd` (when it
    exists); what a run changes in the process is put back afterwards: the working
    directory, the environment (Lightning sets the DDP ranks' variables and the global seed
    there), warnings filters (once-only warnings show again in the next run's log) and a
    process group a DDP run left initialised."""
    here, environ, argv = os.getcwd(), dict(os.environ), sys.argv
    try:
        with warnings.catch_warnings():
            # runpy notes that the dispatcher may be imported already; it only reads argv
            warnings.filterwarnings("ignore", message=".*found in sys.modules.*", category=RuntimeWarning)
            sys.argv = [argv[0] if argv else "tsda", "fit", *args]
            if Path(cwd).is_dir():
                os.chdir(cwd)
            yield
    finally:
        sys.argv = argv
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
        distributed = sys.modules.get("torch.distributed")
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            distributed.destroy_process_group()


def _fit_here(args: Sequence[str], cwd: str) -> int:
    """`python -m tsda.cli fit ARGS` run in this process (`runpy`, as `-m` runs it: the
    dispatcher is `__main__` for the run, which is also what Lightning's DDP launcher re-runs
    to start the other ranks); its exit status (2: bad input, as the command reports it;
    1: a crash, its traceback printed)."""
    try:
        with _as_fit_command(args, cwd):
            runpy.run_module("tsda.cli", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - a run's crash fails the run, not the worker
        traceback.print_exc()
        return 1
    return 0


def run_job(job: RunJob) -> dict[str, Any]:
    """Run one job in this process as `tsda fit ARGS` in a fresh run directory; its results row.

    The run directory is wiped first (a retry starts clean), then holds `run_spec.json`,
    the run's outputs and `run.log` (its stdout and stderr). Runs one after another in a
    `WorkerPool`'s worker (the local executor, the search) or alone in a Ray task.
    """
    run_dir = _fresh_run_dir(job)
    started = time.perf_counter()
    with _output_to(run_dir / "run.log"):
        returncode = _fit_here(job.args, job.cwd)
    seconds = time.perf_counter() - started
    metrics = finished_metrics(job) if returncode == 0 else None
    error = None
    if metrics is None:
        error = f"exit code {returncode}: {_log_tail(run_dir / 'run.log')}"
    return result_row(job, metrics, seconds, returncode, error)


def pooled_run(pool: WorkerPool[RunJob], job: RunJob) -> dict[str, Any]:
    """`run_job(job)` in a worker of `pool`; a failed row when the worker dies during it."""
    try:
        return pool.run(job)
    except WorkerDied as died:
        return result_row(job, None, died.seconds, died.exitcode, f"{died}: {_log_tail(Path(job.run_dir) / 'run.log')}")


def run_ensemble_job(jobs: Sequence[RunJob], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run `jobs` in one `tsda ensemble` process; their results rows. The jobs file and the
    process's log are `ensemble-<first run>.json|log` beside the run directories' parent
    (`OUT/runs/`); each run directory gets `run_spec.json` and, as it ends, a `tsda fit`
    run's outputs."""
    dirs = [_fresh_run_dir(job) for job in jobs]
    base = dirs[0].parent.parent / f"ensemble-{dirs[0].parent.name}-{dirs[0].name}"
    write_json_atomic(base.with_suffix(".json"), {"runs": [list(job.args) for job in jobs]})
    started = time.perf_counter()
    returncode = _tsda(["ensemble", str(base.with_suffix(".json"))], jobs[0].cwd, base.with_suffix(".log"), env)
    elapsed = time.perf_counter() - started
    rows = []
    for job in jobs:
        metrics = finished_metrics(job)
        if metrics is None:
            error = f"exit code {returncode}, no metrics.json: {_log_tail(base.with_suffix('.log'))}"
            rows.append(result_row(job, None, elapsed, returncode, error))
        else:
            rows.append(result_row(job, metrics, float(metrics.get("seconds", elapsed)), returncode, None))
    return rows


# -- executors --------------------------------------------------------------------------------
def thread_env(workers: int) -> dict[str, str]:
    """`OMP_NUM_THREADS` sharing the cores between `workers` concurrent processes (unless set)."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}


def _in_threads(tasks: Sequence[Callable[[], list[dict[str, Any]]]], on_result: OnResult, workers: int) -> None:
    """Run `tasks` (each returning rows), `workers` at a time; `on_result(row)` in this thread."""
    if workers == 1:
        for task in tasks:
            for row in task():
                on_result(row)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in as_completed([pool.submit(task) for task in tasks]):
            for row in future.result():
                on_result(row)


def execute_local(jobs: Sequence[RunJob], on_result: OnResult, workers: int = 1, runs_per_worker: int = 0) -> None:
    """Run `jobs` in `workers` warm worker processes (`WorkerPool`, each replaced after
    `runs_per_worker` runs; 0: never); `on_result(row)` in this process."""
    with WorkerPool(run_job, workers, thread_env(workers), runs_per_worker) as pool:
        _in_threads([partial(_pooled_rows, pool, job) for job in jobs], on_result, workers)


def _pooled_rows(pool: WorkerPool[RunJob], job: RunJob) -> list[dict[str, Any]]:
    return [pooled_run(pool, job)]


def ensemble_chunks(jobs: Sequence[RunJob], members_per_job: int) -> list[list[RunJob]]:
    """`jobs` ordered by condition (then seed), cut into processes of `members_per_job`
    runs (0 = one process for all): a condition's seeds stack, so they share a process."""
    if members_per_job < 0:
        raise ValueError(f"--members_per_job must be >= 0, got {members_per_job}")
    ordered = sorted(jobs, key=lambda job: (job.condition, job.seed))
    size = members_per_job or max(len(ordered), 1)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def execute_ensemble(jobs: Sequence[RunJob], on_result: OnResult, members_per_job: int = 0, workers: int = 1) -> None:
    """Run `jobs` as `tsda ensemble` processes of `members_per_job` runs, `workers` at a time."""
    env = thread_env(workers)
    chunks = ensemble_chunks(jobs, members_per_job)
    _in_threads([partial(run_ensemble_job, chunk, env) for chunk in chunks], on_result, workers)


def execute_ray(
    jobs: Sequence[RunJob],
    on_result: OnResult,
    address: str | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
) -> None:
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
    execute_local(jobs, on_result, options.workers, options.runs_per_worker)


def _ray(jobs: Sequence[RunJob], on_result: OnResult, options: ExecutorOptions) -> None:
    execute_ray(jobs, on_result, options.address, options.num_cpus, options.num_gpus)


def _ensemble(jobs: Sequence[RunJob], on_result: OnResult, options: ExecutorOptions) -> None:
    execute_ensemble(jobs, on_result, options.members_per_job, options.workers)


#: every executor by name: runs `jobs`, calling `on_result(row)` once per job
EXECUTORS: dict[Executor, Callable[[Sequence[RunJob], OnResult, ExecutorOptions], None]] = {
    "local": _local,
    "ray": _ray,
    "ensemble": _ensemble,
}


def executor_for(name: str) -> Callable[[Sequence[RunJob], OnResult, ExecutorOptions], None]:
    """The executor called `name` (an `Executor` value); ValueError for any other name."""
    if name not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    return EXECUTORS[name]  # type: ignore[index]
