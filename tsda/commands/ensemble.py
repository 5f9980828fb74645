"""`tsda ensemble JOBS.json`: many `tsda fit` runs in one process, batched where they can be.

    tsda ensemble JOBS.json [--device cpu|cuda|auto]

`JOBS.json` is `{"runs": [[tsda fit args...], ...]}` (each run's args name its `--run_dir`
and `--seed_everything`); `tsda campaign run --executor ensemble` writes one per job. Runs
whose tensors stack (`batch_key`: a plain `ClassifierModule`, the same data, backbone,
optimiser, label smoothing, training batch and Trainer limits) train together as one
batched model (`tsda.classifier.ensemble`); each member then writes what a `tsda fit` run writes:
`checkpoints/best.ckpt` (a Lightning checkpoint of its best weights), `metrics.csv`
(per epoch), `config.yaml` and `metrics.json` with the same keys (test metrics of the best
weights, per-class F1, latent scores, augmentation stats, epochs, seconds), plus
`executor: ensemble` and `ensemble_members`. `seconds` is the wall time from the group's
start to the member's end (members share it). W&B: one summary run per member (config,
test metrics, the per-epoch history as a table), in the mode `--wandb.mode` resolves to.
Runs that cannot be batched (other modules such as the joint GAN, dropout, `--compile`,
Trainer options the ensemble does not implement: precision other than 32 and bf16-mixed,
gradient clipping, accumulation, max_time, callbacks, several devices) run one after another as plain
`tsda fit` runs, each announced with the reason.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.data import AttributeDict

from tsda.classifier.ensemble import EnsembleSettings, MemberOutcome, batched_precision, fit_ensemble
from tsda.classifier.module import ClassifierModule
from tsda.commands.fit import build_fit, run_fit, run_test, write_run_metrics
from tsda.commands.options import command_parser
from tsda.data.datamodule import FlowDataModule
from tsda.logging import log_summary_run
from tsda.runs import atomic_path

#: Trainer options and the values the ensemble implements (anything else runs as `tsda fit`)
TRAINER_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "precision": (None, "32", "32-true", 32, "bf16-mixed"),
    "accumulate_grad_batches": (1,),
    "gradient_clip_val": (None, 0, 0.0),
    "max_time": (None,),
    "limit_train_batches": (None, 1.0),
    "limit_val_batches": (None, 1.0),
    "val_check_interval": (None, 1.0),
    "callbacks": (None, []),
    "devices": (None, 1, "1", "auto"),
    "num_nodes": (1,),
    "strategy": ("auto",),
    "min_epochs": (None,),
    "min_steps": (None,),
}


class Run:
    """One `tsda fit` run of a job: its arguments, and (for a batched run) its model,
    datamodule and parsed config, built with its seed."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        with torch.random.fork_rng(devices=[]):  # the run's seeding leaves this process's RNG as it was
            self.model, self.datamodule, self.config, self.config_yaml = build_fit(self.args)
        self.run_dir = Path(self.config.run_dir) if self.config.run_dir else None

    @property
    def seed(self) -> int:
        return int(self.config.seed_everything or 0)


def unbatchable(run: Run) -> str | None:
    """Why `run` cannot be an ensemble member (None when it can)."""
    if type(run.model) is not ClassifierModule:
        return f"model {type(run.model).__name__} is not a plain ClassifierModule"
    if run.run_dir is None:
        return "no --run_dir"
    trainer = run.config.trainer
    for key, allowed in TRAINER_DEFAULTS.items():
        if key in trainer and trainer[key] not in allowed:
            return f"trainer.{key} = {trainer[key]!r}"
    if run.config.get("compile"):
        return "--compile (a compiled run trains alone: the ensemble's vmap forward is not compiled)"
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in run.model.modules()):
        return "dropout > 0"
    if any(isinstance(m, torch.nn.RNNBase) for m in run.model.modules()):
        return "a recurrent backbone (nn.GRU has no vmap batching rule)"
    return None


def _precision(run: Run) -> str:
    """The run's Trainer precision as the ensemble's Trainer takes it (`32-true`, `bf16-mixed`)."""
    value = run.config.trainer.get("precision")
    return "32-true" if value in (None, 32, "32") else str(value)


def batch_key(run: Run) -> str:
    """What members of one batched model must share, as a string: data (but the sampler's
    seed), backbone, optimiser, loss, training batch shape and Trainer limits."""
    h, trainer = run.model.hparams, run.config.trainer
    assert isinstance(h, AttributeDict)  # what save_hyperparameters stores
    data = {k: v for k, v in run.datamodule.hparams.items() if k != "sampler_seed"}
    doubles = run.model.augmentation is not None and h.policy == "double"
    return json.dumps(
        {
            "data": data,
            "backbone": h.backbone,
            "backbone_kwargs": h.backbone_kwargs,
            "lr": h.lr,
            "weight_decay": h.weight_decay,
            "label_smoothing": h.label_smoothing,
            "doubles": doubles,
            "max_epochs": trainer.max_epochs,
            "max_steps": trainer.max_steps,
            "patience": run.config.patience,
            "check_val_every_n_epoch": trainer.check_val_every_n_epoch,
            "accelerator": trainer.accelerator,
            "precision": _precision(run),
        },
        sort_keys=True,
        default=str,
    )


def groups(runs: Sequence[Run]) -> list[list[Run]]:
    """The batchable runs grouped by `batch_key`, in first-seen order."""
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(batch_key(run), []).append(run)
    return list(by_key.values())


def _device(accelerator: str, override: str) -> str:
    if override != "auto":
        return override
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    """`metrics.csv`: one row per epoch (epoch, step, train_loss, val_*)."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def finish_member(run: Run, outcome: MemberOutcome, datamodule: FlowDataModule, device: str, n_members: int) -> None:
    """Test the member's best weights as `tsda fit` does and write its run directory."""
    model: ClassifierModule = run.model  # type: ignore[assignment]
    model.net.load_state_dict(outcome.best_state)
    run_dir = run.run_dir
    assert run_dir is not None
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=batched_precision(_precision(run)),  # fit_ensemble accepted it already
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
    )
    metrics = run_test(trainer, model, datamodule)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(ckpt) as tmp:
        trainer.save_checkpoint(tmp, weights_only=True)
    _write_history(run_dir / "metrics.csv", outcome.history)
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(run.config_yaml)
    metrics.update(
        {
            "epochs": outcome.epochs,
            "steps": outcome.steps,
            "seconds": outcome.fit_seconds,
            "fit_seconds": outcome.fit_seconds,
            "seconds_per_epoch": outcome.fit_seconds / max(outcome.epochs, 1),
            "best_checkpoint": str(ckpt),
            "best_score": outcome.best_score,
            "best_epoch": outcome.best_epoch,
            "seed": run.seed,
            "executor": "ensemble",
            "ensemble_members": n_members,
        }
    )
    _log_member(run, metrics, outcome.history)
    write_run_metrics(trainer, run_dir, metrics)


def _log_member(run: Run, metrics: dict[str, Any], history: list[dict[str, float]]) -> None:
    """The member's W&B summary run (nothing when W&B resolves to disabled)."""
    import pandas as pd

    w, run_dir = run.config.wandb, run.run_dir
    assert run_dir is not None  # finish_member checked it
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    log_summary_run(
        w.mode,
        w.project,
        w.name or run_dir.name,
        run_dir,
        group=w.group,
        job_type="fit",
        tags=list(w.tags or []),
        config={"args": run.args, "executor": "ensemble"},
        summary=scalars,
        tables={"history": pd.DataFrame(history)} if history else None,
    )


def train_group(group: Sequence[Run], device: str) -> None:
    """Train one group of batchable runs as an ensemble, then test each member's best
    weights and write its run directory."""
    first = group[0]
    trainer = first.config.trainer
    settings = EnsembleSettings(
        max_epochs=int(trainer.max_epochs if trainer.max_epochs is not None else 1000),
        max_steps=int(trainer.max_steps if trainer.max_steps is not None else -1),
        patience=int(first.config.patience),
        check_val_every_n_epoch=int(trainer.check_val_every_n_epoch or 1),
        device=_device(str(trainer.accelerator), device),
        precision=_precision(first),
    )
    datamodule = first.datamodule
    print(
        f"ensemble: {len(group)} member(s) on {settings.device}: " + ", ".join(str(r.run_dir) for r in group),
        flush=True,
    )
    for outcome in fit_ensemble([r.model for r in group], datamodule, settings):  # type: ignore[misc]
        finish_member(group[outcome.index], outcome, datamodule, settings.device, len(group))


def run_jobs(runs_args: Sequence[Sequence[str]], device: str = "auto") -> None:
    """Every run of a job: batchable ones as ensembles (one per group), the rest as `tsda fit`."""
    started = time.perf_counter()
    runs, alone = [], []
    for args in runs_args:
        run = Run(args)
        reason = unbatchable(run)
        if reason is None:
            runs.append(run)
        else:
            print(f"ensemble: {run.run_dir} runs alone ({reason})", flush=True)
            alone.append(list(args))
    for group in groups(runs):
        train_group(group, device)
    for args in alone:
        run_fit(args)
    print(f"ensemble: {len(runs_args)} run(s) in {time.perf_counter() - started:.1f} s", flush=True)


def main(argv: list[str]) -> None:
    """`tsda ensemble JOBS.json [--device auto]`."""
    parser = command_parser("tsda ensemble", __doc__.split("\n\n")[0])
    parser.add_argument("jobs", type=str, help='JSON file {"runs": [[tsda fit args...], ...]}')
    parser.add_argument(
        "--device",
        type=Literal["auto", "cpu", "cuda"],
        default="auto",
        help="training device (auto: the runs' trainer.accelerator)",
    )
    cfg = parser.parse_args(argv)
    path = Path(cfg.jobs)
    try:
        runs = json.loads(path.read_text())["runs"]
    except FileNotFoundError:
        raise FileNotFoundError(f"ensemble jobs file not found: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not an ensemble jobs file ({exc})") from None
    if not isinstance(runs, list) or not all(isinstance(r, list) for r in runs):
        raise ValueError(f"{path}: 'runs' must be a list of argument lists")
    run_jobs(runs, cfg.device)
