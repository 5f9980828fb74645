"""Seconds per epoch of joint training against an augmented classifier's (Wrap), in one run.

    OMP_NUM_THREADS=1 python benchmarks/joint_epoch_cost.py [--data ../shared/data/fgnet/d1.parquet | synthetic]
        [--train-fraction 0.1] [--epochs 3] [--conditions wrap,joint_cgan,...] [--json OUT.json]

Each condition is `tsda fit` (in this process, one after the other) on the campaign base of
`experiments/joint` (`experiments/handcrafted/base.yaml`: the 1D-CNN, batch 256, policy
double, class-weighted sampler) for exactly `--epochs` epochs, its model settings those of
the condition of `experiments/joint/campaign.yaml` with every warm-up and ramp at 0 (every
epoch a joint one: the generator and, from the first step, its flows in the classifier's
batch). The figure is `fit_seconds / epochs` of its `metrics.json` (training, validation and
checkpoints of every epoch), and its ratio to Wrap's: the issue's target is at most 2x.
`--data synthetic` runs on the embedded dataset (no download).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "joint" / "campaign.yaml"
D1 = REPO.parent / "shared" / "data" / "fgnet" / "d1.parquet"
NO_WARMUP = {
    "model.init_args.classifier_warmup_epochs": 0,
    "model.init_args.generator_warmup_epochs": 0,
    "model.init_args.generated_rampup_epochs": 0,
}


def condition_args(name: str) -> list[str]:
    """`tsda fit` overrides of campaign condition `name`, warm-ups and ramp at 0 for a joint one."""
    settings: dict[str, Any] = dict(yaml.safe_load(SPEC.read_text())["conditions"][name])
    if settings.get("model") == "tsda.joint.module.JointModule":
        settings.update(NO_WARMUP)
    args: list[str] = []
    for key, value in settings.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def seconds_per_epoch(name: str, data: list[str], epochs: int, root: Path) -> float:
    from tsda.commands.fit import run_fit

    run_dir = root / name
    run_fit(
        ["-c", str(REPO / "experiments/handcrafted/base.yaml"), *data, *condition_args(name),
         "--trainer.max_epochs", str(epochs), "--patience", str(epochs + 1), "--latent_plot", "false",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--run_dir", str(run_dir)]
    )  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return float(metrics["fit_seconds"]) / int(metrics["epochs"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(D1), help="a Parquet file, or synthetic")
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--conditions", default="wrap,joint_cgan,joint_cgan_vary,joint_diffusion_vary,joint_diffusion_pool"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.data == "synthetic":
        data = ["--data.path", "null", "--data.synthetic_scale", "0.25", "--data.invalid_rows", "error"]
    else:
        data = ["--data.path", args.data, "--data.train_fraction", str(args.train_fraction)]
    names = args.conditions.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        costs = {name: seconds_per_epoch(name, data, args.epochs, Path(tmp)) for name in names}
    base = costs.get("wrap")
    print(f"\n{'condition':<24} {'s/epoch':>8} {'vs wrap':>8}")
    for name, cost in costs.items():
        ratio = f"{cost / base:.2f}x" if base else ""
        print(f"{name:<24} {cost:8.2f} {ratio:>8}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds_per_epoch": costs, "epochs": args.epochs}, indent=2))


if __name__ == "__main__":
    main()
