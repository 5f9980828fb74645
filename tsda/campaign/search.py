"""`run_search`: a searched augmentation policy, trial by trial as ordinary `tsda fit` runs.

Each trial picks a TrivialAugment policy from a `SearchSpace` (`tsda.campaign.space`),
writes it to `OUT/trials/<number>/policy.yaml` and trains it as `tsda fit -c BASE
[overrides] --model.init_args.augmentation policy.yaml --trainer.max_epochs E
--seed_everything S --test_after_fit false` in a warm worker process (`run_job` in a
`WorkerPool`, as the campaign's local executor runs its runs) into
`OUT/trials/<number>/run/`; its value is the run's best validation weighted F1
(`best_score` in `metrics.json`: the checkpoint monitor's best).
The test split is never read: `--test_after_fit false`, and `FlowDataModule.setup("fit")`
encodes only the training and validation flows.

Why Optuna: its TPE sampler is the standard for a few dozen expensive trials over ~55
mixed parameters, its SQLite storage (`OUT/study.db`) makes a search resumable for free
(a rerun loads the study; `trials` is the total wanted), and it is well kept and small; a
hand-written random or grid search would need its own storage and resume, and Ray Tune
would bring a cluster runtime a search of local worker processes does not need.

Resume: finished trials (complete, or failed runs) count towards `trials` and are never
rerun; a trial left running by a killed search is marked failed (`interrupted`) and its
parameters are tried again first. One search per `OUT` at a time (a lock file). A rerun
with other settings (base, overrides, space, epochs, seed) is refused.

Outputs: `OUT/search.json` (settings, the trial table, the best trial, the cost: trials,
wall seconds, and CPU seconds of the trial processes, `getrusage(RUSAGE_CHILDREN)` summed
over the invocations; each trial's own CPU seconds are in its row) and `OUT/policy.yaml` (the best policy, with a comment header
saying how it was found); the trial table also goes to W&B (`tsda.logging.log_summary_run`).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsda.campaign.executors import pooled_run, run_job, thread_env
from tsda.campaign.space import SearchSpace, policy_spec, policy_yaml, summary
from tsda.campaign.spec import RunJob
from tsda.campaign.workers import WorkerPool
from tsda.errors import TsdaError
from tsda.logging import WandbSettings, log_summary_run
from tsda.runs import atomic_path, write_json_atomic


class TrialFailed(RuntimeError):
    """A trial's run failed or recorded no validation score (the study marks it failed)."""


@dataclass(frozen=True)
class SearchSettings:
    """What a search runs; `__post_init__` checks every value, naming its option.

    Args:
        base: the `tsda fit` config every trial starts from (`-c`).
        out: the search directory.
        space: the policies searched.
        trials: trials wanted in all (a rerun counts the finished ones).
        workers: trials at once (warm worker processes; `OMP_NUM_THREADS` shares the cores).
        seed: seeds the sampler and every trial's run (`--seed_everything`).
        epochs: each trial's `--trainer.max_epochs`.
        overrides: `tsda fit` options for every trial (e.g. `--data.train_fraction 0.1`).
        wandb: W&B mode and project of the trials and of the search's summary run.
    """

    base: Path
    out: Path
    space: SearchSpace = field(default_factory=SearchSpace)
    trials: int = 16
    workers: int = 1
    seed: int = 0
    epochs: int = 8
    overrides: tuple[str, ...] = ()
    wandb: WandbSettings = field(default_factory=WandbSettings)

    def __post_init__(self) -> None:
        for name, value, least in (
            ("--trials", self.trials, 1),
            ("--workers", self.workers, 1),
            ("--epochs", self.epochs, 1),
            ("--seed", self.seed, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise TsdaError(f"{name} must be an integer >= {least}, got {value!r}")
        if not Path(self.base).is_file():
            raise TsdaError(f"-c/--config {self.base}: no such file (the tsda fit config every trial starts from)")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise TsdaError(f"--out {self.out}: exists and is not a directory")

    @property
    def name(self) -> str:
        return f"search-{Path(self.out).resolve().name}"

    def identity(self) -> dict[str, Any]:
        """What must stay the same for a rerun to resume the search (not trials, workers)."""
        return {
            "base": str(Path(self.base).resolve()),
            "overrides": list(self.overrides),
            "space": self.space.to_json(),
            "epochs": self.epochs,
            "seed": self.seed,
        }

    def fit_args(self, policy: str, run_dir: Path, number: int | None = None) -> list[str]:
        """The `tsda fit` arguments of a trial: overrides may change the policy mode, not
        the augmentation, epochs, seed, run directory or testing."""
        wandb = [
            "--wandb.mode",
            self.wandb.mode,
            "--wandb.project",
            self.wandb.project,
            "--wandb.group",
            self.name,
            "--wandb.tags",
            "[search]",
        ]
        if number is not None:
            wandb += ["--wandb.name", f"{self.name}-trial{number}"]
        return [
            "-c",
            str(Path(self.base).resolve()),
            "--model.init_args.policy",
            "double",
            *self.overrides,
            "--model.init_args.augmentation",
            policy,
            "--trainer.max_epochs",
            str(self.epochs),
            "--seed_everything",
            str(self.seed),
            "--run_dir",
            str(run_dir),
            "--test_after_fit",
            "false",
            "--latent_plot",
            "false",
            *wandb,
        ]


def check_search(settings: SearchSettings, check: Callable[[list[str]], None] | None) -> None:
    """Check the space's policy builds and (with `check`, e.g. `check_fit_args`) that the
    trials' `tsda fit` arguments parse, before anything is written."""
    try:
        spec = policy_spec(settings.space.example())
    except ValueError as exc:
        raise TsdaError(f"--space: {exc}") from None
    if check is not None:
        try:
            check(settings.fit_args(json.dumps(spec), Path(settings.out) / "trials" / "check" / "run"))
        except ValueError as exc:
            raise TsdaError(f"the trials' tsda fit arguments (-c {settings.base} and the overrides): {exc}") from None


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    with open(out / "search.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TsdaError(f"--out {out}: another search is running there") from None
        yield


def _open_study(settings: SearchSettings):  # -> optuna.Study
    """Create or load `OUT/study.db`; refuse other settings; requeue interrupted trials."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(settings.out).resolve() / 'study.db'}")
    study = optuna.create_study(direction="maximize", storage=storage, study_name="policy", load_if_exists=True)
    identity = study.user_attrs.get("settings")
    if identity is None:
        study.set_user_attr("settings", settings.identity())
    elif identity != settings.identity():
        changed = [k for k in identity if identity[k] != settings.identity().get(k)]
        raise TsdaError(
            f"--out {settings.out} holds a search with other {', '.join(changed)}: rerun it with the "
            "same settings to resume, or use a new --out"
        )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by a killed search
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)  # private ids: the lock makes us alone
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    # a sampler seeded by the trials so far: a resumed search does not redraw the first trials' startup points
    study.sampler = optuna.samplers.TPESampler(seed=settings.seed + len(study.trials))
    return study


def _finished(study) -> list:  # optuna types imported lazily
    """The trials that count towards `trials`: complete, or failed other than by an interruption."""
    from optuna.trial import TrialState

    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))
    ]


def _objective(settings: SearchSettings, pool: WorkerPool[RunJob]) -> Callable[[Any], float]:
    out = Path(settings.out).resolve()

    def objective(trial) -> float:
        params = settings.space.suggest(trial)
        trial.set_user_attr("policy", params)
        folder = out / "trials" / str(trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "policy.yaml"
        path.write_text(policy_yaml(policy_spec(params), f"trial {trial.number} of {settings.name}"))
        args = settings.fit_args(str(path), folder / "run", trial.number)
        row = pooled_run(
            pool, RunJob(f"trial{trial.number}", settings.seed, str(folder / "run"), tuple(args), os.getcwd())
        )
        trial.set_user_attr("seconds", float(row["seconds"]))
        trial.set_user_attr("cpu_seconds", float(row.get("cpu_seconds") or 0.0))
        value = row.get("best_score")
        if row["status"] != "ok" or value is None or not math.isfinite(value):
            error = row["error"] or "no validation score (best_score) in metrics.json"
            trial.set_user_attr("error", error[-600:])
            raise TrialFailed(f"trial {trial.number}: {error[-300:]}")
        return float(value)

    return objective


def _progress(settings: SearchSettings, started: float) -> Callable[[Any, Any], None]:
    """One line per finished trial (value, seconds, policy, the best so far); stops the
    search when a trial fails before any trial has finished (a broken setup, not a policy)."""

    def report(study, trial) -> None:
        a = trial.user_attrs
        what = f"value {trial.value:.4f}" if trial.value is not None else "failed"
        try:
            best = f"best so far: trial {study.best_trial.number} ({study.best_value:.4f})"
        except ValueError:
            best = "no trial finished yet"
        policy = a.get("policy")
        error = f"; {' '.join(a['error'].split())[-300:]}" if a.get("error") else ""
        print(
            f"[trial {trial.number}] {len(_finished(study))}/{settings.trials} {what} in {a.get('seconds', 0):.0f} s "
            f"({summary(policy) if policy else '-'}); {best}; {time.perf_counter() - started:.0f} s so far{error}",
            flush=True,
        )
        if trial.value is None and best == "no trial finished yet":
            print("stopping: a trial failed before any finished; see its run.log", flush=True)
            study.stop()

    return report


def trial_table(study) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, seconds, cpu_seconds, policy, error."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower() + (" (interrupted)" if a.get("interrupted") else ""),
                "value": t.value,
                "seconds": a.get("seconds"),
                "cpu_seconds": a.get("cpu_seconds"),
                "policy": a.get("policy"),
                "error": a.get("error"),
            }
        )
    return rows


def _flat(rows: Sequence[dict[str, Any]]):  # -> pd.DataFrame
    """The trial table with one column per op weight and range end (for W&B)."""
    import pandas as pd

    flat = []
    for r in rows:
        row = {k: v for k, v in r.items() if k not in ("policy", "error")}
        policy = r["policy"] or {}
        row["n"] = policy.get("n")
        for op, w, (lo, hi) in zip(policy.get("ops", []), policy.get("weights", []), policy.get("ranges", [])):
            row.update({f"{op}.weight": w, f"{op}.lo": lo, f"{op}.hi": hi})
        flat.append(row)
    return pd.DataFrame(flat).set_index("number")


def run_search(settings: SearchSettings, check: Callable[[list[str]], None] | None = None) -> dict[str, Any]:
    """Run the trials still wanted; write `search.json` and the best `policy.yaml`; return
    what `search.json` holds. Bad settings raise `TsdaError` before anything is written."""
    check_search(settings, check)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        study = _open_study(settings)
        done = len(_finished(study))
        todo = max(settings.trials - done, 0)
        print(
            f"{settings.name}: {done} trial(s) done, {todo} to run into {out} ({settings.workers} at a time)",
            flush=True,
        )
        started, cpu = time.perf_counter(), _children_cpu()
        if todo:
            with WorkerPool(run_job, settings.workers, thread_env(settings.workers)) as pool:
                study.optimize(
                    _objective(settings, pool),
                    n_trials=todo,
                    n_jobs=settings.workers,
                    catch=(TrialFailed,),
                    callbacks=[_progress(settings, started)],
                )
        now = {
            "trials": len(_finished(study)) - done,
            "wall_seconds": time.perf_counter() - started,
            "cpu_seconds": _children_cpu() - cpu,
        }
        study.set_user_attr("invocations", [*study.user_attrs.get("invocations", []), now])
        return _write_results(settings, study, now)


def _last_value(tokens: Sequence[str], option: str) -> str:
    """The value the last `option` (`--opt v` or `--opt=v`) in `tokens` gives it."""
    values = [
        t.split("=", 1)[1] if "=" in t else (tokens[i + 1] if i + 1 < len(tokens) else "")
        for i, t in enumerate(tokens)
        if t.split("=", 1)[0] == option
    ]
    return values[-1]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _write_results(settings: SearchSettings, study, now: dict[str, Any]) -> dict[str, Any]:
    out = Path(settings.out)
    rows = trial_table(study)
    counted = [r for r in rows if r["state"] in ("complete", "fail")]
    runs = study.user_attrs.get("invocations", [])  # a killed invocation's are lost with it
    cost = {
        "trials": len(counted),
        "failed": sum(r["state"] == "fail" for r in counted),
        "trial_seconds": sum(r["seconds"] or 0.0 for r in rows),
        "wall_seconds": sum(r["wall_seconds"] for r in runs),
        "cpu_seconds": sum(r["cpu_seconds"] for r in runs),
        "invocations": len(runs),
        "this_invocation": now,
    }
    complete = [r for r in rows if r["state"] == "complete"]
    best = max(complete, key=lambda r: r["value"]) if complete else None
    result: dict[str, Any] = {
        "settings": {**settings.identity(), "trials": settings.trials, "workers": settings.workers},
        "best": best,
        "cost": cost,
        "trials": rows,
    }
    write_json_atomic(out / "search.json", result)
    print(
        f"cost: {cost['trials']} trial(s) ({cost['failed']} failed), {cost['wall_seconds']:.0f} s wall "
        f"({cost['trial_seconds']:.0f} s of trial runs), {cost['cpu_seconds']:.0f} CPU-seconds of the trial "
        f"processes over {cost['invocations']} invocation(s); this one: {now['trials']} trial(s), "
        f"{now['wall_seconds']:.0f} s, {now['cpu_seconds']:.0f} CPU-seconds; the test split was not read; "
        f"{out / 'search.json'}",
        flush=True,
    )
    if best is not None:
        mode = _last_value(["--model.init_args.policy", "double", *settings.overrides], "--model.init_args.policy")
        how = (
            f"Found by `tsda augment search` (Optuna TPE, seed {settings.seed}): trial {best['number']}, the "
            f"best of {len(complete)} finished trial(s) by validation weighted F1 ({best['value']:.4f}) after "
            f"{settings.epochs} epoch(s) of\n  {' '.join(['tsda fit -c', str(settings.base), *settings.overrides])}"
            f"\n(policy {mode}; the test split was never read). Train with it:\n"
            f"  tsda fit -c {settings.base} --model.init_args.augmentation {out / 'policy.yaml'}"
        )
        with atomic_path(out / "policy.yaml") as tmp:
            tmp.write_text(policy_yaml(policy_spec(best["policy"]), how))
        print(
            f"best: trial {best['number']} ({best['value']:.4f}, {summary(best['policy'])}); "
            f"policy: {out / 'policy.yaml'}",
            flush=True,
        )
    log_summary_run(
        settings.wandb.mode,
        settings.wandb.project,
        settings.name,
        out,
        group=settings.name,
        job_type="search",
        tags=["search"],
        config=result["settings"],
        summary={
            "best_value": best["value"] if best else float("nan"),
            **{k: cost[k] for k in ("trials", "failed", "wall_seconds", "cpu_seconds")},
        },
        tables={"table/trials": _flat(rows)} if rows else None,
    )
    return result
