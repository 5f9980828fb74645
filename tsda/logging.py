"""Loggers for a run: CSV always, W&B offline unless the user is logged in; one W&B
summary run for a command's results (`log_summary_run`)."""

from __future__ import annotations

import netrc
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lightning.pytorch.loggers import CSVLogger, Logger

if TYPE_CHECKING:
    import pandas as pd

WandbMode = Literal["auto", "online", "offline", "disabled"]


@dataclass
class WandbSettings:
    """W&B settings of a run.

    Args:
        mode: `auto` = online when an API key is known (WANDB_API_KEY or `wandb login`),
            else offline (sync later with `wandb sync`); the WANDB_MODE environment variable
            overrides it (tests set `disabled`).
        project, group, name, tags: as in `wandb.init`.
    """

    mode: WandbMode = "auto"
    project: str = "tsda"
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: WandbMode) -> Literal["online", "offline", "disabled"]:
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("disabled", "offline", "online"):
        return env  # type: ignore[return-value]
    if env == "dryrun":
        return "offline"
    if mode == "auto":
        return "online" if _logged_in() else "offline"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"wandb.mode must be auto, online, offline or disabled, got {mode!r}")
    return mode


def run_loggers(run_dir: Path, wandb: WandbSettings, config: dict | None = None) -> list[Logger]:
    """CSV logger writing into `run_dir` (first, so checkpoints land in `run_dir`), plus W&B."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    mode = resolve_wandb_mode(wandb.mode)
    if mode != "disabled":
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(
            project=wandb.project,
            group=wandb.group,
            name=wandb.name or run_dir.name,
            tags=list(wandb.tags),
            save_dir=str(run_dir),
            offline=(mode == "offline"),
        )
        if config:
            logger.log_hyperparams(config)
        loggers.append(logger)
    return loggers


def finish_wandb_run() -> None:
    """Finish this process's W&B run, if one is open: `WandbLogger` reuses an open run, so
    a second `tsda fit` in the same process (a warm worker, `tsda ensemble`) would log into
    the first's."""
    wandb = sys.modules.get("wandb")  # never imported: no run to finish
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def log_summary_run(
    mode: WandbMode,
    project: str,
    name: str,
    dir: Path,
    *,
    group: str | None = None,
    job_type: str | None = None,
    tags: Sequence[str] = (),
    config: dict[str, Any] | None = None,
    summary: dict[str, float] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
    images: dict[str, Path] | None = None,
) -> None:
    """One short W&B run holding a command's results (a campaign report, an evaluation).

    `mode` is resolved by `resolve_wandb_mode` (WANDB_MODE wins; nothing happens when it
    resolves to disabled); the run's files go under `dir/wandb/`. `tables` are logged as
    `wandb.Table`s (each frame's index becomes its first column(s)), `images` as
    `wandb.Image`s, both under their keys as given; `summary` lands in the run summary and
    `config` in its config.
    """
    resolved = resolve_wandb_mode(mode)
    if resolved == "disabled":
        return
    import wandb

    run = wandb.init(
        project=project,
        name=name,
        group=group,
        job_type=job_type,
        tags=list(tags),
        config=config,
        mode=resolved,
        dir=str(dir),
        reinit="finish_previous",
    )
    try:
        if tables:
            run.log({key: wandb.Table(dataframe=frame.reset_index()) for key, frame in tables.items()})
        if images:
            run.log({key: wandb.Image(str(path)) for key, path in images.items()})
        if summary:
            run.summary.update(summary)
    finally:
        run.finish()
