"""Tiny campaigns for the campaign and executor tests: a spec over the embedded dataset, a
`tsda campaign run` process and a wait for its result rows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "configs" / "experiment" / "synthetic_baseline.yaml"
#: `tsda fit` on a sliver of the embedded dataset (4 apps, width-8 CNN): the ensemble and GPU tests' run
TINY_FIT = [
    "-c",
    str(BASE),
    "--data.synthetic_scale",
    "0.03",
    "--data.synthetic_apps",
    "4",
    "--data.min_class_size",
    "5",
    "--data.batch_size",
    "16",
    "--trainer.enable_progress_bar",
    "false",
    "--latent_plot",
    "false",
    "--model.init_args.backbone_kwargs",
    "{width: 8}",
    "--model.init_args.latent_points",
    "50",
]
TRANSLATION = ["--model.init_args.augmentation", str(REPO / "configs/augment/translation.yaml")]


TINY = {
    "data.synthetic_scale": 0.02,
    "data.synthetic_apps": 4,
    "data.min_class_size": 5,
    "trainer.max_epochs": 1,
    "trainer.enable_progress_bar": False,
    "model.init_args.latent_points": 100,
    "model.init_args.backbone_kwargs": {"width": 8},
}


def write_spec(folder: Path, conditions: dict, seeds=(0, 1), **extra) -> Path:
    spec = {
        "name": "tiny",
        "base": str(BASE),
        "seeds": list(seeds),
        "overrides": TINY,
        "conditions": conditions,
        **extra,
    }
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def runner(spec: Path, out: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tsda.cli", "campaign", "run", str(spec), "--out", str(out), *options],
        cwd=spec.parent,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )


def wait_rows(path: Path, n: int, proc: subprocess.Popen, timeout: float = 400) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            frame = pd.read_parquet(path)
            if len(frame) >= n:
                return frame
        assert proc.poll() is None, "the campaign ended before it was killed"
        time.sleep(0.5)
    raise AssertionError(f"no {n} rows in {path} after {timeout} s")
