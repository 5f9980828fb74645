"""Campaigns: every (condition, seed) of a study as an ordinary `tsda fit` run.

    tsda campaign run SPEC --out DIR [--executor local|ray] [--workers N] [--address auto]
                      [--num_cpus C] [--num_gpus G] [--conditions a,b] [--seeds 0-4]
                      [--dry_run] [extra fit overrides for every run, e.g. --data.train_fraction 0.2]
    tsda campaign report DIR [--metric test_weighted_f1] [--alpha 0.05]

A spec (`experiments/<study>/campaign.yaml`, see `CampaignSpec`) names a base config, the
conditions (each a set of `tsda fit` overrides), the seeds and the reference condition.
Each run is `tsda fit -c BASE [overrides] --run_dir DIR/runs/<condition>/seed<S>
--seed_everything S` in its own process (`python -m tsda.cli fit ...`: the same code path,
isolated). The parent process alone records one row per run in `DIR/results.parquet`
(rewritten atomically after every run), so killing the campaign at any moment loses only
the runs in flight: a restart skips the runs recorded `ok` with the same arguments, adopts
runs that finished (their `metrics.json` exists) but were not recorded yet, and retries the
rest. Executors: `local` (sequential, or `--workers N` concurrent run processes) and `ray`
(each run a Ray task with its CPU/GPU request; `--address auto` joins a running cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from tsda.runs import atomic_path, write_json_atomic

USAGE = __doc__
Executor = Literal["local", "ray"]
SPEC_KEYS = ("name", "description", "base", "conditions", "seeds", "reference", "overrides",
             "resources", "wandb_project")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
#: the columns every results row has, first in the table
ROW_KEYS = ("condition", "seed", "status", "error", "seconds", "attempts", "returncode", "run_dir", "args_json")


# -- the spec ---------------------------------------------------------------------------------
def override_args(value: Sequence[str] | dict[str, Any] | None, where: str) -> list[str]:
    """CLI tokens of an override set: a list of tokens as they are, or `{key: value}` as
    `--key value` (lists and dicts as JSON, booleans as true/false, None as null)."""
    if value is None:
        return []
    if isinstance(value, dict):
        tokens = []
        for key, v in value.items():
            tokens.append(key if str(key).startswith("-") else f"--{key}")
            if isinstance(v, bool):
                tokens.append("true" if v else "false")
            elif v is None:
                tokens.append("null")
            elif isinstance(v, (list, dict)):
                tokens.append(json.dumps(v))
            else:
                tokens.append(str(v))
        return tokens
    if isinstance(value, (list, tuple)) and all(isinstance(t, (str, int, float)) for t in value):
        return [str(t) for t in value]
    raise ValueError(f"{where} must be a list of CLI tokens or a mapping of overrides, got {value!r}")


def parse_seeds(value: Any, where: str = "seeds") -> list[int]:
    """Seeds from a list of ints, an int `n` (= 0..n-1), or a string `"0,3,7"` / `"0-29"`."""
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a list of ints, a count or 'a-b', got {value!r}")
    if isinstance(value, int):
        seeds = list(range(value))
    elif isinstance(value, str):
        seeds = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            m = re.fullmatch(r"(\d+)-(\d+)", part)
            if m:
                seeds.extend(range(int(m.group(1)), int(m.group(2)) + 1))
            elif part.isdigit():
                seeds.append(int(part))
            else:
                raise ValueError(f"{where}: cannot read {part!r} (use '0,3,7' or '0-29')")
    elif isinstance(value, (list, tuple)) and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        seeds = list(value)
    else:
        raise ValueError(f"{where} must be a list of ints, a count or 'a-b', got {value!r}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"{where} must be non-empty, distinct and >= 0, got {seeds}")
    return seeds


@dataclass
class CampaignSpec:
    """A study: a base config, named conditions (override sets) and seeds.

    Args:
        name: campaign name (W&B group); default: the spec's folder name.
        base: `tsda fit` config file (relative to the spec file).
        conditions: `{name: overrides}`, each a list of CLI tokens or a `{key: value}`
            mapping (`{"data.sampler": "none"}` -> `--data.sampler none`); paths inside
            overrides are relative to the directory the campaign is launched from.
        seeds: list of ints, a count n (0..n-1) or `"a-b"`.
        reference: the condition deltas are measured against (default: the first).
        overrides: overrides for every run, before the condition's.
        resources: per-run Ray request `{num_cpus, num_gpus}`.
        wandb_project: W&B project of the runs and the report.
        description: free text.
    """

    base: Path
    conditions: dict[str, list[str]]
    seeds: list[int]
    name: str = "campaign"
    reference: str | None = None
    overrides: list[str] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1.0, "num_gpus": 0.0})
    wandb_project: str = "tsda"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.conditions:
            raise ValueError("campaign conditions must name at least one condition")
        for name in self.conditions:
            if not _NAME.match(name):
                raise ValueError(f"campaign conditions: name {name!r} may only use letters, digits and _.+-")
        if self.reference is None:
            self.reference = next(iter(self.conditions))
        if self.reference not in self.conditions:
            raise ValueError(f"campaign reference {self.reference!r} is not one of the conditions")
        if not _NAME.match(self.name):
            raise ValueError(f"campaign name {self.name!r} may only use letters, digits and _.+-")
        unknown = set(self.resources) - {"num_cpus", "num_gpus"}
        if unknown:
            raise ValueError(f"campaign resources: unknown key(s) {sorted(unknown)} (num_cpus, num_gpus)")
        if any(float(v) < 0 for v in self.resources.values()):
            raise ValueError(f"campaign resources must be >= 0, got {self.resources}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], root: Path = Path(".")) -> CampaignSpec:
        """Validate a parsed spec; `root` is the folder relative paths (`base`) start from."""
        if not isinstance(raw, dict):
            raise ValueError(f"a campaign spec must be a mapping, got {type(raw).__name__}")
        unknown = [k for k in raw if k not in SPEC_KEYS]
        if unknown:
            raise ValueError(f"campaign spec: unknown key(s) {unknown}; known: {list(SPEC_KEYS)}")
        for key in ("base", "conditions", "seeds"):
            if key not in raw:
                raise ValueError(f"campaign spec: missing key {key!r}")
        base = (root / str(raw["base"])).resolve()
        if not base.is_file():
            raise ValueError(f"campaign base: no config file at {base}")
        conditions = raw["conditions"]
        if not isinstance(conditions, dict):
            raise ValueError("campaign conditions must be a mapping {name: overrides}")
        return cls(
            base=base,
            conditions={str(k): override_args(v, f"campaign conditions.{k}") for k, v in conditions.items()},
            seeds=parse_seeds(raw["seeds"], "campaign seeds"),
            name=str(raw.get("name") or root.resolve().name),
            reference=raw.get("reference"),
            overrides=override_args(raw.get("overrides"), "campaign overrides"),
            resources={"num_cpus": 1.0, "num_gpus": 0.0, **(raw.get("resources") or {})},
            wandb_project=str(raw.get("wandb_project", "tsda")),
            description=str(raw.get("description", "")),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> CampaignSpec:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"campaign spec: no file at {path}")
        return cls.from_dict(yaml.safe_load(path.read_text()), path.parent)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "base": str(self.base)}


# -- jobs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunJob:
    """One (condition, seed) run: the `tsda fit` arguments and where it runs."""

    condition: str
    seed: int
    run_dir: str
    args: tuple[str, ...]
    cwd: str

    @property
    def key(self) -> tuple[str, int]:
        return self.condition, self.seed


def plan(spec: CampaignSpec, out: Path, extra: Sequence[str] = (), conditions: Sequence[str] | None = None,
         seeds: Sequence[int] | None = None, cwd: Path | None = None) -> list[RunJob]:
    """The campaign's runs, seed-major (every condition of seed 0 first: complete blocks early)."""
    chosen = list(conditions) if conditions else list(spec.conditions)
    for name in chosen:
        if name not in spec.conditions:
            raise ValueError(f"--conditions: unknown condition {name!r}; known: {list(spec.conditions)}")
    out, cwd = out.resolve(), (cwd or Path.cwd()).resolve()
    jobs = []
    for seed in seeds if seeds is not None else spec.seeds:
        for name in chosen:
            run_dir = out / "runs" / name / f"seed{seed}"
            args = (
                "-c", str(spec.base), *spec.overrides, *spec.conditions[name], *extra,
                "--run_dir", str(run_dir), "--seed_everything", str(seed),
                "--wandb.project", spec.wandb_project, "--wandb.group", spec.name,
                "--wandb.name", f"{name}-seed{seed}", "--wandb.tags", f"[{name},seed{seed}]",
            )
            jobs.append(RunJob(name, int(seed), str(run_dir), args, str(cwd)))
    return jobs


def validate_conditions(jobs: Sequence[RunJob]) -> None:
    """Parse every job's `tsda fit` arguments (config files, keys, types) without running
    anything, so a misspelled override fails before the first run rather than when its run
    starts; relative paths are read from each job's `cwd`.

    Raises:
        TsdaError: naming the condition and what the parser refused.
    """
    from tsda.cli import check_fit_args
    from tsda.errors import TsdaError

    for job in jobs:
        here = Path.cwd()
        try:
            os.chdir(job.cwd)
            check_fit_args(list(job.args))
        except ValueError as exc:
            raise TsdaError(f"campaign condition {job.condition!r}: {exc}") from None
        finally:
            os.chdir(here)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the run process is killed when the thread that started it dies (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _log_tail(path: Path, chars: int = 2000) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace")[-chars:]
    return text.strip()


def result_row(job: RunJob, metrics: dict[str, Any] | None, seconds: float, returncode: int | None,
               error: str | None) -> dict[str, Any]:
    """One results row: identity, status, every scalar metric, per-class F1 and all metrics as JSON."""
    row: dict[str, Any] = {
        "condition": job.condition, "seed": job.seed, "status": "ok" if metrics is not None else "failed",
        "error": error, "seconds": float(seconds), "returncode": returncode, "run_dir": job.run_dir,
        "args_json": json.dumps(list(job.args)),
    }
    if metrics is not None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in row:
                row[key] = float(value)
        row["test_per_class_f1"] = json.dumps(metrics.get("test_per_class_f1", {}))
        row["metrics_json"] = json.dumps(metrics)
    return row


def finished_metrics(job: RunJob) -> dict[str, Any] | None:
    """The metrics of a run that finished with exactly `job.args` (None otherwise)."""
    run_dir = Path(job.run_dir)
    try:
        recorded = json.loads((run_dir / "run_spec.json").read_text())["args"]
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return None
    return metrics if recorded == list(job.args) else None


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


# -- the results table ------------------------------------------------------------------------
class ResultStore:
    """`results.parquet`: one row per (condition, seed), rewritten atomically by one process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.frame = pd.read_parquet(self.path) if self.path.is_file() else pd.DataFrame(columns=list(ROW_KEYS))

    def done(self, job: RunJob) -> bool:
        """Whether `job` is recorded `ok` with the same arguments."""
        f = self.frame
        hit = f[(f["condition"] == job.condition) & (f["seed"] == job.seed) & (f["status"] == "ok")]
        return bool(len(hit)) and (hit["args_json"] == json.dumps(list(job.args))).any()

    def record(self, row: dict[str, Any]) -> None:
        """Replace the row of `(row.condition, row.seed)` (counting attempts) and write the file."""
        with self._lock:
            f = self.frame
            same = (f["condition"] == row["condition"]) & (f["seed"] == row["seed"])
            previous = int(f.loc[same, "attempts"].fillna(0).max()) if same.any() else 0
            new = pd.DataFrame([{**row, "attempts": previous + 1}])
            kept = f[~same]
            frame = new if kept.empty else pd.concat([kept, new], ignore_index=True)
            frame = frame.sort_values(["seed", "condition"], kind="stable").reset_index(drop=True)
            frame = frame[[*ROW_KEYS, *(c for c in frame.columns if c not in ROW_KEYS)]]
            with atomic_path(self.path) as tmp:
                frame.to_parquet(tmp, index=False)
            self.frame = frame


# -- executors --------------------------------------------------------------------------------
def execute_local(jobs: Sequence[RunJob], on_result: Callable[[dict[str, Any]], None], workers: int = 1) -> None:
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


def execute_ray(jobs: Sequence[RunJob], on_result: Callable[[dict[str, Any]], None],
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
) -> pd.DataFrame:
    """Run every missing (condition, seed) of `spec` into `out`; the results table."""
    if executor not in ("local", "ray"):
        raise ValueError(f"--executor must be local or ray, got {executor!r}")
    validate_conditions(plan(spec, Path(out), extra, conditions, seeds[:1] if seeds else spec.seeds[:1]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "campaign.json", {**spec.to_json(), "extra": list(extra)})
    store = ResultStore(out / "results.parquet")
    todo = []
    for job in plan(spec, out, extra, conditions, seeds):
        if store.done(job):
            continue
        metrics = finished_metrics(job)
        if metrics is not None:  # finished before the last campaign process was killed
            store.record(result_row(job, metrics, float(metrics.get("seconds", 0.0)), 0, None))
        else:
            todo.append(job)
    print(f"campaign {spec.name}: {len(todo)} run(s) to do into {out}", flush=True)

    def on_result(row: dict[str, Any]) -> None:
        store.record(row)
        score = row.get("test_weighted_f1")
        note = f"weighted F1 {score:.4f}" if row["status"] == "ok" and score is not None else row["error"][:300]
        print(f"[{row['condition']} seed {row['seed']}] {row['status']} in {row['seconds']:.0f} s: {note}", flush=True)

    if executor == "local":
        execute_local(todo, on_result, workers)
    else:
        execute_ray(todo, on_result, address, spec.resources["num_cpus"] if num_cpus is None else num_cpus,
                    spec.resources["num_gpus"] if num_gpus is None else num_gpus)
    return store.frame


# -- the report -------------------------------------------------------------------------------
def write_report(out: str | Path, metric: str = "test_weighted_f1", alpha: float = 0.05) -> Path:
    """`out/report.md` with the summary tables, CD chart, per-class heatmap and latent geometry;
    the same tables and charts logged to W&B as the campaign's summary run."""
    from tsda.metrics import stats

    out = Path(out)
    if not (out / "results.parquet").is_file():
        raise ValueError(f"campaign report: no results.parquet in {out}")
    info = json.loads((out / "campaign.json").read_text()) if (out / "campaign.json").is_file() else {}
    results = pd.read_parquet(out / "results.parquet")
    runs = stats.ok_runs(results)
    if runs.empty:
        raise ValueError(f"campaign report: no finished run in {out}")
    name = info.get("name", out.name)
    reference = info.get("reference")
    if reference not in set(runs["condition"]):
        reference = None
    lines = [f"# Campaign `{name}`", ""]
    if info.get("description"):
        lines += [info["description"].strip(), ""]
    failed = results[results["status"] != "ok"]
    lines += [f"{len(runs)} finished run(s), {len(failed)} failed; {runs['condition'].nunique()} condition(s), "
              f"seeds {sorted(int(s) for s in runs['seed'].unique())}; reference: `{reference}`.",
              f"Base config `{info.get('base', '?')}`; overrides for every run: "
              f"`{' '.join(info.get('overrides', []) + info.get('extra', [])) or 'none'}`.", ""]
    tables: dict[str, pd.DataFrame] = {}
    images: dict[str, Path] = {}
    for score in stats.SCORES:
        if score in runs:
            table = stats.summarize(results, score, reference)
            if score == metric and "seconds" in runs:
                table["seconds"] = runs.groupby("condition")["seconds"].mean()
            tables[score] = table
            lines += [f"## {score} (mean, std, 95% t-interval, delta vs `{reference}`)", "",
                      stats.markdown_table(table), ""]
    try:
        test = stats.friedman_nemenyi(results, metric, alpha)
    except ValueError as err:
        lines += ["## Ranks", "", f"No rank test: {err}.", ""]
    else:
        images["cd_chart"] = stats.plot_cd(test, out / f"cd_{metric}.png")
        if test.pvalue != test.pvalue:  # NaN: fewer than 3 conditions
            friedman = "Friedman test: needs at least 3 conditions."
        else:
            verdict = "the conditions differ significantly" if test.significant else "no significant difference"
            friedman = f"Friedman chi2 = {test.statistic:.3f}, p = {test.pvalue:.3g}: {verdict} (alpha = {alpha})."
        ranks = test.mean_ranks.to_frame("mean rank")
        if reference is not None:
            ranks[f"Nemenyi p vs {reference}"] = test.nemenyi[reference]
        tables["ranks"] = ranks
        lines += [f"## Ranks of {metric} over {test.n_blocks} seeds", "",
                  f"{friedman} Nemenyi critical difference of mean ranks: CD = {test.cd:.3f} (k = {test.k}); "
                  "conditions joined by a bar are not significantly different.", "",
                  f"![critical difference chart]({images['cd_chart'].name})", "", stats.markdown_table(ranks, 3), ""]
    per_class = stats.per_class_matrix(results) if "test_per_class_f1" in runs else pd.DataFrame()
    if not per_class.empty:
        images["per_class_f1"] = stats.plot_heatmap(per_class, out / "per_class_f1.png")
        lines += ["## Per-class F1 (mean over seeds)", "", f"![per-class F1]({images['per_class_f1'].name})", ""]
    latent = stats.latent_table(results)
    if not latent.empty:
        corr = stats.latent_correlation(results, metric)
        tables["latent"], tables["latent_correlation"] = latent, corr
        lines += ["## Latent-space geometry of the test split (mean over seeds)", "",
                  "silhouette, calinski_harabasz, margin: higher = classes better separated; "
                  "davies_bouldin, spread: lower = better (see `tsda.metrics.latent`).", "",
                  stats.markdown_table(latent), "",
                  f"Spearman correlation with {metric} (over condition means and over single runs):", "",
                  stats.markdown_table(corr, 3), ""]
    if len(failed):
        lines += ["## Failed runs", ""] + [f"- `{c}` seed {s}: {str(e)[-300:]!r}" for c, s, e in
                                         zip(failed["condition"], failed["seed"], failed["error"])] + [""]
    report = out / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(lines))
    log_report_to_wandb(name, info.get("wandb_project", "tsda"), out, tables, images)
    return report


def log_report_to_wandb(name: str, project: str, out: Path, tables: dict[str, pd.DataFrame],
                        images: dict[str, Path]) -> None:
    """The campaign's summary run in W&B group `name` (offline unless logged in; skipped when disabled)."""
    from tsda.logging import resolve_wandb_mode

    mode = resolve_wandb_mode("auto")
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(project=project, group=name, name=f"{name}-report", job_type="report", tags=["report"],
                     mode=mode, dir=str(out), reinit="finish_previous")
    try:
        run.log({f"table/{k}": wandb.Table(dataframe=t.reset_index()) for k, t in tables.items()})
        run.log({f"chart/{k}": wandb.Image(str(p)) for k, p in images.items()})
    finally:
        run.finish()


# -- the command ------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsda campaign", description="conditions x seeds studies")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) a campaign")
    run.add_argument("spec", help="campaign YAML (experiments/<study>/campaign.yaml)")
    run.add_argument("--out", required=True, help="campaign directory (results.parquet, runs/)")
    run.add_argument("--executor", choices=["local", "ray"], default="local")
    run.add_argument("--workers", type=int, default=1, help="local: concurrent run processes")
    run.add_argument("--address", default=None, help="ray: cluster address (auto, ray://host:10001)")
    run.add_argument("--num_cpus", type=float, default=None, help="ray: CPUs per run (default: spec)")
    run.add_argument("--num_gpus", type=float, default=None, help="ray: GPUs per run (default: spec)")
    run.add_argument("--conditions", default=None, help="comma-separated subset of conditions")
    run.add_argument("--seeds", default=None, help="seeds instead of the spec's: '0,3,7' or '0-29'")
    run.add_argument("--dry_run", action="store_true", help="print the runs' commands and stop")
    report = sub.add_parser("report", help="statistics, charts and report.md of a campaign directory")
    report.add_argument("out", help="campaign directory")
    report.add_argument("--metric", default="test_weighted_f1")
    report.add_argument("--alpha", type=float, default=0.05)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    args, extra = _parser().parse_known_args(argv)
    if args.command == "report":
        if extra:
            raise ValueError(f"campaign report: unknown arguments {extra}")
        print(f"report: {write_report(args.out, args.metric, args.alpha)}")
        return
    spec = CampaignSpec.from_yaml(args.spec)
    conditions = args.conditions.split(",") if args.conditions else None
    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds else None
    if args.dry_run:
        for job in plan(spec, Path(args.out), extra, conditions, seeds):
            print(" ".join(["tsda fit", *job.args]))
        return
    frame = run_campaign(spec, args.out, args.executor, args.workers, extra, conditions, seeds,
                         args.address, args.num_cpus, args.num_gpus)
    failed = int((frame["status"] != "ok").sum())
    print(f"campaign {spec.name}: {len(frame) - failed} ok, {failed} failed; results: "
          f"{Path(args.out) / 'results.parquet'}", flush=True)
    if failed:
        raise SystemExit(1)

