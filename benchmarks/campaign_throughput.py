"""Runs per hour of the ensemble executor against the process executor, on one small campaign.

    python benchmarks/campaign_throughput.py [--data ../shared/data/fgnet/d1.parquet]
        [--train-fraction 0.1] [--seeds 4] [--epochs 3] [--workers 2] [--device cpu|cuda]
        [--conditions no_aug,translation] [--keep DIR]

The campaign: `experiments/generative/base.yaml` (cnn_resblock, batch 256, class-weighted
sampler, policy double) on `--train-fraction` of D1, conditions `no_aug` (no augmentation,
batch 512: the references' batch) and `translation` (the hand-crafted winner), `--seeds`
seeds each, every run exactly `--epochs` epochs (patience above the cap, so both executors
train the same steps and the ratio measures throughput, not early stopping). The process
executor runs it with `--workers` concurrent `tsda fit` processes (torch threads shared
out between them); the ensemble executor with `--workers 1` (one `tsda ensemble` process
on all cores, one batched model per condition). Both write a complete campaign (run
directories, checkpoints, metrics.json, results.parquet); W&B is disabled for both.

Prints wall seconds, runs per hour and their ratio (the issue's target on 2 CPU cores: at
least 3x; measured on the shared 2-core machine: 0.69x and 0.66x, i.e. the ensemble is
slower on a CPU, where the grouped convolutions of `vmap` are compute-bound; see
experiments/handcrafted/README.md for the GPU use), and
each condition's mean test weighted F1 through both executors (same seeds, same steps:
they agree to float noise).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
CONDITIONS = {
    "no_aug": {"data.batch_size": 512},
    "translation": {"model.init_args.augmentation": str(REPO / "configs/augment/translation.yaml")},
}


def write_spec(folder: Path, args: argparse.Namespace) -> Path:
    """The benchmark's campaign YAML in `folder`."""
    names = args.conditions.split(",")
    spec = {
        "name": "throughput", "base": str(REPO / "experiments/generative/base.yaml"),
        "seeds": list(range(args.seeds)), "reference": names[0],
        "conditions": {name: CONDITIONS[name] for name in names},
        "overrides": {"data.path": str(Path(args.data).resolve()), "data.train_fraction": args.train_fraction,
                      "trainer.max_epochs": args.epochs, "patience": args.epochs + 1,
                      "trainer.accelerator": "gpu" if args.device == "cuda" else "cpu"},
    }
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(spec: Path, out: Path, executor: str, workers: int) -> float:
    """Wall seconds of `tsda campaign run SPEC --executor EXECUTOR` (fails loudly)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tsda.cli", "campaign", "run", str(spec), "--out", str(out),
                    "--executor", executor, "--workers", str(workers)], cwd=REPO, check=True,
                   env={**os.environ, "WANDB_MODE": "disabled"}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/fgnet/d1.parquet"))
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="process executor: concurrent runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--conditions", default="no_aug,translation")
    parser.add_argument("--keep", default=None, help="keep both campaigns in this directory")
    args = parser.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"data not found: {args.data}")
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tsda-throughput-"))
    folder.mkdir(parents=True, exist_ok=True)
    spec = write_spec(folder, args)
    n_runs = args.seeds * len(args.conditions.split(","))
    seconds = {
        "process": run(spec, folder / "process", "local", args.workers),
        "ensemble": run(spec, folder / "ensemble", "ensemble", 1),
    }
    means = {}
    for name in seconds:
        frame = pd.read_parquet(folder / name / "results.parquet")
        assert (frame["status"] == "ok").all(), frame["error"].tolist()
        means[name] = frame.groupby("condition")["test_weighted_f1"].mean()
    print(f"campaign: {n_runs} runs ({args.conditions}, {args.seeds} seeds, {args.epochs} epochs each) on "
          f"{args.train_fraction:g} of {args.data}, device {args.device}, {os.cpu_count()} CPU cores")
    for name, s in seconds.items():
        print(f"  {name:8s} executor: {s:8.1f} s wall, {3600 * n_runs / s:7.1f} runs/hour")
    print(f"  ratio ensemble / process: {seconds['process'] / seconds['ensemble']:.2f}x runs per hour")
    print("  mean test weighted F1 per condition:")
    print(pd.DataFrame(means).to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"  campaigns in {folder}")


if __name__ == "__main__":
    main()
