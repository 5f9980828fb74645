"""Campaigns: spec validation, planning, kill + restart exactly once, adoption, report, Ray;
the W&B summary run of `tsda.logging.log_summary_run`."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pytest
import yaml
from support.campaign import BASE, runner, wait_rows, write_spec
from support.wandb import offline_summary

from tsda.campaign import EXECUTORS, CampaignSpec, Executor, ResultStore, executor_for, parse_seeds, plan, run_campaign
from tsda.commands.campaign import main
from tsda.logging import log_summary_run

REPO = Path(__file__).resolve().parents[2]


def test_spec_validation_names_the_bad_key(tmp_path) -> None:
    good = {"base": str(BASE), "seeds": 2, "conditions": {"a": {}, "b": ["--data.sampler", "none"]}}
    spec = CampaignSpec.from_dict(good, tmp_path)
    assert spec.reference == "a" and spec.seeds == [0, 1] and spec.name == tmp_path.name
    for bad, match in [
        ({"sedes": [1]}, "sedes"),
        ({"reference": "zz"}, "reference"),
        ({"control": "zz"}, "control 'zz'"),
        ({"base": "missing.yaml"}, "base"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"conditions": {"a b": {}}}, "a b"),
        ({"conditions": {"a": 3}}, "conditions.a"),
        ({"resources": {"gpus": 1}}, "resources"),
    ]:
        with pytest.raises(ValueError, match=match):
            CampaignSpec.from_dict({**good, **bad}, tmp_path)
    with pytest.raises(ValueError, match="missing key 'conditions'"):
        CampaignSpec.from_dict({"base": str(BASE), "seeds": 1}, tmp_path)
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("x", "--seeds")


def test_plan_orders_seed_major_with_overrides_in_order(tmp_path) -> None:
    spec = CampaignSpec.from_yaml(write_spec(tmp_path, {"a": {"data.batch_size": 64}, "b": {}}))
    jobs = plan(spec, tmp_path / "out", extra=["--data.train_fraction", "0.5"])
    assert [j.key for j in jobs] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    args = list(jobs[0].args)
    assert args[:2] == ["-c", str(BASE)]
    assert args.index("--data.batch_size") < args.index("--data.train_fraction") < args.index("--run_dir")
    assert args[args.index("--model.init_args.backbone_kwargs") + 1] == '{"width": 8}'
    assert args[args.index("--wandb.group") + 1] == "tiny"
    assert args[args.index("--wandb.tags") + 1] == "[a,seed0]"
    assert args[args.index("--seed_everything") + 1] == "0"
    assert jobs[3].run_dir == str((tmp_path / "out" / "runs" / "b" / "seed1").resolve())
    with pytest.raises(ValueError, match="unknown condition 'c'"):
        plan(spec, tmp_path, conditions=["c"])


def fake_metrics(job, f1: float) -> None:
    """Leave a finished run behind in `job.run_dir` (as `tsda fit` would)."""
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "run_spec.json").write_text(json.dumps({"args": list(job.args)}))
    (run_dir / "metrics.json").write_text(
        json.dumps(
            {
                "test_weighted_f1": f1,
                "test_macro_f1": f1,
                "test_accuracy": f1,
                "seconds": 1.0,
                "test_per_class_f1": {"x": f1},
                "latent_silhouette": f1 / 2,
            }
        )
    )


def test_finished_but_unrecorded_runs_are_adopted_not_rerun(tmp_path) -> None:
    spec = CampaignSpec.from_yaml(write_spec(tmp_path, {"a": {}, "b": {}}, reference="a"))
    out = tmp_path / "out"
    jobs = plan(spec, out)
    for i, job in enumerate(jobs):
        fake_metrics(job, 0.5 + 0.1 * i)
    frame = run_campaign(spec, out)  # nothing left to run: every run is adopted
    assert len(frame) == 4 and (frame["status"] == "ok").all() and (frame["attempts"] == 1).all()
    assert not (Path(jobs[0].run_dir) / "run.log").exists()
    again = run_campaign(spec, out)
    assert again[["condition", "seed", "attempts"]].equals(frame[["condition", "seed", "attempts"]])
    # changed arguments make a finished run stale: it is not counted as done
    store = ResultStore(out / "results.parquet")
    assert store.done(jobs[0])
    assert not store.done(plan(spec, out, extra=["--trainer.max_epochs", "2"])[0])


def test_report_from_results(tmp_path) -> None:
    spec = CampaignSpec.from_yaml(
        write_spec(tmp_path, {"a": {}, "b": {}, "c": {}}, seeds=[0, 1, 2], reference="b", control="a")
    )
    out = tmp_path / "out"
    wobble = {0: 0.0, 1: 0.003, 2: -0.002}  # per-seed noise of c, so that its paired differences vary
    for job in plan(spec, out):
        fake_metrics(
            job,
            {"a": 0.6, "b": 0.7, "c": 0.8}[job.condition]
            + 0.01 * job.seed
            + (wobble[job.seed] if job.condition == "c" else 0.0),
        )
    run_campaign(spec, out)
    main(["report", str(out)])
    report = (out / "report.md").read_text()
    assert "![critical difference chart](cd_test_weighted_f1.png)" in report
    assert (out / "cd_test_weighted_f1.png").is_file() and (out / "per_class_f1.png").is_file()
    rows = [line for line in report.splitlines() if line.startswith("| c |")]
    assert rows[0].startswith("| c | 3 | 0.8103 |")  # condition c: n 3, mean 0.8103, best first
    assert "| 0.1003 |" in rows[0]  # delta against the reference b
    assert "latent_silhouette" in report and "Friedman chi2 = 6.000" in report
    # the spec's control: c - a = 0.2 + wobble in every seed, b - a = 0.1 exactly (no t-test: NaN)
    paired = report.split("paired against the control `a`")[1].split("##")[0]
    c_row = next(line for line in paired.splitlines() if line.startswith("| c |"))
    assert c_row.startswith("| c | 3 | 0.2003 |") and "| 3/3 |" in c_row
    assert not any(line.startswith("| a |") for line in paired.splitlines())
    main(["report", str(out), "--control", "b"])
    assert "paired against the control `b`" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="control 'zz' has no finished run"):
        main(["report", str(out), "--control", "zz"])


def test_report_of_a_selection_goes_to_its_own_folder(tmp_path) -> None:
    spec = CampaignSpec.from_yaml(
        write_spec(tmp_path, {"a": {}, "b": {}, "c": {}}, seeds=[0, 1, 2], reference="b", control="a")
    )
    out = tmp_path / "out"
    for job in plan(spec, out):
        if (job.condition, job.seed) != ("c", 2):  # c misses seed 2: a campaign still running
            fake_metrics(job, {"a": 0.6, "b": 0.7, "c": 0.8}[job.condition] + 0.01 * job.seed)
    run_campaign(spec, out, conditions=["a", "b"])
    run_campaign(spec, out, conditions=["c"], seeds=[0, 1])
    main(["report", str(out)])
    whole = (out / "report.md").read_text()
    main(["report", str(out), "--conditions", "b,c", "--complete", "--into", "bc"])
    assert (out / "report.md").read_text() == whole  # the campaign's own report is untouched
    report = (out / "bc" / "report.md").read_text()
    assert "# Campaign `tiny-bc`" in report and "only seeds every selected condition finished" in report
    assert "4 finished run(s), 0 failed; 2 condition(s), seeds [0, 1]" in report
    assert "paired against the control" not in report  # the spec's control a was not selected
    assert (out / "bc" / "cd_test_weighted_f1.png").is_file()
    sub = pd.read_parquet(out / "bc" / "results.parquet")
    assert sorted(zip(sub.condition, sub.seed)) == [("b", 0), ("b", 1), ("c", 0), ("c", 1)]
    main(["report", str(out), "--seeds", "2"])  # default folder `subset`; the control a is kept
    report = (out / "subset" / "report.md").read_text()
    assert "2 finished run(s), 0 failed; 2 condition(s), seeds [2]" in report
    assert json.loads((out / "subset" / "campaign.json").read_text())["subset"]["seeds"] == [2]
    with pytest.raises(ValueError, match=r"--conditions: unknown condition\(s\) \['zz'\]"):
        main(["report", str(out), "--conditions", "a,zz"])
    with pytest.raises(ValueError, match="--into: '../x' must be a relative folder"):
        main(["report", str(out), "--seeds", "0", "--into", "../x"])
    with pytest.raises(ValueError, match="no finished run selected"):
        main(["report", str(out), "--seeds", "7"])


@pytest.mark.slow
def test_kill_and_restart_runs_every_run_exactly_once(tmp_path) -> None:
    extra = tmp_path / "b.yaml"  # condition b parses (checked before the first run) but fails at run time
    extra.write_text(yaml.safe_dump({"data": {"batch_size": 0}}))
    spec = write_spec(tmp_path, {"a": {}, "b": ["-c", str(extra)]}, reference="a")
    out = tmp_path / "out"
    proc = runner(spec, out)
    try:
        first = wait_rows(out / "results.parquet", 2, proc)  # a/0 ok, b/0 failed, then seed 1
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = first[first["seed"] == 0]  # a warm worker may have finished a/1 too before the kill
    assert first.set_index("condition")["status"].to_dict() == {"a": "ok", "b": "failed"}
    assert "batch_size" in first.loc[first["condition"] == "b", "error"].item()
    a0 = Path(first.loc[first["condition"] == "a", "run_dir"].item()) / "metrics.json"
    a0_mtime = a0.stat().st_mtime_ns
    extra.write_text(yaml.safe_dump({"data": {"sampler": "class_weighted", "batch_size": 32}}))
    main(["run", str(spec), "--out", str(out)])
    frame = pd.read_parquet(out / "results.parquet")
    assert sorted(zip(frame["condition"], frame["seed"])) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert (frame["status"] == "ok").all() and frame["error"].isna().all()
    attempts = frame.set_index(["condition", "seed"])["attempts"].to_dict()
    assert attempts[("a", 0)] == 1 and attempts[("b", 0)] == 2  # finished kept, failed retried
    assert a0.stat().st_mtime_ns == a0_mtime  # the finished run was not run again
    assert frame["test_weighted_f1"].between(0, 1).all() and frame["latent_silhouette"].notna().all()
    assert (Path(frame["run_dir"][0]) / "latent_tsne.png").is_file()
    b_args = json.loads(frame.loc[frame["condition"] == "b", "args_json"].iloc[0])
    assert b_args[b_args.index("--wandb.tags") + 1].startswith("[b,seed")


@pytest.mark.slow
def test_ray_executor_runs_a_tiny_campaign(tmp_path) -> None:
    ray = pytest.importorskip("ray")
    spec = CampaignSpec.from_yaml(write_spec(tmp_path, {"a": {}, "b": {"data.sampler": "class_weighted"}}, seeds=[3]))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        frame = run_campaign(spec, tmp_path / "out", executor="ray", num_cpus=1)
    finally:
        ray.shutdown()
    assert sorted(zip(frame["condition"], frame["seed"])) == [("a", 3), ("b", 3)]
    assert (frame["status"] == "ok").all(), frame["error"].tolist()
    assert np.all(frame["test_weighted_f1"].between(0, 1))


def test_every_executor_name_has_an_executor() -> None:
    assert set(EXECUTORS) == set(get_args(Executor))
    with pytest.raises(ValueError, match="--executor must be one of local, ray, ensemble, got 'slurm'"):
        executor_for("slurm")


def test_log_summary_run_writes_an_offline_run(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # the suite runs disabled; WANDB_MODE wins over `mode`
    monkeypatch.setenv("WANDB_SILENT", "true")
    image = tmp_path / "chart.png"
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    fig.savefig(image)
    plt.close(fig)
    table = pd.DataFrame({"mean": [0.8, 0.7]}, index=pd.Index(["a", "b"], name="condition"))
    log_summary_run(
        "auto",
        "tsda-test",
        "tiny-report",
        tmp_path,
        group="tiny",
        job_type="report",
        config={"alpha": 0.05},
        summary={"best_f1": 0.8, "n_runs": 6.0},
        tables={"table/summary": table},
        images={"chart/cd": image},
    )
    run_dir, summary = offline_summary(tmp_path / "wandb")
    assert summary["best_f1"] == 0.8 and summary["n_runs"] == 6.0
    assert summary["table/summary/_type"] == "table-file" and summary["table/summary/nrows"] == 2
    (table_file,) = run_dir.glob("files/media/table/table/summary_*.table.json")
    assert json.loads(table_file.read_text())["columns"] == ["condition", "mean"]  # the index is a column
    assert list(run_dir.glob("files/media/images/chart/cd_*.png"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    log_summary_run("online", "tsda-test", "nothing", tmp_path / "off")
    assert not (tmp_path / "off").exists()


def test_progress_note_of_untested_and_failed_runs() -> None:
    """A run with `--test_after_fit false` has no test score: its line shows the validation
    score instead of failing (a grid on validation only); a failed run shows its error."""
    from tsda.campaign.run import progress_note

    assert progress_note({"status": "ok", "test_weighted_f1": 0.61234, "best_score": 0.6}) == "weighted F1 0.6123"
    assert (
        progress_note({"status": "ok", "test_weighted_f1": None, "best_score": 0.5})
        == "best validation score 0.5000 (not tested)"
    )
    assert progress_note({"status": "failed", "error": "x" * 400}) == "x" * 300
