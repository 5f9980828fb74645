"""Loggers for a run: CSV always, W&B offline unless the user is logged in."""

from __future__ import annotations

import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lightning.pytorch.loggers import CSVLogger, Logger

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
            project=wandb.project, group=wandb.group, name=wandb.name or run_dir.name,
            tags=list(wandb.tags), save_dir=str(run_dir), offline=(mode == "offline"),
        )
        if config:
            logger.log_hyperparams(config)
        loggers.append(logger)
    return loggers
