"""Campaigns: every (condition, seed) of a study as an ordinary `tsda fit` run.

A spec (`experiments/<study>/campaign.yaml`, see `CampaignSpec`) names a base config, the
conditions (each a set of `tsda fit` overrides), the seeds, the reference condition and an
optional control (the report pairs every condition with it seed by seed).
Each run is `tsda fit -c BASE [overrides] --run_dir DIR/runs/<condition>/seed<S>
--seed_everything S`, the same code path as the command, run in a worker process
(`tsda.campaign.workers`: a warm process runs one run after another, so imports, curated
data and compiled steps are paid once per worker; `--runs_per_worker 1` gives every run a
fresh process). The parent process alone records one row per run in `DIR/results.parquet`
(rewritten atomically after every run), so killing the campaign at any moment loses only
the runs in flight: a restart skips the runs recorded `ok` with the same arguments, adopts
runs that finished (their `metrics.json` exists) but were not recorded yet, and retries the
rest. Executors: `local` (`workers` concurrent worker processes), `ray`
(each run a Ray task with its CPU/GPU request) and `ensemble` (up to `members_per_job` runs
per `tsda ensemble` process, trained as batched ensembles where they stack; each run still
writes its own run directory and `metrics.json`, so results, resume and report are the same).

    spec.py       CampaignSpec, RunJob, plan, parse_seeds, override_args, validate_conditions
    executors.py  run_job (one run in this process), pooled_run, execute_local, execute_ray,
                  execute_ensemble, EXECUTORS
    workers.py    WorkerPool (warm worker processes; a dead worker fails its run only), WorkerDied
    store.py      ResultStore (results.parquet), result_row, finished_metrics, ROW_KEYS
    run.py        run_campaign
    report.py     write_report (report.md, charts, the W&B summary run), read_results, select_runs,
                  write_subset_report (the report of some conditions and seeds in a subfolder)

The command line (`tsda campaign run|report`) is `tsda.commands.campaign`.
"""

from tsda.campaign.executors import (
    EXECUTORS,
    Executor,
    ExecutorOptions,
    OnResult,
    execute_ensemble,
    execute_local,
    execute_ray,
    executor_for,
    run_job,
)
from tsda.campaign.report import read_results, select_runs, write_report, write_subset_report
from tsda.campaign.run import pending_jobs, run_campaign
from tsda.campaign.spec import CampaignSpec, RunJob, override_args, parse_seeds, plan, validate_conditions
from tsda.campaign.store import ROW_KEYS, ResultStore, finished_metrics, result_row

__all__ = [
    "EXECUTORS",
    "ROW_KEYS",
    "CampaignSpec",
    "Executor",
    "ExecutorOptions",
    "OnResult",
    "ResultStore",
    "RunJob",
    "execute_ensemble",
    "execute_local",
    "execute_ray",
    "executor_for",
    "finished_metrics",
    "override_args",
    "parse_seeds",
    "pending_jobs",
    "plan",
    "read_results",
    "result_row",
    "run_campaign",
    "run_job",
    "select_runs",
    "validate_conditions",
    "write_report",
    "write_subset_report",
]
