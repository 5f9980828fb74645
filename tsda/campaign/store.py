"""The results table of a campaign: `DIR/results.parquet`, one row per (condition, seed).

Columns: `ROW_KEYS` first (condition, seed, status `ok|failed`, error, seconds, attempts,
returncode, run_dir, args_json = the run's `tsda fit` arguments as a JSON list), then every
scalar metric of the run's `metrics.json` (`test_weighted_f1`, `latent_silhouette`, ...),
`test_per_class_f1` (JSON `{class: f1}`) and `metrics_json` (all metrics as JSON).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from tsda.campaign.spec import RunJob
from tsda.runs import atomic_path

#: the columns every results row has, first in the table
ROW_KEYS = ("condition", "seed", "status", "error", "seconds", "attempts", "returncode", "run_dir", "args_json")


def result_row(
    job: RunJob, metrics: dict[str, Any] | None, seconds: float, returncode: int | None, error: str | None
) -> dict[str, Any]:
    """One results row: identity, status, every scalar metric, per-class F1 and all metrics as JSON."""
    row: dict[str, Any] = {
        "condition": job.condition,
        "seed": job.seed,
        "status": "ok" if metrics is not None else "failed",
        "error": error,
        "seconds": float(seconds),
        "returncode": returncode,
        "run_dir": job.run_dir,
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
