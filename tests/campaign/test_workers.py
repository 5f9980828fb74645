"""Warm worker processes (`tsda.campaign.workers`): reuse, replacement, a dead worker fails
its job only, no orphans; and runs in a warm worker equal runs in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from support.campaign import write_spec
from support.wandb import offline_summary
from support.workers import die_on, pid_and_env

from tsda.campaign import CampaignSpec, plan, run_campaign
from tsda.campaign.executors import pooled_run, run_job
from tsda.campaign.spec import RunJob
from tsda.campaign.workers import WorkerDied, WorkerPool


def test_a_worker_runs_job_after_job_until_its_limit() -> None:
    with WorkerPool(pid_and_env, workers=1, env={"TSDA_POOL_PROBE": "yes"}) as pool:
        pids = [pool.run("TSDA_POOL_PROBE") for _ in range(3)]
    assert {env for _, env in pids} == {"yes"}  # the environment reaches the worker
    assert len({pid for pid, _ in pids}) == 1 and pids[0][0] != os.getpid()  # one warm process
    with WorkerPool(pid_and_env, workers=1, runs_per_worker=2) as pool:
        pids = [pool.run("HOME")[0] for _ in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]  # replaced after every 2 jobs


def test_concurrent_jobs_use_every_worker() -> None:
    with WorkerPool(pid_and_env, workers=2) as pool, ThreadPoolExecutor(2) as threads:
        pids = list(threads.map(lambda _: pool.run("HOME")[0], range(8)))
    assert 1 <= len(set(pids)) <= 2 and os.getpid() not in pids


def test_a_dead_worker_fails_its_job_only_and_is_replaced() -> None:
    with WorkerPool(die_on, workers=1) as pool:
        first = pool.run("live")
        with pytest.raises(WorkerDied, match="exit code -9") as died:
            pool.run("die")
        assert died.value.exitcode == -9
        after = pool.run("live")
    assert after != first  # a fresh process took the dead one's place


def test_a_dead_worker_gives_a_failed_row_with_its_log(tmp_path: Path) -> None:
    job = RunJob("a", 0, str(tmp_path / "run"), ("--x",), str(tmp_path))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.log").write_text("last words")
    row = pooled_run(_DyingPool(), job)  # type: ignore[arg-type]
    assert row["status"] == "failed" and row["returncode"] == -9
    assert "exit code -9" in row["error"] and "last words" in row["error"]


class _DyingPool:
    """A pool whose worker always dies (what `WorkerPool.run` raises then)."""

    def run(self, job: RunJob) -> dict:
        raise WorkerDied(-9, 1.0)


def test_workers_die_with_the_process_that_owns_the_pool(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    script = (
        "import sys; from tsda.campaign.workers import WorkerPool; "
        "from support.workers import sleep_then_pid; WorkerPool(sleep_then_pid, 1).run(sys.argv[1])"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(marker)],
        cwd=Path(__file__).parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    deadline = time.monotonic() + 60
    while not (marker.is_file() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = int(marker.read_text())
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 20
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return status != "Z"


def test_pool_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="--workers must be >= 1, got 0"):
        WorkerPool(pid_and_env, workers=0)
    with pytest.raises(ValueError, match="--runs_per_worker must be >= 0, got -1"):
        WorkerPool(pid_and_env, workers=1, runs_per_worker=-1)


@pytest.mark.slow
def test_runs_in_a_warm_worker_equal_runs_in_fresh_processes(tmp_path: Path) -> None:
    spec = CampaignSpec.from_yaml(
        write_spec(tmp_path, {"a": {}, "b": {"data.sampler": "class_weighted", "data.batch_size": 16}}, seeds=[0, 1])
    )
    warm = run_campaign(spec, tmp_path / "warm", workers=1)  # one process runs a0, b0, a1, b1 in turn
    fresh = run_campaign(spec, tmp_path / "fresh", workers=1, runs_per_worker=1)
    keys = ["test_weighted_f1", "best_score", "epochs", "test_accuracy"]
    warm, fresh = (f.set_index(["condition", "seed"]).sort_index() for f in (warm, fresh))
    assert (warm["status"] == "ok").all() and (fresh["status"] == "ok").all()
    pd.testing.assert_frame_equal(warm[keys], fresh[keys])  # to the last digit
    per_class = [json.loads(v) for v in warm["test_per_class_f1"]], [json.loads(v) for v in fresh["test_per_class_f1"]]
    assert per_class[0] == per_class[1]
    logs = [(Path(d) / "run.log").read_text() for d in warm["run_dir"]]
    assert all("test_weighted_f1 =" in log for log in logs)  # each run's own output in its own log
    assert all(log.count("test_weighted_f1 =") == 1 for log in logs)


@pytest.mark.slow
def test_a_failing_run_does_not_end_its_worker(tmp_path: Path) -> None:
    spec = CampaignSpec.from_yaml(write_spec(tmp_path, {"bad": {"data.batch_size": 0}, "ok": {}}, seeds=[0]))
    frame = run_campaign(spec, tmp_path / "out", workers=1).set_index("condition")
    assert frame.loc["bad", "status"] == "failed" and frame.loc["bad", "returncode"] == 2
    assert "batch_size" in frame.loc["bad", "error"]
    assert frame.loc["ok", "status"] == "ok"


def test_run_job_reports_bad_input_as_exit_status_2(tmp_path: Path) -> None:
    job = RunJob("a", 0, str(tmp_path / "run"), ("--trainer.max_epochs", "notanumber"), str(tmp_path))
    row = run_job(job)
    assert row["status"] == "failed" and row["returncode"] == 2
    assert "max_epochs" in row["error"] and "Traceback" not in row["error"]
    assert Path(job.run_dir, "run_spec.json").is_file()


@pytest.mark.slow
def test_a_ddp_run_in_a_warm_worker_then_a_plain_run_in_the_same_worker(tmp_path: Path) -> None:
    """Lightning starts the second rank by re-running this process's command: in a worker it
    must be `tsda fit`, and the ranks' environment and process group must not reach the next run."""
    ddp = {"trainer.accelerator": "cpu", "trainer.devices": 2, "trainer.strategy": "ddp"}
    spec = CampaignSpec.from_yaml(write_spec(tmp_path, {"ddp": ddp, "one": {}}, seeds=[0]))
    frame = run_campaign(spec, tmp_path / "out", workers=1).set_index("condition")
    assert (frame["status"] == "ok").all(), frame["error"].tolist()
    assert "WORLD_SIZE" not in os.environ and "LOCAL_RANK" not in os.environ
    log = (Path(frame.loc["ddp", "run_dir"]) / "run.log").read_text()
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log


@pytest.mark.slow
def test_two_runs_in_one_process_log_two_wandb_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's W&B logger reuses an open run: each `tsda fit` finishes its own."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # the suite runs disabled
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = CampaignSpec.from_yaml(write_spec(tmp_path, {"a": {}}, seeds=[0, 1]))
    for job in plan(spec, tmp_path / "out", (), None, None):
        assert run_job(job)["status"] == "ok"  # both in this process
    for seed in (0, 1):
        run_dir, summary = offline_summary(tmp_path / "out" / "runs" / "a" / f"seed{seed}" / "wandb")
        metrics = json.loads((run_dir.parents[1] / "metrics.json").read_text())
        assert summary["test_weighted_f1"] == pytest.approx(metrics["test_weighted_f1"])


@pytest.mark.parametrize(("option", "value"), [("workers", 0), ("runs_per_worker", -1), ("members_per_job", -2)])
def test_bad_executor_settings_stop_before_anything_is_written(tmp_path: Path, option: str, value: int) -> None:
    spec = CampaignSpec.from_yaml(write_spec(tmp_path, {"a": {}}, seeds=[0]))
    with pytest.raises(ValueError, match=f"--{option} must be >= {1 if option == 'workers' else 0}, got {value}"):
        run_campaign(spec, tmp_path / "out", **{option: value})
    assert not (tmp_path / "out").exists()
