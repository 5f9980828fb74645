"""Running a campaign: plan -> skip the runs recorded `ok` -> adopt the finished but
unrecorded ones -> execute the rest -> record every row as it comes back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tsda.campaign.executors import Executor, ExecutorOptions, executor_for
from tsda.campaign.spec import CampaignSpec, RunJob, plan, validate_conditions
from tsda.campaign.store import ResultStore, finished_metrics, result_row
from tsda.runs import write_json_atomic


def pending_jobs(store: ResultStore, jobs: Sequence[RunJob]) -> list[RunJob]:
    """The jobs still to run: those not recorded `ok` with the same arguments, less the ones
    whose run finished (its `metrics.json` exists) but was not recorded: those are recorded now."""
    todo = []
    for job in jobs:
        if store.done(job):
            continue
        metrics = finished_metrics(job)
        if metrics is not None:  # finished before the last campaign process was killed
            store.record(result_row(job, metrics, float(metrics.get("seconds", 0.0)), 0, None))
        else:
            todo.append(job)
    return todo


def progress_note(row: dict[str, Any]) -> str:
    """What a finished run's progress line says: its test weighted F1, else (runs with
    `--test_after_fit false`) its best validation score, else its error."""
    if row["status"] != "ok":
        return str(row.get("error") or "")[:300]
    test, val = row.get("test_weighted_f1"), row.get("best_score")
    if test is not None:
        return f"weighted F1 {test:.4f}"
    return f"best validation score {val:.4f} (not tested)" if val is not None else "no score recorded"


def _print_row(row: dict[str, Any]) -> None:
    """One progress line per finished run: status, seconds and its score or error."""
    note = progress_note(row)
    print(f"[{row['condition']} seed {row['seed']}] {row['status']} in {row['seconds']:.0f} s: {note}", flush=True)


def run_campaign(
    spec: CampaignSpec,
    out: str | Path,
    executor: Executor = "local",
    workers: int = 1,
    extra: Sequence[str] = (),
    conditions: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    check: Callable[[list[str]], None] | None = None,
    members_per_job: int = 0,
    runs_per_worker: int = 0,
) -> pd.DataFrame:
    """Run every missing (condition, seed) of `spec` into `out`; the results table (see
    `tsda.campaign.store`). `check`, when given, parses each condition's `tsda fit`
    arguments (of the first seed) before any run starts (`validate_conditions`);
    `members_per_job`: runs per process of the ensemble executor (0 = all);
    `runs_per_worker`: runs per worker process of the local executor (0 = no limit); the
    `tsda campaign` command passes `check_fit_args`."""
    execute = executor_for(executor)
    options = ExecutorOptions(  # checked here, before anything is written
        workers=workers,
        runs_per_worker=runs_per_worker,
        members_per_job=members_per_job,
        address=address,
        num_cpus=spec.resources["num_cpus"] if num_cpus is None else num_cpus,
        num_gpus=spec.resources["num_gpus"] if num_gpus is None else num_gpus,
    )
    if check is not None:
        validate_conditions(plan(spec, Path(out), extra, conditions, seeds[:1] if seeds else spec.seeds[:1]), check)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "campaign.json", {**spec.to_json(), "extra": list(extra)})
    store = ResultStore(out / "results.parquet")
    todo = pending_jobs(store, plan(spec, out, extra, conditions, seeds))
    print(f"campaign {spec.name}: {len(todo)} run(s) to do into {out}", flush=True)

    def on_result(row: dict[str, Any]) -> None:
        store.record(row)
        _print_row(row)

    execute(todo, on_result, options)
    return store.frame
